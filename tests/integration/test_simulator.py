"""The CCE simulator over real HTTP on loopback: routes, validation, auth, throttling, faults."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from simulator import Faults, SimulatorServer
from simulator.fleet import Cluster, NodePool, Project
from simulator.server import main
from worker.cce.signer import sign_request

AK = "SIMTESTACCESSKEY"
SK = "sim-test-secret-key"
TOKEN = "sim-test-token"
PASSWORD = "Sync-Test-42x"


class FakeClock:
    """Manually advanced seconds source shared by jobs and the throttle."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Api:
    """Minimal signed client for the simulator, built on httpx and the worker's signer."""

    def __init__(self, sim: SimulatorServer, *, secret_key: str = SK) -> None:
        self.sim = sim
        self.secret_key = secret_key
        self.http = httpx.Client(base_url=sim.url, timeout=5.0, trust_env=False)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        sign: bool = True,
        headers: dict[str, str] | None = None,
        now: datetime | None = None,
    ) -> httpx.Response:
        request = self.http.build_request(method, path, json=body, params=params, headers=headers)
        if sign:
            sign_request(request, access_key=AK, secret_key=self.secret_key, now=now)
        return self.http.send(request)

    def sync(self, pool: NodePool, spec: dict[str, Any] | None = None) -> httpx.Response:
        spec = spec if spec is not None else sync_spec(pool)
        return self.request("POST", sync_path(pool), body={"spec": spec})

    def show_pool(self, pool: NodePool) -> dict[str, Any]:
        path = f"/api/v3/projects/{pool.project_id}/clusters/{pool.cluster_id}/nodepools/{pool.id}"
        response = self.request("GET", path)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.http.close()


def sync_path(pool: NodePool) -> str:
    return (
        f"/api/v3/projects/{pool.project_id}/clusters/{pool.cluster_id}"
        f"/nodepools/{pool.id}/operation/upgrade"
    )


def sync_spec(pool: NodePool, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "maxUnavailable": 1,
        "nodePoolID": pool.id,
        "nodeTemplate": {"login": {"userPassword": {"username": "root", "password": PASSWORD}}},
    }
    spec.update(overrides)
    return spec


def first(sim: SimulatorServer) -> tuple[Project, Cluster, NodePool]:
    project = sim.fleet.projects[0]
    cluster = project.clusters[0]
    return project, cluster, cluster.pools[1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SimulatorServer]:
    server = SimulatorServer(
        projects=2,
        clusters_per_project=3,
        pools_per_cluster=2,
        nodes_per_pool=4,
        credentials={AK: SK},
        tokens=[TOKEN],
        job_seconds=10.0,
        clock=clock,
        unavailable_clusters_per_project=1,
    )
    with server:
        yield server


@pytest.fixture
def api(sim: SimulatorServer) -> Iterator[Api]:
    client = Api(sim)
    yield client
    client.close()


# Fleet and read calls


def test_fleet_same_seed_same_ids() -> None:
    one = SimulatorServer(projects=2, clusters_per_project=4, seed=7).fleet
    two = SimulatorServer(projects=2, clusters_per_project=4, seed=7).fleet
    other = SimulatorServer(projects=2, clusters_per_project=4, seed=8).fleet
    assert one.pool_keys() == two.pool_keys()
    assert one.pool_keys() != other.pool_keys()
    assert len(one.pool_keys()) == 2 * 4 * (2 + 1)


def test_list_clusters_returns_project_clusters(sim: SimulatorServer, api: Api) -> None:
    project, _, _ = first(sim)
    response = api.request("GET", f"/api/v3/projects/{project.id}/clusters")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["metadata"]["uid"] for item in items] == [c.id for c in project.clusters]
    assert [item["status"]["phase"] for item in items] == ["Available", "Available", "Unavailable"]
    assert response.headers["X-Request-Id"]


def test_list_clusters_filters_by_status(sim: SimulatorServer, api: Api) -> None:
    project, _, _ = first(sim)
    path = f"/api/v3/projects/{project.id}/clusters"
    response = api.request("GET", path, params={"status": "Available"})
    assert len(response.json()["items"]) == 2


def test_unknown_project_is_not_found(api: Api) -> None:
    response = api.request("GET", "/api/v3/projects/0000/clusters")
    assert response.status_code == 404
    assert response.json()["errorCode"] == "CCE.01404001"


def test_unknown_route_is_gateway_not_found(api: Api) -> None:
    response = api.request("GET", "/api/v3/nothing-here")
    assert response.status_code == 404
    assert response.json()["error_code"] == "APIGW.0101"


def test_list_pools_hides_default_pool(sim: SimulatorServer, api: Api) -> None:
    project, cluster, _ = first(sim)
    path = f"/api/v3/projects/{project.id}/clusters/{cluster.id}/nodepools"
    hidden = api.request("GET", path).json()["items"]
    shown = api.request("GET", path, params={"showDefaultNodePool": "true"}).json()["items"]
    assert "DefaultPool" not in [item["metadata"]["uid"] for item in hidden]
    assert [item["metadata"]["uid"] for item in shown] == [pool.id for pool in cluster.pools]
    assert shown[0]["metadata"]["uid"] == "DefaultPool"


def test_unknown_pool_is_not_found(sim: SimulatorServer, api: Api) -> None:
    project, cluster, _ = first(sim)
    path = f"/api/v3/projects/{project.id}/clusters/{cluster.id}/nodepools/nope"
    response = api.request("GET", path)
    assert response.status_code == 404
    assert response.json()["errorCode"] == "CCE.01404001"


def test_list_nodes_pages_with_marker(sim: SimulatorServer, api: Api) -> None:
    project, cluster, _ = first(sim)
    path = f"/api/v3/projects/{project.id}/clusters/{cluster.id}/nodes"
    all_ids = [node.id for pool in cluster.pools for node in pool.nodes]

    seen: list[str] = []
    marker = ""
    for _ in range(len(all_ids)):
        params = {"limit": "5"} | ({"marker": marker} if marker else {})
        page = api.request("GET", path, params=params).json()
        ids = [item["metadata"]["uid"] for item in page["items"]]
        assert page["pageInfo"]["currentCount"] == len(ids)
        if not ids:
            break
        seen += ids
        marker = ids[-1]
    assert seen == all_ids


def test_list_nodes_rejects_bad_limit(sim: SimulatorServer, api: Api) -> None:
    project, cluster, _ = first(sim)
    path = f"/api/v3/projects/{project.id}/clusters/{cluster.id}/nodes"
    response = api.request("GET", path, params={"limit": "0"})
    assert response.status_code == 400
    assert "limit" in response.json()["errorMessage"]


# Sync and jobs


def test_sync_runs_job_to_success(sim: SimulatorServer, api: Api, clock: FakeClock) -> None:
    project, _, pool = first(sim)
    response = api.sync(pool)
    assert response.status_code == 200, response.text
    job_id = response.json()["jobid"]

    status = api.show_pool(pool)["status"]
    assert status["jobId"] == job_id
    assert status["conditions"][0] == status["conditions"][0] | {
        "type": "ConfigurationSynchronizing",
        "status": "True",
    }
    job_path = f"/api/v3/projects/{project.id}/jobs/{job_id}"
    assert api.request("GET", job_path).json()["status"]["phase"] == "Initializing"

    clock.advance(5)
    assert api.request("GET", job_path).json()["status"]["phase"] == "Running"
    partial = api.show_pool(pool)["status"]["configurationSyncedNodeCount"]
    assert 0 < partial < len(pool.nodes)

    clock.advance(5)
    job = api.request("GET", job_path).json()
    assert job["status"]["phase"] == "Success"
    assert job["spec"]["resourceID"] == pool.id
    status = api.show_pool(pool)["status"]
    assert status["conditions"][0]["status"] == "False"
    assert status["configurationSyncedNodeCount"] == status["currentNode"] == len(pool.nodes)
    assert sim.audit() == {pool.key(sim.fleet.region): 1}


def test_sync_job_failure_leaves_nodes_behind(clock: FakeClock) -> None:
    faults = Faults(job_failure=1.0)
    with SimulatorServer(projects=1, clusters_per_project=1, faults=faults, clock=clock) as sim:
        api = Api(sim)
        project, _, pool = first(sim)
        job_id = api.sync(pool).json()["jobid"]
        clock.advance(sim.fleet.job_seconds)

        job = api.request("GET", f"/api/v3/projects/{project.id}/jobs/{job_id}").json()
        assert job["status"]["phase"] == "Failed"
        assert job["status"]["reason"]
        status = api.show_pool(pool)["status"]
        assert status["conditions"][0]["status"] == "False"
        assert status["configurationSyncedNodeCount"] < status["currentNode"]
        api.close()


def test_sync_node_subset(sim: SimulatorServer, api: Api, clock: FakeClock) -> None:
    _, _, pool = first(sim)
    chosen = [pool.nodes[0].id, pool.nodes[2].id]
    response = api.sync(pool, sync_spec(pool, nodeIDs=chosen, maxUnavailable=2))
    assert response.status_code == 200, response.text
    clock.advance(sim.fleet.job_seconds)
    assert api.show_pool(pool)["status"]["configurationSyncedNodeCount"] == 2
    assert sim.audit_records()[0].node_ids == chosen


def test_sync_while_running_is_conflict(sim: SimulatorServer, api: Api, clock: FakeClock) -> None:
    _, _, pool = first(sim)
    assert api.sync(pool).status_code == 200

    second = api.sync(pool)
    assert second.status_code == 429
    assert second.json()["errorCode"] == "CCE.01429002"
    assert sim.stats()["conflicts"] == 1

    clock.advance(sim.fleet.job_seconds)
    assert api.sync(pool).status_code == 200
    assert sim.audit() == {pool.key(sim.fleet.region): 2}


def test_sync_default_pool(sim: SimulatorServer, api: Api) -> None:
    _, cluster, _ = first(sim)
    default_pool = cluster.pools[0]
    spec = {"maxUnavailable": 2, "nodePoolID": "DefaultPool"}
    assert api.sync(default_pool, spec).status_code == 200
    assert sim.audit() == {default_pool.key(sim.fleet.region): 1}


def test_sync_on_unavailable_cluster_is_forbidden(sim: SimulatorServer, api: Api) -> None:
    cluster = sim.fleet.projects[0].clusters[-1]
    pool = cluster.pools[1]
    response = api.sync(pool)
    assert response.status_code == 403
    assert response.json()["errorCode"] == "CCE.01403003"
    assert sim.audit() == {}


INVALID_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("zero", {"maxUnavailable": 0}, "spec.maxUnavailable"),
    ("too many", {"maxUnavailable": 21}, "spec.maxUnavailable"),
    ("string", {"maxUnavailable": "1"}, "spec.maxUnavailable"),
    ("unknown key", {"maxUnavailble": 1}, "spec.maxUnavailble"),
    ("pool mismatch", {"nodePoolID": "other-pool"}, "spec.nodePoolID"),
    ("unknown node", {"nodeIDs": ["not-a-node"]}, "spec.nodeIDs[0]"),
    (
        "two logins",
        {"nodeTemplate": {"login": {"sshKey": "k", "userPassword": {"password": PASSWORD}}}},
        "spec.nodeTemplate.login",
    ),
    (
        "weak password",
        {"nodeTemplate": {"login": {"userPassword": {"password": "weakpass"}}}},
        "spec.nodeTemplate.login.userPassword",
    ),
    (
        "bad base64",
        {
            "nodeTemplate": {
                "lifeCycle": {"preInstall": "not base64!"},
                "login": {"sshKey": "k"},
            }
        },
        "spec.nodeTemplate.lifeCycle.preInstall",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [(overrides, field) for _, overrides, field in INVALID_SPECS],
    ids=[name for name, _, _ in INVALID_SPECS],
)
def test_sync_rejects_invalid_body(
    sim: SimulatorServer, api: Api, overrides: dict[str, Any], field: str
) -> None:
    _, _, pool = first(sim)
    response = api.sync(pool, sync_spec(pool, **overrides))
    assert response.status_code == 400
    error = response.json()
    assert error["errorCode"] == "CCE.01400001"
    assert field in error["errorMessage"]
    assert PASSWORD not in error["errorMessage"]
    assert sim.audit() == {}


def test_sync_rejects_missing_spec(sim: SimulatorServer, api: Api) -> None:
    _, _, pool = first(sim)
    response = api.request("POST", sync_path(pool), body={"maxUnavailable": 1})
    assert response.status_code == 400
    assert "spec" in response.json()["errorMessage"]


def test_sync_rejects_non_json(sim: SimulatorServer, api: Api) -> None:
    _, _, pool = first(sim)
    request = api.http.build_request(
        "POST", sync_path(pool), content=b"{not json", headers={"Content-Type": "application/json"}
    )
    sign_request(request, access_key=AK, secret_key=SK)
    response = api.http.send(request)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "CCE.01400001"


def test_sync_accepts_json_charset(sim: SimulatorServer, api: Api) -> None:
    _, _, pool = first(sim)
    body = json.dumps({"spec": sync_spec(pool)}).encode()
    headers = {"Content-Type": "application/json;charset=utf-8"}
    request = api.http.build_request("POST", sync_path(pool), content=body, headers=headers)
    sign_request(request, access_key=AK, secret_key=SK)
    assert api.http.send(request).status_code == 200


# Authentication


def test_unsigned_request_is_unauthorized(sim: SimulatorServer, api: Api) -> None:
    project, _, _ = first(sim)
    response = api.request("GET", f"/api/v3/projects/{project.id}/clusters", sign=False)
    assert response.status_code == 401
    body = response.json()
    assert body["error_code"] == "APIGW.0301"
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert sim.stats()["unauthorized"] == 1


def test_wrong_secret_is_unauthorized(sim: SimulatorServer) -> None:
    project, _, _ = first(sim)
    api = Api(sim, secret_key="wrong-secret")
    response = api.request("GET", f"/api/v3/projects/{project.id}/clusters")
    assert response.status_code == 401
    assert response.json()["error_code"] == "APIGW.0301"
    assert "wrong-secret" not in response.text
    api.close()


def test_stale_signature_is_unauthorized(sim: SimulatorServer, api: Api) -> None:
    project, _, _ = first(sim)
    stale = datetime.now(UTC) - timedelta(minutes=20)
    response = api.request("GET", f"/api/v3/projects/{project.id}/clusters", now=stale)
    assert response.status_code == 401
    assert "expired" in response.json()["error_msg"]


def test_tampered_body_is_unauthorized(sim: SimulatorServer, api: Api) -> None:
    _, _, pool = first(sim)
    signed_body = json.dumps({"spec": sync_spec(pool)}, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    request = api.http.build_request("POST", sync_path(pool), content=signed_body, headers=headers)
    sign_request(request, access_key=AK, secret_key=SK)
    tampered = signed_body.replace(b'"maxUnavailable":1', b'"maxUnavailable":2')
    assert len(tampered) == len(signed_body)
    request = httpx.Request("POST", request.url, headers=request.headers, content=tampered)
    response = api.http.send(request)
    assert response.status_code == 401
    assert sim.audit() == {}


def test_token_authentication(sim: SimulatorServer, api: Api) -> None:
    project, _, _ = first(sim)
    path = f"/api/v3/projects/{project.id}/clusters"
    good = api.request("GET", path, sign=False, headers={"X-Auth-Token": TOKEN})
    bad = api.request("GET", path, sign=False, headers={"X-Auth-Token": "other"})
    assert good.status_code == 200
    assert bad.status_code == 401
    assert bad.json()["errorCode"] == "CCE.01401001"


def test_auth_off_without_credentials() -> None:
    with SimulatorServer(projects=1, clusters_per_project=1) as sim:
        project, _, _ = first(sim)
        api = Api(sim)
        response = api.request("GET", f"/api/v3/projects/{project.id}/clusters", sign=False)
        assert response.status_code == 200
        api.close()


# Throttling


def test_throttle_per_project(clock: FakeClock) -> None:
    with SimulatorServer(
        projects=2, clusters_per_project=3, rate_per_second=2, clock=clock, send_retry_after=True
    ) as sim:
        api = Api(sim)
        pools = [cluster.pools[1] for cluster in sim.fleet.projects[0].clusters]
        assert api.sync(pools[0]).status_code == 200
        assert api.sync(pools[1]).status_code == 200

        throttled = api.sync(pools[2])
        assert throttled.status_code == 429
        assert throttled.json()["error_code"] == "APIGW.0308"
        assert float(throttled.headers["Retry-After"]) == pytest.approx(0.5)

        other_project_pool = sim.fleet.projects[1].clusters[0].pools[1]
        assert api.sync(other_project_pool).status_code == 200

        clock.advance(0.5)
        assert api.sync(pools[2]).status_code == 200
        assert sim.stats()["throttled"] == 1
        assert len(sim.audit()) == 4
        api.close()


def test_throttle_rate_changes_at_run_time(clock: FakeClock) -> None:
    with SimulatorServer(projects=1, clusters_per_project=3, clock=clock) as sim:
        api = Api(sim)
        response = api.http.post("/_sim/throttle", json={"rate_per_second": 1})
        assert response.json() == {"rate_per_second": 1.0}
        pools = [cluster.pools[1] for cluster in sim.fleet.projects[0].clusters]
        assert api.sync(pools[0]).status_code == 200
        assert api.sync(pools[1]).status_code == 429
        assert "Retry-After" not in api.sync(pools[1]).headers
        api.close()


# Faults


def _raw_request(sim: SimulatorServer, request: bytes) -> bytes:
    host, port = "127.0.0.1", sim.port
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(request)
        chunks = []
        for _ in range(100):
            chunk = connection.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_reset_fault_sends_rst(sim: SimulatorServer) -> None:
    sim.set_faults(reset=1.0)
    project, _, _ = first(sim)
    request = f"GET /api/v3/projects/{project.id}/clusters HTTP/1.1\r\nHost: x\r\n\r\n"
    with pytest.raises(ConnectionResetError):
        _raw_request(sim, request.encode())
    assert sim.stats()["resets"] == 1


def test_reset_fault_accepts_nothing(sim: SimulatorServer, api: Api) -> None:
    sim.set_faults(reset=1.0)
    _, _, pool = first(sim)
    with pytest.raises(httpx.TransportError):
        api.sync(pool)
    assert sim.audit() == {}
    assert "jobId" not in pool_status_without_faults(sim, api, pool)


def pool_status_without_faults(sim: SimulatorServer, api: Api, pool: NodePool) -> dict[str, Any]:
    sim.set_faults(Faults())
    return api.show_pool(pool)["status"]  # type: ignore[no-any-return]


def test_drop_after_accept_records_and_resets(sim: SimulatorServer, api: Api) -> None:
    sim.set_faults(drop_after_accept=1.0)
    _, _, pool = first(sim)
    with pytest.raises(httpx.TransportError):
        api.sync(pool)

    records = sim.audit_records()
    assert [record.dropped for record in records] == [True]
    status = pool_status_without_faults(sim, api, pool)
    assert status["jobId"] == records[0].job_id
    assert status["conditions"][0]["status"] == "True"
    assert sim.stats()["dropped_after_accept"] == 1


def test_drop_after_accept_skips_reads(sim: SimulatorServer, api: Api) -> None:
    sim.set_faults(drop_after_accept=1.0)
    _, _, pool = first(sim)
    assert "status" in api.show_pool(pool)


def test_drop_delay_lets_client_time_out(sim: SimulatorServer) -> None:
    sim.set_faults(drop_after_accept=1.0, drop_delay_ms=1500)
    _, _, pool = first(sim)
    api = Api(sim)
    api.http.timeout = httpx.Timeout(5.0, read=0.3)
    with pytest.raises(httpx.ReadTimeout):
        api.sync(pool)
    assert sim.audit() == {pool.key(sim.fleet.region): 1}
    api.close()


def test_server_error_fault(sim: SimulatorServer, api: Api) -> None:
    sim.set_faults(error_5xx=1.0)
    _, _, pool = first(sim)
    response = api.sync(pool)
    assert response.status_code == 500
    assert response.json()["errorCode"] == "CCE.01500001"
    assert sim.audit() == {}
    assert sim.stats()["server_errors"] == 1


def test_latency_fault_delays_requests(sim: SimulatorServer, api: Api) -> None:
    sim.set_faults(latency_ms=300)
    project, _, _ = first(sim)
    started = time.monotonic()
    assert api.request("GET", f"/api/v3/projects/{project.id}/clusters").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_probabilities_are_seeded() -> None:
    def outcomes(seed: int) -> list[int]:
        faults = Faults(error_5xx=0.5)
        with SimulatorServer(projects=1, clusters_per_project=1, faults=faults, seed=seed) as sim:
            api = Api(sim)
            project, _, _ = first(sim)
            path = f"/api/v3/projects/{project.id}/clusters"
            codes = [api.request("GET", path).status_code for _ in range(40)]
            api.close()
            return codes

    first_run = outcomes(3)
    assert first_run == outcomes(3)
    assert 5 < first_run.count(500) < 35


# Admin routes


def test_admin_faults_update_and_reject(sim: SimulatorServer, api: Api) -> None:
    response = api.http.post("/_sim/faults", json={"error_5xx": 0.25, "latency_ms": 5})
    assert response.status_code == 200
    assert response.json()["error_5xx"] == 0.25
    assert sim.faults.latency_ms == 5

    assert api.http.post("/_sim/faults", json={"nonsense": 1}).status_code == 400
    assert api.http.post("/_sim/faults", json={"reset": 2}).status_code == 400
    assert api.http.get("/_sim/faults").json()["error_5xx"] == 0.25


def test_admin_audit_fleet_stats(sim: SimulatorServer, api: Api) -> None:
    _, _, pool = first(sim)
    api.sync(pool)
    api.sync(pool)

    audit = api.http.get("/_sim/audit").json()
    key = pool.key(sim.fleet.region)
    assert audit["syncs"] == {key: 1}
    assert audit["duplicates"] == {}
    assert PASSWORD not in json.dumps(audit)

    fleet = api.http.get("/_sim/fleet").json()
    assert fleet["region"] == sim.fleet.region
    assert [project["id"] for project in fleet["projects"]] == [p.id for p in sim.fleet.projects]

    counts = api.http.get("/_sim/stats").json()["counts"]
    assert counts["accepted"] == 1
    assert counts["conflicts"] == 1


# Server lifecycle, keep-alive and load


def test_keep_alive_serves_many_requests(sim: SimulatorServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    for _ in range(3):
        connection.request("GET", "/_sim/health")
        response = connection.getresponse()
        assert response.status == 200
        response.read()
    connection.close()


def test_stop_closes_idle_connections() -> None:
    sim = SimulatorServer(projects=1, clusters_per_project=1).start()
    connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    connection.request("GET", "/_sim/health")
    connection.getresponse().read()

    started = time.monotonic()
    sim.stop()
    sim.stop()
    assert time.monotonic() - started < 3
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        connection.request("GET", "/_sim/health")
        connection.getresponse()
    connection.close()


def test_concurrent_syncs_accept_each_pool_once() -> None:
    with SimulatorServer(
        projects=2, clusters_per_project=10, credentials={AK: SK}, job_seconds=60
    ) as sim:
        pools = list(sim.fleet.pools(include_default=False))

        def submit_twice(pool: NodePool) -> list[int]:
            api = Api(sim)
            codes = [api.sync(pool).status_code for _ in range(2)]
            api.close()
            return codes

        with ThreadPoolExecutor(max_workers=8) as executor:
            results = list(executor.map(submit_twice, pools))

        assert all(codes == [200, 429] for codes in results)
        assert sim.audit() == {pool.key(sim.fleet.region): 1 for pool in pools}


def test_signed_request_throughput(sim: SimulatorServer) -> None:
    project, _, _ = first(sim)
    path = f"/api/v3/projects/{project.id}/clusters"
    per_thread = 100

    def run() -> None:
        api = Api(sim)
        for _ in range(per_thread):
            assert api.request("GET", path).status_code == 200
        api.close()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as executor:
        list(executor.map(lambda _: run(), range(4)))
    elapsed = time.monotonic() - started
    # The client and the server share one process here; about 600 signed requests per second
    # were measured on 2 cores. The bound is far lower so that a loaded CI machine passes.
    assert 400 / elapsed > 100, f"{400 / elapsed:.0f} requests per second"


# Command line


def test_cli_runs_and_stops_after_duration() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--port",
            "0",
            "--projects",
            "1",
            "--clusters-per-project",
            "2",
            "--duration-seconds",
            "3",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=5, trust_env=False) as client:
            fleet = client.get("/_sim/fleet").json()
        assert len(fleet["projects"][0]["clusters"]) == 2
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_cli_rejects_ak_without_sk(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ak", "only-the-key", "--duration-seconds", "0"]) == 1
    assert "--ak and --sk" in capsys.readouterr().err


def test_cli_rejects_bad_probability(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--fault-reset", "1.5", "--duration-seconds", "0"]) == 1
    assert "reset" in capsys.readouterr().err
