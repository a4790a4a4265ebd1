"""Rate cards as clients post and read them."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import PRINTABLE
from app.core.labels import NAME_PATTERN
from app.core.numbers import Number
from app.core.timestamps import UtcHour
from app.core.units import Amount

PRICE_MOST = Decimal(10_000)  # USD a GPU-hour or a kWh may cost, at most
Price = Annotated[
    Decimal, Field(ge=0, le=PRICE_MOST, decimal_places=6, allow_inf_nan=False), Number
]
ClusterName = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]


class _EffectiveFrom(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Usage is kept per UTC hour, so a price can only start on one (after conversion to UTC).
    effective_from: UtcHour
    cluster: ClusterName | None = None


class RateCreate(_EffectiveFrom):
    gpu_model: Annotated[
        str, Field(min_length=1, max_length=128, pattern=PRINTABLE, examples=["NVIDIA H800"])
    ]
    usd_per_gpu_hour: Annotated[Price, Field(examples=["2.00"])]


class EnergyRateCreate(_EffectiveFrom):
    usd_per_kwh: Annotated[Price, Field(examples=["0.12"])]


class _RateRead(BaseModel):
    cluster: str | None
    effective_from: datetime
    effective_to: datetime | None
    created_at: datetime
    created_by: str


class RateRead(_RateRead):
    gpu_model: str
    usd_per_gpu_hour: Amount


class EnergyRateRead(_RateRead):
    usd_per_kwh: Amount
