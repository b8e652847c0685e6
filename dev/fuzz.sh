#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target of rust/fuzz (zarr_json, shard_index, blosc_frame,
# zstd_frame, batch_read) for a bounded time each: `dev/fuzz.sh [seconds]`, default 20.
# Starts from the committed seed corpora (rust/fuzz/corpus/<target>, only read: new inputs
# go to a scratch corpus) and fails on the first crash, panic, leak, timeout or OOM; the
# input that did it is left in rust/fuzz/artifacts/<target>/ (add it to the corpus once the
# bug is fixed). Needs nightly with rust-src and cargo-fuzz, installed here when missing; if
# that fails it skips with a notice, except when CI is set: then it fails.
# Longer runs and their results: dev/fuzz.md.
# Build cache: under CI the instrumented build goes to ~/.cache/damacy/fuzz-target (kept
# between runs like the venv; a clean build is tens of minutes on a small machine, see
# dev/fuzz.md), elsewhere to rust/fuzz/target; DAMACY_FUZZ_TARGET_DIR overrides both.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/rust"
secs="${1:-20}"
targets=(zarr_json shard_index blosc_frame zstd_frame batch_read)

# shellcheck source=dev/nightly.sh
source "$root/dev/nightly.sh"
need_nightly fuzz
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || unavailable fuzz "cargo-fuzz cannot be installed"
fi

tdir="${DAMACY_FUZZ_TARGET_DIR:-${CI:+$HOME/.cache/damacy/fuzz-target}}"
target_dir=()
[ -n "$tdir" ] && target_dir=(--target-dir "$tdir")
t0=$SECONDS
cargo +nightly fuzz build "${target_dir[@]}"
echo "fuzz: built in $((SECONDS - t0)) s${tdir:+ (target dir $tdir)}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    echo "== fuzz $t (${secs} s)"
    # -rss_limit_mb / -malloc_limit_mb: memory stays bounded (batch_read also counts its
    # heap); -timeout: one input taking 30 s is a hang. batch_read runs without
    # LeakSanitizer: its leak checks stop all ~30 pipeline threads on every new input (7x
    # slower), and its pipelines live for the whole run by design. Also without allocation
    # stacks (malloc_context_size=0): 1.5 instead of 2.3 ms of CPU per run (dev/fuzz.md);
    # detection is the same, a report lacks the allocation site (re-run the artifact
    # without it for that).
    extra=()
    asan="${ASAN_OPTIONS:-}"
    if [ "$t" = batch_read ]; then
        extra=(-detect_leaks=0)
        asan="${asan:+$asan:}malloc_context_size=0"
    fi
    if ! ASAN_OPTIONS="$asan" cargo +nightly fuzz run "${target_dir[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=30 -print_final_stats=1 "${extra[@]}" \
        >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log"
        echo "fuzz: $t FAILED; the input is in rust/fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE' "$scratch/$t.log" || true
done
echo "fuzz: no crash in ${#targets[@]} targets"
