"""What a Pipeline does beyond the native batch: the bad-sample policy (`on_error`) and the
padding modes ("reflect", "edge") for boxes reaching outside their array.

Both work on the samples the Python Pipeline pushed (it keeps them, in push order, until
their batch is popped), so neither needs the native library to know about them:

- on_error: a batch whose read fails with a data error (`DATA_ERRORS`: a chunk that does not
  decode, a storage failure, a missing array) is read again sample by sample by a probe
  pipeline (samples_per_batch=1, same config, made on first need). The samples that fail
  again are the bad ones; "fill" gives them the array's fill value (read natively as a box
  wholly outside the array), "skip" replaces each by the next good sample of the same batch
  (wrapping around), so batches keep their size and the batch stream its alignment (resume,
  ranks and workers stay exact); a batch with no good sample is dropped. Other errors
  (InvalidArgument, OutOfMemory, ...) are the caller's and always raise.
- padding: with "reflect" (numpy.pad's "reflect": mirrored about the edge voxel, which is
  not repeated) or "edge" (the edge voxel repeated), the coordinate map of each dimension
  sends a contiguous range of the box to a contiguous range of the array of at most the
  box's extent. So the pipeline reads that *window* (a box of the same shape, inside the
  array where the array is at least that large; the part past the end is fill and never
  used) and the popped batch is gathered along each dimension by the map (index_select on
  the batch's device, so on CUDA on the caller's stream). Samples inside their array are
  read as they are and not touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from .errors import DecodeError, InvalidArgument, NotFound, StorageError
from .sample import Sample

__all__ = ["DATA_ERRORS", "ON_ERROR", "PADDING", "check_on_error", "check_padding", "mirror_index", "window"]

log = logging.getLogger("damacy")

#: The errors that make a sample bad under on_error="skip"/"fill".
DATA_ERRORS: tuple[type[BaseException], ...] = (DecodeError, StorageError, NotFound)
ON_ERROR = ("raise", "skip", "fill")
PADDING = ("constant", "reflect", "edge")

#: Distinct error messages logged per process (each names its chunk); beyond: not logged.
_MAX_LOGGED = 4096


def check_on_error(value: Any) -> str:
    if value not in ON_ERROR:
        raise InvalidArgument(f"on_error: expected one of {list(ON_ERROR)}, found {value!r}")
    return value


def check_padding(value: Any, out_of_bounds: str) -> str:
    if value not in PADDING:
        raise InvalidArgument(f"padding: expected one of {list(PADDING)}, found {value!r}")
    if value != "constant" and out_of_bounds != "fill":
        raise InvalidArgument(f"padding={value!r} reads outside the array: it needs the config's out_of_bounds=\"fill\"")
    return value


def mirror_index(i: int, n: int, mode: str) -> int:
    """The array coordinate that coordinate `i` (any integer) reads under `mode`, for an
    axis of `n` voxels: numpy.pad's "reflect" (period 2(n-1)) or "edge"."""
    if mode == "edge" or n == 1:
        return min(max(i, 0), n - 1)
    p = 2 * (n - 1)
    m = i % p
    return m if m < n else p - m


def window(aabb: Sequence[tuple[int, int]], shape: Sequence[int], mode: str) -> tuple[list[tuple[int, int]], list[list[int]] | None]:
    """The box to read for `aabb` under `mode` and, per dimension, the indices (into that
    box) to gather; None when the box lies inside the array (read as is)."""
    if len(aabb) != len(shape):
        return list(aabb), None  # the native read names the rank mismatch
    if all(0 <= b and e <= n for (b, e), n in zip(aabb, shape)):
        return list(aabb), None
    box, gathers = [], []
    for (b, e), n in zip(aabb, shape):
        k = e - b
        if n < 1:
            raise InvalidArgument(f"padding: an axis of extent {n} has nothing to mirror")
        if 0 <= b and e <= n:
            box.append((b, e))
            gathers.append(list(range(k)))
            continue
        src = [mirror_index(i, n, mode) for i in range(b, e)]
        lo = min(src)  # the map of a contiguous range is contiguous, of extent <= min(k, n)
        box.append((lo, lo + k))
        gathers.append([s - lo for s in src])
    return box, gathers


class Pushed:
    """A sample as the caller pushed it and what was pushed natively for it."""

    __slots__ = ("sample", "native", "gather")

    def __init__(self, sample: Sample, native: Sample, gather: list[list[int]] | None) -> None:
        self.sample, self.native, self.gather = sample, native, gather


def apply_gathers(batch: torch.Tensor, pushed: Sequence[Pushed]) -> None:
    """Gathers, in place, the rows of `batch` whose samples were read through a window."""
    for row, p in enumerate(pushed):
        if p.gather is None or row >= batch.shape[0]:
            continue
        x = batch[row]
        lead = x.dim() - len(p.gather)
        for d, idx in enumerate(p.gather):
            x = x.index_select(lead + d, torch.tensor(idx, dtype=torch.int64, device=x.device))
        batch[row] = x


def replace_bad_rows(tensors: Sequence[torch.Tensor], bad: Sequence[int], n: int) -> list[int] | None:
    """on_error="skip": every bad row of each tensor takes the next good row (wrapping
    around), the same in every tensor. Returns the source row of every row, or None when all
    `n` rows are bad."""
    bad_set = set(bad)
    good = [i for i in range(n) if i not in bad_set]
    if not good:
        return None
    src = []
    for i in range(n):
        if i not in bad_set:
            src.append(i)
            continue
        j = next((g for g in good if g > i), good[0])
        src.append(j)
    if bad_set:
        index = torch.tensor(src, dtype=torch.int64)
        for t in tensors:
            t.copy_(t.index_select(0, index.to(t.device)))
    return src


class Recovery:
    """Reads the samples of a failed batch one by one; counts and logs what it finds."""

    def __init__(self, config: Any, policy: str) -> None:
        self.config = config
        self.policy = policy
        self.failed_batches = 0
        self.bad_samples = 0
        self.dropped_batches = 0
        self._probe: Any = None
        self._fill_probe: Any = None
        self._fills: dict[str, torch.Tensor] = {}
        self._logged: set[str] = set()

    def counts(self) -> dict[str, Any]:
        key = "skipped_samples" if self.policy == "skip" else "filled_samples"
        out = {"policy": self.policy, "failed_batches": self.failed_batches, key: self.bad_samples}
        if self.policy == "skip":
            out["dropped_batches"] = self.dropped_batches
        return out

    def _log(self, err: BaseException) -> None:
        msg = str(getattr(err, "what", err))
        if msg in self._logged or len(self._logged) >= _MAX_LOGGED:
            return
        self._logged.add(msg)
        log.warning("on_error=%r: a bad sample is %s: %s", self.policy,
                    "replaced by the next good one" if self.policy == "skip" else "read as the fill value", msg)

    def _pipeline(self, **changes: Any) -> Any:
        from .pipeline import Pipeline

        cfg = self.config.replace(samples_per_batch=1, lookahead_samples=max(1, min(self.config.lookahead_samples or 64, 64)),
                                  arrays=[], **changes)
        return Pipeline(cfg)

    def fill_value(self, uri: str) -> torch.Tensor:
        """One sample of `uri`'s fill value: a box wholly before the array, read natively."""
        t = self._fills.get(uri)
        if t is None:
            if self._fill_probe is None:
                self._fill_probe = self._pipeline(out_of_bounds="fill")
            shape = list(self.config.sample_shape)
            self._fill_probe.push(_outside(uri, shape))
            t = self._fill_probe.pop()[0].clone()
            self._fills[uri] = t
        return t

    def read(self, pushed: Sequence[Pushed], err: BaseException) -> tuple[torch.Tensor, list[int]]:
        """The batch of `pushed` read sample by sample: (tensor, rows that failed); failed
        rows hold the fill value. Raises the first error that is not a data error."""
        self.failed_batches += 1
        if self._probe is None:
            self._probe = self._pipeline()
        rows, bad = [], []
        for i, p in enumerate(pushed):
            self._probe.push(p.native)
            try:
                rows.append(self._probe.pop()[0].clone())
            except DATA_ERRORS as e:
                self._log(e)
                bad.append(i)
                rows.append(None)
            except BaseException:
                # Not the data's error: raised as is; the probe may hold the sample still,
                # so it is made anew next time.
                self._probe.close()
                self._probe = None
                raise
        if len(bad) == 0:  # the batch failed, each sample reads: a transient error; again
            self._log(err)
        self.bad_samples += len(bad)
        batch = torch.stack([self.fill_value(p.native.uri) if r is None else r for p, r in zip(pushed, rows)])
        apply_gathers(batch, pushed)
        return batch, bad

    def close(self) -> None:
        for p in (self._probe, self._fill_probe):
            if p is not None:
                p.close()
        self._probe = self._fill_probe = None


def _outside(uri: str, shape: Sequence[int]) -> Sample:
    """A box wholly outside any array: negative starts (Sample allows them)."""
    return Sample(uri, [(-k, 0) for k in shape])
