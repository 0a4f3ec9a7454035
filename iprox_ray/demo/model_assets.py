"""The demo tokenizer (a byte-level BPE trained on the demo text) and the tiny Llama config.

The chat template marks each assistant turn with `{% generation %}` so that transformers can
return the assistant-token mask directly; `check_chat_template` proves the mask, the rendering and
the round trip on real rows before anything is shipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

VOCAB_SIZE = 4096  # includes the special tokens, so len(tokenizer) == VOCAB_SIZE
PAD, BOS, EOS, END = "<|pad|>", "<|bos|>", "<|eos|>", "<|end|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS, END]
MAX_POSITIONS = 512

# <|bos|>, then "<|role|>\n{content}<|end|>\n" per message. The assistant's content and its
# <|end|> are its generation (what the model is trained to emit); the "\n" after is not.
# Rendering messages[:i] with add_generation_prompt ends in "<|assistant|>\n", which is exactly
# how the full rendering continues, so the template is prefix-consistent as well.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|assistant|>\\n' }}"
    "{% generation %}{{- message['content'] + '<|end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)


def render_by_hand(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """What CHAT_TEMPLATE must produce, written in Python to check the Jinja against."""
    text = BOS + "".join(f"<|{m['role']}|>\n{m['content']}{END}\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def train_tokenizer(texts: Iterable[str]):
    """A byte-level BPE: every byte is in the base alphabet, so any text encodes losslessly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    # No normalizer and no post-processor: the ids must decode back to the exact rendered text,
    # and token offsets must not be trimmed, or the assistant mask would slip off by a token.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[*ROLE_TOKENS, END],
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(tokenizer, folder: Path) -> None:
    """save_pretrained, then spell tokenizer_config.json the way transformers 4.x reads it too.

    transformers 5 writes `tokenizer_class: TokenizersBackend` and a list-valued
    `extra_special_tokens`, which 4.x cannot load; the 4.x spelling loads in both. The template is
    also kept inline because 4.x before chat_template.jinja support reads it only from here.
    """
    tokenizer.save_pretrained(str(folder))
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        config["additional_special_tokens"] = extra
    elif extra:
        config["extra_special_tokens"] = extra
    config["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                    encoding="utf-8")


def model_config(tokenizer):
    """A tiny Llama (about 1.8M parameters) sized to the tokenizer; weights come at run time."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )


# ----------------------------------------------------------------------------- checks


def _assistant_spans(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def check_conversation(tokenizer, messages: list[dict[str, str]]) -> int:
    """Raise if the template misbehaves on this conversation; return its token count."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    if text != render_by_hand(messages):
        raise AssertionError(f"template renders differently from the spec: {text[:200]!r}")
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            before = tokenizer.apply_chat_template(messages[:i], tokenize=False,
                                                   add_generation_prompt=True)
            if not text.startswith(before):
                raise AssertionError("template is not prefix-consistent")
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), np.asarray(out["assistant_masks"], dtype=bool)
    if ids != tokenizer(text, add_special_tokens=False)["input_ids"]:
        raise AssertionError("apply_chat_template ids differ from encoding the rendered text")
    if tokenizer.decode(ids, skip_special_tokens=False) != text:
        raise AssertionError("decode(encode(text)) != text")
    replies = [m["content"] + END for m in messages if m["role"] == "assistant"]
    spans = _assistant_spans(mask)
    masked = [tokenizer.decode(ids[lo:hi], skip_special_tokens=False) for lo, hi in spans]
    if masked != replies:
        raise AssertionError(f"assistant mask covers {masked!r}, expected {replies!r}")
    for lo, hi in spans:  # the mask must start right after "<|assistant|>\n"
        if not tokenizer.decode(ids[:lo], skip_special_tokens=False).endswith("<|assistant|>\n"):
            raise AssertionError("assistant mask does not start right after the role header")
    return len(ids)


def check_tokenizer_folder(folder: Path, conversations: list[list[dict[str, str]]]) -> list[int]:
    """Reload the saved tokenizer the way users will (offline, AutoTokenizer), check it on every
    conversation and return their token counts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if len(tokenizer) != VOCAB_SIZE or tokenizer.chat_template != CHAT_TEMPLATE:
        raise AssertionError(f"reloaded tokenizer has {len(tokenizer)} tokens or another template")
    lengths = [check_conversation(tokenizer, messages) for messages in conversations]
    with_prompt = tokenizer.apply_chat_template(conversations[0][:-1], tokenize=False,
                                                add_generation_prompt=True)
    if with_prompt != render_by_hand(conversations[0][:-1], add_generation_prompt=True):
        raise AssertionError("generation prompt renders wrongly")
    return lengths


def check_model_folder(model_folder: Path, tokenizer_folder: Path,
                       messages: list[dict[str, str]]) -> int:
    """The config must build a random-init model that runs on a tokenized conversation;
    returns the model's parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
    config = AutoConfig.from_pretrained(str(model_folder), local_files_only=True)
    if config.vocab_size != len(tokenizer) or config.pad_token_id != tokenizer.pad_token_id:
        raise AssertionError("model config and tokenizer disagree")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    batch = torch.tensor([list(ids)])
    with torch.no_grad():
        out = model(input_ids=batch, labels=batch)
    if out.logits.shape != (1, batch.shape[1], config.vocab_size) or not torch.isfinite(out.loss):
        raise AssertionError("forward pass of the tiny model failed")
    return sum(p.numel() for p in model.parameters())
