#!/usr/bin/env python3
"""Where damacy.data.Augment's time goes on a device: torch.profiler over a few calls on a
batch like bench_augment.py's (image f32 + u8 label, batch 32 of 64x128x128), CPU and CUDA time
per op, then cProfile of the Python side (host time per function).
Usage: python dev/gpu/profile_augment.py [--device cuda] [--batch 32] [--sample 64 128 128]"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from damacy.data import Augment

p = argparse.ArgumentParser()
p.add_argument("--device", default="cuda")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--noise", type=float, default=0.1)
p.add_argument("--sample", type=int, nargs=3, default=[64, 128, 128])
a = p.parse_args()
dev = torch.device(a.device)
img = torch.rand(a.batch, *a.sample, device=dev)
lab = (torch.rand(a.batch, *a.sample, device=dev) * 4).to(torch.uint8)
aug = Augment(seed=0, flip_axes=(-3, -2, -1), rot90_plane=(-2, -1), scale=(0.9, 1.1), shift=(-0.1, 0.1), noise_std=a.noise)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
for e in range(3):
    aug({"image": img, "label": lab}, index=range(e * a.batch, (e + 1) * a.batch), epoch=e)
sync()
n = 20
t0 = time.perf_counter()
for e in range(n):
    aug({"image": img, "label": lab}, index=range(e * a.batch, (e + 1) * a.batch), epoch=e)
t_host = (time.perf_counter() - t0) / n
sync()
t_all = (time.perf_counter() - t0) / n
print(f"Augment batch {a.batch} on {dev}: {t_host * 1e3:.2f} ms host per call (unsynchronised), {t_all * 1e3:.2f} ms incl. device")
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
with profile(activities=acts) as prof:
    for e in range(5):
        aug({"image": img, "label": lab}, index=range(e * a.batch, (e + 1) * a.batch), epoch=e)
    sync()
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=22))

import cProfile
import pstats

pr = cProfile.Profile()
pr.enable()
for e in range(200):
    aug({"image": img, "label": lab}, index=range(e * a.batch, (e + 1) * a.batch), epoch=e)
pr.disable()
sync()
print("cProfile, 200 calls (host time; tottime per function):")
pstats.Stats(pr).sort_stats("tottime").print_stats(18)
