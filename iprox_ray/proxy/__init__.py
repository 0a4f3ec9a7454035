"""IProX proxies: IPSVD (stage 1), baselines, saved artifacts."""
