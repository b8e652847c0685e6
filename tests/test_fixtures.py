"""Checks of the fixtures, the oracle and the box generator themselves (no damacy needed).

If these fail, the differential tests prove nothing: the fixtures must be what their
geometry comments say, missing data must really be missing, a second independent reader
(tensorstore) must agree with zarr-python, and the oracle's casts must agree with torch's.
"""

from __future__ import annotations

import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
import torch
import zarr

import fixtures as F

NAMES = F.FIXTURE_NAMES


def _ts_read(path: Path) -> np.ndarray:
    t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}).result()
    return t.read().result()


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality with any NaN equal to any NaN."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "b" or a.dtype.kind in "iu":
        return bool(np.array_equal(a, b))
    raw = a.view(f"u{a.dtype.itemsize}") == b.view(f"u{b.dtype.itemsize}")
    both_nan = np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
    return bool(np.all(raw | both_nan))


def _is_fill(values: np.ndarray, fill: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f" or values.dtype == F.BF16:
        v, f = values.astype(np.float64), np.float64(fill.astype(np.float64))
        if np.isnan(f):
            return np.isnan(v)
        return v == f
    return values == fill


# ---------------------------------------------------------------- geometry and metadata


def test_fixture_names_unique_and_small():
    assert len(set(NAMES)) == len(NAMES)
    for fx in F.FIXTURES.values():
        assert math.prod(fx.shape) <= 64**3, fx.name


@pytest.mark.parametrize("name", NAMES)
def test_geometry_comment_matches_the_array(name):
    fx = F.FIXTURES[name]
    assert fx.geometry == fx.computed_geometry()
    src = (Path(F.__file__)).read_text()
    assert f"# {fx.geometry}\n" in src, f"the comment above {name} must say {fx.geometry!r}"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_as_specified(name, fixture_arrays):
    fx = F.FIXTURES[name]
    meta = F.zarr_json(fixture_arrays[name])
    assert meta["zarr_format"] == 3 and meta["node_type"] == "array"
    assert meta["shape"] == list(fx.shape)
    assert meta["data_type"] == fx.dtype
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == list(fx.grid_shape)
    assert meta["chunk_key_encoding"]["name"] == fx.key_encoding[0]
    assert meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") == fx.key_encoding[1]
    fv = fx.fill_value
    if isinstance(fv, float) and math.isnan(fv):
        assert meta["fill_value"] == "NaN"
    elif fv == math.inf:
        assert meta["fill_value"] == "Infinity"
    elif fv == -math.inf:
        assert meta["fill_value"] == "-Infinity"
    else:
        assert meta["fill_value"] == fv
    codecs = meta["codecs"]
    if fx.shard is None:
        chain = codecs
    else:
        assert [c["name"] for c in codecs] == ["sharding_indexed"]
        conf = codecs[0]["configuration"]
        assert conf["chunk_shape"] == list(fx.chunk)
        assert conf["index_location"] == fx.index_location
        want_index = ["bytes", "crc32c"] if fx.index_crc32c else ["bytes"]
        assert [c["name"] for c in conf["index_codecs"]] == want_index
        chain = conf["codecs"]
    assert [c["name"] for c in chain] == [_codec_name(c) for c in fx.codecs]


def _codec_name(codec) -> str:
    return codec.to_dict()["name"]


def test_codec_and_dtype_coverage():
    """The matrix the brief asks for is actually present."""
    metas = [(fx, [c.to_dict() for c in fx.codecs]) for fx in F.FIXTURES.values()]
    dtypes = {fx.dtype for fx in F.FIXTURES.values()}
    assert dtypes >= {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                      "int64", "float16", "bfloat16", "float32", "float64"}
    names = {c["name"] for _, cs in metas for c in cs}
    assert names >= {"bytes", "zstd", "blosc", "gzip", "crc32c", "transpose"}
    endians = {c["configuration"]["endian"] for _, cs in metas for c in cs if c["name"] == "bytes"}
    assert endians == {"little", "big"}
    blosc = [c["configuration"] for _, cs in metas for c in cs if c["name"] == "blosc"]
    assert {b["cname"] for b in blosc} == {"zstd", "lz4", "lz4hc", "blosclz", "zlib"}
    assert {b["shuffle"] for b in blosc} == {"noshuffle", "shuffle", "bitshuffle"}
    fills = {str(fx.fill_value) for fx in F.FIXTURES.values()}
    assert {"nan", "inf", "-inf"} <= fills
    assert any(isinstance(fx.fill_value, int) and fx.fill_value not in (0, False) for fx in F.FIXTURES.values())
    sharded = [fx for fx in F.FIXTURES.values() if fx.shard]
    assert {fx.index_location for fx in sharded} == {"start", "end"}
    assert {fx.index_crc32c for fx in sharded} == {True, False}
    assert any(fx.shard is None for fx in F.FIXTURES.values())
    assert {fx.key_encoding for fx in F.FIXTURES.values()} == {
        ("default", "/"), ("default", "."), ("v2", "."), ("v2", "/")}
    assert {len(fx.shape) for fx in F.FIXTURES.values()} == {2, 3, 4}
    assert any(any(s % g for s, g in zip(fx.shape, fx.grid_shape)) for fx in sharded)
    assert any(fx.holes for fx in F.FIXTURES.values())
    assert any(fx.only for fx in F.FIXTURES.values())
    assert any(fx.delete_files and fx.shard for fx in F.FIXTURES.values())
    assert any(fx.delete_files and not fx.shard for fx in F.FIXTURES.values())


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize("name", NAMES)
def test_missing_chunks_and_files_are_missing(name, fixture_arrays):
    """Holes (chunk-aligned) were never written and deleted files are gone, so damacy reads
    the fill value from absence, not from stored fill-valued chunks."""
    fx = F.FIXTURES[name]
    path = fixture_arrays[name]
    keys = set(F.files_under(path))
    for coords in fx.delete_files:
        assert fx.file_key(coords) not in keys
    for hole in fx.holes:
        # every chunk wholly inside the hole
        ranges = [range(-(-a // c), b // c if b < s else -(-b // c)) for (a, b), c, s in
                  zip(hole, fx.chunk, fx.shape)]
        chunks = list(np.ndindex(*[len(r) for r in ranges]))
        assert chunks, f"hole {hole} covers no whole chunk"
        for i in chunks:
            chunk = tuple(r[k] for r, k in zip(ranges, i))
            if fx.shard is None:
                assert fx.file_key(chunk) not in keys, (hole, chunk)
                continue
            per = [g // c for g, c in zip(fx.shard, fx.chunk)]
            shard = tuple(c // p for c, p in zip(chunk, per))
            key = fx.file_key(shard)
            if key not in keys:
                continue  # the whole shard is missing
            offs, nbytes, _, _ = F.fixture_shard_index(fx, path / key)
            j = np.ravel_multi_index(tuple(c % p for c, p in zip(chunk, per)), per)
            assert offs[j] == F.EMPTY and nbytes[j] == F.EMPTY, (hole, chunk)
    if fx.only is not None:
        unwritten = fx.unwritten_files()
        assert unwritten, "some files were never written"
        for coords in unwritten:
            assert fx.file_key(coords) not in keys, coords
    if fx.holes or fx.delete_files or fx.only:
        assert len(keys) < fx.n_files or fx.shard is not None


@pytest.mark.parametrize("name", NAMES)
def test_fill_regions_read_as_fill_and_values_vary(name, oracles):
    fx = F.FIXTURES[name]
    o = oracles(name)
    for region in fx.fill_regions():
        assert _is_fill(o.source[F.region_slices(region)], o.fill_source).all(), region
    not_fill = ~_is_fill(o.source, o.fill_source)
    assert not_fill.mean() > 0.25
    if fx.dtype != "bool":  # bool: both values present (test_values_have_extremes_and_specials)
        assert len(np.unique(o.source[not_fill].astype(np.float64))) > 100


@pytest.mark.parametrize("name", NAMES)
def test_values_have_extremes_and_specials(name, oracles):
    fx = F.FIXTURES[name]
    src = oracles(name).source
    dt = src.dtype
    if dt == np.bool_:
        assert src.any() and not src.all()
    elif dt.kind in "iu":
        ii = np.iinfo(dt)
        assert (src == ii.min).any() and (src == ii.max).any()
    else:
        x = src.astype(np.float64)
        fi = ml_dtypes.finfo(dt) if dt == F.BF16 else np.finfo(dt)
        assert np.isnan(x).any()
        assert (x == np.inf).any() and (x == -np.inf).any()
        assert ((x == 0) & np.signbit(x)).any(), "-0.0"
        sub = (x != 0) & (np.abs(x) < float(fi.tiny))
        assert sub.any(), "subnormal"
        if dt == np.float64:
            with np.errstate(over="ignore"):
                f32 = src.astype(np.float32)
            assert ((f32 != 0) & (np.abs(f32) < np.finfo(np.float32).tiny)).any(), "f32 subnormal after cast"
            assert (np.isinf(f32) & np.isfinite(src)).any(), "overflow to inf after cast"


# ---------------------------------------------------------------- independent readers


@pytest.mark.parametrize("name", NAMES)
def test_tensorstore_reads_what_zarr_python_reads(name, fixture_arrays, oracles):
    ts_vals = _ts_read(fixture_arrays[name])
    z = oracles(name).source
    if z.dtype == F.BF16:
        assert str(ts_vals.dtype) == "bfloat16"
        ts_vals = ts_vals.view(np.uint16).view(F.BF16)
    assert _same_bits(ts_vals, z)


@pytest.mark.parametrize("name", NAMES)
def test_oracle_region_reads_match_the_cached_oracle(name, fixture_arrays, oracles):
    fx = F.FIXTURES[name]
    o = oracles(name)
    plans = F.plan_boxes(fx, seed=5) + F.plan_fill_boxes(fx, seed=5)
    for plan in plans:
        for box in plan.boxes[:: max(1, len(plan.boxes) // 6)]:
            for out in ("f32", "bf16"):
                direct = F.oracle_read(fixture_arrays[name], box, out, plan.out_of_bounds)
                F.assert_same(o.read(box, out, plan.out_of_bounds), direct, f"{name} {box} {out}")


def _torch_from_source(src: np.ndarray) -> torch.Tensor:
    if src.dtype == F.BF16:
        return torch.from_numpy(src.view(np.uint16).astype(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(src))


@pytest.mark.parametrize("name", NAMES)
def test_oracle_casts_agree_with_torch_casts(name, oracles):
    """numpy's astype(f32) (the contract) and torch's .to(float32) agree on every fixture
    value, so the expected values do not hinge on one library's conversion; likewise
    f32 -> bf16 in torch and in ml_dtypes (both nearest-even)."""
    o = oracles(name)
    whole = tuple((0, n) for n in o.shape)
    f32 = o.read(whole, "f32")
    F.assert_same(f32, _torch_from_source(o.source).to(torch.float32), f"{name} f32 cast")
    bf16 = o.read(whole, "bf16")
    via_ml = torch.from_numpy(o.f32.astype(F.BF16).view(np.uint16).astype(np.int16)).view(torch.bfloat16)
    F.assert_same(bf16, via_ml, f"{name} bf16 cast")


def test_oracle_cast_examples():
    """Spot checks of the casts damacy must match."""
    c = F._cast_f32
    assert c(np.array([True, False])).tolist() == [1.0, 0.0]
    assert c(np.array([2**24 + 1], np.int64))[0] == 2**24
    assert c(np.array([2**24 + 3], np.int64))[0] == 2**24 + 4  # tie to even
    assert int(c(np.array([2**62 + 2**38 + 1], np.int64))[0]) == 2**62 + 2**39  # no double rounding
    assert int(c(np.array([2**63 + 2**39 + 1], np.uint64))[0]) == 2**63 + 2**40
    assert c(np.array([2**64 - 1], np.uint64))[0] == np.float32(2.0**64)
    assert np.signbit(c(np.array([-0.0])))[0]
    assert c(np.array([3.5e38]))[0] == np.inf
    assert c(np.array([1e-40]))[0] != 0
    assert F._to_out(np.array([1.00390625], np.float32), "bf16").item() == 1.0
    assert F._to_out(np.array([1.01171875], np.float32), "bf16").item() == 1.015625


@pytest.mark.parametrize("name", NAMES)
def test_oracle_out_of_bounds(name, oracles):
    fx = F.FIXTURES[name]
    o = oracles(name)
    box = tuple((n - 1, n + 2) for n in fx.shape)
    with pytest.raises(ValueError, match="outside"):
        o.read(box)
    t = o.read(box, "f32", "fill")
    inside = t[(0,) * len(fx.shape)]
    F.assert_same(inside.reshape(1), torch.tensor([o.f32[(-1,) * len(fx.shape)]]))
    fill = torch.from_numpy(np.full(t.shape, o.fill32, np.float32))
    mask = torch.ones(t.shape, dtype=torch.bool)
    mask[(0,) * len(fx.shape)] = False
    assert not F.mismatches(t[mask], fill[mask]).any()


# ---------------------------------------------------------------- boxes


@pytest.mark.parametrize("name", NAMES)
def test_box_plans_cover_what_they_claim(name):
    fx = F.FIXTURES[name]
    plans = F.plan_boxes(fx)
    assert sum(len(p.boxes) for p in plans) >= 200
    assert F.plan_boxes(fx) == plans, "seeded"
    nd = len(fx.shape)
    all_boxes = []
    for p in plans:
        assert len(p.boxes) % p.batch == 0
        for box in p.boxes:
            assert tuple(b - a for a, b in box) == p.box_shape
            assert all(0 <= a and b <= n for (a, b), n in zip(box, fx.shape)), box
        all_boxes += p.boxes
    extents = {p.box_shape for p in plans}
    assert (1,) * nd in extents and fx.shape in extents
    for d in range(nd):
        assert any(b[d][0] == 0 and b[d][1] < fx.shape[d] for b in all_boxes), f"low edge {d}"
        assert any(b[d][1] == fx.shape[d] and b[d][0] > 0 for b in all_boxes), f"high edge {d}"

    def files_spanned(box, g):
        return math.prod((b - 1) // gg - a // gg + 1 for (a, b), gg in zip(box, g))

    def most(g):  # files a box could span: 2 per dimension where the grid has 2
        return math.prod(min(2, -(-n // gg)) for n, gg in zip(fx.shape, g))

    medium = plans[2]
    assert max(files_spanned(b, fx.grid_shape) for b in medium.boxes) >= most(fx.grid_shape)
    assert max(files_spanned(b, fx.chunk) for b in medium.boxes) >= 2 ** nd
    for region in fx.fill_regions():
        def meets(box):
            return all(a < rb and ra < b for (a, b), (ra, rb) in zip(box, region))

        def within(box):
            return all(ra <= a and b <= rb for (a, b), (ra, rb) in zip(box, region))

        assert any(meets(b) and not within(b) for b in all_boxes), f"straddle {region}"


@pytest.mark.parametrize("name", NAMES)
def test_fill_box_plans_reach_outside(name):
    fx = F.FIXTURES[name]
    plans = F.plan_fill_boxes(fx)
    boxes = [b for p in plans for b in p.boxes]
    outside = [b for b in boxes if F.boxes_touch_outside(b, fx.shape)]
    assert len(outside) >= len(boxes) // 2
    for b in boxes:
        assert all(a >= 0 for a, _ in b), "no negative coordinates"
        assert all(a < n for (a, _), n in zip(b, fx.shape)), "never wholly outside"


# ---------------------------------------------------------------- error fixtures


def test_error_fixtures_are_broken_where_intended(error_arrays):
    """zarr-python fails on the box reaching the damage and reads the far corner fine."""
    box = F.region_slices(F.ERROR_BOX)
    far = (slice(8, 16),) * 3
    for name in ["truncated_shard_end", "truncated_shard_start", "bad_index_crc", "bad_chunk_crc",
                 "bad_chunk_crc_sharded", "corrupt_zstd", "corrupt_zstd_sharded", "corrupt_blosc"]:
        a = F.open_zarr(error_arrays[name])
        if name == "truncated_shard_start":
            # zarr-python 3.1.6 does not notice: it reads past the end of the file as short
            # bytes and fails (or not) later; tensorstore reports the truncation.
            with pytest.raises(Exception):
                _ts_read(error_arrays[name])
        else:
            with pytest.raises(Exception):
                a[box]
        a[far]
    with pytest.raises(FileNotFoundError):
        F.open_zarr(error_arrays["missing"])
    with pytest.raises(ValueError):
        F.open_zarr(error_arrays["malformed_json"])
    meta = F.zarr_json(error_arrays["unsupported_codec"])
    assert meta["codecs"][-1]["name"] == "numcodecs.bz2"
    assert F.open_zarr(error_arrays["complex64"]).dtype == np.complex64
    assert F.open_zarr(error_arrays["good"]).shape == F.GOOD.shape
