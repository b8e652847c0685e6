"""The GPU path (device="cuda:0", decode="gpu") against the CPU path, voxel for voxel.

Every fixture runs with decode="gpu": chunks whose codecs nvCOMP cannot decode (gzip, blosc
blosclz/zlib, big endian, transpose, ...) are decoded on the CPU per chunk inside the GPU
path and staged raw, so every fixture must still give exactly the CPU path's bits. Boxes
come from fixtures.plan_boxes / plan_fill_boxes (a subset per extent to keep the run short)
plus a box around every missing chunk/shard. Also: the output's device and stream, bad data
on the GPU path, memory over many batches, and decode="auto" / decode="cpu" on a CUDA device.

Skipped without a CUDA device or without nvCOMP (damacy.gpu_info()["nvcomp_available"]).
"""

from __future__ import annotations

import gc
import os
import pickle

import numpy as np
import pytest
import torch

import damacy
import fixtures as F


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA device"
    try:
        info = damacy.gpu_info()
    except Exception as e:  # noqa: BLE001 - report, do not fail collection
        return f"damacy.gpu_info() failed: {type(e).__name__}: {e}"
    if not info.get("cuda_built"):
        return f"this damacy build has no CUDA path: {info.get('why', '')}"
    if not info.get("nvcomp_available"):
        return f"nvCOMP is not available: {info.get('why', '')}"
    return None


_SKIP = _skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

DEVICE = "cuda:0"
NAMES = F.FIXTURE_NAMES
TORCH_DTYPE = {"f32": torch.float32, "bf16": torch.bfloat16}
POP_TIMEOUT_S = 30.0
# Small staging slabs: the GPU path pins one slab of `staging_bytes` per output buffer, and
# the fixtures need far less than the 512 MiB default (pinning that per pipeline is slow).
STAGING_BYTES = 16 << 20
BOXES_PER_PLAN = 16  # two batches of 8 per extent (the whole-array extent has one)


def make_config(plan: F.BoxPlan, dtype: str, device: str, decode: str = "auto", **extra) -> damacy.Config:
    kw = dict(
        samples_per_batch=plan.batch,
        sample_shape=list(plan.box_shape),
        dtype=dtype,
        device=device,
        decode=decode,
        n_io_threads=2,
        out_of_bounds=plan.out_of_bounds,
        pop_timeout_s=POP_TIMEOUT_S,
        staging_bytes=STAGING_BYTES,
    )
    kw.update(extra)
    return damacy.Config(**kw)


def read_plan(uri: str, plan: F.BoxPlan, dtype: str, device: str, decode: str = "auto",
              **extra) -> tuple[list[torch.Tensor], damacy.Stats]:
    """Every batch of `plan` (as CPU tensors) and the pipeline's final stats. Checks each
    batch's dtype, shape and device on the way."""
    n_batches = len(plan.boxes) // plan.batch
    out = []
    with damacy.Pipeline(make_config(plan, dtype, device, decode, **extra)) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in plan.boxes[: n_batches * plan.batch])
        for batch in pipe.batches(n_batches):
            assert batch.dtype == TORCH_DTYPE[dtype]
            assert tuple(batch.shape) == (plan.batch, *plan.box_shape)
            assert batch.device == torch.device(device), (batch.device, device)
            # .cpu() copies; a CPU batch is a view of a pooled buffer, so clone it.
            out.append(batch.cpu() if batch.is_cuda else batch.clone())
            del batch
        stats = pipe.stats()
    assert len(out) == n_batches
    return out, stats


def subset(plan: F.BoxPlan, n: int = BOXES_PER_PLAN) -> F.BoxPlan:
    n = max(plan.batch, (min(n, len(plan.boxes)) // plan.batch) * plan.batch)
    return F.BoxPlan(plan.box_shape, plan.boxes[:n], plan.batch, plan.out_of_bounds)


def gpu_plans(fx: F.Fixture) -> list[F.BoxPlan]:
    """Single voxel, about a chunk, several chunks/shards, whole array; partly outside with
    out_of_bounds="fill" (one extent larger than the array); then one box around each missing
    chunk/shard with a margin into its neighbours."""
    plans = [subset(p) for p in F.plan_boxes(fx, seed=0)]
    plans += [subset(p) for p in F.plan_fill_boxes(fx, seed=0)]
    for region in fx.fill_regions():
        box = tuple((max(a - c // 2 - 1, 0), min(b + c // 2 + 1, n))
                    for (a, b), c, n in zip(region, fx.chunk, fx.shape))
        plans.append(F.BoxPlan(tuple(b - a for a, b in box), [box], batch=1))
    return plans


def assert_batches_same(got: list[torch.Tensor], want: list[torch.Tensor], label: str) -> None:
    assert len(got) == len(want), label
    for i, (g, w) in enumerate(zip(got, want)):
        F.assert_same(g, w, f"{label} batch {i}")


# ------------------------------------------------------------------------- nvCOMP binding


def test_nvcomp_major_is_the_one_asked_for():
    """The loader binds nvCOMP 6.x or 5.x at run time; dev/gpu/device_run.sh sets
    DAMACY_EXPECT_NVCOMP_MAJOR so that a run meant for one major cannot pass on the other."""
    info = damacy.gpu_info()
    print(f"nvCOMP {info['nvcomp_version']} (major {info['nvcomp_major']}) from {info['nvcomp_path']}")
    assert info["nvcomp_major"] in (5, 6)
    assert info["nvcomp_version"] // 1000 == info["nvcomp_major"]
    want = os.environ.get("DAMACY_EXPECT_NVCOMP_MAJOR")
    if want:
        assert info["nvcomp_major"] == int(want), info


# ------------------------------------------------------------------------- GPU == CPU


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_gpu_decode_equals_cpu_path(name, dtype, fixture_arrays):
    fx = F.FIXTURES[name]
    uri = F.uri_of(fixture_arrays[name])
    staged = skipped = 0
    for plan in gpu_plans(fx):
        label = f"{name} {dtype} extent {plan.box_shape} {plan.out_of_bounds}"
        want, _ = read_plan(uri, plan, dtype, "cpu")
        got, stats = read_plan(uri, plan, dtype, DEVICE, "gpu")
        assert_batches_same(got, want, label)
        assert stats.batches_failed == 0, label
        staged += stats.staged_bytes
        skipped += stats.blosc_blocks_skipped
    # The GPU path ran (it stages bytes for the device; the CPU path stages none).
    assert staged > 0, f"{name}: decode=\"gpu\" staged no bytes"
    # Multi-block blosc chunks: small crops decode only some blocks (from chunk_layout).
    # (The lz4 fixture's second shard compresses; chunks c-blosc stored raw have no blocks.)
    if name == "u16_sharded_blosc_lz4_blocks":
        assert skipped > 0, f"{name}: no blosc block skipped"
    elif not name.endswith("_blocks"):
        assert skipped == 0, f"{name}: {skipped} blosc blocks skipped in single-block chunks"


def test_gpu_decodes_only_the_blosc_blocks_crops_need(tmp_path):
    """blosc(zstd) chunks of 16×32×40 uint16 in 20 blocks of 2 KiB: small unaligned crops
    read and decompress only the blocks their voxels lie in (layouts from the chunk_layout
    cache), with exactly the CPU path's values."""
    uri = str(tmp_path / "blocks.zarr")
    torch.ops.damacy.write_example_volume(uri, [64, 96, 80], [16, 32, 40], [32, 96, 80], "blosc-zstd:2048", 3)
    extent = (9, 21, 17)
    rng = np.random.default_rng(5)
    boxes = [tuple((int(a), int(a) + e) for a, e in zip(rng.integers(0, [64 - 9, 96 - 21, 80 - 17]), extent))
             for _ in range(32)]
    plan = F.BoxPlan(extent, boxes, batch=8)
    want, _ = read_plan(uri, plan, "f32", "cpu")
    got, stats = read_plan(uri, plan, "f32", DEVICE, "gpu")
    assert_batches_same(got, want, "blosc-zstd:2048")
    assert stats.chunk_layout.misses > 0
    assert stats.blosc_blocks_skipped > 0, stats


def test_batches_mixing_arrays_and_codecs_on_the_gpu(fixture_arrays):
    """Samples from every 3D fixture interleaved in each batch: nvCOMP zstd, blosc on the
    device and CPU-decoded chunks in one device batch."""
    names = [n for n in NAMES if len(F.FIXTURES[n].shape) == 3]
    rng = np.random.default_rng(78)
    extent = (3, 4, 5)
    samples = []
    for _ in range(8 * 6):
        name = names[int(rng.integers(len(names)))]
        (box,) = F.random_boxes(F.FIXTURES[name].shape, extent, 1, int(rng.integers(2**31)),
                                grid=[F.FIXTURES[name].chunk])
        samples.append(damacy.Sample(F.uri_of(fixture_arrays[name]), box))
    for dtype in ("f32", "bf16"):
        results = {}
        for device, decode in (("cpu", "cpu"), (DEVICE, "gpu")):
            cfg = damacy.Config(samples_per_batch=8, sample_shape=list(extent), dtype=dtype,
                                device=device, decode=decode, n_io_threads=2,
                                pop_timeout_s=POP_TIMEOUT_S, staging_bytes=STAGING_BYTES)
            with damacy.Pipeline(cfg) as pipe:
                pipe.push(samples)
                results[device] = [b.cpu() if b.is_cuda else b.clone()
                                   for b in pipe.batches(len(samples) // 8)]
        assert_batches_same(results[DEVICE], results["cpu"], f"mixed {dtype}")


# ------------------------------------------------------------------------- device, stream


def _good_samples(error_arrays, n: int, seed: int, extent=(8, 8, 8)):
    uri = F.uri_of(error_arrays["good"])
    boxes = F.random_boxes(F.GOOD.shape, extent, n, seed, grid=[F.GOOD.chunk, F.GOOD.shard])
    return uri, boxes


def _small_config(extent, batch: int, **kw) -> damacy.Config:
    base = dict(samples_per_batch=batch, sample_shape=list(extent), device=DEVICE, decode="gpu",
                n_io_threads=2, pop_timeout_s=POP_TIMEOUT_S, staging_bytes=STAGING_BYTES)
    base.update(kw)
    return damacy.Config(**base)


def _sleep_ms(ms: float) -> None:
    """Keeps the current stream busy for about `ms` milliseconds."""
    torch.cuda._sleep(int(ms * 1e-3 * 2.0e9))  # ~2 GHz SM clock; exactness does not matter


@pytest.mark.parametrize("name", ["f32_2d_sharded_zstd", "u16_be_sharded_start",
                                  "u16_4d_sharded_blosc_zstd_shuffle"])
def test_output_is_on_cuda0_and_ordered_on_the_current_stream(name, fixture_arrays, oracles):
    """Batches are made on the caller's current stream: popped under a side stream while the
    default stream is busy (a batch made on the default stream would not be ready yet when
    the side stream reads it), and popped behind queued work on the side stream itself.
    Covers an nvCOMP zstd array, a raw (CPU-fallback, no decode status sync) array and blosc."""
    fx = F.FIXTURES[name]
    uri = F.uri_of(fixture_arrays[name])
    plan = subset(F.plan_boxes(fx, seed=5)[2], 24)  # several chunks/shards per box
    want, _ = read_plan(uri, plan, "f32", "cpu")
    side = torch.cuda.Stream(device=DEVICE)
    with damacy.Pipeline(make_config(plan, "f32", DEVICE, "gpu")) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in plan.boxes)
        got = []
        for i in range(len(want)):
            if i % 2 == 0:
                # default stream busy, consumer on `side`
                _sleep_ms(50)
                with torch.cuda.stream(side):
                    batch = pipe.pop()
                    y = batch.clone()  # an op on `side`, queued right after pop
            else:
                # `side` busy before the pop: the batch is made behind that work
                with torch.cuda.stream(side):
                    _sleep_ms(20)
                    batch = pipe.pop()
                    y = batch.clone()
            assert batch.is_cuda and batch.device == torch.device(DEVICE)
            assert batch.device.index == 0
            side.synchronize()
            got.append(y.cpu())
            del batch, y
        torch.cuda.synchronize()
    assert_batches_same(got, want, f"{name} on a side stream")


@pytest.mark.parametrize("dtype", ["f32", "i32"])
def test_cpu_decoded_batches_reach_the_current_stream_intact(dtype, error_arrays):
    """decode="cpu" on CUDA: batches are copied from their pinned pool buffers by an async
    H2D on the uploader's stream, joined to the caller's. Popped behind long queued work on
    the caller's stream, on a side stream, and all kept while later batches reuse the pool
    buffers (n_batch_buffers=2): every batch keeps the oracle's values."""
    uri, boxes = _good_samples(error_arrays, 48, seed=23)
    oracle = F.OracleArray(error_arrays["good"])
    side = torch.cuda.Stream(device=DEVICE)
    kept = []
    with damacy.Pipeline(_small_config((8, 8, 8), 4, decode="cpu", dtype=dtype, n_batch_buffers=2)) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in boxes)
        for i in range(12):
            stream = side if i % 3 == 2 else torch.cuda.current_stream()
            with torch.cuda.stream(stream):
                _sleep_ms(5)  # the copy must not wait for this, nor this for the copy
                batch = pipe.pop()
                kept.append(batch.clone() if i % 2 else batch)
        stats = pipe.stats()
    torch.cuda.synchronize()
    assert stats.buffers_allocated <= 2
    for i, t in enumerate(kept):
        assert t.is_cuda
        want = oracle.read_batch(boxes[i * 4:(i + 1) * 4])
        if dtype == "i32":  # (assert_same compares float bit patterns)
            assert torch.equal(t.cpu(), want.to(torch.int32)), f"batch {i}"
        else:
            F.assert_same(t.cpu(), want, f"batch {i}")


def test_default_stream_consumer_sees_the_values(error_arrays):
    uri, boxes = _good_samples(error_arrays, 32, seed=11)
    oracle = F.OracleArray(error_arrays["good"])
    with damacy.Pipeline(_small_config((8, 8, 8), 8)) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in boxes)
        for i, batch in enumerate(pipe.batches(4)):
            assert batch.device == torch.device(DEVICE)
            total = batch.double().sum()  # consumed on the default stream
            want = oracle.read_batch(boxes[i * 8:(i + 1) * 8])
            F.assert_same(batch.cpu(), want, f"batch {i}")
            assert float(total) == pytest.approx(float(want.double().sum()), rel=1e-12)


# ------------------------------------------------------------------------- bad data


def _check_decode_error(e: BaseException, names) -> None:
    assert type(e) is damacy.DecodeError, f"expected DecodeError, got {type(e).__name__}: {e}"
    assert isinstance(e.what, str) and e.what
    for n in names:
        assert n in e.what, f"DecodeError should name {n!r}: {e.what!r}"
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is type(e) and e2.what == e.what


@pytest.mark.parametrize("bad", ["corrupt_zstd", "corrupt_zstd_sharded", "corrupt_blosc",
                                 "bad_chunk_crc", "bad_chunk_crc_sharded"])
def test_corrupt_chunk_on_the_gpu_is_decode_error_and_the_next_batch_works(bad, error_arrays):
    """Batch 1 = good, bad, good, good -> DecodeError naming the broken array; batch 2 (good)
    pops with exact values; the CUDA context still works; a new pipeline works, and two live
    pipelines interleave correctly."""
    good_uri = F.uri_of(error_arrays["good"])
    oracle = F.OracleArray(error_arrays["good"])
    bad_uri = F.uri_of(error_arrays[bad])
    extent = (4, 4, 4)
    good = F.random_boxes(F.GOOD.shape, extent, 8, seed=len(bad), grid=[F.GOOD.chunk, F.GOOD.shard])
    first = [damacy.Sample(good_uri, good[0]), damacy.Sample(bad_uri, F.ERROR_BOX)]
    first += [damacy.Sample(good_uri, b) for b in good[1:3]]
    second = good[3:7]
    with damacy.Pipeline(_small_config(extent, 4)) as pipe:
        pipe.push(first + [damacy.Sample(good_uri, b) for b in second])
        with pytest.raises(damacy.DamacyError) as info:
            pipe.pop()
        _check_decode_error(info.value, [f"{bad}.zarr"])
        batch = pipe.pop()
        assert batch.device == torch.device(DEVICE)
        F.assert_same(batch.cpu(), oracle.read_batch(second), f"batch after {bad}")
    # the CUDA context is healthy
    assert float(torch.ones(4, device=DEVICE).sum()) == 4.0
    torch.cuda.synchronize()

    # a second pipeline in the same process, and two alive at once
    more = F.random_boxes(F.GOOD.shape, extent, 16, seed=100 + len(bad), grid=[F.GOOD.chunk])
    with damacy.Pipeline(_small_config(extent, 4)) as p1, \
            damacy.Pipeline(_small_config(extent, 4, dtype="bf16")) as p2:
        p1.push(damacy.Sample(good_uri, b) for b in more)
        p2.push(damacy.Sample(good_uri, b) for b in reversed(more))
        rev = list(reversed(more))
        for i in range(4):
            b1, b2 = p1.pop(), p2.pop()
            F.assert_same(b1.cpu(), oracle.read_batch(more[4 * i:4 * i + 4]), f"p1 batch {i}")
            F.assert_same(b2.cpu(), oracle.read_batch(rev[4 * i:4 * i + 4], "bf16"), f"p2 batch {i}")


@pytest.mark.parametrize("sharded", [False, True])
def test_zstd_content_checksum_is_verified_on_the_gpu(sharded, tmp_path):
    """zstd chunks written with checksum=True (every frame has a checksum for the GPU to
    verify): values equal zarr-python's on random boxes. Then one payload byte of chunk 0
    flipped (incompressible data: raw blocks, so the frame stays well formed and nvCOMP
    decodes it): DecodeError naming the checksum and the chunk, as the CPU path (libzstd)
    raises; the next batch, elsewhere, has exact values."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
    import zarr

    data = np.random.default_rng(5 + sharded).integers(0, 2**16, size=(16, 16, 16), dtype=np.uint16)
    path = tmp_path / "zstd_checksum.zarr"
    codecs = [BytesCodec(), ZstdCodec(level=1, checksum=True)]
    if sharded:
        codecs = [ShardingCodec(chunk_shape=(4, 4, 4), codecs=codecs, index_codecs=[BytesCodec(), Crc32cCodec()])]
    arr = zarr.create(store=str(path), shape=data.shape, chunks=(8, 8, 8) if sharded else (4, 4, 4),
                      dtype="uint16", codecs=codecs, fill_value=0, zarr_format=3)
    arr[...] = data
    uri = F.uri_of(path)
    extent = (4, 4, 4)
    boxes = F.random_boxes(data.shape, extent, 8, seed=31, grid=[(4, 4, 4), (8, 8, 8)])
    oracle = F.OracleArray(path)
    with damacy.Pipeline(_small_config(extent, 4)) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in boxes)
        for i in range(2):
            F.assert_same(pipe.pop().cpu(), oracle.read_batch(boxes[4 * i:4 * i + 4]), f"batch {i}")

    f = path / "c/0/0/0"
    raw = bytearray(f.read_bytes())
    start, size = 0, len(raw)
    if sharded:
        offs, nbytes, _, _ = F.shard_index(f, "end", 8, True)
        start, size = int(offs[0]), int(nbytes[0])
    assert raw[start:start + 4] == b"\x28\xb5\x2f\xfd" and raw[start + 4] & 0x04, "chunk 0: a zstd frame with the checksum flag"
    raw[start + size // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    far = ((12, 16), (12, 16), (12, 16))
    for device, decode in [(DEVICE, "gpu"), ("cpu", "cpu")]:
        with damacy.Pipeline(_small_config(extent, 1, device=device, decode=decode)) as pipe:
            pipe.push([damacy.Sample(uri, F.ERROR_BOX), damacy.Sample(uri, far)])
            with pytest.raises(damacy.DamacyError) as info:
                pipe.pop()
            _check_decode_error(info.value, ["zstd_checksum.zarr", "[0, 0, 0]"])
            if device == DEVICE:
                assert "checksum" in info.value.what, info.value.what
            F.assert_same(pipe.pop()[0].cpu(), torch.from_numpy(data[12:, 12:, 12:].astype(np.float32)), f"after the bad chunk ({device})")


def test_damage_elsewhere_does_not_matter_on_the_gpu(error_arrays):
    far = ((8, 12), (8, 12), (8, 12))
    for name in ["corrupt_zstd", "corrupt_zstd_sharded", "corrupt_blosc", "bad_chunk_crc_sharded"]:
        want = F.oracle_read(error_arrays[name], far)
        with damacy.Pipeline(_small_config((4, 4, 4), 1)) as pipe:
            pipe.push(damacy.Sample(F.uri_of(error_arrays[name]), far))
            F.assert_same(pipe.pop()[0].cpu(), want, name)


# ------------------------------------------------------------------------- no leak


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def test_no_device_memory_growth_over_many_batches(error_arrays):
    """1,000 batches: torch's allocated device memory is the same after every batch once warm
    (each batch's scratch is freed, the output dies with the tensor), reserved memory and
    host RSS stay bounded, and the pipeline allocated at most n_batch_buffers slabs."""
    uri = F.uri_of(error_arrays["good"])
    extent = (8, 8, 8)
    n_batches, warm, n_buffers = 1000, 30, 3
    rng = np.random.default_rng(5)

    def samples():
        while True:
            (box,) = F.random_boxes(F.GOOD.shape, extent, 1, int(rng.integers(2**31)),
                                    grid=[F.GOOD.chunk, F.GOOD.shard])
            yield damacy.Sample(uri, box)

    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(DEVICE)
    tol = 1 << 20
    allocated, checksum = [], torch.zeros((), dtype=torch.float64, device=DEVICE)
    with damacy.Pipeline(_small_config(extent, 8, n_batch_buffers=n_buffers)) as pipe:
        pipe.push(samples())
        for i in range(n_batches):
            batch = pipe.pop()
            checksum += batch.sum(dtype=torch.float64)  # use every batch
            del batch
            if i == warm - 1:
                torch.cuda.synchronize()
                warm_alloc = torch.cuda.memory_allocated(DEVICE)
                warm_reserved = torch.cuda.memory_reserved(DEVICE)
                warm_rss = _rss_bytes()
            if i >= warm and i % 10 == 0:
                allocated.append(torch.cuda.memory_allocated(DEVICE))
        torch.cuda.synchronize()
        end_alloc = torch.cuda.memory_allocated(DEVICE)
        end_reserved = torch.cuda.memory_reserved(DEVICE)
        end_rss = _rss_bytes()
        stats = pipe.stats()
    assert float(checksum) > 0
    assert end_alloc - warm_alloc <= tol, f"allocated grew {warm_alloc} -> {end_alloc}"
    assert max(allocated) - warm_alloc <= tol, f"allocated peaked at {max(allocated)} (warm {warm_alloc})"
    assert end_reserved - warm_reserved <= 64 << 20, f"reserved grew {warm_reserved} -> {end_reserved}"
    if warm_rss:
        assert end_rss - warm_rss <= 256 << 20, f"host RSS grew {warm_rss} -> {end_rss}"
    assert stats.batches == n_batches
    assert stats.batches_failed == 0
    assert 1 <= stats.buffers_allocated <= n_buffers, stats
    del checksum
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated(DEVICE) - base <= tol, "device memory left after close"


# ------------------------------------------------------------------------- decode modes


@pytest.mark.parametrize("name", ["f32_2d_sharded_zstd", "bf16_sharded_zstd",
                                  "u16_4d_sharded_blosc_zstd_shuffle",
                                  "i16_sharded_blosc_zstd_bitshuffle", "f64_be_gzip_nan"])
def test_decode_auto_and_cpu_on_cuda_equal_gpu_decode(name, fixture_arrays):
    """decode="auto" decodes on the GPU (nvCOMP is available here); decode="cpu" with a CUDA
    device returns CUDA tensors; all three give the same bits."""
    fx = F.FIXTURES[name]
    uri = F.uri_of(fixture_arrays[name])
    plans = [subset(F.plan_boxes(fx, seed=9)[2]), subset(F.plan_fill_boxes(fx, seed=9)[0])]
    for plan in plans:
        for dtype in ("f32", "bf16"):
            label = f"{name} {dtype} {plan.box_shape} {plan.out_of_bounds}"
            gpu, s_gpu = read_plan(uri, plan, dtype, DEVICE, "gpu")
            auto, s_auto = read_plan(uri, plan, dtype, DEVICE, "auto")
            cpu, s_cpu = read_plan(uri, plan, dtype, DEVICE, "cpu")  # device checked inside
            assert_batches_same(auto, gpu, f"{label} auto vs gpu")
            assert_batches_same(cpu, gpu, f"{label} cpu-decode vs gpu")
            assert s_cpu.staged_bytes == 0, f"{label}: decode=\"cpu\" staged bytes for the device"
            if s_gpu.staged_bytes:
                assert s_auto.staged_bytes > 0, f"{label}: decode=\"auto\" did not take the GPU path"


def test_cuda_failure_is_cuda_error_naming_what_failed():
    """A CUDA failure inside the device path reaches Python as damacy.CudaError naming the
    step, not torch.AcceleratorError (issue 13): a device index past the last GPU fails
    where the device runner starts; the pipeline on cuda:0 still works afterwards."""
    bad = f"cuda:{torch.cuda.device_count()}"
    cfg = damacy.Config(samples_per_batch=1, sample_shape=(4, 4, 4), device=bad, decode="gpu")
    with pytest.raises(damacy.CudaError) as info:
        with damacy.Pipeline(cfg) as p:
            p.push([damacy.Sample("/nonexistent.zarr", [(0, 4)] * 3)])
            p.pop(timeout_s=POP_TIMEOUT_S)
    assert bad in str(info.value), str(info.value)
    assert not isinstance(info.value, torch.AcceleratorError)
    ok = damacy.Config(samples_per_batch=1, sample_shape=(4, 4, 4), device=DEVICE, decode="gpu")
    with damacy.Pipeline(ok):
        pass


# --- The device chunk store (issue 18: device_chunk_cache_bytes) -------------------------------
# Geometry: u16 (40, 64, 64), shards (20, 64, 64), inner chunks (10, 32, 32) = 20 KiB decoded
# each, zstd (and blosc-lz4 with byte shuffle); 8 shards files hold 4 x 2 x 2 chunks each.
# Thin samples (1 x 48 x 48 slices) in depth order: consecutive batches of 8 slices read the
# same chunks (10 deep), so the store serves most of a batch from the pool.

def _store_array(path, codec: str, seed: int):
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 1000, size=(40, 64, 64), dtype=np.uint16)  # compressible
    compressor = ZstdCodec(level=1) if codec == "zstd" else BloscCodec(cname="lz4", clevel=1, shuffle="shuffle", typesize=2)
    a = zarr.create_array(store=str(path), shape=data.shape, dtype="uint16", shards=(20, 64, 64),
                          chunks=(10, 32, 32), compressors=[compressor], fill_value=0, zarr_format=3, overwrite=True)
    a[...] = data
    return data


def _thin_boxes(n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        z = (i * 40) // n  # depth order: neighbouring samples share chunks
        y, x = (int(v) for v in rng.integers(0, 64 - 48 + 1, size=2))
        out.append([(z, z + 1), (y, y + 48), (x, x + 48)])
    return out


def _store_config(store_bytes, **kw):
    base = dict(samples_per_batch=8, sample_shape=[1, 48, 48], dtype="f32", device=DEVICE, decode="gpu",
                n_io_threads=2, pop_timeout_s=POP_TIMEOUT_S, staging_bytes=STAGING_BYTES,
                device_chunk_cache_bytes=store_bytes)
    base.update(kw)
    return damacy.Config(**base)


def _expect(data, bxs, i, batch=8):
    return np.stack([data[z0:z1, y0:y1, x0:x1] for (z0, z1), (y0, y1), (x0, x1) in bxs[i * batch:(i + 1) * batch]]).astype(np.float32)


@pytest.mark.parametrize("codec", ["zstd", "blosc"])
@pytest.mark.parametrize("store_bytes", [0, 3 * (20 << 10) + 512, 64 << 20])
def test_device_chunk_store_equals_zarr_and_the_store_off(codec, store_bytes, tmp_path):
    """Store off (0), a pool of three chunks (evicting all the time) and one of 64 MiB: every
    batch equals zarr-python's values (and so each other), over 10 batches that reuse chunks;
    with the store on, later batches are served from the pool (hits), with it off never."""
    uri = str(tmp_path / "a.zarr")
    data = _store_array(uri, codec, seed=5)
    bxs = _thin_boxes(80, seed=6)
    with damacy.Pipeline(_store_config(store_bytes)) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in bxs)
        for i in range(len(bxs) // 8):
            got = pipe.pop().cpu().numpy()
            np.testing.assert_array_equal(got, _expect(data, bxs, i), err_msg=f"{codec}, store {store_bytes}, batch {i}")
        s = pipe.stats()
    assert s.batches_failed == 0
    if store_bytes == 0:
        assert s.decoded_cache.hits == 0, s
    else:
        assert s.decoded_cache.hits > 0, f"later batches fetch chunks earlier ones kept: {s}"
    if store_bytes == 64 << 20:
        assert s.decoded_cache.evictions == 0, s


def test_device_chunk_store_sees_a_rewrite_in_place(tmp_path):
    """A shard rewritten while its chunks sit in the pool: with recheck_cached_data=True every
    hit checks its shard, so a batch either fails with Storage (the check saw the rewrite) or
    has the new values; never the old bytes served silently. Later batches have the new values."""
    uri = str(tmp_path / "a.zarr")
    old = _store_array(uri, "zstd", seed=7)
    # The first 32 of 80 depth-ordered boxes: four batches over z 0..15, so consecutive
    # batches share chunks (32 boxes spread over all 40 planes would put each batch in its
    # own z-chunk, and nothing would be kept).
    bxs = _thin_boxes(80, seed=8)[:32]
    with damacy.Pipeline(_store_config(64 << 20, recheck_cached_data=True)) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in bxs)
        for i in range(4):
            np.testing.assert_array_equal(pipe.pop().cpu().numpy(), _expect(old, bxs, i), err_msg=f"batch {i}")
        new = _store_array(uri, "zstd", seed=9)  # same geometry, new bytes (and shard sizes)
        failed = 0
        pipe.push(damacy.Sample(uri, b) for b in bxs)
        for i in range(4):
            try:
                got = pipe.pop().cpu().numpy()
            except damacy.StorageError:
                failed += 1
                continue
            np.testing.assert_array_equal(got, _expect(new, bxs, i), err_msg=f"after the rewrite, batch {i}")
        # Pushed after every batch above finished (their checks invalidated the old index):
        # all read the new shards.
        pipe.push(damacy.Sample(uri, b) for b in bxs)
        for i in range(4):
            np.testing.assert_array_equal(pipe.pop().cpu().numpy(), _expect(new, bxs, i), err_msg=f"after the checks, batch {i}")
        assert pipe.stats().decoded_cache.hits > 0


# ------------------------------------------------------------------- object stores on the GPU


def _remote_array(codec, tmp_path):
    """A sharded uint16 array under tmp_path/vol.zarr written by zarr-python, and its data."""
    import zarr

    shape, inner, shard = (24, 40, 36), (8, 8, 12), (8, 16, 24)
    rng = np.random.default_rng(17)
    data = rng.integers(0, 4000, size=shape, dtype=np.uint16)
    comp = zarr.codecs.ZstdCodec(level=3) if codec == "zstd" else zarr.codecs.BloscCodec(cname="zstd", shuffle="shuffle")
    arr = zarr.create_array(store=str(tmp_path / "vol.zarr"), shape=shape, chunks=inner, shards=shard, dtype="uint16",
                            compressors=comp, fill_value=7, zarr_format=3)
    arr[...] = data
    return data


def _check_remote_reads_on_the_gpu(uri, data, codec, **knobs):
    """Random boxes of `uri` over several GPU-decoded batches against `data`, exactly."""
    rng = np.random.default_rng(18)
    size = (6, 10, 14)
    boxes = []
    for _ in range(16):
        lo = [int(rng.integers(0, n - k + 1)) for n, k in zip(data.shape, size)]
        boxes.append([(a, a + k) for a, k in zip(lo, size)])
    cfg = damacy.Config(samples_per_batch=4, sample_shape=size, device=DEVICE, decode="gpu", n_io_threads=4,
                        pop_timeout_s=POP_TIMEOUT_S, staging_bytes=STAGING_BYTES, **knobs)
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in boxes)
        got = [pipe.pop().cpu() for _ in range(4)]
    for i, b in enumerate(boxes):
        want = data[tuple(slice(a, z) for a, z in b)].astype(np.float32)
        np.testing.assert_array_equal(got[i // 4][i % 4].numpy(), want, err_msg=f"{codec} box {b} of {uri}")


@pytest.mark.parametrize("codec", ["zstd", "blosc"])
def test_http_reads_on_the_gpu_path_match_zarr_python(codec, tmp_path):
    """The GPU path reading a sharded array from a loopback HTTP server (tests/remote_servers.py's
    ranged file server, in this process), against what zarr-python wrote, on random boxes over
    several batches."""
    from remote_servers import start_http

    data = _remote_array(codec, tmp_path)
    server = start_http(str(tmp_path))
    try:
        _check_remote_reads_on_the_gpu(f"http://127.0.0.1:{server.server_address[1]}/vol.zarr", data, codec)
    finally:
        server.shutdown()


@pytest.mark.parametrize("codec", ["zstd", "blosc"])
def test_s3_reads_on_the_gpu_path_match_zarr_python(codec, tmp_path):
    """The same through moto's S3 server on loopback (skipped where moto is not installed: the
    GPU machine gets it carried, dev/gpu/fetch_wheels.sh)."""
    pytest.importorskip("moto.server")
    from remote_servers import start_s3

    data = _remote_array(codec, tmp_path)
    server, endpoint = start_s3(str(tmp_path), "gpu-bucket")
    try:
        opts = {"endpoint": endpoint, "allow_http": "true", "access_key_id": "test", "secret_access_key": "test",
                "region": "us-east-1"}
        _check_remote_reads_on_the_gpu("s3://gpu-bucket/vol.zarr", data, codec, storage_options=opts)
    finally:
        server.stop()
