"""Native log records on logging.getLogger("damacy") (never stderr), the level knob, torch's
device errors as damacy.CudaError / OutOfMemory, and the import-time version check (issue 13).

No GPU needed: the native warning used is the decode="auto" fallback, which a pipeline on
"cuda:0" logs whenever this build cannot decode there (a CPU build, or no nvCOMP). Where it
can (nvCOMP loaded), the logging tests run again in a subprocess with nvCOMP made
unavailable (DAMACY_NVCOMP_LIBRARY naming no file), so they run everywhere.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import damacy
from damacy import _log, _ops, _supported

FALLBACK = 'decoding on the CPU (decode="auto")'


def _falls_back() -> bool:
    """What the native side decides (cpp/src/pipeline.cpp resolve_decode): no CUDA build or
    no nvCOMP -> decode="auto" on cuda:0 decodes on the CPU, with one warning."""
    info = damacy.gpu_info()
    return not info["cuda_built"] or bool(info["why"])


needs_fallback = pytest.mark.skipif(not _falls_back(), reason="nvCOMP loaded: run by test_logging_without_nvcomp")
LOGGING_TESTS = ("test_native_warning_reaches_the_damacy_logger_not_stderr",
                 "test_nothing_on_stderr_without_logging_configured",
                 "test_set_log_level_filters_native_records",
                 "test_records_are_taken_only_when_the_native_count_says_so")


def test_logging_without_nvcomp():
    if _falls_back():
        pytest.skip("the logging tests ran in this process")
    env = dict(os.environ, DAMACY_NVCOMP_LIBRARY="/nonexistent/libnvcomp.so.6")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        *(f"{__file__}::{t}" for t in LOGGING_TESTS)], env=env, capture_output=True,
                       text=True, timeout=600, cwd=Path(__file__).parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(LOGGING_TESTS)} passed" in r.stdout, r.stdout


def _cfg(**kw) -> damacy.Config:
    return damacy.Config(samples_per_batch=2, sample_shape=(4, 4, 4), device="cuda:0", decode="auto", **kw)


@pytest.fixture(autouse=True)
def _level():
    _ops.load()
    _log.drain(torch.ops.damacy)  # nothing left over from other tests
    yield
    damacy.set_log_level(logging.INFO)
    logging.getLogger("damacy").setLevel(logging.NOTSET)


@needs_fallback
def test_native_warning_reaches_the_damacy_logger_not_stderr(caplog, capfd):
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="damacy"):
        with damacy.Pipeline(_cfg()):
            pass
    records = [r for r in caplog.records if r.name == "damacy"]
    assert [r.levelno for r in records] == [logging.WARNING], caplog.text
    assert FALLBACK in records[0].getMessage()
    out, err = capfd.readouterr()
    assert FALLBACK not in err and FALLBACK not in out, (out, err)


@needs_fallback
def test_nothing_on_stderr_without_logging_configured(capfd):
    # No handler anywhere (pytest's caplog handler is on the root: take it off for this).
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        capfd.readouterr()
        with damacy.Pipeline(_cfg()):
            pass
        out, err = capfd.readouterr()
    finally:
        root.handlers[:] = saved
    assert err == "" and out == "", (out, err)


@needs_fallback
def test_set_log_level_filters_native_records(caplog):
    damacy.set_log_level("ERROR")
    with caplog.at_level(logging.DEBUG, logger="damacy"):
        logging.getLogger("damacy").setLevel(logging.DEBUG)  # the native side stays at ERROR
        with damacy.Pipeline(_cfg()):
            pass
    assert not [r for r in caplog.records if FALLBACK in r.getMessage()]
    damacy.set_log_level(logging.WARNING)
    with caplog.at_level(logging.WARNING, logger="damacy"):
        with damacy.Pipeline(_cfg()):
            pass
    assert [r for r in caplog.records if FALLBACK in r.getMessage()]


def test_set_log_level_rejects_unknown_levels():
    with pytest.raises(ValueError, match="unknown level"):
        damacy.set_log_level("LOUD")
    with pytest.raises(TypeError):
        damacy.set_log_level(1.5)  # type: ignore[arg-type]


def test_emit_maps_native_levels():
    logger = logging.getLogger("damacy")
    seen = []

    class H(logging.Handler):
        def emit(self, record):
            seen.append((record.levelno, record.getMessage()))

    h = H()
    logger.addHandler(h)
    logger.setLevel(logging.DEBUG)
    try:
        _log.emit([10, 20, 30, 40], ["d", "i", "w", "e"])
    finally:
        logger.removeHandler(h)
    assert seen == [(10, "d"), (20, "i"), (30, "w"), (40, "e")]


# --- torch device errors --------------------------------------------------------------------

def _raise(exc):
    def fn(*_args):
        raise exc

    fn.__name__ = "pop"
    return fn


def test_accelerator_error_becomes_cuda_error_with_cause():
    cause = torch.AcceleratorError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be ...")
    with pytest.raises(damacy.CudaError) as info:
        _ops.call(_raise(cause))
    e = info.value
    assert isinstance(e, damacy.DamacyError) and e.status == "Cuda"
    assert str(e) == "pop: CUDA error: an illegal memory access was encountered"
    assert e.__cause__ is cause
    assert pickle.loads(pickle.dumps(e)) == e


def test_torch_out_of_memory_becomes_out_of_memory():
    cause = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(damacy.OutOfMemory) as info:
        _ops.call(_raise(cause))
    assert "pop: CUDA out of memory" in str(info.value)
    assert info.value.__cause__ is cause


def test_native_cuda_token_is_cuda_error_and_other_errors_pass():
    with pytest.raises(damacy.CudaError, match="^launching a batch on cuda:0: CUDA error: x"):
        _ops.call(_raise(RuntimeError("[Cuda] launching a batch on cuda:0: CUDA error: x (CUDA error 700)\nmore")))
    plain = RuntimeError("not damacy")
    with pytest.raises(RuntimeError) as info:
        _ops.call(_raise(plain))
    assert info.value is plain


def test_op_names_name_what_failed():
    assert _ops._op_name(torch.ops.damacy.array_info) == "array_info"


# --- import-time version check --------------------------------------------------------------

def test_build_info_names_this_torch():
    info = _supported.build_info(_ops.library_path())
    assert info, "damacy_build_info.json missing next to the library"
    assert info["torch_version"] == torch.__version__
    assert info["build"] == ("cuda" if damacy.gpu_info()["cuda_built"] else "cpu")


def test_version_check_messages():
    _supported.check("2.11.0+cu130", {"torch_version": "2.11.0+cu130"})
    with pytest.raises(ImportError, match=r"built against torch 2\.11\.0, but this Python has torch 2\.12\.1"):
        _supported.check("2.12.1", {"torch_version": "2.11.0"})
    with pytest.raises(ImportError, match=r"supports torch 2\.11"):
        _supported.check("2.10.0", {})
    with pytest.raises(ImportError, match=r"needs Python >= 3\.10"):
        _supported.check("2.11.0", {}, python=(3, 9))


@pytest.mark.skipif(not (damacy.gpu_info()["cuda_built"] and damacy.gpu_info()["nvcomp_available"]
                         and not torch.cuda.is_available()),
                    reason="needs the CUDA build with nvCOMP on a machine without a usable GPU")
def test_device_runner_without_a_gpu_is_cuda_error():
    """The CUDA build on a machine without a usable driver/GPU (this dev VM): the device
    runner's first torch CUDA call fails; it was a raw torch.AcceleratorError."""
    with pytest.raises(damacy.CudaError, match=r"^starting the device runner on cuda:0: ") as info:
        damacy.Pipeline(_cfg())
    assert not isinstance(info.value, torch.AcceleratorError)


@needs_fallback
def test_records_are_taken_only_when_the_native_count_says_so(caplog):
    """_log.drain reads the native count of kept records through a tensor viewing it, and
    calls take_log_records only when it is not 0 (a call that logged nothing costs no take)."""
    takes = []

    class Ops:
        log_records_waiting = torch.ops.damacy.log_records_waiting

        def take_log_records(self):
            takes.append(1)
            return torch.ops.damacy.take_log_records()

    count = torch.ops.damacy.log_records_waiting()
    assert count.dtype == torch.int64 and count.item() == 0
    _log.drain(Ops())
    assert takes == []
    native = torch.classes.damacy.Pipeline(_cfg().to_json())  # logs the fallback; no drain
    assert count.item() == 1
    with caplog.at_level(logging.INFO, logger="damacy"):
        _log.drain(Ops())
    assert takes == [1] and count.item() == 0
    assert [r for r in caplog.records if FALLBACK in r.getMessage()]
    native.close()
