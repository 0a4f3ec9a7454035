"""Per-sample gradient sketching: projections from (seed, module name), hook capture."""
