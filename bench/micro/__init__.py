"""Single-component micro-benchmarks: sketcher, bergson, KRR, top-k, JVP, score reads, memory, report."""
