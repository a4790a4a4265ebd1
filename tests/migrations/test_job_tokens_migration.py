"""Revision 0011 on a database with jobs and their usage: the count is added empty, refused
when negative, and taken away again with the jobs and usage intact."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from app.core import migrate
from app.models import Cluster, HourlyUsage, Job
from tests.migrations.test_migrations import scratch_engine  # noqa: F401 (fixture)

T = datetime(2025, 1, 6, 10, tzinfo=UTC)


def store_job_with_usage(engine: Engine) -> None:
    """A job and an hour of its usage, as 0010 stores them (no tokens column yet)."""
    with engine.begin() as conn:
        cluster = conn.execute(
            insert(Cluster).values(name="hf-h800", created_at=T).returning(Cluster.id)
        ).scalar_one()
        job = conn.execute(
            insert(Job)
            .values(
                cluster_id=cluster,
                scheduler_job_id="91234",
                model="deepseek-v3",
                labels={},
                created_at=T,
                updated_at=T,
            )
            .returning(Job.id)
        ).scalar_one()
        conn.execute(
            insert(HourlyUsage).values(
                cluster_id=cluster,
                job_id=job,
                gpu_model="NVIDIA H800",
                hour=T,
                gpu_us=3_600_000_000,
                busy_us=0,
                energy_mj=0,
            )
        )


def job_columns(engine: Engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("jobs")}


def test_tokens_column_upgrades_and_downgrades_with_jobs_in_place(
    scratch_engine: Engine,  # noqa: F811
) -> None:
    migrate.upgrade(scratch_engine, "0010")
    store_job_with_usage(scratch_engine)

    migrate.upgrade(scratch_engine, "0011")

    assert "tokens" in job_columns(scratch_engine)
    with scratch_engine.begin() as conn:
        assert conn.execute(select(Job.scheduler_job_id, Job.tokens)).all() == [("91234", None)]
        conn.execute(text("UPDATE jobs SET tokens = 14800000000000"))
    with (
        pytest.raises(IntegrityError, match="ck_jobs_tokens_non_negative"),
        scratch_engine.begin() as conn,
    ):
        conn.execute(text("UPDATE jobs SET tokens = -1"))

    migrate.downgrade(scratch_engine, "0010")

    assert "tokens" not in job_columns(scratch_engine)
    with scratch_engine.connect() as conn:
        assert conn.execute(text("SELECT scheduler_job_id FROM jobs")).scalars().all() == ["91234"]
        assert conn.execute(text("SELECT gpu_us FROM usage_hourly")).scalars().all() == [
            3_600_000_000
        ]
    migrate.upgrade(scratch_engine)
    assert migrate.current_revision(scratch_engine) == migrate.head_revision()
    with scratch_engine.connect() as conn:
        assert conn.execute(select(Job.tokens)).scalars().all() == [None]
