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


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float64("nan"), np.float32("inf")])
def test_config_rejects_non_finite_floats_naming_the_field(bad):
    # JSON has no NaN/Infinity: refused before the native parser, naming the field.
    with pytest.raises(damacy.InvalidArgument, match="`pop_timeout_s`: expected a finite number") as info:
        damacy.Config(pop_timeout_s=bad)
    assert "invalid JSON" not in str(info.value)
    with pytest.raises(damacy.InvalidArgument, match="`sample_shape`"):
        damacy.Config(sample_shape=[4, float("nan")])


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


# --- version ----------------------------------------------------------------------------------


def test_version_is_the_one_version_source():
    assert damacy.__version__ == "0.1.0" or re.fullmatch(r"\d+\.\d+\.\d+\S*", damacy.__version__)
    # Cargo's workspace version is a second copy of it; they must agree.
    cargo = (ROOT / "Cargo.toml").read_text()
    m = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S)
    assert m, "Cargo.toml: [workspace.package] version not found"
    assert m.group(1) == damacy.__version__


def _cli(*args, block_tqdm=False, check=True, cwd=None):
    code = "import sys\n"
    if block_tqdm:
        code += "sys.modules['tqdm'] = None\n"
    code += "from damacy.__main__ import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=check, cwd=cwd)


def _main(capsys, *args):
    """The CLI in this process (faster than a subprocess): its stdout."""
    from damacy.__main__ import main

    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    return capsys.readouterr().out


def test_python_m_damacy_version():
    out = subprocess.run([sys.executable, "-m", "damacy", "--version"], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.startswith(f"damacy {damacy.__version__} (torch {torch.__version__}")


# --- command line -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """shape=[32,64,64], chunk=[8,16,16], shard=[16,32,32] (zstd): 64 chunks in 8 shards."""
    path = tmp_path_factory.mktemp("cli") / "v.zarr"
    damacy._ops.call(torch.ops.damacy.write_example_volume, str(path), [32, 64, 64], [8, 16, 16], [16, 32, 32], "zstd", 0)
    return path


def test_info_is_human_readable_by_default(volume, capsys):
    out = _main(capsys, "info", volume)
    assert "shape       32 × 64 × 64" in out
    assert "chunk       8 × 16 × 16   (64 chunks)" in out
    assert "16 × 32 × 32   (8 shards of 8 chunks, index at end)" in out
    assert "dtype       uint16" in out
    assert "bytes(endian=little) → zstd(level=3" in out
    assert "fill value  0" in out
    assert "decoded     256.0 KiB" in out
    assert "on disk" not in out  # only with --usage (it lists the whole array)
    usage = _main(capsys, "info", volume, "--usage")
    assert re.search(r"on disk     [\d.]+ KiB in 9 files", usage)


def test_info_json_is_array_info_plus_fill_value(volume, capsys):
    info = json.loads(_main(capsys, "info", volume, "--json", "--usage"))
    want = damacy.array_info(volume)
    assert info == {**want, "fill_value": 0}
    assert "bytes_on_disk" not in json.loads(_main(capsys, "info", volume, "--json"))


def test_info_error_goes_to_stderr_with_status(tmp_path):
    out = _cli("info", tmp_path / "missing.zarr", check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("damacy: info: NotFound: ")


def test_bench_stats_are_readable_and_out_writes_json(volume, tmp_path, capsys):
    dest = tmp_path / "r.json"
    out = _main(capsys, "bench", volume, "--sample-shape", 8, 16, 16, "--batch", 2, "--batches", 3, "--io-threads", 1,
                "--stats", "--out", dest, "--quiet")
    assert "6 samples of (8, 16, 16)" in out
    assert re.search(r"^  bytes_read\s+[\d.]+ KiB$", out, re.M)
    assert re.search(r"^  shard_index\s+\d+\s+\d+\s+\d+\s+[\d.]+%$", out, re.M)
    assert "{" not in out  # not JSON
    result = json.loads(dest.read_text())
    assert result["samples"] == 6 and result["batches"] == 3
    assert result["config"]["sample_shape"] == [8, 16, 16] and result["config"]["n_io_threads"] == 1
    assert result["stats"]["batches"] == 3
    assert result["damacy"] == damacy.__version__ and result["machine"]["torch"] == torch.__version__


def test_demo_runs_without_tqdm(volume):
    out = _cli("demo", "--path", volume, "--batches", 2, "--batch", 2, "--io-threads", 1, block_tqdm=True)
    assert "4 samples of (32, 64, 64)" in out.stdout
    assert "Traceback" not in out.stderr


def test_plain_progress_lines_go_to_the_damacy_logger(caplog):
    from damacy.__main__ import Progress

    with caplog.at_level("INFO", logger="damacy"):
        p = Progress(total=3, quiet=False, every_s=0.0)
        p.bar = None  # as without tqdm or without a terminal
        p.update(4)
        p.close()
    assert any(r.name == "damacy.cli" and r.getMessage().startswith("batch 1/3") for r in caplog.records)


# --- CropDataset under a batching DataLoader ------------------------------------------------


def _crop_dataset(volume, **kw):
    from damacy.data import CropDataset, RandomCrops

    return CropDataset(str(volume), RandomCrops((4, 8, 8), seed=1, num_samples=8), samples_per_batch=2,
                       config=damacy.Config(n_io_threads=1, pop_timeout_s=30.0), **kw)


@pytest.mark.parametrize("loader_kw", [{}, {"batch_size": 1}, {"batch_size": 4}, {"batch_size": 2, "drop_last": True}])
def test_crop_dataset_under_a_batching_dataloader_says_batch_size_none(volume, loader_kw):
    from torch.utils.data import DataLoader

    with pytest.raises(damacy.InvalidArgument, match=r"batch_size=None"):
        next(iter(DataLoader(_crop_dataset(volume), **loader_kw)))


def test_crop_dataset_batching_dataloader_in_a_worker_raises_in_the_main_process(volume):
    from torch.utils.data import DataLoader

    loader = DataLoader(_crop_dataset(volume), batch_size=2, num_workers=1, multiprocessing_context="spawn")
    with pytest.raises(damacy.InvalidArgument, match=r"batch_size=None"):
        next(iter(loader))


def test_crop_dataset_with_batch_size_none_and_plain_iteration(volume):
    from torch.utils.data import DataLoader

    ds = _crop_dataset(volume, dtype=torch.int32)
    batches = [b.clone() for b in DataLoader(ds, batch_size=None)]
    assert len(batches) == 4 and all(b.shape == (2, 4, 8, 8) and b.dtype == torch.int32 for b in batches)
    assert [b.shape for b in iter(ds)] == [(2, 4, 8, 8)] * 4


# --- docs: examples run, numbers match the library ------------------------------------------

DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _python_block(path: Path, after: str) -> str:
    text = path.read_text()
    m = re.search(re.escape(after) + r".*?```python\n(.*?)```", text, re.S)
    assert m, f"{path.name}: no python block after {after!r}"
    return m.group(1)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_fences_are_well_formed(path):
    inside = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if "```" not in line:
            continue
        assert line.lstrip().startswith("```"), f"{path.name}:{n}: a fence must start its line: {line!r}"
        rest = line.lstrip()[3:]
        if inside:
            assert rest.strip() == "", f"{path.name}:{n}: text after a closing fence (the block never closes): {line!r}"
        inside = not inside
    assert not inside, f"{path.name}: unclosed code block"


def test_readme_quick_start_runs(tmp_path):
    block = _python_block(ROOT / "README.md", "## Quick start")
    assert len(block.strip().splitlines()) <= 12
    uri = str(tmp_path / "q.zarr")
    block = block.replace('"/tmp/damacy-quickstart.zarr"', repr(uri))
    exec(compile(block, "README.md quick start", "exec"), {"print": lambda *a: None})


def test_tuning_cache_example_raises_what_it_says(tmp_path):
    text = (ROOT / "docs" / "tuning.md").read_text()
    uri = str(tmp_path / "vol.zarr")
    # The geometry the text describes: 256×512×512, shards of 64×128×128 (64 shards).
    torch.ops.damacy.write_example_volume(uri, [256, 512, 512], [64, 128, 128], [64, 128, 128], "zstd", 0)
    claimed = re.search(r"```\n(\[InvalidArgument\] .*?)\n```", text, re.S).group(1)
    block = _python_block(ROOT / "docs" / "tuning.md", "Name them in the config")
    with pytest.raises(damacy.InvalidArgument) as info:
        exec(compile(block, "docs/tuning.md", "exec"), {"damacy": damacy, "uri_a": uri, "uri_b": uri})
    assert f"[InvalidArgument] {info.value}" == " ".join(claimed.split()).replace("/data/vol.zarr", uri)
    promised = re.search(r'raises InvalidArgument "\.\.\. (.*?)"', block).group(1)
    assert str(info.value).endswith(promised)
    # Without the small cache (the default), the same arrays pass, as the text says.
    damacy.Pipeline(damacy.Config(samples_per_batch=8, sample_shape=(64, 128, 128), arrays=[uri])).close()


def test_tuning_states_the_native_cache_defaults():
    text = " ".join((ROOT / "docs" / "tuning.md").read_text().split())
    native = _native_defaults()
    for knob in ("n_array_meta_cache", "n_shard_index_cache", "n_chunk_layout_cache"):
        assert f"`{knob}` = {native[knob]}" in text, knob


def test_tuning_stats_table_names_every_stats_field():
    text = (ROOT / "docs" / "tuning.md").read_text()
    table = text[text.index("## stats()"):]
    with damacy.Pipeline(damacy.Config(samples_per_batch=1, sample_shape=(1,))) as p:
        stats = p.stats().as_dict()
    for k, v in stats.items():
        names = [f"{k}.{s}" for s in v] if isinstance(v, dict) and k == "prefetch" else [k]
        for name in names:
            assert f"`{name}`" in table, f"docs/tuning.md stats table lacks `{name}`"


def test_docs_do_not_copy_measured_ratios():
    gpu = (ROOT / "docs" / "gpu.md").read_text()
    assert "crops/s" not in gpu and "dev/perf.md" in gpu
    assert "no damacy yet" not in (ROOT / "bench" / "README.md").read_text()
