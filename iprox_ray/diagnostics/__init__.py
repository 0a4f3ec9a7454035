"""Reports that judge a run's inputs: the proxy against the target, the landmark propagation, and
proxy.method = "auto"'s verdict. Stages call them; they call no stage."""
