#!/usr/bin/env bash
# Everything the GPU machine does, in one call (it has torch, nvcc, cmake, ninja, pytest,
# tensorstore; no cargo, no network). Carried: .carry/rust (the staticlib, xz, and the cxx
# headers: `bash dev/carry-rust.sh`, strip, xz) and .whl (nvCOMP, zarr-python, numcodecs, ...).
# Stages run even when an earlier one fails; results and logs go to $OUT.
#   STAGES="build kernels pytest example sanitize bench" (default: all)
set -uo pipefail
OUT="${OUT:-/tmp/damacy-out}"
mkdir -p "$OUT"
STAGES="${STAGES:-build kernels pytest example sanitize bench}"
BENCH_ARGS="${BENCH_ARGS:---quick}"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
nproc | sed 's/^/cpus: /' | tee -a "$OUT/summary.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="$PWD/python:/tmp/site"
export PYTHONUNBUFFERED=1

if has build; then
  log "build"
  [ -f .carry/rust/libdamacy.a ] || xz -dk .carry/rust/libdamacy.a.xz
  t0=$SECONDS
  {
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDAMACY_PYTHON="$(command -v python3)" \
      -DDAMACY_RUST_LIB="$PWD/.carry/rust/libdamacy.a" -DDAMACY_RUST_INCLUDE="$PWD/.carry/rust/include" \
      -DDAMACY_TORCH_MODE=IMPORTED -DDAMACY_CUDA=ON -DDAMACY_BUILD_TESTS=ON \
      && cmake --build build-gpu -j 16 \
      && cmake -S cpp/src/cuda -B build-gpu/kernels -G Ninja -DDAMACY_PYTHON="$(command -v python3)" \
           -DDAMACY_BRIDGE_INCLUDE="$PWD/.carry/rust/include" \
      && cmake --build build-gpu/kernels -j 16
  } > "$OUT/build.txt" 2>&1
  log "build rc=$? in $((SECONDS - t0)) s"; tail -5 "$OUT/build.txt"
  export DAMACY_LIBRARY="$PWD/build-gpu/libdamacy_torch.so"
  python3 -c "import damacy; print(damacy.gpu_info())" 2>&1 | tee -a "$OUT/summary.txt"
fi
export DAMACY_LIBRARY="$PWD/build-gpu/libdamacy_torch.so"

if has kernels; then
  log "kernels_test"
  build-gpu/kernels/damacy_kernels_test --bench > "$OUT/kernels.txt" 2>&1
  log "kernels_test rc=$?"; tail -15 "$OUT/kernels.txt" | tee -a "$OUT/summary.txt"
fi

if has pytest; then
  log "pytest (GPU + differential + errors + pipeline)"
  timeout 420 python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu.py tests/test_differential.py \
    tests/test_errors.py tests/test_pipeline.py tests/test_data.py > "$OUT/pytest.txt" 2>&1
  log "pytest rc=$?"; tail -5 "$OUT/pytest.txt" | tee -a "$OUT/summary.txt"
fi

if has example; then
  log "examples/train_segmentation.py --device cuda"
  timeout 200 python3 examples/train_segmentation.py --device cuda --steps 40 --workdir /tmp/damacy-seg > "$OUT/example.txt" 2>&1
  log "example rc=$?"; tail -4 "$OUT/example.txt" | tee -a "$OUT/summary.txt"
fi

if has sanitize; then
  log "compute-sanitizer memcheck on the GPU tests"
  timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 --target-processes all \
    python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu.py -k "not memory_growth" > "$OUT/sanitizer.txt" 2>&1
  log "memcheck rc=$?"; grep -E "ERROR SUMMARY|passed|failed" "$OUT/sanitizer.txt" | tail -3 | tee -a "$OUT/summary.txt"
fi

if has bench; then
  log "bench_gpu $BENCH_ARGS"
  # shellcheck disable=SC2086
  timeout 540 python3 bench/bench_gpu.py $BENCH_ARGS --out "$OUT/bench_gpu.json" > "$OUT/bench.txt" 2>&1
  log "bench rc=$?"; tail -25 "$OUT/bench.txt" | tee -a "$OUT/summary.txt"
fi
log "done"
