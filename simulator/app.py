"""The simulator's HTTP layer: routing, the CCE API handlers, fault injection and admin routes.

Each API request goes through the same steps, in the order the real gateway and CCE apply them:

1. injected latency, then an injected connection reset (nothing processed, nothing accepted);
2. authentication (401);
3. the per-project token bucket, for sync POSTs only (429 `APIGW.0308`);
4. an injected 500;
5. the handler: lookups (404), body validation (400), cluster state (403), a sync already running
   on the pool (429 `CCE.01429002`), then acceptance;
6. for an accepted sync with fault drop_after_accept: the audit entry and the job exist, then the
   connection is reset without a response.

Routes under `/_sim/` are for tests and operators: no authentication and no faults.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from simulator import views
from simulator.audit import Audit, AuditRecord, Stats
from simulator.auth import AuthenticationError, Authenticator, Caller
from simulator.faults import FaultInjector, FaultPlan
from simulator.fleet import Cluster, Fleet, NodePool, Project, SyncConflictError
from simulator.throttling import ProjectThrottle
from worker.cce.models import UpgradeNodePoolRequest, UpgradeNodePoolSpec

logger = logging.getLogger(__name__)

#: Largest request body read, in bytes; larger bodies get 413 and the connection is closed.
MAX_BODY_BYTES: Final = 1_048_576
#: Largest page of the list nodes call, as CCE documents it.
MAX_NODE_PAGE: Final = 2000

INVALID_REQUEST_CODE: Final = "CCE.01400001"
NOT_FOUND_CODE: Final = "CCE.01404001"
CLUSTER_STATE_CODE: Final = "CCE.01403003"
POOL_LOCKED_CODE: Final = "CCE.01429002"
SERVER_ERROR_CODE: Final = "CCE.01500001"
THROTTLED_CODE: Final = "APIGW.0308"
UNKNOWN_ROUTE_CODE: Final = "APIGW.0101"

_ID: Final = r"([A-Za-z0-9_-]+)"
_PROJECT: Final = rf"/api/v3/projects/{_ID}"
_CLUSTER: Final = rf"{_PROJECT}/clusters/{_ID}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An error response: CCE shape (`errorCode`) or, with `gateway=True`, the gateway shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        gateway: bool = False,
        outcome: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.gateway = gateway
        self.outcome = outcome
        self.retry_after_seconds = retry_after_seconds


@dataclass(slots=True)
class SimulatorState:
    """State shared by the request handlers of one server."""

    fleet: Fleet
    throttle: ProjectThrottle
    faults: FaultInjector
    authenticator: Authenticator
    audit: Audit = field(default_factory=Audit)
    stats: Stats = field(default_factory=Stats)
    send_retry_after: bool = False
    """Whether throttled responses carry Retry-After (seconds). The real gateway rarely sends it."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]
    request_id: str
    caller: Caller
    params: tuple[str, ...]
    plan: FaultPlan


Handler = Callable[[SimulatorState, ApiRequest], Response]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    is_sync: bool = False


class DroppedConnectionError(Exception):
    """Signal that the handler reset the connection on purpose, so nothing more may be written."""


# Lookups ----------------------------------------------------------------------------------


def _project(state: SimulatorState, project_id: str) -> Project:
    project = state.fleet.project(project_id)
    if project is None:
        raise ApiError(404, NOT_FOUND_CODE, f"project {project_id} not found", outcome="not_found")
    return project


def _cluster(state: SimulatorState, project_id: str, cluster_id: str) -> Cluster:
    _project(state, project_id)
    cluster = state.fleet.cluster(project_id, cluster_id)
    if cluster is None:
        raise ApiError(404, NOT_FOUND_CODE, f"cluster {cluster_id} not found", outcome="not_found")
    return cluster


def _pool(state: SimulatorState, project_id: str, cluster_id: str, pool_id: str) -> NodePool:
    pool = _cluster(state, project_id, cluster_id).pool(pool_id)
    if pool is None:
        raise ApiError(
            404,
            NOT_FOUND_CODE,
            f"node pool {pool_id} not found in cluster {cluster_id}",
            outcome="not_found",
        )
    return pool


def _invalid(message: str) -> ApiError:
    return ApiError(400, INVALID_REQUEST_CODE, message, outcome="invalid")


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() == "true"


# CCE API handlers -------------------------------------------------------------------------


def list_clusters(state: SimulatorState, request: ApiRequest) -> Response:
    project = _project(state, request.params[0])
    clusters = list(project.clusters)
    status_filter = request.query.get("status", [""])[-1]
    if status_filter:
        clusters = [cluster for cluster in clusters if cluster.phase == status_filter]
    return Response(200, views.cluster_list(clusters))


def show_cluster(state: SimulatorState, request: ApiRequest) -> Response:
    return Response(200, views.cluster_item(_cluster(state, *request.params)))


def list_pools(state: SimulatorState, request: ApiRequest) -> Response:
    cluster = _cluster(state, *request.params)
    show_default = _flag(request.query, "showDefaultNodePool")
    pools = [pool for pool in cluster.pools if show_default or not pool.is_default]
    return Response(200, views.pool_list(state.fleet, pools))


def show_pool(state: SimulatorState, request: ApiRequest) -> Response:
    pool = _pool(state, *request.params)
    body = views.pool_item(pool, state.fleet.pool_status(pool), state.fleet.region)
    return Response(200, body)


def list_nodes(state: SimulatorState, request: ApiRequest) -> Response:
    cluster = _cluster(state, *request.params)
    limit_text = request.query.get("limit", [str(MAX_NODE_PAGE)])[-1]
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_NODE_PAGE:
        raise _invalid(f"limit must be an integer from 1 to {MAX_NODE_PAGE}, got {limit_text!r}")

    pool_by_node = {node.id: pool for pool in cluster.pools for node in pool.nodes}
    nodes = [node for pool in cluster.pools for node in pool.nodes]
    marker = request.query.get("marker", [""])[-1]
    if marker:
        positions = [index for index, node in enumerate(nodes) if node.id == marker]
        if not positions:
            raise _invalid(f"marker {marker!r} is not the ID of a node in cluster {cluster.id}")
        nodes = nodes[positions[0] + 1 :]
    page = nodes[: int(limit_text)]

    synced: set[str] = set()
    for pool in {pool_by_node[node.id].id: pool_by_node[node.id] for node in page}.values():
        synced |= state.fleet.node_synced(pool)
    return Response(200, views.node_list(pool_by_node, page, synced))


def show_job(state: SimulatorState, request: ApiRequest) -> Response:
    project_id, job_id = request.params
    _project(state, project_id)
    job = state.fleet.job(project_id, job_id)
    if job is None:
        raise ApiError(404, NOT_FOUND_CODE, f"job {job_id} not found", outcome="not_found")
    return Response(200, views.job_item(job, state.fleet.now()))


def sync_pool(state: SimulatorState, request: ApiRequest) -> Response:
    project_id, cluster_id, pool_id = request.params
    pool = _pool(state, project_id, cluster_id, pool_id)
    spec = _parse_sync_body(request).spec
    node_ids = _job_nodes(pool, spec)

    cluster = _cluster(state, project_id, cluster_id)
    if cluster.phase != "Available":
        raise ApiError(
            403,
            CLUSTER_STATE_CODE,
            f"cluster {cluster.id} is {cluster.phase}: node pools can be synchronized only "
            "while the cluster is Available",
            outcome="forbidden",
        )

    try:
        job = state.fleet.start_sync(
            pool,
            node_ids=node_ids,
            max_unavailable=spec.max_unavailable,
            fails=state.faults.job_fails(),
        )
    except SyncConflictError as error:
        raise ApiError(429, POOL_LOCKED_CODE, str(error), outcome="conflicts") from None

    _record_accepted(state, request, pool, spec, job.id)
    return Response(200, {"jobid": job.id})


def _parse_sync_body(request: ApiRequest) -> UpgradeNodePoolRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise _invalid(f"Content-Type must be application/json, got {content_type!r}")
    try:
        body = UpgradeNodePoolRequest.model_validate_json(request.body)
    except ValidationError as error:
        raise _invalid(f"Invalid request body: {describe_validation_error(error)}") from None

    path_pool_id = request.params[2]
    if body.spec.node_pool_id != path_pool_id:
        raise _invalid(
            f"spec.nodePoolID: must equal the node pool ID in the path ({path_pool_id}), "
            f"got {body.spec.node_pool_id}"
        )
    return body


def _job_nodes(pool: NodePool, spec: UpgradeNodePoolSpec) -> tuple[str, ...]:
    pool_node_ids = [node.id for node in pool.nodes]
    for field_name, requested in (("nodeIDs", spec.node_ids), ("skippedNodes", spec.skipped_nodes)):
        for index, node_id in enumerate(requested or ()):
            if node_id not in pool_node_ids:
                raise _invalid(
                    f"spec.{field_name}[{index}]: node {node_id} is not in node pool {pool.id}"
                )
    chosen = spec.node_ids if spec.node_ids is not None else pool_node_ids
    skipped = set(spec.skipped_nodes or ())
    return tuple(node_id for node_id in chosen if node_id not in skipped)


def _record_accepted(
    state: SimulatorState,
    request: ApiRequest,
    pool: NodePool,
    spec: UpgradeNodePoolSpec,
    job_id: str,
) -> None:
    login: str | None = None
    if spec.node_template is not None:
        login = "sshKey" if spec.node_template.login.ssh_key is not None else "userPassword"
    pool_key = pool.key(state.fleet.region)
    state.audit.record(
        AuditRecord(
            pool_key=pool_key,
            job_id=job_id,
            request_id=request.request_id,
            accepted_at=time.time(),
            caller=request.caller.name,
            max_unavailable=spec.max_unavailable,
            node_ids=list(spec.node_ids) if spec.node_ids is not None else None,
            login=login,
            dropped=request.plan.drop_after_accept,
        )
    )
    state.stats.increment("accepted")
    logger.info(
        "accepted sync of %s: job %s, request %s, caller %s",
        pool_key,
        job_id,
        request.request_id,
        request.caller.name,
    )


def describe_validation_error(error: ValidationError) -> str:
    """Describe each problem as `field.path: message`, joined by `; `, without input values."""
    problems = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        path = ""
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif path:
                path += f".{part}"
            else:
                path = str(part)
        problems.append(f"{path or 'body'}: {item['msg']}")
    return "; ".join(problems)


ROUTES: Final = (
    Route("GET", re.compile(rf"{_PROJECT}/clusters"), list_clusters),
    Route("GET", re.compile(_CLUSTER), show_cluster),
    Route("GET", re.compile(rf"{_CLUSTER}/nodepools"), list_pools),
    Route("GET", re.compile(rf"{_CLUSTER}/nodepools/{_ID}"), show_pool),
    Route("GET", re.compile(rf"{_CLUSTER}/nodes"), list_nodes),
    Route("GET", re.compile(rf"{_PROJECT}/jobs/{_ID}"), show_job),
    Route(
        "POST",
        re.compile(rf"{_CLUSTER}/nodepools/{_ID}/operation/upgrade"),
        sync_pool,
        is_sync=True,
    ),
)


# Admin routes -----------------------------------------------------------------------------


def _admin(state: SimulatorState, method: str, path: str, body: bytes) -> Response:
    if method == "GET" and path == "/_sim/health":
        return Response(200, {"status": "ok"})
    if method == "GET" and path == "/_sim/audit":
        return Response(200, state.audit.to_dict())
    if method == "GET" and path == "/_sim/fleet":
        return Response(200, state.fleet.to_dict())
    if method == "GET" and path == "/_sim/stats":
        stats = state.stats.to_dict()
        stats["rate_per_second"] = state.throttle.rate_per_second
        stats["faults"] = state.faults.faults.to_dict()
        return Response(200, stats)
    if path == "/_sim/faults" and method in ("GET", "POST"):
        if method == "GET":
            return Response(200, state.faults.faults.to_dict())
        changes = _admin_json(body)
        try:
            faults = state.faults.update(changes)
        except ValueError as error:
            return Response(400, {"error": str(error)})
        logger.info("faults changed: %s", faults.to_dict())
        return Response(200, faults.to_dict())
    if method == "POST" and path == "/_sim/throttle":
        rate = _admin_json(body).get("rate_per_second")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
            return Response(
                400, {"error": f"rate_per_second must be a number or null, got {rate!r}"}
            )
        try:
            state.throttle.set_rate(None if rate is None else float(rate))
        except ValueError as error:
            return Response(400, {"error": str(error)})
        logger.info("throttle rate changed to %s per second", rate)
        return Response(200, {"rate_per_second": state.throttle.rate_per_second})
    return Response(404, {"error": f"no admin route {method} {path}"})


def _admin_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {"__invalid__": "body is not valid JSON"}
    return data if isinstance(data, dict) else {"__invalid__": "body must be a JSON object"}


# HTTP server ------------------------------------------------------------------------------


class SimulatorHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the shared state and a registry of open connections.

    The registry lets `close_connections` end idle keep-alive connections at shutdown, which
    `shutdown()` alone does not do.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], state: SimulatorState, *, idle_timeout_seconds: float
    ) -> None:
        self.state = state
        self.idle_timeout_seconds = idle_timeout_seconds
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, SimulatorRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name with getfqdn(), a DNS lookup that can
        # leave the machine; the simulator only needs the numeric address.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def forget(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            logger.debug("connection from %s ended: %r", client_address, error)
            return
        logger.exception("unexpected error on the connection from %s", client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            # A connection that the peer already closed raises OSError and needs nothing more.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class SimulatorRequestHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection (keep-alive); requests on it are served in order."""

    protocol_version = "HTTP/1.1"
    server_version = "cce-sync-simulator"
    server: SimulatorHTTPServer

    def setup(self) -> None:
        self._was_reset = False
        super().setup()
        # The socket timeout bounds every read, so an idle or stuck client frees its thread.
        self.connection.settimeout(self.server.idle_timeout_seconds)
        # Headers and body go out in two writes. Without TCP_NODELAY the second write waits for
        # the client's delayed ACK (about 40 ms on Linux), which caps a connection near 25/s.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        self.server.forget(self.connection)
        if self._was_reset:
            return
        # A peer that went away raises OSError on the final flush, and nothing is left to send.
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        request_id = uuid.uuid4().hex
        split = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return
        try:
            if split.path.startswith("/_sim/"):
                response = _admin(self.server.state, method, split.path, body)
            else:
                response = self._serve_api(method, split.path, split.query, body, request_id)
        except DroppedConnectionError:
            return
        except Exception:
            logger.exception(
                "unexpected error serving %s %s (request %s)", method, split.path, request_id
            )
            response = Response(500, views.cce_error(SERVER_ERROR_CODE, "internal server error"))
        self._send(response, request_id)

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send_plain_error(411, "chunked bodies are not supported: send Content-Length")
            return None
        length_text = self.headers.get("Content-Length", "0")
        if not length_text.isdigit():
            self._send_plain_error(400, f"invalid Content-Length {length_text!r}")
            return None
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self._send_plain_error(413, f"body larger than {MAX_BODY_BYTES} bytes")
            return None
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client closed the connection before sending the whole body.
            self.close_connection = True
            return None
        return body

    def _serve_api(
        self, method: str, path: str, query_string: str, body: bytes, request_id: str
    ) -> Response:
        state = self.server.state
        state.stats.increment("requests")
        route, params = _match(method, path)
        if route is None:
            return _gateway_response(
                404, UNKNOWN_ROUTE_CODE, f"no API {method} {path}", request_id, state, "not_found"
            )

        plan = state.faults.plan(is_sync=route.is_sync)
        if plan.delay_seconds > 0:
            time.sleep(plan.delay_seconds)
        if plan.reset:
            state.stats.increment("resets")
            logger.debug("injected reset before processing request %s", request_id)
            self._reset()

        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            caller = state.authenticator.authenticate(
                method=method, path=path, query_string=query_string, headers=headers, body=body
            )
        except AuthenticationError as error:
            state.stats.increment("unauthorized")
            if error.gateway:
                return _gateway_response(401, error.code, error.message, request_id, state, None)
            return Response(401, views.cce_error(error.code, error.message))

        request = ApiRequest(
            method=method,
            path=path,
            query=parse_qs(query_string, keep_blank_values=True),
            body=body,
            headers=headers,
            request_id=request_id,
            caller=caller,
            params=params,
            plan=plan,
        )
        try:
            response = _handle(state, route, request)
        except ApiError as error:
            return _error_response(error, request_id, state)
        if plan.drop_after_accept:
            self._drop_after_accept(plan, request_id)
        return response

    def _drop_after_accept(self, plan: FaultPlan, request_id: str) -> None:
        state = self.server.state
        state.stats.increment("dropped_after_accept")
        logger.debug("injected drop after accepting request %s", request_id)
        if plan.drop_delay_seconds > 0:
            time.sleep(plan.drop_delay_seconds)
        self._reset()

    def _reset(self) -> None:
        """Reset the TCP connection (RST, not FIN) and abandon the request."""
        linger_on_zero_seconds = struct.pack("ii", 1, 0)
        # A peer that already closed raises OSError, and the close below then frees the socket.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_on_zero_seconds)
        self._was_reset = True
        self.close_connection = True
        # The buffered reader holds a reference to the socket. The descriptor closes, and the
        # RST goes out, only when both are closed.
        self.rfile.close()
        self.connection.close()
        raise DroppedConnectionError

    def _send(self, response: Response, request_id: str) -> None:
        payload = json.dumps(response.body, separators=(",", ":")).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Request-Id", request_id)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_plain_error(self, status: int, message: str) -> None:
        self.close_connection = True
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


def _match(method: str, path: str) -> tuple[Route | None, tuple[str, ...]]:
    for route in ROUTES:
        if route.method != method:
            continue
        match = route.pattern.fullmatch(path)
        if match is not None:
            return route, match.groups()
    return None, ()


def _handle(state: SimulatorState, route: Route, request: ApiRequest) -> Response:
    if route.is_sync:
        decision = state.throttle.take(request.params[0])
        if not decision.allowed:
            raise ApiError(
                429,
                THROTTLED_CODE,
                "The throttling threshold has been reached: policy user over ratelimit, "
                f"limit:{state.throttle.rate_per_second}, time:1 second",
                gateway=True,
                outcome="throttled",
                retry_after_seconds=decision.retry_after_seconds,
            )
    if request.plan.error_5xx:
        raise ApiError(
            500,
            SERVER_ERROR_CODE,
            "internal server error (injected fault)",
            outcome="server_errors",
        )
    return route.handler(state, request)


def _error_response(error: ApiError, request_id: str, state: SimulatorState) -> Response:
    headers: dict[str, str] = {}
    if error.retry_after_seconds is not None and state.send_retry_after:
        headers["Retry-After"] = f"{error.retry_after_seconds:.3f}"
    if error.gateway:
        response = _gateway_response(
            error.status, error.code, error.message, request_id, state, error.outcome
        )
        response.headers.update(headers)
        return response
    if error.outcome is not None:
        state.stats.increment(error.outcome)
    logger.debug("request %s rejected: %s %s", request_id, error.status, error.code)
    return Response(error.status, views.cce_error(error.code, error.message), headers)


def _gateway_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    state: SimulatorState,
    outcome: str | None,
) -> Response:
    if outcome is not None:
        state.stats.increment(outcome)
    return Response(status, views.gateway_error(code, message, request_id))
