"""What training loops need beyond crops (issue 15): on_error, padding modes, transforms,
label-aware sampling, channels. Every value is checked against numpy on the same boxes
(the arrays are written by zarr-python from numpy arrays kept here).

Arrays (written per module):
- "img": uint16 shape=[16,16,16], chunk=[4,4,4] (zstd, unsharded): 64 chunk files, fill 7;
  "bad": the same with chunk c/0/0/0 replaced by random bytes (a DecodeError).
- "lbl": uint8 labels 0/1/2 of "img", chunk=[8,8,8]: 8 chunk files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from zarr.codecs import ZstdCodec

import damacy
from damacy import Config, Pipeline, Sample

SHAPE = (16, 16, 16)
FILL = 7


def _write(path: Path, values: np.ndarray, chunks, fill=0) -> str:
    arr = zarr.create_array(str(path), shape=values.shape, chunks=chunks, dtype=values.dtype, fill_value=fill,
                            compressors=ZstdCodec(level=1), zarr_format=3)
    arr[...] = values
    return str(path)


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    root = tmp_path_factory.mktemp("damacy-training")
    rng = np.random.default_rng(15)
    img = rng.integers(0, 1000, SHAPE, dtype=np.uint16)
    lbl = np.digitize(img, [600, 900]).astype(np.uint8)  # 0: 60%, 1: 30%, 2: 10%
    out = {"img": _write(root / "img.zarr", img, (4, 4, 4), FILL), "lbl": _write(root / "lbl.zarr", lbl, (8, 8, 8))}
    out["bad"] = _write(root / "bad.zarr", img, (4, 4, 4), FILL)
    chunk = root / "bad.zarr" / "c" / "0" / "0" / "0"
    chunk.write_bytes(rng.integers(0, 256, chunk.stat().st_size, dtype=np.uint8).tobytes())
    return out, img, lbl


def _touches_bad_chunk(box) -> bool:
    return all(b < 4 for b, _ in box)


def _boxes(n, k=4, seed=0, lo=0, hi=None):
    rng = np.random.default_rng(seed)
    hi = SHAPE[0] - k if hi is None else hi
    out = []
    for _ in range(n):
        s = rng.integers(lo, hi + 1, 3)
        out.append([(int(b), int(b) + k) for b in s])
    return out


def _crop(a: np.ndarray, box) -> np.ndarray:
    return a[tuple(slice(b, e) for b, e in box)]


# --------------------------------------------------------------------------------------
# on_error
# --------------------------------------------------------------------------------------


def _cfg(**kw):
    base = dict(samples_per_batch=4, sample_shape=(4, 4, 4), dtype="f32", n_io_threads=2)
    base.update(kw)
    return Config(**base)


def _bad_boxes():
    # 4 batches of 4; batch 1 has one bad sample, batch 2 two, batch 3 all four.
    good = [[(4, 8), (4, 8), (4, 8)], [(8, 12), (0, 4), (2, 6)], [(12, 16), (12, 16), (12, 16)], [(0, 4), (5, 9), (0, 4)]]
    bad = [[(0, 4), (0, 4), (0, 4)], [(1, 5), (0, 4), (2, 6)], [(2, 6), (3, 7), (0, 4)], [(3, 7), (1, 5), (1, 5)]]
    return good + [good[0], bad[0], good[1], good[2]] + [bad[1], good[3], bad[2], good[0]] + bad


def test_on_error_raise_is_the_default(arrays):
    uris, _, _ = arrays
    with Pipeline(_cfg()) as p:
        p.push(Sample(uris["bad"], b) for b in _bad_boxes())
        p.pop()
        for _ in range(3):  # each batch fails on its own; the pipeline goes on
            with pytest.raises(damacy.DecodeError, match=r"chunk \[0, 0, 0\]"):
                p.pop()


@pytest.mark.parametrize("policy", ["fill", "skip"])
def test_on_error_values_against_numpy(arrays, policy, caplog):
    uris, img, _ = arrays
    boxes = _bad_boxes()
    with caplog.at_level(logging.WARNING, logger="damacy"), Pipeline(_cfg(), on_error=policy) as p:
        p.push(Sample(uris["bad"], b) for b in boxes)
        got = []
        for _ in range(3 if policy == "skip" else 4):
            t, samples = p.pop_with_samples()
            got.append((t, samples))
        with pytest.raises(damacy.TryAgain):
            p.pop(timeout_s=0.2)
        stats = p.stats()["on_error"]
    for g, (t, samples) in enumerate(got):
        rows = boxes[4 * g : 4 * g + 4]
        for r, box in enumerate(rows):
            if not _touches_bad_chunk(box):
                expected, name = _crop(img, box), box
            elif policy == "fill":
                expected, name = np.full((4, 4, 4), FILL), box
            else:  # the next good row of the batch, wrapping around
                good = [i for i, b in enumerate(rows) if not _touches_bad_chunk(b)]
                j = next((i for i in good if i > r), good[0])
                expected, name = _crop(img, rows[j]), rows[j]
            np.testing.assert_array_equal(t[r].numpy(), expected.astype(np.float32), err_msg=f"batch {g} row {r}")
            assert samples[r].aabb == tuple(name)
    assert stats["failed_batches"] == 3
    if policy == "skip":
        assert stats["skipped_samples"] == 7 and stats["dropped_batches"] == 1
    else:
        assert stats["filled_samples"] == 7
    logged = [r for r in caplog.records if r.name == "damacy" and "on_error" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]  # one bad chunk: one line


def test_on_error_does_not_hide_caller_errors(arrays):
    uris, _, _ = arrays
    with Pipeline(_cfg(), on_error="skip") as p:
        p.push(Sample(uris["img"], [(14, 18), (0, 4), (0, 4)]) for _ in range(4))  # outside: out_of_bounds="error"
        with pytest.raises(damacy.InvalidArgument):
            p.pop()
    with pytest.raises(damacy.InvalidArgument):
        Pipeline(_cfg(), on_error="ignore")


# --------------------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------------------


def _padded_oracle(a: np.ndarray, box, mode: str) -> np.ndarray:
    """numpy.pad of the whole array by enough to hold `box`, then the box cut out."""
    pad = [(max(0, -b), max(0, e - n)) for (b, e), n in zip(box, a.shape)]
    big = np.pad(a, pad, mode=mode) if mode != "constant" else np.pad(a, pad, constant_values=FILL)
    return big[tuple(slice(b + p0, e + p0) for (b, e), (p0, _) in zip(box, pad))]


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_padding_modes_against_numpy_pad(arrays, mode):
    uris, img, _ = arrays
    rng = np.random.default_rng(3)
    k = (6, 20, 5)  # dim 1 is larger than the array (16): both sides padded
    boxes = []
    for _ in range(24):
        boxes.append([(int(rng.integers(-40, 50)), 0) for _ in k])
        boxes[-1] = [(b, b + kk) for (b, _), kk in zip(boxes[-1], k)]
    boxes[0] = [(2, 8), (-2, 18), (3, 8)]
    boxes[1] = [(0, 6), (0, 20), (11, 16)]  # inside along dims 0 and 2
    cfg = _cfg(samples_per_batch=4, sample_shape=k, out_of_bounds="fill")
    with Pipeline(cfg, padding=mode) as p:
        p.push(Sample(uris["img"], b) for b in boxes)
        for g in range(len(boxes) // 4):
            t, samples = p.pop_with_samples()
            for r in range(4):
                box = boxes[4 * g + r]
                assert samples[r].aabb == tuple(box)
                np.testing.assert_array_equal(t[r].numpy(), _padded_oracle(img, box, mode).astype(np.float32),
                                              err_msg=f"{mode} {box}")


def test_padding_needs_fill(arrays):
    with pytest.raises(damacy.InvalidArgument, match="out_of_bounds"):
        Pipeline(_cfg(), padding="reflect")
    with pytest.raises(damacy.InvalidArgument):
        Pipeline(_cfg(out_of_bounds="fill"), padding="wrap")


# --------------------------------------------------------------------------------------
# damacy.data: on_error, padding in CropDataset
# --------------------------------------------------------------------------------------

from torch.utils.data import DataLoader  # noqa: E402

import damacy.transforms  # noqa: E402
from damacy.data import Augment, CropDataset, GridCrops, LabelCrops, RandomCrops  # noqa: E402


@pytest.mark.parametrize("policy", ["skip", "fill"])
def test_dataset_on_error_keeps_keys_aligned(arrays, policy):
    uris, img, lbl = arrays
    ds = CropDataset([{"image": uris["bad"], "label": uris["lbl"]}], RandomCrops((4, 4, 4), seed=1, num_samples=64),
                     samples_per_batch=8, dtype={"image": "f32", "label": "i64"}, return_meta=True, on_error=policy,
                     config=Config(n_io_threads=2))
    n_bad = n_batches = 0
    for batch, meta in DataLoader(ds, batch_size=None):
        n_batches += 1
        for r in range(batch["image"].shape[0]):
            box = [tuple(x) for x in meta["box"][r].tolist()]
            limg, llbl = _crop(img, box), _crop(lbl, box)
            np.testing.assert_array_equal(batch["label"][r].numpy(), llbl)  # labels always real
            if _touches_bad_chunk(box):
                assert policy == "fill" and r in meta["bad"].tolist()
                np.testing.assert_array_equal(batch["image"][r].numpy(), np.full((4, 4, 4), FILL, np.float32))
            else:
                np.testing.assert_array_equal(batch["image"][r].numpy(), limg.astype(np.float32))
        n_bad += len(meta["bad"])
    assert n_bad > 0
    key = "skipped_samples" if policy == "skip" else "filled_samples"
    assert ds.stats()["on_error"][key] == n_bad
    assert n_batches + ds.stats()["on_error"].get("dropped_batches", 0) == 8


def test_dataset_grid_reflect_padding(arrays):
    uris, img, _ = arrays
    ds = CropDataset(uris["img"], GridCrops((6, 6, 6), stride=(4, 4, 4), edge="pad"), samples_per_batch=4,
                     padding="reflect", return_meta=True, config=Config(n_io_threads=2))
    seen = 0
    for batch, meta in DataLoader(ds, batch_size=None):
        for r in range(batch.shape[0]):
            box = [tuple(x) for x in meta["box"][r].tolist()]
            np.testing.assert_array_equal(batch[r].numpy(), _padded_oracle(img, box, "reflect").astype(np.float32))
            seen += any(e > 16 for _, e in box)
    assert seen > 0


# --------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------


def _np_lowbias32(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h = (h.astype(np.uint64) * np.uint64(0x21F0AAAD) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    h ^= h >> np.uint32(15)
    h = (h.astype(np.uint64) * np.uint64(0x735A2D97) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    h ^= h >> np.uint32(15)
    return h


def _np_noise(noise_seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Augment's noise contract (damacy/transforms.py docstring) written out in numpy, float64,
    element by element: a counter per C-order element, lowbias32, Box-Muller over pairs."""
    return _np_noise_gb(2 * (noise_seed % 2**30) + 1, (noise_seed >> 30) % 2**31, shape)


def _np_noise_gb(g: int, b: int, shape: tuple[int, ...]) -> np.ndarray:
    """The same from the counter's (g, b)."""
    n = int(np.prod(shape))
    j = np.arange(n + n % 2, dtype=np.uint64)
    u = ((_np_lowbias32((j * np.uint64(g) + np.uint64(b)) & np.uint64(0xFFFFFFFF)) >> np.uint32(9)).astype(np.float64) + 0.5) / 2**23
    r, theta = np.sqrt(-2 * np.log(u[0::2])), 2 * np.pi * u[1::2]
    z = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1).reshape(-1)
    return z[:n].reshape(shape)


def _np_augment(x: np.ndarray, d: dict, aug: Augment, intensity: bool) -> np.ndarray:
    y = np.flip(x, d["flip"]) if d["flip"] else x
    if d["k"]:
        y = np.rot90(y, d["k"], aug.rot90_plane)
    y = y.astype(np.float32) if intensity else y
    if intensity:
        y = y * np.float32(d["scale"]) + np.float32(d["shift"])
        if aug.noise_std:
            y = y + aug.noise_std * _np_noise(d["noise_seed"], y.shape)
    return np.ascontiguousarray(y)


def _np_splitmix_draws(aug: Augment, index: int, epoch: int) -> dict:
    """The module docstring's draws written out (an independent reading of the contract)."""
    m64, golden = 2**64 - 1, 0x9E3779B97F4A7C15

    def mix64(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        return z ^ (z >> 31)

    def step(h, v):
        return mix64((h + v + golden) & m64)

    key = step(step(step(0, aug.seed), epoch), index)
    w = [None] + [mix64((key + f * golden) % 2**64) for f in range(1, 6)]
    scale = aug.scale[0] + (aug.scale[1] - aug.scale[0]) * (w[1] >> 32) / 2**32 if aug.scale else 1.0
    shift = aug.shift[0] + (aug.shift[1] - aug.shift[0]) * (w[1] % 2**32) / 2**32 if aug.shift else 0.0
    flip = tuple(a for t, a in enumerate(aug.flip_axes) if (w[2 + t // 3] >> (16 * (t % 3))) % 2**16 < aug.p_flip * 2**16)
    return {"flip": flip, "k": (w[2] >> 62) if aug.rot90_plane else 0, "scale": scale, "shift": shift, "noise_seed": key >> 1}


def test_augment_draws_follow_the_contract():
    """params() is the documented splitmix64 draw, and its fields are distributed as asked."""
    aug = Augment(seed=-3, flip_axes=(-1, -2, -3, -4, -5), p_flip=0.3, scale=(0.5, 2.0), shift=(-1, 3), noise_std=1.0)
    index = [0, 1, 2, 7, 10**12, 2**63 + 5, -1]
    for epoch in (0, 4, -2):
        assert aug.params(index, epoch) == [_np_splitmix_draws(aug, i, epoch) for i in index]
        assert aug.params(torch.tensor(index[:5]), epoch) == aug.params(index[:5], epoch)
    draws = aug.params(range(4000), 1)
    flips = np.array([[a in d["flip"] for a in aug.flip_axes] for d in draws])
    assert np.all(np.abs(flips.mean(0) - 0.3) < 4 * np.sqrt(0.21 / 4000))
    assert abs(np.corrcoef(flips.T)[np.triu_indices(5, 1)]).max() < 0.1  # lanes independent
    ks = np.bincount([d["k"] for d in draws], minlength=4)
    assert ks.size == 4 and np.all(np.abs(ks / 4000 - 0.25) < 0.03)
    sc = np.array([d["scale"] for d in draws])
    sh = np.array([d["shift"] for d in draws])
    assert 0.5 <= sc.min() and sc.max() < 2.0 and abs(sc.mean() - 1.25) < 0.03 and -1 <= sh.min() and sh.max() < 3
    assert abs(np.corrcoef(sc, sh)[0, 1]) < 0.1
    assert len({d["noise_seed"] for d in draws}) == 4000 and all(0 <= d["noise_seed"] < 2**63 for d in draws)
    assert Augment(seed=0, p_flip=0.0).params(range(50))[0]["flip"] == () and \
        all(d["flip"] == (-2, -1) for d in Augment(seed=0, p_flip=1.0).params(range(50)))


def test_augment_against_numpy_and_consistent(arrays):
    uris, img, lbl = arrays
    aug = Augment(seed=5, flip_axes=(-3, -2, -1), rot90_plane=(-2, -1), scale=(0.5, 2.0), shift=(-10, 10), noise_std=3.0)
    ds = CropDataset([{"image": uris["img"], "label": uris["lbl"]}], RandomCrops((4, 6, 6), seed=2, num_samples=40),
                     samples_per_batch=8, dtype={"image": "f32", "label": "u8"}, transform=aug, return_meta=True,
                     config=Config(n_io_threads=2))
    draws = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        for batch, meta in DataLoader(ds, batch_size=None):
            params = aug.params(meta["index"], epoch)
            draws += [(d["flip"], d["k"]) for d in params]
            for r, d in enumerate(params):
                box = [tuple(x) for x in meta["box"][r].tolist()]
                expected_img = _np_augment(_crop(img, box), d, aug, True)
                expected_lbl = _np_augment(_crop(lbl, box), d, aug, False)
                np.testing.assert_allclose(batch["image"][r].numpy(), expected_img, rtol=1e-6, atol=1e-3)
                np.testing.assert_array_equal(batch["label"][r].numpy(), expected_lbl)  # geometry only
    assert len(set(draws)) > 10  # flips and turns actually vary


def test_augment_is_deterministic_per_seed_and_sample():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)  # [B, C, Y, X]: channels ride along
    aug = Augment(seed=1, scale=(0.9, 1.1), noise_std=0.5)
    a = aug(x, index=[10, 11], epoch=3)
    assert torch.equal(a, aug(x, index=[10, 11], epoch=3))
    # sample 11 augmented alone, in another batch position, is the same
    assert torch.equal(aug(x[1:], index=[11], epoch=3)[0], a[1])
    assert not torch.equal(a, Augment(seed=2, scale=(0.9, 1.1), noise_std=0.5)(x, index=[10, 11], epoch=3))
    assert not torch.equal(a, aug(x, index=[10, 11], epoch=4))
    # integer tensors get geometry only, also inside tuples
    y = torch.arange(2 * 5 * 5).view(2, 5, 5)
    f, l = Augment(seed=1, scale=(2, 3))((x[:, 0], y), index=[0, 1])
    for r, d in enumerate(Augment(seed=1, scale=(2, 3)).params([0, 1])):
        np.testing.assert_array_equal(l[r].numpy(), _np_augment(y[r].numpy(), d, Augment(), False))
    with pytest.raises(damacy.InvalidArgument, match="square"):
        Augment(seed=0, p_flip=0.0)(torch.zeros(4, 3, 5), index=[0, 1, 2, 3])


@pytest.mark.parametrize("piece", [None, 64, 190])
def test_augment_noise_contract(monkeypatch, piece):
    """The noise is the documented counter-based draw (numpy above), per sample whatever the
    batch around it (also when the CPU draws it in pieces), standard normal, and
    independent between samples and elements."""
    if piece is not None:
        monkeypatch.setattr(damacy.transforms, "_CPU_PIECE", piece)
    aug = Augment(seed=11, flip_axes=None, rot90_plane=None, noise_std=1.0)
    x = torch.zeros(6, 3, 7, 9)  # odd sample size (189): the last pair drops its sine
    index = [5, 0, 123456789, 2**40, 7, 8]
    z = aug(x, index=index, epoch=2)
    for r, d in enumerate(aug.params(index, 2)):
        np.testing.assert_allclose(z[r].numpy(), _np_noise(d["noise_seed"], (3, 7, 9)), rtol=0, atol=2e-5)
    # more than one default CPU piece (2**15 elements) per sample, odd
    aug2 = Augment(seed=4, flip_axes=None, rot90_plane=None, noise_std=2.0)
    z = aug2(torch.zeros(2, 3, 101, 111), index=[3, 9])
    for r, d in enumerate(aug2.params([3, 9])):
        np.testing.assert_allclose(z[r].numpy(), 2.0 * _np_noise(d["noise_seed"], (3, 101, 111)), rtol=0, atol=4e-5)
    if piece is not None:
        return
    # the CUDA path's formulation (torch.polar for the pairs), here on the CPU
    g, b = (torch.tensor([[v] for v in col]) for col in zip(*(damacy.transforms._noise_key(s) for s in (1, 2**62 + 5))))
    for polar in (False, True):
        for j0, j1 in ((0, 189), (64, 190), (2, 3)):
            z = damacy.transforms._normals(g, b, j0, j1, 1.5, polar=polar)
            for r, seed in enumerate((1, 2**62 + 5)):
                np.testing.assert_allclose(z[r].numpy(), 1.5 * _np_noise(seed, (j1,))[j0:], rtol=0, atol=3e-5, err_msg=f"{polar} {j0}")
    big = Augment(seed=3, noise_std=1.0)(torch.zeros(4, 64, 64, 64), index=[0, 1, 2, 3])
    flat = big.view(4, -1).double()
    assert abs(float(flat.mean())) < 0.01 and abs(float(flat.std()) - 1) < 0.01
    assert 0.012 < float((flat.abs() > 2.5).double().mean()) < 0.0128  # P(|z| > 2.5) = 0.01242
    corr = torch.corrcoef(flat)  # samples
    assert float((corr - torch.eye(4, dtype=torch.float64)).abs().max()) < 0.01
    assert abs(float((flat[:, 1:] * flat[:, :-1]).mean())) < 0.01  # neighbours


def _np_batch_reference(batch: dict, aug: Augment, index: list[int], epoch: int) -> dict:
    """Augment applied sample by sample with numpy: the geometry to every key, the intensity
    to the floating-point keys."""
    out = {k: [] for k in batch}
    for r, d in enumerate(aug.params(index, epoch)):
        for k, v in batch.items():
            a = v[r].numpy() if v.dtype != torch.bfloat16 else v[r].float().numpy()
            out[k].append(_np_augment(a, d, aug, v.is_floating_point()))
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("case", range(12))
def test_augment_batched_against_per_sample_numpy(case):
    """Random batches (channels, dtypes, memory formats, flip axes, turn planes): the batched
    Augment gives numpy's per-sample result in every key, keeps dtype and memory format, and
    a sample augmented alone equals its row of the batch."""
    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 17))
    plane = int(rng.integers(2, 7))
    z = int(rng.integers(1, 6))
    chans = int(rng.integers(1, 4))
    flip_axes = tuple(int(a) for a in rng.choice([-1, -2, -3], size=int(rng.integers(0, 4)), replace=False))
    rot = [(-2, -1), (-1, -2), (-3, -1), None][case % 4]
    shape = (z, plane, plane) if rot != (-3, -1) else (plane, z, plane)
    aug = Augment(seed=case, flip_axes=flip_axes, p_flip=float(rng.uniform(0.3, 0.7)), rot90_plane=rot,
                  scale=(0.5, 2.0) if case % 3 else None, shift=(-5, 5) if case % 2 else None,
                  noise_std=[0.0, 0.5][case % 2])
    img = torch.from_numpy(rng.normal(size=(n, chans) + shape).astype(np.float32))
    batch = {"image": img, "label": torch.from_numpy(rng.integers(0, 200, size=(n,) + shape).astype(np.uint8)),
             "ids": torch.from_numpy(rng.integers(-2**40, 2**40, size=(n,) + shape)),
             "half": img[:, 0].to(torch.float16), "cl": img.contiguous(memory_format=torch.channels_last_3d),
             "sliced": torch.cat([img, img], -1)[..., ::2]}
    index = [int(i) for i in rng.choice(10**6, size=n, replace=False)]
    epoch = int(rng.integers(0, 5))
    out = aug(batch, index=index, epoch=epoch)
    want = _np_batch_reference(batch, aug, index, epoch)
    for k in batch:
        got = out[k]
        assert got.dtype == batch[k].dtype and got.shape == batch[k].shape, k
        if batch[k].is_floating_point():
            tol = 2e-2 if got.dtype == torch.float16 else 1e-4
            np.testing.assert_allclose(got.float().numpy(), want[k].astype(np.float32), rtol=tol, atol=tol, err_msg=k)
        else:
            np.testing.assert_array_equal(got.numpy(), want[k], err_msg=k)
    assert out["cl"].is_contiguous(memory_format=torch.channels_last_3d) and out["image"].is_contiguous()
    np.testing.assert_array_equal(out["cl"].numpy(), out["image"].numpy())
    r = int(rng.integers(0, n))
    alone = aug({k: v[r:r + 1] for k, v in batch.items()}, index=[index[r]], epoch=epoch)
    for k in batch:
        assert torch.equal(alone[k][0], out[k][r]), k
    if any(d["flip"] or d["k"] for d in aug.params(index, epoch)):
        assert not all(torch.equal(out[k], batch[k]) for k in ("label", "ids"))


def _np_augment_op(x: np.ndarray, params: np.ndarray, noise_std: float, intensity: bool) -> np.ndarray:
    """dev/ops.md's damacy::augment written out in numpy, sample by sample: the row's axis map
    as a transpose + flips, float32 `x * scale + shift`, the noise from the row's (g, b)."""
    out = []
    nd = x.ndim - 1
    for r in range(x.shape[0]):
        w0, w1, w2 = (int(v) % 2**64 for v in params[r])
        scale, shift = np.array([w0 % 2**32, w0 >> 32], np.uint32).view(np.float32)
        src, rev = [], []
        for d in range(nd):
            e = nd - d
            code = (w2 >> (8 * (e - 1))) & 0xFF
            src.append(nd - ((code & 0xF) or e))
            rev.append(bool(code & 0x10))
        assert sorted(src) == list(range(nd)), (src, hex(w2))
        y = np.flip(np.transpose(x[r], src), [d for d in range(nd) if rev[d]])
        if intensity:
            y = y.astype(np.float32) * scale + shift
            if noise_std:
                y = y + (noise_std * _np_noise_gb(w1 % 2**32, w1 >> 32, y.shape)).astype(np.float32)
        out.append(np.ascontiguousarray(y))
    return np.stack(out).astype(x.dtype) if out else x.copy()


@pytest.mark.parametrize("case", range(8))
def test_augment_op_table_against_the_torch_path(case):
    """The fused op's parameter table (what Augment hands damacy::augment on CUDA), read by
    the op contract's numpy version above, gives the torch path's values: geometry, scale and
    shift bit for bit, the noise within float rounding. (The op itself: test_cuda_fused_*.)"""
    rng = np.random.default_rng(50 + case)
    n = int(rng.integers(4, 9))
    plane = int(rng.integers(2, 6))
    flip_axes = tuple(int(a) for a in rng.choice([-1, -2, -3, -4], size=int(rng.integers(0, 5)), replace=False))
    rot = [(-2, -1), (-1, -3), (-4, -2), None][case % 4]
    shape = (2, plane, plane, plane) if case % 2 else (plane, 3, plane, plane)
    if rot == (-4, -2):
        shape = (plane, 2, plane, 3)
    aug = Augment(seed=case, flip_axes=flip_axes, p_flip=0.5, rot90_plane=rot, scale=(0.5, 2.0) if case % 3 else None,
                  shift=(-5, 5) if case % 4 != 1 else None, noise_std=[0.0, 0.7][case % 2])
    index = [int(i) for i in rng.choice(10**6, size=n, replace=False)]
    draws = aug._draws(index, case)
    params = aug._fused_params(draws, torch.device("cpu")).numpy()
    assert params.shape == (n, 3) and (params[:, 2].any() or not (flip_axes or rot))  # maps that move
    img = rng.normal(size=(n, 2) + shape).astype(np.float32)  # a channel dim in front
    lbl = rng.integers(-2**40, 2**40, size=(n,) + shape)
    out = aug({"img": torch.from_numpy(img), "lbl": torch.from_numpy(lbl)}, index=index, epoch=case)
    np.testing.assert_array_equal(_np_augment_op(lbl, params, 0.0, False), out["lbl"].numpy())
    want = _np_augment_op(img, params, aug.noise_std, True)
    if aug.noise_std:
        np.testing.assert_allclose(want, out["img"].numpy(), rtol=1e-5, atol=2e-5)
    else:
        np.testing.assert_array_equal(want, out["img"].numpy())


def test_augment_op_fake_kernel():
    """damacy::augment's fake (torch.compile, opcheck): empty_like(x) in x's layout, params checked."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(4, 2, 6, 6).contiguous(memory_format=torch.channels_last)
        y = torch.ops.damacy.augment(x, torch.empty(4, 3, dtype=torch.int64), 0.5, True)
        assert y.shape == x.shape and y.dtype == x.dtype and y.stride() == x.stride()
        with pytest.raises(RuntimeError, match="params must be"):
            torch.ops.damacy.augment(x, torch.empty(3, 3, dtype=torch.int64), 0.5, True)
        with pytest.raises(RuntimeError, match="int64"):
            torch.ops.damacy.augment(x, torch.empty(4, 3, dtype=torch.int32), 0.5, True)


def test_augment_rejects_tensors_without_the_axes():
    with pytest.raises(damacy.InvalidArgument, match="at least 3 dims"):
        Augment(seed=0, flip_axes=(-3,), p_flip=1.0, rot90_plane=None)({"image": torch.zeros(2, 4, 4, 4), "cls": torch.zeros(2, 4)},
                                                                     index=[0, 1])
    with pytest.raises(damacy.InvalidArgument, match="batch dim first"):
        Augment(seed=0)(torch.zeros(3, 4, 4), index=[0, 1])
    # empty batches and empty samples pass through
    full = Augment(seed=0, scale=(1, 2), shift=(0, 1), noise_std=1.0)
    assert full(torch.zeros(0, 4, 4), index=[]).shape == (0, 4, 4)
    assert full(torch.zeros(2, 0, 4, 4), index=[0, 1]).shape == (2, 0, 4, 4)


def test_transform_hook_sees_every_batch(arrays):
    uris, img, _ = arrays
    calls = []

    def hook(batch):
        calls.append(batch.shape)
        return batch * 2

    ds = CropDataset(uris["img"], RandomCrops((4, 4, 4), seed=0, num_samples=12), samples_per_batch=4,
                     transform=[hook, lambda b: b + 1], return_meta=True, config=Config(n_io_threads=2))
    for batch, meta in DataLoader(ds, batch_size=None):
        for r in range(batch.shape[0]):
            box = [tuple(x) for x in meta["box"][r].tolist()]
            np.testing.assert_array_equal(batch[r].numpy(), _crop(img, box).astype(np.float32) * 2 + 1)
    assert len(calls) == 3


# --------------------------------------------------------------------------------------
# label-aware sampling
# --------------------------------------------------------------------------------------


def test_label_crops_ratio_and_centres(arrays):
    uris, img, lbl = arrays
    k = (5, 6, 6)
    n = 3000
    sampler = LabelCrops(k, seed=4, num_samples=n, class_weights={2: 3, 0: 1}, index_block=(4, 8, 8))
    ds = CropDataset([{"image": uris["img"], "label": uris["lbl"]}], sampler, samples_per_batch=8,
                     padding="edge", dtype={"image": "f32", "label": "u8"}, return_meta=True, config=Config(n_io_threads=2))
    ds.build_index()
    classes = []
    for i in range(n):
        _, box = ds.sample_at(i)
        centre = tuple(b + kk // 2 for (b, _), kk in zip(box, k))
        classes.append(int(lbl[centre]))  # numpy: the label at the centre
    classes = np.array(classes)
    assert set(classes.tolist()) <= {0, 2}  # centres lie on a requested class
    frac = (classes == 2).mean()
    assert abs(frac - 0.75) < 4 * np.sqrt(0.75 * 0.25 / n), frac
    # the same seed draws the same crops, another seed others
    again = CropDataset([{"image": uris["img"], "label": uris["lbl"]}],
                        LabelCrops(k, seed=4, num_samples=n, class_weights={2: 3, 0: 1}, index_block=(4, 8, 8)),
                        samples_per_batch=8, padding="edge")
    other = CropDataset([{"image": uris["img"], "label": uris["lbl"]}],
                        LabelCrops(k, seed=5, num_samples=n, class_weights={2: 3, 0: 1}, index_block=(4, 8, 8)),
                        samples_per_batch=8, padding="edge")
    assert [again.sample_at(i) for i in range(50)] == [ds.sample_at(i) for i in range(50)]
    assert [other.sample_at(i) for i in range(50)] != [ds.sample_at(i) for i in range(50)]
    # the batches hold those crops, padded as numpy.pad(mode="edge"), in workers too
    ds2 = CropDataset([{"image": uris["img"], "label": uris["lbl"]}],
                      LabelCrops(k, seed=4, num_samples=48, foreground_ratio=0.5), samples_per_batch=8,
                      padding="edge", dtype={"image": "f32", "label": "u8"}, return_meta=True, config=Config(n_io_threads=2))
    ds2.build_index()
    outside = 0
    for batch, meta in DataLoader(ds2, batch_size=None, num_workers=1):
        for r in range(batch["image"].shape[0]):
            box = [tuple(x) for x in meta["box"][r].tolist()]
            outside += any(b < 0 or e > 16 for b, e in box)
            np.testing.assert_array_equal(batch["image"][r].numpy(), _padded_oracle(img, box, "edge").astype(np.float32))
            np.testing.assert_array_equal(batch["label"][r].numpy(), _padded_oracle(lbl, box, "edge"))
            centre = tuple(b + kk // 2 for (b, _), kk in zip(box, k))
            assert batch["label"][r][tuple(kk // 2 for kk in k)].item() == lbl[centre]
    assert outside > 0


def test_label_crops_index_counts_match_numpy(arrays):
    uris, _, lbl = arrays
    s = LabelCrops((4, 4, 4), class_weights={1: 1}, index_block=(3, 8, 5), per_block=4)  # blocks cross the edges
    idx = s.index(uris["lbl"])
    for c in (0, 1, 2):
        assert idx.total(c) == int((lbl == c).sum())
        for bid, _ in idx.blocks[c]:
            for v in idx.voxels[(c, bid)]:
                assert lbl[v] == c
    with pytest.raises(damacy.InvalidArgument):
        LabelCrops((4, 4, 4))


# --------------------------------------------------------------------------------------
# channels
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel_arrays(tmp_path_factory, arrays):
    uris, img, lbl = arrays
    root = tmp_path_factory.mktemp("damacy-channels")
    first = np.stack([img, 1000 - img]).astype(np.uint16)                  # [c, z, y, x]
    last = np.stack([img, img // 2, img % 7], axis=-1).astype(np.uint16)  # [z, y, x, c]
    unnamed = first.copy()                                              # no dimension_names: leading

    def write(name, values, chunks, names):
        arr = zarr.create_array(str(root / name), shape=values.shape, chunks=chunks, dtype=values.dtype,
                                compressors=ZstdCodec(level=1), zarr_format=3, dimension_names=names)
        arr[...] = values
        return str(root / name)

    out = {"first": write("first.zarr", first, (1, 8, 8, 8), ["c", "z", "y", "x"]),
           "last": write("last.zarr", last, (8, 8, 8, 3), ["z", "y", "x", "channel"]),
           "unnamed": write("unnamed.zarr", unnamed, (2, 8, 8, 8), None),
           "label": uris["lbl"]}
    return out, {"first": first, "last": np.moveaxis(last, -1, 0), "unnamed": unnamed}, lbl


def test_channels_beside_a_label_without(channel_arrays):
    uris, chan_first, lbl = channel_arrays
    aug = Augment(seed=3, flip_axes=(-3, -2, -1))
    ds = CropDataset([uris], RandomCrops((4, 6, 6), seed=9, num_samples=16), samples_per_batch=4,
                     dtype={"first": "f32", "last": "f32", "unnamed": "f32", "label": "u8"}, return_meta=True,
                     transform=aug, config=Config(n_io_threads=2))
    for batch, meta in DataLoader(ds, batch_size=None):
        assert batch["first"].shape == (4, 2, 4, 6, 6) and batch["last"].shape == (4, 3, 4, 6, 6)
        assert batch["label"].shape == (4, 4, 6, 6) and batch["last"].is_contiguous()
        assert meta["box"].shape == (4, 3, 2)
        for r, d in enumerate(aug.params(meta["index"])):
            box = [tuple(x) for x in meta["box"][r].tolist()]
            spatial = (slice(None),) + tuple(slice(b, e) for b, e in box)
            for key in ("first", "last", "unnamed"):
                np.testing.assert_array_equal(batch[key][r].numpy(), _np_augment(chan_first[key][spatial], d, aug, True),
                                              err_msg=key)
            np.testing.assert_array_equal(batch["label"][r].numpy(), _np_augment(_crop(lbl, box), d, aug, False))


# --------------------------------------------------------------------------------------
# label dtypes
# --------------------------------------------------------------------------------------


def test_label_keys_default_to_the_narrowest_dtype(arrays, tmp_path):
    uris, img, lbl = arrays
    wide = np.asarray(lbl, np.int32) * 1000 - 5
    wide_uri = _write(tmp_path / "wide.zarr", wide, (8, 8, 8))
    ds = CropDataset([{"image": uris["img"], "label": uris["lbl"], "mask": wide_uri}],
                     RandomCrops((4, 4, 4), seed=0, num_samples=8), samples_per_batch=4, return_meta=True,
                     config=Config(n_io_threads=2))
    assert ds.dtypes == ["f32", "u8", "i32"]
    for batch, meta in DataLoader(ds, batch_size=None, num_workers=1):
        assert batch["image"].dtype == torch.float32 and batch["label"].dtype == torch.uint8 and batch["mask"].dtype == torch.int32
        for r in range(4):
            box = [tuple(x) for x in meta["box"][r].tolist()]
            np.testing.assert_array_equal(batch["label"][r].numpy(), _crop(lbl, box))
            np.testing.assert_array_equal(batch["mask"][r].numpy(), _crop(wide, box))
    # an explicit dtype wins; "label" on a float array is an error
    assert CropDataset([{"image": uris["img"], "label": uris["lbl"]}], RandomCrops((4, 4, 4), num_samples=8),
                       samples_per_batch=4, dtype={"image": "f32", "label": "i64"}).dtypes == ["f32", "i64"]
    assert CropDataset(uris["img"], RandomCrops((4, 4, 4), num_samples=8), samples_per_batch=4, dtype="label").dtypes == ["i32"]
    with pytest.raises(damacy.InvalidArgument, match="label"):
        CropDataset(_write(tmp_path / "f.zarr", img.astype(np.float32), (8, 8, 8)), RandomCrops((4, 4, 4), num_samples=8),
                    samples_per_batch=4, dtype="label")


def test_a_raised_error_keeps_no_batch_alive():
    """_ops.call raised its typed error from a frame holding it: a reference cycle kept the
    caller's frames (and the batch tensors in them, pinning pipeline buffers) alive until a
    garbage collection; under load pops failed with PoolStarved (bench_dataloader --label)."""
    import gc
    import weakref

    from damacy import _ops

    with Pipeline(Config(samples_per_batch=1, sample_shape=(1,))) as p:
        def f():
            t = torch.zeros(1)
            ref = weakref.ref(t)
            try:
                _ops.call(p._native.pop, 0.0)
            except damacy.TryAgain:
                pass
            return ref

        gc.disable()
        try:
            assert f()() is None
        finally:
            gc.enable()


def test_example_train_augmented_runs(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    try:
        import train_augmented
    finally:
        sys.path.pop(0)
    assert train_augmented.main(["--steps", "3", "--workdir", str(tmp_path), "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "step 3/3 loss" in out and "'label': 'u8'" in out


# --------------------------------------------------------------------------------------
# CUDA (run on the GPU machine: STAGES=augment bash dev/gpu/device_run.sh)
# --------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_augment_and_padding_match_numpy(arrays):
    """On the GPU: padding gathers and Augment run on the batch's device (stream) and give
    numpy's values (noise aside: the CUDA generator draws other numbers; its determinism is
    checked instead)."""
    uris, img, lbl = arrays
    aug = Augment(seed=7, flip_axes=(-3, -2, -1), scale=(0.5, 2.0), shift=(-10, 10))
    ds = CropDataset([{"image": uris["img"], "label": uris["lbl"]}],
                     LabelCrops((5, 6, 6), seed=1, num_samples=32, foreground_ratio=0.5), samples_per_batch=8,
                     device="cuda", padding="reflect", transform=aug, return_meta=True,
                     dtype={"image": "f32", "label": "u8"}, config=Config(n_io_threads=2))
    for batch, meta in DataLoader(ds, batch_size=None):
        assert batch["image"].is_cuda and batch["label"].is_cuda
        for r, d in enumerate(aug.params(meta["index"])):
            box = [tuple(x) for x in meta["box"][r].tolist()]
            np.testing.assert_allclose(batch["image"][r].cpu().numpy(),
                                       _np_augment(_padded_oracle(img, box, "reflect"), d, aug, True), rtol=1e-6, atol=1e-3)
            np.testing.assert_array_equal(batch["label"][r].cpu().numpy(),
                                          _np_augment(_padded_oracle(lbl, box, "reflect"), d, aug, False))
    x = torch.rand(4, 8, 8, device="cuda")
    noisy = Augment(seed=1, noise_std=1.0)
    assert torch.equal(noisy(x, index=[1, 2, 3, 4]), noisy(x, index=[1, 2, 3, 4]))
    assert torch.equal(noisy(x[1:], index=[2, 3, 4]), noisy(x, index=[1, 2, 3, 4])[1:])
    assert 0.8 < float((noisy(x, index=[1, 2, 3, 4]) - Augment(seed=1)(x, index=[1, 2, 3, 4])).std()) < 1.2


@cuda
@pytest.mark.parametrize("case", range(4))
def test_cuda_augment_batched_matches_cpu_and_numpy(case):
    """On the GPU the batched Augment gives the CPU's values (noise included: the same
    counter-based draw, up to float rounding of log/cos/sin), numpy's per sample, the input's
    dtypes and memory formats, and a sample's result does not depend on its batch."""
    rng = np.random.default_rng(100 + case)
    n = [8, 32, 3, 17][case]
    aug = Augment(seed=case, flip_axes=(-3, -2, -1), rot90_plane=(-2, -1), scale=(0.5, 2.0), shift=(-5, 5), noise_std=0.5)
    img = torch.from_numpy(rng.normal(size=(n, 2, 5, 8, 8)).astype(np.float32))
    batch = {"image": img, "label": torch.from_numpy(rng.integers(0, 9, size=(n, 5, 8, 8)).astype(np.uint8)),
             "cl": img.contiguous(memory_format=torch.channels_last_3d), "half": img[:, 0].half()}
    index = [int(i) for i in rng.choice(10**6, size=n, replace=False)]
    on_cpu = aug(batch, index=index, epoch=case)
    on_gpu = aug({k: v.cuda() for k, v in batch.items()}, index=index, epoch=case)
    want = _np_batch_reference(batch, aug, index, case)
    for k in batch:
        got = on_gpu[k]
        assert got.is_cuda and got.dtype == batch[k].dtype and got.stride() == on_cpu[k].stride(), k
        if k == "label":
            assert torch.equal(got.cpu(), on_cpu[k])
            np.testing.assert_array_equal(got.cpu().numpy(), want[k])
        else:
            tol = 2e-2 if k == "half" else 1e-4
            np.testing.assert_allclose(got.cpu().float().numpy(), on_cpu[k].float().numpy(), rtol=tol, atol=tol, err_msg=k)
            np.testing.assert_allclose(got.cpu().float().numpy(), want[k], rtol=tol, atol=tol, err_msg=k)
    assert on_gpu["cl"].is_contiguous(memory_format=torch.channels_last_3d)
    alone = aug({k: v[1:2].cuda() for k, v in batch.items()}, index=index[1:2], epoch=case)
    for k in batch:
        assert torch.equal(alone[k][0], on_gpu[k][1]), k


fused = pytest.mark.skipif(not torch.cuda.is_available() or damacy.transforms._fused_op() is None,
                           reason="needs CUDA and a CUDA build of damacy::augment")


def _count_fused(monkeypatch) -> list[int]:
    """Counts the calls of damacy::augment (so a test sees that the fused path ran)."""
    calls = [0]
    op = damacy.transforms._fused_op()

    def counted(*args):
        calls[0] += 1
        return op(*args)

    monkeypatch.setattr(damacy.transforms, "_fused_state", [counted])
    return calls


FUSED_CASES = [  # (batch, sample shape, dtype, flip_axes, rot90_plane, scale, shift, noise_std)
    (32, (2, 16, 24, 24), torch.float32, (-3, -2, -1), (-2, -1), (0.5, 2.0), (-5, 5), 0.0),   # channel dim
    (32, (2, 16, 24, 24), torch.float32, (-3, -2, -1), (-2, -1), (0.5, 2.0), (-5, 5), 0.7),
    (5, (7, 9, 9), torch.float32, (-3, -1), (-2, -1), None, (-1, 1), 1.5),                  # odd sizes, odd count
    (3, (5, 5), torch.float32, (-2, -1), (-2, -1), (0.9, 1.1), None, 0.3),                  # 2D samples
    (9, (3, 11, 11), torch.float16, (-3, -2, -1), (-2, -1), (0.5, 2.0), (-5, 5), 0.5),
    (9, (3, 11, 11), torch.bfloat16, (-2, -1), (-2, -1), (0.5, 2.0), (-5, 5), 0.0),
    (4, (10, 6, 10), torch.float64, (-1,), (-3, -1), (0.5, 2.0), (-5, 5), 0.4),
    (8, (4, 12, 12), torch.uint8, (-3, -2, -1), (-2, -1), (0.5, 2.0), None, 1.0),            # a label
    (8, (4, 12, 12), torch.int64, (-3, -2, -1), (-2, -1), None, None, 0.0),
    (8, (4, 12, 12), torch.int16, (-2,), (-2, -1), None, None, 0.0),
    (8, (4, 12, 12), torch.int32, (-3, -2, -1), None, None, None, 0.0),
    (2, (1, 1, 3, 3), torch.float32, (-4, -1), (-4, -3), (1.0, 2.0), (0, 1), 2.0),
]


@fused
@pytest.mark.parametrize("case", range(len(FUSED_CASES)))
def test_cuda_fused_augment_matches_the_torch_path(case, monkeypatch):
    """damacy::augment (one kernel per tensor) gives the torch path's values on CUDA and on the
    CPU and the op contract's numpy version: geometry, scale and shift bit for bit, the noise
    within float rounding; dtype, shape and strides as the torch path."""
    n, shape, dtype, flip_axes, rot, scale, shift, std = FUSED_CASES[case]
    rng = np.random.default_rng(case)
    aug = Augment(seed=case, flip_axes=flip_axes, rot90_plane=rot, scale=scale, shift=shift, noise_std=std)
    if dtype.is_floating_point:
        x = torch.from_numpy(rng.normal(scale=10, size=(n,) + shape).astype(np.float32)).to(dtype)
    else:
        x = torch.from_numpy(rng.integers(0, 250, size=(n,) + shape)).to(dtype)
    index = [int(i) for i in rng.choice(10**7, size=n, replace=False)]
    calls = _count_fused(monkeypatch)
    got = aug(x.cuda(), index=index, epoch=case)
    assert calls[0] == 1 and got.is_cuda and got.dtype == dtype and got.shape == x.shape
    torch.cuda.synchronize()
    monkeypatch.setattr(damacy.transforms, "_USE_FUSED", False)
    ref_gpu = aug(x.cuda(), index=index, epoch=case)
    ref_cpu = aug(x, index=index, epoch=case)
    assert calls[0] == 1 and got.stride() == ref_gpu.stride() == ref_cpu.stride()
    params = aug._fused_params(aug._draws(index, case), torch.device("cpu")).numpy()
    xs = x.float().numpy() if dtype == torch.bfloat16 else x.numpy()
    want = _np_augment_op(xs, params, std, dtype.is_floating_point)
    if std == 0 or not dtype.is_floating_point:
        assert torch.equal(got.cpu(), ref_gpu.cpu()) and torch.equal(got.cpu(), ref_cpu)
        if dtype != torch.bfloat16:
            np.testing.assert_array_equal(got.cpu().numpy(), want)
    else:
        tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(dtype, 1e-6)
        for ref in (ref_gpu.cpu(), ref_cpu, torch.from_numpy(want)):
            np.testing.assert_allclose(got.cpu().double().numpy(), ref.double().numpy(), rtol=tol, atol=max(tol, 2e-5))
    if flip_axes or rot:
        assert not torch.equal(got.cpu(), x)


@fused
def test_cuda_fused_augment_batches_and_layouts(monkeypatch):
    """A dict batch: one op per tensor, one parameter table per call, the label geometry-only;
    a channels-last image keeps its layout; a non-contiguous slice is read through its strides;
    samples are independent of their batch."""
    rng = np.random.default_rng(3)
    aug = Augment(seed=9, flip_axes=(-3, -2, -1), rot90_plane=(-2, -1), scale=(0.5, 2.0), shift=(-1, 1), noise_std=0.25)
    img = torch.from_numpy(rng.normal(size=(6, 2, 8, 16, 16)).astype(np.float32)).cuda()
    batch = {"img": img, "lbl": torch.from_numpy(rng.integers(0, 5, size=(6, 8, 16, 16)).astype(np.uint8)).cuda(),
             "cl": img.contiguous(memory_format=torch.channels_last_3d), "sl": torch.stack([img, img], -1)[..., 0],
             "meta": "kept"}
    index = [4, 8, 15, 16, 23, 42]
    calls = _count_fused(monkeypatch)
    got = aug(batch, index=index, epoch=1)
    assert calls[0] == 4 and got["meta"] == "kept"
    assert got["cl"].is_contiguous(memory_format=torch.channels_last_3d) and got["img"].is_contiguous()
    assert torch.equal(got["cl"], got["img"]) and torch.equal(got["sl"], got["img"])
    alone = aug({k: v[2:3] for k, v in batch.items() if k != "meta"}, index=index[2:3], epoch=1)
    assert all(torch.equal(alone[k][0], got[k][2]) for k in alone)
    # nothing to do: the tensor itself; intensity on an integer key: the torch path
    none = Augment(seed=0, flip_axes=None, rot90_plane=None)
    assert none(batch["img"], index=index) is batch["img"]
    ints = Augment(seed=0, scale=(2, 3), intensity_keys=["lbl"])
    before = calls[0]  # 8: `got` and `alone`, four tensors each
    out = ints({"lbl": batch["lbl"]}, index=index)
    assert before == 8 and calls[0] == before and out["lbl"].dtype == torch.uint8
    monkeypatch.setattr(damacy.transforms, "_USE_FUSED", False)
    ref = aug(batch, index=index, epoch=1)
    assert torch.equal(got["lbl"], ref["lbl"]) and torch.equal(ints({"lbl": batch["lbl"]}, index=index)["lbl"], out["lbl"])
    torch.testing.assert_close(got["img"], ref["img"], rtol=1e-6, atol=2e-5)


@fused
def test_cuda_fused_augment_opcheck_and_errors():
    """torch.library.opcheck (schema, fake kernel, dispatch) and the op's argument checks."""
    aug = Augment(seed=2, flip_axes=(-2, -1), scale=(0.5, 2.0), noise_std=0.5)
    op = torch.ops.damacy.augment.default
    for x in (torch.randn(4, 3, 8, 8, device="cuda"), torch.randint(0, 9, (4, 8, 8), device="cuda", dtype=torch.uint8)):
        params = aug._fused_params(aug._draws(range(4), 0), x.device)
        torch.library.opcheck(op, (x, params, 0.5 if x.is_floating_point() else 0.0, x.is_floating_point()))
    x = torch.zeros(4, 8, 8, device="cuda")
    params = aug._fused_params(aug._draws(range(4), 0), x.device)
    call = damacy._ops.call
    with pytest.raises(damacy.InvalidArgument, match="floating-point"):
        call(op, x.to(torch.int32), params, 0.0, True)
    # the table by value (on the CPU, at most 128 rows) and on the device: the same values
    assert params.device.type == "cpu"
    assert torch.equal(call(op, x + 1, params, 0.5, True), call(op, x + 1, params.cuda(), 0.5, True))
    with pytest.raises(damacy.InvalidArgument, match="params"):
        call(op, torch.zeros(129, 8, 8, device="cuda"), torch.zeros(129, 3, dtype=torch.int64), 0.0, False)
    with pytest.raises(damacy.InvalidArgument, match="params"):
        call(op, x, params.to(torch.int32), 0.0, True)
    with pytest.raises(damacy.InvalidArgument, match="params"):
        call(op, x[:3], params, 0.0, True)
    with pytest.raises(damacy.InvalidArgument, match="noise_std"):
        call(op, x, params, float("nan"), True)
    with pytest.raises(damacy.InvalidArgument, match="sample dims"):
        call(op, torch.zeros((4,) + (1,) * 9, device="cuda"), params, 0.0, False)
    # more than 128 samples: the table goes to the device; equal to the torch path
    many = torch.randn(130, 6, 6, device="cuda")
    got = aug(many, index=range(130))
    monkey = damacy.transforms._USE_FUSED
    try:
        damacy.transforms._USE_FUSED = False
        ref = aug(many, index=range(130))
    finally:
        damacy.transforms._USE_FUSED = monkey
    assert aug._fused_params(aug._draws(range(130), 0), many.device).is_cuda
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=2e-5)
    # a bad map word is applied as the identity (never an out-of-bounds read)
    bad = params.clone()
    bad[:, 2] = 0x0F
    assert torch.equal(call(op, x + 1, bad, 0.0, False), x + 1)


@cuda
def test_cuda_on_error_fill_and_skip(arrays):
    uris, img, _ = arrays
    boxes = _bad_boxes()
    for policy in ("fill", "skip"):
        with Pipeline(_cfg(device="cuda"), on_error=policy) as p:
            p.push(Sample(uris["bad"], b) for b in boxes)
            t, samples = p.pop_with_samples()
            assert t.is_cuda
            t, samples = p.pop_with_samples()  # batch 1: one bad sample
            for r, s in enumerate(samples):
                want = np.full((4, 4, 4), FILL, np.float32) if _touches_bad_chunk(s.aabb) else _crop(img, s.aabb).astype(np.float32)
                np.testing.assert_array_equal(t[r].cpu().numpy(), want)
            assert p.stats()["on_error"]["failed_batches"] == 1


def test_label_crops_index_from_a_coarser_ngff_level(arrays, tmp_path):
    uris, img, lbl = arrays
    coarse = np.ascontiguousarray(lbl[::2, ::2, ::2])
    g = zarr.open_group(str(tmp_path / "lbl.ome.zarr"), mode="w", zarr_format=3)
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"name": "lbl", "axes": axes, "datasets": [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [2.0**i] * 3}]} for i in range(2)]}]}
    for i, values in enumerate([lbl, coarse]):
        a = g.create_array(str(i), shape=values.shape, chunks=(4, 4, 4), dtype="uint8", fill_value=0,
                           compressors=ZstdCodec(level=1))
        a[...] = values
    group = str(tmp_path / "lbl.ome.zarr")
    k, n = (5, 6, 6), 2000
    ds = CropDataset([{"image": uris["img"], "label": group + "#level=0"}],
                     LabelCrops(k, seed=2, num_samples=n, class_weights={2: 1, 0: 1}, index_level=1),
                     samples_per_batch=8)
    classes = []
    for i in range(n):
        _, box = ds.sample_at(i)
        centre = [b + kk // 2 for (b, _), kk in zip(box, k)]
        assert all(c % 2 == 1 for c in centre)  # floor((v + 1/2) * 2) = 2v + 1
        classes.append(int(coarse[tuple(c // 2 for c in centre)]))  # on the class at level 1
    classes = np.array(classes)
    assert set(classes.tolist()) <= {0, 2}
    assert abs((classes == 2).mean() - 0.5) < 4 * np.sqrt(0.25 / n)


def test_dataset_skip_under_workers_matches_no_workers(arrays):
    """The replacements are a function of the samples: 2 workers yield what 0 workers do."""
    uris, _, _ = arrays

    def run(nw):
        ds = CropDataset([{"image": uris["bad"], "label": uris["lbl"]}], RandomCrops((4, 4, 4), seed=3, num_samples=48),
                         samples_per_batch=4, dtype={"image": "f32", "label": "u8"}, return_meta=True, on_error="skip",
                         config=Config(n_io_threads=2))
        return [(b["image"].clone(), b["label"].clone(), m["bad"].tolist(), m["box"].clone())
                for b, m in DataLoader(ds, batch_size=None, num_workers=nw)]

    a, b = run(0), run(2)
    assert len(a) == len(b) and sum(len(x[2]) for x in a) > 0
    for x, y in zip(a, b):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] and torch.equal(x[3], y[3])


# --------------------------------------------------------------------------------------
# Augment fused into the pipeline (CropDataset on CUDA pushes each sample with its draw)
# --------------------------------------------------------------------------------------

def test_sample_transforms_apply_on_cpu_devices(arrays):
    """A sample pushed with a transform on a CPU device comes out transformed (the pipeline's
    workers apply it to the assembled sample), the others of its batch untouched; a transform
    the pipeline cannot apply (intensity on a u8 output) fails its batch (InvalidArgument
    naming why) and the next batch is fine. CropDataset on the CPU fuses its leading Augment."""
    from damacy.sample import _TransformedSample

    uris, img, lbl = arrays
    box = [(0, 4), (2, 6), (4, 8)]
    want = img[:4, 2:6, 4:8].astype(np.float32)
    scale, shift = np.float32(1.5), np.float32(-2.25)
    word0 = int(np.array([scale, shift], np.float32).view(np.int64)[0])  # the words are int64
    with Pipeline(Config(samples_per_batch=2, sample_shape=[4, 4, 4])) as p:
        # sample 0: flip of -1 (byte 0: 0x11) and a quarter turn of (-3, -2) (byte 2: 0x12,
        # axis -3 reads -2 backwards; byte 1: 0x03, axis -2 reads -3): np.rot90's k=1 in that
        # plane; then x * 1.5 - 2.25
        turn = 0x12_03_11
        p.push([_TransformedSample(uris["img"], box, (word0, 0, turn, 1 << 32)), Sample(uris["img"], box)])
        t = p.pop().numpy()
        np.testing.assert_array_equal(t[0], np.rot90(np.flip(want, -1), 1, (0, 1)) * scale + shift)
        np.testing.assert_array_equal(t[1], want)
    with Pipeline(Config(samples_per_batch=2, sample_shape=[4, 4, 4], dtype="u8")) as p:
        p.push([_TransformedSample(uris["lbl"], box, (word0, 0, 0x11, 1 << 32)), Sample(uris["lbl"], box)])
        p.push([_TransformedSample(uris["lbl"], box, (0, 0, 0x11, 0)), Sample(uris["lbl"], box)])
        with pytest.raises(damacy.InvalidArgument, match="floating-point"):
            p.pop()
        t = p.pop().numpy()
        np.testing.assert_array_equal(t[0], np.flip(lbl[:4, 2:6, 4:8], -1))
        np.testing.assert_array_equal(t[1], lbl[:4, 2:6, 4:8])
    aug = Augment(seed=1)
    ds = CropDataset([uris["img"]], RandomCrops((4, 4, 4), seed=1, num_samples=4), samples_per_batch=2, transform=aug)
    assert ds._fused_augment(ds._configs) is aug


FUSED_DATASET_CASES = [  # (samples_per_batch, decode, image dtype, crop, on_error, augment kwargs)
    (8, "auto", "f32", (5, 6, 6), "raise", dict(flip_axes=(-3, -2, -1), scale=(0.5, 2.0), shift=(-10, 10))),
    (8, "auto", "f32", (5, 6, 6), "skip", dict(flip_axes=(-3, -2, -1), scale=(0.5, 2.0), shift=(-10, 10), noise_std=3.0)),
    (5, "auto", "bf16", (4, 8, 8), "raise", dict(flip_axes=(-1,), scale=(0.9, 1.1), noise_std=1.0)),
    (3, "cpu", "f32", (6, 6, 6), "raise", dict(flip_axes=(-3, -2, -1), rot90_plane=(-3, -1), shift=(-1, 1), noise_std=0.5)),
    (4, "auto", "bf16", (6, 6, 6), "raise", dict(flip_axes=(-3, -2, -1), rot90_plane=(-3, -2), scale=(0.5, 2.0), shift=(-5, 5))),
]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=fused)])
@pytest.mark.parametrize("case", range(len(FUSED_DATASET_CASES)))
def test_dataset_fuses_augment_into_the_pipeline(arrays, case, device, monkeypatch):
    """CropDataset pushes each sample with its Augment draw and the pipeline applies it where
    it makes the batch (CPU device, or CPU decode on CUDA: the pipeline's workers, once the
    sample is assembled; GPU decode: inside the assemble kernel); no Augment pass runs on the
    batch. The batches equal the unfused path's (Augment on the popped batch): geometry, scale
    and shift bit for bit, noise within float rounding; and numpy's oracle on the same boxes
    (the noise from the contract in float64), image and label turned alike."""
    uris, img, lbl = arrays
    B, decode, dt, crop, on_error, kw = FUSED_DATASET_CASES[case]
    aug = Augment(seed=case, **kw)
    arrays_ = [{"image": uris["img"], "label": uris["lbl"]}]
    if on_error == "skip":
        arrays_.append({"image": uris["bad"], "label": uris["lbl"]})

    def run(fuse: bool):
        calls = [0]
        real = Augment.__call__

        def counted(self, *a, **k):
            calls[0] += 1
            return real(self, *a, **k)

        monkeypatch.setattr(Augment, "__call__", counted)
        if not fuse:
            monkeypatch.setattr(CropDataset, "_fused_augment", lambda self, configs: None)
        ds = CropDataset(arrays_, RandomCrops(crop, seed=3, num_samples=4 * B - 1), samples_per_batch=B, device=device,
                         dtype={"image": dt, "label": "u8"}, transform=aug, return_meta=True, on_error=on_error,
                         config=Config(n_io_threads=2, decode=decode))
        out = [({k: v.cpu() for k, v in b.items()}, m) for b, m in DataLoader(ds, batch_size=None)]
        monkeypatch.undo()
        return out, calls[0]

    fused_out, fused_calls = run(True)
    plain_out, plain_calls = run(False)
    assert fused_calls == 0 and plain_calls == len(plain_out) == len(fused_out) == 4
    noise = kw.get("noise_std", 0) > 0
    for (fb, fm), (pb, pm) in zip(fused_out, plain_out):
        assert torch.equal(fm["index"], pm["index"]) and torch.equal(fm["box"], pm["box"])
        assert torch.equal(fb["label"], pb["label"])
        if noise:
            tol = 1.6e-2 if dt == "bf16" else 1e-5
            torch.testing.assert_close(fb["image"].double(), pb["image"].double(), rtol=tol, atol=tol * 100)
        else:
            assert torch.equal(fb["image"], pb["image"])
        for r, d in enumerate(aug.params(fm["index"])):
            box = [tuple(x) for x in fm["box"][r].tolist()]
            # (the bad array holds img's values outside its corrupt chunk, skipped)
            want = _np_augment(img[tuple(slice(a, b) for a, b in box)].astype(np.float32), d, aug, True)
            rtol, atol = (1e-2, 5e-2) if dt == "bf16" else (1e-5, 1e-4) if noise else (1e-6, 0)
            np.testing.assert_allclose(fb["image"][r].float().numpy(), want, rtol=rtol, atol=atol)
            np.testing.assert_array_equal(fb["label"][r].numpy(), _np_augment(lbl[tuple(slice(a, b) for a, b in box)], d, aug, False))
