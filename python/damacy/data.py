"""damacy.data: torch.utils.data integration.

>>> from torch.utils.data import DataLoader
>>> from damacy.data import CropDataset, RandomCrops
>>> ds = CropDataset([{"image": "a/img.zarr", "label": "a/lbl.zarr"}],
...                  RandomCrops((32, 64, 64), seed=0, num_samples=1024),
...                  samples_per_batch=8, dtype={"image": "f32", "label": "i64"})
>>> for batch in DataLoader(ds, batch_size=None, num_workers=2):
...     batch["image"], batch["label"]      # [8, 32, 64, 64] float32 and int64

The dataset yields whole batches (one damacy pipeline per array key assembles them), so the
DataLoader is used with ``batch_size=None``. docs/data.md has the guide; the contracts:

Order. A sampler fixes, for an epoch, a sequence of samples (array, box): sample ``i`` is a
pure function of (sampler, arrays, weights, epoch, i). Batch ``g`` of the epoch holds samples
``[g*B, (g+1)*B)``. With ``world_size`` ranks, rank ``r`` gets batches ``r, r+W, r+2W, ...``
(its *stream*); DataLoader worker ``w`` of ``n`` gets stream entries ``w, w+n, ...`` and the
DataLoader interleaves them back in order. So the batches a rank sees, and their order, do not
depend on ``num_workers``; ranks are disjoint and together cover the epoch.

Processes. Nothing native starts before iteration: the constructor reads each array's
metadata (shapes) and validates the configs, no threads. Pipelines are created inside
``__iter__``, i.e. inside each DataLoader worker. Workers never touch CUDA: with ``device``
"cuda" they assemble on the CPU and the main process copies (``DataLoader(pin_memory=True)``
plus `to_device`). With ``num_workers=0`` the pipeline writes to the device itself.

Resume. ``state_dict()`` / ``load_state_dict()`` give the epoch and the position in the rank's
stream; a dataset restored mid-epoch yields exactly the batches not yet yielded. See
`CropDataset.state_dict` for the DataLoader cases (workers, torchdata's StatefulDataLoader).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import operator
import os
import random
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import _policy
from .config import Config, is_dtype
from .errors import InvalidArgument, NotFound, RankMismatch, StorageError
from .pipeline import Pipeline
from .sample import Sample, _TransformedSample
from .transforms import Augment

__all__ = ["Augment", "CropDataset", "RandomCrops", "GridCrops", "LabelCrops", "Stitcher", "stitch", "to_device", "array_shape", "level_uri"]

Box = tuple[tuple[int, int], ...]


# --------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------


def array_shape(uri: str | os.PathLike[str]) -> tuple[int, ...]:
    """The shape of the Zarr array at `uri`, from its metadata only (the native reader's,
    so every uri and store the pipeline reads works here too; `damacy.array_info` with
    ``usage=True`` also lists every stored object: too slow to call per array when a dataset
    opens thousands of them)."""
    from . import array_info

    return tuple(array_info(uri, usage=False)["shape"])


def level_uri(uri: str | os.PathLike[str], level: int) -> str:
    """The uri of level `level` of the OME-NGFF multiscale group at `uri`:
    ``"GROUP#level=N"`` (the group's N-th dataset, 0 = highest resolution). A level can also
    be named by its path, ``"GROUP/PATH"``; `damacy.array_info(GROUP)` lists the levels."""
    uri = os.fspath(uri)
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise InvalidArgument(f"level: expected an integer >= 0, found {level!r}")
    if "#level=" in uri:
        raise InvalidArgument(f"level: {uri!r} already selects a level")
    return f"{uri}#level={level}"


_CHANNEL_NAMES = frozenset({"c", "channel", "channels"})

#: dict keys whose integer arrays default to dtype "label" (the narrowest that fits).
# Output dtypes (the config's spelling) that are floating point: intensity applies to them.
_FLOAT_OUT = frozenset({"f32", "bf16"})
_LABEL_KEYS = frozenset({"label", "labels", "mask", "masks", "seg", "segmentation", "target", "targets"})
#: source data type -> the narrowest output dtype that holds all its values.
_LABEL_DTYPES = {"bool": "u8", "uint8": "u8", "int8": "i32", "int16": "i32", "uint16": "i32", "int32": "i32",
                 "uint32": "i64", "int64": "i64", "uint64": "i64"}


def _channel_axes(info: Mapping[str, Any], rank: int, leading: bool) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(channel axes, their extents, the spatial shape) of an array (its `array_info`) for
    crops of `rank` dims: the axes beyond `rank` when Zarr v3 dimension_names name them ("c",
    "channel", "channels"), else the leading ones if `leading` (another array of the entry
    has the crops' rank); otherwise none (the sampler reports the rank mismatch)."""
    shape = tuple(info["shape"])
    extra = len(shape) - rank
    if extra <= 0:
        return (), (), shape
    names = [str(n).lower() if n is not None else "" for n in (info.get("dimension_names") or [])]
    named = tuple(d for d, n in enumerate(names) if n in _CHANNEL_NAMES)
    if len(names) == len(shape) and named:
        if len(named) != extra:
            raise RankMismatch(f"{info.get('uri')}: dimension_names {info['dimension_names']} name {len(named)} channel axes, "
                               f"the array has {extra} axes beyond the crops' {rank}")
        axes = named
    elif leading:
        axes = tuple(range(extra))
    else:
        return (), (), shape
    return axes, tuple(shape[a] for a in axes), tuple(n for d, n in enumerate(shape) if d not in axes)


def _uri(value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"CropDataset arrays: expected a uri (str or path), found {value!r}")
    # Plain relative paths become absolute: spawned workers may run elsewhere.
    return value if "://" in value else os.path.abspath(value)


def _num_samples(value: Any, who: str) -> int | None:
    """A sampler's ``num_samples``: a whole number of at least 1, or None (endless)."""
    if value is None:
        return None
    n = operator.index(value)
    if n < 1:
        raise InvalidArgument(f"{who} num_samples: expected at least 1 (or None: endless), found {n}")
    return n


def _shape_tuple(value: Any, what: str) -> tuple[int, ...]:
    try:
        out = tuple(operator.index(v) for v in value)
    except TypeError:
        raise InvalidArgument(f"{what}: expected a sequence of positive integers, found {value!r}") from None
    if not out or any(v < 1 for v in out):
        raise InvalidArgument(f"{what}: expected a non-empty sequence of positive integers, found {value!r}")
    return out


# --------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------


class _EpochPlan:
    """One epoch of a sampler over fixed arrays: `len` samples (None: endless); `sample(i)`
    gives (array index, starts, own), where `own` is the region (array coordinates) the
    sample contributes when stitching."""

    n_samples: int | None

    def sample(self, i: int) -> tuple[int, tuple[int, ...], Box]:
        raise NotImplementedError


class RandomCrops:
    """Random crops: each sample picks an array (by weight), then a start uniformly among the
    array's valid positions (every box of `sample_shape` inside the array).

    `num_samples` samples per epoch (over all ranks), or None for an endless stream. Weights
    (CropDataset's ``weights``) default to each array's number of valid positions, so that
    every (array, position) pair is equally likely; explicit weights are relative (need not
    sum to 1), and an array of weight 0 is never picked. Sample ``i`` of an epoch is a pure
    function of (seed, epoch, i), which is what makes workers, ranks and resume agree.
    """

    _BLOCK = 512  # samples drawn per RNG stream (random access without replaying the epoch)

    def __init__(self, sample_shape: Sequence[int], seed: int = 0, num_samples: int | None = None) -> None:
        self.sample_shape = _shape_tuple(sample_shape, "RandomCrops sample_shape")
        self.seed = operator.index(seed)
        self.num_samples = _num_samples(num_samples, "RandomCrops")

    pads = False  # boxes always lie inside their array

    def __repr__(self) -> str:
        return f"RandomCrops(sample_shape={self.sample_shape}, seed={self.seed}, num_samples={self.num_samples})"

    def _plan(self, uris: Sequence[str], shapes: Sequence[tuple[int, ...]], weights: Sequence[float] | None, epoch: int) -> _EpochPlan:
        S = self.sample_shape
        positions = []
        for uri, shape in zip(uris, shapes):
            if len(shape) != len(S):
                raise RankMismatch(f"{uri}: array has rank {len(shape)} ({shape}), sample_shape {S} has rank {len(S)}")
            positions.append(math.prod(max(a - s + 1, 0) for a, s in zip(shape, S)))
        if weights is None:
            weights = [float(p) for p in positions]
            if not any(weights):
                raise InvalidArgument(f"RandomCrops: sample_shape {S} fits in none of the arrays (shapes {list(shapes)})")
        for uri, shape, p, w in zip(uris, shapes, positions, weights):
            if w > 0 and p == 0:
                raise InvalidArgument(f"{uri}: sample_shape {S} does not fit in the array of shape {shape}; give it weight 0 or use GridCrops(edge='pad')")
        return _RandomEpoch(self, shapes, weights, epoch)


class _RandomEpoch(_EpochPlan):
    def __init__(self, sampler: RandomCrops, shapes: Sequence[tuple[int, ...]], weights: Sequence[float], epoch: int) -> None:
        self.n_samples = sampler.num_samples
        self._sampler = sampler
        self._shapes = list(shapes)
        self._cum = list(itertools.accumulate(float(w) for w in weights))
        self._epoch = epoch
        self._blocks: dict[int, list[tuple[int, tuple[int, ...]]]] = {}

    def _block(self, b: int) -> list[tuple[int, tuple[int, ...]]]:
        block = self._blocks.get(b)
        if block is None:
            s = self._sampler
            key = hashlib.blake2b(f"damacy.RandomCrops:{s.seed}:{self._epoch}:{b}".encode(), digest_size=8).digest()
            rng = random.Random(int.from_bytes(key, "little"))
            total, cum, S = self._cum[-1], self._cum, s.sample_shape
            block = []
            for _ in range(s._BLOCK):
                a = min(bisect.bisect_right(cum, rng.random() * total), len(cum) - 1)
                shape = self._shapes[a]
                block.append((a, tuple(rng.randrange(n - k + 1) for n, k in zip(shape, S))))
            if len(self._blocks) >= 4:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[b] = block
        return block

    def sample(self, i: int) -> tuple[int, tuple[int, ...], Box]:
        a, starts = self._block(i // self._sampler._BLOCK)[i % self._sampler._BLOCK]
        box = tuple((b, b + k) for b, k in zip(starts, self._sampler.sample_shape))
        return a, starts, box


class LabelCrops:
    """Crops centred on voxels of chosen label classes (MONAI's RandCropByPosNegLabel habit):
    each sample picks an array (by weight), then a class by `class_weights` (relative; the
    classes an array lacks are left out), then a voxel of that class, which becomes the
    crop's centre (start = centre - sample_shape // 2, so crops reach outside arrays near
    their borders: the pipeline pads them, `CropDataset(padding=...)`).

    `label_key`: the entry key (dict) or position (tuple) of the label array; None for
    entries that are one label array. `class_weights`: {class: weight}, e.g. ``{1: 1, 0: 1}``
    for half foreground, half background; ``foreground_ratio=r`` is shorthand for
    ``{0: 1 - r, "foreground": r}`` where "foreground" means every class but 0.

    The index: per array, built on first need (lazily, in the process that samples: call
    `CropDataset.build_index()` before a DataLoader so workers inherit it), the label is
    read once, block by block (blocks of `index_block` voxels, default the array's chunk
    shape), keeping per block each class's voxel count and up to `per_block` of its voxels
    (drawn at random, seeded by the array and block). A draw picks a block by its count of
    the class, then one of the kept voxels: the centre lies on the class exactly. Memory:
    per block and class, one count and `per_block` positions. `index_level=N`: the label
    entries are OME-NGFF multiscale groups (``uri`` or ``uri#level=k``) and the index is
    built from level N (N-fold fewer voxels to read per downsampling), each kept coarse voxel
    mapped to the centre of the region it covers at the level read (on the class at the
    coarse level; exact only where that region is uniform).

    Sample ``i`` of an epoch is a pure function of (seed, epoch, i) and the labels.
    """

    _BLOCK = 512
    pads = True

    def __init__(self, sample_shape: Sequence[int], *, seed: int = 0, num_samples: int | None = None,
                 label_key: Any = "label", class_weights: Mapping[Any, float] | None = None,
                 foreground_ratio: float | None = None, index_block: Sequence[int] | None = None,
                 per_block: int = 8, index_level: int | None = None) -> None:
        self.sample_shape = _shape_tuple(sample_shape, "LabelCrops sample_shape")
        self.seed = operator.index(seed)
        self.num_samples = _num_samples(num_samples, "LabelCrops")
        self.label_key = label_key
        if (class_weights is None) == (foreground_ratio is None):
            raise InvalidArgument("LabelCrops: give exactly one of class_weights and foreground_ratio")
        if foreground_ratio is not None:
            r = float(foreground_ratio)
            if not 0.0 <= r <= 1.0:
                raise InvalidArgument(f"LabelCrops foreground_ratio: expected a value in [0, 1], found {foreground_ratio!r}")
            class_weights = {0: 1.0 - r, "foreground": r}
        weights = {}
        for c, w in dict(class_weights).items():  # type: ignore[arg-type]
            if c != "foreground":
                c = operator.index(c)
            w = float(w)
            if not (w >= 0 and math.isfinite(w)):
                raise InvalidArgument(f"LabelCrops class_weights: expected finite weights >= 0, found {class_weights!r}")
            weights[c] = w
        if not any(weights.values()):
            raise InvalidArgument(f"LabelCrops class_weights: all weights are 0 ({class_weights!r})")
        self.class_weights = weights
        self.index_block = None if index_block is None else _shape_tuple(index_block, "LabelCrops index_block")
        self.per_block = operator.index(per_block)
        if self.per_block < 1:
            raise InvalidArgument(f"LabelCrops per_block: expected at least 1, found {per_block}")
        if index_level is not None and (isinstance(index_level, bool) or operator.index(index_level) < 0):
            raise InvalidArgument(f"LabelCrops index_level: expected an integer >= 0 or None, found {index_level!r}")
        self.index_level = None if index_level is None else operator.index(index_level)
        self._index: dict[str, _LabelIndex] = {}
        self.config: Config | None = None  # the dataset's (threads, storage options) for reading labels

    def __repr__(self) -> str:
        return (f"LabelCrops(sample_shape={self.sample_shape}, seed={self.seed}, num_samples={self.num_samples}, "
                f"label_key={self.label_key!r}, class_weights={self.class_weights}, index_block={self.index_block}, "
                f"per_block={self.per_block}, index_level={self.index_level})")

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # the built indexes travel to DataLoader workers

    def index(self, uri: str) -> _LabelIndex:
        """The label index of `uri` (built on first call)."""
        idx = self._index.get(uri)
        if idx is None:
            if self.index_level is None:
                idx = _LabelIndex.build(uri, self.index_block, self.per_block, self.config)
            else:
                from . import array_info

                coarse = level_uri(uri.split("#level=", 1)[0], self.index_level)
                idx = _LabelIndex.build(coarse, self.index_block, self.per_block, self.config)
                idx.to_full(tuple(array_info(uri, usage=False)["shape"]))
            self._index[uri] = idx
        return idx

    def _plan(self, uris: Sequence[str], shapes: Sequence[tuple[int, ...]], weights: Sequence[float] | None, epoch: int) -> _EpochPlan:
        for uri, shape in zip(uris, shapes):
            if len(shape) != len(self.sample_shape):
                raise RankMismatch(f"{uri}: array has rank {len(shape)} ({shape}), sample_shape {self.sample_shape} has rank {len(self.sample_shape)}")
        if weights is None:
            weights = [float(math.prod(s)) for s in shapes]
        return _LabelEpoch(self, list(uris), weights, epoch)


class _LabelIndex:
    """Per block of a label array: the count of each class and up to `per_block` of its
    voxels (array coordinates)."""

    def __init__(self, shape: tuple[int, ...], counts: dict[int, list[tuple[int, int]]], voxels: dict[tuple[int, int], list[tuple[int, ...]]]) -> None:
        self.shape = shape
        self.blocks = counts  # class -> [(block id, count), ...]
        self.voxels = voxels  # (class, block id) -> kept voxels
        self._cum = {c: list(itertools.accumulate(n for _, n in v)) for c, v in counts.items()}

    def classes(self) -> list[int]:
        return sorted(self.blocks)

    def to_full(self, full: tuple[int, ...]) -> None:
        """Maps the kept voxels of a coarser level onto the array of shape `full`: coarse
        voxel v becomes the full-resolution voxel at the centre of the region it covers,
        ``floor((v + 1/2) * full / coarse)`` (on the class at the coarse level; at full
        resolution only where the region is uniform)."""
        if len(full) != len(self.shape):
            raise RankMismatch(f"LabelCrops index_level: level of shape {self.shape} for an array of shape {full}")
        ratio = [f / c for f, c in zip(full, self.shape)]
        self.voxels = {k: [tuple(min(int((x + 0.5) * r), f - 1) for x, r, f in zip(v, ratio, full)) for v in kept]
                       for k, kept in self.voxels.items()}
        self.shape = full

    def total(self, c: int) -> int:
        cum = self._cum.get(c)
        return cum[-1] if cum else 0

    def draw(self, c: int, rng: random.Random) -> tuple[int, ...]:
        cum = self._cum[c]
        k = min(bisect.bisect_right(cum, rng.randrange(cum[-1])), len(cum) - 1)
        kept = self.voxels[(c, self.blocks[c][k][0])]
        return kept[rng.randrange(len(kept))]

    @classmethod
    def build(cls, uri: str, block: tuple[int, ...] | None, per_block: int, config: Config | None) -> _LabelIndex:
        from . import array_info

        info = array_info(uri, usage=False)
        shape = tuple(info["shape"])
        if block is None:
            block = tuple(info.get("chunk_shape") or shape)
        if len(block) != len(shape):
            raise RankMismatch(f"LabelCrops index_block {block}: rank differs from the label {uri} of shape {shape}")
        block = tuple(min(b, n) for b, n in zip(block, shape))
        grid = [-(-n // b) for n, b in zip(shape, block)]
        n_blocks = math.prod(grid)
        B = max(1, min(16, n_blocks))
        base = config or Config()
        cfg = base.replace(samples_per_batch=B, sample_shape=block, dtype="i64", device="cpu", decode="cpu",
                           out_of_bounds="fill", lookahead_samples=None if base.lookahead_samples is None else max(base.lookahead_samples, B),
                           arrays=[])
        counts: dict[int, list[tuple[int, int]]] = {}
        voxels: dict[tuple[int, int], list[tuple[int, ...]]] = {}

        def box(bid: int) -> list[tuple[int, int]]:
            idx, k = [], bid
            for g in reversed(grid):
                k, r = divmod(k, g)
                idx.append(r)
            idx.reverse()
            return [(i * b, i * b + b) for i, b in zip(idx, block)]

        def samples() -> Iterator[Sample]:
            for bid in range(n_blocks):
                yield Sample(uri, box(bid))
            for _ in range((-n_blocks) % B):
                yield Sample(uri, box(n_blocks - 1))

        with Pipeline(cfg) as p:
            p.push(samples())
            bid = 0
            while bid < n_blocks:
                t = p.pop()
                for row in range(min(B, n_blocks - bid)):
                    b = box(bid)
                    inside = tuple(slice(0, min(e, n) - s) for (s, e), n in zip(b, shape))
                    lbl = t[row][inside]
                    values, n_of = torch.unique(lbl, return_counts=True)
                    key = hashlib.blake2b(f"damacy.LabelCrops.index:{uri}:{bid}".encode(), digest_size=8).digest()
                    g = torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)
                    for v, m in zip(values.tolist(), n_of.tolist()):
                        counts.setdefault(v, []).append((bid, m))
                        where = (lbl == v).nonzero()
                        pick = torch.randperm(where.shape[0], generator=g)[:per_block]
                        origin = torch.tensor([s for s, _ in b], dtype=torch.int64)
                        voxels[(v, bid)] = [tuple(x) for x in (where[pick] + origin).tolist()]
                    bid += 1
        return cls(shape, counts, voxels)


class _LabelEpoch(_EpochPlan):
    def __init__(self, sampler: LabelCrops, uris: list[str], weights: Sequence[float], epoch: int) -> None:
        self.n_samples = sampler.num_samples
        self._sampler = sampler
        self._uris = uris
        self._cum = list(itertools.accumulate(float(w) for w in weights))
        self._epoch = epoch
        self._blocks: dict[int, list[tuple[int, tuple[int, ...], int]]] = {}

    def _classes(self, idx: _LabelIndex) -> tuple[list[int], list[float]]:
        """The classes to draw from in one array and their weights ("foreground": every
        class but 0, in proportion to its voxels)."""
        cw = self._sampler.class_weights
        classes, weights = [], []
        fg = [c for c in idx.classes() if c != 0 and c not in cw]
        fg_total = sum(idx.total(c) for c in fg)
        for c in idx.classes():
            w = cw.get(c)
            if w is None and c in fg and "foreground" in cw and fg_total:
                w = cw["foreground"] * idx.total(c) / fg_total
            if w:
                classes.append(c)
                weights.append(w)
        return classes, weights

    def _block(self, b: int) -> list[tuple[int, tuple[int, ...], int]]:
        block = self._blocks.get(b)
        if block is None:
            s = self._sampler
            key = hashlib.blake2b(f"damacy.LabelCrops:{s.seed}:{self._epoch}:{b}".encode(), digest_size=8).digest()
            rng = random.Random(int.from_bytes(key, "little"))
            total, cum = self._cum[-1], self._cum
            block = []
            for _ in range(s._BLOCK):
                a = min(bisect.bisect_right(cum, rng.random() * total), len(cum) - 1)
                idx = s.index(self._uris[a])
                classes, weights = self._classes(idx)
                if not classes:
                    raise InvalidArgument(f"LabelCrops: {self._uris[a]} holds none of the classes {list(s.class_weights)} "
                                          f"(it holds {idx.classes()}); give the array weight 0")
                c = classes[min(bisect.bisect_right(list(itertools.accumulate(weights)), rng.random() * sum(weights)), len(classes) - 1)]
                centre = idx.draw(c, rng)
                block.append((a, tuple(x - k // 2 for x, k in zip(centre, s.sample_shape)), c))
            if len(self._blocks) >= 4:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[b] = block
        return block

    def sample(self, i: int) -> tuple[int, tuple[int, ...], Box]:
        a, starts, _ = self._block(i // self._sampler._BLOCK)[i % self._sampler._BLOCK]
        box = tuple((b, b + k) for b, k in zip(starts, self._sampler.sample_shape))
        return a, starts, box

    def sample_class(self, i: int) -> int:
        """The class sample `i` was centred on."""
        return self._block(i // self._sampler._BLOCK)[i % self._sampler._BLOCK][2]


class GridCrops:
    """A grid of crops tiling every array, for inference: every voxel lies in at least one
    crop, and each crop carries the region it *owns* (meta ``"own"``), so that the owned
    regions of all crops partition every array exactly (see `Stitcher`).

    `stride` (default: `sample_shape`, no overlap) must be at most `sample_shape` per
    dimension. Along each dimension the starts are ``0, stride, 2*stride, ...``; the last crop
    meets the array's end by `edge`:

    - ``"shift"``: the last crop is moved back to end at the array's end (overlapping its
      neighbour more); every crop lies inside the array. An array smaller than `sample_shape`
      is an error.
    - ``"pad"``: the last crop keeps the stride and reaches past the end; the outside part is
      the array's fill value (the pipeline runs with ``out_of_bounds="fill"``).

    Where crops overlap, each one owns the half of the overlap nearest to its own centre
    (so a model's less reliable borders are cut away). Order: array by array, crops in C
    order of their grid position. Same for every epoch.
    """

    def __init__(self, sample_shape: Sequence[int], stride: Sequence[int] | None = None, edge: str = "shift") -> None:
        self.sample_shape = _shape_tuple(sample_shape, "GridCrops sample_shape")
        self.stride = self.sample_shape if stride is None else _shape_tuple(stride, "GridCrops stride")
        if len(self.stride) != len(self.sample_shape):
            raise InvalidArgument(f"GridCrops stride {self.stride}: rank differs from sample_shape {self.sample_shape}")
        if any(t > s for t, s in zip(self.stride, self.sample_shape)):
            raise InvalidArgument(f"GridCrops stride {self.stride} exceeds sample_shape {self.sample_shape}: voxels between crops would be missed")
        if edge not in ("shift", "pad"):
            raise InvalidArgument(f"GridCrops edge: expected \"shift\" or \"pad\", found {edge!r}")
        self.edge = edge

    @property
    def pads(self) -> bool:
        return self.edge == "pad"

    def __repr__(self) -> str:
        return f"GridCrops(sample_shape={self.sample_shape}, stride={self.stride}, edge={self.edge!r})"

    def axis(self, extent: int, dim: int) -> tuple[list[int], list[tuple[int, int]]]:
        """Starts and owned ranges of the crops along one dimension of `extent` voxels (as
        lists: for axes of a few million crops at most; the dataset uses `_Axis`)."""
        ax = _Axis(self, extent, dim)
        crops = [ax.crop(i) for i in range(len(ax))]
        return [b for b, _ in crops], [o for _, o in crops]

    def _plan(self, uris: Sequence[str], shapes: Sequence[tuple[int, ...]], weights: Sequence[float] | None, epoch: int) -> _EpochPlan:
        if weights is not None:
            raise InvalidArgument("CropDataset weights apply to RandomCrops; GridCrops visits every array once")
        for uri, shape in zip(uris, shapes):
            if len(shape) != len(self.sample_shape):
                raise RankMismatch(f"{uri}: array has rank {len(shape)} ({shape}), sample_shape {self.sample_shape} has rank {len(self.sample_shape)}")
        return _GridEpoch(self, uris, shapes)


class _Axis:
    """The crops of a `GridCrops` along one dimension of `extent` voxels, computed on demand
    (an axis of 2**61 crops costs nothing): crop `i` starts at ``i * stride``, except the
    last under ``edge="shift"``, which ends at the array's end; each owns from where its
    predecessor's ownership ends to the middle of its overlap with its successor."""

    __slots__ = ("_extent", "_n", "_s", "_shift", "_t")

    def __init__(self, sampler: GridCrops, extent: int, dim: int) -> None:
        s, t = sampler.sample_shape[dim], sampler.stride[dim]
        if extent <= s:
            if sampler.edge == "shift" and extent < s:
                raise InvalidArgument(f"GridCrops(edge='shift'): extent {extent} along dim {dim} is smaller than sample_shape {sampler.sample_shape}; use edge='pad'")
            n = 1
        else:
            n = -(-(extent - s) // t) + 1  # crops so that the last one reaches the end
        self._extent, self._n, self._s, self._t, self._shift = extent, n, s, t, sampler.edge == "shift"

    def __len__(self) -> int:
        return self._n

    def start(self, i: int) -> int:
        if i == self._n - 1 and self._shift and self._n > 1:
            return self._extent - self._s
        return i * self._t

    def _own_end(self, i: int) -> int:
        if i == self._n - 1:
            return self._extent
        return min((self.start(i + 1) + self.start(i) + self._s) // 2, self._extent)

    def crop(self, i: int) -> tuple[int, tuple[int, int]]:
        """Start and owned range of crop `i` (0 <= i < len)."""
        return self.start(i), (0 if i == 0 else self._own_end(i - 1), self._own_end(i))


class _GridEpoch(_EpochPlan):
    def __init__(self, sampler: GridCrops, uris: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> None:
        self._axes: list[list[_Axis]] = []
        self._offsets = [0]
        for uri, shape in zip(uris, shapes):
            try:
                axes = [_Axis(sampler, n, d) for d, n in enumerate(shape)]
            except InvalidArgument as e:
                raise InvalidArgument(f"{uri}: {e}") from None
            self._axes.append(axes)
            self._offsets.append(self._offsets[-1] + math.prod(len(ax) for ax in axes))
        self.n_samples = self._offsets[-1]
        self._shape = sampler.sample_shape

    def sample(self, i: int) -> tuple[int, tuple[int, ...], Box]:
        a = bisect.bisect_right(self._offsets, i) - 1
        k = i - self._offsets[a]
        axes = self._axes[a]
        idx = []
        for ax in reversed(axes):
            k, r = divmod(k, len(ax))
            idx.append(r)
        idx.reverse()
        crops = [ax.crop(j) for ax, j in zip(axes, idx)]
        return a, tuple(b for b, _ in crops), tuple(o for _, o in crops)


# --------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Streams:
    """The pipelines of one iteration (one per key), closed when the iteration ends, but
    only by the process that made them (a forked child must never join its parent's
    threads)."""

    def __init__(self, configs: Sequence[Config], on_error: str = "raise", padding: str = "constant") -> None:
        self.pid = os.getpid()
        self.pipes: list[Pipeline] = []
        # The dataset applies "skip" itself (alike to every key): its pipelines fill.
        policy = "fill" if on_error != "raise" else "raise"
        try:
            for cfg in configs:
                self.pipes.append(Pipeline(cfg, on_error=policy, padding=padding))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if os.getpid() == self.pid:
            for p in self.pipes:
                p.close()
        self.pipes = []


def _iterated_by_batching_loader(dataset: Any) -> bool:
    """True when a DataLoader with a batch_size (auto-collation) is calling ``iter(dataset)``.

    The DataLoader does not tell a dataset how it batches: its fetcher (torch.utils.data's
    ``_IterableDatasetFetcher``, made in the main process or in each worker) holds
    ``dataset`` and ``auto_collation`` and calls ``iter(dataset)`` in its constructor, so the
    caller's frames show it. Anything else (no DataLoader, another loader) gives False.
    """
    frame = sys._getframe(2)  # 0: here, 1: __iter__, 2: the caller of iter()
    for _ in range(3):
        if frame is None:
            return False
        owner = frame.f_locals.get("self")
        if getattr(owner, "dataset", None) is dataset and isinstance(getattr(owner, "auto_collation", None), bool):
            return owner.auto_collation
        frame = frame.f_back
    return False


class CropDataset(IterableDataset):
    """Batches of crops of Zarr arrays, for ``DataLoader(ds, batch_size=None, ...)``.

    `arrays`: one uri, or a list whose entries are all of one kind:
      - a uri (str or path): a batch is a tensor ``[B, *sample_shape]``;
      - a dict ``{key: uri}`` with the same keys in every entry (e.g. image and label): a
        batch is a dict of tensors, every key cropped with the same box;
      - a tuple of uris: a batch is a tuple of tensors, likewise.
      The arrays of one entry must have the same shape.
    `sampler`: `RandomCrops` or `GridCrops`.
    `samples_per_batch`: B, the batch tensors' first dimension.
    `weights`: one per entry, relative sampling weights (RandomCrops only).
    `dtype`: output dtype, one for all keys or a dict/tuple per key: "f32", "bf16", or for
      labels "u8", "i32", "i64" (integer casts: docs/data.md), or the torch dtypes of those;
      "label": the narrowest of u8/i32/i64 that holds the arrays' integer type (1 byte per
      voxel for uint8/bool labels: through DataLoader workers, 8x less than i64; widen on
      the device with ``.long()``). Default: "f32", except "label" for a dict key named
      label(s), mask(s), seg, segmentation or target(s) whose arrays are integers or bool.
    `device`: "cpu" or "cuda[:N]": where batches are assembled when iterating in this
      process. DataLoader workers always assemble on the CPU (see the module docstring).
    `config`: a `damacy.Config` for the other knobs (threads, caches, budgets, timeouts);
      samples_per_batch, sample_shape, dtype, device and out_of_bounds are set here.
      ``n_io_threads`` is the budget of the whole DataLoader: each of ``n`` workers runs its
      pipelines with ``max(1, n_io_threads // n)`` threads.
    `drop_last`: drop the trailing partial batch; with several ranks also the trailing
      batches that would leave ranks with unequal counts (what DDP needs). Otherwise the
      last batch may be smaller, and ranks' counts may differ by one.
    `return_meta`: yield ``(batch, meta)``; meta is a dict: ``"epoch"`` (int), ``"batch"``
      (int, the batch's index in the epoch), and per sample ``"index"`` (LongTensor [n], the
      sample's index in the epoch), ``"array"`` (LongTensor [n], the entry's index in
      `arrays`), ``"box"`` (LongTensor [n, rank, 2], start/stop per dimension, as the
      pipeline read it), ``"own"`` (LongTensor [n, rank, 2], the region this sample owns
      when stitching), ``"uri"`` (list of str, or a dict/tuple of lists like the batch).
    `rank`, `world_size`: this process's share; default: torch.distributed's, if initialised
      when the dataset is made, else 0 and 1.
    `level`: the arrays are OME-NGFF multiscale groups; read this level of each (``uri`` becomes
      ``uri#level=N``, see `level_uri`). A uri may also select its own level.
    `on_error`: "raise" (default), "skip" or "fill" (see `damacy.Pipeline`): a sample that
      fails with a data error is replaced, in every key alike, by the next good sample of
      its batch ("skip"; a batch with none is not yielded), or read as the fill value in the
      key that failed ("fill"). Counted in `stats()` (this process) and, with
      ``return_meta``, listed per batch in meta ``"bad"`` (rows, LongTensor).
    `padding`: "constant" (the fill value, default), "reflect" or "edge" (numpy.pad's modes)
      for the part of a box outside its array (GridCrops(edge="pad"), `LabelCrops`).
    `transform`: a callable, or a list of them applied in order, on each batch before it is
      yielded (in the process that assembles it: a DataLoader worker, or the main process
      on ``device``). A `damacy.data.Augment` gets the samples' indices and the epoch too,
      which makes it deterministic per (seed, epoch, sample).

    Held batches pin pipeline buffers (``n_batch_buffers`` per key): copy batches you keep
    with ``num_workers=0``, or PoolStarved is raised. Iterating under a DataLoader with a
    batch_size (its default is 1) raises InvalidArgument: it would add a dimension.
    """

    def __init__(
        self,
        arrays: Any,
        sampler: RandomCrops | GridCrops,
        *,
        samples_per_batch: int,
        weights: Sequence[float] | None = None,
        dtype: str | Mapping[Any, str] | Sequence[str] | None = None,
        device: str = "cpu",
        config: Config | None = None,
        drop_last: bool = False,
        return_meta: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        level: int | None = None,
        on_error: str = "raise",
        padding: str = "constant",
        transform: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(sampler, (RandomCrops, GridCrops, LabelCrops)):
            raise TypeError(f"CropDataset sampler: expected RandomCrops, GridCrops or LabelCrops, found {type(sampler).__name__}")
        self.sampler = sampler
        self.on_error = _policy.check_on_error(on_error)
        self.padding = _policy.check_padding(padding, "fill")
        if transform is None:
            transforms: list[Any] = []
        elif callable(transform):
            transforms = [transform]
        else:
            transforms = list(transform)
        for t in transforms:
            if not callable(t):
                raise InvalidArgument(f"CropDataset transform: expected a callable or a list of callables, found {t!r}")
        self.transforms = transforms
        self._error_counts = {"failed_batches": 0, "bad_samples": 0, "dropped_batches": 0}
        self._kind, self._keys, self._uris = self._entries(arrays)
        if level is not None:
            self._uris = [[level_uri(u, level) for u in entry] for entry in self._uris]
        self.samples_per_batch = operator.index(samples_per_batch)
        if self.samples_per_batch < 1:
            raise InvalidArgument(f"CropDataset samples_per_batch: expected at least 1, found {samples_per_batch}")
        # Shapes: array metadata only (no native threads before DataLoader forks its workers).
        # Channels: axes beyond the sampler's rank, named by Zarr v3 dimension_names ("c",
        # "channel", "channels") or else the leading ones, are read whole and put first.
        self.shapes: list[tuple[int, ...]] = []
        self._channels: list[tuple[tuple[int, ...], tuple[int, ...]] | None] = [None] * len(self._keys)
        crop_rank = len(sampler.sample_shape)
        self._data_types: list[set[str]] = [set() for _ in self._keys]
        from . import array_info

        for entry in self._uris:
            shapes = []
            infos = [array_info(u, usage=False) for u in entry]
            leading = any(len(i["shape"]) == crop_rank for i in infos)
            for k, (u, info) in enumerate(zip(entry, infos)):
                axes, extents, spatial = _channel_axes(info, crop_rank, leading)
                self._data_types[k].add(str(info.get("data_type", "")))
                seen = self._channels[k]
                if seen is None:
                    self._channels[k] = (axes, extents)
                elif seen != (axes, extents):
                    raise InvalidArgument(f"CropDataset: {u} has channel axes {axes} of extents {extents}; the key's "
                                          f"first array has {seen[0]} of {seen[1]} (a batch has one shape per key)")
                shapes.append(spatial)
            if any(s != shapes[0] for s in shapes):
                detail = ", ".join(f"{u}: {s}" for u, s in zip(entry, shapes))
                raise InvalidArgument(f"CropDataset: the arrays of one entry must have the same shape (channels aside) ({detail})")
            self.shapes.append(shapes[0])
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(self._uris):
                raise InvalidArgument(f"CropDataset weights: {len(weights)} given for {len(self._uris)} arrays")
            if any(not (w >= 0 and math.isfinite(w)) for w in weights) or not any(weights):
                raise InvalidArgument(f"CropDataset weights: expected finite values >= 0, not all 0, found {weights}")
        self.weights = weights
        self.drop_last = bool(drop_last)
        self.return_meta = bool(return_meta)
        if rank is None and world_size is None:
            rank, world_size = _distributed()
        elif rank is None or world_size is None:
            raise InvalidArgument("CropDataset: give both rank and world_size, or neither")
        self.rank, self.world_size = operator.index(rank), operator.index(world_size)
        if not 0 <= self.rank < self.world_size:
            raise InvalidArgument(f"CropDataset: rank {self.rank} outside world_size {self.world_size}")
        self.device = str(device)
        self._configs = self._make_configs(config or Config(), dtype)
        self._epoch = 0
        self._position = 0  # next index of this rank's stream to yield
        self._worker_resume: tuple[int, int, int] | None = None  # (worker, num_workers, next)
        self._worker_progress: tuple[int, int, int] | None = None
        self._loaded = False  # position came from load_state_dict (kept even if complete)
        self._plan(0)  # validates sampler vs arrays now, not in a worker

    # --- construction helpers ------------------------------------------------------------

    @staticmethod
    def _entries(arrays: Any) -> tuple[str, list[Any], list[list[str]]]:
        if isinstance(arrays, (str, os.PathLike)):
            arrays = [arrays]
        if isinstance(arrays, Mapping) or not isinstance(arrays, Iterable):
            raise InvalidArgument(f"CropDataset arrays: expected a uri or a list of entries, found {type(arrays).__name__}")
        entries = list(arrays)
        if not entries:
            raise InvalidArgument("CropDataset arrays: empty")
        first = entries[0]
        if isinstance(first, Mapping):
            kind, keys = "dict", list(first)
        elif isinstance(first, (tuple, list)):
            kind, keys = "tuple", list(range(len(first)))
        else:
            kind, keys = "tensor", [None]
        if not keys:
            raise InvalidArgument("CropDataset arrays: an entry names no array")
        uris = []
        for i, e in enumerate(entries):
            if kind == "dict":
                if not isinstance(e, Mapping) or list(e) != keys:
                    raise InvalidArgument(f"CropDataset arrays[{i}]: expected a dict with keys {keys} like the first entry, found {e!r}")
                uris.append([_uri(e[k]) for k in keys])
            elif kind == "tuple":
                if not isinstance(e, (tuple, list)) or len(e) != len(keys):
                    raise InvalidArgument(f"CropDataset arrays[{i}]: expected {len(keys)} uris like the first entry, found {e!r}")
                uris.append([_uri(u) for u in e])
            else:
                if isinstance(e, (Mapping, tuple, list)):
                    raise InvalidArgument(f"CropDataset arrays[{i}]: expected a uri like the first entry, found {e!r}")
                uris.append([_uri(e)])
        return kind, keys, uris

    def _make_configs(self, base: Config, dtype: Any) -> list[Config]:
        if not isinstance(base, Config):
            raise TypeError(f"CropDataset config: expected a damacy.Config, found {type(base).__name__}")
        if dtype is None:  # f32, but "label" for integer arrays under a label-like dict key
            dtypes = ["label" if self._kind == "dict" and str(k).lower() in _LABEL_KEYS and self._integer_source(i)
                      else "f32" for i, k in enumerate(self._keys)]
        elif isinstance(dtype, str) or is_dtype(dtype):
            dtypes = [dtype] * len(self._keys)
        elif isinstance(dtype, Mapping):
            if self._kind != "dict" or set(dtype) != set(self._keys):
                raise InvalidArgument(f"CropDataset dtype: a dict needs exactly the keys {self._keys}, found {list(dtype)}")
            dtypes = [dtype[k] for k in self._keys]
        else:
            dtypes = list(dtype)
            if self._kind != "tuple" or len(dtypes) != len(self._keys):
                raise InvalidArgument(f"CropDataset dtype: expected one str, or one per array of an entry, found {dtype!r}")
        dtypes = [self._resolve_dtype(k, dt) for k, dt in enumerate(dtypes)]
        self.dtypes = dtypes
        B = self.samples_per_batch
        out = []
        for k, dt in enumerate(dtypes):
            fields = dict(
                samples_per_batch=B,
                sample_shape=self._read_box(k, [(0, s) for s in self.sampler.sample_shape], shape_only=True),
                dtype=dt,
                device=self.device,
                out_of_bounds="fill" if self.sampler.pads or self.padding != "constant" else "error",
                lookahead_samples=None if base.lookahead_samples is None else max(base.lookahead_samples, B),
            )
            # (decode="auto" with an integer dtype decodes on the CPU: Rust's one rule.)
            out.append(base.replace(**fields))
        return out

    def _integer_source(self, key: int) -> bool:
        return all(_LABEL_DTYPES.get(t) is not None for t in self._data_types[key])

    def _resolve_dtype(self, key: int, dt: Any) -> Any:
        """ "label": the narrowest integer output dtype holding every source value of the key's
        arrays (u8, i32 or i64)."""
        if dt != "label":
            return dt
        order = ["u8", "i32", "i64"]
        picks = [_LABEL_DTYPES.get(t) for t in self._data_types[key]]
        if any(p is None for p in picks):
            raise InvalidArgument(f"CropDataset dtype \"label\" (key {self._keys[key]!r}): needs integer or bool arrays, "
                                  f"found data types {sorted(self._data_types[key])}")
        return max(picks, key=order.index)

    def _worker_configs(self, num_workers: int) -> list[Config]:
        """The configs a DataLoader worker runs: CPU only, a share of the thread budget."""
        out = []
        for cfg in self._configs:
            out.append(cfg.replace(device="cpu", decode="cpu", n_io_threads=max(1, cfg.n_io_threads // num_workers)))
        return out

    def _plan(self, epoch: int) -> _EpochPlan:
        cached = getattr(self, "_plan_cache", None)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        first_uris = [entry[0] for entry in self._uris]
        if isinstance(self.sampler, LabelCrops):
            first_uris = [entry[self._label_position()] for entry in self._uris]
            if self.sampler.config is None:
                self.sampler.config = self._configs[0]
        plan = self.sampler._plan(first_uris, self.shapes, self.weights, epoch)
        self._plan_cache = (epoch, plan)
        return plan

    def _label_position(self) -> int:
        key = self.sampler.label_key  # type: ignore[union-attr]
        if self._kind == "tensor":
            return 0
        if key not in self._keys:
            raise InvalidArgument(f"LabelCrops label_key {key!r}: not a key of the entries ({self._keys})")
        return self._keys.index(key)

    def build_index(self) -> None:
        """Builds LabelCrops' index of every array now (in this process), so that DataLoader
        workers inherit it instead of each building its own. Nothing for other samplers."""
        if isinstance(self.sampler, LabelCrops):
            for entry in self._uris:
                self.sampler.index(entry[self._label_position()])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_plan_cache", None)  # rebuilt on demand (RandomCrops' drawn blocks)
        return state

    # --- geometry of an epoch ---------------------------------------------------------------

    @property
    def arrays(self) -> list[Any]:
        """The entries, as given (uris made absolute)."""
        if self._kind == "dict":
            return [dict(zip(self._keys, e)) for e in self._uris]
        if self._kind == "tuple":
            return [tuple(e) for e in self._uris]
        return [e[0] for e in self._uris]

    @property
    def epoch(self) -> int:
        return self._epoch

    def num_samples(self) -> int | None:
        """Samples in an epoch over all ranks (None: endless)."""
        return self._plan(self._epoch).n_samples

    def sample_at(self, i: int, epoch: int | None = None) -> tuple[int, Box]:
        """Sample `i` of an epoch (default: the current one): (entry index, box). What the
        dataset promises to read, whichever rank, worker or resume yields it."""
        plan = self._plan(self._epoch if epoch is None else operator.index(epoch))
        i = operator.index(i)
        if i < 0 or (plan.n_samples is not None and i >= plan.n_samples):
            raise IndexError(f"sample {i} outside the epoch's {plan.n_samples} samples")
        a, starts, _ = plan.sample(i)
        return a, tuple((b, b + s) for b, s in zip(starts, self.sampler.sample_shape))

    def _total_batches(self, n_samples: int | None) -> int | None:
        if n_samples is None:
            return None
        B, W = self.samples_per_batch, self.world_size
        if self.drop_last:
            return (n_samples // B) // W * W
        return -(-n_samples // B)

    def _rank_batches(self, n_samples: int | None) -> int | None:
        total = self._total_batches(n_samples)
        if total is None:
            return None
        return max(0, -(-(total - self.rank) // self.world_size))

    def __len__(self) -> int:
        """Batches this rank yields in an epoch (over all of its DataLoader workers)."""
        n = self._rank_batches(self.num_samples())
        if n is None:
            raise TypeError("an endless CropDataset (RandomCrops(num_samples=None)) has no len()")
        return n

    # --- epochs and state -------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch (RandomCrops draws a new sequence per epoch). A new epoch starts
        at its first batch; setting the current epoch again keeps the position (so that
        ``load_state_dict`` followed by the usual ``set_epoch`` resumes)."""
        epoch = operator.index(epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._position = 0
            self._worker_resume = None
            self._loaded = False

    def _fingerprint(self) -> str:
        what = json.dumps([repr(self.sampler), self._uris, self.weights, self.samples_per_batch,
                           self.drop_last, self.rank, self.world_size])
        return hashlib.blake2b(what.encode(), digest_size=12).hexdigest()

    def _pass_start(self) -> int:
        """Where the next pass starts: a loaded position as is (at the end: nothing left);
        otherwise the current position, or 0 after a completed pass (a new pass)."""
        if self._loaded:
            return self._position
        n = self._rank_batches(self.num_samples())
        return 0 if n is not None and self._position >= n else self._position

    def state_dict(self, batches_yielded: int | None = None) -> dict[str, Any]:
        """The epoch and the position in this rank's stream of batches.

        - Iterated in this process (``num_workers=0``, any DataLoader): counts what it
          yielded; call with no argument.
        - A plain DataLoader with ``num_workers > 0`` iterates copies in the workers, so this
          object cannot count: pass `batches_yielded`, the batches your loop received in
          this epoch (pass) since it started or was restored.
        - torchdata's StatefulDataLoader calls this inside each worker and gives each worker
          its own state back on load; nothing to do.
        """
        state: dict[str, Any] = {"version": 1, "fingerprint": self._fingerprint(), "epoch": self._epoch}
        if batches_yielded is not None:
            state["position"] = self._pass_start() + operator.index(batches_yielded)
        else:
            state["position"] = self._position
            if self._worker_progress is not None:
                state["worker"] = list(self._worker_progress)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores `state_dict()`: the next iteration yields the batches not yet yielded."""
        if not isinstance(state, Mapping) or state.get("version") != 1:
            raise InvalidArgument(f"CropDataset state: expected a state_dict() of version 1, found {state!r}")
        if state.get("fingerprint") != self._fingerprint():
            raise InvalidArgument(
                "CropDataset state: it was saved by a dataset with other arrays, sampler, weights, "
                "samples_per_batch, drop_last, rank or world_size; resume with the same ones"
            )
        self._epoch = operator.index(state["epoch"])
        self._position = operator.index(state["position"])
        worker = state.get("worker")
        self._worker_resume = tuple(operator.index(v) for v in worker) if worker is not None else None  # type: ignore[assignment]
        self._worker_progress = None
        self._loaded = True

    # --- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        if _iterated_by_batching_loader(self):
            raise InvalidArgument(
                f"CropDataset yields whole batches ([{self.samples_per_batch}, ...]: samples_per_batch); a DataLoader "
                "with a batch_size would stack them into [batch_size, samples_per_batch, ...]: "
                "use DataLoader(dataset, batch_size=None, ...)"
            )
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self._plan(self._epoch)
        n_rank = self._rank_batches(plan.n_samples)
        resume, self._worker_resume = self._worker_resume, None
        if resume is not None and resume[:2] == (w, nw):
            first = resume[2]
        else:
            self._position = self._pass_start()
            first = self._position + w
        self._loaded = False
        if info is not None:  # what state_dict() says in this worker until its first batch
            self._worker_progress = (w, nw, first)
        configs = self._configs if info is None else self._worker_configs(nw)

        def js() -> Iterable[int]:  # this process's entries of the rank's stream
            return itertools.count(first, nw) if n_rank is None else range(first, n_rank, nw)

        return self._batches(plan, js, configs, in_worker=info is not None, worker=(w, nw))

    def _sample_range(self, j: int, n_samples: int | None) -> range:
        g = self.rank + j * self.world_size
        lo = g * self.samples_per_batch
        hi = lo + self.samples_per_batch
        return range(lo, hi if n_samples is None else min(hi, n_samples))

    def _read_box(self, key: int, box: list[tuple[int, int]], shape_only: bool = False) -> Any:
        """The box key `key` reads for the spatial `box`: its channel axes whole."""
        ch = self._channels[key]
        if ch is not None and ch[0]:
            box = list(box)
            for a, n in zip(ch[0], ch[1]):
                box.insert(a, (0, n))
        return [e - b for b, e in box] if shape_only else box

    def _channel_first(self, key: int, t: torch.Tensor) -> torch.Tensor:
        ch = self._channels[key]
        if ch is None or not ch[0] or list(ch[0]) == list(range(len(ch[0]))):
            return t
        return t.movedim([1 + a for a in ch[0]], list(range(1, 1 + len(ch[0])))).contiguous()

    def _spatial_box(self, key: int, aabb: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        ch = self._channels[key]
        axes = set(ch[0]) if ch is not None else set()
        return [r for d, r in enumerate(aabb) if d not in axes]

    def _fused_augment(self, configs: Sequence[Config]) -> Augment | None:
        """The leading `transform` when it is an Augment the pipelines can apply where they
        make the batch (samples pushed with their draws; dev/ops.md push_many), else None
        (it runs on the batch). Any device and build: the pipeline's workers apply the draws
        to CPU-made batches (CPU device, and CPU decode for a CUDA device), the assemble
        kernel to GPU-decoded ones. Needs the Augment first (later transforms see augmented
        batches), samples whose values the batch path would give too (Augment.fusable), no
        reordering of the axes after the pop (channels already first: the draws' axes are
        the pipeline's), and no policy that rewrites rows after the pop ("fill" rows,
        reflect/edge padding: they would then stay unaugmented)."""
        aug = self.transforms[0] if self.transforms else None
        if not isinstance(aug, Augment) or self.on_error == "fill" or self.padding != "constant":
            return None
        for k, cfg in enumerate(configs):
            fields = json.loads(cfg.to_json())
            ch = self._channels[k]
            if ch is not None and ch[0] and list(ch[0]) != list(range(len(ch[0]))):
                return None
            if not aug.fusable(fields["sample_shape"], self._intensity_key(k), fields["dtype"] in _FLOAT_OUT):
                return None
        return aug

    def _intensity_key(self, k: int) -> Any:
        """What Augment's intensity_keys name key `k` by: its dict key, tuple position or None."""
        return self._keys[k] if self._kind == "dict" else k if self._kind == "tuple" else None

    def _samples(self, plan: _EpochPlan, js: Any, key: int, fused: Augment | None = None,
                 floating: bool = True, draws: dict[int, Any] | None = None) -> Iterator[Sample]:
        """The samples for `key` of the batches `js`; a short last batch is padded with
        repeats of its last sample (read, then sliced away). With `fused`, each sample
        carries its draw of that Augment (the pipeline applies it); `draws` (batch ->
        draws, shared by the keys' generators) makes a batch's draws once for all keys."""
        B, S = self.samples_per_batch, self.sampler.sample_shape
        n_keys = len(self._keys)
        for j in js():
            sample = None
            rng = self._sample_range(j, plan.n_samples)
            words = None
            if fused is not None:
                hit = draws.get(j) if draws is not None else None
                if hit is None:
                    hit = [fused._draws(rng, self._epoch), 0]
                    if draws is not None:
                        draws[j] = hit
                hit[1] += 1
                if draws is not None and hit[1] == n_keys:
                    del draws[j]  # every key has it
                words = fused.push_words(hit[0], self._intensity_key(key), floating)
            for r, i in enumerate(rng):
                a, starts, _ = plan.sample(i)
                box = self._read_box(key, [(b, b + s) for b, s in zip(starts, S)])
                sample = Sample(self._uris[a][key], box) if words is None else _TransformedSample(self._uris[a][key], box, words[r])
                yield sample
            for _ in range(B - len(rng)):
                yield sample

    def stats(self) -> dict[str, Any]:
        """What `on_error` did in this process (with DataLoader workers: see meta "bad")."""
        c = self._error_counts
        key = "skipped_samples" if self.on_error == "skip" else "filled_samples"
        out: dict[str, Any] = {"policy": self.on_error, "failed_batches": c["failed_batches"], key: c["bad_samples"]}
        if self.on_error == "skip":
            out["dropped_batches"] = c["dropped_batches"]
        return {"on_error": out}

    def _batches(self, plan: _EpochPlan, js: Any, configs: Sequence[Config], *, in_worker: bool, worker: tuple[int, int]) -> Iterator[Any]:
        streams = _Streams(configs, self.on_error, self.padding)
        tracked = self.on_error != "raise" or self.padding != "constant"
        fused = self._fused_augment(configs)
        draws: dict[int, Any] = {}
        try:
            for k, pipe in enumerate(streams.pipes):
                floating = json.loads(configs[k].to_json())["dtype"] in _FLOAT_OUT
                pipe.push(self._samples(plan, js, k, fused, floating, draws))
            for j in js():
                rng = self._sample_range(j, plan.n_samples)
                n = len(rng)
                tensors, samples, bad_rows = [], [], set()
                for pipe in streams.pipes:
                    if tracked:
                        t, pushed, bad = pipe._pop_tracked(None)
                        s = [p.sample for p in pushed]
                        bad_rows.update(r for r in bad if r < n)
                    else:
                        t, s = pipe.pop_with_samples() if self.return_meta else (pipe.pop(), [])
                    if n < self.samples_per_batch:
                        t, s = t[:n], s[:n]
                    t = self._channel_first(len(tensors), t)
                    tensors.append(t)
                    samples.append(s)
                src = list(range(n))
                if bad_rows:
                    self._error_counts["failed_batches"] += 1
                    self._error_counts["bad_samples"] += len(bad_rows)
                if bad_rows and self.on_error == "skip":
                    replaced = _policy.replace_bad_rows(tensors, sorted(bad_rows), n)
                    if replaced is None:
                        self._error_counts["dropped_batches"] += 1
                        if in_worker:
                            self._worker_progress = (worker[0], worker[1], j + worker[1])
                        else:
                            self._position = j + 1
                        continue
                    src = replaced
                    samples = [[s[i] for i in src] if s else s for s in samples]
                if self._kind == "dict":
                    batch: Any = dict(zip(self._keys, tensors))
                elif self._kind == "tuple":
                    batch = tuple(tensors)
                else:
                    batch = tensors[0]
                if len(self.transforms) > (fused is not None):
                    batch = self._transform(batch, plan, rng, src, skip=int(fused is not None))
                if self.return_meta:
                    meta = self._meta(plan, j, rng, samples, src)
                    if tracked:
                        meta["bad"] = torch.tensor(sorted(bad_rows), dtype=torch.int64)
                    batch = (batch, meta)
                # The state counts this batch as yielded once the consumer has it.
                if in_worker:
                    self._worker_progress = (worker[0], worker[1], j + worker[1])
                else:
                    self._position = j + 1
                yield batch
                # Drop this frame's references before the next pops: a held batch pins its
                # pipeline buffers (n_batch_buffers), the caller's reference is enough.
                batch = tensors = t = None  # type: ignore[assignment]
        finally:
            streams.close()

    def _transform(self, batch: Any, plan: _EpochPlan, rng: range, src: list[int], skip: int = 0) -> Any:
        index = torch.tensor([rng[i] for i in src], dtype=torch.int64)
        for t in self.transforms[skip:]:
            batch = t(batch, index=index, epoch=self._epoch) if isinstance(t, Augment) else t(batch)
        return batch

    def _meta(self, plan: _EpochPlan, j: int, rng: range, samples: list[list[Sample]], src: list[int] | None = None) -> dict[str, Any]:
        arrays, owns = [], []
        indices = list(rng) if src is None else [rng[i] for i in src]
        for i in indices:
            a, _, own = plan.sample(i)
            arrays.append(a)
            owns.append(own)
        uris = [[s.uri for s in per_key] for per_key in samples]
        if self._kind == "dict":
            uri: Any = dict(zip(self._keys, uris))
        elif self._kind == "tuple":
            uri = tuple(uris)
        else:
            uri = uris[0]
        return {
            "epoch": self._epoch,
            "batch": self.rank + j * self.world_size,
            "index": torch.tensor(indices, dtype=torch.int64),
            "array": torch.tensor(arrays, dtype=torch.int64),
            "box": torch.tensor([self._spatial_box(0, s.aabb) for s in samples[0]], dtype=torch.int64).reshape(len(rng), -1, 2),
            "own": torch.tensor(owns, dtype=torch.int64).reshape(len(rng), -1, 2),
            "uri": uri,
        }

    # --- helpers --------------------------------------------------------------------------------

    def stitcher(self, **kwargs: Any) -> Stitcher:
        """A `Stitcher` for this dataset's arrays (needs ``return_meta=True`` batches)."""
        return Stitcher(self.shapes, **kwargs)

    def __repr__(self) -> str:
        return (f"CropDataset({len(self._uris)} arrays, {self.sampler!r}, samples_per_batch={self.samples_per_batch}, "
                f"rank={self.rank}/{self.world_size}, epoch={self._epoch})")


# --------------------------------------------------------------------------------------
# Moving batches and stitching predictions
# --------------------------------------------------------------------------------------


def to_device(obj: Any, device: str | torch.device, non_blocking: bool = True) -> Any:
    """`obj` with every tensor (also inside dicts, lists and tuples) moved to `device`.

    Meant for the main process after ``DataLoader(pin_memory=True)``: the copy from pinned
    memory is asynchronous with ``non_blocking=True``.
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_device(v, device, non_blocking) for v in obj)
    if isinstance(obj, list):
        return [to_device(v, device, non_blocking) for v in obj]
    return obj


class Stitcher:
    """Writes per-sample predictions back into whole arrays, one output per array.

    ``add(pred, meta)``: `pred` is ``[n, *extra, *sample_shape]`` (extra: e.g. channels),
    `meta` the batch's meta (``return_meta=True``). Outputs are ``[*extra, *array_shape]``.

    `mode`:
    - ``"own"`` (default): each voxel takes the value of the one sample that owns it (meta
      ``"own"``; for GridCrops the owned regions partition every array, so every voxel is
      written exactly once when the whole grid was added).
    - ``"mean"``: the average over every sample whose box covers the voxel (inside the array).

    `count=True` keeps how many times each voxel was written (`counts()`), a check that the
    grid covered everything (``"mean"`` always counts). Voxels never written are `fill`
    (``"own"``) or NaN (``"mean"``, float dtypes).
    """

    def __init__(self, shapes: Sequence[Sequence[int]], *, mode: str = "own", dtype: torch.dtype | None = None,
                 device: str | torch.device | None = None, count: bool = False, fill: float = 0) -> None:
        if mode not in ("own", "mean"):
            raise InvalidArgument(f"Stitcher mode: expected \"own\" or \"mean\", found {mode!r}")
        self.shapes = [tuple(int(n) for n in s) for s in shapes]
        self.mode, self.dtype, self.device, self.fill = mode, dtype, device, fill
        self._count = count or mode == "mean"
        self._out: list[torch.Tensor | None] = [None] * len(self.shapes)
        self._counts: list[torch.Tensor | None] = [None] * len(self.shapes)

    def _buffers(self, a: int, extra: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self._out[a]
        if out is None:
            device = self.device if self.device is not None else like.device
            dtype = self.dtype or (torch.float32 if self.mode == "mean" and not like.is_floating_point() else like.dtype)
            shape = extra + self.shapes[a]
            out = torch.zeros(shape, dtype=dtype, device=device) if self.mode == "mean" else torch.full(shape, self.fill, dtype=dtype, device=device)
            self._out[a] = out
            if self._count:
                self._counts[a] = torch.zeros(self.shapes[a], dtype=torch.int32, device=device)
        elif tuple(out.shape[: len(extra)]) != extra:
            raise InvalidArgument(f"Stitcher: prediction leading dims {extra} differ from earlier ones {tuple(out.shape[: out.dim() - len(self.shapes[a])])}")
        return out, self._counts[a]

    def add(self, pred: torch.Tensor, meta: Mapping[str, Any]) -> None:
        """Adds a batch of predictions with its meta."""
        boxes, arrays = meta["box"], meta["array"]
        regions = meta["own"] if self.mode == "own" else None
        n = int(arrays.shape[0])
        if pred.shape[0] != n:
            raise InvalidArgument(f"Stitcher: {pred.shape[0]} predictions for {n} samples in meta")
        rank = int(boxes.shape[1])
        if pred.dim() < 1 + rank:
            raise InvalidArgument(f"Stitcher: predictions of shape {tuple(pred.shape)} lack the sample's {rank} dims")
        extra = tuple(pred.shape[1 : pred.dim() - rank])
        for s in range(n):
            a = int(arrays[s])
            box = boxes[s].tolist()
            shape = self.shapes[a]
            if regions is not None:
                region = regions[s].tolist()
            else:
                region = [(max(b0, 0), min(b1, size)) for (b0, b1), size in zip(box, shape)]
            if any(hi <= lo for lo, hi in region):
                continue
            dst = tuple(slice(lo, hi) for lo, hi in region)
            src = tuple(slice(lo - b0, hi - b0) for (lo, hi), (b0, _) in zip(region, box))
            out, counts = self._buffers(a, extra, pred)
            full = (Ellipsis,) + dst
            piece = pred[s][(Ellipsis,) + src].to(device=out.device)
            if self.mode == "own":
                out[full] = piece.to(out.dtype)
            else:
                out[full] += piece.to(out.dtype)
            if counts is not None:
                counts[dst] += 1

    def counts(self) -> list[torch.Tensor | None]:
        """Per array, how many times each voxel was written (None: never touched)."""
        if not self._count:
            raise InvalidArgument("Stitcher: make it with count=True (or mode='mean') to keep counts")
        return list(self._counts)

    def result(self) -> list[torch.Tensor | None]:
        """Per array, the stitched output (None: no sample of the array was added)."""
        if self.mode == "own":
            return list(self._out)
        out = []
        for o, c in zip(self._out, self._counts):
            if o is None or c is None:
                out.append(o)
                continue
            mean = o / c.to(o.dtype) if o.is_floating_point() else o // c.clamp(min=1)
            out.append(mean)
        return out


def stitch(batches: Iterable[tuple[torch.Tensor, Mapping[str, Any]]], shapes: Sequence[Sequence[int]], **kwargs: Any) -> list[torch.Tensor | None]:
    """`Stitcher(shapes, **kwargs)` fed with every ``(pred, meta)`` of `batches`; its result."""
    s = Stitcher(shapes, **kwargs)
    for pred, meta in batches:
        s.add(pred, meta)
    return s.result()
