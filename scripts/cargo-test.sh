#!/usr/bin/env bash
# Runs the workspace tests with cargo-nextest when it is installed (parallel, one process
# per test, clearer output), else with plain `cargo test`. Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "cargo-nextest not found: running plain cargo test (install it with: cargo install cargo-nextest --locked)"
    exec cargo test --workspace --no-fail-fast "$@"
fi
