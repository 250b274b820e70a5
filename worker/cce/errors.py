"""Exceptions raised by the CCE client, one tree rooted at `CceError`.

::

    CceError
     ├── TransportError          no HTTP response was received
     │    ├── ConnectError       the request never reached the server: safe to resend
     │    └── OutcomeUnknownError
     │                           sent, then the read timed out or the connection dropped:
     │                           the server may have acted, so reconcile before any resend
     ├── ApiError                the server returned an error status
     ├── CredentialsError        no usable credentials are configured
     └── ConfigurationError      an endpoint or other setting is invalid

httpx exceptions are converted once, in the client; callers never see them. Messages carry the
operation, status, CCE error code and request ID, and never credentials or request bodies.
"""

from __future__ import annotations


class CceError(Exception):
    """Root of every error raised by `worker.cce`."""


class TransportError(CceError):
    """No HTTP response was received for `operation`.

    `kind` is the metric label of the failure: `connect_error`, `timeout` or `reset`.
    """

    def __init__(self, message: str, *, operation: str, kind: str) -> None:
        super().__init__(message)
        self.operation = operation
        self.kind = kind


class ConnectError(TransportError):
    """The request never reached the server (connect failure, connect or pool timeout)."""


class OutcomeUnknownError(TransportError):
    """The request may have been processed: the response never arrived.

    For a sync POST the pool may be resetting already, so the caller must check the pool's
    status before sending again. A GET may simply be retried.
    """


class ApiError(CceError):
    """The API returned an error status.

    Attributes:
        status_code: HTTP status.
        error_code: CCE or gateway error code (`CCE.01400001`, `APIGW.0308`), or None.
        error_message: the server's error message, or None.
        request_id: `X-Request-Id` of the response (or `request_id` of a gateway body).
        retry_after_seconds: the `Retry-After` header in seconds, or None.
        operation: the client operation (`sync_node_pool`, `show_node_pool`, ...).
    """

    def __init__(
        self,
        *,
        status_code: int,
        error_code: str | None,
        error_message: str | None,
        request_id: str | None,
        retry_after_seconds: float | None,
        operation: str,
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.retry_after_seconds = retry_after_seconds
        self.operation = operation
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"{self.operation} failed with HTTP {self.status_code}"]
        if self.error_code:
            parts.append(self.error_code)
        text = " ".join(parts)
        if self.error_message:
            text += f": {self.error_message}"
        if self.request_id:
            text += f" (request ID {self.request_id})"
        return text


class CredentialsError(CceError):
    """No usable credentials: neither AK/SK nor an IAM token is configured."""


class ConfigurationError(CceError):
    """A setting is invalid, for example an endpoint URL that is not allowed."""
