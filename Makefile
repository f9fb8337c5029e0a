# mdmserver — `make run` serves on 127.0.0.1:8080, `make test` runs the suite. Both work on a fresh machine
# with only Python 3.11+: they create .venv and install the project into it first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: the runtime alone (`make run`, `make install`: no test tools in the venv that serves), and the
# test extras on top of it (`make test`, `make lint`).
STAMP  := $(VENV)/.installed-stamp
TEST_STAMP  := $(VENV)/.test-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
BIND   ?= 127.0.0.1:8080
# `make run BIND=host:port` also sets public_url (what enrollment profiles send devices to) to
# http://host:port, unless MDMSERVER_PUBLIC_URL or a configuration file (MDMSERVER_CONFIG) says otherwise;
# a wildcard host (0.0.0.0, [::]) is replaced by this machine's name.
ifneq ($(filter command line environment,$(origin BIND)),)
PUBLIC_URL_ENV = if [ -z "$${MDMSERVER_PUBLIC_URL:-}" ] && [ -z "$${MDMSERVER_CONFIG:-}" ]; then \
	host="$(BIND)"; case "$$host" in 0.0.0.0:*|\[::\]:*|:*) host="$$(hostname -f 2>/dev/null || hostname):$${host\#\#*:}";; esac; \
	export MDMSERVER_PUBLIC_URL="http://$$host"; echo "  public_url: $$MDMSERVER_PUBLIC_URL (from BIND)"; fi;
endif

.PHONY: run test test-postgres lint bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@rm -f $(TEST_STAMP) $(BENCH_STAMP)
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(TEST_STAMP)

run: $(STAMP)
	@$(PUBLIC_URL_ENV) \
	$(BIN)/mdmserver init && \
	echo "" && \
	echo "  mdmserver is starting on http://$(BIND) (Ctrl-C stops it)" && \
	echo "  first admin token: $${MDMSERVER_DATA_DIR:-./var}/admin-token (written by the first 'mdmserver init')" && \
	echo "  try: curl -H \"Authorization: Bearer \$$(cat $${MDMSERVER_DATA_DIR:-./var}/admin-token)\" http://$(BIND)/api/v1/organization" && \
	echo "" && \
	exec $(BIN)/mdmserver serve --bind $(BIND)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

test-postgres: $(TEST_STAMP)
	MDMSERVER_TEST_POSTGRES_URL=$${MDMSERVER_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
		$(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check $(wildcard mdmserver tests bench tools)
	$(BIN)/lint-imports
	$(BIN)/python tools/import_cycles.py --quiet

$(BENCH_STAMP): $(TEST_STAMP)
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
