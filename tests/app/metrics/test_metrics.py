"""`GET /metrics`: accounting figures equal the cost API's, restatements, fleet, service health."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.core.config import Settings
from app.main import create_app
from tests.support import CLUSTER, SettableClock, entry, report

Auth = dict[str, dict[str, str]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
A100 = "NVIDIA A100-SXM4-80GB"
ATTRIBUTION = ("cluster", "model", "phase", "team", "gpu_model")
FLEET = ("cluster", "gpu_model")
# Jobs and their labels; job 77 reports usage but is never registered.
JOBS = {
    "91234": {"model": "deepseek-v3", "phase": "pre-training", "team": "foundation"},
    "5555": {"model": "m2", "phase": "post-training", "team": "alignment"},
    "4242": {"model": "deepseek-v3", "phase": "context-extension", "team": "foundation"},
}
# Every figure below is a binary fraction, so float64 sums in Prometheus stay exact.
LIVE_GPU_SECONDS = "56.25"


class Http(Protocol):
    def get(self, url: str, **kwargs: Any) -> httpx.Response: ...
    def post(self, url: str, **kwargs: Any) -> httpx.Response: ...
    def put(self, url: str, **kwargs: Any) -> httpx.Response: ...


@pytest.fixture
def settings(db_url: str) -> Settings:
    # Read the database on every scrape, so each assertion sees the latest writes.
    return Settings(database_url=db_url, metrics_cache_seconds=0)


def scrape(client: Http) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def parse(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def series(samples: Samples, name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    found = {}
    for (sample_name, labels), value in samples.items():
        if sample_name == name:
            as_dict = dict(labels)
            assert set(as_dict) == set(keys), (name, as_dict)
            found[tuple(as_dict[k] for k in keys)] = value
    return found


def hour(day: str, at: int) -> dict[str, str]:
    start = datetime.fromisoformat(f"{day}T{at:02d}:00:00+00:00")
    return {
        "start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
        "end": f"{start + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
    }


def seed_usage(client: Http, auth: Auth, *, live_end: datetime) -> None:
    """Usage on three nodes and two GPU models, idle time, an unregistered job, a rate card.

    The last report ends at `live_end`, so its node and job count as reporting and running.
    """
    rate = {"gpu_model": A100, "usd_per_gpu_hour": "1.50", "effective_from": "2024-12-01T00:00:00Z"}
    assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 201
    live_start = live_end - timedelta(seconds=60)
    reports = [
        report(
            1,
            node="node-017",
            **hour("2025-01-06", 10),
            gpus=[
                entry(0, gpu_seconds=3600, util_pct=50, energy_j=360000),
                entry(1, gpu_seconds=3600, util_pct=100, energy_j=720000),
                entry(2, job_id=None, gpu_seconds=3600, util_pct=0, energy_j=36000),
                entry(3, job_id="77", gpu_seconds=1800, util_pct=75, energy_j=180000, model=A100),
                entry(3, job_id=None, gpu_seconds=1800, util_pct=0, energy_j=18000, model=A100),
            ],
        ),
        report(
            1,
            node="node-018",
            **hour("2025-01-06", 11),
            gpus=[
                entry(4, job_id="5555", gpu_seconds=3600, util_pct=25, energy_j=360000),
            ],
        ),
        # Last month: in every figure to date, in none of this month's.
        report(
            2,
            node="node-018",
            **hour("2024-12-31", 23),
            gpus=[
                entry(4, job_id="5555", gpu_seconds=3600, util_pct=25, energy_j=360000),
            ],
        ),
        report(
            1,
            node="node-019",
            gpus=[
                entry(5, job_id="4242", gpu_seconds=LIVE_GPU_SECONDS, util_pct=100, energy_j=7200),
            ],
            start=f"{live_start:%Y-%m-%dT%H:%M:%SZ}",
            end=f"{live_end:%Y-%m-%dT%H:%M:%SZ}",
        ),
    ]
    for body in reports:
        response = client.post("/v1/reports", json=body, headers=auth["collector"])
        assert response.status_code == 201, response.text
    for job_id, labels in JOBS.items():
        response = client.put(f"/v1/jobs/{CLUSTER}/{job_id}", json=labels, headers=auth["admin"])
        assert response.status_code in (200, 201), response.text


def rest_costs(client: Http, auth: Auth, **params: str) -> dict[str, Any]:
    response = client.get("/v1/costs", params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def busy_seconds(figures: dict[str, str]) -> Decimal:
    return Decimal(figures["busy_gpu_hours"]) * 3600


def joules(figures: dict[str, str]) -> Decimal:
    return Decimal(figures["energy_kwh"]) * 3_600_000


def assert_gauges_equal_the_cost_api(samples: Samples, costs: dict[str, Any]) -> None:
    """Each attribution's gauges equal its row of `GET /v1/costs?group_by=<the labels>`."""
    rows = {tuple(row[k] for k in ATTRIBUTION): row for row in costs["rows"]}
    expected = {
        "gpucost_attributed_gpu_seconds": lambda r: Decimal(r["gpu_seconds"]),
        "gpucost_attributed_busy_gpu_seconds": busy_seconds,
        "gpucost_attributed_energy_joules": joules,
        "gpucost_cost_usd": lambda r: Decimal(r["cost_usd"]),
    }
    for name, figure in expected.items():
        assert series(samples, name, ATTRIBUTION) == {
            key: float(figure(row)) for key, row in rows.items()
        }, name


def assert_counters_equal_the_cost_api(samples: Samples, costs: dict[str, Any]) -> None:
    """The counters equal `GET /v1/costs?group_by=cluster,gpu_model` (idle: `model=(idle)`)."""
    by_fleet = {(row["cluster"], row["gpu_model"]): row for row in costs["rows"]}
    assert series(samples, "gpucost_gpu_seconds_total", FLEET) == {
        key: float(Decimal(row["gpu_seconds"])) for key, row in by_fleet.items()
    }
    assert series(samples, "gpucost_busy_gpu_seconds_total", FLEET) == {
        key: float(busy_seconds(row)) for key, row in by_fleet.items()
    }
    assert series(samples, "gpucost_energy_joules_total", FLEET) == {
        key: float(joules(row)) for key, row in by_fleet.items()
    }


def test_accounting_figures_equal_the_cost_api_exactly(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    seed_usage(client, auth, live_end=clock())

    samples = scrape(client)

    attributed = rest_costs(client, auth, group_by=",".join(ATTRIBUTION))
    assert_gauges_equal_the_cost_api(samples, attributed)
    assert_counters_equal_the_cost_api(
        samples, rest_costs(client, auth, group_by="cluster,gpu_model")
    )
    idle = rest_costs(client, auth, group_by="cluster,gpu_model", model="(idle)")
    assert (
        series(samples, "gpucost_idle_gpu_seconds_total", FLEET)
        == {
            (CLUSTER, "NVIDIA H800"): 3600.0,
            (CLUSTER, A100): 1800.0,
        }
        == {(r["cluster"], r["gpu_model"]): float(r["gpu_seconds"]) for r in idle["rows"]}
    )
    # Idle and unregistered time are label values of their own, as the cost API names them.
    costs_by_model = {
        (key[1], key[4]): value
        for key, value in series(samples, "gpucost_cost_usd", ATTRIBUTION).items()
    }
    assert costs_by_model[("(idle)", A100)] == 0.75
    assert costs_by_model[("(unattributed)", A100)] == 0.75
    total = attributed["total"]
    assert sum(series(samples, "gpucost_cost_usd", ATTRIBUTION).values()) == float(
        Decimal(total["cost_usd"])
    )
    assert sum(series(samples, "gpucost_gpu_seconds_total", FLEET).values()) == float(
        Decimal(total["gpu_seconds"])
    )


def test_month_to_date_cost_leaves_earlier_months_out(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    seed_usage(client, auth, live_end=clock())

    samples = scrape(client)

    month = rest_costs(
        client, auth, group_by=",".join(ATTRIBUTION), **{"from": "2025-01-01T00:00:00Z"}
    )
    assert series(samples, "gpucost_month_to_date_cost_usd", ATTRIBUTION) == {
        tuple(row[k] for k in ATTRIBUTION): float(Decimal(row["cost_usd"])) for row in month["rows"]
    }
    m2 = (CLUSTER, "m2", "post-training", "alignment", "NVIDIA H800")
    assert series(samples, "gpucost_cost_usd", ATTRIBUTION)[m2] == 4.0
    assert series(samples, "gpucost_month_to_date_cost_usd", ATTRIBUTION)[m2] == 2.0


def test_a_restatement_moves_gauges_and_never_lowers_a_counter(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    seed_usage(client, auth, live_end=clock())
    before = scrape(client)

    # Job 91234 re-labelled to another model; H800 restated downwards for all of 2025.
    relabel = {"model": "deepseek-v3-lite"}
    assert client.put(f"/v1/jobs/{CLUSTER}/91234", json=relabel, headers=auth["admin"]).is_success
    rate = {
        "gpu_model": "NVIDIA H800",
        "usd_per_gpu_hour": "1.00",
        "effective_from": "2025-01-01T00:00:00Z",
    }
    assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 201
    after = scrape(client)

    for counter in ("gpu_seconds", "idle_gpu_seconds", "busy_gpu_seconds", "energy_joules"):
        name = f"gpucost_{counter}_total"
        assert series(after, name, FLEET) == series(before, name, FLEET), name
    old = (CLUSTER, "deepseek-v3", "pre-training", "foundation", "NVIDIA H800")
    new = (CLUSTER, "deepseek-v3-lite", "pre-training", "foundation", "NVIDIA H800")
    assert series(before, "gpucost_cost_usd", ATTRIBUTION)[old] == 4.0
    assert old not in series(after, "gpucost_cost_usd", ATTRIBUTION)
    assert series(after, "gpucost_cost_usd", ATTRIBUTION)[new] == 2.0
    assert series(after, "gpucost_attributed_gpu_seconds", ATTRIBUTION)[new] == 7200.0
    assert_gauges_equal_the_cost_api(
        after, rest_costs(client, auth, group_by=",".join(ATTRIBUTION))
    )


def test_counters_are_exact_sums_whatever_the_grouping(client: TestClient, auth: Auth) -> None:
    # Figures that no decimal place of hours or kWh holds exactly.
    for n, (job_id, seq) in enumerate((("a", 1), ("b", 2), ("c", 3))):
        odd = entry(n, gpu_seconds="59.999999", util_pct="33.3", energy_j="41200.001")
        body = report(seq, gpus=[{**odd, "job_id": job_id}])
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    before = scrape(client)
    for job_id in ("a", "b", "c"):
        relabel = {"model": "m", "team": job_id}
        assert client.put(f"/v1/jobs/{CLUSTER}/{job_id}", json=relabel, headers=auth["admin"])

    after = scrape(client)

    key = (CLUSTER, "NVIDIA H800")
    for samples in (before, after):
        assert series(samples, "gpucost_gpu_seconds_total", FLEET)[key] == 179.999997
        assert series(samples, "gpucost_busy_gpu_seconds_total", FLEET)[key] == float(
            3 * (Decimal("59.999999") * Decimal("0.333")).quantize(Decimal("1e-6"))
        )
        assert series(samples, "gpucost_energy_joules_total", FLEET)[key] == 123600.003


def test_no_series_is_labelled_by_job(client: TestClient, auth: Auth, clock: SettableClock) -> None:
    seed_usage(client, auth, live_end=clock())
    assert client.get(f"/v1/jobs/{CLUSTER}/91234", headers=auth["viewer"]).status_code == 200

    exposition = client.get("/metrics").text

    label_names = {name for _, labels in parse(exposition) for name, _ in labels}
    assert not label_names & {"job", "job_id", "scheduler_job_id", "user", "node", "instance"}
    for job_id in (*JOBS, "77"):
        assert f'"{job_id}"' not in exposition and f"/{job_id}" not in exposition


def test_fleet_state_reporting_nodes_gpus_and_running_jobs(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    seed_usage(client, auth, live_end=clock())
    start = clock()
    clock.moment = start + timedelta(seconds=400)
    later = report(
        2,
        node="node-019",
        gpus=[entry(5, job_id="4242", gpu_seconds=60)],
        start=f"{clock() - timedelta(seconds=60):%Y-%m-%dT%H:%M:%SZ}",
        end=f"{clock():%Y-%m-%dT%H:%M:%SZ}",
    )
    assert client.post("/v1/reports", json=later, headers=auth["collector"]).status_code == 201

    samples = scrape(client)

    assert series(samples, "gpucost_nodes_reporting", ("cluster",)) == {(CLUSTER,): 1.0}
    assert series(samples, "gpucost_nodes_silent", ("cluster",)) == {(CLUSTER,): 2.0}
    assert series(samples, "gpucost_gpus_reporting", FLEET) == {
        (CLUSTER, "NVIDIA H800"): 1.0,
        (CLUSTER, A100): 0.0,
    }
    # Job 4242 reported up to now; the others' usage ended long ago (77 has no model).
    assert series(samples, "gpucost_running_jobs", ("cluster", "model")) == {
        (CLUSTER, "deepseek-v3"): 1.0,
        (CLUSTER, "m2"): 0.0,
        (CLUSTER, "(unattributed)"): 0.0,
    }


def test_silent_nodes_are_counted_per_cluster_listed_by_name_and_retired_after_a_week(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    seed_usage(client, auth, live_end=clock())
    received = clock()  # when the service got every report
    silent = lambda: series(scrape(client), "gpucost_nodes_silent", ("cluster",))  # noqa: E731
    listed = lambda **params: client.get(  # noqa: E731
        "/v1/nodes", params=params, headers=auth["viewer"]
    ).json()

    clock.moment = received + timedelta(seconds=300)  # the window's last second: reporting
    assert silent() == {(CLUSTER,): 0.0}
    assert listed(silent_for=300) == {"nodes": [], "truncated": False}

    clock.moment = received + timedelta(seconds=301)
    assert silent() == {(CLUSTER,): 3.0}
    assert listed(silent_for=300) == {
        "nodes": [
            {"cluster": CLUSTER, "node": node, "first_seen": received.isoformat().replace(
                "+00:00", "Z"), "last_report_at": received.isoformat().replace("+00:00", "Z"),
             "silent_seconds": 301, "gpus": gpus}
            for node, gpus in (("node-017", 4), ("node-018", 1), ("node-019", 1))
        ],
        "truncated": False,
    }  # fmt: skip
    assert listed(silent_for=301) == {"nodes": [], "truncated": False}
    assert [n["node"] for n in listed(limit=2)["nodes"]] == ["node-017", "node-018"]
    assert listed(limit=2)["truncated"] is True
    assert listed(cluster="elsewhere") == {"nodes": [], "truncated": False}

    clock.moment = received + timedelta(days=7, seconds=1)
    assert silent() == {(CLUSTER,): 0.0}  # retired: no longer counted, still listed
    assert len(listed(silent_for=7 * 86400)["nodes"]) == 3
    refused = client.get("/v1/nodes", params={"silent_for": -1}, headers=auth["viewer"])
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "silent_for"


def test_requests_are_counted_by_route_template_and_status(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    seed_usage(client, auth, live_end=clock())
    for job_id in ("91234", "5555", "404404"):
        client.get(f"/v1/jobs/{CLUSTER}/{job_id}", headers=auth["viewer"])
    client.get("/no/such/path/91234")

    samples = scrape(client)

    requests = series(samples, "gpucost_http_requests_total", ("method", "route", "status"))
    assert requests[("GET", "/v1/jobs/{cluster}/{job_id}", "200")] == 2.0
    assert requests[("GET", "/v1/jobs/{cluster}/{job_id}", "404")] == 1.0
    assert requests[("GET", "(unmatched)", "404")] == 1.0
    assert requests[("POST", "/v1/reports", "201")] == 4.0
    latency = series(samples, "gpucost_http_request_duration_seconds_count", ("method", "route"))
    assert latency[("GET", "/v1/jobs/{cluster}/{job_id}")] == 3.0
    assert not any("91234" in route or "/no/such" in route for _, route, _ in requests)


def test_report_outcomes_by_reason_and_batch_sizes(client: TestClient, auth: Auth) -> None:
    post = lambda body: client.post("/v1/reports", json=body, headers=auth["collector"])  # noqa: E731
    assert post(report(1)).status_code == 201
    assert post(report(1)).status_code == 200
    assert post(report(1, gpus=[entry(gpu_seconds=30)])).status_code == 409
    assert post(report(2, gpus=[entry(util_pct=101)])).status_code == 422
    assert post(report(3, cluster="other")).status_code == 403
    # Other GPUs than report 1's: a GPU is counted once for any moment.
    again = report(4, gpus=[entry(1)])
    batch = {"reports": [again, again, {"seq": 5}, report(6, gpus=[entry(2)])]}
    response = client.post("/v1/reports:batch", json=batch, headers=auth["collector"])
    assert response.status_code == 200 and response.json()["rejected"] == 1

    samples = scrape(client)

    assert series(samples, "gpucost_reports_total", ("outcome",)) == {
        ("accepted",): 3.0,
        ("duplicate",): 2.0,
        ("rejected",): 4.0,
    }
    rejected = series(samples, "gpucost_reports_rejected_total", ("reason",))
    assert {k[0]: v for k, v in rejected.items() if v} == {
        "conflict": 1.0,
        "invalid": 2.0,
        "forbidden": 1.0,
    }
    assert samples[("gpucost_report_batch_size_count", frozenset())] == 1.0
    assert samples[("gpucost_report_batch_size_sum", frozenset())] == 4.0


def test_a_body_refused_before_routing_counts_against_its_route(db_url: str, auth: Auth) -> None:
    app = create_app(Settings(database_url=db_url, max_body_bytes=1024))
    with TestClient(app) as client:
        big = report(1, gpus=[entry(n) for n in range(20)])
        assert client.post("/v1/reports", json=big, headers=auth["collector"]).status_code == 413

        samples = scrape(client)

    requests = series(samples, "gpucost_http_requests_total", ("method", "route", "status"))
    assert requests[("POST", "/v1/reports", "413")] == 1.0
    assert series(samples, "gpucost_reports_rejected_total", ("reason",))[("too_large",)] == 1.0


def test_database_errors_are_counted_by_class(client: TestClient) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with pytest.raises(DBAPIError), engine.connect() as connection:
        connection.execute(text("SELECT * FROM no_such_table"))

    samples = scrape(client)

    errors = series(samples, "gpucost_database_errors_total", ("error",))
    assert errors[("ProgrammingError",)] + errors[("OperationalError",)] == 1.0
    assert samples[("gpucost_metrics_database_up", frozenset())] == 1.0


def test_an_unreachable_database_still_answers_with_the_service_metrics(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'gpucost.db'}"
    with TestClient(create_app(Settings(database_url=url))) as client:
        samples = scrape(client)

    assert samples[("gpucost_metrics_database_up", frozenset())] == 0.0
    assert not any(name == "gpucost_cost_usd" for name, _ in samples)
    assert ("gpucost_reports_total", frozenset({("outcome", "accepted")})) in samples


def test_each_app_has_a_registry_of_its_own(db_url: str, settings: Settings) -> None:
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        first.get("/healthz")
        first.get("/healthz")
        second.get("/healthz")

        counts = [
            series(scrape(c), "gpucost_http_requests_total", ("method", "route", "status"))
            for c in (first, second)
        ]

    assert [c[("GET", "/healthz", "200")] for c in counts] == [2.0, 1.0]


@pytest.fixture
def cached_client(db_url: str, clock: SettableClock) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=db_url, metrics_cache_seconds=3600), clock=clock)
    with TestClient(app) as client:
        yield client


def test_the_database_read_is_cached(
    cached_client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    seed_usage(cached_client, auth, live_end=clock())
    first = scrape(cached_client)
    more = report(9, node="node-018", **hour("2025-01-06", 12), gpus=[entry(4, job_id="5555")])
    assert (
        cached_client.post("/v1/reports", json=more, headers=auth["collector"]).status_code == 201
    )

    second = scrape(cached_client)

    for name in ("gpucost_gpu_seconds_total", "gpucost_cost_usd"):
        keys = FLEET if name.endswith("_total") else ATTRIBUTION
        assert series(second, name, keys) == series(first, name, keys)


def test_the_snapshot_age_is_exposed(client: TestClient, clock: SettableClock) -> None:
    samples = scrape(client)

    assert samples[("gpucost_metrics_snapshot_age_seconds", frozenset())] == 0.0
