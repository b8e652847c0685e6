"""The original nclack/damacy's `Config` fields, mapped onto this project's (dev/compat.md).

A `damacy.Config` is in *original mode* when it is given any field that only the original
has (`max_gpu_memory_bytes`, required there, is in every original program). In that mode
the fields are validated as the original did (ValueError/TypeError with its wording), read
back with the original's types (`cfg.dtype` a `Dtype`, `cfg.device` an int or None,
`cfg.pop_timeout_s` a float or None), and mapped to this project's native fields here.
This project's own fields may be given beside them (`decode`, `out_of_bounds`, ...).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass
from typing import Any

from .enums import Dtype, NumaStrategy

__all__ = ["LatencyModel", "NATIVE_CONSTANTS", "ORIGINAL_FIELDS", "ORIGINAL_ONLY", "is_original", "from_original"]

#: The original's limits and tuning defaults (its `_native` module constants, from
#: damacy_limits.h and damacy_tuning_defaults()).
NATIVE_CONSTANTS: dict[str, int] = {
    "DEFAULT_CHUNK_UNCOMPRESSED_BYTES": 2 * 1024 * 1024,
    "DEFAULT_READ_OP_MAX_BYTES": 4 * 1024 * 1024,
    "DEFAULT_HOST_BUFFER_WAVES": 4,
    "DEFAULT_MAX_CHUNKS_PER_WAVE": 512,
    "DEFAULT_MAX_SUBSTREAMS_PER_CHUNK": 32,
    "DEFAULT_METADATA_IO_CONCURRENCY": 64,
    "DEFAULT_IO_THREADS": 64,
    "DEFAULT_ARRAY_META_CACHE": 64,
    "DEFAULT_SHARD_INDEX_CACHE": 256,
    "DEFAULT_CHUNK_LAYOUT_CACHE": 64,
    "DEFAULT_MAX_SHARDS_PER_SAMPLE": 64,
    "MAX_CHUNK_BYTES": 2**32 - 1,
    "MAX_READ_OP_BYTES": 2**32 - 1,
    "N_WAVES": 2,
    "N_BATCH_SLOTS": 2,
    "MAX_HOST_BUFFER_WAVES": 8,
    "HARD_MAX_CHUNKS_PER_WAVE": 0xFFFF,
    "HARD_MAX_SUBSTREAMS_PER_CHUNK": 0xFFFF,
    "MAX_METADATA_IO_CONCURRENCY": 4096,
    "MAX_IO_THREADS": 1024,
}
_C = NATIVE_CONSTANTS

#: Original mode's device chunk store when `device_chunk_cache_bytes` is not given: at most
#: this (the native default, 1 GiB), and never more than a quarter of what
#: `max_gpu_memory_bytes` leaves after the output slots.
COMPAT_DEVICE_STORE_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """The original's synthetic metadata latency model (for benchmarks). Accepted and
    validated; this project does not inject latency (a Pipeline given a non-zero model warns;
    dev/compat.md)."""

    baseline_ns: int = 0
    lognormal_mu_ln_ns: float = 0.0
    lognormal_sigma_ln_ns: float = 0.0
    cap_ns: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.baseline_ns < 0:
            raise ValueError("baseline_ns must be >= 0")
        if not math.isfinite(self.lognormal_mu_ln_ns):
            raise ValueError("lognormal_mu_ln_ns must be finite")
        if not math.isfinite(self.lognormal_sigma_ln_ns):
            raise ValueError("lognormal_sigma_ln_ns must be finite")
        if self.lognormal_sigma_ln_ns < 0:
            raise ValueError("lognormal_sigma_ln_ns must be >= 0")
        if self.cap_ns < 0:
            raise ValueError("cap_ns must be >= 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")

    @property
    def active(self) -> bool:
        return bool(self.baseline_ns or self.lognormal_mu_ln_ns or self.lognormal_sigma_ln_ns or self.cap_ns)


_REQUIRED = ("samples_per_batch", "sample_shape", "max_gpu_memory_bytes")

#: The original's fields, in its order, with their defaults (None for lookahead_samples: two
#: batches; for metadata_latency: a zero LatencyModel).
ORIGINAL_DEFAULTS: dict[str, Any] = {
    "samples_per_batch": dataclasses.MISSING,
    "dtype": Dtype.F32,
    "lookahead_samples": None,
    "max_chunk_uncompressed_bytes": _C["DEFAULT_CHUNK_UNCOMPRESSED_BYTES"],
    "max_read_op_bytes": _C["DEFAULT_READ_OP_MAX_BYTES"],
    "max_gpu_memory_bytes": dataclasses.MISSING,
    "host_buffer_waves": _C["DEFAULT_HOST_BUFFER_WAVES"],
    "max_chunks_per_wave": _C["DEFAULT_MAX_CHUNKS_PER_WAVE"],
    "max_substreams_per_chunk": _C["DEFAULT_MAX_SUBSTREAMS_PER_CHUNK"],
    "n_io_threads": _C["DEFAULT_IO_THREADS"],
    "metadata_io_concurrency": _C["DEFAULT_METADATA_IO_CONCURRENCY"],
    "n_array_meta_cache": _C["DEFAULT_ARRAY_META_CACHE"],
    "n_shard_index_cache": _C["DEFAULT_SHARD_INDEX_CACHE"],
    "n_chunk_layout_cache": _C["DEFAULT_CHUNK_LAYOUT_CACHE"],
    "max_shards_per_sample": _C["DEFAULT_MAX_SHARDS_PER_SAMPLE"],
    "sample_shape": dataclasses.MISSING,
    "device": None,
    "pop_timeout_s": 30.0,
    "enable_gds": None,
    "numa_strategy": NumaStrategy.AUTO,
    "numa_node": -1,
    "metadata_latency": None,
}
ORIGINAL_FIELDS = tuple(ORIGINAL_DEFAULTS)

#: This project's native fields (pipeline::Config).
NATIVE_FIELDS = (
    "samples_per_batch", "sample_shape", "dtype", "device", "decode", "lookahead_samples", "n_io_threads",
    "n_array_meta_cache", "n_shard_index_cache", "n_chunk_layout_cache", "n_batch_buffers", "staging_bytes",
    "decoded_bytes", "max_read_op_bytes", "decoded_cache_bytes", "device_chunk_cache_bytes", "pop_timeout_s", "out_of_bounds", "arrays",
    "device_ahead", "storage_options",
)
ORIGINAL_ONLY = frozenset(ORIGINAL_FIELDS) - frozenset(NATIVE_FIELDS)
#: This project's fields that original mode takes beside the original's (they win over
#: what the mapping derives).
EXTRA_FIELDS = tuple(f for f in NATIVE_FIELDS if f not in ORIGINAL_DEFAULTS)


def is_original(fields: dict[str, Any]) -> bool:
    """Original mode: a field only the original has was given."""
    return any(k in ORIGINAL_ONLY for k in fields)


def _int(name: str, v: Any) -> int:
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int (got {v!r})")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an int (got {type(v).__name__} {v!r})") from None


def _range(name: str, v: int, lo: int, hi: int) -> None:
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}] (got {v})")


def validate_original(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The original fields (validated, coerced, defaults filled) and the extras (this
    project's fields given beside them). Raises as the original's Config.__init__ did."""
    unknown = [k for k in fields if k not in ORIGINAL_DEFAULTS and k not in EXTRA_FIELDS]
    if unknown:
        raise TypeError(f"Config.__init__() got an unexpected keyword argument {unknown[0]!r}")
    missing = [k for k in _REQUIRED if k not in fields]
    if missing:
        names = " and ".join(repr(m) for m in missing)
        raise TypeError(f"Config.__init__() missing {len(missing)} required keyword-only argument"
                        f"{'s' if len(missing) > 1 else ''}: {names}")
    o = {k: fields.get(k, d) for k, d in ORIGINAL_DEFAULTS.items()}
    extras = {k: fields[k] for k in EXTRA_FIELDS if k in fields}
    for k in ("samples_per_batch", "max_chunk_uncompressed_bytes", "max_read_op_bytes", "max_gpu_memory_bytes",
              "host_buffer_waves", "max_chunks_per_wave", "max_substreams_per_chunk", "n_io_threads",
              "metadata_io_concurrency", "n_array_meta_cache", "n_shard_index_cache", "n_chunk_layout_cache",
              "max_shards_per_sample", "numa_node"):
        o[k] = _int(k, o[k])
    spb = o["samples_per_batch"]
    if spb < 1:
        raise ValueError(f"samples_per_batch must be >= 1 (got {spb})")
    if o["lookahead_samples"] is None:
        o["lookahead_samples"] = 2 * spb
    o["lookahead_samples"] = _int("lookahead_samples", o["lookahead_samples"])
    if o["lookahead_samples"] < spb:
        raise ValueError(
            "lookahead_samples must cover at least one full batch "
            f"(got {o['lookahead_samples']}, samples_per_batch={spb})"
        )
    _range("n_io_threads", o["n_io_threads"], 1, _C["MAX_IO_THREADS"])
    if o["metadata_io_concurrency"] < 1:
        raise ValueError(f"metadata_io_concurrency must be >= 1 (got {o['metadata_io_concurrency']})")
    _range("max_chunk_uncompressed_bytes", o["max_chunk_uncompressed_bytes"], 1, _C["MAX_CHUNK_BYTES"])
    _range("max_read_op_bytes", o["max_read_op_bytes"], 1, _C["MAX_READ_OP_BYTES"])
    if o["max_gpu_memory_bytes"] < 1:
        raise ValueError(f"max_gpu_memory_bytes must be >= 1 (got {o['max_gpu_memory_bytes']})")
    _range("host_buffer_waves", o["host_buffer_waves"], _C["N_WAVES"], _C["MAX_HOST_BUFFER_WAVES"])
    _range("max_chunks_per_wave", o["max_chunks_per_wave"], 1, _C["HARD_MAX_CHUNKS_PER_WAVE"])
    _range("max_substreams_per_chunk", o["max_substreams_per_chunk"], 1, _C["HARD_MAX_SUBSTREAMS_PER_CHUNK"])
    # Cache floors, > 0 checks and max_shards_per_sample > 0 are checked when the Pipeline is
    # made (InvalidArgument), as the original's C validator did.
    t = o["pop_timeout_s"]
    if t is not None:
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"pop_timeout_s must be a number or None (got {t!r})")
        if not t > 0 or not math.isfinite(t):
            raise ValueError(f"pop_timeout_s must be > 0 or None (got {t})")
        o["pop_timeout_s"] = float(t)
    ns = NumaStrategy.coerce(o["numa_strategy"])
    if ns is NumaStrategy.PIN_TO:
        if o["numa_node"] < 0:
            raise ValueError(f"numa_node must be >= 0 when numa_strategy=PIN_TO (got {o['numa_node']})")
    elif o["numa_node"] != -1:
        raise ValueError(f"numa_node must be -1 when numa_strategy={ns.name} (got {o['numa_node']})")
    o["numa_strategy"] = ns
    ml = o["metadata_latency"]
    if ml is not None and not isinstance(ml, LatencyModel):
        raise TypeError("metadata_latency must be a LatencyModel or None")
    o["metadata_latency"] = ml or LatencyModel()
    shape = tuple(_int("sample_shape", x) for x in o["sample_shape"])
    if not shape:
        raise ValueError("sample_shape must be non-empty")
    if any(d <= 0 for d in shape):
        raise ValueError(f"sample_shape entries must be > 0 (got {shape})")
    o["sample_shape"] = shape
    o["dtype"] = _dtype(o["dtype"])
    o["enable_gds"] = None if o["enable_gds"] is None else bool(o["enable_gds"])
    d = o["device"]
    if d is not None and not isinstance(d, str) and type(d).__name__ != "device":
        d = _int("device", d)
        if d < 0:
            raise ValueError(f"device must be >= 0 or None (got {d})")
    o["device"] = d
    return o, extras


def _dtype(value: Any) -> Dtype | str:
    """A Dtype for the original's f32/bf16; this project's integer outputs stay strings."""
    try:
        return Dtype.coerce(value)
    except ValueError:
        if isinstance(value, str) and value in ("u8", "i32", "i64"):
            return value
        from .config import dtype_name, is_dtype

        if is_dtype(value):
            name = dtype_name(value)
            return Dtype.coerce(name) if name in ("f32", "bf16") else name
        raise


def native_device(device: Any) -> str:
    """The original's device (None: the current CUDA device) as this project's device."""
    if device is None:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, str):
        return device
    if type(device).__name__ == "device":  # torch.device
        return device.type if device.index is None else f"{device.type}:{device.index}"
    return f"cuda:{device}"


#: Bytes per element of each output dtype.
ITEMSIZE = {"f32": 4, "bf16": 2, "u8": 1, "i32": 4, "i64": 8}


def native_dtype(dtype: Dtype | str) -> str:
    return dtype.native if isinstance(dtype, Dtype) else dtype


def batch_bytes(o: dict[str, Any]) -> int:
    return o["samples_per_batch"] * math.prod(o["sample_shape"]) * ITEMSIZE[native_dtype(o["dtype"])]


def from_original(o: dict[str, Any], extras: dict[str, Any], native_defaults: dict[str, Any]) -> dict[str, Any]:
    """This project's native fields for validated original fields `o` (dev/compat.md)."""
    n: dict[str, Any] = {
        "samples_per_batch": o["samples_per_batch"],
        "sample_shape": list(o["sample_shape"]),
        "dtype": native_dtype(o["dtype"]),
        "device": native_device(o["device"]),
        "lookahead_samples": o["lookahead_samples"],
        # 0 passes here: Pipeline() refuses it, as the original's create did.
        "n_array_meta_cache": max(1, o["n_array_meta_cache"]),
        "n_shard_index_cache": max(1, o["n_shard_index_cache"]),
        # n_chunk_layout_cache is not mapped: the original's entries are per array, ours per
        # stored chunk (the original's 64 would refuse batches its own pipeline read).
        "max_read_op_bytes": o["max_read_op_bytes"],
        # The original's two output slots: holding both makes the next pop PoolStarved.
        "n_batch_buffers": _C["N_BATCH_SLOTS"],
        "device_ahead": 1,
    }
    # The original's default thread count (64, tuned for NFS) means "the library's choice":
    # this project's default (the CPUs available, clamped to 2..32) does decode too.
    if o["n_io_threads"] != _C["DEFAULT_IO_THREADS"]:
        n["n_io_threads"] = o["n_io_threads"]
    if o["pop_timeout_s"] is not None:
        n["pop_timeout_s"] = o["pop_timeout_s"]
    # max_gpu_memory_bytes: what is left after the output slots (two held, one being
    # assembled) bounds the per-batch device staging and decoded buffers of the GPU decode
    # path (both allocated once per batch in flight; device_ahead = 1). Pipeline() raises
    # BudgetExceeded when the slots alone do not fit.
    # The device chunk store's pool comes first: device_chunk_cache_bytes when given, else a
    # quarter of what the slots leave, at most COMPAT_DEVICE_STORE_BYTES (the original had no
    # store, so its budget must hold this one too; 0 below 1 MiB: a pool that small holds
    # hardly a chunk).
    left = o["max_gpu_memory_bytes"] - (_C["N_BATCH_SLOTS"] + 1) * batch_bytes(o)
    store = extras.get("device_chunk_cache_bytes")
    if store is None:
        store = min(COMPAT_DEVICE_STORE_BYTES, max(0, left) // 4)
        store = n["device_chunk_cache_bytes"] = store if store >= 1 << 20 else 0
    left -= store
    if left > 0:
        n["staging_bytes"] = max(1, min(native_defaults["staging_bytes"], left // 4))
        n["decoded_bytes"] = max(1, min(native_defaults["decoded_bytes"], left - n["staging_bytes"]))
    n.update(extras)
    return n
