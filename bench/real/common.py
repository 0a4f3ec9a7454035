"""Helpers shared by the real-model benchmarks (bench/real/): reading the real corpus, the real
model, the product's sketcher on real rows, agreement with exact influence, short fine-tunes.

The paths (bench/out/real: the model folder, the corpus, the cached results) are `bench.common.REAL`.
"""

from __future__ import annotations

import ctypes
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import REAL, bench_budget
from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.corpus.rows import RowError, parse_row
from iprox_ray.influence.agreement import kendall_tau_b, spearman, top_overlap
from iprox_ray.influence.exact import ExactGradients
from iprox_ray.models.finetune import finetune
from iprox_ray.models.loading import load_pretrained, load_tokenizer
from iprox_ray.models.loss import per_sample_loss
from iprox_ray.proxy.build import make_proxy
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.spec import ProxySpec, SketchSpec, SourceSpec

PROXY_ALIGN = REAL / "proxy_align"  # bench/real/proxy_align.py's results, read by proxy_finetune.py


def keep_freed_memory() -> None:
    """glibc: keep freed memory instead of returning it (fresh pages are slow on this VM)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
    libc.mallopt(-4, 0)  # M_MMAP_MAX


def encode_file(path: Path, encoder: ChatEncoder, limit: int | None) -> tuple[list, list[str]]:
    spec = SourceSpec(paths=[str(path)], domain_column="domain", id_column="id")
    encoded, domains = [], []
    for line in path.read_text().splitlines():
        try:
            conv = parse_row(json.loads(line), spec)
            encoded.append(encoder.encode(conv.messages))
            domains.append(conv.domain)
        except RowError as err:
            print(f"  quarantined a row of {path.name}: {err}")
        if limit and len(encoded) >= limit:
            break
    return encoded, domains


def batch_tensors(batch):
    return tuple(torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.trainable))


def stratified(domains: np.ndarray, n: int) -> np.ndarray:
    """The first n / n_domains rows of each domain, in pool order."""
    names = sorted(set(domains.tolist()))
    per = n // len(names)
    return np.sort(np.concatenate([np.flatnonzero(domains == d)[:per] for d in names]))


def agreement(exact: np.ndarray, scores: np.ndarray, top: float = 0.05) -> dict:
    ok = np.isfinite(exact) & np.isfinite(scores)
    a, b = exact[ok], scores[ok]
    share, _, _ = top_overlap(a, b, top)
    return {"spearman": spearman(a, b), "kendall": kendall_tau_b(a, b), "top5": share}


def scored_rows(domains: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(the rows scored against exact influence, their exact LESS) from the truth file
    (`sketch_frontier.py` writes it); the 300 stratified rows and no truth without one."""
    truth = REAL / "fidelity.exact.npz"
    if not truth.exists():
        return stratified(domains, 300), None
    t = np.load(truth)
    chosen = t["scored"] if "scored" in t else stratified(domains, 300)
    return chosen, t["exact_all"][chosen]


def real_rows_and_model(n_rows: int):
    """(tokenizer, the first n_rows encoded pool rows, the fp32 real model) for the cost benches."""
    keep_freed_memory()
    folder = REAL / "SmolLM2-135M-Instruct-hf"
    tokenizer = load_tokenizer(folder)
    rows, _ = encode_file(REAL / "corpus" / "pool.jsonl", ChatEncoder(tokenizer, 1024), n_rows)
    return tokenizer, rows, load_pretrained(folder, "float32")


def load_inputs(args):
    """(tokenizer, pool rows, their domains, target rows, model, ExactGradients) for a run."""
    keep_freed_memory()
    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    encoder = ChatEncoder(tokenizer, max_length=1024)
    pool, domains = encode_file(args.corpus / "pool.jsonl", encoder, args.pool_rows)
    target, _ = encode_file(args.corpus / "target.jsonl", encoder, None)
    print(f"pool {len(pool)} rows / {sum(e.n_tokens for e in pool)} tokens, target {len(target)} rows")
    model = load_pretrained(args.model, attn="eager")
    return tokenizer, pool, domains, target, model, ExactGradients(model)


# The product's sketcher on real rows.


def sketch(model, spec: SketchSpec, rows, pad_id: int) -> tuple[np.ndarray, int, float, np.ndarray]:
    """(sketch rows, tokens, seconds, per-row loss) of `rows` by the product's sketcher."""
    sketcher = make_sketcher(model, spec)
    out, losses = None, np.zeros(len(rows))
    tokens, start = 0, time.perf_counter()
    try:
        for b in make_batches(rows, bench_budget(spec), spec.max_batch_rows, pad_id):
            got = sketcher.sketch(*(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable)))
            if out is None:
                out = np.zeros((len(rows), got.sketch.shape[1]), np.float32)
            out[b.rows] = got.sketch.numpy()
            losses[b.rows] = got.loss.numpy()
            tokens += b.n_tokens
    finally:
        sketcher.close()
    return out, tokens, time.perf_counter() - start, losses


def product_check(model, spec: SketchSpec, encoded, want: np.ndarray, pad_id: int) -> dict:
    """Run the product's sketcher on the check rows: tokens/s and agreement with their offline
    sketches `want` (one row each)."""
    sketcher = make_sketcher(model, spec)
    got = np.zeros((len(encoded), sketcher.dim), np.float32)
    tokens, start = 0, time.perf_counter()
    try:
        for b in make_batches(encoded, bench_budget(spec), spec.max_batch_rows, pad_id):
            out = sketcher.sketch(*(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable)))
            got[b.rows] = out.sketch.numpy()
            tokens += b.n_tokens
    finally:
        sketcher.close()
    seconds = time.perf_counter() - start
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "rel_error_vs_offline": rel,
            "dim": sketcher.dim}


def sketch_pass(sketcher, batches) -> tuple[int, float]:
    """(tokens, seconds) of one pass of `sketcher` over `batches`."""
    tokens, start = 0, time.perf_counter()
    for b in batches:
        sketcher.sketch(*(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable)))
        tokens += b.n_tokens
    return tokens, time.perf_counter() - start


def interleaved_seconds(sketchers: dict, batches, repeats: int) -> tuple[dict[str, list[float]], int]:
    """({name: seconds per round}, tokens): one warm-up batch each, then `repeats` rounds in
    which every sketcher runs once over all batches (drift hits all alike)."""
    for s in sketchers.values():  # hooks of one sketcher stay quiet while another runs
        sketch_pass(s, batches[:1])
    seconds: dict[str, list[float]] = {name: [] for name in sketchers}
    tokens = 0
    for _ in range(repeats):
        for name, s in sketchers.items():
            tokens, sec = sketch_pass(s, batches)
            seconds[name].append(sec)
    return seconds, tokens


def shape_proxy(target, method: str, rho: float):
    """A proxy whose shapes (hence cost) are those of `method` at ρ; svd needs no probes."""
    spec = ProxySpec(method=method, rho=rho, rank_multiple=16, align_epochs=0)
    return make_proxy(target, spec, [], 0, None, 0).model


# A short fine-tune on a selection, judged by the held-out target-domain loss.


def eval_loss(model, rows, pad_id: int) -> float:
    """Token-weighted mean assistant-token loss."""
    total = weight = 0.0
    with torch.no_grad():
        for b in make_batches(rows, 4096, 16, pad_id):
            ids, mask, train = batch_tensors(b)
            loss = per_sample_loss(model(input_ids=ids, attention_mask=mask).logits, ids, train)
            n = train[:, 1:].sum(1).float()
            total += float((loss * n).sum())
            weight += float(n.sum())
    return total / weight


def epochs_for(rows, n_epochs: int, batch: int, seed: int, pad_id: int):
    out = []
    for e in range(n_epochs):
        order = np.random.default_rng([seed, e]).permutation(len(rows))
        chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
        out.append([batch_tensors(make_batches([rows[j] for j in c], 1 << 30, batch, pad_id)[0]) for c in chunks])
    return out


def finetune_inputs():
    """(model folder, pad id, the 600 encoded pool rows, the 40 held-out target-domain rows)."""
    keep_freed_memory()
    torch.manual_seed(0)
    folder = REAL / "SmolLM2-135M-Instruct-hf"
    tokenizer = load_tokenizer(folder)
    encoder = ChatEncoder(tokenizer, 1024)
    pool, _ = encode_file(REAL / "corpus" / "pool.jsonl", encoder, None)
    held_out, _ = encode_file(REAL / "corpus" / "eval.jsonl", encoder, None)
    return folder, tokenizer.pad_token_id, pool, held_out


def fine_tuned_loss(folder, rows, held_out, pad: int, epochs: int, batch: int, lr: float, seed: int = 0) -> dict:
    """Fine-tune a fresh copy of the model on `rows` (batches ordered by `seed`); its held-out loss."""
    start = time.perf_counter()
    model = load_pretrained(folder, "float32")
    finetune(model, epochs_for(rows, epochs, batch, seed, pad), lr, 0.0, (0.9, 0.999), 1e-8)
    return {"eval_loss": eval_loss(model, held_out, pad), "rows": len(rows), "seconds": time.perf_counter() - start}
