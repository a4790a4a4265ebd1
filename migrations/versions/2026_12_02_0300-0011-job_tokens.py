"""Job tokens: how many tokens a job processed, for a model's efficiency per phase.

A count sent with the job's labels, null until one is sent. The database itself refuses a
negative count (`ck_jobs_tokens_non_negative`), whatever writes it. SQLite adds the column
with its CHECK in place: rebuilding `jobs` in batch mode would drop a table that
`usage_hourly` refers to, which its foreign keys refuse once usage is stored.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "ck_jobs_tokens_non_negative"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"ALTER TABLE jobs ADD COLUMN tokens BIGINT CONSTRAINT {CHECK} CHECK (tokens >= 0)"
        )
        return
    op.add_column("jobs", sa.Column("tokens", sa.BigInteger(), nullable=True))
    op.create_check_constraint(op.f(CHECK), "jobs", "tokens >= 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # A column's own CHECK goes with it (SQLite 3.35 and later drop columns in place).
        op.execute("ALTER TABLE jobs DROP COLUMN tokens")
        return
    op.drop_constraint(op.f(CHECK), "jobs", type_="check")
    op.drop_column("jobs", "tokens")
