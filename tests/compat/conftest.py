"""Fixtures of the ported original nclack/damacy tests (python/tests/conftest.py there).

The original wrote its arrays with its own script (tests/write_zarr.py, run through `uv`);
here the same geometries are written by zarr-python through tests/fixtures.py, with
fixtures.make_values data (so values can be checked against zarr-python too).

`cuda_ctx` skips where the original needed CUDA for a reason that is still CUDA's (a
test asserting kDLCUDA or a CUDA event); the rest run on the CPU here: the original's
`device=None` ("the current CUDA context") maps to "cuda" when torch sees a GPU, else "cpu".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compat_fixtures import write


@pytest.fixture
def cuda_ctx() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (asserts a CUDA-only property)")


@pytest.fixture
def tiny_zarr(tmp_path: Path) -> str:
    """A 2D u16 zarr (8x16, single 8x16 shard, 4x8 inner chunks, blosc-zstd)."""
    return write(tmp_path, "foo", "uint16", (8, 16), (4, 8), (8, 16))


@pytest.fixture
def multishard_zarr(tmp_path: Path) -> str:
    """A 2D u16 zarr (32x32, 8x8 shards: a 4x4 = 16-shard grid)."""
    return write(tmp_path, "multishard", "uint16", (32, 32), (8, 8), (8, 8))


@pytest.fixture
def tiny_zarr_no_cast(tmp_path: Path) -> str:
    """Same shape as tiny_zarr but a dtype with no cast path to f32/bf16 in the original
    (int64 there). This project casts int64 to f32, so the fixture is complex64 (a zarr
    data type neither damacy decodes): the same DtypeMismatch path."""
    return write(tmp_path, "bar", "complex64", (8, 16), (4, 8), (8, 16))
