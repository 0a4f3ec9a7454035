"""Chat-template families for the format tests: each published template's expected rendering,
written out independently piece by piece (pieces flagged when trained), a demo tokenizer dressed
as the family's (its special tokens, BOS, EOS and template), and the expected ids and mask.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from iprox_ray.models.loading import load_tokenizer

from conftest import TOKENIZER

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"

U1, A1 = "Add 2 and 3.", "2 + 3 = 5. The answer is 5."
U2, A2 = "  And 4 and 4?", " Eight, since 4 + 4 = 8. \n"  # padded: several templates trim
SYSTEM = "Be brief."
CONVERSATIONS = {
    "single": [{"role": "user", "content": U1}, {"role": "assistant", "content": A1}],
    "system": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": U1},
               {"role": "assistant", "content": A1}],
    "multi": [{"role": "user", "content": U1}, {"role": "assistant", "content": A1},
              {"role": "user", "content": U2}, {"role": "assistant", "content": A2}],
    "multi-system": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": U1},
                     {"role": "assistant", "content": A1}, {"role": "user", "content": U2},
                     {"role": "assistant", "content": A2}],
}


def split_system(messages):
    if messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


# Expected renderings: lists of (text, trained) pieces.

def chatml(messages, default_system=None):
    system, rest = split_system(messages)
    system = system if system is not None else default_system
    out = [(f"<|im_start|>system\n{system}<|im_end|>\n", False)] if system is not None else []
    for m in rest:
        if m["role"] == "assistant":
            out += [("<|im_start|>assistant\n", False), (m["content"] + "<|im_end|>", True), ("\n", False)]
        else:
            out.append((f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n", False))
    return out


def qwen3(messages):
    out = chatml(messages)
    # The last assistant turn (after the last user query) gets an empty thinking block.
    text, _ = out[-2]
    out[-2] = ("<think>\n\n</think>\n\n" + text, True)
    return out


def llama3(messages, date="26 Jul 2024"):
    system, rest = split_system(messages)
    out = [("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            f"Today Date: {date}\n\n{(system or '').strip()}<|eot_id|>", False)]
    for m in rest:
        head = f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
        if m["role"] == "assistant":
            out += [(head, False), (m["content"].strip() + "<|eot_id|>", True)]
        else:
            out.append((head + m["content"].strip() + "<|eot_id|>", False))
    return out


def gemma(messages):
    system, rest = split_system(messages)
    out = [("<bos>", False)]
    for i, m in enumerate(rest):
        if m["role"] == "assistant":
            out += [("<start_of_turn>model\n", False), (m["content"].strip() + "<end_of_turn>", True), ("\n", False)]
        else:
            prefix = system + "\n\n" if system is not None and i == 0 else ""  # Gemma 3 folds the system prompt in
            out.append((f"<start_of_turn>user\n{prefix}{m['content'].strip()}<end_of_turn>\n", False))
    return out


def mistral_v3(messages):
    # The system prompt joins the last message only if that is a user's: never here.
    _, rest = split_system(messages)
    return [("<s>", False)] + [(" " + m["content"].strip() + "</s>", True) if m["role"] == "assistant"
                               else (f"[INST] {m['content']}[/INST]", False) for m in rest]


def phi3(messages):
    out = []
    for m in messages:
        if m["role"] == "assistant":
            out += [("<|assistant|>\n", False), (m["content"] + "<|end|>", True), ("\n", False)]
        else:
            out.append((f"<|{m['role']}|>\n{m['content']}<|end|>\n", False))
    return out + [("<|endoftext|>", False)]


def today() -> str:
    return datetime.datetime.now().strftime("%d %b %Y")


@dataclass(frozen=True)
class Family:
    bos: str | None
    eos: str
    end_of_turn: str  # the marker that closes every trained turn
    specials: tuple[str, ...]  # the family's tokens this vocabulary must keep whole
    expected: Callable


LLAMA_TOKENS = ("<|start_header_id|>", "<|end_header_id|>")
CHATML_TOKENS = ("<|im_start|>", "<|endoftext|>")
GEMMA_TOKENS = ("<start_of_turn>", "<end_of_turn>")
FAMILIES = {
    "llama-3.1-8b-instruct": Family("<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", LLAMA_TOKENS, llama3),
    "llama-3.2-3b-instruct": Family("<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", LLAMA_TOKENS,
                                    lambda m: llama3(m, today())),
    "qwen2.5-7b-instruct": Family(None, "<|im_end|>", "<|im_end|>", CHATML_TOKENS, lambda m: chatml(
        m, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")),
    "qwen3-0.6b": Family(None, "<|im_end|>", "<|im_end|>", CHATML_TOKENS + ("<think>", "</think>"), qwen3),
    "smollm2-instruct": Family(None, "<|im_end|>", "<|im_end|>", CHATML_TOKENS, lambda m: chatml(
        m, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")),
    "gemma-2-2b-it": Family("<bos>", "<eos>", "<end_of_turn>", GEMMA_TOKENS, gemma),
    "gemma-3-it": Family("<bos>", "<eos>", "<end_of_turn>", GEMMA_TOKENS, gemma),
    "mistral-7b-instruct-v0.3": Family("<s>", "</s>", "</s>", ("[INST]", "[/INST]"), mistral_v3),
    "phi-3-mini-4k-instruct": Family("<s>", "<|endoftext|>", "<|end|>", (), phi3),
}


def family_tokenizer(name: str, template: str | None = None, chat_template: bool = True):
    """The demo tokenizer with the family's special tokens, BOS (none for Qwen), EOS and published
    template (or `template`; none at all with chat_template=False: a base model's tokenizer)."""
    family = FAMILIES[name]
    tok = load_tokenizer(TOKENIZER)
    tok.add_special_tokens({"additional_special_tokens": [t for t in (family.bos, family.eos, *family.specials) if t]})
    tok.bos_token = family.bos
    tok.eos_token = family.eos
    tok.chat_template = (template or (TEMPLATES / f"{name}.jinja").read_text()) if chat_template else None
    return tok


def expected_mask(tok, pieces):
    """Ids of the joined text, and a mask of the tokens overlapping a trained piece."""
    text = "".join(t for t, _ in pieces)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = np.zeros(len(enc["input_ids"]), dtype=bool)
    pos = 0
    for piece, trained in pieces:
        if trained:
            for t, (a, b) in enumerate(enc["offset_mapping"]):
                mask[t] |= a < pos + len(piece) and b > pos
        pos += len(piece)
    mask[0] = False
    return text, np.asarray(enc["input_ids"]), mask
