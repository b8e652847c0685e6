"""Zarr v2 arrays and OME-NGFF multiscale groups, written by zarr-python, read by damacy.

v2 arrays: dimension_separator "." and "/", compressors Blosc / Zstd / GZip / none, fill
values (int, NaN, Infinity, null), int and float dtypes, chunks left unwritten (all fill);
random boxes, partly outside the array with out_of_bounds="fill", go through a
damacy.Pipeline and must equal zarr-python's read bit for bit. NGFF: v0.4 (`.zgroup` +
`.zattrs` "multiscales", v2 levels) and v0.5 (group `zarr.json` attributes.ome.multiscales,
v3 levels), levels picked by `#level=N`, by path, and by CropDataset(level=N); the level
listing through `damacy.array_info` and `python -m damacy info`. Errors: F order, filters,
object dtype, a group without multiscales (lists its arrays), a group without a level.
Geometry of every array: shape=[23,31,37], chunks=[8,16,16] (3x2x3 chunks, partial edges).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import zlib

import numcodecs
import numpy as np
import pytest
import torch
import zarr

import damacy
from damacy.__main__ import main as cli_main
from damacy.data import CropDataset, RandomCrops, level_uri

SHAPE = (23, 31, 37)
CHUNKS = (8, 16, 16)
BOX = (7, 12, 19)


def data(dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        a = rng.integers(-1000, 1000, size=SHAPE).astype(dtype) / 4
    else:
        info = np.iinfo(dtype)
        a = rng.integers(max(info.min, -30000), min(info.max, 60000), size=SHAPE, endpoint=True).astype(dtype)
    return a


def write_v2(path, dtype: str, compressor, separator: str, fill_value, *, seed: int = 0, blank_chunk: bool = True):
    a = zarr.create_array(
        store=str(path),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype=dtype,
        zarr_format=2,
        compressors=compressor,
        fill_value=fill_value,
        chunk_key_encoding={"name": "v2", "separator": separator},
    )
    values = data(dtype, seed)
    if blank_chunk and fill_value is not None:
        # One chunk holds only the fill value: zarr-python does not write it (a missing
        # chunk reads as fill).
        fv = np.array(fill_value, dtype=dtype) if not isinstance(fill_value, str) else np.array(float(fill_value), dtype=dtype)
        values[8:16, 0:16, 16:32] = fv
    a[...] = values
    return a


def boxes(seed: int, n: int = 16):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        out.append([(int(s), int(s) + b) for s, b in ((rng.integers(0, n_ - b + 4), b) for n_, b in zip(SHAPE, BOX))])
    return out


def oracle(arr, box, out_dtype) -> np.ndarray:
    """zarr-python's read of `box`, the fill value outside the array, cast like damacy."""
    fill = arr.fill_value if arr.fill_value is not None else 0
    want = np.full(tuple(b - a for a, b in box), fill, dtype=arr.dtype)
    src = tuple(slice(max(a, 0), min(b, n)) for (a, b), n in zip(box, arr.shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, (a, _) in zip(src, box))
    if all(s.stop > s.start for s in src):
        want[dst] = arr[src]
    return want.astype(out_dtype)


def read(uri: str, bxs, dtype: str = "f32", device: str = "cpu") -> list[torch.Tensor]:
    extra = {"device": device, "decode": "gpu", "staging_bytes": 16 << 20} if device != "cpu" else {}
    cfg = damacy.Config(samples_per_batch=4, sample_shape=list(BOX), dtype=dtype, n_io_threads=2, out_of_bounds="fill",
                        pop_timeout_s=30.0, **extra)
    padded = list(bxs) + [bxs[-1]] * (-len(bxs) % 4)
    out = []
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in padded)
        for batch in pipe.batches(len(padded) // 4):
            out.extend(batch[i].cpu().clone() for i in range(batch.shape[0]))
    return out[: len(bxs)]


def assert_same(got: torch.Tensor, want: np.ndarray, label: str) -> None:
    g = got.numpy()
    assert g.shape == want.shape, label
    both_nan = np.isnan(g) & np.isnan(want) if g.dtype.kind == "f" else np.zeros(g.shape, bool)
    bad = ~both_nan & (g.view(np.uint8).reshape(*g.shape, -1) != want.view(np.uint8).reshape(*want.shape, -1)).any(-1)
    assert not bad.any(), f"{label}: {int(bad.sum())} voxels differ, first at {np.argwhere(bad)[0].tolist()}"


COMPRESSORS = {
    "blosc-lz4": numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
    "blosc-zstd-bit": numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
    "zstd": numcodecs.Zstd(level=3),
    "gzip": numcodecs.GZip(level=5),
    "none": None,
}

CASES = [
    # (compressor, separator, dtype, fill_value, output dtype)
    ("blosc-lz4", ".", "uint16", 0, "f32"),
    ("blosc-zstd-bit", "/", "float32", "NaN", "f32"),
    ("zstd", ".", "int32", -7, "i64"),
    ("zstd", "/", "float64", "Infinity", "f32"),
    ("gzip", "/", "int16", 5, "f32"),
    ("gzip", ".", "uint8", None, "i32"),
    ("none", ".", "float32", -1.5, "f32"),
    ("none", "/", "int64", 3, "i64"),
]

OUT_NP = {"f32": np.float32, "i32": np.int32, "i64": np.int64}


@pytest.mark.parametrize("compressor,separator,dtype,fill,out", CASES, ids=[f"{c}-{'dot' if s == '.' else 'slash'}-{d}" for c, s, d, _, _ in CASES])
def test_v2_arrays_match_zarr_python(tmp_path, compressor, separator, dtype, fill, out):
    path = tmp_path / "a.zarr"
    arr = write_v2(path, dtype, COMPRESSORS[compressor], separator, fill)
    meta = json.loads((path / ".zarray").read_text())
    assert meta["dimension_separator"] == separator and meta["zarr_format"] == 2
    assert (path / f"0{separator}0{separator}0").is_file()
    if fill is not None:
        assert not (path / f"1{separator}0{separator}1").exists(), "the all-fill chunk is not written"
    info = damacy.array_info(str(path), usage=False)
    assert info["zarr_format"] == 2 and info["shape"] == list(SHAPE)
    reader = zarr.open_array(str(path), mode="r")
    bxs = boxes(seed=zlib.crc32(f"{compressor}{separator}{dtype}".encode()))
    for i, (got, box) in enumerate(zip(read(str(path), bxs, out), bxs)):
        assert_same(got, oracle(reader, box, OUT_NP[out]), f"{compressor} {separator} {dtype} box {i} {box}")
    assert arr is not None


def _cuda_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA device"
    info = damacy.gpu_info()
    if not info.get("cuda_built") or not info.get("nvcomp_available"):
        return f"no CUDA path or nvCOMP in this build: {info.get('why', '')}"
    return None


# The GPU decodes what it can (blosc, zstd, none); gzip chunks go through the CPU codec
# chain and are uploaded. Every v2 case must equal zarr-python on the CUDA path too. The GPU
# decode path writes f32/bf16 only: every case reads as f32 there (all test values are exact).
@pytest.mark.skipif(_cuda_skip_reason() is not None, reason=_cuda_skip_reason() or "")
@pytest.mark.parametrize("compressor,separator,dtype,fill,out", CASES, ids=[f"{c}-{'dot' if s == '.' else 'slash'}-{d}" for c, s, d, _, _ in CASES])
def test_v2_arrays_match_zarr_python_on_cuda(tmp_path, compressor, separator, dtype, fill, out):  # noqa: ARG001 - `out` is CPU-only
    path = tmp_path / "a.zarr"
    write_v2(path, dtype, COMPRESSORS[compressor], separator, fill)
    reader = zarr.open_array(str(path), mode="r")
    bxs = boxes(seed=zlib.crc32(f"cuda{compressor}{separator}{dtype}".encode()))
    for i, (got, box) in enumerate(zip(read(str(path), bxs, "f32", device="cuda:0"), bxs)):
        assert_same(got, oracle(reader, box, np.float32), f"cuda {compressor} {separator} {dtype} box {i} {box}")


def test_v2_null_fill_reads_as_zero(tmp_path):
    path = tmp_path / "null.zarr"
    write_v2(path, "float32", COMPRESSORS["zstd"], ".", None)
    assert json.loads((path / ".zarray").read_text())["fill_value"] is None
    (got,) = read(str(path), [[(20, 27), (0, 12), (0, 19)]])
    assert torch.all(got[3:] == 0), "outside the array: fill null reads as 0"


# --- errors ----------------------------------------------------------------------------


def test_v2_order_f_is_rejected(tmp_path):
    path = tmp_path / "f.zarr"
    zarr.create_array(store=str(path), shape=SHAPE, chunks=CHUNKS, dtype="uint16", zarr_format=2, order="F")
    assert json.loads((path / ".zarray").read_text())["order"] == "F"
    with pytest.raises(damacy.InvalidArgument, match=r'order "F"') as e:
        damacy.array_info(str(path))
    assert str(path) in str(e.value)


def test_v2_filters_are_rejected(tmp_path):
    path = tmp_path / "filters.zarr"
    zarr.create_array(store=str(path), shape=SHAPE, chunks=CHUNKS, dtype="uint16", zarr_format=2, filters=[numcodecs.Delta(dtype="<u2")])
    with pytest.raises(damacy.InvalidArgument, match=r"filters \[\"delta\"\]") as e:
        damacy.array_info(str(path))
    assert str(path) in str(e.value)
    # The same error from a pipeline reading it.
    with pytest.raises(damacy.InvalidArgument, match="filters"):
        read(str(path), [[(0, 7), (0, 12), (0, 19)]] * 4)


def test_v2_object_dtype_is_rejected(tmp_path):
    path = tmp_path / "obj.zarr"
    try:
        zarr.create_array(store=str(path), shape=(4,), chunks=(2,), dtype=str, zarr_format=2)
    except Exception:  # pragma: no cover - zarr-python versions differ on v2 strings
        path.mkdir()
        (path / ".zarray").write_text(json.dumps({"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "|O", "compressor": None,
                                                  "fill_value": 0, "order": "C", "filters": [{"id": "vlen-utf8"}]}))
    meta = json.loads((path / ".zarray").read_text())
    assert meta["dtype"] == "|O" or meta["dtype"].startswith("<U")
    with pytest.raises(damacy.InvalidArgument, match="object dtype|string dtype") as e:
        damacy.array_info(str(path))
    assert str(path) in str(e.value)


def test_v2_unsupported_compressor_is_named(tmp_path):
    path = tmp_path / "lz4.zarr"
    zarr.create_array(store=str(path), shape=SHAPE, chunks=CHUNKS, dtype="uint16", zarr_format=2, compressors=numcodecs.LZ4())
    with pytest.raises(damacy.InvalidArgument, match="compressor `lz4`"):
        damacy.array_info(str(path))


# --- OME-NGFF ----------------------------------------------------------------------------

AXES = [{"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}]


def datasets(n: int) -> list[dict]:
    return [{"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [2.0**i, 0.5 * 2**i, 0.5 * 2**i]},
                                                          {"type": "translation", "translation": [0.0, 0.25 * i, 0.25 * i]}]}
            for i in range(n)]


def level_data(i: int) -> np.ndarray:
    full = data("uint16", seed=42)
    return np.ascontiguousarray(full[:: 2**i, :: 2**i, :: 2**i])


def write_ngff(path, version: str):
    zf = 2 if version == "0.4" else 3
    g = zarr.open_group(str(path), mode="w", zarr_format=zf)
    ms = {"name": "img", "axes": AXES, "datasets": datasets(3)}
    if version == "0.4":
        g.attrs["multiscales"] = [{"version": "0.4", **ms}]
    else:
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    for i in range(3):
        values = level_data(i)
        kw = dict(compressors=numcodecs.Zstd(level=1)) if zf == 2 else dict(compressors=zarr.codecs.ZstdCodec(level=1), shards=(16, 32, 32) if i == 0 else None)
        a = g.create_array(str(i), shape=values.shape, chunks=CHUNKS, dtype="uint16", fill_value=0, **kw)
        a[...] = values
    return g


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngff_levels(tmp_path, version, caplog):
    path = tmp_path / f"img-{version}.zarr"
    write_ngff(path, version)
    if version == "0.4":
        assert (path / ".zgroup").exists() and "multiscales" in json.loads((path / ".zattrs").read_text())
    else:
        assert json.loads((path / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    g = str(path)
    # The listing: paths, shapes, scales.
    info = damacy.array_info(g)
    assert info["node_type"] == "multiscale" and info["ngff_version"] == version
    assert info["axes"] == ["z", "y", "x"]
    assert [lv["path"] for lv in info["levels"]] == ["0", "1", "2"]
    assert [tuple(lv["shape"]) for lv in info["levels"]] == [level_data(i).shape for i in range(3)]
    assert info["levels"][1]["scale"] == [2.0, 1.0, 1.0] and info["levels"][2]["translation"] == [0.0, 0.5, 0.5]
    assert info["levels"][0]["uri"] == f"{g}#level=0"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["info", "--json", g]) == 0
    assert json.loads(buf.getvalue())["levels"][2]["shape"] == list(level_data(2).shape)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["info", g]) == 0  # for people: one line per level
    lines = buf.getvalue().splitlines()
    assert "OME-NGFF multiscale group" in lines[0] and f"{g}#level=2" in lines[3], lines
    # The CLI logs its errors to the "damacy" logger (on stderr unless logging is configured,
    # as under pytest)
    with caplog.at_level("ERROR", logger="damacy"):
        assert cli_main(["bench", g, "--sample-shape", "4", "4", "4", "--batches", "1", "--quiet"]) == 1
    assert "#level=0" in caplog.text
    # A level by index and by path reads that level's data.
    for i, uri in [(0, f"{g}#level=0"), (1, level_uri(g, 1)), (1, f"{g}/1"), (2, f"{g}#level=2")]:
        reader = zarr.open_array(str(path / str(i)), mode="r")
        shape = reader.shape
        bxs = [[(int(s), int(s) + b) for s, b in zip(np.random.default_rng(j).integers(0, [max(n - b, 0) + 3 for n, b in zip(shape, BOX)]), BOX)] for j in range(8)]
        for got, box in zip(read(uri, bxs), bxs):
            assert_same(got, oracle(reader, box, np.float32), f"{uri} {box}")
    # No level: an error listing them; a level that is not there.
    with pytest.raises(damacy.InvalidArgument, match=r'#level=N.*0 = "0", 1 = "1", 2 = "2"'):
        read(g, [[(0, 7), (0, 12), (0, 19)]] * 4)
    with pytest.raises(damacy.InvalidArgument, match="no level 3"):
        damacy.array_info(f"{g}#level=3")


def test_crop_dataset_at_a_level(tmp_path):
    path = tmp_path / "img.zarr"
    write_ngff(path, "0.4")
    ds = CropDataset([str(path)], RandomCrops((4, 6, 8), seed=0, num_samples=8), samples_per_batch=4, level=1)
    assert ds.shapes == [level_data(1).shape]
    reader = zarr.open_array(str(path / "1"), mode="r")
    ds_meta = CropDataset([str(path)], RandomCrops((4, 6, 8), seed=0, num_samples=8), samples_per_batch=4, level=1, return_meta=True)
    n = 0
    for batch, meta in ds_meta:
        for j in range(batch.shape[0]):
            box = [tuple(r) for r in meta["box"][j].tolist()]
            assert_same(batch[j], oracle(reader, box, np.float32), f"level 1 {box}")
            n += 1
    assert n == 8
    with pytest.raises(damacy.InvalidArgument):
        level_uri(str(path), -1)


def test_group_without_multiscales_lists_its_arrays(tmp_path):
    for zf in (2, 3):
        path = tmp_path / f"plain-v{zf}.zarr"
        g = zarr.open_group(str(path), mode="w", zarr_format=zf)
        g.create_array("raw", shape=(4, 4), chunks=(2, 2), dtype="uint8")
        g.create_array("labels", shape=(4, 4), chunks=(2, 2), dtype="uint8")
        g.create_group("nested")
        with pytest.raises(damacy.InvalidArgument, match=r"without OME-NGFF multiscales.*\['labels', 'raw'\]|without OME-NGFF multiscales.*\[\"labels\", \"raw\"\]") as e:
            damacy.array_info(str(path))
        assert str(path) in str(e.value)
        assert damacy.array_info(str(path / "raw"), usage=False)["shape"] == [4, 4]


def test_float_fill_specials_survive(tmp_path):
    path = tmp_path / "inf.zarr"
    write_v2(path, "float32", COMPRESSORS["zstd"], "/", "-Infinity", blank_chunk=False)
    (got,) = read(str(path), [[(23, 30), (0, 12), (0, 19)]])
    assert torch.all(torch.isinf(got)) and math.copysign(1.0, float(got[0, 0, 0])) < 0
