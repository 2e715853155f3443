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

# serial by default (CI). XDIST="-n 2 --dist loadgroup" runs two pytest-xdist workers: ~21 min instead
# of ~40 on 2 cores (a module's tests, the users of a shared session sweep, and the multi-node
# cluster modules each stay on one worker: tests/conftest.py), but test_cluster_storage's S3 run
# (test_c) timed out in three of three such runs here, so it is not yet the default.
XDIST ?=

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
	rm -rf glth-runs mlflow.db mlartifacts bench-results
