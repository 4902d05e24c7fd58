# The commands the README names. Every target installs what it needs first, so each one works
# on a fresh machine: `make demo` and `make test` are the only two a newcomer has to know.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
MYSQL_CHROOT ?= $(HOME)/.cache/cdc_pipeline/mysql-9.7-root
export CDC_MYSQL_CHROOT := $(MYSQL_CHROOT)
PYTEST_ARGS ?=

.PHONY: demo test test-mongoeco lint ui system-deps mysql-chroot install clean

## demo: start local servers, run the pipeline through Dagster, print a summary, stop
##   make demo FAULT=mongo-outage   the same with MongoDB down until its breaker opens: failed loads, the
##                                  breaker, and the recovery, all visible in make ui
demo: install
	@scripts/ensure_system_packages.sh mariadb-server
	$(BIN)/python -m devtools.demo

## test: install everything (apt packages, venv, MySQL 9.7 chroot) and run the whole suite
test: install system-deps mysql-chroot
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-mongoeco: the MongoDB-facing subset again, on the mongoeco wire server in the default
##   CDC_MONGO_COMPAT=standard (dotted mirror names, Decimal128, renameCollection), MariaDB only
##   (the source side ran in make test); docs/mongo-targets.md says which test runs where.
##   Its fault scenarios print their line but stay out of .ci/run's fault table (nx-27017's).
MONGOECO_TESTS ?= cdc_pipeline_tests/contract \
	cdc_pipeline_tests/integration/test_slow_mongo_commands.py \
	cdc_pipeline_tests/integration/test_load.py \
	cdc_pipeline_tests/integration/test_real_world_names.py \
	cdc_pipeline_tests/integration/test_unloadable_rows.py \
	cdc_pipeline_tests/faults/test_damage_and_purge.py
# Rebuilds a 5,500-row mirror: minutes on mongoeco, whose writes slow down as a collection grows.
MONGOECO_DESELECT ?= --deselect \
	cdc_pipeline_tests/integration/test_load.py::test_a_column_change_during_a_mirror_rebuild_starts_the_read_over
test-mongoeco: install system-deps
	@scripts/ensure_mongoeco.sh
	CDC_TEST_MONGO=mongoeco CDC_TEST_SOURCES=mariadb CDC_FAULT_RESULTS= \
	  $(BIN)/python -m pytest $(MONGOECO_TESTS) $(MONGOECO_DESELECT) $(PYTEST_ARGS)

## lint: ruff (lint + format check) on everything, mypy --strict on core/
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cdc_pipeline/core

## ui: dagster dev on the demo's DAGSTER_HOME and WAL, so the demo's runs and tables are there
ui: install
	mkdir -p .dagster_home && cp dagster.yaml .dagster_home/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster_home CDC_SOURCE_NAME=demo CDC_STAGING_DIR=$(CURDIR)/.cdc_staging \
	  $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1

## bench: benchmarks on local servers (capture, load, peak RSS, scaling, latency) -> bench/results/
##   (also one 200,000-row transaction, table mixed1tx; BENCH_ARGS="--one-transaction-rows 0" skips it)
##   BENCH_SIZES=10000,100000,1000000 make bench   the issue's full run (default 10000,100000)
##   BENCH_SOURCES=mariadb,mysql make bench        MySQL 9.7 too (builds the chroot first)
##   BENCH_ARGS="--runs 5"                          any other option of python -m bench.run --help
BENCH_SIZES ?= 10000,100000
BENCH_SOURCES ?= mariadb
BENCH_ARGS ?=
.PHONY: bench
bench: install system-deps $(if $(findstring mysql,$(BENCH_SOURCES)),mysql-chroot)
	$(BIN)/python -m bench.run --sizes $(BENCH_SIZES) --sources $(BENCH_SOURCES) $(BENCH_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

## system-deps: MariaDB server and debootstrap from Debian (only when missing)
system-deps:
	@scripts/ensure_system_packages.sh

## mysql-chroot: MySQL 9.7 LTS in a cached debootstrap chroot (outside the repo)
mysql-chroot: system-deps
	@scripts/ensure_mysql_chroot.sh

clean:
	rm -rf $(VENV) .dagster_home .cdc_staging
