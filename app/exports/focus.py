"""FOCUS 1.2 rows for GPU usage: one per charge period, job (or idle capacity), GPU model
and price, with the 21 mandatory columns and the conditional ones that fit GPU time."""

import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from app.core.config import Settings
from app.exports.csvout import micro, nano, text
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
) -> Iterator[list[str]]:
    """One FOCUS row per (billing month, line)."""
    account = [text(settings.billing_account_id), text(settings.billing_account_name), "USD"]
    issuers = [text(settings.invoice_issuer_name)]
    parties = [text(settings.provider_name), text(settings.publisher_name)]
    service = ["AI and Machine Learning", text(settings.service_name)]
    periods: dict[str, list[str]] = {}
    for month, line in lines:
        if month not in periods:
            periods[month] = [iso(month_start(next_month(month))), iso(month_start(month))]
        cost = nano(line.cost_nano)
        quantity = nano(line.gpu_nano_hours)
        rate = micro(line.rate)
        idle = line.job_id is None
        where = f"{line.gpu_model} on {line.cluster}"
        description = (
            f"Idle {where}"
            if idle
            else f"{where} for job {line.job_id} ({line.model}, {line.phase})"
        )
        tags = {
            "job_id": line.job_id,
            "model": line.model,
            "phase": line.phase,
            "team": line.team,
            "user": line.user,
        }
        yield [
            cost,
            *account,
            *periods[month],
            "Usage",
            "Correction" if line.kind == "correction" else "",
            text(description),
            iso(charge_end(line.charge_start, granularity)),
            iso(line.charge_start),
            cost,
            cost,
            *issuers,
            cost,
            quantity,
            UNIT,
            *parties,
            *service,
            quantity,
            UNIT,
            rate,
            rate,
            text(line.cluster),
            text(f"{line.cluster}/{'idle' if idle else line.job_id}"),
            text(IDLE_RESOURCE if idle else (line.job_name or line.job_id)),
            IDLE_RESOURCE if idle else "Job",
            text(line.gpu_model),
            text(f"{line.gpu_model}:{rate}:{'default' if line.default_rate else 'card'}"),
            text(line.team),
            text(line.team),
            json.dumps(tags, sort_keys=True, separators=(",", ":")),
        ]
