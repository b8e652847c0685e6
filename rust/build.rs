//! Generates the cxx bridge glue (compiled into the staticlib) and its header, which cargo
//! leaves under `$CARGO_TARGET_DIR/cxxbridge/damacy/src/ffi/mod.rs.h` for the C++ extension.
fn main() {
    cxx_build::bridge("src/ffi/mod.rs").std("c++17").compile("damacy-bridge");
    println!("cargo:rerun-if-changed=src/ffi/mod.rs");
}
