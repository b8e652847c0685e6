# damacy_gpu: the CUDA kernels (assemble, unshuffle, raw copy, decode status check, the fused
# augmentation), the host side of a GPU batch (op checks, voxel prefix, nvCOMP argument
# packing) and the run-time nvCOMP loader. No torch in here; the extension calls it with raw
# pointers and its stream.
#
# For a parent CMakeLists.txt (CUDA language enabled):
#   include(cpp/src/cuda/sources.cmake)
#   damacy_add_gpu_library(damacy_gpu BRIDGE damacy_core)   # target with the cxx bridge headers
#   target_link_libraries(damacy_torch PRIVATE damacy_gpu)
# or take the file lists below and build the target yourself.
#
# nvCOMP is not needed to build: libnvcomp (6.x or 5.x) is dlopen'ed at run time and the
# part of its API we call is declared in cpp/src/nvcomp/nvcomp_api.h.
#
# Inputs (cache variables or plain variables set before the call):
#   DAMACY_CUDA_ARCHITECTURES  default "90-real;90-virtual" (H100/H200 SASS + compute_90 PTX).
#   DAMACY_CUDA_RUNTIME        CUDA_RUNTIME_LIBRARY of the targets: default Shared (inside the
#                              extension: torch's libcudart.so, never a second runtime).
#
# The PyPI CUDA compiler (nvidia-cuda-nvcc, CUDA 13) keeps its libraries in <cu13>/lib, not
# lib64, and has no unversioned libcudart.so: CMake's CUDA compiler check then fails to link
# unless configured with -DCMAKE_CUDA_FLAGS=-L<cu13>/lib, and find_package(CUDAToolkit) finds
# no CUDA::cudart (then nothing is linked here and the consumer, torch, brings the runtime).

set(DAMACY_GPU_DIR "${CMAKE_CURRENT_LIST_DIR}")
get_filename_component(DAMACY_GPU_REPO "${DAMACY_GPU_DIR}/../../.." ABSOLUTE)

set(DAMACY_GPU_CUDA_SOURCES
  "${DAMACY_GPU_DIR}/kernels.cu"             # __global__ kernels + launchers
  "${DAMACY_GPU_DIR}/augment.cu")            # the fused augmentation kernel (op damacy::augment)
set(DAMACY_GPU_CXX_SOURCES
  "${DAMACY_GPU_DIR}/gpu_plan.cpp"           # op checks, voxel prefix, nvCOMP args; layout asserts
  "${DAMACY_GPU_REPO}/cpp/src/nvcomp/nvcomp_loader.cpp")  # dlopen/dlsym of libnvcomp.so.{6,5}
set(DAMACY_GPU_SOURCES ${DAMACY_GPU_CUDA_SOURCES} ${DAMACY_GPU_CXX_SOURCES})
set(DAMACY_GPU_PRIVATE_HEADERS
  "${DAMACY_GPU_DIR}/kernels_impl.cuh"       # per-thread work, __host__ __device__
  "${DAMACY_GPU_DIR}/augment_impl.cuh"       # the same for the augmentation kernel
  "${DAMACY_GPU_DIR}/op_views.h"             # device mirrors of the bridge's op records
  "${DAMACY_GPU_REPO}/cpp/src/nvcomp/nvcomp_loader.h"
  "${DAMACY_GPU_REPO}/cpp/src/nvcomp/nvcomp_api.h")  # our declarations of nvCOMP 5.x/6.x
set(DAMACY_GPU_PUBLIC_HEADERS                # private to damacy, but included by the extension
  "${DAMACY_GPU_REPO}/cpp/include/damacy/detail/gpu_kernels.h"
  "${DAMACY_GPU_REPO}/cpp/include/damacy/detail/gpu_augment.h"
  "${DAMACY_GPU_REPO}/cpp/include/damacy/detail/gpu_plan.h")
set(DAMACY_GPU_TEST_SOURCES
  "${DAMACY_GPU_DIR}/kernels_test.cu"        # standalone test executable (kernels vs CPU)
  "${DAMACY_GPU_DIR}/augment_test.cu")       # its augmentation suites

if(NOT DEFINED DAMACY_CUDA_ARCHITECTURES)
  set(DAMACY_CUDA_ARCHITECTURES "90-real;90-virtual")
endif()
if(NOT DEFINED DAMACY_CUDA_RUNTIME)
  set(DAMACY_CUDA_RUNTIME Shared)
endif()

# damacy_add_gpu_library(<name> [BRIDGE <target>] [BRIDGE_INCLUDE <dir>])
#   BRIDGE: a target whose include dirs hold damacy/src/ffi/api.rs.h (damacy_core);
#   BRIDGE_INCLUDE: that folder directly (cargo's target/cxxbridge).
function(damacy_add_gpu_library name)
  cmake_parse_arguments(ARG "" "BRIDGE;BRIDGE_INCLUDE" "" ${ARGN})
  find_package(CUDAToolkit QUIET)
  add_library(${name} STATIC ${DAMACY_GPU_SOURCES})
  set_target_properties(${name} PROPERTIES
    CUDA_ARCHITECTURES "${DAMACY_CUDA_ARCHITECTURES}"
    CUDA_STANDARD 20
    CUDA_STANDARD_REQUIRED ON
    CXX_STANDARD 20
    CXX_STANDARD_REQUIRED ON
    POSITION_INDEPENDENT_CODE ON
    CUDA_RUNTIME_LIBRARY ${DAMACY_CUDA_RUNTIME})
  target_include_directories(${name}
    PUBLIC "${DAMACY_GPU_REPO}/cpp/include"
    PRIVATE "${DAMACY_GPU_DIR}" "${DAMACY_GPU_REPO}/cpp/src")
  # The .cpp files and the headers include cuda_runtime_api.h: the CUDA compiler's own
  # include folder (CUDAToolkit's may be incomplete with the PyPI toolkit).
  target_include_directories(${name} SYSTEM PUBLIC ${CMAKE_CUDA_TOOLKIT_INCLUDE_DIRECTORIES})
  target_compile_options(${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>)
  if(DEFINED DAMACY_TORCH_CXX11_ABI)
    # std::string crosses into the extension: build with torch's libstdc++ ABI
    target_compile_definitions(${name} PUBLIC _GLIBCXX_USE_CXX11_ABI=${DAMACY_TORCH_CXX11_ABI})
  endif()
  if(ARG_BRIDGE)
    target_link_libraries(${name} PRIVATE ${ARG_BRIDGE})
  endif()
  if(ARG_BRIDGE_INCLUDE)
    target_include_directories(${name} PRIVATE "${ARG_BRIDGE_INCLUDE}")
  endif()
  target_link_libraries(${name} PUBLIC ${CMAKE_DL_LIBS})
  if(DAMACY_CUDA_RUNTIME STREQUAL "Shared" AND TARGET CUDA::cudart)
    target_link_libraries(${name} PUBLIC CUDA::cudart)
  endif()
endfunction()
