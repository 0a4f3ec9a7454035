"""Moves shards between the store and workers; knows nothing of the maths."""
