"""A report's entries in exact integer units, and the digest that tells a resend from a change."""

import hashlib
import json
from decimal import Context, Decimal
from typing import TYPE_CHECKING, NamedTuple

from app.core.units import MICRO

if TYPE_CHECKING:  # the schema reads its entries through this module
    from app.reports.schemas import ReportIn

MILLI = Decimal(1_000)
ZERO = Decimal(0)
HUNDRED = Decimal(100)
# Input numbers have at most MAX_DIGITS significant digits (see schemas); in this context no
# product or quotient of them rounds, so round() below is the only rounding.
MAX_DIGITS = 40
_EXACT = Context(prec=4 * MAX_DIGITS)


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
    return round(_EXACT.multiply(seconds, MICRO))


def millis(joules: Decimal) -> int:
    return round(_EXACT.multiply(joules, MILLI))


def busy_micros(gpu_us: int, util_pct: Decimal) -> int:
    """The busy part of `gpu_us` at `util_pct`, rounded once, half to even."""
    return round(_EXACT.divide(_EXACT.multiply(Decimal(gpu_us), util_pct), HUNDRED))


def normalize(report: "ReportIn") -> list[Entry]:
    """Entries in integer units (microseconds, millijoules), in a canonical order."""
    entries = []
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
                busy_micros(gpu_us, util_pct),
                str(_EXACT.normalize(util_pct)),
                millis(gpu.get("energy_j", ZERO)),
                gpu.get("mem_peak_bytes", 0),
            )
        )
    return sorted(entries, key=_canonical_order)


def _canonical_order(entry: Entry) -> tuple[str, str]:
    return entry.uuid, entry.job_id or ""


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
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()
