# Two commands on a fresh machine:  `make demo`  and  `make test`.
# GPU users: make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test install clean-demo slurm-packages browser-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/iprox-ray run jobs/demo.toml

# The SLURM tests start a real SLURM cluster on localhost (slurm/cluster.sh): Debian's packages,
# installed here when missing (needs root; in CI a failed install fails the run).
slurm-packages:
	@test -x /usr/sbin/slurmctld -a -x /usr/sbin/munged || { \
	  echo "installing slurmctld slurmd slurm-client munge for the SLURM tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge) \
	  || { echo "could not install SLURM; the SLURM tests will skip (fail in CI)"; [ -z "$$CI" ]; }; }

# The report's browser tests open HTML reports in Debian's Chromium (driven by Playwright, no
# browser download): installed here when missing, the same way (in CI a failed install fails the run).
browser-packages:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || { echo "could not install chromium; the browser tests will skip (fail in CI)"; [ -z "$$CI" ]; }; }

# Lint first (ruff, with pyproject.toml's [tool.ruff] settings): a style error fails before the long tests.
# The SLURM tests interrupt jobs at chosen moments, so they run alone; the rest run on two workers
# (by file), which overlaps the Ray tests' waiting with the CPU-bound tests.
# The numerics tests then run again with one BLAS / OpenMP thread: another blocking of the same
# products must stay inside tolerances set by the conditioning (a CPU with other kernels does that).
NUMERICS := $(addprefix tests/test_,$(addsuffix .py,krr_landmarks sketch_kronecker sketch_vectors sketch_adam \
	exact_influence ipsvd probes second_order embeddings topk))
test: $(VENV)/.installed slurm-packages browser-packages
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests/test_cluster_execution.py
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests --ignore=tests/test_cluster_execution.py
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile $(NUMERICS)

clean-demo:
	rm -rf runs/demo
