"""The hostile cases (issue 17), by the issue's classes 1-12 and "x" for the others.

Each case runs in its own child process (run_case.py), under an address-space limit and a
wall-clock timeout; the child then reads the good array and checks its values (the process
stays healthy) and reports its peak RSS (bound: common.RSS_SLACK). Geometry of the arrays
written here, unless a case says otherwise: shape=[16,16,16] uint16, chunk (or inner
chunk)=[4,4,4], shard=[8,8,8]: 64 chunks (in 8 shards); the box BOX=[0,4)^3 reads chunk
[0,0,0] (in shard [0,0,0], inner chunk 0).
"""

from __future__ import annotations

import gzip
import os
import signal
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

import common as H
from common import BOX, EXT, case, register, replace_chunk_in_shard, shard_entries, write_index, zstd_frame

SHARD = (8, 8, 8)
N_INNER = 8  # inner chunks per shard


def _d():
    return H.damacy


def _zstd(level=1):
    return [H.C.BytesCodec(), H.C.ZstdCodec(level=level)]


# ====================================================================================
# 1. configs whose sizes overflow or are huge
# ====================================================================================


def _cfg_error(cls_name, names, **kw):
    def fn(ctx):
        cls = getattr(_d(), cls_name) if isinstance(cls_name, str) else tuple(getattr(_d(), c) for c in cls_name)
        ctx.raises(cls, names, lambda: ctx.pipeline(ctx.config(**kw)))
    return fn


for _name, _cls, _names, _kw, _doc in [
    ("cfg_sample_shape_2p62_fill", "InvalidArgument", ["sample_shape"],
     dict(sample_shape=[2**62 + 16], out_of_bounds="fill"), "sample_shape (2**62+16,) with out_of_bounds fill: the batch size overflows"),
    ("cfg_batch_256gib", "OutOfMemory", ["samples_per_batch"],
     dict(samples_per_batch=64, sample_shape=[1024, 1024, 1024], lookahead_samples=64), "a 256 GiB batch (64 x 1024^3 f32): OutOfMemory at construction naming the knob"),
    ("cfg_batch_exactly_2p47", "OutOfMemory", ["samples_per_batch"],
     dict(sample_shape=[2**45]), "a batch of exactly 2^47 bytes (the cap): OutOfMemory, not an abort"),
    ("cfg_batch_over_2p47", "InvalidArgument", ["sample_shape", "2^47"],
     dict(sample_shape=[2**45 + 1]), "a batch one element over 2^47 bytes: InvalidArgument"),
    ("cfg_sample_shape_product_overflow", "InvalidArgument", ["sample_shape"],
     dict(sample_shape=[2**32, 2**32, 2**32]), "sample_shape whose product overflows u64"),
    ("cfg_sample_extent_2p63", "InvalidArgument", ["sample_shape"],
     dict(sample_shape=[2**63]), "a sample_shape extent of 2**63"),
    ("cfg_sample_extent_2p64", "InvalidArgument", ["sample_shape"],
     dict(sample_shape=[2**64 + 5]), "a sample_shape extent beyond u64"),
    ("cfg_samples_per_batch_2p32", "InvalidArgument", ["samples_per_batch"],
     dict(samples_per_batch=2**32), "samples_per_batch beyond u32"),
    ("cfg_staging_bytes_2p64", "InvalidArgument", ["staging_bytes"],
     dict(staging_bytes=2**64), "staging_bytes = 2**64"),
    ("cfg_decoded_cache_2p63", "InvalidArgument", ["decoded_cache_bytes"],
     dict(decoded_cache_bytes=2**63), "decoded_cache_bytes = 2**63"),
    ("cfg_pop_timeout_nan", "InvalidArgument", ["pop_timeout_s"],
     dict(pop_timeout_s=float("nan")), "pop_timeout_s NaN"),
    ("cfg_pop_timeout_inf", "InvalidArgument", ["pop_timeout_s"],
     dict(pop_timeout_s=float("inf")), "pop_timeout_s infinite"),
    ("cfg_bool_for_int", "InvalidArgument", ["samples_per_batch"],
     dict(samples_per_batch=True), "samples_per_batch=True (a bool for an integer)"),
    ("cfg_rank_33", "InvalidArgument", ["sample_shape"],
     dict(sample_shape=[1] * 33), "sample_shape of rank 33 (MAX_RANK is 32)"),
    ("cfg_n_io_threads_1e6", ("InvalidArgument", "OutOfMemory"), ["n_io_threads"],
     dict(n_io_threads=10**6), "n_io_threads = 10^6: refused (or OutOfMemory naming the knob), never a million threads"),
]:
    # On CUDA the output batch is torch's (allocated per pop on the device), so a huge batch is
    # not a construction error there: these two are CPU cases.
    _devices = ("cpu",) if _name in ("cfg_batch_256gib", "cfg_batch_exactly_2p47") else ("cpu", "cuda")
    register(_name, "1 sizes", "error", _cfg_error(_cls, _names, **_kw), _doc, timeout_s=90, devices=_devices)


@case("1 sizes", "values")
def cfg_huge_counts_are_lazy(ctx):
    """n_batch_buffers and lookahead_samples at 2**32-1: nothing is preallocated by count;
    a read is correct."""
    big = 2**32 - 1
    ctx.same(ctx.read(str(ctx.good_path), BOX, n_batch_buffers=big, lookahead_samples=big), ctx.good_box())


for _knob in ("n_array_meta_cache", "n_shard_index_cache", "n_chunk_layout_cache"):
    def _fn(ctx, _knob=_knob):
        try:
            t = ctx.read(str(ctx.good_path), BOX, **{_knob: 2**32 - 1})
        except _d().DamacyError as e:
            ctx.check_error(e, (_d().InvalidArgument, _d().OutOfMemory), [_knob])
            return
        ctx.same(t, ctx.good_box())
    register(f"cfg_{_knob}_2p32", "1 sizes", "values", _fn,
             f"{_knob} = 2**32-1: correct values, or InvalidArgument/OutOfMemory naming the knob; never an abort "
             "(config caps each cache at 2**24 entries; slots are made on demand)")


@case("1 sizes", "error")
def cfg_pop_timeout_1e300(ctx):
    """pop_timeout_s=1e300 is accepted; pop(timeout_s=0.2) with nothing pushed is TryAgain
    within a second (no Duration overflow)."""
    p = ctx.pipeline(pop_timeout_s=1e300)
    t0 = time.monotonic()
    ctx.raises(_d().TryAgain, [], lambda: p.pop(timeout_s=0.2))
    if time.monotonic() - t0 > 2.0:
        raise H.WrongError(f"pop(timeout_s=0.2) took {time.monotonic() - t0:.2f} s")
    p.close()


# ====================================================================================
# 2, 3. zstd frames declaring huge content sizes; index entries declaring huge chunks
# ====================================================================================


def _unsharded_with_chunk(ctx, name, payload: bytes, codecs=None, dtype="uint16", chunk=(4, 4, 4), shape=(16, 16, 16)):
    path, data = ctx.arr(name, dtype=dtype, codecs=codecs or _zstd(), chunk=chunk, shape=shape)
    (path / "c/0/0/0").write_bytes(payload)
    return path


def _sharded_with_chunk(ctx, name, payload: bytes, codecs=None, dtype="uint16"):
    path, data = ctx.arr(name, dtype=dtype, codecs=codecs or _zstd(), shard=SHARD)
    replace_chunk_in_shard(path / "c/0/0/0", N_INNER, 0, payload)
    return path


@case("2 zstd 2^63", "error")
def zstd_fcs_2p63_big_endian(ctx):
    """uint16 big-endian (the general chain: bytes(big) through zarrs): chunk [0,0,0] is a
    zstd frame declaring 2**63 content bytes holding one raw block of 128 valid bytes."""
    raw = np.arange(64, dtype=">u2").tobytes()
    path = _unsharded_with_chunk(ctx, "be", zstd_frame([("raw", raw)], fcs=2**63),
                                 codecs=[H.C.BytesCodec(endian="big"), H.C.ZstdCodec()])
    ctx.pop_error(str(path), _d().DecodeError, ["zstd", "chunk [0, 0, 0]", "be.zarr"])


@case("2 zstd 2^63", "error")
def zstd_fcs_2p63_single_segment_big_endian(ctx):
    """As zstd_fcs_2p63_big_endian with the single-segment flag (window = content size)."""
    raw = np.arange(64, dtype=">u2").tobytes()
    path = _unsharded_with_chunk(ctx, "be1", zstd_frame([("raw", raw)], fcs=2**63, single_segment=True),
                                 codecs=[H.C.BytesCodec(endian="big"), H.C.ZstdCodec()])
    ctx.pop_error(str(path), _d().DecodeError, ["zstd", "chunk [0, 0, 0]"])


@case("2 zstd 2^63", "error")
def zstd_fcs_2p63_sharded_big_endian(ctx):
    """The 2**63 frame as inner chunk 0 of a big-endian shard (index and crc32c valid)."""
    raw = np.arange(64, dtype=">u2").tobytes()
    path = _sharded_with_chunk(ctx, "be_sh", zstd_frame([("raw", raw)], fcs=2**63),
                               codecs=[H.C.BytesCodec(endian="big"), H.C.ZstdCodec()])
    ctx.pop_error(str(path), _d().DecodeError, ["zstd", "chunk [0, 0, 0]"])


@case("2 zstd 2^63", "error")
def zstd_fcs_2p63_rle_of_zeros(ctx):
    """A frame declaring 2**63 bytes whose one RLE block is 128 zero bytes: must not read as
    a success of zeros."""
    path = _unsharded_with_chunk(ctx, "be_z", zstd_frame([("rle", 0, 128)], fcs=2**63),
                                 codecs=[H.C.BytesCodec(endian="big"), H.C.ZstdCodec()])
    ctx.pop_error(str(path), _d().DecodeError, ["zstd"])


_TIB_FRAME_RAW = bytes(range(256)) * 4  # 1 KiB raw block


def _tib_frame():
    return zstd_frame([("raw", _TIB_FRAME_RAW[:1000])], fcs=1 << 40)


def _tib_case(chain_name, codecs_fn, sharded=False, crc=False, gzip_outer=False):
    def fn(ctx):
        payload = _tib_frame()
        if gzip_outer:
            payload = gzip.compress(payload)
        if crc:
            payload = payload + H.crc32c(payload).to_bytes(4, "little")
        if sharded:
            path = _sharded_with_chunk(ctx, chain_name, payload, codecs=codecs_fn())
        else:
            path = _unsharded_with_chunk(ctx, chain_name, payload, codecs=codecs_fn())
        ctx.pop_error(str(path), _d().DecodeError, ["zstd" if not gzip_outer else "gzip", "chunk [0, 0, 0]"])
    return fn


for _chain, _codecs, _kw in [
    ("identity", lambda: _zstd(), {}),
    ("big_endian", lambda: [H.C.BytesCodec(endian="big"), H.C.ZstdCodec()], {}),
    ("crc32c", lambda: [H.C.BytesCodec(), H.C.ZstdCodec(), H.C.Crc32cCodec()], dict(crc=True)),
    ("transpose", lambda: [H.C.TransposeCodec(order=(2, 1, 0)), H.C.BytesCodec(), H.C.ZstdCodec()], {}),
    ("sharded", lambda: _zstd(), dict(sharded=True)),
    ("zstd_then_gzip", lambda: [H.C.BytesCodec(), H.C.ZstdCodec(), H.C.GzipCodec()], dict(gzip_outer=True)),
]:
    register(f"zstd_1kib_declares_1tib_{_chain}", "3 huge declared", "error", _tib_case(_chain, _codecs, **_kw),
             f"a 1 KiB zstd chunk declaring 1 TiB of content, chain {_chain}")


def _index_case(entry, names, crc=True):
    def fn(ctx):
        path, _ = ctx.arr("idx", shard=SHARD, index_crc32c=crc)
        f = path / "c/0/0/0"
        entries, _ = shard_entries(f, N_INNER, "end", crc)
        entries[0] = entry(entries[0])
        write_index(f, entries, "end", crc)
        ctx.pop_error(str(path), _d().StorageError, names)
    return fn


register("shard_index_chunk_4tib", "3 huge declared", "error",
         _index_case(lambda e: (e[0], 4 << 40), ["inner chunk 0", "c/0/0/0"]),
         "an inner chunk declared 4 TiB long in the shard index (crc32c recomputed)")
register("shard_index_offset_4tib", "3 huge declared", "error",
         _index_case(lambda e: (4 << 40, e[1]), ["inner chunk 0", "c/0/0/0"]),
         "an inner chunk declared at offset 4 TiB")
register("shard_index_overflow_2p64", "5 overflow", "error",
         _index_case(lambda e: (2**64 - 16, 32), ["inner chunk 0", "c/0/0/0"]),
         "a shard index entry whose offset + size overflows 2**64")
register("shard_index_overflow_2p64_no_crc", "5 overflow", "error",
         _index_case(lambda e: (2**64 - 2, 2**63), ["inner chunk 0"], crc=False),
         "offset + size overflows 2**64, index without crc32c")
register("shard_index_half_empty", "5 overflow", "error",
         _index_case(lambda e: (2**64 - 1, 16), ["inner chunk 0"]),
         "an entry with offset 2**64-1 (the empty marker) but a real size")


@case("3 huge declared", "error")
def blosc_declares_1gib(ctx):
    """A blosc chunk whose header says it decodes to 1 GiB (chunk holds 128 bytes)."""
    path, _ = ctx.arr("blosc", codecs=[H.C.BytesCodec(), H.F._blosc("lz4", "shuffle")])
    f = path / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    raw[4:8] = (1 << 30).to_bytes(4, "little")  # nbytes
    f.write_bytes(bytes(raw))
    ctx.pop_error(str(path), _d().DecodeError, ["blosc", "chunk [0, 0, 0]"])


# ====================================================================================
# 4. bombs, and special files where zarr.json / chunks / shards should be
# ====================================================================================

BOMB_CHUNK = (32, 32, 32)  # uint16: 64 KiB decoded; a stored chunk may take ~160 KiB


@case("4 bombs", "error", timeout_s=90)
def gzip_bomb(ctx):
    """A ~100 KiB gzip chunk that inflates to 100 MiB, for a 64 KiB chunk."""
    import zlib
    co = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream, made 1 MiB at a time
    zeros = b"\0" * (1 << 20)
    bomb = b"".join(co.compress(zeros) for _ in range(100)) + co.flush()
    path = _unsharded_with_chunk(ctx, "gz", bomb, codecs=[H.C.BytesCodec(), H.C.GzipCodec()],
                                 chunk=BOMB_CHUNK, shape=(32, 32, 32))
    ctx.pop_error(str(path), _d().DecodeError, ["gzip", "chunk [0, 0, 0]"])


@case("4 bombs", "error")
def zstd_rle_bomb(ctx):
    """A 150 KiB zstd frame of RLE blocks expanding to ~5 GiB (no declared size), for a
    64 KiB chunk."""
    path = _unsharded_with_chunk(ctx, "rle", H.rle_bomb(150 << 10), chunk=BOMB_CHUNK, shape=(32, 32, 32))
    ctx.pop_error(str(path), _d().DecodeError, ["zstd", "chunk [0, 0, 0]"])


@case("4 bombs", "error")
def zstd_rle_bomb_sharded(ctx):
    """The RLE bomb as inner chunk 0 of a shard (inner 32^3 uint16)."""
    path, _ = ctx.arr("rle_sh", chunk=BOMB_CHUNK, shard=(32, 32, 32), shape=(32, 32, 32))
    replace_chunk_in_shard(path / "c/0/0/0", 1, 0, H.rle_bomb(150 << 10))
    ctx.pop_error(str(path), _d().DecodeError, ["zstd", "chunk [0, 0, 0]"])


@case("4 bombs", "error")
def chunk_512b_declares_1gib(ctx):
    """Metadata declares one 1 GiB chunk (uint8 1024^3); the stored chunk is 512 bytes;
    decoded_bytes is 16 MiB: BudgetExceeded naming decoded_bytes, nothing allocated."""
    path = ctx.meta_array("gib", shape=[1024, 1024, 1024], data_type="uint8",
                          chunk_grid={"name": "regular", "configuration": {"chunk_shape": [1024, 1024, 1024]}})
    (path / "c/0/0").mkdir(parents=True)
    (path / "c/0/0/0").write_bytes(os.urandom(512))
    ctx.pop_error(str(path), _d().BudgetExceeded, ["decoded_bytes"])


@case("4 bombs", "error")
def chunk_512b_declares_1gib_sharded(ctx):
    """As chunk_512b_declares_1gib, the chunk inside a shard (index valid)."""
    path = ctx.meta_array("gib_sh", shape=[1024, 1024, 1024], data_type="uint8",
                          chunk_grid={"name": "regular", "configuration": {"chunk_shape": [1024, 1024, 1024]}},
                          codecs=[{"name": "sharding_indexed", "configuration": {
                              "chunk_shape": [1024, 1024, 1024],
                              "codecs": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 1, "checksum": False}}],
                              "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                              "index_location": "end"}}])
    (path / "c/0/0").mkdir(parents=True)
    body = os.urandom(512)
    idx = (0).to_bytes(8, "little") + (512).to_bytes(8, "little")
    (path / "c/0/0/0").write_bytes(body + idx + H.crc32c(idx).to_bytes(4, "little"))
    ctx.pop_error(str(path), _d().BudgetExceeded, ["decoded_bytes"])


def _special(kind: str, target: Path) -> None:
    if target.exists() or target.is_symlink():
        if target.is_dir() and not target.is_symlink():
            import shutil
            shutil.rmtree(target)
        else:
            target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "devzero":
        os.symlink("/dev/zero", target)
    elif kind == "directory":
        target.mkdir()
    elif kind == "symlink_loop":
        os.symlink(target.name, target)
    elif kind == "sparse_1tib":
        with open(target, "wb") as f:
            f.truncate(1 << 40)
    elif kind == "empty":
        target.write_bytes(b"")
    else:
        raise ValueError(kind)


_SPECIAL_NAMES = {"fifo": "FIFO", "devzero": "device", "directory": "directory", "symlink_loop": "symbolic links"}


def _meta_special_case(kind, cls, names):
    def fn(ctx):
        path, _ = ctx.arr(f"meta_{kind}")
        _special(kind, path / "zarr.json")
        ctx.pop_error(str(path), getattr(_d(), cls), ["zarr.json", f"meta_{kind}.zarr", *names])
        ctx.raises(getattr(_d(), cls), ["zarr.json", *names], lambda: _d().array_info(str(path)))
    return fn


for _kind, _cls, _names in [
    ("fifo", "StorageError", ["FIFO"]), ("devzero", "StorageError", ["device"]),
    ("directory", "StorageError", ["directory"]), ("symlink_loop", "StorageError", ["symbolic links"]),
    ("sparse_1tib", "StorageError", ["1099511627776 bytes"]), ("empty", "InvalidArgument", ["malformed zarr.json"]),
]:
    register(f"zarr_json_{_kind}", "4 bombs", "error", _meta_special_case(_kind, _cls, _names),
             f"zarr.json is a {_kind.replace('_', ' ')}", timeout_s=30)


def _chunk_special_case(kind, cls, names, sharded):
    def fn(ctx):
        path, _ = ctx.arr(f"chunk_{kind}", shard=SHARD if sharded else None)
        _special(kind, path / "c/0/0/0")
        ctx.pop_error(str(path), getattr(_d(), cls), ["c/0/0/0" if sharded else "chunk [0, 0, 0]", *names])
    return fn


for _sharded in (False, True):
    _what = "shard" if _sharded else "chunk"
    for _kind, _cls, _names in [
        ("fifo", "StorageError", ["FIFO"]), ("devzero", "StorageError", ["device"]),
        ("directory", "StorageError", ["directory"]), ("symlink_loop", "StorageError", ["symbolic links"]),
        ("sparse_1tib", "StorageError", ["more than"] if not _sharded else ["crc32c"]),
        ("empty", "DecodeError" if not _sharded else "StorageError", ["zstd"] if not _sharded else ["shorter than"]),
    ]:
        register(f"{_what}_{_kind}", "4 bombs", "error", _chunk_special_case(_kind, _cls, _names, _sharded),
                 f"the {_what} file c/0/0/0 is a {_kind.replace('_', ' ')}", timeout_s=30)


@case("4 bombs", "error")
def zarr_json_17mib(ctx):
    """A real 17 MiB zarr.json (valid JSON, padded): Storage naming the size cap."""
    path, _ = ctx.arr("big_meta")
    text = (path / "zarr.json").read_text()
    (path / "zarr.json").write_text(text + " " * (17 << 20))
    ctx.pop_error(str(path), _d().StorageError, ["zarr.json", "more than the 16777216 bytes"])


@case("4 bombs", "values")
def zarr_json_15mib_valid(ctx):
    """A valid 15 MiB zarr.json (huge attributes) under the 16 MiB cap reads correctly."""
    path, data = ctx.arr("ok_meta")
    doc = ctx.meta(path)
    doc["attributes"] = {"blob": "x" * (15 << 20)}
    ctx.set_meta(path, doc)
    ctx.same(ctx.read(str(path)), data[:4, :4, :4])


@case("4 bombs", "error")
def zarr_json_deep_nesting(ctx):
    """zarr.json whose attributes nest 100000 arrays deep: InvalidArgument, no stack overflow."""
    path, _ = ctx.arr("deep")
    text = (path / "zarr.json").read_text().rstrip()
    assert text.endswith("}")
    deep = '"deep": ' + "[" * 100000 + "]" * 100000
    (path / "zarr.json").write_text(text[:-1] + ", " + deep + "}")
    ctx.pop_error(str(path), _d().InvalidArgument, ["malformed zarr.json", "deep.zarr"])


@case("4 bombs", "error")
def zarr_json_not_utf8(ctx):
    """zarr.json holding bytes that are not UTF-8."""
    path, _ = ctx.arr("nonutf8")
    raw = (path / "zarr.json").read_bytes()
    (path / "zarr.json").write_bytes(raw.replace(b'"attributes"', b'"attr\xff\xfebutes"'))
    ctx.pop_error(str(path), _d().InvalidArgument, ["malformed zarr.json"])


@case("4 bombs", "error")
def zarr_json_not_an_object(ctx):
    """zarr.json that is valid JSON but not an object (null, a list, a number)."""
    for body in ["null", "[1, 2, 3]", "3", '"array"']:
        path = ctx.tmp / f"notobj{len(body)}.zarr"
        path.mkdir()
        (path / "zarr.json").write_text(body)
        ctx.pop_error(str(path), _d().InvalidArgument, ["zarr"])


# ====================================================================================
# 5. shapes above 2^63 (the index overflow cases are registered with class 3 above)
# ====================================================================================


def _meta_error(cls, names, **overrides):
    def fn(ctx):
        path = ctx.meta_array("m", **overrides)
        ctx.pop_error(str(path), getattr(_d(), cls), names)
    return fn


def _grid(shape):
    return {"name": "regular", "configuration": {"chunk_shape": list(shape)}}


for _name, _group, _cls, _names, _kw, _doc in [
    ("shape_2p63", "5 overflow", "InvalidArgument", ["shape", "2^63 - 1"], dict(shape=[2**63, 16, 16]), "shape extent 2**63"),
    ("shape_2p64", "5 overflow", "InvalidArgument", ["malformed zarr.json"], dict(shape=[2**64, 16, 16]), "shape extent 2**64 (not a u64)"),
    ("shape_negative", "5 overflow", "InvalidArgument", ["malformed zarr.json"], dict(shape=[-16, 16, 16]), "negative shape extent"),
    ("chunk_shape_2p63", "5 overflow", "InvalidArgument", ["chunk_shape"], dict(chunk_grid=_grid([2**63, 4, 4])), "chunk_shape extent 2**63"),
    ("chunk_product_overflow", "5 overflow", "InvalidArgument", ["chunk"], dict(shape=[2**40] * 3, chunk_grid=_grid([2**32] * 3)), "chunk of 2^96 elements"),
    ("chunk_shape_zero", "5 overflow", "InvalidArgument", ["chunk_shape"], dict(chunk_grid=_grid([0, 4, 4])), "chunk_shape with a 0"),
    ("chunk_rank_mismatch", "x metadata", "InvalidArgument", ["chunk_shape"], dict(chunk_grid=_grid([4, 4])), "chunk_shape of rank 2 for a rank-3 array"),
    ("rank_0_array", "x metadata", "InvalidArgument", ["rank"], dict(shape=[], chunk_grid=_grid([])), "a rank-0 array"),
    ("rank_40_array", "x metadata", "InvalidArgument", ["rank"], dict(shape=[1] * 40, chunk_grid=_grid([1] * 40)), "a rank-40 array"),
    ("dtype_complex64", "x metadata", "DtypeMismatch", ["complex64"], dict(data_type="complex64", fill_value=[0.0, 0.0]), "data_type complex64"),
    ("dtype_string", "x metadata", "DtypeMismatch", ["string"], dict(data_type="string", fill_value=""), "data_type string"),
    ("dtype_not_a_name", "x metadata", "InvalidArgument", ["malformed zarr.json"], dict(data_type=17), "data_type 17"),
    ("unknown_codec", "x metadata", "InvalidArgument", ["bogus.codec"],
     dict(codecs=[{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "bogus.codec", "configuration": {}}]), "an unknown codec"),
    ("no_bytes_codec", "x metadata", "InvalidArgument", ["bytes"], dict(codecs=[{"name": "zstd", "configuration": {"level": 1, "checksum": False}}]), "a chain without an array->bytes codec"),
    ("transpose_bad_order", "x metadata", "InvalidArgument", ["transpose"],
     dict(codecs=[{"name": "transpose", "configuration": {"order": [0, 0, 1]}}, {"name": "bytes"}]), "transpose order not a permutation"),
    ("fill_value_string", "x metadata", "InvalidArgument", ["fill_value"], dict(fill_value="abc"), "fill_value 'abc' for uint16"),
    ("fill_value_out_of_range", "x metadata", "InvalidArgument", ["fill_value"], dict(fill_value=70000), "fill_value 70000 for uint16"),
    ("fill_value_float_for_int", "x metadata", "InvalidArgument", ["fill_value"], dict(fill_value=1.5), "fill_value 1.5 for uint16"),
    ("fill_value_missing", "x metadata", "InvalidArgument", ["fill_value"], dict(fill_value=None), "no fill_value"),
    ("node_type_group", "x metadata", "InvalidArgument", ["group"], dict(node_type="group"), "node_type group"),
    ("zarr_format_2", "x metadata", "InvalidArgument", ["zarr_format"], dict(zarr_format=2), "zarr_format 2"),
    ("chunk_grid_rectilinear", "x metadata", "InvalidArgument", ["rectilinear"],
     dict(chunk_grid={"name": "rectilinear", "configuration": {"chunk_shapes": [[4], [4], [4]]}}), "an unsupported chunk grid"),
    ("key_encoding_unknown", "x metadata", "InvalidArgument", ["weird"],
     dict(chunk_key_encoding={"name": "weird"}), "an unknown chunk_key_encoding"),
    ("storage_transformer", "x metadata", "InvalidArgument", ["storage transformers"],
     dict(storage_transformers=[{"name": "bogus_transformer"}]), "a storage transformer that must be understood"),
    ("shard_not_multiple", "x metadata", "InvalidArgument", ["not a multiple", "[3, 4, 4]"],
     dict(chunk_grid=_grid([8, 8, 8]), codecs=[{"name": "sharding_indexed", "configuration": {
         "chunk_shape": [3, 4, 4], "codecs": [{"name": "bytes"}], "index_codecs": [{"name": "bytes"}], "index_location": "end"}}]),
     "inner chunk shape not dividing the shard"),
    ("shard_too_many_chunks", "5 overflow", "InvalidArgument", ["16777216-chunk cap"],
     dict(shape=[2**13] * 3, chunk_grid=_grid([2**13] * 3), codecs=[{"name": "sharding_indexed", "configuration": {
         "chunk_shape": [1, 1, 1], "codecs": [{"name": "bytes"}], "index_codecs": [{"name": "bytes"}], "index_location": "end"}}]),
     "a shard of 2^39 inner chunks (its index would be 8 TiB)"),
    ("nested_sharding", "x metadata", "InvalidArgument", ["sharding"],
     dict(chunk_grid=_grid([8, 8, 8]), codecs=[{"name": "sharding_indexed", "configuration": {
         "chunk_shape": [4, 4, 4], "index_codecs": [{"name": "bytes"}], "index_location": "end",
         "codecs": [{"name": "sharding_indexed", "configuration": {"chunk_shape": [2, 2, 2], "codecs": [{"name": "bytes"}],
                                                                  "index_codecs": [{"name": "bytes"}], "index_location": "end"}}]}}]),
     "sharding inside sharding"),
    ("duplicate_key", "x metadata", "InvalidArgument", ["malformed zarr.json"], dict(), "placeholder"),
]:
    if _name == "duplicate_key":
        def _dup(ctx):
            path = ctx.meta_array("dup")
            text = (path / "zarr.json").read_text()
            (path / "zarr.json").write_text(text[:-1] + ', "shape": [1, 1]}')
            ctx.pop_error(str(path), _d().InvalidArgument, ["zarr.json"])
        register(_name, _group, "error", _dup, "zarr.json with the key `shape` twice")
        continue
    register(_name, _group, "error", _meta_error(_cls, _names, **_kw), _doc)


@case("5 overflow", "values")
def shape_max_extent_reads_fill(ctx):
    """A 1-D uint16 array of shape [2**63-1] (chunks 1024, no chunk written, fill 7): the box
    [2**63-5, 2**63-1) reads 7s; so does a sharded one."""
    top = 2**63 - 1
    for name, codecs, grid in [
        ("huge", [{"name": "bytes", "configuration": {"endian": "little"}}], [1024]),
        ("huge_sh", [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [1024], "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
            "index_location": "end"}}], [1 << 20]),
    ]:
        path = ctx.meta_array(name, shape=[top], chunk_grid=_grid(grid), fill_value=7, codecs=codecs)
        t = ctx.read(str(path), ((top - 4, top),), sample_shape=[4])
        ctx.same(t, np.full(4, 7, dtype=np.uint16))
        info = _d().array_info(str(path), usage=False)
        if list(info["shape"]) != [top]:
            raise H.WrongData(f"array_info shape {info['shape']}, expected [{top}]")


# ====================================================================================
# 6, 7, 8. the Python layer under stress: raising sources, Ctrl-C, close
# ====================================================================================



@case("6 raising source", "values")
def push_generator_raises_midstream(ctx):
    """A pushed generator yields 3 batches and 1 sample, then raises: the 3 batches pop with
    correct values, then the generator's own error, then the pipeline goes on."""
    uri = str(ctx.good_path)
    B = 2
    boxes = [((z, z + 4), (y, y + 4), (x, x + 4)) for z, y, x in [(0, 0, 0), (4, 4, 4), (8, 0, 4), (12, 12, 12),
                                                                 (0, 8, 8), (4, 0, 12), (8, 8, 0), (2, 3, 5)]]

    class SourceBroke(Exception):
        pass

    def broken():
        for b in boxes[:3 * B + 1]:
            yield _d().Sample(uri, b)
        raise SourceBroke("source broke")

    p = ctx.pipeline(samples_per_batch=B, lookahead_samples=8 * B)
    p.push(broken())
    p.push(_d().Sample(uri, b) for b in boxes[3 * B + 1:])
    for i in range(3):
        try:
            batch = p.pop()
        except SourceBroke:
            raise H.WrongData(f"the source's error came before batch {i} (made of samples pulled before it)") from None
        ctx.same(batch, np.stack([ctx.good_box(b) for b in boxes[i * B:(i + 1) * B]]), f"batch {i}")
    try:
        p.pop()
    except SourceBroke:
        ctx.n_typed += 1
    else:
        raise H.WrongError("the source's error was never raised")
    ctx.same(p.pop(), np.stack([ctx.good_box(b) for b in boxes[3 * B:4 * B]]), "batch after the error")
    p.close()


def _sigint_after(delay_s: float, sent: dict) -> threading.Timer:
    def fire():
        sent["t"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)
    t = threading.Timer(delay_s, fire)
    t.start()
    return t


def _expect_interrupt(ctx, blocked, within_s=0.2):
    sent: dict = {}
    timer = _sigint_after(0.3, sent)
    try:
        blocked()
    except KeyboardInterrupt:
        late = time.monotonic() - sent["t"]
        if late > within_s:
            raise H.WrongError(f"KeyboardInterrupt came {late:.3f} s after SIGINT (bound {within_s} s)") from None
        ctx.n_typed += 1
        ctx.notes.append(f"KeyboardInterrupt {late * 1000:.0f} ms after SIGINT")
        return
    except BaseException as e:  # noqa: BLE001
        raise H.WrongError(f"expected KeyboardInterrupt, got {type(e).__name__}: {e}") from e
    finally:
        timer.cancel()
    raise H.WrongError("pop returned although SIGINT was sent")


@case("7 ctrl-c", "error", timeout_s=60, exit_check=True)
def sigint_blocked_pop(ctx):
    """pop(timeout_s=30) blocked on an incomplete batch (1 of 2 samples pushed): SIGINT gives
    KeyboardInterrupt within 0.2 s; the pipeline still reads afterwards."""
    uri = str(ctx.good_path)
    p = ctx.pipeline(samples_per_batch=2, pop_timeout_s=30.0)
    p.push(_d().Sample(uri, BOX))
    _expect_interrupt(ctx, lambda: p.pop(timeout_s=30.0))
    p.push(_d().Sample(uri, BOX))
    ctx.same(p.pop()[1], ctx.good_box())
    p.close()


@case("7 ctrl-c", "error", timeout_s=60, exit_check=True)
def sigint_sleeping_generator(ctx):
    """pop() pulling from a generator that sleeps 30 s before its next sample: SIGINT gives
    KeyboardInterrupt within 0.2 s."""
    uri = str(ctx.good_path)

    def slow():
        yield _d().Sample(uri, BOX)
        time.sleep(30)
        yield _d().Sample(uri, BOX)

    p = ctx.pipeline(samples_per_batch=2, pop_timeout_s=30.0)
    p.push(slow())
    _expect_interrupt(ctx, lambda: p.pop())
    p.close()


@case("8 close", "error", timeout_s=60, exit_check=True)
def close_while_pop_blocked(ctx):
    """A thread blocked in pop() (incomplete batch, 60 s timeout) while a FIFO shard is being
    read: close() from the main thread returns within 10 s, the blocked pop raises
    ShutdownError, and the process exits."""
    path, _ = ctx.arr("close_fifo", shard=SHARD)
    _special("fifo", path / "c/0/0/0")
    p = ctx.pipeline(samples_per_batch=2, pop_timeout_s=60.0)
    p.push(_d().Sample(str(path), BOX))
    out: dict = {}

    def blocked():
        try:
            p._native.pop(60.0)  # the native wait itself (Pipeline.pop checks closed first)
        except BaseException as e:  # noqa: BLE001
            out["e"] = e

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    p.close()
    took = time.monotonic() - t0
    if took > 10.0:
        raise H.WrongError(f"close() took {took:.1f} s")
    t.join(10.0)
    if t.is_alive():
        raise H.WrongError("the blocked pop did not return within 10 s of close()")
    e = out.get("e")
    typed = H.damacy._ops.translate(e) if isinstance(e, RuntimeError) else e
    ctx.check_error(typed, _d().ShutdownError, [])
    ctx.notes.append(f"close() took {took * 1000:.0f} ms")


@case("8 close", "error", timeout_s=60, exit_check=True)
def close_during_heavy_batches(ctx):
    """close() while 16 batches of 16^3 crops are being read and decoded returns within 10 s;
    pop afterwards is ShutdownError."""
    uri = str(ctx.good_path)
    p = ctx.pipeline(samples_per_batch=8, sample_shape=[16, 16, 16], lookahead_samples=128,
                     decoded_bytes=64 << 20, staging_bytes=64 << 20)
    p.push(_d().Sample(uri, ((0, 16),) * 3) for _ in range(128))
    p.pop()
    t0 = time.monotonic()
    p.close()
    took = time.monotonic() - t0
    if took > 10.0:
        raise H.WrongError(f"close() took {took:.1f} s")
    ctx.raises(_d().ShutdownError, ["closed"], lambda: p.pop(timeout_s=1.0))


@case("8 close", "values", timeout_s=60, exit_check=True)
def exit_with_open_pipelines(ctx):
    """Pipelines left open (one with batches in flight, one with a FIFO shard pending) do not
    keep the process from exiting (the parent's timeout would report a hang)."""
    uri = str(ctx.good_path)
    p = damacy_pipeline_unclosed(ctx, samples_per_batch=4, lookahead_samples=64)
    p.push(_d().Sample(uri, BOX) for _ in range(64))
    ctx.same(p.pop()[0], ctx.good_box())
    path, _ = ctx.arr("exit_fifo", shard=SHARD)
    _special("fifo", path / "c/0/0/0")
    q = damacy_pipeline_unclosed(ctx, samples_per_batch=2)
    q.push(_d().Sample(str(path), BOX))
    H.KEEP_ALIVE = (p, q)  # still referenced at interpreter exit


def damacy_pipeline_unclosed(ctx, **kw):
    cfg = ctx.config(**kw)
    p = _d().Pipeline(cfg)
    ctx.budget = max(ctx.budget, H.budget_of(cfg))
    return p


# ====================================================================================
# 9. a shard rewritten in place after a first read
# ====================================================================================


def _reordered_shard(path: Path, new_data: np.ndarray) -> bytes:
    """The bytes of shard [0,0,0] of an uncompressed uint16 8^3-shard (inner 4^3, index at
    the end with crc32c) holding `new_data[:8,:8,:8]`, its chunks stored in reverse order."""
    chunks = []
    for z, y, x in np.ndindex(2, 2, 2):
        chunks.append(np.ascontiguousarray(new_data[z * 4:z * 4 + 4, y * 4:y * 4 + 4, x * 4:x * 4 + 4]).astype("<u2").tobytes())
    body, entries = b"", [None] * 8
    for i in reversed(range(8)):
        entries[i] = (len(body), len(chunks[i]))
        body += chunks[i]
    idx = b"".join(o.to_bytes(8, "little") + n.to_bytes(8, "little") for o, n in entries)
    return body + idx + H.crc32c(idx).to_bytes(4, "little")


def _rewrite_case(how: str, cache: bool):
    def fn(ctx):
        path, old = ctx.arr(f"rw_{how}", codecs=[H.C.BytesCodec()], shard=SHARD, seed=3)
        f = path / "c/0/0/0"
        new = (old.astype(np.int64) * 7 + 12345).astype(np.uint16)
        new_bytes = _reordered_shard(path, new)
        if len(new_bytes) != f.stat().st_size:
            raise AssertionError(f"fixture: rewritten shard {len(new_bytes)} bytes, old {f.stat().st_size}")
        boxes = [BOX, ((4, 8), (4, 8), (4, 8)), ((0, 4), (4, 8), (0, 4)), ((2, 6), (2, 6), (2, 6))]
        p = ctx.pipeline(samples_per_batch=len(boxes), lookahead_samples=16,
                         # The default recheck_cached_data: its interval is for object
                         # stores; a local hit checks its shard every batch (docs/remote.md).
                         decoded_cache_bytes=(1 << 20) if cache else 0)
        p.push(_d().Sample(str(path), b) for b in boxes)
        ctx.same(p.pop(), np.stack([old[tuple(slice(a, b) for a, b in bx)] for bx in boxes]), "first read")
        time.sleep(0.02)
        if how == "in_place":
            with open(f, "r+b") as fh:
                fh.write(new_bytes)
        else:
            tmp = f.with_name("tmp")
            tmp.write_bytes(new_bytes)
            os.replace(tmp, f)
        want = np.stack([new[tuple(slice(a, b) for a, b in bx)] for bx in boxes])
        stale = np.stack([old[tuple(slice(a, b) for a, b in bx)] for bx in boxes])
        errors = 0
        for attempt in range(3):
            p.push(_d().Sample(str(path), b) for b in boxes)
            try:
                got = p.pop()
            except _d().StorageError as e:
                ctx.check_error(e, _d().StorageError, ["c/0/0/0", "changed"])
                errors += 1
                continue
            try:
                ctx.same(got, want, f"read {attempt} after the rewrite")
            except H.WrongData as e:
                stale_hit = bool((got.cpu().numpy() == H.F._cast_f32(stale)).all())
                raise H.WrongData(("STALE values (the old shard's)" if stale_hit else "mixed/wrong values") + f" after the rewrite: {e}") from None
            break
        else:
            raise H.WrongError("three reads after the rewrite all failed: the new shard is never read")
        ctx.notes.append(f"{errors} StorageError(s) before the new values")
        p.close()
    return fn


register("shard_rewritten_in_place", "9 rewrite", "values", _rewrite_case("in_place", False),
         "an uncompressed shard rewritten in place (same size, reversed chunk order, new values) after a first read")
register("shard_rewritten_in_place_decoded_cache", "9 rewrite", "values", _rewrite_case("in_place", True),
         "as shard_rewritten_in_place with decoded_cache_bytes = 1 MiB (default recheck_cached_data)")
register("shard_replaced_by_rename", "9 rewrite", "values", _rewrite_case("rename", False),
         "the shard replaced by rename (new inode) after a first read")
register("shard_replaced_by_rename_decoded_cache", "9 rewrite", "values", _rewrite_case("rename", True),
         "as shard_replaced_by_rename with decoded_cache_bytes = 1 MiB (default recheck_cached_data)")


@case("9 rewrite", "values")
def chunk_rewritten_decoded_cache(ctx):
    """An unsharded zstd chunk rewritten (new values) after a first read, decoded cache on:
    the second read has the new values."""
    path, old = ctx.arr("rw_chunk", seed=4)
    p = ctx.pipeline(decoded_cache_bytes=1 << 20)
    p.push(_d().Sample(str(path), BOX))
    ctx.same(p.pop()[0], old[:4, :4, :4], "first read")
    new = old.copy()
    new[:4, :4, :4] = 4242
    time.sleep(0.02)
    H.zarr.open_array(str(path), mode="r+")[:4, :4, :4] = new[:4, :4, :4]
    p.push(_d().Sample(str(path), BOX))
    ctx.same(p.pop()[0], new[:4, :4, :4], "after the rewrite")
    p.close()


# ====================================================================================
# 10. file:// uris
# ====================================================================================


def _url(path: Path, host="") -> str:
    return "file://" + host + urllib.parse.quote(str(path))


@case("10 file uris", "values")
def file_url_localhost(ctx):
    """file://localhost/abs and file:///abs read the array."""
    ctx.same(ctx.read(_url(ctx.good_path, "localhost")), ctx.good_box())
    ctx.same(ctx.read(_url(ctx.good_path)), ctx.good_box())
    info = _d().array_info(_url(ctx.good_path, "localhost"), usage=False)
    if list(info["shape"]) != [16, 16, 16]:
        raise H.WrongData(f"array_info: {info}")


@case("10 file uris", "error")
def file_url_otherhost(ctx):
    """file://otherhost/x: InvalidArgument naming the host (at pop and in array_info)."""
    ctx.pop_error("file://otherhost/x.zarr", _d().InvalidArgument, ["otherhost"])
    ctx.raises(_d().InvalidArgument, ["otherhost"], lambda: _d().array_info("file://otherhost/x.zarr"))


@case("10 file uris", "values")
def file_url_percent_20(ctx):
    """A folder named 'with space.zarr' is read through file:///...with%20space.zarr; a
    folder literally named 'a%20b.zarr' through its plain path (not decoded)."""
    path, data = ctx.arr("with space")
    ctx.same(ctx.read(_url(path)), data[:4, :4, :4])
    if "%20" not in _url(path):
        raise AssertionError("fixture: no %20 in the url")
    lit, data2 = ctx.arr("a%20b", seed=9)
    ctx.same(ctx.read(str(lit)), data2[:4, :4, :4])


@case("10 file uris", "error")
def file_url_query_or_fragment(ctx):
    """file:///abs?x=1 and file:///abs#frag: InvalidArgument."""
    ctx.pop_error(_url(ctx.good_path) + "?x=1", _d().InvalidArgument, ["query"])
    ctx.pop_error(_url(ctx.good_path) + "#frag", _d().InvalidArgument, ["fragment"])


@case("10 file uris", "error")
def file_url_percent_00(ctx):
    """file:///tmp/a%00b: InvalidArgument naming the NUL."""
    ctx.pop_error("file:///tmp/a%00b.zarr", _d().InvalidArgument, ["NUL"])


@case("10 file uris", "error")
def unsupported_schemes(ctx):
    """ftp://, hdfs:// and zip:// uris (s3, gs, az, http(s) are object stores now):
    InvalidArgument naming the scheme."""
    for uri, scheme in [("ftp://bucket/x.zarr", "ftp"), ("hdfs://h/x.zarr", "hdfs"), ("zip:///b/x.zip", "zip")]:
        ctx.pop_error(uri, _d().InvalidArgument, [f"`{scheme}`"])


@case("10 file uris", "values")
def file_url_uppercase_scheme(ctx):
    """FILE:///abs (schemes are case-insensitive, RFC 3986 3.1) reads the array."""
    ctx.same(ctx.read("FILE://" + urllib.parse.quote(str(ctx.good_path))), ctx.good_box())


@case("10 file uris", "values")
def file_url_non_utf8_folder(ctx):
    """A folder whose name is not UTF-8 (b'\\xff.zarr') is read through file:///...%FF.zarr."""
    root = Path(os.fsdecode(bytes(ctx.tmp) + b"/\xff.zarr"))
    path, data = ctx.arr(root, seed=5)
    ctx.same(ctx.read("file://" + urllib.parse.quote(bytes(ctx.tmp)) + "/%FF.zarr"), data[:4, :4, :4])



def _collision_case(cache: bool):
    def fn(ctx):
        arrays = []
        for i, name in enumerate([b"\xff.zarr", b"\xfe.zarr"]):
            root = Path(os.fsdecode(bytes(ctx.tmp) + b"/" + name))
            path, data = ctx.arr(root, shard=SHARD, seed=20 + i)
            arrays.append(("file://" + urllib.parse.quote(bytes(ctx.tmp)) + "/" + urllib.parse.quote(name), data))
        p = ctx.pipeline(decoded_cache_bytes=(1 << 20) if cache else 0)
        for k in (0, 0, 1, 1):
            uri, data = arrays[k]
            p.push(_d().Sample(uri, BOX))
            try:
                got = p.pop()
            except _d().DamacyError as e:
                raise H.WrongError(f"array {k} ({uri[-9:]}): {type(e).__name__}: {e.what[-160:]}") from None
            if k == 1 and (got[0].cpu().numpy() == H.F._cast_f32(arrays[0][1][:4, :4, :4])).all():
                raise H.WrongData(f"array 1 ({uri[-9:]}) read with array 0's values")
            ctx.same(got[0], data[:4, :4, :4], f"array {k}")
        p.close()
    return fn


register("file_url_non_utf8_folders_collide_decoded_cache", "10 file uris", "values", _collision_case(True),
         "two arrays in folders b'\\xff.zarr' and b'\\xfe.zarr' (different values), read one after the other "
         "with the decoded cache on: each gets its own values (the store identity is lossless)")
register("file_url_non_utf8_folders_collide", "10 file uris", "values", _collision_case(False),
         "as file_url_non_utf8_folders_collide_decoded_cache without the decoded cache")


# ====================================================================================
# 11. boxes beyond i64, uris that are not valid text
# ====================================================================================


for _name, _box, _doc in [
    ("box_start_2p63", [(2**63, 2**63 + 4), (0, 4), (0, 4)], "a box starting at 2**63"),
    ("box_stop_2p63", [(2**63 - 4, 2**63), (0, 4), (0, 4)], "a box stopping at 2**63"),
    ("box_2p64", [(2**64, 2**64 + 4), (0, 4), (0, 4)], "a box at 2**64"),
    ("box_numpy_uint64_2p63", None, "numpy uint64 coordinates of 2**63"),
]:
    def _fn(ctx, _box=_box):
        box = _box if _box is not None else [(np.uint64(2**63), np.uint64(2**63 + 4)), (0, 4), (0, 4)]
        ctx.raises(_d().InvalidArgument, ["aabb dim 0"], lambda: _d().Sample(str(ctx.good_path), box))
    register(_name, "11 boxes, uris", "error", _fn, _doc)


@case("11 boxes, uris", "error")
def box_negative(ctx):
    """A negative box [-4, 0) x [0, 4) x [0, 4): a valid Sample (padding modes read such boxes),
    but with out_of_bounds='error' (the default) its batch fails typed, naming the array's
    shape, and the next batch works."""
    p = ctx.pipeline(sample_shape=[4, 4, 4])
    p.push([_d().Sample(str(ctx.good_path), [(-4, 0), (0, 4), (0, 4)])])
    ctx.raises(_d().InvalidArgument, ["reaches outside", "out_of_bounds"], lambda: p.pop())
    p.push([_d().Sample(str(ctx.good_path), [(0, 4), (0, 4), (0, 4)])])
    if tuple(p.pop().shape) != (1, 4, 4, 4):
        raise AssertionError("the batch after the failed one")


@case("11 boxes, uris", "values")
def box_near_2p63_fill(ctx):
    """out_of_bounds='fill': the box [2**63-5, 2**63-1) x [0,4) x [0,4) on a 16^3 array reads
    as the fill value (no overflow in the clipping)."""
    path, _ = ctx.arr("fillarr", fill=321)
    top = 2**63 - 1
    t = ctx.read(str(path), ((top - 4, top), (0, 4), (0, 4)), out_of_bounds="fill")
    ctx.same(t, np.full(EXT, 321, dtype=np.uint16))


@case("11 boxes, uris", "error")
def box_near_2p63_error(ctx):
    """out_of_bounds='error': the same box is InvalidArgument naming the array's shape."""
    ctx.pop_error(str(ctx.good_path), _d().InvalidArgument, ["16, 16, 16"], box=((2**63 - 5, 2**63 - 1), (0, 4), (0, 4)))


@case("x boxes", "error")
def box_rank_mismatch(ctx):
    """A 2-D sample_shape and box on a 3-D array: RankMismatch naming the ranks."""
    ctx.pop_error(str(ctx.good_path), _d().RankMismatch, ["rank"], box=((0, 4), (0, 4)), sample_shape=[4, 4])


@case("x boxes", "error")
def box_wrong_extent(ctx):
    """A box whose extent differs from sample_shape: InvalidArgument naming sample_shape."""
    ctx.pop_error(str(ctx.good_path), _d().InvalidArgument, ["sample_shape"], box=((0, 4), (0, 4), (0, 5)))


def _bad_uri(value, names):
    def fn(ctx):
        ctx.raises(_d().InvalidArgument, names, lambda: _d().Sample(value, BOX))
        ctx.raises(_d().InvalidArgument, names, lambda: _d().array_info(value))
    return fn


register("uri_undecodable_bytes", "11 boxes, uris", "error", _bad_uri(b"/tmp/\xff\xfe.zarr", ["UTF-8"]),
         "a uri of bytes that are not UTF-8")
register("uri_nul", "11 boxes, uris", "error", _bad_uri("/tmp/a\x00b.zarr", ["NUL"]), "a uri holding a NUL")
register("uri_surrogate", "11 boxes, uris", "error", _bad_uri("/tmp/\udcff.zarr", ["UTF-8"]),
         "a uri str holding a lone surrogate (os.fsdecode of a non-UTF-8 name)")
register("uri_empty", "11 boxes, uris", "error", _bad_uri("", ["empty"]), "an empty uri")


@case("11 boxes, uris", "error")
def config_arrays_hostile_uris(ctx):
    """Config(arrays=[...]) with a NUL, a lone surrogate, another host: InvalidArgument at
    Config or Pipeline construction."""
    for uri, names in [("/tmp/a\x00b.zarr", ["NUL"]), ("/tmp/\udcff.zarr", []), ("file://otherhost/x", ["otherhost"])]:
        ctx.raises(_d().InvalidArgument, names, lambda: ctx.pipeline(ctx.config(arrays=[uri])))


# ====================================================================================
# 12 and the rest: corruption, messages, the data module
# ====================================================================================


@case("12 messages", "error")
def shard_is_a_directory_says_directory(ctx):
    """A directory where shard [0,0,0] should be: StorageError saying 'directory' and naming
    the key, with no Rust debug text (Some(...))."""
    path, _ = ctx.arr("dirshard", shard=SHARD)
    _special("directory", path / "c/0/0/0")
    (path / "c/0/0/0/junk").write_bytes(b"x")
    e = ctx.pop_error(str(path), _d().StorageError, ["directory", "c/0/0/0"])
    if "Some(" in repr(e):
        raise H.WrongError(f"debug text: {e!r}")


@case("x corruption", "error")
def truncated_shard(ctx):
    """A shard cut in half (index at the end gone): StorageError naming the shard."""
    path, _ = ctx.arr("trunc", shard=SHARD)
    f = path / "c/0/0/0"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    ctx.pop_error(str(path), _d().StorageError, ["c/0/0/0"])


@case("x corruption", "error")
def truncated_shard_index_at_start(ctx):
    """Index at the start intact, the file cut inside chunk 0: StorageError."""
    path, _ = ctx.arr("trunc_start", shard=SHARD, index_location="start")
    f = path / "c/0/0/0"
    entries, _ = shard_entries(f, N_INNER, "start", True)
    f.write_bytes(f.read_bytes()[: entries[0][0] + entries[0][1] // 2])
    ctx.pop_error(str(path), _d().StorageError, ["c/0/0/0", "truncated"])


@case("x corruption", "error")
def shard_index_bad_crc32c(ctx):
    """A shard index whose crc32c does not match: StorageError naming crc32c."""
    path, _ = ctx.arr("badidx", shard=SHARD)
    f = path / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    raw[-20] ^= 0x5A
    f.write_bytes(bytes(raw))
    ctx.pop_error(str(path), _d().StorageError, ["crc32c", "c/0/0/0"])


@case("x corruption", "error")
def chunk_bad_crc32c(ctx):
    """A chunk (bytes, zstd, crc32c) with a flipped payload byte: DecodeError naming crc32c."""
    path, _ = ctx.arr("badcrc", codecs=[H.C.BytesCodec(), H.C.ZstdCodec(), H.C.Crc32cCodec()])
    f = path / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    f.write_bytes(bytes(raw))
    ctx.pop_error(str(path), _d().DecodeError, ["crc32c", "chunk [0, 0, 0]"])


@case("x corruption", "error")
def chunk_random_bytes_every_codec(ctx):
    """Chunk [0,0,0] replaced by random bytes under zstd, gzip, blosc-lz4, blosc-zstd:
    DecodeError naming the codec."""
    rng = np.random.default_rng(5)
    for name, codecs, word in [("zstd", _zstd(), "zstd"), ("gzip", [H.C.BytesCodec(), H.C.GzipCodec()], "gzip"),
                               ("blz4", [H.C.BytesCodec(), H.F._blosc("lz4", "shuffle")], "blosc"),
                               ("bzstd", [H.C.BytesCodec(), H.F._blosc("zstd", "bitshuffle")], "blosc")]:
        path, _ = ctx.arr(f"rand_{name}", codecs=codecs)
        f = path / "c/0/0/0"
        f.write_bytes(rng.integers(0, 256, max(f.stat().st_size, 64), dtype=np.uint8).tobytes())
        ctx.pop_error(str(path), _d().DecodeError, [word, "chunk [0, 0, 0]"])


@case("x corruption", "error")
def blosc_header_zero_sizes(ctx):
    """A blosc chunk whose header has typesize 0 and blocksize 0: DecodeError."""
    path, _ = ctx.arr("bz", codecs=[H.C.BytesCodec(), H.F._blosc("lz4", "shuffle")])
    f = path / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    raw[3] = 0
    raw[8:12] = (0).to_bytes(4, "little")
    f.write_bytes(bytes(raw))
    ctx.pop_error(str(path), _d().DecodeError, ["blosc"])


@case("x corruption", "values")
def damage_elsewhere_is_harmless(ctx):
    """Shard [0,0,0] is a FIFO, chunk data elsewhere is intact: a box in shard [1,1,1] reads
    correctly, and one touching both fails typed."""
    path, data = ctx.arr("elsewhere", shard=SHARD, seed=6)
    _special("fifo", path / "c/0/0/0")
    ctx.same(ctx.read(str(path), ((8, 12), (8, 12), (8, 12))), data[8:12, 8:12, 8:12])
    ctx.pop_error(str(path), _d().StorageError, ["FIFO"], box=((6, 10), (6, 10), (6, 10)))


@case("x corruption", "values")
def zarr_json_deleted_after_first_read(ctx):
    """zarr.json deleted after a first read: the cached metadata keeps serving the array
    (or a typed NotFound); never an untyped failure."""
    path, data = ctx.arr("vanish")
    p = ctx.pipeline()
    p.push(_d().Sample(str(path), BOX))
    ctx.same(p.pop()[0], data[:4, :4, :4])
    (path / "zarr.json").unlink()
    p.push(_d().Sample(str(path), ((4, 8), (4, 8), (4, 8))))
    try:
        ctx.same(p.pop()[0], data[4:8, 4:8, 4:8])
    except _d().NotFound as e:
        ctx.check_error(e, _d().NotFound, ["vanish.zarr"])
    p.close()


@case("x data module", "error")
def data_array_shape_on_fifo(ctx):
    """damacy.data.array_shape and CropDataset on an array whose zarr.json is a FIFO:
    StorageError, without blocking."""
    from damacy import data
    path, _ = ctx.arr("ds_fifo")
    _special("fifo", path / "zarr.json")
    ctx.raises(_d().StorageError, ["FIFO"], lambda: data.array_shape(str(path)))
    ctx.raises(_d().StorageError, ["FIFO"], lambda: data.CropDataset(str(path), data.RandomCrops(EXT, seed=0, num_samples=4), samples_per_batch=2))


@case("x data module", "values")
def data_crop_dataset_huge_shape(ctx):
    """CropDataset over a [2**63-1, 4, 4] array (nothing written, fill 5): RandomCrops boxes
    near 2**63 read as fill values through the DataLoader path (num_workers=0)."""
    from damacy import data
    top = 2**63 - 1
    path = ctx.meta_array("ds_huge", shape=[top, 4, 4], fill_value=5)
    ds = data.CropDataset(str(path), data.RandomCrops(EXT, seed=1, num_samples=4), samples_per_batch=2,
                          config=ctx.config())
    n = 0
    for batch in ds:
        ctx.same(batch, np.full((2, *EXT), 5, dtype=np.uint16), f"batch {n}")
        n += 1
    if n != 2:
        raise H.WrongData(f"{n} batches, expected 2")


@case("x metadata", "values")
def must_understand_false_codec_is_skipped(ctx):
    """An unknown codec marked must_understand: false after the chain is skipped (the spec
    allows it): values correct."""
    path, data = ctx.arr("mu", codecs=[H.C.BytesCodec()])
    doc = ctx.meta(path)
    doc["codecs"].append({"name": "vendor.hint", "must_understand": False, "configuration": {}})
    ctx.set_meta(path, doc)
    try:
        ctx.same(ctx.read(str(path)), data[:4, :4, :4])
    except _d().InvalidArgument as e:
        ctx.check_error(e, _d().InvalidArgument, ["vendor.hint"])


@case("x metadata", "values")
def fill_value_specials(ctx):
    """float32 fill values 'NaN', '-Infinity' and the hex form '0x7fc00001' read as
    themselves (no chunk written)."""
    for i, (fill, want) in enumerate([("NaN", np.float32("nan")), ("-Infinity", np.float32("-inf")),
                                      ("0x7fc00001", np.array([0x7fc00001], dtype=np.uint32).view(np.float32)[0])]):
        path = ctx.meta_array(f"fv{i}", data_type="float32", fill_value=fill,
                              codecs=[{"name": "bytes", "configuration": {"endian": "little"}}])
        t = ctx.read(str(path))
        exp = np.full(EXT, want, dtype=np.float32)
        if fill.startswith("0x"):
            got_bits = t.cpu().numpy().view(np.uint32)
            if not (got_bits == 0x7fc00001).all():
                raise H.WrongData(f"fill {fill}: bits {hex(int(got_bits.reshape(-1)[0]))}")
            ctx.n_values += 1
        else:
            ctx.same(t, exp, f"fill {fill}")


# ====================================================================================
# more: the array folder itself, aliasing and degenerate index entries
# ====================================================================================


def _root_special(kind):
    def fn(ctx):
        target = ctx.tmp / f"root_{kind}.zarr"
        if kind == "file":
            target.write_bytes(b'{"zarr_format": 3}')
        else:
            _special(kind, target)
        cls = (_d().StorageError, _d().NotFound)  # "Not a directory", "is a FIFO", ...
        e = ctx.pop_error(str(target), cls, [f"root_{kind}.zarr"])
        ctx.raises(type(e), [f"root_{kind}.zarr"], lambda: _d().array_info(str(target)))
    return fn


for _kind in ("fifo", "file", "symlink_loop", "devzero"):
    register(f"array_root_is_{_kind}", "x metadata", "error", _root_special(_kind),
             f"the array uri names a {_kind.replace('_', ' ')}, not a folder: a typed error at once", timeout_s=30)


@case("x corruption", "values")
def shard_entries_alias_one_chunk(ctx):
    """Every index entry of shard [0,0,0] points at inner chunk 0's bytes (aliasing is legal):
    all eight inner chunks read as chunk 0's values."""
    path, data = ctx.arr("alias", shard=SHARD, seed=8)
    f = path / "c/0/0/0"
    entries, _ = shard_entries(f, N_INNER)
    write_index(f, [entries[0]] * N_INNER)
    want = data[:4, :4, :4]
    boxes = [((z, z + 4), (y, y + 4), (x, x + 4)) for z in (0, 4) for y in (0, 4) for x in (0, 4)]
    p = ctx.pipeline(samples_per_batch=8, lookahead_samples=8)
    p.push(_d().Sample(str(path), b) for b in boxes)
    ctx.same(p.pop(), np.stack([want] * 8), "aliased entries")
    p.close()


@case("x corruption", "error")
def shard_entry_points_into_index(ctx):
    """Index at the end; entry 0 points at the index's own bytes: DecodeError (the bytes are
    not a zstd frame), no crash."""
    path, _ = ctx.arr("into_idx", shard=SHARD)
    f = path / "c/0/0/0"
    entries, start = shard_entries(f, N_INNER)
    entries[0] = (start, 16 * N_INNER)
    write_index(f, entries)
    ctx.pop_error(str(path), _d().DecodeError, ["zstd", "chunk [0, 0, 0]"])


@case("x corruption", "error")
def shard_entry_zero_bytes(ctx):
    """Entry 0 of 0 bytes (not the empty marker): DecodeError."""
    path, _ = ctx.arr("zero_entry", shard=SHARD)
    f = path / "c/0/0/0"
    entries, _ = shard_entries(f, N_INNER)
    entries[0] = (0, 0)
    write_index(f, entries)
    ctx.pop_error(str(path), _d().DecodeError, ["chunk [0, 0, 0]"])


@case("x corruption", "values")
def shard_entries_all_empty_read_fill(ctx):
    """A shard whose index marks every chunk empty (2**64-1, 2**64-1) reads as fill."""
    path, _ = ctx.arr("all_empty", shard=SHARD, fill=99)
    f = path / "c/0/0/0"
    write_index(f, [(2**64 - 1, 2**64 - 1)] * N_INNER)
    ctx.same(ctx.read(str(path)), np.full(EXT, 99, dtype=np.uint16))


@case("x corruption", "error")
def uncompressed_chunk_wrong_size(ctx):
    """An uncompressed (bytes only) chunk one byte short, and one byte long: DecodeError."""
    for delta in (-1, 1):
        path, _ = ctx.arr(f"raw{delta}", codecs=[H.C.BytesCodec()])
        f = path / "c/0/0/0"
        raw = f.read_bytes()
        f.write_bytes(raw[:-1] if delta < 0 else raw + b"\0")
        ctx.pop_error(str(path), _d().DecodeError, ["chunk [0, 0, 0]"])


# ====================================================================================
# harness self-tests: each must be reported as the verdict its name says
# ====================================================================================


@case("selftest", "values", selftest=True, timeout_s=30)
def selftest_crash(ctx):
    """The child aborts: verdict crash."""
    os.abort()


@case("selftest", "values", selftest=True, timeout_s=3)
def selftest_hang(ctx):
    """The child sleeps past its 3 s timeout: verdict hang."""
    time.sleep(30)


@case("selftest", "values", selftest=True, timeout_s=30)
def selftest_rss(ctx):
    """The child touches 600 MiB with no pipeline budget: verdict rss."""
    buf = np.ones(600 << 20, dtype=np.uint8)
    H.KEEP_ALIVE = buf


@case("selftest", "values", selftest=True, timeout_s=30)
def selftest_wrong_data(ctx):
    """The library's (correct) values compared with the wrong expectation: verdict wrong_data."""
    ctx.same(ctx.read(str(ctx.good_path)), ctx.good_box() + 1)


@case("selftest", "error", selftest=True, timeout_s=30)
def selftest_wrong_error(ctx):
    """A missing array expected as DecodeError (it is NotFound): verdict wrong_error."""
    ctx.pop_error(str(ctx.tmp / "nothing.zarr"), _d().DecodeError, [])


@case("9 rewrite", "values")
def shard_deleted_after_first_read(ctx):
    """Shard [0,0,0] deleted after a first read: at most one StorageError naming it, then
    the box reads as the fill value (an absent shard is fill)."""
    path, data = ctx.arr("gone", shard=SHARD, fill=77)
    p = ctx.pipeline()
    p.push(_d().Sample(str(path), BOX))
    ctx.same(p.pop()[0], data[:4, :4, :4], "first read")
    (path / "c/0/0/0").unlink()
    errors = []
    for attempt in range(3):
        p.push(_d().Sample(str(path), BOX))
        try:
            got = p.pop()[0]
        except _d().StorageError as e:
            ctx.check_error(e, _d().StorageError, ["c/0/0/0"])
            errors.append(e.what)
            continue
        ctx.same(got, np.full(EXT, 77, dtype=np.uint16), f"read {attempt} after the delete")
        break
    else:
        raise H.WrongError(f"3 reads after the delete all failed: {errors[-1][-160:]}")
    p.close()


@case("4 bombs", "error", timeout_s=30)
def config_arrays_with_fifo_metadata(ctx):
    """Config(arrays=[an array whose zarr.json is a FIFO]): StorageError at Pipeline
    construction, without blocking."""
    path, _ = ctx.arr("cfg_fifo")
    _special("fifo", path / "zarr.json")
    ctx.raises(_d().StorageError, ["FIFO", "cfg_fifo.zarr"], lambda: ctx.pipeline(ctx.config(arrays=[str(path)])))


@case("4 bombs", "values", timeout_s=30)
def array_info_usage_does_not_follow_links(ctx):
    """array_info(usage=True) on an array folder holding a symlink to /, a symlink loop, a
    FIFO and /dev/zero: returns at once, counting only the regular files under the folder."""
    path, _ = ctx.arr("du", shard=SHARD)
    os.symlink("/", path / "root_link")
    os.symlink("loop", path / "loop")
    os.mkfifo(path / "fifo")
    os.symlink("/dev/zero", path / "zero")
    t0 = time.monotonic()
    info = _d().array_info(str(path))
    took = time.monotonic() - t0
    if took > 5:
        raise H.WrongError(f"array_info took {took:.1f} s")
    real = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    got = {k: v for k, v in info.items() if "file" in k or "bytes" in k}
    ctx.notes.append(f"array_info {got}; {len(real)} regular files")
    files = next((v for k, v in info.items() if "file" in k and isinstance(v, int)), None)
    if files is not None and files != len(real):
        raise H.WrongData(f"array_info counts {files} files, the folder holds {len(real)} regular files ({got})")
    ctx.n_values += 1


def _sh(inner, **kw):
    c = {"chunk_shape": inner, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
         "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}], "index_location": "end"}
    c.update(kw)
    return [{"name": "sharding_indexed", "configuration": c}]


_LE = {"name": "bytes", "configuration": {"endian": "little"}}
_G8 = _grid([8, 8, 8])

for _name, _names, _kw in [
    ("dimension_names_not_strings", ["malformed zarr.json"], dict(dimension_names=[1, 2, 3])),
    ("codecs_not_a_list", ["malformed zarr.json"], dict(codecs={"name": "bytes"})),
    ("codec_configuration_not_an_object", ["malformed zarr.json"], dict(codecs=[{"name": "bytes", "configuration": [1]}])),
    ("blosc_unknown_cname", ["bogus"], dict(codecs=[_LE, {"name": "blosc", "configuration": {
        "cname": "bogus", "clevel": 5, "shuffle": "shuffle", "typesize": 2, "blocksize": 0}}])),
    ("bool_fill_value_int", ["fill_value"], dict(data_type="bool", fill_value=1)),
    ("hex_fill_value_wrong_length", ["fill_value"], dict(data_type="float32", fill_value="0x7fc0")),
    ("shape_float", ["malformed zarr.json"], dict(shape=[16.0, 16, 16])),
    ("shape_string", ["malformed zarr.json"], dict(shape="16")),
    ("key_separator_x", ["separator"], dict(chunk_key_encoding={"name": "default", "configuration": {"separator": "x"}})),
    ("index_location_middle", ["index_location"], dict(chunk_grid=_G8, codecs=_sh([4, 4, 4], index_location="middle"))),
    ("index_codecs_zstd", ["index codecs"], dict(chunk_grid=_G8, codecs=_sh([4, 4, 4], index_codecs=[_LE, {"name": "zstd", "configuration": {"level": 1, "checksum": False}}]))),
    ("index_codecs_crc_only", ["index codecs"], dict(chunk_grid=_G8, codecs=_sh([4, 4, 4], index_codecs=[{"name": "crc32c"}]))),
    ("inner_chunk_rank_mismatch", ["chunk_shape"], dict(chunk_grid=_G8, codecs=_sh([4, 4]))),
    ("inner_chunk_zero", ["chunk_shape"], dict(chunk_grid=_G8, codecs=_sh([0, 4, 4]))),
    ("inner_chunk_bigger_than_shard", ["not a multiple"], dict(chunk_grid=_G8, codecs=_sh([16, 16, 16]))),
    ("transpose_order_2p64", ["transpose"], dict(codecs=[{"name": "transpose", "configuration": {"order": [2**64, 0, 1]}}, _LE])),
    ("two_bytes_codecs", ["bytes"], dict(codecs=[_LE, _LE])),
    ("bytes_endian_middle", ["endian"], dict(codecs=[{"name": "bytes", "configuration": {"endian": "middle"}}])),
    ("crc32c_before_bytes", ["crc32c"], dict(codecs=[{"name": "crc32c"}, _LE])),
    ("nan_fill_value_for_int", ["fill_value"], dict(fill_value="NaN")),
    ("object_fill_value", ["fill_value"], dict(fill_value={"a": 1})),
    ("uint64_fill_value_2p64", ["fill_value"], dict(data_type="uint64", fill_value=2**64)),
]:
    register(f"meta_{_name}", "x metadata", "error", _meta_error("InvalidArgument", _names, **_kw),
             f"zarr.json: {_name.replace('_', ' ')}")


@case("x metadata", "values")
def fill_value_extremes(ctx):
    """int64 fill -2**63 and uint64 fill 2**64-1 (no chunk written) read as themselves, cast
    to f32 (nearest)."""
    for i, (dt, fill) in enumerate([("int64", -2**63), ("uint64", 2**64 - 1)]):
        path = ctx.meta_array(f"fx{i}", data_type=dt, fill_value=fill, codecs=[_LE])
        ctx.same(ctx.read(str(path)), np.full(EXT, fill, dtype=dt), f"{dt} fill {fill}")


# ====================================================================================
# failure paths under repetition: nothing accumulates
# ====================================================================================


def _no_growth(ctx, pipe, make_sample, cls, n=2000, warm=300, max_growth=24 << 20):
    """Pops `n` failing batches; RSS after the first `warm` and at the end differ by at most
    `max_growth` (no leak per failed batch), every pop raising `cls`."""
    rss0 = 0
    for i in range(n):
        pipe.push(make_sample(i))
        try:
            pipe.pop()
        except cls as e:
            if i == 0:
                ctx.check_error(e, cls, [])
        except _d().DamacyError as e:
            raise H.WrongError(f"pop {i}: expected {cls.__name__}, got {type(e).__name__}: {e.what[-200:]}") from None
        else:
            raise H.WrongData(f"pop {i}: a failing sample returned a batch")
        if i == warm:
            rss0 = H.vm("VmRSS")
    grew = H.vm("VmRSS") - rss0
    ctx.notes.append(f"RSS grew {grew >> 10} KiB over {n - warm} failed batches")
    if grew > max_growth:
        raise H.WrongError(f"RSS grew {grew >> 20} MiB over {n - warm} failed batches (leak?)")


@case("x repetition", "error", timeout_s=120)
def many_distinct_missing_arrays(ctx):
    """2000 samples of 2000 distinct missing arrays (n_array_meta_cache 8): each pop is
    NotFound naming its uri; RSS does not grow with the count."""
    p = ctx.pipeline(n_array_meta_cache=8)
    _no_growth(ctx, p, lambda i: _d().Sample(str(ctx.tmp / f"missing{i}.zarr"), BOX), _d().NotFound)
    p.close()


@case("x repetition", "error", timeout_s=120)
def many_decode_errors(ctx):
    """2000 pops of a sample on a corrupt zstd chunk: each DecodeError; RSS does not grow."""
    path = _unsharded_with_chunk(ctx, "rep", os.urandom(100))
    p = ctx.pipeline()
    _no_growth(ctx, p, lambda i: _d().Sample(str(path), BOX), _d().DecodeError)
    p.close()


@case("x repetition", "error", timeout_s=120)
def many_fifo_shards(ctx):
    """2000 pops of a sample whose shard is a FIFO: each
    StorageError; RSS does not grow, no descriptor leaks (fd count stable); n_shard_index_cache 8."""
    path, _ = ctx.arr("repfifo", shard=SHARD)
    _special("fifo", path / "c/0/0/0")
    p = ctx.pipeline(n_shard_index_cache=8)
    fds0 = len(os.listdir("/proc/self/fd"))
    _no_growth(ctx, p, lambda i: _d().Sample(str(path), BOX), _d().StorageError)
    fds = len(os.listdir("/proc/self/fd"))
    if fds > fds0 + 8:
        raise H.WrongError(f"open descriptors {fds0} -> {fds} after 2000 failed reads of a FIFO")
    p.close()


@case("9 rewrite", "values")
def array_recreated_after_first_read(ctx):
    """The array is recreated at the same path after a first read (uint16 -> int16, new
    values, same chunk sizes): a later read gives the new values or a typed error, never
    the new bytes read through the old metadata."""
    path, old = ctx.arr("recreated", seed=30)
    p = ctx.pipeline()
    p.push(_d().Sample(str(path), BOX))
    ctx.same(p.pop()[0], old[:4, :4, :4], "first read")
    time.sleep(0.02)
    _, new = ctx.arr("recreated", dtype="int16", seed=31)
    p.push(_d().Sample(str(path), BOX))
    try:
        got = p.pop()[0]
    except _d().DamacyError as e:
        ctx.check_error(e, (_d().StorageError, _d().DecodeError, _d().InvalidArgument), ["recreated.zarr"])
        return
    reinterpreted = new[:4, :4, :4].view(np.uint16)
    if (got.cpu().numpy() == H.F._cast_f32(reinterpreted)).all() and not (new[:4, :4, :4] >= 0).all():
        raise H.WrongData("the new int16 chunk was read through the cached uint16 metadata (negative values came out as 65535-ish)")
    ctx.same(got, new[:4, :4, :4], "after recreating")
    p.close()


# ====================================================================================
# stream checksums: a flipped payload byte that only the codec's own checksum can see
# ====================================================================================


def _noise(shape, seed):
    return np.random.default_rng(seed).integers(0, 2**16, size=shape, dtype=np.uint16)  # incompressible


@case("x corruption", "error")
def zstd_checksum_mismatch(ctx):
    """A zstd chunk written with checksum=true over incompressible data (raw blocks); one
    payload byte flipped, frame structure intact: DecodeError (the frame's checksum), not
    a batch with one wrong voxel."""
    path, data = ctx.arr("zck", codecs=[H.C.BytesCodec(), H.C.ZstdCodec(level=1, checksum=True)],
                         data=_noise((16, 16, 16), 40))
    f = path / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    if not raw[4] & 0x04:
        raise AssertionError("fixture: the frame has no checksum flag")
    raw[len(raw) // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    ctx.pop_error(str(path), _d().DecodeError, ["zstd", "chunk [0, 0, 0]"])


@case("x corruption", "error")
def gzip_crc_mismatch(ctx):
    """A gzip chunk over incompressible data (stored deflate blocks), one payload byte
    flipped: DecodeError from the gzip trailer's CRC-32, not one wrong voxel."""
    path, data = ctx.arr("gck", codecs=[H.C.BytesCodec(), H.C.GzipCodec(level=1)], data=_noise((16, 16, 16), 41))
    f = path / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    ctx.pop_error(str(path), _d().DecodeError, ["gzip", "chunk [0, 0, 0]"])


@case("x corruption", "error")
def gzip_length_trailer_wrong(ctx):
    """A gzip chunk whose trailer's ISIZE is wrong (data and CRC intact): DecodeError."""
    path, data = ctx.arr("gisz", codecs=[H.C.BytesCodec(), H.C.GzipCodec(level=1)], data=_noise((16, 16, 16), 42))
    f = path / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    raw[-4:] = (int.from_bytes(raw[-4:], "little") + 1).to_bytes(4, "little")
    f.write_bytes(bytes(raw))
    ctx.pop_error(str(path), _d().DecodeError, ["gzip", "chunk [0, 0, 0]"])


@case("x corruption", "error")
def gzip_trailing_garbage(ctx):
    """A valid gzip member followed by 100 bytes of garbage: DecodeError (or a second
    member that fails), never the first member's values silently."""
    path, data = ctx.arr("gtr", codecs=[H.C.BytesCodec(), H.C.GzipCodec(level=1)])
    f = path / "c/0/0/0"
    f.write_bytes(f.read_bytes() + os.urandom(100))
    ctx.pop_error(str(path), _d().DecodeError, ["gzip", "chunk [0, 0, 0]"])


@case("x corruption", "error")
def zstd_trailing_garbage(ctx):
    """A valid zstd frame followed by 100 bytes of garbage: DecodeError."""
    path, data = ctx.arr("ztr")
    f = path / "c/0/0/0"
    f.write_bytes(f.read_bytes() + os.urandom(100))
    ctx.pop_error(str(path), _d().DecodeError, ["zstd", "chunk [0, 0, 0]"])


@case("x corruption", "values")
def gzip_two_members(ctx):
    """A chunk stored as two gzip members (RFC 1952 allows it; zarr-python reads it): the
    right values."""
    path, data = ctx.arr("g2m", codecs=[H.C.BytesCodec(), H.C.GzipCodec(level=1)])
    raw = np.ascontiguousarray(data[:4, :4, :4]).astype("<u2").tobytes()
    (path / "c/0/0/0").write_bytes(gzip.compress(raw[:64]) + gzip.compress(raw[64:]))
    ctx.same(ctx.read(str(path)), data[:4, :4, :4])


@case("x corruption", "values")
def zstd_two_frames_concatenated(ctx):
    """A chunk stored as two zstd frames (first half, second half; the format allows
    concatenated frames): the right values, or a typed DecodeError."""
    import numcodecs
    path, data = ctx.arr("z2f")
    raw = np.ascontiguousarray(data[:4, :4, :4]).astype("<u2").tobytes()
    z = numcodecs.Zstd(level=1)
    (path / "c/0/0/0").write_bytes(z.encode(raw[:64]) + z.encode(raw[64:]))
    try:
        ctx.same(ctx.read(str(path)), data[:4, :4, :4])
    except _d().DecodeError as e:
        ctx.check_error(e, _d().DecodeError, ["zstd"])


@case("11 boxes, uris", "values")
def unicode_uri_round_trips(ctx):
    """A folder named 'ünï 🧊 %41.zarr' read by its plain path: correct values, and
    pop_with_samples gives back exactly the uri pushed (through Rust and C++)."""
    path, data = ctx.arr("ünï 🧊 %41", seed=50)
    p = ctx.pipeline()
    p.push(_d().Sample(str(path), BOX))
    t, samples = p.pop_with_samples()
    ctx.same(t[0], data[:4, :4, :4])
    if samples[0].uri != str(path) or samples[0].aabb != BOX:
        raise H.WrongData(f"pop_with_samples gave {samples[0]!r}, pushed {str(path)!r} {BOX}")
    p.close()


@case("11 boxes, uris", "error")
def uri_longer_than_path_max(ctx):
    """A 5000-byte path (beyond PATH_MAX) and a 300-byte component (beyond NAME_MAX): a
    typed error naming the uri, no crash."""
    for uri in [str(ctx.tmp) + "/" + "/".join(["d" * 200] * 25) + ".zarr", str(ctx.tmp / ("n" * 300 + ".zarr"))]:
        ctx.pop_error(uri, (_d().StorageError, _d().NotFound, _d().InvalidArgument), [uri[-40:]])


@case("x data module", "error", timeout_s=10)
def data_grid_crops_huge_shape(ctx):
    """CropDataset with GridCrops over a [2**63-1, 4, 4] array (2**61 crops): a typed error
    at once (or lazy construction within 2 s), not a list of 2**61 starts."""
    from damacy import data
    path = ctx.meta_array("grid_huge", shape=[2**63 - 1, 4, 4], fill_value=5)
    t0 = time.monotonic()
    try:
        ds = data.CropDataset(str(path), data.GridCrops(EXT), samples_per_batch=2, config=ctx.config())
    except _d().InvalidArgument as e:
        ctx.check_error(e, _d().InvalidArgument, [])
        return
    took = time.monotonic() - t0
    if took > 2.0:
        raise H.WrongError(f"CropDataset(GridCrops) took {took:.1f} s")
    ctx.n_typed += 1
    ctx.same(next(iter(ds)), np.full((2, *EXT), 5, dtype=np.uint16))
