"""Day and month levels of the usage rollup, and its model level (app.totals), filled from
the hourly level.

`usage_daily` and `usage_monthly` hold the hourly rollup's sums per UTC day and per UTC
month, keyed as it is (a job's rows, or a cluster's idle capacity, per GPU model);
`usage_model_hourly` its GPU-time per job model and phase ('' for none), cluster and hour.
Ingest adds to every level in one transaction from here on; this revision sums the hours
already stored.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEVELS = {"usage_daily": "day", "usage_monthly": "month"}
# Where each level's period starts, from an hour: PostgreSQL truncates in UTC; SQLite keeps
# UTC timestamps as text ('2025-01-06 13:00:00.000000').
STARTS = {
    "postgresql": {
        "day": "date_trunc('day', hour, 'UTC')",
        "month": "date_trunc('month', hour, 'UTC')",
    },
    "sqlite": {
        "day": "substr(hour, 1, 10) || ' 00:00:00.000000'",
        "month": "substr(hour, 1, 7) || '-01 00:00:00.000000'",
    },
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table, unit in LEVELS.items():
        op.create_table(
            table,
            sa.Column(unit, sa.DateTime(timezone=True), nullable=False),
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("cluster_id", sa.Integer(), nullable=False),
            sa.Column("job_id", sa.Integer(), nullable=True),
            sa.Column("gpu_model", sa.String(length=128), nullable=False),
            sa.Column("gpu_us", sa.BigInteger(), nullable=False),
            sa.Column("busy_us", sa.BigInteger(), nullable=False),
            sa.Column("energy_mj", sa.BigInteger(), nullable=False),
            sa.ForeignKeyConstraint(
                ["cluster_id"], ["clusters.id"], name=op.f(f"fk_{table}_cluster_id_clusters")
            ),
            sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f(f"fk_{table}_job_id_jobs")),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        )
        op.create_index(op.f(f"ix_{table}_{unit}"), table, [unit], unique=False)
        op.create_index(
            f"uq_{table}_idle_{unit}",
            table,
            ["cluster_id", "gpu_model", unit],
            unique=True,
            postgresql_where=sa.text("job_id IS NULL"),
            sqlite_where=sa.text("job_id IS NULL"),
        )
        op.create_index(
            f"uq_{table}_job_{unit}",
            table,
            ["job_id", "gpu_model", unit],
            unique=True,
            postgresql_include=["cluster_id", "gpu_us", "busy_us", "energy_mj"],
            postgresql_where=sa.text("job_id IS NOT NULL"),
            sqlite_where=sa.text("job_id IS NOT NULL"),
        )
        start = STARTS[dialect][unit]
        op.execute(
            f"INSERT INTO {table} (cluster_id, job_id, gpu_model, {unit}, gpu_us, busy_us,"
            f" energy_mj) SELECT cluster_id, job_id, gpu_model, {start}, sum(gpu_us),"
            f" sum(busy_us), sum(energy_mj) FROM usage_hourly"
            f" GROUP BY cluster_id, job_id, gpu_model, {start}"
        )

    op.create_table(
        "usage_model_hourly",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("phase", sa.String(length=64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gpu_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_usage_model_hourly_cluster_id_clusters"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_model_hourly")),
    )
    op.create_index(
        "uq_usage_model_hourly_model_phase_cluster_id_hour",
        "usage_model_hourly",
        ["model", "phase", "cluster_id", "hour"],
        unique=True,
        postgresql_include=["gpu_us"],
    )
    op.execute(
        "INSERT INTO usage_model_hourly (cluster_id, model, phase, hour, gpu_us)"
        " SELECT u.cluster_id, coalesce(j.model, ''), coalesce(j.phase, ''), u.hour,"
        " sum(u.gpu_us) FROM usage_hourly u JOIN jobs j ON j.id = u.job_id"
        " GROUP BY u.cluster_id, coalesce(j.model, ''), coalesce(j.phase, ''), u.hour"
    )


def downgrade() -> None:
    op.drop_table("usage_model_hourly")
    for table in LEVELS:
        op.drop_table(table)
