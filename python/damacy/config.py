"""damacy.Config: a pipeline configuration, validated by the native library at construction."""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from typing import Any

from . import _ops
from .errors import InvalidArgument

__all__ = ["Config"]


def _jsonable(field: str, value: Any) -> Any:
    """`value` as plain JSON data (tuples, numpy scalars and paths allowed)."""
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
        return value
    try:
        return operator.index(value)
    except TypeError:
        pass
    if hasattr(value, "__float__") and not hasattr(value, "__len__"):
        return float(value)
    raise InvalidArgument(f"config field `{field}`: cannot use a {type(value).__name__} ({value!r})")


class Config:
    """A pipeline configuration. Keyword-only; every field has a default.

    Fields (meanings in the docs and in Rust's `pipeline::Config`):
    ``samples_per_batch``, ``sample_shape``, ``dtype`` ("f32" | "bf16", or for labels
    "u8" | "i32" | "i64": the source value cast like Rust's ``as``, see docs/data.md), ``device``
    ("cpu" | "cuda:N"), ``decode`` ("auto" | "gpu" | "cpu"), ``lookahead_samples``,
    ``n_io_threads``, ``device_ahead`` (device path: batches kept launched on the GPU ahead of
    the one returned, 1 to 8), ``n_array_meta_cache``, ``n_shard_index_cache``,
    ``n_chunk_layout_cache``, ``n_batch_buffers``, ``staging_bytes``, ``decoded_bytes``,
    ``max_read_op_bytes``, ``decoded_cache_bytes`` (decoded chunks kept across batches on
    the CPU path; 0 = off), ``pop_timeout_s``, ``out_of_bounds`` ("error": a box reaching outside the array fails
    its batch; "fill": the outside reads as the array's fill value),
    ``arrays`` (optional list of the array uris the pipeline will read: their metadata is
    loaded and the cache sizes are checked against their geometry when the Pipeline is
    made, see docs/tuning.md), ``storage_options`` (a dict of str for object store arrays,
    ``s3://``, ``gs://``, ``az://``, ``http(s)://``: object_store keys such as ``endpoint``,
    ``region``, ``skip_signature``, ``timeout``, plus ``max_requests_in_flight``,
    ``max_retries``, ``retry_timeout``; credentials otherwise from the standard environment
    variables, see docs/remote.md).

    Validated once, by the native library: an unknown field or a bad value raises
    `damacy.InvalidArgument` naming the field. Immutable (use `replace`), hashable, picklable.

    >>> cfg = Config(samples_per_batch=8, sample_shape=(64, 128, 128))
    >>> cfg.sample_shape
    (64, 128, 128)
    """

    __slots__ = ("_fields",)
    _fields: dict[str, Any]

    def __init__(self, **fields: Any) -> None:
        payload = {k: _jsonable(k, v) for k, v in fields.items()}
        normalised = _ops.call(_ops.ops().validate_config, json.dumps(payload))
        object.__setattr__(self, "_fields", json.loads(normalised))

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
        """Every field, `sample_shape` as a tuple."""
        return {k: self._get(k) for k in self._fields}

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied (validated again)."""
        return Config(**{**self._fields, **changes})

    def _get(self, name: str) -> Any:
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
        raise AttributeError("Config is immutable; use cfg.replace(field=value)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Config is immutable")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._fields))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return self._fields == other._fields

    def __hash__(self) -> int:
        return hash(json.dumps(self._fields, sort_keys=True))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"Config({inner})"

    def __reduce__(self):
        # Rebuilt (and validated again) from JSON in the receiving process.
        return (Config.from_json, (self.to_json(),))
