"""Pipeline stages, driver side: each asks the scoring method what it needs and hands shards to the
workers (tasks/) through the execution layer; the method decides, never a test of its name."""
