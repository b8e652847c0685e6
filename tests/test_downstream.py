"""The installed CMake package, proven by a downstream project (examples/downstream).

`python -m damacy --cmake-prefix` names the prefix; examples/downstream is configured against
it with nothing else (no DAMACY_PYTHON, no torch path: the package finds its torch itself),
built, and run. Its per-batch checksums must equal the Python API's on the same boxes, and
its boxes must be the documented splitmix64 stream (so the C++ side reads what it claims).
Values are also checked against zarr-python reading the same crops.

Slow-ish (a configure and one small C++ compile, ~10 s on 2 cores); the build is shared by
the tests of this module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import damacy

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "downstream"
SAMPLE_SHAPE = (16, 32, 32)
SAMPLES_PER_BATCH = 4
N_BATCHES = 4
SEED = 7
MASK = (1 << 64) - 1


def _env() -> dict[str, str]:
    """The environment of the subprocesses: this interpreter's damacy first on sys.path (the
    venv's damacy-dev.pth may name another checkout), its bin/ (cmake, ninja) first on PATH."""
    env = dict(os.environ)
    pkg_parent = str(Path(damacy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def splitmix64(seed: int):
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


def expected_boxes(shape, n: int, seed: int) -> list[tuple[tuple[int, int], ...]]:
    """examples/downstream/main.cpp's boxes: start_d = next % (shape_d - sample_d + 1)."""
    rng = splitmix64(seed)
    out = []
    for _ in range(n):
        starts = [next(rng) % (a - s + 1) for a, s in zip(shape, SAMPLE_SHAPE)]
        out.append(tuple((b, b + s) for b, s in zip(starts, SAMPLE_SHAPE)))
    return out


def parse_output(text: str):
    """-> (array shape, {batch: [boxes]}, {batch: (sum, crc32)})."""
    shape, boxes, sums = None, {}, {}
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "array":
            shape = tuple(int(x) for x in f[f.index("shape") + 1:])
        elif f[0] == "sample":
            b, vals = int(f[1]), [int(x) for x in f[3:]]
            boxes.setdefault(b, []).append(tuple(zip(vals[0::2], vals[1::2])))
        elif f[0] == "batch":
            sums[int(f[1])] = (float(f[3]), int(f[5], 16))
    return shape, boxes, sums


@pytest.fixture(scope="module")
def cmake_prefix() -> Path:
    out = _run([sys.executable, "-m", "damacy", "--cmake-prefix"], timeout=120).stdout.strip()
    prefix = Path(out)
    assert prefix.is_absolute(), out
    for rel in ["lib/cmake/damacy/damacy-config.cmake", "lib/cmake/damacy/damacy-config-version.cmake",
                "lib/cmake/damacy/damacy-targets.cmake", "lib/cmake/damacy/DamacyTorch.cmake",
                "include/damacy/damacy.h", "include/damacy/pipeline.h"]:
        assert (prefix / rel).is_file(), f"{prefix / rel} is missing"
    assert not (prefix / "include/damacy/detail").exists(), "private GPU headers were installed"
    return prefix


@pytest.fixture(scope="module")
def downstream(cmake_prefix, tmp_path_factory) -> tuple[Path, str]:
    """Configures and builds examples/downstream against the package; -> (exe, configure log)."""
    cmake = shutil.which("cmake", path=_env()["PATH"])
    if cmake is None:
        pytest.fail("cmake not found (it is in requirements-dev.txt)")
    build = tmp_path_factory.mktemp("downstream-build")
    gen = ["-G", "Ninja"] if shutil.which("ninja", path=_env()["PATH"]) else []
    conf = _run([cmake, "-S", str(EXAMPLE), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={cmake_prefix}"], timeout=300)
    _run([cmake, "--build", str(build), "-j", "2"], timeout=600)
    exe = build / "damacy_downstream"
    assert exe.is_file()
    return exe, conf.stdout + conf.stderr


def test_configure_reports_package_and_capabilities(downstream, cmake_prefix):
    _, log = downstream
    assert f"damacy {damacy.__version__} ({cmake_prefix / 'lib/cmake/damacy'})" in log, log
    assert "CUDA " in log and "nvCOMP loader " in log, log


def python_checksums(uri: str, boxes) -> list[tuple[float, int, float]]:
    """(sum, crc32) per batch from the Python API, plus zarr-python's sum of the same crops."""
    cfg = damacy.Config(samples_per_batch=SAMPLES_PER_BATCH, sample_shape=SAMPLE_SHAPE, n_io_threads=2)
    z = zarr.open_array(uri, mode="r")
    out = []
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in boxes)
        for i in range(len(boxes) // SAMPLES_PER_BATCH):
            t = pipe.pop()
            assert t.dtype == torch.float32 and t.is_contiguous()
            mine = boxes[i * SAMPLES_PER_BATCH:(i + 1) * SAMPLES_PER_BATCH]
            oracle = sum(float(np.asarray(z[tuple(slice(a, b) for a, b in box)], dtype=np.float64).sum())
                         for box in mine)
            out.append((float(t.double().sum()), zlib.crc32(t.numpy().tobytes()), oracle))
    return out


@pytest.mark.parametrize("source", ["written_by_example", "taken"])
def test_checksums_equal_the_python_api(source, downstream, tmp_path):
    exe, _ = downstream
    uri = str(tmp_path / "example.zarr")
    if source == "taken":
        # An array the example did not write: unsharded, blosc-zstd, another shape.
        damacy._ops.call(damacy._ops.ops().write_example_volume, uri, [40, 70, 50], [8, 16, 16], [],
                         "blosc-zstd", 3)
    out = _run([str(exe), uri, str(N_BATCHES), str(SEED)], timeout=120).stdout
    shape, boxes, sums = parse_output(out)
    assert shape == (tuple(zarr.open_array(uri, mode="r").shape)), out
    assert sorted(boxes) == sorted(sums) == list(range(N_BATCHES)), out
    flat = [b for i in range(N_BATCHES) for b in boxes[i]]
    assert flat == expected_boxes(shape, N_BATCHES * SAMPLES_PER_BATCH, SEED)
    want = python_checksums(uri, flat)
    for i, (py_sum, py_crc, oracle_sum) in enumerate(want):
        cpp_sum, cpp_crc = sums[i]
        assert cpp_sum == py_sum, f"batch {i}: C++ sum {cpp_sum} != Python {py_sum}"
        assert cpp_crc == py_crc, f"batch {i}: C++ crc32 {cpp_crc:08x} != Python {py_crc:08x}"
        assert cpp_sum == oracle_sum, f"batch {i}: C++ sum {cpp_sum} != zarr-python {oracle_sum}"
    assert '"batches":' in out.splitlines()[-1]


def test_missing_prefix_is_reported(tmp_path):
    """No package at any candidate: FileNotFoundError naming where it looked and the fix."""
    import importlib.util

    pkg = tmp_path / "site" / "damacy"
    pkg.mkdir(parents=True)
    shutil.copy(Path(damacy.__file__).parent / "_cmake.py", pkg / "_cmake.py")
    spec = importlib.util.spec_from_file_location("damacy_cmake_copy", pkg / "_cmake.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.cmake_prefix_candidates()[0] == pkg
    with pytest.raises(FileNotFoundError) as info:
        mod.cmake_prefix()
    assert str(pkg / "lib/cmake/damacy/damacy-config.cmake") in str(info.value)
    assert "dev/build.sh" in str(info.value)


def test_docs_quick_start_builds_and_runs(cmake_prefix, tmp_path):
    """docs/cpp.md's quick start (its CMakeLists.txt and main.cpp blocks) is a working program
    whose sums equal the Python API's."""
    import re

    doc = (REPO / "docs" / "cpp.md").read_text()
    src = tmp_path / "quickstart"
    src.mkdir()
    for name in ["CMakeLists.txt", "main.cpp"]:
        m = re.search(rf"<!-- quickstart:{re.escape(name)} -->\n```\w+\n(.*?)```", doc, re.S)
        assert m, f"docs/cpp.md has no quickstart block for {name}"
        (src / name).write_text(m.group(1))
    cmake = shutil.which("cmake", path=_env()["PATH"])
    gen = ["-G", "Ninja"] if shutil.which("ninja", path=_env()["PATH"]) else []
    build = tmp_path / "build"
    _run([cmake, "-S", str(src), "-B", str(build), *gen, f"-DCMAKE_PREFIX_PATH={cmake_prefix}"], timeout=300)
    _run([cmake, "--build", str(build)], timeout=600)
    uri = str(tmp_path / "qs.zarr")
    out = _run([str(build / "quickstart"), uri], timeout=120).stdout
    sums = [float(m.group(2)) for m in re.finditer(r"^batch (\d+): 4 samples, first z \d+, sum (\S+)$", out, re.M)]
    assert len(sums) == 2, out
    boxes = [((i, i + 16), (2 * i, 2 * i + 32), (4 * i, 4 * i + 32)) for i in range(8)]
    cfg = damacy.Config(samples_per_batch=4, sample_shape=(16, 32, 32))
    with damacy.Pipeline(cfg) as pipe:
        pipe.push(damacy.Sample(uri, b) for b in boxes)
        want = [float(pipe.pop().double().sum()) for _ in range(2)]
    assert sums == want, out
