"""One simulated month for all compliance tests (it takes ~15 s on 2 cores), and the
session's PostgreSQL server (shared with tests/shore)."""

from __future__ import annotations

import pytest

from tests.compliance.month import Month, simulate
from tests.shore.store_fixtures import PostgresServer
from tests.shore.test_store import postgres  # noqa: F401  (the session's PostgreSQL server)


@pytest.fixture(scope="session")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return simulate(tmp_path_factory.mktemp("month"))


@pytest.fixture(scope="session")
def month_pg(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Month:  # noqa: F811
    """The same month with the shore store on PostgreSQL (slow: ~40 s on 2 cores)."""
    return simulate(tmp_path_factory.mktemp("month-pg"), postgres.create_database())


@pytest.fixture(scope="session")
def week_pg(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Month:  # noqa: F811
    """The month's first week (traffic on 6 days) with the shore store on PostgreSQL."""
    return simulate(tmp_path_factory.mktemp("week-pg"), postgres.create_database(), days=6)
