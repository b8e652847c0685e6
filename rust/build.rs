//! Generates the cxx bridge glue (compiled into the staticlib) and its headers, which cargo
//! leaves under `$CARGO_TARGET_DIR/cxxbridge/damacy/src/ffi/{records,api}.rs.h` for the C++
//! extension.
fn main() {
    cxx_build::bridges(["src/ffi/records.rs", "src/ffi/api.rs"]).std("c++17").compile("damacy-bridge");
    println!("cargo:rerun-if-changed=src/ffi/records.rs");
    println!("cargo:rerun-if-changed=src/ffi/api.rs");
}
