"""damacy.Sample: one crop request, an array uri and an axis-aligned box."""

from __future__ import annotations

import operator
import os
from typing import Any, Iterable

from .errors import InvalidArgument

__all__ = ["Sample", "AabbTypeError", "as_uri"]

#: Box coordinates cross to the native library as signed 64-bit integers.
_MAX_COORD = 2**63 - 1


def as_uri(value: Any, what: str = "uri") -> str:
    """`value` (str, bytes or os.PathLike) as a uri string the native library accepts.

    Raises InvalidArgument for anything else, an empty uri, a NUL, or bytes that are not
    UTF-8 (also a str holding them as surrogates, as ``os.fsdecode`` makes).
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(f"{what}: {value!r} is not valid UTF-8") from None
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what}: expected a non-empty string, found {value!r}")
    if "\x00" in value:
        raise InvalidArgument(f"{what}: {value!r} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what}: {value!r} holds bytes that are not valid UTF-8") from None
    return value


def _bound(value: Any, dim: int, which: str) -> int:
    if isinstance(value, bool) or value is None:
        raise InvalidArgument(f"sample aabb dim {dim}: {which} must be an integer, found {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidArgument(
            f"sample aabb dim {dim}: {which} must be an integer, found {type(value).__name__} {value!r}"
        ) from None
    if v > _MAX_COORD or v < -_MAX_COORD - 1:
        raise InvalidArgument(f"sample aabb dim {dim}: {which} {v} is outside -2**63 .. 2**63 - 1")
    return v


class AabbTypeError(InvalidArgument, TypeError):
    """An aabb axis that is neither a slice nor a (start, stop) pair: an InvalidArgument, and a
    TypeError as in the original nclack/damacy (dev/compat.md)."""

    def __reduce__(self):
        return (AabbTypeError, (self.what,))


def _range(item: Any, dim: int) -> tuple[int, int]:
    # Messages of the three shape errors are the original's (its doctests show them).
    if isinstance(item, slice):
        if item.step not in (None, 1):
            raise InvalidArgument(f"aabb axis {dim}: slice step must be 1 or omitted (got step={item.step})")
        if item.stop is None:
            raise InvalidArgument(f"aabb axis {dim}: slice stop is required (got {item!r})")
        # As in the original and numpy: an omitted start is 0.
        start = 0 if item.start is None else _bound(item.start, dim, "start")
        stop = _bound(item.stop, dim, "stop")
    elif isinstance(item, (str, bytes)) or not hasattr(item, "__len__") or not hasattr(item, "__getitem__"):
        raise AabbTypeError(f"aabb axis {dim}: expected slice or (start, stop) tuple; got {type(item).__name__}")
    elif len(item) != 2:
        raise AabbTypeError(
            f"aabb axis {dim}: expected slice or (start, stop) tuple; got {type(item).__name__} of {len(item)} values"
        )
    else:
        start, stop = _bound(item[0], dim, "start"), _bound(item[1], dim, "stop")
    if stop <= start:
        raise InvalidArgument(f"sample aabb dim {dim}: empty range [{start}, {stop})")
    return start, stop


class Sample:
    """A crop request: `uri` (an array folder or URL) and `aabb`, one half-open
    ``(start, stop)`` per dimension; pairs or slices (step 1; an omitted start is 0, so
    ``numpy.s_[:64, 10:138]`` works) are accepted. A box may reach outside its array on
    either side (negative starts too): the pipeline's out_of_bounds and padding say what
    that reads as.

    >>> Sample("/data/vol.zarr", [(0, 64), slice(10, 138), (0, 128)]).shape
    (64, 128, 128)

    Immutable, hashable, picklable. Invalid boxes raise `damacy.InvalidArgument`.
    """

    __slots__ = ("uri", "aabb")
    uri: str
    aabb: tuple[tuple[int, int], ...]

    def __init__(self, uri: str | os.PathLike[str], aabb: Iterable[Any]) -> None:
        # Fast paths (a sample is made per crop, often inside the pop that pushes it): an ASCII
        # str uri without NUL, and (start, stop) pairs of plain ints in range, are what
        # as_uri and _range accept unchanged; anything else goes through them.
        if type(uri) is not str or not uri or not uri.isascii() or "\x00" in uri:
            uri = as_uri(uri, "sample uri")
        if isinstance(aabb, (str, bytes)) or not hasattr(aabb, "__iter__"):
            raise InvalidArgument(f"sample aabb: expected a sequence of (start, stop) pairs, found {aabb!r}")
        items = []
        for dim, item in enumerate(aabb):
            if type(item) is tuple or type(item) is list:
                if len(item) == 2:
                    start, stop = item
                    if type(start) is int and type(stop) is int and -_MAX_COORD - 1 <= start < stop <= _MAX_COORD:
                        items.append((start, stop))
                        continue
            items.append(_range(item, dim))
        box = tuple(items)
        if not box:
            raise InvalidArgument("sample aabb: expected at least one dimension, found none")
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "aabb", box)

    @property
    def shape(self) -> tuple[int, ...]:
        """The extent per dimension (stop - start)."""
        return tuple(stop - start for start, stop in self.aabb)

    @property
    def starts(self) -> list[int]:
        return [start for start, _ in self.aabb]

    @property
    def stops(self) -> list[int]:
        return [stop for _, stop in self.aabb]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Sample is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Sample is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sample):
            return NotImplemented
        return (self.uri, self.aabb) == (other.uri, other.aabb)

    def __hash__(self) -> int:
        return hash((self.uri, self.aabb))

    def __repr__(self) -> str:
        return f"Sample({self.uri!r}, {list(self.aabb)!r})"

    def __reduce__(self):
        return (Sample, (self.uri, self.aabb))


class _TransformedSample(Sample):
    """A Sample pushed with its transform's 4 words (CropDataset's fused Augment; the
    pipeline applies them where it makes the batch, dev/ops.md push_many). Equal to, and
    pickled as, the plain Sample."""

    __slots__ = ("transform",)
    transform: tuple[int, int, int, int]

    def __init__(self, uri: str | os.PathLike[str], aabb: Iterable[Any], transform: tuple[int, int, int, int]) -> None:
        super().__init__(uri, aabb)
        object.__setattr__(self, "transform", transform)


def _dataclass_fields(*names: str) -> dict:
    import dataclasses

    out = {}
    for name in names:
        f = dataclasses.field()
        f.name = name
        f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]
        out[name] = f
    return out


#: As the original's frozen dataclass: `dataclasses.replace(sample, aabb=...)` works.
Sample.__dataclass_fields__ = _dataclass_fields("uri", "aabb")  # type: ignore[attr-defined]
