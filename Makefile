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

# serial by default. XDIST="-n 2 --dist loadgroup" runs two workers (a module, and a shared session
# sweep's users, stay on one worker: tests/conftest.py); measured on 2 cores it was no faster and two
# tests failed under it (the live display's terminal width; the node-loss timing), so CI runs serially.
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
