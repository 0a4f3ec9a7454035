"""The driver at scale (synthetic pools, no model), plan against run, selection cost, sketch sizes."""
