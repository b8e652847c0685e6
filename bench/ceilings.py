#!/usr/bin/env python3
"""Ceilings for the GPU benchmark (bench_gpu.py): what the machine can move, measured on it.

- pinned host->device copy GB/s (one large copy, CUDA events), and pageable host->device
  (what a copy from ordinary memory gets: damacy's decode="cpu" path on a CUDA device);
- device-to-device copy GB/s (bytes copied; memory traffic is twice that);
- page-cache read GB/s over the benchmark's shard files: N threads, os.preadv of
  --block-mib blocks (damacy's default max_read_op_bytes is 4 MiB), files read once first;
- damacy GPU decode on the benchmark's own chunks: a Pipeline whose boxes are exactly the
  inner chunks (sample_shape = chunk shape, boxes on the chunk grid, in storage order), so
  assembling is one contiguous copy per chunk. Reported as "damacy decode+assemble on aligned
  chunks": decoded bytes per second of wall time (read, H2D, nvCOMP, assemble, overlapped as
  the pipeline overlaps them), and -- from torch.profiler over a few batches -- decoded bytes
  per second of nvCOMP kernel time alone (the batched-decompression ceiling at this batch
  size) and the H2D memcpy rate the pipeline achieved.

Arrays are grouped by their inner codec (zstd, blosc-zstd, ...): one decode row per group.

    python bench/ceilings.py --data-dir /tmp/damacy-bench      # every *.zarr in it
    python bench/ceilings.py --uri /data/a.zarr --uri /data/b.zarr --threads 16
    python bench/ceilings.py --no-arrays                         # transfer ceilings only

`measure(...)` returns the numbers as a dict (bench_gpu.py imports it); `print_table` prints
them. Without a CUDA device the script says so and exits 0 having measured nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch

GB = 1e9
MiB = 1 << 20


# ------------------------------------------------------------------------------ copies


def _events_time_s(fn, reps: int, warmup: int = 2) -> float:
    """Median seconds of `fn()` on the current stream, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def h2d_GBps(nbytes: int, device: str, pinned: bool = True, reps: int = 5) -> float:
    """Host->device copy rate of one `nbytes` copy (pinned or pageable source)."""
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    src.fill_(1)  # touch the pages
    dst = torch.empty(nbytes, dtype=torch.uint8, device=device)
    t = _events_time_s(lambda: dst.copy_(src, non_blocking=pinned), reps)
    del src, dst
    return nbytes / t / GB


def d2h_GBps(nbytes: int, device: str, reps: int = 5) -> float:
    dst = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    t = _events_time_s(lambda: dst.copy_(src, non_blocking=True), reps)
    del src, dst
    return nbytes / t / GB


def d2d_GBps(nbytes: int, device: str, reps: int = 10) -> float:
    """Device-to-device copy rate, bytes copied per second (traffic is 2x: read + write)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t = _events_time_s(lambda: dst.copy_(src), reps)
    del src, dst
    return nbytes / t / GB


# ------------------------------------------------------------------------------ page cache


def array_files(uri: str | Path) -> list[Path]:
    """Every chunk/shard file of the array at `uri` (zarr.json and dot-files excluded)."""
    out = []
    for dirpath, _, files in os.walk(Path(uri)):
        out += [Path(dirpath) / f for f in files if f != "zarr.json" and not f.startswith(".")]
    return sorted(out)


def _blocks(files: Sequence[Path], block: int) -> tuple[list[int], list[tuple[int, int, int]]]:
    fds, blocks = [], []
    for i, f in enumerate(files):
        fd = os.open(f, os.O_RDONLY)
        fds.append(fd)
        size = os.fstat(fd).st_size
        blocks += [(i, off, min(block, size - off)) for off in range(0, size, block)]
    return fds, blocks


def _read_pass(fds: list[int], blocks: list[tuple[int, int, int]], threads: int, block: int) -> tuple[int, float]:
    nxt = iter(range(len(blocks)))
    lock = threading.Lock()
    done = [0] * threads

    def worker(k: int) -> None:
        buf = bytearray(block)
        mv = memoryview(buf)
        n = 0
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                break
            fi, off, ln = blocks[i]
            got = 0
            while got < ln:
                r = os.preadv(fds[fi], [mv[got:ln]], off + got)
                if r <= 0:
                    break
                got += r
            n += got
        done[k] = n

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done), time.perf_counter() - t0


def page_cache_read_GBps(files: Sequence[Path], threads: int, block: int = 4 * MiB,
                         min_seconds: float = 1.0, max_passes: int = 5) -> dict:
    """Best pass over `files` with `threads` threads reading `block`-byte blocks (after one
    untimed pass that puts them in the page cache)."""
    files = list(files)
    if not files:
        return {"GBps": None, "bytes": 0, "files": 0, "threads": threads}
    fds, blocks = _blocks(files, block)
    try:
        nbytes, _ = _read_pass(fds, blocks, threads, block)  # prime
        rates, spent = [], 0.0
        while len(rates) < max_passes and (spent < min_seconds or len(rates) < 2):
            n, dt = _read_pass(fds, blocks, threads, block)
            rates.append(n / dt / GB)
            spent += dt
    finally:
        for fd in fds:
            os.close(fd)
    return {"GBps": max(rates), "GBps_median": statistics.median(rates), "bytes": nbytes,
            "files": len(files), "threads": threads, "block_bytes": block, "passes": len(rates)}


# ------------------------------------------------------------------------------ profiler


def _category(name: str) -> str:
    n = name.lower()
    if "memcpy" in n:
        if "htod" in n:
            return "H2D memcpy"
        if "dtoh" in n:
            return "D2H memcpy"
        return "D2D memcpy"
    if "memset" in n:
        return "memset"
    if "assemble_kernel" in n:
        return "damacy assemble"
    if "unshuffle_kernel" in n:
        return "damacy unshuffle"
    if "decode_copy_kernel" in n:
        return "damacy raw copy"
    if "decode_status_kernel" in n:
        return "damacy status check"
    return "nvCOMP (other kernels)"


def summarize_profile(prof, window_name: str | None = None) -> dict:
    """Device time per category (kernels and memcpys, microseconds summed), the CUDA runtime
    calls' CPU time (name -> (calls, us)) and, when `window_name` ranges were recorded
    (torch.profiler.record_function), per window: its wall time, the wait before its first
    CUDA runtime call (the batch was not staged yet) and the time from there to its end."""
    from torch.autograd import DeviceType

    device: dict[str, float] = {}
    kernels: dict[str, float] = {}
    api: dict[str, list[float]] = {}
    windows, api_starts = [], []
    for ev in prof.events():
        try:
            dur = float(ev.time_range.elapsed_us())
            start = float(ev.time_range.start)
        except AttributeError:
            continue
        if ev.device_type == DeviceType.CUDA:
            cat = _category(ev.name)
            device[cat] = device.get(cat, 0.0) + dur
            if cat.startswith("nvCOMP") or cat.startswith("damacy"):
                key = ev.name if len(ev.name) < 90 else ev.name[:87] + "..."
                kernels[key] = kernels.get(key, 0.0) + dur
        elif ev.name.startswith("cuda"):
            a = api.setdefault(ev.name, [0, 0.0])
            a[0] += 1
            a[1] += dur
            api_starts.append(start)
        elif window_name is not None and ev.name == window_name:
            windows.append((start, start + dur))
    per_window = []
    api_starts.sort()
    import bisect

    for a, b in sorted(windows):
        i = bisect.bisect_left(api_starts, a)
        first = api_starts[i] if i < len(api_starts) and api_starts[i] <= b else None
        wait = (first - a) if first is not None else (b - a)
        per_window.append({"wall_us": b - a, "wait_us": wait, "run_us": (b - first) if first is not None else 0.0})
    return {"device_us": device, "kernels_us": kernels,
            "api": {k: (int(v[0]), v[1]) for k, v in api.items()}, "windows": per_window}


def profile_pops(pipe, n_batches: int, window: str = "damacy.pop") -> tuple[dict, list[float]]:
    """Pops `n_batches` under torch.profiler (CPU + CUDA); returns (summary, pop wall times
    in seconds). Batches are dropped right away."""
    from torch.profiler import ProfilerActivity, profile, record_function

    walls = []
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n_batches):
            t0 = time.perf_counter()
            with record_function(window):
                b = pipe.pop()
            walls.append(time.perf_counter() - t0)
            del b
        torch.cuda.synchronize()
    return summarize_profile(prof, window), walls


# ------------------------------------------------------------------------------ decode


def inner_codec(uri: str) -> str:
    """"zstd", "blosc-zstd", "blosc-lz4", "raw", ... of an array's inner chunk codecs."""
    import damacy

    info = damacy.array_info(uri)
    names = []
    for c in info.get("codecs", []):
        n = c.get("name")
        if n == "blosc":
            n = f"blosc-{c.get('configuration', {}).get('cname', '?')}"
        if n not in ("bytes", "crc32c"):
            names.append(n)
    return "+".join(names) or "raw"


def _chunk_boxes(infos: list[dict], n: int) -> list[tuple[int, tuple[tuple[int, int], ...]]]:
    """`n` (array index, chunk box) pairs cycling through every full inner chunk of every
    array, shard by shard, chunks of a shard in C order (storage order)."""
    import itertools

    per_array = []
    for info in infos:
        shape, chunk = info["shape"], info["chunk_shape"]
        shard = info.get("shard_shape") or chunk
        boxes = []
        for s in itertools.product(*[range(0, n_, sh) for n_, sh in zip(shape, shard)]):
            for c in itertools.product(*[range(o, min(o + sh, n_), ch) for o, sh, n_, ch in zip(s, shard, shape, chunk)]):
                if all(a + ch <= n_ for a, ch, n_ in zip(c, chunk, shape)):
                    boxes.append(tuple((a, a + ch) for a, ch in zip(c, chunk)))
        per_array.append(boxes)
    out = []
    k = 0
    while len(out) < n:
        for ai, boxes in enumerate(per_array):
            # a run of chunks from one array, then the next array (shards stay contiguous)
            run = 64
            for j in range(run):
                out.append((ai, boxes[(k * run + j) % len(boxes)]))
        k += 1
    return out[:n]


def aligned_decode(uris: Sequence[str], device: str = "cuda:0", batch_chunks: int = 256,
                   seconds: float = 4.0, max_batches: int = 60, warmup: int = 3,
                   profile_batches: int = 8, threads: int | None = None) -> dict:
    """damacy GPU decode+assemble of whole, grid-aligned inner chunks of `uris` (one codec)."""
    import damacy

    infos = [damacy.array_info(u) for u in uris]
    chunk = infos[0]["chunk_shape"]
    if any(i["chunk_shape"] != chunk for i in infos):
        raise ValueError(f"arrays differ in chunk shape: {[i['chunk_shape'] for i in infos]}")
    itemsize = {"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "float16": 2, "bfloat16": 2,
                "uint32": 4, "int32": 4, "float32": 4, "uint64": 8, "int64": 8, "float64": 8}[infos[0]["data_type"]]
    chunk_bytes = itemsize
    for c in chunk:
        chunk_bytes *= c
    n_total = (warmup + max_batches + profile_batches + 1) * batch_chunks
    boxes = _chunk_boxes(infos, n_total)
    kw = dict(samples_per_batch=batch_chunks, sample_shape=list(chunk), dtype="f32",
              device=device, decode="gpu", pop_timeout_s=120.0,
              lookahead_samples=2 * batch_chunks)
    if threads:
        kw["n_io_threads"] = threads
    cfg = damacy.Config(**kw)
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(damacy.Sample(uris[a], b) for a, b in boxes)
        for _ in range(warmup):
            pipe.pop()
        torch.cuda.synchronize()
        s0 = pipe.stats()
        t0 = time.perf_counter()
        n = 0
        while n < max_batches and (n == 0 or time.perf_counter() - t0 < seconds):
            b = pipe.pop()
            del b
            n += 1
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        s1 = pipe.stats()
        chunks = s1.read_ops - s0.read_ops
        out = {
            "chunk_shape": chunk,
            "chunk_bytes": chunk_bytes,
            "batch_chunks": batch_chunks,
            "batches": n,
            "seconds": dt,
            "chunks_per_s": chunks / dt,
            "decoded_GBps": chunks * chunk_bytes / dt / GB,
            "read_GBps": (s1.bytes_read - s0.bytes_read) / dt / GB,
            "staged_GBps": (s1.staged_bytes - s0.staged_bytes) / dt / GB,
            "compression_ratio": ((s1.bytes_read - s0.bytes_read) / (chunks * chunk_bytes)) if chunks else None,
        }
        if profile_batches:
            try:
                p0 = pipe.stats()
                summary, walls = profile_pops(pipe, profile_batches)
                p1 = pipe.stats()
                pchunks = p1.read_ops - p0.read_ops
                dev = summary["device_us"]
                nv = dev.get("nvCOMP (other kernels)", 0.0) / 1e6
                h2d = dev.get("H2D memcpy", 0.0) / 1e6
                asm = dev.get("damacy assemble", 0.0) / 1e6
                out["profile"] = {
                    "batches": profile_batches,
                    "device_s": {k: v / 1e6 for k, v in dev.items()},
                    "pop_wall_s_median": statistics.median(walls),
                    "nvcomp_kernel_decoded_GBps": (pchunks * chunk_bytes / nv / GB) if nv else None,
                    "h2d_memcpy_GBps": ((p1.staged_bytes - p0.staged_bytes) / h2d / GB) if h2d else None,
                    "assemble_out_GBps": (pchunks * (chunk_bytes // itemsize) * 4 / asm / GB) if asm else None,
                    "kernels_s": {k: v / 1e6 for k, v in sorted(summary["kernels_us"].items(), key=lambda kv: -kv[1])[:8]},
                }
            except Exception as e:  # noqa: BLE001 - the profiler is optional
                out["profile"] = {"error": f"{type(e).__name__}: {e}"}
    return out


# ------------------------------------------------------------------------------ all


def group_by_codec(uris: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for u in uris:
        groups.setdefault(inner_codec(u), []).append(u)
    return groups


def measure(uris: Sequence[str] | dict[str, list[str]] = (), *, device: str = "cuda:0",
            threads: int | None = None, copy_bytes: int = 1 << 30, block: int = 4 * MiB,
            decode_batch_chunks: int = 256, decode_seconds: float = 4.0,
            profile_batches: int = 8, quiet: bool = False) -> dict:
    """Every ceiling; `uris` (a list, or codec -> list) are the benchmark's arrays (their
    files for the page-cache read, their chunks for the decode rows)."""
    threads = threads or len(os.sched_getaffinity(0))
    groups = dict(uris) if isinstance(uris, dict) else group_by_codec(uris)
    dev = torch.device(device)
    torch.cuda.set_device(dev)
    res: dict = {"device_name": torch.cuda.get_device_name(dev), "device": device,
                 "threads": threads, "copy_bytes": copy_bytes}

    def log(msg: str) -> None:
        if not quiet:
            print(f"# ceilings: {msg}", file=sys.stderr, flush=True)

    log(f"host<->device copies of {copy_bytes / MiB:.0f} MiB")
    res["h2d_pinned_GBps"] = h2d_GBps(copy_bytes, device, pinned=True)
    res["h2d_pageable_GBps"] = h2d_GBps(copy_bytes, device, pinned=False, reps=3)
    res["d2h_pinned_GBps"] = d2h_GBps(copy_bytes, device)
    res["d2d_copy_GBps"] = d2d_GBps(copy_bytes, device)
    res["d2d_traffic_GBps"] = 2 * res["d2d_copy_GBps"]
    torch.cuda.empty_cache()

    files = [f for us in groups.values() for u in us for f in array_files(u)]
    if files:
        log(f"page-cache reads over {len(files)} files")
        pc = {}
        for t in sorted({1, threads}):
            pc[str(t)] = page_cache_read_GBps(files, t, block)
        res["page_cache"] = pc
        res["page_cache_read_GBps"] = pc[str(threads)]["GBps"]
        res["page_cache_read_1t_GBps"] = pc["1"]["GBps"]
    res["decode"] = {}
    for codec, us in groups.items():
        log(f"damacy aligned-chunk decode, {codec}, {len(us)} arrays")
        try:
            res["decode"][codec] = aligned_decode(us, device, decode_batch_chunks, decode_seconds,
                                                  profile_batches=profile_batches, threads=threads)
        except Exception as e:  # noqa: BLE001 - report and go on
            res["decode"][codec] = {"error": f"{type(e).__name__}: {e}"}
    torch.cuda.empty_cache()
    return res


def _f(v, unit: str = "GB/s") -> str:
    return "n/a" if v is None else f"{v:8.2f} {unit}"


def print_table(res: dict, file=None) -> None:
    file = file or sys.stdout
    rows = [
        ("pinned H2D copy", _f(res.get("h2d_pinned_GBps"))),
        ("pageable H2D copy", _f(res.get("h2d_pageable_GBps"))),
        ("pinned D2H copy", _f(res.get("d2h_pinned_GBps"))),
        ("D2D copy (bytes copied; traffic 2x)", _f(res.get("d2d_copy_GBps"))),
    ]
    for t, pc in (res.get("page_cache") or {}).items():
        rows.append((f"page-cache read, {t} thread(s), {pc.get('block_bytes', 0) // MiB} MiB blocks "
                     f"({pc.get('bytes', 0) / 1e9:.2f} GB)", _f(pc.get("GBps"))))
    for codec, d in (res.get("decode") or {}).items():
        if "error" in d:
            rows.append((f"damacy aligned decode [{codec}]", d["error"][:60]))
            continue
        rows.append((f"damacy decode+assemble on aligned chunks [{codec}], decoded", _f(d.get("decoded_GBps"))))
        rows.append((f"  same, compressed bytes read", _f(d.get("read_GBps"))))
        p = d.get("profile") or {}
        if "error" in p:
            rows.append(("  profiler", p["error"][:60]))
        elif p:
            rows.append((f"  nvCOMP kernels only, decoded / kernel time", _f(p.get("nvcomp_kernel_decoded_GBps"))))
            rows.append((f"  H2D memcpy inside the pipeline", _f(p.get("h2d_memcpy_GBps"))))
            rows.append((f"  assemble kernel, f32 written / kernel time", _f(p.get("assemble_out_GBps"))))
    width = max(len(r[0]) for r in rows)
    print(f"ceilings on {res.get('device_name')} ({res.get('threads')} threads)", file=file)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=file)


def find_arrays(data_dir: str | Path) -> list[str]:
    d = Path(data_dir)
    if not d.is_dir():
        return []
    return sorted(str(p.resolve()) for p in d.glob("*.zarr") if (p / "zarr.json").is_file())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", action="append", default=[], help="an array (repeatable)")
    p.add_argument("--data-dir", default="/tmp/damacy-bench", help="use every *.zarr in it when no --uri")
    p.add_argument("--no-arrays", action="store_true", help="transfer ceilings only")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--threads", type=int, default=None, help="page-cache reader threads and damacy n_io_threads (default: usable CPUs)")
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the copies")
    p.add_argument("--block-mib", type=int, default=4, help="page-cache read block size")
    p.add_argument("--decode-batch", type=int, default=256, help="chunks per batch of the aligned decode")
    p.add_argument("--decode-seconds", type=float, default=4.0)
    p.add_argument("--profile-batches", type=int, default=8, help="batches under torch.profiler (0: none)")
    p.add_argument("--out", help="write the numbers as JSON to this path")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("ceilings: no CUDA device (torch.cuda.is_available() is False); nothing measured", file=sys.stderr)
        return 0
    uris = [] if a.no_arrays else ([str(Path(u).resolve()) for u in a.uri] or find_arrays(a.data_dir))
    if not uris and not a.no_arrays:
        print(f"# ceilings: no arrays under {a.data_dir} (run bench/bench_gpu.py first, or pass --uri); "
              "transfer ceilings only", file=sys.stderr)
    if uris:
        import damacy  # noqa: F401 - loads the ops

    res = measure(uris, device=a.device, threads=a.threads, copy_bytes=a.copy_mib * MiB,
                  block=a.block_mib * MiB, decode_batch_chunks=a.decode_batch,
                  decode_seconds=a.decode_seconds, profile_batches=a.profile_batches)
    print_table(res)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"# wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
