"""HF model loading, module selection by name patterns, the low-rank linear."""
