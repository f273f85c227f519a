#!/usr/bin/env bash
# Runs every test: the Python tools' (tools/tests), the compose file's validity, the
# Dockerfile's install steps (scripts/check-image.sh), the fuzz targets (scripts/fuzz.sh, 60 s
# each), then unit, integration (WebRTC clients on loopback, a Redis cluster, aiortc over
# WHIP/WHEP) and the browser tests (Debian Chromium with a fake camera). Installs what is
# missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
scripts/test-tools.sh
# aiortc, the WebRTC stack of the WHIP/WHEP interop test (tests/interop), into the same venv.
scripts/venv-models.sh tests/interop/requirements.txt
# The compose file must be valid (Debian's docker-compose; no engine needed).
echo "test: docker-compose.yml"
DOMAIN=call.example.org PUBLIC_IP=203.0.113.10 TURN_SECRET=0123456789abcdef0123456789abcdef \
    docker-compose -f docker-compose.yml config -q
# The image installs ONNX Runtime and the packaged models with the scripts above, nothing else
# (the Dockerfile read, no engine needed); and broken copies of it fail that check.
echo "test: Dockerfile installs through scripts/install-onnxruntime.sh and scripts/install-packaged-models.sh"
scripts/check-image.sh
scripts/check-image.sh --self-test
# Fuzz targets, FUZZ_SECONDS each (0: skipped); before the tests so that the run ends with their
# summary.
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
    scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
fi
# A failing test's message must be among the run's last lines, not above a backtrace (run
# cargo test by hand with RUST_BACKTRACE=1 for one).
export RUST_BACKTRACE=0
cargo test --release --locked "$@"
