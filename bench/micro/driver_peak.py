"""Run a command and print the peak resident set of that process alone (its children, e.g. Ray's
workers and daemons, not counted): the driver peak `iprox-ray plan` predicts.

    .venv/bin/python -m bench.micro.driver_peak .venv/bin/iprox-ray run jobs/demo.toml --run-dir DIR -q
"""

import subprocess
import sys
import time

import psutil


def main(command: list[str]) -> int:
    proc = subprocess.Popen(command)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    print(f"driver peak rss: {peak} bytes ({peak / 2**20:.1f} MiB), exit code {proc.returncode}", flush=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
