# damacy::libtorch: the libtorch the extension compiles and links against.
#
# The extension must match the torch it is loaded into, so torch is always the one of the
# Python that will import damacy (DAMACY_PYTHON, default: Python3_EXECUTABLE or the first
# python3), or an explicit DAMACY_TORCH_ROOT (the `torch` package folder, or an unpacked
# libtorch with include/ and lib/).
#
# Two ways to make the target (DAMACY_TORCH_MODE):
#   PACKAGE   find_package(Torch). Needs a CUDA toolkit when torch is a CUDA build:
#             TorchConfig fails with "Your installed Caffe2 version uses CUDA but I cannot
#             find the CUDA libraries" otherwise (the PyPI CUDA wheel on a CPU machine).
#   IMPORTED  an imported target over torch's include dirs and libtorch, libtorch_cpu, libc10
#             (+ libtorch_cuda, libc10_cuda with DAMACY_CUDA), with -D_GLIBCXX_USE_CXX11_ABI
#             as torch was built. Never libtorch_python: the core library has no Python.
#   AUTO      (default) PACKAGE when torch is a CPU build or a CUDA toolkit is found, else
#             IMPORTED.
#
# The installed damacy-config.cmake includes this file again (with DAMACY_TORCH_FOR_PACKAGE
# set) to re-create damacy::libtorch for downstream projects. Then a failure does not stop the
# consumer's configure: it marks the package not found (damacy_FOUND, damacy_NOT_FOUND_MESSAGE)
# and returns, and Torch is found with find_dependency.

# FATAL_ERROR in the build; "package not found" + return() from this file in the config.
macro(_damacy_torch_fail)
  if(DAMACY_TORCH_FOR_PACKAGE)
    string(CONCAT damacy_NOT_FOUND_MESSAGE "damacy: " ${ARGN})
    set(damacy_FOUND FALSE)
    return()
  endif()
  message(FATAL_ERROR "damacy: " ${ARGN})
endmacro()

set(DAMACY_TORCH_MODE AUTO CACHE STRING "How to find libtorch: AUTO, PACKAGE or IMPORTED")
set_property(CACHE DAMACY_TORCH_MODE PROPERTY STRINGS AUTO PACKAGE IMPORTED)
set(DAMACY_TORCH_ROOT "" CACHE PATH
  "torch package folder (holds include/ and lib/); empty: ask DAMACY_PYTHON")

# --- ask Python (once per DAMACY_PYTHON; the answers are cached) -----------------------------
if(NOT DAMACY_PYTHON AND NOT DAMACY_TORCH_ROOT)
  if(Python3_EXECUTABLE)
    set(_damacy_py "${Python3_EXECUTABLE}")
  elseif(Python_EXECUTABLE)
    set(_damacy_py "${Python_EXECUTABLE}")
  else()
    find_package(Python3 COMPONENTS Interpreter)
    if(NOT Python3_Interpreter_FOUND)
      _damacy_torch_fail("no python3 found to ask for torch; set DAMACY_PYTHON to a Python "
        "with torch, or DAMACY_TORCH_ROOT to the torch package folder")
    endif()
    set(_damacy_py "${Python3_EXECUTABLE}")
  endif()
  set(DAMACY_PYTHON "${_damacy_py}" CACHE FILEPATH "Python whose torch the extension is built for")
endif()
if(DAMACY_PYTHON AND NOT DAMACY_TORCH_QUERIED_FOR STREQUAL DAMACY_PYTHON)
  execute_process(
    COMMAND "${DAMACY_PYTHON}" -c
      "import os, torch, torch.utils; print(os.path.dirname(torch.__file__)); print(torch.utils.cmake_prefix_path); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.__version__)"
    OUTPUT_VARIABLE _out
    ERROR_VARIABLE _err
    RESULT_VARIABLE _rc
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _rc EQUAL 0)
    _damacy_torch_fail("`${DAMACY_PYTHON} -c 'import torch'` failed; point "
      "-DDAMACY_PYTHON at the venv that has torch (bash dev/venv.sh), or set "
      "DAMACY_TORCH_ROOT.\n${_err}")
  endif()
  string(REPLACE "\n" ";" _out "${_out}")
  list(GET _out 0 _root)
  list(GET _out 1 _prefix)
  list(GET _out 2 _abi)
  list(GET _out 3 _version)
  if(NOT DAMACY_TORCH_ROOT)
    set(DAMACY_TORCH_ROOT "${_root}" CACHE PATH "torch package folder" FORCE)
  endif()
  set(DAMACY_TORCH_CMAKE_PREFIX "${_prefix}" CACHE INTERNAL "")
  set(DAMACY_TORCH_CXX11_ABI "${_abi}" CACHE INTERNAL "")
  set(DAMACY_TORCH_VERSION "${_version}" CACHE INTERNAL "")
  set(DAMACY_TORCH_QUERIED_FOR "${DAMACY_PYTHON}" CACHE INTERNAL "")
endif()
if(NOT DAMACY_TORCH_CMAKE_PREFIX)
  set(DAMACY_TORCH_CMAKE_PREFIX "${DAMACY_TORCH_ROOT}/share/cmake")
endif()
if(NOT DAMACY_TORCH_CXX11_ABI MATCHES "^[01]$")
  set(DAMACY_TORCH_CXX11_ABI 1)  # every torch >= 2.7 build
endif()

# --- choose the mode ----------------------------------------------------------------------
set(_damacy_torch_mode "${DAMACY_TORCH_MODE}")
if(_damacy_torch_mode STREQUAL "AUTO")
  if(NOT EXISTS "${DAMACY_TORCH_ROOT}/lib/libtorch_cuda.so")  # a CPU build of torch
    set(_damacy_torch_mode PACKAGE)
  else()
    find_package(CUDAToolkit QUIET)
    if(CUDAToolkit_FOUND)
      set(_damacy_torch_mode PACKAGE)
    else()
      set(_damacy_torch_mode IMPORTED)
    endif()
  endif()
endif()

add_library(damacy::libtorch INTERFACE IMPORTED)
if(_damacy_torch_mode STREQUAL "PACKAGE")
  list(APPEND CMAKE_PREFIX_PATH "${DAMACY_TORCH_CMAKE_PREFIX}")
  if(DAMACY_TORCH_FOR_PACKAGE)
    find_dependency(Torch)  # not found: marks damacy not found and returns from this file
  else()
    find_package(Torch REQUIRED)
  endif()
  # TORCH_LIBRARIES carries the ABI flag (on the `torch` target) and, for CUDA builds, the
  # CUDA libraries; the include dirs come with the `torch` target.
  set_property(TARGET damacy::libtorch PROPERTY INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}")
else()
  set(_lib "${DAMACY_TORCH_ROOT}/lib")
  set(_libs "${_lib}/libtorch.so" "${_lib}/libtorch_cpu.so" "${_lib}/libc10.so")
  if(DAMACY_CUDA)
    # Hook for the CUDA parts: device guards and streams need these two.
    list(APPEND _libs "${_lib}/libtorch_cuda.so" "${_lib}/libc10_cuda.so")
  endif()
  foreach(_f IN LISTS _libs ITEMS "${DAMACY_TORCH_ROOT}/include/torch/library.h")
    if(NOT EXISTS "${_f}")
      _damacy_torch_fail("${_f} is missing (DAMACY_TORCH_ROOT=${DAMACY_TORCH_ROOT})")
    endif()
  endforeach()
  set_target_properties(damacy::libtorch PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES
      "${DAMACY_TORCH_ROOT}/include;${DAMACY_TORCH_ROOT}/include/torch/csrc/api/include"
    INTERFACE_LINK_LIBRARIES "${_libs}"
    INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=${DAMACY_TORCH_CXX11_ABI}")
endif()
message(STATUS "damacy: torch ${DAMACY_TORCH_VERSION} (${_damacy_torch_mode}) at ${DAMACY_TORCH_ROOT}")
