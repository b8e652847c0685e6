"""Ported from nclack/damacy python/tests/test_damacy.py (its public-API tests, issue 14 here).

Changes from the original, each marked "# port:" below (dev/compat.md lists them):
- `_native` (the original's private C module) is only used for its constants: they come from
  `damacy._compat_config.NATIVE_CONSTANTS`; tests that needed the C module itself are left out.
- Fixtures are written by zarr-python (tests/compat/conftest.py), not the original's uv script.
- The module-wide `cuda_ctx` mark is gone: the tests run on the CPU too, with the DLPack device
  type expected from where the batch is (kDLCPU there); tests of a CUDA-only property keep
  `cuda_ctx` (skipped without a GPU).

Original docstring:

Pytest coverage for the user-facing damacy Python surface (issue #18).

Mirrors the C-side test_damacy_caps coverage at the bindings layer plus
end-to-end push/pop and stats assertions specific to the Python wrapper.
Construction tests do not require a GPU; end-to-end / stats tests do —
they need CUDA + nvcomp + a real device, the same prereq as the C ctest
CUDA suite.
"""

from __future__ import annotations

import ctypes
import dataclasses
import types
import warnings

import damacy
import pytest
from damacy import (
    BatchInfo,
    BudgetExceeded,
    Config,
    DamacyError,
    DtypeMismatch,
    InvalidArgument,
    NotFound,
    Pipeline,
    Sample,
    Stats,
    Status,
)

from compat_fixtures import write

# port: the original's C-module constants (damacy_limits.h, damacy_tuning_defaults()).
_native = types.SimpleNamespace(**damacy._compat_config.NATIVE_CONSTANTS)


# ---- DLPack capsule layout (ctypes mirror of dmlc/dlpack) ----------------
#
# Lets the DLPack tests below inspect the actual capsule contents without
# depending on torch. Layouts match python/damacy/_api.c.

_kDLCUDA = 2
_kDLCPU = 1


def _dl_type(d) -> int:
    # port: where the batches are (kDLCUDA on a GPU pipeline, kDLCPU on the CPU here).
    return _kDLCUDA if torch_cuda() else _kDLCPU


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
_kDLFloat = 2  # DLDataTypeCode.kDLFloat
_kDLBfloat = 4  # DLDataTypeCode.kDLBfloat


class _DLDevice(ctypes.Structure):
    _fields_ = [
        ("device_type", ctypes.c_int32),
        ("device_id", ctypes.c_int32),
    ]


class _DLDataType(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint8),
        ("bits", ctypes.c_uint8),
        ("lanes", ctypes.c_uint16),
    ]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [
        ("dl_tensor", _DLTensor),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
    ]


class _DLPackVersion(ctypes.Structure):
    _fields_ = [
        ("major", ctypes.c_uint32),
        ("minor", ctypes.c_uint32),
    ]


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("version", _DLPackVersion),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", _DLTensor),
    ]


_PyCapsule_GetPointer = ctypes.pythonapi.PyCapsule_GetPointer
_PyCapsule_GetPointer.restype = ctypes.c_void_p
_PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _capsule_as(cap, name: bytes, struct_t):
    """Read a capsule's payload pointer (without consuming it) and cast it
    to ``struct_t``. The capsule is unchanged — the consumer would rename
    it to ``used_<name>`` to mark consumption; we don't."""
    raw = _PyCapsule_GetPointer(cap, name)
    assert raw, "capsule had no pointer"
    return ctypes.cast(raw, ctypes.POINTER(struct_t)).contents


def _base_config(dtype: str | int | damacy.Dtype = "f32") -> Config:
    """Minimum-viable Config for tests.

    Mirrors the defaults used by tests/test_damacy_caps.c::mk_cfg.
    `dtype` is the *destination* batch dtype (#16): F32 or BF16. Source
    zarrs cast in-kernel; tiny_zarr is u16 → f32 here.
    """
    return Config(
        samples_per_batch=1,
        dtype=dtype,
        lookahead_samples=2,
        n_io_threads=1,
        n_array_meta_cache=4,
        n_shard_index_cache=8,
        n_chunk_layout_cache=4,
        # tiny_zarr: 8x16 shards → 1 shard/sample. Floor = lookahead_samples +
        # 2*samples_per_batch = 2 + 2 = 4; shard floor scales by
        # max_shards_per_sample (4 * 2 = 8).
        max_shards_per_sample=2,
        sample_shape=(8, 16),
        max_gpu_memory_bytes=1 << 30,
    )


# ---- module surface -----------------------------------------------------


def test_module_version_matches_native():
    # port: no `_native.__version__`; the version is a PEP 440 string.
    assert isinstance(damacy.__version__, str) and damacy.__version__[0].isdigit()


def test_log_level_constants_aligned():
    assert damacy.LOG_TRACE == 0  # port: the values of damacy_log.h, not `_native.LOG_*`
    assert damacy.LOG_FATAL == 5


def test_status_enum_values_mirror_native():
    assert Status.OK == 0  # port: the values of enum damacy_status, not `_native.STATUS_*`
    assert Status.SHUTDOWN == 11
    # Round-trip a few; if the C side ever renumbers, this catches it.
    for s in (Status.AGAIN, Status.INVAL, Status.NOTFOUND, Status.DTYPE):
        assert Status(int(s)) is s


def test_dtype_coerce():
    assert damacy.Dtype.coerce("f32") is damacy.Dtype.F32
    assert damacy.Dtype.coerce("float32") is damacy.Dtype.F32
    assert damacy.Dtype.coerce("bf16") is damacy.Dtype.BF16
    assert damacy.Dtype.coerce("bfloat16") is damacy.Dtype.BF16
    assert damacy.Dtype.coerce(0) is damacy.Dtype.F32
    assert damacy.Dtype.coerce(damacy.Dtype.BF16) is damacy.Dtype.BF16
    with pytest.raises(ValueError, match="unknown dtype"):
        damacy.Dtype.coerce("u16")


# ---- construction & validation ------------------------------------------


def test_invalid_config_raises_invalid_argument():
    cfg = dataclasses.replace(_base_config(), n_array_meta_cache=0)
    with pytest.raises(InvalidArgument) as excinfo:
        Pipeline(cfg)
    # The base class is still _native.DamacyError so legacy `except
    # RuntimeError` catches keep working.
    assert excinfo.value.status is Status.INVAL
    assert isinstance(excinfo.value, DamacyError)  # port: no _native.DamacyError
    assert isinstance(excinfo.value, RuntimeError)


def test_max_gpu_memory_too_small_raises_budget():
    cfg = dataclasses.replace(_base_config(), max_gpu_memory_bytes=64)
    with pytest.raises(BudgetExceeded) as excinfo:
        Pipeline(cfg)
    assert excinfo.value.status is Status.BUDGET


@pytest.mark.parametrize(
    "override",
    [
        # n_array_meta_cache below lookahead_samples + 2*samples_per_batch.
        dict(lookahead_samples=8, n_array_meta_cache=4),
        # n_chunk_layout_cache below the same floor.
        dict(lookahead_samples=8, n_chunk_layout_cache=4),
        # n_shard_index_cache below (floor) * max_shards_per_sample.
        dict(lookahead_samples=8, max_shards_per_sample=4, n_shard_index_cache=8),
    ],
)
def test_metadata_cache_floor_rejected_with_invalid(override):
    """Cache-sizing floors (#134): a metadata cache below its floor
    (lookahead_samples + 2*samples_per_batch) fails fast at create with
    InvalidArgument, not a stall."""
    # Bump the other caches clear of their floors so the targeted one trips.
    base = dict(
        n_array_meta_cache=64,
        n_chunk_layout_cache=64,
        n_shard_index_cache=256,
        max_shards_per_sample=2,
    )
    base.update(override)
    cfg = dataclasses.replace(_base_config(), **base)
    with pytest.raises(InvalidArgument) as excinfo:
        Pipeline(cfg)
    assert excinfo.value.status is Status.INVAL


def test_max_shards_per_sample_must_be_positive():
    cfg = dataclasses.replace(_base_config(), max_shards_per_sample=0)
    with pytest.raises(InvalidArgument) as excinfo:
        Pipeline(cfg)
    assert excinfo.value.status is Status.INVAL


def test_oversized_sample_shard_count_rejected(multishard_zarr):
    """A sample whose AABB intersects more shards than
    max_shards_per_sample is rejected at runtime with InvalidArgument
    (surfaced at pop)."""
    uri = multishard_zarr
    # 32x32 array, 8x8 shards → full extent touches 16 shards. Cap at 4.
    cfg = Config(
        samples_per_batch=1,
        dtype="f32",
        lookahead_samples=2,
        n_io_threads=1,
        n_array_meta_cache=4,
        n_chunk_layout_cache=4,
        n_shard_index_cache=16,
        max_shards_per_sample=4,
        sample_shape=(32, 32),
        max_gpu_memory_bytes=1 << 30,
    )
    with Pipeline(cfg) as d:
        d.push([Sample(uri=uri, aabb=[(0, 32), (0, 32)])])
        with pytest.raises(InvalidArgument) as excinfo:
            d.pop()
        assert excinfo.value.status is Status.INVAL


@pytest.mark.parametrize("dtype", ["f32", "bf16", "float32", "bfloat16"])
def test_dtype_string_form_accepted(tiny_zarr, dtype):
    _ = tiny_zarr
    with Pipeline(_base_config(dtype=dtype)) as d:
        assert isinstance(d, Pipeline)
        assert d.config.dtype is damacy.Dtype.coerce(dtype)


def test_dtype_int_form_accepted(tiny_zarr):
    _ = tiny_zarr
    with Pipeline(_base_config(dtype=damacy.Dtype.BF16)) as d:
        assert d.config.dtype is damacy.Dtype.BF16


def test_dtype_unknown_string_raises():
    # Validation runs in Config.__init__ — fails before we touch CUDA.
    with pytest.raises(ValueError, match="unknown dtype"):
        _base_config(dtype="u16")


# ---- end-to-end push / pop / release ------------------------------------


def test_push_pop_release_via_context_managers(tiny_zarr):
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])

        with d.pop() as batch:
            info = batch.info
            assert isinstance(info, BatchInfo)
            assert info.shape == (1, 8, 16)
            assert info.dtype is damacy.Dtype.F32
            assert info.batch_id == 0
            assert info.device_ptr != 0
            assert "Batch" in repr(batch)


def test_unknown_uri_surfaces_at_pop_as_notfound():
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri="not_a_zarr", aabb=[(0, 8), (0, 16)])])
        with pytest.raises(NotFound) as excinfo:
            d.pop()
        assert excinfo.value.status is Status.NOTFOUND


def test_unsupported_src_dtype_surfaces_at_pop_as_dtype_mismatch(tiny_zarr_no_cast):
    uri = tiny_zarr_no_cast
    with Pipeline(_base_config(dtype="f32")) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with pytest.raises(DtypeMismatch) as excinfo:
            d.pop()
        assert excinfo.value.status is Status.DTYPE


def test_oversize_chunk_surfaces_at_pop(tmp_path):
    out = write(tmp_path, "foo", "uint16", (8, 16), (8, 16), (8, 16))  # port: zarr-python fixture

    cfg = dataclasses.replace(
        _base_config(),
        max_chunk_uncompressed_bytes=128,  # 8x16 u16 = 256 B → over
    )
    with Pipeline(cfg) as d:
        d.push([Sample(uri=str(out), aabb=[(0, 8), (0, 16)])])
        with pytest.raises(BudgetExceeded):
            d.pop()


# ---- batches() iterator -------------------------------------------------


def test_batches_iterator_yields_n(tiny_zarr):
    uri = tiny_zarr
    samples = [Sample(uri=uri, aabb=[(0, 8), (0, 16)]) for _ in range(3)]
    # Default lookahead (= 2 with samples_per_batch=1, capacity=2) is now smaller
    # than the push; the wrapper queues the overflow and drains as we pop.
    with Pipeline(_base_config()) as d:
        d.push(samples)
        ids: list[int] = []
        for batch in d.batches(3):
            with batch as b:
                ids.append(b.info.batch_id)
        assert ids == [0, 1, 2]


def test_push_returns_none(tiny_zarr):
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        assert d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])]) is None


def _drain_ids(d: Pipeline, n: int) -> list[int]:
    ids: list[int] = []
    for batch in d.batches(n):
        with batch as b:
            ids.append(b.info.batch_id)
    return ids


def test_push_overflows_queue_into_pending(tiny_zarr):
    """Pushing more samples than the native lookahead holds is silently
    handled by the Python-side queue; pop drives the drain."""
    uri = tiny_zarr
    # default lookahead=2, samples_per_batch=1 → capacity=2; we push 5.
    samples = [Sample(uri=uri, aabb=[(0, 8), (0, 16)]) for _ in range(5)]
    with Pipeline(_base_config()) as d:
        d.push(samples)
        assert d.pending  # 3 samples > capacity sitting in the deque
        assert _drain_ids(d, 5) == [0, 1, 2, 3, 4]
        assert not d.pending


def test_push_accepts_generator(tiny_zarr):
    uri = tiny_zarr

    def gen():
        for _ in range(4):
            yield Sample(uri=uri, aabb=[(0, 8), (0, 16)])

    with Pipeline(_base_config()) as d:
        d.push(gen())  # generator, not a list
        assert _drain_ids(d, 4) == [0, 1, 2, 3]


def test_push_accepts_infinite_generator(tiny_zarr):
    """Infinite generator must not be materialized; we pull only what fits
    and what each pop frees."""
    uri = tiny_zarr

    def forever():
        while True:
            yield Sample(uri=uri, aabb=[(0, 8), (0, 16)])

    with Pipeline(_base_config()) as d:
        d.push(forever())  # would OOM if eagerly materialized
        assert _drain_ids(d, 3) == [0, 1, 2]
        assert d.pending  # generator still has more


def test_exit_cancels_undrained_work_without_flush(tiny_zarr):
    """Exiting with batches pushed but never popped tears down, not hangs."""
    uri = tiny_zarr
    samples = [Sample(uri=uri, aabb=[(0, 8), (0, 16)]) for _ in range(5)]
    with Pipeline(_base_config()) as d:
        d.push(samples)
    assert d._closed


def test_exit_with_undrained_infinite_source(tiny_zarr):
    """Exiting while an unbounded source is still feeding must not wedge."""
    uri = tiny_zarr

    def forever():
        while True:
            yield Sample(uri=uri, aabb=[(0, 8), (0, 16)])

    with Pipeline(_base_config()) as d:
        d.push(forever())
        assert _drain_ids(d, 1) == [0]
    assert d._closed


def test_infinite_generator_feeds_multi_sample_batches(tiny_zarr):
    """Regression for #135: after the first lookahead window is consumed,
    the drain tail must keep pulling a full window from the head iterator,
    not dribble a single sample per pop. With samples_per_batch > 1 the
    old single-next() top-up never accumulated enough to seal a batch, so
    pop() stalled out at ~lookahead_samples/samples_per_batch batches and
    then raised PoolStarved. Here we pop well past that stall point."""
    uri = tiny_zarr

    def forever():
        while True:
            yield Sample(uri=uri, aabb=[(0, 8), (0, 16)])

    cfg = dataclasses.replace(
        _base_config(),
        samples_per_batch=8,
        lookahead_samples=64,
        pop_timeout_s=10.0,
        # Metadata caches must clear the #134 floors for this geometry:
        # lookahead + 2*samples_per_batch = 80, shard floor 80 * 2.
        n_array_meta_cache=80,
        n_chunk_layout_cache=80,
        n_shard_index_cache=160,
    )
    # Old behaviour stalled around lookahead_samples/samples_per_batch == 8
    # batches; pop the window-worth and several more to prove the refill.
    with Pipeline(cfg) as d:
        d.push(forever())
        assert _drain_ids(d, 24) == list(range(24))


def test_push_chains_multiple_calls(tiny_zarr):
    uri = tiny_zarr
    s = Sample(uri=uri, aabb=[(0, 8), (0, 16)])
    with Pipeline(_base_config()) as d:
        d.push([s, s])
        d.push([s, s, s])
        assert _drain_ids(d, 5) == [0, 1, 2, 3, 4]


def test_pop_error_makes_pipeline_terminal():
    """Once an async error (here, NotFound) surfaces at pop, the pipeline
    failed_status is sticky — subsequent pops re-raise the same status."""
    bad = Sample(uri="not_a_zarr", aabb=[(0, 8), (0, 16)])
    with Pipeline(_base_config()) as d:
        d.push([bad])
        with pytest.raises(NotFound):
            d.pop()
        with pytest.raises(NotFound):
            d.pop()


def test_pop_dtype_error_makes_pipeline_terminal(tiny_zarr_no_cast):
    """The DAMACY_DTYPE path surfaced at pop is also sticky."""
    uri = tiny_zarr_no_cast
    with Pipeline(_base_config(dtype="f32")) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with pytest.raises(DtypeMismatch):
            d.pop()
        with pytest.raises(DtypeMismatch):
            d.pop()


def test_pop_surfaces_sticky_error_over_drain(tiny_zarr):
    """pop()'s internal drain re-pushes pending items into native. Once
    the pipeline is terminal the re-push raises SHUTDOWN; the suppress
    around drain must let the sticky error surface from native.pop,
    not the secondary ShutdownError from drain."""
    uri = tiny_zarr
    good = Sample(uri=uri, aabb=[(0, 8), (0, 16)])
    bad = Sample(uri="not_a_zarr", aabb=[(0, 8), (0, 16)])
    with Pipeline(_base_config()) as d:
        # Push bad first + a generator of goods. Cap=2; the generator
        # holds extra goods that will sit in _pending across the pop
        # whose drain hits SHUTDOWN after bad fails.
        d.push([bad])
        d.push(iter([good, good, good]))
        with pytest.raises(NotFound):
            d.pop()
        # Sticky: second pop also surfaces NotFound, not ShutdownError.
        with pytest.raises(NotFound):
            d.pop()


# ---- Config dataclass --------------------------------------------------


def test_config_validates_eagerly():
    ss = (8, 16)
    gpu = 1 << 30
    with pytest.raises(ValueError, match="samples_per_batch"):
        Config(samples_per_batch=0, sample_shape=ss, max_gpu_memory_bytes=gpu)
    with pytest.raises(ValueError, match="lookahead_samples"):
        Config(
            samples_per_batch=1,
            sample_shape=ss,
            lookahead_samples=0,
            max_gpu_memory_bytes=gpu,
        )
    assert (
        Config(
            samples_per_batch=2,
            sample_shape=ss,
            lookahead_samples=2,
            max_gpu_memory_bytes=gpu,
        ).lookahead_samples
        == 2
    )
    with pytest.raises(ValueError, match="n_io_threads"):
        Config(
            samples_per_batch=1,
            sample_shape=ss,
            n_io_threads=0,
            max_gpu_memory_bytes=gpu,
        )
    with pytest.raises(TypeError, match="n_prefetch_threads"):
        Config(
            samples_per_batch=1,
            sample_shape=ss,
            n_prefetch_threads=0,
            max_gpu_memory_bytes=gpu,
        )
    with pytest.raises(ValueError, match="metadata_io_concurrency"):
        Config(
            samples_per_batch=1,
            sample_shape=ss,
            metadata_io_concurrency=0,
            max_gpu_memory_bytes=gpu,
        )
    with pytest.raises(ValueError, match="max_chunk_uncompressed_bytes"):
        Config(
            samples_per_batch=1,
            sample_shape=ss,
            max_chunk_uncompressed_bytes=-1,
            max_gpu_memory_bytes=gpu,
        )
    with pytest.raises(ValueError, match="max_gpu_memory_bytes"):
        Config(samples_per_batch=1, sample_shape=ss, max_gpu_memory_bytes=0)
    with pytest.raises(ValueError, match="sample_shape"):
        Config(samples_per_batch=1, sample_shape=(), max_gpu_memory_bytes=gpu)
    with pytest.raises(ValueError, match="sample_shape"):
        Config(samples_per_batch=1, sample_shape=(8, 0), max_gpu_memory_bytes=gpu)
    with pytest.raises(ValueError, match="max_read_op_bytes"):
        Config(
            samples_per_batch=1,
            sample_shape=ss,
            max_read_op_bytes=-1,
            max_gpu_memory_bytes=gpu,
        )
    # 0 is no longer a "use default" sentinel for the tuning knobs; it is
    # rejected as out of range.
    for field, over_max in (
        ("max_chunk_uncompressed_bytes", _native.MAX_CHUNK_BYTES + 1),
        ("max_read_op_bytes", _native.MAX_READ_OP_BYTES + 1),
        ("host_buffer_waves", _native.MAX_HOST_BUFFER_WAVES + 1),
        ("max_chunks_per_wave", _native.HARD_MAX_CHUNKS_PER_WAVE + 1),
        ("max_substreams_per_chunk", _native.HARD_MAX_SUBSTREAMS_PER_CHUNK + 1),
    ):
        with pytest.raises(ValueError, match=field):
            Config(
                samples_per_batch=1,
                sample_shape=ss,
                max_gpu_memory_bytes=gpu,
                **{field: 0},
            )
        with pytest.raises(ValueError, match=field):
            Config(
                samples_per_batch=1,
                sample_shape=ss,
                max_gpu_memory_bytes=gpu,
                **{field: over_max},
            )
    with pytest.raises(ValueError, match="numa_node"):
        Config(
            samples_per_batch=1,
            sample_shape=ss,
            max_gpu_memory_bytes=gpu,
            numa_strategy="pin_to",
        )
    with pytest.raises(ValueError, match="numa_node"):
        Config(
            samples_per_batch=1,
            sample_shape=ss,
            max_gpu_memory_bytes=gpu,
            numa_strategy="auto",
            numa_node=3,
        )


def test_config_tuning_defaults_are_explicit():
    cfg = Config(samples_per_batch=1, sample_shape=(8, 16), max_gpu_memory_bytes=1)
    assert (
        cfg.max_chunk_uncompressed_bytes == _native.DEFAULT_CHUNK_UNCOMPRESSED_BYTES
    )
    assert cfg.max_read_op_bytes == _native.DEFAULT_READ_OP_MAX_BYTES
    assert cfg.host_buffer_waves == _native.DEFAULT_HOST_BUFFER_WAVES
    assert cfg.max_chunks_per_wave == _native.DEFAULT_MAX_CHUNKS_PER_WAVE
    assert cfg.max_substreams_per_chunk == _native.DEFAULT_MAX_SUBSTREAMS_PER_CHUNK


def test_config_tuning_values_preserved():
    cfg = Config(
        samples_per_batch=1,
        sample_shape=(8, 16),
        max_gpu_memory_bytes=1,
        max_chunk_uncompressed_bytes=1 << 20,
        max_read_op_bytes=1 << 21,
        host_buffer_waves=_native.N_WAVES,
        max_chunks_per_wave=7,
        max_substreams_per_chunk=9,
    )
    assert cfg.max_chunk_uncompressed_bytes == 1 << 20
    assert cfg.max_read_op_bytes == 1 << 21
    assert cfg.host_buffer_waves == _native.N_WAVES
    assert cfg.max_chunks_per_wave == 7
    assert cfg.max_substreams_per_chunk == 9


def test_config_default_preset():
    cfg = Config.default(
        samples_per_batch=8,
        sample_shape=(8, 256, 256),
        max_gpu_memory_bytes=1 << 30,
    )
    # The four cluster-tuned values.
    assert cfg.n_io_threads == 64
    assert cfg.metadata_io_concurrency == 64
    assert cfg.max_read_op_bytes == 4 * 1024 * 1024
    assert cfg.max_chunk_uncompressed_bytes == 2 * 1024 * 1024
    # Remaining tuning knobs keep their explicit library defaults.
    assert cfg.host_buffer_waves == _native.DEFAULT_HOST_BUFFER_WAVES
    assert cfg.max_chunks_per_wave == _native.DEFAULT_MAX_CHUNKS_PER_WAVE
    # Geometry threaded through.
    assert cfg.samples_per_batch == 8
    assert cfg.sample_shape == (8, 256, 256)
    # A plain frozen Config that survives replace.
    assert dataclasses.replace(cfg, samples_per_batch=16).samples_per_batch == 16


def test_config_default_override_wins():
    cfg = Config.default(
        samples_per_batch=8,
        sample_shape=(8, 256, 256),
        max_gpu_memory_bytes=1 << 30,
        n_io_threads=32,
    )
    assert cfg.n_io_threads == 32
    assert cfg.metadata_io_concurrency == 64


def test_config_default_n_io_threads():
    cfg = Config(samples_per_batch=1, sample_shape=(8, 16), max_gpu_memory_bytes=1)
    assert cfg.n_io_threads == _native.DEFAULT_IO_THREADS


def test_config_numa_defaults_and_coercion():
    cfg = _base_config()
    assert cfg.numa_strategy is damacy.NumaStrategy.AUTO
    assert cfg.numa_node == -1
    cfg2 = dataclasses.replace(cfg, numa_strategy=damacy.NumaStrategy.DISABLED)
    assert cfg2.numa_strategy is damacy.NumaStrategy.DISABLED
    cfg3 = dataclasses.replace(cfg, numa_strategy="pin_to", numa_node=0)
    assert cfg3.numa_strategy is damacy.NumaStrategy.PIN_TO
    assert cfg3.numa_node == 0


def test_config_enable_gds_tri_state():
    cfg = _base_config()
    assert cfg.enable_gds is None  # AUTO default
    assert dataclasses.replace(cfg, enable_gds=True).enable_gds is True
    assert dataclasses.replace(cfg, enable_gds=False).enable_gds is False


def test_config_metadata_latency_model():
    model = damacy.LatencyModel(
        baseline_ns=200_000,
        lognormal_mu_ln_ns=14.5,
        lognormal_sigma_ln_ns=1.5,
        cap_ns=500_000_000,
        seed=7,
    )
    cfg = dataclasses.replace(_base_config(), metadata_latency=model)
    assert cfg.metadata_latency is model

    with pytest.raises(ValueError, match="lognormal_sigma_ln_ns"):
        damacy.LatencyModel(lognormal_sigma_ln_ns=-1.0)
    with pytest.raises(TypeError, match="metadata_latency"):
        dataclasses.replace(_base_config(), metadata_latency=object())


def test_pipeline_accepts_new_config_kwargs(tiny_zarr):
    _ = tiny_zarr
    cfg = dataclasses.replace(
        _base_config(),
        enable_gds=False,
        numa_strategy=damacy.NumaStrategy.DISABLED,
    )
    with Pipeline(cfg) as d:
        assert d is not None


def test_pipeline_explicit_gds_off_overrides_env(tiny_zarr, monkeypatch):
    _ = tiny_zarr
    monkeypatch.setenv("DAMACY_GDS_ENABLE", "1")
    cfg = dataclasses.replace(_base_config(), enable_gds=False)
    with Pipeline(cfg) as d:
        assert d is not None


# port: test_native_pipeline_rejects_out_of_range_enums left out: it builds `_native.Pipeline`
# (the original's private C class) with raw enum ints. The public path is covered: an
# unknown numa strategy raises ValueError in Config (test_config_validates_eagerly, doctests).


def test_config_dtype_coerced():
    cfg = _base_config(dtype="bf16")
    assert cfg.dtype is damacy.Dtype.BF16


def test_config_replace_for_variants():
    base = _base_config()
    big = dataclasses.replace(base, samples_per_batch=4, lookahead_samples=8)
    assert base.samples_per_batch == 1 and big.samples_per_batch == 4
    # frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.samples_per_batch = 99  # type: ignore[misc]


# ---- stats --------------------------------------------------------------


def test_stats_returns_typed_dataclass(tiny_zarr):
    _ = tiny_zarr
    with Pipeline(_base_config()) as d:
        s = d.stats()
        assert isinstance(s, Stats)
        assert s.gpu_bytes_committed > 0
        assert s.plan.name == "plan"
        assert s.input_transfer.name == "input_transfer"
        assert s.metadata_backend_read_jobs >= 0
        assert s.metadata_backend_read_active >= 0
        assert s.metadata_backend_read_max_active >= 0


# port: on the CPU no device buffers grow (one output buffer before and after); on the GPU
# path the per-batch device staging and decoded buffers count from the first launch.
@pytest.mark.usefixtures("cuda_ctx")
def test_stats_gpu_bytes_grows_after_first_pop(tiny_zarr):
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        before = d.stats().gpu_bytes_committed
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop():
            pass
        after = d.stats().gpu_bytes_committed
        assert after > before


def test_stats_io_planner_counters_advance(tiny_zarr):
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop():
            pass
        s = d.stats()
        assert s.chunks_planned > 0
        assert s.chunks_to_load > 0
        assert s.reads_issued > 0
        assert s.metadata_backend_read_jobs > 0
        assert s.metadata_backend_read_max_active > 0
        assert s.chunks_to_load <= s.chunks_planned


# ---- stats_reset -------------------------------------------------------


def test_stats_reset_is_idempotent(tiny_zarr):
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop():
            pass
        s_before = d.stats()
        d.stats_reset()
        s_after = d.stats()
        # Most counters reset; gpu_bytes_committed reflects committed
        # buffers and stays put.
        assert s_after.batches_emitted == 0
        assert s_before.batches_emitted >= 1


# ---- DLPack export -----------------------------------------------------


def test_batch_dlpack_export_smoke(tiny_zarr):
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            # __dlpack_device__ → (kDLCUDA=2, ordinal).
            dev = batch.__dlpack_device__()
            assert dev[0] == _dl_type(d)  # port: kDLCPU on the CPU
            # __dlpack__ returns a capsule; consuming it would need
            # torch/cupy. Leave the capsule unconsumed; the C-side
            # deleter is exercised when the capsule is GC'd.
            cap = batch.__dlpack__(stream=None)
            assert cap is not None
            del cap


def test_batch_dlpack_default_is_v0_capsule(tiny_zarr):
    """Default __dlpack__() (no max_version) must emit a v0 capsule —
    that's the only thing PyTorch 2.8 consumes (issue #33)."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            cap = batch.__dlpack__(stream=None)
            # PyCapsule.__repr__ embeds the name, e.g.
            #   '<capsule object "dltensor" at 0x...>'
            assert 'dltensor"' in repr(cap)
            assert "dltensor_versioned" not in repr(cap)
            del cap


def test_batch_dlpack_versioned_when_max_version_requests_it(tiny_zarr):
    """max_version=(1, 0) opts the consumer into the v1.0 wire format."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            cap = batch.__dlpack__(stream=None, max_version=(1, 0))
            assert "dltensor_versioned" in repr(cap)
            del cap


def test_batch_dlpack_max_version_zero_stays_v0(tiny_zarr):
    """max_version=(0, X) is a legacy-only request → v0."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            cap = batch.__dlpack__(stream=None, max_version=(0, 9))
            assert 'dltensor"' in repr(cap)
            assert "dltensor_versioned" not in repr(cap)
            del cap


def test_batch_torch_from_dlpack(tiny_zarr):
    """torch.from_dlpack(batch) must accept the default capsule — that's
    the regression issue #33 exists to fix."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA-enabled torch required")

    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            info = batch.info
            t = torch.from_dlpack(batch)
            assert t.device.type == "cuda"
            assert tuple(t.shape) == tuple(info.shape)
            assert t.dtype == torch.float32  # _base_config default
            # The data should be readable. Copy off-device and check it
            # isn't garbage / segfaulting.
            host = t.detach().cpu()
            assert host.numel() == t.numel()


def test_batch_torch_from_dlpack_versioned(tiny_zarr):
    """torch.utils.dlpack.from_dlpack should also accept the v1 capsule
    when a caller explicitly asks for it. PyTorch 2.6+ understands both
    names, so this exercises the v1 path end-to-end."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA-enabled torch required")
    # Some PyTorch builds (<2.6) reject "dltensor_versioned" outright;
    # treat that as a known limitation and skip rather than fail.
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            info = batch.info
            cap = batch.__dlpack__(stream=None, max_version=(1, 0))
            try:
                t = torch.utils.dlpack.from_dlpack(cap)
            except (RuntimeError, TypeError) as exc:
                pytest.skip(f"torch doesn't accept v1 capsule: {exc}")
            assert t.device.type == "cuda"
            assert tuple(t.shape) == tuple(info.shape)


def test_batch_dlpack_v0_capsule_fields(tiny_zarr):
    """Parse the v0 DLManagedTensor and verify every field matches what
    `batch.info` reports: data ptr, device, ndim, dtype, shape, no
    strides (contiguous), zero byte_offset."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            info = batch.info
            cap = batch.__dlpack__(stream=None)
            mt = _capsule_as(cap, b"dltensor", _DLManagedTensor)
            t = mt.dl_tensor
            assert t.data == info.device_ptr
            assert t.device.device_type == _dl_type(d)  # port: kDLCPU on the CPU
            assert t.ndim == len(info.shape)
            assert t.dtype.code == _kDLFloat  # f32 from _base_config
            assert t.dtype.bits == 32
            assert t.dtype.lanes == 1
            assert [t.shape[i] for i in range(t.ndim)] == list(info.shape)
            # damacy emits contiguous tensors, so strides is NULL.
            # port: torch's exporter always fills strides; contiguous means row-major ones.
            assert not t.strides or [t.strides[i] for i in range(t.ndim)] == _row_major(info.shape)
            assert t.byte_offset == 0
            # The deleter is wired (non-NULL); manager_ctx points at
            # damacy's payload struct, also non-NULL.
            assert mt.deleter
            assert mt.manager_ctx
            del cap


def test_batch_dlpack_v1_capsule_fields(tiny_zarr):
    """Same field-level check on the versioned capsule. Version=(1,0),
    flags=0, dl_tensor mirrors v0."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            info = batch.info
            cap = batch.__dlpack__(stream=None, max_version=(1, 0))
            mt = _capsule_as(cap, b"dltensor_versioned", _DLManagedTensorVersioned)
            assert mt.version.major == 1
            assert mt.version.minor == 0
            assert mt.flags == 0
            t = mt.dl_tensor
            assert t.data == info.device_ptr
            assert t.device.device_type == _dl_type(d)  # port: kDLCPU on the CPU
            assert t.ndim == len(info.shape)
            assert [t.shape[i] for i in range(t.ndim)] == list(info.shape)
            assert mt.deleter
            assert mt.manager_ctx
            del cap


def test_batch_dlpack_v0_capsule_fields_bf16(tiny_zarr):
    """Same as v0_capsule_fields but with destination dtype=bf16 — the
    DLDataType must report code=kDLBfloat (4), bits=16, lanes=1."""
    uri = tiny_zarr
    with Pipeline(_base_config(dtype="bf16")) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            cap = batch.__dlpack__(stream=None)
            mt = _capsule_as(cap, b"dltensor", _DLManagedTensor)
            t = mt.dl_tensor
            assert t.dtype.code == _kDLBfloat
            assert t.dtype.bits == 16
            assert t.dtype.lanes == 1
            del cap


def test_batch_dlpack_copy_true_rejected(tiny_zarr):
    """Per DLPack protocol, copy=True asks the producer to materialize
    a fresh buffer. damacy doesn't support that — it must raise
    BufferError so the consumer falls back."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            with pytest.raises(BufferError, match="copy=True not supported"):
                batch.__dlpack__(stream=None, copy=True)
            # copy=False and copy=None remain fine.
            cap1 = batch.__dlpack__(stream=None, copy=False)
            cap2 = batch.__dlpack__(stream=None, copy=None)
            del cap1, cap2


def test_batch_dlpack_invalid_max_version(tiny_zarr):
    """max_version must be either None or a 2-element non-negative
    sequence. Anything else raises TypeError/ValueError cleanly."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            # wrong arity
            with pytest.raises(TypeError, match="2-element"):
                batch.__dlpack__(stream=None, max_version=(1,))  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="2-element"):
                batch.__dlpack__(stream=None, max_version=(1, 0, 0))  # type: ignore[arg-type]
            # negative components
            with pytest.raises(ValueError, match=">= 0"):
                batch.__dlpack__(stream=None, max_version=(-1, 0))
            # non-integer entries
            with pytest.raises(TypeError):
                batch.__dlpack__(stream=None, max_version=("1", "0"))  # type: ignore[arg-type]


def test_batch_dlpack_after_release_raises(tiny_zarr):
    """Both __dlpack__ and __dlpack_device__ must fail with RuntimeError
    once the Batch has been released — no use-after-free into damacy."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        batch = d.pop()
        batch.release()
        with pytest.raises(RuntimeError, match="released"):
            batch.__dlpack__(stream=None)
        with pytest.raises(RuntimeError, match="released"):
            batch.__dlpack_device__()


def test_batch_dlpack_capsule_holds_batch_alive(tiny_zarr):
    """port: the original counted references on its private `batch._native`; the public
    property is the same: the capsule keeps the batch's memory alive after release, and
    dropping it runs the deleter (the buffer returns to the pool: the next pops succeed
    with both slots needed)."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])] * 3)
        batch = d.pop()
        want = batch.clone()
        cap = batch.__dlpack__(stream=None)
        batch.release()
        import torch

        t = torch.from_dlpack(cap)
        assert torch.equal(t, want)  # still the batch's values after release
        del t, cap
        with d.pop() as b1, d.pop() as b2:  # both slots: the first buffer came back
            assert b1.info.batch_id == 1 and b2.info.batch_id == 2


def test_batch_dlpack_stream_kwargs_accepted(tiny_zarr):
    """The DLPack protocol stream sentinel values must all be accepted:
    None (producer sync), -1 (no sync), 0/1/2 (legacy / default streams),
    arbitrary int (consumer stream handle). The last one is best-effort
    — we just verify the call doesn't raise."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            for s in (None, -1, 0, 1, 2):
                cap = batch.__dlpack__(stream=s)
                assert cap is not None
                del cap


def test_batch_dlpack_device_returns_pipeline_device(tiny_zarr):
    """__dlpack_device__ must report (kDLCUDA, device_ord) where
    device_ord matches the Pipeline's bound device."""
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        with d.pop() as batch:
            dev_type, dev_id = batch.__dlpack_device__()
            assert dev_type == _dl_type(d)  # port: kDLCPU on the CPU
            assert dev_id == d.device


# ---- log helpers -------------------------------------------------------


def test_set_log_level_and_quiet_passthrough():
    # Cycle through legal values; they forward into the C-side sink.
    damacy.set_log_level(damacy.LOG_DEBUG)
    damacy.set_log_level(damacy.LOG_INFO)
    damacy.set_log_quiet(True)
    damacy.set_log_quiet(False)


# ---- Batch repr after release ------------------------------------------


def test_batch_repr_handles_released_state(tiny_zarr):
    uri = tiny_zarr
    with Pipeline(_base_config()) as d:
        d.push([Sample(uri=uri, aabb=[(0, 8), (0, 16)])])
        b = d.pop()
        assert "Batch(batch_id=" in repr(b)
        b.release()
        assert "<released>" in repr(b)


# ---- closed-handle hygiene ---------------------------------------------


def test_use_after_close_raises(tiny_zarr):
    _ = tiny_zarr
    d = Pipeline(_base_config())
    d.close()
    d.close()  # idempotent
    # Every public method that touches the native handle surfaces a
    # typed ShutdownError, not a bare AttributeError.
    with pytest.raises(damacy.ShutdownError) as excinfo:
        d.stats()
    assert excinfo.value.status is Status.SHUTDOWN
    with pytest.raises(damacy.ShutdownError):
        d.pop()
    with pytest.raises(damacy.ShutdownError):
        d.push([Sample(uri="x", aabb=[(0, 1), (0, 1)])])
    with pytest.raises(damacy.ShutdownError):
        d.stats_reset()
    with pytest.raises(damacy.ShutdownError):
        _ = d.device


# ---- exception hierarchy ------------------------------------------------


def test_per_status_exceptions_share_base():
    # Cheap construction-time INVAL.
    cfg = dataclasses.replace(_base_config(), n_array_meta_cache=0)
    with pytest.raises(DamacyError) as excinfo:
        Pipeline(cfg)
    assert isinstance(excinfo.value, InvalidArgument)
    assert isinstance(excinfo.value, DamacyError)
    assert isinstance(excinfo.value, RuntimeError)  # port: no _native.DamacyError


# ---- device binding -----------------------------------------------------


def test_pipeline_exposes_bound_device(tiny_zarr):
    _ = tiny_zarr
    with Pipeline(_base_config()) as p:
        assert p.device == 0  # pytest fixture binds dev 0


@pytest.mark.usefixtures("cuda_ctx")  # port: device=0 is a CUDA device
def test_explicit_device_zero_succeeds(tiny_zarr):
    _ = tiny_zarr
    cfg = dataclasses.replace(_base_config(), device=0)
    with Pipeline(cfg) as p:
        assert p.device == 0


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_local_rank_disagreement_warns(tiny_zarr, monkeypatch):
    _ = tiny_zarr
    monkeypatch.setenv("LOCAL_RANK", "3")  # bound dev is 0; rank claims 3
    # Per-process dedup means a previous test could have absorbed the
    # warning for this (rank, bound) pair. Clear the cache so the
    # assertion is deterministic regardless of test order.
    damacy._warned_local_rank_pairs.clear()
    with pytest.warns(UserWarning, match="LOCAL_RANK=3"):
        Pipeline(_base_config()).close()


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_local_rank_warning_dedupes(tiny_zarr, monkeypatch):
    _ = tiny_zarr
    monkeypatch.setenv("LOCAL_RANK", "3")
    damacy._warned_local_rank_pairs.clear()
    with pytest.warns(UserWarning, match="LOCAL_RANK=3"):
        Pipeline(_base_config()).close()
    # Second construction with the same misconfiguration is silent.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Pipeline(_base_config()).close()
    assert not any("LOCAL_RANK" in str(w.message) for w in caught)


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_local_rank_match_is_quiet(tiny_zarr, monkeypatch, recwarn):
    _ = tiny_zarr
    monkeypatch.setenv("LOCAL_RANK", "0")
    Pipeline(_base_config()).close()
    # No UserWarning from our heuristic; other libs may warn — filter ours.
    ours = [w for w in recwarn.list if "LOCAL_RANK" in str(w.message)]
    assert ours == []


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_explicit_device_suppresses_local_rank_warning(tiny_zarr, monkeypatch, recwarn):
    _ = tiny_zarr
    monkeypatch.setenv("LOCAL_RANK", "3")
    cfg = dataclasses.replace(_base_config(), device=0)
    Pipeline(cfg).close()
    ours = [w for w in recwarn.list if "LOCAL_RANK" in str(w.message)]
    assert ours == []


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_local_rank_non_int_is_quiet(tiny_zarr, monkeypatch, recwarn):
    _ = tiny_zarr
    monkeypatch.setenv("LOCAL_RANK", "not-a-number")
    Pipeline(_base_config()).close()
    ours = [w for w in recwarn.list if "LOCAL_RANK" in str(w.message)]
    assert ours == []


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_multi_gpu_implicit_warns(tiny_zarr, monkeypatch):
    _ = tiny_zarr
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    # Force the multi-GPU branch even on single-GPU CI by faking the
    # device-count probe; the heuristic should fire on any (count > 1).
    monkeypatch.setattr(damacy._compat, "_cuda_device_count", lambda: 4)  # port
    damacy._warned_multi_gpu_pairs.clear()
    with pytest.warns(UserWarning, match=r"device 0 of 4"):
        Pipeline(_base_config()).close()


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_multi_gpu_warning_dedupes(tiny_zarr, monkeypatch):
    _ = tiny_zarr
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(damacy._compat, "_cuda_device_count", lambda: 4)  # port
    damacy._warned_multi_gpu_pairs.clear()
    with pytest.warns(UserWarning, match=r"device 0 of 4"):
        Pipeline(_base_config()).close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Pipeline(_base_config()).close()
    assert not any("of 4" in str(w.message) for w in caught)


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_multi_gpu_quiet_on_single_gpu(tiny_zarr, monkeypatch, recwarn):
    _ = tiny_zarr
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(damacy._compat, "_cuda_device_count", lambda: 1)  # port
    Pipeline(_base_config()).close()
    ours = [w for w in recwarn.list if "of 1" in str(w.message)]
    assert ours == []


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_multi_gpu_quiet_when_explicit_device(tiny_zarr, monkeypatch, recwarn):
    _ = tiny_zarr
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(damacy._compat, "_cuda_device_count", lambda: 4)  # port
    damacy._warned_multi_gpu_pairs.clear()
    cfg = dataclasses.replace(_base_config(), device=0)
    Pipeline(cfg).close()
    ours = [w for w in recwarn.list if "of 4" in str(w.message)]
    assert ours == []


@pytest.mark.usefixtures("cuda_ctx")  # port: the warnings are about CUDA devices
def test_multi_gpu_suppressed_when_local_rank_fires(tiny_zarr, monkeypatch):
    _ = tiny_zarr
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(damacy._compat, "_cuda_device_count", lambda: 4)  # port
    damacy._warned_local_rank_pairs.clear()
    damacy._warned_multi_gpu_pairs.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Pipeline(_base_config()).close()
    assert any("LOCAL_RANK=3" in str(w.message) for w in caught)
    assert not any("of 4" in str(w.message) for w in caught)


def _row_major(shape) -> list[int]:
    out, n = [], 1
    for x in reversed(shape):
        out.append(n)
        n *= x
    return out[::-1]
