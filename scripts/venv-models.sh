#!/usr/bin/env bash
# Makes the git-ignored venv .deps/venv-models hold the pinned packages of each REQUIREMENTS
# file given (tools/requirements-*.txt), creating it on first use.
#
#   scripts/venv-models.sh REQUIREMENTS...
#
# Idempotent: a file already installed unchanged (a copy is kept in the venv) is skipped, so
# this costs nothing when everything is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.deps/venv-models"

todo=()
for req in "$@"; do
    cmp -s "$req" "$venv/pinned/$(basename "$req")" || todo+=("$req")
done
[[ ${#todo[@]} -eq 0 ]] && exit 0

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
args=()
for req in "$@"; do args+=(-r "$req"); done  # all together, so pip checks they agree
echo "venv-models: installing ${todo[*]#"$root/"} into ${venv#"$root/"}"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${args[@]}"
mkdir -p "$venv/pinned"
cp "${todo[@]}" "$venv/pinned/"
