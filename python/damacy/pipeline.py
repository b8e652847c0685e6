"""damacy.Pipeline: push samples, pop batches (torch tensors)."""

from __future__ import annotations

import copy
import json
import os
import time
from collections import deque
from typing import Any, Iterable, Iterator, Mapping

import torch

from . import _ops
from .config import Config
from .errors import ShutdownError, TryAgain
from .sample import Sample

__all__ = ["Pipeline", "Stats"]

#: pop() waits in slices of at most this many seconds, so a signal (Ctrl-C) is handled
#: within one slice, and the sources top up the window meanwhile.
_POP_SLICE_S = 0.1

# Native pipelines inherited through fork: their threads do not exist in the child, so they
# are never closed or destroyed there (that would join threads of the parent); kept here.
_INHERITED: list[Any] = []


class Stats:
    """Pipeline statistics: the stats JSON object with attribute access.

    Nested objects are Stats too; `as_dict()` gives the plain data. The set of fields follows
    the native library (cache hits and misses, bytes, timings) and may grow.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", dict(data))

    @classmethod
    def from_json(cls, text: str) -> Stats:
        return cls(json.loads(text))

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(f"Stats has no field {name!r}; fields: {sorted(self._data)}") from None
        return Stats(value) if isinstance(value, dict) else value

    def __getitem__(self, name: str) -> Any:
        value = self._data[name]
        return Stats(value) if isinstance(value, dict) else value

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Stats is read-only")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._data))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stats):
            return NotImplemented
        return self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={self.__getattr__(k)!r}" for k in self._data)
        return f"Stats({inner})"

    def __reduce__(self):
        return (Stats, (self._data,))


def _as_sample(item: Any) -> Sample:
    if isinstance(item, Sample):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return Sample(*item)
    raise TypeError(f"expected a damacy.Sample or a (uri, aabb) pair, found {type(item).__name__}")


class Pipeline:
    """Streams batches of crops: `[samples_per_batch, *sample_shape]` tensors, in push order.

    >>> with Pipeline(cfg) as p:
    ...     p.push(samples)            # any iterable, also an endless generator; consumed lazily
    ...     for batch in p.batches(100):
    ...         ...

    `push` keeps each iterable as a source; samples are pulled from the sources, in order,
    whenever the native lookahead window has room: before, during and after each pop. A single
    consumer thread is assumed.

    A source that raises (or yields something that is not a sample) ends there, and no batch
    is lost: the batches made of samples pulled before the error are popped first, then the
    pop that would need a sample from after the error raises it (with the source's
    traceback); pulling then goes on with the next source. pop() waits in short slices, so
    Ctrl-C interrupts it at once. Closing (also on `with` exit and on garbage collection) stops
    the native workers; batches already popped stay valid. A process forked while a pipeline
    is open inherits it closed (its threads stay in the parent): make pipelines after forking.
    """

    def __init__(self, config: Config) -> None:
        self._closed = True  # until the native pipeline exists (so __del__ is safe)
        if not isinstance(config, Config):
            raise TypeError(f"expected a damacy.Config, found {type(config).__name__}")
        self._config = config
        self._sources: deque[Iterator[Any]] = deque()
        self._held: Sample | None = None  # pulled from a source, refused by a full window
        self._source_error: BaseException | None = None  # raised by a source; raised when due
        self._native = _ops.call(_ops.classes().Pipeline, config.to_json())
        self._pid = os.getpid()
        self._closed = False

    @property
    def config(self) -> Config:
        return self._config

    @property
    def closed(self) -> bool:
        return self._closed

    # --- push -----------------------------------------------------------------------------

    def push(self, samples: Sample | Iterable[Sample]) -> None:
        """Adds a source of samples: a Sample, or any iterable of Samples or (uri, aabb) pairs,
        also an endless generator. Nothing is pulled here; see the class docstring."""
        self._check_open()
        self._sources.append(iter((samples,)) if isinstance(samples, Sample) else iter(samples))

    def _fill(self) -> None:
        """Pulls samples from the sources into the native window until it is full, the
        sources are exhausted or one has raised (nothing is pulled past an error until it
        is raised)."""
        push = self._native.push
        while self._source_error is None:
            sample = self._held
            self._held = None
            if sample is None:
                sample = self._next_sample()
                if sample is None:
                    return
            if not _ops.call(push, sample.uri, sample.starts, sample.stops, drain=False):
                self._held = sample
                return

    def _next_sample(self) -> Sample | None:
        while self._sources:
            try:
                return _as_sample(next(self._sources[0]))
            except StopIteration:
                self._sources.popleft()
            except Exception as e:  # noqa: BLE001 - kept, raised by the pop it is due at
                self._sources.popleft()
                self._source_error = e
                return None
        return None

    def _raise_source_error_if_due(self) -> None:
        """Raises a source's error once the samples pulled before it cannot make another
        complete batch."""
        if self._source_error is None:
            return
        if self._native.pending_samples() >= self._config.samples_per_batch:
            return
        err, self._source_error = self._source_error, None
        raise err

    # --- pop ------------------------------------------------------------------------------

    def pop(self, timeout_s: float | None = None) -> torch.Tensor:
        """The next batch; waits at most `timeout_s` seconds (None: the config's
        pop_timeout_s). Raises TryAgain on time-out or when nothing was pushed, or the batch's
        own error (the pipeline goes on with the next batch)."""
        return self._pop(timeout_s, with_samples=False)

    def pop_with_samples(self, timeout_s: float | None = None) -> tuple[torch.Tensor, list[Sample]]:
        """pop() plus the samples of the batch, in batch order."""
        tensor, uris, boxes = self._pop(timeout_s, with_samples=True)
        samples = []
        at = 0
        for uri in uris:  # boxes: [rank, starts.., stops..] per sample
            rank = boxes[at]
            starts, stops = boxes[at + 1 : at + 1 + rank], boxes[at + 1 + rank : at + 1 + 2 * rank]
            samples.append(Sample(uri, list(zip(starts, stops))))
            at += 1 + 2 * rank
        return tensor, samples

    def _pop(self, timeout_s: float | None, *, with_samples: bool) -> Any:
        self._check_open()
        self._fill()
        self._raise_source_error_if_due()
        total = self._config.pop_timeout_s if timeout_s is None else float(timeout_s)
        if total != total or total < 0:  # NaN or negative: the config's, as natively
            total = self._config.pop_timeout_s
        deadline = time.monotonic() + total
        fn = self._native.pop_with_samples if with_samples else self._native.pop
        while True:
            left = deadline - time.monotonic()
            try:
                out = _ops.call(fn, max(0.0, min(left, _POP_SLICE_S)))
                break
            except TryAgain as e:
                # A slice ran out: Python handles pending signals here (Ctrl-C), the sources
                # top up the window, and the wait goes on until the deadline.
                if left <= _POP_SLICE_S:
                    raise TryAgain(f"{e.what} (waited {total:g} s)") from None
                self._fill()
                self._raise_source_error_if_due()
        self._fill()  # top up the window so the next batch is prefetched meanwhile
        return out

    def batches(self, n: int | None = None, timeout_s: float | None = None) -> Iterator[torch.Tensor]:
        """Yields `n` batches (None: until the sources are exhausted; a trailing partial batch
        is dropped)."""
        spb = self._config.samples_per_batch
        produced = 0
        while n is None or produced < n:
            self._check_open()
            self._fill()
            self._raise_source_error_if_due()
            if self._held is None and not self._sources and self._native.pending_samples() < spb:
                return
            yield self.pop(timeout_s)
            produced += 1

    def pending_samples(self) -> int:
        """Samples in the native window (pushed, not yet popped in a batch)."""
        self._check_open()
        return int(self._native.pending_samples())

    def stats(self) -> Stats:
        """Statistics (cache hits and misses, bytes, timings) as a Stats object."""
        self._check_open()
        return Stats.from_json(_ops.call(self._native.stats))

    # --- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the native workers and drops the sources. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sources.clear()
        self._held = None
        self._source_error = None
        if os.getpid() != self._pid:  # a forked child: the worker threads are the parent's
            _INHERITED.append(self._native)
            return
        _ops.call(self._native.close)

    def _check_open(self) -> None:
        if self._closed:
            raise ShutdownError("pipeline is closed")
        if os.getpid() != self._pid:
            self.close()
            raise ShutdownError("pipeline was made in the parent of this forked process; make one per process")

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.pending_samples()} pending"
        return f"Pipeline({self._config!r}, {state})"

    def __reduce__(self):
        raise TypeError("a damacy.Pipeline cannot be pickled; pickle its Config and make one per process")

