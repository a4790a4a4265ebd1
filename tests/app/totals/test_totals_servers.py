"""Real server processes: a job relabelled again and again while its reports arrive at two
servers, and every level of the rollup still equal to its hours."""

import threading
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.support import CLUSTER, entry, report, running_server

pytestmark = pytest.mark.slow

MINUTES = 90  # two hours of each node's reports
RELABEL_EVERY = 6  # reports of a node, at most, between two relabels
LABELS = [("m1", "pre-training"), ("m2", "eval"), ("m1", "eval")]


def minute_of(node: str, seq: int) -> dict:
    hour, minute = divmod(seq, 60)
    end_hour, end_minute = divmod(seq + 1, 60)
    return report(
        seq + 1,
        node=node,
        start=f"2025-01-06T{10 + hour:02d}:{minute:02d}:00Z",
        end=f"2025-01-06T{10 + end_hour:02d}:{end_minute:02d}:00Z",
        gpus=[entry(g + (8 if node == "node-b" else 0), job_id="c") for g in range(8)],
    )


def test_relabelling_while_reports_arrive_keeps_every_level_equal_to_its_hours(
    db_url: str, tokens: dict[str, str], log_dir: Path
) -> None:
    collector = {"Authorization": f"Bearer {tokens['collector']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    statuses: list[int] = []
    relabelled: list[tuple[str, str]] = []
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        done = threading.Event()
        more = threading.Condition()
        stopped = threading.Event()

        def send(node: str, url: str) -> None:
            with httpx.Client(base_url=url, headers=collector, timeout=60) as client:
                for seq in range(MINUTES):
                    # Relabels go on all through the reports, however fast either side is on
                    # this machine: report n waits for n // RELABEL_EVERY relabels (or for
                    # the relabelling to have stopped, failed).
                    wanted = seq // RELABEL_EVERY
                    with more:
                        more.wait_for(lambda n=wanted: len(relabelled) >= n or stopped.is_set(), 60)
                    statuses.append(
                        client.post("/v1/reports", json=minute_of(node, seq)).status_code
                    )

        def relabel() -> None:
            try:
                relabel_until_done()
            finally:
                with more:
                    stopped.set()
                    more.notify_all()

        def relabel_until_done() -> None:
            urls = [one.url, two.url]
            while not done.is_set():
                model, phase = LABELS[len(relabelled) % len(LABELS)]
                response = httpx.put(
                    f"{urls[len(relabelled) % 2]}/v1/jobs/{CLUSTER}/c",
                    json={"model": model, "phase": phase},
                    headers=admin,
                    timeout=60,
                )
                assert response.status_code in (200, 201), response.text
                with more:
                    relabelled.append((model, phase))
                    more.notify_all()

        senders = [
            threading.Thread(target=send, args=("node-a", one.url)),
            threading.Thread(target=send, args=("node-b", two.url)),
        ]
        relabeller = threading.Thread(target=relabel)
        relabeller.start()
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        done.set()
        relabeller.join()
        last_model = relabelled[-1][0]
        cost = httpx.get(
            f"{one.url}/v1/models/{last_model}/cost",
            headers={"Authorization": f"Bearer {tokens['viewer']}"},
        ).json()

    assert statuses == [201] * (2 * MINUTES)
    # Relabelled again and again while reports arrived.
    assert len(relabelled) >= (MINUTES - 1) // RELABEL_EVERY
    checked = CliRunner().invoke(cli, ["db", "check-totals"], env={"GPUCOST_DATABASE_URL": db_url})
    assert checked.exit_code == 0, checked.output
    # All of job c's GPU-time is now its last model's: 16 GPUs, 90 minutes; its busiest hour
    # the first (16 GPUs the whole hour).
    assert cost["total"]["gpu_hours"] == "24"
    assert cost["total"]["peak_gpus"] == "16"
