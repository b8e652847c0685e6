#!/usr/bin/env python3
"""What the planner saves on the demo workload: read ops with and without coalescing
(max_read_op_bytes=1 turns it off), decodes saved by chunk dedupe within a batch (chunk
copies per decoded chunk), cache hit rates, and samples/s of each, CPU decode.

    python bench/bench_plan.py [--uri URI] [--batches 40] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import damacy

HERE = Path(__file__).resolve().parent


def run(uri: str, shape, sample, batch: int, batches: int, threads: int, **extra) -> dict:
    rng = np.random.default_rng(0)

    def samples():
        while True:
            s = [int(rng.integers(0, n - e + 1)) for n, e in zip(shape, sample)]
            yield damacy.Sample(uri, [(a, a + e) for a, e in zip(s, sample)])

    cfg = damacy.Config(samples_per_batch=batch, sample_shape=list(sample), n_io_threads=threads, **extra)
    with damacy.Pipeline(cfg) as p:
        p.push(samples())
        for _ in p.batches(3):
            pass
        t = time.perf_counter()
        for _ in p.batches(batches):
            pass
        dt = time.perf_counter() - t
        st = p.stats().as_dict()
    st["samples_per_s"] = batches * batch / dt
    return st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default=str(HERE / "data" / "example_u16_256x512x512_c32x64x64_s128x256x256_zstd.zarr"))
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not Path(a.uri, "zarr.json").exists():
        import torch
        torch.ops.damacy.write_example_volume(a.uri, [256, 512, 512], [32, 64, 64], [128, 256, 256], "zstd", 0)
    info = damacy.array_info(a.uri)
    shape, sample, batch = info["shape"], (64, 128, 128), 8
    rows = {
        "coalesced (default)": run(a.uri, shape, sample, batch, a.batches, a.threads),
        "no coalescing (max_read_op_bytes=1)": run(a.uri, shape, sample, batch, a.batches, a.threads, max_read_op_bytes=1),
    }
    print(f"# {a.uri}: {shape}, crops {sample}, batch {batch}, {a.threads} threads, {a.batches} timed batches")
    print(f"{'':38s} {'samples/s':>10s} {'read ops':>9s} {'chunks':>8s} {'MB read':>8s} {'copies/chunk':>12s} {'shard idx hit':>13s}")
    for name, st in rows.items():
        idx = st["shard_index"]
        hit = idx["hits"] / max(1, idx["hits"] + idx["misses"])
        print(f"{name:38s} {st['samples_per_s']:10.1f} {st['coalesced_read_ops']:9d} {st['read_ops']:8d} "
              f"{st['bytes_read'] / 1e6:8.1f} {st['chunk_reuse']:12.2f} {hit:13.3f}")
    if a.out:
        out = HERE / "results" / f"{a.out}.json"
        out.write_text(json.dumps(rows, indent=1))
        print(f"# wrote {out}")


if __name__ == "__main__":
    main()
