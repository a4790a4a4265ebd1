"""Exact conversions between stored integer units and the decimals the API shows."""

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated

from pydantic import PlainSerializer

MICRO = Decimal(1_000_000)
US_PER_HOUR = Decimal(3_600_000_000)  # microseconds in an hour
DISPLAY_PLACES = Decimal("1e-9")


def plain(value: Decimal) -> str:
    """A decimal in fixed notation without trailing zeros: `2664000`, `0.5`."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# Decimals travel as strings in JSON, never through a float.
Amount = Annotated[Decimal, PlainSerializer(plain, return_type=str, when_used="json")]


def seconds(micros: int) -> Decimal:
    return Decimal(micros) / MICRO


def hours(micros: int) -> Decimal:
    """Microseconds as hours, to nine decimal places (an hour is not a power of ten)."""
    return (Decimal(micros) / US_PER_HOUR).quantize(DISPLAY_PLACES, ROUND_HALF_EVEN)


def from_nano(nano: int) -> Decimal:
    """Billionths (nano-dollars, nano-hours) as an exact decimal."""
    return Decimal(nano).scaleb(-9)


def micro_from_usd(usd: Decimal) -> int:
    """A price with at most six decimal places, as integer micro-dollars."""
    scaled = usd * MICRO
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{usd} has more than six decimal places")
    return int(scaled)


def usd_from_micro(micro: int) -> Decimal:
    return Decimal(micro).scaleb(-6)
