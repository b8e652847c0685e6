"""The native library's log records on `logging.getLogger("damacy")`.

The C++ library keeps its records (level, message) in a bounded buffer instead of writing to
stderr (cpp/include/damacy/log.h). `drain()` takes them and emits each on the "damacy" logger;
python/damacy/_ops.py calls it after every damacy op call (except the per-sample push), so a
record appears right after the call that made it. Nothing goes to stderr by default: the
logger has a NullHandler (as the logging HOWTO asks of libraries), so records reach only the
handlers the application configures (`logging.basicConfig()` shows them); the level knob is
`damacy.set_log_level` (or the logger's own level). The take is skipped when the native
count of kept records (a tensor viewing it, read without an op call) is 0.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LOGGER_NAME", "logger", "drain", "emit", "set_log_level"]

LOGGER_NAME = "damacy"
logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())


def emit(levels: list[int], messages: list[str]) -> None:
    for level, message in zip(levels, messages):
        logger.log(int(level), "%s", message)


#: The native count of kept records, viewed without a copy (the `log_records_waiting` op's
#: one-element tensor; set by `drain` on its first call): reading it is no op call, so a
#: call that logged nothing costs one `.item()` here instead of a take.
_waiting: Any = None


def drain(ops: Any) -> None:
    """Takes the native records (`ops` is torch.ops.damacy) and emits them; takes nothing when
    the native count says there is none."""
    global _waiting
    waiting = _waiting
    if waiting is None:
        waiting = _waiting = ops.log_records_waiting()
    if not waiting.item():
        return
    levels, messages = ops.take_log_records()
    if levels:
        emit(levels, messages)


#: The original nclack/damacy's LOG_TRACE..LOG_FATAL (0..5) as logging levels.
ORIGINAL_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR, 5: logging.CRITICAL}


def set_log_level(level: int | str) -> None:
    """The level of damacy's log, native records included: a logging level
    (`logging.DEBUG`..`logging.CRITICAL`, 10..50) or its name ("WARNING"), or one of the
    original damacy's `LOG_TRACE`..`LOG_FATAL` (0..5). Records below it are not even kept by
    the native library."""
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            raise ValueError(f"damacy.set_log_level: unknown level {level!r}")
        level = named
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"damacy.set_log_level: expected an int or a level name, got {level!r}")
    if level in ORIGINAL_LEVELS:
        level = ORIGINAL_LEVELS[level]
    elif level < logging.DEBUG or level > logging.CRITICAL:
        raise ValueError(f"damacy.set_log_level: level must be a LOG_* constant (0..5) or a logging level (10..50), got {level}")
    logger.setLevel(level)
    from . import _ops

    _ops.ops().set_log_level(int(level))
