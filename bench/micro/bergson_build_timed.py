"""Run `bergson build` in-process (bergson's own venv) and time its gradient collection.

Usage: bench/.venv-bergson/bin/python bench/bergson_build_timed.py THREADS <bergson build arguments...>
Prints one line `BERGSON_TIMING {...}`: wall of the whole command (imports excluded), seconds in
bergson.build.collect_gradients (the forward/backward/projection loop plus writing its index),
peak RSS.
"""

import json
import resource
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]))
import bergson.build as build_module  # noqa: E402
from bergson.__main__ import main  # noqa: E402

timing = {}
original = build_module.collect_gradients


def timed_collect(**kwargs):
    start = time.perf_counter()
    original(**kwargs)
    timing["collect_s"] = time.perf_counter() - start


build_module.collect_gradients = timed_collect
sys.argv = ["bergson", *sys.argv[2:]]
start = time.perf_counter()
main()
timing["wall_s"] = time.perf_counter() - start
timing["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
timing["threads"] = torch.get_num_threads()
print("BERGSON_TIMING " + json.dumps(timing), flush=True)
