"""Assistant-token masks under real chat templates (tests/fixtures/chat_templates/, as published).

Each family's expected rendering is written out here independently, piece by piece, with the
pieces that must be trained flagged; the expected mask maps those character spans to tokens by
their offsets. The encoder's ids and mask must equal them exactly.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import TOKENIZER

from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.corpus.rows import RowError
from iprox_ray.models.loading import load_tokenizer

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


def family_tokenizer(name: str, template: str | None = None):
    family = FAMILIES[name]
    tok = load_tokenizer(TOKENIZER)
    tok.add_special_tokens({"additional_special_tokens": [t for t in (family.bos, family.eos, *family.specials) if t]})
    if family.bos:
        tok.bos_token = family.bos
    tok.eos_token = family.eos
    tok.chat_template = template or (TEMPLATES / f"{name}.jinja").read_text()
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


CASES = [(f, c) for f in FAMILIES for c in CONVERSATIONS if not (f == "gemma-2-2b-it" and "system" in c)]


@pytest.mark.parametrize("family,conversation", CASES)
def test_assistant_mask_is_exact(family, conversation):
    tok = family_tokenizer(family)
    encoder = ChatEncoder(tok, 4096)
    assert not encoder.native_mask  # mentioning add_generation_prompt is not a {% generation %} tag
    messages = CONVERSATIONS[conversation]
    text, ids, mask = expected_mask(tok, FAMILIES[family].expected(messages))
    assert tok.apply_chat_template(messages, tokenize=False) == text
    enc = encoder.encode(messages)
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)
    trained = tok.decode(enc.input_ids[enc.trainable])
    n_turns = sum(m["role"] == "assistant" for m in messages)
    assert trained.count(FAMILIES[family].end_of_turn) == n_turns


def test_every_family_is_covered_by_a_fixture():
    names = {p.stem for p in TEMPLATES.glob("*.jinja")}
    assert set(FAMILIES) | {"chatml-generation"} == names


def test_gemma2_refuses_a_system_prompt_as_a_template_error():
    encoder = ChatEncoder(family_tokenizer("gemma-2-2b-it"), 4096)
    with pytest.raises(RowError) as err:
        encoder.encode(CONVERSATIONS["system"])
    assert err.value.reason == "template-error" and err.value.detail == "System role not supported"


@pytest.mark.parametrize("family", ["gemma-2-2b-it", "gemma-3-it", "mistral-7b-instruct-v0.3"])
def test_roles_that_do_not_alternate_are_a_template_error(family):
    encoder = ChatEncoder(family_tokenizer(family), 4096)
    with pytest.raises(RowError) as err:
        encoder.encode([{"role": "user", "content": U1}, {"role": "user", "content": U2},
                        {"role": "assistant", "content": A1}])
    assert err.value.reason == "template-error" and "roles must alternate" in err.value.detail


def test_generation_markers_use_the_native_mask_and_agree_with_the_measured_spans():
    template = (TEMPLATES / "chatml-generation.jinja").read_text()
    tok = family_tokenizer("smollm2-instruct", template)
    native = ChatEncoder(tok, 4096)
    assert native.native_mask
    measured = ChatEncoder(tok, 4096)
    measured.native_mask = False
    for messages in CONVERSATIONS.values():
        a, b = native.encode(messages), measured.encode(messages)
        _, ids, mask = expected_mask(tok, chatml(messages))
        np.testing.assert_array_equal(a.input_ids, ids)
        np.testing.assert_array_equal(a.trainable, mask)
        np.testing.assert_array_equal(b.trainable, mask)


def test_an_assistant_message_opening_the_conversation_is_context():
    encoder = ChatEncoder(family_tokenizer("smollm2-instruct"), 4096)
    messages = [{"role": "assistant", "content": "Hello, ask me."}] + CONVERSATIONS["single"]
    enc = encoder.encode(messages)
    assert encoder.tokenizer.decode(enc.input_ids[enc.trainable]) == A1 + "<|im_end|>"


def test_a_template_that_renders_content_twice_is_a_mismatch():
    echo = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
            "{% if m['role'] == 'assistant' %}{{ '(' + m['content'] + ')' }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    encoder = ChatEncoder(family_tokenizer("smollm2-instruct", echo), 4096)
    with pytest.raises(RowError) as err:
        encoder.encode(CONVERSATIONS["single"])
    assert err.value.reason == "template-mismatch" and "exactly once" in err.value.detail


def test_a_template_error_quarantines_its_row_and_keeps_the_shard(tmp_path):
    from iprox_ray.corpus.manifest import freeze_manifest
    from iprox_ray.corpus.shard_reader import read_shard
    from iprox_ray.spec import SourceSpec

    tangled = [{"role": "user", "content": U1}, {"role": "user", "content": U2}, {"role": "assistant", "content": A1}]
    rows = [{"id": "a", "messages": CONVERSATIONS["multi"]}, {"id": "bad", "messages": tangled},
            {"id": "c", "messages": CONVERSATIONS["system"]}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = freeze_manifest(["rows.jsonl"], "auto", tmp_path, 8, tmp_path / "m.parquet", tmp_path / "m.json", {})
    encoder = ChatEncoder(family_tokenizer("gemma-3-it"), 4096)
    out = read_shard("pool", manifest.shards[0], SourceSpec(paths=["rows.jsonl"], id_column="id"), encoder)
    assert [c.sample_id for c in out.conversations] == ["a", "c"] and out.local_rows == [0, 2]
    assert [(q["sample_id"], q["row"], q["reason"], q["detail"]) for q in out.quarantine] == [
        ("bad", 1, "template-error", "Conversation roles must alternate user/assistant/user/assistant/...")]


def test_qwen3_reasoning_is_trained_on_the_last_turn_only_as_the_template_renders_it():
    tok = family_tokenizer("qwen3-0.6b")
    messages = [{"role": "user", "content": U1}, {"role": "assistant", "content": "<think>\nR1\n</think>\n\n" + A1},
                {"role": "user", "content": U2}, {"role": "assistant", "content": "<think>R2</think>" + A2}]
    pieces = [(f"<|im_start|>user\n{U1}<|im_end|>\n<|im_start|>assistant\n", False), (A1 + "<|im_end|>", True),
              (f"\n<|im_start|>user\n{U2}<|im_end|>\n<|im_start|>assistant\n", False),
              ("<think>\nR2\n</think>\n\n" + A2 + "<|im_end|>", True), ("\n", False)]
    text, ids, mask = expected_mask(tok, pieces)
    assert tok.apply_chat_template(messages, tokenize=False) == text  # R1 is dropped from the earlier turn
    enc = ChatEncoder(tok, 4096).encode(messages)
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)


def test_the_end_marker_stops_at_a_special_token_boundary():
    # Phi-3 without its newlines: after `<|end|>` come `<|user|>` or, at the end, `<|endoftext|>`;
    # their common `<|` must not be taken for part of the marker.
    packed = (TEMPLATES / "phi-3-mini-4k-instruct.jinja").read_text().replace("\n", "")
    tok = family_tokenizer("phi-3-mini-4k-instruct", packed)
    enc = ChatEncoder(tok, 4096).encode(CONVERSATIONS["multi"])
    assert tok.decode(enc.input_ids[enc.trainable]) == A1 + "<|end|>" + A2 + "<|end|>"
