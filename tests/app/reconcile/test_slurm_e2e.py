"""End to end with a real Slurm: jobs run by slurmctld/slurmd with the shipped prolog/epilog,
the real collector (fake NVML on the system clock) reporting to `gpucost serve` on PostgreSQL,
and `gpucost reconcile slurm` comparing each job with Slurm's own accounting (slurmdbd). One
job leaves its token count for the epilog, which sends it with `gpucost-collector job-tokens`.

Tolerance, per GPU of a job: the collector sees a mapping from its first sample after the
prolog wrote it to its first sample after the epilog removed it, so each job's measured time
is its prolog-to-epilog time give or take one sampling interval; the prolog runs just after
Slurm's Start and the epilog just after its End, which adds up to a second or so on a loaded
machine. Hence one sample interval plus two seconds per GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import httpx
import pytest

from app.reconcile.sacct import SACCT_FIELDS, parse_sacct
from tests.app.jobs.test_job_tokens_cli import configure_epilog, write_config
from tests.collectors.helpers import gpu
from tests.collectors.service import BIN, Service
from tests.slurm_cluster import SlurmCluster, require_slurm

SAMPLE_S = 1
TOLERANCE_S = SAMPLE_S + 2
CLUSTER = "slurm-e2e"
FINAL = ("COMPLETED", "FAILED", "CANCELLED")
TOKENS = 14_800_000_000_000


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[SlurmCluster]:
    require_slurm()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "slurm").mkdir()
    cluster = SlurmCluster(tmp_path / "slurm", mapping_dir=tmp_path / "jobs")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    (tmp_path / "service").mkdir()
    server = Service(tmp_path / "service")
    yield server
    server.close()


def start_collector(root: Path, service: Service) -> subprocess.Popen[bytes]:
    """The real collector on the fake NVML, its eight GPUs on the system clock."""
    scenario = {"gpus": [gpu(i, util=40, power_mw=300_000) for i in range(8)]}
    (root / "scenario.json").write_text(json.dumps(scenario))
    (root / "token").write_text(service.token("collector", CLUSTER) + "\n")
    (root / "proc").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
    return subprocess.Popen(
        [
            str(BIN / "gpucost-collector"),
            "run",
            "--server",
            service.url,
            "--token-file",
            str(root / "token"),
            "--cluster",
            CLUSTER,
            "--node",
            "node-1",
            "--sample-interval",
            f"{SAMPLE_S}s",
            "--report-interval",
            "5s",
            "--spool",
            str(root / "spool.db"),
            "--mapping-dir",
            str(root / "jobs"),
            "--proc-root",
            str(root / "proc"),
            "--nvml",
            f"fake:{root / 'scenario.json'}",
            "--fake-clock",
            "system",
        ],  # fmt: skip
        env=env,
        stdout=(root / "collector.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


def send_tokens_from(root: Path, slurm: SlurmCluster, service: Service) -> Path:
    """The epilog set to send the counts jobs leave in `root/tokens`, with the collector's
    settings (a config file, as on a node); that directory."""
    tokens = root / "tokens"
    tokens.mkdir()
    tokens.chmod(0o1777)
    config = write_config(root / "collector.toml", service.url, root / "token", CLUSTER)
    configure_epilog(slurm.root / "epilog", TOKENS_DIR=tokens,
                     COLLECTOR=BIN / "gpucost-collector", COLLECTOR_CONFIG=config)  # fmt: skip
    return tokens


def submit_mix(slurm: SlurmCluster, tokens: Path, label: Callable[[str], object]) -> dict[str, str]:
    """Concurrent jobs, one queued behind them, a failed one, a cancelled one, an `srun` step
    and a job without GPUs; their ids by role. The first is labelled at once, and leaves its
    token count when it ends."""
    leave = f"echo {TOKENS} > {tokens}/$SLURM_JOB_ID"
    first = slurm.sbatch("--gres=gpu:2", "--wrap", f"sleep 20; {leave}")
    label(first)
    jobs = {
        "two-gpus": first,
        "three-gpus": slurm.sbatch("--gres=gpu:3", "--wrap", "sleep 12"),
        "cancelled": slurm.sbatch("--gres=gpu:2", "--wrap", "sleep 600"),
        "srun-step": slurm.sbatch("--gres=gpu:1", "--wrap", "srun --gres=gpu:1 sleep 9"),
        "no-gpu": slurm.sbatch("--wrap", "sleep 5"),
    }
    # All eight GPUs: it waits until every GPU job above has ended.
    jobs["queued"] = slurm.sbatch("--gres=gpu:8", "--wrap", "sleep 6")
    jobs["failed"] = slurm.sbatch("--gres=gpu:1", "--wrap", "sleep 7; exit 3")
    slurm.wait_until(
        lambda: slurm.job_states([jobs["cancelled"]]).get(jobs["cancelled"]) == "RUNNING",
        "the job to cancel runs",
        60,
    )
    time.sleep(10)
    slurm.command("scancel", jobs["cancelled"])
    return jobs


def reconcile(
    service: Service, slurm: SlurmCluster, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "gpucost"),
            "reconcile",
            "slurm",
            "--cluster",
            CLUSTER,
            "--tolerance",
            str(TOLERANCE_S),
            *args,
        ],  # fmt: skip
        env={**service.env, **slurm.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_each_jobs_gpu_seconds_match_slurms_accounting(
    tmp_path: Path, slurm: SlurmCluster, service: Service
) -> None:
    began = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 60))
    collector = start_collector(tmp_path, service)
    tokens = send_tokens_from(tmp_path, slurm, service)
    admin = {"Authorization": f"Bearer {service.token('admin')}"}
    try:
        # Labels set while the job runs, which the count sent by its epilog leaves in place.
        jobs = submit_mix(
            slurm,
            tokens,
            lambda job: httpx.put(
                f"{service.url}/v1/jobs/{CLUSTER}/{job}",
                json={"model": "e2e-model", "phase": "pre-training"},
                headers=admin,
            ).raise_for_status(),
        )
        ids = list(jobs.values())
        slurm.wait_until(
            lambda: (
                all(s.split()[0] in FINAL for s in slurm.job_states(ids).values())
                and len(slurm.job_states(ids)) == len(ids)
            ),
            "every job has ended",
            240,
        )
        slurm.wait_until(lambda: not any((tmp_path / "jobs").iterdir()), "epilogs ran", 30)
        slurm.wait_until(
            lambda: service.job(CLUSTER, jobs["two-gpus"])["tokens"] is not None,
            "the epilog sent the job's token count",
            30,
        )
        time.sleep(3 * SAMPLE_S)  # a sample after the last epilog, then a clean stop
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            stopped = collector.wait(timeout=60)
        except subprocess.TimeoutExpired:
            collector.kill()
            stopped = collector.wait()
    assert stopped == 0, (tmp_path / "collector.log").read_text()[-2000:]

    table = reconcile(service, slurm, "--from", began)
    (tmp_path / "reconcile.txt").write_text(table.stdout)
    print(table.stdout)
    assert table.returncode == 0, table.stdout + table.stderr
    done = reconcile(service, slurm, "--from", began, "--format", "json")
    lines = {line["job_id"]: line for line in json.loads(done.stdout)}
    states = {role: slurm.job_states([job])[job].split()[0] for role, job in jobs.items()}
    assert states == {
        "two-gpus": "COMPLETED", "three-gpus": "COMPLETED", "cancelled": "CANCELLED",
        "srun-step": "COMPLETED", "no-gpu": "COMPLETED", "queued": "COMPLETED",
        "failed": "FAILED",
    }  # fmt: skip
    assert jobs["no-gpu"] not in lines  # neither side has GPU time for it
    gpus = {
        "two-gpus": 2,
        "three-gpus": 3,
        "cancelled": 2,
        "srun-step": 1,
        "queued": 8,
        "failed": 1,
    }
    for role, count in gpus.items():
        line = lines[jobs[role]]
        slurm_s, ours = Decimal(line["slurm_gpu_seconds"]), Decimal(line["gpucost_gpu_seconds"])
        assert line["gpus"] == count and slurm_s > 0, (role, line)
        assert abs(ours - slurm_s) <= TOLERANCE_S * count, (role, line)
        assert line["verdict"] == "match", (role, line)
        # Idle GPUs are measured at the scenario's 40 % busy.
        assert Decimal(line["busy_gpu_seconds"]) == ours * Decimal("0.4"), (role, line)
    assert len(lines) == len(gpus)

    # The count the job left, sent by its epilog, beside the labels; the model's efficiency.
    counted = service.job(CLUSTER, jobs["two-gpus"])
    assert (counted["tokens"], counted["model"], counted["phase"]) == (
        str(TOKENS), "e2e-model", "pre-training"
    )  # fmt: skip
    assert not any(tokens.iterdir())
    cost = httpx.get(
        f"{service.url}/v1/models/e2e-model/cost",
        headers={"Authorization": f"Bearer {service.viewer}"},
    ).json()
    hours = Fraction(Decimal(str(counted["gpu_seconds"]))) / 3600
    per_trillion = Decimal(round(hours * 10**12 / TOKENS * 10**9)).scaleb(-9)  # half to even
    assert [(p["phase"], p["tokens"]) for p in cost["phases"]] == [("pre-training", str(TOKENS))]
    assert Decimal(str(cost["phases"][0]["gpu_hours_per_trillion_tokens"])) == per_trillion
    assert per_trillion > 0

    # The same from sacct's output in a file, as an operator would feed it from elsewhere.
    sacct = slurm.command(
        "sacct", "--allusers", "--allocations", "--duplicates", "--parsable2", "--starttime", began,
        "--format", ",".join(SACCT_FIELDS),
    )  # fmt: skip
    (tmp_path / "sacct.txt").write_text(sacct)
    # The job asking for all eight GPUs waited for the concurrent ones to end.
    spans = {job.job_id: (job.start, job.end) for job in parse_sacct(text=sacct)}
    concurrent = ("two-gpus", "three-gpus", "cancelled", "srun-step")
    assert all(spans[jobs["queued"]][0] >= spans[jobs[r]][1] for r in concurrent), spans
    from_file = reconcile(
        service, slurm, "--from", began, "--sacct-file", str(tmp_path / "sacct.txt")
    )
    assert (from_file.returncode, from_file.stdout) == (0, table.stdout)
