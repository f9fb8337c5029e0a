# mdmserver — `make run` serves on 127.0.0.1:8080, `make test` runs the suite. Both work on a fresh machine
# with only Python 3.11+: they create .venv and install the project into it first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
BIND   ?= 127.0.0.1:8080

.PHONY: run test test-postgres lint bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mdmserver init
	@echo ""
	@echo "  mdmserver is starting on http://$(BIND)"
	@echo "  first admin token: $${MDMSERVER_DATA_DIR:-./var}/admin-token (written by the first 'mdmserver init')"
	@echo "  try: curl -H \"Authorization: Bearer \$$(cat $${MDMSERVER_DATA_DIR:-./var}/admin-token)\" http://$(BIND)/api/v1/organization"
	@echo ""
	$(BIN)/mdmserver serve --bind $(BIND)

test: $(STAMP)
	$(BIN)/python -m pytest

test-postgres: $(STAMP)
	MDMSERVER_TEST_POSTGRES_URL=$${MDMSERVER_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
		$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard mdmserver tests bench tools)
	$(BIN)/lint-imports
	$(BIN)/python tools/import_cycles.py --quiet

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

# bench/connect_floor_bench.py drives its targets with wrk (Debian's package).
# bench/fleet_bench.py: 10,000 simulated devices; enrolling them takes most of an hour here, so the
# enrolled devices (and their database) are kept in var/bench-fleet and reused by the next run.
# Smaller: make bench FLEET_ARGS='--devices 200'. PostgreSQL: add --postgres URL.
FLEET_ARGS ?= --devices 10000 --reuse var/bench-fleet
WRK := $(shell command -v wrk 2>/dev/null)

bench: $(BENCH_STAMP)
ifeq ($(WRK),)
	@if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	else sudo -n apt-get update -qq && DEBIAN_FRONTEND=noninteractive sudo -n apt-get install -y -qq wrk; fi
endif
	@for script in $(filter-out bench/fleet_bench.py,$(wildcard bench/*_bench.py)); do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; done
	@echo "== bench/fleet_bench.py $(FLEET_ARGS)"
	$(BIN)/python bench/fleet_bench.py $(FLEET_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
