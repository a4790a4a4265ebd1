"""The limits a report must keep beyond its schema, each refusal naming the field at fault."""

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.reports.schemas import ReportIn


def check_report(report: ReportIn, *, settings: Settings, now: datetime) -> None:
    """Reject a report that breaks a configured limit, naming the field at fault."""
    interval = report.end - report.start
    if interval > timedelta(seconds=settings.max_report_interval_seconds):
        raise InvalidInput(
            "end",
            f"interval of {interval.total_seconds():g} s exceeds the maximum of "
            f"{settings.max_report_interval_seconds} s",
        )
    latest = now + timedelta(seconds=settings.max_future_skew_seconds)
    if report.end > latest:
        raise InvalidInput(
            "end",
            f"{report.end.isoformat()} is more than {settings.max_future_skew_seconds} s "
            f"ahead of the server clock ({now.isoformat()})",
        )
    if len(report.gpus) > settings.max_gpus_per_report:
        raise InvalidInput(
            "gpus",
            f"{len(report.gpus)} entries exceed the maximum of {settings.max_gpus_per_report}",
        )
    _check_gpu_entries(report, settings=settings)


def _check_gpu_entries(report: ReportIn, *, settings: Settings) -> None:
    capacity = Decimal(str((report.end - report.start).total_seconds()))
    limit = capacity + settings.gpu_seconds_tolerance_seconds
    first_by_uuid: dict[str, int] = {}
    uuid_by_index: dict[int, str] = {}
    used: dict[str, Decimal] = defaultdict(Decimal)
    jobs_seen: set[tuple[str, str | None]] = set()
    for i, entry in enumerate(report.gpus):
        uuid, index = entry["uuid"], entry["index"]
        first = report.gpus[first_by_uuid.setdefault(uuid, i)]
        if (first["index"], first["model"]) != (index, entry["model"]):
            raise InvalidInput(f"gpus[{i}]", f"GPU {uuid} appears with another index or model")
        if uuid_by_index.setdefault(index, uuid) != uuid:
            raise InvalidInput(f"gpus[{i}].index", f"index {index} is given to two GPUs")
        job = (uuid, entry["job_id"])
        if job in jobs_seen:
            raise InvalidInput(f"gpus[{i}].job_id", f"job {job[1]} appears twice for GPU {uuid}")
        jobs_seen.add(job)
        used[uuid] += entry["gpu_seconds"]
        if used[uuid] > limit:
            raise InvalidInput(
                f"gpus[{i}].gpu_seconds",
                f"GPU {uuid} totals {used[uuid]} GPU-seconds in a {capacity} s interval",
            )
