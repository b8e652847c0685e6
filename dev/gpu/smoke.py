"""GPU smoke test: the device path equals the CPU path on the example volumes, and a first
timing. python dev/gpu/smoke.py [--big]"""
import sys
import time

import numpy as np
import torch

import damacy

print(damacy.gpu_info())
big = "--big" in sys.argv
shape, chunk, shard = ((512, 512, 512), (32, 64, 64), (256, 256, 512)) if big else ((96, 128, 160), (16, 32, 32), (32, 64, 64))
S = (128, 128, 128) if big else (20, 33, 47)
B = 32 if big else 8
for codec in ("zstd", "blosc-zstd"):
    path = f"/tmp/damacy-smoke-{codec}-{'big' if big else 'small'}.zarr"
    t = time.perf_counter()
    torch.ops.damacy.write_example_volume(path, list(shape), list(chunk), list(shard), codec, 7)
    print(f"{codec}: wrote {shape} in {time.perf_counter() - t:.1f} s")
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(B * 6):
        s = [int(rng.integers(0, n - e + 4)) for n, e in zip(shape, S)]
        boxes.append([(a, a + e) for a, e in zip(s, S)])
    out = {}
    for dev, dec in (("cpu", "cpu"), ("cuda:0", "gpu")):
        cfg = damacy.Config(samples_per_batch=B, sample_shape=S, device=dev, decode=dec,
                            out_of_bounds="fill", n_io_threads=16, lookahead_samples=B * 3,
                            staging_bytes=1 << 30, pop_timeout_s=120)
        with damacy.Pipeline(cfg) as p:
            p.push(damacy.Sample(path, b) for b in boxes)
            t = time.perf_counter()
            res = [b.clone() if dev == "cpu" else b.cpu() for b in p.batches(len(boxes) // B)]
            dt = time.perf_counter() - t
            print(f"  {dev:7s} {len(boxes) / dt:8.1f} samples/s  {p.stats().as_dict().get('time_decode_s')}")
        out[dev] = torch.stack(res)
    a, g = out["cpu"], out["cuda:0"]
    bad = (a.view(torch.int32) != g.view(torch.int32)).sum().item()
    print(f"  {codec}: GPU vs CPU: {bad} of {a.numel()} voxels differ")
    assert bad == 0
    # timing, GPU only
    if big:
        cfg = damacy.Config(samples_per_batch=B, sample_shape=S, device="cuda:0", decode="gpu",
                            n_io_threads=16, lookahead_samples=B * 4, staging_bytes=1 << 30)
        with damacy.Pipeline(cfg) as p:
            def gen():
                r = np.random.default_rng(1)
                while True:
                    s = [int(r.integers(0, n - e + 1)) for n, e in zip(shape, S)]
                    yield damacy.Sample(path, [(x, x + e) for x, e in zip(s, S)])
            p.push(gen())
            for b in p.batches(3):
                pass
            torch.cuda.synchronize()
            t = time.perf_counter()
            n = 0
            for b in p.batches(20):
                n += b.shape[0]
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            print(f"  GPU steady: {n / dt:.1f} samples/s, {n * np.prod(S) * 4 / dt / 1e9:.2f} GB/s out")
            print("  stats", p.stats().as_dict())
print("SMOKE OK")
