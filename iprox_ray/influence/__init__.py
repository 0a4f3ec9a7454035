"""Scores and selection over sketches: pure numpy / numba, no Ray, no files."""
