#!/usr/bin/env python3
"""Random-crop read throughput: damacy vs tensorstore vs zarr-python.

Every reader gets the same seeded boxes and delivers the same thing: a torch f32 tensor
[batch, *sample_shape] per batch, on the CPU.

- damacy: one Pipeline (device="cpu", CPU decode), every sample pushed up front (it keeps
  its own lookahead window), n_io_threads = --threads.
- tensorstore: one future per box of a batch, read concurrently, stacked and cast; the next
  batch's reads are issued before the current batch is assembled (one batch of lookahead).
  Its file I/O and data-copy concurrency are limited to --threads; no chunk cache.
- zarr-python: a thread pool of --threads workers, one `arr[box]` per task, stacked and cast;
  the next batch is submitted before the current one is assembled.

Before timing, the tensorstore and zarr-python readers (and damacy, when it runs) must agree
exactly on the first --check boxes. By default the array's files are read once beforehand
so every reader runs with a warm page cache (--no-prime to skip).

Default workload (the demo's): uint16, shape 256x512x512, chunk 32x64x64, shard 128x256x256,
zstd level 3, written by damacy's torch.ops.damacy.write_example_volume when it is available,
else by zarr-python with the same geometry and codec; crops 64x128x128, batch 8.

    python bench/bench_read.py                               # default workload
    python bench/bench_read.py --shape 64,128,128 --chunk 16,32,32 --shard 32,64,64 \\
        --sample-shape 16,32,32 --batches 10 --readers tensorstore,zarr
    python bench/bench_read.py --uri /data/vol.zarr --sample-shape 32,64,64 --out cpu-demo
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
READERS = ("damacy", "tensorstore", "zarr")
# Decoded-chunk cache given to damacy (decoded_cache_bytes) and tensorstore (cache_pool), the
# same budget for both; 0 (default) = no cache (--cache-mib).
CACHE_BYTES = 0


# ------------------------------------------------------------------------------ machine


def machine() -> dict:
    """CPU model and core counts from /proc/cpuinfo (no hostname)."""
    model, logical, physical = platform.processor() or "unknown", 0, set()
    phys_id = core_id = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key, val = key.strip(), val.strip()
            if key == "model name":
                model = val
            elif key == "processor":
                logical += 1
            elif key == "physical id":
                phys_id = val
            elif key == "core id":
                core_id = val
                physical.add((phys_id, core_id))
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": model,
        "logical_cpus": logical or os.cpu_count(),
        "physical_cores": len(physical) or None,
        "usable_cpus": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions() -> dict:
    out = {"torch": torch.__version__, "numpy": np.__version__}
    try:
        import zarr

        out["zarr"] = zarr.__version__
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        out["tensorstore"] = version("tensorstore")
    except Exception:  # noqa: BLE001 - optional
        pass
    try:
        import damacy

        out["damacy"] = getattr(damacy, "__version__", "unknown")
    except Exception:  # noqa: BLE001 - optional
        pass
    return out


# ------------------------------------------------------------------------------ data


def _volume_block(origin, shape, seed: int) -> np.ndarray:
    """Synthetic uint16 volume content at `origin`: smooth structure plus noise (so zstd
    compresses it like a real image, not like zeros or like noise)."""
    z, y, x = (np.arange(o, o + n, dtype=np.float32) for o, n in zip(origin, shape))
    field = (
        np.sin(z[:, None, None] * 0.05 + 1.0)
        + np.sin(y[None, :, None] * 0.031 + 2.0)
        + np.sin(x[None, None, :] * 0.043 + 3.0)
        + 0.5 * np.sin((z[:, None, None] + x[None, None, :]) * 0.11)
    )
    base = (field + 3.5) * 300.0
    rng = np.random.default_rng([seed, *origin])
    noise = rng.integers(0, 16, size=shape, dtype=np.uint16)
    return (base.astype(np.uint16) + noise).astype(np.uint16)


def write_with_zarr(path: Path, shape, chunk, shard, seed: int) -> None:
    import zarr
    from zarr.codecs import BytesCodec, ShardingCodec, ZstdCodec

    arr = zarr.create(
        store=str(path), shape=shape, chunks=shard, dtype="uint16", fill_value=0,
        codecs=[ShardingCodec(chunk_shape=chunk, codecs=[BytesCodec(), ZstdCodec(level=3)])],
        zarr_format=3, overwrite=True,
    )
    grid = [range(0, n, s) for n, s in zip(shape, shard)]
    for origin in np.ndindex(*[len(g) for g in grid]):
        lo = [g[i] for g, i in zip(grid, origin)]
        ext = [min(s, n - o) for s, n, o in zip(shard, shape, lo)]
        arr[tuple(slice(o, o + e) for o, e in zip(lo, ext))] = _volume_block(lo, ext, seed)


def ensure_volume(path: Path, shape, chunk, shard, seed: int, writer: str) -> str:
    """Writes the example volume unless it exists; returns who wrote it."""
    stamp = path / ".bench-volume.json"
    want = {"shape": shape, "chunk": chunk, "shard": shard, "codec": "zstd", "seed": seed}
    if stamp.exists():
        have = json.loads(stamp.read_text())
        if {k: have.get(k) for k in want} == want:
            return have.get("writer", "unknown")
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    who = None
    if writer in ("auto", "damacy"):
        try:
            import damacy  # noqa: F401 - loads the ops

            torch.ops.damacy.write_example_volume(str(path), shape, chunk, shard, "zstd", seed)
            who = "damacy.write_example_volume"
        except Exception as e:  # noqa: BLE001 - fall back to zarr-python
            if writer == "damacy":
                raise
            print(f"# damacy writer unavailable ({type(e).__name__}: {e}); using zarr-python",
                  file=sys.stderr)
    if who is None:
        write_with_zarr(path, shape, chunk, shard, seed)
        who = "zarr-python"
    stamp.write_text(json.dumps({**want, "writer": who}))
    print(f"# wrote {path} with {who} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return who


def prime_page_cache(path: Path) -> int:
    n = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                while chunk := fh.read(1 << 24):
                    n += len(chunk)
    return n


def random_boxes(shape, sample_shape, n: int, seed: int) -> list[tuple[tuple[int, int], ...]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        starts = [int(rng.integers(0, s - e + 1)) for s, e in zip(shape, sample_shape)]
        out.append(tuple((a, a + e) for a, e in zip(starts, sample_shape)))
    return out


def _slices(box):
    return tuple(slice(a, b) for a, b in box)


# ------------------------------------------------------------------------------ readers


class TensorstoreReader:
    name = "tensorstore"

    def __init__(self, uri: str, threads: int):
        import tensorstore as ts

        self.arr = ts.open({
            "driver": "zarr3",
            "kvstore": {"driver": "file", "path": uri},
            "context": {
                "data_copy_concurrency": {"limit": threads},
                "file_io_concurrency": {"limit": threads},
                "cache_pool": {"total_bytes_limit": CACHE_BYTES},
            },
            "open": True,
        }, read=True).result()

    def issue(self, boxes):
        return [self.arr[_slices(b)].read() for b in boxes]

    def finish(self, handles) -> torch.Tensor:
        return torch.from_numpy(np.stack([h.result() for h in handles]).astype(np.float32))

    def close(self):
        pass


class ZarrReader:
    name = "zarr"

    def __init__(self, uri: str, threads: int):
        import zarr

        self.arr = zarr.open_array(uri, mode="r")
        self.pool = cf.ThreadPoolExecutor(threads)

    def issue(self, boxes):
        return [self.pool.submit(self.arr.__getitem__, _slices(b)) for b in boxes]

    def finish(self, handles) -> torch.Tensor:
        return torch.from_numpy(np.stack([h.result() for h in handles]).astype(np.float32))

    def close(self):
        self.pool.shutdown()


def run_peer(reader, batches) -> list[float]:
    """Reads `batches` (lists of boxes) with one batch of lookahead; returns each batch's
    completion time (perf_counter)."""
    times = []
    pending = reader.issue(batches[0]) if batches else None
    for i in range(len(batches)):
        nxt = reader.issue(batches[i + 1]) if i + 1 < len(batches) else None
        t = reader.finish(pending)
        assert t.dtype == torch.float32 and t.shape[0] == len(batches[i])
        times.append(time.perf_counter())
        pending = nxt
    return times


def run_damacy(uri: str, batches, sample_shape, threads: int, pop_timeout_s: float):
    import damacy

    b = len(batches[0])
    cfg = damacy.Config(samples_per_batch=b, sample_shape=list(sample_shape), dtype="f32",
                        device="cpu", decode="cpu", n_io_threads=threads,
                        pop_timeout_s=pop_timeout_s, decoded_cache_bytes=CACHE_BYTES)
    times = []
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(damacy.Sample(uri, box) for batch in batches for box in batch)
        for _ in range(len(batches)):
            t = pipe.pop()
            assert t.dtype == torch.float32 and tuple(t.shape) == (b, *sample_shape)
            times.append(time.perf_counter())
            del t
    return times


def read_once(name: str, uri: str, boxes, sample_shape, threads: int) -> torch.Tensor:
    """One batch of `boxes` through reader `name` (for the agreement check)."""
    if name == "damacy":
        import damacy

        cfg = damacy.Config(samples_per_batch=len(boxes), sample_shape=list(sample_shape),
                            dtype="f32", device="cpu", decode="cpu", n_io_threads=threads)
        with damacy.Pipeline(cfg) as pipe:
            pipe.push(damacy.Sample(uri, b) for b in boxes)
            return pipe.pop().clone()
    reader = (TensorstoreReader if name == "tensorstore" else ZarrReader)(uri, threads)
    try:
        return reader.finish(reader.issue(boxes))
    finally:
        reader.close()


# ------------------------------------------------------------------------------ main


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.replace("x", ",").split(",") if x]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", help="existing Zarr v3 array to read (default: write the example volume)")
    p.add_argument("--data-dir", default=str(HERE / "data"), help="where the example volume goes")
    p.add_argument("--shape", type=_ints, default=[256, 512, 512])
    p.add_argument("--chunk", type=_ints, default=[32, 64, 64])
    p.add_argument("--shard", type=_ints, default=[128, 256, 256])
    p.add_argument("--writer", choices=["auto", "damacy", "zarr"], default="auto")
    p.add_argument("--sample-shape", type=_ints, default=[64, 128, 128])
    p.add_argument("--batch", type=int, default=8, help="samples per batch")
    p.add_argument("--batches", type=int, default=20, help="timed batches per reader")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first, per reader")
    p.add_argument("--readers", default=",".join(READERS), help="comma list of " + ",".join(READERS))
    p.add_argument("--cache-mib", type=int, default=0,
                   help="decoded-chunk cache for damacy and tensorstore alike, MiB (default 0: none)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="I/O+decode threads per reader (default: usable CPUs)")
    p.add_argument("--repeat", type=int, default=1,
                   help="timed runs per reader, round-robin; the median is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", type=int, default=3, help="boxes on which the readers must agree")
    p.add_argument("--no-prime", action="store_true", help="skip reading the files once before timing")
    p.add_argument("--pop-timeout", type=float, default=120.0)
    p.add_argument("--out", help="write bench/results/<OUT>.json")
    a = p.parse_args(argv)
    global CACHE_BYTES
    CACHE_BYTES = a.cache_mib << 20

    readers = [r.strip() for r in a.readers.split(",") if r.strip()]
    for r in readers:
        if r not in READERS:
            p.error(f"unknown reader {r!r}")
    if "damacy" in readers:
        try:
            import damacy  # noqa: F401
        except ImportError as e:
            p.error(f"damacy is not importable ({e}); pass --readers tensorstore,zarr")

    if a.uri:
        uri, writer = str(Path(a.uri).resolve()), "given"
    else:
        name = "example_u16_{}_c{}_s{}_zstd".format(*("x".join(map(str, v)) for v in (a.shape, a.chunk, a.shard)))
        path = Path(a.data_dir) / f"{name}.zarr"
        writer = ensure_volume(path, a.shape, a.chunk, a.shard, a.seed, a.writer)
        uri = str(path.resolve())
    meta = json.loads((Path(uri) / "zarr.json").read_text())
    shape = meta["shape"]
    sample_shape = a.sample_shape
    if len(sample_shape) != len(shape) or any(e > s for e, s in zip(sample_shape, shape)):
        p.error(f"sample shape {sample_shape} does not fit array shape {shape}")

    n_total = a.warmup + a.batches
    boxes = random_boxes(shape, sample_shape, n_total * a.batch, a.seed)
    batches = [boxes[i * a.batch:(i + 1) * a.batch] for i in range(n_total)]

    primed = 0 if a.no_prime else prime_page_cache(Path(uri))

    # Agreement before timing: tensorstore == zarr-python (== damacy), exactly.
    check = boxes[: a.check]
    ref = {}
    for r in readers:
        ref[r] = read_once(r, uri, check, sample_shape, a.threads)
    names = list(ref)
    for r in names[1:]:
        assert torch.equal(ref[r], ref[names[0]]), f"{r} and {names[0]} disagree on {check}"
    if {"tensorstore", "zarr"} <= set(ref):
        assert torch.equal(ref["tensorstore"], ref["zarr"])

    info = {
        "machine": machine(),
        "versions": versions(),
        "workload": {
            "uri": uri if a.uri else Path(uri).name, "writer": writer, "shape": shape,
            "data_type": meta["data_type"], "codecs": meta["codecs"],
            "sample_shape": sample_shape, "batch": a.batch, "batches": a.batches,
            "warmup": a.warmup, "repeat": a.repeat, "threads": a.threads, "seed": a.seed, "cache_mib": a.cache_mib,
            "page_cache_primed_bytes": primed,
        },
        "results": {},
    }
    m = info["machine"]
    print(f"# machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs "
          f"({m['physical_cores']} physical cores), {m['usable_cpus']} usable")
    print(f"# array: {shape} {meta['data_type']} ({writer}); crops {sample_shape}, batch {a.batch}, "
          f"{a.batches} timed + {a.warmup} warm-up batches, {a.threads} threads, "
          f"decoded cache {a.cache_mib} MiB each; "
          f"readers agree on {len(check)} boxes")
    sample_bytes = int(np.prod(sample_shape)) * 4
    runs: dict[str, list[dict]] = {r: [] for r in readers}
    for rep in range(a.repeat):  # round-robin, so drift on a shared machine hits every reader
        for r in readers:
            t0 = time.perf_counter()
            if r == "damacy":
                times = run_damacy(uri, batches, sample_shape, a.threads, a.pop_timeout)
            else:
                reader = (TensorstoreReader if r == "tensorstore" else ZarrReader)(uri, a.threads)
                try:
                    times = run_peer(reader, batches)
                finally:
                    reader.close()
            start = times[a.warmup - 1] if a.warmup else t0
            timed = times[a.warmup:]
            elapsed = timed[-1] - start
            gaps = np.diff([start, *timed])
            runs[r].append({
                "samples_per_s": len(timed) * a.batch / elapsed,
                "batch_ms_median": 1e3 * statistics.median(gaps),
                "batch_ms_max": 1e3 * float(np.max(gaps)),
                "elapsed_s": elapsed,
            })
    for r in readers:
        sps_all = [x["samples_per_s"] for x in runs[r]]
        sps = statistics.median(sps_all)
        res = {
            "samples_per_s": sps,
            "samples_per_s_runs": sps_all,
            "batches_per_s": sps / a.batch,
            "out_MiB_per_s": sps * sample_bytes / 2**20,
            "batch_ms_median": statistics.median(x["batch_ms_median"] for x in runs[r]),
            "batch_ms_max": max(x["batch_ms_max"] for x in runs[r]),
        }
        info["results"][r] = res
        spread = f" (runs {min(sps_all):.1f}..{max(sps_all):.1f})" if len(sps_all) > 1 else ""
        print(f"{r:12s} {sps:9.1f} samples/s{spread}  {res['out_MiB_per_s']:8.1f} MiB/s f32 out  "
              f"median batch {res['batch_ms_median']:7.1f} ms")
    ratios = {}
    if "damacy" in info["results"]:
        for peer in ("tensorstore", "zarr"):
            if peer in info["results"]:
                ratios[f"damacy/{peer}"] = (info["results"]["damacy"]["samples_per_s"]
                                            / info["results"][peer]["samples_per_s"])
    if {"tensorstore", "zarr"} <= set(info["results"]):
        ratios["tensorstore/zarr"] = (info["results"]["tensorstore"]["samples_per_s"]
                                      / info["results"]["zarr"]["samples_per_s"])
    info["ratios"] = ratios
    for k, v in ratios.items():
        print(f"{k:24s} {v:6.2f}x")
    if a.out:
        out = HERE / "results" / f"{a.out}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(info, indent=2) + "\n")
        print(f"# wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
