#!/usr/bin/env python3
"""GPU random-crop throughput: damacy (GPU decode, CPU decode) vs tensorstore vs zarr-python.

Every reader delivers the same thing: a float32 CUDA tensor [batch, *sample_shape] on
--device per batch, from the same seeded boxes.

Workload (the issue's): --arrays (8) uint16 arrays of 512^3, a synthetic microscopy stack
written by torch.ops.damacy.write_example_volume (multithreaded), inner chunk 32x64x64,
shard 256x256x512, codec zstd level 3 -- and the same arrays again with blosc-zstd (clevel
3, byte shuffle). Crops 128^3 at uniformly random starts (so almost always unaligned) spread
over the arrays, 32 per batch, f32 out. Every file is read once before timing (warm page
cache).

Readers:
- damacy_gpu: Pipeline(device=cuda:0, decode="gpu"): compressed bytes staged in pinned
  slabs, nvCOMP + damacy kernels on the current stream. Every sample pushed as one lazy source.
- damacy_cpu: Pipeline(device=cuda:0, decode="cpu"): decoded and assembled on the CPU, the
  batch copied to the GPU.
- tensorstore: one read future per box of a batch (one shared context, --threads file I/O
  and data-copy concurrency, no cache), each writing straight into a pinned uint16 batch
  buffer (ts.array(..., copy=False)); the next batch's reads are issued before the current
  batch is finished (one batch of lookahead); H2D copy, then the f32 cast on the GPU.
- zarr: a ThreadPoolExecutor of --threads workers, one get_basic_selection(out=pinned view)
  per box, the same lookahead, H2D and cast.

Reported per codec and reader: samples/s, GB/s of f32 output, median batch time, time to
first batch (from Pipeline / reader construction to the first batch on the GPU,
synchronized), damacy's read / staged / decoded GB/s (from its stats), ratios (damacy_gpu /
tensorstore, ...) and the fractions of the ceilings measured by bench/ceilings.py (pinned
H2D, D2D copy, page-cache read with --threads threads, damacy decode on aligned chunks).
Each reader is time-boxed (--seconds for damacy, --peer-seconds for the peers; --max-batches
caps both). Before timing, the readers must agree exactly on --check boxes.

--profile adds, per codec, a breakdown of the damacy GPU reader over --profile-batches
batches: pop wall time vs the GPU time between CUDA events around the pop, the wait inside
pop before its first CUDA call (the batch was not staged yet), device time per category
(H2D memcpy, nvCOMP kernels, assemble, ...) from torch.profiler, CUDA runtime calls and the
pipeline's own timers. --trace DIR also writes the Chrome traces.

    python bench/bench_gpu.py --quick                     # 2 arrays, 10 batches per reader
    python bench/bench_gpu.py --out /tmp/gpu.json         # default run (~5 min on an H100)
    python bench/bench_gpu.py --readers damacy_gpu,tensorstore --codecs zstd --profile

Without a CUDA device it says so and exits 0 having measured nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_read as BR  # noqa: E402  (machine, versions, prime_page_cache, _slices)
import ceilings as C  # noqa: E402

READERS = ("damacy_gpu", "damacy_cpu", "tensorstore", "zarr")
CODECS = ("zstd", "blosc-zstd")
GB = 1e9
MiB = 1 << 20


# ------------------------------------------------------------------------------ data


def ensure_arrays(data_dir: Path, codec: str, n: int, shape, chunk, shard, seed: int) -> list[str]:
    """The `n` arrays of `codec`, written unless a stamp beside each says they exist."""
    import damacy

    data_dir.mkdir(parents=True, exist_ok=True)
    geo = "u16_{}_c{}_s{}".format(*("x".join(map(str, v)) for v in (shape, chunk, shard)))
    uris = []
    for i in range(n):
        path = data_dir / f"{geo}_{codec}_{i}.zarr"
        stamp = data_dir / f"{geo}_{codec}_{i}.json"
        want = {"shape": list(shape), "chunk": list(chunk), "shard": list(shard), "codec": codec,
                "seed": seed + i}
        if not (stamp.exists() and (path / "zarr.json").exists()
                and json.loads(stamp.read_text()) == want):
            t0 = time.perf_counter()
            stamp.unlink(missing_ok=True)
            damacy._ops.call(damacy._ops.ops().write_example_volume, str(path), list(shape),
                             list(chunk), list(shard), codec, seed + i)
            stamp.write_text(json.dumps(want))
            print(f"# wrote {path.name} in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        uris.append(str(path.resolve()))
    return uris


def make_batches(n_arrays: int, shape, sample, batch: int, n_batches: int, seed: int):
    """`n_batches` lists of `batch` (array index, box) pairs; uniformly random starts."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        items = []
        for _ in range(batch):
            a = int(rng.integers(n_arrays))
            starts = [int(rng.integers(0, s - e + 1)) for s, e in zip(shape, sample)]
            items.append((a, tuple((st, st + e) for st, e in zip(starts, sample))))
        out.append(items)
    return out


# ------------------------------------------------------------------------------ timing


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def summarize(n_batches: int, batch: int, sample_bytes: int, t_start: float, t_end: float,
              times: list[float]) -> dict:
    dt = t_end - t_start
    gaps = np.diff([t_start, *times]) if times else np.array([dt])
    sps = n_batches * batch / dt if dt > 0 else 0.0
    return {
        "batches": n_batches,
        "seconds": dt,
        "samples_per_s": sps,
        "batches_per_s": sps / batch,
        "out_GBps": sps * sample_bytes / GB,
        "batch_ms_median": 1e3 * float(np.median(gaps)),
        "batch_ms_p90": 1e3 * float(np.percentile(gaps, 90)),
        "batch_ms_max": 1e3 * float(np.max(gaps)),
    }


def _stats_delta(s0, s1, dt: float, chunk_bytes: int) -> dict:
    d = lambda k: (s1[k] - s0[k]) if (k in s0 and k in s1) else 0  # noqa: E731
    chunks = d("read_ops")
    return {
        "read_GBps": d("bytes_read") / dt / GB,
        "staged_GBps": d("staged_bytes") / dt / GB,
        "decoded_GBps": chunks * chunk_bytes / dt / GB,
        "chunks_per_s": chunks / dt,
        "cpu_time_io_s_per_s": d("time_io_s") / dt,
        "cpu_time_decode_s_per_s": d("time_decode_s") / dt,
        "cpu_time_assemble_s_per_s": d("time_assemble_s") / dt,
        "cpu_time_plan_s_per_s": d("time_plan_s") / dt,
        "batch_latency_p50_ms": s1.get("batch_latency_p50_ms"),
        "batch_latency_p99_ms": s1.get("batch_latency_p99_ms"),
        "buffers_allocated": s1.get("buffers_allocated"),
    }


# ------------------------------------------------------------------------------ damacy


def damacy_config(a, batch: int, decode: str, check: bool = False):
    import damacy

    kw = dict(samples_per_batch=batch, sample_shape=list(a.sample_shape), dtype="f32",
              device=a.device, decode=decode, n_io_threads=a.threads, pop_timeout_s=300.0)
    if a.staging_mib:
        kw["staging_bytes"] = a.staging_mib * MiB
    if a.lookahead_batches and not check:
        kw["lookahead_samples"] = a.lookahead_batches * batch
    return damacy.Config(**kw)


def read_damacy_once(a, uris, items, decode: str) -> torch.Tensor:
    import damacy

    with damacy.Pipeline(damacy_config(a, len(items), decode, check=True)) as pipe:
        pipe.push(damacy.Sample(uris[i], b) for i, b in items)
        t = pipe.pop()
        assert t.device == torch.device(a.device), t.device
        return t.cpu()


def drop_page_cache() -> bool:
    """Drops the page cache (needs root); False when not possible here."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run_damacy(a, uris, batches, decode: str, chunk_bytes: int, profile: bool, label: str) -> dict:
    import damacy

    batch = len(batches[0])
    sample_bytes = int(np.prod(a.sample_shape)) * 4
    cfg = damacy_config(a, batch, decode)
    _sync()
    t0 = time.perf_counter()
    pipe = damacy.Pipeline(cfg)
    try:
        pipe.push(damacy.Sample(uris[i], b) for bt in batches for i, b in bt)
        first = pipe.pop()
        _sync()
        ttfb = time.perf_counter() - t0
        assert first.device == torch.device(a.device) and first.dtype == torch.float32
        assert tuple(first.shape) == (batch, *a.sample_shape), tuple(first.shape)
        del first
        for _ in range(max(a.warmup - 1, 0)):
            pipe.pop()
        _sync()
        s0 = pipe.stats().as_dict()
        limit = min(a.max_batches, len(batches) - max(a.warmup, 1) - (a.profile_batches if profile else 0))
        times = []
        t_start = time.perf_counter()
        n = 0
        while n < limit:
            b = pipe.pop()
            del b
            n += 1
            times.append(time.perf_counter())
            if times[-1] - t_start >= a.seconds:
                break
        _sync()
        t_end = time.perf_counter()
        s1 = pipe.stats().as_dict()
        res = summarize(n, batch, sample_bytes, t_start, t_end, times)
        res["ttfb_s"] = ttfb
        res.update(_stats_delta(s0, s1, t_end - t_start, chunk_bytes))
        if profile and a.profile_batches:
            try:
                res["profile"] = profile_damacy(pipe, a.profile_batches, chunk_bytes, a.trace, label)
            except Exception as e:  # noqa: BLE001 - optional
                traceback.print_exc()
                res["profile"] = {"error": f"{type(e).__name__}: {e}"}
    finally:
        pipe.close()
    return res


def profile_damacy(pipe, k: int, chunk_bytes: int, trace_dir: str | None, label: str) -> dict:
    """Pops `k` batches, each timed by wall clock and by CUDA events around the pop, then
    synchronized (so each batch's tail is measured alone), under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile, record_function

    walls, spans, tails = [], [], []
    torch.cuda.synchronize()
    s0 = pipe.stats().as_dict()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(k):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            ta = time.perf_counter()
            with record_function("damacy.pop"):
                b = pipe.pop()
            tb = time.perf_counter()
            e1.record()
            del b
            torch.cuda.synchronize()
            tc = time.perf_counter()
            walls.append(tb - ta)
            spans.append(e0.elapsed_time(e1) / 1e3)
            tails.append(tc - tb)
    dt = time.perf_counter() - t0
    s1 = pipe.stats().as_dict()
    summary = C.summarize_profile(prof, "damacy.pop")
    if trace_dir:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        path = Path(trace_dir) / f"damacy_gpu_{label}.json"
        prof.export_chrome_trace(str(path))
        print(f"# wrote {path}", file=sys.stderr)
    dev_s = {c: us / 1e6 / k for c, us in summary["device_us"].items()}
    win = summary["windows"]
    chunks = (s1.get("read_ops", 0) - s0.get("read_ops", 0)) / k
    staged = (s1.get("staged_bytes", 0) - s0.get("staged_bytes", 0)) / k
    nv = dev_s.get("nvCOMP (other kernels)", 0.0)
    h2d = dev_s.get("H2D memcpy", 0.0)
    out = {
        "batches": k,
        "pop_wall_ms_median": 1e3 * statistics.median(walls),
        "gpu_span_ms_median": 1e3 * statistics.median(spans),
        "gpu_busy_ms_per_batch": 1e3 * sum(dev_s.values()),
        "tail_after_pop_ms_median": 1e3 * statistics.median(tails),
        "wait_before_first_cuda_call_ms_median": (statistics.median(w["wait_us"] for w in win) / 1e3) if win else None,
        "cuda_part_of_pop_ms_median": (statistics.median(w["run_us"] for w in win) / 1e3) if win else None,
        "device_ms_per_batch": {c: 1e3 * v for c, v in sorted(dev_s.items(), key=lambda kv: -kv[1])},
        "nvcomp_decoded_GBps_of_kernel_time": (chunks * chunk_bytes / nv / GB) if nv else None,
        "h2d_GBps_of_memcpy_time": (staged / h2d / GB) if h2d else None,
        "cuda_api_ms_per_batch": {n: (c / k, us / 1e3 / k) for n, (c, us) in
                                  sorted(summary["api"].items(), key=lambda kv: -kv[1][1])[:10]},
        "top_kernels_ms_per_batch": {n: us / 1e3 / k for n, us in
                                     sorted(summary["kernels_us"].items(), key=lambda kv: -kv[1])[:6]},
        "pipeline_cpu_s_per_batch": {key: (s1.get(key, 0) - s0.get(key, 0)) / k for key in
                                     ("time_plan_s", "time_io_s", "time_decode_s", "time_assemble_s")},
        "chunks_per_batch": chunks,
        "staged_MB_per_batch": staged / 1e6,
        "seconds": dt,
    }
    return out


def print_profile(p: dict, label: str) -> None:
    if "error" in p:
        print(f"  profile [{label}]: {p['error']}")
        return
    f = lambda v: f"{'n/a':>8s}" if v is None else f"{v:8.2f}"  # noqa: E731
    print(f"  damacy_gpu profile [{label}], {p['batches']} batches, each synchronized "
          f"({p['chunks_per_batch']:.0f} chunks, {p['staged_MB_per_batch']:.1f} MB staged per batch):")
    print(f"    pop wall time                         {f(p['pop_wall_ms_median'])} ms (median)")
    print(f"      waiting for the staged batch      {f(p['wait_before_first_cuda_call_ms_median'])} ms "
          "(pop start -> first CUDA call)")
    print(f"      device run inside pop             {f(p['cuda_part_of_pop_ms_median'])} ms "
          "(first CUDA call -> pop end; includes the decode-status sync)")
    print(f"    GPU busy per batch (kernels + copies) {f(p['gpu_busy_ms_per_batch'])} ms "
          f"({100 * p['gpu_busy_ms_per_batch'] / p['pop_wall_ms_median']:.0f} % of pop wall)")
    print(f"    CUDA events before/after pop          {f(p['gpu_span_ms_median'])} ms "
          "(GPU clock; includes idle while the batch was staged)")
    print(f"    tail after pop until synchronized     {f(p['tail_after_pop_ms_median'])} ms")
    print("    device time per batch (torch.profiler):")
    for c, ms in p["device_ms_per_batch"].items():
        print(f"      {c:<34s}  {ms:8.2f} ms")
    print(f"    nvCOMP decoded GB/s of kernel time    {f(p['nvcomp_decoded_GBps_of_kernel_time'])}")
    print(f"    H2D GB/s of memcpy time               {f(p['h2d_GBps_of_memcpy_time'])}")
    print("    top kernels per batch:")
    for n, ms in p["top_kernels_ms_per_batch"].items():
        print(f"      {ms:8.2f} ms  {n}")
    print("    CUDA runtime calls per batch (calls, CPU ms):")
    for n, (c, ms) in p["cuda_api_ms_per_batch"].items():
        print(f"      {n:<34s}  {c:6.1f}  {ms:8.2f} ms")
    print("    pipeline worker time per batch (summed over threads):")
    for n, s in p["pipeline_cpu_s_per_batch"].items():
        print(f"      {n:<34s}  {1e3 * s:8.2f} ms")


# ------------------------------------------------------------------------------ peers


class PeerGPU:
    """tensorstore or zarr-python reads into pinned uint16 batch buffers (two, used in turn),
    H2D copy, f32 cast on the device."""

    def __init__(self, kind: str, uris, threads: int, batch: int, sample_shape, device: str):
        self.kind = kind
        self.device = torch.device(device)
        self.batch = batch
        self.threads = threads
        if kind == "tensorstore":
            import tensorstore as ts

            self.ts = ts
            ctx = ts.Context({
                "data_copy_concurrency": {"limit": threads},
                "file_io_concurrency": {"limit": threads},
                "cache_pool": {"total_bytes_limit": 0},
            })
            opens = [ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": u}},
                             read=True, open=True, context=ctx) for u in uris]
            self.arrs = [f.result() for f in opens]
            np_dtype = np.dtype(self.arrs[0].dtype.numpy_dtype)
        else:
            import zarr
            from zarr.core.buffer.cpu import NDBuffer

            self.NDBuffer = NDBuffer
            self.arrs = [zarr.open_array(u, mode="r") for u in uris]
            self.pool = cf.ThreadPoolExecutor(threads)
            np_dtype = np.dtype(self.arrs[0].dtype)
        if np_dtype != np.uint16:
            raise ValueError(f"the GPU peers expect uint16 arrays, found {np_dtype}")
        shape = (batch, *sample_shape)
        # torch has only limited uint16 support: pinned int16 buffers carry the bits.
        self.cuda = self.device.type == "cuda"
        self.host = [torch.empty(shape, dtype=torch.int16, pin_memory=self.cuda) for _ in range(2)]
        self.host_np = [h.numpy().view(np.uint16) for h in self.host]
        self.copied = [None, None]  # event: the buffer's H2D copy finished
        self.slot = 0

    def issue(self, items):
        """Starts reading `items` (array index, box) into the next pinned buffer."""
        k = self.slot
        self.slot ^= 1
        if self.copied[k] is not None:
            self.copied[k].synchronize()
            self.copied[k] = None
        dst = self.host_np[k]
        if self.kind == "tensorstore":
            ts = self.ts
            futs = [ts.array(dst[j], copy=False, write=True).write(self.arrs[i][BR._slices(b)])
                    for j, (i, b) in enumerate(items)]
        else:
            futs = [self.pool.submit(self.arrs[i].get_basic_selection, BR._slices(b),
                                     out=self.NDBuffer.from_numpy_array(dst[j]))
                    for j, (i, b) in enumerate(items)]
        return k, len(items), futs

    def finish(self, handle) -> torch.Tensor:
        k, n, futs = handle
        for f in futs:
            f.result()
        d = self.host[k][:n].to(self.device, non_blocking=True)
        if self.cuda:
            ev = torch.cuda.Event()
            ev.record()
            self.copied[k] = ev
        else:
            d = d.clone()
        # int16 bits -> uint16 value -> f32
        return d.to(torch.int32).bitwise_and_(0xFFFF).to(torch.float32)

    def close(self) -> None:
        if self.kind == "zarr":
            self.pool.shutdown()
        _sync()


def run_peer(a, kind: str, uris, batches) -> dict:
    batch = len(batches[0])
    sample_bytes = int(np.prod(a.sample_shape)) * 4
    _sync()
    t0 = time.perf_counter()
    reader = PeerGPU(kind, uris, a.threads, batch, a.sample_shape, a.device)
    try:
        pending = reader.issue(batches[0])
        i = 0

        def step():
            nonlocal pending, i
            nxt = reader.issue(batches[i + 1]) if i + 1 < len(batches) else None
            t = reader.finish(pending)
            pending = nxt
            i += 1
            return t

        first = step()
        _sync()
        ttfb = time.perf_counter() - t0
        assert first.device == torch.device(a.device) and tuple(first.shape) == (batch, *a.sample_shape)
        del first
        for _ in range(max(a.warmup - 1, 0)):
            step()
        _sync()
        limit = min(a.max_batches, len(batches) - max(a.warmup, 1) - 1)
        times = []
        t_start = time.perf_counter()
        n = 0
        while n < limit:
            t = step()
            del t
            n += 1
            times.append(time.perf_counter())
            if times[-1] - t_start >= a.peer_seconds:
                break
        _sync()
        t_end = time.perf_counter()
        if pending is not None:
            for f in pending[2]:
                f.result()
    finally:
        reader.close()
    res = summarize(n, batch, sample_bytes, t_start, t_end, times)
    res["ttfb_s"] = ttfb
    return res


def read_peer_once(a, kind: str, uris, items) -> torch.Tensor:
    r = PeerGPU(kind, uris, a.threads, len(items), a.sample_shape, a.device)
    try:
        return r.finish(r.issue(items)).cpu()
    finally:
        r.close()


# ------------------------------------------------------------------------------ report


def fractions(results: dict, ceil: dict, codec: str) -> dict:
    """Each reader's rates as fractions of the ceilings."""
    out: dict = {}
    if not ceil:
        return out
    dec = (ceil.get("decode") or {}).get(codec) or {}
    prof = dec.get("profile") or {}

    def frac(x, y):
        return (x / y) if (x is not None and y) else None

    for r, res in results.items():
        if "error" in res:
            continue
        f = {}
        if r.startswith("damacy"):
            f["read vs page-cache read"] = frac(res.get("read_GBps"), ceil.get("page_cache_read_GBps"))
            f["decoded vs aligned-chunk GPU decode"] = frac(res.get("decoded_GBps"), dec.get("decoded_GBps"))
        if r == "damacy_gpu":
            f["staged H2D vs pinned H2D"] = frac(res.get("staged_GBps"), ceil.get("h2d_pinned_GBps"))
            f["decoded vs nvCOMP kernel-only"] = frac(res.get("decoded_GBps"), prof.get("nvcomp_kernel_decoded_GBps"))
            f["output vs D2D copy"] = frac(res.get("out_GBps"), ceil.get("d2d_copy_GBps"))
        elif r == "damacy_cpu":
            f["output H2D vs pageable H2D"] = frac(res.get("out_GBps"), ceil.get("h2d_pageable_GBps"))
        else:
            # uint16 crosses the bus: half the f32 output bytes
            f["input H2D vs pinned H2D"] = frac(res.get("out_GBps", 0) / 2, ceil.get("h2d_pinned_GBps"))
        out[r] = {k: v for k, v in f.items() if v is not None}
    return out


def ratios(results: dict) -> dict:
    sps = {r: v["samples_per_s"] for r, v in results.items() if "samples_per_s" in v and v["samples_per_s"] > 0}
    out = {}
    for num, den in (("damacy_gpu", "tensorstore"), ("damacy_gpu", "zarr"), ("damacy_gpu", "damacy_cpu"),
                     ("damacy_cpu", "tensorstore"), ("tensorstore", "zarr")):
        if num in sps and den in sps:
            out[f"{num}/{den}"] = sps[num] / sps[den]
    return out


def print_codec(codec: str, results: dict, rat: dict, frac: dict) -> None:
    print(f"\n== {codec} ==")
    print(f"  {'reader':<12s} {'samples/s':>10s} {'out GB/s':>9s} {'batch ms':>9s} {'p90 ms':>8s} "
          f"{'1st batch s':>11s} {'batches':>7s}  {'read GB/s':>9s} {'staged GB/s':>11s} {'decoded GB/s':>12s}")
    for r, v in results.items():
        if "error" in v:
            print(f"  {r:<12s} ERROR {v['error']}")
            continue
        g = lambda k: f"{v[k]:.2f}" if v.get(k) is not None else "-"  # noqa: E731
        print(f"  {r:<12s} {v['samples_per_s']:10.1f} {v['out_GBps']:9.2f} {v['batch_ms_median']:9.1f} "
              f"{v['batch_ms_p90']:8.1f} {v['ttfb_s']:11.2f} {v['batches']:7d}  {g('read_GBps'):>9s} "
              f"{g('staged_GBps'):>11s} {g('decoded_GBps'):>12s}")
    for k, x in rat.items():
        print(f"  {k:<26s} {x:7.2f}x")
    if frac:
        print("  fraction of ceilings:")
        for r, f in frac.items():
            for k, x in f.items():
                print(f"    {r:<12s} {k:<38s} {100 * x:6.1f} %")


# ------------------------------------------------------------------------------ main


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.replace("x", ",").split(",") if x]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a first run: 2 arrays per codec, at most 10 timed batches and 5 s per reader, "
                        "small ceilings")
    p.add_argument("--readers", default=",".join(READERS), help="comma list of " + ",".join(READERS))
    p.add_argument("--codecs", default=",".join(CODECS),
                   help="comma list of " + ",".join(CODECS) + " or blosc-zstd:BLOCKSIZE (blosc with forced blocks of BLOCKSIZE bytes)")
    p.add_argument("--data-dir", default="/tmp/damacy-bench", help="where the arrays are written (kept)")
    p.add_argument("--out", help="write the results as JSON to this path")
    p.add_argument("--arrays", type=int, default=None, help="arrays per codec (default 8; --quick 2)")
    p.add_argument("--shape", type=_ints, default=[512, 512, 512])
    p.add_argument("--chunk", type=_ints, default=[32, 64, 64])
    p.add_argument("--shard", type=_ints, default=[256, 256, 512])
    p.add_argument("--sample-shape", type=_ints, default=[128, 128, 128])
    p.add_argument("--batch", type=int, default=32, help="samples per batch")
    p.add_argument("--max-batches", type=int, default=None, help="timed batches per reader at most (default 400; --quick 10)")
    p.add_argument("--seconds", type=float, default=None, help="time box of each damacy reader (default 15; --quick 5)")
    p.add_argument("--peer-seconds", type=float, default=None, help="time box of tensorstore and zarr (default 20; --quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches first (default 2; --quick 1); the first is the time-to-first-batch one")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="damacy n_io_threads, tensorstore concurrency, zarr pool size, page-cache readers (default: usable CPUs)")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--staging-mib", type=int, default=None, help="damacy staging_bytes in MiB (default: the library's)")
    p.add_argument("--lookahead-batches", type=int, default=None, help="damacy lookahead_samples in batches (default: the library's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", type=int, default=2, help="boxes on which every reader must agree before timing (0: none)")
    p.add_argument("--no-ceilings", action="store_true", help="skip bench/ceilings.py")
    p.add_argument("--cold", action="store_true",
                   help="drop the page cache (root: /proc/sys/vm/drop_caches) before each timed "
                        "reader instead of priming it; says so when dropping is not possible")
    p.add_argument("--profile", action="store_true", help="print where time goes in the damacy GPU reader")
    p.add_argument("--profile-batches", type=int, default=10)
    p.add_argument("--trace", default=None, help="with --profile: write Chrome traces to this folder")
    a = p.parse_args(argv)
    q = a.quick
    a.arrays = a.arrays or (2 if q else 8)
    a.max_batches = a.max_batches or (10 if q else 400)
    a.seconds = a.seconds or (5.0 if q else 15.0)
    a.peer_seconds = a.peer_seconds or (5.0 if q else 20.0)
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 2)
    a.readers = [r.strip() for r in a.readers.split(",") if r.strip()]
    a.codecs = [c.strip() for c in a.codecs.split(",") if c.strip()]
    for r in a.readers:
        if r not in READERS:
            p.error(f"unknown reader {r!r} (known: {', '.join(READERS)})")
    for c in a.codecs:
        if c not in CODECS and not c.startswith("blosc-zstd:"):
            p.error(f"unknown codec {c!r} (known: {', '.join(CODECS)}, blosc-zstd:BLOCKSIZE)")
    if len(a.sample_shape) != len(a.shape) or any(e > s for e, s in zip(a.sample_shape, a.shape)):
        p.error(f"sample shape {a.sample_shape} does not fit array shape {a.shape}")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device (torch.cuda.is_available() is False); nothing measured",
              file=sys.stderr)
        return 0
    import damacy

    info = damacy.gpu_info()
    if any(r == "damacy_gpu" for r in a.readers) and not info.get("nvcomp_available"):
        print(f"# bench_gpu: nvCOMP unavailable ({info.get('why')}); damacy_gpu would fail", file=sys.stderr)
    dev = torch.device(a.device)
    torch.cuda.set_device(dev)
    t_begin = time.perf_counter()
    data_dir = Path(a.data_dir)

    uris = {c: ensure_arrays(data_dir, c, a.arrays, a.shape, a.chunk, a.shard, a.seed) for c in a.codecs}
    primed = 0
    if not a.cold:
        for us in uris.values():
            for u in us:
                primed += BR.prime_page_cache(Path(u))
    itemsize = 2
    chunk_bytes = int(np.prod(a.chunk)) * itemsize
    sample_bytes = int(np.prod(a.sample_shape)) * 4

    m = BR.machine()
    report = {
        "device_name": torch.cuda.get_device_name(dev),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "machine": m,
        "versions": {**BR.versions(), "cuda": torch.version.cuda, "gpu_info": info},
        "workload": {
            "arrays_per_codec": a.arrays, "shape": a.shape, "chunk": a.chunk, "shard": a.shard,
            "dtype": "uint16", "codecs": a.codecs, "sample_shape": a.sample_shape, "batch": a.batch,
            "out_dtype": "f32", "device": a.device, "threads": a.threads, "seed": a.seed,
            "max_batches": a.max_batches, "seconds": a.seconds, "peer_seconds": a.peer_seconds,
            "warmup": a.warmup, "staging_mib": a.staging_mib, "lookahead_batches": a.lookahead_batches,
            "bytes_on_disk": {c: sum(damacy.array_info(u)["bytes_on_disk"] for u in us) for c, us in uris.items()},
            "page_cache_primed_bytes": primed, "quick": a.quick,
        },
        "results": {}, "ratios": {}, "fractions": {},
    }
    print(f"# {report['device_name']}; {m['cpu_model']}, {m['usable_cpus']} usable CPUs; torch {torch.__version__}; "
          f"nvCOMP {info.get('nvcomp_version')}")
    print(f"# {a.arrays} x {a.shape} uint16 per codec, chunk {a.chunk}, shard {a.shard}; crops {a.sample_shape}, "
          f"batch {a.batch}, f32 on {a.device}; {a.threads} threads; page cache primed ({primed / 1e9:.2f} GB)")

    ceil = {}
    if not a.no_ceilings:
        try:
            ceil = C.measure(uris, device=a.device, threads=a.threads,
                             copy_bytes=(256 if a.quick else 1024) * MiB,
                             decode_seconds=2.0 if a.quick else 4.0,
                             profile_batches=4 if a.quick else 8)
            C.print_table(ceil)
        except Exception as e:  # noqa: BLE001 - report and go on without fractions
            traceback.print_exc()
            ceil = {"error": f"{type(e).__name__}: {e}"}
    report["ceilings"] = ceil

    n_batches = max(a.warmup, 1) + a.max_batches + (a.profile_batches if a.profile else 0) + 2
    for codec in a.codecs:
        us = uris[codec]
        batches = make_batches(len(us), a.shape, a.sample_shape, a.batch, n_batches, a.seed)
        if a.check:
            items = batches[0][: a.check]
            ref, first = None, None
            for r in a.readers:
                try:
                    if r.startswith("damacy"):
                        got = read_damacy_once(a, us, items, "gpu" if r == "damacy_gpu" else "cpu")
                    else:
                        got = read_peer_once(a, r, us, items)
                except Exception:  # noqa: BLE001 - the timed run reports it
                    traceback.print_exc()
                    continue
                if ref is None:
                    ref, first = got, r
                elif not torch.equal(got, ref):
                    bad = int((got != ref).sum())
                    raise SystemExit(f"bench_gpu: {r} and {first} disagree on {bad} voxels of {items} ({codec})")
            print(f"# {codec}: readers agree on {len(items)} boxes", file=sys.stderr)
        results = {}
        for r in a.readers:
            if a.cold:
                print(f"# {codec}: page cache dropped: {drop_page_cache()}", file=sys.stderr, flush=True)
            print(f"# {codec}: {r} ...", file=sys.stderr, flush=True)
            try:
                if r.startswith("damacy"):
                    decode = "gpu" if r == "damacy_gpu" else "cpu"
                    results[r] = run_damacy(a, us, batches, decode, chunk_bytes,
                                            profile=a.profile and r == "damacy_gpu", label=codec)
                else:
                    results[r] = run_peer(a, r, us, batches)
            except Exception as e:  # noqa: BLE001 - record and go on with the other readers
                traceback.print_exc()
                results[r] = {"error": f"{type(e).__name__}: {e}"}
            torch.cuda.empty_cache()
        rat, frac = ratios(results), fractions(results, ceil if "error" not in ceil else {}, codec)
        report["results"][codec] = results
        report["ratios"][codec] = rat
        report["fractions"][codec] = frac
        print_codec(codec, results, rat, frac)
        if a.profile and "profile" in results.get("damacy_gpu", {}):
            print_profile(results["damacy_gpu"]["profile"], codec)
        sys.stdout.flush()

    report["total_seconds"] = time.perf_counter() - t_begin
    print(f"\n# total {report['total_seconds']:.0f} s")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"# wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
