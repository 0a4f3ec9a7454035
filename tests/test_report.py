"""The HTML run report without a browser: numbers against the arrays they come from, escaping of
hostile row text, partial runs, bounded memory, the command. (tests/test_report_browser.py opens
reports of real runs in Chromium.)"""

from __future__ import annotations

import html
import re
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from iprox_ray.cli.main import main
from iprox_ray.report import write_report
from iprox_ray.report.gather import gather
from iprox_ray.report.run_files import read_run
from iprox_ray.report.stats import OTHER
from iprox_ray.store.sketch_store import NONFINITE, OK

from report_runs import DOMAINS, make_run, write_jsonl

SECTIONS = ["summary", "run", "stages", "rows", "target-main", "compare", "trust"]
HOSTILE = ['<script>window.__pwned = "script";</script>', '"><img src=x onerror="window.__pwned=\'img\'">']


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, list]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def _tags(page: str) -> list[tuple[str, list]]:
    """Every element a browser's parser would create, with its attributes."""
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _quarantine(rows: list[int], reason: str = "empty-text") -> list[dict]:
    return [{"split": "pool", "shard_id": 0, "file": "f.jsonl", "row": r, "sample_id": f"q{r}", "reason": reason,
             "detail": "empty assistant message"} for r in rows]


def test_numbers_match_the_arrays_they_come_from(tmp_path):
    k, n = 100, 8
    run = make_run(tmp_path / "run", n_rows=3000, rows_per_shard=128, k=k, quarantine=_quarantine([5, 9]),
                   n_nonfinite=7)
    data = gather(read_run(run.layout.root), n_examples=n, read_rows=256)  # 2 shards a batch: many batches
    score = data.pool.targets["main"]
    cand = run.written == OK
    finite = cand & np.isfinite(run.scores)
    assert score.by_domain.sum() == finite.sum() == score.finite
    for d in DOMAINS:
        assert score.by_domain[data.pool.domains.index(d)].sum() == (finite & (run.domains == d)).sum()
    assert score.selected.sum() == k
    assert score.non_finite == 0  # the non-finite rows are not candidates: written = NONFINITE
    assert data.pool.status[NONFINITE] == 7 and data.pool.status[OK] == cand.sum()
    lo, hi = np.nanmin(run.scores), np.nanmax(run.scores)
    assert score.edges[0] == pytest.approx(lo) and score.edges[-1] == pytest.approx(hi)

    order = np.lexsort((np.arange(len(run.scores)), -np.nan_to_num(run.scores, nan=-np.inf)))
    view = data.targets["main"]
    assert [r.store_row for r in view.top] == order[:n].tolist()
    assert [r.store_row for r in view.bottom] == order[k - n:k].tolist()
    assert [r.store_row for r in view.below] == order[k:k + n].tolist()  # the next rows of the same top-k order
    assert [r.rank for r in view.below] == list(range(k + 1, k + n + 1))
    assert view.selection.domains == {d: int((run.domains[order[:k]] == d).sum()) for d in set(run.domains[order[:k]])}
    assert data.quarantine.total("pool") == 2
    assert all("no longer there" in r.note for r in view.top)  # the synthetic pool file does not exist

    page = (write_report(run.layout.root, read_rows=256)).read_text()
    assert f'data-key="main.selected">{k}<' in page
    assert '<span data-key="quarantined.pool">2</span>' in page
    assert 'class="badge partial"' in page and "has no summary" in page  # no summary.json: partial
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page


def test_many_domains_share_one_other_bucket(tmp_path):
    labels = [f"d{i % 40}" for i in range(800)]
    run = make_run(tmp_path / "run", n_rows=800, rows_per_shard=64, k=20, domains=labels)
    data = gather(read_run(run.layout.root), n_examples=3)
    assert len(data.pool.domains) == 25 and data.pool.domains[-1] == OTHER
    assert data.pool.domain_rows.sum() == 800


def test_hostile_row_text_ids_and_domains_are_escaped(tmp_path):
    rows = [{"id": f"r{i}{HOSTILE[i % 2]}", "domain": HOSTILE[(i + 1) % 2],
             "messages": [{"role": "user", "content": f"question {i} {HOSTILE[0]}"},
                          {"role": "assistant", "content": f"{HOSTILE[1]} answer \x00\x07 {i}"}]} for i in range(60)]
    pool = write_jsonl(tmp_path / "in" / "pool.jsonl", rows)
    run = make_run(tmp_path / "run", n_rows=60, rows_per_shard=16, k=10, pool_file=pool, ids=[r["id"] for r in rows],
                   domains=[r["domain"] for r in rows], quarantine=[{**q, "sample_id": HOSTILE[1], "detail": HOSTILE[0]}
                                                                    for q in _quarantine([3])])
    page = write_report(run.layout.root, n_examples=5).read_text()
    tags = _tags(page)
    assert [t for t, _ in tags].count("script") == 1 and "img" not in {t for t, _ in tags}
    assert not [a for _, attrs in tags for a, _ in attrs if a.startswith("on")]  # no event handler attribute
    assert "__pwned" in page  # the payloads are there, as text
    assert html.escape(HOSTILE[0]) in page and html.escape(HOSTILE[1]) in page
    assert "\x00" not in page and "\x07" not in page
    # the example rows' text came from the input file
    assert "question 0" in page or "question 1" in page
    top = pq.read_table(run.layout.selection("main")).column("sample_id")[0].as_py()
    assert f'data-sample-id="{html.escape(top)}"' in page


def test_partial_run_report_says_what_is_missing(tmp_path):
    run = make_run(tmp_path / "run", n_rows=500, rows_per_shard=64, k=10, selection=False)
    page = write_report(run.layout.root).read_text()
    assert 'class="badge partial"' in page
    missing = re.search(r'<div class="banner" id="missing">(.*?)</div>', page, re.S).group(1)
    for words in ("the warm-up has not finished", "duplicate ids have not been marked",
                  "target &#x27;main&#x27; has not been scored"):
        assert words in missing
    assert "proxy" not in missing  # proxy.method = "none" builds none: nothing is missing there
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page
    assert "no selection yet" in page

    bare = tmp_path / "bare"  # a run stopped before its manifests: config only
    bare.mkdir()
    (bare / "config.json").write_text((run.layout.config).read_text())
    page = write_report(bare).read_text()
    assert "the inputs have not been read yet" in page and "no store yet" in page


def test_report_memory_is_bounded_by_the_batch_not_the_pool(tmp_path):
    """1e6 pool rows: the whole domain column alone would take ~60 MB of Python strings; the report
    holds a batch of 64k rows and one bit per row."""
    n = 1_000_000
    run = make_run(tmp_path / "run", n_rows=n, rows_per_shard=4096, k=50_000)
    tracemalloc.start()
    try:
        write_report(run.layout.root, read_rows=1 << 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_report_command(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_rows=300, rows_per_shard=64, k=10)
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(run.layout.root), "--out", str(out), "--examples", "3"]) == 0
    assert f"report: {out}" in capsys.readouterr().out and out.stat().st_size > 10_000
    assert not run.layout.report.exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not an iprox-ray run directory" in capsys.readouterr().err


def test_report_never_writes_into_the_run_besides_its_file(tmp_path):
    run = make_run(tmp_path / "run", n_rows=300, rows_per_shard=64, k=10)
    before = {p: p.stat().st_mtime_ns for p in Path(run.layout.root).rglob("*")}
    write_report(run.layout.root)
    after = {p: p.stat().st_mtime_ns for p in Path(run.layout.root).rglob("*") if p != run.layout.report}
    assert after == before


def test_a_report_that_fails_warns_and_leaves_the_run_alone(tmp_path, capsys):
    """At a run's end the selection is written: a report that cannot be written says so in one line."""
    from iprox_ray.driver.run import write_run_report
    from iprox_ray.execution.context import RunContext
    from iprox_ray.spec import load_job
    from iprox_ray.store.layout import RunLayout

    from conftest import REPO

    ctx = RunContext(load_job(REPO / "jobs" / "demo.toml"), RunLayout(tmp_path / "not-a-run"), quiet=True)
    write_run_report(ctx)  # no config.json there: the report cannot be read, the call returns
    out = capsys.readouterr().out
    assert out.startswith("warning: the HTML report could not be written (FileNotFoundError") and out.count("\n") == 1
    assert "iprox-ray report" in out and not (tmp_path / "not-a-run" / "report.html").exists()
