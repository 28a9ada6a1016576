#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Build artefacts live outside the checkout so gRPC's C core (6+ min cold) is built once
# per machine, not once per clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/simplekv-target}"
export CARGO_TERM_COLOR=never
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
