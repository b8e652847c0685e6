#!/usr/bin/env python3
"""CropDataset through torch's DataLoader: samples/s for several num_workers.

The same RandomCrops epoch (seeded) is read with each --workers value, one DataLoader each
(startup included: workers fork and make their pipelines inside the timed region, as a
training epoch would), after one untimed warm-up pass so the page cache is warm for all.
Optionally an image+label pair (--label) to include the second pipeline.

    python bench/bench_dataloader.py                          # 64x256x256 volume, 32x64x64 crops
    python bench/bench_dataloader.py --workers 0 2 4 --threads 4 --samples 512
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import damacy
from damacy.data import CropDataset, RandomCrops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", default=str(Path.home() / ".cache" / "damacy" / "example" / "bench-dataloader.zarr"))
    p.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256])
    p.add_argument("--chunk", type=int, nargs=3, default=[32, 64, 64])
    p.add_argument("--shard", type=int, nargs=3, default=[64, 128, 128])
    p.add_argument("--sample", type=int, nargs=3, default=[32, 64, 64])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--samples", type=int, default=256, help="samples per epoch")
    p.add_argument("--threads", type=int, default=2, help="n_io_threads: the budget shared by the workers")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--label", action="store_true", help="also read a second (u8) array per sample")
    p.add_argument("--label-dtype", default="u8", help="the label key's output dtype (u8, i32, i64)")
    p.add_argument("--repeat", type=int, default=2, help="timed passes per setting (best is reported)")
    p.add_argument("--step-ms", type=float, default=0.0,
                   help="per batch, the main process sleeps this long (a training step on a GPU: the CPU is free)")
    args = p.parse_args()

    path = Path(args.path)
    if not (path / "zarr.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.ops.damacy.write_example_volume(str(path), args.shape, args.chunk, args.shard, "zstd", 0)
    arrays = [{"image": str(path), "label": str(path)}] if args.label else [str(path)]
    dtype = {"image": "f32", "label": args.label_dtype} if args.label else "f32"
    ds = CropDataset(arrays, RandomCrops(args.sample, seed=0, num_samples=args.samples), samples_per_batch=args.batch,
                     dtype=dtype, config=damacy.Config(n_io_threads=args.threads))

    def run(nw: int) -> float:
        t0 = time.perf_counter()
        n = 0
        for batch in DataLoader(ds, batch_size=None, num_workers=nw):
            n += (batch["image"] if isinstance(batch, dict) else batch).shape[0]
            if args.step_ms:
                time.sleep(args.step_ms / 1e3)
        assert n == args.samples
        return time.perf_counter() - t0

    run(0)  # warm the page cache
    mb = args.batch * 4 * torch.Size(args.sample).numel() / 1e6
    print(f"{args.samples} samples {tuple(args.sample)} of {tuple(args.shape)} (chunk {tuple(args.chunk)}, shard "
          f"{tuple(args.shard)}, zstd), batch {args.batch} ({mb:.1f} MB f32), n_io_threads {args.threads}"
          f"{f', + {args.label_dtype} label' if args.label else ''}, step {args.step_ms} ms, torch threads {torch.get_num_threads()}")
    for nw in args.workers:
        dt = min(run(nw) for _ in range(args.repeat))
        print(f"  num_workers={nw}: {dt:.2f} s, {args.samples / dt:.0f} samples/s")


if __name__ == "__main__":
    main()
