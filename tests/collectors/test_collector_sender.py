"""Delivery: back-off with jitter, and what the real service's answers do to the spool."""

from __future__ import annotations

import logging
import random
import time
import uuid
import zlib

import httpx
import pytest

from collectors.clock import NS_PER_S, FakeClock
from collectors.metrics import CollectorMetrics
from collectors.sender import Backoff, Sender, service_client
from collectors.spool import Spool
from tests.collectors.helpers import gpu_uuid
from tests.collectors.service import free_port


def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets():
    backoff = Backoff(rng=random.Random(7), base_s=1.0, max_s=300.0)
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, so a fleet does not retry in step
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1


def body(cluster: str, node: str, minute: int, seconds: float = 60.0) -> dict:
    start, end = f"2026-01-05T09:{minute:02d}:00Z", f"2026-01-05T09:{minute + 1:02d}:00Z"
    entry = {
        # A GPU of the cluster's own: tests share the service, and a GPU counts once.
        "uuid": gpu_uuid(zlib.crc32(cluster.encode()) % 10**8),
        "index": 0,
        "model": "NVIDIA H800",
        "job_id": "5",
        "gpu_seconds": seconds,
        "util_pct": 50.0,
        "energy_j": 1.0,
        "mem_peak_bytes": 1,
    }
    return {"cluster": cluster, "node": node, "start": start, "end": end, "gpus": [entry]}


def make_sender(tmp_path, server: str, token: str, cluster: str, name: str = "spool.db"):
    clock = FakeClock(start_wall_ns=1_767_600_000 * NS_PER_S)
    spool = Spool(tmp_path / name)
    metrics = CollectorMetrics()
    sender = Sender(
        spool=spool,
        client=httpx.Client(timeout=10),
        server=server,
        token=lambda: token,
        cluster=cluster,
        clock=clock,
        backoff=Backoff(rng=random.Random(1)),
        metrics=metrics,
    )
    return sender, spool, clock, metrics


def test_an_unreachable_service_is_retried_after_the_backoff(tmp_path):
    sender, spool, clock, metrics = make_sender(
        tmp_path, f"http://127.0.0.1:{free_port()}", "t", "c1"
    )
    spool.add_report(body("c1", "n1", 0), wall_ns=0, state=None)
    assert sender.send_pending() is False
    assert spool.depth() == 1 and spool.pending(1)[0].attempted is False  # may be coalesced
    wait_ns = sender.next_attempt_mono_ns - clock.monotonic_ns()
    assert NS_PER_S // 2 <= wait_ns <= NS_PER_S
    assert not sender.due()
    clock.advance(wait_ns / NS_PER_S)
    assert sender.due()
    sender.send_pending()
    assert 1 * NS_PER_S <= sender.next_attempt_mono_ns - clock.monotonic_ns() <= 2 * NS_PER_S
    assert metrics.send_failures._value.get() == 2
    # A report an earlier attempt may have delivered (a timeout, a 5xx) stays marked.
    spool.mark_attempted([1])
    spool.add_report(body("c1", "n1", 1), wall_ns=0, state=None)
    sender.next_attempt_mono_ns = 0
    sender.send_pending()
    assert [r.attempted for r in spool.pending(2)] == [True, False]


@pytest.mark.slow
def test_rejections_are_dead_lettered_409_included_and_the_rest_delivered(service, tmp_path):
    cluster = f"snd-{uuid.uuid4().hex[:8]}"
    token = service.token("collector", cluster)
    sender, spool, _, metrics = make_sender(tmp_path, service.url, token, cluster)
    spool.add_report(body(cluster, "n1", 0), wall_ns=0, state=None)
    assert sender.send_pending() is True  # one report: POST /v1/reports
    # The spool file was lost: a fresh one starts again at seq 1 with other content.
    other, other_spool, _, other_metrics = make_sender(
        tmp_path, service.url, token, cluster, name="lost.db"
    )
    other_spool.add_report(body(cluster, "n1", 5), wall_ns=0, state=None)  # seq 1: 409
    other_spool.add_report(body(cluster, "n1", 6, seconds=61.5), wall_ns=0, state=None)  # 422
    other_spool.add_report(body(cluster, "n1", 7), wall_ns=0, state=None)  # fine
    assert other.send_pending() is True  # three reports: one batch
    assert [(seq, status) for seq, status, _ in other_spool.dead_letters()] == [(1, 409), (2, 422)]
    assert other_metrics.reports_dead_lettered._value.get() == 2
    assert other_metrics.reports_sent.labels(outcome="accepted")._value.get() == 1
    assert service.job_totals(cluster) == {"5": 120}


@pytest.mark.slow
def test_a_resend_is_a_duplicate_and_a_refused_token_is_kept_for_later(service, tmp_path):
    cluster = f"snd-{uuid.uuid4().hex[:8]}"
    token = service.token("collector", cluster)
    sender, spool, _, metrics = make_sender(tmp_path, service.url, "not-a-token", cluster)
    spool.add_report(body(cluster, "n1", 0), wall_ns=0, state=None)
    spool.add_report(body(cluster, "n1", 1), wall_ns=0, state=None)
    assert sender.send_pending() is False  # 401: the collector's problem, not the reports'
    assert spool.depth() == 2 and spool.dead_letters() == []
    sender._token = lambda: token
    sender.next_attempt_mono_ns = 0
    assert sender.send_pending() is True
    # A crash between the service's commit and our delete: the same report is sent again.
    resend, resend_spool, _, resend_metrics = make_sender(
        tmp_path, service.url, token, cluster, name="again.db"
    )
    resend_spool.add_report(body(cluster, "n1", 0), wall_ns=0, state=None)
    assert resend.send_pending() is True
    assert resend_metrics.reports_sent.labels(outcome="duplicate")._value.get() == 1
    assert service.job_totals(cluster) == {"5": 120}


@pytest.mark.slow
def test_a_second_collector_on_the_same_gpus_is_dead_lettered_as_overlap(service, tmp_path, caplog):
    cluster = f"snd-{uuid.uuid4().hex[:8]}"
    token = service.token("collector", cluster)
    first, first_spool, _, first_metrics = make_sender(tmp_path, service.url, token, cluster)
    twin, twin_spool, _, twin_metrics = make_sender(
        tmp_path, service.url, token, cluster, name="twin.db"
    )
    # The same GPU, the same minutes: from the node's collector and from a twin started by
    # mistake under another node name.
    for minute in (0, 1):
        first_spool.add_report(body(cluster, "n1", minute), wall_ns=0, state=None)
        twin_spool.add_report(body(cluster, "n1-twin", minute), wall_ns=0, state=None)
    assert first.send_pending() is True
    with caplog.at_level(logging.ERROR, logger="collectors.sender"):
        assert twin.send_pending() is True

    assert [(seq, status) for seq, status, _ in twin_spool.dead_letters()] == [(1, 409), (2, 409)]
    assert twin_metrics.reports_overlapping._value.get() == 2
    assert twin_metrics.reports_dead_lettered._value.get() == 2
    assert first_metrics.reports_overlapping._value.get() == 0
    assert "counts GPU time the service has already counted" in caplog.text
    assert service.job_totals(cluster) == {"5": 120}


def _local_port(client: httpx.Client, url: str) -> int:
    response = client.get(url + "/healthz")
    assert response.status_code == 200
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


@pytest.mark.slow
def test_the_collector_keeps_its_connection_between_reports(service) -> None:
    with service_client(10.0) as kept, httpx.Client(timeout=10.0) as default:
        before = [_local_port(client, service.url) for client in (kept, default)]
        time.sleep(6)  # past httpx's own keep-alive (5 s), after which it connects anew
        after = [_local_port(client, service.url) for client in (kept, default)]
    assert before[0] == after[0]
    assert before[1] != after[1]
