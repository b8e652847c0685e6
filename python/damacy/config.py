"""damacy.Config: a pipeline configuration, validated by the native library at construction.

The field list and the defaults are the native library's (Rust's `pipeline::Config`, a serde
struct; `torch.ops.damacy.config_defaults()`): `Config`'s signature is built from them at
import, so `help(damacy.Config)` and `inspect.signature` show every field with its default.
`_FIELDS` adds what Python needs beyond JSON: the type hint and a docstring with units; the
tests check it names exactly the native fields. `config.pyi` (static type checkers) is
generated from both by `dev/gen_config_stub.py`, and a test checks it is up to date.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import operator
import os
import sys
from collections.abc import Mapping
from typing import Any

from . import _ops
from .errors import InvalidArgument

__all__ = ["Config", "DTYPES"]

#: Per native field: (type hint, doc with units). Order: the native field order.
_FIELDS: dict[str, tuple[str, str]] = {
    "samples_per_batch": ("int", "samples per batch: the batch tensor's first dimension (>= 1)"),
    "sample_shape": ("Sequence[int]", "the extent of every sample, voxels per dimension; each sample's box must have exactly this extent"),
    "dtype": ("DtypeLike", 'output dtype: "f32", "bf16", or for labels "u8", "i32", "i64" (integer casts: docs/data.md); '
              "torch.float32/bfloat16/uint8/int32/int64 and the numpy dtypes of those names are accepted too"),
    "device": ("DeviceLike", 'where output tensors live: "cpu" or "cuda:N" (a torch.device is accepted)'),
    "decode": ('Literal["auto", "gpu", "cpu"]', 'where chunks are decoded: "auto" (the GPU when the device is CUDA, '
               'nvCOMP is found and the output is a float; else the CPU), "gpu" (an error when it cannot be) or "cpu"'),
    "lookahead_samples": ("int | None", "samples that may be pushed ahead of the next pop (the prefetch window; >= samples_per_batch); None: derived, 8 batches clamped to 64..1024 samples (at least one batch)"),
    "n_io_threads": ("int", "worker threads for metadata, reads, decode and assembly (default: the CPUs available, clamped to 2..32; at most 1024)"),
    "n_remote_io_threads": ("int", "worker threads added once, at the first object store sample (s3/gs/az/http): a remote read holds its thread for a round trip, so threads bound the requests in flight (default 32; 0 to 1024; 0: none)"),
    "n_array_meta_cache": ("int", "capacity of the array metadata cache, in entries (arrays; 1 to 2**24)"),
    "n_shard_index_cache": ("int", "capacity of the shard index cache, in entries (shard files; 1 to 2**24; sizing: docs/tuning.md)"),
    "n_chunk_layout_cache": ("int", "capacity of the blosc chunk layout cache, in entries (stored chunks; GPU path; at most 2**24); 0 turns layouts off"),
    "n_batch_buffers": ("int", "output buffers: batches in flight plus batches held by the caller"),
    "staging_bytes": ("int", "budget for the compressed bytes read for one batch, in bytes"),
    "decoded_bytes": ("int", "budget for the decoded chunk bytes held for one batch, in bytes (both paths)"),
    "max_read_op_bytes": ("int", "largest read after coalescing adjacent byte ranges of one file, in bytes"),
    "decoded_cache_bytes": ("int | None", "decoded chunks kept across batches on the CPU path, in bytes; None: chunks shared across the look-ahead window (at most 1 GiB, dropped once the window moved past them); 0: off; N: an LRU of N bytes (pays off when crops revisit chunks)"),
    "device_chunk_cache_bytes": ("int | None", "GPU path: decoded chunks kept in one device memory pool of this many bytes across the batches of the "
                                 "look-ahead window, so a chunk several batches read is decoded once (counted in the GPU memory used); "
                                 "None: the default, 1 GiB (allocated only once a chunk is kept); 0: off"),
    "recheck_cached_data": ('bool | float | Literal["open"]', "when a decoded-cache hit checks that its shard was not rewritten, and cached array metadata that its zarr.json was not: True (every batch; "
                            "one HEAD per shard per batch on object stores), False or \"open\" (never: served until evicted), or seconds "
                            "(default 1.0: on object stores, once that long has passed since the shard's generation was last confirmed; local files every batch; docs/remote.md)"),
    "pop_timeout_s": ("float", "default pop() timeout, in seconds (> 0)"),
    "out_of_bounds": ('Literal["error", "fill"]', 'a box reaching outside its array: "error" fails its batch (InvalidArgument '
                      'naming the shape), "fill" reads the outside as the fill value'),
    "arrays": ("Sequence[str | os.PathLike[str]]", "array uris the pipeline will read (optional): their metadata is loaded and the "
               "cache sizes are checked against their geometry when the Pipeline is made (docs/tuning.md)"),
    "device_ahead": ("int", "device path: batches kept launched on the GPU ahead of the one returned (1 to 8); each costs one batch of device memory"),
    "storage_options": ("Mapping[str, str]", "object store options for s3://, gs://, az://, http(s):// arrays: object_store keys such as "
                        "endpoint, region, skip_signature, timeout, plus max_requests_in_flight, max_retries, retry_timeout, coalesce_gap_bytes; "
                        "credentials otherwise from the standard environment variables (docs/remote.md)"),
}

#: Native defaults that depend on the machine (the stub writes `...` for them).
_MACHINE_DEFAULTS = frozenset({"n_io_threads"})

#: The output dtypes: native name -> torch dtype name (numpy: the same names, bfloat16 via ml_dtypes).
DTYPES: dict[str, str] = {"f32": "float32", "bf16": "bfloat16", "u8": "uint8", "i32": "int32", "i64": "int64"}
_BY_TORCH_NAME = {v: k for k, v in DTYPES.items()}


def _accepted_dtypes() -> str:
    return ", ".join(f'"{k}"/torch.{v}' for k, v in DTYPES.items())


def is_dtype(value: Any) -> bool:
    """True for a torch dtype, or a numpy dtype or scalar type (numpy is not imported here)."""
    import torch

    if isinstance(value, torch.dtype):
        return True
    np = sys.modules.get("numpy")
    if np is None:
        return False
    return isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic))


def dtype_name(value: Any) -> str:
    """The native dtype name for `value`: a str is passed on as is (the native library
    validates it); torch and numpy dtypes map to "f32" / "bf16" / "u8" / "i32" / "i64"."""
    if isinstance(value, str):
        return value
    if is_dtype(value):
        import torch

        if isinstance(value, torch.dtype):
            name = str(value).removeprefix("torch.")
        else:
            name = sys.modules["numpy"].dtype(value).name
        if name in _BY_TORCH_NAME:
            return _BY_TORCH_NAME[name]
        raise InvalidArgument(f"config field `dtype`: {value!r} is not an output dtype; accepted: {_accepted_dtypes()}")
    raise InvalidArgument(f"config field `dtype`: expected a str, torch.dtype or numpy dtype, found {type(value).__name__} "
                          f"({value!r}); accepted: {_accepted_dtypes()}")


def _device_name(value: Any) -> Any:
    import torch

    if isinstance(value, torch.device):
        return value.type if value.index is None else f"{value.type}:{value.index}"
    return value


def _finite(field: str, value: float) -> float:
    """`value` when finite: JSON has no NaN or Infinity (json.dumps would write them, and the
    native parser would answer "invalid JSON" without naming the field)."""
    if not math.isfinite(value):
        raise InvalidArgument(f"config field `{field}`: expected a finite number, found {value!r}")
    return value


def _jsonable(field: str, value: Any) -> Any:
    """`value` as plain JSON data (tuples, numpy scalars and paths allowed)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(field, v) for v in value]
    if isinstance(value, Mapping):  # storage_options: {str: str}; bools and numbers as text
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidArgument(f"config field `{field}`: keys must be strings, found {k!r}")
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, (int, float)):
                v = str(v)
            out[k] = v if isinstance(v, str) else _jsonable(field, v)
        return out
    if isinstance(value, float):
        return _finite(field, value)
    try:
        return operator.index(value)
    except TypeError:
        pass
    if hasattr(value, "__float__") and not hasattr(value, "__len__"):
        return _finite(field, float(value))
    raise InvalidArgument(f"config field `{field}`: cannot use a {type(value).__name__} ({value!r})")


def native_defaults() -> dict[str, Any]:
    """Every native field with its default, in the native order (JSON values)."""
    return json.loads(_ops.call(_ops.ops().config_defaults))


class _DataclassFields:
    """`__dataclass_fields__` per instance (a Config's fields depend on its mode), and on the
    class for `dataclasses.fields(Config)`: makes `dataclasses.replace(cfg, ...)` work."""

    def __init__(self, names) -> None:
        self._names = names

    def __get__(self, obj: Any, cls: Any = None) -> dict[str, dataclasses.Field]:
        out = {}
        for name in self._names(obj):
            f = dataclasses.field()
            f.name = name
            f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]
            out[name] = f
        return out


class Config:
    """A pipeline configuration. Keyword-only; every field has a default."""

    __slots__ = ("_fields", "_orig")
    _fields: dict[str, Any]
    #: Original mode (the original nclack/damacy's fields; _compat_config): (its fields,
    #: this project's fields given beside them); None otherwise.
    _orig: tuple[dict[str, Any], dict[str, Any]] | None

    def __init__(self, **fields: Any) -> None:
        from . import _compat_config as compat

        if compat.is_original(fields):
            orig, extras = compat.validate_original(fields)
            native = compat.from_original(orig, extras, native_defaults())
            Config.__init__(self, **native)
            object.__setattr__(self, "_orig", (orig, extras))
            return
        object.__setattr__(self, "_orig", None)
        if "device" in fields and isinstance(fields["device"], int) and not isinstance(fields["device"], bool):
            fields["device"] = f"cuda:{fields['device']}"  # the original's device index
        if "dtype" in fields:
            fields["dtype"] = dtype_name(fields["dtype"])
        if "device" in fields:
            fields["device"] = _device_name(fields["device"])
        payload = {k: _jsonable(k, v) for k, v in fields.items()}
        normalised = _ops.call(_ops.ops().validate_config, json.dumps(payload, allow_nan=False))
        object.__setattr__(self, "_fields", json.loads(normalised))

    @classmethod
    def default(cls, *, samples_per_batch: int, sample_shape: Any, max_gpu_memory_bytes: int,
                dtype: Any = "f32", **overrides: Any) -> Config:
        """The original damacy's recommended config (its tuned defaults for networked file
        systems): an original-mode Config; any field may be overridden by keyword."""
        return cls(samples_per_batch=samples_per_batch, sample_shape=sample_shape,
                   max_gpu_memory_bytes=max_gpu_memory_bytes, dtype=dtype, **overrides)

    @_DataclassFields
    def __dataclass_fields__(self) -> list[str]:
        """What `dataclasses.replace` / `fields` / `asdict` see: the original's fields (and the
        extras given) in original mode, else the native fields (on the class: those)."""
        if self is None:
            return list(native_defaults())
        return list(self._orig[0]) + list(self._orig[1]) if self._orig else list(self._fields)

    @classmethod
    def from_json(cls, text: str) -> Config:
        """A Config from a JSON object of fields (as `to_json` writes)."""
        try:
            fields = json.loads(text)
        except ValueError as e:
            raise InvalidArgument(f"config is not valid JSON: {e}") from None
        if not isinstance(fields, dict):
            raise InvalidArgument(f"config must be a JSON object, found {type(fields).__name__}")
        return cls(**fields)

    def to_json(self) -> str:
        """Every field as a JSON object (what the native Pipeline takes)."""
        return json.dumps(self._fields)

    def as_dict(self) -> dict[str, Any]:
        """Every field, `sample_shape` and `arrays` as tuples (original mode: the original's
        fields and the extras given; `to_json` has the native fields they map to)."""
        if self._orig:
            return {**self._orig[0], **self._orig[1]}
        return {k: self._get(k) for k in self._fields}

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied (validated again)."""
        if self._orig:
            return Config(**{**self._orig[0], **self._orig[1], **changes})
        return Config(**{**self._fields, **changes})

    def _get(self, name: str) -> Any:
        if self._orig and name in self._orig[0]:
            return self._orig[0][name]
        value = self._fields[name]
        return tuple(value) if isinstance(value, list) else value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._get(name)
        except KeyError:
            raise AttributeError(f"Config has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        # A FrozenInstanceError (an AttributeError), as the original's frozen dataclass.
        raise dataclasses.FrozenInstanceError(f"Config is immutable; cannot assign to field {name!r}: use cfg.replace(field=value)")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError("Config is immutable")

    def __dir__(self) -> list[str]:
        extra = set(self._orig[0]) if self._orig else set()
        return sorted(set(super().__dir__()) | set(self._fields) | extra)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return self._fields == other._fields and self._orig == other._orig

    def __hash__(self) -> int:
        return hash(json.dumps(self._fields, sort_keys=True))

    def __repr__(self) -> str:
        if self._orig:
            inner = ", ".join(f"{k}={v!r}" for k, v in {**self._orig[0], **self._orig[1]}.items())
        else:
            inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"Config({inner})"

    def __reduce__(self):
        if self._orig:  # original mode: rebuilt from its fields
            return (_from_fields, ({**self._orig[0], **self._orig[1]},))
        # Rebuilt (and validated again) from JSON in the receiving process.
        return (Config.from_json, (self.to_json(),))


def _from_fields(fields: dict[str, Any]) -> Config:
    return Config(**fields)


def _python_default(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _shown(name: str, default: Any) -> str:
    """`default` as the docstring shows it: byte sizes also in KiB / MiB / GiB."""
    text = repr(default)
    if name.endswith("_bytes") and isinstance(default, int) and default >= 1024:
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if default % size == 0:
                return f"{text} = {default // size} {unit}"
    return text


def _signature_and_doc() -> tuple[inspect.Signature, str]:
    """Config's keyword-only signature and docstring, from the native defaults and `_FIELDS`."""
    defaults = native_defaults()
    params, lines = [], []
    for name, value in defaults.items():
        hint, doc = _FIELDS.get(name, ("Any", "(undocumented native field)"))
        default = _python_default(value)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint))
        lines.append(f"    {name} ({hint}, default {_shown(name, default)}): {doc}.")
    doc = "\n".join([
        "A pipeline configuration: keyword-only, every field has a default (the native library's).",
        "",
        "Fields:",
        "",
        *lines,
        "",
        "Validated once, by the native library: an unknown field or a bad value raises",
        "`damacy.InvalidArgument` naming the field. Immutable (use `replace`), hashable, picklable;",
        "fields read back as attributes (`cfg.sample_shape` is a tuple).",
        "",
        ">>> cfg = Config(samples_per_batch=8, sample_shape=(64, 128, 128), dtype=torch.bfloat16)",
        ">>> cfg.sample_shape, cfg.dtype",
        "((64, 128, 128), 'bf16')",
        "",
        "Original mode: a Config given any field that only the original nclack/damacy has",
        "(`max_gpu_memory_bytes`, required there, `max_shards_per_sample`, `enable_gds`, ...)",
        "takes and reads back the original's fields with their defaults, types and errors, and",
        "maps them onto the fields above (`Config.default(...)` too); dev/compat.md has the list.",
    ])
    return inspect.Signature(params), doc


Config.__signature__, Config.__doc__ = _signature_and_doc()  # type: ignore[attr-defined]
Config.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *Config.__signature__.parameters.values()]  # type: ignore[attr-defined]
)
