"""FOCUS 1.2 rows for GPU usage: one per charge period, job (or idle capacity), GPU model
and price, with the 21 mandatory columns and the conditional ones that fit GPU time.

A row's cost (`BilledCost`, `EffectiveCost`) and GPU-hours (`PricingQuantity`) are shown
to nine decimals, carried from row to row within a billing month (`units.Carried`): each
row is within a billionth of its exact value, and a month's rows add up to the month's exact
total as the cost API shows it. `ListCost` and `ContractedCost` are the row's quantity times
its one price, exactly (up to 15 decimals), as FOCUS requires.
"""

import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from app.core.config import Settings
from app.core.units import Carried
from app.exports.csvout import cell, fixed, micro, nano, record, text
from app.exports.lines import Line, month_start, next_month

COLUMNS = (
    # Mandatory in FOCUS 1.2.
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
    # Conditional columns that apply to metered GPU time.
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedUnitPrice",
    "ListUnitPrice",
    "RegionId",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
)
UNIT = "GPU-Hours"
IDLE_RESOURCE = "Idle GPU Capacity"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def charge_end(start: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return start + timedelta(hours=1)
    if granularity == "day":
        return start + timedelta(days=1)
    return month_start(next_month(f"{start.year:04d}-{start.month:02d}"))


def focus_rows(
    lines: Iterable[tuple[str, Line]], *, granularity: str, settings: Settings
) -> Iterator[str]:
    """One FOCUS record (a CSV line) per (billing month, line).

    Columns that depend only on the month, the hour or the job are formatted once and
    reused: a year's hourly export repeats each of them thousands of times.
    """
    account = [text(settings.billing_account_id), text(settings.billing_account_name), "USD"]
    middle = [text(settings.invoice_issuer_name)]
    parties = [text(settings.provider_name), text(settings.publisher_name)]
    service = [text("AI and Machine Learning"), text(settings.service_name)]
    billing: dict[str, list[str]] = {}
    charges: dict[datetime, list[str]] = {}
    jobs: dict[tuple[str | None, ...], tuple[str, list[str], list[str], str]] = {}
    prices: dict[tuple[str, int, bool], tuple[str, str]] = {}
    carried: dict[str, tuple[Carried, Carried]] = {}
    for month, line in lines:
        period = billing.get(month)
        if period is None:
            period = billing[month] = [iso(month_start(next_month(month))), iso(month_start(month))]
            carried[month] = (Carried(), Carried())
        charge = charges.get(line.charge_start)
        if charge is None:
            end = charge_end(line.charge_start, granularity)
            charge = charges[line.charge_start] = [iso(end), iso(line.charge_start)]
        job_key = (line.cluster, line.job_id, line.job_name, line.model, line.phase, line.team,
                   line.user, line.gpu_model)  # fmt: skip
        job = jobs.get(job_key)
        if job is None:
            job = jobs[job_key] = _job_columns(line)
        price_key = (line.gpu_model, line.rate, line.default_rate)
        price = prices.get(price_key)
        if price is None:
            rate = micro(line.rate)
            source = "default" if line.default_rate else "card"
            price = prices[price_key] = (rate, text(f"{line.gpu_model}:{rate}:{source}"))
        description, resource, sub_account, tags = job
        costs, quantities = carried[month]
        cost = nano(costs.nano(line.cost_parts))
        hours = quantities.nano(line.gpu_parts)
        quantity = nano(hours)
        list_cost = fixed(hours * line.rate, 15)  # billionths x millionths
        correction = "Correction" if line.kind == "correction" else ""
        yield record([
            cost, *account, *period, "Usage", correction, description, *charge, list_cost, cost,
            *middle, list_cost, quantity, UNIT, *parties, *service, quantity, UNIT, price[0],
            price[0], *resource, price[1], *sub_account, tags,
        ])  # fmt: skip


def _job_columns(line: Line) -> tuple[str, list[str], list[str], str]:
    """Description, resource columns (RegionId to SkuId), team columns and tags of a job."""
    idle = line.job_id is None
    where = f"{line.gpu_model} on {line.cluster}"
    description = (
        f"Idle {where}" if idle else f"{where} for job {line.job_id} ({line.model}, {line.phase})"
    )
    resource = [
        text(line.cluster),
        text(f"{line.cluster}/{'idle' if idle else line.job_id}"),
        text(IDLE_RESOURCE if idle else (line.job_name or line.job_id)),
        IDLE_RESOURCE if idle else "Job",
        text(line.gpu_model),
    ]
    tags = {
        "job_id": line.job_id,
        "model": line.model,
        "phase": line.phase,
        "team": line.team,
        "user": line.user,
    }
    return (
        text(description),
        resource,
        [text(line.team), text(line.team)],
        cell(json.dumps(tags, sort_keys=True, separators=(",", ":"))),
    )
