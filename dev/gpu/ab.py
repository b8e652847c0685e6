"""A/B of one config knob on the GPU path: python dev/gpu/ab.py KNOB V1 V2 [codec]"""
import sys
import time

import numpy as np
import torch

import damacy

knob, values = sys.argv[1], [int(v) for v in sys.argv[2:4]]
codec = sys.argv[4] if len(sys.argv) > 4 else "blosc-zstd"
arrays = []
for i in range(8):
    p = f"/tmp/damacy-ab/{codec}-{i}.zarr"
    torch.ops.damacy.write_example_volume(p, [512, 512, 512], [32, 64, 64], [256, 256, 512], codec, i)
    arrays.append(p)
S = (128, 128, 128)
for v in values * 2:
    rng = np.random.default_rng(0)

    def gen():
        while True:
            a = arrays[int(rng.integers(8))]
            s = [int(rng.integers(0, 512 - 128)) for _ in range(3)]
            yield damacy.Sample(a, [(x, x + 128) for x in s])

    cfg = damacy.Config(samples_per_batch=32, sample_shape=S, device="cuda:0", decode="gpu", n_io_threads=16, **{knob: v})
    with damacy.Pipeline(cfg) as p:
        p.push(gen())
        for _ in p.batches(5):
            pass
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in p.batches(40):
            pass
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        st = p.stats().as_dict()
    print(f"{knob}={v}: {40 * 32 / dt:.1f} crops/s  layout {st['chunk_layout']}  io {st['time_io_s']:.2f}s", flush=True)
