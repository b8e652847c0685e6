#!/usr/bin/env bash
# Packs the Rust staticlib and its cxx bridge headers (symlinks resolved) into .carry/rust/
# (gitignored) for a machine without cargo, which then configures with
#   cmake -S . -B build -DDAMACY_RUST_LIB=.carry/rust/libdamacy.a -DDAMACY_RUST_INCLUDE=.carry/rust/include
# Run after `cargo build --release -p damacy` (or dev/build.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
out="$root/.carry/rust"
rm -rf "$out"
mkdir -p "$out/include/damacy/src/ffi" "$out/include/rust"
cp "$target/release/libdamacy.a" "$out/"
cp -L "$target/cxxbridge/damacy/src/ffi/records.rs.h" "$target/cxxbridge/damacy/src/ffi/api.rs.h" "$out/include/damacy/src/ffi/"
cp -L "$target/cxxbridge/rust/cxx.h" "$out/include/rust/"
du -sh "$out" >&2

# Debug sections off and xz'd: the device tool carries at most 64 MiB (the .a is ~140 MB).
strip --strip-debug "$out/libdamacy.a"
xz -T2 -6 "$out/libdamacy.a"
du -sh "$out/libdamacy.a.xz" >&2
echo "$out"
