#!/usr/bin/env python3
"""Where one pop's time goes on the consumer thread: damacy.Pipeline.pop() on tiny batches,
split into the native pop, the native pushes (calls and time), the log drain, Sample
construction (the source builds them lazily, inside pop) and the rest of the Python.

The native object is wrapped in a timing proxy (push, push_many, pop), so the split adds a
little of its own; compare trees with this same script. Medians over the timed pops; the
consumer thread's CPU time per pop is printed too (less sensitive to a loaded machine than
wall time: a pop that waits for its batch sleeps).

    python bench/pop_overhead.py                 # 64x128x128 u16 volume, 16x32x32 crops, batch 8
    python bench/pop_overhead.py --pops 1000 --batch 4
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import damacy
from damacy import _log

pc = time.perf_counter_ns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"))
    p.add_argument("--pops", type=int, default=500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    shape, chunk, shard, crop = (64, 128, 128), (16, 32, 32), (32, 64, 64), (16, 32, 32)
    uri = str(Path(a.data_dir) / "example_u16_64x128x128_c16x32x32_s32x64x64_zstd.zarr")
    if not Path(uri, "zarr.json").exists():
        damacy._ops.call(damacy._ops.ops().write_example_volume, uri, list(shape), list(chunk), list(shard), "zstd", 0)

    acc = {"pop": 0, "push": 0, "calls": 0, "drain": 0, "sample": 0}

    class Timed:
        def __init__(self, native):
            self.native = native

        def push(self, *args):
            t = pc(); r = self.native.push(*args); acc["push"] += pc() - t; acc["calls"] += 1
            return r

        def push_many(self, *args):
            t = pc(); r = self.native.push_many(*args); acc["push"] += pc() - t; acc["calls"] += 1
            return r

        def pop(self, *args):
            t = pc(); r = self.native.pop(*args); acc["pop"] += pc() - t
            return r

        def __getattr__(self, name):
            return getattr(self.native, name)

    drain = _log.drain

    def timed_drain(ops):
        t = pc(); drain(ops); acc["drain"] += pc() - t

    _log.drain = timed_drain
    rng = random.Random(0)
    n = a.batch * (a.pops + 2)
    origins = [[rng.randrange(0, s - c + 1) for s, c in zip(shape, crop)] for _ in range(n)]

    def source():
        for o in origins:
            t = pc(); s = damacy.Sample(uri, [(x, x + c) for x, c in zip(o, crop)]); acc["sample"] += pc() - t
            yield s

    cfg = damacy.Config(samples_per_batch=a.batch, sample_shape=list(crop), dtype="f32", device="cpu", decode="cpu",
                        n_io_threads=a.threads, pop_timeout_s=120.0, decoded_cache_bytes=0)
    rows = []
    with damacy.Pipeline(cfg) as pipe:
        pipe._native = Timed(pipe._native)
        pipe.push(source())
        pipe.pop(); pipe.pop()
        cpu0 = time.thread_time_ns()
        for _ in range(a.pops):
            for k in acc:
                acc[k] = 0
            t0 = pc(); batch = pipe.pop(); total = pc() - t0
            del batch
            rows.append((total, acc["pop"], acc["push"], acc["calls"], acc["drain"], acc["sample"]))
        cpu = (time.thread_time_ns() - cpu0) / a.pops / 1e3

    def med(f):
        return statistics.median(f(r) for r in rows) / 1e3

    print(f"consumer-thread CPU per pop {cpu:.1f} us; per pop, median us: "
          f"python side {med(lambda r: r[0] - r[1]):.1f} (native pushes {med(lambda r: r[2]):.1f} in "
          f"{statistics.median(r[3] for r in rows):.0f} calls, drain {med(lambda r: r[4]):.1f}, "
          f"Sample() {med(lambda r: r[5]):.1f}, rest {med(lambda r: r[0] - r[1] - r[2] - r[4] - r[5]):.1f}); "
          f"native pop {med(lambda r: r[1]):.1f}; total {med(lambda r: r[0]):.1f}")


if __name__ == "__main__":
    main()
