#!/usr/bin/env bash
# Everything the GPU machine does, in one call (it has torch, nvcc, cmake, ninja, pytest,
# tensorstore; no cargo, no network). Carried: .carry/rust (the staticlib, xz, and the cxx
# headers: `bash dev/carry-rust.sh`, strip, xz) and .whl (nvCOMP, zarr-python, numcodecs, moto...:
# `bash dev/gpu/fetch_wheels.sh core nvcomp5`, or `moto nvcomp6` for a second call).
# Stages run even when an earlier one fails; results and logs go to $OUT.
#   STAGES="build kernels nvcomp5 nvcomp6 pytest hostile example sanitize bench pipwheel" (default: all)
#   pipwheel: `pip wheel .` with build isolation, as a user (issue 13): the backend must find
#   this machine's torch and nvcc and build CUDA; needs .whl/scikit_build_core-*.whl and
#   pathspec-*.whl (no network here: the isolated build env installs from .whl), the
#   carried staticlib stands in for cargo. The installed wheel then runs tests/test_gpu.py.
#   opt-in: "benchall" (bench/bench_all.py --device ${BENCHALL_DEVICE:-cuda}, BENCHALL_ARGS, T_BENCHALL)
#   T_PYTEST, T_HOSTILE, T_SANITIZE, T_BENCH: time limits of those stages, in seconds
#   PYTEST_FILES: the files the pytest stage runs (default: the GPU, differential, errors,
#   pipeline, data and v2/NGFF suites)
#   opt-in: "kernsan" (compute-sanitizer memcheck and racecheck on damacy_kernels_test
#   --cases 4, after "build"; T_KERNSAN per tool, default 300 s)
#   opt-in: "profile" (dev/gpu/profile_fused.py: kernels' device time per batch, Augment fused /
#   on batch / off, batches of 8 and 32)
#   opt-in: "augment" (issue 15: tests/test_training.py on CUDA, examples/train_augmented.py
#   --device cuda, bench/bench_augment.py with and without augmentation)
#
# nvCOMP: damacy binds 6.x or 5.x at run time (cpp/src/nvcomp/nvcomp_loader.h). The two
# wheels cannot share one --target, so .whl/nvidia_libnvcomp_cu13-*.whl are kept out of
# /tmp/site except the default major's (NVCOMP_DEFAULT, default 5: what every stage but
# nvcomp6 loads). Stage nvcompN installs .whl/nvidia_libnvcomp_cu13-N.*.whl into
# /tmp/nvcompN, points DAMACY_NVCOMP_LIBRARY at its libnvcomp.so.N (no fallback to another
# copy), checks with the loader smoke and damacy.gpu_info() that major N is the one bound,
# and runs tests/test_gpu.py -x; it is skipped (and says so) when that wheel is absent.
# Carry budget: the nvCOMP 6.0 wheel is ~28 MiB, 5.1 ~19 MiB; with the rest of .whl and the
# xz'ed staticlib both majors exceed the 64 MiB carry, so for nvcomp6 carry a .whl without
# the 5.x wheel: STAGES="build nvcomp6" (or STAGES=nvcomp6 on a machine still warm from a
# build, where /tmp/site and build-gpu are left).
set -uo pipefail
OUT="${OUT:-/tmp/damacy-out}"
mkdir -p "$OUT"
STAGES="${STAGES:-build kernels nvcomp5 nvcomp6 pytest hostile example sanitize bench pipwheel}"
BENCH_ARGS="${BENCH_ARGS:---quick}"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
nproc | sed 's/^/cpus: /' | tee -a "$OUT/summary.txt"
NVCOMP_DEFAULT="${NVCOMP_DEFAULT:-5}"
nvcomp_wheel() { find .whl -maxdepth 1 -name "nvidia_libnvcomp_cu13-$1.*.whl" 2>/dev/null | sort | tail -1; }
site_wheels=()
for w in .whl/*.whl; do
  [[ "$(basename "$w")" == nvidia_libnvcomp_cu13-* ]] || site_wheels+=("$w")
done
default_nvcomp="$(nvcomp_wheel "$NVCOMP_DEFAULT")"
[ -n "$default_nvcomp" ] && site_wheels+=("$default_nvcomp")
echo "nvCOMP in /tmp/site: ${default_nvcomp:-none (no .whl/nvidia_libnvcomp_cu13-$NVCOMP_DEFAULT.*.whl)}" | tee -a "$OUT/summary.txt"
if [ "${#site_wheels[@]}" -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${site_wheels[@]}"
fi
export PYTHONPATH="$PWD/python:/tmp/site"
export PYTHONUNBUFFERED=1

# gpu_configure: `cmake --preset gpu-machine`. A cmake older than 3.25 (no presets v6) gets the
# same cache variables read from CMakePresets.json (the preset chain resolved by python3), so
# the preset file stays the one place they are written; gpu_build builds what it configured.
gpu_no_presets=0
gpu_configure() {
  if cmake --list-presets >/dev/null 2>&1; then
    cmake --preset gpu-machine
    return
  fi
  gpu_no_presets=1
  echo "cmake has no presets v6 (3.25+): configuring with gpu-machine's variables from CMakePresets.json"
  local args
  mapfile -t args < <(python3 - "$PWD" <<'PY'
import json, os, re, sys
src = sys.argv[1]
presets = {p["name"]: p for p in json.load(open(os.path.join(src, "CMakePresets.json")))["configurePresets"]}
def chain(name):
    p = presets[name]
    for parent in ([p["inherits"]] if isinstance(p.get("inherits"), str) else p.get("inherits", [])):
        yield from chain(parent)
    yield p
def expand(v):
    v = v.replace("${sourceDir}", src)
    return re.sub(r"\$env\{(\w+)\}", lambda m: os.environ.get(m.group(1), ""), v)
merged = {}
for p in chain("gpu-machine"):
    merged.update({k: p[k] for k in ("generator", "binaryDir") if k in p})
    merged.setdefault("cache", {}).update(p.get("cacheVariables", {}))
print("-S"); print(src); print("-B"); print(expand(merged["binaryDir"])); print("-G"); print(merged["generator"])
for k, v in merged["cache"].items():
    print(f"-D{k}={expand(v if isinstance(v, str) else v['value'])}")
PY
  ) || return 1
  printf '  %s\n' "${args[@]}"
  cmake "${args[@]}"
}
gpu_build() {
  if [ "$gpu_no_presets" = 1 ]; then cmake --build build-gpu -j 16; else cmake --build --preset gpu-machine -j 16; fi
}

if has build; then
  log "build"
  [ -f .carry/rust/libdamacy.a ] || xz -dk .carry/rust/libdamacy.a.xz
  t0=$SECONDS
  # The extension: CMakePresets.json's `gpu-machine` (what dev/build.sh's presets are, with
  # this machine's overrides: the carried staticlib, torch IMPORTED from this python,
  # build-gpu/); DAMACY_PYTHON is the preset's one input from here. The standalone kernels
  # project (damacy_kernels_test, static CUDA runtime) has no preset: configured by hand.
  export DAMACY_PYTHON="$(command -v python3)"
  {
    cmake --version | head -1
    gpu_configure \
      && gpu_build \
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
  log "kernels_test rc=$?"; tail -20 "$OUT/kernels.txt" | tee -a "$OUT/summary.txt"
fi

if has kernsan; then
  for tool in memcheck racecheck; do
    log "compute-sanitizer $tool on kernels_test --cases 4"
    timeout "${T_KERNSAN:-300}" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      build-gpu/kernels/damacy_kernels_test --cases 4 > "$OUT/kernsan-$tool.txt" 2>&1
    log "kernsan $tool rc=$?"; grep -E "SUMMARY|^PASS|^FAIL" "$OUT/kernsan-$tool.txt" | tail -3 | tee -a "$OUT/summary.txt"
  done
fi

# nvcomp_stage N: tests/test_gpu.py against the nvCOMP N.x wheel, alone (see the header).
nvcomp_stage() {
  local n="$1" whl lib rc
  whl="$(nvcomp_wheel "$n")"
  if [ -z "$whl" ] && [ ! -d "/tmp/nvcomp$n/nvidia/libnvcomp" ]; then
    log "nvcomp$n: skipped (no .whl/nvidia_libnvcomp_cu13-$n.*.whl carried)"
    return
  fi
  log "nvcomp$n: ${whl:-/tmp/nvcomp$n (installed by an earlier call)}"
  if [ -n "$whl" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "/tmp/nvcomp$n" "$whl"
  fi
  lib="$(ls /tmp/nvcomp$n/nvidia/libnvcomp/lib*/libnvcomp.so.$n 2>/dev/null | head -1)"
  [ -n "$lib" ] || { log "nvcomp$n: no libnvcomp.so.$n under /tmp/nvcomp$n"; return; }
  (
    export DAMACY_NVCOMP_LIBRARY="$lib"
    build-gpu/kernels/damacy_nvcomp_loader_smoke --expect-major "$n" --need-device > "$OUT/nvcomp$n-smoke.txt" 2>&1
    rc=$?; log "nvcomp$n loader smoke rc=$rc"; grep -E "^(path|version|major|host-side|no usable|CUDA devices)" "$OUT/nvcomp$n-smoke.txt" | tee -a "$OUT/summary.txt"
    python3 -c "import damacy, sys; i = damacy.gpu_info(); print('gpu_info:', i); sys.exit(0 if i['nvcomp_available'] and i['nvcomp_major'] == $n else 1)" 2>&1 | tee -a "$OUT/summary.txt"
    [ "${PIPESTATUS[0]}" = 0 ] || { log "nvcomp$n: damacy did not bind nvCOMP $n (see gpu_info above); tests not run"; exit 1; }
    DAMACY_EXPECT_NVCOMP_MAJOR="$n" timeout 420 python3 -m pytest -q -x -rs -p no:cacheprovider tests/test_gpu.py > "$OUT/nvcomp$n-pytest.txt" 2>&1
    rc=$?; log "nvcomp$n pytest tests/test_gpu.py rc=$rc"; tail -5 "$OUT/nvcomp$n-pytest.txt" | tee -a "$OUT/summary.txt"
  )
}
has nvcomp5 && nvcomp_stage 5
has nvcomp6 && nvcomp_stage 6

if has pytest; then
  log "pytest (GPU + differential + errors + pipeline)"
  # shellcheck disable=SC2086
  timeout "${T_PYTEST:-420}" python3 -m pytest -q -x -rs -p no:cacheprovider ${PYTEST_FILES:-tests/test_gpu.py tests/test_differential.py \
    tests/test_errors.py tests/test_pipeline.py tests/test_data.py tests/test_v2_ngff.py} > "$OUT/pytest.txt" 2>&1
  log "pytest rc=$?"; tail -5 "$OUT/pytest.txt" | tee -a "$OUT/summary.txt"
fi

if has hostile; then
  log "hostile-input suite on the GPU path (tests/hostile --device cuda)"
  timeout "${T_HOSTILE:-400}" python3 -m tests.hostile --device cuda -j 8 --json "$OUT/hostile-cuda.json" > "$OUT/hostile.txt" 2>&1
  log "hostile rc=$?"; tail -14 "$OUT/hostile.txt" | tee -a "$OUT/summary.txt"
fi

if has example; then
  log "examples/train_segmentation.py --device cuda"
  timeout 200 python3 examples/train_segmentation.py --device cuda --steps 40 --workdir /tmp/damacy-seg > "$OUT/example.txt" 2>&1
  log "example rc=$?"; tail -4 "$OUT/example.txt" | tee -a "$OUT/summary.txt"
fi

if has sanitize; then
  log "compute-sanitizer memcheck on the GPU tests"
  timeout "${T_SANITIZE:-300}" compute-sanitizer --tool memcheck --error-exitcode 9 --target-processes all \
    python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu.py -k "not memory_growth" > "$OUT/sanitizer.txt" 2>&1
  log "memcheck rc=$?"; grep -E "ERROR SUMMARY|passed|failed" "$OUT/sanitizer.txt" | tail -3 | tee -a "$OUT/summary.txt"
fi

if has bench; then
  log "bench_gpu $BENCH_ARGS"
  # shellcheck disable=SC2086
  timeout "${T_BENCH:-540}" python3 bench/bench_gpu.py $BENCH_ARGS --out "$OUT/bench_gpu.json" > "$OUT/bench.txt" 2>&1
  log "bench rc=$?"; tail -25 "$OUT/bench.txt" | tee -a "$OUT/summary.txt"
fi
if has augment; then
  log "augment: tests/test_training.py, train_augmented --device cuda, bench_augment"
  timeout 300 python3 -m pytest -q -x -p no:cacheprovider tests/test_training.py > "$OUT/training.txt" 2>&1
  log "training tests rc=$?"; tail -3 "$OUT/training.txt" | tee -a "$OUT/summary.txt"
  timeout 200 python3 examples/train_augmented.py --device cuda --steps 40 --workdir /tmp/damacy-seg > "$OUT/example-augmented.txt" 2>&1
  log "train_augmented rc=$?"; tail -3 "$OUT/example-augmented.txt" | tee -a "$OUT/summary.txt"
  # The issue's crops (64x128x128, u16 -> f32 image + u8 label), enough samples for whole
  # seconds per pass; plain and augmented passes alternate (bench_augment.py).
  ageo="--shape 128 512 512 --sample 64 128 128 --path /tmp/bench-augment-big.zarr"
  for b in 8 32; do
    # shellcheck disable=SC2086
    timeout 200 python3 bench/bench_augment.py --device cuda $ageo --samples 8192 --batch "$b" --threads 16 --repeat 5 \
      > "$OUT/bench-augment-$b.txt" 2>&1
    log "bench_augment batch $b rc=$?"; tail -5 "$OUT/bench-augment-$b.txt" | tee -a "$OUT/summary.txt"
  done
  # the noise's share: the same at batch 32 without noise (flips, turns, scale/shift only)
  # shellcheck disable=SC2086
  timeout 200 python3 bench/bench_augment.py --device cuda $ageo --samples 8192 --batch 32 --threads 16 --repeat 3 --noise 0 \
    > "$OUT/bench-augment-32-nonoise.txt" 2>&1
  log "bench_augment batch 32 noise 0 rc=$?"; tail -5 "$OUT/bench-augment-32-nonoise.txt" | tee -a "$OUT/summary.txt"
fi
if has profile; then  # opt-in: device time per kernel with Augment fused / on batch / off
  for b in 8 32; do
    timeout 200 python3 dev/gpu/profile_fused.py --path /tmp/bench-augment-big.zarr --batch "$b" --batches $((1600 / b)) \
      > "$OUT/profile-fused-$b.txt" 2>&1
    log "profile_fused batch $b rc=$?"; grep -v Warn "$OUT/profile-fused-$b.txt" | tail -30 | tee -a "$OUT/summary.txt"
  done
fi
if has pipwheel; then
  if ! ls .whl/scikit_build_core-*.whl >/dev/null 2>&1; then
    log "pipwheel: skipped (no .whl/scikit_build_core-*.whl carried)"
  else
    log "pipwheel: pip wheel . (build isolation on, build requirements from .whl)"
    [ -f .carry/rust/libdamacy.a ] || xz -dk .carry/rust/libdamacy.a.xz
    rm -rf /tmp/damacy-wheel /tmp/wheel-site /tmp/cmake-bin
    # This machine's /opt/torch/.venv/bin/cmake and ninja are the cmake/ninja wheels' Python
    # shims: inside pip's isolated build env their modules are not importable, so
    # scikit-build-core finds no version and asks pip for the wheels (no network here). Put
    # the wheels' real binaries (or the first cmake/ninja that runs) first on PATH.
    mkdir -p /tmp/cmake-bin
    for tool in cmake ninja; do
      real="$(python3 -c "import $tool, os; d = getattr($tool, 'CMAKE_BIN_DIR', None) or getattr($tool, 'BIN_DIR'); print(os.path.join(d, '$tool'))" 2>/dev/null)"
      [ -x "$real" ] || real="$(for c in $(which -a $tool); do env -i "$c" --version >/dev/null 2>&1 && echo "$c" && break; done)"
      [ -n "$real" ] && ln -sf "$real" /tmp/cmake-bin/$tool && log "pipwheel: $tool $real"
    done
    t0=$SECONDS
    PATH="/tmp/cmake-bin:$PATH" DAMACY_RUST_LIB="$PWD/.carry/rust/libdamacy.a" DAMACY_RUST_INCLUDE="$PWD/.carry/rust/include" \
      PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/.whl" \
      python3 -m pip wheel . --no-deps -v -w /tmp/damacy-wheel > "$OUT/pipwheel.txt" 2>&1
    log "pipwheel rc=$? in $((SECONDS - t0)) s"
    grep -E "^ *damacy: " "$OUT/pipwheel.txt" | tee -a "$OUT/summary.txt"
    whl="$(ls /tmp/damacy-wheel/damacy-*.whl 2>/dev/null | head -1)"
    if [ -n "$whl" ]; then
      python3 -m pip install -q --no-index --no-deps --target /tmp/wheel-site "$whl"
      cat /tmp/wheel-site/damacy/damacy_build_info.json | tee -a "$OUT/summary.txt"
      # The installed package, not python/ nor build-gpu/: from /tmp, without DAMACY_LIBRARY.
      (cd /tmp && env -u DAMACY_LIBRARY PYTHONPATH="/tmp/wheel-site:/tmp/site" python3 -c \
        "import damacy; assert damacy.__file__.startswith('/tmp/wheel-site'), damacy.__file__; print(damacy.gpu_info())") 2>&1 | tee -a "$OUT/summary.txt"
      env -u DAMACY_LIBRARY PYTHONPATH="/tmp/wheel-site:/tmp/site" timeout 420 python3 -m pytest -q -x -rs \
        -p no:cacheprovider --rootdir=/tmp --confcutdir="$PWD/tests" "$PWD/tests/test_gpu.py" > "$OUT/pipwheel-pytest.txt" 2>&1
      log "pipwheel pytest tests/test_gpu.py (installed wheel) rc=$?"; tail -3 "$OUT/pipwheel-pytest.txt" | tee -a "$OUT/summary.txt"
    fi
  fi
fi

# Not in the default STAGES (it takes most of a call): STAGES="build benchall". Every
# workload class of issue 18, damacy's default config on cuda:0 next to tensorstore and
# zarr-python; BENCHALL_ARGS default --quick (10 timed batches), "" for the full 100.
if has benchall; then
  bdev="${BENCHALL_DEVICE:-cuda}"  # cpu: the CPU path on this machine's 16 cores
  log "bench_all --device $bdev ${BENCHALL_ARGS---quick}"
  # shellcheck disable=SC2086
  timeout "${T_BENCHALL:-540}" python3 bench/bench_all.py --device "$bdev" ${BENCHALL_ARGS---quick} --data-dir /tmp/bench-data \
    --out "bench-all-$bdev" > "$OUT/bench_all.txt" 2>&1
  log "bench_all rc=$?"; tail -12 "$OUT/bench_all.txt" | tee -a "$OUT/summary.txt"
  cp bench/results/bench-all-"$bdev".* "$OUT/" 2>/dev/null || true
fi
log "done"
