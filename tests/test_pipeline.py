"""Pipeline behaviour: ordering, lazy sources, batches(), context manager, close, stats.

Values are always checked against the oracle, so "order" means the right voxels in the
right batch slot, not just the right count.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import threading
import time

import numpy as np
import pytest
import torch

import damacy
import fixtures as F

B = 4
EXTENT = (3, 5, 7)
POP_TIMEOUT_S = 20.0
PROMPT_S = 5.0


@pytest.fixture(scope="module")
def good(error_arrays):
    return F.uri_of(error_arrays["good"]), F.OracleArray(error_arrays["good"])


def boxes(n: int, seed: int, extent=EXTENT):
    return F.random_boxes(F.GOOD.shape, extent, n, seed, grid=[F.GOOD.chunk, F.GOOD.shard])


def config(**kw):
    base = dict(samples_per_batch=B, sample_shape=list(EXTENT), n_io_threads=2,
                pop_timeout_s=POP_TIMEOUT_S)
    base.update(kw)
    return damacy.Config(**base)


def expect(oracle, bxs, i):
    return oracle.read_batch(bxs[i * B:(i + 1) * B])


def test_pop_order_is_push_order(good):
    uri, oracle = good
    bxs = boxes(10 * B, seed=1)
    with damacy.Pipeline(config()) as pipe:
        pipe.push([damacy.Sample(uri, b) for b in bxs])
        for i in range(10):
            F.assert_same(pipe.pop(), expect(oracle, bxs, i), f"batch {i}")


def test_pop_with_samples_names_each_slot(good):
    # The samples come from Rust's records of what each slot read (not a copy kept here):
    # values and boxes must agree slot by slot, in push order.
    uri, oracle = good
    bxs = boxes(3 * B, seed=11)
    with damacy.Pipeline(config()) as pipe:
        pipe.push([damacy.Sample(uri, b) for b in bxs])
        for i in range(3):
            tensor, samples = pipe.pop_with_samples()
            assert samples == [damacy.Sample(uri, b) for b in bxs[i * B:(i + 1) * B]]
            F.assert_same(tensor, expect(oracle, bxs, i), f"batch {i}")
        assert pipe.stats().batches == 3


def test_sources_are_consumed_in_push_order(good):
    """A list, a single Sample and a generator pushed one after another: their samples come
    out in that order, also across batch boundaries."""
    uri, oracle = good
    bxs = boxes(3 * B, seed=2)
    with damacy.Pipeline(config()) as pipe:
        pipe.push([damacy.Sample(uri, b) for b in bxs[:5]])
        pipe.push(damacy.Sample(uri, bxs[5]))
        pipe.push(damacy.Sample(uri, b) for b in bxs[6:])
        for i in range(3):
            F.assert_same(pipe.pop(), expect(oracle, bxs, i), f"batch {i}")


def test_push_pulls_lazily_from_an_infinite_generator(good):
    uri, oracle = good
    pulled = 0

    def forever(seed):
        nonlocal pulled
        rng = np.random.default_rng(seed)
        while True:
            (b,) = F.random_boxes(F.GOOD.shape, EXTENT, 1, int(rng.integers(2**31)))
            pulled += 1
            yield b

    with damacy.Pipeline(config(lookahead_samples=2 * B)) as pipe:
        t0 = time.perf_counter()
        pipe.push(damacy.Sample(uri, b) for b in forever(3))
        assert time.perf_counter() - t0 < PROMPT_S, "push must not drain the generator"
        expected = list(itertools.islice(forever(3), 5 * B))
        pulled = 0
        for i in range(5):
            F.assert_same(pipe.pop(), expect(oracle, expected, i), f"batch {i}")
        # the window bounds how far ahead the source is pulled
        assert pulled <= 5 * B + 2 * B + B, f"pulled {pulled} samples for 5 batches"
        t0 = time.perf_counter()
    assert time.perf_counter() - t0 < PROMPT_S, "close with an infinite source pending"


def test_batches_yields_n_then_stops(good):
    uri, oracle = good
    bxs = boxes(6 * B, seed=4)
    with damacy.Pipeline(config()) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in bxs)
        got = list(pipe.batches(3))
        assert len(got) == 3
        for i, t in enumerate(got):
            F.assert_same(t, expect(oracle, bxs, i), f"batch {i}")
        del got
        gc.collect()
        # the remaining three are still there
        rest = list(pipe.batches(3))
        for i, t in enumerate(rest):
            F.assert_same(t, expect(oracle, bxs, 3 + i), f"batch {3 + i}")


def test_batches_without_n_runs_until_sources_end_and_drops_the_partial_batch(good):
    uri, oracle = good
    bxs = boxes(3 * B + B // 2, seed=5)
    with damacy.Pipeline(config()) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in bxs)
        t0 = time.perf_counter()
        n = 0
        for i, t in enumerate(pipe.batches()):
            F.assert_same(t, expect(oracle, bxs, i), f"batch {i}")
            n += 1
        assert n == 3
        assert time.perf_counter() - t0 < POP_TIMEOUT_S, "batches() must end, not time out"


def test_context_manager_returns_the_pipeline_and_closes_it(good):
    uri, _ = good
    with damacy.Pipeline(config()) as pipe:
        assert isinstance(pipe, damacy.Pipeline)
        pipe.push(damacy.Sample(uri, b) for b in boxes(B, seed=6))
        pipe.pop()
    with pytest.raises(damacy.ShutdownError):
        pipe.pop(timeout_s=1.0)


def test_context_manager_closes_on_an_exception_and_lets_it_through(good):
    uri, _ = good
    with pytest.raises(KeyError):
        with damacy.Pipeline(config()) as pipe:
            pipe.push(damacy.Sample(uri, b) for b in boxes(8 * B, seed=7))
            raise KeyError("boom")
    with pytest.raises(damacy.ShutdownError):
        pipe.pop(timeout_s=1.0)


def test_close_with_work_in_flight_returns_promptly(fixture_arrays):
    """Whole-array samples keep every I/O thread busy; close() must not wait for the
    window to drain."""
    name = "i16_sharded_blosc_zstd_bitshuffle"
    fx = F.FIXTURES[name]
    uri = F.uri_of(fixture_arrays[name])
    whole = tuple((0, n) for n in fx.shape)
    pipe = damacy.Pipeline(damacy.Config(samples_per_batch=8, sample_shape=list(fx.shape),
                                         n_io_threads=2, lookahead_samples=64,
                                         pop_timeout_s=POP_TIMEOUT_S))
    pipe.push(damacy.Sample(uri, whole) for _ in itertools.count())
    pipe.pop()
    t0 = time.perf_counter()
    pipe.close()
    assert time.perf_counter() - t0 < PROMPT_S


def test_close_wakes_a_blocked_pop_with_shutdown_error():
    pipe = damacy.Pipeline(config())
    result = {}

    def waiter():
        try:
            pipe.pop(timeout_s=POP_TIMEOUT_S)
        except BaseException as e:  # noqa: BLE001 - recorded and checked below
            result["error"] = e

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    pipe.close()
    th.join(PROMPT_S)
    assert not th.is_alive(), "pop still blocked after close()"
    assert time.perf_counter() - t0 < PROMPT_S
    assert isinstance(result.get("error"), damacy.ShutdownError), result


def test_a_raising_source_loses_no_batch(good):
    """3 batches and a bit are pulled before the generator raises: the 3 come out with the
    right values, then the error (with its traceback), then the next source goes on."""
    uri, oracle = good
    bxs = boxes(5 * B, seed=21)

    class SourceBroke(Exception):
        pass

    def broken():
        yield from (damacy.Sample(uri, b) for b in bxs[:3 * B + 1])
        raise SourceBroke("source broke")

    with damacy.Pipeline(config(lookahead_samples=8 * B)) as pipe:
        pipe.push(broken())
        pipe.push(damacy.Sample(uri, b) for b in bxs[3 * B + 1:])
        for i in range(3):
            F.assert_same(pipe.pop(), expect(oracle, bxs, i), f"batch {i}")
        with pytest.raises(SourceBroke, match="source broke") as info:
            pipe.pop()
        assert any(f.name == "broken" for f in info.traceback), "the source's own traceback"
        # the one sample pulled before the error starts the next batch
        F.assert_same(pipe.pop(), expect(oracle, bxs, 3), "batch after the error")
        assert pipe.stats().batches == 4


def test_a_raising_source_ends_batches_with_its_error(good):
    uri, oracle = good
    bxs = boxes(2 * B, seed=22)

    def broken():
        yield from (damacy.Sample(uri, b) for b in bxs)
        yield "not a sample"

    with damacy.Pipeline(config()) as pipe:
        pipe.push(broken())
        got = []
        with pytest.raises(TypeError, match="expected a damacy.Sample"):
            for batch in pipe.batches():
                got.append(batch.clone())
        assert len(got) == 2
        for i, t in enumerate(got):
            F.assert_same(t, expect(oracle, bxs, i), f"batch {i}")


def test_ctrl_c_interrupts_a_blocked_pop_at_once():
    """pop() waits in slices: SIGINT becomes KeyboardInterrupt within 0.2 s, although the
    timeout is long; the pipeline stays usable."""
    import os
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    sent = {}

    def interrupt():
        sent["t"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    with damacy.Pipeline(config()) as pipe:
        timer = threading.Timer(0.3, interrupt)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                pipe.pop(timeout_s=POP_TIMEOUT_S)
            late = time.perf_counter() - sent["t"]
        finally:
            timer.cancel()
        assert late < 0.2, f"KeyboardInterrupt {late:.3f} s after SIGINT"
        with pytest.raises(damacy.TryAgain, match=r"waited 0\.3 s"):
            pipe.pop(timeout_s=0.3)


def test_a_popped_batch_outlives_its_pipeline(good):
    """CPU batches view pipeline-owned buffers; they must stay valid after close."""
    uri, oracle = good
    bxs = boxes(B, seed=8)
    with damacy.Pipeline(config()) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in bxs)
        t = pipe.pop()
    del pipe
    gc.collect()
    F.assert_same(t, expect(oracle, bxs, 0), "after close")
    assert t.is_contiguous()
    t.add_(1)  # writable, and nothing crashes


def test_pending_and_released_buffers_are_reused(good):
    """With one output buffer, popping and dropping batches one at a time goes on forever."""
    uri, oracle = good
    bxs = boxes(12 * B, seed=9)
    with damacy.Pipeline(config(n_batch_buffers=1)) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in bxs)
        for i in range(12):
            t = pipe.pop()
            F.assert_same(t, expect(oracle, bxs, i), f"batch {i}")
            del t


def _numbers(stats) -> dict[str, float]:
    """Numeric fields of a Stats, whatever its shape (mapping, dataclass, namedtuple,
    plain object), flattened with dotted names."""
    if hasattr(stats, "as_dict"):
        stats = stats.as_dict()
    elif dataclasses.is_dataclass(stats):
        stats = dataclasses.asdict(stats)
    elif hasattr(stats, "_asdict"):
        stats = stats._asdict()
    elif not isinstance(stats, dict):
        stats = {k: v for k, v in vars(stats).items() if not k.startswith("_")}
    out = {}
    for k, v in stats.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif isinstance(v, dict) or hasattr(v, "as_dict") or dataclasses.is_dataclass(v) or hasattr(v, "_asdict"):
            out.update({f"{k}.{kk}": vv for kk, vv in _numbers(v).items()})
    return out


def test_stats_counters_change(good):
    uri, _ = good
    with damacy.Pipeline(config()) as pipe:
        before = _numbers(pipe.stats())
        assert before, "stats() has numeric counters"
        pipe.push(damacy.Sample(uri, b) for b in boxes(3 * B, seed=10))
        for _ in range(3):
            pipe.pop()
        after = _numbers(pipe.stats())
    grown = [k for k in after if after[k] > before.get(k, 0.0)]
    assert grown, f"no counter grew after 3 batches: {before} -> {after}"


def test_stats_is_a_typed_object_with_the_documented_fields(good):
    """docs/tuning.md's fields, with attribute access; the prefetcher resolved every sample
    (ahead of its batch or inline) and the caches were used."""
    uri, _ = good
    with damacy.Pipeline(config()) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in boxes(4 * B, seed=11))
        for _ in range(4):
            pipe.pop()
        st = pipe.stats()
    assert isinstance(st, damacy.Stats)
    for cache in ("array_meta", "shard_index", "chunk_layout"):
        assert set(st[cache].as_dict()) == {"hits", "misses", "evictions"}, cache
    assert st.array_meta.misses >= 1 and st.array_meta.hits + st.array_meta.misses >= 4 * B
    assert st.chunk_layout.misses == 0, "no layouts on the CPU path"
    pf = st.prefetch
    assert pf.samples_ready_ahead + pf.samples_resolved_inline <= 4 * B
    for field in ("read_ops", "coalesced_read_ops", "bytes_read", "chunk_reuse", "chunks_decoded",
                  "chunks_filled", "time_io_s", "time_decode_s", "time_assemble_s",
                  "batch_latency_p50_ms", "batch_latency_p99_ms", "blosc_blocks_skipped"):
        assert field in st, field
    assert st.batches == 4 and st.batch_latency_p99_ms >= st.batch_latency_p50_ms > 0


def test_a_typed_error_does_not_keep_the_callers_frame_alive():
    """Issue 18: `_ops.call` raised the typed error from inside its handler, so error ->
    traceback -> call's frame -> error was a cycle holding every frame of the traceback (and
    their locals) until the garbage collector ran. `pop` waits in slices (TryAgain, caught):
    the batch tensor it then returned stayed alive after the caller dropped it, and a
    push-after-pop loop ran out of output buffers (PoolStarved). With the collector off,
    the caller's locals must die with the caller."""
    import weakref

    from damacy import _ops

    class Big:
        pass

    def raiser():
        raise RuntimeError("[TryAgain] not yet")

    def caller():
        obj = Big()
        ref = weakref.ref(obj)
        try:
            _ops.call(raiser)
        except damacy.TryAgain:
            pass
        return ref

    was = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        ref = caller()
        assert ref() is None, "the caller's frame outlived the call (a reference cycle through the error)"
    finally:
        if was:
            gc.enable()


def test_push_after_pop_keeps_buffers_free(good):
    """The fair benchmark's pattern (bench/bench_all.py): L batches pushed, then one more
    after each pop, tensors dropped at once, with the collector off: no PoolStarved, values
    right."""
    uri, oracle = good
    bxs = boxes(12 * B, seed=21)
    was = gc.isenabled()
    gc.disable()
    try:
        with damacy.Pipeline(config(n_batch_buffers=2, pop_timeout_s=POP_TIMEOUT_S)) as pipe:
            for i in range(2):
                pipe.push([damacy.Sample(uri, b) for b in bxs[i * B:(i + 1) * B]])
            for i in range(12):
                t = pipe.pop(timeout_s=POP_TIMEOUT_S)
                F.assert_same(t, expect(oracle, bxs, i), f"batch {i}")
                del t
                if i + 2 < 12:
                    pipe.push([damacy.Sample(uri, b) for b in bxs[(i + 2) * B:(i + 3) * B]])
    finally:
        if was:
            gc.enable()


@pytest.mark.parametrize("cache", [None, 0, 1 << 10, 64 << 10])
def test_window_cache_and_prefix_decode_give_the_oracles_values(good, cache):
    """Issue 18: chunks shared across batches (decoded_cache_bytes unset: the window cache;
    1 KiB: a bound of two 512-byte chunks, so entries are evicted all the time; 64 KiB;
    0: off) and decoded only up to the last byte a crop reads. Thin slices (1 voxel deep)
    and deeper crops over inner chunks 4x8x8, batches revisiting the same chunks at other
    depths (cached prefixes too short for a later crop): every batch equals zarr-python's."""
    uri, oracle = good
    thin = boxes(6 * B, seed=31, extent=(1, 8, 8))
    deep = boxes(6 * B, seed=32, extent=(3, 5, 7))
    kw = {} if cache is None else {"decoded_cache_bytes": cache}
    for extent, bxs in [((1, 8, 8), thin), ((3, 5, 7), deep), ((1, 8, 8), thin)]:
        with damacy.Pipeline(config(sample_shape=list(extent), **kw)) as pipe:
            pipe.push([damacy.Sample(uri, b) for b in bxs])
            for i in range(len(bxs) // B):
                F.assert_same(pipe.pop(), expect(oracle, bxs, i), f"cache {cache}, {extent}, batch {i}")
            s = pipe.stats()
            if cache == 0:
                assert s.decoded_cache.hits == 0
            elif cache is None:
                assert s.decoded_cache.hits > 0, "later batches read chunks decoded by earlier ones"


def _flat(bxs):
    out = []
    for b in bxs:
        out += [len(b), *(a for a, _ in b), *(z for _, z in b)]
    return out


def test_push_many_fills_the_window_in_order_and_reports_its_room(good):
    """The op Pipeline._fill uses: samples in one call until the window is full, then (how
    many were pushed, the room left); the batches are those samples in that order."""
    uri, oracle = good
    bxs = boxes(4 * B, seed=31)
    with damacy.Pipeline(config(lookahead_samples=2 * B)) as pipe:
        nat = pipe._native
        assert nat.window_room() == 2 * B
        assert tuple(nat.push_many([uri] * 3, _flat(bxs[:3]))) == (3, 2 * B - 3)
        assert tuple(nat.push_many([uri] * (len(bxs) - 3), _flat(bxs[3:]))) == (2 * B - 3, 0)
        assert tuple(nat.push_many([uri], _flat(bxs[2 * B:2 * B + 1]))) == (0, 0)  # full
        F.assert_same(nat.pop(POP_TIMEOUT_S), expect(oracle, bxs, 0), "batch 0")
        assert nat.window_room() == B
        assert tuple(nat.push_many([uri] * (2 * B), _flat(bxs[2 * B:]))) == (B, 0)
        for i in range(1, 3):
            F.assert_same(nat.pop(POP_TIMEOUT_S), expect(oracle, bxs, i), f"batch {i}")


def test_push_many_raises_for_the_first_sample_only(good):
    """A sample whose push fails is the first of the next call: a malformed box list raises
    when its sample is first, and after good samples the call stops before it."""
    uri, _ = good
    bxs = boxes(2, seed=32)
    with damacy.Pipeline(config()) as pipe:
        nat = pipe._native
        with pytest.raises(damacy.InvalidArgument, match="push_many"):
            damacy._ops.call(nat.push_many, [uri], [3, 0, 0])  # rank 3, one value
        with pytest.raises(damacy.InvalidArgument, match="push_many"):
            damacy._ops.call(nat.push_many, [uri], [-1])
        assert nat.pending_samples() == 0
        n, _ = nat.push_many([uri, uri, uri], _flat(bxs) + [5])  # the third has no box
        assert n == 2 and nat.pending_samples() == 2
    with pytest.raises(damacy.ShutdownError):
        damacy._ops.call(nat.push_many, [uri], _flat(bxs[:1]))


def test_sources_are_pulled_at_most_one_sample_ahead_of_the_window(good):
    """push_many takes what the window has room for: a source is never pulled further ahead
    than the window plus the one sample a full window refused (as with one push each)."""
    uri, oracle = good
    pulled = 0
    bxs = boxes(12 * B, seed=33)

    def source():
        nonlocal pulled
        for b in bxs:
            pulled += 1
            yield damacy.Sample(uri, b)

    look = 2 * B + 1  # not a multiple of the batch
    with damacy.Pipeline(config(lookahead_samples=look)) as pipe:
        pipe.push(source())
        assert pulled == 0
        for i in range(8):
            F.assert_same(pipe.pop(), expect(oracle, bxs, i), f"batch {i}")
            popped = (i + 1) * B
            assert popped + look <= pulled <= popped + look + 1, (i, pulled)
