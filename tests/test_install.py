"""`pip install .` / `pip wheel .` with build isolation, as a new user runs them (issue 13).

A fresh venv (no --system-site-packages) that sees torch, and nothing else of the development
venv, through a .pth naming a folder of links to torch's installed distributions (torch and
what it requires, `nvidia/` included): the same as a user's venv after `pip install torch`,
without downloading 3 GB. pip then builds damacy in its isolated build environment
(scikit-build-core from the index) through build_backend/damacy_build.py.

The wheel build reuses the checkout's cargo target (DAMACY_CARGO_TARGET_DIR=<repo>/target, which
dev/build.sh has just built in CI; cargo runs without scikit-build-core's SOURCE_DATE_EPOCH, so
nothing is rebuilt) and scikit-build-core's persistent build-wheel/ folder, so in CI it
costs the C++/CUDA compile at most; the full fresh install time is measured once in
dev/perf.md. The fail-fast cases (no cargo, no torch) stop
before anything is compiled.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _closure(name: str) -> list[md.Distribution]:
    seen: dict[str, md.Distribution] = {}
    todo = [name]
    while todo:
        n = re.split(r"[ ;<>=!~\[]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if n in seen:
            continue
        try:
            d = md.distribution(n)
        except md.PackageNotFoundError:
            continue
        seen[n] = d
        for req in d.requires or []:
            if "extra ==" not in req:
                todo.append(req)
    return list(seen.values())


def torch_only_site(dest: Path) -> Path:
    """A folder of links to torch and the distributions it requires (their files' top-level
    entries and .dist-info folders), plus `nvidia/` whole (PyPI's CUDA pieces share it)."""
    dest.mkdir(parents=True, exist_ok=True)
    tops: set[Path] = set()
    for d in _closure("torch"):
        base = Path(d.locate_file(""))
        for f in d.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            tops.add(base / top)
    for src in sorted(tops):
        link = dest / src.name
        if src.exists() and not link.exists():
            link.symlink_to(src)
    return dest


def make_venv(path: Path, *, torch: bool) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    py = path / "bin" / "python"
    if torch:
        purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        site = torch_only_site(path / "torch-site")
        Path(purelib, "torch-only.pth").write_text(f"{site}\n")
    return py


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAMACY_PYTHON", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def _pip(py: Path, *args: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-m", "pip", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _backend():
    import importlib.util

    spec = importlib.util.spec_from_file_location("damacy_build", ROOT / "build_backend" / "damacy_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_nvcc(folder: Path, release: str) -> Path:
    nvcc = folder / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release[:4]}, V{release}'\n")
    nvcc.chmod(0o755)
    return nvcc


@pytest.fixture
def backend(monkeypatch):
    for var in ("CUDACXX", "CUDA_HOME", "CUDA_PATH", "DAMACY_CUDA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvcc
    return _backend()


def test_backend_builds_cuda_with_a_matching_nvcc(backend, tmp_path, monkeypatch):
    nvcc = _fake_nvcc(tmp_path / "cuda", "13.0.88")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    torch_info = {"torch_version": "2.11.0+cu130", "torch_cuda": "13.0", "nvidia_paths": []}
    defines, what = backend.find_cuda(torch_info)
    assert defines == {"DAMACY_CUDA": "ON", "CMAKE_CUDA_COMPILER": str(nvcc)}
    assert what.startswith("CUDA build: nvcc 13.0.88") and "$CUDA_HOME" in what
    # PyPI's nvcc (nvidia/cu13/bin) is found through the environment's nvidia namespace.
    monkeypatch.delenv("CUDA_HOME")
    pypi = _fake_nvcc(tmp_path / "site" / "nvidia" / "cu13", "13.0.88")
    (tmp_path / "site" / "nvidia" / "cu13" / "lib").mkdir()
    defines, what = backend.find_cuda(dict(torch_info, nvidia_paths=[str(tmp_path / "site" / "nvidia")]))
    assert defines["CMAKE_CUDA_COMPILER"] == str(pypi) and "PyPI" in what
    assert defines["CMAKE_CUDA_FLAGS"] == f"-L{tmp_path / 'site' / 'nvidia' / 'cu13' / 'lib'}"


def test_backend_builds_cpu_when_cuda_cannot_match(backend, tmp_path, monkeypatch):
    _fake_nvcc(tmp_path / "cuda", "12.8.93")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    defines, what = backend.find_cuda({"torch_version": "2.11.0+cu130", "torch_cuda": "13.0", "nvidia_paths": []})
    assert defines == {"DAMACY_CUDA": "OFF"}
    assert what.startswith("CPU-only build: no CUDA 13.x compiler found") and "12.8.93" in what
    defines, what = backend.find_cuda({"torch_version": "2.11.0+cpu", "torch_cuda": None})
    assert defines == {"DAMACY_CUDA": "OFF"} and "is a CPU build" in what
    monkeypatch.setenv("DAMACY_CUDA", "ON")
    with pytest.raises(SystemExit, match="DAMACY_CUDA=ON, but torch 2.11.0\\+cpu is a CPU build"):
        backend.find_cuda({"torch_version": "2.11.0+cpu", "torch_cuda": None})
    monkeypatch.setenv("DAMACY_CUDA", "OFF")
    assert backend.find_cuda({"torch_version": "2.11.0+cu130", "torch_cuda": "13.0"})[0] == {"DAMACY_CUDA": "OFF"}


def test_backend_refuses_an_unsupported_torch(backend):
    with pytest.raises(SystemExit, match="torch 2.12.0 .* is not supported"):
        backend.check_torch({"torch_version": "2.12.0", "torch_dir": "/x"})
    backend.check_torch({"torch_version": "2.11.0+cu130", "torch_dir": "/x"})


def test_damacy_python_finds_its_torch_under_build_isolation(backend, tmp_path, monkeypatch):
    """DAMACY_PYTHON names an interpreter whose own site-packages hold torch; pip's build
    isolation (simulated: a sitecustomize on PYTHONPATH that drops site-packages, as pip's
    overlay does) must not hide them from it (seen on the GPU machine: "No module named torch")."""
    hide = tmp_path / "isolation"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n")
    monkeypatch.setenv("PYTHONPATH", str(hide))
    monkeypatch.setenv("PYTHONNOUSERSITE", "1")
    monkeypatch.setenv("DAMACY_PYTHON", sys.executable)
    found = backend.find_torch()
    assert found["torch_version"].startswith("2.11"), found


def test_no_cargo_fails_fast_with_rustup(tmp_path):
    py = make_venv(tmp_path / "venv", torch=True)
    # PATH without cargo (the venv's bin and the system's), HOME without ~/.cargo.
    path = ":".join(p for p in os.environ["PATH"].split(":") if not Path(p, "cargo").exists())
    env = _env(PATH=path, HOME=str(tmp_path), CARGO_HOME=str(tmp_path / "no-cargo"))
    t0 = time.monotonic()
    r = _pip(py, "wheel", ".", "--no-deps", "-w", str(tmp_path / "wheels"), env=env, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "cargo (Rust) was not found" in out, out
    assert "sh.rustup.rs" in out, out
    assert not list((tmp_path / "wheels").glob("*.whl")) if (tmp_path / "wheels").exists() else True
    assert time.monotonic() - t0 < 300


def test_no_torch_fails_fast_naming_the_fix(tmp_path):
    py = make_venv(tmp_path / "venv", torch=False)
    r = _pip(py, "wheel", ".", "--no-deps", "-w", str(tmp_path / "wheels"), env=_env(), timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "torch was not found in the environment" in out, out
    assert "pip install 'torch>=2.11,<2.12'" in out, out


@pytest.mark.slow
def test_pip_wheel_and_install_with_build_isolation(tmp_path):
    """`pip wheel . --no-deps` in a fresh torch-only venv, isolation on; the wheel installs,
    imports, says what it built, and reads an array the same as numpy's reading of it."""
    py = make_venv(tmp_path / "venv", torch=True)
    target = os.environ.get("DAMACY_CARGO_TARGET_DIR", str(ROOT / "target"))
    env = _env(DAMACY_CARGO_TARGET_DIR=target)
    t0 = time.monotonic()
    r = _pip(py, "wheel", ".", "--no-deps", "-v", "-w", str(tmp_path / "wheels"), env=env, timeout=3600)
    elapsed = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    print(f"pip wheel . took {elapsed:.0f} s")
    # What it built, said by the backend (pip -v shows it).
    said = re.search(r"damacy: (CUDA build: nvcc [0-9.]+|CPU-only build[^\n]*)", out)
    assert said, out[-6000:]
    (wheel,) = (tmp_path / "wheels").glob("damacy-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "damacy/libdamacy_torch.so" in names
        assert "damacy/py.typed" in names
        assert "damacy/lib/cmake/damacy/damacy-config.cmake" in names
        info = json.loads(z.read("damacy/damacy_build_info.json"))
    import torch

    assert info["torch_version"] == torch.__version__
    assert info["build"] == ("cuda" if said.group(1).startswith("CUDA") else "cpu")

    r = _pip(py, "install", "--no-deps", str(wheel), env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # Out of the checkout, so the installed package is imported, not python/damacy.
    prog = r"""
import json, sys, numpy as np, torch, damacy
assert damacy.__file__.startswith(sys.prefix), damacy.__file__
uri = sys.argv[1]
torch.ops.damacy.write_example_volume(uri, [32, 64, 64], [16, 32, 32], [32, 64, 64], "zstd", 7)
import zarr
ref = np.asarray(zarr.open_array(uri, mode="r")[4:20, 8:40, 16:48]).astype(np.float32)
cfg = damacy.Config(samples_per_batch=1, sample_shape=(16, 32, 32), dtype=torch.float32)
with damacy.Pipeline(cfg) as p:
    p.push([damacy.Sample(uri, [(4, 20), (8, 40), (16, 48)])])
    got = p.pop()[0].numpy()
assert np.array_equal(got, ref), "differs from zarr-python"
print("ok", json.dumps(damacy.gpu_info()))
"""
    # numpy and zarr are not torch's: the check reads through the development venv's copies.
    dev_site = [p for p in sys.path if p.endswith("site-packages")]
    r = subprocess.run([str(py), "-c", prog, str(tmp_path / "v.zarr")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=_env(PYTHONPATH=":".join(dev_site)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok"), r.stdout
    r = subprocess.run([str(tmp_path / "venv" / "bin" / "damacy"), "--version"], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"built: {info['build'].upper()}" in r.stdout, r.stdout
