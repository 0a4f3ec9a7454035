"""What a worker runs and reads: the sketch and embed shard tasks (one shared setup in worker.py),
the model they load, the precision rule, and the job's encoders, manifests and token budget."""
