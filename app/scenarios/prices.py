"""A scenario's prices over the books': each atom's SQL price expressions, as
`app.costs.query` builds the books' own.

Under a scenario an atom's GPU-hour price is the scenario's price for its GPU model in force
at its hour, else the scenario's general price in force, else the books' (the rate card's,
else the default rate); its kWh price is the kWh price of that same scenario price where it
has one, else the books'. The source column says which priced it, so a figure priced even in
part by the books says so.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, literal

from app.costs.query import SCENARIO, AtomPrices, price_cases
from app.models import HourlyUsage


@dataclass(frozen=True)
class Price:
    """One price of a scenario, as costs read it (GPU model None: every other GPU model)."""

    gpu_model: str | None
    effective_from: datetime
    micro_usd_per_gpu_hour: int
    micro_usd_per_kwh: int | None  # None: energy priced as the books price it

    # What `price_cases` reads of a price: its key, its cluster (a scenario's prices are
    # for every cluster) and the value each case yields (the price itself, read below).
    cluster_id = None

    @property
    def key(self) -> str:
        return self.gpu_model or ""

    @property
    def price(self) -> "Price":
        return self


@dataclass(frozen=True)
class ScenarioPrices:
    """A scenario by name with every price it has."""

    name: str
    prices: tuple[Price, ...]

    def over(self, books: AtomPrices) -> AtomPrices:
        """Each atom's prices under this scenario, the books' where it has none."""
        own = [p for p in self.prices if p.gpu_model is not None]
        general = [p for p in self.prices if p.gpu_model is None]
        # GPU-model prices first: a CASE takes its first true condition.
        cases: list[tuple[ColumnElement[bool], Any]] = [
            *price_cases(own, lambda p: HourlyUsage.gpu_model == p.gpu_model),
            *price_cases(general, lambda p: literal(True)),
        ]
        if not cases:
            return books
        rate: Any = case(*((c, p.micro_usd_per_gpu_hour) for c, p in cases), else_=books.rate)
        source: Any = case(*((c, SCENARIO) for c, _ in cases), else_=books.source)
        energy: Any = case(
            *(
                (c, books.energy_rate if p.micro_usd_per_kwh is None else p.micro_usd_per_kwh)
                for c, p in cases
            ),
            else_=books.energy_rate,
        )
        changes = books.changes | {p.effective_from for p in self.prices}
        return AtomPrices(rate=rate, source=source, energy_rate=energy, changes=changes)
