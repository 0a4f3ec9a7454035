"""The influence-fidelity report on the (reduced) demo: IPSVD must beat plain SVD at the same rank."""

from __future__ import annotations

import json

import pytest

from iprox_ray.cli.main import main
from iprox_ray.influence.agreement import kendall_tau_b, spearman, top_overlap

from conftest import REPO

pytestmark = pytest.mark.slow

DEMO = REPO / "jobs" / "demo.toml"
REDUCED = ['data.pool.paths=["../iprox_ray/demo/assets/pool/part-0000.parquet"]', "fidelity.pool_rows=256",
           "proxy.align_epochs=0", "proxy.construction_fraction=0.05"]


def _fidelity(run_dir, *overrides) -> dict:
    args = ["fidelity", str(DEMO), "--run-dir", str(run_dir), "-q"]
    for item in REDUCED + list(overrides):
        args += ["--set", item]
    assert main(args) == 0
    return json.loads((run_dir / "fidelity" / "report.json").read_text())


def test_ipsvd_ranks_the_pool_more_like_the_target_than_plain_svd(tmp_path, capsys):
    ipsvd = _fidelity(tmp_path / "ipsvd", 'proxy.method="ipsvd"')
    printed = capsys.readouterr().out
    assert "Spearman" in printed and "top-5% overlap" in printed and "tokens/s" in printed
    assert "vs exact influence (32 rows" in printed
    assert "verdict: the proxy " in printed and "proxy build" in printed
    assert "sketches computed in float32 on cpu, compared unquantized (the store keeps int8 rows)" in printed
    assert ipsvd["precision"] == {"compute": "float32", "device": "cpu", "store_dtype": "int8"}
    assert ipsvd["build_seconds"] > 0 and ipsvd["verdict"].startswith("verdict: the proxy ")
    exact = ipsvd["exact"]
    assert exact["rows"] == 32
    # Sketch-vs-exact on the same (full) model is an independent check of the exact pass: a wrong
    # gradient or direction would leave no rank agreement.
    assert exact["target_sketch"]["spearman"] > 0.6, exact
    assert -1 <= exact["proxy"]["spearman"] <= 1
    assert (tmp_path / "ipsvd" / "fidelity" / "scatter.png").stat().st_size > 1000
    assert _fidelity(tmp_path / "ipsvd", 'proxy.method="ipsvd"') == ipsvd  # a resume reads it back
    assert "earlier attempt" in capsys.readouterr().out
    other = _fidelity(tmp_path / "ipsvd", 'proxy.method="ipsvd"', "fidelity.top_fraction=0.1")  # new settings
    assert other["top_fraction"] == 0.1 and other["key"] != ipsvd["key"]
    assert other["spearman"] == pytest.approx(ipsvd["spearman"], abs=1e-6)
    assert "earlier attempt" not in capsys.readouterr().out
    warmed = tmp_path / "ipsvd" / "warmup" / "model"  # same warmed target, no second warm-up
    svd = _fidelity(tmp_path / "svd", 'proxy.method="svd"', f'warmup.checkpoint="{warmed}"')
    assert ipsvd["parameters"] == svd["parameters"]  # same ranks
    assert ipsvd["spearman"] > svd["spearman"], (ipsvd["spearman"], svd["spearman"])
    assert 0 < ipsvd["parameters"]["proxy"] < ipsvd["parameters"]["target"]


def test_rank_statistics_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.integers(0, 40, 500).astype(float)  # with ties
    b = np.round(a + rng.normal(0, 6, 500))
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    assert kendall_tau_b(a, b) == pytest.approx(scipy_stats.kendalltau(a, b).statistic, abs=1e-12)
    share, hits, k = top_overlap(np.arange(100.0), np.arange(100.0)[::-1], 0.1)
    assert (share, hits, k) == (0.0, 0, 10)


def _report(speed: float, proxy_exact: float | None, target_exact: float = 0.9, spearman_: float = 0.9) -> dict:
    r = {"proxy": {"rho": 0.5}, "spearman": spearman_, "sketch_tokens_per_s": {"target": 100.0, "proxy": 100.0 * speed}}
    if proxy_exact is not None:
        r["exact"] = {"proxy": {"spearman": proxy_exact}, "target_sketch": {"spearman": target_exact}}
    return r


@pytest.mark.parametrize("speed,proxy_exact,pays,reason", [
    (2.1, 0.85, True, "keeps 94%"),
    (1.2, 0.88, False, "only 1.20x faster"),
    (2.5, 0.30, False, "keeps 33%"),
    (1.1, 0.10, False, "(needs 1.5x); keeps 11%"),
])
def test_verdict_names_what_fails(speed, proxy_exact, pays, reason):
    from iprox_ray.diagnostics.proxy_fidelity import verdict
    from iprox_ray.spec import FidelitySpec

    said, line = verdict(_report(speed, proxy_exact), FidelitySpec())
    assert said == pays and ("does not pay" not in line) == pays and reason in line, line


def test_verdict_thresholds_come_from_the_spec():
    from iprox_ray.diagnostics.proxy_fidelity import verdict
    from iprox_ray.spec import FidelitySpec

    assert not verdict(_report(1.3, 0.85), FidelitySpec())[0]
    pays, line = verdict(_report(1.3, 0.85), FidelitySpec(pays_speedup=1.25, pays_fidelity_share=0.9))
    assert pays and "1.30x the sketch throughput" in line


def test_verdict_without_exact_rows_uses_agreement_with_the_target():
    from iprox_ray.diagnostics.proxy_fidelity import verdict
    from iprox_ray.spec import FidelitySpec

    assert "the proxy pays" in verdict(_report(2.0, None, spearman_=0.85), FidelitySpec())[1]
    assert "does not pay" in verdict(_report(2.0, None, spearman_=0.5), FidelitySpec())[1]
