#!/usr/bin/env bash
# Sets up the machine (idempotent) and starts a standalone simplekv server on 127.0.0.1 in the
# foreground, with data under ./data. Extra arguments go to `simplekv server`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/simplekv-target}"
cargo build --release --locked -p simplekv-cli
exec "$CARGO_TARGET_DIR/release/simplekv" server "$@"
