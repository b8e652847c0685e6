"""The case registry and the helpers cases use (the `Ctx` a case gets).

Importing this module needs neither torch nor damacy: the parent (pytest, the summary
printer) only reads the registry. `bind()` imports torch, damacy, zarr-python and
tests/fixtures.py into this module's globals; run_case.py calls it in the child, after it
has set the address-space limit.

A case is a function `f(ctx)`; it builds its hostile input under `ctx.tmp`, drives it
through the public API and checks the outcome with `ctx.raises` (a typed damacy error: the
class AND substrings naming the cause) or `ctx.same` (values against numpy/zarr-python).
It raises `WrongData` or `WrongError` (both AssertionErrors) when the library misbehaves.
"""

from __future__ import annotations

import math
import pickle
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Bound by bind() in the child.
damacy: Any = None
torch: Any = None
zarr: Any = None
C: Any = None  # zarr.codecs
F: Any = None  # tests/fixtures.py

#: Peak-RSS bound: the child's VmHWM must stay within
#:   baseline (VmHWM after importing torch, damacy, zarr-python and fixtures.py)
#:   + the largest budget of any Pipeline the case made
#:     (staging_bytes + decoded_bytes + n_batch_buffers x batch bytes + decoded_cache_bytes)
#:   + RSS_SLACK (zarr-python writing the small fixture, thread stacks, malloc arenas).
#: Cases use small budgets (16 MiB staging and decoded), so a bomb that allocates what its
#: stream declares (1 GiB, 1 TiB) is caught here even where no error is raised.
RSS_SLACK = 160 << 20

#: The address-space limit of a CPU child (RLIMIT_AS, set before torch is imported).
#: Measured here: VmPeak after `import torch, damacy, fixtures` and one Pipeline is
#: 3.1-3.3 GiB (torch reserves address space it never touches); torch imports under
#: 3.25 GiB. 6 GiB leaves ~3 GiB for threads, arenas and buffers, and makes any attempt to
#: allocate what a hostile input declares (>= 4 GiB) fail instead of swapping the machine.
AS_LIMIT = 6 << 30

#: Words that must never appear in a damacy error message (Rust debug output).
DEBUG_TEXT = ("Some(", "None)", "Ok(", "Err(", "\n", "panicked")


class WrongError(AssertionError):
    """The library raised the wrong thing (class, message), or nothing."""


class WrongData(AssertionError):
    """The library returned values that differ from the independent reader's."""


@dataclass
class Case:
    name: str
    group: str  # the class: "1 sizes", "4 bombs", ...
    fn: Callable[["Ctx"], None]
    expect: str  # "error" (a typed error) or "values" (correct values)
    doc: str
    timeout_s: float = 60.0
    xfail: str | None = None  # reason; a real bug (strict) or a behaviour pending on main
    strict: bool = True
    devices: tuple[str, ...] = ("cpu", "cuda")
    exit_check: bool = False  # the child exits through the interpreter (finalizers, atexit)


CASES: dict[str, Case] = {}
#: Cases that must FAIL in a given way: they check the harness itself (crash, hang, RSS and
#: wrong-data detection); not part of the suite.
SELFTESTS: dict[str, Case] = {}
#: Both, by name (what run_case.py and harness.py look cases up in).
ALL: dict[str, Case] = {}


def case(group: str, expect: str, *, timeout_s: float = 60.0, xfail: str | None = None,
         strict: bool = True, devices=("cpu", "cuda"), name: str | None = None, exit_check: bool = False,
         selftest: bool = False):
    def deco(fn):
        n = name or fn.__name__
        assert n not in ALL, n
        c = Case(n, group, fn, expect, (fn.__doc__ or "").strip().split("\n")[0],
                 timeout_s, xfail, strict, tuple(devices), exit_check)
        (SELFTESTS if selftest else CASES)[n] = c
        ALL[n] = c
        return fn
    return deco


def register(name: str, group: str, expect: str, fn: Callable, doc: str, **kw) -> None:
    fn.__doc__ = doc
    case(group, expect, name=name, **kw)(fn)


def bind() -> None:
    """Imports the heavy modules (in the child, after the rlimit)."""
    global damacy, torch, zarr, C, F
    import torch as _torch
    import damacy as _damacy
    import zarr as _zarr
    import zarr.codecs as _codecs
    import fixtures as _fixtures
    damacy, torch, zarr, C, F = _damacy, _torch, _zarr, _codecs, _fixtures


# ------------------------------------------------------------------------------------
# crc32c (google_crc32c when present; a table otherwise)
# ------------------------------------------------------------------------------------

_CRC_TABLE: list[int] = []


def crc32c(data: bytes) -> int:
    try:
        import google_crc32c
        return int(google_crc32c.value(bytes(data)))
    except ImportError:
        pass
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# ------------------------------------------------------------------------------------
# Hand-made zstd frames (RFC 8878)
# ------------------------------------------------------------------------------------


def zstd_frame(blocks: list[tuple], fcs: int | None = None, single_segment: bool = False) -> bytes:
    """A zstd frame: `blocks` of ("raw", bytes) or ("rle", byte, n); `fcs` the declared
    content size (8-byte field) or None (unknown; window 128 KiB)."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    if fcs is None:
        out += bytes([0x00, 0x38])  # no FCS, window descriptor: 2^17
    elif single_segment:
        out += bytes([0xE0]) + struct.pack("<Q", fcs)
    else:
        out += bytes([0xC0, 0x38]) + struct.pack("<Q", fcs)
    for i, b in enumerate(blocks):
        last = int(i == len(blocks) - 1)
        if b[0] == "raw":
            out += (last | (0 << 1) | (len(b[1]) << 3)).to_bytes(3, "little") + b[1]
        else:
            out += (last | (1 << 1) | (b[2] << 3)).to_bytes(3, "little") + bytes([b[1]])
    return bytes(out)


def rle_bomb(max_len: int) -> bytes:
    """A zstd frame of RLE blocks of 128 KiB each, as many as fit in `max_len` bytes
    (no declared content size): ~32768x expansion."""
    n = (max_len - 16) // 4
    header = zstd_frame([("rle", 0x11, 1 << 17)])[:6]
    block = (0 | (1 << 1) | ((1 << 17) << 3)).to_bytes(3, "little") + b"\x11"
    last = (1 | (1 << 1) | ((1 << 17) << 3)).to_bytes(3, "little") + b"\x11"
    return header + block * (n - 1) + last


# ------------------------------------------------------------------------------------
# The context a case runs in
# ------------------------------------------------------------------------------------


def budget_of(cfg) -> int:
    batch = math.prod(cfg.sample_shape) * cfg.samples_per_batch * {"u8": 1, "bf16": 2, "i64": 8}.get(cfg.dtype, 4)
    return cfg.staging_bytes + cfg.decoded_bytes + cfg.n_batch_buffers * batch + _decoded_cache_bound(cfg)


def _decoded_cache_bound(cfg) -> int:
    """What the decoded-chunk cache may hold: its bytes when set; unset, the window cache
    keeps only chunks the batches of the look-ahead window used (each batch decodes at most
    `decoded_bytes`), and never more than 1 GiB."""
    if cfg.decoded_cache_bytes is not None:
        return cfg.decoded_cache_bytes
    spb = cfg.samples_per_batch
    lookahead = cfg.lookahead_samples if cfg.lookahead_samples is not None else max(spb, min(1024, max(64, 8 * spb)))
    window_batches = -(-lookahead // spb) + cfg.n_batch_buffers
    return min(1 << 30, window_batches * cfg.decoded_bytes)


EXT = (4, 4, 4)
BOX = ((0, 4), (0, 4), (0, 4))


@dataclass
class Ctx:
    tmp: Path
    device: str  # "cpu" or "cuda:0"
    good_path: Path  # a valid array written by the parent (shape 16^3 uint16, sharded zstd)
    good_data: np.ndarray
    n_typed: int = 0
    n_values: int = 0
    budget: int = 0
    notes: list[str] = field(default_factory=list)
    pipelines: list[Any] = field(default_factory=list)

    # --- configs and pipelines -------------------------------------------------------

    def config(self, **kw):
        base = dict(samples_per_batch=1, sample_shape=list(EXT), n_io_threads=2, pop_timeout_s=20.0,
                    staging_bytes=16 << 20, decoded_bytes=16 << 20, lookahead_samples=4)
        if self.device != "cpu":
            base["device"] = self.device
        base.update(kw)
        return damacy.Config(**base)

    def pipeline(self, cfg=None, **kw):
        cfg = cfg if cfg is not None else self.config(**kw)
        p = damacy.Pipeline(cfg)
        self.budget = max(self.budget, budget_of(cfg))
        self.pipelines.append(p)
        return p

    def close_all(self) -> None:
        for p in self.pipelines:
            p.close()

    # --- outcomes --------------------------------------------------------------------

    def check_error(self, e: BaseException, cls, names=()) -> None:
        if not isinstance(e, damacy.DamacyError):
            raise WrongError(f"expected {cls.__name__}, got untyped {type(e).__name__}: {e}")
        classes = cls if isinstance(cls, tuple) else (cls,)
        if type(e) not in classes:
            raise WrongError(f"expected {'/'.join(c.__name__ for c in classes)}, got {type(e).__name__}: {e.what}")
        for n in names:
            if n.lower() not in e.what.lower():
                raise WrongError(f"{type(e).__name__} message should name {n!r}: {e.what!r}")
        for bad in DEBUG_TEXT:
            if bad in e.what:
                raise WrongError(f"{type(e).__name__} message holds debug text {bad!r}: {e.what!r}")
        e2 = pickle.loads(pickle.dumps(e))
        if type(e2) is not type(e) or e2.what != e.what:
            raise WrongError(f"{type(e).__name__} does not survive pickling")
        self.n_typed += 1
        self.notes.append(f"{type(e).__name__}: {e.what[:300]}")

    def raises(self, cls, names, call: Callable[[], Any]):
        """`call()` must raise a `cls` whose message names each of `names`."""
        try:
            r = call()
        except damacy.DamacyError as e:
            self.check_error(e, cls, names)
            return e
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001
            raise WrongError(f"expected {getattr(cls, '__name__', cls)}, got {type(e).__name__}: {e}") from e
        raise WrongData(f"expected {getattr(cls, '__name__', cls)}, got a result: {_summary(r)}")

    def same(self, actual, expected: np.ndarray, what: str = "") -> None:
        """`actual` (a batch or sample tensor) equals `expected` (source values, cast to the
        f32 output as the fixtures' oracle does), bit for bit, NaN-aware."""
        want = torch.from_numpy(np.ascontiguousarray(F._cast_f32(expected)))
        got = actual.detach().cpu()
        try:
            F.assert_same(got.reshape(want.shape) if got.numel() == want.numel() else got, want, what)
        except AssertionError as e:
            raise WrongData(str(e)) from None
        self.n_values += 1

    # --- reading ---------------------------------------------------------------------

    def read(self, uri, box=BOX, **cfg):
        """One sample through a fresh pipeline (spb 1): the sample's tensor."""
        p = self.pipeline(**cfg)
        try:
            p.push(damacy.Sample(uri, box))
            return p.pop()[0]
        finally:
            p.close()

    def good_box(self, box=BOX):
        return self.good_data[tuple(slice(a, b) for a, b in box)]

    def pop_error(self, uri, cls, names=(), box=BOX, **cfg):
        """A pipeline reads `uri` at `box`: pop raises `cls` naming `names`; then the same
        pipeline reads the good array correctly (it stays usable)."""
        p = self.pipeline(**cfg)
        try:
            p.push(damacy.Sample(uri, box))
            e = self.raises(cls, names, p.pop)
            gbox = tuple((0, n) for n in p.config.sample_shape)
            if len(gbox) == 3 and all(n <= 16 for n in p.config.sample_shape):
                p.push(damacy.Sample(str(self.good_path), gbox))
                self.same(p.pop()[0], self.good_box(gbox), "good sample after the error")
            return e
        finally:
            p.close()

    # --- writing hostile inputs ------------------------------------------------------

    def arr(self, name: str, dtype="uint16", codecs=None, shape=(16, 16, 16), chunk=(4, 4, 4),
            shard=None, index_location="end", index_crc32c=True, fill=0, data=None, seed=1,
            root: Path | None = None):
        """Writes an array with zarr-python; returns (path, data)."""
        path = (root or self.tmp) / f"{name}.zarr" if isinstance(name, str) else name
        codecs = list(codecs) if codecs is not None else [C.BytesCodec(), C.ZstdCodec(level=1)]
        if shard is not None:
            codecs = [C.ShardingCodec(chunk_shape=chunk, codecs=codecs,
                                      index_codecs=[C.BytesCodec()] + ([C.Crc32cCodec()] if index_crc32c else []),
                                      index_location=index_location)]
        a = zarr.create(store=str(path), shape=shape, chunks=shard or chunk, dtype=dtype, codecs=codecs,
                        fill_value=fill, zarr_format=3, overwrite=True)
        if data is None:
            data = F.make_values(str(np.dtype(dtype)), shape, seed)
        a[...] = data
        return path, data

    def meta(self, path: Path) -> dict:
        import json
        return json.loads((Path(path) / "zarr.json").read_text())

    def set_meta(self, path: Path, doc: dict) -> None:
        import json
        (Path(path) / "zarr.json").write_text(json.dumps(doc))

    def meta_array(self, name: str, **overrides) -> Path:
        """A folder holding only a zarr.json (16^3 uint16, chunks 4^3, bytes+zstd) with
        `overrides` applied to its top-level fields (None deletes a field)."""
        doc = {"zarr_format": 3, "node_type": "array", "shape": [16, 16, 16], "data_type": "uint16",
               "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 4, 4]}},
               "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
               "fill_value": 0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                           {"name": "zstd", "configuration": {"level": 1, "checksum": False}}],
               "attributes": {}}
        for k, v in overrides.items():
            if v is None:
                doc.pop(k, None)
            else:
                doc[k] = v
        path = self.tmp / f"{name}.zarr"
        path.mkdir(parents=True, exist_ok=True)
        self.set_meta(path, doc)
        return path


def n_inner(shard, chunk) -> int:
    return math.prod(s // c for s, c in zip(shard, chunk))


def shard_entries(shard_file: Path, n: int, loc="end", crc=True):
    offs, nbytes, start, _ = F.shard_index(shard_file, loc, n, crc)
    return [(int(o), int(b)) for o, b in zip(offs, nbytes)], start


def write_index(shard_file: Path, entries, loc="end", crc=True) -> None:
    raw = bytearray(Path(shard_file).read_bytes())
    body = b"".join(struct.pack("<QQ", o, b) for o, b in entries)
    if crc:
        body += struct.pack("<I", crc32c(body))
    start = 0 if loc == "start" else len(raw) - len(body)
    raw[start:start + len(body)] = body
    Path(shard_file).write_bytes(bytes(raw))


def replace_chunk_in_shard(shard_file: Path, n: int, i: int, payload: bytes, loc="end", crc=True) -> None:
    """Appends `payload` to the shard (index at the end) and points entry `i` at it."""
    assert loc == "end"
    entries, start = shard_entries(shard_file, n, loc, crc)
    raw = Path(shard_file).read_bytes()
    data = raw[:start]
    entries[i] = (len(data), len(payload))
    data += payload
    body = b"".join(struct.pack("<QQ", o, b) for o, b in entries)
    if crc:
        body += struct.pack("<I", crc32c(body))
    Path(shard_file).write_bytes(data + body)


def _summary(r: Any) -> str:
    if hasattr(r, "shape") and hasattr(r, "dtype"):
        try:
            flat = r.detach().cpu().reshape(-1)
            return f"tensor {tuple(r.shape)} {r.dtype}, first values {flat[:6].tolist()}"
        except Exception:  # noqa: BLE001
            return f"tensor {tuple(r.shape)}"
    return repr(r)[:200]


def vm(key: str) -> int:
    """A /proc/self/status field in bytes (VmHWM, VmRSS, VmPeak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def wait_until(pred: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return True
        time.sleep(step_s)
    return pred()
