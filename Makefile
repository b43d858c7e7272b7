# Slipway developer commands. `make help` lists them.
#
#   make dev     run Slipway: every service in one process (SQLite, in-memory bus)
#   make test    every test, against real PostgreSQL and NATS JetStream (started or
#                installed by scripts/test-services.sh when this machine has none)
#   make lint    rustfmt, clippy -D warnings, buf lint
#   make bench   release-built benchmarks; figures in target/bench/results.json
#                (BENCH_ARGS="--only build,logs" runs some scenarios)
#   make sdk     Python and TypeScript clients generated from proto/ (sdk/README.md)

CARGO ?= cargo
DEV_LISTEN ?= 127.0.0.1:7800
DEV_DATA_DIR ?= .slipway-dev

.PHONY: help dev test lint fmt bench proto-lint sdk

help:
	@sed -n 's/^#   make /make /p' Makefile

dev:
	$(CARGO) run -p slipway -- dev --listen $(DEV_LISTEN) --data-dir $(DEV_DATA_DIR)

test:
	scripts/test-services.sh scripts/cargo-test.sh

lint: node_modules/.installed
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	npx --no-install buf lint

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) build --release -p slipway
	$(CARGO) run --release -p slipway-bench -- --output target/bench/results.json $(BENCH_ARGS)

sdk: node_modules/.installed
	scripts/sdk.sh all

# buf comes from npm (@bufbuild/buf); installed once, locally.
node_modules/.installed: package.json
	npm install --no-audit --no-fund
	touch $@
