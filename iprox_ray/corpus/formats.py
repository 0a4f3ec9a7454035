"""data.format: which encoder turns a split's rows into token ids and a loss mask.

    chat      corpus/encode.py  the tokenizer's chat template; loss on the assistant turns
    template  corpus/encode.py  the same, with the Jinja template of data.template_file
    tulu      corpus/tulu.py    open-instruct / LESS text for base models; assistant content + EOS
    text      corpus/text.py    plain documents; every token after the first

Every encoder has `parse(values, source) -> row`, `encode_row(row) -> Encoded`, `tokenizer`
and `max_length`. `EncodingSettings` is everything that decides the result besides the
tokenizer and the row, plain data so it travels to the workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from iprox_ray.corpus.encode import ChatEncoder, Encoded
from iprox_ray.corpus.text import TextEncoder
from iprox_ray.corpus.tulu import TuluEncoder


@dataclass(frozen=True)
class EncodingSettings:
    format: str = "chat"  # chat | tulu | template | text
    max_length: int = 512
    truncation: str = "right"
    system_prompt: str = "keep"  # keep | merge | drop
    template: str | None = None  # format "template": the Jinja text of data.template_file
    now: str | None = None  # the instant templates' strftime_now shows (ISO), fixed per run
    # format "text": "first" | "all" (data.text_windows, reading documents) | "cut" (reading the
    # window rows corpus/windows.py cut from them)
    windows: str = "first"


def build_encoder(settings: EncodingSettings, tokenizer):
    s = settings
    if s.format in ("chat", "template"):
        return ChatEncoder(tokenizer, s.max_length, s.truncation, s.template if s.format == "template" else None,
                           s.system_prompt, s.now)
    if s.format == "tulu":
        return TuluEncoder(tokenizer, s.max_length, s.truncation, s.system_prompt)
    if s.format == "text":
        return TextEncoder(tokenizer, s.max_length, s.truncation, s.windows)
    raise ValueError(f"unknown data.format {s.format!r}")


def encode_all(encoder, row) -> list[Encoded]:
    """Every row one input row becomes (a text document under data.text_windows = "all": each window)."""
    return encoder.encode_all(row) if isinstance(encoder, TextEncoder) else [encoder.encode_row(row)]
