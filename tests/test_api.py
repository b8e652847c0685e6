"""The Python API over the native library, without data: config validation, the error
mapping, samples, pipeline lifetime, pickling (dev/ops.md)."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import damacy
from damacy import _ops, errors


def test_config_validates_and_reads_back():
    c = damacy.Config(samples_per_batch=2, sample_shape=(4, 4, 4))
    assert c.samples_per_batch == 2
    assert c.sample_shape == (4, 4, 4)
    assert c.dtype == "f32"
    assert damacy.Config.from_json(c.to_json()) == c
    assert c.replace(dtype="bf16").dtype == "bf16"
    with pytest.raises(AttributeError):
        c.samples_per_batch = 3


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"foo": 1}, "foo"),
        ({"sample_shape": (4, 0)}, "sample_shape"),
        ({"dtype": "f64"}, "dtype"),
        ({"samples_per_batch": 100, "lookahead_samples": 10}, "lookahead_samples"),
        ({"samples_per_batch": object()}, "samples_per_batch"),
    ],
)
def test_config_errors_name_the_field(fields, named):
    with pytest.raises(damacy.InvalidArgument, match=named) as info:
        damacy.Config(**fields)
    assert info.value.status == "InvalidArgument"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("status", errors.STATUSES)
def test_every_status_maps_and_pickles(status):
    # What torch raises for a damacy op: the C++ what() plus, at times, lines of its own.
    raw = RuntimeError(f"[{status}] uri /a.zarr: shard c/0/1 truncated\nException raised from x at y.cpp:1")
    typed = _ops.translate(raw)
    assert typed.status == status
    assert typed.what == "uri /a.zarr: shard c/0/1 truncated"
    assert isinstance(typed, damacy.DamacyError)
    assert type(typed).STATUS == status
    back = pickle.loads(pickle.dumps(typed))
    assert type(back) is type(typed) and back == typed


def test_errors_survive_another_process():
    e = damacy.StorageError("shard c/0/0 truncated")
    out = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; e = pickle.loads(sys.stdin.buffer.read()); print(type(e).__name__, e.status, e.what)"],
        input=pickle.dumps(e), capture_output=True, check=True,
    )
    assert out.stdout.decode().strip() == "StorageError Storage shard c/0/0 truncated"


def test_non_damacy_runtime_errors_pass_through():
    def boom():
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        _ops.call(boom)


def test_sample_validation_and_pickle():
    s = damacy.Sample("/a.zarr", [(0, 4), slice(2, 6), (1, 5)])
    assert s.aabb == ((0, 4), (2, 6), (1, 5))
    assert s.shape == (4, 4, 4)
    assert pickle.loads(pickle.dumps(s)) == s
    assert len({s, damacy.Sample("/a.zarr", [(0, 4), (2, 6), (1, 5)])}) == 1
    for bad in ([3], [(0, 0)], [(2, 1)], [slice(0, 4, 2)], [slice(0, None)], [], [(0, 1.5)], [(True, 2)]):
        with pytest.raises(damacy.InvalidArgument):
            damacy.Sample("/a.zarr", bad)
    with pytest.raises(damacy.InvalidArgument):
        damacy.Sample("", [(0, 1)])
    # An omitted slice start is 0, as in numpy and the original damacy (dev/compat.md).
    assert damacy.Sample("/a.zarr", [slice(None, 4)]).aabb == ((0, 4),)
    # Negative starts are boxes reaching outside the array (out_of_bounds / padding decide).
    assert damacy.Sample("/a.zarr", [(-3, 1)]).aabb == ((-3, 1),)


def test_pipeline_lifetime_and_errors():
    c = damacy.Config(samples_per_batch=2, sample_shape=(4, 4, 4))
    with damacy.Pipeline(c) as p:
        assert p.pending_samples() == 0
        with pytest.raises(damacy.TryAgain):
            p.pop(0.01)
        assert isinstance(p.stats(), damacy.Stats)
    assert p.closed
    p.close()  # idempotent
    with pytest.raises(damacy.ShutdownError):
        p.pop()
    with pytest.raises(TypeError):
        pickle.dumps(p)


def test_push_is_lazy():
    pulled = []

    def endless():
        i = 0
        while True:
            pulled.append(i)
            yield damacy.Sample("/nowhere.zarr", [(i, i + 4), (0, 4), (0, 4)])
            i += 1

    c = damacy.Config(samples_per_batch=2, sample_shape=(4, 4, 4))
    with damacy.Pipeline(c) as p:
        p.push(endless())
        assert pulled == []  # nothing pulled before a pop


def test_stats_object():
    s = damacy.Stats({"a": 1, "cache": {"hits": 2}})
    assert s.a == 1 and s.cache.hits == 2 and s.as_dict() == {"a": 1, "cache": {"hits": 2}}
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(AttributeError):
        s.nope


def test_ops_are_registered():
    defaults = torch.ops.damacy.config_defaults()
    assert "samples_per_batch" in defaults
    assert hasattr(torch.classes.damacy, "Pipeline")


def test_array_info_missing_array_is_not_found():
    with pytest.raises(damacy.NotFound, match="/nonexistent/damacy-test.zarr"):
        damacy.array_info("/nonexistent/damacy-test.zarr")


def test_write_example_volume_rejects_negative_extents(tmp_path):
    with pytest.raises(damacy.InvalidArgument, match="shape"):
        _ops.call(torch.ops.damacy.write_example_volume, str(tmp_path / "v.zarr"), [-1, 4], [2, 2], [], "zstd", 0)


def test_python_statuses_are_the_native_ones_in_order():
    # One status set: Rust's (status_tokens, checked against C++ by ctest) reaches Python
    # through the statuses op; damacy.errors must name the same tokens in the same order.
    assert tuple(_ops.call(_ops.ops().statuses)) == errors.STATUSES
    assert errors.from_status("Internal", "x").__class__ is damacy.InternalError


@pytest.mark.parametrize(
    "uri, why",
    [("a\x00b", "NUL"), (b"\xff.zarr", "UTF-8"), ("caf\udcff.zarr", "UTF-8"), ("", "non-empty"), (3, "non-empty")],
)
def test_bad_uris_are_invalid_argument_not_runtime_error(uri, why):
    with pytest.raises(damacy.InvalidArgument, match=why):
        damacy.Sample(uri, [(0, 1)])
    with pytest.raises(damacy.InvalidArgument, match=why):
        damacy.array_info(uri)


@pytest.mark.parametrize("bound", [2**63, 2**64 + 5])
def test_box_coordinates_beyond_64_bits_are_invalid_argument(bound):
    with pytest.raises(damacy.InvalidArgument, match="2\\*\\*63"):
        damacy.Sample("/a.zarr", [(0, bound)])
    with pytest.raises(damacy.InvalidArgument, match="2\\*\\*63"):
        damacy.Sample("/a.zarr", [(bound, bound + 1)])


def test_sample_fast_paths_agree_with_the_general_checks():
    """Sample takes plain (start, stop) int pairs and ASCII str uris on a fast path; every box
    item and uri must come out (value or InvalidArgument message) as _range and as_uri say."""
    from damacy.sample import _range, as_uri

    class Pair(tuple):
        pass

    top = 2**63 - 1
    items = [(0, 4), [0, 4], (-3, 1), (top - 1, top), (-top - 1, 0), (0, top), (5, 5), (6, 5),
             (-top - 2, 0), (0, top + 1), (True, 3), (0, 2.0), (np.int64(2), np.int32(5)),
             Pair((1, 2)), (1, 2, 3), [1], slice(2, 6), "ab"]
    for item in items:
        try:
            want = ("ok", _range(item, 0))
        except damacy.InvalidArgument as e:
            want = ("error", type(e), e.what)
        try:
            got = ("ok", damacy.Sample("/a.zarr", [item]).aabb[0])
        except damacy.InvalidArgument as e:
            got = ("error", type(e), e.what)
        assert got == want, item
        assert got[0] != "ok" or all(type(v) is int for v in got[1]), item
    for uri in ["/a.zarr", "s3://b/k", "caf\u00e9.zarr", "\u00e9", "a\x00", "", "caf\udcff", b"/x.zarr"]:
        try:
            want = ("ok", as_uri(uri, "sample uri"))
        except damacy.InvalidArgument as e:
            want = ("error", e.what)
        try:
            got = ("ok", damacy.Sample(uri, [(0, 1)]).uri)
        except damacy.InvalidArgument as e:
            got = ("error", e.what)
        assert got == want, uri
