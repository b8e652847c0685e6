"""Ported from nclack/damacy python/tests/test_deferred_release.py (issue 14 here); the
fixture is written by zarr-python (port).

Deferred-release path (issue #35).

The deterministic race coverage for ``Batch.release(event=...)`` lives in
the C-level ``test_release_event_blocks_assemble`` (tests/test_damacy.c)
which uses ``cudaLaunchHostFunc`` to gate the side-stream D2H behind a
100 ms host sleep, then asserts the captured bytes belong to the
released batch. The Python wrapper is a thin handle-coercion shim, so
the tests here cover only that surface.
"""

from __future__ import annotations

from pathlib import Path

import damacy
import pytest
from damacy import Config, Pipeline, Sample


from compat_fixtures import write


@pytest.fixture
def one_zarr(tmp_path: Path) -> str:
    return write(tmp_path, "a", "uint16", (8, 16), (8, 16), (8, 16))  # port: zarr-python fixture


def _mk_cfg() -> Config:
    return Config(
        samples_per_batch=1,
        dtype="f32",
        lookahead_samples=2,
        n_io_threads=1,
        n_array_meta_cache=4,
        n_shard_index_cache=8,
        n_chunk_layout_cache=4,
        max_shards_per_sample=2,
        sample_shape=(8, 16),
        max_gpu_memory_bytes=1 << 30,
    )


def test_release_event_none_falls_back_to_immediate(one_zarr):
    """``release(event=None)`` is the same as ``release()``."""
    with Pipeline(_mk_cfg()) as d:
        d.push([Sample(uri=one_zarr, aabb=[(0, 8), (0, 16)])])
        b = d.pop()
        b.release(event=None)
        b.release()  # idempotent


def test_release_event_rejects_bad_type(one_zarr):
    with Pipeline(_mk_cfg()) as d:
        d.push([Sample(uri=one_zarr, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch, pytest.raises(TypeError, match="event must be"):
            batch.release(event=b"nope")  # type: ignore[arg-type]


def test_coerce_cuda_event_handle_accepts_ints():
    assert damacy._coerce_cuda_event_handle(None) is None
    assert damacy._coerce_cuda_event_handle(0xDEADBEEF) == 0xDEADBEEF


def test_coerce_cuda_event_handle_reads_event_like():
    class FakeEvent:
        cuda_event = 42

    assert damacy._coerce_cuda_event_handle(FakeEvent()) == 42


def test_coerce_cuda_event_handle_records_stream_like():
    class FakeEvent:
        cuda_event = 1234

    class FakeStream:
        def record_event(self):
            return FakeEvent()

    assert damacy._coerce_cuda_event_handle(FakeStream()) == 1234


def test_coerce_cuda_event_handle_reads_cupy_event_ptr():
    """CuPy events expose their handle through `.ptr`."""

    class FakeCupyEvent:
        ptr = 0xCAFE

    assert damacy._coerce_cuda_event_handle(FakeCupyEvent()) == 0xCAFE


def test_coerce_cuda_event_handle_records_cupy_stream():
    """CuPy streams use `.record()` (not `.record_event()`)."""

    class FakeCupyEvent:
        ptr = 0xBEEF

    class FakeCupyStream:
        def record(self):
            return FakeCupyEvent()

    assert damacy._coerce_cuda_event_handle(FakeCupyStream()) == 0xBEEF


def test_coerce_cuda_event_handle_rejects_unknown():
    with pytest.raises(TypeError, match="event must be"):
        damacy._coerce_cuda_event_handle(object())
