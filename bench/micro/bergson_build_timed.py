"""Run `bergson build` in-process (bergson's own venv) and time its gradient collection.

Usage: bench/.venv-bergson/bin/python bench/micro/bergson_build_timed.py THREADS <bergson build arguments...>
Prints one line `BERGSON_TIMING {...}`: wall of the whole command (imports excluded), seconds in
bergson.build.collect_gradients (the forward/backward/projection loop plus writing its index),
peak RSS.

Run by path, not as `-m bench....`: bench/micro/sketch_vs_bergson.py starts it with bergson's own
interpreter, which has neither this repository nor iprox_ray on its path (it imports neither).
"""

import json
import resource
import sys
import time

import torch


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]))  # before bergson is imported
    import bergson.build as build_module
    from bergson.__main__ import main as bergson_main

    timing = {}
    original = build_module.collect_gradients

    def timed_collect(**kwargs):
        start = time.perf_counter()
        original(**kwargs)
        timing["collect_s"] = time.perf_counter() - start

    build_module.collect_gradients = timed_collect
    sys.argv = ["bergson", *sys.argv[2:]]
    start = time.perf_counter()
    bergson_main()
    timing["wall_s"] = time.perf_counter() - start
    timing["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timing["threads"] = torch.get_num_threads()
    print("BERGSON_TIMING " + json.dumps(timing), flush=True)


if __name__ == "__main__":
    main()
