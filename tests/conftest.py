"""Session fixtures: the fixture arrays (tests/fixtures.py), written once per session into a
temporary directory by zarr-python, and their oracles.

Tests that need damacy import it at module level (`import damacy`): while the library does
not import, those modules fail at collection, loudly, instead of skipping. The fixture and
oracle checks (test_fixtures.py) need no damacy: `pytest tests/test_fixtures.py`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fixtures as F  # noqa: E402


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("damacy-fixtures")


@pytest.fixture(scope="session")
def fixture_arrays(fixture_root) -> dict[str, Path]:
    """name -> directory of every fixture in fixtures.FIXTURES."""
    t0 = time.perf_counter()
    paths = F.write_all_fixtures(fixture_root)
    sys.stderr.write(f"\n[fixtures] wrote {len(paths)} arrays in {time.perf_counter() - t0:.2f}s\n")
    return paths


@pytest.fixture(scope="session")
def oracles(fixture_arrays):
    """oracles(name) -> fixtures.OracleArray, read once per session."""
    cache: dict[str, F.OracleArray] = {}

    def get(name: str) -> F.OracleArray:
        if name not in cache:
            cache[name] = F.OracleArray(fixture_arrays[name])
        return cache[name]

    return get


@pytest.fixture(scope="session")
def error_arrays(tmp_path_factory) -> dict[str, Path]:
    """The broken and odd arrays of test_errors.py (fixtures.write_error_fixtures)."""
    root = tmp_path_factory.mktemp("damacy-error-fixtures")
    return F.write_error_fixtures(root)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
