#!/usr/bin/env bash
# A long batch_read fuzz run on the 16-core GPU machine (no cargo there): runs a prebuilt
# libFuzzer + ASan binary from .carry-fuzz/ over the committed seed corpus.
#
#   here:   bash dev/fuzz_pack.sh            (builds, strips, xz's .carry-fuzz/batch_read.xz)
#   there:  run(command="bash dev/gpu/fuzz_batch_read.sh 480", carry=[".carry-fuzz"])
#
# Args: seconds (default 480: a run() command may take 10 min), workers (default: nproc).
# libFuzzer's fork mode: `workers` children at a time, each fuzzing from the merged corpus
# for a while and handing its new inputs back; crashes, timeouts and OOMs are recorded and
# the run goes on (-ignore_*), so the figures cover the whole run. Same limits as
# dev/fuzz.sh (-rss_limit_mb=2048 per child, -malloc_limit_mb=512, -timeout=30, no
# LeakSanitizer: dev/fuzz.md says why). ASAN_OPTIONS malloc_context_size=0: allocation
# stacks are not recorded (saves ~6% per run here, a report then lacks the allocation
# site: reproduce an artifact with the normal build, `cargo +nightly fuzz run batch_read
# <artifact>`, to get it); detection is unchanged.
# Writes into $OUT: fuzz_batch_read.txt (the log's tail and the figures), crashes.tar.gz
# (the crash/timeout/oom inputs, if any) and prints:
#   fuzz_batch_read: <executions> executions in <s> s (<exec/s>), <n> crashes, <t> timeouts, <o> ooms
set -uo pipefail
secs="${1:-480}"
workers="${2:-$(nproc)}"
OUT="${OUT:-/tmp/damacy-out}"
mkdir -p "$OUT"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
bin=/tmp/fuzz-bin/batch_read
mkdir -p /tmp/fuzz-bin
[ -x "$bin" ] || xz -dc .carry-fuzz/batch_read.xz > "$bin" && chmod +x "$bin"
if ldd "$bin" | grep -q "not found"; then
  ldd "$bin" | tee "$OUT/fuzz_batch_read.txt"
  echo "fuzz_batch_read: the binary's libraries are missing here (above)" | tee -a "$OUT/fuzz_batch_read.txt"
  exit 1
fi
work=/tmp/fuzz-work
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp rust/fuzz/corpus/batch_read/* "$work/corpus/"
seeds=$(ls "$work/corpus" | wc -l)
log="$work/fuzz.log"
start=$SECONDS
ASAN_OPTIONS="malloc_context_size=0:detect_leaks=0" timeout $((secs + 60)) "$bin" "$work/corpus" \
  -fork="$workers" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
  -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=30 -detect_leaks=0 \
  -artifact_prefix="$work/artifacts/" -print_final_stats=1 > "$log" 2>&1
rc=$?
took=$((SECONDS - start))
# Fork mode's status lines: "#<execs>: cov: .. ft: .. corp: .. exec/s: .. oom/timeout/crash: o/t/c time: ..s job: .."
last="$(grep -E '^#[0-9]+: ' "$log" | tail -1)"
execs="$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")"
otc="$(grep -oE 'oom/timeout/crash: [0-9]+/[0-9]+/[0-9]+' <<<"$last" | awk '{print $2}')"
IFS=/ read -r ooms timeouts crashes <<<"${otc:-0/0/0}"
n_art=$(ls "$work/artifacts" | wc -l)
[ "$n_art" -gt 0 ] && tar -czf "$OUT/crashes.tar.gz" -C "$work" artifacts
{
  echo "machine: $(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs), load at the end: $(cut -d" " -f1-3 /proc/loadavg)"
  echo "seeds: $seeds (rust/fuzz/corpus/batch_read), corpus at end: $(ls "$work/corpus" | wc -l) inputs, $(du -sh "$work/corpus" | cut -f1)"
  echo "libFuzzer rc=$rc, wall $took s, workers $workers"
  echo "last status: $last"
  echo "artifacts: $n_art"
  echo "---- log tail"
  tail -40 "$log"
} > "$OUT/fuzz_batch_read.txt"
rate=$(( took > 0 ? ${execs:-0} / took : 0 ))
echo "fuzz_batch_read: ${execs:-0} executions in $took s ($rate exec/s), ${crashes:-0} crashes, ${timeouts:-0} timeouts, ${ooms:-0} ooms" | tee -a "$OUT/fuzz_batch_read.txt"
