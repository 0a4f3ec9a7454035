"""The demo's HTML report in a real browser: Debian's Chromium, headless, driven by Playwright
(the system browser: nothing downloaded). The demo job runs at reduced size on a pool with
hostile rows (script tags and attribute-breaking `"><img onerror>` in ids, domain labels and
text, quarantined rows, a duplicate id), then `iprox-ray score` adds a second target. The page is
opened from disk: no console error, every section, the numbers of the run's files, nothing
injected runs, no request leaves the file; a screenshot is kept as an artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ASSETS, REPO

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAYLOADS = ['<script>window.__pwned = "script"; alert(1)</script>',
            '"><img src=x onerror="window.__pwned=\'img\'; alert(2)">']
HOSTILE_DOMAIN = '<script>window.__pwned="domain"</script>dates'
SECTIONS = ["summary", "run", "stages", "rows", "target-main", "target-prose", "compare", "trust"]
REDUCED = ["data.pool.rows_per_shard=64", "data.max_length=256", "warmup.epochs=1", "selection.k=40",
           "fidelity.pool_rows=48", "fidelity.exact_rows=8", 'cluster.executor="inline"']


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return "chromium is not installed (`make test` installs Debian's chromium: `make browser-packages`)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (`pip install -e '.[test]'`)"
    return None


def _hostile_pool(folder: Path) -> Path:
    """The demo's first pool file with payloads in ids, one domain label and message text, two rows
    that are quarantined (empty answer, no messages) and one duplicate id."""
    rows = pq.read_table(ASSETS / "pool" / "part-0000.parquet").to_pylist()
    for i, row in enumerate(rows):  # every row, so that every row the report shows carries them
        if row["domain"] == "dates":
            row["domain"] = HOSTILE_DOMAIN
        row["id"] += PAYLOADS[i % 2]
        row["messages"][0]["content"] = f"{PAYLOADS[0]} {row['messages'][0]['content']} {PAYLOADS[1]}"
    rows.append({"id": "empty" + PAYLOADS[1], "domain": "arithmetic",
                 "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]})
    rows.append({"id": "nothing" + PAYLOADS[0], "domain": "code", "messages": None})
    rows.append(dict(rows[1]))  # the same id again
    path = folder / "pool" / "hostile.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=128)
    return path


def _iprox(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "iprox_ray.cli.main", *args], capture_output=True, text=True,
                          timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: the browser tests must run in CI")
        pytest.skip(missing)
    folder = tmp_path_factory.mktemp("report-demo")
    pool = _hostile_pool(folder)
    run_dir = folder / "run"
    sets = [x for item in [f'data.pool.paths=["{pool}"]', *REDUCED] for x in ("--set", item)]
    out = _iprox("run", str(REPO / "jobs" / "demo.toml"), "--run-dir", str(run_dir), *sets)
    assert f"report: {run_dir / 'report.html'}" in out
    # a second target set, half arithmetic (as the first) and half docstrings: the selections overlap in part
    rows = pq.read_table(ASSETS / "pool" / "part-0001.parquet").to_pylist()
    mixed = [r for d in ("arithmetic", "docstrings") for r in [r for r in rows if r["domain"] == d][:8]]
    target = folder / "mixed.jsonl"
    target.write_text("".join(json.dumps({**r, "id": f"t-{r['id']}"}) + "\n" for r in mixed))
    _iprox("score", str(run_dir), "--target", str(target), "--name", "prose", "-q")
    return run_dir


@pytest.fixture(scope="module")
def opened(demo_run, tmp_path_factory):
    """The report, opened from disk once: (page, console errors, dialogs, requests, screenshot)."""
    from playwright.sync_api import sync_playwright

    seen: dict = {"errors": [], "dialogs": [], "requests": []}
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(tempfile.mkdtemp(prefix="chromium-profile-"), headless=True,
                                                       executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                       viewport={"width": 1300, "height": 1000})
        page = context.new_page()
        page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.goto((demo_run / "report.html").as_uri(), wait_until="load")
        page.wait_for_timeout(300)  # anything the payloads scheduled would have run by now
        shot = tmp_path_factory.mktemp("report-screenshot") / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"report screenshot: {shot}")
        yield page, seen, shot
        context.close()


def test_report_opens_with_no_console_error_and_every_section(opened):
    page, seen, shot = opened
    assert seen["errors"] == []
    for anchor in SECTIONS:
        assert page.locator(f"section#{anchor}").count() == 1, anchor
        assert page.locator(f"section#{anchor}").is_visible()
    assert page.locator("section#stages svg.chart").count() == 1  # the timeline
    assert page.locator("section#target-main svg.chart").count() >= 3  # histogram, per domain, shares
    assert page.locator("section#trust svg.chart").count() == 2  # proxy vs target, both vs exact
    assert shot.stat().st_size > 50_000


def test_injected_markup_did_not_run(opened):
    page, seen, _ = opened
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert seen["dialogs"] == []
    assert page.locator("img").count() == 0 and page.locator("script").count() == 1
    assert all(url.startswith("file://") for url in seen["requests"]), seen["requests"]
    first = page.locator("section#target-main table.top tbody tr").first  # the payloads shown as text
    assert first.locator("div.text").text_content().startswith(f"user {PAYLOADS[0]}")
    ids = page.locator("code[data-sample-id]").all_text_contents()
    assert all(i.endswith(tuple(PAYLOADS)) for i in ids)
    assert {i[-len(p):] for i in ids for p in PAYLOADS} >= set(PAYLOADS)
    assert page.locator("section#target-main svg text").filter(has_text=HOSTILE_DOMAIN).count() >= 1  # SVG labels too


def test_top_rows_are_the_selections_rank_one(opened, demo_run):
    page, _, _ = opened
    for name in ("main", "prose"):
        selection = pq.read_table(demo_run / "selections" / name / "selection.parquet")
        first = page.locator(f"section#target-{name} table.top tbody tr").first
        assert (first.locator("code[data-sample-id]").get_attribute("data-sample-id")
                == selection.column("sample_id")[0].as_py())
        assert page.locator(f'[data-key="{name}.selected"]').inner_text() == str(selection.num_rows)
        rows = page.locator(f"section#target-{name} table.top tbody tr")
        ids = [rows.nth(i).locator("code[data-sample-id]").inner_text() for i in range(rows.count())]
        assert ids == selection.column("sample_id").to_pylist()[: len(ids)]


def test_numbers_shown_match_the_runs_files(opened, demo_run):
    page, _, _ = opened
    summary = json.loads((demo_run / "summary.json").read_text())
    quarantine = pq.read_table(demo_run / "quarantine.parquet")
    reasons = Counter(quarantine.column("reason").to_pylist())
    assert reasons == {"empty-text": 1, "missing-column": 1, "duplicate-id": 1}
    rows = page.locator("#rows-table tbody tr").first.locator("td")
    assert rows.nth(1).inner_text() == f"{summary['rows_read']['pool']:,}"
    assert page.locator('[data-key="quarantined.pool"]').inner_text() == str(summary["rows_quarantined"]["pool"]) == "3"
    shown = {}
    for row in page.locator("#quarantine-table tbody tr").all():
        cells = row.locator("td")
        shown[cells.nth(1).inner_text()] = int(cells.nth(2).inner_text().replace(",", ""))
    assert shown == dict(reasons)
    shares = page.locator('table.shares[data-target="main"] tbody tr').all()
    table = {r.locator("td").nth(0).inner_text(): r.locator("td").nth(1).inner_text() for r in shares}
    assert table == {d: f"{v:.1%}" for d, v in summary["domain_share_pool"].items()}
    main = set(pq.read_table(demo_run / "selections/main/selection.parquet").column("sample_id").to_pylist())
    prose = set(pq.read_table(demo_run / "selections/prose/selection.parquet").column("sample_id").to_pylist())
    overlap = page.locator('[data-overlap="main|prose"]').inner_text()
    assert 0 < len(main & prose) < len(main) and overlap.startswith(f"{len(main & prose)} (")
    fidelity = json.loads((demo_run / "fidelity" / "report.json").read_text())
    assert page.locator("#verdict").inner_text() == fidelity["verdict"]
    text = page.locator("#summary-text").inner_text()
    assert f"selected {summary['selected']} of {summary['valid_pool_rows']} valid pool rows" in text
    assert "target prose: selected" in text and fidelity["verdict"] in text
