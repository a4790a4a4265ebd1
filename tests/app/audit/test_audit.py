"""`GET /v1/audit`: every admin change readable by admins, newest first, in pages."""

from fastapi.testclient import TestClient

from tests.support import CLUSTER

Auth = dict[str, dict[str, str]]
RATE = {
    "gpu_model": "NVIDIA H800",
    "usd_per_gpu_hour": "2",
    "effective_from": "2025-01-01T00:00:00Z",
}


def test_admin_changes_are_listed_newest_first_with_filters_and_pages(
    client: TestClient, auth: Auth
) -> None:
    client.post("/v1/rates", json=RATE, headers=auth["admin"])
    client.post("/v1/rates", json={**RATE, "usd_per_gpu_hour": "3"}, headers=auth["admin"])
    client.put(f"/v1/jobs/{CLUSTER}/1", json={"model": "m"}, headers=auth["collector"])

    everything = client.get("/v1/audit", headers=auth["admin"]).json()
    rates = client.get("/v1/audit", params={"action": "rate"}, headers=auth["admin"]).json()
    first = client.get("/v1/audit", params={"limit": 2}, headers=auth["admin"]).json()
    rest = client.get(
        "/v1/audit", params={"limit": 2, "before": first["next_before"]}, headers=auth["admin"]
    ).json()
    by_collector = client.get(
        "/v1/audit", params={"actor": "collector"}, headers=auth["admin"]
    ).json()

    actions = [e["action"] for e in everything["entries"]]
    # The fixture's three tokens were created first; these three changes came after.
    assert actions[:3] == ["job.create", "rate.restate", "rate.create"]
    assert actions[3:] == ["token.create"] * 3
    assert [e["action"] for e in rates["entries"]] == ["rate.restate", "rate.create"]
    assert (
        rates["entries"][0]["details"]["old"] == "2"
        and rates["entries"][0]["details"]["new"] == "3"
    )
    assert [e["id"] for e in first["entries"] + rest["entries"]] == [
        e["id"] for e in everything["entries"]
    ][:4]
    assert [(e["actor"], e["target"]) for e in by_collector["entries"]] == [
        ("collector", f"job:{CLUSTER}/1")
    ]
    assert everything["next_before"] is None


def test_only_admins_read_the_audit_log(client: TestClient, auth: Auth) -> None:
    assert client.get("/v1/audit", headers=auth["viewer"]).status_code == 403
    assert client.get("/v1/audit", headers=auth["collector"]).status_code == 403
    assert client.get("/v1/audit").status_code == 401
