#!/usr/bin/env bash
# Installs the ONNX Runtime shared library that `ort` (load-dynamic) opens at start-up into the
# project-local, git-ignored folder .deps/onnxruntime/lib/, taken from the official PyPI wheels.
#
#   scripts/install-onnxruntime.sh        CPU build (PyPI `onnxruntime`)
#   scripts/install-onnxruntime.sh gpu    GPU build (PyPI `onnxruntime-gpu` + NVIDIA CUDA 13 and
#                                         cuDNN 9 wheels), for the `cuda` and `tensorrt` providers
#
# Idempotent: does nothing when .deps/onnxruntime/lib/libonnxruntime.so already resolves to a
# library of the wanted flavour. The config key `models.onnxruntime_library` (default
# .deps/onnxruntime/lib/libonnxruntime.so) points at the result.
#
# Why these versions: ort 2.0.0-rc.15 is built with the `api-31` feature, which refuses (panics on)
# libraries older than 1.31; 1.32.0 is the newest release and is tested here on the CPU.
set -euo pipefail

flavour="${1:-cpu}"
# onnxruntime 1.32.0 is the newest CPU wheel; onnxruntime-gpu stops at 1.31.1 on PyPI.
if [[ "$flavour" == gpu ]]; then default_version=1.31.1; else default_version=1.32.0; fi
ORT_VERSION="${ORT_VERSION:-$default_version}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.deps/onnxruntime"
lib="$dest/lib"
marker="$dest/FLAVOUR"

case "$flavour" in
  cpu | gpu) ;;
  *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;;
esac

if [[ -e "$lib/libonnxruntime.so" && -f "$marker" && "$(cat "$marker")" == "$flavour $ORT_VERSION" ]]; then
  echo "onnxruntime $ORT_VERSION ($flavour) already installed in $lib"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

pip_download() {
  python3 -m pip download --quiet --only-binary=:all: -d "$tmp/wheels" "$@"
}

# Replaces the previous install only once the new wheels are downloaded, so a failed download
# leaves a working library behind.
fresh_dest() {
  rm -rf "$dest"
  mkdir -p "$lib"
}

# Unpacks every file under `pattern` of one wheel into $lib, flattened (ORT looks for its
# provider libraries beside itself, and $ORIGIN-relative RUNPATHs keep working when the
# CUDA libraries sit in the same folder).
unpack() {
  local wheel="$1" pattern="$2"
  rm -rf "$tmp/x" && mkdir -p "$tmp/x"
  python3 - "$wheel" "$pattern" "$tmp/x" <<'PY'
import fnmatch, sys, zipfile
wheel, pattern, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if fnmatch.fnmatch(n, pattern)]
    if not names:
        sys.exit(f"{wheel}: nothing matches {pattern}")
    for n in names:
        z.extract(n, out)
PY
  find "$tmp/x" -type f -name '*.so*' -exec cp -f {} "$lib/" \;
}

if [[ "$flavour" == cpu ]]; then
  pip_download --no-deps "onnxruntime==$ORT_VERSION"
  fresh_dest
  unpack "$(ls "$tmp"/wheels/onnxruntime-*.whl)" 'onnxruntime/capi/libonnxruntime.so*'
else
  # onnxruntime-gpu 1.31 is built against CUDA 13 and cuDNN 9. Its own wheel carries the CUDA
  # and TensorRT provider libraries; its extras `cuda` and `cudnn` name NVIDIA's wheels of the
  # CUDA runtime, cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN, so pip resolves the matching versions.
  # The driver's libcuda.so.1 comes from the host; TensorRT (libnvinfer) is not installed here.
  pip_download "onnxruntime-gpu[cuda,cudnn]==$ORT_VERSION"
  fresh_dest
  unpack "$(ls "$tmp"/wheels/onnxruntime_gpu-*.whl)" 'onnxruntime/capi/lib*.so*'
  for wheel in "$tmp"/wheels/nvidia_*.whl; do
    [[ -e "$wheel" ]] || { echo "pip fetched no NVIDIA wheels for the cuda/cudnn extras" >&2; exit 1; }
    unpack "$wheel" 'nvidia/*.so*'
  done
fi

real="$(cd "$lib" && ls libonnxruntime.so.1.* | head -n1)"
if [[ -z "$real" ]]; then
  echo "no libonnxruntime.so.1.* found in the wheel" >&2
  exit 1
fi
ln -sf "$real" "$lib/libonnxruntime.so.1"
ln -sf "$real" "$lib/libonnxruntime.so"
echo "$flavour $ORT_VERSION" > "$marker"
echo "installed onnxruntime $ORT_VERSION ($flavour): $lib/libonnxruntime.so -> $real"
