"""Price scenarios as clients set and read them: USD and PUE as decimals, never floats."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.errors import PRINTABLE
from app.core.numbers import Count, Number
from app.core.timestamps import UtcHour
from app.core.units import Amount, micro_from_usd, usd_from_micro
from app.pricing.schemas import PRICE_MOST, Price
from app.scenarios import _tco as tco

# A scenario's name: what `?scenario=` and the CLI take, so no spaces and no slashes.
SCENARIO_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ScenarioName = Annotated[str, Field(min_length=1, max_length=64, pattern=SCENARIO_NAME)]


def _usd(most: int) -> object:
    return Field(ge=0, le=most, decimal_places=6, allow_inf_nan=False)


class TcoCreate(BaseModel):
    """What owning a GPU costs; the scenario's GPU-hour and kWh prices are derived from it
    (`app.scenarios._tco`)."""

    model_config = ConfigDict(extra="forbid")

    purchase_usd: Annotated[Decimal, _usd(100_000_000), Number, Field(examples=["30000"])]
    amortisation_months: Annotated[int, Field(ge=1, le=1200, examples=[48]), Count]
    hosting_usd_per_month: Annotated[Decimal, _usd(1_000_000), Number, Field(examples=["150"])]
    electricity_usd_per_kwh: Annotated[Decimal, _usd(1000), Number, Field(examples=["0.08"])]
    # The facility's energy per unit of the IT equipment's: 1 at best.
    pue: Annotated[
        Decimal,
        Field(ge=1, le=10, decimal_places=3, allow_inf_nan=False, examples=["1.3"]),
        Number,
    ]

    @model_validator(mode="after")
    def _a_price_like_any(self) -> "TcoCreate":
        """The GPU-hour price derived stays within what a price given may be."""
        derived = tco.micro_usd_per_gpu_hour(
            purchase_micro_usd=micro_from_usd(self.purchase_usd),
            amortisation_months=self.amortisation_months,
            hosting_micro_usd_per_month=micro_from_usd(self.hosting_usd_per_month),
        )
        if derived > micro_from_usd(PRICE_MOST):
            raise ValueError(
                f"these inputs give ${usd_from_micro(derived)} per GPU-hour, over the "
                f"${PRICE_MOST} a price may be"
            )
        return self


class ScenarioPriceCreate(BaseModel):
    """A price given (`usd_per_gpu_hour`, optionally `usd_per_kwh`) or derived (`tco`)."""

    model_config = ConfigDict(extra="forbid")

    # None: every GPU model this scenario has no price of its own for.
    gpu_model: Annotated[
        str | None,
        Field(min_length=1, max_length=128, pattern=PRINTABLE, examples=["NVIDIA H800"]),
    ] = None
    effective_from: UtcHour
    usd_per_gpu_hour: Annotated[Price | None, Field(examples=["2.00"])] = None
    # None: measured energy is priced as the books price it.
    usd_per_kwh: Annotated[Price | None, Field(examples=["0.104"])] = None
    tco: TcoCreate | None = None


class ScenarioWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Annotated[str, Field(max_length=1000, pattern=PRINTABLE)] = ""


class TcoRead(BaseModel):
    purchase_usd: Amount
    amortisation_months: int
    hosting_usd_per_month: Amount
    electricity_usd_per_kwh: Amount
    pue: Amount


class ScenarioPriceRead(BaseModel):
    gpu_model: str | None
    effective_from: datetime
    # When the next price for the same GPU model (or the next general price) starts.
    effective_to: datetime | None
    basis: Literal["price", "tco"]
    usd_per_gpu_hour: Amount
    usd_per_kwh: Amount | None
    tco: TcoRead | None
    created_at: datetime
    created_by: str


class ScenarioRead(BaseModel):
    name: str
    description: str
    created_at: datetime
    created_by: str
    prices: list[ScenarioPriceRead]
