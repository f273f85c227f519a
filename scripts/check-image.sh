#!/usr/bin/env bash
# Checks that the Docker image installs ONNX Runtime and the packaged model set with the same
# code as a host (scripts/setup.sh), so that what the tests run here is what the image runs.
# Reads the Dockerfile (no Docker engine needed) and fails unless:
#
#   - ONNX Runtime is installed by exactly one RUN of scripts/install-onnxruntime.sh, with the
#     build argument ORT_FLAVOUR (declared in the final stage before it, default cpu), and the
#     packaged set by exactly one RUN of scripts/install-packaged-models.sh into its default
#     folder;
#   - nothing else in the Dockerfile fetches ONNX Runtime or model files: no pip install or
#     download, wget, curl with options or a URL, and no mention of onnxruntime, .onnx, .whl
#     or the model packages in any other RUN; no ADD of a URL, no COPY or ADD of .deps/,
#     models/packaged or model files, no COPY --from= anything but a stage of this Dockerfile,
#     no ENV that points the server at another library or model folder than the scripts fill;
#   - every file those scripts need is COPYed, before they run, to the same path relative to the
#     final stage's working directory as in the repository, and that working directory is the
#     one the server runs in (config/default.toml's relative paths then hold);
#   - .dockerignore keeps the host's .deps/ out of the build context and leaves those files in.
#
#   scripts/check-image.sh [DOCKERFILE]   check DOCKERFILE (default: Dockerfile)
#   scripts/check-image.sh --self-test    check that broken copies of the Dockerfile fail
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == --self-test ]]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # Triplets: a name, a sed program that breaks the Dockerfile, what the failure must say.
    cases=(
        pip-onnxruntime
        '/^RUN scripts\/install-onnxruntime.sh/i RUN python3 -m pip install onnxruntime-gpu==1.31.1'
        'fetches ONNX Runtime or models'
        curl-model
        's|^RUN scripts/install-packaged-models.sh|RUN curl -fsSLo models/m.onnx https://example.org/m.onnx \&\& true|'
        'fetches ONNX Runtime or models'
        no-copy-tools
        '/^COPY tools /d'
        'tools/packaged_models.py, which scripts/install-packaged-models.sh needs, is not COPYed'
        copy-after-run
        '/^COPY models\/manifest.toml /d;/^COPY config /a COPY models/manifest.toml ./models/manifest.toml'
        'models/manifest.toml, which scripts/install-packaged-models.sh needs, is not COPYed'
        no-flavour
        's|install-onnxruntime.sh "${ORT_FLAVOUR}"|install-onnxruntime.sh gpu|'
        'must take the build argument'
        copy-deps
        '/^COPY web /a COPY .deps ./.deps'
        'installed files from the build context'
        other-workdir
        '/^COPY config /a WORKDIR /srv'
        'but the server runs in /srv'
    )
    for ((k = 0; k < ${#cases[@]}; k += 3)); do
        name="${cases[k]}" program="${cases[k + 1]}" expect="${cases[k + 2]}"
        sed -e "$program" Dockerfile >"$tmp/$name"
        if cmp -s Dockerfile "$tmp/$name"; then
            echo "check-image self-test: $name did not change the Dockerfile" >&2
            exit 1
        fi
        if out="$("$0" "$tmp/$name" 2>&1)"; then
            echo "check-image self-test: $name passed, but must fail" >&2
            exit 1
        fi
        if [[ "$out" != *"$expect"* ]]; then
            echo "check-image self-test: $name failed without saying \"$expect\":" >&2
            echo "$out" >&2
            exit 1
        fi
    done
    echo "check-image: $((${#cases[@]} / 3)) broken copies of the Dockerfile fail as they should"
    exit 0
fi

exec python3 - "${1:-Dockerfile}" <<'PY'
import fnmatch
import json
import posixpath
import re
import shlex
import sys
import tomllib

dockerfile = sys.argv[1]
ORT = "scripts/install-onnxruntime.sh"
PACKAGED = "scripts/install-packaged-models.sh"
# What each script reads from the repository, besides itself.
NEEDS = {
    ORT: [ORT],
    PACKAGED: [
        PACKAGED,
        "scripts/venv-models.sh",
        "tools/packaged_models.py",
        "tools/requirements-models.txt",
        "models/manifest.toml",
    ],
}
# The converters the manifest runs (`made_with`).
with open("models/manifest.toml", "rb") as f:
    for entry in tomllib.load(f)["packaged"]:
        if "made_with" in entry:
            tool = shlex.split(entry["made_with"])[0]
            if tool not in NEEDS[PACKAGED]:
                NEEDS[PACKAGED].append(tool)

FETCHING = re.compile(
    r"\bpip[0-9.]*\s+(install|download)\b|-m\s+pip\b|\bwget\b|\bcurl\s+-|https?://"
    r"|onnxruntime|\.onnx\b|\.whl\b|\.tflite\b|huggingface|mediapipe|scrfd|insightface"
    r"|buffalo_l|inswapper|models\s+fetch",
    re.IGNORECASE,
)
MODEL_PATHS = re.compile(r"(^|/)\.deps(/|$)|models/packaged|\.onnx\b|\.so(\.|\b)|onnxruntime", re.I)
SERVER_PATH_ENV = re.compile(
    r"ORT_DYLIB_PATH|FACERELAY_MODELS__(ONNXRUNTIME_LIBRARY|PACKAGED_DIR)|LD_LIBRARY_PATH"
)

errors = []


def fail(lineno, message, where=None):
    """A problem at `lineno` of the Dockerfile (0: the whole file), or in the file `where`."""
    place = where or (f"{dockerfile}:{lineno}" if lineno else dockerfile)
    errors.append(f"{place}: {message}")


def instructions(text):
    """(line number, KEYWORD, arguments) per instruction: continuations joined, comments out."""
    out, buf, start = [], "", None
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if start is None:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, rest = buf.partition(" ")
        out.append((start, keyword.upper(), rest.strip()))
        buf, start = "", None
    return out


def run_text(rest):
    if rest.startswith("["):
        try:
            return " ".join(json.loads(rest))
        except ValueError:
            pass
    return rest


def copy_parts(rest):
    """(flags, sources, destination) of COPY/ADD arguments."""
    if rest.startswith("["):
        words = json.loads(rest)
    else:
        words = shlex.split(rest)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1] if paths else ""


def invocations(text, script):
    """Argument lists of each call of `script` in a shell command."""
    calls = []
    for m in re.finditer(r"(?:^|[\s;&|(])(?:\./|/app/)?" + re.escape(script) + r"\b", text):
        tail = re.split(r"&&|\|\||[;|)]", text[m.end():], maxsplit=1)[0]
        calls.append(shlex.split(tail))
    return calls


with open(dockerfile) as f:
    ins = instructions(f.read())

stage_starts = [i for i, (_, k, _) in enumerate(ins) if k == "FROM"]
if not stage_starts:
    sys.exit(f"check-image: {dockerfile}: no FROM")
stage_names = []
for i in stage_starts:
    words = ins[i][2].split()
    if len(words) >= 3 and words[-2].upper() == "AS":
        stage_names.append(words[-1])
final = stage_starts[-1]

calls = {ORT: [], PACKAGED: []}
workdir = "/"
args_declared = {}
copies = []  # (index, repo source, destination resolved) of final-stage COPYs from the context
for i, (n, keyword, rest) in enumerate(ins):
    in_final = i >= final
    if keyword == "FROM":
        workdir, args_declared = "/", {}
        continue
    if keyword == "WORKDIR":
        workdir = posixpath.normpath(posixpath.join(workdir, rest))
    elif keyword == "ARG":
        name, _, default = rest.partition("=")
        args_declared[name.strip()] = default.strip().strip('"')
    elif keyword == "ENV":
        if SERVER_PATH_ENV.search(rest):
            fail(n, "ENV points the server at another library or model folder than the install "
                    "scripts fill: " + rest)
    elif keyword == "RUN":
        text = run_text(rest)
        rest_of_text = text
        for script in calls:
            for argv in invocations(text, script):
                calls[script].append((i, n, argv, in_final, workdir, dict(args_declared)))
            rest_of_text = re.sub(r"\S*" + re.escape(script) + r"(\s+[^\s;&|]+)*", " ", rest_of_text)
        m = FETCHING.search(rest_of_text)
        if m:
            fail(n, f"RUN fetches ONNX Runtime or models other than through {ORT} and "
                    f"{PACKAGED} ({m.group(0)!r}): {text}")
    elif keyword in ("COPY", "ADD"):
        flags, sources, dest = copy_parts(rest)
        external = [f for f in flags if f.startswith("--from=") and f[7:] not in stage_names
                    and not f[7:].isdigit()]
        if external:
            fail(n, f"{keyword} {external[0]}: only stages of this Dockerfile may be copied from")
        if keyword == "ADD" and any(re.match(r"https?://|git@", s) for s in sources):
            fail(n, "ADD of a URL: downloads belong to the install scripts")
        if any(MODEL_PATHS.search(s) for s in sources) and not any(
                f.startswith("--from=") for f in flags):
            fail(n, f"{keyword} of installed files from the build context ({' '.join(sources)}): "
                    "the image installs its own")
        if in_final and not flags:
            dest_abs = posixpath.join(workdir, dest)
            for s in sources:
                copies.append((i, posixpath.normpath(s), dest_abs, dest.endswith("/") or len(sources) > 1))
run_workdir = workdir

for script, expected_args in ((ORT, ["${ORT_FLAVOUR}", "$ORT_FLAVOUR"]), (PACKAGED, None)):
    found = calls[script]
    if len(found) != 1:
        fail(0, f"{script} must be run exactly once (found {len(found)})")
        continue
    i, n, argv, in_final, wd, declared = found[0]
    if not in_final:
        fail(n, f"{script} runs in a build stage, not in the final image")
    if expected_args is None:
        if argv:
            fail(n, f"{script} must install into its default folder (models.packaged_dir), not {argv}")
    else:
        if len(argv) != 1 or argv[0] not in expected_args:
            fail(n, f"{script} must take the build argument: {script} \"${{ORT_FLAVOUR}}\" (got {argv})")
        if declared.get("ORT_FLAVOUR") != "cpu":
            fail(n, "ARG ORT_FLAVOUR=cpu must be declared in the final stage before "
                    f"{script} (found {declared.get('ORT_FLAVOUR')!r})")
    if wd != run_workdir:
        fail(n, f"{script} runs in {wd}, but the server runs in {run_workdir}: the relative "
                "paths of config/default.toml would miss what it installed")
    for need in NEEDS[script]:
        target = posixpath.join(wd, need)
        ok = False
        for j, src, dest, into_dir in copies:
            if j > i:
                continue
            if need == src:
                placed = posixpath.join(dest, posixpath.basename(need)) if into_dir else dest
            elif need.startswith(src + "/") or src == ".":
                placed = posixpath.join(dest, need if src == "." else need[len(src) + 1:])
            else:
                continue
            if posixpath.normpath(placed) == target:
                ok = True
        if not ok:
            fail(n, f"{need}, which {script} needs, is not COPYed to {target} before it runs")

# The build context: the host's .deps/ stays out, what the scripts need stays in.
try:
    with open(".dockerignore") as f:
        ignored = [l.strip() for l in f if l.strip() and not l.startswith("#")]
except FileNotFoundError:
    ignored = []
if not any(p.strip("/") == ".deps" for p in ignored):
    fail(0, "must exclude .deps (the image installs its own ONNX Runtime)", ".dockerignore")
for need in sorted({p for ps in NEEDS.values() for p in ps}):
    for p in ignored:
        p = p.strip("/")
        if fnmatch.fnmatch(need, p) or need.startswith(p + "/"):
            fail(0, f"pattern {p!r} leaves out {need}, which an install script needs", ".dockerignore")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(f"check-image: {len(errors)} problem(s)")
print(f"check-image: {dockerfile}: ONNX Runtime and the packaged models come only from "
      f"{ORT} and {PACKAGED}, with everything they need COPYed first")
PY
