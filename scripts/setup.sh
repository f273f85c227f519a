#!/usr/bin/env bash
# Installs what facerelay needs on a Debian 12 machine that has only the Rust toolchain.
# Idempotent: anything already present is left alone.
#
#   scripts/setup.sh serve   build dependencies of the server (C/C++ compiler, nasm, libopus),
#                            Python,
#                            the ONNX Runtime library and the packaged model set
#                            (scripts/install-packaged-models.sh, from PyPI packages) that the
#                            default mesh swapper runs on
#   scripts/setup.sh test    the above, plus what the tests use: Chromium, Node.js with
#                            playwright-core (no browser download), redis-server,
#                            docker-compose, caddy, coturn, openssl, espeak-ng
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-test}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root (or sudo) to run: $*" >&2; exit 1
    fi
}

missing=()
need() { # need COMMAND-OR-PATH PACKAGE
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -e "$1" ]; then missing+=("$2"); fi
}
need cc gcc
need c++ g++
need make make
need nasm nasm # openh264 assembly: about twice as fast encode/decode
need pkg-config pkg-config
# Voice disguise: the server links the system's libopus.
need /usr/include/opus/opus.h libopus-dev
# Python fetches the ONNX Runtime library and the packaged models from PyPI and converts them.
need python3 python3
need unzip unzip
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# Debian keeps ensurepip, which `python3 -m venv` needs, in python3-venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "$mode" = test ]; then
    need /usr/bin/chromium chromium
    # The cluster test runs its own Redis on a loopback port; docker-compose validates the
    # compose file.
    need redis-server redis-server
    need docker-compose docker-compose
    # The deployment test runs compose's services as processes: Caddy, coturn; openssl reads
    # Caddy's certificate.
    need caddy caddy
    need turnserver coturn
    need openssl openssl
    need node nodejs
    # The voice tests speak with espeak-ng (the publisher's microphone).
    need espeak-ng espeak-ng
    need npm npm
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$mode" = test ] && { [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/axe-core ]; }; then
    echo "setup: installing playwright-core (it downloads no browser) and axe-core"
    npm ci --no-audit --no-fund --loglevel=error
fi
scripts/install-onnxruntime.sh
scripts/install-packaged-models.sh
