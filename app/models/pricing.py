"""Rate cards: USD per GPU-hour per GPU model, and USD per kWh, each effective from an hour.

Prices are kept as integers of micro-dollars (fixed point, six decimal places): exact on
PostgreSQL and SQLite alike, and cheap to multiply with integer usage inside a query.
"""

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime


class Rate(Base):
    __tablename__ = "rates"

    id: Mapped[int] = mapped_column(primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(128))
    # Null: every cluster without a rate of its own.
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id"))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    micro_usd_per_gpu_hour: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))


class EnergyRate(Base):
    __tablename__ = "energy_rates"

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id"))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    micro_usd_per_kwh: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(128))


# A NULL cluster never collides in a unique index, so general rates and per-cluster rates
# each get a unique index of their own: one price per key and instant.
_RATE_CLUSTER = Rate.cluster_id.is_not(None)
_RATE_GENERAL = Rate.cluster_id.is_(None)
Index(
    "uq_rates_cluster_key",
    Rate.gpu_model,
    Rate.cluster_id,
    Rate.effective_from,
    unique=True,
    postgresql_where=_RATE_CLUSTER,
    sqlite_where=_RATE_CLUSTER,
)
Index(
    "uq_rates_general_key",
    Rate.gpu_model,
    Rate.effective_from,
    unique=True,
    postgresql_where=_RATE_GENERAL,
    sqlite_where=_RATE_GENERAL,
)
_ENERGY_CLUSTER = EnergyRate.cluster_id.is_not(None)
_ENERGY_GENERAL = EnergyRate.cluster_id.is_(None)
Index(
    "uq_energy_rates_cluster_key",
    EnergyRate.cluster_id,
    EnergyRate.effective_from,
    unique=True,
    postgresql_where=_ENERGY_CLUSTER,
    sqlite_where=_ENERGY_CLUSTER,
)
Index(
    "uq_energy_rates_general_key",
    EnergyRate.effective_from,
    unique=True,
    postgresql_where=_ENERGY_GENERAL,
    sqlite_where=_ENERGY_GENERAL,
)
