"""damacy's command line: `python -m damacy {demo, info, bench}`, and
`python -m damacy --cmake-prefix` (the prefix for `find_package(damacy CONFIG)`)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

# The demo volume: geometry fixed so that runs compare across machines.
DEMO_PATH = Path.home() / ".cache" / "damacy" / "example" / "demo.zarr"
DEMO_SHAPE = (256, 512, 512)
DEMO_CHUNK = (32, 64, 64)
DEMO_SHARD = (128, 256, 256)
DEMO_CODEC = "zstd"
DEMO_SAMPLE_SHAPE = (64, 128, 128)
DEMO_BATCH = 8


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


def stream(uri: str, array_shape: Sequence[int], args: argparse.Namespace, sample_shape: Sequence[int]) -> None:
    """Streams random crops and prints samples/s and GB/s of output."""
    import damacy
    from tqdm import tqdm

    fields = dict(samples_per_batch=args.batch, sample_shape=tuple(sample_shape), dtype=args.dtype, device=args.device)
    if args.io_threads:
        fields["n_io_threads"] = args.io_threads
    cfg = damacy.Config(**fields)
    n_batches, seconds = args.batches, args.seconds
    samples = out_bytes = 0
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(random_crops(uri, array_shape, sample_shape, args.seed))
        bar = tqdm(total=n_batches, unit="batch", disable=args.quiet)
        t0 = time.perf_counter()
        for batch in pipe.batches(n_batches):
            samples += batch.shape[0]
            out_bytes += batch.numel() * batch.element_size()
            bar.update(1)
            if n_batches is None and time.perf_counter() - t0 >= seconds:
                break
        if args.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        bar.close()
        stats = pipe.stats()
    print(f"{samples} samples of {tuple(sample_shape)} ({args.dtype}, {args.device}) in {dt:.2f} s: "
          f"{samples / dt:.1f} samples/s, {out_bytes / dt / 1e9:.2f} GB/s output")
    if args.stats:
        print(json.dumps(stats.as_dict(), indent=2))


def cmd_demo(args: argparse.Namespace) -> None:
    import damacy

    path = Path(args.path).expanduser()
    if not (path / "zarr.json").exists():
        print(f"writing the demo volume {path} (shape {DEMO_SHAPE}, chunk {DEMO_CHUNK}, shard {DEMO_SHARD}, {DEMO_CODEC})")
        path.parent.mkdir(parents=True, exist_ok=True)
        damacy._ops.call(damacy._ops.ops().write_example_volume, str(path), list(DEMO_SHAPE), list(DEMO_CHUNK), list(DEMO_SHARD), DEMO_CODEC, 0)
    args.batch = args.batch or DEMO_BATCH
    stream(str(path), DEMO_SHAPE, args, DEMO_SAMPLE_SHAPE)


def cmd_info(args: argparse.Namespace) -> None:
    import damacy

    try:
        info = damacy.array_info(args.uri)
    except damacy.StorageError:
        # Listing failed (a plain HTTP server cannot list): the metadata alone, or the real error.
        info = damacy.array_info(args.uri, usage=False)
    print(json.dumps(info, indent=2))


def cmd_bench(args: argparse.Namespace) -> None:
    import damacy

    info = damacy.array_info(args.uri, usage=False)
    shape = info.get("shape")
    if not isinstance(shape, list):
        raise damacy.InvalidArgument(f"{args.uri}: array_info has no `shape` ({sorted(info)})")
    stream(args.uri, shape, args, args.sample_shape)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m damacy", description=__doc__)
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
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    demo = sub.add_parser("demo", help=f"stream random {DEMO_SAMPLE_SHAPE} crops of an example volume (written once)")
    demo.add_argument("--path", default=str(DEMO_PATH), help=f"where the example volume lives (default {DEMO_PATH})")
    streaming(demo, None)
    demo.set_defaults(func=cmd_demo)

    info = sub.add_parser("info", help="print facts about an array")
    info.add_argument("uri")
    info.set_defaults(func=cmd_info)

    bench = sub.add_parser("bench", help="stream random crops of an array and report throughput")
    bench.add_argument("uri")
    bench.add_argument("--sample-shape", type=int, nargs="+", required=True, metavar="N", help="crop shape, e.g. 64 128 128")
    streaming(bench, 8)
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.cmake_prefix:
        from damacy._cmake import cmake_prefix

        try:
            print(cmake_prefix())
        except FileNotFoundError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    if args.command is None:
        p.error("a command is required (or --cmake-prefix)")
    import damacy

    try:
        args.func(args)
    except damacy.DamacyError as e:
        print(f"damacy {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
