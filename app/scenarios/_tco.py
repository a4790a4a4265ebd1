"""The total cost of owning a GPU, as a price per GPU-hour and per kWh: the one place the
formula lives.

Per GPU-hour: the purchase spread evenly over the amortisation months, plus a month's
hosting (space, network, staff), over the hours of a month; a month is 730 hours
(8,760 hours a year / 12), whatever its days:

    (purchase + hosting_per_month x months) / (months x 730)

computed exactly in micro-USD and rounded half to even once, to a whole micro-USD. With
$30,000, 48 months and $150 a month: 37,200,000,000 / 35,040 = 1,061,643.8 -> $1.061644.

Per kWh of measured GPU energy: the electricity price times the PUE (the facility's
energy per unit of IT energy), rounded half to even once: $0.08 x 1.3 = $0.104. Energy is
priced only where the collectors measured it (NVML's energy counter); nothing is estimated
for GPUs or hours without a measurement.
"""

from decimal import Decimal

from app.core.units import divide

HOURS_PER_MONTH = 730  # 8,760 hours a year / 12
PUE_SCALE = 1000  # the PUE is kept in thousandths: 1.3 is 1300


def micro_usd_per_gpu_hour(
    *, purchase_micro_usd: int, amortisation_months: int, hosting_micro_usd_per_month: int
) -> int:
    """The GPU-hour price of owning the GPU, in micro-USD, rounded half to even once."""
    owned = purchase_micro_usd + hosting_micro_usd_per_month * amortisation_months
    return divide(owned, amortisation_months * HOURS_PER_MONTH)


def micro_usd_per_kwh(*, electricity_micro_usd_per_kwh: int, pue_milli: int) -> int:
    """The price of a kWh the GPU measured, in micro-USD: the facility's kWh it costs."""
    return divide(electricity_micro_usd_per_kwh * pue_milli, PUE_SCALE)


def pue_milli(pue: Decimal) -> int:
    """A PUE (three decimals at most, as validated) in thousandths, exactly: 1.3 is 1300."""
    return int(pue * PUE_SCALE)


def pue_of(milli: int) -> Decimal:
    """Thousandths of a PUE as the decimal it was given as: 1300 is 1.3."""
    return Decimal(milli).scaleb(-3)
