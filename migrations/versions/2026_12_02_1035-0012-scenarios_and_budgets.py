"""Price scenarios and budgets.

`scenarios` and `scenario_prices`: named rate cards that price usage as if, apart from the
books; a price is given or built from the cost of owning a GPU, whose inputs the database
requires exactly when that is the basis. `budgets`: a limit per team, model or cluster, per
month or over a range, in USD or GPU-hours; the database refuses a period whose bounds
disagree with it, an empty range and a limit that is not positive.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 10:35:39.193801
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_value", sa.String(length=128), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint(
            "(period = 'month' AND starts_at IS NULL AND ends_at IS NULL) OR (period = "
            "'range' AND starts_at IS NOT NULL AND ends_at IS NOT NULL AND starts_at < "
            "ends_at)",
            name=op.f("ck_budgets_period_bounds"),
        ),
        sa.CheckConstraint("period IN ('month', 'range')", name=op.f("ck_budgets_period")),
        sa.CheckConstraint("scope IN ('team', 'model', 'cluster')", name=op.f("ck_budgets_scope")),
        sa.CheckConstraint("unit IN ('usd', 'gpu_hours')", name=op.f("ck_budgets_unit")),
        sa.CheckConstraint("amount_micro > 0", name=op.f("ck_budgets_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint("name", name=op.f("uq_budgets_name")),
    )
    op.create_table(
        "scenarios",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scenarios")),
        sa.UniqueConstraint("name", name=op.f("uq_scenarios_name")),
    )
    op.create_table(
        "scenario_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scenario_id", sa.Integer(), nullable=False),
        sa.Column("gpu_model", sa.String(length=128), nullable=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("basis", sa.String(length=8), nullable=False),
        sa.Column("micro_usd_per_gpu_hour", sa.BigInteger(), nullable=False),
        sa.Column("micro_usd_per_kwh", sa.BigInteger(), nullable=True),
        sa.Column("purchase_micro_usd", sa.BigInteger(), nullable=True),
        sa.Column("amortisation_months", sa.Integer(), nullable=True),
        sa.Column("hosting_micro_usd_per_month", sa.BigInteger(), nullable=True),
        sa.Column("electricity_micro_usd_per_kwh", sa.BigInteger(), nullable=True),
        sa.Column("pue_milli", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint(
            "(basis = 'tco' AND purchase_micro_usd IS NOT NULL AND amortisation_months IS NOT "
            "NULL AND hosting_micro_usd_per_month IS NOT NULL AND "
            "electricity_micro_usd_per_kwh IS NOT NULL AND pue_milli IS NOT NULL) OR (basis = "
            "'price' AND purchase_micro_usd IS NULL AND amortisation_months IS NULL AND "
            "hosting_micro_usd_per_month IS NULL AND electricity_micro_usd_per_kwh IS NULL "
            "AND pue_milli IS NULL)",
            name=op.f("ck_scenario_prices_tco_inputs"),
        ),
        sa.CheckConstraint("basis IN ('price', 'tco')", name=op.f("ck_scenario_prices_basis")),
        sa.CheckConstraint(
            "micro_usd_per_gpu_hour >= 0",
            name=op.f("ck_scenario_prices_gpu_hour_price_non_negative"),
        ),
        sa.CheckConstraint(
            "micro_usd_per_kwh >= 0", name=op.f("ck_scenario_prices_kwh_price_non_negative")
        ),
        sa.CheckConstraint(
            "purchase_micro_usd >= 0 AND amortisation_months > 0 AND "
            "hosting_micro_usd_per_month >= 0 AND electricity_micro_usd_per_kwh >= 0 AND "
            "pue_milli >= 1000",
            name=op.f("ck_scenario_prices_tco_inputs_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["scenario_id"],
            ["scenarios.id"],
            name=op.f("fk_scenario_prices_scenario_id_scenarios"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scenario_prices")),
    )
    op.create_index(
        "uq_scenario_prices_general_key",
        "scenario_prices",
        ["scenario_id", "effective_from"],
        unique=True,
        postgresql_where=sa.text("gpu_model IS NULL"),
        sqlite_where=sa.text("gpu_model IS NULL"),
    )
    op.create_index(
        "uq_scenario_prices_model_key",
        "scenario_prices",
        ["scenario_id", "gpu_model", "effective_from"],
        unique=True,
        postgresql_where=sa.text("gpu_model IS NOT NULL"),
        sqlite_where=sa.text("gpu_model IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_scenario_prices_model_key",
        table_name="scenario_prices",
        postgresql_where=sa.text("gpu_model IS NOT NULL"),
        sqlite_where=sa.text("gpu_model IS NOT NULL"),
    )
    op.drop_index(
        "uq_scenario_prices_general_key",
        table_name="scenario_prices",
        postgresql_where=sa.text("gpu_model IS NULL"),
        sqlite_where=sa.text("gpu_model IS NULL"),
    )
    op.drop_table("scenario_prices")
    op.drop_table("scenarios")
    op.drop_table("budgets")
