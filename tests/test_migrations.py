"""Migrations: a full round trip on both backends, and a schema that matches the models."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, make_url

from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.core.partitions import MONTHS_AHEAD, include_object, is_partition
from app.models import Base
from tests.conftest import POSTGRES_URL, postgres_or_skip, postgres_url
from tests.support import drop_all_postgres

TABLES = {
    "api_tokens",
    "audit_log",
    "budgets",
    "clusters",
    "energy_rates",
    "gpu_occupancy",
    "gpu_placements",
    "gpus",
    "jobs",
    "nodes",
    "period_lines",
    "periods",
    "prune_marks",
    "rates",
    "reports",
    "scenario_prices",
    "scenarios",
    "usage",
    "usage_daily",
    "usage_gpu_hourly",
    "usage_hourly",
    "usage_model_hourly",
    "usage_monthly",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def scratch_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of its own, apart from the one the other tests share."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        url = postgres_url(POSTGRES_URL, "_migrations")
        postgres_or_skip(url)
        drop_all_postgres(url)
    engine = create_db_engine(Settings(database_url=url))
    yield engine
    engine.dispose()


def tables(engine: Engine) -> set[str]:
    return {name for name in all_tables(engine) if not is_partition(name)}


def partitions(engine: Engine) -> set[str]:
    return {name for name in all_tables(engine) if is_partition(name)}


def all_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade_round_trip(scratch_engine: Engine) -> None:
    migrate.upgrade(scratch_engine)
    assert tables(scratch_engine) == TABLES
    assert migrate.current_revision(scratch_engine) == migrate.head_revision()

    if scratch_engine.dialect.name == "postgresql":
        this_month = datetime.now(UTC).strftime("usage_p%Y_%m")
        assert {"usage_default", this_month} <= partitions(scratch_engine)
        assert len(partitions(scratch_engine)) == 2 + MONTHS_AHEAD
    else:
        assert partitions(scratch_engine) == set()

    migrate.downgrade(scratch_engine, "base")
    assert all_tables(scratch_engine) == set()
    assert migrate.current_revision(scratch_engine) is None

    migrate.upgrade(scratch_engine)
    assert tables(scratch_engine) == TABLES


def test_migrated_schema_matches_the_models(scratch_engine: Engine) -> None:
    migrate.upgrade(scratch_engine)

    with scratch_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_a_url_with_escapes_migrates() -> None:
    """A password of `p@ss%` is `p%40ss%25` in a URL; Alembic's configuration once read each
    `%` as the start of an interpolation and refused it (here in a query parameter, so that
    the test keeps whatever password its URL has)."""
    url = make_url(postgres_url(POSTGRES_URL, "_migrations")).update_query_dict(
        {"application_name": "gpucost@100%"}
    )
    text = url.render_as_string(hide_password=False)
    assert "%40100%25" in text
    postgres_or_skip(text)
    drop_all_postgres(text)
    engine = create_db_engine(Settings(database_url=text))
    try:
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()
