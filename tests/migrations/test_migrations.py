"""Migrations: a full round trip on both backends, and a schema that matches the models."""

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, insert, inspect, make_url, select, text

from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.core.partitions import MONTHS_AHEAD, include_object, is_partition
from app.models import USAGE, Base
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


RAW_START = datetime(2025, 1, 6, 10, tzinfo=UTC)


def raw_row(n: int) -> dict[str, object]:
    """Raw usage of report `n` (idle for 2)."""
    return {
        "report_id": n,
        "gpu_id": n,
        "job_id": None if n == 2 else 7,
        "period_start": RAW_START,
        "gpu_us": 60_000_000 + n,
        "busy_us": n,
        "util_pct": 1.5 * n,
        "energy_mj": 7 * n,
        "mem_peak_bytes": n,
    }


def raw_usage(engine: Engine) -> list[tuple[object, ...]]:
    """Every raw row, each column but `id`."""
    with engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(select(*USAGE.c)))


def usage_schema(engine: Engine) -> tuple[object, ...]:
    """Raw usage's columns (by name: PostgreSQL adds a column back last), key and indexes."""
    found = inspect(engine)
    columns = {
        c["name"]: (str(c["type"]), c["nullable"], c["default"]) for c in found.get_columns("usage")
    }
    indexes = sorted(
        (i["name"], i["column_names"], i["unique"], i.get("dialect_options"))
        for i in found.get_indexes("usage")
    )
    return columns, found.get_pk_constraint("usage"), indexes


def test_raw_usage_rows_survive_dropping_the_id_and_get_ids_back(scratch_engine: Engine) -> None:
    migrate.upgrade(scratch_engine, "0015")
    as_it_was = usage_schema(scratch_engine)
    with scratch_engine.begin() as conn:
        conn.execute(insert(USAGE), [raw_row(n) for n in (1, 2, 3)])
    stored = raw_usage(scratch_engine)
    assert len(stored) == 3

    migrate.upgrade(scratch_engine, "0016")
    assert "id" not in {c["name"] for c in inspect(scratch_engine).get_columns("usage")}
    assert not inspect(scratch_engine).get_pk_constraint("usage")["constrained_columns"]
    assert raw_usage(scratch_engine) == stored
    if scratch_engine.dialect.name == "postgresql":
        with scratch_engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('usage_id_seq')")).scalar() is None

    migrate.downgrade(scratch_engine, "0015")
    assert usage_schema(scratch_engine) == as_it_was
    assert raw_usage(scratch_engine) == stored
    with scratch_engine.begin() as conn:
        if scratch_engine.dialect.name == "postgresql":
            owned = conn.execute(text("SELECT pg_get_serial_sequence('usage', 'id')")).scalar()
            assert owned == "public.usage_id_seq"
        conn.execute(insert(USAGE), [raw_row(4)])
        ids = conn.execute(text("SELECT id FROM usage ORDER BY id")).scalars().all()
    assert ids == [1, 2, 3, 4]


def test_each_migration_file_is_named_with_its_revision_and_new_ones_follow(
    tmp_path: Path,
) -> None:
    # Comments say "migration 0007": the id is in the file name, after the date, as Alembic's
    # file_template writes it for a new revision.
    config = migrate.alembic_config(create_engine(f"sqlite:///{tmp_path / 'template.db'}"))
    for script in ScriptDirectory.from_config(config).walk_revisions():
        name = Path(str(script.path)).name
        assert re.fullmatch(rf"\d{{4}}_\d\d_\d\d_\d{{4}}-{script.revision}-[a-z0-9_]+\.py", name)

    scripts = tmp_path / "scripts"
    shutil.copytree(migrate.SCRIPT_LOCATION, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    config.set_main_option("script_location", str(scripts))
    command.revision(config, message="a new table", rev_id="0099", head="heads")

    (new,) = {p.name for p in (scripts / "versions").glob("*.py")} - {
        p.name for p in (migrate.SCRIPT_LOCATION / "versions").glob("*.py")
    }
    assert re.fullmatch(r"\d{4}_\d\d_\d\d_\d{4}-0099-a_new_table\.py", new)
