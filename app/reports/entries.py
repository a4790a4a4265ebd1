"""A report's entries in exact integer units, and the digest that tells a resend from a change."""

import hashlib
import json
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from app.reports.schemas import ReportIn

MICRO = Decimal(1_000_000)
MILLI = Decimal(1_000)


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


def _units(value: Decimal, scale: Decimal) -> int:
    return int((value * scale).to_integral_value(ROUND_HALF_EVEN))


def normalize(report: ReportIn) -> list[Entry]:
    """Entries in integer units (microseconds, millijoules), in a canonical order."""
    entries = []
    for gpu in report.gpus:
        gpu_us = _units(gpu.gpu_seconds, MICRO)
        entries.append(
            Entry(
                uuid=gpu.uuid,
                job_id=gpu.job_id,
                gpu_index=gpu.index,
                model=gpu.model,
                gpu_us=gpu_us,
                busy_us=_units(gpu_us * gpu.util_pct / 100, Decimal(1)),
                util_pct=str(gpu.util_pct.normalize()),
                energy_mj=_units(gpu.energy_j, MILLI),
                mem_peak_bytes=gpu.mem_peak_bytes,
            )
        )
    return sorted(entries, key=lambda e: (e.uuid, e.job_id or ""))


def payload_digest(report: ReportIn, entries: list[Entry]) -> str:
    """SHA-256 of the report's meaning, so a resend in another spelling still matches."""
    canonical = [
        report.cluster,
        report.node,
        report.seq,
        report.start.isoformat(),
        report.end.isoformat(),
        entries,
    ]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()
