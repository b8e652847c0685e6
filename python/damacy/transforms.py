"""damacy.transforms: augmentations applied to whole batches, with torch ops on the batch's
device (on CUDA: on the caller's current stream, no copy to the host).

`Augment` draws, per sample, random flips and 90-degree rotations in the crop plane and an
intensity scale, shift and Gaussian noise. Every draw is a pure function of (seed, epoch,
sample index), so a sample is augmented the same whichever worker, rank, batch or resume
reads it. Geometry goes to every tensor of the batch (image and label alike); intensity
only to floating-point tensors (or the keys named), so integer labels keep their values.

On CUDA (a CUDA build of the extension) a tensor costs one fused kernel, the op
``damacy::augment`` (dev/ops.md): geometry, scale, shift and noise in one pass over the
output, with the per-sample draws in one small table copied to the device once per call. On
the CPU (or without that op) a batch costs a fixed number of torch ops whatever its size:
one gather through a per-sample index map for the geometry, one broadcast multiply-add for
scale and shift, and one counter-based draw for the noise. Both give the same values:
geometry, scale and shift bit for bit (``x * scale`` then ``+ shift``, two float32
roundings), the noise up to float rounding of log/sqrt/cos/sin.

As the first transform of a CropDataset, an Augment is not called on the batch at all: each
sample is pushed with its draw (`push_words`) and the pipeline applies it where it makes
the batch, on any device (the GPU assemble kernel; the pipeline's Rust workers for batches
made on the CPU), with the same values.

The draws: all arithmetic mod 2**64 (seed, epoch and index taken mod 2**64), with
splitmix64's ``mix64(z)`` (``z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27;
z *= 0x94d049bb133111eb; z ^= z >> 31``) and ``step(h, v) = mix64(h + v + G)``,
``G = 0x9e3779b97f4a7c15``: the sample's key is ``step(step(step(0, seed), epoch), index)``
and its words are ``w_f = mix64(key + f * G)`` (f >= 1: splitmix64's stream from the key).
``noise_seed = key >> 1``; ``scale = lo + (hi - lo) * (w_1 >> 32) / 2**32`` and ``shift``
likewise from the low 32 bits of w_1; ``k = w_2 >> 62``; flip axis t (in `flip_axes` order)
is flipped when its 16-bit lane ``(w_{2 + t // 3} >> (16 * (t mod 3))) & 0xffff`` is below
``p_flip * 2**16``. (Until this version a blake2b digest seeded a random.Random per sample,
so every draw of a given seed changed value with this version.)

The noise contract: the noise of a sample is a pure function of its draw's ``noise_seed``
and of the element's position, so it is the same in any batch, at any batch position, on
the CPU and on CUDA (up to float rounding of log/sqrt/cos/sin). With
``g = 2 * (noise_seed mod 2**30) + 1`` and ``b = (noise_seed >> 30) mod 2**31``, element j
of the sample (its C-order index after geometry, channel dims included) has the counter
``c_j = (g * j + b) mod 2**32``, the hash ``h_j = lowbias32(c_j)`` (hash-prospector's
``[16 21f0aaad 15 735a2d97 15]``) and the uniform ``u_j = (floor(h_j / 2**9) + 0.5) / 2**23``;
the pair (2m, 2m+1) is Box-Muller of (u_2m, u_2m+1): ``r = sqrt(-2 ln u_2m)``,
``theta = 2 pi u_2m+1``, ``z_2m = r cos(theta)``, ``z_2m+1 = r sin(theta)`` (an odd sample
size drops the last z). The noise added is ``noise_std * z_j``. (Until this version the
noise came from a torch.Generator per sample, seeded with ``noise_seed``: one generator and
one launch per sample, and other numbers on CUDA than on the CPU.)
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import _ops
from .errors import InvalidArgument

__all__ = ["Augment"]


# splitmix64 (Steele, Lea, Flood 2014; Vigna's constants): the draws' counter-based hash.
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX_64 = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * _MIX_64[0]) & _M64
    z = ((z ^ (z >> 27)) * _MIX_64[1]) & _M64
    return z ^ (z >> 31)


def _step(h: int, v: int) -> int:
    """One splitmix64 step: mix64(h + v + G) mod 2**64 (v: any int, taken mod 2**64)."""
    return _mix64((h + v + _GOLDEN) & _M64)


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
        self._maps: dict[tuple[Any, ...], tuple[tuple[int, bool], ...]] = {}
        # The sample dims the draws touch, counted from the end (the fused op's map slots).
        self._span = max((-a for a in self.flip_axes + (self.rot90_plane or ())), default=0)
        self._flips: dict[int, tuple[int, ...]] = {}  # flip mask -> the axes flipped
        # The draws' words w_2, w_3, ... (module docstring): (f * G mod 2**64, its flip lanes as
        # (mask bit, shift), whether k comes from it).
        nflip, turns = len(self.flip_axes), self.rot90_plane is not None
        self._words = [((f * _GOLDEN) & _M64, [(1 << t, 16 * (t % 3)) for t in range(3 * (f - 2), min(3 * (f - 1), nflip))],
                        f == 2 and turns)
                       for f in range(2, 2 + (max(nflip, 1 if turns else 0) + 2) // 3)]
        self._map_words: dict[tuple[int, int], int] = {}  # (flip mask, k) -> the op's map word

    def __repr__(self) -> str:
        return (f"Augment(seed={self.seed}, flip_axes={self.flip_axes}, p_flip={self.p_flip}, rot90_plane={self.rot90_plane}, "
                f"scale={self.scale}, shift={self.shift}, noise_std={self.noise_std}, intensity_keys={self.intensity_keys})")

    # --- draws ---------------------------------------------------------------------------

    def _draws(self, index: Sequence[int] | torch.Tensor, epoch: int) -> list[tuple[int, int, float, float, int]]:
        """Per sample of `index`: (flip mask (bit t: flip_axes[t]), k, scale, shift, noise_seed),
        the module docstring's draws. Pure Python, three 64-bit mixes per sample (2-4 µs on
        the dev VM)."""
        idx = index.tolist() if isinstance(index, torch.Tensor) else index
        base = _step(_step(0, self.seed), operator.index(epoch))
        m64, golden, m1, m2 = _M64, _GOLDEN, _MIX_64[0], _MIX_64[1]
        thr = self.p_flip * 65536.0
        lo_s, span_s = (self.scale[0], self.scale[1] - self.scale[0]) if self.scale is not None else (1.0, 0.0)
        lo_t, span_t = (self.shift[0], self.shift[1] - self.shift[0]) if self.shift is not None else (0.0, 0.0)
        ranges = self.scale is not None or self.shift is not None
        words = self._words
        out = []
        append = out.append
        for i in idx:
            z = (base + int(i) + golden) & m64
            z = ((z ^ (z >> 30)) * m1) & m64
            z = ((z ^ (z >> 27)) * m2) & m64
            key = z ^ (z >> 31)
            scale, shift = lo_s, lo_t
            if ranges:
                z = (key + golden) & m64
                z = ((z ^ (z >> 30)) * m1) & m64
                z = ((z ^ (z >> 27)) * m2) & m64
                z ^= z >> 31
                scale = lo_s + span_s * ((z >> 32) * 2.0**-32)
                shift = lo_t + span_t * ((z & 0xFFFFFFFF) * 2.0**-32)
            mask = k = 0
            for offset, lanes, turns in words:
                z = (key + offset) & m64
                z = ((z ^ (z >> 30)) * m1) & m64
                z = ((z ^ (z >> 27)) * m2) & m64
                z ^= z >> 31
                if turns:
                    k = z >> 62
                for bit, shift_by in lanes:
                    if (z >> shift_by) & 0xFFFF < thr:
                        mask |= bit
            append((mask, k, scale, shift, key >> 1))
        return out

    def _flip_axes_of(self, mask: int) -> tuple[int, ...]:
        hit = self._flips.get(mask)
        if hit is None:
            hit = self._flips[mask] = tuple(a for t, a in enumerate(self.flip_axes) if mask >> t & 1)
        return hit

    def _dicts(self, draws: list[tuple[int, int, float, float, int]]) -> list[dict[str, Any]]:
        return [{"flip": self._flip_axes_of(mask), "k": k, "scale": scale, "shift": shift, "noise_seed": seed}
                for mask, k, scale, shift, seed in draws]

    def params(self, index: Sequence[int] | torch.Tensor, epoch: int = 0) -> list[dict[str, Any]]:
        """The draws for the samples `index` of `epoch`: per sample ``flip`` (axes flipped),
        ``k`` (quarter turns in `rot90_plane`, as torch.rot90), ``scale``, ``shift`` and
        ``noise_seed`` (the key of its noise: the module docstring gives the contract)."""
        return self._dicts(self._draws(index, epoch))

    # --- application ---------------------------------------------------------------------
    #
    # On CUDA with the op: one damacy::augment per tensor (`_fused`), one parameter table per
    # call. Otherwise the torch path, batched: a call costs a fixed number of torch ops
    # whatever the batch size. Geometry is one gather through a per-sample index map,
    # intensity one broadcast multiply-add, noise one counter-based draw over the whole batch
    # (`_noise`). The torch path is the fused op's reference in the tests.

    def _axis_map(self, flips: tuple[int, ...], k: int, ndim: int) -> tuple[tuple[int, bool], ...]:
        """For a sample of `ndim` dims (batch dim excluded), flipped on `flips` then turned k
        times in `rot90_plane` (torch.rot90): per output axis d, the source axis it reads and
        whether it runs backwards, i.e. ``out[..i_d..] = src[..(n-1-i_d if rev else i_d) at
        axis src_axis..]``. Memoised: at most 2^len(flip_axes) * 4 entries per ndim."""
        key = (flips, k, ndim)
        hit = self._maps.get(key)
        if hit is not None:
            return hit
        src = list(range(ndim))
        rev = [False] * ndim
        if k:
            a, b = (ax % ndim for ax in self.rot90_plane)  # type: ignore[union-attr]
            # torch.rot90 (as np.rot90), on a square plane: k=1 out[i, j] = t[j, n-1-i],
            # k=2 out[i, j] = t[n-1-i, n-1-j], k=3 out[i, j] = t[n-1-j, i].
            # Read per output axis: k=1 output axis a (i) runs backwards along source axis b,
            # output axis b (j) forwards along a; k=3 the other way round.
            if k == 1:
                src[a], rev[a], src[b], rev[b] = b, True, a, False
            elif k == 2:
                rev[a] = rev[b] = True
            else:
                src[a], rev[a], src[b], rev[b] = b, False, a, True
        flipped = {ax % ndim for ax in flips}
        hit = tuple((s, r != (s in flipped)) for s, r in zip(src, rev))
        self._maps[key] = hit
        return hit

    def _check_axes(self, x: torch.Tensor) -> None:
        ndim = x.dim() - 1
        axes = self.flip_axes + (self.rot90_plane or ())
        if axes and -min(axes) > ndim:
            raise InvalidArgument(f"Augment: flip_axes {self.flip_axes} / rot90_plane {self.rot90_plane} need samples of at least "
                                  f"{-min(axes)} dims, found a tensor of shape {tuple(x.shape)} (batch dim first)")

    def _check_geometry(self, x: torch.Tensor, turns: bool) -> None:
        self._check_axes(x)
        if turns:
            a, b = self.rot90_plane  # type: ignore[misc]
            if x.shape[a] != x.shape[b]:
                raise InvalidArgument(f"Augment rot90_plane {self.rot90_plane}: the axes have extents {x.shape[a]} and {x.shape[b]}; "
                                      "90-degree turns need a square plane (rot90_plane=None turns them off)")

    def _geometry(self, x: torch.Tensor, draws: list[dict[str, Any]], cache: dict[Any, torch.Tensor]) -> torch.Tensor:
        if all(not d["flip"] and not d["k"] for d in draws):
            return x
        self._check_geometry(x, any(d["k"] for d in draws))
        # The output keeps x's memory format: the gather writes in x's memory order (perm:
        # axes outermost first), so the result, permuted back, has x's strides.
        x, perm = _dense(x)
        key = (tuple(x.shape), x.stride(), x.device, tuple(perm))
        offsets = cache.get(key)
        if offsets is None:
            offsets = self._offsets(x, draws, perm)
            cache[key] = offsets
        if perm == sorted(perm):
            return x.reshape(-1).index_select(0, offsets.view(-1)).view(x.shape)
        flat = x.permute(perm).reshape(-1)  # a view: x.permute(perm) is contiguous
        out = flat.index_select(0, offsets.view(-1)).view(offsets.shape)
        return out.permute([perm.index(d) for d in range(x.dim())])

    def _offsets(self, x: torch.Tensor, draws: list[dict[str, Any]], perm: list[int]) -> torch.Tensor:
        """Per output element of the batch, the position in x's memory it reads: the sum of
        one term per axis, ``term_d[sample, i] = stride(src axis) * (n-1-i if rev else i)``
        (+ sample * batch stride), built on the host for all samples (a few KiB), copied to
        the device once and summed there by broadcasting, laid out in memory order `perm`."""
        shape, stride, ndim = tuple(x.shape), x.stride(), x.dim() - 1
        n = len(draws)
        # int32 offsets (index_select takes both; half the bytes) unless they could overflow
        dtype = torch.int64 if x.numel() >= 2**31 else torch.int32
        sign, base = [], []
        for row, d in enumerate(draws):
            for ax, (src, rev) in enumerate(self._axis_map(d["flip"], d["k"], ndim)):
                st = stride[src + 1]
                sign.append(-st if rev else st)
                base.append((st * (shape[ax + 1] - 1) if rev else 0) + (row * stride[0] if ax == 0 else 0))
        sign_t = torch.tensor(sign, dtype=torch.int64).view(n, ndim)
        base_t = torch.tensor(base, dtype=torch.int64).view(n, ndim)
        table = torch.cat([base_t[:, ax, None] + sign_t[:, ax, None] * torch.arange(shape[ax + 1], dtype=torch.int64)
                           for ax in range(ndim)], dim=1).to(dtype)
        terms = _to_device(table, x.device)
        views, at = [], 0
        for ax in range(ndim):
            size = shape[ax + 1]
            view_shape = [n] + [size if e == ax else 1 for e in range(ndim)]
            v = terms[:, at:at + size].reshape(view_shape)
            views.append(v if perm == sorted(perm) else v.permute(perm))
            at += size
        acc = views[0]
        for v in views[1:-1]:
            acc = acc + v
        out = torch.empty([shape[d] for d in perm], dtype=terms.dtype, device=x.device)
        if len(views) > 1:
            torch.add(acc, views[-1], out=out)
        else:
            out.copy_(acc)
        return out

    def _noise(self, shape: tuple[int, ...], draws: list[dict[str, Any]], device: torch.device) -> torch.Tensor:
        """Gaussian noise for a batch of `shape`: noise_std times the normals of the module
        docstring's contract. On CUDA one counter-based draw over the whole batch; on the
        CPU the same draw in cache-sized pieces (over a whole batch at once its int64
        temporaries go to memory: 2-3x slower on the dev VM)."""
        n, per_sample = shape[0], math.prod(shape[1:])
        if per_sample > 2**32:
            raise InvalidArgument(f"Augment noise: samples of {per_sample} elements; the noise counter covers 2**32")
        if n * per_sample == 0:
            return torch.zeros(shape, dtype=torch.float32, device=device)
        keys = _to_device(torch.tensor([_noise_key(d["noise_seed"]) for d in draws], dtype=torch.int64), device)
        if device.type != "cpu":
            return _normals(keys[:, :1], keys[:, 1:], 0, per_sample, self.noise_std, polar=True).reshape(shape)
        z = torch.empty((n, per_sample), dtype=torch.float32)
        step = min(per_sample + per_sample % 2, _CPU_PIECE)  # even: pieces start at even j
        rows = max(1, _CPU_PIECE // step)
        counter = torch.arange(step, dtype=torch.int64)
        for r in range(0, n, rows):
            for j in range(0, per_sample, step):
                k = min(per_sample, j + step)
                _normals(keys[r:r + rows, :1], keys[r:r + rows, 1:], j, k, self.noise_std, out=z[r:r + rows, j:k], counter=counter)
        return z.view(shape)

    def _intensity(self, x: torch.Tensor, draws: list[dict[str, Any]], cache: dict[Any, torch.Tensor]) -> torch.Tensor:
        if self.scale is None and self.shift is None and self.noise_std == 0:
            return x
        view = (x.shape[0],) + (1,) * (x.dim() - 1)
        y = x.float()  # x itself when float32; other dtypes are computed in float32, as before
        out = torch.empty_like(y)  # x's memory format
        if self.scale is not None or self.shift is not None:
            st = cache.get(("scale_shift", x.device))
            if st is None:
                st = _to_device(torch.tensor([[d["scale"], d["shift"]] for d in draws], dtype=torch.float32), x.device)
                cache[("scale_shift", x.device)] = st
            s, t = st[:, 0].view(view), st[:, 1].view(view)
            # x * s, then + t: two roundings, as numpy's float32 `x * s + t` (addcmul fuses
            # them on some devices and differs in the last bit)
            if self.scale is not None:
                torch.mul(y, s, out=out)
                if self.shift is not None:
                    out.add_(t)
            else:
                torch.add(y, t, out=out)
            y = out
        if self.noise_std > 0:
            key = ("noise", tuple(x.shape), x.device)
            noise = cache.get(key)
            if noise is None:
                noise = self._noise(tuple(x.shape), draws, x.device)
                cache[key] = noise
            if y is out:
                out.add_(noise)
            else:
                torch.add(y, noise, out=out)
        return out.to(x.dtype)

    def _one(self, x: torch.Tensor, key: Any, draws: list[tuple[int, int, float, float, int]],
             cache: dict[Any, Any]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            return x
        if x.dim() == 0 or x.shape[0] != len(draws):
            raise InvalidArgument(f"Augment: a tensor of shape {tuple(x.shape)} for {len(draws)} indices (batch dim first)")
        if not draws:
            return x
        wants = x.is_floating_point() if self.intensity_keys is None else key in self.intensity_keys
        if x.is_cuda and _USE_FUSED:
            out = self._fused(x, wants, draws, cache)
            if out is not None:
                return out
        dicts = cache.get("dicts")
        if dicts is None:
            dicts = cache["dicts"] = self._dicts(draws)
        x = self._geometry(x, dicts, cache)
        return self._intensity(x, dicts, cache) if wants else x

    # --- the fused CUDA op ---------------------------------------------------------------

    def _map_word(self, mask: int, k: int) -> int:
        """The op's axis-map word of a draw (dev/ops.md): per output axis -e (e = 1.._span),
        byte e-1 = source axis counted from the end | 0x10 when reversed."""
        hit = self._map_words.get((mask, k))
        if hit is None:
            hit = 0
            span = self._span
            for d, (src, rev) in enumerate(self._axis_map(self._flip_axes_of(mask), k, span)):
                hit |= ((span - src) | (0x10 if rev else 0)) << (8 * (span - d - 1))
            self._map_words[(mask, k)] = hit
        return hit

    def _fused_params(self, draws: list[tuple[int, int, float, float, int]], device: torch.device) -> torch.Tensor | None:
        """The op's [B, 3] int64 table (dev/ops.md): on the CPU for batches of at most
        _ARG_ROWS samples (the op passes it by value in the launch: no copy), else on `device`
        (one pinned copy per call). None when a scale or shift does not fit a float32 (the
        torch path then gives inf)."""
        pack, size = _PARAM_ROW.pack_into, _PARAM_ROW.size
        buf = bytearray(size * len(draws))
        words, no_shift = self._map_words, self.shift is None
        try:
            for r, (mask, k, scale, shift, seed) in enumerate(draws):
                word = words.get((mask, k))
                if word is None:
                    word = self._map_word(mask, k)
                # shift -0.0 when off: y + -0.0 is y, bit for bit
                pack(buf, size * r, scale, -0.0 if no_shift else shift, *_noise_key(seed), word)
        except OverflowError:
            return None
        table = torch.frombuffer(buf, dtype=torch.int64).view(len(draws), 3)
        return table if len(draws) <= _ARG_ROWS else _to_device(table, device)

    # --- fused into the pipeline's assemble (CropDataset) -------------------------------------
    #
    # The dataset pushes each sample with its draw as a transform (`push_words`); the pipeline
    # applies it where it makes the batch (the GPU assemble kernel; on CPU-made batches, the
    # pipeline's workers once the sample is assembled), so the batch arrives augmented: no
    # pass over it here.

    def _wants(self, key: Any, floating: bool) -> bool:
        """Whether the tensor of `key` (dict key, tuple position or None) gets intensity."""
        return floating if self.intensity_keys is None else key in self.intensity_keys

    def fusable(self, shape: Sequence[int], key: Any, floating: bool) -> bool:
        """Whether a pipeline making samples of `shape` (batch dim excluded) can apply these
        draws itself, with the values this Augment gives on the batch: the axes exist, turns
        have a square plane, intensity only on floating outputs, and scale and shift fit a
        float32 (else the batch path's errors and infs apply)."""
        nd = len(shape)
        if self._span > nd or nd > 8:
            return False
        if self.rot90_plane is not None and shape[self.rot90_plane[0]] != shape[self.rot90_plane[1]]:
            return False
        intensity = self._wants(key, floating) and (self.scale is not None or self.shift is not None or self.noise_std > 0)
        if intensity and not floating:
            return False
        if intensity and self.noise_std > 0 and math.prod(shape) >= 2**32:
            return False
        limit = 3.4028234663852886e38
        return all(abs(v) <= limit for r in (self.scale, self.shift) if r is not None for v in r)

    def push_words(self, draws: list[tuple[int, int, float, float, int]], key: Any, floating: bool) -> list[tuple[int, int, int, int]]:
        """Per draw (`_draws`; one list serves every key of a batch): the 4 words of its
        pipeline transform (dev/ops.md push_many): scale | shift << 32 (float32 bits),
        g | b << 32, the axis map, noise_factor (float32 bits of -2 * noise_std**2) |
        intensity << 32."""
        intensity = self._wants(key, floating) and (self.scale is not None or self.shift is not None or self.noise_std > 0)
        words, maps = self._map_words, []
        for mask, k, _, _, _ in draws:
            word = words.get((mask, k))
            maps.append(word if word is not None else self._map_word(mask, k))
        if not intensity:  # geometry alone: the map word (the other words are not read)
            return [(0, 0, m, 0) for m in maps]
        factor = -2.0 * self.noise_std * self.noise_std
        no_shift = self.shift is None
        flat: list[Any] = []
        for (mask, k, scale, shift, seed), m in zip(draws, maps):
            flat += (scale, -0.0 if no_shift else shift, *_noise_key(seed), m, factor, 1)
        n = len(draws)
        # one pack for the batch, read back as 4 int64 words per sample
        q = memoryview(struct.pack("<" + _PUSH_ROW.format.lstrip("<") * n, *flat)).cast("q")
        return [tuple(q[4 * r:4 * r + 4]) for r in range(n)]

    def _fused(self, x: torch.Tensor, wants: bool, draws: list[tuple[int, int, float, float, int]],
               cache: dict[Any, Any]) -> torch.Tensor | None:
        """`x` augmented by the op damacy::augment (one kernel), or None where the torch path
        must do it: no CUDA build of the op, x requiring grad, intensity on a non-float dtype,
        more than 8 sample dims, samples of 2**32 elements or more."""
        op = _fused_op()
        if op is None or (x.requires_grad and torch.is_grad_enabled()):  # the op has no backward
            return None
        moves = any(d[0] or d[1] for d in draws)
        intensity = wants and (self.scale is not None or self.shift is not None or self.noise_std > 0)
        if not moves and not intensity:
            return x
        if intensity and x.dtype not in _FUSED_FLOATS:
            return None
        if (not intensity and (x.is_complex() or x.element_size() not in (1, 2, 4, 8))) or x.dim() - 1 > 8 or self._span > 8:
            return None
        if math.prod(x.shape[1:]) >= 2**32:
            return None
        if moves:
            self._check_geometry(x, any(d[1] for d in draws))
            x = _dense(x)[0]  # as the torch path (the op's output then has x's strides)
        key = ("params", x.device)
        params = cache.get(key, False)
        if params is False:
            params = cache[key] = self._fused_params(draws, x.device)
        if params is None:
            return None
        return _ops.call(op, x, params, self.noise_std if intensity else 0.0, intensity, drain=False)

    def __call__(self, batch: Any, index: Sequence[int] | torch.Tensor | None = None, epoch: int = 0) -> Any:
        first = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0] if isinstance(batch, (tuple, list)) else batch
        n = int(first.shape[0])
        draws = self._draws(range(n) if index is None else index, epoch)
        # Per call: the draws as dicts (torch path), index maps, per-sample tables and noise
        # shared by the tensors of the batch with the same layout (an image and its label
        # share one index map), the fused op's parameter table (one for every tensor).
        cache: dict[Any, Any] = {}
        if isinstance(batch, Mapping):
            return {k: self._one(v, k, draws, cache) for k, v in batch.items()}
        if isinstance(batch, (tuple, list)):
            return type(batch)(self._one(v, i, draws, cache) for i, v in enumerate(batch))
        return self._one(batch, None, draws, cache)


def _dense(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """`x` and its memory order (axes outermost first) when it is a permutation of a
    contiguous tensor; else (a slice, an expand) `x` made contiguous, as empty_like would."""
    perm = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    if x.permute(perm).is_contiguous():
        return x, perm
    return x.contiguous(), list(range(x.dim()))


# --- fused op ----------------------------------------------------------------------------

# Tests set it to False to run the torch path on CUDA (the fused op's reference).
_USE_FUSED = True
_FUSED_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# A parameter row of damacy::augment (dev/ops.md): float32 scale, shift | uint32 g, b | map.
_PARAM_ROW = struct.Struct("<ffIIQ")
# A pipeline transform (push_words): the row above, then float32 noise_factor | uint32 flags.
_PUSH_ROW = struct.Struct("<ffIIQfI")
# Batches up to this many samples pass the table on the CPU (gpu_augment.h kAugmentArgRows).
_ARG_ROWS = 128
_fused_state: list[Any] = []


def _fused_op() -> Any:
    """torch.ops.damacy.augment when this build has its CUDA kernel, else None (once)."""
    if not _fused_state:
        op = None
        try:
            ops = _ops.ops()
            if hasattr(ops, "augment") and torch._C._dispatch_has_kernel_for_dispatch_key("damacy::augment", "CUDA"):
                op = ops.augment.default
        except (ImportError, AttributeError, RuntimeError):  # no library, or a torch without the query
            pass
        _fused_state.append(op)
    return _fused_state[0]


# --- noise -------------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF
# Chris Wellons' hash-prospector 32-bit mixer [16 21f0aaad 15 735a2d97 15] ("lowbias32",
# improved constants). Both multipliers are below 2**31, so a 32-bit value times one of them
# stays below 2**63: int64 torch ops compute it exactly on every device, with no overflow.
_MIX_MUL = (0x21F0AAAD, 0x735A2D97)
# Elements per piece of the CPU noise draw: its int64 temporaries (8 bytes each, a few alive
# at once) stay in the cache. 2**15..2**20 were within noise of each other on the dev VM, one
# piece per batch of 32 x 32x64x64 was 2-3x slower.
_CPU_PIECE = 2**17


def _noise_key(noise_seed: int) -> tuple[int, int]:
    """The contract's (g, b) of a sample: an odd multiplier below 2**31 and an offset below
    2**31, from 61 of the draw's 63 bits."""
    return ((noise_seed & 0x3FFFFFFF) << 1) | 1, (noise_seed >> 30) & 0x7FFFFFFF


def _normals(mul: torch.Tensor, add: torch.Tensor, j0: int, j1: int, std: float, out: torch.Tensor | None = None,
             counter: torch.Tensor | None = None, polar: bool = False) -> torch.Tensor:
    """`std` times the contract's normals z_j0..z_j1-1 (module docstring; j0 even) for B
    samples at once: mul (g) and add (b) are [B, 1] int64 on the device; returns
    [B, j1 - j0] float32 (written into `out` when given). `counter`: arange(>= j1 - j0),
    int64, to reuse across calls. `polar`: the pairs (r cos, r sin) by one torch.polar
    (one kernel on CUDA; on the CPU it is not vectorised, 2.5x slower than cos and sin).
    A fixed number of elementwise ops, whatever B."""
    pairs = (j1 - j0 + 1) // 2
    if counter is None:
        counter = torch.arange(2 * pairs, dtype=torch.int64, device=mul.device)
    h = counter[:2 * pairs] * mul  # [B, 2 * pairs]; + j0 * g + b below: < 2**63 (j < 2**32, g and b < 2**31)
    h += add + j0 * mul if j0 else add
    h &= _MASK32
    h ^= h >> 16
    h *= _MIX_MUL[0]
    h &= _MASK32
    h ^= h >> 15
    h *= _MIX_MUL[1]
    h &= _MASK32
    h ^= h >> 15
    # (k + 0.5) / 2**23 with k < 2**23: exact in float32, in (0, 1)
    u = (h >> 9).to(torch.float32).add_(0.5).mul_(2.0 ** -23).view(-1, pairs, 2)
    r = u[..., 0].log().mul_(-2.0 * std * std).sqrt_()  # std * sqrt(-2 ln u)
    theta = u[..., 1].mul(2.0 * math.pi)
    even = 2 * pairs == j1 - j0
    z = out.view(-1, pairs, 2) if out is not None and even else torch.empty(u.shape, dtype=torch.float32, device=mul.device)
    if polar:
        torch.polar(r, theta, out=torch.view_as_complex(z))
    else:
        torch.mul(r, theta.cos(), out=z[..., 0])
        torch.mul(r, theta.sin_(), out=z[..., 1])
    z = z.view(-1, 2 * pairs)
    z = z if even else z[:, :j1 - j0]
    if out is not None and not even:
        out.copy_(z)
    return z if out is None else out


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    # From pinned memory: a copy from pageable memory makes the host wait for the stream, so
    # the caller could not run ahead of the GPU.
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t if t.device == device else t.to(device)

