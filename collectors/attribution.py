"""Which job holds a GPU: the mapping directory, else the processes' cgroup or environment.

The mapping directory holds one file per GPU index, GPU UUID or MIG UUID whose content is the
job id (several ids, whitespace-separated, share the GPU). It is the source of truth for
allocation: a GPU mapped to a job with no process on it is still that job's (held but idle).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from collectors.sampling import GpuReading, UnitReading

logger = logging.getLogger(__name__)

_SLURM_CGROUP = re.compile(r"/job_(\d+)(?:/|$)")
_POD_CGROUP = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)
_JOB_ENV = ("GPUCOST_JOB_ID", "SLURM_JOB_ID")
# What the service accepts as a job id; anything else would get the whole report rejected.
# A job id as the service accepts it, matched whole (`fullmatch`: `$` lets a newline through).
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
# Job metadata read from a process's environment: field -> variables, first found wins.
_METADATA_ENV = {
    "model": ("GPUCOST_MODEL",),
    "phase": ("GPUCOST_PHASE",),
    "team": ("GPUCOST_TEAM",),
    "user": ("GPUCOST_USER", "SLURM_JOB_USER"),
    "name": ("GPUCOST_JOB_NAME", "SLURM_JOB_NAME"),
}


@dataclass(frozen=True)
class Share:
    """A job's part of one GPU during a sample, and the memory it held."""

    fraction: Fraction
    mem_bytes: int


@dataclass
class Attribution:
    shares: dict[str, dict[str | None, Share]] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)


def job_from_cgroup(text: str) -> str | None:
    """Slurm's `job_<id>` path element, or a Kubernetes pod UID."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if match := _SLURM_CGROUP.search(path):
            return match.group(1)
        if match := _POD_CGROUP.search(path):
            return match.group(1).replace("_", "-")
    return None


def parse_environ(raw: bytes) -> dict[str, str]:
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


class Attributor:
    def __init__(self, *, mapping_dir: Path, proc_root: Path) -> None:
        self._mapping_dir = mapping_dir
        self._proc_root = proc_root
        self._refused: set[str] = set()

    def _valid(self, job: str | None, source: str) -> str | None:
        if job is None or JOB_ID.fullmatch(job):
            return job
        if job not in self._refused:
            self._refused.add(job)
            logger.warning("ignoring malformed job id %r from %s", job[:200], source)
        return None

    def _read_mapping(self) -> dict[str, list[str]]:
        try:
            names = [p for p in self._mapping_dir.iterdir() if p.is_file()]
        except OSError:
            return {}
        mapping = {}
        for path in names:
            try:
                words = path.read_text().split()
            except OSError:
                continue  # removed by an epilog between listing and reading
            jobs = [j for j in words if self._valid(j, str(path))]
            if jobs:
                mapping[path.name] = jobs
        return mapping

    def _process_job(self, pid: int, metadata: dict[str, dict[str, str]]) -> str | None:
        pid_dir = self._proc_root / str(pid)
        try:
            environ = parse_environ((pid_dir / "environ").read_bytes())
        except OSError:
            environ = {}
        job = None
        try:
            job = job_from_cgroup((pid_dir / "cgroup").read_text())
        except OSError:
            pass
        if job is None:
            job = next((environ[k] for k in _JOB_ENV if environ.get(k)), None)
        job = self._valid(job, f"process {pid}")
        if job is not None and job not in metadata:
            found = {
                name: next(environ[v] for v in variables if environ.get(v))
                for name, variables in _METADATA_ENV.items()
                if any(environ.get(v) for v in variables)
            }
            if found:
                metadata[job] = found
        return job

    def attribute(self, gpus: tuple[GpuReading, ...]) -> Attribution:
        """Each GPU's shares by job (None: idle); they sum to 1 per GPU."""
        mapping = self._read_mapping()
        result = Attribution()
        for gpu in gpus:
            shares: dict[str | None, Share] = {}
            for unit in gpu.units:
                for job, share in self._unit_shares(gpu, unit, mapping, result.metadata):
                    old = shares.get(job, Share(Fraction(0), 0))
                    shares[job] = Share(
                        old.fraction + share.fraction, old.mem_bytes + share.mem_bytes
                    )
            result.shares[gpu.uuid] = shares
        return result

    def _unit_shares(
        self,
        gpu: GpuReading,
        unit: UnitReading,
        mapping: dict[str, list[str]],
        metadata: dict[str, dict[str, str]],
    ) -> list[tuple[str | None, Share]]:
        mapped = next(
            (mapping[k] for k in (unit.key, gpu.uuid, str(gpu.index)) if k in mapping), None
        )
        pid_jobs = [(self._process_job(pid, metadata), mem) for pid, mem in unit.pids]
        jobs: list[str | None] = list(dict.fromkeys(mapped or [j for j, _ in pid_jobs if j]))
        unit_mem = gpu.mem_used_bytes if unit.key == gpu.uuid else unit.mem_used_bytes
        if len(jobs) <= 1:
            return [(jobs[0] if jobs else None, Share(unit.fraction, unit_mem))]
        part = unit.fraction / len(jobs)
        return [
            (job, Share(part, sum(mem or 0 for j, mem in pid_jobs if j == job))) for job in jobs
        ]
