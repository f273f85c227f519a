#!/usr/bin/env bash
# Runs every test: unit, integration (WebRTC clients on loopback) and the browser test
# (Debian Chromium with a fake camera). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
cargo test --release --locked "$@"
