"""Synchronous httpx client for the CCE calls cce-sync makes.

The client makes one attempt per call and never retries, because resending a sync POST resets
nodes again. The caller (the worker) classifies the raised error with `worker.retry.classify` and
decides. Every call builds and signs a fresh request, so a retry by the caller carries a fresh
`X-Sdk-Date`.

Timeouts: connect, read, write and pool timeouts apply per phase (each capped at the deadline),
and reading the response body stops at `deadline_seconds` after the call started. A call can
still exceed the deadline while connecting and sending, by at most the connect and write
timeouts.

httpx exceptions are converted once, here, into the `worker.cce.errors` tree. A sync POST that
received a 2xx status line counts as accepted even when its body could not be read.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import httpx

from worker.cce import credentials as credentials_module
from worker.cce.credentials import Credentials
from worker.cce.endpoints import endpoint_for
from worker.cce.errors import ApiError, ConfigurationError, ConnectError, OutcomeUnknownError
from worker.cce.models import (
    ClusterSummary,
    JobStatus,
    NodePoolStatus,
    NodePoolSummary,
    SyncResult,
    UpgradeNodePoolRequest,
    UpgradeNodePoolSpec,
    is_resource_id,
    parse_clusters,
    parse_job,
    parse_job_id,
    parse_node_pool_status,
    parse_node_pools,
)
from worker.cce.signer import sign_request

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = [
    "DEFAULT_DEADLINE_SECONDS",
    "DEFAULT_TIMEOUT",
    "CceClient",
    "ClusterSummary",
    "InvalidResponseError",
    "JobStatus",
    "NodePoolStatus",
    "NodePoolSummary",
    "Observer",
    "SyncResult",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
DEFAULT_DEADLINE_SECONDS: Final = 60.0

#: Responses larger than this are not read further (list calls of a large project stay far below).
MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
#: Maximum length of a server error message kept in an `ApiError`, in characters.
MAX_ERROR_MESSAGE_CHARS: Final = 500

USER_AGENT: Final = "cce-sync/0.1"

OPERATION_SYNC_NODE_POOL: Final = "sync_node_pool"
OPERATION_SHOW_NODE_POOL: Final = "show_node_pool"
OPERATION_LIST_NODE_POOLS: Final = "list_node_pools"
OPERATION_LIST_CLUSTERS: Final = "list_clusters"
OPERATION_SHOW_JOB: Final = "show_job"

#: `observer(operation, code, seconds)`: called once per HTTP call with the HTTP status as text,
#: or `connect_error`, `timeout` or `reset` when no response arrived.
Observer = Callable[[str, str, float], None]


class InvalidResponseError(ApiError):
    """A read call returned 2xx with a body that is not the expected JSON (or was cut off)."""


@dataclass(frozen=True, slots=True)
class _Reply:
    status_code: int
    headers: httpx.Headers
    body: bytes
    complete: bool


def _check_id(name: str, value: str) -> None:
    if not is_resource_id(value):
        raise ValueError(
            f"invalid {name} {value!r}: use letters, digits, '-' and '_' only (at most 128)"
        )


def _capped_timeout(timeout: httpx.Timeout, deadline_seconds: float) -> httpx.Timeout:
    def cap(value: float | None) -> float:
        return deadline_seconds if value is None else min(value, deadline_seconds)

    return httpx.Timeout(
        connect=cap(timeout.connect),
        read=cap(timeout.read),
        write=cap(timeout.write),
        pool=cap(timeout.pool),
    )


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Return a `Retry-After` header in seconds (delta or HTTP date), or None when absent/invalid."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _load_json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """Return (error code, message, request ID) from a CCE, gateway or IAM error body."""
    data = _load_json(body)
    if not isinstance(data, Mapping):
        return None, None, None

    nested = data.get("error")
    nested = nested if isinstance(nested, Mapping) else {}
    code = (
        _text(data.get("errorCode")) or _text(data.get("error_code")) or _text(nested.get("code"))
    )
    message = (
        _text(data.get("errorMessage"))
        or _text(data.get("error_msg"))
        or _text(nested.get("message"))
        or _text(data.get("message"))
    )
    if message is not None and len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[:MAX_ERROR_MESSAGE_CHARS] + "..."
    return code, message, _text(data.get("request_id"))


class CceClient:
    """CCE API client over one `httpx.Client` (connection pool shared by all calls).

    Thread-safe as httpx.Client is. Close it (or use it as a context manager) to release its
    connections.

    Args:
        credentials: AK/SK (requests are signed) or an IAM token (sent as `X-Auth-Token`).
        endpoint_override: base URL replacing the public CCE endpoint, `{region}` allowed;
            http only for loopback hosts.
        timeout: per-phase timeouts in seconds.
        deadline_seconds: overall limit on one call (see the module docstring for the bound).
        transport: httpx transport, for tests or proxies; the default opens real connections.
        observer: called once per HTTP call, for metrics.
        clock: current time for signing dates and `Retry-After` dates (UTC-aware).

    Raises:
        ConfigurationError: for an endpoint override that is not allowed.
    """

    def __init__(
        self,
        *,
        credentials: Credentials,
        endpoint_override: str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        transport: httpx.BaseTransport | None = None,
        observer: Observer | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if deadline_seconds <= 0:
            raise ValueError(f"deadline_seconds must be positive, got {deadline_seconds}")
        if endpoint_override is not None:
            # Validate once at start-up rather than on the first call.
            endpoint_for("ap-southeast-1", endpoint_override)

        self._credentials = credentials
        self._endpoint_override = endpoint_override
        self._deadline_seconds = deadline_seconds
        self._timeout = _capped_timeout(timeout, deadline_seconds)
        self._observer = observer
        self._clock = clock or (lambda: datetime.now(UTC))
        self._http = httpx.Client(
            transport=transport,
            timeout=self._timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, observer: Observer | None = None) -> CceClient:
        """Build a client from settings (credentials, endpoint override, timeouts).

        Raises:
            CredentialsError: when no credentials are configured.
            ConfigurationError: for an endpoint override that is not allowed.
        """
        timeout = httpx.Timeout(
            connect=settings.http_connect_timeout_seconds,
            read=settings.http_read_timeout_seconds,
            write=settings.http_read_timeout_seconds,
            pool=settings.http_connect_timeout_seconds,
        )
        return cls(
            credentials=credentials_module.from_settings(settings),
            endpoint_override=settings.endpoint,
            timeout=timeout,
            deadline_seconds=settings.http_deadline_seconds,
            observer=observer,
        )

    @property
    def credential_id(self) -> str:
        """Non-secret fingerprint of the credentials in use."""
        return self._credentials.credential_id

    def endpoint(self, region: str) -> str:
        """Return the base URL used for a region."""
        return endpoint_for(region, self._endpoint_override)

    def endpoint_host(self, region: str) -> str:
        """Return the `host[:port]` of a region's endpoint (used in rate-limit bucket names)."""
        return httpx.URL(self.endpoint(region)).netloc.decode("ascii")

    # Operations --------------------------------------------------------------------------

    def sync_node_pool(
        self,
        *,
        region: str,
        project_id: str,
        cluster_id: str,
        nodepool_id: str,
        spec: UpgradeNodePoolSpec,
    ) -> SyncResult:
        """Submit one node pool sync (this resets the pool's nodes), in a single attempt.

        Raises:
            ValueError: for an invalid ID, or a spec naming another pool than `nodepool_id`.
            ConnectError: the request never reached the server; sending again is safe.
            OutcomeUnknownError: the sync may have been accepted; check the pool before resending.
            ApiError: the API rejected the request.
        """
        if spec.node_pool_id != nodepool_id:
            raise ValueError(
                f"spec.nodePoolID {spec.node_pool_id!r} does not match nodepool_id {nodepool_id!r}"
            )
        for name, value in (("cluster_id", cluster_id), ("nodepool_id", nodepool_id)):
            _check_id(name, value)
        body = json.dumps(
            UpgradeNodePoolRequest(spec=spec).to_wire(), separators=(",", ":")
        ).encode("utf-8")

        reply = self._call(
            OPERATION_SYNC_NODE_POOL,
            "POST",
            region=region,
            project_id=project_id,
            path=f"clusters/{cluster_id}/nodepools/{nodepool_id}/operation/upgrade",
            body=body,
        )
        job_id = parse_job_id(_load_json(reply.body)) if reply.complete else None
        return SyncResult(
            job_id=job_id,
            request_id=reply.headers.get("X-Request-Id"),
            status_code=reply.status_code,
        )

    def show_node_pool(
        self, *, region: str, project_id: str, cluster_id: str, nodepool_id: str
    ) -> NodePoolStatus:
        """Return the sync-relevant status of one node pool."""
        for name, value in (("cluster_id", cluster_id), ("nodepool_id", nodepool_id)):
            _check_id(name, value)
        data = self._get_json(
            OPERATION_SHOW_NODE_POOL,
            region=region,
            project_id=project_id,
            path=f"clusters/{cluster_id}/nodepools/{nodepool_id}",
        )
        return parse_node_pool_status(data, nodepool_id)

    def list_node_pools(
        self, *, region: str, project_id: str, cluster_id: str, show_default: bool = True
    ) -> list[NodePoolSummary]:
        """Return the node pools of a cluster, the default pool included unless `show_default`
        is False."""
        _check_id("cluster_id", cluster_id)
        data = self._get_json(
            OPERATION_LIST_NODE_POOLS,
            region=region,
            project_id=project_id,
            path=f"clusters/{cluster_id}/nodepools",
            params={"showDefaultNodePool": "true"} if show_default else None,
        )
        return parse_node_pools(data)

    def list_clusters(self, *, region: str, project_id: str) -> list[ClusterSummary]:
        """Return every cluster of a project (the API does not page this list)."""
        data = self._get_json(
            OPERATION_LIST_CLUSTERS, region=region, project_id=project_id, path="clusters"
        )
        return parse_clusters(data)

    def show_job(self, *, region: str, project_id: str, job_id: str) -> JobStatus:
        """Return a job's phase and failure reason."""
        _check_id("job_id", job_id)
        data = self._get_json(
            OPERATION_SHOW_JOB, region=region, project_id=project_id, path=f"jobs/{job_id}"
        )
        return parse_job(data, job_id)

    # Lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CceClient(credential_id={self.credential_id!r})"

    # HTTP --------------------------------------------------------------------------------

    def _get_json(
        self,
        operation: str,
        *,
        region: str,
        project_id: str,
        path: str,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        reply = self._call(
            operation, "GET", region=region, project_id=project_id, path=path, params=params
        )
        data = _load_json(reply.body) if reply.complete else None
        if not isinstance(data, Mapping):
            reason = "was cut off" if not reply.complete else "is not a JSON object"
            raise InvalidResponseError(
                status_code=reply.status_code,
                error_code=None,
                error_message=f"response body {reason}",
                request_id=reply.headers.get("X-Request-Id"),
                retry_after_seconds=None,
                operation=operation,
            )
        return data

    def _build_request(
        self,
        method: str,
        *,
        region: str,
        project_id: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
    ) -> httpx.Request:
        url = f"{self.endpoint(region)}/api/v3/projects/{project_id}/{path}"
        headers = {"Content-Type": "application/json"}
        credentials = self._credentials
        if not credentials.uses_signing:
            assert credentials.auth_token is not None  # Credentials guarantees one kind
            headers["X-Auth-Token"] = credentials.auth_token.get_secret_value()
            return self._http.build_request(
                method, url, params=params, content=body, headers=headers
            )

        assert credentials.access_key is not None and credentials.secret_key is not None
        headers["X-Project-Id"] = project_id
        request = self._http.build_request(
            method, url, params=params, content=body, headers=headers
        )
        token = credentials.security_token
        sign_request(
            request,
            access_key=credentials.access_key.get_secret_value(),
            secret_key=credentials.secret_key.get_secret_value(),
            security_token=token.get_secret_value() if token is not None else None,
            now=self._clock(),
        )
        return request

    def _call(
        self,
        operation: str,
        method: str,
        *,
        region: str,
        project_id: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> _Reply:
        _check_id("project_id", project_id)
        request = self._build_request(
            method, region=region, project_id=project_id, path=path, params=params, body=body
        )
        started = time.monotonic()
        try:
            reply = self._send(request, operation, started)
        except (ConnectError, OutcomeUnknownError) as error:
            self._observe(operation, error.kind, started)
            raise

        self._observe(operation, str(reply.status_code), started)
        logger.debug(
            "%s %s %s -> %d (request ID %s)",
            operation,
            method,
            request.url.path,
            reply.status_code,
            reply.headers.get("X-Request-Id"),
        )
        if not 200 <= reply.status_code < 300:
            raise self._api_error(operation, reply)
        return reply

    def _send(self, request: httpx.Request, operation: str, started: float) -> _Reply:
        try:
            response = self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise ConnectError(
                f"{operation}: could not connect to {request.url.host}: {type(error).__name__}",
                operation=operation,
                kind="connect_error",
            ) from None
        except httpx.UnsupportedProtocol as error:
            raise ConfigurationError(f"{operation}: {error}") from None
        except httpx.TimeoutException as error:
            raise OutcomeUnknownError(
                f"{operation}: timed out after sending ({type(error).__name__}); "
                "the server may have processed the request",
                operation=operation,
                kind="timeout",
            ) from None
        except httpx.TransportError as error:
            raise OutcomeUnknownError(
                f"{operation}: connection failed after sending ({type(error).__name__}); "
                "the server may have processed the request",
                operation=operation,
                kind="reset",
            ) from None

        try:
            body, complete = self._read_body(response, started)
        finally:
            response.close()
        return _Reply(response.status_code, response.headers, body, complete)

    def _read_body(self, response: httpx.Response, started: float) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    return b"", False
                if time.monotonic() - started > self._deadline_seconds:
                    return b"", False
        except (httpx.TransportError, httpx.DecodingError):
            return b"", False
        return b"".join(chunks), True

    def _api_error(self, operation: str, reply: _Reply) -> ApiError:
        code, message, body_request_id = parse_error_body(reply.body)
        return ApiError(
            status_code=reply.status_code,
            error_code=code,
            error_message=message,
            request_id=reply.headers.get("X-Request-Id") or body_request_id,
            retry_after_seconds=parse_retry_after(reply.headers.get("Retry-After"), self._clock()),
            operation=operation,
        )

    def _observe(self, operation: str, code: str, started: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(operation, code, time.monotonic() - started)
        except Exception:
            logger.exception("metrics observer failed for %s", operation)
