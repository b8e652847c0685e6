"""Issue 14 beyond the ported tests: original-mode batches hold the right values (against
zarr-python), both APIs on one Batch type, and the original's contract points its tests
do not reach (PoolStarved with both slots held, pop_timeout_s=None, the budget, GDS)."""

from __future__ import annotations

import copy
import json
import dataclasses
import pickle
import threading
import time

import pytest
import torch

import damacy
import fixtures as F
from compat_fixtures import write
from damacy import Config, Pipeline, Sample, Status


def _cfg(**kw) -> Config:
    base = dict(samples_per_batch=2, sample_shape=(8, 8), max_gpu_memory_bytes=1 << 28, lookahead_samples=4,
                n_io_threads=2, n_array_meta_cache=8, n_chunk_layout_cache=8, n_shard_index_cache=64,
                max_shards_per_sample=8)
    base.update(kw)
    return Config(**base)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_original_mode_batches_equal_zarr_python(tmp_path, dtype):
    uri = write(tmp_path, "multishard", "uint16", (32, 32), (8, 8), (8, 8))
    oracle = F.OracleArray(uri)
    boxes = F.random_boxes((32, 32), (8, 8), 12, seed=5, grid=[(8, 8)])
    with Pipeline(_cfg(dtype=dtype)) as p:
        p.push(Sample(uri=uri, aabb=b) for b in boxes)
        for i, batch in enumerate(p.batches(6)):
            with batch as t:
                assert isinstance(t, damacy.Batch) and isinstance(t, torch.Tensor)
                want = oracle.read_batch(boxes[2 * i : 2 * i + 2], dtype)
                F.assert_same(torch.from_dlpack(t).cpu(), want, f"batch {i}")
                F.assert_same(t.cpu(), want, f"batch {i} as a tensor")


def test_native_mode_pop_is_a_batch_and_a_tensor(tmp_path):
    uri = write(tmp_path, "foo", "uint16", (8, 16), (4, 8), (8, 16))
    oracle = F.OracleArray(uri)
    cfg = Config(samples_per_batch=1, sample_shape=(8, 16), lookahead_samples=2)
    assert cfg._orig is None and cfg.dtype == "f32"
    with Pipeline(cfg) as p:
        p.push([Sample(uri, [(0, 8), (0, 16)])] * 2)
        b = p.pop()
        assert isinstance(b, torch.Tensor) and b.shape == (1, 8, 16)
        F.assert_same(b, oracle.read_batch([((0, 8), (0, 16))]))
        assert type(b + 0) is torch.Tensor and type(b[0]) is torch.Tensor
        assert type(pickle.loads(pickle.dumps(b))) is torch.Tensor
        assert torch.equal(copy.deepcopy(b), b)
        assert b.info.batch_id == 0 and "Batch(batch_id=0" in repr(b)
        assert "tensor(" in str(b)
        t, samples = p.pop_with_samples()
        assert isinstance(t, damacy.Batch) and t.info.batch_id == 1 and samples[0].aabb == ((0, 8), (0, 16))


def test_holding_both_slots_is_pool_starved(tmp_path):
    uri = write(tmp_path, "foo", "uint16", (8, 16), (4, 8), (8, 16))
    cfg = _cfg(samples_per_batch=1, sample_shape=(8, 16), lookahead_samples=2, pop_timeout_s=5.0)
    with Pipeline(cfg) as p:
        p.push([Sample(uri, [(0, 8), (0, 16)])] * 4)
        a, b = p.pop(), p.pop()
        with pytest.raises(damacy.PoolStarved) as info:
            p.pop()
        assert isinstance(info.value, RuntimeError)
        a.release()
        b.release()
        with p.pop() as c:  # slots back: the pipeline goes on (PoolStarved is not sticky)
            assert c.info.batch_id == 2


def test_pop_timeout_none_waits_and_timeout_is_pool_starved(tmp_path):
    uri = write(tmp_path, "foo", "uint16", (8, 16), (4, 8), (8, 16))
    cfg = _cfg(samples_per_batch=1, sample_shape=(8, 16), lookahead_samples=2, pop_timeout_s=None)
    assert cfg.pop_timeout_s is None
    with Pipeline(cfg) as p:
        threading.Timer(1.0, lambda: p.push([Sample(uri, [(0, 8), (0, 16)])])).start()
        t0 = time.monotonic()
        with p.pop() as b:  # past the native default of a short timeout: waits for the push
            assert b.info.batch_id == 0
        assert time.monotonic() - t0 >= 0.9
    with Pipeline(dataclasses.replace(cfg, pop_timeout_s=0.2)) as p:
        with pytest.raises(damacy.PoolStarved, match="timed out"):
            p.pop()


def test_budget_is_checked_and_committed_bytes_stay_under_it(tmp_path):
    uri = write(tmp_path, "foo", "uint16", (8, 16), (4, 8), (8, 16))
    batch = 1 * 8 * 16 * 4
    small = _cfg(samples_per_batch=1, sample_shape=(8, 16), lookahead_samples=2, max_gpu_memory_bytes=3 * batch - 1)
    with pytest.raises(damacy.BudgetExceeded, match="max_gpu_memory_bytes") as info:
        Pipeline(small)
    assert info.value.status is Status.BUDGET
    budget = 3 * batch + 4096
    cfg = dataclasses.replace(small, max_gpu_memory_bytes=budget)
    assert cfg.staging_bytes + cfg.decoded_bytes <= budget - 3 * batch
    with Pipeline(cfg) as p:
        p.push([Sample(uri, [(0, 8), (0, 16)])] * 3)
        for b in p.batches(3):
            with b:
                assert 0 < p.stats().gpu_bytes_committed <= budget


def test_device_chunk_store_fits_the_original_budget():
    """Original mode sizes the device chunk store (on by default natively) inside
    max_gpu_memory_bytes: a quarter of what the output slots leave, at most 1 GiB, off below
    1 MiB; a given value wins; staging + decoded + store never exceed what the slots leave."""
    batch = 2 * 8 * 8 * 4
    for budget, want in [(1 << 28, ((1 << 28) - 3 * batch) // 4), (64 << 30, 1 << 30), (3 * batch + (2 << 20), 0)]:
        cfg = _cfg(max_gpu_memory_bytes=budget)
        assert cfg.device_chunk_cache_bytes == want, budget
        assert cfg.staging_bytes + cfg.decoded_bytes + cfg.device_chunk_cache_bytes <= budget - 3 * batch
    assert _cfg(device_chunk_cache_bytes=12345).device_chunk_cache_bytes == 12345


def test_gds_on_is_refused_and_latency_model_warns(tmp_path):
    with pytest.raises(damacy.InvalidArgument, match="GPUDirect Storage is not available"):
        Pipeline(_cfg(enable_gds=True))
    model = damacy.LatencyModel(baseline_ns=1000)
    with pytest.warns(UserWarning, match="metadata_latency"):
        Pipeline(_cfg(metadata_latency=model)).close()


def test_mode_rules_and_errors():
    cfg = _cfg(decode="cpu", out_of_bounds="fill")  # this project's fields beside the original's
    assert cfg.decode == "cpu" and cfg.out_of_bounds == "fill" and cfg.max_shards_per_sample == 8
    assert dataclasses.replace(cfg, samples_per_batch=4).decode == "cpu"
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        _cfg(nope=1)
    with pytest.raises(TypeError, match="max_gpu_memory_bytes"):
        Config(samples_per_batch=1, sample_shape=(8,), max_shards_per_sample=2)
    with pytest.raises(damacy.InvalidArgument, match="unknown field|nope"):
        Config(nope=1)  # this project's API: unknown fields stay InvalidArgument
    e = damacy.NotFound("no array")
    assert e.status == "NotFound" and e.status is Status.NOTFOUND and isinstance(e, RuntimeError)
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is damacy.NotFound and e2.status is Status.NOTFOUND
    assert damacy.NativeCudaError is damacy.CudaError
    assert Config(samples_per_batch=1, sample_shape=(4,), device=0).device == "cuda:0"


def test_event_coercion_does_not_re_record_events():
    class TorchLikeEvent:  # torch.cuda.Event: has record() too, must not be called
        cuda_event = 7

        def record(self, stream=None):
            raise AssertionError("re-recorded the caller's event")

    class CupyLikeEvent:
        ptr = 9

        def record(self, stream=None):
            raise AssertionError("re-recorded the caller's event")

    assert damacy._coerce_cuda_event_handle(TorchLikeEvent()) == 7
    assert damacy._coerce_cuda_event_handle(CupyLikeEvent()) == 9


@pytest.mark.usefixtures("cuda_ctx")
@pytest.mark.parametrize("kind", ["stream", "event", "handle"])
def test_release_with_a_side_stream_copy_keeps_values(tmp_path, kind):
    """The original's deferred-release pattern: copy on a side stream, release with its
    stream/event; the copy holds the batch's values while later batches reuse memory."""
    uri = write(tmp_path, "multishard", "uint16", (32, 32), (8, 8), (8, 8))
    oracle = F.OracleArray(uri)
    boxes = F.random_boxes((32, 32), (8, 8), 8, seed=9, grid=[(8, 8)])
    side = torch.cuda.Stream()
    with Pipeline(_cfg(samples_per_batch=1)) as p:
        p.push(Sample(uri, b) for b in boxes)
        copies = []
        for batch in p.batches(8):
            with torch.cuda.stream(side):  # from_dlpack passes `side`: it waits for the batch
                copies.append(torch.from_dlpack(batch).clone())
            if kind == "stream":
                batch.release(event=side)
            else:
                ev = torch.cuda.Event()
                ev.record(side)
                batch.release(event=ev if kind == "event" else ev.cuda_event)
        torch.cuda.synchronize()
        for i, c in enumerate(copies):
            F.assert_same(c.cpu(), oracle.read_batch([boxes[i]]), f"batch {i}")


def test_dataclass_protocol_on_config_and_sample():
    assert [f.name for f in dataclasses.fields(Config)][:3] == ["samples_per_batch", "sample_shape", "dtype"]
    native = Config(samples_per_batch=2, sample_shape=(4, 4))
    assert dataclasses.replace(native, samples_per_batch=4) == native.replace(samples_per_batch=4)
    assert dataclasses.asdict(_cfg())["max_gpu_memory_bytes"] == 1 << 28
    s = Sample(uri="a.zarr", aabb=[(0, 4)])
    assert dataclasses.replace(s, aabb=[slice(None, 8)]) == Sample("a.zarr", [(0, 8)])


def test_original_chunk_layout_cache_is_per_array_not_per_chunk():
    # The original's n_chunk_layout_cache counts arrays; a batch touching more chunks than
    # that must still be read (our per-chunk cache keeps its own size).
    cfg = _cfg(n_chunk_layout_cache=8)
    assert cfg.n_chunk_layout_cache == 8  # the original's value reads back
    assert json.loads(cfg.to_json())["n_chunk_layout_cache"] == json.loads(Config().to_json())["n_chunk_layout_cache"]
