"""Exact figures of a group of priced atoms, and how they are shown.

Time and energy stay in the rollup's integers; money is an integer count of `PARTS` of a
USD (microseconds x micro-USD per GPU-hour). Groups add exactly; a figure is rounded once,
in `shown()`, so a total is the exact sum of its rows, rounded.
"""

from dataclasses import dataclass
from typing import Any

from app.core.units import hours, kwh, seconds, shown
from app.pricing.atom_prices import DEFAULT, SCENARIO


@dataclass(slots=True)
class Exact:
    gpu_us: int = 0
    busy_us: int = 0
    energy_mj: int = 0
    cost: int = 0  # in PARTS of a USD
    energy_cost: int | None = None  # null until an atom with an energy price is added
    card: bool = False  # some atoms priced from the rate card
    default: bool = False  # some at the default rate
    scenario: bool = False  # some at a price scenario's prices

    def add_priced(self, row: Any) -> None:
        """Add a stage-one or stage-two row: the sums at one price
        (`app.pricing.atom_prices.PRICES`)."""
        gpu_us, energy_mj = int(row.gpu_us or 0), int(row.energy_mj or 0)
        self.gpu_us += gpu_us
        self.busy_us += int(row.busy_us or 0)
        self.energy_mj += energy_mj
        self.cost += gpu_us * int(row.rate)
        if row.energy_rate is not None:
            self.energy_cost = (self.energy_cost or 0) + energy_mj * int(row.energy_rate)
        source = int(row.source)
        if source == SCENARIO:
            self.scenario = True
        elif source == DEFAULT:
            self.default = True
        else:
            self.card = True

    def add(self, other: "Exact") -> None:
        self.gpu_us += other.gpu_us
        self.busy_us += other.busy_us
        self.energy_mj += other.energy_mj
        self.cost += other.cost
        if other.energy_cost is not None:
            self.energy_cost = (self.energy_cost or 0) + other.energy_cost
        self.card |= other.card
        self.default |= other.default
        self.scenario |= other.scenario

    def shown(self) -> dict[str, Any]:
        """The API's figures (`schemas.Figures`), each rounded once from its exact value."""
        return {
            "gpu_seconds": seconds(self.gpu_us),
            "gpu_hours": hours(self.gpu_us),
            "busy_gpu_hours": hours(self.busy_us),
            "energy_kwh": kwh(self.energy_mj),
            "cost_usd": shown(self.cost),
            "energy_cost_usd": None if self.energy_cost is None else shown(self.energy_cost),
            "rate_sources": (
                ["scenario"] * self.scenario + ["card"] * self.card + ["default"] * self.default
            ),
        }


def grouped(rows: Any, key: Any) -> list[tuple[Any, Exact]]:
    """Rows ordered by `key(row)`, several per key (one per price), as one Exact per key."""
    groups: list[tuple[Any, Exact]] = []
    for row in rows:
        row_key = key(row)
        if not groups or groups[-1][0] != row_key:
            groups.append((row_key, Exact()))
        groups[-1][1].add_priced(row)
    return groups
