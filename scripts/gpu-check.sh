#!/usr/bin/env bash
# The GPU check in one command, on a machine with an NVIDIA GPU: measures the deep swapper on the
# GPU and writes every figure (JSON) and a summary into OUT_DIR.
#
#   scripts/gpu-check.sh OUT_DIR
#
# Steps: the GPU and driver (nvidia-smi); the GPU build of ONNX Runtime (ORT_GPU_DIR, or
# scripts/install-onnxruntime.sh gpu); a probe that the CUDA execution provider registers, which
# ends the check (exit 3, "REFUSED" in summary.txt and summary.json) when it does not: nothing is
# ever measured on the CPU in its place; the benchmark models (scripts/gen-bench-models.sh, or
# BENCH_MODELS=DIR made elsewhere); `facerelay bench swap` on `cuda` and `tensorrt`; `facerelay
# bench live` with the benchmark models for GPU_CHECK_SESSIONS sessions at 640x480@30, with the
# GPU's memory sampled every second; then the largest session count that held 30 fps with a p95
# server-added latency under 50 ms.
#
# Environment:
#   ORT_GPU_DIR          folder holding libonnxruntime.so with its CUDA provider and CUDA
#                        libraries (a machine that reaches no package registry); default:
#                        scripts/install-onnxruntime.sh gpu into .deps/onnxruntime
#   BENCH_MODELS         folder of the benchmark models; default: made into OUT_DIR/bench-models
#   GPU_CHECK_SESSIONS   default 1,8,16,32,48,64
#   GPU_CHECK_SECONDS    measured seconds per session count, default 10
#   GPU_CHECK_FRAMES     frames per size for bench swap, default 100
#   FACERELAY            the facerelay binary, default target/release/facerelay (built if missing)
#   GPU_CHECK_REHEARSAL  1: check the script itself on a machine without a GPU: every step runs
#                        on the CPU with the stand-in models of models/fixtures (no install, no
#                        probe); summary.json says "rehearsal": true, and its figures are no GPU
#                        figures
#
# Not measured yet: fp16 variants and dynamic-batch variants of the real files (`facerelay models
# prepare` is not built); summary.txt says so.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: scripts/gpu-check.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rehearsal="${GPU_CHECK_REHEARSAL:-0}"
sessions="${GPU_CHECK_SESSIONS:-1,8,16,32,48,64}"
seconds="${GPU_CHECK_SECONDS:-10}"
frames="${GPU_CHECK_FRAMES:-100}"
log="$out/log.txt"
: >"$log"
say() { echo "gpu-check: $*" | tee -a "$log"; }
started=$(date +%s)

# Ends the check without a measurement: the reason goes to summary.txt and summary.json.
refuse() {
    say "REFUSED: $1"
    printf 'REFUSED: %s\n' "$1" >"$out/summary.txt"
    python3 -c 'import json, sys; print(json.dumps({"refused": sys.argv[1]}))' "$1" >"$out/summary.json"
    exit 3
}

facerelay="${FACERELAY:-$root/target/release/facerelay}"
if [[ ! -x "$facerelay" ]]; then
    say "building facerelay"
    (cd "$root" && cargo build --release --locked --bin facerelay) >>"$log" 2>&1
fi

# 1. The GPU and its driver.
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/gpu.txt" 2>>"$log" || true
    say "GPU: $(head -n1 "$out/gpu.txt")"
else
    echo "nvidia-smi: not found" >"$out/gpu.txt"
    say "nvidia-smi not found (no NVIDIA driver here)"
fi

# 2. The GPU build of ONNX Runtime.
if [[ "$rehearsal" == 1 ]]; then
    say "REHEARSAL: everything on the CPU with the stand-in models; no figure here is a GPU figure"
    providers=(cpu)
    live_ep=cpu
    lib="$root/.deps/onnxruntime/lib/libonnxruntime.so"
elif [[ -n "${ORT_GPU_DIR:-}" ]]; then
    lib="$ORT_GPU_DIR/libonnxruntime.so"
else
    say "installing the GPU build of ONNX Runtime (scripts/install-onnxruntime.sh gpu)"
    "$root/scripts/install-onnxruntime.sh" gpu >>"$log" 2>&1 || refuse "the GPU build of ONNX Runtime could not be installed (see log.txt)"
    lib="$root/.deps/onnxruntime/lib/libonnxruntime.so"
fi
[[ -e "$lib" ]] || refuse "no ONNX Runtime library at $lib"
export FACERELAY_MODELS__ONNXRUNTIME_LIBRARY="$lib"

# 3. The CUDA provider must register: a one-frame swap of the stand-in models on it. facerelay
#    never falls back to the CPU; its refusal is the check's.
if [[ "$rehearsal" != 1 ]]; then
    providers=(cuda tensorrt)
    live_ep=cuda
    say "probe: the CUDA execution provider"
    if ! probe=$(cd "$root" && FACERELAY_MODELS__PROVIDER=cuda "$facerelay" bench swap --fixtures --frames 1 2>&1); then
        echo "$probe" >>"$log"
        refuse "the CUDA execution provider did not register: $(echo "$probe" | grep -m1 -i 'provider\|error' || echo "$probe" | tail -n1)"
    fi
fi

# 4. The benchmark models (the architecture and cost of the public files, random weights).
if [[ "$rehearsal" == 1 ]]; then
    models="$root/models/fixtures"
else
    models="${BENCH_MODELS:-$out/bench-models}"
fi
if [[ "$rehearsal" != 1 && -z "${BENCH_MODELS:-}" ]]; then
    say "generating the benchmark models into $models"
    "$root/scripts/gen-bench-models.sh" "$models" >>"$log" 2>&1 || refuse "the benchmark models could not be made (see log.txt)"
fi

# The GPU's memory, every second, while the measurements run.
memory_pid=""
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -l 1 >"$out/gpu-memory.csv" 2>/dev/null &
    memory_pid=$!
fi
trap '[[ -n "$memory_pid" ]] && kill "$memory_pid" 2>/dev/null || true' EXIT

# 5. Per-stage times of one face on each GPU provider.
for provider in "${providers[@]}"; do
    say "bench swap on $provider"
    if (cd "$root" && FACERELAY_MODELS__PROVIDER=$provider FACERELAY_MODELS__DIR="$models" \
        "$facerelay" bench swap --frames "$frames") >"$out/swap-$provider.txt" 2>>"$log"; then
        sed -n '/^\[/,$p' "$out/swap-$provider.txt" >"$out/swap-$provider.json"
    else
        say "bench swap on $provider failed (see log.txt)"
    fi
done

# 6. Live sessions through decode, swap and encode.
say "bench live on $live_ep: sessions $sessions, $seconds s each"
(cd "$root" && "$facerelay" bench live --ep "$live_ep" --models "$models" --sessions "$sessions" \
    --seconds "$seconds" --resolution 640x480 --fps 30) >"$out/live.txt" 2>>"$log" \
    || say "bench live failed (see log.txt)"
tail -n1 "$out/live.txt" | grep '^\[' >"$out/live.json" || true

# 7. The summary.
python3 - "$out" "$started" "$rehearsal" "${providers[@]}" <<'PY'
import json, pathlib, sys, time
out, started, rehearsal, providers = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
live = load("live.json") or []
held = [r["sessions"] for r in live if r["fps_median"] >= 29.5 and r["latency_ms"]["p95"] < 50.0]
memory = []
try:
    for line in (out / "gpu-memory.csv").read_text().splitlines():
        memory.append(float(line.split(",")[-1]))
except (OSError, ValueError):
    pass
summary = {
    "rehearsal": rehearsal,
    "gpu": (out / "gpu.txt").read_text().strip(),
    "swap": {p: load(f"swap-{p}.json") for p in providers},
    "live": live,
    "largest_sessions_at_30fps_p95_under_50ms": max(held) if held else None,
    "swapper_batches": {r["sessions"]: r["swapper_batches"] for r in live},
    "gpu_memory_max_mib": max(memory) if memory else None,
    "not_measured": "fp16 and dynamic-batch variants of the real files (facerelay models prepare is not built)",
    "seconds": int(time.time()) - started,
}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
lines = ["REHEARSAL on the CPU with the stand-in models: these are no GPU figures"] if rehearsal else []
lines.append(f"GPU: {summary['gpu']}")
for p, runs in summary["swap"].items():
    if runs:
        lines.append(f"bench swap {p}: " + ", ".join(f"{r['width']}x{r['height']} {r['median_ms']['total']} ms/frame (swapper {r['median_ms']['swap_run']} ms)" for r in runs))
    else:
        lines.append(f"bench swap {p}: no figures (see log.txt)")
for r in live:
    lines.append(f"live {r['sessions']:>3} sessions: fps median {r['fps_median']}, p95 {r['latency_ms']['p95']} ms, swapped {r['swapped_share']:.0%}, swapper batches {r['swapper_batches']}")
lines.append(f"largest N at 30 fps with p95 < 50 ms: {summary['largest_sessions_at_30fps_p95_under_50ms']}")
lines.append(f"GPU memory, most used: {summary['gpu_memory_max_mib']} MiB")
lines.append(f"not measured: {summary['not_measured']}")
lines.append(f"took {summary['seconds']} s")
(out / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
