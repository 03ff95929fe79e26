# tccd — developer entry points. `make` (or `make help`) lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

SERVICES := scripts/services.sh
TCCD := ./target/release/tccd
# Arguments after `cargo test`; e.g. make test TEST_ARGS='--features failpoints --test crash'
TEST_ARGS ?= --features failpoints --all-targets -- --test-threads=4
# Store for `make demo`: sqlite (files under target/demo/) or postgres.
DB ?= sqlite
# Extra flags of `tccd bench` (see ./target/release/tccd bench --help); e.g.
# make bench BENCH_ARGS='--backends postgres --duration-secs 60'
BENCH_ARGS ?=

ifneq ($(filter demo,$(MAKECMDGOALS)),)
ifeq ($(filter $(DB),sqlite postgres),)
$(error DB must be sqlite or postgres, not '$(DB)')
endif
endif

# Runs on exit (success, failure, Ctrl-C) of a recipe that started services.
STOP_ON_EXIT = trap 'exit 130' INT; trap 'exit 143' TERM; trap '$(SERVICES) stop $(1)' EXIT

.PHONY: help packages build test lint demo run bench bench-scale clean dtm-venv

# DTM's Python client, for the DTM-compatibility tests.
DTM_VENV := target/dtm-venv
DTMCLI_VERSION := 1.7.7.0

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{ printf "  make %-11s %s\n", $$1, $$2 }'
	@echo "  variables: DB=sqlite|postgres (demo), TEST_ARGS='...' (test), BENCH_ARGS='...' (bench)"

packages: ## install or name the missing system packages (redis, postgresql, libpq/sqlite/ssl dev)
	@$(SERVICES) ensure-packages

build: ## cargo build --release
	cargo build --release

dtm-venv: ## install DTM's Python client (dtmcli) into target/dtm-venv
	@if ! $(DTM_VENV)/bin/python -c 'import dtmcli' 2>/dev/null; then \
		echo "make: installing dtmcli==$(DTMCLI_VERSION) into $(DTM_VENV)"; \
		python3 -m venv $(DTM_VENV) || { echo "python3 with the venv module is needed: apt-get install -y python3-venv"; exit 1; }; \
		$(DTM_VENV)/bin/pip install --quiet --disable-pip-version-check dtmcli==$(DTMCLI_VERSION); \
	fi

test: packages dtm-venv ## run every test against Postgres and Redis (shared ones if up, else private)
	@$(call STOP_ON_EXIT,postgres redis); \
	pg=$$($(SERVICES) ensure-postgres); \
	redis=$$($(SERVICES) ensure-redis); \
	export TCCD_TEST_PG_URL="$$pg" TCCD_TEST_REDIS_URL="$$redis" TCCD_TEST_DTM_PYTHON="$(CURDIR)/$(DTM_VENV)/bin/python"; \
	echo "make test: Postgres $$pg, Redis $$redis"; \
	cargo test $(TEST_ARGS)

lint: ## cargo fmt --check and clippy with -D warnings
	cargo fmt --check
	cargo clippy --all-targets --features failpoints -- -D warnings

demo: packages build ## run the demo scenario (DB=sqlite|postgres) on a private Redis
	@rm -rf target/demo; mkdir -p target/demo
	@$(call STOP_ON_EXIT,private-redis $(if $(filter postgres,$(DB)),postgres)); \
	redis=$$($(SERVICES) private-redis); \
	export TCCD_DEMO_REDIS_URL="$$redis" TCCD_DEMO_DIR="$(CURDIR)/target/demo"; \
	if [ "$(DB)" = postgres ]; then \
		pg=$$($(SERVICES) ensure-postgres); export TCCD_DEMO_PG_URL="$$pg"; \
	fi; \
	$(TCCD) demo

run: ## run the coordinator (cargo run --release -- coordinator)
	cargo run --release -- coordinator

bench: packages build ## checkout benchmark: coordinated vs baseline on Postgres and SQLite
	@$(call STOP_ON_EXIT,postgres redis); \
	pg=$$($(SERVICES) ensure-postgres); \
	redis=$$($(SERVICES) ensure-redis); \
	export TCCD_BENCH_PG_URL="$$pg" TCCD_BENCH_REDIS_URL="$$redis"; \
	echo "make bench: Postgres $$pg, Redis $$redis"; \
	$(TCCD) bench $(BENCH_ARGS)

bench-scale: packages build ## coordinated tx/s with 1 thousand vs 1 million finished transactions
	@$(call STOP_ON_EXIT,postgres redis); \
	pg=$$($(SERVICES) ensure-postgres); \
	redis=$$($(SERVICES) ensure-redis); \
	export TCCD_BENCH_PG_URL="$$pg" TCCD_BENCH_REDIS_URL="$$redis"; \
	echo "make bench-scale: Postgres $$pg, Redis $$redis"; \
	$(TCCD) bench --backends postgres --modes coordinated --prefill 1000 \
		--out target/bench/scale-1k.json $(BENCH_ARGS); \
	$(TCCD) bench --backends postgres --modes coordinated --prefill 1000000 \
		--out target/bench/scale-1m.json --compare-with target/bench/scale-1k.json $(BENCH_ARGS)

clean: ## stop private services, cargo clean, remove target/demo
	$(SERVICES) stop
	cargo clean
	rm -rf target/demo
