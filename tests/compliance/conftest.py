"""One simulated month for all compliance tests (it takes ~15 s on 2 cores), and the
session's PostgreSQL server (shared with tests/shore)."""

from __future__ import annotations

import pytest

from tests.compliance.month import Month, simulate
from tests.shore.test_store import postgres  # noqa: F401  (the session's PostgreSQL server)


@pytest.fixture(scope="session")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return simulate(tmp_path_factory.mktemp("month"))
