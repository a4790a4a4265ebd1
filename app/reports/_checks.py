"""The limits a report must keep beyond its schema, each refusal naming the field at fault.

Physical bounds hold per GPU, a MIG device counting against the GPU it is carved from: in
one report a GPU's entries (one per job sharing it, its MIG devices' included) hold at most
the interval's microseconds and at most the energy the interval allows at the configured
maximum power.
"""

from collections import defaultdict
from datetime import datetime, timedelta

from app.core.calendar import span_us
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
    if report.start < settings.earliest_report_start:
        raise InvalidInput(
            "start",
            f"{report.start.isoformat()} is before the earliest accepted start, "
            f"{settings.earliest_report_start.isoformat()}",
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
    _check_devices(report)
    _check_physical_bounds(report, max_watts=settings.max_gpu_power_watts)


def _check_devices(report: ReportIn) -> None:
    """One index and model per device, one index per GPU, one entry per device and job;
    a MIG device names its GPU, a whole GPU names none."""
    first_by_uuid: dict[str, int] = {}
    gpu_by_index: dict[int, str] = {}
    index_by_gpu: dict[str, int] = {}
    jobs_seen: set[tuple[str, str | None]] = set()
    parents = report.parents
    for i, entry in enumerate(report.gpus):
        uuid, index = entry["uuid"], entry["index"]
        is_mig = uuid.startswith("MIG-")
        if is_mig != ("parent_uuid" in entry):
            reason = "a MIG device must name its GPU" if is_mig else "only a MIG device has one"
            raise InvalidInput(f"gpus[{i}].parent_uuid", reason)
        first = report.gpus[first_by_uuid.setdefault(uuid, i)]
        if (first["index"], first["model"], first.get("parent_uuid")) != (
            index,
            entry["model"],
            entry.get("parent_uuid"),
        ):
            raise InvalidInput(
                f"gpus[{i}]", f"GPU {uuid} appears with another index, model or parent"
            )
        gpu = parents.get(uuid, uuid)
        if gpu_by_index.setdefault(index, gpu) != gpu:
            raise InvalidInput(f"gpus[{i}].index", f"index {index} is given to two GPUs")
        if index_by_gpu.setdefault(gpu, index) != index:
            raise InvalidInput(
                f"gpus[{i}].index", f"GPU {gpu} and its MIG devices have another index"
            )
        job = (uuid, entry["job_id"])
        if job in jobs_seen:
            raise InvalidInput(f"gpus[{i}].job_id", f"job {job[1]} appears twice for GPU {uuid}")
        jobs_seen.add(job)


def _check_physical_bounds(report: ReportIn, *, max_watts: int) -> None:
    interval_us = span_us(report.start, report.end)
    # mJ = W x µs / 1000
    energy_limit_mj = interval_us * max_watts // 1000
    used_us: dict[str, int] = defaultdict(int)
    used_mj: dict[str, int] = defaultdict(int)
    parents = report.parents
    for i, entry in enumerate(report.units):
        gpu = parents.get(entry.uuid, entry.uuid)
        used_us[gpu] += entry.gpu_us
        if used_us[gpu] > interval_us:
            raise InvalidInput(
                f"gpus[{i}].gpu_seconds",
                f"GPU {gpu} totals {used_us[gpu]} µs of GPU time in an interval of "
                f"{interval_us} µs",
            )
        used_mj[gpu] += entry.energy_mj
        if used_mj[gpu] > energy_limit_mj:
            raise InvalidInput(
                f"gpus[{i}].energy_j",
                f"GPU {gpu} totals {used_mj[gpu]} mJ in {interval_us} µs, more than "
                f"{max_watts} W allows ({energy_limit_mj} mJ)",
            )
