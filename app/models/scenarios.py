"""Price scenarios: named rate cards that price measured usage as if, never touching the books.

A scenario's price is micro-USD per GPU-hour for one GPU model (or, with no GPU model, for
every GPU model it has no price of its own for), effective from an hour, and optionally
micro-USD per kWh of measured GPU energy. A price is either given (`basis` 'price') or built
from the total cost of owning the GPU (`basis` 'tco'): the inputs are kept beside the prices
they gave, and the database refuses a row whose inputs do not match its basis.
"""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime

TCO_INPUTS = (
    "purchase_micro_usd",
    "amortisation_months",
    "hosting_micro_usd_per_month",
    "electricity_micro_usd_per_kwh",
    "pue_milli",
)


class Scenario(Base):
    __tablename__ = "scenarios"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))


_ALL_TCO = " AND ".join(f"{c} IS NOT NULL" for c in TCO_INPUTS)
_NO_TCO = " AND ".join(f"{c} IS NULL" for c in TCO_INPUTS)


class ScenarioPrice(Base):
    __tablename__ = "scenario_prices"
    __table_args__ = (
        CheckConstraint("basis IN ('price', 'tco')", name="basis"),
        CheckConstraint(
            f"(basis = 'tco' AND {_ALL_TCO}) OR (basis = 'price' AND {_NO_TCO})",
            name="tco_inputs",
        ),
        CheckConstraint("micro_usd_per_gpu_hour >= 0", name="gpu_hour_price_non_negative"),
        CheckConstraint("micro_usd_per_kwh >= 0", name="kwh_price_non_negative"),
        CheckConstraint(
            "purchase_micro_usd >= 0 AND amortisation_months > 0"
            " AND hosting_micro_usd_per_month >= 0 AND electricity_micro_usd_per_kwh >= 0"
            " AND pue_milli >= 1000",
            name="tco_inputs_in_range",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"))
    # Null: every GPU model without a price of its own in this scenario.
    gpu_model: Mapped[str | None] = mapped_column(String(128))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    basis: Mapped[str] = mapped_column(String(8))
    micro_usd_per_gpu_hour: Mapped[int] = mapped_column(BigInteger)
    # Null: energy is priced as the books price it.
    micro_usd_per_kwh: Mapped[int | None] = mapped_column(BigInteger)
    # The total cost of owning the GPU, for basis 'tco' (null otherwise).
    purchase_micro_usd: Mapped[int | None] = mapped_column(BigInteger)
    amortisation_months: Mapped[int | None] = mapped_column(Integer)
    hosting_micro_usd_per_month: Mapped[int | None] = mapped_column(BigInteger)
    electricity_micro_usd_per_kwh: Mapped[int | None] = mapped_column(BigInteger)
    pue_milli: Mapped[int | None] = mapped_column(Integer)  # PUE x 1000: 1.3 is 1300
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))


# As for rates: a NULL GPU model never collides in a unique index, so each kind of price
# gets a unique index of its own: one price per scenario, GPU model and instant.
_MODEL = ScenarioPrice.gpu_model.is_not(None)
_GENERAL = ScenarioPrice.gpu_model.is_(None)
Index(
    "uq_scenario_prices_model_key",
    ScenarioPrice.scenario_id,
    ScenarioPrice.gpu_model,
    ScenarioPrice.effective_from,
    unique=True,
    postgresql_where=_MODEL,
    sqlite_where=_MODEL,
)
Index(
    "uq_scenario_prices_general_key",
    ScenarioPrice.scenario_id,
    ScenarioPrice.effective_from,
    unique=True,
    postgresql_where=_GENERAL,
    sqlite_where=_GENERAL,
)
