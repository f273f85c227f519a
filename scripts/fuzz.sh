#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/, docs/fuzzing.md) for SECONDS each (default 60): libFuzzer
# through cargo fuzz, on the installed stable toolchain, with no sanitizer; facerelay's code
# with debug assertions and overflow checks (fuzz/Cargo.toml). A panic, a crash, or a run past 2 GiB of memory fails the script;
# the input that did it is kept in fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Inputs the fuzzer finds go to fuzz/corpus/TARGET/ (not committed); the committed seeds are
# fuzz/seeds/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
# Stable rustc: no sanitizer (it needs nightly flags). facerelay has no `unsafe`; bounds
# checks, overflow checks and debug assertions turn its faults into panics.
flags=(--sanitizer none --release)
echo "fuzz: building ${#targets[@]} targets"
cargo fuzz build "${flags[@]}" 2>&1 | grep -E '^(error|warning: unused)|Finished' || true

failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" fuzz/logs
    log="fuzz/logs/$t.log"
    # Images may be large; everything else is small.
    max_len=16384
    [ "$t" = face_image ] || [ "$t" = container ] && max_len=262144
    if cargo fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len="$max_len" \
        -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
        corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
        echo "fuzz: $t: $runs runs in ${seconds} s, $corpus inputs in its corpus, no failure"
    else
        failed=1
        echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/; the end of $log:"
        tail -40 "$log"
    fi
done
exit "$failed"
