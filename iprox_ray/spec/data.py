"""Spec sections for inputs: the model and the pool / target corpora."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from iprox_ray.spec.base import Section


class ModelSpec(Section):
    path: str = Field(description="folder with config.json (and weights unless init='random')")
    tokenizer: str | None = Field(None, description="tokenizer folder; defaults to `path`")
    init: Literal["pretrained", "random"] = "pretrained"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["eager", "sdpa"] = "sdpa"


class SourceSpec(Section):
    """One corpus (pool or target): files plus how to read a row."""

    paths: list[str] = Field(min_length=1, description="files, globs or save_to_disk folders")
    format: Literal["auto", "parquet", "jsonl", "hf_disk"] = "auto"
    messages_column: str = "messages"
    prompt_column: str = "prompt"
    response_column: str = "response"
    system_column: str | None = None
    id_column: str | None = Field(None, description="stable id column; else a content hash")
    domain_column: str | None = Field(None, description="label used in per-domain reports")
    subtask_column: str | None = Field(None, description="target only: groups examples")
    # "auto": sized by tokens (iprox_ray/corpus/shard_size.py); the chosen number is recorded in the manifest.
    rows_per_shard: Annotated[int, Field(ge=1, le=1 << 20)] | Literal["auto"] = 256


class DataSpec(Section):
    pool: SourceSpec
    target: SourceSpec
    max_length: int = Field(512, ge=8)
    # right: keep the first max_length tokens; drop: quarantine longer rows.
    truncation: Literal["right", "drop"] = "right"
