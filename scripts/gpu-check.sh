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
# BENCH_MODELS=DIR made elsewhere) and their prepared variants (`facerelay models prepare
# --fp16`: dynamic batch, float16); `facerelay bench swap` on `cuda` and `tensorrt`, at fp32 (the
# file itself) and fp16 (the prepared variant); `facerelay bench live` with the benchmark models
# for GPU_CHECK_SESSIONS sessions at 640x480@30, as the file is (batch 1, fp32) and prepared
# (batched, fp16), with the GPU's memory sampled every second; then the largest session count
# that held 30 fps with a p95 server-added latency under 50 ms.
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
# `models prepare` needs its Python packages (tools/requirements-prepare.txt) in
# .deps/venv-models; where they cannot be installed the check goes on without the prepared runs
# and summary.txt says so.
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
    # A copy: prepare writes beside the files.
    models="$out/rehearsal-models"
    mkdir -p "$models"
    cp "$root"/models/fixtures/{det_10g,w600k_r50,inswapper_128}.onnx "$models/"
else
    models="${BENCH_MODELS:-$out/bench-models}"
fi
if [[ "$rehearsal" != 1 && -z "${BENCH_MODELS:-}" ]]; then
    say "generating the benchmark models into $models"
    "$root/scripts/gen-bench-models.sh" "$models" >>"$log" 2>&1 || refuse "the benchmark models could not be made (see log.txt)"
fi

say "models prepare --fp16 (dynamic batch, float16)"
prepared=1
(cd "$root" && FACERELAY_MODELS__DIR="$models" "$facerelay" models prepare --fp16) >>"$log" 2>&1 || {
    prepared=0
    say "models prepare failed (see log.txt): no fp16 or batched runs"
}

# The GPU's memory, every second, while the measurements run.
memory_pid=""
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -l 1 >"$out/gpu-memory.csv" 2>/dev/null &
    memory_pid=$!
fi
trap '[[ -n "$memory_pid" ]] && kill "$memory_pid" 2>/dev/null || true' EXIT

# 5. Per-stage times of one face on each GPU provider.
# The file itself (fp32), and prepared: the variant the server runs, fp16 on the GPU providers
# (the batch variant on the CPU of a rehearsal).
variants=(file)
[[ "$prepared" == 1 ]] && variants+=(prepared)
for provider in "${providers[@]}"; do
    for variant in "${variants[@]}"; do
        run="swap-$provider-$variant"
        use=$([[ "$variant" == prepared ]] && echo true || echo false)
        say "bench swap on $provider, $variant"
        if (cd "$root" && FACERELAY_MODELS__PROVIDER=$provider FACERELAY_MODELS__DIR="$models" \
            FACERELAY_MODELS__PREPARED=$use "$facerelay" bench swap --frames "$frames") \
            >"$out/$run.txt" 2>>"$log"; then
            sed -n '/^\[/,$p' "$out/$run.txt" >"$out/$run.json"
        else
            say "bench swap on $provider, $variant failed (see log.txt)"
        fi
    done
done

# 6. Live sessions through decode, swap and encode.
# As the file is (one face per run), then prepared (batched across streams; fp16 on the GPU).
for variant in "${variants[@]}"; do
    use=$([[ "$variant" == prepared ]] && echo true || echo false)
    say "bench live on $live_ep, $variant: sessions $sessions, $seconds s each"
    (cd "$root" && FACERELAY_MODELS__PREPARED=$use "$facerelay" bench live --ep "$live_ep" \
        --models "$models" --sessions "$sessions" --seconds "$seconds" --resolution 640x480 \
        --fps 30) >"$out/live-$variant.txt" 2>>"$log" || say "bench live ($variant) failed (see log.txt)"
    tail -n1 "$out/live-$variant.txt" | grep '^\[' >"$out/live-$variant.json" || true
done

# 7. The summary.
python3 - "$out" "$started" "$rehearsal" "$prepared" "${providers[@]}" <<'PY'
import json, pathlib, sys, time
out, started = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rehearsal, prepared, providers = sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5:]
def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
lives = {v: load(f"live-{v}.json") or [] for v in ("file", "prepared")}
def largest(runs):
    held = [r["sessions"] for r in runs if r["fps_median"] >= 29.5 and r["latency_ms"]["p95"] < 50.0]
    return max(held) if held else None
memory = []
try:
    for line in (out / "gpu-memory.csv").read_text().splitlines():
        memory.append(float(line.split(",")[-1]))
except (OSError, ValueError):
    pass
summary = {
    "rehearsal": rehearsal,
    "gpu": (out / "gpu.txt").read_text().strip(),
    "swap": {f"{p}-{q}": load(f"swap-{p}-{q}.json") for p in providers for q in ("file", "prepared")},
    "live": lives,
    "largest_sessions_at_30fps_p95_under_50ms": {v: largest(runs) for v, runs in lives.items()},
    "batches": {v: {r["sessions"]: {"detector": r["detector_batches"], "swapper": r["swapper_batches"]}
                    for r in runs} for v, runs in lives.items()},
    "gpu_memory_max_mib": max(memory) if memory else None,
    "not_measured": None if prepared else "the prepared variants (models prepare failed: see log.txt)",
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
for v, runs in lives.items():
    for r in runs:
        lines.append(f"live ({v}) {r['sessions']:>3} sessions: fps median {r['fps_median']}, p95 {r['latency_ms']['p95']} ms, swapped {r['swapped_share']:.0%}, runs by batch size: detector {r['detector_batches']}, swapper {r['swapper_batches']}")
    if runs:
        lines.append(f"largest N at 30 fps with p95 < 50 ms ({v}): {largest(runs)}")
lines.append(f"GPU memory, most used: {summary['gpu_memory_max_mib']} MiB")
if summary["not_measured"]:
    lines.append(f"not measured: {summary['not_measured']}")
lines.append(f"took {summary['seconds']} s")
(out / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
