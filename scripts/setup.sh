#!/usr/bin/env bash
# Installs what facerelay needs on a Debian 12 machine that has only the Rust toolchain.
# Idempotent: anything already present is left alone.
#
#   scripts/setup.sh serve   build dependencies of the server (C/C++ compiler, nasm), and the
#                            ONNX Runtime library when model files are in models/ (or in
#                            $FACERELAY_MODELS__DIR)
#   scripts/setup.sh test    the above, plus what the tests use: Chromium, Node.js with
#                            playwright-core (no browser download), Python for the ONNX Runtime
#                            library, and that library itself
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
# The server loads ONNX Runtime only to swap faces, i.e. when model files are present.
with_models=false
if ls "${FACERELAY_MODELS__DIR:-models}"/*.onnx >/dev/null 2>&1; then with_models=true; fi
if [ "$mode" = test ] || [ "$with_models" = true ]; then
    need python3 python3
    need unzip unzip
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi
if [ "$mode" = test ]; then
    need /usr/bin/chromium chromium
    need node nodejs
    need npm npm
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$mode" = test ] && [ ! -d node_modules/playwright-core ]; then
    echo "setup: installing playwright-core (it downloads no browser)"
    npm ci --no-audit --no-fund --loglevel=error
fi
if [ "$mode" = test ] || [ "$with_models" = true ]; then
    scripts/install-onnxruntime.sh
fi
