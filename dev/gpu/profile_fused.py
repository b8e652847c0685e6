#!/usr/bin/env python3
"""Where a CropDataset batch's time goes on CUDA with Augment fused into the pipeline, on batch,
or off: torch.profiler over N batches of bench_augment.py's pair (f32 image + u8 label of one
u16 volume), per setting the device time of each kernel per batch and the wall time per batch.
Usage: python dev/gpu/profile_fused.py --path VOL.zarr [--batch 8] [--batches 200] [--noise 0.1]"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

import damacy
from damacy.data import Augment, CropDataset, RandomCrops

p = argparse.ArgumentParser()
p.add_argument("--path", required=True)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--batches", type=int, default=200)
p.add_argument("--noise", type=float, default=0.1)
p.add_argument("--sample", type=int, nargs=3, default=[64, 128, 128])
p.add_argument("--threads", type=int, default=16)
a = p.parse_args()
if not (__import__("pathlib").Path(a.path) / "zarr.json").exists():  # bench_augment.py's volume
    torch.ops.damacy.write_example_volume(a.path, [128, 512, 512], [32, 64, 64], [64, 128, 128], "zstd", 0)
aug = Augment(seed=0, flip_axes=(-3, -2, -1), rot90_plane=(-2, -1), scale=(0.9, 1.1), shift=(-0.1, 0.1), noise_std=a.noise)
real = CropDataset._fused_augment


def epoch(transform, fuse, prof=None):
    CropDataset._fused_augment = real if fuse else (lambda self, configs: None)
    n = a.batch * a.batches
    ds = CropDataset([{"image": a.path, "label": a.path}], RandomCrops(a.sample, seed=0, num_samples=n), samples_per_batch=a.batch,
                     dtype={"image": "f32", "label": "u8"}, device="cuda", transform=transform,
                     config=damacy.Config(n_io_threads=a.threads))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in DataLoader(ds, batch_size=None):
        b["image"].sum()
        if prof is not None:
            prof.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / a.batches * 1e3


epoch(None, True)
for name, tr, fuse in (("plain", None, True), ("fused", [aug], True), ("on batch", [aug], False)):
    ms = [epoch(tr, fuse) for _ in range(3)]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        epoch(tr, fuse)
    rows = sorted(((e.key, e.device_time_total) for e in prof.key_averages() if e.device_time_total > 0), key=lambda r: -r[1])
    print(f"{name}: wall {min(ms):.3f} ms/batch (best of {ms}); device time per batch:")
    for k, t in rows[:8]:
        print(f"    {t / a.batches / 1e3:8.3f} ms  {k[:100]}")
