"""On-disk layout: Zarr store, manifests, markers, locks. Knows nothing of models."""
