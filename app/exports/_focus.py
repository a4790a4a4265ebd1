"""FOCUS 1.2 rows for GPU usage: one per charge period, job (or idle capacity), GPU model
and price, with every column of the specification that applies to metered GPU time.

A row's cost (`BilledCost`, `EffectiveCost`) and GPU-hours (`PricingQuantity`) are shown
to nine decimals, carried from row to row within a billing month (`units.Carried`): each
row is within a billionth of its exact value, and a month's rows add up to the month's exact
total as the cost API shows it. `ListCost` and `ContractedCost` are the row's quantity times
its one price, exactly (15 decimals), as FOCUS requires. Every number has its column's fixed
number of decimals, so that a reader infers one decimal type per column.

Rows are lists of fields as a file's `Writing` writes them: the CSV's neutralised and escaped
text, or values as they are (None for null) that the Parquet writer types (`FIELD_TYPES`).
"""

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.billing.lines import Line
from app.core.calendar import month_bounds, next_month_start
from app.core.config import Settings
from app.core.labels import GPUCOST_TAG_PREFIX
from app.core.units import Carried

# (column, type): "text" and "json" are strings (a JSON object's text for "json"), "time" an
# instant in UTC, "decimal:N" an exact decimal with N places.
FIELD_TYPES = (
    # Mandatory in FOCUS 1.2.
    ("BilledCost", "decimal:9"),
    ("BillingAccountId", "text"),
    ("BillingAccountName", "text"),
    ("BillingCurrency", "text"),
    ("BillingPeriodEnd", "time"),
    ("BillingPeriodStart", "time"),
    ("ChargeCategory", "text"),
    ("ChargeClass", "text"),
    ("ChargeDescription", "text"),
    ("ChargePeriodEnd", "time"),
    ("ChargePeriodStart", "time"),
    ("ContractedCost", "decimal:15"),
    ("EffectiveCost", "decimal:9"),
    ("InvoiceIssuerName", "text"),
    ("ListCost", "decimal:15"),
    ("PricingQuantity", "decimal:9"),
    ("PricingUnit", "text"),
    ("ProviderName", "text"),
    ("PublisherName", "text"),
    ("ServiceCategory", "text"),
    ("ServiceName", "text"),
    # Conditional columns that apply to metered GPU time.
    ("ConsumedQuantity", "decimal:9"),
    ("ConsumedUnit", "text"),
    ("ContractedUnitPrice", "decimal:6"),
    ("ListUnitPrice", "decimal:6"),
    ("RegionId", "text"),
    ("ResourceId", "text"),
    ("ResourceName", "text"),
    ("ResourceType", "text"),
    ("SkuId", "text"),
    ("SkuPriceId", "text"),
    ("SubAccountId", "text"),
    ("SubAccountName", "text"),
    ("Tags", "json"),
    ("RegionName", "text"),
    ("SkuMeter", "text"),
    ("SkuPriceDetails", "json"),
    # Recommended.
    ("ChargeFrequency", "text"),
    ("InvoiceId", "text"),
    ("ServiceSubcategory", "text"),
)
COLUMNS = tuple(name for name, _ in FIELD_TYPES)
UNIT = "GPU-Hours"
IDLE_RESOURCE = "Idle GPU Capacity"
SERVICE_CATEGORY = "AI and Machine Learning"
SERVICE_SUBCATEGORY = "Machine Learning"  # FOCUS: creating, training and deploying ML models
SKU_METER = "GPU Time"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def scaled(value: int, places: int) -> str:
    """An integer of 10^-places as a decimal with exactly `places` decimals:
    (2_500_000_000, 9) -> `2.500000000`, (-5, 9) -> `-0.000000005`."""
    whole, fraction = divmod(abs(value), 10**places)
    return f"{'-' if value < 0 else ''}{whole}.{fraction:0{places}d}"


def charge_end(start: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return start + timedelta(hours=1)
    if granularity == "day":
        return start + timedelta(days=1)
    return next_month_start(start)


def invoice_id(settings: Settings, month: str) -> str:
    """The invoice a billing month's charges go on: provisional while the month is open (FOCUS
    lets it be made before the invoice is issued), so that closing a month changes no byte of
    its export."""
    return f"{settings.billing_account_id}:{month}"


@dataclass(frozen=True)
class Writing:
    """How a file writes a text field, a JSON field and a null: applied once to each field
    that recurs (a job's, a price's, a month's), never per row."""

    text: Callable[[str], Any]
    json: Callable[[str], Any]
    null: Any


def _same(value: str) -> str:
    return value


# Parquet keeps values as they are; the CSV writer neutralises and escapes them.
AS_VALUES = Writing(text=_same, json=_same, null=None)


def focus_rows(
    lines: Iterable[tuple[str, Line]], *, granularity: str, settings: Settings, writing: Writing
) -> Iterator[list[Any]]:
    """One FOCUS row (fields in `COLUMNS` order, as `writing` writes them) per (billing
    month, line).

    Fields that depend only on the month, the hour, the job or the price are made once and
    reused: a year's hourly export repeats each of them thousands of times.
    """
    text = writing.text
    constant = [
        [text(settings.billing_account_id), text(settings.billing_account_name), "USD"],
        [text(settings.invoice_issuer_name)],
        [text(settings.provider_name), text(settings.publisher_name)],
        [text(SERVICE_CATEGORY), text(settings.service_name)],
    ]
    account, issuer, parties, service = constant
    unit, usage, meter = text(UNIT), text("Usage"), text(SKU_METER)
    charge_class = {"usage": writing.null, "correction": text("Correction")}
    billing: dict[str, tuple[list[Any], list[Any]]] = {}
    charges: dict[datetime, list[Any]] = {}
    jobs: dict[tuple[Any, ...], list[Any]] = {}
    prices: dict[tuple[str, int, bool], tuple[Any, Any, Any]] = {}
    carried: dict[str, tuple[Carried, Carried]] = {}
    for month, line in lines:
        period = billing.get(month)
        if period is None:
            # The billing period's end, then its start, as the columns come.
            period = billing[month] = (
                [iso(instant) for instant in reversed(month_bounds(month))],
                [text("Usage-Based"), text(invoice_id(settings, month)), text(SERVICE_SUBCATEGORY)],
            )
            carried[month] = (Carried(), Carried())
        charge = charges.get(line.charge_start)
        if charge is None:
            end = charge_end(line.charge_start, granularity)
            charge = charges[line.charge_start] = [iso(end), iso(line.charge_start)]
        job_key = (line.cluster, line.job_id, line.job_name, line.model, line.phase, line.team,
                   line.user, line.labels, line.gpu_model)  # fmt: skip
        job = jobs.get(job_key)
        if job is None:
            job = jobs[job_key] = _job_fields(line, writing)
        price_key = (line.gpu_model, line.rate, line.default_rate)
        price = prices.get(price_key)
        if price is None:
            price = prices[price_key] = _price_fields(line, writing)
        description, region, resource_id, resource_name, resource_type, sku, team, tags = job
        costs, quantities = carried[month]
        cost = scaled(costs.nano(line.cost_parts), 9)
        hours = quantities.nano(line.gpu_parts)
        quantity = scaled(hours, 9)
        list_cost = scaled(hours * line.rate, 15)  # billionths x millionths
        rate, price_id, price_details = price
        yield [
            cost, *account, *period[0], usage, charge_class[line.kind], description, *charge,
            list_cost, cost, *issuer, list_cost, quantity, unit, *parties, *service, quantity,
            unit, rate, rate, region, resource_id, resource_name, resource_type, sku, price_id,
            team, team, tags, region, meter, price_details, *period[1],
        ]  # fmt: skip


def _price_fields(line: Line, writing: Writing) -> tuple[str, Any, Any]:
    """The unit price, the price's id and its details (FOCUS key-value JSON)."""
    rate = scaled(line.rate, 6)
    source = "default" if line.default_rate else "card"
    details = {"x_GpuModel": line.gpu_model, "x_PriceSource": source}
    return (
        rate,
        writing.text(f"{line.gpu_model}:{rate}:{source}"),
        writing.json(json.dumps(details, sort_keys=True)),
    )


def _job_fields(line: Line, writing: Writing) -> list[Any]:
    """A job's description, region, resource id, name and type, SKU, team and tags."""
    idle = line.job_id is None
    where = f"{line.gpu_model} on {line.cluster}"
    description = (
        f"Idle {where}" if idle else f"{where} for job {line.job_id} ({line.model}, {line.phase})"
    )
    own = {
        "job_id": line.job_id,
        "model": line.model,
        "phase": line.phase,
        "team": line.team,
        "user": line.user,
    }
    # gpucost's own tags carry its prefix; the job's labels, the one user-defined tag scheme,
    # carry none (FOCUS Tags).
    tags = {
        **json.loads(line.labels),
        **{GPUCOST_TAG_PREFIX + key: value for key, value in own.items()},
    }
    text = writing.text
    return [
        text(description),
        text(line.cluster),
        # Idle capacity is one resource per GPU model of a cluster.
        text(f"{line.cluster}/idle/{line.gpu_model}" if idle else f"{line.cluster}/{line.job_id}"),
        text(IDLE_RESOURCE if idle else (line.job_name or str(line.job_id))),
        text(IDLE_RESOURCE if idle else "Job"),
        text(line.gpu_model),
        text(line.team),
        writing.json(json.dumps(tags, sort_keys=True, separators=(",", ":"))),
    ]
