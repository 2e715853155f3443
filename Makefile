# `make demo` and `make test` build .venv from nothing when it is missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.glth-installed

.PHONY: demo test test-fast lint bench clean

# constraints.txt: the exact versions CI tests (pyproject.toml declares ranges). Its torch==2.13.0
# resolves to the local CPU wheel on these machines (no CUDA download).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/glth demo

# two pytest-xdist workers by default: a module's tests, the users of a shared session sweep and the
# multi-node cluster modules each stay on one worker, the longest groups handed out first
# (tests/conftest.py); XDIST= runs the suite serially
XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder

test: $(STAMP)
	$(VENV)/bin/pytest -q -p no:cacheprovider $(XDIST)

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -p no:cacheprovider $(XDIST) -m "not slow"

# ruff's settings are in pyproject.toml; `ruff check --fix` and `ruff format` repair most findings
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# make bench BENCH="--quick" (or "--only round sweep", "--device cuda"): the arguments of run_all.py
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH)

clean:
	rm -rf glth-runs mlflow.db mlflow.db-wal mlflow.db-shm mlartifacts bench-results
