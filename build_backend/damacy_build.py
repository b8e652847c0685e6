"""damacy's PEP 517 build backend: scikit-build-core, told which torch, CUDA compiler and cargo.

pyproject.toml names this module (`backend-path = ["build_backend"]`). It does what
scikit-build-core does, plus, before the build (dev/decisions.md, "pip install . with build
isolation"):

- torch: the extension must link the torch it will be imported with, which is the torch of
  the environment damacy is installed into, not one in pip's isolated build environment.
  pip runs this backend with the target environment's own interpreter (`sys.executable`) and
  hides its site-packages through PYTHONPATH/PYTHONNOUSERSITE only, so that interpreter run
  without those two variables sees the environment's torch. `DAMACY_PYTHON` names another
  interpreter (needed with `python -m build` or uv, whose isolated venvs are separate
  interpreters). No torch there: the build stops at once, naming the fix.
- CUDA: `DAMACY_CUDA` = AUTO (default), ON or OFF. AUTO builds the CUDA path when torch is a
  CUDA build and a CUDA compiler of torch's CUDA major version is found: $CUDACXX,
  $CUDA_HOME/bin/nvcc, $CUDA_PATH/bin/nvcc, nvcc on PATH, /usr/local/cuda/bin/nvcc, or PyPI's
  nvidia-cuda-nvcc in the target environment (nvidia/cu13/bin/nvcc).
- Rust: cargo on PATH, in $CARGO_HOME/bin or ~/.cargo/bin, at least MIN_RUST; missing or
  older, the build stops at once with the rustup command. Not needed when DAMACY_RUST_LIB and
  DAMACY_RUST_INCLUDE (environment or -C cmake.define.*) name a prebuilt staticlib.
  `DAMACY_CARGO_TARGET_DIR` reuses a cargo target folder (CI: an incremental `pip wheel`).
- It prints what it builds (CPU or CUDA, which nvcc and its version, which torch) on stderr
  (`pip install -v` shows it) and the build records it in damacy/build_info.json
  (`python -m damacy --version` prints it).

What it finds goes to CMake as `cmake.define.*` config settings; a setting the caller passes
(`-C cmake.define.DAMACY_CUDA=OFF`) wins over what is found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from scikit_build_core import build as _skb
from scikit_build_core.build import (  # noqa: F401  (re-exported PEP 517 hooks)
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

#: The oldest Rust that builds rust/ (Cargo.toml's rust-version).
MIN_RUST = (1, 91)
RUSTUP = "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"

_ROOT = Path(__file__).resolve().parent.parent


class BuildError(SystemExit):
    """Stops the build with one message (pip shows it under 'error: subprocess-exited')."""

    def __init__(self, message: str) -> None:
        super().__init__(f"\ndamacy: {message}\n")


def _say(line: str) -> None:
    print(f"damacy: {line}", file=sys.stderr, flush=True)


def _supported() -> dict:
    """python/damacy/_supported.py's SUPPORTED, read without importing the package (no torch)."""
    ns: dict = {}
    exec((_ROOT / "python" / "damacy" / "_supported.py").read_text(), ns)  # noqa: S102
    return ns["SUPPORTED"]


# --- torch ---------------------------------------------------------------------------------

_PROBE = r"""
import json, os, sys, sysconfig, torch, torch.utils
paths = []
try:
    import nvidia
    paths = [os.path.realpath(p) for p in nvidia.__path__]
except ImportError:
    pass
print(json.dumps({
    "python": sys.executable,
    "torch_dir": os.path.realpath(os.path.dirname(torch.__file__)),
    "torch_version": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "cxx11_abi": int(torch._C._GLIBCXX_USE_CXX11_ABI),
    "nvidia_paths": paths,
}))
"""


def _clean_env() -> dict:
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME"):
        env.pop(key, None)
    return env


def find_torch() -> dict:
    """The torch of the environment being installed into (see the module docstring)."""
    explicit = os.environ.get("DAMACY_PYTHON")
    # An interpreter named by DAMACY_PYTHON runs with its own site-packages: pip's isolation
    # variables would hide them from it too.
    tries = [(explicit, _clean_env(), "DAMACY_PYTHON")] if explicit else [
        (sys.executable, _clean_env(), "this interpreter without pip's build isolation"),
        (sys.executable, dict(os.environ), "this interpreter"),
    ]
    errors = []
    for python, env, what in tries:
        try:
            r = subprocess.run([python, "-c", _PROBE], env=env, capture_output=True, text=True,
                               timeout=300, check=False)
        except OSError as e:
            errors.append(f"{python} ({what}): {e}")
            continue
        if r.returncode == 0:
            return json.loads(r.stdout.strip().splitlines()[-1])
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        errors.append(f"{python} ({what}): {last}")
    torch_req = _supported()["torch_requirement"]
    raise BuildError(
        "torch was not found in the environment damacy is being installed into.\n"
        "The extension links that environment's torch, so install torch first:\n"
        f"    pip install '{torch_req}'\n"
        "then `pip install .` again. With `python -m build` or uv (isolated builds that run\n"
        "in a venv of their own) pass --no-isolation / --no-build-isolation, or set\n"
        "DAMACY_PYTHON=/path/to/env/bin/python.\nTried:\n  " + "\n  ".join(errors)
    )


def check_torch(info: dict) -> None:
    sup = _supported()
    mm = ".".join(info["torch_version"].split("+")[0].split(".")[:2])
    if mm not in sup["torch"]:
        raise BuildError(
            f"torch {info['torch_version']} ({info['torch_dir']}) is not supported; damacy "
            f"{sup['damacy']} builds against torch {', '.join(sup['torch'])} "
            f"(pip install '{sup['torch_requirement']}')."
        )


# --- CUDA ----------------------------------------------------------------------------------

def _nvcc_version(nvcc: str) -> str | None:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60,
                             check=False).stdout
    except OSError:
        return None
    m = re.search(r"release [0-9.]+, V([0-9.]+)", out)
    return m.group(1) if m else None


def nvcc_candidates(info: dict) -> list[tuple[str, str]]:
    """(path, where it came from), in the order they are tried."""
    out = []
    if os.environ.get("CUDACXX"):
        out.append((os.environ["CUDACXX"], "$CUDACXX"))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            out.append((str(Path(os.environ[var]) / "bin" / "nvcc"), f"${var}"))
    on_path = shutil.which("nvcc")
    if on_path:
        out.append((on_path, "PATH"))
    out.append(("/usr/local/cuda/bin/nvcc", "/usr/local/cuda"))
    major = (info.get("torch_cuda") or "").split(".")[0]
    for p in info.get("nvidia_paths", []):
        for sub in ([f"cu{major}"] if major else []) + ["cuda_nvcc"]:
            out.append((str(Path(p) / sub / "bin" / "nvcc"), "PyPI nvidia-cuda-nvcc"))
    return out


def find_cuda(info: dict) -> tuple[dict, str]:
    """(cmake defines, one line saying what is built)."""
    mode = os.environ.get("DAMACY_CUDA", "AUTO").upper()
    if mode not in ("AUTO", "ON", "OFF"):
        raise BuildError(f"DAMACY_CUDA={mode!r}: use AUTO, ON or OFF")
    if mode == "OFF":
        return {"DAMACY_CUDA": "OFF"}, "CPU-only build (DAMACY_CUDA=OFF)"
    torch_cuda = info.get("torch_cuda")
    why = ""
    if not torch_cuda:
        why = f"torch {info['torch_version']} is a CPU build"
    else:
        tried = []
        for nvcc, where in nvcc_candidates(info):
            if not os.access(nvcc, os.X_OK):
                continue
            version = _nvcc_version(nvcc)
            tried.append(f"{nvcc} ({where}): {version or 'no version'}")
            if version and version.split(".")[0] == torch_cuda.split(".")[0]:
                defines = {"DAMACY_CUDA": "ON", "CMAKE_CUDA_COMPILER": nvcc}
                lib = Path(nvcc).resolve().parent.parent / "lib"
                if where.startswith("PyPI") and lib.is_dir():
                    # The PyPI toolkit keeps cudart etc. in lib/, which nvcc's link does not search.
                    defines["CMAKE_CUDA_FLAGS"] = f"-L{lib}"
                return defines, (f"CUDA build: nvcc {version} ({nvcc}, from {where}) for torch "
                                 f"{info['torch_version']} (CUDA {torch_cuda})")
        why = (f"no CUDA {torch_cuda.split('.')[0]}.x compiler found (torch {info['torch_version']} "
               f"uses CUDA {torch_cuda}); tried: " + ("; ".join(tried) or "nothing executable") +
               ". Set CUDA_HOME or CUDACXX, put nvcc on PATH, or pip install nvidia-cuda-nvcc")
    if mode == "ON":
        raise BuildError(f"DAMACY_CUDA=ON, but {why}")
    return {"DAMACY_CUDA": "OFF"}, f"CPU-only build: {why}"


# --- Rust ----------------------------------------------------------------------------------

def find_cargo() -> str:
    home = Path.home()
    candidates = [shutil.which("cargo")]
    if os.environ.get("CARGO_HOME"):
        candidates.append(str(Path(os.environ["CARGO_HOME"]) / "bin" / "cargo"))
    candidates.append(str(home / ".cargo" / "bin" / "cargo"))
    for cargo in candidates:
        if cargo and os.access(cargo, os.X_OK):
            break
    else:
        raise BuildError(
            "cargo (Rust) was not found on PATH, in $CARGO_HOME/bin or ~/.cargo/bin. damacy's core\n"
            "is a Rust library; install Rust with rustup:\n"
            f"    {RUSTUP}\n"
            "then `. \"$HOME/.cargo/env\"` (or open a new shell) and install again. Or build the\n"
            "staticlib elsewhere and pass DAMACY_RUST_LIB and DAMACY_RUST_INCLUDE."
        )
    out = subprocess.run([cargo, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"cargo ([0-9]+)\.([0-9]+)", out)
    if m and (int(m.group(1)), int(m.group(2))) < MIN_RUST:
        raise BuildError(
            f"{cargo} is {out.strip()}; damacy needs Rust >= {MIN_RUST[0]}.{MIN_RUST[1]}: "
            "`rustup update stable`"
        )
    return cargo


# --- the hooks -----------------------------------------------------------------------------

def _defined(settings: dict, name: str) -> bool:
    return f"cmake.define.{name}" in settings or bool(os.environ.get(name))


def _settings(config_settings: dict | None, *, announce: bool) -> dict:
    settings = dict(config_settings or {})
    defines: dict[str, str] = {}
    if _defined(settings, "DAMACY_RUST_LIB"):
        for name in ("DAMACY_RUST_LIB", "DAMACY_RUST_INCLUDE"):
            if os.environ.get(name):
                defines[name] = os.environ[name]
        rust = "prebuilt Rust staticlib"
    else:
        cargo = find_cargo()
        defines["DAMACY_CARGO"] = cargo
        # scikit-build-core exports SOURCE_DATE_EPOCH, and CC/CXX from sysconfig when unset;
        # cargo runs without those it added, so a shared target/ is not rebuilt for them.
        defines["DAMACY_CARGO_UNSET_ENV"] = ";".join(
            ["SOURCE_DATE_EPOCH"] + [v for v in ("CC", "CXX") if v not in os.environ])
        if os.environ.get("DAMACY_CARGO_TARGET_DIR"):
            defines["DAMACY_CARGO_TARGET_DIR"] = os.path.abspath(os.environ["DAMACY_CARGO_TARGET_DIR"])
        rust = cargo
    if not _defined(settings, "DAMACY_TORCH_ROOT"):
        info = find_torch()
        check_torch(info)
        defines.update({
            "DAMACY_TORCH_ROOT": info["torch_dir"],
            "DAMACY_TORCH_VERSION": info["torch_version"],
            "DAMACY_TORCH_CXX11_ABI": str(info["cxx11_abi"]),
            "DAMACY_TORCH_CMAKE_PREFIX": str(Path(info["torch_dir"]) / "share" / "cmake"),
        })
        cuda_defines, what = ({}, "CUDA as -C cmake.define.DAMACY_CUDA says") if _defined(
            settings, "DAMACY_CUDA") else find_cuda(info)
        defines.update(cuda_defines)
        torch_line = f"torch {info['torch_version']} at {info['torch_dir']} (python {info['python']})"
    else:
        what, torch_line = "as the -C cmake.define.* settings say", "torch from DAMACY_TORCH_ROOT"
    for name, value in defines.items():
        settings.setdefault(f"cmake.define.{name}", value)
    if announce:
        _say(what)
        _say(torch_line)
        _say(f"Rust: {rust}")
    return settings


def get_requires_for_build_wheel(config_settings=None):
    _settings(config_settings, announce=False)  # fail fast, before pip fetches cmake/ninja
    return _skb.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    _settings(config_settings, announce=False)
    return _skb.get_requires_for_build_editable(config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _skb.build_wheel(wheel_directory, _settings(config_settings, announce=True),
                            metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _skb.build_editable(wheel_directory, _settings(config_settings, announce=True),
                               metadata_directory)
