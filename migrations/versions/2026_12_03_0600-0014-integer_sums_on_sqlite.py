"""Sums past 64 bits refused on SQLite: a CHECK that each sum of the rollup is an integer.

Ingest adds to the rollup's sums (`x = x + excluded.x`). On PostgreSQL a BIGINT past 64 bits
raises, and the report is refused; SQLite instead makes the sum a real, stored as one: no
longer exact. `ck_<table>_<column>_integer` (`typeof(column) = 'integer'`) refuses it
there too. SQLite adds a CHECK only by rebuilding the table (batch mode); no other table
refers to these. PostgreSQL needs nothing.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUMS = ("gpu_us", "busy_us", "energy_mj")
TABLES = {
    "usage_hourly": SUMS,
    "usage_daily": SUMS,
    "usage_monthly": SUMS,
    "usage_model_hourly": ("gpu_us",),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _refuse_reals()
    for table, columns in TABLES.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.create_check_constraint(
                    op.f(f"ck_{table}_{column}_integer"), f"typeof({column}) = 'integer'"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in TABLES.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_constraint(op.f(f"ck_{table}_{column}_integer"), type_="check")


def _refuse_reals() -> None:
    """Stop, naming them, at sums that went past 64 bits already: a real holds no exact sum
    to keep, and the rebuilt table's CHECK would refuse copying it."""
    bind = op.get_bind()
    found = []
    for table, columns in TABLES.items():
        reals = " OR ".join(f"typeof({column}) <> 'integer'" for column in columns)
        count = bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {reals}")).scalar_one()
        if count:
            found.append(f"{table}: {count} rows")
    if found:
        raise RuntimeError(
            "sums past 64 bits, stored as reals and no longer exact ("
            + ", ".join(found)
            + "): correct or delete those rows (WHERE typeof(<sum>) <> 'integer'), then "
            "upgrade again"
        )
