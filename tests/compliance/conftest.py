"""One simulated month for all compliance tests (it takes ~15 s on 2 cores)."""

from __future__ import annotations

import pytest

from tests.compliance.month import Month, simulate


@pytest.fixture(scope="session")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return simulate(tmp_path_factory.mktemp("month"))
