#!/usr/bin/env bash
# Runs the integration and browser tests (the tests/it binary) N times in a row, as the test
# command runs them, and reports each run's duration and failures, then how many runs were
# green. With --load, `stress-ng --cpu 2` keeps both cores busy the whole time (Debian's
# stress-ng, installed when missing). Run `scripts/setup.sh test` first. The last line is the
# count; the runs' figures also go to target/steadiness.json, and run i's output to
# target/steadiness-run-i.log.
#
#   scripts/steadiness.sh [--load] [N]     N runs, 10 by default
set -euo pipefail
cd "$(dirname "$0")/.."
load=0
[ "${1:-}" = --load ] && { load=1; shift; }
runs="${1:-10}"
export RUST_BACKTRACE=0

if [ "$load" = 1 ] && ! command -v stress-ng >/dev/null; then
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends stress-ng >/dev/null
fi
cargo nextest run --cargo-profile tests --no-default-features --locked --no-run
stress=""
if [ "$load" = 1 ]; then
    stress-ng --cpu 2 --quiet &
    stress=$!
    trap 'kill "$stress" 2>/dev/null || true' EXIT
fi

results=()
green=0
for i in $(seq 1 "$runs"); do
    start=$SECONDS
    rc=0
    # A run that fails before writing its report must not be read as the last run's report.
    rm -f target/nextest/default/junit.xml
    cargo nextest run --cargo-profile tests --no-default-features --locked --no-fail-fast -E 'kind(test)' \
        >"target/steadiness-run-$i.log" 2>&1 || rc=$?
    took=$((SECONDS - start))
    failed=$(python3 - target/nextest/default/junit.xml <<'PY'
import json, sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as e:
    print(json.dumps({"tests": 0, "failed": ["(no report: %s)" % e]}))
    sys.exit()
cases = list(root.iter("testcase"))
bad = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
print(json.dumps({"tests": len(cases), "failed": bad}))
PY
)
    [ "$rc" = 0 ] && green=$((green + 1))
    echo "steadiness: run $i of $runs: ${took} s, exit $rc, $failed"
    results+=("{\"run\": $i, \"seconds\": $took, \"exit\": $rc, \"result\": $failed}")
done
printf '{"load": %s, "runs": [%s]}\n' "$([ "$load" = 1 ] && echo true || echo false)" \
    "$(IFS=,; echo "${results[*]}")" >target/steadiness.json
echo "steadiness: $green of $runs runs green$([ "$load" = 1 ] && echo ', both cores loaded by stress-ng --cpu 2')"
[ "$green" = "$runs" ]
