"""Scoring methods, one module each; `registry.py` lists them (see base.py for what a method declares)."""

from iprox_ray.methods.registry import METHOD_NAMES, check_job, method_for, method_named

__all__ = ["METHOD_NAMES", "check_job", "method_for", "method_named"]
