# damacy_core: the Rust staticlib `libdamacy.a` and the cxx bridge headers.
#
# Two ways to get them:
#   - default: cargo builds them (`cargo build --release -p damacy`) on every build; cargo is
#     incremental, so this is a no-op when nothing in rust/ changed, and Ninja relinks only
#     when libdamacy.a really changed (the archive is a BYPRODUCT, restat'ed).
#   - DAMACY_RUST_LIB + DAMACY_RUST_INCLUDE: a prebuilt staticlib and its header folder, for
#     machines without a Rust toolchain (the GPU machine gets them carried over; see
#     dev/carry-rust.sh). No cargo is looked for then.
#
# cxx-build leaves the headers as `<include>/damacy/src/ffi/{records,api}.rs.h` and
# `<include>/rust/cxx.h`; the bridge glue (.cc) is already compiled into the staticlib by
# rust/build.rs, so nothing of the bridge is compiled here.

set(DAMACY_RUST_LIB "" CACHE FILEPATH
  "Prebuilt libdamacy.a; skips cargo (needs DAMACY_RUST_INCLUDE)")
set(DAMACY_RUST_INCLUDE "" CACHE PATH
  "Folder holding damacy/src/ffi/api.rs.h and rust/cxx.h for DAMACY_RUST_LIB")

if(DAMACY_RUST_LIB)
  if(NOT DAMACY_RUST_INCLUDE)
    message(FATAL_ERROR "damacy: DAMACY_RUST_LIB is set, so DAMACY_RUST_INCLUDE must name the "
      "folder holding damacy/src/ffi/api.rs.h (cargo's target/cxxbridge, copied with -L)")
  endif()
  get_filename_component(_damacy_rust_lib "${DAMACY_RUST_LIB}" ABSOLUTE)
  get_filename_component(_damacy_rust_inc "${DAMACY_RUST_INCLUDE}" ABSOLUTE)
  foreach(_f "${_damacy_rust_lib}" "${_damacy_rust_inc}/damacy/src/ffi/api.rs.h")
    if(NOT EXISTS "${_f}")
      message(FATAL_ERROR "damacy: ${_f} does not exist (DAMACY_RUST_LIB / DAMACY_RUST_INCLUDE)")
    endif()
  endforeach()
  message(STATUS "damacy: prebuilt Rust staticlib ${_damacy_rust_lib}")
else()
  find_program(DAMACY_CARGO cargo HINTS "$ENV{CARGO_HOME}/bin" "$ENV{HOME}/.cargo/bin")
  if(NOT DAMACY_CARGO)
    message(FATAL_ERROR "damacy: cargo not found. Install Rust (https://rustup.rs), or pass "
      "-DDAMACY_RUST_LIB=<libdamacy.a> -DDAMACY_RUST_INCLUDE=<cxxbridge folder> built elsewhere")
  endif()
  # Development builds share the repo's target/ with a plain `cargo build`. Wheel builds
  # (scikit-build-core) get their own by default. scikit-build-core exports SOURCE_DATE_EPOCH
  # and CC/CXX (from sysconfig), which the C codecs' build scripts (cc-rs) track, so cargo
  # runs without the variables named in DAMACY_CARGO_UNSET_ENV (the build backend lists
  # CC/CXX there only when the user had not set them): a wheel build pointed at the repo's
  # target/ (DAMACY_CARGO_TARGET_DIR, as tests/test_install.py does) then reuses it instead
  # of rebuilding the C codecs on every switch.
  if(SKBUILD)
    set(_damacy_cargo_target_default "${PROJECT_BINARY_DIR}/cargo-target")
  else()
    set(_damacy_cargo_target_default "${PROJECT_SOURCE_DIR}/target")
  endif()
  set(DAMACY_CARGO_TARGET_DIR "${_damacy_cargo_target_default}" CACHE PATH
    "CARGO_TARGET_DIR for the staticlib")
  set(DAMACY_CARGO_UNSET_ENV "SOURCE_DATE_EPOCH" CACHE STRING
    "Environment variables cargo runs without (a ;-list)")
  set(_damacy_cargo_unset "")
  foreach(_v IN LISTS DAMACY_CARGO_UNSET_ENV)
    list(APPEND _damacy_cargo_unset "--unset=${_v}")
  endforeach()
  set(_damacy_rust_lib "${DAMACY_CARGO_TARGET_DIR}/release/libdamacy.a")
  set(_damacy_rust_inc "${DAMACY_CARGO_TARGET_DIR}/cxxbridge")
  add_custom_target(damacy_cargo
    COMMAND ${CMAKE_COMMAND} -E env ${_damacy_cargo_unset} "CARGO_TARGET_DIR=${DAMACY_CARGO_TARGET_DIR}"
            "${DAMACY_CARGO}" build --release -p damacy
    WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
    BYPRODUCTS "${_damacy_rust_lib}"
               "${_damacy_rust_inc}/damacy/src/ffi/records.rs.h"
               "${_damacy_rust_inc}/damacy/src/ffi/api.rs.h"
               "${_damacy_rust_inc}/rust/cxx.h"
    COMMENT "cargo build --release -p damacy"
    USES_TERMINAL VERBATIM)
  message(STATUS "damacy: Rust staticlib via ${DAMACY_CARGO} into ${DAMACY_CARGO_TARGET_DIR}")
endif()

add_library(damacy_rust STATIC IMPORTED GLOBAL)
set_target_properties(damacy_rust PROPERTIES IMPORTED_LOCATION "${_damacy_rust_lib}")

add_library(damacy_core INTERFACE)
target_include_directories(damacy_core INTERFACE "$<BUILD_INTERFACE:${_damacy_rust_inc}>")
# The staticlib's own system dependencies (Rust std: threads, dlopen for cudarc, libm).
target_link_libraries(damacy_core INTERFACE damacy_rust Threads::Threads ${CMAKE_DL_LIBS} m)
if(TARGET damacy_cargo)
  add_dependencies(damacy_core damacy_cargo)
endif()
