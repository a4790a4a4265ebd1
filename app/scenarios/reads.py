"""Reading price scenarios: one by name or all, as the API shows them and as costs price by
them; an unknown name is refused naming the nearest. `booked` names the books, no scenario.
"""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import NotFound, nearest
from app.core.units import usd_from_micro
from app.models import Scenario, ScenarioPrice
from app.pricing.spans import in_force
from app.scenarios import _tco as tco
from app.scenarios.prices import Price, ScenarioPrices
from app.scenarios.schemas import ScenarioPriceRead, ScenarioRead, TcoRead

# Scenarios named at most in the line refusing an unknown one.
NAMES_LISTED = 8
# What reports call the books beside scenarios (`gpucost report --scenario`): no scenario's.
BOOKED = "booked"


def unknown_scenario(session: Session, name: str) -> str:
    """The line refusing a scenario name that none has, naming the nearest ones."""
    known = sorted(session.execute(select(Scenario.name)).scalars())
    hint = nearest(name, known)
    if hint:
        return f"no scenario named '{name}'; did you mean {', '.join(hint)}?"
    if known:
        listed = ", ".join(known[:NAMES_LISTED]) + (", …" if len(known) > NAMES_LISTED else "")
        return f"no scenario named '{name}' (there are {listed})"
    return f"no scenario named '{name}' (none is set yet)"


def _with_prices(
    session: Session, *, name: str | None
) -> list[tuple[Scenario, list[ScenarioPrice]]]:
    """Scenarios (one by name, or all by name) with their prices, read in one statement, so
    that a scenario deleted meanwhile is seen whole or not at all."""
    query = (
        select(Scenario, ScenarioPrice)
        .outerjoin(ScenarioPrice, ScenarioPrice.scenario_id == Scenario.id)
        # Prices in a fixed order too: a scenario read twice unchanged is the same value,
        # which the cost statements are built once for (app.costs.query.built_once).
        .order_by(Scenario.name, ScenarioPrice.id)
    )
    if name is not None:
        query = query.where(Scenario.name == name)
    found: dict[int, tuple[Scenario, list[ScenarioPrice]]] = {}
    for scenario, price in session.execute(query):
        prices = found.setdefault(scenario.id, (scenario, []))[1]
        if price is not None:
            prices.append(price)
    if name is not None and not found:
        raise NotFound(unknown_scenario(session, name))
    return list(found.values())


def scenario_prices(session: Session, name: str | None) -> ScenarioPrices | None:
    """The prices costs read under `name`: None for the books (no name, or `booked`), else
    the scenario's; NotFound, naming the nearest, if there is none."""
    if name is None or name.casefold() == BOOKED:
        return None
    [(scenario, rows)] = _with_prices(session, name=name)
    prices = tuple(
        Price(r.gpu_model, r.effective_from, r.micro_usd_per_gpu_hour, r.micro_usd_per_kwh)
        for r in rows
    )
    return ScenarioPrices(name=scenario.name, prices=prices)


def list_scenarios(session: Session) -> list[ScenarioRead]:
    """Every scenario by name, each with its prices."""
    return [_scenario_read(s, prices) for s, prices in _with_prices(session, name=None)]


def get_scenario(session: Session, *, name: str) -> ScenarioRead:
    """A scenario with every price; NotFound, naming the nearest, if none."""
    [(scenario, prices)] = _with_prices(session, name=name)
    return _scenario_read(scenario, prices)


def _scenario_read(scenario: Scenario, rows: list[ScenarioPrice]) -> ScenarioRead:
    """A scenario with every price: general ones first, then by GPU model, oldest first,
    each with the instant the next of its key starts."""
    spans = in_force(
        rows,
        key=lambda r: (r.gpu_model is not None, r.gpu_model or ""),
        start=lambda r: r.effective_from,
    )
    prices = [_price_read(row, end) for row, end in spans]
    return ScenarioRead(
        name=scenario.name,
        description=scenario.description,
        created_at=scenario.created_at,
        created_by=scenario.created_by,
        prices=prices,
    )


def _price_read(row: ScenarioPrice, end: datetime | None) -> ScenarioPriceRead:
    inputs = None
    if row.basis == "tco":
        assert row.amortisation_months is not None and row.pue_milli is not None
        inputs = TcoRead(
            purchase_usd=usd_from_micro(row.purchase_micro_usd or 0),
            amortisation_months=row.amortisation_months,
            hosting_usd_per_month=usd_from_micro(row.hosting_micro_usd_per_month or 0),
            electricity_usd_per_kwh=usd_from_micro(row.electricity_micro_usd_per_kwh or 0),
            pue=tco.pue_of(row.pue_milli),
        )
    kwh = row.micro_usd_per_kwh
    return ScenarioPriceRead(
        gpu_model=row.gpu_model,
        effective_from=row.effective_from,
        effective_to=end,
        basis="tco" if row.basis == "tco" else "price",
        usd_per_gpu_hour=usd_from_micro(row.micro_usd_per_gpu_hour),
        usd_per_kwh=None if kwh is None else usd_from_micro(kwh),
        tco=inputs,
        created_at=row.created_at,
        created_by=row.created_by,
    )
