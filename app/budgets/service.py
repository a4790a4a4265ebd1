"""Setting, deleting and reading budgets; spend is the books' priced usage of jobs.

Spend is read by `app.budgets._spend` (what `GET /v1/costs` and the FOCUS export bill), and
the rules that turn it into a state live in `app.budgets.rules`. Every change goes to the
audit log. There are at most `MAX_BUDGETS`: each is read on every scrape of `/metrics`.
"""

import re
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.budgets._spend import Spending
from app.budgets.rules import assess, limit_parts, spans, window
from app.budgets.schemas import NAME_MAX, BudgetRead, BudgetSet
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.labels import NAME_PATTERN
from app.core.unique import insert_unless_present, take_turns
from app.core.units import micro_from_usd, plain, usd_from_micro
from app.models import Budget

# Each budget is read on every scrape of `/metrics` and is seven series there.
MAX_BUDGETS = 1000
# The stored columns a PUT sets, in the audit log's order.
SET_COLUMNS = ("scope", "scope_value", "period", "starts_at", "ends_at", "unit", "amount_micro")


def check_name(name: str) -> None:
    """A budget's name as metrics label it: a 422 for any other."""
    if len(name) > NAME_MAX or not re.fullmatch(NAME_PATTERN, name):
        raise InvalidInput(
            "name", f"must be 1 to {NAME_MAX} letters, digits and ._:- (a letter or digit first)"
        )


def check_period(body: BudgetSet) -> None:
    """A range has both bounds, start before end; a month has neither (a 422 naming one)."""
    if body.period == "month":
        for field in ("starts_at", "ends_at"):
            if getattr(body, field) is not None:
                raise InvalidInput(field, "a month budget covers each UTC month: give no bounds")
        return
    for field in ("starts_at", "ends_at"):
        if getattr(body, field) is None:
            raise InvalidInput(field, "a range budget needs starts_at and ends_at")
    assert body.starts_at is not None and body.ends_at is not None
    if body.ends_at <= body.starts_at:
        raise InvalidInput("ends_at", "must be after starts_at")


def _columns(body: BudgetSet) -> dict[str, Any]:
    # The amount in millionths of its unit, USD or GPU-hours alike.
    return {
        "scope": body.scope,
        "scope_value": body.value,
        "period": body.period,
        "starts_at": body.starts_at,
        "ends_at": body.ends_at,
        "unit": body.unit,
        "amount_micro": micro_from_usd(body.amount),
    }


def _audited(columns: dict[str, Any] | None) -> dict[str, Any] | None:
    """A budget's settings as the audit log shows them: text, the amount exact."""
    if columns is None:
        return None
    shown = {k: v for k, v in columns.items() if k != "amount_micro"}
    shown["amount"] = plain(usd_from_micro(columns["amount_micro"]))
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in shown.items()}


def _record(
    session: Session,
    *,
    now: datetime,
    actor: str,
    action: str,
    name: str,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
) -> None:
    details = {"name": name, "old": _audited(old), "new": _audited(new)}
    target = f"budget:{name}"
    record(session, at=now, actor=actor, action=f"budget.{action}", target=target, details=details)


def _row(session: Session, name: str, *, lock: bool = False) -> Budget | None:
    query = select(Budget).where(Budget.name == name)
    return session.execute(query.with_for_update() if lock else query).scalar_one_or_none()


def set_budget(
    session: Session,
    *,
    name: str,
    body: BudgetSet,
    actor: str,
    now: datetime,
    default_micro_usd: int,
) -> tuple[BudgetRead, bool]:
    """Create the budget `name`, or replace it whole; True if it is new."""
    check_name(name)
    check_period(body)
    columns = _columns(body)
    existing = _row(session, name, lock=True)
    created = False
    if existing is None:
        # Creators take turns, so that two at once cannot both take the last place.
        take_turns(session, "budgets.create")
        if session.execute(select(func.count()).select_from(Budget)).scalar_one() >= MAX_BUDGETS:
            raise Conflict(f"at most {MAX_BUDGETS} budgets: delete one before creating another")
        stamps = {"created_at": now, "created_by": actor, "updated_at": now, "updated_by": actor}
        # The unique name decides between concurrent requests creating the same budget.
        created = insert_unless_present(session, Budget, {**columns, **stamps, "name": name})
        if created:
            _record(session, now=now, actor=actor, action="create", name=name, new=columns)
        existing = _row(session, name, lock=True)
    assert existing is not None
    old = {column: getattr(existing, column) for column in SET_COLUMNS}
    if not created and old != columns:
        for column, value in columns.items():
            setattr(existing, column, value)
        existing.updated_at, existing.updated_by = now, actor
        _record(session, now=now, actor=actor, action="replace", name=name, old=old, new=columns)
    session.flush()
    spending = Spending(session, default_micro_usd=default_micro_usd, only=existing.scope_value)
    return _status(existing, spending, now=now), created


def delete_budget(session: Session, *, name: str, actor: str, now: datetime) -> None:
    """Delete the budget `name` (a 404 if there is none)."""
    existing = _row(session, name, lock=True)
    if existing is None:
        raise NotFound(f"no budget named '{name}'")
    old = {column: getattr(existing, column) for column in SET_COLUMNS}
    session.delete(existing)
    _record(session, now=now, actor=actor, action="delete", name=name, old=old)
    session.flush()


def list_budgets(session: Session, *, now: datetime, default_micro_usd: int) -> list[BudgetRead]:
    """Every budget by name, with its spend and state as of `now`."""
    budgets = session.execute(select(Budget).order_by(Budget.name)).scalars()
    spending = Spending(session, default_micro_usd=default_micro_usd)
    return [_status(budget, spending, now=now) for budget in budgets]


def read_budget(
    session: Session, *, name: str, now: datetime, default_micro_usd: int
) -> BudgetRead:
    """One budget with its spend and state as of `now` (a 404 if there is none)."""
    budget = _row(session, name)
    if budget is None:
        raise NotFound(f"no budget named '{name}'")
    spending = Spending(session, default_micro_usd=default_micro_usd, only=budget.scope_value)
    return _status(budget, spending, now=now)


def _status(budget: Budget, spending: Spending, *, now: datetime) -> BudgetRead:
    start, end = window(budget.period, budget.starts_at, budget.ends_at, now=now)
    spent = {name: spending.of(budget, span) for name, span in spans(start, end, now=now).items()}
    limit = limit_parts(budget.amount_micro)
    assessment = assess(limit=limit, spent=spent, now=now, end=end)
    return BudgetRead(
        name=budget.name,
        scope=budget.scope,  # type: ignore[arg-type]
        value=budget.scope_value,
        period=budget.period,  # type: ignore[arg-type]
        starts_at=budget.starts_at,
        ends_at=budget.ends_at,
        unit=budget.unit,  # type: ignore[arg-type]
        amount=usd_from_micro(budget.amount_micro),
        as_of=now,
        window_start=start,
        window_end=end,
        **asdict(assessment),
        created_at=budget.created_at,
        created_by=budget.created_by,
        updated_at=budget.updated_at,
        updated_by=budget.updated_by,
    )
