"""When the spool is full: merge the oldest never-sent reports into hour-long ones.

Nothing measured is dropped: GPU-seconds and energy add up exactly, utilisation becomes the
GPU-second-weighted mean and peak memory the maximum. What is lost is time resolution: usage
inside a merged report can no longer be placed within its hour.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from collectors.aggregate import iso_ms
from collectors.metrics import CollectorMetrics
from collectors.spool import Spool, SpooledReport

logger = logging.getLogger(__name__)

MAX_SPAN_MS = 3_600_000
_SCAN = 10_000


def epoch_ms(stamp: str) -> int:
    """An ISO 8601 timestamp as milliseconds since the epoch."""
    moment = datetime.fromisoformat(stamp)
    return (moment - datetime(1970, 1, 1, tzinfo=moment.tzinfo)) // timedelta(milliseconds=1)


def _duration_ms(body: dict[str, Any]) -> int:
    return epoch_ms(body["end"]) - epoch_ms(body["start"])


def merge_reports(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """One report with the sum of consecutive reports' usage per GPU and job."""
    start = epoch_ms(bodies[0]["start"])
    # After a backwards wall-clock step reports may overlap: the span must hold all seconds.
    end = max(epoch_ms(bodies[-1]["end"]), start + sum(_duration_ms(b) for b in bodies))
    merged: dict[tuple[str, str | None], dict[str, Any]] = {}
    for body in bodies:
        for gpu in body["gpus"]:
            seconds = Decimal(str(gpu["gpu_seconds"]))
            into = merged.setdefault(
                (gpu["uuid"], gpu["job_id"]),
                {**gpu, "gpu_seconds": Decimal(0), "util_pct": Decimal(0), "energy_j": Decimal(0)},
            )
            into["gpu_seconds"] += seconds
            into["util_pct"] += Decimal(str(gpu["util_pct"])) * seconds
            into["energy_j"] += Decimal(str(gpu["energy_j"]))
            into["mem_peak_bytes"] = max(into["mem_peak_bytes"], gpu["mem_peak_bytes"])
    gpus = []
    for entry in merged.values():
        seconds = entry["gpu_seconds"]
        util = entry["util_pct"] / seconds if seconds else Decimal(0)
        gpus.append(
            {
                **entry,
                "gpu_seconds": float(seconds),
                "util_pct": round(float(util), 2),
                "energy_j": float(entry["energy_j"]),
            }
        )
    first = bodies[0]
    return {
        "cluster": first["cluster"],
        "node": first["node"],
        "start": iso_ms(start),
        "end": iso_ms(end),
        "gpus": gpus,
    }


def _groups(reports: list[SpooledReport]) -> list[list[SpooledReport]]:
    """Consecutive runs whose merged report would span at most an hour."""
    groups: list[list[SpooledReport]] = []
    for report in reports:
        group = groups[-1] if groups else None
        if group is not None:
            candidate = [r.body for r in group] + [report.body]
            start = epoch_ms(candidate[0]["start"])
            end = max(epoch_ms(report.body["end"]), start + sum(_duration_ms(b) for b in candidate))
            if end - start <= MAX_SPAN_MS:
                group.append(report)
                continue
        groups.append([report])
    return groups


def merge_oldest(spool: Spool, *, max_bytes: int, wall_ns: int, metrics: CollectorMetrics) -> int:
    """Merge the oldest unsent reports until the spool is under 90% of `max_bytes`."""
    if spool.size_bytes() <= max_bytes:
        return 0
    merged_count = 0
    for group in _groups(spool.pending(_SCAN, unattempted_only=True)):
        if spool.size_bytes() <= max_bytes * 9 // 10:
            break
        if len(group) < 2:
            continue
        spool.replace_reports(
            [r.seq for r in group], merge_reports([r.body for r in group]), wall_ns=wall_ns
        )
        merged_count += len(group)
        metrics.reports_coalesced.inc(len(group))
    if merged_count:
        logger.warning(
            "spool over %d bytes: merged %d unsent reports into hour-long ones",
            max_bytes,
            merged_count,
        )
    if spool.size_bytes() > max_bytes:
        logger.warning("spool still over its limit after coalescing; nothing is dropped")
    return merged_count
