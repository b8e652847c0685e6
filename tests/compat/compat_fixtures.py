"""Writes the ported tests' arrays with zarr-python (tests/fixtures.py)."""

from __future__ import annotations

from pathlib import Path

from zarr.codecs import BloscCodec, BytesCodec

import fixtures as F

_BLOSC_ZSTD = (BytesCodec(), BloscCodec(cname="zstd", shuffle="shuffle", clevel=5))


def write(tmp_path: Path, name: str, dtype: str, shape, inner, shard) -> str:
    fx = F.Fixture(name, "", dtype, tuple(shape), tuple(inner), tuple(shard), _BLOSC_ZSTD, 0, seed=3)
    return str(F.write_fixture(fx, tmp_path))
