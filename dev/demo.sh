#!/usr/bin/env bash
# From a fresh clone: set everything up (venv with torch, cmake, ninja; Rust staticlib; C++
# extension; Python package) and run the main job: `python -m damacy demo`, which writes an
# example volume if absent and streams random crops as torch tensors, printing samples/s.
# Extra arguments go to the demo (e.g. --device cuda:0, --batches 200).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash dev/build.sh
venv="$(bash dev/venv.sh)"
PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m damacy demo "$@"
