"""Demo assets: a multi-domain chat pool, an arithmetic target, a tokenizer, a tiny model config."""
