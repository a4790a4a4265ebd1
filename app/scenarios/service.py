"""Setting and deleting price scenarios and their prices; every change goes to the audit log.

A scenario's prices are effective-dated like the books' rates (`app.pricing`), one per
GPU model (or none: all others) and hour, but never restated: the same price again is no
change, a different one at the same hour a conflict. Nothing here touches the books.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.unique import insert_unless_present
from app.core.units import micro_from_usd, plain, usd_from_micro
from app.models import Scenario, ScenarioPrice
from app.models.scenarios import TCO_INPUTS
from app.scenarios import _tco as tco
from app.scenarios.reads import BOOKED, get_scenario, unknown_scenario
from app.scenarios.schemas import ScenarioPriceCreate, ScenarioPriceRead, ScenarioRead

# Tries of `set_scenario` against deletes of the same name committed in between.
SET_ATTEMPTS = 3
# Prices one scenario may hold: every price is a clause that each priced hour is matched
# against, and a cost read under a scenario of 1,000 prices took 8 s on SQLite with almost no
# usage (0.16 s with 100).
MAX_PRICES = 100


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
    scenario = _locked_scenario(session, name)
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
    # Prices are added one at a time per scenario (so that none passes MAX_PRICES), never
    # beside a delete of the scenario (which waits for them, or they for it, and then find
    # no scenario: 404).
    scenario = _locked_scenario(session, name)
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
        count = session.execute(
            select(func.count()).where(ScenarioPrice.scenario_id == scenario.id)
        ).scalar_one()
        if count > MAX_PRICES:  # refused whole: the request's transaction is rolled back
            raise Conflict(
                f"scenario '{name}' has {MAX_PRICES} prices, the most one may have: delete "
                "the scenario and set it again with fewer, or make another"
            )
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


def _locked_scenario(session: Session, name: str) -> Scenario:
    """The scenario, locked until the transaction ends; NotFound, naming the nearest."""
    query = select(Scenario).where(Scenario.name == name).with_for_update()
    found = session.execute(query).scalar_one_or_none()
    if found is None:
        raise NotFound(unknown_scenario(session, name))
    return found
