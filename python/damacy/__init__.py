"""damacy: random crops of chunked, sharded, compressed Zarr arrays as torch tensors.

>>> import damacy
>>> cfg = damacy.Config(samples_per_batch=8, sample_shape=(64, 128, 128))
>>> with damacy.Pipeline(cfg) as p:
...     p.push(damacy.Sample("/data/vol.zarr", [(0, 64), (0, 128), (0, 128)]) for _ in range(8))
...     batch = p.pop()   # damacy.Batch, a torch.Tensor [8, 64, 128, 128], float32

A thin layer over `torch.ops.damacy` / `torch.classes.damacy` (libdamacy_torch.so, loaded on
import): no decoding, no I/O, no threads of its own.
"""

from . import _ops, errors
from ._cmake import cmake_prefix
from ._log import set_log_level
from ._version import __version__
from .config import Config
from .errors import (
    BudgetExceeded,
    CudaError,
    DamacyError,
    DecodeError,
    DtypeMismatch,
    InternalError,
    InvalidArgument,
    NotFound,
    OutOfMemory,
    PoolStarved,
    RankMismatch,
    ShutdownError,
    StorageError,
    TryAgain,
)
from .pipeline import Pipeline, Stats
from .sample import Sample, as_uri
from .enums import Dtype, NumaStrategy, Status
from .errors import NativeCudaError
from ._compat_config import LatencyModel
from ._compat import (
    LOG_DEBUG,
    LOG_ERROR,
    LOG_FATAL,
    LOG_INFO,
    LOG_TRACE,
    LOG_WARN,
    Batch,
    BatchInfo,
    Metric,
    max_concurrency,
    set_log_level,
    set_log_quiet,
)
from ._compat import coerce_cuda_event_handle as _coerce_cuda_event_handle  # the original's name
from ._compat import _warned_local_rank_pairs, _warned_multi_gpu_pairs  # noqa: F401 (the original's)

_ops.load()


def gpu_info() -> dict:
    """What this build can do on the GPU: {"cuda_built", "nvcomp_available", "nvcomp_path",
    "nvcomp_version", "nvcomp_major", "why"} (nvCOMP 6.x or 5.x, chosen at run time:
    docs/gpu.md). `Config(device="cuda:N", decode="auto")` decodes on the GPU when
    both are true, else on the CPU (one log line says why)."""
    return _ops.gpu_info()


def array_info(uri: str, *, usage: bool = True) -> dict:
    """Facts about the array at `uri`: shape, data_type, chunk and shard shape, codecs,
    dimension names, decoded bytes, and with `usage` (the default) its stored files and bytes
    (which lists the whole array: pass ``usage=False`` when only the metadata is wanted)."""
    import json

    return json.loads(_ops.call(_ops.ops().array_info, as_uri(uri), bool(usage)))


__all__ = [
    "__version__",
    "Config",
    "Sample",
    "Pipeline",
    "Stats",
    "array_info",
    "gpu_info",
    "cmake_prefix",
    "set_log_level",
    "errors",
    "DamacyError",
    "TryAgain",
    "InvalidArgument",
    "NotFound",
    "DtypeMismatch",
    "RankMismatch",
    "StorageError",
    "DecodeError",
    "CudaError",
    "OutOfMemory",
    "BudgetExceeded",
    "ShutdownError",
    "PoolStarved",
    "InternalError",
    # The original nclack/damacy's names (dev/compat.md).
    "Batch",
    "BatchInfo",
    "Metric",
    "Status",
    "Dtype",
    "NumaStrategy",
    "LatencyModel",
    "NativeCudaError",
    "set_log_level",
    "set_log_quiet",
    "max_concurrency",
    "LOG_TRACE",
    "LOG_DEBUG",
    "LOG_INFO",
    "LOG_WARN",
    "LOG_ERROR",
    "LOG_FATAL",
]
