#!/usr/bin/env bash
# Packs the batch_read fuzz binary for a run on the GPU machine (dev/gpu/fuzz_batch_read.sh),
# which has no cargo: builds it (cargo +nightly fuzz build batch_read, as dev/fuzz.sh does),
# strips the debug info (symbols stay, so ASan reports keep function names) and xz's it to
# .carry-fuzz/batch_read.xz (gitignored; ~15 MB of the 64 MiB carry). Then, with the device
# tool: run(command="bash dev/gpu/fuzz_batch_read.sh 480", carry=[".carry-fuzz"]).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/rust"
cargo +nightly fuzz build batch_read
bin="$root/rust/fuzz/target/x86_64-unknown-linux-gnu/release/batch_read"
mkdir -p "$root/.carry-fuzz"
strip --strip-debug -o "$root/.carry-fuzz/batch_read" "$bin"
xz -T2 -3 -f "$root/.carry-fuzz/batch_read"
ls -la "$root/.carry-fuzz/"
echo "glibc symbols needed (the GPU machine's glibc must be at least the highest):"
objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1
