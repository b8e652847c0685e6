#!/usr/bin/env bash
# Development build from a fresh clone, incremental when re-run:
#   venv (dev/venv.sh) -> cargo build --release -> cmake configure + build into build/ ->
#   `import damacy` works in that venv from any directory.
# Env: JOBS (default: nproc, at most 2 here), DAMACY_BUILD_DIR (default build),
#      DAMACY_CMAKE_ARGS (extra configure arguments), DAMACY_PRESET (a CMakePresets.json
#      configure preset instead of the one picked below).
#
# How `import damacy` finds this checkout: a `damacy-dev.pth` in the venv's site-packages
# names <repo>/python (the venv is shared by every checkout using it: the last build wins),
# and python/damacy/libdamacy_torch.so is a symlink into the build folder (gitignored).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$(date +%s%N)

venv="$(bash dev/venv.sh)"
py="$venv/bin/python"
export PATH="$venv/bin:$PATH"  # cmake, ninja from the venv
jobs="${JOBS:-$(nproc)}"
build="${DAMACY_BUILD_DIR:-build}"

echo "== cargo build --release -p damacy" >&2
cargo build --release -p damacy -j "$jobs"

# The configure preset (CMakePresets.json): a system nvcc if there is one ("cuda"), else the
# venv's PyPI nvcc (nvidia-cuda-nvcc, CUDA 13: "ci-cuda-compile"), so the CUDA build compiles
# here and in CI though nothing runs it; no nvcc at all, or DAMACY_CUDA=OFF: "cpu".
# DAMACY_PRESET picks one outright.
export DAMACY_PYTHON="$py"
DAMACY_TORCH_PREFIX="$("$py" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
DAMACY_CU13="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
export DAMACY_TORCH_PREFIX DAMACY_CU13
if [ -n "${DAMACY_PRESET:-}" ]; then
  preset="$DAMACY_PRESET"
elif [ "${DAMACY_CUDA:-AUTO}" = "OFF" ]; then
  preset=cpu
elif command -v nvcc >/dev/null 2>&1; then
  preset=cuda
elif [ -x "$DAMACY_CU13/bin/nvcc" ]; then
  preset=ci-cuda-compile
else
  preset=cpu
fi

echo "== cmake configure ($build, preset $preset)" >&2
# shellcheck disable=SC2086
cmake --preset "$preset" -B "$build" ${DAMACY_CMAKE_ARGS:-} >/dev/null

echo "== cmake build" >&2
cmake --build "$build" -j "$jobs"

# The CMake package (find_package(damacy CONFIG)) for C++ consumers; `python -m damacy
# --cmake-prefix` prints this prefix for the default build folder.
echo "== cmake install ($build/install)" >&2
cmake --install "$build" --prefix "$root/$build/install" >/dev/null

# Make `import damacy` work from anywhere in the venv.
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$root/python" > "$site/damacy-dev.pth"
ln -sfn "$root/$build/libdamacy_torch.so" "$root/python/damacy/libdamacy_torch.so"

ms=$(( ($(date +%s%N) - t0) / 1000000 ))
printf 'damacy: built in %d.%d s: %s\n  venv %s\n  tests: ctest --test-dir %s\n  CMake package: %s\n' \
  $((ms / 1000)) $((ms % 1000 / 100)) "$root/$build/libdamacy_torch.so" "$venv" "$build" "$root/$build/install"
