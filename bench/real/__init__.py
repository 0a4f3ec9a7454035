"""Benchmarks on the real pretrained model, SmolLM2-135M-Instruct (bench/real/REAL.md)."""
