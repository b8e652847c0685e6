"""Ported from nclack/damacy python/tests/test_doctests.py (issue 14 here).

The original ran `doctest.testmod(damacy)` over its own docstrings. Those examples are copied
verbatim into original_doctests.txt and run here against this damacy (port), plus the
doctests of damacy.enums (the same examples for Dtype and NumaStrategy, and Status).

One port: an expected ``TypeError: msg`` / ``ValueError: msg`` line also matches one of
damacy's own errors that *is* that builtin (e.g. `damacy.InvalidArgument`, a ValueError), with
the same message: doctest compares the class name as text, the original's contract is the
type and the message.
"""

from __future__ import annotations

import builtins
import doctest
import importlib
import re
from pathlib import Path

import damacy
import damacy.enums

_EXC = re.compile(r"^([\w.]+): (.*)$", re.S)


class _Checker(doctest.OutputChecker):
    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        if super().check_output(want, got, optionflags):
            return True
        w, g = _EXC.match(want.strip()), _EXC.match(got.strip())
        if not (w and g) or w.group(2) != g.group(2):
            return False
        builtin = getattr(builtins, w.group(1), None)
        module, _, name = g.group(1).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name) if module else getattr(builtins, name)
        except (ImportError, AttributeError):
            return False
        return isinstance(builtin, type) and isinstance(cls, type) and issubclass(cls, builtin)


def _run(test: doctest.DocTest) -> doctest.TestResults:
    runner = doctest.DocTestRunner(checker=_Checker(), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    return runner.summarize(verbose=False)


def test_original_doctests_pass_against_this_damacy():
    path = Path(__file__).with_name("original_doctests.txt")
    globs = {"Config": damacy.Config, "Sample": damacy.Sample, "Dtype": damacy.Dtype,
             "NumaStrategy": damacy.NumaStrategy}
    test = doctest.DocTestParser().get_doctest(path.read_text(), globs, "original_doctests", str(path), 0)
    results = _run(test)
    assert results.failed == 0, f"{results.failed} of {results.attempted} doctest(s) failed"
    assert results.attempted >= 20  # the file's examples all ran


def test_damacy_doctests():
    # The original's test, over the modules holding the original's pure-Python examples.
    results = doctest.testmod(damacy.enums, verbose=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert results.failed == 0, f"{results.failed} of {results.attempted} doctest(s) failed in damacy.enums"
    assert results.attempted > 0


def test_checker_still_rejects_the_wrong_type_or_message():
    c = _Checker()
    assert c.check_output("ValueError: boom\n", "damacy.errors.InvalidArgument: boom\n", 0)
    assert not c.check_output("TypeError: boom\n", "damacy.errors.InvalidArgument: boom\n", 0)
    assert not c.check_output("ValueError: boom\n", "damacy.errors.InvalidArgument: bang\n", 0)
    assert c.check_output("TypeError: boom\n", "damacy.sample.AabbTypeError: boom\n", 0)
