"""End to end: the real collector process on the fake NVML with compressed time, against a real
gpucost server on PostgreSQL. The service's totals must equal the scenario's GPU-seconds exactly,
also when the server goes away, the collector is SIGKILLed, or requests fail with 500."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from collectors.node_script import parse_scenario, write_fake_proc
from collectors.spool import Spool
from tests.collectors.helpers import START_WALL, gpu, gpu_uuid, process, slurm
from tests.collectors.service import BIN, FlakyProxy, Service, free_port

END = 2100  # virtual seconds: 30 reports of 70 s (70 so that MIG sevenths are whole seconds)
META = {"GPUCOST_MODEL": "deepseek-v3", "GPUCOST_PHASE": "pre-training", "GPUCOST_TEAM": "infra"}
MIG_SLICES = (3, 2, 1)
EXPECTED = {
    "1001": Decimal(4 * 1400),
    "1008": Decimal(4 * 700),
    "1002": Decimal(1400),
    "1003": Decimal(1050),
    "1004": Decimal(1050),
    "1005": Decimal(2100),
    "1006": Decimal(900),
    "1007": Decimal(400),
}


def scenario(speed: float, salt: int = 0) -> dict[str, Any]:
    """The scenario, on GPUs of its own for each `salt`: tests share one service, where a
    GPU is counted once for any moment."""
    mig = [
        {"uuid": f"MIG-{salt:08x}-0000-0000-0000-00000000000{n + 1}", "gi_slices": slices}
        for n, slices in enumerate(MIG_SLICES)
    ]
    processes = [process(1000 + i, i, end=1400, cgroup=slurm(1001), environ=META) for i in range(4)]
    processes += [
        process(1010 + i, i, start=1400, environ={"GPUCOST_JOB_ID": "1008"}) for i in range(4)
    ]
    processes += [
        process(1020, 4, start=700, environ={"SLURM_JOB_ID": "1002"}),
        process(1030, 5, cgroup=slurm(1003)),
        process(1031, 5, cgroup=slurm(1004)),
        process(1060, 7, mig=mig[0]["uuid"], cgroup=slurm(1006)),
        process(1070, 7, mig=mig[1]["uuid"], start=350, end=1750, cgroup=slurm(1007)),
    ]
    gpus = [gpu(i, power_mw=400_000, util=90) for i in range(7)] + [gpu(7, mig=mig)]
    for g in gpus:
        g["uuid"] = gpu_uuid(salt * 10 + g["index"])
    # Dated in the past, so that compressed time never runs ahead of the server's clock.
    return {"start_wall": START_WALL, "speed": speed, "gpus": gpus, "processes": processes}


class Node:
    """One node's collector: its files, and the command lines to run it."""

    def __init__(self, root: Path, service: Service, *, speed: float, server: str = "") -> None:
        self.cluster = f"e2e-{uuid.uuid4().hex[:8]}"
        self.salt = random.randrange(10**6)
        self.root = root
        self.server = server or service.url
        (root / "scenario.json").write_text(json.dumps(scenario(speed, self.salt)))
        write_fake_proc(parse_scenario(scenario(speed, self.salt)), root / "proc")
        (root / "jobs").mkdir()
        (root / "jobs" / "6").write_text("1005\n")
        (root / "token").write_text(service.token("collector", self.cluster) + "\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
        self.log = (root / "collector.log").open("ab")

    def args(self, command: str) -> list[str]:
        return [
            str(BIN / "gpucost-collector"), command,
            "--server", self.server, "--token-file", str(self.root / "token"),
            "--cluster", self.cluster, "--spool", str(self.root / "spool.db"),
            "--nvml", f"fake:{self.root / 'scenario.json'}",
        ]  # fmt: skip

    def start(self, *more: str, until: int = END) -> subprocess.Popen[bytes]:
        extra = ["--node", "node-001", "--mapping-dir", str(self.root / "jobs"),
                 "--proc-root", str(self.root / "proc"), "--sample-interval", "10s",
                 "--report-interval", "70s", "--run-until", str(until), *more]  # fmt: skip
        return subprocess.Popen(
            self.args("run") + extra, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def run_to_end(self, *more: str, until: int = END) -> None:
        assert self.start(*more, until=until).wait(timeout=120) == 0, self.log.name

    def clock_s(self) -> int:
        """The virtual clock of the collector, saved in a file next to its spool."""
        path = self.root / "spool.db.clock"
        return int(path.read_text()) // 10**9 if path.exists() else 0

    def wait_for_clock(self, seconds: int) -> None:
        """Until the collector's virtual clock reaches `seconds` (no timing is asserted)."""
        deadline = time.monotonic() + 120
        while self.clock_s() < seconds:
            assert time.monotonic() < deadline, f"the collector's clock stayed at {self.clock_s()}"
            time.sleep(0.02)

    def log_text(self) -> str:
        return (self.root / "collector.log").read_text()

    def flush(self) -> str:
        done = subprocess.run(
            self.args("flush"), env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def check(service: Service, node: Node) -> None:
    assert node.flush() == "0 reports left unsent, 0 dead-lettered"
    assert service.job_totals(node.cluster) == EXPECTED
    job = service.job(node.cluster, "1001")
    assert (job["model"], job["phase"], job["team"]) == ("deepseek-v3", "pre-training", "infra")


@pytest.mark.slow
def test_service_totals_equal_the_scenario(service, tmp_path):
    node = Node(tmp_path, service, speed=0)
    node.run_to_end()
    check(service, node)


@pytest.mark.slow
def test_exact_while_the_server_is_stopped_and_restarted(service, tmp_path):
    node = Node(tmp_path, service, speed=400)
    collector = node.start()
    node.wait_for_clock(140)
    service.stop()
    node.wait_for_clock(700)  # the collector keeps measuring and spooling meanwhile
    service.start()
    assert collector.wait(timeout=120) == 0
    check(service, node)
    assert "cannot reach" in node.log_text()  # the outage was seen, and made no difference


@pytest.mark.slow
def test_exact_when_a_full_spool_coalesces_reports_during_an_outage(service, tmp_path):
    node = Node(tmp_path, service, speed=0)
    node.server = f"http://127.0.0.1:{free_port()}"  # nobody there for the first 1400 s
    node.run_to_end("--spool-max-bytes", "10000", until=1400)
    spooled = Spool(tmp_path / "spool.db").pending(1000)
    assert len(spooled) < 1400 // 70  # merged into hour-long reports
    node.server = service.url
    node.run_to_end("--spool-max-bytes", "10000")
    check(service, node)
    assert "merged" in node.log_text()


@pytest.mark.slow
def test_exact_when_the_collector_is_killed_at_random_points(service, tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    node = Node(tmp_path, service, speed=400)
    for _ in range(4):
        collector = node.start()
        node.wait_for_clock(node.clock_s() + 20)  # running again, then killed at any point
        time.sleep(rng.uniform(0, 0.8))
        collector.send_signal(signal.SIGKILL)
        collector.wait()
    node.run_to_end()
    check(service, node)
    assert "resumed the open interval" in node.log_text(), f"kill seed {seed}"


@pytest.mark.slow
def test_exact_when_the_server_answers_500_to_some_requests(service, tmp_path):
    def fail(n: int) -> str | None:
        # Runs of eight failures, so that reports pile up and go in batches; half of them
        # after the service stored the request, so that resends are duplicates.
        if n % 16 >= 8:
            return None
        return "before" if n % 2 else "after"

    proxy = FlakyProxy(service.url, fail)
    try:
        node = Node(tmp_path, service, speed=0, server=proxy.url)
        node.run_to_end()
        node.server = service.url
        check(service, node)
        assert proxy.failed >= 5
        # The backlog left by failures went in batches, each oldest first.
        assert proxy.batches and all(b == sorted(b) for b in proxy.batches)
    finally:
        proxy.close()


def expected_at(t: int) -> dict[str, Decimal]:
    """The scenario's GPU-seconds per job after `t` virtual seconds."""
    seconds = {
        "1001": 4 * min(t, 1400), "1008": 4 * max(0, t - 1400), "1002": max(0, t - 700),
        "1003": Decimal(t) / 2, "1004": Decimal(t) / 2, "1005": t,
        "1006": Decimal(3 * t) / 7, "1007": Decimal(2 * min(max(0, t - 350), 1400)) / 7,
    }  # fmt: skip
    return {job: Decimal(v) for job, v in seconds.items() if v}


@pytest.mark.slow
def test_sigterm_closes_the_partial_interval_sends_it_and_exits(service, tmp_path):
    node = Node(tmp_path, service, speed=100)
    collector = node.start()
    node.wait_for_clock(300)
    collector.send_signal(signal.SIGTERM)
    assert collector.wait(timeout=60) == 0
    stopped_at = int((tmp_path / "spool.db.clock").read_text()) // 10**9
    assert 0 < stopped_at < END
    assert Spool(tmp_path / "spool.db").depth() == 0  # the last send delivered everything
    totals, expected = service.job_totals(node.cluster), expected_at(stopped_at)
    assert totals.keys() == expected.keys()
    for job, seconds in expected.items():
        # Exact but for the MIG sevenths of the last, partial report, rounded to the millisecond.
        assert abs(totals[job] - seconds) <= Decimal("0.001"), job
