"""What a simulated node's GPUs do: the fake NVML's script, derived from the fleet scenario.

Each job's processes carry its `GPUCOST_*` environment, as a launcher would set it, so that
the collector finds the job and its metadata the way it does on a real node.
"""

from __future__ import annotations

import zlib
from fractions import Fraction
from typing import Any

from simulator.scenario import Job, SimScenario


def jobs_on(s: SimScenario, node: int) -> list[Job]:
    first = node * s.gpus_per_node
    return [j for j in s.jobs if any(j.holds(g) for g in range(first, first + s.gpus_per_node))]


def gpu_uuid(cluster: str, gpu: int) -> str:
    tag = zlib.crc32(cluster.encode()) & 0xFFFFFFFF
    return f"GPU-{tag:08x}-{gpu >> 16 & 0xFFFF:04x}-4{gpu >> 4 & 0xFFF:03x}-8000-{gpu:012x}"


def mig_uuid(cluster: str, gpu: int, instance: int) -> str:
    return "MIG" + gpu_uuid(cluster, gpu)[3:-2] + f"{instance:02x}"


def job_segments(scenario: SimScenario, job: Job) -> list[tuple[Fraction, Fraction]]:
    """When the job's processes run: its span, less the gaps of its restarts."""
    segments = [(job.start, job.end)]
    for event in scenario.events:
        if event.kind == "job-restart" and event.job_id == job.job_id:
            gap = (event.at, event.at + event.duration)
            segments = [
                part
                for lo, hi in segments
                for part in ((lo, min(hi, gap[0])), (max(lo, gap[1]), hi))
                if part[1] > part[0]
            ]
    return segments


def nvml_script(s: SimScenario, node: int) -> dict[str, Any]:
    """The fake NVML's scenario for one node: its GPUs and its jobs' processes."""
    first = node * s.gpus_per_node
    local_gpus = range(first, first + s.gpus_per_node)
    jobs = jobs_on(s, node)
    lost = {e.gpu: e.at for e in s.events if e.kind == "gpu-lost" and e.gpu is not None}
    gpus, processes = [], []
    pid = 1000
    moments = sorted(s.boundaries())
    for local, gpu in enumerate(local_gpus):
        util, power = [], []
        for moment in moments:
            running = running_job(s, jobs, gpu, moment)
            whole = gpu not in s.mig
            util.append({"at": str(moment), "value": running.util_pct if running and whole else 0})
            power.append(
                {
                    "at": str(moment),
                    "value": 1000 * (running.power_w if running else s.idle_power_w),
                }
            )
        spec: dict[str, Any] = {
            "index": local,
            "uuid": gpu_uuid(s.cluster, gpu),
            "name": s.gpu_model_of(node),
            "util": util,
            "power_mw": power,
        }
        if gpu in lost:
            spec["lost_at"] = str(lost[gpu])
        if gpu in s.mig:
            spec["mig"] = [
                {"uuid": mig_uuid(s.cluster, gpu, i), "gi_slices": n, "ci_slices": n}
                for i, n in enumerate(s.mig[gpu])
            ]
        gpus.append(spec)
        for job in jobs:
            if not job.holds(gpu) or job.held_idle:
                continue
            for start, end in job_segments(s, job):
                pid += 1
                environ = {"GPUCOST_JOB_ID": job.job_id}
                environ |= {f"GPUCOST_{k.upper()}": v for k, v in job.metadata().items()}
                processes.append(
                    {
                        "pid": pid,
                        "gpu": local,
                        "mig": None if job.mig is None else mig_uuid(s.cluster, *job.mig),
                        "start": str(start),
                        "end": str(end),
                        "used_memory": 60 * 1024**3,
                        "environ": environ,
                    }
                )
    return {"start_wall": s.start.isoformat(), "gpus": gpus, "processes": processes}


def running_job(s: SimScenario, jobs: list[Job], gpu: int, moment: Fraction) -> Job | None:
    """The whole-GPU job whose processes run on `gpu` at `moment` (None: none or MIG)."""
    for job in jobs:
        if job.holds(gpu) and not job.held_idle and job.mig is None:
            if any(lo <= moment < hi for lo, hi in job_segments(s, job)):
                return job
    return None
