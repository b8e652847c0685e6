"""damacy's errors: one status set shared with Rust and C++.

Every failure of the native library is raised as the `DamacyError` subclass named after its
status. Errors pickle (they survive DataLoader worker processes) and compare by status and
message. `DamacyError` is a `RuntimeError` and `.status` a `damacy.Status` (equal to the
token string too), as in the original nclack/damacy; `NativeCudaError` is its name for
`CudaError` (dev/compat.md).
"""

from __future__ import annotations

from .enums import Status

__all__ = [
    "STATUSES",
    "DamacyError",
    "TryAgain",
    "InvalidArgument",
    "NotFound",
    "DtypeMismatch",
    "RankMismatch",
    "StorageError",
    "DecodeError",
    "CudaError",
    "NativeCudaError",
    "OutOfMemory",
    "BudgetExceeded",
    "ShutdownError",
    "PoolStarved",
    "InternalError",
    "from_status",
]

#: The wire tokens, in the order of Rust's `Status` and C++'s `damacy::Status`.
STATUSES = (
    "TryAgain",
    "InvalidArgument",
    "NotFound",
    "DtypeMismatch",
    "RankMismatch",
    "Storage",
    "Decode",
    "Cuda",
    "OutOfMemory",
    "BudgetExceeded",
    "Shutdown",
    "PoolStarved",
    "Internal",
)


class DamacyError(RuntimeError):
    """A failed damacy operation: `.status` is a `Status` (equal to its token, "Storage", ...),
    `.what` the message."""

    #: The status of this class (None for the base class, which takes it as an argument).
    STATUS: str | None = None

    def __init__(self, status: str | Status, what: str | None = None) -> None:
        if what is None:  # the original's DamacyError(message): no status given
            status, what = "Internal", str(status)
        super().__init__(what)
        self.status = Status.of(status)
        self.what = what

    def __str__(self) -> str:
        return self.what

    def __repr__(self) -> str:
        if type(self).STATUS is None:
            return f"{type(self).__name__}({str(self.status)!r}, {self.what!r})"
        return f"{type(self).__name__}({self.what!r})"

    def __reduce__(self):
        # Rebuilt through from_status: the right subclass, also for the base class.
        return (from_status, (self.status, self.what))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DamacyError):
            return NotImplemented
        return type(self) is type(other) and (self.status, self.what) == (other.status, other.what)

    def __hash__(self) -> int:
        return hash((type(self), self.status, self.what))


class _StatusError(DamacyError):
    def __init__(self, what: str) -> None:
        super().__init__(type(self).STATUS, what)


class TryAgain(_StatusError):
    """Nothing is ready yet (a pop timed out, or nothing was pushed); calling again may succeed."""

    STATUS = "TryAgain"


class InvalidArgument(_StatusError, ValueError):
    """A config value, sample or box is invalid; the message names it."""

    STATUS = "InvalidArgument"


class NotFound(_StatusError):
    """An array (its zarr.json) does not exist."""

    STATUS = "NotFound"


class DtypeMismatch(_StatusError):
    """The source data type cannot be cast to the requested output."""

    STATUS = "DtypeMismatch"


class RankMismatch(_StatusError):
    """A box's rank differs from the array's rank."""

    STATUS = "RankMismatch"


class StorageError(_StatusError):
    """Reading from storage failed, or stored bytes are malformed."""

    STATUS = "Storage"


class DecodeError(_StatusError):
    """A compressed chunk could not be decoded."""

    STATUS = "Decode"


class CudaError(_StatusError):
    """A CUDA call failed."""

    STATUS = "Cuda"


#: The original nclack/damacy's name for CudaError.
NativeCudaError = CudaError


class OutOfMemory(_StatusError):
    """An allocation failed."""

    STATUS = "OutOfMemory"


class BudgetExceeded(_StatusError):
    """A sample cannot fit the configured byte budgets; the message names the knob to raise."""

    STATUS = "BudgetExceeded"


class ShutdownError(_StatusError):
    """The pipeline is closed."""

    STATUS = "Shutdown"


class PoolStarved(_StatusError):
    """Every output buffer is held by live batches: drop (or copy) batches you keep."""

    STATUS = "PoolStarved"


class InternalError(_StatusError):
    """A bug in damacy (a panic or a broken internal invariant); please report it."""

    STATUS = "Internal"


_BY_STATUS: dict[str, type[_StatusError]] = {
    cls.STATUS: cls
    for cls in (
        TryAgain,
        InvalidArgument,
        NotFound,
        DtypeMismatch,
        RankMismatch,
        StorageError,
        DecodeError,
        CudaError,
        OutOfMemory,
        BudgetExceeded,
        ShutdownError,
        PoolStarved,
        InternalError,
    )
}
assert tuple(_BY_STATUS) == STATUSES


def from_status(status: str, what: str) -> DamacyError:
    """The typed error for `status` (an unknown status gives a plain DamacyError)."""
    cls = _BY_STATUS.get(str(Status.of(status)))
    return cls(what) if cls is not None else DamacyError(status, what)
