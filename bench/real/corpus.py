"""Build a small real-text chat corpus from documentation already on this machine (no downloads).

Six domains (bench/real/corpus_sources.py), one (question, real text) pair per source item; rows are
JSONL in the product's format (`id`, `domain`, `messages`, plus `source_key`). Deterministic for a
seed on a given machine:

    .venv/bin/python -m bench.real.corpus [--out bench/out/real/corpus] [--seed 0]

Writes pool.jsonl (100 rows per domain), target.jsonl and eval.jsonl (40 rows each of the target
domain, disjoint from the pool and each other) and provenance.json (sources, counts, token stats).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import subprocess
import sys
from pathlib import Path

from bench.common import REAL
from bench.real.corpus_sources import DOMAINS, MAX_COST, MIN_CHARS

DEFAULT_OUT = REAL / "corpus"
DEFAULT_MODEL = REAL / "SmolLM2-135M-Instruct-hf"
POOL_PER_DOMAIN, TARGET_ROWS, EVAL_ROWS = 100, 40, 40
TARGET_DOMAIN = "python_docs"


def collect(domain: str, need: int, rng: random.Random, seen: set[str]) -> list[dict]:
    """Shuffle the domain's items with the seed and render them until `need` rows pass the filters."""
    items = list(DOMAINS[domain][0]())
    rng.shuffle(items)
    rows = []
    for key, render in items:
        if len(rows) == need:
            break
        made = render()
        if not made:
            continue
        asks, answer = made
        norm = " ".join(answer.lower().split())
        if len(answer) < MIN_CHARS or norm in seen:
            continue  # too short, or the same text as an earlier row (dedupe across domains)
        seen.add(norm)
        question = asks[rng.randrange(len(asks))]
        digest = hashlib.sha1(f"{domain}\0{key}\0{answer}".encode()).hexdigest()[:10]
        rows.append({"id": f"{domain}-{digest}", "domain": domain, "source_key": key,
                     "messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}]})
    if len(rows) < need:
        raise SystemExit(f"{domain}: only {len(rows)} usable items of {need} needed ({len(items)} candidates)")
    print(f"[real_corpus] {domain}: {len(rows)} rows from {len(items)} candidates", flush=True)
    return rows


def token_stats(splits: dict[str, list[dict]], model_dir: Path) -> dict | None:
    """Tokens per row as the product encodes it (full ChatML render, default system prompt included)."""
    if not (model_dir / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    stats = {}
    for split, rows in splits.items():
        full = [len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
                for r in rows]
        answer = [len(tok(r["messages"][1]["content"], add_special_tokens=False)["input_ids"]) for r in rows]
        stats[split] = _summary(full, answer)
        print(f"[real_corpus] tokens {split}: {stats[split]}", flush=True)
        if split == "pool":
            stats["pool_by_domain"] = {d: _summary([n for n, r in zip(full, rows) if r["domain"] == d],
                                                   [n for n, r in zip(answer, rows) if r["domain"] == d])
                                       for d in DOMAINS}
    return stats


def _summary(full: list[int], answer: list[int]) -> dict:
    return {"rows": len(full), "total": sum(full), "mean": round(sum(full) / len(full), 1), "min": min(full),
            "max": max(full), "answer_total": sum(answer), "answer_mean": round(sum(answer) / len(answer), 1)}


def build(out: Path, seed: int, model_dir: Path) -> dict:
    rng = random.Random(seed)
    seen: set[str] = set()
    pool, target, evals = [], [], []
    for domain in DOMAINS:
        extra = TARGET_ROWS + EVAL_ROWS if domain == TARGET_DOMAIN else 0
        rows = collect(domain, POOL_PER_DOMAIN + extra, random.Random(f"{seed}:{domain}"), seen)
        if extra:
            target, evals = rows[:TARGET_ROWS], rows[TARGET_ROWS:extra]
        pool += rows[extra:]
    rng.shuffle(pool)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"pool": pool, "target": target, "eval": evals}
    for split, rows in splits.items():
        with open(out / f"{split}.jsonl", "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {s: {d: sum(r["domain"] == d for r in rows) for d in DOMAINS if any(r["domain"] == d for r in rows)}
              for s, rows in splits.items()}
    provenance = {
        "seed": seed, "target_domain": TARGET_DOMAIN, "answer_min_chars": MIN_CHARS, "answer_max_cost": MAX_COST,
        "sources": {d: desc for d, (_, desc) in DOMAINS.items()}, "counts": counts,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "debian": Path("/etc/debian_version").read_text().strip()
                    if Path("/etc/debian_version").exists() else None,
                    "man": _version(["man", "--version"])},
        "token_stats": token_stats(splits, model_dir), "tokenizer": str(model_dir),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"[real_corpus] wrote {', '.join(f'{s}.jsonl ({len(r)})' for s, r in splits.items())} to {out}")
    return provenance


def _version(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (subprocess.SubprocessError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="tokenizer for the token stats")
    args = ap.parse_args(argv)
    build(args.out.resolve(), args.seed, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
