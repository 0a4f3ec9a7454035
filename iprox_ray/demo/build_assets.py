"""Build the shipped demo assets: `python -m iprox_ray.demo.build_assets [--out DIR]`.

Writes, under DIR (default: the `assets/` folder next to this file):
  pool/part-000{0..3}.parquet  multi-domain chat pool (id, domain, messages)
  target.jsonl                 held-out arithmetic target set (id, domain, prompt, response)
  tokenizer/                   byte-level BPE with a chat template (transformers format)
  model/config.json            tiny Llama config; weights are random-init at run time
  README.md                    what each asset is, where it comes from, how to rebuild it

All text comes from Python's own standard library or from seeded generators, so the build
needs no network and gives the same files every time on the same Python version.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from iprox_ray.demo import domains, generated_domains
from iprox_ray.demo.model_assets import (
    CHAT_TEMPLATE,
    check_model_folder,
    check_tokenizer_folder,
    model_config,
    save_tokenizer,
    train_tokenizer,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "assets"
SEED = 0
TARGET_SEED = 1  # a different stream from the pool's arithmetic, then filtered against it
ROWS_PER_DOMAIN = 600
TARGET_ROWS = 64
POOL_PARTS = 4
ROW_GROUPS_PER_PART = 3
SYSTEM_SHARE = 0.10  # some rows carry a system message so both shapes are exercised

SYSTEM_PROMPTS = {
    "python_topics": ["You are a Python language expert. Answer from the official documentation.",
                      "You explain Python clearly and precisely."],
    "docstrings": ["You are a helpful assistant that knows the Python standard library well.",
                   "Answer questions about Python APIs using their documentation."],
    "code": ["You are an expert Python programmer. Reply with code only.",
             "You write clean, idiomatic Python."],
    "arithmetic": ["You are a patient math tutor. Show your work step by step.",
                   "Solve the problem and end with 'The answer is N.'"],
    "dates": ["You are a careful assistant that answers calendar questions.",
              "Work out date questions step by step."],
}


@dataclass
class Row:
    id: str
    domain: str
    messages: list[dict[str, str]]


def _generated(generator):
    # Generated domains get a margin so deduplication still leaves ROWS_PER_DOMAIN rows.
    return lambda rng: generator(rng, ROWS_PER_DOMAIN + 200)


DOMAINS = {
    "python_topics": domains.python_topic_pairs,
    "docstrings": domains.docstring_pairs,
    "code": domains.code_pairs,
    "arithmetic": _generated(generated_domains.arithmetic_pairs),
    "dates": _generated(generated_domains.date_pairs),
}


def _content_key(text: str) -> str:
    return " ".join(text.split()).lower()


def _domain_rng(domain: str, purpose: str, seed: int = SEED) -> random.Random:
    # One stream per domain and purpose: changing one domain never shifts another's rows.
    return random.Random(f"{domain}/{purpose}/{seed}")


def build_pool() -> list[Row]:
    """Generate every domain, drop repeated replies (across domains too), cap, attach ids."""
    seen: set[str] = set()
    rows: list[Row] = []
    for domain, generate in DOMAINS.items():
        unique = []
        for user, assistant in generate(_domain_rng(domain, "text")):
            user, assistant = user.strip(), assistant.strip()
            key = _content_key(assistant)
            if key not in seen and "<|" not in user + assistant:  # no fake special tokens
                seen.add(key)
                unique.append((user, assistant))
        if len(unique) > ROWS_PER_DOMAIN:
            keep = sorted(_domain_rng(domain, "sample").sample(range(len(unique)), ROWS_PER_DOMAIN))
            unique = [unique[i] for i in keep]
        system_rng = _domain_rng(domain, "system")
        for index, (user, assistant) in enumerate(unique):
            messages = [{"role": "user", "content": user},
                        {"role": "assistant", "content": assistant}]
            if system_rng.random() < SYSTEM_SHARE:
                messages.insert(0, {"role": "system",
                                    "content": system_rng.choice(SYSTEM_PROMPTS[domain])})
            rows.append(Row(f"{domain}-{index:06d}", domain, messages))
    return rows


def build_target(pool: list[Row]) -> list[dict[str, str]]:
    """Held-out arithmetic problems from another seed, none repeating a pool question or reply."""
    used = {_content_key(m["content"]) for row in pool for m in row.messages}
    rng = _domain_rng("arithmetic", "target", TARGET_SEED)
    target = []
    for prompt, response in generated_domains.arithmetic_pairs(rng, 4 * TARGET_ROWS):
        if _content_key(prompt) in used or _content_key(response) in used:
            continue
        target.append({"id": f"target-arithmetic-{len(target):06d}", "domain": "arithmetic",
                       "prompt": prompt, "response": response})
        if len(target) == TARGET_ROWS:
            return target
    raise RuntimeError("could not generate enough held-out target rows")


# ----------------------------------------------------------------------------- writers


def write_pool(rows: list[Row], folder: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("id", pa.string()), ("domain", pa.string()),
                        ("messages", pa.list_(message))])
    shuffled = list(rows)
    random.Random(f"pool-shuffle/{SEED}").shuffle(shuffled)  # domains mixed within every part
    folder.mkdir(parents=True)
    paths = []
    per_part = math.ceil(len(shuffled) / POOL_PARTS)
    for part in range(POOL_PARTS):
        chunk = shuffled[part * per_part:(part + 1) * per_part]
        records = [{"id": r.id, "domain": r.domain, "messages": r.messages} for r in chunk]
        table = pa.Table.from_pylist(records, schema=schema)
        path = folder / f"part-{part:04d}.parquet"
        pq.write_table(table, path, compression="zstd",
                       row_group_size=math.ceil(len(chunk) / ROW_GROUPS_PER_PART))
        paths.append(path)
    return paths


def write_target(target: list[dict[str, str]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in target:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def tokenizer_training_text(pool: list[Row], target: list[dict[str, str]]) -> list[str]:
    texts = [m["content"] for row in pool for m in row.messages]
    return texts + [t[column] for t in target for column in ("prompt", "response")]


def target_conversation(row: dict[str, str]) -> list[dict[str, str]]:
    return [{"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["response"]}]


# ----------------------------------------------------------------------------- README


def _length_summary(lengths: list[int]) -> str:
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return (f"min {ordered[0]}, median {statistics.median(ordered):g}, p95 {p95}, "
            f"max {ordered[-1]}")


def readme_text(pool: list[Row], target: list[dict], lengths: dict[str, list[int]],
                config, n_params: int, sizes: dict[str, int]) -> str:
    vocab_size = config.vocab_size
    domain_lines = "\n".join(
        f"| `{d}` | {sum(r.domain == d for r in pool)} | {_length_summary(lengths[d])} |"
        for d in DOMAINS)
    with_system = sum(r.messages[0]["role"] == "system" for r in pool)
    size_lines = "\n".join(f"- `{name}`: {size / 1024:.0f} KiB" for name, size in sizes.items())
    return f"""# iprox-ray demo assets

Small, self-contained inputs for the demo job (`jobs/demo.toml`): a multi-domain pool to select
from, an arithmetic target set to select for, a tokenizer and a tiny model config. Everything
is built offline from text that ships with Python and from seeded generators.

Rebuild (deterministic, under a minute on two cores):

    python -m iprox_ray.demo.build_assets [--out DIR]

Rows and files depend on the Python version whose standard library is read (built with
Python {'.'.join(map(str, sys.version_info[:3]))}).

## pool/part-0000.parquet … part-{POOL_PARTS - 1:04d}.parquet

{len(pool)} chat rows, shuffled with a fixed seed and split into {POOL_PARTS} zstd Parquet files
of {ROW_GROUPS_PER_PART} row groups each. Columns: `id` (e.g. `arithmetic-000123`), `domain`,
`messages` (list of `{{role, content}}`: user then assistant; {with_system} rows start with a
system message). Replies are deduplicated across the whole pool.

Token counts are of the templated conversation with the demo tokenizer.

| domain | rows | tokens per row |
|---|---|---|
{domain_lines}

- `python_topics`: passages of Python's own documentation topics (`pydoc_data.topics`), cut at
  paragraph boundaries; the user asks about the topic or one of its sections.
- `docstrings`: docstrings of public functions and classes of {len(domains.DOC_MODULES)} standard
  library modules (via `inspect`), asked about in several phrasings.
- `code`: source of small ({domains.MIN_CODE_LINES}–{domains.MAX_CODE_LINES} lines) functions
  and methods of {len(domains.CODE_MODULES)} pure-Python standard library modules; the user asks
  for the function by signature and docstring summary.
- `arithmetic`: generated word problems ({len(generated_domains.ARITHMETIC_TEMPLATES)} templates:
  shopping, travel, sharing, percentages, savings, …) with worked steps ending in
  "The answer is N.".
- `dates`: generated calendar questions (weekday of a date, days between dates, date N days
  later, leap years, month lengths) computed with `datetime`/`calendar`.

## target.jsonl

{len(target)} held-out arithmetic problems from a different seed, none sharing a question or a
reply with the pool. One JSON object per line: `id`, `domain`, `prompt`, `response` (the
prompt/response row format, unlike the pool's `messages`). Tokens per row:
{_length_summary(lengths["target"])}.

## tokenizer/

Byte-level BPE trained with Hugging Face `tokenizers` on the pool and target text;
{vocab_size} tokens including the specials `<|pad|>`, `<|bos|>`, `<|eos|>`, `<|system|>`,
`<|user|>`, `<|assistant|>`, `<|end|>`. Load with `AutoTokenizer.from_pretrained` (the config
is written so that transformers 4.x and 5.x both load it). Its chat
template renders `<|bos|>` then `<|role|>\\n{{content}}<|end|>\\n` per message (a trailing
`<|assistant|>\\n` with `add_generation_prompt`), and marks each assistant reply and its `<|end|>`
with `{{% generation %}}`, so `return_assistant_tokens_mask=True` gives the training mask:

    {CHAT_TEMPLATE}

## model/config.json

A tiny `LlamaForCausalLM` config: hidden size {config.hidden_size}, {config.num_hidden_layers}
layers, {config.num_attention_heads} attention heads / {config.num_key_value_heads} KV heads,
MLP {config.intermediate_size}, {vocab_size}-token vocabulary, {config.max_position_embeddings}
positions, untied embeddings; {n_params / 1e6:.2f}M parameters. No weights are shipped: the demo
initialises the model at random from its seed (`init = "random"`).

## Sizes

{size_lines}

## Licence

The `python_topics`, `docstrings` and `code` text is taken from the Python standard library and
its documentation, © Python Software Foundation, under the PSF License Agreement
(https://docs.python.org/3/license.html). The generated rows, the tokenizer and the config are
part of iprox-ray and share its licence.
"""


# ----------------------------------------------------------------------------- main


def _clear(out: Path) -> None:
    # Only what this script writes is removed, so --out may point at a folder with other files.
    for name in ("pool", "tokenizer", "model"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("target.jsonl", "README.md"):
        (out / name).unlink(missing_ok=True)


def _folder_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(out: Path) -> dict:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    pool = build_pool()
    target = build_target(pool)
    write_pool(pool, out / "pool")
    write_target(target, out / "target.jsonl")

    tokenizer = train_tokenizer(tokenizer_training_text(pool, target))
    save_tokenizer(tokenizer, out / "tokenizer")
    config = model_config(tokenizer)
    config.save_pretrained(str(out / "model"))

    # Check what was written, reloaded the way the pipeline loads it, on every row.
    conversations = {d: [r.messages for r in pool if r.domain == d] for d in DOMAINS}
    conversations["target"] = [target_conversation(t) for t in target]
    lengths = {name: check_tokenizer_folder(out / "tokenizer", convs)
               for name, convs in conversations.items()}
    n_params = check_model_folder(out / "model", out / "tokenizer", conversations["target"][0])

    sizes = {name: _folder_size(out / name)
             for name in ("pool", "target.jsonl", "tokenizer", "model")}
    (out / "README.md").write_text(readme_text(pool, target, lengths, config, n_params, sizes),
                                   encoding="utf-8")
    return {"rows": {d: len(c) for d, c in conversations.items()},
            "tokens": {d: _length_summary(n) for d, n in lengths.items()},
            "all_tokens": _length_summary([n for ns in lengths.values() for n in ns]),
            "bytes": _folder_size(out), "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="assets folder to write")
    summary = build(parser.parse_args(argv).out)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
