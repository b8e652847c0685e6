"""damacy's enums: `Status`, `Dtype`, `NumaStrategy` (the original nclack/damacy's names and
values; dev/compat.md).

`Status` is also this project's status token: its members are named after the tokens
("InvalidArgument", ...), the original's names (`Status.INVAL`, ...) are aliases of the same
members, and a member compares equal to its token string, so ``err.status == "NotFound"``
and ``err.status is Status.NOTFOUND`` both hold.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

__all__ = ["Status", "Dtype", "NumaStrategy"]


class Status(IntEnum):
    """A damacy status: the original's ``enum damacy_status`` values (OK=0 ... SHUTDOWN=11),
    then this project's PoolStarved and Internal.

    ```pycon
    >>> Status.INVAL is Status.InvalidArgument
    True
    >>> Status.NOTFOUND == "NotFound", int(Status.NOTFOUND)
    (True, 3)

    ```
    """

    OK = 0
    TryAgain = 1
    InvalidArgument = 2
    NotFound = 3
    DtypeMismatch = 4
    RankMismatch = 5
    Storage = 6
    Decode = 7
    Cuda = 8
    OutOfMemory = 9
    BudgetExceeded = 10
    Shutdown = 11
    PoolStarved = 12
    Internal = 13
    # The original's names (aliases: the same members).
    AGAIN = 1
    INVAL = 2
    NOTFOUND = 3
    DTYPE = 4
    RANK = 5
    IO = 6
    DECODE = 7
    CUDA = 8
    OOM = 9
    BUDGET = 10
    SHUTDOWN = 11

    @classmethod
    def of(cls, value: Any) -> Status | Any:
        """The member for a token string, an int or a member; anything else is returned as
        it is (an unknown token stays a string)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            member = cls.__members__.get(value)
            return member if member is not None else value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                return value
        return value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.name == other
        return int.__eq__(self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = int.__hash__

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


class Dtype(IntEnum):
    """The original's destination dtype enum (F32, BF16). This project also has integer
    outputs ("u8", "i32", "i64"), which have no member here: a Config made with them reads
    its dtype back as the string.

    ```pycon
    >>> Dtype.coerce("f32") is Dtype.F32
    True
    >>> Dtype.coerce("BFloat16") is Dtype.BF16
    True
    >>> Dtype.coerce(Dtype.F32) is Dtype.F32
    True
    >>> Dtype.coerce("nope")
    Traceback (most recent call last):
        ...
    ValueError: unknown dtype: 'nope'

    ```
    """

    F32 = 0
    BF16 = 1

    @classmethod
    def coerce(cls, value: str | int | Dtype) -> Dtype:
        """Accept enum / int / one of {"f32", "float32", "bf16", "bfloat16"} (any case), or a
        torch dtype float32/bfloat16."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        s = str(value).lower().removeprefix("torch.")
        if s in ("f32", "float32"):
            return cls.F32
        if s in ("bf16", "bfloat16"):
            return cls.BF16
        raise ValueError(f"unknown dtype: {value!r}")

    @property
    def native(self) -> str:
        """This project's name for the dtype ("f32" / "bf16")."""
        return "f32" if self is Dtype.F32 else "bf16"


class NumaStrategy(IntEnum):
    """How the original pinned host slabs and threads to a NUMA node. Accepted and validated
    as there; this project does not pin (dev/compat.md), so all three behave as DISABLED.

    ```pycon
    >>> NumaStrategy.coerce("auto") is NumaStrategy.AUTO
    True
    >>> NumaStrategy.coerce("pin_to") is NumaStrategy.PIN_TO
    True
    >>> NumaStrategy.coerce(NumaStrategy.DISABLED) is NumaStrategy.DISABLED
    True
    >>> NumaStrategy.coerce("nope")
    Traceback (most recent call last):
        ...
    ValueError: unknown numa strategy: 'nope'

    ```
    """

    AUTO = 0
    DISABLED = 1
    PIN_TO = 2

    @classmethod
    def coerce(cls, value: str | int | NumaStrategy) -> NumaStrategy:
        """Accept enum / int / one of ``"auto"`` / ``"disabled"`` / ``"pin_to"``."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        s = str(value).lower().replace("-", "_")
        if s == "auto":
            return cls.AUTO
        if s == "disabled":
            return cls.DISABLED
        if s == "pin_to":
            return cls.PIN_TO
        raise ValueError(f"unknown numa strategy: {value!r}")
