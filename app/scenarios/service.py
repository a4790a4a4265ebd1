"""Setting, reading and deleting price scenarios; every change goes to the audit log.

A scenario's prices are effective-dated like the books' rates (`app.pricing`), one per
GPU model (or none: all others) and hour, but never restated: the same price again is no
change, a different one at the same hour a conflict. Nothing here touches the books.
"""

import difflib
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.unique import insert_unless_present
from app.core.units import micro_from_usd, plain, usd_from_micro
from app.models import Scenario, ScenarioPrice
from app.models.scenarios import TCO_INPUTS
from app.scenarios import tco
from app.scenarios.prices import Price, ScenarioPrices
from app.scenarios.schemas import ScenarioPriceCreate, ScenarioPriceRead, ScenarioRead, TcoRead

# Scenarios named at most in the line refusing an unknown one.
NAMES_LISTED = 8
# What reports call the books beside scenarios (`gpucost report --scenario`): no scenario's.
BOOKED = "booked"
# Tries of `set_scenario` against deletes of the same name committed in between.
SET_ATTEMPTS = 3


def set_scenario(
    session: Session, *, name: str, description: str, actor: str, now: datetime
) -> tuple[ScenarioRead, bool]:
    """Create the scenario, or change its description; True if new."""
    if name.casefold() == BOOKED:
        raise InvalidInput("name", f"'{name}' is what reports call the books: choose another")
    row = {"name": name, "description": description, "created_at": now, "created_by": actor}
    details: dict[str, Any] = {"name": name, "description": description}
    # The insert finds the scenario present, or makes it; a delete committed between that
    # and the lock leaves nothing to lock, and the insert, run again, makes it.
    for _ in range(SET_ATTEMPTS):
        created = insert_unless_present(session, Scenario, row)
        existing = session.execute(
            select(Scenario).where(Scenario.name == name).with_for_update()
        ).scalar_one_or_none()
        if existing is not None:
            break
    else:
        raise Conflict(f"scenario '{name}' is being deleted and set at once: try again")
    if not created:
        if existing.description == description:
            return get_scenario(session, name=name), False
        details["old_description"] = existing.description
        existing.description = description
    action = "scenario.create" if created else "scenario.update"
    record(session, at=now, actor=actor, action=action, target=f"scenario:{name}", details=details)
    session.flush()
    return get_scenario(session, name=name), created


def delete_scenario(session: Session, *, name: str, actor: str, now: datetime) -> int:
    """Remove the scenario and its prices; the number of prices removed."""
    scenario = _scenario(session, name, lock="update")
    prices = session.execute(
        select(func.count()).where(ScenarioPrice.scenario_id == scenario.id)
    ).scalar_one()
    session.execute(delete(ScenarioPrice).where(ScenarioPrice.scenario_id == scenario.id))
    session.execute(delete(Scenario).where(Scenario.id == scenario.id))
    record(
        session,
        at=now,
        actor=actor,
        action="scenario.delete",
        target=f"scenario:{name}",
        details={"name": name, "description": scenario.description, "prices": prices},
    )
    return int(prices)


def add_price(
    session: Session, *, name: str, body: ScenarioPriceCreate, actor: str, now: datetime
) -> tuple[ScenarioPriceRead, bool]:
    """Set a scenario's price for a GPU model (or all others) from an hour on; True if new,
    False if the same price was already set; a different one there is a conflict."""
    # A shared lock: prices are added side by side, never beside a delete of the scenario
    # (which waits for them, or they for it, and then find no scenario: 404).
    scenario = _scenario(session, name, lock="share")
    values = _price_values(body)
    created = insert_unless_present(
        session,
        ScenarioPrice,
        {
            "scenario_id": scenario.id,
            "gpu_model": body.gpu_model,
            "effective_from": body.effective_from,
            "created_at": now,
            "created_by": actor,
            **values,
        },
    )
    key = body.gpu_model or "(all)"
    target = f"scenario_price:{name}/{key}/{body.effective_from.isoformat()}"
    if not created:
        existing = session.execute(
            select(ScenarioPrice).where(*_same_key(scenario.id, body))
        ).scalar_one()
        if any(getattr(existing, column) != value for column, value in values.items()):
            stored = plain(usd_from_micro(existing.micro_usd_per_gpu_hour))
            raise Conflict(
                f"scenario '{name}' already has another price for {key} from "
                f"{body.effective_from.isoformat()} (${stored} per GPU-hour, {existing.basis}); "
                "a scenario's price is not restated: set one from another hour, or delete the "
                "scenario and set it again"
            )
    else:
        record(
            session,
            at=now,
            actor=actor,
            action="scenario_price.create",
            target=target,
            details={"scenario": name, **body.model_dump(mode="json", exclude_none=True)},
        )
        session.flush()
    [read] = [
        price
        for price in get_scenario(session, name=name).prices
        if (price.gpu_model, price.effective_from) == (body.gpu_model, body.effective_from)
    ]
    return read, created


def _same_key(scenario_id: int, body: ScenarioPriceCreate) -> list[Any]:
    model = ScenarioPrice.gpu_model
    return [
        ScenarioPrice.scenario_id == scenario_id,
        model.is_(None) if body.gpu_model is None else model == body.gpu_model,
        ScenarioPrice.effective_from == body.effective_from,
    ]


def _price_values(body: ScenarioPriceCreate) -> dict[str, Any]:
    """The stored columns of a price given or derived from the cost of owning the GPU."""
    if body.tco is None:
        if body.usd_per_gpu_hour is None:
            raise InvalidInput("usd_per_gpu_hour", "give a price per GPU-hour, or tco to derive it")
        return {
            "basis": "price",
            "micro_usd_per_gpu_hour": micro_from_usd(body.usd_per_gpu_hour),
            "micro_usd_per_kwh": (
                None if body.usd_per_kwh is None else micro_from_usd(body.usd_per_kwh)
            ),
            **dict.fromkeys(TCO_INPUTS),
        }
    if body.usd_per_gpu_hour is not None or body.usd_per_kwh is not None:
        raise InvalidInput(
            "tco", "give either usd_per_gpu_hour (and usd_per_kwh) or tco, which derives both"
        )
    inputs = {
        "purchase_micro_usd": micro_from_usd(body.tco.purchase_usd),
        "amortisation_months": body.tco.amortisation_months,
        "hosting_micro_usd_per_month": micro_from_usd(body.tco.hosting_usd_per_month),
        "electricity_micro_usd_per_kwh": micro_from_usd(body.tco.electricity_usd_per_kwh),
        "pue_milli": tco.pue_milli(body.tco.pue),
    }
    return {
        "basis": "tco",
        "micro_usd_per_gpu_hour": tco.micro_usd_per_gpu_hour(
            purchase_micro_usd=inputs["purchase_micro_usd"],
            amortisation_months=inputs["amortisation_months"],
            hosting_micro_usd_per_month=inputs["hosting_micro_usd_per_month"],
        ),
        "micro_usd_per_kwh": tco.micro_usd_per_kwh(
            electricity_micro_usd_per_kwh=inputs["electricity_micro_usd_per_kwh"],
            pue_milli=inputs["pue_milli"],
        ),
        **inputs,
    }


def _scenario(session: Session, name: str, *, lock: Literal["share", "update"]) -> Scenario:
    query = select(Scenario).where(Scenario.name == name)
    locked = query.with_for_update(read=lock == "share")
    found = session.execute(locked).scalar_one_or_none()
    if found is None:
        raise NotFound(unknown_scenario(session, name))
    return found


def unknown_scenario(session: Session, name: str) -> str:
    """The line refusing a scenario name that none has, naming the nearest ones."""
    known = sorted(session.execute(select(Scenario.name)).scalars())
    near = difflib.get_close_matches(name.casefold(), [k.casefold() for k in known], n=3)
    hint = [k for k in known if k.casefold() in near]
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
        .order_by(Scenario.name)
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
    rows = sorted(
        rows, key=lambda r: (r.gpu_model is not None, r.gpu_model or "", r.effective_from)
    )
    prices = []
    for i, row in enumerate(rows):
        following = rows[i + 1] if i + 1 < len(rows) else None
        same_key = following is not None and following.gpu_model == row.gpu_model
        prices.append(
            _price_read(row, following.effective_from if same_key and following else None)
        )
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
