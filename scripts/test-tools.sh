#!/usr/bin/env bash
# Tests the Python tools (tools/tests): the TFLite->ONNX conversion against MediaPipe's original
# models run by LiteRT, on faces cut from the packaged photos, that the packaged set is rebuilt
# byte for byte, and `facerelay models prepare` on the benchmark models. Installs the packaged
# set and the pinned test packages (tools/requirements-test.txt and requirements-prepare.txt,
# into .deps/venv-models) first. Extra arguments go to pytest.
#
#   scripts/test-tools.sh [PYTEST-ARGS...]
#
# FACERELAY_PACKAGED_DIR selects the set to test (default models/packaged).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${FACERELAY_PACKAGED_DIR:-$root/models/packaged}"

"$root/scripts/install-packaged-models.sh" "$dir"
"$root/scripts/venv-models.sh" "$root/tools/requirements-models.txt" "$root/tools/requirements-test.txt" \
    "$root/tools/requirements-prepare.txt"
cd "$root"
FACERELAY_PACKAGED_DIR="$dir" exec .deps/venv-models/bin/python -m pytest -p no:cacheprovider tools/tests "$@"
