"""Load and save Hugging Face causal LMs (weights, or random init from a config with a seed)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(path: Path):
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked everywhere; any id will do
    return tok


def load_config(path: Path):
    return AutoConfig.from_pretrained(str(path))


def random_init(config, seed: int, dtype: str = "float32", attn: str = "sdpa") -> torch.nn.Module:
    """Deterministic random initialisation from a config (no weights are ever downloaded)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype], attn_implementation=attn)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def load_pretrained(path: Path, dtype: str = "float32", attn: str = "sdpa") -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype], attn_implementation=attn)
    return model.eval()


def save_model(model: torch.nn.Module, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(config) -> torch.nn.Module:
    """The architecture without memory (shapes and names only): for planning on the driver."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
