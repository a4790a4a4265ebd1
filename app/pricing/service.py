"""Setting and listing effective-dated prices; every change goes to the audit log."""

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.unique import insert_unless_present
from app.core.units import micro_from_usd, plain, usd_from_micro
from app.core.upsert import get_or_create_ids
from app.models import Cluster, EnergyRate, Rate
from app.pricing.schemas import EnergyRateCreate, EnergyRateRead, RateCreate, RateRead
from app.pricing.spans import in_force

# Rate or EnergyRate: the two tables share every column but the price.
PriceModel = Any


def set_rate(
    session: Session, *, body: RateCreate, actor: str, now: datetime
) -> tuple[RateRead, bool]:
    """Set the GPU-hour price for a GPU model (and cluster) from an hour on; True if new."""
    key = {"gpu_model": body.gpu_model}
    created = _set_price(
        session,
        Rate,
        key=key,
        body=body,
        price=micro_from_usd(body.usd_per_gpu_hour),
        actor=actor,
        now=now,
    )
    [rate] = [r for r in list_rates(session) if _same(r, body) and r.gpu_model == body.gpu_model]
    return rate, created


def set_energy_rate(
    session: Session, *, body: EnergyRateCreate, actor: str, now: datetime
) -> tuple[EnergyRateRead, bool]:
    """Set the price of a kWh (for a cluster, or all) from an hour on; True if new."""
    created = _set_price(
        session,
        EnergyRate,
        key={},
        body=body,
        price=micro_from_usd(body.usd_per_kwh),
        actor=actor,
        now=now,
    )
    [rate] = [r for r in list_energy_rates(session) if _same(r, body)]
    return rate, created


def _same(read: RateRead | EnergyRateRead, body: RateCreate | EnergyRateCreate) -> bool:
    return read.cluster == body.cluster and read.effective_from == body.effective_from


def _price_column(model: PriceModel) -> str:
    return "micro_usd_per_gpu_hour" if model is Rate else "micro_usd_per_kwh"


def _set_price(
    session: Session,
    model: PriceModel,
    *,
    key: dict[str, Any],
    body: RateCreate | EnergyRateCreate,
    price: int,
    actor: str,
    now: datetime,
) -> bool:
    cluster_id = None
    if body.cluster is not None:
        cluster_id = get_or_create_ids(
            session, Cluster, ["name"], [{"name": body.cluster, "created_at": now}]
        )[(body.cluster,)]
    column = _price_column(model)
    cluster_match = (
        model.cluster_id.is_(None) if cluster_id is None else model.cluster_id == cluster_id
    )
    where = [cluster_match, *(getattr(model, k) == v for k, v in key.items())]
    same_start = select(model).where(*where, model.effective_from == body.effective_from)
    existing: Any = session.execute(same_start.with_for_update()).scalar_one_or_none()
    target = {**key, "cluster": body.cluster, "effective_from": body.effective_from.isoformat()}
    kind = "rate" if model is Rate else "energy_rate"
    created = False
    if existing is None:
        # The price in force at that instant until now, so the log shows what changed.
        before = session.execute(
            select(getattr(model, column))
            .where(*where, model.effective_from < body.effective_from)
            .order_by(model.effective_from.desc())
            .limit(1)
        ).scalar_one_or_none()
        row = {
            **key,
            "cluster_id": cluster_id,
            "effective_from": body.effective_from,
            "created_at": now,
            "created_by": actor,
            column: price,
        }
        # The unique key decides between concurrent requests setting the same start.
        created = insert_unless_present(session, model, row)
        if not created:
            existing = session.execute(same_start.with_for_update()).scalar_one()
    if created:
        old = None if before is None else plain(usd_from_micro(before))
        action = f"{kind}.create"
    elif getattr(existing, column) != price:
        old = plain(usd_from_micro(getattr(existing, column)))
        setattr(existing, column, price)
        existing.created_at, existing.created_by = now, actor
        action = f"{kind}.restate"
    else:
        return False
    record(
        session,
        at=now,
        actor=actor,
        action=action,
        target=f"{kind}:" + "/".join(str(v) for v in target.values() if v is not None),
        details={**target, "old": old, "new": plain(usd_from_micro(price))},
    )
    session.flush()
    return created


def _with_ends(
    session: Session, model: PriceModel, key_of: Any
) -> list[tuple[Any, str | None, datetime | None]]:
    """Each price row with its cluster's name and the instant the next price of its key starts."""
    rows = session.execute(
        select(model, Cluster.name).outerjoin(Cluster, Cluster.id == model.cluster_id)
    ).all()
    spans = in_force(
        rows, key=lambda r: (key_of(r[0]), r[1] or ""), start=lambda r: r[0].effective_from
    )
    return [(row, cluster, end) for (row, cluster), end in spans]


def list_rates(session: Session) -> list[RateRead]:
    """Every GPU-hour price, grouped by GPU model and cluster, oldest first."""
    return [
        RateRead(
            gpu_model=row.gpu_model,
            cluster=cluster,
            usd_per_gpu_hour=usd_from_micro(row.micro_usd_per_gpu_hour),
            effective_from=row.effective_from,
            effective_to=end,
            created_at=row.created_at,
            created_by=row.created_by,
        )
        for row, cluster, end in _with_ends(session, Rate, lambda r: r.gpu_model)
    ]


def list_energy_rates(session: Session) -> list[EnergyRateRead]:
    """Every kWh price, by cluster (general first), oldest first."""
    return [
        EnergyRateRead(
            cluster=cluster,
            usd_per_kwh=usd_from_micro(row.micro_usd_per_kwh),
            effective_from=row.effective_from,
            effective_to=end,
            created_at=row.created_at,
            created_by=row.created_by,
        )
        for row, cluster, end in _with_ends(session, EnergyRate, lambda r: "")
    ]
