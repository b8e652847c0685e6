"""The Python surface beyond the ops (issue 13): Config's signature, stub and dtypes,
__version__, the command line, CropDataset misuse, logging."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import damacy
from damacy import config as config_mod

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "damacy"


def _native_defaults() -> dict:
    return json.loads(torch.ops.damacy.config_defaults())


# --- Config: signature, docs, stub ---------------------------------------------------------


def test_config_signature_is_the_native_fields_and_defaults():
    native = _native_defaults()
    sig = inspect.signature(damacy.Config)
    assert list(sig.parameters) == list(native)
    for name, p in sig.parameters.items():
        assert p.kind is inspect.Parameter.KEYWORD_ONLY
        want = tuple(native[name]) if isinstance(native[name], list) else native[name]
        assert p.default == want, name
        assert p.annotation != inspect.Parameter.empty, name
    # What Config() holds is what the signature says.
    assert damacy.Config().as_dict() == {n: p.default for n, p in sig.parameters.items()}
    assert json.loads(damacy.Config().to_json()) == native


def test_config_fields_table_names_exactly_the_native_fields():
    assert list(config_mod._FIELDS) == list(_native_defaults())


def test_config_help_shows_every_field_with_default_and_units():
    doc = damacy.Config.__doc__
    for name in _native_defaults():
        assert re.search(rf"^\s+{name} \(.*default ", doc, re.M), name
    assert "536870912 = 512 MiB" in doc and "in seconds" in doc
    assert "samples_per_batch: 'int' = 8" in str(inspect.signature(damacy.Config))


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_config_stub", ROOT / "dev" / "gen_config_stub.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_stub_is_what_the_generator_writes():
    assert (PACKAGE / "config.pyi").read_text() == _gen_module().render(), (
        "python/damacy/config.pyi is stale: run `PYTHONPATH=python python dev/gen_config_stub.py`")


def test_stub_fields_and_defaults_equal_the_native_defaults():
    tree = ast.parse((PACKAGE / "config.pyi").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names = [a.arg for a in init.args.kwonlyargs]
    native = _native_defaults()
    assert names == list(native)
    for name, default in zip(names, init.args.kw_defaults):
        value = ast.literal_eval(default)
        if name in config_mod._MACHINE_DEFAULTS:
            assert value is Ellipsis, name
            continue
        want = tuple(native[name]) if isinstance(native[name], list) else native[name]
        assert value == want and type(value) is type(want), name
    assert all(a.annotation is not None for a in init.args.kwonlyargs)
    props = {n.name for n in cls.body if isinstance(n, ast.FunctionDef) and n.decorator_list
             and getattr(n.decorator_list[0], "id", None) == "property"}
    assert props == set(native)


def test_machine_dependent_default_is_in_range():
    assert 2 <= damacy.Config().n_io_threads <= 32


def test_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()


# --- Config: dtypes and devices ---------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, name",
    [
        (torch.float32, "f32"), (torch.bfloat16, "bf16"), (torch.uint8, "u8"), (torch.int32, "i32"), (torch.int64, "i64"),
        (np.float32, "f32"), (np.dtype("uint8"), "u8"), (np.int32, "i32"), (np.dtype("int64"), "i64"),
        ("f32", "f32"), ("bf16", "bf16"),
    ],
)
def test_config_accepts_torch_and_numpy_dtypes(dtype, name):
    cfg = damacy.Config(dtype=dtype)
    assert cfg.dtype == name
    assert damacy.Config().replace(dtype=dtype) == cfg
    assert pickle_roundtrip(cfg) == cfg


def test_config_accepts_ml_dtypes_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert damacy.Config(dtype=np.dtype(ml_dtypes.bfloat16)).dtype == "bf16"


@pytest.mark.parametrize("bad", [torch.float16, torch.float64, torch.bool, np.float64, np.dtype("uint16"), 3, None, object()])
def test_config_rejects_other_dtypes_naming_the_accepted_set(bad):
    with pytest.raises(damacy.InvalidArgument, match="dtype") as info:
        damacy.Config(dtype=bad)
    for name in ("f32", "bf16", "u8", "i32", "i64", "torch.bfloat16"):
        assert name in str(info.value)


def test_config_accepts_torch_device():
    assert damacy.Config(device=torch.device("cpu")).device == "cpu"
    assert damacy.Config(device=torch.device("cuda", 1)).device == "cuda:1"


def test_config_arrays_accept_paths(tmp_path):
    cfg_fields = damacy.Config(arrays=[]).as_dict()
    assert cfg_fields["arrays"] == ()
    with pytest.raises(damacy.NotFound):
        damacy.Pipeline(damacy.Config(arrays=[tmp_path / "missing.zarr"]))


def pickle_roundtrip(obj):
    import pickle

    return pickle.loads(pickle.dumps(obj))
