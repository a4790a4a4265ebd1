"""Collector fixtures: the scenario harness, and a real gpucost server on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.collectors.helpers import Harness
from tests.support import skip_or_fail


@pytest.fixture
def harness(tmp_path: Path):
    def make(scenario: dict[str, Any], **config: Any) -> Harness:
        return Harness(tmp_path, scenario, **config)

    return make


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory):
    """A real `gpucost serve` on a fresh PostgreSQL database, for the whole session."""

    import psycopg

    from tests.collectors.service import PG_ADMIN, Service

    try:
        psycopg.connect(PG_ADMIN, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        skip_or_fail(f"PostgreSQL unreachable at {PG_ADMIN}: {str(error).splitlines()[0]}")
    server = Service(tmp_path_factory.mktemp("service"))
    yield server
    server.close()
