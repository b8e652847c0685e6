#!/usr/bin/env python3
"""Remote random-crop reads: damacy vs tensorstore over S3 and HTTP, through added latency.

One array, written locally with zarr-python (bench_read.py's synthetic volume: smooth
structure plus noise, zstd, sharded), served on loopback by tests/remote_servers.py (moto's
S3 server and a ranged HTTP file server), and read through bench/latency_proxy.py, which
adds a fixed delay to each direction of every connection (--delays-ms: a request/response
round trip costs twice that) and caps the server -> client bytes of all connections
together (--mbps, MB/s; 0 = unlimited).

At each point (store, delay, bandwidth) both readers, in one process, read the same seeded
random crops in the same batches, with the same look-ahead (--ahead batches beyond the one
being waited for):

- damacy: one Pipeline (CPU decode, f32), lookahead_samples = batch × (ahead + 1), every
  sample pushed up front; storage options as the tests pass them.
- tensorstore: zarr3 driver on its s3 / http kvstore, with its request concurrency set to
  the same number of requests in flight as damacy's (--in-flight); the reads of the next
  `ahead` batches are all issued (one future per crop) before the current batch is
  awaited, so up to (ahead + 1) × batch crops are in flight: its best pattern from Python.
  Output: the same f32 tensor [batch, *crop].

Both readers share reads within their look-ahead and keep nothing for longer:
tensorstore's cache_pool is 0 bytes, yet reads of one chunk by crops in flight together
are made once (its cache entries live while in use: the proxy sees it read about a third
of damacy's bytes at 8 batches ahead when damacy shares nothing); damacy runs its default
config, whose window cache shares decoded chunks among the batches of its look-ahead
window. `--damacy-config '{"decoded_cache_bytes": 0}'` compares the read paths alone
(damacy then reads every crop's chunks). Shard indexes stay cached in damacy as by
default. The proxy counts the HTTP requests of each reader and the requests
it has in flight (time-weighted mean): both are recorded per point (`proxy`), as requests
per batch (warm-up included) and mean in flight. DAMACY_PROXY_LOG=FILE makes the proxy log
every request line and Range header to FILE. The first
--warmup batches are excluded. The two readers must produce the same bytes for every batch
(each batch's sha1 is compared; a mismatch fails the run), and damacy's first batch is also
compared with the local copy read by zarr-python.

    python bench/bench_remote.py                                  # default grid
    python bench/bench_remote.py --stores http --delays-ms 25 --mbps 0 --batches 20
Writes bench/results/<out>.json and .md (--out, default remote-<machine>).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_read import machine, random_boxes, versions, write_with_zarr  # noqa: E402

S3_OPTS = {"allow_http": "true", "access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


def _slices(box):
    return tuple(slice(a, b) for a, b in box)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.replace("x", ",").split(",") if x]


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.contiguous().numpy().tobytes()).hexdigest()


# ------------------------------------------------------------------------------ readers


def run_damacy(uri: str, opts: dict, batches, crop, ahead: int, threads: int, in_flight: int, extra: dict):
    import damacy

    b = len(batches[0])
    cfg = damacy.Config(samples_per_batch=b, sample_shape=list(crop), dtype="f32", device="cpu", decode="cpu",
                        n_io_threads=threads, lookahead_samples=b * (ahead + 1), n_batch_buffers=ahead + 3, pop_timeout_s=120.0,
                        storage_options={**opts, "max_requests_in_flight": str(in_flight)}, **extra)
    times, sums, first = [], [], None
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(damacy.Sample(uri, box) for batch in batches for box in batch)
        for _ in batches:
            t = pipe.pop()
            times.append(time.perf_counter())
            sums.append(digest(t))
            if first is None:
                first = t.clone()
            del t
        stats = pipe.stats() if hasattr(pipe, "stats") else None
    return times, sums, first, stats


def ts_spec(store: str, base: str, bucket: str, threads: int, in_flight: int) -> dict:
    if store == "s3":
        kv = {"driver": "s3", "bucket": bucket, "path": "vol.zarr/", "endpoint": base, "aws_region": "us-east-1"}
    else:
        kv = {"driver": "http", "base_url": f"{base}/vol.zarr"}
    return {
        "driver": "zarr3",
        "kvstore": kv,
        "context": {
            "data_copy_concurrency": {"limit": threads},
            "s3_request_concurrency": {"limit": in_flight},
            "http_request_concurrency": {"limit": in_flight},
            "cache_pool": {"total_bytes_limit": 0},
        },
        "open": True,
        "recheck_cached_data": False,
    }


def run_tensorstore(spec: dict, batches, ahead: int):
    import tensorstore as ts

    arr = ts.open(spec, read=True).result()
    issue = lambda batch: [arr[_slices(b)].read() for b in batch]  # noqa: E731
    finish = lambda hs: torch.from_numpy(np.stack([h.result() for h in hs]).astype(np.float32))  # noqa: E731
    pending = [issue(batches[i]) for i in range(min(ahead + 1, len(batches)))]
    times, sums = [], []
    for i in range(len(batches)):
        t = finish(pending.pop(0))
        if i + ahead + 1 < len(batches):
            pending.append(issue(batches[i + ahead + 1]))
        times.append(time.perf_counter())
        sums.append(digest(t))
    return times, sums


def summarize(times: list[float], t_start: float, warmup: int, batch_bytes: int) -> dict:
    """Throughput over the batches after the warm-up (from the last warm-up batch's end)."""
    t0 = times[warmup - 1] if warmup > 0 else t_start
    steady = [b - a for a, b in zip([t0, *times[warmup:]], times[warmup:])]
    wall = times[-1] - t0
    n = len(times) - warmup
    return {
        "batches": n,
        "seconds": wall,
        "batches_per_s": n / wall,
        "out_mb_per_s": n * batch_bytes / wall / 1e6,
        "median_batch_ms": statistics.median(steady) * 1e3,
        "p90_batch_ms": sorted(steady)[int(0.9 * (len(steady) - 1))] * 1e3,
    }


# ------------------------------------------------------------------------------ servers


class Servers:
    def __init__(self, root: Path):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "remote_servers.py"), "--root", str(root)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class Proxy:
    def __init__(self, targets: list[str], delay_ms: float, mbps: float):
        args = [sys.executable, str(HERE / "latency_proxy.py"), "--delay-ms", str(delay_ms), "--mbps", str(mbps)]
        for t in targets:
            args += ["--target", t]
        if os.environ.get("DAMACY_PROXY_LOG"):
            args += ["--log", os.environ["DAMACY_PROXY_LOG"]]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.map = json.loads(self.proc.stdout.readline())

    def counters(self) -> dict:
        """The proxy's request counters since the last call (latency_proxy.py's doc)."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def hostport(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="128,256,256")
    ap.add_argument("--chunk", default="32,32,32")
    ap.add_argument("--shard", default="64,128,128")
    ap.add_argument("--crop", default="32,64,64")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--batches", type=int, default=40, help="timed batches per point (after --warmup)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--ahead", type=int, default=2, help="batches in flight beyond the one awaited")
    ap.add_argument("--threads", type=int, default=2, help="damacy n_io_threads, tensorstore data_copy_concurrency")
    ap.add_argument("--in-flight", type=int, default=64, help="most requests in flight (both readers)")
    ap.add_argument("--stores", default="s3,http")
    ap.add_argument("--delays-ms", default="0,5,25", help="added delay per direction")
    ap.add_argument("--mbps", default="0,100", help="bandwidth caps, MB/s (0 = unlimited)")
    ap.add_argument("--damacy-config", default="{}", help="extra damacy.Config fields (JSON)")
    ap.add_argument("--damacy-storage", default="{}", help="extra damacy storage_options (JSON), e.g. '{\"coalesce_gap_bytes\": \"65536\"}'")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=None)
    ap.add_argument("--note", default="", help="free text recorded with the results (machine load)")
    args = ap.parse_args(argv)

    shape, chunk, shard, crop = _ints(args.shape), _ints(args.chunk), _ints(args.shard), _ints(args.crop)
    extra = json.loads(args.damacy_config)
    storage = json.loads(args.damacy_storage)
    mach = machine()
    out_name = args.out or f"remote-{mach['logical_cpus']}core"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    os.environ.setdefault("AWS_REGION", "us-east-1")

    import zarr

    tmp = Path(tempfile.mkdtemp(prefix="damacy-bench-remote-"))
    write_with_zarr(tmp / "vol.zarr", shape, chunk, shard, args.seed)
    local = zarr.open_array(str(tmp / "vol.zarr"), mode="r")
    stored = sum(f.stat().st_size for f in (tmp / "vol.zarr").rglob("*") if f.is_file())
    servers = Servers(tmp)
    n = args.warmup + args.batches
    batch_bytes = args.batch * int(np.prod(crop)) * 4
    points = []
    try:
        for si, store in enumerate(args.stores.split(",")):
            for di, delay in enumerate(_floats(args.delays_ms)):
                for bi, mbps in enumerate(_floats(args.mbps)):
                    seed = args.seed * 1000 + si * 100 + di * 10 + bi
                    boxes = random_boxes(shape, crop, n * args.batch, seed)
                    batches = [boxes[i * args.batch:(i + 1) * args.batch] for i in range(n)]
                    origin = servers.info[store]
                    proxy = Proxy([hostport(origin)], delay, mbps)
                    base = proxy.map[hostport(origin)]
                    try:
                        res = {}
                        order = ["damacy", "tensorstore"] if (di + bi) % 2 == 0 else ["tensorstore", "damacy"]
                        for reader in order:
                            proxy.counters()  # from zero
                            t_start = time.perf_counter()
                            if reader == "damacy":
                                uri = f"s3://{servers.info['bucket']}/vol.zarr" if store == "s3" else f"{base}/vol.zarr"
                                opts = {**S3_OPTS, "endpoint": base} if store == "s3" else {}
                                opts.update(storage)
                                times, sums, first, _ = run_damacy(uri, opts, batches, crop, args.ahead, args.threads, args.in_flight, extra)
                                want = np.stack([local[_slices(b)] for b in batches[0]]).astype(np.float32)
                                if not np.array_equal(first.numpy(), want):
                                    raise SystemExit(f"damacy's first batch differs from zarr-python ({store}, {delay} ms)")
                            else:
                                spec = ts_spec(store, base, servers.info["bucket"], args.threads, args.in_flight)
                                times, sums = run_tensorstore(spec, batches, args.ahead)
                            res[reader] = {**summarize(times, t_start, args.warmup, batch_bytes), "sums": sums, "proxy": proxy.counters()}
                        if res["damacy"]["sums"] != res["tensorstore"]["sums"]:
                            bad = [i for i, (a, b) in enumerate(zip(res["damacy"]["sums"], res["tensorstore"]["sums"])) if a != b]
                            raise SystemExit(f"damacy and tensorstore differ on batches {bad[:5]} ({store}, {delay} ms, {mbps} MB/s)")
                        for r in res.values():
                            del r["sums"]
                        point = {"store": store, "delay_ms": delay, "mbps": mbps, "values_equal": True, **res,
                                 "ratio": res["damacy"]["batches_per_s"] / res["tensorstore"]["batches_per_s"]}
                        points.append(point)
                        rpb = lambda r: res[r]["proxy"]["requests"] / n  # noqa: E731 - warm-up included
                        print(f"{store:5} {delay:5g} ms {('%g MB/s' % mbps) if mbps else 'unlimited':>10}: "
                              f"damacy {res['damacy']['batches_per_s']:6.2f} b/s  tensorstore {res['tensorstore']['batches_per_s']:6.2f} b/s"
                              f"  ratio {point['ratio']:.2f}  requests/batch {rpb('damacy'):.1f} / {rpb('tensorstore'):.1f}"
                              f"  in flight {res['damacy']['proxy']['mean_in_flight']:.1f} / {res['tensorstore']['proxy']['mean_in_flight']:.1f}", flush=True)
                    finally:
                        proxy.close()
    finally:
        servers.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()
    result = {
        "benchmark": "bench/bench_remote.py",
        "machine": mach,
        "load_avg_at_end": load,
        "note": args.note,
        "versions": versions(),
        "workload": {"shape": shape, "chunk": chunk, "shard": shard, "dtype": "uint16", "codec": "zstd level 3",
                     "stored_bytes": stored, "crop": crop, "batch": args.batch, "batches": args.batches,
                     "warmup": args.warmup, "ahead": args.ahead, "threads": args.threads, "in_flight": args.in_flight,
                     "damacy_config": extra, "damacy_storage": storage, "batch_out_bytes": batch_bytes},
        "points": points,
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{out_name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Remote reads: damacy vs tensorstore ({out_name})",
        "",
        f"Machine: {mach['cpu_model']}, {mach['logical_cpus']} logical CPUs. Load average at the end: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}. {args.note}",
        "",
        f"Array {'x'.join(map(str, shape))} uint16, chunk {'x'.join(map(str, chunk))}, shard {'x'.join(map(str, shard))}, "
        f"zstd 3 ({stored / 1e6:.1f} MB stored); crops {'x'.join(map(str, crop))}, batch {args.batch}, "
        f"{args.batches} timed batches after {args.warmup} warm-up, {args.ahead} batches ahead, "
        f"{args.in_flight} requests in flight, {args.threads} threads"
        + (f", damacy storage options {json.dumps(storage)}" if storage else "")
        + (f", damacy config {json.dumps(extra)}" if extra else "")
        + ". Delay is added to each direction "
        "(round trip +2×delay); the cap is shared by all connections. Every batch's bytes were equal "
        "between the readers.",
        "",
        "Requests per batch (warm-up included) and mean requests in flight are counted by the proxy.",
        "",
        "| store | delay/dir | cap | damacy batch/s | tensorstore batch/s | ratio | damacy median ms | tensorstore median ms "
        "| requests/batch damacy / ts | in flight damacy / ts |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    n_all = args.warmup + args.batches
    for p in points:
        cap = f"{p['mbps']:g} MB/s" if p["mbps"] else "none"
        lines.append(f"| {p['store']} | {p['delay_ms']:g} ms | {cap} | {p['damacy']['batches_per_s']:.2f} | "
                     f"{p['tensorstore']['batches_per_s']:.2f} | {p['ratio']:.2f} | {p['damacy']['median_batch_ms']:.0f} | "
                     f"{p['tensorstore']['median_batch_ms']:.0f} | {p['damacy']['proxy']['requests'] / n_all:.1f} / "
                     f"{p['tensorstore']['proxy']['requests'] / n_all:.1f} | {p['damacy']['proxy']['mean_in_flight']:.1f} / "
                     f"{p['tensorstore']['proxy']['mean_in_flight']:.1f} |")
    (out_dir / f"{out_name}.md").write_text("\n".join(lines) + "\n")
    print(f"# wrote {out_dir / out_name}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
