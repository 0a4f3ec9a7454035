"""IProX stage 2 on the real model: held-out loss, KL and influence fidelity per stage-2 setting.

    .venv/bin/python -m bench.real.fidelity --truth-only                       # once: exact scores
    .venv/bin/python -m bench.real.proxy_align run --stage1 uniform-0.5 --configs kl-1e-4,kl-3e-4 [--score]
    .venv/bin/python -m bench.real.proxy_align table

Splits of the real pool (600 rows, six domains): the 300 stratified rows `proxy.py` scores
(the first 50 of each domain) and, from the other 300 in a seeded order, 64 IPSVD probe rows, up
to 128 alignment rows (the product's `alignment_split` holds 20 % of them out for early stopping)
and 48 evaluation rows no stage saw. Stage 1 is the product's `make_proxy` (cached per variant as a
proxy artifact, so every stage-2 setting starts from the same factors); stage 2 is the product's
`train_factors`. Per setting: the evaluation rows' assistant-token loss and KL(target ‖ proxy)
(τ = 1), build seconds, and with --score the 300 rows' LESS scores from the product's default
sketcher against exact influence (Spearman, top-5 %) and the top 5 %'s share of the target's domain.
Results are cached as JSON in bench/out/real/proxy_align/.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import REAL
from bench.real.common import (
    PROXY_ALIGN,
    agreement,
    batch_tensors,
    encode_file,
    keep_freed_memory,
    scored_rows,
    sketch,
    stratified,
)
from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.influence.less import cosine_scores, target_direction
from iprox_ray.models.loading import count_parameters, load_pretrained, load_tokenizer
from iprox_ray.models.loss import per_sample_loss
from iprox_ray.proxy.artifact import load_proxy, proxy_plans, read_manifest, save_proxy
from iprox_ray.proxy.build import alignment_split, make_proxy, stage2_settings
from iprox_ray.proxy.stage2 import train_factors
from iprox_ray.spec import ProxySpec, SketchSpec
from iprox_ray.tasks.inputs import fixed_batches, shuffled_epochs

OUT = PROXY_ALIGN
N_PROBE, N_ALIGN, N_EVAL = 64, 128, 48
# stage 1: the product's defaults (64 probes, 8192 positions, assistant-token loss, relative ridge)
# with rank multiple 16 (the default 128 barely compresses a 576-wide model)
STAGE1 = {f"{rule}-{rho}": {"method": "ipsvd", "rank_multiple": 16, "rank_rule": rule, "rho": rho}
          for rule in ("uniform", "global") for rho in (0.5, 0.7)}
STAGE1["svd-0.5"] = {"method": "svd", "rank_multiple": 16, "rho": 0.5}
STAGE1["layers-0.5"] = {"method": "layer_extraction", "rho": 0.5}
STAGE1["full"] = {}  # the target model itself, no proxy
# stage 2: ProxySpec fields (align_epochs > 0)
CONFIGS = {
    "none": {},
    **{f"kl-{lr}": {"align_objective": "kl", "align_lr": lr, "align_epochs": 2} for lr in ("1e-4", "3e-4", "1e-3")},
    **{f"kl-{lr}-3ep": {"align_objective": "kl", "align_lr": lr, "align_epochs": 3} for lr in ("3e-4", "1e-3")},
    "kl-3e-4-const": {"align_objective": "kl", "align_lr": "3e-4", "align_epochs": 2, "align_schedule": "constant",
                      "align_warmup": 0.0},
    "kl-3e-4-most": {"align_objective": "kl", "align_lr": "3e-4", "align_epochs": 2,
                     "align_row_choice": "most-trainable", "align_rows": 64},
    "kl-3e-4-64rows": {"align_objective": "kl", "align_lr": "3e-4", "align_epochs": 2, "align_rows": 64},
    **{f"product-{lr}": {"align_objective": "product", "align_lr": lr, "align_epochs": 2, "lambda_kl": 1.0}
       for lr in ("1e-4", "3e-4")},
    **{f"factors-{lr}": {"align_objective": "factors", "align_lr": lr, "align_epochs": 2, "lambda_kl": 1.0}
       for lr in ("1e-4", "3e-4")},
    "factors-3e-4-l0": {"align_objective": "factors", "align_lr": "3e-4", "align_epochs": 2, "lambda_kl": 0.0},
    "product-3e-4-l0": {"align_objective": "product", "align_lr": "3e-4", "align_epochs": 2, "lambda_kl": 0.0},
    "unbalanced-kl-1e-4": {"align_objective": "kl", "align_lr": "1e-4", "align_epochs": 2, "unbalance": True},
}


@torch.no_grad()
def eval_loss_kl(target, proxy, rows, pad_id: int) -> tuple[float, float]:
    """Token-weighted assistant-token loss of the proxy and KL(target ‖ proxy) at τ = 1."""
    loss_sum = kl_sum = weight = 0.0
    for b in make_batches(rows, 2048, 8, pad_id):
        ids, mask, train = batch_tensors(b)
        p_logits = proxy(input_ids=ids, attention_mask=mask).logits
        t_logits = target(input_ids=ids, attention_mask=mask).logits
        n = train[:, 1:].sum(1).float()
        loss_sum += float((per_sample_loss(p_logits, ids, train) * n).sum())
        keep = train[:, 1:]
        t_logp = F.log_softmax(t_logits[:, :-1][keep].float(), -1)
        p_logp = F.log_softmax(p_logits[:, :-1][keep].float(), -1)
        kl_sum += float((t_logp.exp() * (t_logp - p_logp)).sum())
        weight += float(n.sum())
    return loss_sum / weight, kl_sum / weight


def splits(encoder):
    """Encoded rows and their parts. Probe, alignment and evaluation rows come from outside the
    300 stratified rows (the first 50 of each domain), so no stage sees a scored row whatever
    subset of them the truth file scored (its `scored` rows, e.g. the first 30 of each domain)."""
    pool, domains = encode_file(REAL / "corpus" / "pool.jsonl", encoder, None)  # the 600 rows the truth covers
    target, target_domains = encode_file(REAL / "corpus" / "target.jsonl", encoder, None)
    held = set(stratified(np.asarray(domains), 300).tolist())
    rest = [i for i in range(len(pool)) if i not in held]
    order = [rest[i] for i in np.random.default_rng(0).permutation(len(rest))]
    parts = {"probe": order[:N_PROBE], "align": order[N_PROBE:N_PROBE + N_ALIGN],
             "eval": order[N_PROBE + N_ALIGN:N_PROBE + N_ALIGN + N_EVAL]}
    chosen, exact = scored_rows(np.asarray(domains))
    return pool, np.asarray(domains), target, target_domains[0], chosen, parts, exact


def stage1(name: str, target, pool, parts, pad_id: int):
    if not STAGE1[name]:
        return target, 0.0
    folder = OUT / "stage1" / name
    if (folder / "proxy.json").exists():
        return load_proxy(folder), read_manifest(folder)["stage1_seconds"]
    spec = ProxySpec(**STAGE1[name], align_epochs=0)
    probes = [pool[i] for i in parts["probe"]]
    batches = fixed_batches(probes, list(range(len(probes))), spec.probe_batch_size, pad_id)
    built = make_proxy(target, spec, batches, len(probes), None, seed=0)
    save_proxy(built.model, folder, built.plans, {"stage1_seconds": built.stage1_seconds, **STAGE1[name]})
    return built.model, built.stage1_seconds


def stage2(args, config: str, target, pool, parts, pad: int):
    """(proxy, result) of one stage-2 setting on the cached stage-1 proxy; the proxy is saved so
    that --score reads the same factors later."""
    proxy, stage1_seconds = stage1(args.stage1, target, pool, parts, pad)
    fields = {k: (float(v) if k == "align_lr" else v) for k, v in CONFIGS[config].items() if k != "unbalance"}
    result = {"stage1": args.stage1, "config": config, "fields": fields, "stage1_seconds": stage1_seconds,
              "parameters": count_parameters(proxy)}
    if CONFIGS[config].get("unbalance"):
        unbalance(proxy)
    if fields:
        spec = ProxySpec(**STAGE1[args.stage1], **fields)
        train, held = alignment_split([pool[i] for i in parts["align"]], spec, seed=9)
        epochs = shuffled_epochs(train, spec.align_batch_size, pad, 7, spec.align_epochs)
        heldout = fixed_batches(held, list(range(len(held))), spec.align_batch_size, pad)
        report = train_factors(target, proxy, epochs, heldout, stage2_settings(spec))
        result["stage2"] = report.summary() | {"history": report.history, "heldout_all": report.heldout}
        save_proxy(proxy, OUT / "stage2" / f"{args.stage1}--{config}", proxy_plans(OUT / "stage1" / args.stage1),
                   {"config": config})
    result["eval_loss"], result["eval_kl"] = eval_loss_kl(target, proxy, [pool[i] for i in parts["eval"]], pad)
    return proxy, result


def saved_proxy(args, config: str, target, pool, parts, pad: int):
    folder = OUT / "stage2" / f"{args.stage1}--{config}"
    if CONFIGS[config] and (folder / "proxy.json").exists():
        return load_proxy(folder)
    if not CONFIGS[config]:
        return stage1(args.stage1, target, pool, parts, pad)[0]
    return stage2(args, config, target, pool, parts, pad)[0]


def run(args) -> None:
    keep_freed_memory()
    torch.manual_seed(0)
    folder = REAL / "SmolLM2-135M-Instruct-hf"
    tokenizer = load_tokenizer(folder)
    pad = tokenizer.pad_token_id
    pool, domains, target_rows, target_domain, chosen, parts, exact = splits(ChatEncoder(tokenizer, 1024))
    target = load_pretrained(folder, "float32")
    for config in args.configs.split(","):
        path = OUT / f"{args.stage1}--{config}.json"
        result = json.loads(path.read_text()) if path.exists() and not args.force else None
        proxy = None
        if result is None:
            proxy, result = stage2(args, config, target, pool, parts, pad)
            print(f"[{args.stage1} {config}] eval loss {result['eval_loss']:.3f} KL {result['eval_kl']:.3f} "
                  f"stage 2 {result.get('stage2', {}).get('seconds', 0):.0f}s", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
        if args.score and "scores" not in result:
            proxy = proxy or saved_proxy(args, config, target, pool, parts, pad)
            spec = SketchSpec()
            pool_sketch, tokens, seconds, _ = sketch(proxy, spec, [pool[i] for i in chosen], pad)
            target_sketch, _, _, _ = sketch(proxy, spec, target_rows, pad)
            scores = cosine_scores(pool_sketch, target_direction(target_sketch))
            result.update(scores=scores.tolist(), sketch_tokens_per_s=tokens / seconds)
            path.write_text(json.dumps(result))
        if "scores" in result and exact is not None:
            s = np.asarray(result["scores"])
            a = agreement(exact, s)
            top = np.argsort(-s)[: max(1, round(0.05 * len(s)))]
            print(f"  vs exact: Spearman {a['spearman']:.3f} top-5 % {a['top5']:.2f}; top 5 % in "
                  f"{target_domain}: {np.mean(domains[chosen][top] == target_domain):.2f}", flush=True)


def unbalance(proxy) -> None:
    """The factors as IPSVD built them before balancing: the whitening's scale on A (control)."""
    from iprox_ray.models.lowrank import LowRankLinear

    with torch.no_grad():
        for m in proxy.modules():
            if isinstance(m, LowRankLinear):
                s = torch.full((m.rank,), 3.3e3).sqrt()  # the median ‖A‖/‖B‖ measured on SmolLM2
                m.A.weight.mul_(s)
                m.B.weight.div_(s[:, None])


def table(args) -> None:
    pool = (REAL / "corpus" / "pool.jsonl").read_text().splitlines()
    domains = np.asarray([json.loads(line)["domain"] for line in pool])
    chosen, exact = scored_rows(domains)
    print("| stage 1 | stage 2 | eval loss | eval KL | held-out objective first → kept (step) | build s | "
          "Spearman / top-5 % vs exact | top 5 % in target domain |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(OUT.glob("*--*.json")):
        r = json.loads(path.read_text())
        s2 = r.get("stage2") or {}
        held = s2.get("heldout") or {}
        obj = (f"{held['first']['total']:.3f} → {held['best']['total']:.3f} ({s2['best_step']}/{s2['steps']})"
               if held else "—")
        build = r["stage1_seconds"] + s2.get("seconds", 0)
        fid = dom = "—"
        if "scores" in r:
            s = np.asarray(r["scores"])
            a = agreement(exact, s)
            top = np.argsort(-s)[: max(1, round(0.05 * len(s)))]
            fid = f"{a['spearman']:.3f} / {a['top5']:.2f}"
            dom = f"{np.mean(domains[chosen][top] == 'python_docs'):.2f}"
        print(f"| {r['stage1']} | {r['config']} | {r['eval_loss']:.3f} | {r['eval_kl']:.3f} | {obj} | {build:.0f} | "
              f"{fid} | {dom} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("run", "table"))
    ap.add_argument("--stage1", default="uniform-0.5", choices=sorted(STAGE1))
    ap.add_argument("--configs", default="none")
    ap.add_argument("--score", action="store_true")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    main()
