"""Loads libdamacy_torch.so and maps its errors to damacy.errors.

The library registers `torch.ops.damacy.*` and `torch.classes.damacy.Pipeline`
(cpp/src/ops/register.cpp; contract in dev/ops.md). It is looked for, first found wins:

1. `$DAMACY_LIBRARY` (a path to the .so);
2. the package folder (`python/damacy/` in a wheel, or the link dev/build.sh makes);
3. the repository's build folder (`<repo>/build/`), for development checkouts.
"""

from __future__ import annotations

import os
import json
import sys
import re
from pathlib import Path
from typing import Any, Callable

import torch

from . import _log, _supported, errors

__all__ = ["LIBRARY_NAME", "library_path", "load", "ops", "classes", "call", "translate", "translate_device"]

LIBRARY_NAME = "libdamacy_torch.so"
_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_BUILD_DIR = _PACKAGE_DIR.parent.parent / "build"

_loaded: str | None = None


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("DAMACY_LIBRARY")
    if env:
        out.append(Path(env))
    out.append(_PACKAGE_DIR / LIBRARY_NAME)
    out.append(_REPO_BUILD_DIR / LIBRARY_NAME)
    return out


def library_path() -> Path:
    """The library that `load` uses; ImportError with the fix when there is none."""
    candidates = _candidates()
    env = os.environ.get("DAMACY_LIBRARY")
    if env and not Path(env).is_file():
        raise ImportError(f"damacy: DAMACY_LIBRARY={env} is not a file")
    for path in candidates:
        if path.is_file():
            return path
    looked = "\n  ".join(str(p) for p in candidates)
    raise ImportError(
        f"damacy: the native library {LIBRARY_NAME} was not found; looked at:\n  {looked}\n"
        "Build it with `bash dev/build.sh` (development checkout) or install the package with "
        "`pip install .`, or point DAMACY_LIBRARY at the .so."
    )


def load() -> str:
    """Loads the library once per process; returns its path."""
    global _loaded
    if _loaded is None:
        path = library_path()
        _supported.check(torch.__version__, _supported.build_info(path))
        try:
            torch.ops.load_library(str(path))
        except OSError as e:
            raise ImportError(
                f"damacy: loading {path} failed: {e}\n"
                f"It must be built against this torch ({torch.__version__}); rebuild with "
                "`bash dev/build.sh`."
            ) from e
        _loaded = str(path)
        _register_fakes()
        # nvCOMP is found at run time: point the extension at this Python's site folders,
        # where the nvidia-libnvcomp-cu13 wheel puts libnvcomp.so.6 (or .so.5 for nvCOMP 5.x).
        global _gpu_info
        _gpu_info = json.loads(torch.ops.damacy.gpu_info(os.pathsep.join(p for p in sys.path if p)))
        _log.drain(torch.ops.damacy)
    return _loaded


_gpu_info: dict | None = None


def _register_fakes() -> None:
    """The fake (meta) kernels of the tensor ops, for torch.compile and torch.library.opcheck
    (dev/ops.md: the ops' shapes)."""
    if hasattr(torch.ops.damacy, "augment"):
        @torch.library.register_fake("damacy::augment", allow_override=True)  # a second load() after a reload
        def _augment_fake(x: torch.Tensor, params: torch.Tensor, noise_std: float, intensity: bool) -> torch.Tensor:
            torch._check(params.dim() == 2 and params.shape[0] == x.shape[0] and params.shape[1] == 3,
                         lambda: f"augment: params must be [{x.shape[0]}, 3], found {tuple(params.shape)}")
            torch._check(params.dtype == torch.int64, lambda: f"augment: params must be int64, found {params.dtype}")
            return torch.empty_like(x)  # the kernel's output: empty_like(x)


def gpu_info() -> dict:
    """What this build can do on the GPU: cuda_built, nvcomp_available, nvcomp_path,
    nvcomp_version (major*1000 + minor*100 + patch), nvcomp_major (6 or 5, 0 when not
    loaded), why (empty when nvCOMP is usable)."""
    load()
    assert _gpu_info is not None
    return dict(_gpu_info)


def ops() -> Any:
    """`torch.ops.damacy` (loads the library)."""
    load()
    return torch.ops.damacy


def classes() -> Any:
    """`torch.classes.damacy` (loads the library)."""
    load()
    return torch.classes.damacy


# "[Token] message": the first damacy token in torch's RuntimeError text.
_TOKEN = re.compile(r"\[(" + "|".join(errors.STATUSES) + r")\] ")


def translate(exc: BaseException) -> errors.DamacyError | None:
    """The typed error for a RuntimeError raised by a damacy op, or None if it is not one.

    torch may wrap the C++ message (a prefix, or lines such as "Exception raised from ..."
    after it); damacy messages are one line, so the message is the rest of the token's line.
    """
    if isinstance(exc, errors.DamacyError):
        return exc
    m = _TOKEN.search(str(exc))
    if m is None:
        return None
    what = str(exc)[m.end() :].split("\n", 1)[0].rstrip()
    return errors.from_status(m.group(1), what)


def _op_name(fn: Any) -> str:
    for attr in ("_qualified_op_name", "__name__", "name"):
        name = getattr(fn, attr, None)
        if isinstance(name, str) and name:
            return name.removeprefix("damacy::")
    return "damacy op"


def translate_device(exc: BaseException, what: str) -> errors.DamacyError | None:
    """The damacy error for a torch device failure that escaped a damacy op (a CUDA error
    inside a torch call the C++ side did not map): torch.AcceleratorError -> CudaError,
    torch.OutOfMemoryError -> OutOfMemory, both naming `what` and torch's first line."""
    first = str(exc).split("\n", 1)[0].strip()
    accelerator = getattr(torch, "AcceleratorError", None)
    if accelerator is not None and isinstance(exc, accelerator):
        return errors.CudaError(f"{what}: {first}")
    if isinstance(exc, torch.OutOfMemoryError):
        return errors.OutOfMemory(f"{what}: {first}")
    return None


def call(fn: Callable[..., Any], *args: Any, drain: bool = True) -> Any:
    """`fn(*args)`, with a damacy RuntimeError raised as its typed damacy error (and a CUDA
    failure as damacy.CudaError, torch's error kept as the cause); then the native log
    records go to the "damacy" logger (`drain=False` skips that, for the per-sample push)."""
    try:
        typed: BaseException | None = None
        cause: BaseException | None = None
        try:
            return fn(*args)
        except RuntimeError as e:
            typed = translate(e)
            if typed is None:
                typed = translate_device(e, _op_name(fn))
                if typed is None:
                    raise
                cause = e  # torch's error (and its CUDA hints) stays as the cause
        # Raised outside the handler, and forgotten here: a local holding the exception would
        # make a cycle (this frame -> exception -> traceback -> this frame) that keeps the
        # caller's frames, and the batch tensors in their locals, alive until the next garbage
        # collection (pinned pipeline buffers: PoolStarved under load).
        try:
            raise typed from cause
        finally:
            del typed, cause
    finally:
        if drain and _loaded is not None:
            _log.drain(torch.ops.damacy)
