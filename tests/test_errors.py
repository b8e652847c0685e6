"""One test per bad input: the typed error, and the state afterwards.

Errors found while reading a batch surface at `pop()` for that batch (push is lazy); the bad
sample sits in the middle of a batch of good ones, and the batch after it must pop with
correct values: the pipeline stays usable. Every caught error must pickle (DataLoader
workers) keeping its class, status and message, and every pipeline must close promptly.
The broken arrays are written by fixtures.write_error_fixtures (each broken in its first
chunk, reached by fixtures.ERROR_BOX).
"""

from __future__ import annotations

import gc
import pickle
import re
import time

import numpy as np
import pytest
import torch

import damacy
import fixtures as F

B = 4
EXTENT = (4, 4, 4)
POP_TIMEOUT_S = 20.0
CLOSE_WITHIN_S = 10.0

ERROR_CLASSES = {
    "TryAgain": "TryAgain", "InvalidArgument": "InvalidArgument", "NotFound": "NotFound",
    "DtypeMismatch": "DtypeMismatch", "RankMismatch": "RankMismatch", "StorageError": "Storage",
    "DecodeError": "Decode", "CudaError": "Cuda", "OutOfMemory": "OutOfMemory",
    "BudgetExceeded": "BudgetExceeded", "ShutdownError": "Shutdown", "PoolStarved": "PoolStarved",
}


def _token(status) -> str:
    return str(getattr(status, "name", status))


def check_error(e: BaseException, cls: type, *, names=None) -> None:
    """`e` is exactly a `cls`, a DamacyError with the matching status, pickles, and (when
    `names` is given) its message names each of `names`."""
    assert isinstance(e, damacy.DamacyError), repr(e)
    # sample.AabbTypeError: an InvalidArgument that is also the original damacy's TypeError.
    exact = type(e) is cls or (type(e) is damacy.sample.AabbTypeError and cls is damacy.InvalidArgument)
    assert exact, f"expected {cls.__name__}, got {type(e).__name__}: {e}"
    token = ERROR_CLASSES[cls.__name__]
    assert _token(e.status) in (token, cls.__name__), (e.status, cls)
    assert isinstance(e.what, str) and e.what
    for n in names or ():
        assert n in e.what, f"{cls.__name__} message should name {n!r}: {e.what!r}"
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is type(e)
    assert e2.status == e.status
    assert e2.what == e.what
    assert str(e2) == str(e)


def good_boxes(n: int, seed: int, extent=EXTENT, shape=F.GOOD.shape):
    return F.random_boxes(shape, extent, n, seed, grid=[F.GOOD.chunk, F.GOOD.shard])


def make_config(**kw) -> "damacy.Config":
    base = dict(samples_per_batch=B, sample_shape=list(EXTENT), n_io_threads=2,
                pop_timeout_s=POP_TIMEOUT_S)
    base.update(kw)
    return damacy.Config(**base)


def close_promptly(pipe) -> None:
    t0 = time.perf_counter()
    pipe.close()
    assert time.perf_counter() - t0 < CLOSE_WITHIN_S


def fails_then_recovers(bad_uri: str, bad_box, cls: type, *, good_uri: str, good_oracle,
                        good: list, names=None, **cfg) -> BaseException:
    """Batch 1 = good, bad, good...; batch 2 = good. pop -> `cls`; pop -> batch 2 exactly;
    close returns. Returns the error."""
    assert len(good) >= 2 * B - 1
    first = [damacy.Sample(good_uri, good[0]), damacy.Sample(bad_uri, bad_box)]
    first += [damacy.Sample(good_uri, b) for b in good[1:B - 1]]
    second = good[B - 1: 2 * B - 1]
    pipe = damacy.Pipeline(make_config(**cfg))
    try:
        pipe.push(first + [damacy.Sample(good_uri, b) for b in second])
        with pytest.raises(damacy.DamacyError) as info:
            pipe.pop()
        check_error(info.value, cls, names=names)
        batch = pipe.pop()
        F.assert_same(batch, good_oracle.read_batch(second), f"batch after {cls.__name__}")
    finally:
        close_promptly(pipe)
    return info.value


@pytest.fixture(scope="module")
def good(error_arrays):
    return F.uri_of(error_arrays["good"]), F.OracleArray(error_arrays["good"])


def _bad(error_arrays, name, cls, good, names=None, box=F.ERROR_BOX, **cfg):
    uri = F.uri_of(error_arrays[name])
    return fails_then_recovers(uri, box, cls, good_uri=good[0], good_oracle=good[1],
                               good=good_boxes(2 * B, seed=len(name)), names=names, **cfg)


# ---------------------------------------------------------------- the error set


def test_error_classes_exist_and_share_a_base():
    assert issubclass(damacy.DamacyError, Exception)
    for name in ERROR_CLASSES:
        cls = getattr(damacy, name)
        assert issubclass(cls, damacy.DamacyError), name


# ---------------------------------------------------------------- arrays


def test_missing_array_is_not_found(error_arrays, good):
    _bad(error_arrays, "missing", damacy.NotFound, good, names=["does_not_exist.zarr"])


@pytest.mark.parametrize("name", ["malformed_json", "bad_metadata"])
def test_malformed_zarr_json_is_invalid_argument(name, error_arrays, good):
    _bad(error_arrays, name, damacy.InvalidArgument, good, names=[f"{name}.zarr"])


def test_unsupported_codec_is_invalid_argument_naming_it(error_arrays, good):
    _bad(error_arrays, "unsupported_codec", damacy.InvalidArgument, good, names=["numcodecs.bz2"])


@pytest.mark.parametrize("name", ["truncated_shard_end", "truncated_shard_start"])
def test_truncated_shard_is_storage_error(name, error_arrays, good):
    _bad(error_arrays, name, damacy.StorageError, good, names=[f"{name}.zarr"])


def test_shard_index_crc32c_mismatch_is_storage_error(error_arrays, good):
    _bad(error_arrays, "bad_index_crc", damacy.StorageError, good, names=["bad_index_crc.zarr"])


@pytest.mark.parametrize("name", ["bad_chunk_crc", "bad_chunk_crc_sharded"])
def test_chunk_crc32c_mismatch_is_decode_error(name, error_arrays, good):
    _bad(error_arrays, name, damacy.DecodeError, good, names=[f"{name}.zarr"])


@pytest.mark.parametrize("name", ["corrupt_zstd", "corrupt_zstd_sharded", "corrupt_blosc"])
def test_corrupt_compressed_chunk_is_decode_error(name, error_arrays, good):
    _bad(error_arrays, name, damacy.DecodeError, good, names=[f"{name}.zarr"])


def test_uncastable_source_dtype_is_dtype_mismatch(error_arrays, good):
    _bad(error_arrays, "complex64", damacy.DtypeMismatch, good, names=["complex64"])


def test_damage_elsewhere_in_the_array_does_not_matter(error_arrays, good):
    """The far corner of each broken array (another shard / chunk) reads fine."""
    far = ((8, 12), (8, 12), (8, 12))
    for name in ["truncated_shard_end", "truncated_shard_start", "bad_index_crc", "bad_chunk_crc",
                 "bad_chunk_crc_sharded", "corrupt_zstd", "corrupt_zstd_sharded", "corrupt_blosc"]:
        want = F.oracle_read(error_arrays[name], far)  # the region read alone, never the damage
        pipe = damacy.Pipeline(make_config(samples_per_batch=1))
        try:
            pipe.push(damacy.Sample(F.uri_of(error_arrays[name]), far))
            F.assert_same(pipe.pop()[0], want, name)
        finally:
            close_promptly(pipe)


# ---------------------------------------------------------------- boxes


def test_rank_mismatch(error_arrays, fixture_arrays, oracles):
    """A 2D box (sample_shape of rank 2) on a 3D array; the next batch (2D array) is fine."""
    name2d = "f32_2d_sharded_zstd"
    shape2d = F.FIXTURES[name2d].shape
    extent = (4, 4)
    fails_then_recovers(
        F.uri_of(error_arrays["good"]), ((0, 4), (0, 4)), damacy.RankMismatch,
        good_uri=F.uri_of(fixture_arrays[name2d]), good_oracle=oracles(name2d),
        good=F.random_boxes(shape2d, extent, 2 * B, seed=5),
        sample_shape=list(extent),
    )


def test_box_outside_the_array_is_invalid_argument_with_its_shape(error_arrays, good):
    shape = F.GOOD.shape  # (20, 24, 28)
    box = ((shape[0] - 2, shape[0] + 2), (0, 4), (0, 4))
    e = _bad(error_arrays, "good", damacy.InvalidArgument, good, box=box, out_of_bounds="error")
    pattern = r"\D+".join(str(n) for n in shape)
    assert re.search(pattern, e.what), f"message should contain the array shape {shape}: {e.what!r}"


def test_box_extent_other_than_sample_shape_is_invalid_argument(error_arrays, good):
    _bad(error_arrays, "good", damacy.InvalidArgument, good, box=((0, 4), (0, 4), (0, 5)))


def test_box_outside_is_the_default_policy_error():
    assert damacy.Config(samples_per_batch=1, sample_shape=[1]).out_of_bounds == "error"


BAD_AABBS = {
    "step_2": [slice(0, 4, 2), (0, 4), (0, 4)],
    "negative_slice": [slice(-4, None), (0, 4), (0, 4)],
    "empty": [(3, 3), (0, 4), (0, 4)],
    "reversed": [(4, 0), (0, 4), (0, 4)],
    "float": [(0.5, 4.5), (0, 4), (0, 4)],
    "string": [("0", "4"), (0, 4), (0, 4)],
    "ints_not_pairs": [0, 4, 4],
    "triple": [(0, 4, 1), (0, 4), (0, 4)],
    "no_dims": [],
}


@pytest.mark.parametrize("case", list(BAD_AABBS))
def test_invalid_sample_is_invalid_argument(case, error_arrays):
    with pytest.raises(damacy.DamacyError) as info:
        damacy.Sample(F.uri_of(error_arrays["good"]), BAD_AABBS[case])
    check_error(info.value, damacy.InvalidArgument)


def test_negative_start_is_outside_the_array(error_arrays):
    """A negative start is a box reaching outside the array (issue 15): Sample takes it, the
    pipeline refuses it under out_of_bounds="error" and reads fill under "fill"."""
    uri = F.uri_of(error_arrays["good"])
    s = damacy.Sample(uri, [(-1, 3), (0, 4), (0, 4)])
    for oob in ("error", "fill"):
        with damacy.Pipeline(damacy.Config(samples_per_batch=1, sample_shape=(4, 4, 4), out_of_bounds=oob)) as p:
            p.push(s)
            if oob == "error":
                with pytest.raises(damacy.InvalidArgument):
                    p.pop()
            else:
                assert p.pop()[0, 0].eq(0).all()  # the fixture's fill value


def test_valid_samples_normalise_and_pickle(error_arrays):
    uri = F.uri_of(error_arrays["good"])
    a = damacy.Sample(uri, [(0, 4), (1, 5), (2, 6)])
    b = damacy.Sample(uri, (slice(0, 4), slice(1, 5), slice(2, 6)))
    c = damacy.Sample(uri, [(np.int64(0), np.int64(4)), (1, 5), (2, 6)])
    assert a.uri == uri
    assert a.aabb == ((0, 4), (1, 5), (2, 6)) == b.aabb == c.aabb
    assert all(type(x) is int for pair in a.aabb for x in pair)
    assert a == b and hash(a) == hash(b)
    assert len({a, b, c}) == 1
    a2 = pickle.loads(pickle.dumps(a))
    assert a2 == a and a2.aabb == a.aabb and a2.uri == a.uri


# ---------------------------------------------------------------- config


BAD_CONFIGS = {
    "sampels_per_batch": dict(samples_per_batch=1, sample_shape=[4], sampels_per_batch=2),
    "n_threads": dict(samples_per_batch=1, sample_shape=[4], n_threads=2),
    "samples_per_batch": dict(samples_per_batch=0, sample_shape=[4]),
    "sample_shape": dict(samples_per_batch=1, sample_shape=[4, 0]),
    "dtype": dict(samples_per_batch=1, sample_shape=[4], dtype="f64"),
    "out_of_bounds": dict(samples_per_batch=1, sample_shape=[4], out_of_bounds="wrap"),
    "lookahead_samples": dict(samples_per_batch=16, sample_shape=[4], lookahead_samples=8),
    "pop_timeout_s": dict(samples_per_batch=1, sample_shape=[4], pop_timeout_s=-1.0),
    "device": dict(samples_per_batch=1, sample_shape=[4], device="tpu"),
}


@pytest.mark.parametrize("field", list(BAD_CONFIGS))
def test_invalid_config_is_invalid_argument_naming_the_field(field):
    with pytest.raises(damacy.DamacyError) as info:
        damacy.Config(**BAD_CONFIGS[field])
    check_error(info.value, damacy.InvalidArgument, names=[field])


def test_config_pickles():
    cfg = damacy.Config(samples_per_batch=3, sample_shape=[4, 5, 6], dtype="bf16",
                        out_of_bounds="fill", n_io_threads=2)
    cfg2 = pickle.loads(pickle.dumps(cfg))
    assert cfg2 == cfg
    assert (cfg2.samples_per_batch, list(cfg2.sample_shape), cfg2.dtype, cfg2.out_of_bounds) == (
        3, [4, 5, 6], "bf16", "fill")


# ---------------------------------------------------------------- pipeline state


def test_pop_on_a_closed_pipeline_is_shutdown_error(error_arrays):
    pipe = damacy.Pipeline(make_config())
    pipe.push(damacy.Sample(F.uri_of(error_arrays["good"]), b) for b in good_boxes(B, seed=1))
    close_promptly(pipe)
    with pytest.raises(damacy.DamacyError) as info:
        pipe.pop(timeout_s=1.0)
    check_error(info.value, damacy.ShutdownError)
    close_promptly(pipe)  # closing twice is harmless


def test_pop_with_nothing_pushed_is_try_again_within_the_timeout(error_arrays, good):
    pipe = damacy.Pipeline(make_config())
    try:
        t0 = time.perf_counter()
        with pytest.raises(damacy.DamacyError) as info:
            pipe.pop(timeout_s=0.3)
        elapsed = time.perf_counter() - t0
        check_error(info.value, damacy.TryAgain)
        assert elapsed < 0.3 + 2.0, f"pop(timeout_s=0.3) took {elapsed:.2f}s"
        # still usable
        boxes = good_boxes(B, seed=2)
        pipe.push(damacy.Sample(good[0], b) for b in boxes)
        F.assert_same(pipe.pop(), good[1].read_batch(boxes), "after TryAgain")
    finally:
        close_promptly(pipe)


def test_all_buffers_held_is_pool_starved_until_one_is_released(error_arrays, good):
    boxes = good_boxes(3 * B, seed=3)
    pipe = damacy.Pipeline(make_config(n_batch_buffers=2))
    try:
        pipe.push(damacy.Sample(good[0], b) for b in boxes)
        held = [pipe.pop(), pipe.pop()]
        with pytest.raises(damacy.DamacyError) as info:
            pipe.pop(timeout_s=0.5)
        check_error(info.value, damacy.PoolStarved)
        for i, t in enumerate(held):
            F.assert_same(t, good[1].read_batch(boxes[i * B:(i + 1) * B]), f"held batch {i}")
        del held, t
        gc.collect()
        F.assert_same(pipe.pop(), good[1].read_batch(boxes[2 * B:]), "after release")
    finally:
        close_promptly(pipe)


def test_arrays_named_in_the_config_are_checked_when_the_pipeline_is_made(good):
    """Config(arrays=[...]): metadata loaded and cache sizes checked at construction (a
    batch of 4 boxes of 4³ may touch all 12 shards of the good array)."""
    uri, oracle = good
    assert make_config(arrays=[uri]).arrays == (uri,)
    with pytest.raises(damacy.InvalidArgument, match="n_shard_index_cache` to at least 12"):
        damacy.Pipeline(make_config(arrays=[uri], n_shard_index_cache=11))
    with pytest.raises(damacy.NotFound):
        damacy.Pipeline(make_config(arrays=[uri, uri + "-missing"]))
    with pytest.raises(damacy.RankMismatch):
        damacy.Pipeline(make_config(arrays=[uri], sample_shape=[4, 4]))
    boxes = good_boxes(B, seed=1)
    with damacy.Pipeline(make_config(arrays=[uri], n_shard_index_cache=12)) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in boxes)
        F.assert_same(pipe.pop(), oracle.read_batch(boxes), "arrays=[...], the minimum shard cache")


def test_translated_errors_leave_no_reference_cycle():
    """A typed error raised through _ops.call must not keep the frames it passed alive: a
    pop that waited one slice (TryAgain caught inside Pipeline._pop) then kept the batch it
    returned alive until the garbage collector ran, and the output buffers ran out
    (PoolStarved) on slow object stores."""
    import weakref

    from damacy import _ops

    class Held:
        pass

    def raiser():
        raise RuntimeError("[TryAgain] not yet")

    def caller():
        held = Held()
        try:
            _ops.call(raiser)
        except damacy.TryAgain:
            pass
        return weakref.ref(held)

    enabled = gc.isenabled()
    gc.disable()
    try:
        ref = caller()
        assert ref() is None, "the caller's frame outlived the call (reference cycle)"
    finally:
        if enabled:
            gc.enable()
