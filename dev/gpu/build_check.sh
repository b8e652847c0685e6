#!/usr/bin/env bash
# Compile check of the GPU sources (cpp/src/cuda, cpp/src/nvcomp) with the project venv's
# nvcc (CUDA 13.0 from PyPI): sm_90 machine code + compute_90 PTX, C++20, torch's ABI.
# No GPU needed. Produces, under $OUT (default build/gpu-check):
#   kernels.o gpu_plan.o nvcomp_loader.o   the objects of the damacy_gpu static library
#   libdamacy_gpu.a                        the same, archived
#   kernels_test                           kernels vs CPU references (host emulation + device)
#   nvcomp_loader_smoke                    dlopen + dlsym of libnvcomp (6.x or 5.x), host-side
#                                          queries, whether a CUDA device is usable
#
#   bash dev/gpu/build_check.sh          compile and link
#   bash dev/gpu/build_check.sh --run    also run both tests (the device part of kernels_test
#                                        prints "SKIP: no CUDA device" where there is none)
#
# Needs the cxx bridge header: $DAMACY_RUST_INCLUDE or target/cxxbridge (from `cargo build`;
# generated here by `cargo check -p damacy` when missing).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
run=0
[ "${1:-}" = "--run" ] && run=1

venv="${DAMACY_VENV:-$(bash dev/venv.sh)}"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cu="$site/nvidia/cu13"
nvcc="$cu/bin/nvcc"
# No nvCOMP headers: cpp/src/nvcomp/nvcomp_api.h declares what we call (5.x and 6.x).
[ -e "$nvcc" ] || { echo "build_check: $nvcc missing (requirements-dev.txt: nvidia-cuda-nvcc)" >&2; exit 1; }
bridge="${DAMACY_RUST_INCLUDE:-$root/target/cxxbridge}"
if [ ! -f "$bridge/damacy/src/ffi/api.rs.h" ]; then
  echo "build_check: generating the cxx bridge header (cargo check -p damacy)" >&2
  cargo check -q -p damacy
fi
abi="$("$venv/bin/python" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' 2>/dev/null || echo 1)"
out="${OUT:-$root/build/gpu-check}"
mkdir -p "$out"

cxx="${CXX:-g++}"
common=(-std=c++20 -O3 "-D_GLIBCXX_USE_CXX11_ABI=$abi" -Icpp/include -Icpp/src -Icpp/src/cuda
        "-I$bridge" "-I$cu/include")
cuda=(-gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 -lineinfo
      -Xcompiler -fPIC,-Wall,-Wextra -ccbin "$cxx")
host=(-fPIC -Wall -Wextra -Werror)

start=$(date +%s.%N)
pids=()
"$nvcc" "${common[@]}" "${cuda[@]}" -Xptxas -warn-spills -c cpp/src/cuda/kernels.cu -o "$out/kernels.o" & pids+=($!)
"$cxx" "${common[@]}" "${host[@]}" -c cpp/src/cuda/gpu_plan.cpp -o "$out/gpu_plan.o" & pids+=($!)
"$cxx" "${common[@]}" "${host[@]}" -c cpp/src/nvcomp/nvcomp_loader.cpp -o "$out/nvcomp_loader.o" & pids+=($!)
"$nvcc" "${common[@]}" "${cuda[@]}" -c cpp/src/cuda/kernels_test.cu -o "$out/kernels_test.o" & pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done
ar rcs "$out/libdamacy_gpu.a" "$out/kernels.o" "$out/gpu_plan.o" "$out/nvcomp_loader.o"
"$nvcc" "${cuda[@]}" "-L$cu/lib" "$out/kernels_test.o" "$out/libdamacy_gpu.a" -ldl -o "$out/kernels_test"
"$cxx" "${common[@]}" "${host[@]}" dev/gpu/nvcomp_loader_smoke.cpp "$out/libdamacy_gpu.a" \
  "-L$cu/lib" -lcudart_static -lrt -lpthread -ldl -o "$out/nvcomp_loader_smoke"
end=$(date +%s.%N)
printf 'build_check: compiled and linked in %.1f s -> %s\n' "$(echo "$end - $start" | bc)" "$out"

if [ "$run" = 1 ]; then
  "$out/nvcomp_loader_smoke" "$site/nvidia/libnvcomp"
  "$out/kernels_test"
fi
