"""damacy.data: CropDataset with DataLoader (0 and 2 workers, spawn), ranks, resume, grid
stitching, integer label dtypes. Values are checked against zarr-python.

Arrays (written by zarr-python here):
- pair "a": image uint16 shape=[20,24,18], inner=[5,8,9], shard=[10,16,18] (zstd): 24 chunks in
  6 shards; label uint8 = image > 500, chunk=[10,8,9]: 12 chunk files.
- pair "b": image uint16 shape=[13,17,11], chunk=[7,7,7] (zstd): 12 chunk files; label int32
  in [-3, 3], chunk=[7,9,11]: 4 chunk files.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import pickle
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as tmp
import zarr
from torch.utils.data import DataLoader
from torch.utils.data._utils import worker as torch_worker
from zarr.codecs import ZstdCodec

import damacy
from damacy.data import CropDataset, GridCrops, RandomCrops, Stitcher, stitch, to_device

B = 4
S = (4, 6, 5)
ROOT = Path(__file__).resolve().parent.parent


def _write(path: Path, values: np.ndarray, chunks, shards=None, fill=0) -> str:
    arr = zarr.create_array(str(path), shape=values.shape, chunks=chunks, shards=shards, dtype=values.dtype,
                            fill_value=fill, compressors=ZstdCodec(level=1), zarr_format=3)
    arr[...] = values
    return str(path)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """[{"image": uri, "label": uri}, ...] and the zarr-python arrays of each entry."""
    root = tmp_path_factory.mktemp("damacy-data")
    rng = np.random.default_rng(7)
    img_a = rng.integers(0, 1000, (20, 24, 18), dtype=np.uint16)
    img_b = rng.integers(0, 1000, (13, 17, 11), dtype=np.uint16)
    lbl_a = (img_a > 500).astype(np.uint8)
    lbl_b = rng.integers(-3, 4, img_b.shape, dtype=np.int32)
    entries = [
        {"image": _write(root / "a_img.zarr", img_a, (5, 8, 9), (10, 16, 18)),
         "label": _write(root / "a_lbl.zarr", lbl_a, (10, 8, 9))},
        {"image": _write(root / "b_img.zarr", img_b, (7, 7, 7)),
         "label": _write(root / "b_lbl.zarr", lbl_b, (7, 9, 11))},
    ]
    return entries, [(img_a, lbl_a), (img_b, lbl_b)]


def _cfg(**kw):
    return damacy.Config(n_io_threads=1, pop_timeout_s=30.0, **kw)


def _dataset(entries, sampler=None, **kw):
    kw.setdefault("samples_per_batch", B)
    kw.setdefault("return_meta", True)
    kw.setdefault("config", _cfg())
    return CropDataset(entries, sampler or RandomCrops(S, seed=3, num_samples=30), **kw)


def _collect(loader):
    """Batches with their tensors copied (held batches must not pin pipeline buffers)."""
    out = []
    for batch, meta in loader:
        out.append(({k: v.clone() for k, v in batch.items()} if isinstance(batch, dict) else batch.clone(), meta))
    return out


def _boxes(meta):
    return [tuple(map(tuple, b)) for b in meta["box"].tolist()]


def _crop(values: np.ndarray, box) -> np.ndarray:
    return values[tuple(slice(a, b) for a, b in box)]


def _check_values(batches, arrays, label_dtype):
    for batch, meta in batches:
        for s, (a, box) in enumerate(zip(meta["array"].tolist(), _boxes(meta))):
            img, lbl = arrays[a]
            assert torch.equal(batch["image"][s], torch.from_numpy(_crop(img, box).astype(np.float32)))
            assert batch["label"].dtype == label_dtype
            want = _crop(lbl, box).astype(torch.empty(0, dtype=label_dtype).numpy().dtype)
            assert torch.equal(batch["label"][s], torch.from_numpy(want))


# --------------------------------------------------------------------------------------
# DataLoader, workers, values
# --------------------------------------------------------------------------------------


def test_dataloader_0_and_2_workers_yield_the_promised_boxes(pairs):
    entries, arrays = pairs
    ds = _dataset(entries, dtype={"image": "f32", "label": "i64"})
    assert len(ds) == 8  # 30 samples, batches of 4: the last one has 2
    promised = [ds.sample_at(i) for i in range(30)]
    runs = {nw: _collect(DataLoader(ds, batch_size=None, num_workers=nw)) for nw in (0, 2)}
    for nw, batches in runs.items():
        assert [int(m["batch"]) for _, m in batches] == list(range(8)), nw
        assert [b["image"].shape[0] for b, _ in batches] == [4] * 7 + [2]
        got = [(a, box) for _, m in batches for a, box in zip(m["array"].tolist(), _boxes(m))]
        assert got == promised, nw
        assert [i for _, m in batches for i in m["index"].tolist()] == list(range(30))
        uris = [u for _, m in batches for u in m["uri"]["label"]]
        assert uris == [entries[a]["label"] for a, _ in promised]
        _check_values(batches, arrays, torch.int64)
    # Both arrays were sampled, boxes inside them.
    assert {a for a, _ in promised} == {0, 1}


def test_single_array_and_tuple_entries(pairs):
    entries, arrays = pairs
    ds = CropDataset(entries[1]["image"], RandomCrops(S, seed=1, num_samples=8), samples_per_batch=B, config=_cfg())
    batches = [b.clone() for b in DataLoader(ds, batch_size=None)]
    assert len(batches) == 2 and batches[0].dtype == torch.float32
    for k, b in enumerate(batches):
        for s in range(B):
            _, box = ds.sample_at(k * B + s)
            assert torch.equal(b[s], torch.from_numpy(_crop(arrays[1][0], box).astype(np.float32)))
    tup = CropDataset([(e["image"], e["label"]) for e in entries], RandomCrops(S, seed=1, num_samples=4),
                      samples_per_batch=B, dtype=("bf16", "u8"), config=_cfg())
    (img, lbl), = [tuple(t.clone() for t in b) for b in tup]
    assert img.dtype == torch.bfloat16 and lbl.dtype == torch.uint8 and img.shape == (B, *S)


def test_random_crops_determinism_epochs_and_weights(pairs):
    entries, _ = pairs
    a = _dataset(entries)
    b = _dataset(entries)
    first = [a.sample_at(i) for i in range(30)]
    assert first == [b.sample_at(i) for i in range(30)]
    a.set_epoch(1)
    assert [a.sample_at(i) for i in range(30)] != first
    assert [a.sample_at(i, epoch=0) for i in range(30)] == first
    # Every valid start is reachable, none outside: array b is [13,17,11], S = [4,6,5].
    endless = _dataset(entries, RandomCrops(S, seed=3))
    many = [endless.sample_at(i) for i in range(3000)]
    starts_b = {tuple(lo for lo, _ in box) for arr, box in many if arr == 1}
    assert {s[0] for s in starts_b} == set(range(10)) and {s[2] for s in starts_b} == set(range(7))
    # Default weights follow the valid positions: a has 17*19*14, b 10*12*7 positions.
    share_b = sum(arr == 1 for arr, _ in many) / len(many)
    assert abs(share_b - 840 / (840 + 4522)) < 0.04
    only_b = _dataset(entries, weights=[0, 1])
    assert {only_b.sample_at(i)[0] for i in range(30)} == {1}
    with pytest.raises(damacy.InvalidArgument, match="weights"):
        _dataset(entries, weights=[1])
    with pytest.raises(damacy.InvalidArgument, match="does not fit"):
        _dataset(entries, RandomCrops((14, 6, 5), num_samples=4), weights=[1, 1])
    with pytest.raises(damacy.RankMismatch):
        _dataset(entries, RandomCrops((4, 4), num_samples=4))
    with pytest.raises(TypeError):
        len(endless)
    got = [(None, m) for _, m in itertools.islice(iter(endless), 9)]
    assert [int(m["batch"]) for _, m in got] == list(range(9))
    assert [x for _, m in got[:7] for x in zip(m["array"].tolist(), _boxes(m))] == first[:28]


def test_integer_outputs_on_cuda_keep_decode_auto_which_rust_routes_to_the_cpu(pairs):
    # The route is one rule in Rust (Config::decodes_on_device, unit-tested there): the
    # dataset passes decode="auto" through instead of re-deciding it.
    entries, _ = pairs
    ds = _dataset(entries, dtype={"image": "f32", "label": "i64"}, device="cuda:0")
    assert [c.decode for c in ds._configs] == ["auto", "auto"]
    assert all(c.device == "cpu" and c.decode == "cpu" for c in ds._worker_configs(2))
    with pytest.raises(damacy.InvalidArgument, match="GPU decode path"):
        damacy.Config(dtype="i64", device="cuda:0", decode="gpu")


# --------------------------------------------------------------------------------------
# Grid crops and stitching
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("edge,stride", [("shift", None), ("shift", (3, 4, 3)), ("pad", (3, 5, 5)), ("pad", None)])
def test_grid_stitch_covers_every_voxel_exactly_once(pairs, edge, stride):
    entries, arrays = pairs
    ds = _dataset([e["image"] for e in entries], GridCrops(S, stride=stride, edge=edge), samples_per_batch=3)
    stitcher = ds.stitcher(count=True)
    mean = Stitcher(ds.shapes, mode="mean")
    n = 0
    for batch, meta in DataLoader(ds, batch_size=None):
        n += batch.shape[0]
        pred = torch.stack([batch, -batch], dim=1)  # a 2-channel "prediction"
        stitcher.add(pred, meta)
        mean.add(pred, meta)
        if edge == "shift":  # every box inside its array
            assert all(lo >= 0 and hi <= sh for (lo, hi), sh in zip(_boxes(meta)[0], ds.shapes[int(meta["array"][0])]))
    assert n == ds.num_samples()
    for a, (img, _) in enumerate(arrays):
        want = torch.from_numpy(img.astype(np.float32))
        assert torch.equal(stitcher.counts()[a], torch.ones(img.shape, dtype=torch.int32))
        assert torch.equal(stitcher.result()[a], torch.stack([want, -want]))
        assert torch.equal(mean.result()[a], torch.stack([want, -want]))
        assert int(mean.counts()[a].min()) >= 1
    # stitch() is the same in one call.
    again = stitch(((b[:, None], m) for b, m in DataLoader(ds, batch_size=None)), ds.shapes)
    assert torch.equal(again[0][0], torch.from_numpy(arrays[0][0].astype(np.float32)))


def test_grid_axis_geometry():
    g = GridCrops((4,), stride=(3,), edge="shift")
    assert g.axis(10, 0) == ([0, 3, 6], [(0, 3), (3, 6), (6, 10)])
    assert g.axis(4, 0) == ([0], [(0, 4)])
    p = GridCrops((4,), stride=(3,), edge="pad")
    assert p.axis(10, 0) == ([0, 3, 6], [(0, 3), (3, 6), (6, 10)])
    assert p.axis(11, 0) == ([0, 3, 6, 9], [(0, 3), (3, 6), (6, 9), (9, 11)])
    assert p.axis(2, 0) == ([0], [(0, 2)])
    with pytest.raises(damacy.InvalidArgument, match="pad"):
        g.axis(3, 0)
    with pytest.raises(damacy.InvalidArgument, match="exceeds"):
        GridCrops((4,), stride=(5,))
    # Overlap 4 - 2 = 2: each neighbour owns one voxel of it.
    assert GridCrops((4,), stride=(2,)).axis(8, 0) == ([0, 2, 4], [(0, 3), (3, 5), (5, 8)])


def _grid_axis_lists(extent, s, t, edge):
    """The list-building GridCrops.axis of before the lazy axes (the reference)."""
    if extent <= s:
        starts = [0]
    else:
        n = -(-(extent - s) // t) + 1
        starts = [i * t for i in range(n)]
        if edge == "shift":
            starts[-1] = extent - s
    own = []
    for i, b in enumerate(starts):
        lo = 0 if i == 0 else own[-1][1]
        hi = extent if i == len(starts) - 1 else (starts[i + 1] + b + s) // 2
        own.append((lo, min(hi, extent)))
    return starts, own


def test_grid_axes_are_lazy_and_equal_the_lists():
    for s in range(1, 7):
        for t in range(1, s + 1):
            for edge in ("shift", "pad"):
                for extent in range(s if edge == "shift" else 1, 40):
                    assert GridCrops((s,), stride=(t,), edge=edge).axis(extent, 0) == _grid_axis_lists(extent, s, t, edge), (s, t, edge, extent)
    # A [2**63-1, 4, 4] array: 2**61 crops, nothing built per crop.
    g = GridCrops((4, 4, 4))
    t0 = time.monotonic()
    plan = g._plan(["huge"], [(2**63 - 1, 4, 4)], None, 0)
    assert plan.n_samples == -(-(2**63 - 1 - 4) // 4) + 1
    assert plan.sample(0) == (0, (0, 0, 0), ((0, 4), (0, 4), (0, 4)))
    last = plan.sample(plan.n_samples - 1)
    assert last[1] == (2**63 - 1 - 4, 0, 0) and last[2][0][1] == 2**63 - 1
    assert time.monotonic() - t0 < 1.0


# --------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------


def _rank_main(rank, world, init_file, entries, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = _dataset(entries, RandomCrops(S, seed=5, num_samples=27))
        assert (ds.rank, ds.world_size) == (rank, world)
        got = [(int(m["batch"]), m["index"].tolist(), _boxes(m)) for _, m in DataLoader(ds, batch_size=None)]
        assert len(got) == len(ds)
        gathered = [None] * world
        dist.all_gather_object(gathered, got)
        if rank == 0:
            Path(out_dir, "ranks.json").write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_two_ranks_are_disjoint_and_cover_the_epoch(pairs, tmp_path):
    entries, _ = pairs
    tmp.spawn(_rank_main, args=(2, str(tmp_path / "init"), entries, str(tmp_path)), nprocs=2, join=True)
    per_rank = json.loads((tmp_path / "ranks.json").read_text())
    ref = _dataset(entries, RandomCrops(S, seed=5, num_samples=27))
    indices = [sorted(i for _, idx, _ in r for i in idx) for r in per_rank]
    assert not set(indices[0]) & set(indices[1])
    assert sorted(indices[0] + indices[1]) == list(range(27))
    assert [g for g, _, _ in per_rank[0]] == [0, 2, 4, 6] and [g for g, _, _ in per_rank[1]] == [1, 3, 5]
    for r in per_rank:
        for _, idx, boxes in r:
            assert [ref.sample_at(i)[1] for i in idx] == [tuple(map(tuple, b)) for b in boxes]


def test_explicit_ranks_and_drop_last(pairs):
    entries, _ = pairs
    seen = []
    for r in range(3):
        ds = _dataset(entries, rank=r, world_size=3)
        got = [(int(m["batch"]), m["index"].tolist()) for _, m in ds]
        assert [g for g, _ in got] == list(range(r, 8, 3)) == [g for g in range(8) if g % 3 == r]
        assert len(ds) == len(got)
        seen += [i for _, idx in got for i in idx]
    assert sorted(seen) == list(range(30))
    # drop_last: 30 samples -> 7 full batches -> 6 so that 3 ranks get 2 each.
    assert [len(_dataset(entries, rank=r, world_size=3, drop_last=True)) for r in range(3)] == [2, 2, 2]
    with pytest.raises(damacy.InvalidArgument, match="rank"):
        _dataset(entries, rank=3, world_size=3)


# --------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------


def _keys(batches):
    return [(int(m["batch"]), m["index"].tolist(), _boxes(m)) for _, m in batches]


def test_resume_mid_epoch_equals_uninterrupted(pairs):
    entries, _ = pairs
    full = _keys(_collect(DataLoader(_dataset(entries), batch_size=None)))
    # In-process iteration (num_workers=0): the dataset counts.
    ds = _dataset(entries)
    ds.set_epoch(2)
    full2 = _keys(_collect(DataLoader(ds, batch_size=None)))
    ds.set_epoch(2)  # the same epoch again: nothing to reset, the pass completed -> new pass
    head = []
    for batch, meta in DataLoader(ds, batch_size=None):
        head.append((batch, meta))
        if len(head) == 3:
            break
    state = ds.state_dict()
    assert (state["epoch"], state["position"]) == (2, 3)
    del head
    resumed = _dataset(entries)
    resumed.load_state_dict(pickle.loads(pickle.dumps(state)))
    resumed.set_epoch(2)  # what a training loop does after loading: keeps the position
    tail = _keys(_collect(DataLoader(resumed, batch_size=None)))
    assert full2[:3] + tail == full2 and full2 != full
    # The next pass of a resumed dataset is whole again.
    assert _keys(_collect(DataLoader(resumed, batch_size=None))) == full2
    # Plain DataLoader with workers: the loop says how many batches it received.
    ds = _dataset(entries)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    it = iter(loader)
    head = [next(it) for _ in range(5)]
    state = ds.state_dict(batches_yielded=len(head))
    del it, head
    resumed = _dataset(entries)
    resumed.load_state_dict(state)
    assert _keys(_collect(DataLoader(resumed, batch_size=None, num_workers=2))) == full[5:]
    # A state saved at the end of the epoch resumes to nothing.
    done = _dataset(entries)
    done.load_state_dict(_dataset(entries).state_dict(batches_yielded=len(full)))
    assert list(DataLoader(done, batch_size=None)) == []
    with pytest.raises(damacy.InvalidArgument, match="same"):
        _dataset(entries, samples_per_batch=2).load_state_dict(state)


class _FakeWorker:
    """Sets torch's worker info while a dataset copy makes its iterator (what a DataLoader
    worker process does), to replay StatefulDataLoader's per-worker protocol in-process."""

    def __init__(self, ds, wid, n):
        self.ds, self.info = ds, torch_worker.WorkerInfo(id=wid, num_workers=n, seed=0, dataset=ds)

    def iterator(self):
        saved = torch_worker._worker_info
        torch_worker._worker_info = self.info
        try:
            return iter(self.ds)
        finally:
            torch_worker._worker_info = saved


@pytest.mark.parametrize("cut", [1, 5])
def test_resume_with_per_worker_states_like_stateful_dataloader(pairs, cut):
    """StatefulDataLoader (torchdata) calls state_dict() in each worker once its iterator is
    made and after each batch, and load_state_dict() in each worker before it iterates again;
    the consumer sees workers round-robin. Endless sampler, 2 workers, checkpoint after
    `cut` batches (1: worker 1 has yielded nothing; 5: worker 0 is one ahead)."""
    entries, _ = pairs
    endless = RandomCrops(S, seed=9)
    ref = _keys(itertools.islice(_dataset(entries, endless), 12))
    base = _dataset(entries, endless)
    workers = [_FakeWorker(copy.deepcopy(base), w, 2) for w in range(2)]
    its = [w.iterator() for w in workers]
    states = [pickle.loads(pickle.dumps(w.ds.state_dict())) for w in workers]
    got = []
    for k in range(cut):
        w = k % 2
        got.append((None, next(its[w])[1]))  # keep the meta only: batches pin buffers
        states[w] = pickle.loads(pickle.dumps(workers[w].ds.state_dict()))
    for it in its:
        it.close()
    restored = [_FakeWorker(copy.deepcopy(base), w, 2) for w in range(2)]
    for w, st in zip(restored, states):
        w.ds.load_state_dict(st)
    its = [w.iterator() for w in restored]
    for k in range(cut, 12):
        got.append((None, next(its[k % 2])[1]))  # round-robin goes on with the next worker
    for it in its:
        it.close()
    assert _keys(got) == ref


# --------------------------------------------------------------------------------------
# Processes: spawn pickling, errors from workers, fork safety
# --------------------------------------------------------------------------------------


def test_spawn_workers_pickle_dataset_config_and_errors(pairs, tmp_path):
    entries, arrays = pairs
    ds = _dataset(entries, dtype={"image": "f32", "label": "i32"}, config=_cfg(n_shard_index_cache=17, lookahead_samples=9))
    again = pickle.loads(pickle.dumps(ds))
    assert again._configs == ds._configs and [again.sample_at(i) for i in range(30)] == [ds.sample_at(i) for i in range(30)]
    for err in (damacy.NotFound("x"), damacy.DamacyError("Unknown", "y"), damacy.InvalidArgument("z")):
        assert pickle.loads(pickle.dumps(err)) == err
    # A broken copy of pair b: its label loses zarr.json after the dataset was made.
    broken = tmp_path / "b_lbl.zarr"
    shutil.copytree(entries[1]["label"], broken)
    bad = _dataset([entries[0], {"image": entries[1]["image"], "label": str(broken)}], weights=[0, 1],
                   dtype={"image": "f32", "label": "i32"})
    (broken / "zarr.json").unlink()
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    batches = _collect(loader)
    assert _keys(batches) == _keys(_collect(DataLoader(ds, batch_size=None)))
    _check_values(batches, arrays, torch.int32)
    with pytest.raises(damacy.NotFound, match="zarr.json|not found|NotFound"):
        list(DataLoader(bad, batch_size=None, num_workers=1, multiprocessing_context="spawn"))


def test_pipeline_inherited_through_fork_is_not_used(pairs):
    entries, _ = pairs
    cfg = _cfg(samples_per_batch=1, sample_shape=S)
    pipe = damacy.Pipeline(cfg)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's pipeline refuses work and closes without joining
        ok = 0
        try:
            pipe.pop(0.1)
        except damacy.ShutdownError:
            ok = 1
        except BaseException:
            ok = 2
        pipe.close()
        os.write(w, bytes([ok]))
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"\x01"
    os.waitpid(pid, 0)
    with pipe:
        pipe.push(damacy.Sample(entries[0]["image"], [(0, 4), (0, 6), (0, 5)]))
        assert pipe.pop().shape == (1, *S)


def test_to_device_moves_nested_tensors():
    batch = ({"image": torch.zeros(2), "label": torch.ones(2, dtype=torch.int64)}, {"uri": ["a"], "epoch": 1})
    moved = to_device(batch, "cpu")
    assert moved[0]["label"].dtype == torch.int64 and moved[1]["uri"] == ["a"] and moved[1]["epoch"] == 1


# --------------------------------------------------------------------------------------
# Integer outputs vs zarr-python's astype
# --------------------------------------------------------------------------------------


def _int_source(dtype: np.dtype, shape, rng) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    # floats: in range of every integer output (numpy and Rust agree there), fractional
    return (rng.uniform(0, 255, shape)).astype(dtype)


@pytest.mark.parametrize("src", ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                                 "int64", "float16", "float32", "float64"])
def test_integer_label_dtypes_equal_zarr_astype(tmp_path, src):
    rng = np.random.default_rng(zlib.crc32(src.encode()))
    dt = np.dtype(src)
    values = _int_source(dt, (6, 7, 5), rng)
    fill = True if dt == np.bool_ else (300.75 if dt.kind == "f" else np.iinfo(dt).max)
    values[3:, :4] = fill  # a whole chunk of fill: never written, read as the fill value
    uri = _write(tmp_path / f"{src}.zarr", values, (3, 4, 5), fill=fill)
    oracle = zarr.open_array(uri, mode="r")[...]
    box = [(0, 6), (0, 7), (0, 5)]
    for out, np_out in (("u8", np.uint8), ("i32", np.int32), ("i64", np.int64)):
        with damacy.Pipeline(_cfg(samples_per_batch=1, sample_shape=(6, 7, 5), dtype=out)) as p:
            p.push(damacy.Sample(uri, box))
            got = p.pop()
        with np.errstate(invalid="ignore", over="ignore"):
            want = oracle.astype(np_out)
        if dt.kind == "f" and out == "u8":  # 300.75 is beyond u8: damacy saturates
            want = np.where(oracle > 255, 255, want).astype(np.uint8)
        assert got.dtype == torch.from_numpy(want).dtype
        assert torch.equal(got[0], torch.from_numpy(want)), (src, out)


def test_float_to_integer_saturates(tmp_path):
    values = np.array([[-1.5, 1e10, -1e10, np.nan, np.inf, 254.9, -0.9]], dtype=np.float64)
    uri = _write(tmp_path / "f.zarr", values, (1, 7))
    want = {"u8": [0, 255, 0, 0, 255, 254, 0], "i32": [-1, 2**31 - 1, -(2**31), 0, 2**31 - 1, 254, 0],
            "i64": [-1, 10**10, -(10**10), 0, 2**63 - 1, 254, 0]}
    for out, expect in want.items():
        with damacy.Pipeline(_cfg(samples_per_batch=1, sample_shape=(1, 7), dtype=out)) as p:
            p.push(damacy.Sample(uri, [(0, 1), (0, 7)]))
            assert p.pop()[0, 0].tolist() == expect, out


# --------------------------------------------------------------------------------------
# The example
# --------------------------------------------------------------------------------------


def test_example_train_segmentation_runs(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train_segmentation
    finally:
        sys.path.pop(0)
    assert train_segmentation.main(["--steps", "3", "--workdir", str(tmp_path), "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "step 3" in out


def test_docs_data_md_code_runs():
    """Every ```python block of docs/data.md, in order, in one namespace."""
    import re

    text = (ROOT / "docs" / "data.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    exec(compile("\n".join(blocks), "docs/data.md", "exec"), namespace)
