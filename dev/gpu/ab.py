"""A/B of one config knob on the GPU path: python dev/gpu/ab.py KNOB V1 V2 [codec]

Eight 512^3 uint16 arrays; geometry from the environment: AB_CHUNK (default 32,64,64),
AB_SHARD (256,256,512), AB_SAMPLE (128,128,128), AB_BATCH (32)."""
import os
import sys
import time

import numpy as np
import torch

import damacy

knob, values = sys.argv[1], [int(v) for v in sys.argv[2:4]]
codec = sys.argv[4] if len(sys.argv) > 4 else "blosc-zstd"

def ints(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",")]


CHUNK, SHARD, S, B = ints("AB_CHUNK", "32,64,64"), ints("AB_SHARD", "256,256,512"), tuple(ints("AB_SAMPLE", "128,128,128")), ints("AB_BATCH", "32")[0]
arrays = []
for i in range(8):
    p = f"/tmp/damacy-ab/{codec}-{'x'.join(map(str, CHUNK))}-{i}.zarr"
    if not os.path.exists(p + "/zarr.json"):
        torch.ops.damacy.write_example_volume(p, [512, 512, 512], CHUNK, SHARD, codec, i)
    arrays.append(p)
for v in values * 2:
    rng = np.random.default_rng(0)

    def gen():
        while True:
            a = arrays[int(rng.integers(8))]
            s = [int(rng.integers(0, 512 - e)) for e in S]
            yield damacy.Sample(a, [(x, x + e) for x, e in zip(s, S)])

    cfg = damacy.Config(samples_per_batch=B, sample_shape=S, device="cuda:0", decode="gpu", n_io_threads=16, **{knob: v})
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
    print(f"{knob}={v}: {40 * B / dt:.1f} crops/s  layout {st['chunk_layout']}  blocks decoded/skipped "
          f"{st['blosc_blocks_decoded']}/{st['blosc_blocks_skipped']}  io {st['time_io_s']:.2f}s", flush=True)
