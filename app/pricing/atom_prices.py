"""Each priced atom's prices as SQL expressions: how the rates in force at an hour become
a CASE in a statement.

Rate cards are few, so they are read first and turned into one CASE expression per price
kind rather than joined to every atom (`app.costs.query`). The prices are constants in the
statement's text (`app.core.sql.constant`), not parameters, so that no count of rates meets
a database's limit on those. A price scenario (`app.scenarios.prices`) builds its own over
the books' with the same pieces.
"""

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from operator import attrgetter
from typing import Any

from sqlalchemy import ColumnElement, and_, case, literal, select, true
from sqlalchemy.orm import Session

from app.core.sql import constant
from app.models import EnergyRate, HourlyUsage, Rate
from app.pricing.spans import in_force

_INSTANT = HourlyUsage.hour.type
_PRICE = attrgetter("price")  # of a rate card's row, as `atom_prices` reads them

# What each priced atom carries: micro-USD per GPU-hour, what set that price (`SOURCES`),
# and micro-USD per kWh (null where no energy price is set).
PRICES = ("rate", "source", "energy_rate")
# Who set an atom's GPU-hour price: the rate card, the default rate (the books' two, 0 and
# 1 as they always were), or a price scenario (`app.scenarios`), which never reaches the books.
CARD, DEFAULT, SCENARIO = 0, 1, 2
SOURCES = {CARD: "card", DEFAULT: "default", SCENARIO: "scenario"}


def price_cases(rows: Sequence[Any], match: Any) -> list[tuple[ColumnElement[bool], list[Any]]]:
    """Per key of effective-dated prices, per-cluster keys first (they win): the condition
    that one of the key's prices is in force on an atom, and the key's prices, earliest first.
    A key's prices follow one another from its first on (`in_force`), so one condition a key
    holds where any of them does, and `price_in_force` tells which."""
    cases = []
    spans = in_force(rows, key=_price_key, start=lambda r: r.effective_from)
    for _, keyed in groupby((row for row, _ in spans), key=_price_key):
        prices = list(keyed)
        first = prices[0]
        conditions = [match(first), HourlyUsage.hour >= constant(first.effective_from, _INSTANT)]
        if first.cluster_id is not None:
            conditions.append(HourlyUsage.cluster_id == constant(first.cluster_id))
        cases.append((and_(*conditions), prices))
    return cases


def _price_key(row: Any) -> tuple[bool, str, int]:
    return (row.cluster_id is None, row.key, row.cluster_id or 0)


def price_in_force(prices: list[Any], value: Callable[[Any], int | None]) -> ColumnElement[Any]:
    """`value` of the one of a key's prices (`price_cases`, earliest first) in force at an
    atom's hour, where one is: the latest that started by then."""
    first, *later = prices
    if not later:
        return constant(value(first))
    return case(
        *(
            (HourlyUsage.hour >= constant(row.effective_from, _INSTANT), constant(value(row)))
            for row in reversed(later)
        ),
        else_=constant(value(first)),
    )


# Compared and hashed as the object it is (`eq=False`): SQL expressions have no value
# equality, and `_built` gives the same object while the rate cards stay the same.
@dataclass(frozen=True, eq=False)
class AtomPrices:
    """Per-atom expressions: the rate in force, who set it (`SOURCES`), the energy price;
    and the instants from which any of them changes."""

    rate: ColumnElement[int]
    source: ColumnElement[int]
    energy_rate: ColumnElement[int]
    changes: frozenset[datetime] = field(default_factory=frozenset)

    def labelled(self) -> list[ColumnElement[Any]]:
        """The three as columns named as `PRICES`."""
        columns = (self.rate, self.source, self.energy_rate)
        return [column.label(name) for column, name in zip(columns, PRICES, strict=True)]


def atom_prices(session: Session, *, default_micro_usd: int) -> AtomPrices:
    """Read the rate cards and build each atom's prices in the books as SQL expressions."""
    rates = session.execute(
        select(
            Rate.gpu_model.label("key"),
            Rate.cluster_id,
            Rate.effective_from,
            Rate.micro_usd_per_gpu_hour.label("price"),
        ).order_by(Rate.id)
    ).all()
    energy = session.execute(
        select(
            literal("").label("key"),
            EnergyRate.cluster_id,
            EnergyRate.effective_from,
            EnergyRate.micro_usd_per_kwh.label("price"),
        ).order_by(EnergyRate.id)
    ).all()
    return _built(tuple(rates), tuple(energy), default_micro_usd)


# The expressions for the rate cards as last read, while they stay the same: building them
# is most of a cost query's own work (and seconds for thousands of rates), and SQL
# expressions, once built, are immutable and shared safely between requests and threads.
@functools.lru_cache(maxsize=8)
def _built(rates: tuple[Any, ...], energy: tuple[Any, ...], default_micro_usd: int) -> AtomPrices:
    card = price_cases(rates, lambda r: HourlyUsage.gpu_model == r.key)
    kwh = price_cases(energy, lambda r: true())
    default = constant(default_micro_usd)
    rate = (
        case(*((c, price_in_force(p, _PRICE)) for c, p in card), else_=default) if card else default
    )
    source = (
        case(*((c, constant(CARD)) for c, _ in card), else_=constant(DEFAULT))
        if card
        else constant(DEFAULT)
    )
    energy_rate = case(*((c, price_in_force(p, _PRICE)) for c, p in kwh)) if kwh else constant(None)
    changes = frozenset(row.effective_from for row in (*rates, *energy))
    return AtomPrices(rate=rate, source=source, energy_rate=energy_rate, changes=changes)
