"""Partition raw usage by month on PostgreSQL, so that retention drops whole months.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 14:30:00

Existing rows go to the default partition; `gpucost db upgrade` then creates the monthly
partitions (see app/core/partitions.py) and moves them in. SQLite is left as it is.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = """
    id BIGINT NOT NULL DEFAULT nextval('usage_id_seq'),
    report_id BIGINT NOT NULL,
    gpu_id INTEGER NOT NULL,
    job_id INTEGER,
    period_start TIMESTAMP WITH TIME ZONE NOT NULL,
    gpu_us BIGINT NOT NULL,
    busy_us BIGINT NOT NULL,
    util_pct DOUBLE PRECISION NOT NULL,
    energy_mj BIGINT NOT NULL,
    mem_peak_bytes BIGINT NOT NULL,
    CONSTRAINT fk_usage_report_id_reports FOREIGN KEY (report_id)
        REFERENCES reports (id) ON DELETE CASCADE,
    CONSTRAINT fk_usage_gpu_id_gpus FOREIGN KEY (gpu_id) REFERENCES gpus (id),
    CONSTRAINT fk_usage_job_id_jobs FOREIGN KEY (job_id) REFERENCES jobs (id)
"""
INDEXES = ("report_id", "job_id", "period_start")
# The columns above, by which rows are copied: 0016's downgrade adds `id` back last.
NAMES = (
    "id, report_id, gpu_id, job_id, period_start, gpu_us, busy_us, util_pct, energy_mj,"
    " mem_peak_bytes"
)


def _swap(create: str, primary_key: str) -> None:
    """Replace `usage` with a new table of the same columns, keeping rows and the sequence."""
    op.execute("ALTER SEQUENCE usage_id_seq OWNED BY NONE")
    op.execute("ALTER TABLE usage RENAME TO usage_old")
    op.execute("ALTER TABLE usage_old RENAME CONSTRAINT pk_usage TO pk_usage_old")
    for column in INDEXES:
        op.execute(f"ALTER INDEX ix_usage_{column} RENAME TO ix_usage_old_{column}")
    for constraint in ("report_id_reports", "gpu_id_gpus", "job_id_jobs"):
        op.execute(
            f"ALTER TABLE usage_old RENAME CONSTRAINT fk_usage_{constraint} "
            f"TO fk_usage_old_{constraint}"
        )
    op.execute(
        f"CREATE TABLE usage ({COLUMNS}, CONSTRAINT pk_usage PRIMARY KEY ({primary_key})) {create}"
    )
    if create:
        op.execute("CREATE TABLE usage_default PARTITION OF usage DEFAULT")
    op.execute(f"INSERT INTO usage ({NAMES}) SELECT {NAMES} FROM usage_old")
    op.execute("DROP TABLE usage_old")
    op.execute("ALTER SEQUENCE usage_id_seq OWNED BY usage.id")
    for column in INDEXES:
        op.execute(f"CREATE INDEX ix_usage_{column} ON usage ({column})")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # A partitioned table's primary key must hold the partition key.
        _swap("PARTITION BY RANGE (period_start)", "id, period_start")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _swap("", "id")
