#!/usr/bin/env bash
# Installs the packaged model set (models/README.md, "Packaged set") into DIR, default
# models/packaged/ (git-ignored): insightface's SCRFD detector and its test photos from the PyPI
# sdist `scrfd`, MediaPipe's BlazeFace detector and 468-point face mesh (converted to ONNX by
# tools/convert_tflite.py) and the mesh topology (tools/mesh_topology.py) from the PyPI wheel
# `mediapipe`. Needs nothing but PyPI.
#
#   scripts/install-packaged-models.sh [DIR]
#
# Idempotent: when every file in DIR has the size and sha256 of its [[packaged]] entry in
# models/manifest.toml it only says so. Otherwise it builds the whole set in a temporary folder,
# checks every file against the manifest and fails loudly on a mismatch (DIR is left as it was),
# then replaces DIR with it. Prints one line per file. The converters run in .deps/venv-models
# (pinned packages of tools/requirements-models.txt, set up on first use); the downloaded
# archives are kept in .deps/packaged-sources/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

case "${1:-}" in
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "usage: $0 [DIR]" >&2; exit 2 ;;
esac
dir="${1:-$root/models/packaged}"

# The check needs only the standard library: no venv when there is nothing to do.
if python3 "$root/tools/packaged_models.py" --check "$dir" >/dev/null 2>&1; then
    exec python3 "$root/tools/packaged_models.py" "$dir"
fi
"$root/scripts/venv-models.sh" "$root/tools/requirements-models.txt"
exec "$root/.deps/venv-models/bin/python" "$root/tools/packaged_models.py" "$dir"
