#!/usr/bin/env bash
# Builds facerelay (installing missing build tools first) and runs the server with the
# built-in defaults. Extra arguments go to `facerelay serve`, e.g. --config my.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh serve
cargo build --release --locked --bin facerelay
exec "${CARGO_TARGET_DIR:-target}/release/facerelay" serve "$@"
