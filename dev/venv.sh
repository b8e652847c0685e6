#!/usr/bin/env bash
# Creates (once) and prints the path of the project venv: ~/.cache/damacy/venv-<hash of
# requirements-dev.txt's requirement lines (comments and blank lines do not count, so editing
# a comment does not make a new venv)>. CI clones afresh each time; the venv outlives the clone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/requirements-dev.txt"
key="$(sed -e 's/[[:space:]]*#.*$//' -e '/^[[:space:]]*$/d' "$req" | sha256sum | cut -c1-16)"
venv="${DAMACY_VENV:-$HOME/.cache/damacy/venv-$key}"
if [ ! -f "$venv/.complete" ]; then
  echo "damacy: creating venv $venv (first run: downloads torch, ~3 GB)" >&2
  py="${PYTHON:-python3}"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$req" >&2
  touch "$venv/.complete"
fi
echo "$venv"
