"""damacy.transforms: augmentations applied to whole batches, with torch ops on the batch's
device (on CUDA: on the caller's current stream, no copy to the host).

`Augment` draws, per sample, random flips and 90-degree rotations in the crop plane and an
intensity scale, shift and Gaussian noise. Every draw is a pure function of (seed, epoch,
sample index), so a sample is augmented the same whichever worker, rank, batch or resume
reads it. Geometry goes to every tensor of the batch (image and label alike); intensity
only to floating-point tensors (or the keys named), so integer labels keep their values.
"""

from __future__ import annotations

import hashlib
import math
import operator
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import InvalidArgument

__all__ = ["Augment"]


def _range(value: Any, what: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"Augment {what}: expected a (low, high) pair or None, found {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise InvalidArgument(f"Augment {what}: expected finite low <= high, found {value!r}")
    return lo, hi


class Augment:
    """Random augmentations of a batch (a tensor ``[B, ..., *spatial]``, or a dict / tuple of
    such tensors sharing B and the spatial dims), deterministic per (seed, epoch, sample).

    `flip_axes`: axes (negative: counted from the end, so leading channel dims do not matter)
      each flipped with probability `p_flip`. Default: the crop plane, (-2, -1).
    `rot90_plane`: two axes of equal extent, rotated by k*90 degrees, k uniform in 0..3
      (None: no rotation). Default (-2, -1).
    `scale`, `shift`: (low, high) of a uniform multiplier and addend of the intensity
      (None: off). `noise_std`: standard deviation of added Gaussian noise (0: off).
    `intensity_keys`: the dict keys / tuple positions that get intensity changes (default:
      every floating-point tensor).

    Called by `CropDataset(transform=...)` as ``aug(batch, index=..., epoch=...)``, where
    `index` holds the samples' indices in the epoch; called alone, `index` defaults to
    ``arange(B)``. `params(index, epoch)` gives the draws, one dict per sample.
    """

    def __init__(self, *, seed: int = 0, flip_axes: Sequence[int] | None = (-2, -1), p_flip: float = 0.5,
                 rot90_plane: Sequence[int] | None = (-2, -1), scale: Sequence[float] | None = None,
                 shift: Sequence[float] | None = None, noise_std: float = 0.0,
                 intensity_keys: Sequence[Any] | None = None) -> None:
        self.seed = operator.index(seed)
        self.flip_axes = tuple(operator.index(a) for a in (flip_axes or ()))
        if any(a >= 0 for a in self.flip_axes) or len(set(self.flip_axes)) != len(self.flip_axes):
            raise InvalidArgument(f"Augment flip_axes: expected distinct negative axes (from the end), found {flip_axes!r}")
        self.p_flip = float(p_flip)
        if not 0.0 <= self.p_flip <= 1.0:
            raise InvalidArgument(f"Augment p_flip: expected a probability, found {p_flip!r}")
        if rot90_plane is not None:
            plane = tuple(operator.index(a) for a in rot90_plane)
            if len(plane) != 2 or plane[0] == plane[1] or any(a >= 0 for a in plane):
                raise InvalidArgument(f"Augment rot90_plane: expected two distinct negative axes, found {rot90_plane!r}")
            rot90_plane = plane
        self.rot90_plane = rot90_plane
        self.scale = _range(scale, "scale")
        self.shift = _range(shift, "shift")
        self.noise_std = float(noise_std)
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise InvalidArgument(f"Augment noise_std: expected a finite value >= 0, found {noise_std!r}")
        self.intensity_keys = None if intensity_keys is None else list(intensity_keys)

    def __repr__(self) -> str:
        return (f"Augment(seed={self.seed}, flip_axes={self.flip_axes}, p_flip={self.p_flip}, rot90_plane={self.rot90_plane}, "
                f"scale={self.scale}, shift={self.shift}, noise_std={self.noise_std}, intensity_keys={self.intensity_keys})")

    # --- draws ---------------------------------------------------------------------------

    def _draw(self, index: int, epoch: int) -> dict[str, Any]:
        key = hashlib.blake2b(f"damacy.Augment:{self.seed}:{epoch}:{index}".encode(), digest_size=8).digest()
        rng = random.Random(int.from_bytes(key, "little"))
        flips = tuple(a for a in self.flip_axes if rng.random() < self.p_flip)
        k = rng.randrange(4) if self.rot90_plane is not None else 0
        scale = rng.uniform(*self.scale) if self.scale is not None else 1.0
        shift = rng.uniform(*self.shift) if self.shift is not None else 0.0
        noise_seed = rng.getrandbits(63)
        return {"flip": flips, "k": k, "scale": scale, "shift": shift, "noise_seed": noise_seed}

    def params(self, index: Sequence[int] | torch.Tensor, epoch: int = 0) -> list[dict[str, Any]]:
        """The draws for the samples `index` of `epoch`: per sample ``flip`` (axes flipped),
        ``k`` (quarter turns in `rot90_plane`, as torch.rot90), ``scale``, ``shift`` and
        ``noise_seed`` (of the torch.Generator on the batch's device that draws its noise)."""
        idx = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        return [self._draw(int(i), operator.index(epoch)) for i in idx]

    # --- application ---------------------------------------------------------------------

    def _geometry(self, x: torch.Tensor, draws: list[dict[str, Any]]) -> torch.Tensor:
        if all(not d["flip"] and not d["k"] for d in draws):
            return x
        if any(d["k"] for d in draws):
            a, b = self.rot90_plane  # type: ignore[misc]
            if x.shape[a] != x.shape[b]:
                raise InvalidArgument(f"Augment rot90_plane {self.rot90_plane}: the axes have extents {x.shape[a]} and {x.shape[b]}; "
                                      "90-degree turns need a square plane (rot90_plane=None turns them off)")
        # Row by row into one output: flip and rot90 of a row are views or one copy each,
        # copy_ writes them in place (gathering groups of rows with index_put was 20x slower
        # on the CPU).
        out = torch.empty_like(x)
        for row, d in enumerate(draws):
            y = x[row]
            if d["flip"]:
                y = torch.flip(y, d["flip"])
            if d["k"]:
                y = torch.rot90(y, d["k"], self.rot90_plane)
            out[row].copy_(y)
        return out

    def _intensity(self, x: torch.Tensor, draws: list[dict[str, Any]]) -> torch.Tensor:
        if self.scale is None and self.shift is None and self.noise_std == 0:
            return x
        view = (x.shape[0],) + (1,) * (x.dim() - 1)
        if self.scale is not None or self.shift is not None:
            # From pinned memory: a copy from pageable memory makes the host wait for the
            # stream, so the caller could not run ahead of the GPU (measured on an H200: the
            # augmented loader ran at half the plain rate).
            st = torch.tensor([[d["scale"], d["shift"]] for d in draws], dtype=torch.float32)
            st = st.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else st
            s, t = st[:, 0].view(view), st[:, 1].view(view)
            x = (x.float() * s + t).to(x.dtype)
        if self.noise_std > 0:
            noise = torch.empty(x.shape, dtype=torch.float32, device=x.device)
            for row, d in enumerate(draws):
                g = torch.Generator(device=x.device)
                g.manual_seed(d["noise_seed"])
                noise[row].normal_(0.0, self.noise_std, generator=g)
            x = (x.float() + noise).to(x.dtype)
        return x

    def _one(self, x: torch.Tensor, key: Any, draws: list[dict[str, Any]]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            return x
        if x.shape[0] != len(draws):
            raise InvalidArgument(f"Augment: a tensor of {x.shape[0]} samples for {len(draws)} indices")
        x = self._geometry(x, draws)
        wants = x.is_floating_point() if self.intensity_keys is None else key in self.intensity_keys
        return self._intensity(x, draws) if wants else x

    def __call__(self, batch: Any, index: Sequence[int] | torch.Tensor | None = None, epoch: int = 0) -> Any:
        first = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0] if isinstance(batch, (tuple, list)) else batch
        n = int(first.shape[0])
        draws = self.params(range(n) if index is None else index, epoch)
        if isinstance(batch, Mapping):
            return {k: self._one(v, k, draws) for k, v in batch.items()}
        if isinstance(batch, (tuple, list)):
            return type(batch)(self._one(v, i, draws) for i, v in enumerate(batch))
        return self._one(batch, None, draws)
