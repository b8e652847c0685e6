"""Where the damacy CMake package is: `python -m damacy --cmake-prefix`, `damacy.cmake_prefix()`.

A prefix P such that `cmake -DCMAKE_PREFIX_PATH=P` makes `find_package(damacy CONFIG)` work
(it holds lib/cmake/damacy/damacy-config.cmake). First found wins:

1. the package folder itself: a wheel installs the CMake package into `damacy/` (pyproject:
   wheel.install-dir), so the package folder is the prefix;
2. `<repo>/build/install`: the install tree dev/build.sh makes for a development checkout
   (`cmake --install build --prefix build/install`).

No torch and no native library is needed to answer.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_RELPATH", "cmake_prefix", "cmake_prefix_candidates"]

CONFIG_RELPATH = Path("lib") / "cmake" / "damacy" / "damacy-config.cmake"
_PACKAGE_DIR = Path(__file__).resolve().parent


def cmake_prefix_candidates() -> list[Path]:
    return [_PACKAGE_DIR, _PACKAGE_DIR.parent.parent / "build" / "install"]


def cmake_prefix() -> str:
    """The prefix holding damacy's CMake package; FileNotFoundError with the fix if none."""
    candidates = cmake_prefix_candidates()
    for prefix in candidates:
        if (prefix / CONFIG_RELPATH).is_file():
            return str(prefix)
    looked = "\n  ".join(str(p / CONFIG_RELPATH) for p in candidates)
    raise FileNotFoundError(
        f"damacy: no CMake package found; looked for:\n  {looked}\n"
        "A development checkout makes build/install with `bash dev/build.sh`; a wheel "
        "(`pip install .`) carries it in the package folder."
    )
