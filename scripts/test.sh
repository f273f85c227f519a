#!/usr/bin/env bash
# Runs every test: the Python tools' (tools/tests), then unit, integration (WebRTC clients on
# loopback) and the browser test (Debian Chromium with a fake camera). Installs what is missing
# first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
scripts/test-tools.sh
cargo test --release --locked "$@"
