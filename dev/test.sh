#!/usr/bin/env bash
# Runs every test suite: the layering check, cargo (unit, property, integration), clippy, the concurrency tests
# under ThreadSanitizer (dev/tsan.sh), every fuzz target briefly (dev/fuzz.sh), the C++ tests
# (ctest), and pytest against the built extension (including the downstream CMake consumer). Builds whatever is missing first.
# `.ci/run` calls exactly this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$(bash dev/venv.sh)"
# This checkout's python/ first, whatever checkout the shared venv's .pth names.
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$venv/bin:$PATH"
# moto's S3 server for the object store tests (rust/tests/remote.rs, tests/test_remote.py).
bash dev/remote-servers.sh "$venv"
export DAMACY_PYTHON="$venv/bin/python"  # the python rust/tests/remote.rs starts the servers with

echo "== layering (dev/layers.py: one-way module graph, rules in dev/layers.md)"
python3 dev/layers.py

echo "== cargo test"
cargo test --release --workspace
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings

echo "== ThreadSanitizer (prefetcher, stress, device staging; installs nightly when missing)"
bash dev/tsan.sh

# Every fuzz target for 20 s from the committed corpora (about 2 min plus the build; fails
# on a crash, and under CI when nightly or cargo-fuzz cannot be installed).
echo "== fuzz (rust/fuzz: every target, 20 s each)"
bash dev/fuzz.sh

echo "== build (extension, C++ tests)"
bash dev/build.sh

echo "== ctest"
ctest --test-dir build --output-on-failure

# tests/test_install.py is in here too: `pip wheel .` with build isolation in a fresh venv
# that sees only torch (slow: reuses target/ via DAMACY_CARGO_TARGET_DIR, compiles the
# extension in build-wheel/; `-m "not slow"` skips it), and the no-cargo/no-torch messages.
# tests/test_downstream.py is in here: it configures, builds and runs examples/downstream and
# the docs/cpp.md quick start against the installed CMake package (build/install, made by
# dev/build.sh) and compares their checksums with the Python API's.
# PYTHONPATH: this checkout's package, whatever the shared venv's damacy-dev.pth names (the
# last dev/build.sh of any checkout using the venv writes it).
echo "== pytest"
PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}" "$venv/bin/python" -m pytest -q tests "$@"
