"""CceClient over real HTTP on loopback: a scripted server of this module, and the simulator.

The scripted server verifies every AK/SK signature with `verify_request` and then plays the
response a test queued: a status with headers and body, a reset, a stall or a slow body.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from worker.cce.client import CceClient, InvalidResponseError
from worker.cce.credentials import Credentials
from worker.cce.errors import ApiError, ConfigurationError, ConnectError, OutcomeUnknownError
from worker.cce.models import UpgradeNodePoolSpec
from worker.cce.signer import SignatureError, verify_request
from worker.retry import classify

AK = "CLIENTTESTAK00000000"
SK = "client-test-secret-key-000000000000"
PASSWORD = "Sync-Pass42"
REGION = "ap-southeast-1"
PROJECT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CLUSTER = "cluster-1"
POOL = "pool-1"

#: Maximum duration of a scripted stall or trickle, so a failing test cannot hang.
MAX_STALL_SECONDS = 3.0


@dataclass
class Scripted:
    """One queued reply: `action` is respond, reset, stall or trickle."""

    action: str = "respond"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    access_key: str | None
    signature_error: str | None


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: list[Scripted] = []
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.stop_stalling = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def queue(self, *replies: Scripted) -> None:
        with self.lock:
            self.replies.extend(replies)

    def next_reply(self) -> Scripted:
        with self.lock:
            return self.replies.pop(0) if self.replies else Scripted(body=b"{}")

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Resets and stalls break connections on purpose; their tracebacks are noise.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._record(body)
        reply = self.server.next_reply()
        if reply.action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if reply.action == "stall":
            self.server.stop_stalling.wait(MAX_STALL_SECONDS)
            self.close_connection = True
            return
        self._respond(reply)

    def _record(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        headers = dict(self.headers.items())
        access_key = error = None
        if "Authorization" in headers:
            try:
                access_key = verify_request(
                    method=self.command,
                    path=path,
                    query_string=query,
                    headers=headers,
                    body=body,
                    lookup_secret={AK: SK}.get,
                )
            except SignatureError as caught:
                error = caught.reason
        with self.server.lock:
            self.server.received.append(
                Received(self.command, path, query, headers, body, access_key, error)
            )

    def _respond(self, reply: Scripted) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.action == "trickle":
            deadline = time.monotonic() + MAX_STALL_SECONDS
            for byte in reply.body:
                if time.monotonic() > deadline or self.server.stop_stalling.is_set():
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
            self.close_connection = True
            return
        self.wfile.write(reply.body)


@pytest.fixture()
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield scripted
    scripted.stop_stalling.set()
    scripted.shutdown()
    scripted.server_close()
    thread.join(timeout=5)


@dataclass
class Observations:
    calls: list[tuple[str, str, float]] = field(default_factory=list)

    def __call__(self, operation: str, code: str, seconds: float) -> None:
        self.calls.append((operation, code, seconds))


def make_client(
    url: str,
    observer: Observations | None = None,
    *,
    credentials: Credentials | None = None,
    read_seconds: float = 5.0,
    deadline_seconds: float = 10.0,
) -> CceClient:
    return CceClient(
        credentials=credentials or Credentials.from_keys(AK, SK),
        endpoint_override=url,
        timeout=httpx.Timeout(connect=2.0, read=read_seconds, write=2.0, pool=2.0),
        deadline_seconds=deadline_seconds,
        observer=observer,
    )


def password_spec(pool: str = POOL) -> UpgradeNodePoolSpec:
    return UpgradeNodePoolSpec.model_validate(
        {
            "maxUnavailable": 2,
            "nodePoolID": pool,
            "nodeTemplate": {"login": {"userPassword": {"password": PASSWORD}}},
        }
    )


def sync(client: CceClient, spec: UpgradeNodePoolSpec | None = None) -> Any:
    return client.sync_node_pool(
        region=REGION,
        project_id=PROJECT,
        cluster_id=CLUSTER,
        nodepool_id=POOL,
        spec=spec or password_spec(),
    )


def show_pool(client: CceClient) -> Any:
    return client.show_node_pool(
        region=REGION, project_id=PROJECT, cluster_id=CLUSTER, nodepool_id=POOL
    )


def json_reply(status: int, data: object, **headers: str) -> Scripted:
    return Scripted(
        status=status,
        headers={"Content-Type": "application/json", **headers},
        body=json.dumps(data).encode(),
    )


# Requests as sent ----------------------------------------------------------------------------


def test_sync_sends_signed_request(server: ScriptedServer) -> None:
    server.queue(json_reply(200, {"jobid": "job-1"}, **{"X-Request-Id": "req-1"}))
    with make_client(server.url) as client:
        result = sync(client)

    assert (result.job_id, result.request_id, result.status_code) == ("job-1", "req-1", 200)
    received = server.received[0]
    assert received.signature_error is None
    assert received.access_key == AK
    assert received.method == "POST"
    assert received.path == (
        f"/api/v3/projects/{PROJECT}/clusters/{CLUSTER}/nodepools/{POOL}/operation/upgrade"
    )
    assert received.headers["X-Project-Id"] == PROJECT
    assert received.headers["Content-Type"] == "application/json"
    assert "x-project-id" in received.headers["Authorization"]
    assert json.loads(received.body) == {
        "spec": {
            "maxUnavailable": 2,
            "nodePoolID": POOL,
            "nodeTemplate": {"login": {"userPassword": {"username": "root", "password": PASSWORD}}},
        }
    }


def test_every_call_is_signed_afresh(server: ScriptedServer) -> None:
    moments = iter([datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, 0, 0, 5, tzinfo=UTC)])
    client = CceClient(
        credentials=Credentials.from_keys(AK, SK),
        endpoint_override=server.url,
        clock=lambda: next(moments),
    )
    server.queue(json_reply(200, {}), json_reply(200, {}))
    with client:
        sync(client)
        sync(client)

    dates = [received.headers["X-Sdk-Date"] for received in server.received]
    assert dates == ["20300101T000000Z", "20300101T000005Z"]
    assert (
        server.received[0].headers["Authorization"] != server.received[1].headers["Authorization"]
    )


def test_security_token_is_sent_and_signed(server: ScriptedServer) -> None:
    credentials = Credentials.from_keys(AK, SK, "temporary-token")
    with make_client(server.url, credentials=credentials) as client:
        show_pool(client)

    received = server.received[0]
    assert received.signature_error is None
    assert received.headers["X-Security-Token"] == "temporary-token"


def test_token_auth_sends_x_auth_token(server: ScriptedServer) -> None:
    with make_client(server.url, credentials=Credentials.from_token("iam-token")) as client:
        show_pool(client)

    received = server.received[0]
    assert received.headers["X-Auth-Token"] == "iam-token"
    assert "Authorization" not in received.headers


def test_read_operations(server: ScriptedServer) -> None:
    server.queue(
        json_reply(
            200,
            {
                "metadata": {"uid": POOL},
                "status": {
                    "currentNode": 3,
                    "configurationSyncedNodeCount": 3,
                    "jobId": "job-1",
                    "conditions": [{"type": "ConfigurationSynchronizing", "status": "False"}],
                },
            },
        ),
        json_reply(200, {"items": [{"metadata": {"uid": "DefaultPool", "name": "DefaultPool"}}]}),
        json_reply(
            200,
            {
                "items": [
                    {"metadata": {"uid": CLUSTER, "name": "c"}, "status": {"phase": "Available"}}
                ]
            },
        ),
        json_reply(200, {"status": {"phase": "Success"}}),
    )
    with make_client(server.url) as client:
        pool = show_pool(client)
        pools = client.list_node_pools(region=REGION, project_id=PROJECT, cluster_id=CLUSTER)
        clusters = client.list_clusters(region=REGION, project_id=PROJECT)
        job = client.show_job(region=REGION, project_id=PROJECT, job_id="job-1")

    assert (pool.synchronizing, pool.synced_node_count, pool.job_id) == (False, 3, "job-1")
    assert [item.id for item in pools] == ["DefaultPool"]
    assert [(item.id, item.phase) for item in clusters] == [(CLUSTER, "Available")]
    assert job.phase == "Success"
    assert [received.path for received in server.received] == [
        f"/api/v3/projects/{PROJECT}/clusters/{CLUSTER}/nodepools/{POOL}",
        f"/api/v3/projects/{PROJECT}/clusters/{CLUSTER}/nodepools",
        f"/api/v3/projects/{PROJECT}/clusters",
        f"/api/v3/projects/{PROJECT}/jobs/job-1",
    ]
    assert server.received[1].query == "showDefaultNodePool=true"
    assert all(received.signature_error is None for received in server.received)


def test_list_node_pools_without_default(server: ScriptedServer) -> None:
    server.queue(json_reply(200, {"items": []}))
    with make_client(server.url) as client:
        client.list_node_pools(
            region=REGION, project_id=PROJECT, cluster_id=CLUSTER, show_default=False
        )

    assert server.received[0].query == ""


def test_sync_accepts_empty_and_job_bodies(server: ScriptedServer) -> None:
    server.queue(
        Scripted(status=200),
        json_reply(200, {"metadata": {"uid": "job-7"}}),
        Scripted(status=200, body=b"not json"),
    )
    with make_client(server.url) as client:
        results = [sync(client) for _ in range(3)]

    assert [result.job_id for result in results] == [None, "job-7", None]


# Error responses -----------------------------------------------------------------------------


def test_cce_error_body(server: ScriptedServer) -> None:
    server.queue(
        json_reply(
            400,
            {"errorCode": "CCE.01400001", "errorMessage": "invalid maxUnavailable"},
            **{"X-Request-Id": "req-400"},
        )
    )
    with make_client(server.url) as client, pytest.raises(ApiError) as caught:
        sync(client)

    error = caught.value
    assert (error.status_code, error.error_code) == (400, "CCE.01400001")
    assert error.error_message == "invalid maxUnavailable"
    assert error.request_id == "req-400"
    assert error.operation == "sync_node_pool"
    assert classify(error).action == "fail"


def test_gateway_throttle_body_and_retry_after(server: ScriptedServer) -> None:
    server.queue(
        json_reply(
            429,
            {
                "error_code": "APIGW.0308",
                "error_msg": "policy user over ratelimit, limit:10, time:1 minute",
                "request_id": "gw-1",
            },
            **{"Retry-After": "1.5"},
        )
    )
    with make_client(server.url) as client, pytest.raises(ApiError) as caught:
        sync(client)

    error = caught.value
    assert (error.error_code, error.request_id, error.retry_after_seconds) == (
        "APIGW.0308",
        "gw-1",
        1.5,
    )
    decision = classify(error)
    assert decision.throttled
    assert decision.retry_after_seconds == 1.5


def test_retry_after_http_date(server: ScriptedServer) -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    server.queue(json_reply(503, {}, **{"Retry-After": later}))
    client = CceClient(
        credentials=Credentials.from_keys(AK, SK), endpoint_override=server.url, clock=lambda: now
    )
    with client, pytest.raises(ApiError) as caught:
        show_pool(client)

    assert caught.value.retry_after_seconds == 30.0


def test_error_without_body(server: ScriptedServer) -> None:
    server.queue(Scripted(status=502, body=b"<html>bad gateway</html>"))
    with make_client(server.url) as client, pytest.raises(ApiError) as caught:
        show_pool(client)

    assert (caught.value.status_code, caught.value.error_code) == (502, None)
    assert classify(caught.value).reason == "server_error"


def test_read_with_invalid_json(server: ScriptedServer) -> None:
    server.queue(Scripted(status=200, body=b"[1, 2"))
    with make_client(server.url) as client, pytest.raises(InvalidResponseError):
        show_pool(client)


def test_errors_hide_secrets(server: ScriptedServer) -> None:
    server.queue(json_reply(401, {"error_code": "APIGW.0301", "error_msg": "verify fail"}))
    client = make_client(server.url)
    with client, pytest.raises(ApiError) as caught:
        sync(client)

    text = f"{caught.value} {caught.value!r} {client!r}"
    for secret in (SK, PASSWORD):
        assert secret not in text
    assert classify(caught.value).action == "pause"


# Transport failures --------------------------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused_is_connect_error() -> None:
    observer = Observations()
    with (
        make_client(f"http://127.0.0.1:{_unused_port()}", observer) as client,
        pytest.raises(ConnectError) as caught,
    ):
        sync(client)

    assert caught.value.kind == "connect_error"
    assert classify(caught.value).action == "retry"
    assert [(operation, code) for operation, code, _ in observer.calls] == [
        ("sync_node_pool", "connect_error")
    ]


def test_reset_after_sending_is_outcome_unknown(server: ScriptedServer) -> None:
    server.queue(Scripted(action="reset"))
    observer = Observations()
    with make_client(server.url, observer) as client, pytest.raises(OutcomeUnknownError) as caught:
        sync(client)

    assert caught.value.kind == "reset"
    assert len(server.received) == 1
    assert classify(caught.value).action == "reconcile"
    assert [code for _, code, _ in observer.calls] == ["reset"]


def test_read_timeout_is_outcome_unknown(server: ScriptedServer) -> None:
    server.queue(Scripted(action="stall"))
    observer = Observations()
    started = time.monotonic()
    with (
        make_client(server.url, observer, read_seconds=0.3) as client,
        pytest.raises(OutcomeUnknownError) as caught,
    ):
        sync(client)

    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 2.0
    assert [code for _, code, _ in observer.calls] == ["timeout"]


def test_read_timeout_on_get_is_retried() -> None:
    error = OutcomeUnknownError("lost", operation="show_node_pool", kind="timeout")

    assert classify(error).action == "retry"


def test_deadline_cuts_slow_body_of_read(server: ScriptedServer) -> None:
    server.queue(Scripted(action="trickle", body=json.dumps({"status": {}}).encode() * 3))
    started = time.monotonic()
    with (
        make_client(server.url, read_seconds=1.0, deadline_seconds=0.5) as client,
        pytest.raises(InvalidResponseError, match="cut off"),
    ):
        show_pool(client)

    assert time.monotonic() - started < 1.5


def test_deadline_on_accepted_sync_still_accepts(server: ScriptedServer) -> None:
    server.queue(Scripted(action="trickle", body=json.dumps({"jobid": "job-slow"}).encode() * 3))
    with make_client(server.url, read_seconds=1.0, deadline_seconds=0.5) as client:
        result = sync(client)

    assert result.status_code == 200
    assert result.job_id is None


def test_observer_called_once_per_call(server: ScriptedServer) -> None:
    server.queue(json_reply(200, {}), json_reply(404, {"errorCode": "CCE.01404001"}))
    observer = Observations()
    with make_client(server.url, observer) as client:
        show_pool(client)
        with pytest.raises(ApiError):
            show_pool(client)

    assert [(operation, code) for operation, code, _ in observer.calls] == [
        ("show_node_pool", "200"),
        ("show_node_pool", "404"),
    ]
    assert all(seconds >= 0 for _, _, seconds in observer.calls)


# Misuse --------------------------------------------------------------------------------------


def test_spec_for_other_pool_is_rejected(server: ScriptedServer) -> None:
    with make_client(server.url) as client, pytest.raises(ValueError, match="nodePoolID"):
        sync(client, password_spec(pool="pool-2"))

    assert server.received == []


@pytest.mark.parametrize("cluster_id", ["../x", "a/b", "a?b", ""])
def test_invalid_ids_are_rejected(server: ScriptedServer, cluster_id: str) -> None:
    with make_client(server.url) as client, pytest.raises(ValueError, match="cluster_id"):
        client.list_node_pools(region=REGION, project_id=PROJECT, cluster_id=cluster_id)

    assert server.received == []


def test_plain_http_to_remote_host_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        CceClient(credentials=Credentials.from_keys(AK, SK), endpoint_override="http://example.com")


# Against the simulator -----------------------------------------------------------------------


def test_client_against_simulator() -> None:
    simulator_server = pytest.importorskip("simulator.server")
    simulator = simulator_server.SimulatorServer(
        projects=1, clusters_per_project=2, credentials={AK: SK}, job_seconds=0
    )
    with simulator:
        project = simulator.fleet.projects[0]
        cluster = project.clusters[0]
        with make_client(simulator.url) as client:
            clusters = client.list_clusters(region=REGION, project_id=project.id)
            pools = client.list_node_pools(
                region=REGION, project_id=project.id, cluster_id=cluster.id
            )
            pool_id = next(pool.id for pool in pools if pool.id != "DefaultPool")
            result = client.sync_node_pool(
                region=REGION,
                project_id=project.id,
                cluster_id=cluster.id,
                nodepool_id=pool_id,
                spec=password_spec(pool=pool_id),
            )
            status = client.show_node_pool(
                region=REGION, project_id=project.id, cluster_id=cluster.id, nodepool_id=pool_id
            )

        audit = simulator.audit()

    assert {item.id for item in clusters} == {item.id for item in project.clusters}
    assert "DefaultPool" in {pool.id for pool in pools}
    assert result.status_code == 200
    assert result.job_id is not None
    assert status.job_id == result.job_id
    assert audit == {f"{REGION}/{project.id}/{cluster.id}/{pool_id}": 1}


def test_wrong_secret_against_simulator() -> None:
    simulator_server = pytest.importorskip("simulator.server")
    simulator = simulator_server.SimulatorServer(
        projects=1, clusters_per_project=1, credentials={AK: SK}
    )
    with simulator:
        project = simulator.fleet.projects[0]
        credentials = Credentials.from_keys(AK, "wrong-secret")
        with (
            make_client(simulator.url, credentials=credentials) as client,
            pytest.raises(ApiError) as caught,
        ):
            client.list_clusters(region=REGION, project_id=project.id)

    assert (caught.value.status_code, caught.value.error_code) == (401, "APIGW.0301")
    assert classify(caught.value).action == "pause"
