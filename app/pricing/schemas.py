"""Rate cards as clients post and read them."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from app.core.errors import PRINTABLE
from app.core.units import Amount
from app.reports.schemas import NAME_PATTERN

Price = Annotated[Decimal, Field(ge=0, le=10_000, decimal_places=6, allow_inf_nan=False)]
ClusterName = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]


class _EffectiveFrom(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effective_from: AwareDatetime
    cluster: ClusterName | None = None

    @field_validator("effective_from")
    @classmethod
    def _whole_hour(cls, value: datetime) -> datetime:
        # Usage is kept per UTC hour, so a price can only start on an hour.
        if (value.minute, value.second, value.microsecond) != (0, 0, 0):
            raise ValueError("must be a whole UTC hour, e.g. 2025-01-01T00:00:00Z")
        return value


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
