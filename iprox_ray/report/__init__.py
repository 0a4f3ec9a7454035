"""The self-contained HTML run report (`iprox-ray report RUN_DIR`, also written at a run's end).

One file, inline CSS, SVG and one hashed inline script: it opens from disk with no server and no
network. It reads the run directory (and, for the example rows' text, the inputs its frozen
manifest names) with memory bounded by a batch of whole shards plus one bit per pool row per
target. Modules: rundir (what the directory holds and lacks), stats (streamed statistics), rows
(quarantine records, example text), gather (all of it for one report), text (the plain-text
summary), html / svg (building blocks), sections_* (the page's sections).
"""

from __future__ import annotations

from pathlib import Path

from iprox_ray.report.gather import EXAMPLES, ReportData, gather
from iprox_ray.report.html import page
from iprox_ray.report.run_files import read_run
from iprox_ray.report.sections_run import banner, header, rows_section, run_section, stage_section, summary_section
from iprox_ray.report.sections_target import anchor, compare_section, target_section
from iprox_ray.report.sections_trust import trust_section
from iprox_ray.store.atomic import atomic_write_bytes


def render(data: ReportData) -> str:
    targets = data.run.targets
    nav = [("summary", "Summary"), ("run", "Settings"), ("stages", "Stages"), ("rows", "Rows"),
           *((anchor(t.name), f"Target {t.name}") for t in targets), ("compare", "Side by side"), ("trust", "Trust")]
    body = "".join([banner(data), summary_section(data), run_section(data), stage_section(data), rows_section(data),
                    *(target_section(data, t) for t in targets), compare_section(data), trust_section(data)])
    return page(f"iprox-ray report: {data.run.name}", header(data), nav, body)


def write_report(run_dir: Path, out: Path | None = None, n_examples: int = EXAMPLES,
                 read_rows: int | None = None) -> Path:
    """Write the report of `run_dir` (to RUN_DIR/report.html unless `out`); returns its path."""
    run = read_run(Path(run_dir))
    path = Path(out) if out is not None else run.layout.report
    atomic_write_bytes(path, render(gather(run, n_examples, read_rows)).encode("utf-8"))
    return path
