"""Exact conversions between stored integer units and the decimals the API shows.

Figures are summed as exact integers and rounded once, where they are shown. GPU-time is
kept in microseconds, energy in millijoules; a figure in hours, kWh or USD is an integer
count of `PARTS`-ths of its unit until then: microseconds x 10^6 for hours, millijoules
x 10^6 for kWh, and microseconds (or millijoules) x micro-USD per GPU-hour (or kWh) for USD.
An hour is not a power of ten, so these sums have no exact decimal: each is shown rounded
half to even to nine decimal places, and a value exact in nine decimals is shown exactly.
"""

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Annotated

from pydantic import PlainSerializer

# Stored units as powers of ten of the units sent: a second in microseconds, a joule in
# millijoules.
MICRO_DIGITS, MILLI_DIGITS = 6, 3
MICRO = Decimal(10**MICRO_DIGITS)
US_PER_HOUR = 3_600_000_000  # microseconds in an hour
MJ_PER_KWH = 3_600_000_000  # millijoules in a kWh
# An exact figure's denominator: micro-USD per GPU-hour x microseconds, per USD.
PARTS = US_PER_HOUR * 1_000_000
PARTS_PER_NANO = PARTS // 1_000_000_000
# The parts in a microsecond of GPU-time (of an hour) and in a millijoule (of a kWh); and in
# a millionth of a unit (a budget's limit in micro-USD or micro-hours).
PARTS_PER_US = PARTS // US_PER_HOUR
PARTS_PER_MJ = PARTS // MJ_PER_KWH
PARTS_PER_MILLIONTH = PARTS // 1_000_000
# Unbounded: no product or shift of the point in it rounds, however many digits a number has,
# so a figure's one rounding is the one its code asks for.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def plain(value: Decimal) -> str:
    """A decimal in fixed notation without trailing zeros: `2664000`, `0.5`."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# Decimals travel as strings in JSON, never through a float.
Amount = Annotated[Decimal, PlainSerializer(plain, return_type=str, when_used="json")]
# So do counts that may pass 2^53, past which JavaScript and many JSON readers lose digits.
BigCount = Annotated[int, PlainSerializer(str, return_type=str, when_used="json")]


def seconds(micros: int) -> Decimal:
    return Decimal(micros) / MICRO


def joules(millijoules: int) -> Decimal:
    return Decimal(millijoules) / 1000


def divide(numerator: int, denominator: int) -> int:
    """numerator / denominator as an integer, rounded half to even: the one rounding."""
    quotient, rest = divmod(numerator, denominator)
    if 2 * rest > denominator or (2 * rest == denominator and quotient % 2):
        quotient += 1
    return quotient


def rounded(numerator: int, denominator: int, places: int = 9) -> Decimal:
    """numerator / denominator to `places` decimals, half to even."""
    return Decimal(divide(numerator * 10**places, denominator)).scaleb(-places, EXACT)


def from_nano(nano: int) -> Decimal:
    """Billionths (nano-dollars, nano-hours) as an exact decimal."""
    return Decimal(nano).scaleb(-9, EXACT)


def shown_nano(parts: int) -> int:
    """An exact figure (in `PARTS`) in billionths, as shown."""
    return divide(parts, PARTS_PER_NANO)


def shown(parts: int) -> Decimal:
    """An exact figure (in `PARTS`) as shown: nine decimal places, half to even."""
    return from_nano(shown_nano(parts))


class Carried:
    """Exact figures shown one after another so that the shown values add up to their
    exact sum as shown: each is the shown running sum less the shown sum before it (so each
    lies within a billionth of its exact value). For rows that are summed, as exports are."""

    __slots__ = ("exact", "shown")

    def __init__(self) -> None:
        self.exact = 0
        self.shown = 0

    def nano(self, parts: int) -> int:
        """The next figure (in `PARTS`), in billionths."""
        self.exact += parts
        before, self.shown = self.shown, shown_nano(self.exact)
        return self.shown - before


def hours(micros: int) -> Decimal:
    """Microseconds as hours, as shown."""
    return rounded(micros, US_PER_HOUR)


def kwh(millijoules: int) -> Decimal:
    """Millijoules as kWh, as shown."""
    return rounded(millijoules, MJ_PER_KWH)


def booked_nano(parts: int) -> int:
    """An exact figure in billionths rounded half up, as closed months book each hour."""
    return (parts + PARTS_PER_NANO // 2) // PARTS_PER_NANO


def micro_from_usd(usd: Decimal) -> int:
    """A price with at most six decimal places, as integer micro-dollars."""
    scaled = usd * MICRO
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{usd} has more than six decimal places")
    return int(scaled)


def usd_from_micro(micro: int) -> Decimal:
    return Decimal(micro).scaleb(-6)
