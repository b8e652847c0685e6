#!/usr/bin/env bash
# Runs every test suite: cargo (unit, property, integration), clippy, the C++ tests
# (ctest), and pytest against the built extension. Builds whatever is missing first.
# `.ci/run` calls exactly this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$(bash dev/venv.sh)"
# This checkout's python/ first, whatever checkout the shared venv's .pth names.
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$venv/bin:$PATH"

echo "== cargo test"
cargo test --release --workspace
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings

echo "== build (extension, C++ tests)"
bash dev/build.sh

echo "== ctest"
ctest --test-dir build --output-on-failure

echo "== pytest"
"$venv/bin/python" -m pytest -q tests "$@"
