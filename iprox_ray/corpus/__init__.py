"""Inputs -> frozen shard manifest; row -> tokens + assistant mask; quarantine of bad rows."""
