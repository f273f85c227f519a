#!/usr/bin/env bash
# Writes the benchmark models (random weights, the architecture and compute cost of
# inswapper_128.onnx and det_10g.onnx; see models/README.md, "Benchmark models") into DIR
# (default models/bench/, git-ignored), plus a copy of the stand-in recognizer so that DIR is a
# complete models folder for `facerelay bench swap`.
#
#   scripts/gen-bench-models.sh [--force] [DIR]
#   FACERELAY_MODELS__DIR=models/bench target/release/facerelay bench swap --frames 3
#
# Idempotent: files that exist are kept unless --force. The generator runs in .deps/venv-models
# (onnx, numpy: tools/requirements-models.txt), set up on first use. About 15 s and 3 GB of
# memory; the swapper file is about 554 MB.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

force=()
dir=""
for arg in "$@"; do
    case "$arg" in
        --force) force=(--force) ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "usage: $0 [--force] [DIR]" >&2; exit 2 ;;
        *) dir="$arg" ;;
    esac
done
dir="${dir:-$root/models/bench}"

files=(inswapper_128.onnx det_10g.onnx w600k_r50.onnx)
if [[ ${#force[@]} -eq 0 ]]; then
    all=1
    for f in "${files[@]}"; do [[ -s "$dir/$f" ]] || all=0; done
    if [[ $all -eq 1 ]]; then
        echo "benchmark models already in $dir (--force to rewrite)"
        exit 0
    fi
fi

"$root/scripts/venv-models.sh" "$root/tools/requirements-models.txt"
exec "$root/.deps/venv-models/bin/python" "$root/tools/gen_bench_models.py" --out "$dir" "${force[@]}"
