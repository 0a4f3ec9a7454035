"""Time the HTML report of a finished run directory, in a fresh process per repeat.

    python -m bench.micro.report_time RUN_DIR [REPEATS]

Each repeat runs `write_report` (to a scratch file, the run's own report.html untouched) in a
child process that has already imported the report's modules, as the pipeline has when it writes
the report at a run's end; prints one JSON line per repeat: seconds, the child's peak RSS, and
the summary's total stage seconds (what the report's time is a share of).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
from iprox_ray.report import write_report
start = time.perf_counter()
write_report(Path(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def main(run_dir: str, repeats: int = 3) -> None:
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    total = sum(summary.get("stage_seconds", {}).values())
    out = Path(tempfile.mkdtemp()) / "report.html"
    for _ in range(repeats):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, run_dir, str(out)], stdout=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        result = json.loads(proc.stdout.read())
        print(json.dumps({**result, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "bytes": out.stat().st_size,
                          "run_stage_seconds": round(total, 1), "share": round(result["seconds"] / total, 4)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
