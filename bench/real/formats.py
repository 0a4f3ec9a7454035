"""Real-model check of data.format: the per-row loss the store holds equals each format's definition.

    .venv/bin/python -m bench.real.model && .venv/bin/python -m bench.real.corpus   # once
    .venv/bin/python -m bench.real.formats [--real-dir bench/out/real] [--rows 32] [--formats tulu text]

Two small end-to-end runs of `iprox-ray run` on SmolLM2-135M-Instruct (fp32, warm-up off,
proxy "none", so the store's `loss` column is the model's own loss on each row; inline executor,
so that the shared 2-core VM holds one model copy):

- "tulu": the model's tokenizer copied without its chat template (a base model's tokenizer), the
  pool rows of the real corpus (every other one given a system message) in data.format = "tulu".
  Reference: the LESS way, written here from scratch: the open-instruct text, labels cut by the
  token counts of prefix renders (get_training_dataset.encode_with_messages_format), less the
  newline after each EOS, which LESS trains and the product does not.
- "text": the assistant answers of the same pool rows as plain documents (man pages, changelogs,
  manuals, licences), cut into windows of `--text-length` tokens (data.text_windows = "all"),
  beside the real chat target in the tokenizer's own template (data.format = {pool = "text",
  target = "chat"}). Reference: BOS + the document's tokens, windows overlapping by one token,
  loss on every token after each window's first. The same run's target rows check "chat": the
  ChatML rendering written out (its default system message), content + <|im_end|> trained,
  truncated to the run's max_length.

Each reference row runs alone through the model (bs = 1, fp32). Output: one JSON object per
format (rows compared, max and median relative error of the loss, run seconds) on stdout and in
bench/out/formats/results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import OUT as BENCH_OUT
from bench.common import REAL, REPO

OUT = BENCH_OUT / "formats"
SYSTEM = "Answer from the documentation."


def job_toml(name: str, model: Path, tokenizer: Path, pool: Path, target: Path, data: str) -> str:
    return f"""
[run]
name = "{name}"
[model]
path = "{model}"
tokenizer = "{tokenizer}"
[data]
{data}
[data.pool]
paths = ["{pool}"]
id_column = "id"
domain_column = "domain"
rows_per_shard = 16
[data.target]
paths = ["{target}"]
id_column = "id"
rows_per_shard = 8
[warmup]
enabled = false
[proxy]
method = "none"
[fidelity]
enabled = false
[sketch]
token_budget = 2048
[selection]
k = 4
[cluster]
executor = "inline"            # the shared 2-core VM: no second model copy in a Ray actor
threads_per_actor = 2
"""


def base_tokenizer(model: Path, out: Path) -> Path:
    """The model's tokenizer files without the chat template (what a base checkpoint ships)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (model / name).exists():
            shutil.copy(model / name, out / name)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def run(job: Path, run_dir: Path, reuse: bool = False) -> float | None:
    if reuse and (run_dir / "summary.json").exists():
        return None
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "iprox_ray.cli.main", "run", str(job), "--run-dir", str(run_dir), "-q"],
                   check=True, cwd=REPO)
    return round(time.perf_counter() - start, 1)


def stored(run_dir: Path, split: str = "pool") -> dict[str, tuple[float, int]]:
    from iprox_ray.store.sketch_store import OK, SplitStore

    store = SplitStore.open(run_dir / "store.zarr", split, mode="r")
    ids, loss, n, written = (store.read(k) for k in ("sample_id", "loss", "n_tokens", "written"))
    return {str(i): (float(v), int(t)) for i, v, t, w in zip(ids, loss, n, written) if w == OK}


def row_loss(model, ids: list[int], trained: np.ndarray) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    losses = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").numpy()
    return float(losses[trained[1:]].mean())


def less_row(tok, messages: list[dict], max_length: int) -> tuple[list[int], np.ndarray]:
    """LESS's encode_with_messages_format, reimplemented: prefix token counts cut the labels."""
    eos = tok.eos_token
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []

    def concat(msgs):
        return "".join(f"<|{m['role']}|>\n{m['content'].strip()}" + (eos if m["role"] == "assistant" else "") + "\n"
                       for m in msgs)

    def n_ids(text):
        return min(max_length, len(bos) + len(tok(text, add_special_tokens=False)["input_ids"]))

    ids = (bos + tok(concat(messages), add_special_tokens=False)["input_ids"])[:max_length]
    labels = np.ones(len(ids), dtype=bool)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            start = 0 if i == 0 else n_ids(concat(messages[:i]))
            follows = i + 1 < len(messages) and messages[i + 1]["role"] == "assistant"
            labels[start: n_ids(concat(messages[: i + 1]) + ("<|assistant|>\n" if follows else ""))] = False
        else:  # the newline after EOS: LESS trains it, the product does not
            labels[n_ids(concat(messages[: i + 1])[:-1]): n_ids(concat(messages[: i + 1]))] = False
    labels[0] = False
    return ids, labels


def chatml_row(tok, messages: list[dict], max_length: int) -> tuple[list[int], np.ndarray]:
    """SmolLM2's own ChatML, written out: its default system message when the row has none; each
    assistant content and its <|im_end|> trained, not the newline after it."""
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    if messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages
    pieces = []
    for m in messages:
        if m["role"] == "assistant":
            pieces += [("<|im_start|>assistant\n", False), (m["content"] + "<|im_end|>", True), ("\n", False)]
        else:
            pieces.append((f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n", False))
    ids, trained = [], []
    for text, train in pieces:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        trained += [train] * len(piece)
    assert ids == tok("".join(t for t, _ in pieces), add_special_tokens=False)["input_ids"]  # pieces tokenise apart
    trained[0] = False
    return ids[:max_length], np.asarray(trained[:max_length])  # truncation "right"


def text_windows(tok, doc_id: str, text: str, length: int) -> dict[str, list[int]]:
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    ids = bos + tok(text, add_special_tokens=False)["input_ids"]
    out, start, k = {}, 0, 0
    while True:
        out[f"{doc_id}#{k}"] = ids[start: start + length]
        if start + length >= len(ids):
            return out
        start, k = start + length - 1, k + 1


def compare(model, got: dict, expected: dict) -> dict:
    assert set(got) == set(expected), (sorted(set(got) ^ set(expected)))[:5]
    errors, losses = [], []
    for key, (ids, trained) in expected.items():
        loss, n_tokens = got[key]
        assert n_tokens == len(ids), (key, n_tokens, len(ids))
        ref = row_loss(model, ids, trained)
        errors.append(abs(loss - ref) / abs(ref))
        losses.append(ref)
    return {"rows": len(errors), "max_rel_error": float(max(errors)), "median_rel_error": float(np.median(errors)),
            "mean_loss": float(np.mean(losses)), "tokens": int(sum(len(i) for i, _ in expected.values()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-dir", type=Path, default=REAL)
    parser.add_argument("--rows", type=int, default=32, help="pool rows (documents for text)")
    parser.add_argument("--target-rows", type=int, default=8)
    parser.add_argument("--text-length", type=int, default=96, help="max_length of the text windows")
    parser.add_argument("--formats", nargs="+", default=["tulu", "text"], choices=["tulu", "text"])
    parser.add_argument("--reuse", action="store_true", help="compare a finished run again without rerunning it")
    args = parser.parse_args()
    from iprox_ray.models.loading import load_pretrained, load_tokenizer

    model_dir = args.real_dir / "SmolLM2-135M-Instruct-hf"
    corpus = [json.loads(line) for line in (args.real_dir / "corpus" / "pool.jsonl").read_text().splitlines()]
    corpus = corpus[: args.rows]
    target = [json.loads(line) for line in (args.real_dir / "corpus" / "target.jsonl").read_text().splitlines()]
    target_path = write_jsonl(target[: args.target_rows], OUT / "target.jsonl")
    results = {}
    if "tulu" in args.formats:
        tok_dir = base_tokenizer(model_dir, OUT / "base-tokenizer")
        tok = load_tokenizer(tok_dir)
        assert not getattr(tok, "chat_template", None)
        rows = [{**r, "messages": ([{"role": "system", "content": SYSTEM}] if i % 2 else []) + r["messages"]}
                for i, r in enumerate(corpus)]
        pool = write_jsonl(rows, OUT / "tulu-pool.jsonl")
        job = OUT / "tulu.toml"
        job.write_text(job_toml("formats-tulu", model_dir, tok_dir, pool, target_path,
                                'format = "tulu"\nmax_length = 512'))
        seconds = run(job, OUT / "runs" / "tulu", args.reuse)
        model = load_pretrained(model_dir).eval()
        expected = {r["id"]: less_row(tok, r["messages"], 512) for r in rows}
        results["tulu"] = {**compare(model, stored(OUT / "runs" / "tulu"), expected), "run_seconds": seconds,
                           "job": str(job)}
        print(json.dumps({"tulu": results["tulu"]}), flush=True)
    if "text" in args.formats:
        tok = load_tokenizer(model_dir)
        docs = [{"id": r["id"], "domain": r["domain"], "text": r["messages"][-1]["content"]} for r in corpus]
        pool = write_jsonl(docs, OUT / "text-pool.jsonl")
        job = OUT / "text.toml"
        job.write_text(job_toml("formats-text", model_dir, model_dir, pool, target_path,
                                'format = {pool = "text", target = "chat"}\ntext_windows = "all"\n'
                                f"max_length = {args.text_length}"))
        seconds = run(job, OUT / "runs" / "text", args.reuse)
        model = load_pretrained(model_dir).eval()
        expected = {}
        for d in docs:
            for key, ids in text_windows(tok, d["id"], d["text"], args.text_length).items():
                trained = np.ones(len(ids), dtype=bool)
                trained[0] = False
                expected[key] = (ids, trained)
        results["text"] = {**compare(model, stored(OUT / "runs" / "text"), expected), "documents": len(docs),
                           "run_seconds": seconds, "job": str(job)}
        print(json.dumps({"text": results["text"]}), flush=True)
        # the same run's target: "chat", the tokenizer's own template
        chat = {r["id"]: chatml_row(tok, r["messages"], args.text_length) for r in target[: args.target_rows]}
        results["chat"] = {**compare(model, stored(OUT / "runs" / "text", "targets/main"), chat),
                           "run": "the text run's target split", "job": str(job)}
        print(json.dumps({"chat": results["chat"]}), flush=True)
    saved = OUT / "results.json"  # one format per call keeps the other's figures
    previous = json.loads(saved.read_text()) if saved.exists() else {}
    for name, figures in results.items():  # a --reuse comparison keeps the run's own seconds
        previous[name] = {**previous.get(name, {}), **{k: v for k, v in figures.items() if v is not None}}
    saved.write_text(json.dumps(previous, indent=2))


if __name__ == "__main__":
    main()
