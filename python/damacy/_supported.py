"""The Python, torch and CUDA versions damacy supports, checked at import (and by the build:
build_backend/damacy_build.py reads SUPPORTED from this file without importing the package).

Keep in step with pyproject.toml (`requires-python`, the torch dependency) and README.md's
"Supported versions".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SUPPORTED = {
    "damacy": "0.1",
    "python": (3, 10),  # the oldest; tested on 3.11 and 3.12
    "torch": ("2.11",),  # minor versions; the extension is built for exactly one of them
    "torch_requirement": "torch>=2.11,<2.12",
    "cuda": ("13",),  # CUDA major versions of the GPU path (torch's CUDA and nvcc)
    "nvcomp": ("5", "6"),  # nvCOMP majors the run-time loader takes
}

#: Written by the build next to libdamacy_torch.so (CMakeLists.txt): what was built, for what.
BUILD_INFO_NAME = "damacy_build_info.json"


def _mm(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def build_info(library: Path) -> dict:
    """The build's record next to `library` ({} when absent: an older build)."""
    path = Path(library).resolve().parent / BUILD_INFO_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def check(torch_version: str, info: dict, python: tuple[int, int] | None = None) -> None:
    """ImportError with the fix when this Python or torch cannot load the built extension."""
    py = python or sys.version_info[:2]
    if tuple(py) < SUPPORTED["python"]:
        need = ".".join(map(str, SUPPORTED["python"]))
        raise ImportError(f"damacy needs Python >= {need} (this is {py[0]}.{py[1]})")
    built = info.get("torch_version", "")
    if built and _mm(built) != _mm(torch_version):
        raise ImportError(
            f"damacy was built against torch {built}, but this Python has torch {torch_version}: "
            f"the extension loads only into torch {_mm(built)}.x. Reinstall damacy against this "
            "torch (`pip install --force-reinstall --no-deps .` from the source, or `bash "
            "dev/build.sh` in a checkout), or install torch " + _mm(built) + "."
        )
    if _mm(torch_version) not in SUPPORTED["torch"]:
        raise ImportError(
            f"damacy {SUPPORTED['damacy']} supports torch {', '.join(SUPPORTED['torch'])}; this "
            f"Python has torch {torch_version} (pip install '{SUPPORTED['torch_requirement']}')"
        )
