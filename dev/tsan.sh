#!/usr/bin/env bash
# Runs the concurrency tests (prefetcher state machine, stress: concurrent push/pop, close
# during work) under ThreadSanitizer. Needs a nightly toolchain with rust-src, installed here
# when missing; when neither can be had it exits 0 with a notice, so the main suite still runs
# on machines without nightly, except when CI is set: then it fails (CI must not skip it).
# The C/C++ parts (zstd, blosc) are not instrumented. Separate target dir: an instrumented
# std is rebuilt (-Zbuild-std).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=dev/nightly.sh
source "$root/dev/nightly.sh"
need_nightly tsan
target="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread"
export CARGO_TARGET_DIR="$root/target/tsan"
# halt_on_error: the first race fails the run (TSan otherwise only warns).
export TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}"
cargo +nightly test -Zbuild-std --target "$target" -p damacy --test stress --test prefetch --test missing_shard --test pipeline_e2e --test device_emulation "$@"
echo "tsan: no data race reported"
