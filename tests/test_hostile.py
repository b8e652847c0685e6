"""The hostile-input suite under pytest: one test per case of tests/hostile/cases.py.

Every case runs in its own child process (forked from a per-worker server that set
RLIMIT_AS before importing torch), under a wall-clock timeout; the child then reads a good
array and checks its values, and reports its peak RSS (bound: baseline after the imports +
the budgets of the pipelines it made + tests/hostile/common.RSS_SLACK). The cases selected
in this session run once, two children at a time (no pytest-xdist), in a session fixture;
each test asserts its case's verdict. Cases marked xfail strict are real library bugs
(listed in the reason); non-strict ones are behaviour being fixed on main.

The summary table, and the GPU variant: ``python -m tests.hostile [--device cuda]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "hostile"))

import common as H  # noqa: E402
import harness  # noqa: E402

JOBS = int(os.environ.get("DAMACY_HOSTILE_JOBS", "2"))


def _param(name: str):
    c = H.CASES[name]
    marks = [pytest.mark.xfail(strict=c.strict, reason=c.xfail)] if c.xfail else []
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(scope="session")
def hostile_verdicts(request, tmp_path_factory):
    names = [item.callspec.params["case"] for item in request.session.items
             if item.originalname == "test_hostile_case" and hasattr(item, "callspec")]
    work = tmp_path_factory.mktemp("hostile")
    verdicts = harness.run_many(names, device="cpu", jobs=JOBS, work=work)
    return {v.case: v for v in verdicts}


@pytest.mark.parametrize("case", [_param(n) for n in harness.cases_for("cpu")])
def test_hostile_case(case, hostile_verdicts):
    v = hostile_verdicts[case]
    c = H.CASES[case]
    assert v.ok, f"{case} ({c.group}: {c.doc}): {v.verdict}: {v.detail}"
    want = "typed" if c.expect == "error" else "values"
    assert v.verdict == want, f"{case}: expected {want}, got {v.verdict}"
    assert v.peak_rss <= v.bound, f"{case}: peak RSS {v.peak_rss >> 20} MiB over the bound {v.bound >> 20} MiB"


def test_suite_is_large_and_covers_every_class():
    groups = {c.group.split()[0] for c in H.CASES.values()}
    assert {str(i) for i in range(1, 13)} <= groups, sorted(groups)
    assert len(H.CASES) >= 60


def test_the_harness_reports_each_kind_of_failure(tmp_path):
    """The self-test cases (common.SELFTESTS) come back as the verdict their names say."""
    names = list(H.SELFTESTS)
    verdicts = harness.run_many(names, device="cpu", jobs=JOBS, work=tmp_path)
    got = {v.case: v.verdict for v in verdicts}
    assert got == {n: n.removeprefix("selftest_") for n in names}, got
