# Everything runs from the project's own .venv, built on first use and rebuilt only when
# pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

PYTEST_ARGS ?=
BENCH_ARGS ?=
# `make chaos CHAOS_ARGS='--count 1000'`; CHAOS_POSTGRES=1 adds the PostgreSQL run (see tests/chaos).
CHAOS_ARGS ?=
# When set, `make test` writes pytest's exit code here: make itself can only exit 0 or 2, and
# .ci/run must tell "no tests collected" (5) from a failure.
PYTEST_STATUS_FILE ?=

# Exported only when set, so that the tests can still tell "unset" from "empty".
ifdef TEST_POSTGRES_URL
export TEST_POSTGRES_URL
endif

.PHONY: venv run test lint bench bench-data bench-scale bench-import chaos cluster clean-data vendor

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(VENV)/bin/pip install -e '.[dev]'
	touch $(STAMP)

run: venv
	$(PY) -m services dev

test: venv
	@status=0; $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ -n "$(PYTEST_STATUS_FILE)" ]; then echo $$status > "$(PYTEST_STATUS_FILE)"; fi; \
	exit $$status

# All three run even when one fails, so one pass reports every problem.
lint: venv
	@status=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "ruff format --check ."; $(VENV)/bin/ruff format --check . || status=1; \
	echo "mypy shared services"; $(VENV)/bin/mypy shared services || status=1; \
	exit $$status

# The browser libraries and county outlines under shared/web/static, from the pinned
# package-lock.json (needs npm); `$(PY) scripts/vendor.py --check` checks them without it.
vendor: venv
	$(PY) scripts/vendor.py

bench: venv
	$(PY) bench/pipeline.py $(BENCH_ARGS)

# Issue 15: five years of data written straight into the four databases (var/bench-data):
# 1,000,000 complaints and 20,000 suggestions unless BENCH_DATA_ARGS says otherwise.
bench-data: venv
	$(PY) bench/scale_data.py --out var/bench-data $(BENCH_DATA_ARGS)

# Issue 15: the pages and APIs on a large data set (make bench-data first), p50/p95 per endpoint.
bench-scale: venv
	$(PY) bench/scale.py $(BENCH_SCALE_ARGS)

# Issue 15: a 5,000-row transfer list (.xlsx) imported by intake on its own.
bench-import: venv
	$(PY) bench/import_xlsx.py $(BENCH_ARGS)

# The fault test of issue 13, full version: 3,000 complaints, every fault, eight NATS restarts.
chaos: venv
	$(PY) -m tests.chaos $(CHAOS_ARGS)

# Three NATS nodes (deploy/nats-cluster), PostgreSQL and two instances of each service, one NATS
# node and one instance of each killed under load; needs TEST_POSTGRES_URL (skipped without it).
cluster: venv
	$(PY) -m pytest tests/cluster -m cluster -p no:cacheprovider -s $(PYTEST_ARGS)

clean-data:
	rm -rf var
