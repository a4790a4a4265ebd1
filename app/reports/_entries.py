"""A report's entries in exact integer units, and the digest that tells a resend from a change."""

import hashlib
import json
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, NamedTuple

from app.core.units import EXACT, MICRO_DIGITS, MILLI_DIGITS

if TYPE_CHECKING:  # the schema reads its entries through this module
    from app.reports.schemas import ReportIn

ZERO = Decimal(0)
PERCENT_DIGITS = 2  # a percentage as a fraction: 10**-2


class Entry(NamedTuple):
    """One GPU's usage for one job (or idle) in a report, in exact integer units."""

    uuid: str
    job_id: str | None
    gpu_index: int
    model: str
    gpu_us: int
    busy_us: int
    util_pct: str
    energy_mj: int
    mem_peak_bytes: int


def micros(seconds: Decimal) -> int:
    """Seconds as whole microseconds, as stored: rounded once, half to even."""
    return round(seconds.scaleb(MICRO_DIGITS, EXACT))


def in_units(report: "ReportIn") -> list[Entry]:
    """The entries in integer units (microseconds, millijoules), in the report's order;
    busy time is GPU time x utilisation. Each is rounded once, half to even. (`scaleb`
    moves the point: exact, and cheaper than multiplying by a power of ten.)"""
    entries = []
    with localcontext(EXACT):
        for gpu in report.gpus:
            util_pct = gpu.get("util_pct", ZERO)
            gpu_us = micros(gpu["gpu_seconds"])
            entries.append(
                Entry(
                    gpu["uuid"],
                    gpu["job_id"],
                    gpu["index"],
                    gpu["model"],
                    gpu_us,
                    round((gpu_us * util_pct).scaleb(-PERCENT_DIGITS)),
                    str(util_pct.normalize()),
                    round(gpu.get("energy_j", ZERO).scaleb(MILLI_DIGITS)),
                    gpu.get("mem_peak_bytes", 0),
                )
            )
    return entries


def canonical_order(entry: Entry) -> tuple[str, str]:
    return entry.uuid, entry.job_id or ""


# json.dumps with its own separators makes an encoder per call: one, made once.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def payload_digest(report: "ReportIn") -> str:
    """SHA-256 of the report's meaning, so a resend in another spelling still matches."""
    canonical: list[object] = [
        report.cluster,
        report.node,
        report.seq,
        report.start.isoformat(),
        report.end.isoformat(),
        report.entries,
    ]
    if report.parents:  # only MIG devices have one: other reports keep their digest
        canonical.append(sorted(report.parents.items()))
    return hashlib.sha256(_COMPACT.encode(canonical).encode()).hexdigest()
