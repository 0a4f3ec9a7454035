"""Every scoring method through the pipeline (inline executor), checked against brute-force
recomputations from the store: less / tracin with subtasks, round-robin, λ-weights, rds+,
influence-distillation (landmark-only sketches, KRR), random, mid-ppl."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from iprox_ray.driver.pipeline import run_job
from iprox_ray.influence import krr
from iprox_ray.influence.less import unit_rows
from iprox_ray.spec import load_job
from iprox_ray.store.quantize import dequantize_rows
from iprox_ray.store.sketch_store import NOT_SKETCHED, OK

from conftest import REPO, arithmetic_row, prose_row


def _subtask_target(path):
    """Arithmetic and prose examples, labelled with a subtask column."""
    rng = random.Random(11)
    with open(path, "w") as fh:
        for i in range(8):
            row = arithmetic_row(rng, i, "q") if i % 2 == 0 else prose_row(rng, 500 + i)
            fh.write(json.dumps({"id": f"q{i}", "prompt": row["messages"][0]["content"], "subtask": row["domain"],
                                 "response": row["messages"][1]["content"]}) + "\n")
    return path


@pytest.fixture(scope="module")
def subtask_job(tmp_path_factory):
    """A job factory over one pool and a two-subtask target (subtask_column set)."""
    from conftest import JOB_TEMPLATE, TOKENIZER, make_pool, write_parquet

    root = tmp_path_factory.mktemp("methods")
    config = json.loads((REPO / "iprox_ray/demo/assets/model/config.json").read_text())
    config.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text(json.dumps(config))
    rows = make_pool(80)
    write_parquet(rows[:40], root / "data" / "pool-0.parquet")
    write_parquet(rows[40:], root / "data" / "pool-1.parquet")
    target = _subtask_target(root / "data" / "target.jsonl")
    text = JOB_TEMPLATE.format(model=root / "model", tokenizer=TOKENIZER, pool='["data/pool-*.parquet"]', target=target,
                               k=9, executor="inline", actors=1, rows_per_shard=16)
    (root / "job.toml").write_text(text.replace('rows_per_shard = 8\n',
                                                'rows_per_shard = 8\nsubtask_column = "subtask"\n'))
    runs = {}

    def run(*overrides: str):
        key = tuple(overrides)
        if key not in runs:
            run_dir = root / f"run{len(list(root.glob('run*')))}"  # a failed run keeps its folder
            summary = run_job(load_job(root / "job.toml", list(overrides)), run_dir, quiet=True)
            runs[key] = (run_dir, summary, zarr.open_group(str(run_dir / "store.zarr"), mode="r"))
        return runs[key]

    return run


def _selection(run_dir):
    return pq.read_table(run_dir / "selections/main/selection.parquet").to_pylist()


def _sketch_features(group, raw=False):
    ok = np.flatnonzero(group["written"][:] == OK)
    scale = group["sketch_scale"][:][ok] if "sketch_scale" in group else None  # int8 rows (the default)
    feats = dequantize_rows(group["sketch"][:][ok], scale)
    return ok, feats * group["sketch_norm"][:][ok][:, None] if raw else unit_rows(feats)


def _topk_reference(scores, k):
    idx = np.flatnonzero(np.isfinite(scores))
    return idx[np.lexsort((idx, -scores[idx]))][:k]


@pytest.mark.parametrize("method", ["less", "tracin"])
def test_sketch_methods_equal_brute_force_subtask_max(subtask_job, method):
    run_dir, summary, root = subtask_job(f'scoring.method="{method}"')
    rows, pool = _sketch_features(root["pool"], raw=method == "tracin")
    t_rows, target = _sketch_features(root["targets/main"], raw=method == "tracin")
    labels = root["targets/main"]["subtask"][:][t_rows]
    assert sorted(set(labels)) == ["arithmetic", "python_topics"]
    per_example = pool @ target.T
    brute = np.full(root["pool"]["written"].shape[0], np.nan, np.float32)
    brute[rows] = np.max([per_example[:, labels == s].mean(axis=1) for s in sorted(set(labels))], axis=0)
    scores = root["scores/main"][:]
    np.testing.assert_allclose(scores, brute, rtol=1e-4, atol=1e-5)
    assert root["scores/main"].attrs["aggregate"] == "subtask-max"
    assert root["score_columns/main"].shape[1] == 2
    chosen = [r["store_row"] for r in _selection(run_dir)]
    assert chosen == _topk_reference(scores, 9).tolist()
    weights = [r["weight"] for r in _selection(run_dir)]
    assert weights == pytest.approx([summary["valid_pool_rows"] / 9] * 9)


def test_round_robin_selection_equals_brute_force_over_target_examples(subtask_job):
    from test_selection_strategies import _brute_round_robin

    run_dir, _, root = subtask_job('selection.strategy="round-robin"', "selection.seed=4")
    rows, pool = _sketch_features(root["pool"])
    t_rows, target = _sketch_features(root["targets/main"])
    per_example = np.full((root["pool"]["written"].shape[0], len(t_rows)), np.nan, np.float32)
    per_example[rows] = pool @ target.T
    assert "score_columns/main" not in root  # no rows × examples matrix: only each example's best k rows
    cand_rows, cand_scores = root["score_candidates/main/rows"][:], root["score_candidates/main/scores"][:]
    assert cand_rows.shape == (len(t_rows), 9) and (cand_rows >= 0).all()
    for j in range(len(t_rows)):
        np.testing.assert_allclose(cand_scores[j], per_example[cand_rows[j], j], rtol=1e-4, atol=1e-5)
        assert (np.diff(cand_scores[j]) <= 0).all()
        others = np.delete(per_example[:, j], cand_rows[j])
        assert np.nanmax(others) <= cand_scores[j, -1] + 1e-5  # the column's best 9 rows
    # Round-robin only ever reaches a column's best k rows: brute force on the candidates alone.
    kept = np.full_like(per_example, np.nan)
    for j in range(len(t_rows)):
        kept[cand_rows[j], j] = cand_scores[j]
    selection = _selection(run_dir)
    assert [r["store_row"] for r in selection] == _brute_round_robin(kept, 9, seed=4)
    ids = root["targets/main"]["sample_id"][:][t_rows].tolist()
    assert all(r["picked_by"] in ids for r in selection)


def test_round_robin_over_budget_is_refused_before_sketching(subtask_job):
    from iprox_ray.spec import SpecError

    # "estimated": the preflight's check, before the warm-up and the sketch stage spend anything
    with pytest.raises(SpecError, match=r"k=9 pool rows \(estimated from the inputs' usable rows before sketching\): "
                                        r"8 × 9 × 48 B .* over selection.round_robin_memory_gib = 1e-07"):
        subtask_job('selection.strategy="round-robin"', "selection.round_robin_memory_gib=1e-7")


def test_weights_strategy_gives_exactly_k_weights_summing_to_n(subtask_job):
    run_dir, summary, root = subtask_job('selection.strategy="weights"')
    selection = _selection(run_dir)
    weights = np.array([r["weight"] for r in selection])
    assert len(weights) == 9 and np.all(weights > 0)
    assert weights.sum() == pytest.approx(summary["valid_pool_rows"])
    assert np.all(np.diff(weights) <= 1e-9)
    assert [r["store_row"] for r in selection] == _topk_reference(root["scores/main"][:], 9).tolist()


def test_rds_plus_scores_are_pooled_cosines_and_nothing_is_sketched(subtask_job):
    run_dir, _, root = subtask_job('scoring.method="rds+"')
    pool_w = root["pool"]["written"][:]
    assert not np.any(pool_w == OK) and np.any(pool_w == NOT_SKETCHED)  # metadata only
    target_w = root["targets/main"]["written"][:]
    assert not np.any(target_w == OK) and np.any(target_w == NOT_SKETCHED)  # the target too
    emb, t_emb = root["embeddings/rds/pool"], root["embeddings/rds/targets/main"]
    ok = np.flatnonzero(emb["written"][:] == 1)
    t_ok = np.flatnonzero(t_emb["written"][:] == 1)
    np.testing.assert_allclose(np.linalg.norm(emb["embedding"][:][ok], axis=1), 1, rtol=1e-5)
    cos = emb["embedding"][:][ok] @ t_emb["embedding"][:][t_ok].T
    assert root["scores/main"].attrs["aggregate"] == "mean"
    np.testing.assert_allclose(root["scores/main"][:][ok], cos.mean(axis=1), rtol=1e-4, atol=1e-5)


def test_influence_distillation_sketches_landmarks_only_and_propagates_by_krr(subtask_job):
    run_dir, summary, root = subtask_job('scoring.method="influence-distillation"', "scoring.landmarks.count=20",
                                         "scoring.embed.dim=48", "scoring.embed.blocks=1")
    landmarks = root["landmarks/pool"][:]
    written = root["pool"]["written"][:]
    assert len(landmarks) == 20 and set(np.flatnonzero(written == OK)) <= set(landmarks.tolist())
    assert int(np.sum(written == NOT_SKETCHED)) == summary["valid_pool_rows"] - int(np.sum(written == OK))
    assert root["pool"].attrs["sketched_rows"]["rows"] == 20
    emb = root["embeddings/jvp/pool"]
    assert emb.attrs["settings"]["blocks"] == 1 and emb["embedding"].shape[1] == 48
    # recompute: exact landmark cosines to the subtask means of the unit target rows, then KRR
    t_rows, target = _sketch_features(root["targets/main"])
    labels = root["targets/main"]["subtask"][:][t_rows]
    columns = np.stack([target[labels == s].mean(axis=0) for s in sorted(set(labels))])
    used = landmarks[written[landmarks] == OK]
    P_L = unit_rows(root["pool"]["sketch"][:][used]) @ columns.T
    model = krr.fit(emb["embedding"][:][used], P_L, "rbf", 0.01)
    valid = np.flatnonzero(np.isin(written, (OK, NOT_SKETCHED)) & (emb["written"][:] == 1))
    expected = model.predict(emb["embedding"][:][valid]) @ np.array([0.5, 0.5], np.float32)
    np.testing.assert_allclose(root["scores/main"][:][valid], expected, rtol=1e-3, atol=1e-4)
    assert root["scores/main"].attrs["landmarks_used"] == len(used)
    assert len(_selection(run_dir)) == 9


def test_random_and_mid_ppl(subtask_job):
    run_dir, summary, root = subtask_job('scoring.method="random"', "scoring.seed=3")
    again, _, _ = subtask_job('scoring.method="random"', "scoring.seed=3")
    other, _, _ = subtask_job('scoring.method="random"', "scoring.seed=4")
    picks = lambda d: [r["store_row"] for r in _selection(d)]  # noqa: E731
    assert picks(run_dir) == picks(again) != picks(other)
    run_dir, summary, root = subtask_job('scoring.method="mid-ppl"')
    loss = root["pool"]["loss"][:]
    valid = np.flatnonzero(root["pool"]["written"][:] == OK)
    ranked = valid[np.lexsort((valid, loss[valid]))]
    lo = (len(ranked) - 9) // 2
    middle = set(ranked[lo - 1 : lo + 10].tolist())  # the middle band, ±1 for the rounding of its centre
    chosen = [r["store_row"] for r in _selection(run_dir)]
    assert len(chosen) == 9 and set(chosen) <= middle


def test_influence_distillation_second_order_term(subtask_job):
    """p' = p − (η/N)·ĉ, ĉ the KRR propagation of G̃_L·P·H_T·Σ w_i ĝ_i from the first-order support."""
    from iprox_ray.execution.context import RunContext
    from iprox_ray.influence.topk import topk_stream
    from iprox_ray.influence.weights import lambda_bisection
    from iprox_ray.spec import load_job
    from iprox_ray.stages.second_order import second_order_direction
    from iprox_ray.store.layout import RunLayout
    from iprox_ray.store.sketch_store import SplitStore
    from iprox_ray.tasks.model_ref import ModelRef

    overrides = ('scoring.method="influence-distillation"', "scoring.landmarks.count=20", "scoring.embed.dim=48",
                 "scoring.embed.blocks=1", "scoring.second_order.enabled=true", "scoring.second_order.lr=50.0")
    run_dir, summary, root = subtask_job(*overrides)
    first, second = root["scores_first_order/main"][:], root["scores/main"][:]
    ok = np.isfinite(first)
    assert np.isfinite(second[ok]).all() and not np.allclose(first[ok], second[ok])
    n_valid = summary["valid_pool_rows"]
    rows, values, _ = topk_stream([(0, first)], 10)
    weights = lambda_bisection(values, 9, float(n_valid)).weights
    ctx = RunContext(load_job(run_dir.parent / "job.toml", list(overrides)), RunLayout(run_dir), quiet=True)
    ref = ModelRef("proxy", run_dir / "proxy")
    pool = SplitStore.open(run_dir / "store.zarr", "pool")
    target = SplitStore.open(run_dir / "store.zarr", "targets/main")
    t_rows = np.flatnonzero(root["targets/main"]["written"][:] == OK)
    direction = second_order_direction(ctx, ref, pool, target, "targets/main", t_rows, rows[:9], weights)
    landmarks = root["landmarks/pool"][:]
    used = landmarks[root["pool"]["written"][:][landmarks] == OK]
    emb = root["embeddings/jvp/pool"]["embedding"][:]
    c_L = unit_rows(root["pool"]["sketch"][:][used]) @ direction.astype(np.float32)
    c_hat = krr.fit(emb[used], c_L, "rbf", 0.01).predict(emb[ok])[:, 0]
    np.testing.assert_allclose((first[ok] - second[ok]) / (50.0 / n_valid), c_hat, rtol=2e-3,
                               atol=1e-4 * np.abs(c_hat).max())
    assert root["scores/main"].attrs["second_order"]["iterations"] == 1
    chosen = [r["store_row"] for r in _selection(run_dir)]
    assert chosen == _topk_reference(second, 9).tolist()


def test_second_order_with_another_method_is_refused_before_any_work(tmp_path, make_job, capsys):
    from iprox_ray.cli.main import main

    path = make_job()
    assert main(["run", str(path), "--run-dir", str(tmp_path / "r"), "-q",
                 "--set", "scoring.second_order.enabled=true"]) == 2
    assert "scoring.second_order needs" in capsys.readouterr().err
    assert not (tmp_path / "r" / "completions").exists()
