"""The rest of the original nclack/damacy's Python surface (dev/compat.md): `Batch` (what
`Pipeline.pop` returns: a torch.Tensor that is also the original's batch handle),
`BatchInfo`, `Metric`, the original's `Stats` fields, log helpers, and what an original-mode
Pipeline checks (cache floors, the device-memory budget, max_shards_per_sample,
max_chunk_uncompressed_bytes).
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from . import _compat_config as cc
from .enums import Dtype
from . import _log
from .errors import BudgetExceeded, InvalidArgument

__all__ = [
    "Batch", "BatchInfo", "Metric", "LOG_TRACE", "LOG_DEBUG", "LOG_INFO", "LOG_WARN", "LOG_ERROR", "LOG_FATAL",
    "set_log_level", "set_log_quiet", "max_concurrency",
]

# ---- log helpers ---------------------------------------------------------------------------

LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL = range(6)
_log_state = {"level": LOG_INFO, "quiet": False}


def _level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or not LOG_TRACE <= level <= LOG_FATAL:
        raise ValueError(f"log level must be an int in [{LOG_TRACE}, {LOG_FATAL}] (got {level!r})")
    return level


def set_log_level(level: int) -> None:
    """The original's threshold for its C-side stderr sink (LOG_TRACE=0 .. LOG_FATAL=5).
    This project's messages, native ones included, all go through the ``damacy`` Python
    logger (it has no stderr sink of its own), so this sets that logger's level and the native
    library's (TRACE and DEBUG: DEBUG); damacy's own levels and names are taken too."""
    if isinstance(level, int) and not isinstance(level, bool):
        _log_state["level"] = _level(level) if level < 10 else level
    _log.set_log_level(level)


def set_log_quiet(quiet: bool) -> None:
    """The original's switch for its C-side stderr sink. This project has no stderr sink
    (messages go to the ``damacy`` logger, which keeps its handlers), so this records the
    setting and does nothing else."""
    _log_state["quiet"] = bool(quiet)


def max_concurrency() -> int:
    """Host concurrency cap used by default thread counts: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ---- value types ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """Snapshot of a batch's geometry (the original's): `device_ptr` (the data pointer),
    `shape`, `dtype` (a Dtype; this project's integer outputs: their name), `ready_stream` (the
    CUDA stream the batch was made on, as an int; 0 for a CPU batch), `batch_id` (pop order)."""

    device_ptr: int
    shape: tuple[int, ...]
    dtype: Dtype | str
    ready_stream: int
    batch_id: int


@dataclass(frozen=True, slots=True)
class Metric:
    """One pipeline stage (the original's): ``ms`` cumulative; ``best_ms`` the best single
    observation where known (this project keeps totals only: the mean per count, or a large
    sentinel when nothing was observed); bytes in and out; ``count`` observations."""

    name: str
    ms: float
    best_ms: float
    input_bytes: float
    output_bytes: float
    count: int


_NO_SAMPLE_MS = 1e30

#: The original's Stats fields, in its order.
STATS_FIELDS = (
    "plan", "io", "input_transfer", "decode", "post_decode", "decode_gap", "assemble", "bind_wait", "pop_wait",
    "array_meta_hits", "array_meta_misses", "shard_index_hits", "shard_index_misses", "chunk_layout_hits",
    "chunk_layout_misses", "metadata_latency_ops", "metadata_latency_stat_ops", "metadata_latency_submit_ops",
    "metadata_latency_active", "metadata_latency_max_active", "metadata_latency_total_sleep_ns",
    "metadata_latency_max_sleep_ns", "metadata_backend_read_jobs", "metadata_backend_read_active",
    "metadata_backend_read_max_active", "batches_emitted", "waves_emitted", "chunks_planned", "chunks_to_load",
    "chunks_dispatched", "reads_issued", "worker_steps", "gpu_bytes_committed",
)


def _metric(name: str, seconds: float, count: int, input_bytes: float = 0.0, output_bytes: float = 0.0) -> Metric:
    ms = float(seconds) * 1e3
    best = ms / count if count else _NO_SAMPLE_MS
    return Metric(name, ms, best, float(input_bytes), float(output_bytes), int(count))


def original_stats(d: dict[str, Any], *, pop_wait_s: float, pops: int, committed: int) -> dict[str, Any]:
    """The original's Stats fields from this project's stats `d` (dev/compat.md says which
    are counted and which are 0 because nothing here corresponds)."""
    batches = int(d.get("batches", 0))
    n_failed = int(d.get("batches_failed", 0))
    staged = d.get("staged_bytes", 0)
    caches = {k: d.get(k, {}) for k in ("array_meta", "shard_index", "chunk_layout")}
    reads = sum(int(c.get("misses", 0)) for c in caches.values())
    chunks_decoded = int(d.get("chunks_decoded", 0))
    chunks_filled = int(d.get("chunks_filled", 0))
    from_cache = int(d.get("chunks_from_cache", 0))
    out = {
        "plan": _metric("plan", d.get("time_plan_s", 0.0), batches + n_failed),
        "io": _metric("io", d.get("time_io_s", 0.0), int(d.get("read_ops", 0)), d.get("bytes_read", 0), staged),
        "input_transfer": _metric("input_transfer", 0.0, 0),
        "decode": _metric("decode", d.get("time_decode_s", 0.0), chunks_decoded, staged),
        "post_decode": _metric("post_decode", 0.0, 0),
        "decode_gap": _metric("decode_gap", 0.0, 0),
        "assemble": _metric("assemble", d.get("time_assemble_s", 0.0), batches),
        "bind_wait": _metric("bind_wait", 0.0, 0),
        "pop_wait": _metric("pop_wait", pop_wait_s, pops),
        "metadata_latency_ops": 0,
        "metadata_latency_stat_ops": 0,
        "metadata_latency_submit_ops": 0,
        "metadata_latency_active": 0,
        "metadata_latency_max_active": 0,
        "metadata_latency_total_sleep_ns": 0,
        "metadata_latency_max_sleep_ns": 0,
        # Metadata reads: one per cache miss (array metadata, shard index, blosc layout).
        # This project does not count them in flight: max_active is 1 once any ran (a lower
        # bound), active 0 between calls.
        "metadata_backend_read_jobs": reads,
        "metadata_backend_read_active": 0,
        "metadata_backend_read_max_active": 1 if reads else 0,
        "batches_emitted": batches,
        "waves_emitted": batches + n_failed,  # no waves here: one plan per batch
        "chunks_planned": chunks_decoded + chunks_filled + from_cache,
        "chunks_to_load": chunks_decoded,
        "chunks_dispatched": chunks_decoded,
        "reads_issued": int(d.get("read_ops", 0)),
        "worker_steps": 0,
        "gpu_bytes_committed": committed,
    }
    for name, c in caches.items():
        out[f"{name}_hits"] = int(c.get("hits", 0))
        out[f"{name}_misses"] = int(c.get("misses", 0))
    return {k: out[k] for k in STATS_FIELDS}


#: Stats fields that are live state, not cumulative: stats_reset leaves them.
LIVE_STATS = frozenset({"buffers_allocated", "buffers_held_by_caller", "batch_latency_p50_ms", "batch_latency_p99_ms",
                        "chunk_reuse", "array_meta", "shard_index", "chunk_layout", "decoded_cache"})


def subtract(now: Any, base: Any, key: str = "") -> Any:
    """`now` minus the baseline `base`, counter by counter (stats_reset)."""
    if key in LIVE_STATS:
        return now
    if isinstance(now, dict):
        return {k: subtract(v, base.get(k, 0) if isinstance(base, dict) else 0, k) for k, v in now.items()}
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        return now
    if not isinstance(base, (int, float)):
        return now
    return type(now)(now - base) if now >= base else now


# ---- Batch ---------------------------------------------------------------------------------


def coerce_cuda_event_handle(event: object) -> int | None:
    """The original's `_coerce_cuda_event_handle`: None, an int CUevent handle, a
    torch.cuda Event (its ``cuda_event``) or Stream (``record_event()``), a cupy Event (its
    ``ptr``) or Stream (``record()``). TypeError otherwise."""
    if event is None:
        return None
    if isinstance(event, int) and not isinstance(event, bool):
        return event
    if hasattr(event, "record_event"):
        return coerce_cuda_event_handle(event.record_event())  # type: ignore[attr-defined]
    # Events before the `.record()` of streams: torch and cupy events have a `record` method
    # too, and calling it would re-record the caller's event (the original's order did).
    handle = getattr(event, "cuda_event", None)
    if handle is not None:
        return int(handle)
    ptr = getattr(event, "ptr", None)
    if isinstance(ptr, int) and "Event" in type(event).__name__:
        return ptr
    if hasattr(event, "record") and callable(event.record):  # type: ignore[attr-defined]
        return coerce_cuda_event_handle(event.record())  # type: ignore[attr-defined]
    if isinstance(ptr, int):
        return ptr
    raise TypeError(
        f"event must be a CUevent handle (int), a torch.cuda or cupy.cuda Event/Stream; got {type(event).__name__}"
    )


_libcuda: Any = None


def _stream_wait_event(stream_handle: int, event_handle: int) -> None:
    """cuStreamWaitEvent(stream, event): the driver API, as the original called it."""
    global _libcuda
    if _libcuda is None:
        _libcuda = ctypes.CDLL("libcuda.so.1")
        _libcuda.cuStreamWaitEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        _libcuda.cuStreamWaitEvent.restype = ctypes.c_int
    rc = _libcuda.cuStreamWaitEvent(ctypes.c_void_p(stream_handle), ctypes.c_void_p(event_handle), 0)
    if rc != 0:
        from .errors import CudaError

        raise CudaError(f"release(event=...): cuStreamWaitEvent failed with CUresult {rc}")


def _check_max_version(max_version: Any) -> None:
    if max_version is None:
        return
    if not isinstance(max_version, (tuple, list)) or len(max_version) != 2:
        raise TypeError(f"max_version must be None or a 2-element (major, minor) sequence (got {max_version!r})")
    for v in max_version:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"max_version entries must be ints (got {max_version!r})")
        if v < 0:
            raise ValueError(f"max_version entries must be >= 0 (got {max_version!r})")


_RELEASED = "damacy: batch has been released"


class _DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _DLManagedTensorVersionedHead(ctypes.Structure):
    _fields_ = [("version", _DLPackVersion), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p),
                ("flags", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _cap_minor(capsule: Any, max_version: tuple[int, int]) -> None:
    """A versioned capsule claims at most the minor version the consumer asked for (torch
    writes its own, 1.3 in torch 2.11): every 1.x has the same layout, and only flags
    defined in 1.0 (READ_ONLY, IS_COPIED) may be set for that."""
    head = ctypes.cast(_capsule_pointer(capsule, b"dltensor_versioned"),
                       ctypes.POINTER(_DLManagedTensorVersionedHead)).contents
    if head.version.major == max_version[0] == 1 and head.version.minor > max_version[1] and not head.flags & ~0b11:
        head.version.minor = max_version[1]


class Batch(torch.Tensor):
    """A popped batch: a ``torch.Tensor`` ``[samples_per_batch, *sample_shape]`` (use it as
    one: indexing, arithmetic, ``.to()``, ``.clone()`` all give plain tensors), and the
    original damacy's batch handle: ``info`` (a `BatchInfo`), ``release(event=...)``, a
    context manager releasing on exit, ``__dlpack__`` with the original's semantics.

    ``release()`` drops this object's reference to the output buffer (it becomes an empty
    tensor; ``info`` and ``__dlpack__`` raise): the buffer returns to the pool once no other
    tensor views it, so a tensor made by ``torch.from_dlpack(batch)`` stays valid (the
    original reused the slot at once). With ``event``, reuse first waits on that CUDA event
    or stream on the device (no host sync). Dropping the Batch without releasing is the same
    as releasing it.
    """

    # Operations on a Batch give plain tensors (no subclass propagation, no overhead).
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def wrap(tensor: torch.Tensor, batch_id: int) -> Batch:
        # A new TensorImpl on the same storage, not a view (as_subclass would keep `tensor` as
        # its _base, and release() could not let go of the memory).
        # Not released and (a CPU batch) stream 0 are what the readers' getattr defaults say;
        # only what differs from them is set (one attribute per CPU pop).
        b = torch.Tensor._make_subclass(Batch, tensor)
        b._damacy_batch_id = batch_id
        if tensor.is_cuda:
            b._damacy_stream = torch.cuda.current_stream(tensor.device).cuda_stream
        return b

    def _check_live(self) -> None:
        if getattr(self, "_damacy_released", False):
            raise RuntimeError(_RELEASED)

    @property
    def info(self) -> BatchInfo:
        """Snapshot of the batch geometry. Raises after release."""
        self._check_live()
        name = {torch.float32: "f32", torch.bfloat16: "bf16"}.get(self.dtype)
        dtype: Dtype | str = Dtype.coerce(name) if name else str(self.dtype).removeprefix("torch.")
        return BatchInfo(
            device_ptr=int(self.data_ptr()),
            shape=tuple(self.shape),
            dtype=dtype,
            ready_stream=int(getattr(self, "_damacy_stream", 0)),
            batch_id=int(getattr(self, "_damacy_batch_id", -1)),
        )

    @property
    def released(self) -> bool:
        return bool(getattr(self, "_damacy_released", False))

    def release(self, *, event: object | None = None) -> None:
        """Give the buffer back (idempotent). ``event``: a CUDA event or stream (torch or
        cupy) or a raw CUevent handle; reuse of the buffer waits on it on the device."""
        handle = coerce_cuda_event_handle(event)
        if self.released:
            return
        if self.is_cuda:
            if isinstance(event, torch.cuda.Stream):
                # The caching allocator reuses the memory only after the stream's queued work.
                torch.Tensor.record_stream(self, event)
            elif isinstance(event, torch.cuda.Event):
                # Later work on the stream the batch was made on (where torch's allocator
                # reuses its memory) waits for the event.
                self._producer().wait_event(event)
            elif handle is not None:
                _stream_wait_event(self._producer().cuda_stream, handle)
        self._damacy_released = True
        with torch.no_grad():
            torch.Tensor.set_(self)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __dlpack__(self, *, stream: Any = None, max_version: tuple[int, int] | None = None,
                   dl_device: Any = None, copy: bool | None = None) -> Any:
        """A DLPack capsule: v0 ``"dltensor"`` by default, v1 ``"dltensor_versioned"`` when
        ``max_version >= (1, 0)``. ``stream``: the consumer's stream (an int handle) waits
        for the stream the batch was made on (None, 0, 1, 2: the default stream; -1: no
        synchronisation). ``copy=True``
        raises BufferError; ``dl_device`` is ignored (the batch stays where it is)."""
        del dl_device
        self._check_live()
        if copy:
            raise BufferError("damacy: copy=True not supported (a batch is exported where it is, never copied)")
        _check_max_version(max_version)
        if self.is_cuda and stream != -1:
            self._sync_consumer(stream)
        # Exported from an alias (its own TensorImpl on the same storage): release() empties
        # this tensor, and the capsule must keep the memory it points at. Synchronised above
        # (torch's exporter would take the stream current now as the producer's).
        alias = torch.Tensor.detach(self)
        capsule = torch.Tensor.__dlpack__(alias, stream=None if not self.is_cuda else -1, max_version=max_version,
                                          copy=copy)
        if max_version is not None and max_version[0] >= 1:
            _cap_minor(capsule, max_version)
        return capsule

    def _producer(self) -> torch.cuda.Stream:
        """The CUDA stream the batch was made on (torch's current stream at pop)."""
        made_on = int(getattr(self, "_damacy_stream", 0))
        if made_on:
            return torch.cuda.ExternalStream(made_on, device=self.device)
        return torch.cuda.default_stream(self.device)

    def _sync_consumer(self, stream: Any) -> None:
        """The consumer's stream waits for the stream the batch was made on (`ready_stream`)."""
        if stream is not None and (isinstance(stream, bool) or not isinstance(stream, int)):
            raise TypeError(f"stream must be an int or None (got {type(stream).__name__})")
        dev = self.device
        producer = self._producer()
        if stream in (None, 0, 1, 2):  # the legacy / per-thread default streams
            consumer = torch.cuda.default_stream(dev)
        else:
            consumer = torch.cuda.ExternalStream(stream, device=dev)
        if consumer.cuda_stream != producer.cuda_stream:
            event = torch.cuda.Event()
            event.record(producer)
            consumer.wait_event(event)

    def __dlpack_device__(self) -> tuple[int, int]:
        self._check_live()
        return torch.Tensor.__dlpack_device__(self)

    def __repr__(self, **_: Any) -> str:  # type: ignore[override]
        if self.released:
            return "Batch(<released>)"
        i = self.info
        dtype = i.dtype.name if isinstance(i.dtype, Dtype) else i.dtype
        return f"Batch(batch_id={i.batch_id}, shape={i.shape}, dtype={dtype}, device={self.device})"

    def __str__(self) -> str:
        if self.released:
            return "Batch(<released>)"
        return str(self.as_subclass(torch.Tensor))

    def __reduce_ex__(self, proto: int) -> Any:
        # Pickles (torch.save, multiprocessing) as the plain tensor it holds.
        return self.as_subclass(torch.Tensor).__reduce_ex__(proto)

    def __deepcopy__(self, memo: dict) -> torch.Tensor:
        return self.as_subclass(torch.Tensor).clone()


def _register_forking_pickler() -> None:
    # DataLoader workers send tensors through shared memory (torch.multiprocessing's reducer,
    # which is looked up by exact type): a Batch goes the same way, as its plain tensor.
    try:
        from multiprocessing.reduction import ForkingPickler

        from torch.multiprocessing.reductions import reduce_tensor
    except ImportError:  # pragma: no cover
        return
    ForkingPickler.register(Batch, lambda b: reduce_tensor(b.as_subclass(torch.Tensor)))


_register_forking_pickler()


# ---- what an original-mode Pipeline checks --------------------------------------------------


def check_original(cfg: Any) -> None:
    """The checks the original's C validator made at create (InvalidArgument, its wording),
    enable_gds, and the device-memory budget (BudgetExceeded)."""
    o = cfg._orig[0]
    for k in ("n_array_meta_cache", "n_shard_index_cache", "n_chunk_layout_cache", "max_shards_per_sample"):
        if o[k] <= 0:
            raise InvalidArgument(f"{k}={o[k]} must be > 0")
    la, spb = o["lookahead_samples"], o["samples_per_batch"]
    floor = la + 2 * spb
    for k in ("n_array_meta_cache", "n_chunk_layout_cache"):
        if o[k] < floor:
            raise InvalidArgument(
                f"{k}={o[k]} is too small: requires >= lookahead_samples({la}) + 2*samples_per_batch({spb}) = "
                f"{floor}. Raise {k} to >= {floor}."
            )
    shard_floor = floor * o["max_shards_per_sample"]
    if o["n_shard_index_cache"] < shard_floor:
        raise InvalidArgument(
            f"n_shard_index_cache={o['n_shard_index_cache']} is too small: requires >= (lookahead_samples({la}) + "
            f"2*samples_per_batch({spb})) * max_shards_per_sample({o['max_shards_per_sample']}) = {shard_floor}. "
            f"Raise n_shard_index_cache to >= {shard_floor}, or lower lookahead_samples / samples_per_batch / "
            "max_shards_per_sample."
        )
    if o["enable_gds"] is True:
        raise InvalidArgument(
            "enable_gds=True: GPUDirect Storage is not available in this build of damacy (compressed bytes are "
            "staged through pinned host memory); pass enable_gds=None or False"
        )
    budget = o["max_gpu_memory_bytes"]
    need = budget_floor(cfg)
    if need > budget:
        raise BudgetExceeded(
            f"max_gpu_memory_bytes={budget} is too small for the batch geometry: the {cc.NATIVE_CONSTANTS['N_BATCH_SLOTS']} "
            f"output slots plus the batch being assembled need {need} bytes "
            f"({cc.batch_bytes(o)} bytes per batch of {spb} x {o['sample_shape']}); raise max_gpu_memory_bytes to >= {need}"
        )


def budget_floor(cfg: Any) -> int:
    """Bytes the output slots (two held, one being assembled) need."""
    return (cc.NATIVE_CONSTANTS["N_BATCH_SLOTS"] + 1) * cc.batch_bytes(cfg._orig[0])


def committed_bytes(cfg: Any, launched: bool) -> int:
    """Device bytes committed against max_gpu_memory_bytes (a reservation, as the original's
    create-time resolver made): the two output slots from the start, plus, on the GPU decode
    path once a batch was launched, the batch being assembled and its device staging and
    decoded buffers. Never above the budget: Pipeline() checked the slots fit, the config
    derived staging and decoded from what was left, and pop() refuses a third unreleased
    batch (PoolStarved)."""
    o = cfg._orig[0]
    slots = cc.NATIVE_CONSTANTS["N_BATCH_SLOTS"] * cc.batch_bytes(o)
    if not launched:
        return slots
    store = cfg.device_chunk_cache_bytes or 0  # the device chunk store's pool (always set in original mode)
    return min(o["max_gpu_memory_bytes"], slots + cfg.device_ahead * cc.batch_bytes(o) + cfg.staging_bytes + cfg.decoded_bytes + store)


def warn_original(cfg: Any) -> None:
    o = cfg._orig[0]
    if o["metadata_latency"].active:
        warnings.warn("damacy: Config.metadata_latency is accepted but not applied (this damacy injects no "
                      "synthetic metadata latency; dev/compat.md)", stacklevel=3)


def _cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


_warned_local_rank_pairs: set[tuple[int, int]] = set()
_warned_multi_gpu_pairs: set[tuple[int, int]] = set()
_warned_lock = threading.Lock()


def _warn_once(seen: set, key: tuple[int, int], message: str) -> None:
    """`message` as a UserWarning the first time `key` is added to `seen` (per process),
    pointing at the caller of Pipeline() (as the original's warnings do)."""
    with _warned_lock:
        fresh = key not in seen
        seen.add(key)
    if fresh:
        warnings.warn(message, stacklevel=5)


def warn_device_binding(cfg_device: Any, bound: int) -> None:
    """The original's two warnings for Config(device=None): LOCAL_RANK disagreeing with the
    bound device, else a multi-GPU host with no explicit device. Each once per process."""
    if cfg_device is not None:
        return
    raw = os.environ.get("LOCAL_RANK")
    if raw is not None:
        try:
            local_rank = int(raw)
        except ValueError:
            local_rank = None
        if local_rank is not None and local_rank != bound:
            _warn_once(_warned_local_rank_pairs, (local_rank, bound),
                       f"damacy.Pipeline bound to CUDA device {bound} but LOCAL_RANK={local_rank}. "
                       f"Did you forget torch.cuda.set_device({local_rank}) before constructing "
                       f"the pipeline, or pass Config(device={local_rank}) to bind explicitly?")
            return
    count = _cuda_device_count()
    if count <= 1:
        return
    _warn_once(_warned_multi_gpu_pairs, (count, bound),
               f"damacy.Pipeline bound to CUDA device {bound} of {count}, but you didn't say which device to use. "
               "Pass `Config(device=...)` to pick one, or call `torch.cuda.set_device(...)` before constructing "
               "the Pipeline.")


class SampleLimits:
    """The original's per-sample limits, checked as samples are pulled (so the error is
    raised by the pop that needs the sample): more shards than ``max_shards_per_sample``
    (InvalidArgument), an inner chunk over ``max_chunk_uncompressed_bytes`` (BudgetExceeded).
    Array metadata comes from ``damacy.array_info`` (kept for the last
    ``n_array_meta_cache`` arrays); a missing array passes here and fails in the pipeline
    (NotFound). Unsharded arrays (the original read sharded ones only) are not shard-counted."""

    def __init__(self, cfg: Any) -> None:
        o = cfg._orig[0]
        self.max_shards = o["max_shards_per_sample"]
        self.max_chunk = o["max_chunk_uncompressed_bytes"]
        self.cap = max(1, o["n_array_meta_cache"])
        self.arrays: OrderedDict[str, tuple | None] = OrderedDict()

    def _geometry(self, uri: str) -> tuple | None:
        if uri in self.arrays:
            self.arrays.move_to_end(uri)
            return self.arrays[uri]
        from . import array_info
        from .errors import DamacyError

        try:
            info = array_info(uri, usage=False)
        except DamacyError:
            geo = None  # the pipeline reports it, as it would without these checks
        else:
            itemsize = _ITEMSIZE.get(str(info.get("data_type")), 0)
            geo = (tuple(info.get("chunk_shape") or ()), tuple(info.get("shard_shape") or ()), itemsize)
        self.arrays[uri] = geo
        if len(self.arrays) > self.cap:
            self.arrays.popitem(last=False)
        return geo

    def check(self, sample: Any) -> Any:
        geo = self._geometry(sample.uri)
        if geo is None:
            return sample
        chunk, shard, itemsize = geo
        if chunk and itemsize:
            nbytes = math.prod(chunk) * itemsize
            if nbytes > self.max_chunk:
                raise BudgetExceeded(
                    f"{sample.uri}: inner chunk {list(chunk)} is {nbytes} bytes uncompressed, over "
                    f"max_chunk_uncompressed_bytes={self.max_chunk}; raise max_chunk_uncompressed_bytes"
                )
        if shard and len(shard) == len(sample.aabb):
            n = math.prod((stop - 1) // s - start // s + 1 for (start, stop), s in zip(sample.aabb, shard))
            if n > self.max_shards:
                raise InvalidArgument(
                    f"{sample.uri}: sample {list(sample.aabb)} intersects {n} shards, over "
                    f"max_shards_per_sample={self.max_shards}; raise max_shards_per_sample (and n_shard_index_cache)"
                )
        return sample


_ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2, "int32": 4,
             "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8, "complex64": 8, "complex128": 16}
