"""Spec sections for inputs: the model and the pool / target corpora, and how a row becomes tokens."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from iprox_ray.spec.base import Section

# How a row becomes token ids and a loss mask (corpus/formats.py):
#   chat      the tokenizer's own chat template; loss on the assistant turns
#   tulu      the open-instruct / LESS text format for base models; loss on assistant content + EOS
#   template  a Jinja chat template from data.template_file, masked like "chat"
#   text      one text column; loss on every token after the first
RowFormat = Literal["chat", "tulu", "template", "text"]
ROW_FORMATS: tuple[str, ...] = RowFormat.__args__


class ModelSpec(Section):
    path: str = Field(description="folder with config.json (and weights unless init='random')")
    tokenizer: str | None = Field(None, description="tokenizer folder; defaults to `path`")
    init: Literal["pretrained", "random"] = "pretrained"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["eager", "sdpa"] = "sdpa"


class SourceSpec(Section):
    """One corpus (pool or target): files plus how to read a row."""

    paths: list[str] = Field(min_length=1, description="files, globs or save_to_disk folders")
    format: Literal["auto", "parquet", "jsonl", "hf_disk"] = "auto"  # the file format; data.format is the row's
    messages_column: str = "messages"
    prompt_column: str = "prompt"
    response_column: str = "response"
    system_column: str | None = None
    text_column: str = Field("text", description='data.format = "text": the column holding the document')
    id_column: str | None = Field(None, description="stable id column; else a content hash")
    domain_column: str | None = Field(None, description="label used in per-domain reports")
    subtask_column: str | None = Field(None, description="target only: groups examples")
    # "auto": sized by tokens (iprox_ray/corpus/shard_size.py); the chosen number is recorded in the manifest.
    rows_per_shard: Annotated[int, Field(ge=1, le=1 << 20)] | Literal["auto"] = 256


class SplitFormats(Section):
    """The row format of each split; `data.format = "chat"` sets both."""

    pool: RowFormat = "chat"
    target: RowFormat = "chat"


class DataSpec(Section):
    pool: SourceSpec
    target: SourceSpec
    # One format for both splits, or a table {pool = ..., target = ...}; always stored as the table,
    # so the fingerprint and `iprox-ray score --set data.format.target=...` see one shape.
    format: SplitFormats = Field(default_factory=SplitFormats)
    template_file: str | None = Field(None, description='data.format = "template": a Jinja chat template file')
    # text rows longer than max_length: "first" keeps the first window (data.truncation applies),
    # "all" cuts every window into a row of its own, id `<doc id>#<k>`.
    text_windows: Literal["first", "all"] = "first"
    # A system message the template cannot take: keep it (refused when the template drops or
    # rejects it), merge it into the first user turn, or drop it.
    system_prompt: Literal["keep", "merge", "drop"] = "keep"
    max_length: int = Field(512, ge=8)
    # right: keep the first max_length tokens; drop: quarantine longer rows.
    truncation: Literal["right", "drop"] = "right"

    @field_validator("format", mode="before")
    @classmethod
    def _one_for_both(cls, value):
        if isinstance(value, str):
            if value not in ROW_FORMATS:
                raise ValueError(f"must be one of {', '.join(map(repr, ROW_FORMATS))}, or a table "
                                 "{pool = ..., target = ...}")
            return {"pool": value, "target": value}
        return value

    @model_validator(mode="after")
    def _template_file_iff_used(self):
        uses = "template" in (self.format.pool, self.format.target)
        if uses and not self.template_file:
            raise ValueError('data.format "template" needs data.template_file (a Jinja chat template file)')
        if self.template_file and not uses:
            raise ValueError('data.template_file is read only with data.format = "template"')
        return self

    def format_of(self, is_pool: bool) -> str:
        return self.format.pool if is_pool else self.format.target

    @staticmethod
    def encoding_keys(is_pool: bool) -> tuple[str, ...]:
        """Dotted spec keys that decide a split's token ids and loss mask (for stage fingerprints)."""
        side = "pool" if is_pool else "target"
        return (f"data.{side}", f"data.format.{side}", "data.max_length", "data.truncation", "data.template_file",
                "data.text_windows", "data.system_prompt")
