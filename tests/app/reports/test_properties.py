"""Properties of the accounting core: no way of sending the same usage changes its totals."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.core.calendar import hour_slices, split_amounts
from app.core.numbers import floats_are_exact
from app.reports.schemas import GpuUsageIn
from app.tokens.service import create_token
from tests.support import entry, report, reset_database

BASE = datetime(2025, 1, 6, 9, tzinfo=UTC)
ENTRY = TypeAdapter(GpuUsageIn)
ENTRY_JSON = (
    '{{"uuid": "GPU-00000000-0000-0000-0000-000000000000", "index": 0, "model": "H800", '
    '"job_id": null, "gpu_seconds": {}}}'
)


@given(
    digits=st.integers(min_value=0, max_value=10**20 - 1),
    point=st.integers(min_value=0, max_value=20),
    # Past -99, a binary float holds fewer digits (1e-310) or none (1e-400 reads as 0).
    exponent=st.sampled_from(["", "e0", "e-3", "E+2", "e-99", "e-100", "E-310", "e-0400"]),
)
def test_the_fast_json_path_reads_a_number_as_sent_or_is_not_taken(
    digits: int, point: int, exponent: str
) -> None:
    # A JSON number of up to 20 significant digits, `point` of them after the point.
    whole, fraction = divmod(digits, 10**point)
    written = (f"{whole}.{fraction:0{point}d}" if point else str(digits)) + exponent
    body = ENTRY_JSON.format(written).encode()
    assume(Decimal(written) <= 10**7)
    tiny = exponent.lower().startswith("e-") and int(exponent[2:]) >= 100
    if floats_are_exact(body):
        assert len(str(digits).lstrip("0")) <= 15 and not tiny
        assert ENTRY.validate_json(body)["gpu_seconds"] == Decimal(written)
    else:
        assert len(written.split("e")[0].split("E")[0]) >= 16 or tiny


def test_a_tiny_exponent_in_a_string_keeps_the_fast_path() -> None:
    # GPU UUIDs are hex: "...-400e-8000-..." and "GPU-1e-123..." are not numbers.
    uuid = '"GPU-0499f379-0000-400e-8000-000000000018"'
    assert floats_are_exact(
        ENTRY_JSON.replace('"GPU-00000000-0000-0000-0000-000000000000"', uuid)
        .format("60.0")
        .encode()
    )
    assert floats_are_exact(b'{"model": "GPU-1e-123", "n": 1e-99}')
    assert not floats_are_exact(b'{"a": [1, -2.5E-0330]}')
    assert not floats_are_exact(b'{"a":\n-7e-100}')
    assert not floats_are_exact(b"1e-400")


@given(
    start_us=st.integers(min_value=0, max_value=3 * 3600 * 10**6),
    length_us=st.integers(min_value=1, max_value=2 * 3600 * 10**6),
    amounts=st.lists(st.integers(min_value=0, max_value=10**15), min_size=1, max_size=3),
)
def test_hour_splitting_conserves_every_unit(
    start_us: int, length_us: int, amounts: list[int]
) -> None:
    start = BASE + timedelta(microseconds=start_us)
    end = start + timedelta(microseconds=length_us)

    parts = list(split_amounts(hour_slices(start, end), amounts))

    assert [sum(p[1][i] for p in parts) for i in range(len(amounts))] == amounts
    assert all(share >= 0 for _, shares in parts for share in shares)
    assert all(hour.minute == hour.second == hour.microsecond == 0 for hour, _ in parts)
    total_us = length_us
    for hour, shares in parts:
        overlap = (min(hour + timedelta(hours=1), end) - max(hour, start)) // timedelta(
            microseconds=1
        )
        for amount, share in zip(amounts, shares, strict=True):
            assert abs(share * total_us - amount * overlap) <= total_us  # within one unit of exact


reports_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # node
        st.integers(min_value=0, max_value=30),  # minutes after the node's previous report
        st.integers(min_value=1, max_value=60),  # length in minutes
        st.lists(
            st.tuples(
                st.integers(0, 3), st.sampled_from(["a", "b", "c", None]), st.integers(0, 100)
            ),
            min_size=1,
            max_size=4,
            unique_by=lambda g: (g[0], g[1]),
        ),
    ),
    min_size=1,
    max_size=8,
)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def build(spec: list[Any]) -> list[dict[str, Any]]:
    """Reports from the drawn spec; each GPU's jobs share the interval, never exceeding it,
    and a node's reports follow each other (a GPU is counted once for any moment)."""
    bodies, seqs, ends = [], {}, {}
    for node, gap, length, gpus in spec:
        seqs[node] = seqs.get(node, 0) + 1
        start = ends.get(node, BASE) + timedelta(minutes=gap)
        end = ends[node] = start + timedelta(minutes=length)
        per_gpu: dict[int, int] = {}
        entries = []
        for gpu, job, share in gpus:
            per_gpu[gpu] = per_gpu.get(gpu, 0) + 1
            seconds = Decimal(length * 60) * share / 100 / 4  # at most 4 jobs a GPU: <= interval
            entries.append(
                entry(
                    node * 10 + gpu,
                    job_id=job,
                    gpu_seconds=str(seconds.quantize(Decimal("0.000001"))),
                    # 400 W a job at most: up to 4 jobs on a GPU stay below the 2,000 W a
                    # report may claim for one GPU.
                    energy_j=length * 60 * 400,
                )
            )
        for e in entries:
            e["index"] = int(e["uuid"][-2:], 16) % 10
        iso = lambda m: m.isoformat().replace("+00:00", "Z")  # noqa: E731
        bodies.append(
            report(seqs[node], start=iso(start), end=iso(end), node=f"n{node}", gpus=entries)
        )
    return bodies


def totals(client: TestClient, auth: dict[str, dict[str, str]]) -> dict[Any, Any]:
    body = client.get("/v1/costs", params={"group_by": "job,day"}, headers=auth["viewer"]).json()
    return {
        (r["job"], r["day"]): (r["gpu_seconds"], r["gpu_hours"], r["cost_usd"])
        for r in body["rows"]
    }


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=reports_strategy, seed=st.integers(0, 2**16))
def test_reordering_batching_and_duplicating_never_change_totals(
    client: TestClient, auth: dict[str, dict[str, str]], db_url: str, spec: list[Any], seed: int
) -> None:
    bodies = build(spec)
    engine = create_engine(db_url)

    def fresh() -> None:
        # Each side starts from an empty database with the fixture's tokens in place.
        reset_database(engine)
        with Session(engine) as session, session.begin():
            for role, token_name, cluster in [
                ("viewer", "viewer", None),
                ("collector", "collector", "hf-h800"),
            ]:
                _, clear = create_token(
                    session, role=role, cluster=cluster, name=token_name, actor="t", now=BASE
                )
                auth[role] = {"Authorization": f"Bearer {clear}"}

    fresh()
    for body in bodies:
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    in_order = totals(client, auth)

    fresh()
    rng = random.Random(seed)
    resent = bodies + rng.sample(bodies, k=rng.randint(0, len(bodies)))
    rng.shuffle(resent)
    while resent:
        size = rng.randint(1, 4)
        batch, resent = resent[:size], resent[size:]
        if size == 1:
            assert client.post(
                "/v1/reports", json=batch[0], headers=auth["collector"]
            ).status_code in (200, 201)
        else:
            answer = client.post(
                "/v1/reports:batch", json={"reports": batch}, headers=auth["collector"]
            ).json()
            assert {r["status"] for r in answer["results"]} <= {"accepted", "duplicate"}
    engine.dispose()

    assert totals(client, auth) == in_order
