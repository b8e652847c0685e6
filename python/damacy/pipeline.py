"""damacy.Pipeline: push samples, pop batches (torch tensors)."""

from __future__ import annotations

import copy
import json
import math
import os
import time
import weakref
from collections import deque
from typing import Any, Iterable, Iterator, Mapping

import torch

from . import _compat, _ops, _policy
from ._compat import Batch
from .config import Config
from .errors import DamacyError, PoolStarved, ShutdownError, TryAgain
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
    the native library (cache hits and misses, bytes, timings) and may grow. A pipeline's
    Stats also has the original nclack/damacy's fields as attributes (`plan` ... `pop_wait`
    as `Metric`s, `array_meta_hits`, `reads_issued`, `batches_emitted`,
    `gpu_bytes_committed`, ...; dev/compat.md); they are not part of `as_dict()`.
    """

    __slots__ = ("_data", "_extra")

    def __init__(self, data: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_extra", dict(extra or {}))

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
            if name in self._extra:
                return self._extra[name]
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
        return sorted(set(super().__dir__()) | set(self._data) | set(self._extra))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stats):
            return NotImplemented
        return self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={self.__getattr__(k)!r}" for k in self._data)
        return f"Stats({inner})"

    def __reduce__(self):
        return (Stats, (self._data, self._extra))


def _batch_bytes(cfg: Config) -> int:
    itemsize = {"f32": 4, "bf16": 2, "u8": 1, "i32": 4, "i64": 8}
    n = cfg.samples_per_batch * itemsize.get(json.loads(cfg.to_json())["dtype"], 4)
    for x in cfg.sample_shape:
        n *= x
    return n


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

    `on_error` (docs/data.md "Bad samples"): "raise" (default) raises a batch's error;
    "skip" replaces each sample that fails with a data error (DecodeError, StorageError,
    NotFound) by the next good sample of its batch, "fill" reads it as the array's fill
    value; both count in ``stats()["on_error"]`` and log each distinct error (one per chunk)
    once to the "damacy" logger. `padding`: what a box reaching outside its array reads there
    when the config's out_of_bounds is "fill": "constant" (the fill value), "reflect" or
    "edge" (as numpy.pad's modes of those names).
    """

    def __init__(self, config: Config, *, on_error: str = "raise", padding: str = "constant") -> None:
        self._closed = True  # until the native pipeline exists (so __del__ is safe)
        if not isinstance(config, Config):
            raise TypeError(f"expected a damacy.Config, found {type(config).__name__}")
        self._config = config
        self._on_error = _policy.check_on_error(on_error)
        self._padding = _policy.check_padding(padding, config.out_of_bounds if padding != "constant" else "fill")
        # What was pushed natively, in order, until its batch is popped (the policies need
        # the samples of a failed or padded batch; empty when neither is on): one record per
        # native batch, [its Pushed samples, whether any of them needs a gather], so a pop
        # takes its batch's record in one step.
        self._tracking = on_error != "raise" or padding != "constant"
        self._pushed: deque[list] = deque()
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._recovery = _policy.Recovery(config, on_error) if on_error != "raise" else None
        self._batch_failed = False
        self._sources: deque[Iterator[Any]] = deque()
        # Pulled from a source, not yet taken by the native window (a Sample, or its Pushed
        # when tracking); at most one but after a push that raised for an earlier sample.
        self._held: deque[Any] = deque()
        # The window's free places as the last push_many said; None after a native pop (it
        # frees places: the next fill pushes one sample and learns the room from the answer).
        self._room: int | None = None
        self._source_error: BaseException | None = None  # raised by a source; raised when due
        # Original mode (a Config with the original damacy's fields; dev/compat.md): its
        # create-time checks, per-sample limits and sticky errors.
        self._original = config._orig is not None
        if self._original:
            _compat.check_original(config)
        self._limits = _compat.SampleLimits(config) if self._original else None
        self._sticky: DamacyError | None = None
        self._batch_id = 0  # Batch.info.batch_id: pop order
        self._pop_wait_s = 0.0
        self._pops = 0
        self._stats_base: dict | None = None
        self._live: list[weakref.ref] = []  # original mode: popped Batches (the two slots)
        self._native = _ops.call(_ops.classes().Pipeline, config.to_json())
        self._pid = os.getpid()
        self._closed = False
        dev = json.loads(config.to_json())["device"]
        if dev.startswith("cuda"):
            self._device = int(dev[5:]) if dev.startswith("cuda:") else torch.cuda.current_device()
        else:
            self._device = 0  # a CPU pipeline: DLPack's CPU device 0
        # Whether batches decode on the GPU (staging and decoded buffers then live there).
        fields = json.loads(config.to_json())
        self._gpu_decode = (dev.startswith("cuda") and fields["decode"] != "cpu" and fields["dtype"] in ("f32", "bf16")
                            and bool(_ops.gpu_info().get("nvcomp_available")))
        if self._original:
            _compat.warn_original(config)
            if dev.startswith("cuda"):
                _compat.warn_device_binding(config.device, self._device)

    @property
    def config(self) -> Config:
        return self._config

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def device(self) -> int:
        """The CUDA device index the batches are on (0 for a CPU pipeline)."""
        self._check_open()
        return self._device

    @property
    def pending(self) -> bool:
        """True while pushed samples wait to enter the native window (sources not exhausted)."""
        return bool(self._held) or bool(self._sources)

    # --- push -----------------------------------------------------------------------------

    def push(self, samples: Sample | Iterable[Sample]) -> None:
        """Adds a source of samples: a Sample, or any iterable of Samples or (uri, aabb) pairs,
        also an endless generator. Nothing is pulled here; see the class docstring.

        A generator is pulled later, as the window frees: one built in a loop over arrays
        (``for p, u in zip(pipes, uris): p.push(Sample(u, b) for b in boxes)``) reads the
        loop variable when pulled, so every pipeline would get the last ``u``. In such loops
        push a list, or build the generator in a function that takes ``u`` as an argument."""
        self._check_open()
        if self._sticky is not None:
            raise ShutdownError(f"pipeline failed earlier ({type(self._sticky).__name__}: {self._sticky.what}); make a new one")
        source = iter((samples,)) if isinstance(samples, Sample) else iter(samples)
        if self._limits is not None:
            source = map(self._limits.check, map(_as_sample, source))
        self._sources.append(source)

    def _fill(self) -> None:
        """Pulls samples from the sources into the native window until it is full, the
        sources are exhausted or one has raised (nothing is pulled past an error until it
        is raised). One native call takes many samples (push_many): as many are pulled as
        the window has room for (one when that is not known), so a source is pulled at most
        one sample ahead of the window, as with one push per sample."""
        held = self._held
        room = self._room
        tracking = self._tracking
        while room != 0:
            want = 1 if room is None else room
            while len(held) < want and self._source_error is None:
                sample = self._next_sample()
                if sample is None:
                    break
                held.append(self._native_sample(sample) if tracking else sample)
            if not held:
                break
            uris = []
            boxes = []
            words: list[int] = []
            for r, item in enumerate(held):
                target = item.native if tracking else item
                aabb = target.aabb
                uris.append(target.uri)
                boxes.append(len(aabb))
                boxes += [a for a, _ in aabb]
                boxes += [b for _, b in aabb]
                t = getattr(target, "transform", None)  # _TransformedSample (CropDataset's fused Augment)
                if t is not None:
                    if len(words) < 4 * r:
                        words += [0] * (4 * r - len(words))  # identity for the samples before
                    words += t
            if words and len(words) < 4 * len(uris):
                words += [0] * (4 * len(uris) - len(words))
            try:
                n, room = _ops.call(self._native.push_many, uris, boxes, words, drain=False)
            except Exception:
                held.popleft()  # the sample it raised for (always the first): dropped, as a failed push
                self._room = None
                raise
            if tracking:
                for _ in range(n):
                    self._track(held.popleft())
            else:
                for _ in range(n):
                    held.popleft()
            if n == 0:
                break
        self._room = room

    def _track(self, pushed: _policy.Pushed) -> None:
        """Files a natively pushed sample under its native batch (samples_per_batch each)."""
        records = self._pushed
        if not records or len(records[-1][0]) == self._config.samples_per_batch:
            records.append([[], False])
        record = records[-1]
        record[0].append(pushed)
        if pushed.gather is not None:
            record[1] = True

    def _native_sample(self, sample: Sample) -> _policy.Pushed:
        """The sample to push natively for `sample` (a window under reflect/edge padding)."""
        if self._padding == "constant":
            return _policy.Pushed(sample, sample, None)
        shape = self._shapes.get(sample.uri)
        if shape is None:
            from . import array_info

            try:
                shape = tuple(array_info(sample.uri, usage=False)["shape"])
            except _policy.DATA_ERRORS:
                return _policy.Pushed(sample, sample, None)  # the native read reports it
            if len(self._shapes) >= 65536:
                self._shapes.clear()
            self._shapes[sample.uri] = shape
        box, gather = _policy.window(sample.aabb, shape, self._padding)
        return _policy.Pushed(sample, Sample(sample.uri, box) if gather is not None else sample, gather)

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
        if self._held or self._native.pending_samples() >= self._config.samples_per_batch:
            return
        err, self._source_error = self._source_error, None
        raise err

    # --- pop ------------------------------------------------------------------------------

    def pop(self, timeout_s: float | None = None) -> Batch:
        """The next batch, a `damacy.Batch` (a torch.Tensor; also the original damacy's batch
        handle); waits at most `timeout_s` seconds (None: the config's pop_timeout_s). Raises
        TryAgain on time-out or when nothing was pushed, or the batch's own error (the
        pipeline goes on with the next batch; `on_error` says otherwise). An original-mode
        pipeline raises PoolStarved on time-out, waits forever with pop_timeout_s=None, and
        after a batch's error raises that error again from every pop (as the original)."""
        if self._tracking:
            return self._pop_tracked(timeout_s)[0]
        return self._pop(timeout_s, with_samples=False)

    def _pop_tracked(self, timeout_s: float | None, policy: str | None = None) -> tuple[Batch, list[_policy.Pushed], list[int]]:
        """pop() under the policies: (batch, its pushed samples, rows that were bad). With
        `policy` "fill" (what CropDataset asks, to apply "skip" to all its keys alike) bad
        rows are filled and reported, not replaced."""
        policy = policy or self._on_error
        spb = self._config.samples_per_batch
        while True:
            self._batch_failed = False
            try:
                tensor = self._pop(timeout_s, with_samples=False)
            except Exception as e:
                if not self._batch_failed:  # a time-out or a source's error: no batch used
                    raise
                pushed = self._pushed.popleft()[0] if self._pushed else []
                if self._recovery is None or not isinstance(e, _policy.DATA_ERRORS) or len(pushed) < spb:
                    raise
                tensor, bad = self._recovery.read(pushed, e)
                if policy == "skip":
                    src = _policy.replace_bad_rows([tensor], bad, spb)
                    if src is None:
                        self._recovery.dropped_batches += 1
                        continue
                    pushed = [pushed[j] for j in src]
                tensor = Batch.wrap(tensor, self._batch_id)
                self._batch_id += 1
                return tensor, pushed, bad
            pushed, gathers = self._pushed.popleft() if self._pushed else ([], False)
            if gathers:
                _policy.apply_gathers(tensor, pushed)
            return tensor, pushed, []

    def pop_with_samples(self, timeout_s: float | None = None) -> tuple[Batch, list[Sample]]:
        """pop() plus the samples of the batch, in batch order (as pushed: under "skip" a
        replaced sample's entry names the sample that replaced it)."""
        if self._tracking:
            tensor, pushed, _ = self._pop_tracked(timeout_s)
            return tensor, [p.sample for p in pushed]
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
        if not self._original:
            return self._pop_batch(timeout_s, with_samples=with_samples)
        if self._sticky is not None:
            fn, args = self._sticky.__reduce__()[:2]
            raise fn(*args)
        # The original's two output slots: a batch holds one until it is released or dropped
        # (on the GPU path the native buffers are not the output tensors, so this is counted
        # here, for every device).
        self._live = [r for r in self._live if (b := r()) is not None and not b.released]
        if len(self._live) >= _compat.cc.NATIVE_CONSTANTS["N_BATCH_SLOTS"]:
            raise PoolStarved(
                f"both output slots are held by unreleased batches ({len(self._live)} popped, not released): "
                "release them (`with batch:` or batch.release()) or drop them, or .clone() what you keep"
            )
        t0 = time.monotonic()
        try:
            out = self._pop_batch(timeout_s, with_samples=with_samples)
            self._live.append(weakref.ref(out[0] if with_samples else out))
            return out
        except TryAgain as e:
            raise PoolStarved(
                "Pipeline.pop() timed out waiting for the next batch. This usually means tensors from previous "
                "batches are still being held — drop those references before the next pop(), or .clone() if you "
                f"need to keep them. ({e.what})"
            ) from None
        except (PoolStarved, ShutdownError):
            raise
        except DamacyError as e:
            self._sticky = e  # the original's pipeline is terminal after a batch's error
            raise
        finally:
            self._pop_wait_s += time.monotonic() - t0
            self._pops += 1

    def _pop_batch(self, timeout_s: float | None, *, with_samples: bool) -> Any:
        self._fill()
        self._raise_source_error_if_due()
        total = self._config.pop_timeout_s if timeout_s is None else float(timeout_s)
        if total is None:  # original mode: wait forever
            total = math.inf
        if total != total or total < 0:  # NaN or negative: the config's, as natively
            total = self._config.pop_timeout_s if self._config.pop_timeout_s is not None else math.inf
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
            except Exception:
                self._batch_failed = True  # the native batch is consumed (its error)
                self._room = None  # and its places in the window are free
                raise
        self._room = None  # the popped batch's places in the window are free
        self._fill()  # top up the window so the next batch is prefetched meanwhile
        if with_samples:
            out = (Batch.wrap(out[0], self._batch_id), *out[1:])
        else:
            out = Batch.wrap(out, self._batch_id)
        self._batch_id += 1
        return out

    def batches(self, n: int | None = None, timeout_s: float | None = None) -> Iterator[Batch]:
        """Yields `n` batches (None: until the sources are exhausted; a trailing partial batch
        is dropped)."""
        spb = self._config.samples_per_batch
        produced = 0
        while n is None or produced < n:
            self._check_open()
            self._fill()
            self._raise_source_error_if_due()
            if not self._held and not self._sources and self._native.pending_samples() < spb:
                return
            yield self.pop(timeout_s)
            produced += 1

    def pending_samples(self) -> int:
        """Samples in the native window (pushed, not yet popped in a batch)."""
        self._check_open()
        return int(self._native.pending_samples())

    def stats(self) -> Stats:
        """Statistics (cache hits and misses, bytes, timings) as a Stats object, with the
        original damacy's fields beside them (Stats' docstring)."""
        self._check_open()
        data = json.loads(_ops.call(self._native.stats))
        if self._stats_base is not None:
            data = _compat.subtract(data, self._stats_base)
        if self._original:
            committed = _compat.committed_bytes(self._config, self._gpu_decode and self._batch_id > 0)
        else:
            committed = int(data.get("buffers_allocated", 0)) * _batch_bytes(self._config)
        extra = _compat.original_stats(data, pop_wait_s=self._pop_wait_s, pops=self._pops, committed=committed)
        if self._recovery is not None:
            data["on_error"] = self._recovery.counts()
        return Stats(data, extra)

    def stats_reset(self) -> None:
        """Zeroes the cumulative counters and timings of `stats()` from now on (the cache hit
        and miss counts and the buffer counts are live state and stay)."""
        self._check_open()
        self._stats_base = json.loads(_ops.call(self._native.stats))
        self._pop_wait_s = 0.0
        self._pops = 0

    # --- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the native workers and drops the sources. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sources.clear()
        self._held.clear()
        self._source_error = None
        self._pushed.clear()
        if self._recovery is not None and os.getpid() == self._pid:
            self._recovery.close()
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

