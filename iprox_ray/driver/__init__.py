"""The driver: open and guard a run directory once (rundir.py), run the stages in order (run.py,
pipeline.py), score a new target (rescore.py), submit to SLURM (submission.py)."""
