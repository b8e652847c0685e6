#!/usr/bin/env python3
"""What the prefetcher and planner save on the demo workload, CPU decode, side by side with
tensorstore on the same boxes:
- read ops with and without coalescing (max_read_op_bytes=1 turns it off);
- chunk reads with and without dedupe (without it, every chunk copy would be a read and a
  decode: copies = read ops × chunk_reuse; bytes likewise);
- cache hit rates (array_meta, shard_index), how many samples the prefetcher had READY
  before the planner reached them;
- samples/s of each, and of the foundation's run recorded in bench/results/cpu-plan-2core.json.

    python bench/bench_plan.py [--uri URI] [--batches 40] [--threads 2] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import damacy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_read import TensorstoreReader, machine, prime_page_cache, random_boxes, run_peer  # noqa: E402

WARMUP = 3


def run(uri: str, boxes, sample, batch: int, threads: int, **extra) -> dict:
    cfg = damacy.Config(samples_per_batch=batch, sample_shape=list(sample), n_io_threads=threads, **extra)
    n = len(boxes) // batch
    with damacy.Pipeline(cfg) as p:
        p.push(damacy.Sample(uri, b) for b in boxes)
        for _ in p.batches(WARMUP):
            pass
        t = time.perf_counter()
        for _ in p.batches(n - WARMUP):
            pass
        dt = time.perf_counter() - t
        st = p.stats().as_dict()
    st["samples_per_s"] = (n - WARMUP) * batch / dt
    return st


def run_tensorstore(uri: str, boxes, batch: int, threads: int) -> dict:
    batches = [boxes[i:i + batch] for i in range(0, len(boxes), batch)]
    reader = TensorstoreReader(uri, threads)
    times = run_peer(reader, batches)
    dt = times[-1] - times[WARMUP - 1]
    return {"samples_per_s": (len(batches) - WARMUP) * batch / dt}


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
    prime_page_cache(Path(a.uri))
    info = damacy.array_info(a.uri)
    shape, sample, batch = info["shape"], (64, 128, 128), 8
    boxes = random_boxes(shape, sample, (a.batches + WARMUP) * batch, seed=0)
    rows = {
        "damacy, coalesced (default)": run(a.uri, boxes, sample, batch, a.threads),
        "damacy, no coalescing (max_read_op_bytes=1)": run(a.uri, boxes, sample, batch, a.threads, max_read_op_bytes=1),
        "tensorstore (same boxes)": run_tensorstore(a.uri, boxes, batch, a.threads),
    }
    old = HERE / "results" / "cpu-plan-2core.json"
    if old.exists():
        rows["foundation (cpu-plan-2core.json)"] = {"samples_per_s": json.loads(old.read_text())["coalesced (default)"]["samples_per_s"]}
    print(f"# {a.uri}: {shape}, crops {sample}, batch {batch}, {a.threads} threads, {a.batches} timed batches")
    print(f"{'':46s} {'samples/s':>9s} {'read ops':>8s} {'chunk reads':>11s} {'no dedupe':>9s} {'MB read':>8s} "
          f"{'no dedupe':>9s} {'meta hit':>8s} {'shard hit':>9s} {'ready ahead':>11s}")
    ts = rows["tensorstore (same boxes)"]["samples_per_s"]
    for name, st in rows.items():
        if "read_ops" not in st:
            print(f"{name:46s} {st['samples_per_s']:9.1f}")
            continue
        rate = lambda c: c["hits"] / max(1, c["hits"] + c["misses"])  # noqa: E731
        pf = st["prefetch"]
        ahead = pf["samples_ready_ahead"] / max(1, st["samples_pushed"])
        st["derived"] = {
            "chunk_reads_without_dedupe": round(st["read_ops"] * st["chunk_reuse"]),
            "bytes_without_dedupe": round(st["bytes_read"] * st["chunk_reuse"]),
            "array_meta_hit_rate": rate(st["array_meta"]),
            "shard_index_hit_rate": rate(st["shard_index"]),
            "ready_ahead_fraction": ahead,
            "vs_tensorstore": st["samples_per_s"] / ts,
        }
        d = st["derived"]
        print(f"{name:46s} {st['samples_per_s']:9.1f} {st['coalesced_read_ops']:8d} {st['read_ops']:11d} "
              f"{d['chunk_reads_without_dedupe']:9d} {st['bytes_read'] / 1e6:8.1f} {d['bytes_without_dedupe'] / 1e6:9.1f} "
              f"{d['array_meta_hit_rate']:8.3f} {d['shard_index_hit_rate']:9.3f} {ahead:11.2f}")
    print(f"# damacy (default) / tensorstore = {rows['damacy, coalesced (default)']['samples_per_s'] / ts:.2f}x")
    if a.out:
        out = HERE / "results" / f"{a.out}.json"
        out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
        print(f"# wrote {out}")


if __name__ == "__main__":
    main()
