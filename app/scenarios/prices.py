"""A scenario's prices over the books': each atom's SQL price expressions, as
`app.pricing.atom_prices` builds the books' own.

Under a scenario an atom's GPU-hour price is the scenario's price for its GPU model in force
at its hour, else the scenario's general price in force, else the books' (the rate card's,
else the default rate); its kWh price is the kWh price of that same scenario price where it
has one, else the books'. The source column says which priced it, so a figure priced even in
part by the books says so.
"""

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, true

from app.core.sql import constant
from app.models import HourlyUsage
from app.pricing.atom_prices import SCENARIO, AtomPrices, price_cases, price_in_force


@dataclass(frozen=True)
class Price:
    """One price of a scenario, as costs read it (GPU model None: every other GPU model)."""

    gpu_model: str | None
    effective_from: datetime
    micro_usd_per_gpu_hour: int
    micro_usd_per_kwh: int | None  # None: energy priced as the books price it

    # What `price_cases` reads of a price besides its start: its key and its cluster (a
    # scenario's prices are for every cluster).
    cluster_id = None

    @property
    def key(self) -> str:
        return self.gpu_model or ""


@dataclass(frozen=True)
class ScenarioPrices:
    """A scenario by name with every price it has."""

    name: str
    prices: tuple[Price, ...]

    def over(self, books: AtomPrices) -> AtomPrices:
        """Each atom's prices under this scenario, the books' where it has none."""
        return _over(self, books)


# Built once for a scenario's prices (compared by value) over the books' (the same object
# while the rate cards stay the same), so that a cost query under a scenario finds its
# statement already built, as one at the books' prices does (app.costs.query.built_once).
@functools.lru_cache(maxsize=8)
def _over(scenario: ScenarioPrices, books: AtomPrices) -> AtomPrices:
    own = [p for p in scenario.prices if p.gpu_model is not None]
    general = [p for p in scenario.prices if p.gpu_model is None]
    # GPU-model prices first: a CASE takes its first true condition.
    cases = [
        *price_cases(own, lambda p: HourlyUsage.gpu_model == p.gpu_model),
        *price_cases(general, lambda p: true()),
    ]
    if not cases:
        return books
    rate: Any = case(
        *((c, price_in_force(ps, lambda p: p.micro_usd_per_gpu_hour)) for c, ps in cases),
        else_=books.rate,
    )
    source: Any = case(*((c, constant(SCENARIO)) for c, _ in cases), else_=books.source)
    # Null where the price in force has no kWh price of its own, or none is in force: the
    # books' then, written once rather than once a price.
    own_kwh = case(*((c, price_in_force(ps, lambda p: p.micro_usd_per_kwh)) for c, ps in cases))
    energy: Any = func.coalesce(own_kwh, books.energy_rate)
    changes = books.changes | {p.effective_from for p in scenario.prices}
    return AtomPrices(rate=rate, source=source, energy_rate=energy, changes=changes)
