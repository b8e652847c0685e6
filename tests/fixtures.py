"""Fixture arrays, the oracle, and the random box generator (no damacy needed).

Every fixture array is written by zarr-python 3.1.6, the independent writer/reader. Each
`Fixture` carries its geometry as a literal string (checked against the computed one in
test_fixtures.py) so the comment next to it cannot drift.

Missing data comes in three kinds, all of which must read as the fill value:
- `holes`: regions set to the fill value before writing; zarr-python (write_empty_chunks=False)
  then never writes a chunk (or a shard) that is entirely fill, so chunk-aligned holes are
  chunks that do not exist (unsharded: no file; sharded: an empty index entry, or no shard
  file when the whole shard is a hole).
- `only`: when set, only these regions are ever written; every other chunk never exists.
- `delete_files`: grid coordinates of chunk files (unsharded) or shard files (sharded) that
  are deleted after writing, so they once held data and are now gone.

bfloat16: zarr-python 3.1.6 has no bfloat16 data type ("No Zarr data type found that matches
dtype 'dtype(bfloat16)'"). `register_bfloat16()` registers a small ZDType (ml_dtypes'
bfloat16, the zarr v3 name "bfloat16") so zarr-python writes and reads it; test_fixtures.py
checks tensorstore (which supports bfloat16 natively) reads the same bits.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import ml_dtypes
import numpy as np
import torch
import zarr
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)

Aabb = tuple[tuple[int, int], ...]

BF16 = np.dtype(ml_dtypes.bfloat16)


# --------------------------------------------------------------------------------------
# bfloat16 for zarr-python
# --------------------------------------------------------------------------------------

_BF16_REGISTERED = False


def register_bfloat16() -> None:
    """Teaches zarr-python 3.1.6 the zarr v3 "bfloat16" data type (ml_dtypes.bfloat16).

    The stored bytes are little-endian IEEE bfloat16, the same as tensorstore's "bfloat16";
    fill values use the float JSON forms (numbers, "NaN", "Infinity", "-Infinity").
    """
    global _BF16_REGISTERED
    if _BF16_REGISTERED:
        return
    from zarr.core.dtype import Float16, data_type_registry

    @dataclass(frozen=True, kw_only=True)
    class BFloat16(Float16):
        dtype_cls = type(BF16)
        _zarr_v3_name = "bfloat16"
        _zarr_v2_names = ()

        def to_native_dtype(self):  # ml_dtypes' dtype has no byte-order variants
            return BF16

    data_type_registry.register("bfloat16", BFloat16)
    _BF16_REGISTERED = True


def uri_of(path: Path | str) -> str:
    """The uri damacy is given for an array directory: a plain absolute path."""
    return str(Path(path).resolve())


def native_dtype(name: str) -> np.dtype:
    return BF16 if name == "bfloat16" else np.dtype(name)


# --------------------------------------------------------------------------------------
# Fixture specs
# --------------------------------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Fixture:
    """One fixture array. `chunk` is the inner (decode) chunk; `shard` the shard (file) shape
    or None for an unsharded array whose chunks are files."""

    name: str
    geometry: str  # literal "shape=[..], inner=[..], shard=[..]: N chunks in M shards"
    dtype: str
    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    shard: tuple[int, ...] | None
    codecs: tuple[Any, ...]  # the chunk codec chain (inside the shard when sharded)
    fill_value: Any
    index_location: str = "end"
    index_crc32c: bool = True
    key_encoding: tuple[str, str] = ("default", "/")
    holes: tuple[Aabb, ...] = ()
    only: tuple[Aabb, ...] | None = None
    delete_files: tuple[tuple[int, ...], ...] = ()
    seed: int = 0

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The shape of one file: the shard, or the chunk when unsharded."""
        return self.shard or self.chunk

    @property
    def n_chunks(self) -> int:
        return math.prod(_ceil_div(s, c) for s, c in zip(self.shape, self.chunk))

    @property
    def n_files(self) -> int:
        return math.prod(_ceil_div(s, c) for s, c in zip(self.shape, self.grid_shape))

    def computed_geometry(self) -> str:
        def fmt(xs):
            return "[" + ",".join(map(str, xs)) + "]"

        if self.shard is None:
            return f"shape={fmt(self.shape)}, chunk={fmt(self.chunk)}: {self.n_chunks} chunks"
        return (
            f"shape={fmt(self.shape)}, inner={fmt(self.chunk)}, shard={fmt(self.shard)}: "
            f"{self.n_chunks} chunks in {self.n_files} shards"
        )

    def file_key(self, coords: Sequence[int]) -> str:
        """Store key of the chunk/shard file at grid `coords` under this key encoding."""
        name, sep = self.key_encoding
        parts = [str(c) for c in coords]
        if name == "v2":
            return sep.join(parts) if parts else "0"
        return sep.join(["c", *parts])

    def file_region(self, coords: Sequence[int]) -> Aabb:
        """The array region held by the file at grid `coords` (clipped to the array)."""
        return tuple(
            (c * g, min((c + 1) * g, s)) for c, g, s in zip(coords, self.grid_shape, self.shape)
        )

    def unwritten_files(self) -> list[tuple[int, ...]]:
        """Grid coordinates of the files no `only` region reaches (never written)."""
        if self.only is None:
            return []
        grid = [_ceil_div(s, g) for s, g in zip(self.shape, self.grid_shape)]
        return [c for c in np.ndindex(*grid)
                if not any(_meets(self.file_region(c), r) for r in self.only)]

    def fill_regions(self) -> tuple[Aabb, ...]:
        """Regions known to read as the fill value: holes, deleted files, and the first two
        never-written files of an `only` fixture."""
        return (tuple(self.holes) + tuple(self.file_region(c) for c in self.delete_files)
                + tuple(self.file_region(c) for c in self.unwritten_files()[:2]))


def _meets(a: Aabb, b: Aabb) -> bool:
    return all(lo < hi2 and lo2 < hi for (lo, hi), (lo2, hi2) in zip(a, b))


def _idx(*ranges: tuple[int, int]) -> Aabb:
    return tuple(ranges)


def _blosc(cname: str, shuffle: str, clevel: int = 5, blocksize: int = 0) -> BloscCodec:
    return BloscCodec(cname=cname, shuffle=shuffle, clevel=clevel, blocksize=blocksize)


# The fixture matrix. Blosc: every cname and every shuffle at least once
# (lz4/shuffle, zstd/bitshuffle, blosclz/noshuffle, zlib/shuffle, lz4hc/bitshuffle,
# lz4/bitshuffle, zstd/shuffle). Key encodings: default "/", default ".", v2 ".", v2 "/".
_FIXTURES = [
    # shape=[33,40,24], inner=[8,8,8], shard=[16,16,24]: 75 chunks in 9 shards
    Fixture(
        "bool_sharded_zstd",
        "shape=[33,40,24], inner=[8,8,8], shard=[16,16,24]: 75 chunks in 9 shards",
        "bool", (33, 40, 24), (8, 8, 8), (16, 16, 24),
        (BytesCodec(), ZstdCodec(level=1)), False,
        holes=(_idx((0, 16), (16, 32), (0, 24)),),  # one whole shard of fill: no shard file
        seed=1,
    ),
    # shape=[30,31,32], chunk=[8,16,16]: 16 chunks
    Fixture(
        "u8_blosc_lz4_shuffle",
        "shape=[30,31,32], chunk=[8,16,16]: 16 chunks",
        "uint8", (30, 31, 32), (8, 16, 16), None,
        (BytesCodec(), _blosc("lz4", "shuffle")), 0,
        holes=(_idx((8, 16), (0, 16), (16, 32)),),  # chunk (1,0,1) never written
        seed=2,
    ),
    # shape=[29,17,40], chunk=[10,10,10]: 24 chunks
    Fixture(
        "i8_gzip_dotkey",
        "shape=[29,17,40], chunk=[10,10,10]: 24 chunks",
        "int8", (29, 17, 40), (10, 10, 10), None,
        (BytesCodec(), GzipCodec(level=6)), -128,
        key_encoding=("default", "."),
        holes=(_idx((10, 20), (10, 17), (0, 10)),),  # edge chunk (1,1,0) never written
        seed=3,
    ),
    # shape=[48,40,36], inner=[8,8,12], shard=[16,24,36]: 90 chunks in 6 shards
    Fixture(
        "u16_be_sharded_start",
        "shape=[48,40,36], inner=[8,8,12], shard=[16,24,36]: 90 chunks in 6 shards",
        "uint16", (48, 40, 36), (8, 8, 12), (16, 24, 36),
        (BytesCodec(endian="big"),), 65535,
        index_location="start",
        holes=(_idx((0, 8), (0, 8), (12, 24)),),  # one inner chunk of fill: empty index entry
        delete_files=((1, 1, 0),),
        seed=4,
    ),
    # shape=[40,40,40], inner=[8,8,8], shard=[16,16,16]: 125 chunks in 27 shards
    Fixture(
        "i16_sharded_blosc_zstd_bitshuffle",
        "shape=[40,40,40], inner=[8,8,8], shard=[16,16,16]: 125 chunks in 27 shards",
        "int16", (40, 40, 40), (8, 8, 8), (16, 16, 16),
        (BytesCodec(), _blosc("zstd", "bitshuffle")), -7,
        index_crc32c=False,
        # only these regions are ever written: partial shards, untouched shards
        only=(_idx((0, 40), (0, 13), (0, 40)), _idx((20, 37), (20, 40), (5, 30))),
        seed=5,
    ),
    # shape=[20,30,25], chunk=[7,9,11]: 36 chunks
    Fixture(
        "u32_transpose_zstd_v2dot",
        "shape=[20,30,25], chunk=[7,9,11]: 36 chunks",
        "uint32", (20, 30, 25), (7, 9, 11), None,
        (TransposeCodec(order=(2, 0, 1)), BytesCodec(), ZstdCodec(level=3)), 123456,
        key_encoding=("v2", "."),
        delete_files=((1, 1, 1),),
        seed=6,
    ),
    # shape=[26,26,26], chunk=[13,8,8]: 32 chunks
    Fixture(
        "i32_blosc_blosclz_noshuffle_v2slash",
        "shape=[26,26,26], chunk=[13,8,8]: 32 chunks",
        "int32", (26, 26, 26), (13, 8, 8), None,
        (BytesCodec(), _blosc("blosclz", "noshuffle")), 0,
        key_encoding=("v2", "/"),
        holes=(_idx((13, 26), (24, 26), (24, 26)),),  # the far corner chunk
        seed=7,
    ),
    # shape=[24,24,24], inner=[6,6,6], shard=[12,12,24]: 64 chunks in 4 shards
    Fixture(
        "u64_be_sharded_start_blosc_zlib_v2dot",
        "shape=[24,24,24], inner=[6,6,6], shard=[12,12,24]: 64 chunks in 4 shards",
        "uint64", (24, 24, 24), (6, 6, 6), (12, 12, 24),
        (BytesCodec(endian="big"), _blosc("zlib", "shuffle")), 42,
        index_location="start",
        key_encoding=("v2", "."),
        holes=(_idx((6, 12), (0, 6), (18, 24)),),
        seed=8,
    ),
    # shape=[22,33,17], chunk=[11,11,11]: 12 chunks
    Fixture(
        "i64_blosc_lz4hc_bitshuffle",
        "shape=[22,33,17], chunk=[11,11,11]: 12 chunks",
        "int64", (22, 33, 17), (11, 11, 11), None,
        (BytesCodec(), _blosc("lz4hc", "bitshuffle")), -1,
        delete_files=((0, 2, 1),),
        seed=9,
    ),
    # shape=[32,32,32], inner=[8,16,8], shard=[16,32,16]: 32 chunks in 4 shards
    Fixture(
        "f16_sharded_zstd_nan",
        "shape=[32,32,32], inner=[8,16,8], shard=[16,32,16]: 32 chunks in 4 shards",
        "float16", (32, 32, 32), (8, 16, 8), (16, 32, 16),
        (BytesCodec(), ZstdCodec(level=5)), float("nan"),
        holes=(_idx((0, 8), (16, 32), (8, 16)),),
        delete_files=((1, 0, 1),),
        seed=10,
    ),
    # shape=[24,28,20], inner=[8,7,10], shard=[24,14,20]: 24 chunks in 2 shards
    Fixture(
        "bf16_sharded_zstd",
        "shape=[24,28,20], inner=[8,7,10], shard=[24,14,20]: 24 chunks in 2 shards",
        "bfloat16", (24, 28, 20), (8, 7, 10), (24, 14, 20),
        (BytesCodec(), ZstdCodec(level=3)), 1.5,
        holes=(_idx((8, 16), (7, 14), (0, 10)),),
        seed=11,
    ),
    # shape=[36,20,44], chunk=[12,10,11]: 24 chunks
    Fixture(
        "f32_transpose_blosc_lz4_bitshuffle_crc32c",
        "shape=[36,20,44], chunk=[12,10,11]: 24 chunks",
        "float32", (36, 20, 44), (12, 10, 11), None,
        (TransposeCodec(order=(1, 2, 0)), BytesCodec(), _blosc("lz4", "bitshuffle"), Crc32cCodec()),
        float("-inf"),
        holes=(_idx((12, 24), (10, 20), (22, 33)),),
        seed=12,
    ),
    # shape=[40,48,24], inner=[10,12,8], shard=[20,24,24]: 48 chunks in 4 shards
    Fixture(
        "f32_sharded_start_gzip_crc32c_inf",
        "shape=[40,48,24], inner=[10,12,8], shard=[20,24,24]: 48 chunks in 4 shards",
        "float32", (40, 48, 24), (10, 12, 8), (20, 24, 24),
        (BytesCodec(), GzipCodec(level=1), Crc32cCodec()), float("inf"),
        index_location="start",
        holes=(_idx((20, 30), (0, 12), (8, 16)),),
        delete_files=((0, 1, 0),),
        seed=13,
    ),
    # shape=[25,23,21], chunk=[8,8,8]: 36 chunks
    Fixture(
        "f64_be_gzip_nan",
        "shape=[25,23,21], chunk=[8,8,8]: 36 chunks",
        "float64", (25, 23, 21), (8, 8, 8), None,
        (BytesCodec(endian="big"), GzipCodec(level=5)), float("nan"),
        holes=(_idx((8, 16), (8, 16), (8, 16)),),
        seed=14,
    ),
    # shape=[100,90], inner=[16,16], shard=[32,48]: 42 chunks in 8 shards
    Fixture(
        "f32_2d_sharded_zstd",
        "shape=[100,90], inner=[16,16], shard=[32,48]: 42 chunks in 8 shards",
        "float32", (100, 90), (16, 16), (32, 48),
        (BytesCodec(), ZstdCodec(level=2)), 0.0,
        holes=(_idx((32, 48), (48, 64)),),
        delete_files=((2, 0),),
        seed=15,
    ),
    # shape=[6,10,12,14], inner=[2,4,4,7], shard=[4,8,8,14]: 54 chunks in 8 shards
    Fixture(
        "u16_4d_sharded_blosc_zstd_shuffle",
        "shape=[6,10,12,14], inner=[2,4,4,7], shard=[4,8,8,14]: 54 chunks in 8 shards",
        "uint16", (6, 10, 12, 14), (2, 4, 4, 7), (4, 8, 8, 14),
        (BytesCodec(), _blosc("zstd", "shuffle")), 3,
        holes=(_idx((0, 2), (4, 8), (0, 4), (7, 14)),),
        delete_files=((1, 0, 1, 0),),
        seed=16,
    ),
    # Several blosc blocks per chunk, so the GPU path decodes only the blocks a crop needs.
    # lz4 (a splitting codec): c-blosc raises a forced block size to 64 KiB, so 73,728-byte
    # chunks hold one block of 2 lz4 streams and an 8,192-byte leftover block. zstd with
    # bitshuffle: 2,640-byte chunks in 5 blocks of 512 and an 80-byte leftover.
    # shape=[20,60,60], inner=[16,48,48], shard=[16,96,48]: 8 chunks in 4 shards
    Fixture(
        "u16_sharded_blosc_lz4_blocks",
        "shape=[20,60,60], inner=[16,48,48], shard=[16,96,48]: 8 chunks in 4 shards",
        "uint16", (20, 60, 60), (16, 48, 48), (16, 96, 48),
        (BytesCodec(), _blosc("lz4", "shuffle", blocksize=640)), 9,
        holes=(_idx((16, 20), (0, 48), (48, 60)),),
        seed=17,
    ),
    # shape=[30,40,33], inner=[6,20,11], shard=[12,40,33]: 30 chunks in 3 shards
    Fixture(
        "i16_sharded_blosc_zstd_bitshuffle_blocks",
        "shape=[30,40,33], inner=[6,20,11], shard=[12,40,33]: 30 chunks in 3 shards",
        "int16", (30, 40, 33), (6, 20, 11), (12, 40, 33),
        (BytesCodec(), _blosc("zstd", "bitshuffle", blocksize=512)), -25,
        delete_files=((2, 0, 0),),
        seed=18,
    ),
]

FIXTURES: dict[str, Fixture] = {f.name: f for f in _FIXTURES}
FIXTURE_NAMES: list[str] = list(FIXTURES)


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


def _smooth(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A smooth field in [-1, 1]."""
    axes = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    out = np.zeros(shape, dtype=np.float64)
    for ax in axes:
        out += np.sin(ax * rng.uniform(0.05, 0.4) + rng.uniform(0, 2 * np.pi))
    return out / len(shape)


def _blocks_mask(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """True on a checker of blocks (the random part); False elsewhere (the smooth part)."""
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    sizes = rng.integers(3, 9, size=len(shape))
    acc = sum(ax // s for ax, s in zip(axes, sizes))
    return (acc % 2) == 0


def _scatter(out: np.ndarray, values: Sequence[Any], rng: np.random.Generator, copies: int = 6) -> None:
    flat = out.reshape(-1)
    for v in values:
        flat[rng.choice(flat.size, size=copies, replace=False)] = v


# Float specials placed in every float fixture (cast to the source dtype first).
def _float_specials(dt: np.dtype) -> list[Any]:
    fi = ml_dtypes.finfo(dt) if dt == BF16 else np.finfo(dt)
    vals = [
        np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0,
        fi.smallest_subnormal, -fi.smallest_subnormal, fi.tiny, -fi.tiny, fi.max, fi.min,
        # ties for f32 -> bf16 rounding (nearest even): 1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6
        1.00390625, 1.01171875,
    ]
    if dt == np.float64:
        vals += [
            1e-40, -1e-40,  # f32 subnormal after the cast
            1e-50, -1e-50,  # underflow to +-0 in f32
            3.5e38, -3.5e38,  # overflow to +-inf in f32
            1.0 + 2.0**-24, 1.0 + 3 * 2.0**-24,  # f64 -> f32 ties
            np.nextafter(np.float64(np.finfo(np.float32).max), np.inf),
        ]
    return vals


def _int_specials(dt: np.dtype) -> list[int]:
    ii = np.iinfo(dt)
    vals = [ii.min, ii.max, 0, 1]
    if ii.min < 0:
        vals += [-1]
    # values that do not fit f32 exactly (nearest, ties to even)
    # 2**62+2**38+1 and 2**63+2**39+1 sit just above an f32 tie: going through f64 first
    # (double rounding) lands on the tie and rounds down; the direct cast rounds up.
    for v in [2**24 + 1, 2**24 + 3, 2**53 + 1, 2**62 + 2**38 + 1, 2**63 - 1, 2**63 + 2**39 + 1, 2**64 - 1]:
        if ii.min <= v <= ii.max:
            vals.append(v)
        if ii.min <= -v <= ii.max:
            vals.append(-v)
    return vals


def make_values(dtype: str, shape: Sequence[int], seed: int) -> np.ndarray:
    """Non-constant values: a smooth part and a random part (checker of blocks), with the
    dtype's extremes and, for floats, NaN/inf/-0.0/subnormals scattered in."""
    rng = np.random.default_rng(seed)
    dt = native_dtype(dtype)
    smooth = _smooth(shape, rng)
    mask = _blocks_mask(shape, rng)
    if dt == np.bool_:
        out = np.where(mask, rng.random(shape) < 0.5, smooth > 0.1)
        return out.astype(np.bool_)
    if np.issubdtype(dt, np.integer):
        ii = np.iinfo(dt)
        lo, hi = float(ii.min), float(ii.max)
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * 0.9
        smooth_vals = np.round(mid + smooth * half)
        out = np.empty(shape, dtype=dt)
        out[...] = smooth_vals.astype(np.float64).clip(lo, hi * 0.95 if hi > 2**53 else hi).astype(dt)
        rand = rng.integers(ii.min, ii.max, size=shape, dtype=dt, endpoint=True)
        out[mask] = rand[mask]
        _scatter(out, _int_specials(dt), rng)
        out[(0,) * len(shape)] = ii.min
        out[(-1,) * len(shape)] = ii.max
        return out
    # floats
    if dt == np.float16:
        exp_lo, exp_hi = -7.0, 4.5
    elif dt == np.float64:
        exp_lo, exp_hi = -46.0, 40.0  # some beyond f32's range both ways
    else:  # float32, bfloat16
        exp_lo, exp_hi = -40.0, 37.0
    rand = rng.standard_normal(shape) * 10.0 ** rng.uniform(exp_lo, exp_hi, size=shape)
    vals = np.where(mask, rand, smooth * 100.0)
    with np.errstate(over="ignore"):  # f64 beyond the source range -> +-inf
        out = vals.astype(dt)  # f64 -> bf16 through ml_dtypes: nearest
    _scatter(out, [dt.type(v) for v in _float_specials(dt)], rng)
    return out


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def region_slices(aabb: Aabb) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in aabb)


def write_fixture(fx: Fixture, root: Path) -> Path:
    """Writes `fx` under `root` with zarr-python and returns the array's directory."""
    register_bfloat16()
    path = Path(root) / f"{fx.name}.zarr"
    if fx.shard is not None:
        index_codecs = [BytesCodec()] + ([Crc32cCodec()] if fx.index_crc32c else [])
        codecs = [
            ShardingCodec(
                chunk_shape=fx.chunk,
                codecs=list(fx.codecs),
                index_codecs=index_codecs,
                index_location=fx.index_location,
            )
        ]
    else:
        codecs = list(fx.codecs)
    arr = zarr.create(
        store=str(path),
        shape=fx.shape,
        chunks=fx.grid_shape,
        dtype=native_dtype(fx.dtype),
        codecs=codecs,
        fill_value=fx.fill_value,
        chunk_key_encoding={"name": fx.key_encoding[0], "separator": fx.key_encoding[1]},
        zarr_format=3,
        config={"write_empty_chunks": False},
        overwrite=True,
    )
    data = make_values(fx.dtype, fx.shape, fx.seed)
    fill = np.array(fx.fill_value).astype(data.dtype)
    for hole in fx.holes:
        data[region_slices(hole)] = fill
    if fx.only is None:
        arr[...] = data
    else:
        for region in fx.only:
            arr[region_slices(region)] = data[region_slices(region)]
    for coords in fx.delete_files:
        f = path / fx.file_key(coords)
        if not f.is_file():
            raise AssertionError(f"{fx.name}: file {f} to delete was never written")
        f.unlink()
    return path


def write_all_fixtures(root: Path) -> dict[str, Path]:
    return {name: write_fixture(fx, root) for name, fx in FIXTURES.items()}


# --------------------------------------------------------------------------------------
# Shard index reader (independent of zarr-python; used by checks and corruptions)
# --------------------------------------------------------------------------------------

EMPTY = 2**64 - 1


def shard_index(shard_file: Path, index_location: str, n_chunks_per_shard: int, crc32c: bool):
    """(offsets, nbytes, index_start, index_nbytes) of a shard file: offsets/nbytes as
    uint64 arrays in chunk order (C order over the shard's chunk grid); EMPTY marks a chunk
    that was never written."""
    raw = Path(shard_file).read_bytes()
    n = 16 * n_chunks_per_shard + (4 if crc32c else 0)
    start = 0 if index_location == "start" else len(raw) - n
    entries = np.frombuffer(raw[start:start + 16 * n_chunks_per_shard], dtype="<u8").reshape(-1, 2)
    return entries[:, 0].copy(), entries[:, 1].copy(), start, n


def fixture_shard_index(fx: Fixture, shard_file: Path):
    """shard_index of one shard file of fixture `fx`."""
    n = math.prod(s // c for s, c in zip(fx.shard, fx.chunk))
    return shard_index(shard_file, fx.index_location, n, fx.index_crc32c)


# --------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------


def _to_out(f32: np.ndarray, out_dtype: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(f32, dtype=np.float32))
    if out_dtype in ("f32", "float32"):
        return t
    if out_dtype in ("bf16", "bfloat16"):
        return t.to(torch.bfloat16)
    raise ValueError(f"out_dtype {out_dtype!r}")


def _cast_f32(values: np.ndarray) -> np.ndarray:
    """The cast damacy must match: numpy's astype(float32) (bool -> 0/1, nearest even)."""
    with np.errstate(over="ignore"):  # f64 beyond f32's range -> +-inf, as intended
        return np.asarray(values).astype(np.float32)


def _clip(aabb: Aabb, shape: Sequence[int]) -> tuple[Aabb, tuple[slice, ...]] | None:
    """The in-bounds part of `aabb` (array coordinates) and where it lands in the box."""
    inner, dst = [], []
    for (a, b), n in zip(aabb, shape):
        lo, hi = max(a, 0), min(b, n)
        if lo >= hi:
            return None
        inner.append((lo, hi))
        dst.append(slice(lo - a, hi - a))
    return tuple(inner), tuple(dst)


def _check_box(aabb: Aabb, shape: Sequence[int], out_of_bounds: str) -> Aabb:
    aabb = tuple((int(a), int(b)) for a, b in aabb)
    if len(aabb) != len(shape):
        raise ValueError(f"box rank {len(aabb)} != array rank {len(shape)}")
    if any(b <= a for a, b in aabb):
        raise ValueError(f"empty box {aabb}")
    inside = all(0 <= a and b <= n for (a, b), n in zip(aabb, shape))
    if not inside and out_of_bounds != "fill":
        raise ValueError(f"box {aabb} outside array of shape {tuple(shape)}")
    return aabb


def open_zarr(path: Path | str) -> zarr.Array:
    register_bfloat16()
    return zarr.open_array(str(path), mode="r")


def oracle_read(path: Path | str, aabb: Aabb, out_dtype: str = "f32",
                out_of_bounds: str = "error") -> torch.Tensor:
    """The tensor damacy must produce for one sample (uri=path, aabb), read by zarr-python."""
    arr = open_zarr(path)
    aabb = _check_box(aabb, arr.shape, out_of_bounds)
    fill32 = _cast_f32(np.array(arr.fill_value, dtype=arr.dtype))
    out = np.full([b - a for a, b in aabb], fill32, dtype=np.float32)
    clipped = _clip(aabb, arr.shape)
    if clipped is not None:
        inner, dst = clipped
        out[dst] = _cast_f32(arr[region_slices(inner)])
    return _to_out(out, out_dtype)


class OracleArray:
    """oracle_read over one array held in memory (read once by zarr-python); same results,
    checked against oracle_read in test_fixtures.py."""

    def __init__(self, path: Path | str):
        arr = open_zarr(path)
        self.path = Path(path)
        self.shape = tuple(arr.shape)
        self.dtype = arr.dtype
        self.source = arr[...]
        self.fill_source = np.array(arr.fill_value, dtype=arr.dtype)
        self.fill32 = _cast_f32(self.fill_source)
        self.f32 = _cast_f32(self.source)

    def read(self, aabb: Aabb, out_dtype: str = "f32", out_of_bounds: str = "error") -> torch.Tensor:
        aabb = _check_box(aabb, self.shape, out_of_bounds)
        if all(0 <= a and b <= n for (a, b), n in zip(aabb, self.shape)):
            return _to_out(self.f32[region_slices(aabb)], out_dtype)
        out = np.full([b - a for a, b in aabb], self.fill32, dtype=np.float32)
        clipped = _clip(aabb, self.shape)
        if clipped is not None:
            inner, dst = clipped
            out[dst] = self.f32[region_slices(inner)]
        return _to_out(out, out_dtype)

    def read_batch(self, boxes: Sequence[Aabb], out_dtype: str = "f32",
                   out_of_bounds: str = "error") -> torch.Tensor:
        return torch.stack([self.read(b, out_dtype, out_of_bounds) for b in boxes])


# --------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


def mismatches(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Bool mask of voxels that differ: bit patterns differ and not both NaN (so -0.0 != 0.0,
    any NaN == any NaN)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    a, e = actual.contiguous(), expected.contiguous()
    both_nan = torch.isnan(a) & torch.isnan(e)
    return (_bits(a) != _bits(e)) & ~both_nan


def assert_same(actual: torch.Tensor, expected: torch.Tensor, context: str = "") -> None:
    """NaN-aware exact equality with a readable report of the first differing voxels."""
    assert actual.dtype == expected.dtype, f"{context}: dtype {actual.dtype} != {expected.dtype}"
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{context}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    )
    bad = mismatches(actual, expected)
    n = int(bad.sum())
    if n:
        idx = bad.nonzero()[:8].tolist()
        lines = [
            f"  at {tuple(i)}: got {actual[tuple(i)].item()!r} expected {expected[tuple(i)].item()!r}"
            for i in idx
        ]
        raise AssertionError(f"{context}: {n} of {bad.numel()} voxels differ\n" + "\n".join(lines))


# --------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------


def _starts_for(kind: str, n: int, b: int, rng: np.random.Generator, grid: Sequence[int],
                focus: tuple[int, int] | None, outside: bool) -> int:
    hi = n - b  # largest start keeping the box inside
    if outside:
        # partly outside past the upper end (Samples reject negative coordinates)
        return int(rng.integers(max(hi + 1, 0), n)) if n > 0 else 0
    if hi < 0:
        raise ValueError("box larger than the array needs outside=True")
    if kind == "low":
        return 0
    if kind == "high":
        return hi
    if kind == "aligned":
        g = int(rng.choice(grid))
        cands = [x + d for x in range(0, n, g) for d in (-1, 0, 1)]
        cands = [c for c in cands if 0 <= c <= hi]
        return int(rng.choice(cands)) if cands else int(rng.integers(0, hi + 1))
    if kind == "focus" and focus is not None:
        lo_s = max(focus[0] - b + 1, 0)
        hi_s = min(focus[1] - 1, hi)
        if lo_s <= hi_s:
            return int(rng.integers(lo_s, hi_s + 1))
    return int(rng.integers(0, hi + 1))


def random_boxes(shape: Sequence[int], box_shape: Sequence[int], n: int, seed: int, *,
                 grid: Sequence[int] = (), focus: Sequence[Aabb] = (),
                 outside_fraction: float = 0.0) -> list[Aabb]:
    """`n` boxes of extent `box_shape` in an array of `shape`, seeded. Per box one strategy:
    fully inside at random, touching a low or high edge of one dimension, a corner,
    chunk/shard aligned (+-1) using the extents in `grid`, straddling a `focus` region
    (missing data and its neighbours), or (with outside_fraction) partly outside past the
    upper end of one or more dimensions. Box extents larger than the array are always
    partly outside."""
    rng = np.random.default_rng(seed)
    nd = len(shape)
    kinds = ["inside", "edge", "corner", "aligned", "focus"]
    weights = np.array([3, 3, 1, 2, 2 if focus else 0], dtype=float)
    boxes = []
    for i in range(n):
        kind = str(rng.choice(kinds, p=weights / weights.sum()))
        region = focus[int(rng.integers(len(focus)))] if focus else None
        out_dims = set()
        if outside_fraction and rng.random() < outside_fraction:
            out_dims = set(rng.choice(nd, size=int(rng.integers(1, nd + 1)), replace=False).tolist())
        edge_dim = int(rng.integers(nd))
        edge_side = "low" if rng.random() < 0.5 else "high"
        box = []
        for d in range(nd):
            if kind == "edge":
                k = edge_side if d == edge_dim else "inside"
            elif kind == "corner":
                k = "low" if rng.random() < 0.5 else "high"
            else:
                k = kind
            outside = d in out_dims or box_shape[d] > shape[d]
            s = _starts_for(k, shape[d], box_shape[d], rng, [g[d] for g in grid] if grid else [1],
                            region[d] if region else None, outside)
            box.append((s, s + int(box_shape[d])))
        boxes.append(tuple(box))
    return boxes


@dataclass
class BoxPlan:
    """Boxes of one extent (one damacy Config), a multiple of `batch` in number."""

    box_shape: tuple[int, ...]
    boxes: list[Aabb]
    batch: int
    out_of_bounds: str = "error"


def plan_boxes(fx: Fixture, seed: int = 0, batch: int = 8) -> list[BoxPlan]:
    """~200 seeded boxes for `fx` in four extents: single voxel, small (about a chunk,
    unaligned), medium (spanning several chunks and shards), whole array."""
    rng = np.random.default_rng([fx.seed, seed])
    shape = fx.shape
    grid = [fx.chunk] + ([fx.shard] if fx.shard else [])
    focus = fx.fill_regions()
    small = tuple(int(min(n, rng.integers(1, c + 4))) for n, c in zip(shape, fx.chunk))
    span = fx.shard or tuple(2 * c for c in fx.chunk)
    medium = tuple(int(min(n, g + rng.integers(1, c + 1))) for n, g, c in zip(shape, span, fx.chunk))
    plans = []
    for i, (extent, count) in enumerate([((1,) * len(shape), 40), (small, 80), (medium, 72), (shape, 8)]):
        boxes = random_boxes(shape, extent, count, seed=int(rng.integers(2**31)) + i,
                             grid=grid, focus=focus)
        plans.append(BoxPlan(tuple(extent), boxes, batch))
    return plans


def plan_fill_boxes(fx: Fixture, seed: int = 0, batch: int = 8) -> list[BoxPlan]:
    """Boxes for out_of_bounds="fill": mostly partly outside (past the upper ends), some
    inside, plus an extent larger than the array in every dimension."""
    rng = np.random.default_rng([fx.seed, seed, 1])
    shape = fx.shape
    grid = [fx.chunk] + ([fx.shard] if fx.shard else [])
    medium = tuple(int(min(n, c + rng.integers(1, c + 1))) for n, c in zip(shape, fx.chunk))
    larger = tuple(n + int(rng.integers(1, 5)) for n in shape)
    plans = []
    for i, (extent, count) in enumerate([(medium, 32), (larger, 8)]):
        boxes = random_boxes(shape, extent, count, seed=int(rng.integers(2**31)) + i,
                             grid=grid, focus=fx.fill_regions(), outside_fraction=0.75)
        plans.append(BoxPlan(tuple(extent), boxes, batch, out_of_bounds="fill"))
    return plans


def boxes_touch_outside(box: Aabb, shape: Sequence[int]) -> bool:
    return any(a < 0 or b > n for (a, b), n in zip(box, shape))


def zarr_json(path: Path) -> dict:
    return json.loads((Path(path) / "zarr.json").read_text())


def files_under(path: Path) -> list[str]:
    """Store keys of all chunk/shard files of the array at `path` (zarr.json excluded)."""
    path = Path(path)
    keys = []
    for dirpath, _, files in os.walk(path):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), path)
            if rel != "zarr.json":
                keys.append(rel.replace(os.sep, "/"))
    return sorted(keys)


# --------------------------------------------------------------------------------------
# Error fixtures (test_errors.py): each broken array is 3D, shape [16,16,16], and broken
# in its first chunk, so the box ERROR_BOX = [0,4)^3 reaches the damage.
# --------------------------------------------------------------------------------------

ERROR_SHAPE = (16, 16, 16)
ERROR_BOX: Aabb = ((0, 4), (0, 4), (0, 4))

# shape=[20,24,28], inner=[4,8,8], shard=[8,16,16]: 240 chunks in 12 shards
GOOD = Fixture(
    "good_u16_sharded",
    "shape=[20,24,28], inner=[4,8,8], shard=[8,16,16]: 240 chunks in 12 shards",
    "uint16", (20, 24, 28), (4, 8, 8), (8, 16, 16),
    (BytesCodec(), ZstdCodec(level=3)), 0,
    seed=100,
)


def _write_plain(path: Path, dtype, codecs, shard: tuple[int, ...] | None = None,
                 chunk=(4, 4, 4), index_location="end", index_crc32c=True, fill_value=0,
                 data: np.ndarray | None = None) -> zarr.Array:
    if shard is not None:
        codecs = [ShardingCodec(chunk_shape=chunk, codecs=list(codecs),
                                index_codecs=[BytesCodec()] + ([Crc32cCodec()] if index_crc32c else []),
                                index_location=index_location)]
    arr = zarr.create(store=str(path), shape=ERROR_SHAPE, chunks=shard or chunk, dtype=dtype,
                      codecs=list(codecs), fill_value=fill_value, zarr_format=3, overwrite=True)
    if data is None:
        data = make_values(str(np.dtype(dtype)), ERROR_SHAPE, seed=7) if np.dtype(dtype).kind in "uif" else None
    if data is not None:
        arr[...] = data
    return arr


def _shard_n(shard=(8, 8, 8), chunk=(4, 4, 4)) -> int:
    return math.prod(s // c for s, c in zip(shard, chunk))


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def write_error_fixtures(root: Path) -> dict[str, Path]:
    """Writes the arrays of test_errors.py under `root`; returns name -> directory. "missing"
    is a path that does not exist."""
    root = Path(root)
    out: dict[str, Path] = {}
    out["good"] = write_fixture(GOOD, root)
    out["missing"] = root / "does_not_exist.zarr"

    # zarr.json that is not JSON.
    p = root / "malformed_json.zarr"
    p.mkdir()
    (p / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array", "shape": [16, 16')
    out["malformed_json"] = p

    # valid JSON, but not array metadata (no shape, no data_type).
    p = root / "bad_metadata.zarr"
    p.mkdir()
    (p / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
    out["bad_metadata"] = p

    # a codec damacy does not implement: numcodecs.bz2.
    from zarr.codecs import BZ2
    p = root / "unsupported_codec.zarr"
    _write_plain(p, "uint16", [BytesCodec(), BZ2(level=5)])
    out["unsupported_codec"] = p

    # shard (index at the end) cut in half: the index is gone.
    p = root / "truncated_shard_end.zarr"
    _write_plain(p, "uint16", [BytesCodec(), ZstdCodec()], shard=(8, 8, 8))
    f = p / "c/0/0/0"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    out["truncated_shard_end"] = p

    # shard (index at the start, intact) cut in the middle of chunk 0: the index points past
    # the end of the file for chunk 0 and every chunk stored after it.
    p = root / "truncated_shard_start.zarr"
    _write_plain(p, "uint16", [BytesCodec(), ZstdCodec()], shard=(8, 8, 8), index_location="start")
    f = p / "c/0/0/0"
    offs, nbytes, _, _ = shard_index(f, "start", _shard_n(), True)
    f.write_bytes(f.read_bytes()[: int(offs[0] + nbytes[0] // 2)])
    out["truncated_shard_start"] = p

    # shard index whose crc32c does not match (first offset byte flipped).
    p = root / "bad_index_crc.zarr"
    _write_plain(p, "uint16", [BytesCodec(), ZstdCodec()], shard=(8, 8, 8))
    f = p / "c/0/0/0"
    _, _, start, _ = shard_index(f, "end", _shard_n(), True)
    _flip(f, start)
    out["bad_index_crc"] = p

    # unsharded chunk protected by crc32c with a payload byte flipped.
    p = root / "bad_chunk_crc.zarr"
    _write_plain(p, "uint16", [BytesCodec(), ZstdCodec(), Crc32cCodec()])
    f = p / "c/0/0/0"
    _flip(f, (f.stat().st_size - 4) // 2)
    out["bad_chunk_crc"] = p

    # the same inside a shard (index intact): chunk 0's payload byte flipped.
    p = root / "bad_chunk_crc_sharded.zarr"
    _write_plain(p, "uint16", [BytesCodec(), ZstdCodec(), Crc32cCodec()], shard=(8, 8, 8))
    f = p / "c/0/0/0"
    offs, nbytes, _, _ = shard_index(f, "end", _shard_n(), True)
    _flip(f, int(offs[0] + (nbytes[0] - 4) // 2))
    out["bad_chunk_crc_sharded"] = p

    # unsharded zstd chunk replaced by random bytes of the same length.
    rng = np.random.default_rng(99)
    p = root / "corrupt_zstd.zarr"
    _write_plain(p, "uint16", [BytesCodec(), ZstdCodec()])
    f = p / "c/0/0/0"
    f.write_bytes(rng.integers(0, 256, f.stat().st_size, dtype=np.uint8).tobytes())
    out["corrupt_zstd"] = p

    # zstd chunk inside a shard overwritten with random bytes (index and its crc intact).
    p = root / "corrupt_zstd_sharded.zarr"
    _write_plain(p, "uint16", [BytesCodec(), ZstdCodec()], shard=(8, 8, 8))
    f = p / "c/0/0/0"
    offs, nbytes, _, _ = shard_index(f, "end", _shard_n(), True)
    raw = bytearray(f.read_bytes())
    raw[int(offs[0]): int(offs[0] + nbytes[0])] = rng.integers(0, 256, int(nbytes[0]), dtype=np.uint8).tobytes()
    f.write_bytes(bytes(raw))
    out["corrupt_zstd_sharded"] = p

    # blosc chunk with its header's compressed-size field destroyed.
    p = root / "corrupt_blosc.zarr"
    _write_plain(p, "uint16", [BytesCodec(), _blosc("lz4", "shuffle")])
    f = p / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    raw[12:16] = (0xFFFFFFF0).to_bytes(4, "little")  # cbytes larger than the chunk
    f.write_bytes(bytes(raw))
    out["corrupt_blosc"] = p

    # a source dtype that cannot be cast to f32/bf16.
    p = root / "complex64.zarr"
    z = np.random.default_rng(3).standard_normal(ERROR_SHAPE + (2,)).astype(np.float32)
    _write_plain(p, "complex64", [BytesCodec()], data=z.view(np.complex64)[..., 0])
    out["complex64"] = p
    return out
