#!/usr/bin/env python3
"""One command for every workload class: damacy (its default config), tensorstore,
zarr-python (and zarrs-python when installed) side by side in one process.

Fair timing: every reader has the same look-ahead, `--lookahead-batches` batches in flight
(default 2, tensorstore's best pattern). damacy gets its samples one batch at a time: the
first L batches are pushed, then one more batch after each pop (no sample is pushed up
front, so no reader starts the clock with batches partly built that the others lack). The
peers issue batch i+L-1 before they wait for batch i. Warm-up batches are read first, then
`--batches` (default 100) are timed; the readers must agree exactly on the first batch.
Readers run round-robin per class (`--repeat` rounds, the median is reported), so the
load of a shared machine hits all of them alike; the ratios are the result to read.

Classes (`--classes`, comma list; default all): the three of issue 18 and variations over
chunk depth, crop depth, codec and batch size:

  blosc64       u16 blosc-zstd, chunk 64^3, shard 128x256x256, crops 64x128x128, batch 8
  thin          u16 zstd, chunk 32x128x128, crops 1x256x256 (thin slices), batch 64
  paired        f32 image blosc-lz4-bitshuffle + u8 label zstd, chunk 32x96x96,
                crops 48x96x96, batch 8 (two arrays per sample)
  zstd64        as blosc64 with zstd (codec)
  blosc64-b32   as blosc64 with batch 32 (batch size)
  chunk16       u16 zstd, chunk 16x64x64 (shallow chunks), crops 64x128x128, batch 8
  thin8         as thin with crops 8x256x256 (crop depth)
  thin-big      as thin on a 512x2048x2048 volume (4 GiB decoded, 4x the window cache's
                bound: chunks are shared across batches about as rarely as on a large
                volume; written once, ~2 GB on disk, ~1.5 min on 2 cores)
  blosc64-big   as blosc64 on the same large volume shape (volume size)

Outputs `bench/results/<out>.{json,md}` and `<out>.png` when matplotlib is installed (else
a note in the Markdown file). The machine is named in all of them (`--machine`, default:
CPU model and core count, plus the GPU with `--device cuda`).

    python bench/bench_all.py --quick                       # smoke: 10 timed batches per reader
    python bench/bench_all.py --out cpu-all-2core           # the full run
    python bench/bench_all.py --device cuda --out all-h200  # the GPU machine (damacy GPU decode)
    python bench/bench_all.py --variants default,noshare    # damacy configs next to each other
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_read  # noqa: E402  (machine(), versions(), page-cache priming)


@dataclass
class ArraySpec:
    """One array of a class: written once under bench/data/ (git-ignored)."""

    dtype: str  # "uint16" | "float32" | "uint8"
    codec: str  # "zstd" | "blosc-zstd" | "blosc-lz4-bit"
    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    shard: tuple[int, ...]
    out: str = "f32"  # damacy output dtype; the peers cast to the same

    @property
    def name(self) -> str:
        x = lambda v: "x".join(map(str, v))  # noqa: E731
        return f"{self.dtype}_{x(self.shape)}_c{x(self.chunk)}_s{x(self.shard)}_{self.codec}"


@dataclass
class Klass:
    name: str
    what: str
    arrays: list[ArraySpec]
    sample_shape: tuple[int, ...]
    batch: int
    issue: bool = False  # one of issue 18's classes
    extra: dict = field(default_factory=dict)


VOL = (256, 512, 512)
#: 4 GiB of u16: larger than damacy's window cache (1 GiB) and tensorstore-cache's pool.
VOL_BIG = (512, 2048, 2048)
CLASSES = {
    "blosc64": Klass("blosc64", "u16 blosc-zstd chunk 64^3, 64x128x128 crops, batch 8",
                     [ArraySpec("uint16", "blosc-zstd", VOL, (64, 64, 64), (128, 256, 256))], (64, 128, 128), 8, True),
    "thin": Klass("thin", "u16 zstd chunk 32x128x128, 1x256x256 slices, batch 64",
                  [ArraySpec("uint16", "zstd", VOL, (32, 128, 128), (128, 256, 256))], (1, 256, 256), 64, True),
    "paired": Klass("paired", "f32 image blosc-lz4-bitshuffle + u8 label zstd, 48x96x96 crops, batch 8",
                    [ArraySpec("float32", "blosc-lz4-bit", (128, 384, 384), (32, 96, 96), (64, 192, 192)),
                     ArraySpec("uint8", "zstd", (128, 384, 384), (32, 96, 96), (64, 192, 192), out="u8")],
                    (48, 96, 96), 8, True),
    "zstd64": Klass("zstd64", "as blosc64, zstd (codec)",
                    [ArraySpec("uint16", "zstd", VOL, (64, 64, 64), (128, 256, 256))], (64, 128, 128), 8),
    "blosc64-b32": Klass("blosc64-b32", "as blosc64, batch 32 (batch size)",
                         [ArraySpec("uint16", "blosc-zstd", VOL, (64, 64, 64), (128, 256, 256))], (64, 128, 128), 32),
    "chunk16": Klass("chunk16", "u16 zstd chunk 16x64x64, 64x128x128 crops, batch 8 (chunk depth)",
                     [ArraySpec("uint16", "zstd", VOL, (16, 64, 64), (128, 256, 256))], (64, 128, 128), 8),
    "thin8": Klass("thin8", "as thin, 8x256x256 crops (crop depth)",
                   [ArraySpec("uint16", "zstd", VOL, (32, 128, 128), (128, 256, 256))], (8, 256, 256), 64),
    "thin-big": Klass("thin-big", "as thin, 512x2048x2048 volume (4 GiB: volume size)",
                      [ArraySpec("uint16", "zstd", VOL_BIG, (32, 128, 128), (128, 256, 256))], (1, 256, 256), 64),
    "blosc64-big": Klass("blosc64-big", "as blosc64, 512x2048x2048 volume (4 GiB: volume size)",
                         [ArraySpec("uint16", "blosc-zstd", VOL_BIG, (64, 64, 64), (128, 256, 256))], (64, 128, 128), 8),
}

#: damacy configs (`--variants`): "default" sets only what the workload fixes.
VARIANTS = {
    "default": {},
    "noshare": {"decoded_cache_bytes": 0, "device_chunk_cache_bytes": 0},
    "la8": {"lookahead_batches": 8},
    # Every sample pushed up front: the pipeline fills its own (default) look-ahead window,
    # as damacy.data's samplers do; the other readers keep --lookahead-batches.
    "own": {"own_window": True},
    # The GPU path's device chunk store off (its default is 1 GiB): what the store adds.
    "own-nostore": {"own_window": True, "device_chunk_cache_bytes": 0},
    "nostore": {"device_chunk_cache_bytes": 0},
    # A deeper window than the default (tuned, for "the default reaches >= 95% of the best").
    "own-deep": {"own_window": True, "lookahead_batches": 16},
    # The window's depth around the default (8 batches, clamped to 64..1024 samples).
    "own-la8": {"own_window": True, "lookahead_batches": 8},
    "own-la32": {"own_window": True, "lookahead_batches": 32},
}


# ------------------------------------------------------------------------------ data


def _content(spec: ArraySpec, origin, shape, seed: int) -> np.ndarray:
    block = bench_read._volume_block(origin, shape, seed)
    if spec.dtype == "float32":
        return (block.astype(np.float32) / 7.0).astype(np.float32)
    if spec.dtype == "uint8":
        return (block >> 9).astype(np.uint8)  # a few smooth label values
    return block


def ensure_array(spec: ArraySpec, data_dir: Path, seed: int = 0) -> str:
    """Writes the array unless its stamp says it is there; returns its path."""
    path = data_dir / f"{spec.name}.zarr"
    stamp = path / ".bench-all.json"
    want = {"name": spec.name, "seed": seed, "v": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return str(path.resolve())
    t0 = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    if spec.dtype == "uint16" and spec.codec in ("zstd", "blosc-zstd"):
        import damacy  # noqa: F401 - loads the ops

        torch.ops.damacy.write_example_volume(str(path), list(spec.shape), list(spec.chunk), list(spec.shard), spec.codec, seed)
    else:
        import zarr
        from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec, ZstdCodec

        inner = {"zstd": [BytesCodec(), ZstdCodec(level=3)],
                 "blosc-lz4-bit": [BytesCodec(), BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle",
                                                             typesize=np.dtype(spec.dtype).itemsize)]}[spec.codec]
        arr = zarr.create(store=str(path), shape=spec.shape, chunks=spec.shard, dtype=spec.dtype, fill_value=0,
                          codecs=[ShardingCodec(chunk_shape=spec.chunk, codecs=inner)], zarr_format=3, overwrite=True)
        grid = [range(0, n, s) for n, s in zip(spec.shape, spec.shard)]
        for idx in np.ndindex(*[len(g) for g in grid]):
            lo = [g[i] for g, i in zip(grid, idx)]
            ext = [min(s, n - o) for s, n, o in zip(spec.shard, spec.shape, lo)]
            arr[tuple(slice(o, o + e) for o, e in zip(lo, ext))] = _content(spec, lo, ext, seed)
    stamp.write_text(json.dumps(want))
    print(f"# wrote {path.name} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return str(path.resolve())


def boxes_for(shape, sample_shape, n: int, seed: int):
    return bench_read.random_boxes(shape, sample_shape, n, seed)


# ------------------------------------------------------------------------------ readers
#
# A reader reads one class: `issue(i)` starts batch i, `finish(i)` returns its tensors (one
# per array, on the output device). The driver keeps L batches issued.


def _to_device(t: torch.Tensor, device: str) -> torch.Tensor:
    if device == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


_TORCH_OUT = {"f32": torch.float32, "u8": torch.uint8}
_NP_OUT = {"f32": np.float32, "u8": np.uint8}


class PeerReader:
    """tensorstore / zarr-python / zarrs-python: one read per box and array, cast and stacked."""

    def __init__(self, kind: str, uris, specs, batches, threads: int, device: str):
        self.kind, self.specs, self.batches, self.device = kind, specs, batches, device
        self.pending: dict[int, list] = {}
        if kind.startswith("tensorstore"):
            import tensorstore as ts

            # "tensorstore": no chunk cache (its reads in flight still share chunks);
            # "tensorstore-cache": a cache pool of damacy's window-cache bound (1 GiB), so a
            # run where damacy's window cache holds the whole volume is also compared cache to cache.
            cache = (1 << 30) if kind == "tensorstore-cache" else 0
            ctx = ts.Context({"data_copy_concurrency": {"limit": threads}, "file_io_concurrency": {"limit": threads},
                              "cache_pool": {"total_bytes_limit": cache}})
            self.arrays = [ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": u}, "open": True},
                                   read=True, context=ctx).result() for u in uris]
            self.pool = None
        else:
            import zarr

            if kind == "zarrs":
                import zarrs  # noqa: F401

                zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
            self.arrays = [zarr.open_array(u, mode="r") for u in uris]
            self.pool = cf.ThreadPoolExecutor(threads)

    def issue(self, i: int) -> None:
        boxes = self.batches[i]
        if self.kind.startswith("tensorstore"):
            self.pending[i] = [[a[bench_read._slices(b)].read() for b in boxes] for a in self.arrays]
        else:
            self.pending[i] = [[self.pool.submit(a.__getitem__, bench_read._slices(b)) for b in boxes] for a in self.arrays]

    def finish(self, i: int) -> list[torch.Tensor]:
        out = []
        for spec, handles in zip(self.specs, self.pending.pop(i)):
            x = np.stack([h.result() for h in handles]).astype(_NP_OUT[spec.out], copy=False)
            out.append(_to_device(torch.from_numpy(x), self.device))
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.kind == "zarrs":
            import zarr

            zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"})


class DamacyReader:
    """One damacy Pipeline per array of the class, each with the default config plus what the
    workload fixes (batch, sample shape, output dtype, device) and the variant's knobs."""

    def __init__(self, uris, specs, batches, sample_shape, threads: int, device: str, variant: dict, own_window: bool):
        import damacy

        self.damacy, self.uris, self.batches = damacy, uris, batches
        b = len(batches[0])
        knobs = dict(variant)
        la = knobs.pop("lookahead_batches", None)
        if la is not None:
            knobs["lookahead_samples"] = la * b
        if threads:
            knobs["n_io_threads"] = threads
        dev = "cpu" if device == "cpu" else "cuda:0"
        self.pipes = [damacy.Pipeline(damacy.Config(samples_per_batch=b, sample_shape=list(sample_shape), dtype=s.out,
                                                    device=dev, pop_timeout_s=300.0, **knobs)) for s in specs]
        self.config = self.pipes[0].config.as_dict() if hasattr(self.pipes[0], "config") else knobs
        self.own_window = own_window
        if own_window:  # damacy fills its own window (what a sampler feeding it does)
            for p, u in zip(self.pipes, uris):
                # A list, not a generator: the pipeline pulls a source as its window frees,
                # after this loop has rebound `u` to the next array.
                p.push([damacy.Sample(u, box) for batch in batches for box in batch])

    def issue(self, i: int) -> None:
        if not self.own_window:
            for p, u in zip(self.pipes, self.uris):
                p.push([self.damacy.Sample(u, box) for box in self.batches[i]])

    def finish(self, i: int) -> list[torch.Tensor]:
        return [p.pop() for p in self.pipes]

    def stats(self) -> list[dict]:
        out = []
        for p in self.pipes:
            s = p.stats()
            out.append(s.as_dict() if hasattr(s, "as_dict") else json.loads(s.to_json()) if hasattr(s, "to_json") else str(s))
        return out

    def close(self) -> None:
        for p in self.pipes:
            p.close()


def drive(reader, n: int, lookahead: int, device: str) -> list[float]:
    """Reads batches 0..n with `lookahead` batches issued; returns each batch's completion time."""
    times = []
    issued = 0
    while issued < min(lookahead, n):
        reader.issue(issued)
        issued += 1
    for i in range(n):
        ts = reader.finish(i)
        if device != "cpu":
            torch.cuda.current_stream().synchronize()
        times.append(time.perf_counter())
        del ts
        if issued < n:
            reader.issue(issued)
            issued += 1
    return times


# ------------------------------------------------------------------------------ main


def peers_available(wanted) -> list[str]:
    out = []
    for r in wanted:
        mod = {"tensorstore": "tensorstore", "tensorstore-cache": "tensorstore", "zarr": "zarr", "zarrs": "zarrs"}[r]
        try:
            __import__(mod)
            out.append(r)
        except ImportError:
            print(f"# {r}: not installed, skipped", file=sys.stderr)
    return out


def run_class(k: Klass, a, peers: list[str], variants: list[str]) -> dict:
    uris = [ensure_array(s, Path(a.data_dir)) for s in k.arrays]
    shape = k.arrays[0].shape
    n_timed = a.batches
    n_total = a.warmup + n_timed
    boxes = boxes_for(shape, k.sample_shape, n_total * k.batch, a.seed)
    batches = [boxes[i * k.batch:(i + 1) * k.batch] for i in range(n_total)]
    primed = 0 if a.no_prime else sum(bench_read.prime_page_cache(Path(u)) for u in uris)

    def make(r: str, n: int):
        bs = batches[:n]
        if r.startswith("damacy"):
            var = r.partition(":")[2] or "default"
            knobs = dict(VARIANTS[var]) if var in VARIANTS else json.loads(var)
            own = knobs.pop("own_window", False)
            return DamacyReader(uris, k.arrays, bs, k.sample_shape, a.threads, a.device, knobs, own)
        return PeerReader(r, uris, k.arrays, bs, a.threads or len(os.sched_getaffinity(0)), a.device)

    readers = [f"damacy:{v}" if v != "default" else "damacy" for v in variants] + peers
    # Agreement on batch 0, exactly, before anything is timed.
    ref = None
    for r in readers:
        rd = make(r, 1)
        try:
            drive_out = []
            rd.issue(0)
            drive_out = [t.cpu() for t in rd.finish(0)]
        finally:
            rd.close()
        if ref is None:
            ref = (r, drive_out)
        else:
            for x, y in zip(drive_out, ref[1]):
                assert x.dtype == y.dtype and torch.equal(x, y), f"{k.name}: {r} and {ref[0]} disagree on batch 0"
    runs: dict[str, list[dict]] = {r: [] for r in readers}
    stats: dict[str, list] = {}
    for _ in range(a.repeat):
        for r in readers:
            n = n_total if not r.startswith("zarr") or not a.zarr_batches else a.warmup + min(n_timed, a.zarr_batches)
            rd = make(r, n)
            try:
                t0 = time.perf_counter()
                times = drive(rd, n, a.lookahead_batches, a.device)
                if isinstance(rd, DamacyReader):
                    stats[r] = rd.stats()
            finally:
                rd.close()
            start = times[a.warmup - 1] if a.warmup else t0
            timed = times[a.warmup:]
            gaps = np.diff([start, *timed])
            runs[r].append({"samples_per_s": len(timed) * k.batch / (timed[-1] - start), "timed_batches": len(timed),
                            "batch_ms_median": 1e3 * statistics.median(gaps), "batch_ms_max": 1e3 * float(np.max(gaps))})
    res = {}
    for r in readers:
        sps = [x["samples_per_s"] for x in runs[r]]
        res[r] = {"samples_per_s": statistics.median(sps), "samples_per_s_runs": sps,
                  "timed_batches": runs[r][0]["timed_batches"],
                  "batch_ms_median": statistics.median(x["batch_ms_median"] for x in runs[r]),
                  "batch_ms_max": max(x["batch_ms_max"] for x in runs[r])}
    ratios = {}
    for r in readers:
        if r.startswith("damacy"):
            for peer in peers:
                ratios[f"{r}/{peer}"] = res[r]["samples_per_s"] / res[peer]["samples_per_s"]
    return {"what": k.what, "issue18": k.issue, "arrays": [{"name": s.name, "out": s.out} for s in k.arrays],
            "sample_shape": k.sample_shape, "batch": k.batch, "page_cache_primed_bytes": primed,
            "results": res, "ratios": ratios, "damacy_stats": stats}


def machine_name(a) -> str:
    if a.machine:
        return a.machine
    m = bench_read.machine()
    name = f"{m['cpu_model']}, {m['usable_cpus']} usable CPUs"
    if a.device != "cpu" and torch.cuda.is_available():
        name = f"{torch.cuda.get_device_name(0)}; {name}"
    return name


def markdown(info: dict) -> str:
    peers = info["peers"]
    damacys = info["damacy_readers"]
    tss = [p for p in peers if p.startswith("tensorstore")]
    head = ["class", *damacys, *peers, *[f"{d}/{p}" for d in damacys for p in tss]]
    lines = [f"# bench_all: {info['machine_name']}", "",
             f"device {info['device']}, {info['threads'] or 'default'} threads per reader, look-ahead "
             f"{info['lookahead_batches']} batches for every reader, {info['warmup']} warm-up + {info['batches']} timed "
             f"batches (zarr-python: {info['zarr_batches'] or info['batches']}), {info['repeat']} round(s), median; "
             f"samples/s. {info['load']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in info["classes"].items():
        row = [f"{name}{' (issue 18)' if c['issue18'] else ''}: {c['what']}"]
        row += [f"{c['results'][r]['samples_per_s']:,.0f}" for r in damacys + peers]
        row += [f"{c['ratios'][f'{d}/{p}']:.2f}×" for d in damacys for p in tss]
        lines.append("| " + " | ".join(row) + " |")
    if info.get("png_note"):
        lines += ["", info["png_note"]]
    return "\n".join(lines) + "\n"


def plot(info: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "No PNG: matplotlib is not installed in this environment (the table above has the numbers)."
    names = list(info["classes"])
    readers = info["damacy_readers"] + info["peers"]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    w = 0.8 / len(readers)
    for j, r in enumerate(readers):
        ax.bar([i + j * w for i in range(len(names))], [info["classes"][n]["results"][r]["samples_per_s"] for n in names], w, label=r)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(names))], names, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("samples/s")
    ax.set_title(info["machine_name"], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", default=",".join(CLASSES), help="comma list of " + ",".join(CLASSES))
    p.add_argument("--readers", default="tensorstore,tensorstore-cache,zarr,zarrs",
                   help="peers (those not installed are skipped); tensorstore-cache: with a 1 GiB cache pool")
    p.add_argument("--variants", default="default",
                   help="damacy configs, comma list of " + ",".join(VARIANTS) + " (or a JSON object of knobs; "
                   '"lookahead_batches": N sets lookahead_samples to N batches, "own_window": true pushes every sample)')
    p.add_argument("--device", default="cpu", help="cpu or cuda (damacy: cuda:0 with its default decode; peers: read, pin, copy)")
    p.add_argument("--batches", type=int, default=100, help="timed batches per reader (default 100)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--zarr-batches", type=int, default=0, help="timed batches for zarr-python/zarrs if fewer (0: --batches)")
    p.add_argument("--lookahead-batches", type=int, default=2, help="batches in flight, every reader (default 2)")
    p.add_argument("--threads", type=int, default=None, help="threads per reader (default: usable CPUs; damacy: its default)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="10 timed batches, 2 warm-up, zarr 5 (GPU machine, CI smoke)")
    p.add_argument("--no-prime", action="store_true", help="do not read the files before timing (see --cold)")
    p.add_argument("--data-dir", default=str(HERE / "data"))
    p.add_argument("--machine", help="machine name for the outputs (default: CPU model and count, GPU)")
    p.add_argument("--load", default="", help="a note on the machine's load (written into the outputs)")
    p.add_argument("--out", default=None, help="bench/results/<OUT>.{json,md,png} (default: bench-all-<device>)")
    a = p.parse_args(argv)
    if a.quick:
        a.batches, a.warmup, a.zarr_batches = min(a.batches, 10), min(a.warmup, 2), 5
    if a.device.startswith("cuda"):
        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device")
        a.device = "cuda"
    elif a.device != "cpu":
        p.error("--device: cpu or cuda")
    classes = [c.strip() for c in a.classes.split(",") if c.strip()]
    for c in classes:
        if c not in CLASSES:
            p.error(f"unknown class {c!r}")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()] if not a.variants.strip().startswith("{") else [a.variants]
    peers = peers_available([r.strip() for r in a.readers.split(",") if r.strip()])
    threads = a.threads  # damacy: None = its default; peers: None = the usable CPUs
    info = {"machine_name": machine_name(a), "machine": bench_read.machine(), "versions": bench_read.versions(),
            "device": a.device, "threads": threads, "lookahead_batches": a.lookahead_batches, "warmup": a.warmup,
            "batches": a.batches, "zarr_batches": a.zarr_batches, "repeat": a.repeat, "load": a.load,
            "damacy_readers": [f"damacy:{v}" if v != "default" else "damacy" for v in variants], "peers": peers,
            "classes": {}}
    if a.device != "cpu":
        info["gpu"] = torch.cuda.get_device_name(0)
    print(f"# {info['machine_name']}; readers {info['damacy_readers'] + peers}; L={a.lookahead_batches}", flush=True)
    out = a.out or f"bench-all-{a.device}"
    res_dir = HERE / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    for c in classes:
        k = CLASSES[c]
        r = run_class(k, a, peers, variants)
        info["classes"][c] = r
        row = "  ".join(f"{n} {v['samples_per_s']:,.0f}" for n, v in r["results"].items())
        rat = "  ".join(f"{n} {v:.2f}x" for n, v in r["ratios"].items() if "tensorstore" in n)
        print(f"{c:12s} {row}  | {rat}", flush=True)
        (res_dir / f"{out}.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    info["png_note"] = plot(info, res_dir / f"{out}.png")
    (res_dir / f"{out}.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    (res_dir / f"{out}.md").write_text(markdown(info))
    print(f"# wrote {res_dir / out}.json/.md" + ("" if info["png_note"] else "/.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
