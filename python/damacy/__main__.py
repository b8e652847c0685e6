"""damacy's command line: `python -m damacy {demo, info, bench}`, `python -m damacy --version`,
and `python -m damacy --cmake-prefix` (the prefix for `find_package(damacy CONFIG)`).

Results go to stdout; progress, notes and errors go to stderr through the "damacy" logger
(`--quiet` keeps only errors)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ._version import __version__

log = logging.getLogger("damacy.cli")

# The demo volume: geometry fixed so that runs compare across machines.
DEMO_PATH = Path.home() / ".cache" / "damacy" / "example" / "demo.zarr"
DEMO_SHAPE = (256, 512, 512)
DEMO_CHUNK = (32, 64, 64)
DEMO_SHARD = (128, 256, 256)
DEMO_CODEC = "zstd"
DEMO_SAMPLE_SHAPE = (64, 128, 128)
DEMO_BATCH = 8


# --- formatting ---------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _dims(v: Sequence[int]) -> str:
    return " × ".join(str(x) for x in v)


def _codec(c: Mapping[str, Any]) -> str:
    conf = c.get("configuration") or {}
    inner = ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in conf.items())
    return f"{c.get('name', '?')}({inner})" if inner else str(c.get("name", "?"))


def read_fill_value(uri: str) -> Any:
    """The array's fill_value from its zarr.json for local paths and file:// uris; None when it
    cannot be read here (other stores: array_info does not report it)."""
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if "://" in path:
        return None
    try:
        with open(os.path.join(path, "zarr.json"), encoding="utf-8") as f:
            return json.load(f).get("fill_value")
    except (OSError, ValueError, AttributeError):
        return None


def format_info(info: Mapping[str, Any], usage: bool) -> str:
    """array_info (plus "fill_value") as aligned lines for people; a multiscale group as
    one line per level."""
    if info.get("node_type") == "multiscale":
        lines = [f"{info.get('uri')}   OME-NGFF multiscale group, {len(info.get('levels') or [])} levels"]
        for lv in info.get("levels") or []:
            scale = f"   scale {tuple(lv['scale'])}" if lv.get("scale") else ""
            lines.append(f"  {lv.get('uri')}   {_dims(lv.get('shape') or [])} {lv.get('data_type')}, chunk {_dims(lv.get('chunk_shape') or [])}{scale}")
        return "\n".join(lines)
    shape, chunk, shard = info.get("shape") or [], info.get("chunk_shape") or [], info.get("shard_shape")
    rows = [("shape", _dims(shape) + (f"   ({', '.join(info['dimension_names'])})" if any(info.get("dimension_names") or []) else ""))]
    rows.append(("dtype", str(info.get("data_type"))))
    n_chunks = math.prod(-(-a // c) for a, c in zip(shape, chunk)) if chunk else 0
    rows.append(("chunk", f"{_dims(chunk)}   ({n_chunks:,} chunks)"))
    if shard:
        per = math.prod(s // c for s, c in zip(shard, chunk))
        n_shards = math.prod(-(-a // s) for a, s in zip(shape, shard))
        rows.append(("shard", f"{_dims(shard)}   ({n_shards:,} shards of {per:,} chunks, index at {info.get('index_location')})"))
    else:
        rows.append(("shard", "none (one file per chunk)"))
    rows.append(("codecs", " → ".join(_codec(c) for c in info.get("codecs") or []) or "none"))
    fill = info.get("fill_value", None)
    rows.append(("fill value", "(not reported for this store)" if fill is None and "fill_value" not in info else json.dumps(fill)))
    decoded = info.get("bytes_decoded", 0)
    rows.append(("decoded", human_bytes(decoded)))
    if usage:
        stored = info.get("bytes_on_disk", 0)
        ratio = f", {stored / decoded:.2f} of decoded" if decoded else ""
        rows.append(("on disk", f"{human_bytes(stored)} in {info.get('files', 0):,} files{ratio}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join([str(info.get("uri"))] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _stat_value(name: str, v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if "bytes" in name:
        return human_bytes(v)
    if name.endswith("_s"):
        return f"{v:.3g} s"
    if name.endswith("_ms"):
        return f"{v:.1f} ms"
    return f"{v:,}" if isinstance(v, int) else f"{v:.3g}"


def format_stats(stats: Mapping[str, Any]) -> str:
    """Pipeline stats for people: scalars as aligned lines, caches as a table with hit rates,
    other nested objects indented. Every field appears (the set follows the library)."""
    scalars = [(k, v) for k, v in stats.items() if not isinstance(v, Mapping)]
    caches = [(k, v) for k, v in stats.items() if isinstance(v, Mapping) and {"hits", "misses"} <= set(v)]
    others = [(k, v) for k, v in stats.items() if isinstance(v, Mapping) and (k, v) not in caches]
    width = max([len(k) for k, _ in scalars] + [len(f"{k}.{s}") for k, v in others for s in v] + [0])
    out = ["stats"]
    out += [f"  {k:<{width}}  {_stat_value(k, v)}" for k, v in scalars]
    for k, v in others:
        out += [f"  {k + '.' + s:<{width}}  {_stat_value(s, x)}" for s, x in v.items()]
    if caches:
        cw = max(len(k) for k, _ in caches)
        out.append(f"  {'cache':<{cw}}  {'hits':>10}  {'misses':>10}  {'evictions':>10}  hit rate")
        for k, v in caches:
            h, m = v.get("hits", 0), v.get("misses", 0)
            rate = f"{h / (h + m):.1%}" if h + m else "-"
            out.append(f"  {k:<{cw}}  {h:>10,}  {m:>10,}  {v.get('evictions', 0):>10,}  {rate}")
    return "\n".join(out)


class Progress:
    """A progress display: tqdm's bar when tqdm is installed (the `cli` extra) and stderr is
    a terminal, else plain log lines about once per `every_s` seconds."""

    def __init__(self, total: int | None, quiet: bool, every_s: float = 2.0) -> None:
        self.total, self.n, self.every_s = total, 0, every_s
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if quiet:
            self.every_s = math.inf
            return
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None and sys.stderr.isatty():
            self.bar = tqdm(total=total, unit="batch")

    def update(self, samples: int) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            of = f"/{self.total}" if self.total else ""
            log.info("batch %d%s, %.1f s, %.1f samples/s", self.n, of, now - self.t0, self.n * samples / (now - self.t0))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- streaming ----------------------------------------------------------------------------------


def random_crops(uri: str, array_shape: Sequence[int], sample_shape: Sequence[int], seed: int) -> Iterator:
    """Endless random in-bounds crops of `array_shape`."""
    import damacy

    if len(array_shape) != len(sample_shape):
        raise damacy.RankMismatch(f"{uri}: array has rank {len(array_shape)}, sample shape {tuple(sample_shape)}")
    for a, s in zip(array_shape, sample_shape):
        if s > a:
            raise damacy.InvalidArgument(f"{uri}: sample shape {tuple(sample_shape)} exceeds array shape {tuple(array_shape)}")
    rng = random.Random(seed)
    while True:
        starts = [rng.randrange(0, a - s + 1) for a, s in zip(array_shape, sample_shape)]
        yield damacy.Sample(uri, [(b, b + s) for b, s in zip(starts, sample_shape)])


def stream(uri: str, array_shape: Sequence[int], args: argparse.Namespace, sample_shape: Sequence[int]) -> dict[str, Any]:
    """Streams random crops, prints samples/s and GB/s of output (and the stats with
    --stats), writes the result as JSON with --out; returns the result."""
    import damacy

    fields = dict(samples_per_batch=args.batch, sample_shape=tuple(sample_shape), dtype=args.dtype, device=args.device)
    if args.io_threads:
        fields["n_io_threads"] = args.io_threads
    cfg = damacy.Config(**fields)
    n_batches, seconds = args.batches, args.seconds
    samples = out_bytes = batches = 0
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(random_crops(uri, array_shape, sample_shape, args.seed))
        progress = Progress(n_batches, args.quiet)
        t0 = time.perf_counter()
        first = None
        for batch in pipe.batches(n_batches):
            if first is None:
                first = time.perf_counter() - t0
            samples += batch.shape[0]
            batches += 1
            out_bytes += batch.numel() * batch.element_size()
            progress.update(batch.shape[0])
            if n_batches is None and time.perf_counter() - t0 >= seconds:
                break
        if args.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        progress.close()
        stats = pipe.stats().as_dict()
    print(f"{samples} samples of {tuple(sample_shape)} ({args.dtype}, {args.device}) in {dt:.2f} s: "
          f"{samples / dt:.1f} samples/s, {out_bytes / dt / 1e9:.2f} GB/s output")
    if args.stats:
        print(format_stats(stats))
    result = {
        "damacy": damacy.__version__,
        "command": ["python", "-m", "damacy", *args.argv],
        "uri": uri,
        "array_shape": list(array_shape),
        "config": json.loads(cfg.to_json()),
        "batches": batches,
        "samples": samples,
        "seconds": dt,
        "first_batch_s": first,
        "samples_per_s": samples / dt if dt else None,
        "output_bytes": out_bytes,
        "output_gb_per_s": out_bytes / dt / 1e9 if dt else None,
        "stats": stats,
        "machine": _machine(args.device),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s", args.out)
    return result


def _machine(device: str) -> dict[str, Any]:
    import torch

    out = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


# --- commands -----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> None:
    import damacy

    path = Path(args.path).expanduser()
    if not (path / "zarr.json").exists():
        log.info("writing the demo volume %s (shape %s, chunk %s, shard %s, %s)", path, DEMO_SHAPE, DEMO_CHUNK, DEMO_SHARD, DEMO_CODEC)
        path.parent.mkdir(parents=True, exist_ok=True)
        damacy._ops.call(damacy._ops.ops().write_example_volume, str(path), list(DEMO_SHAPE), list(DEMO_CHUNK), list(DEMO_SHARD), DEMO_CODEC, 0)
    args.batch = args.batch or DEMO_BATCH
    shape = damacy.array_info(str(path), usage=False)["shape"]  # DEMO_SHAPE, unless --path names another array
    stream(str(path), shape, args, [min(s, a) for s, a in zip(DEMO_SAMPLE_SHAPE, shape)])


def cmd_info(args: argparse.Namespace) -> None:
    import damacy

    try:
        info = damacy.array_info(args.uri, usage=args.usage)
    except damacy.StorageError:
        if not args.usage:
            raise
        # a store that cannot list (plain HTTP): the metadata alone
        print(f"damacy: {args.uri}: cannot list this store; no usage", file=sys.stderr)
        args.usage = False
        info = damacy.array_info(args.uri, usage=False)
    if not args.usage:  # not measured: leave them out rather than print zeros
        info.pop("files", None)
        info.pop("bytes_on_disk", None)
    fill = read_fill_value(info.get("uri", args.uri))
    if fill is not None:
        info["fill_value"] = fill
    print(json.dumps(info, indent=2) if args.json else format_info(info, args.usage))


def cmd_bench(args: argparse.Namespace) -> None:
    import damacy

    info = damacy.array_info(args.uri, usage=False)
    if info.get("node_type") == "multiscale":
        levels = ", ".join(f"{lv['uri']} {tuple(lv['shape'])}" for lv in info.get("levels", []))
        raise damacy.InvalidArgument(f"{args.uri} is an OME-NGFF multiscale group: bench one of its levels ({levels})")
    shape = info.get("shape")
    if not isinstance(shape, list):
        raise damacy.InvalidArgument(f"{args.uri}: array_info has no `shape` ({sorted(info)})")
    stream(args.uri, shape, args, args.sample_shape)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m damacy", description=__doc__)
    p.add_argument("--version", action="store_true", help="print damacy's version (and torch's) and exit")
    p.add_argument("--cmake-prefix", action="store_true",
                   help="print the prefix for CMAKE_PREFIX_PATH that makes find_package(damacy CONFIG) work, and exit")
    sub = p.add_subparsers(dest="command")

    def streaming(sp: argparse.ArgumentParser, batch_default: int | None) -> None:
        sp.add_argument("--batch", type=int, default=batch_default, help="samples per batch")
        sp.add_argument("--batches", type=int, default=None, help="stop after N batches (default: after --seconds)")
        sp.add_argument("--seconds", type=float, default=10.0, help="run time without --batches (default 10)")
        sp.add_argument("--dtype", default="f32", choices=["f32", "bf16", "u8", "i32", "i64"])
        sp.add_argument("--device", default="cpu", help='"cpu" or "cuda:N"')
        sp.add_argument("--io-threads", type=int, default=None, help="n_io_threads (default: the library's)")
        sp.add_argument("--seed", type=int, default=0, help="seed of the random crops")
        sp.add_argument("--stats", action="store_true", help="print the pipeline's stats at the end")
        sp.add_argument("--out", metavar="FILE.json", default=None,
                        help="also write the result (config, throughput, stats, machine) as JSON to FILE.json")
        sp.add_argument("--quiet", action="store_true", help="no progress, no notes (errors only)")

    demo = sub.add_parser("demo", help=f"stream random {DEMO_SAMPLE_SHAPE} crops of an example volume (written once)")
    demo.add_argument("--path", default=str(DEMO_PATH), help=f"where the example volume lives (default {DEMO_PATH})")
    streaming(demo, None)
    demo.set_defaults(func=cmd_demo)

    info = sub.add_parser("info", help="describe an array (shape, chunks, shards, dtype, codecs, fill value), or list the levels of an OME-NGFF multiscale group")
    info.add_argument("uri")
    info.add_argument("--usage", action="store_true", help="also count its stored files and bytes (lists the whole array)")
    info.add_argument("--json", action="store_true", help="one JSON object (damacy.array_info's fields, plus fill_value when readable)")
    info.set_defaults(func=cmd_info)

    bench = sub.add_parser("bench", help="stream random crops of an array and report throughput")
    bench.add_argument("uri")
    bench.add_argument("--sample-shape", type=int, nargs="+", required=True, metavar="N", help="crop shape, e.g. 64 128 128")
    streaming(bench, 8)
    bench.set_defaults(func=cmd_bench)
    return p


def _log_to_stderr(quiet: bool) -> None:
    """Shows the "damacy" logger's records on stderr unless the application configured
    logging itself (a handler on the root or the "damacy" logger)."""
    logger = logging.getLogger("damacy")
    own = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
    if own or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("damacy: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    args = p.parse_args(argv)
    args.argv = argv
    _log_to_stderr(getattr(args, "quiet", False))
    if args.version:
        import torch

        print(f"damacy {__version__} (torch {torch.__version__}, CUDA {torch.version.cuda or 'none'})")
        from damacy import _ops, _supported

        try:
            info = _supported.build_info(_ops.library_path())
        except ImportError:
            info = {}
        if info:
            nvcc = f", nvcc {info['nvcc_version']}" if info.get("nvcc_version") else ""
            print(f"built: {info.get('build', '?').upper()} (torch {info.get('torch_version', '?')}{nvcc})")
        return 0
    if args.cmake_prefix:
        from damacy._cmake import cmake_prefix

        try:
            print(cmake_prefix())
        except FileNotFoundError as e:
            log.error("%s", str(e).removeprefix("damacy: "))
            return 1
        return 0
    if args.command is None:
        p.error("a command is required (or --version, --cmake-prefix)")
    import damacy

    try:
        args.func(args)
    except damacy.DamacyError as e:
        log.error("%s: %s: %s", args.command, type(e).__name__, e)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
