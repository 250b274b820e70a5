"""Request authentication as the CCE gateway does it: AK/SK signatures or IAM tokens.

Signed requests are verified with `worker.cce.signer.verify_request`, the same code that signs
the worker's requests, and the unit tests hold that code to the official SDK's signer. An unknown
token, a bad or expired signature and an unknown access key all get 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from worker.cce.signer import ALGORITHM, AUTH_FAILED_CODE, SignatureError, verify_request

TOKEN_INVALID_CODE = "CCE.01401001"  # noqa: S105 - an error code, not a secret


class AuthenticationError(Exception):
    """Authentication failed. `code` is the error code for the 401 body."""

    def __init__(self, code: str, message: str, *, gateway: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.gateway = gateway
        """True when the gateway rejects the request (error_code/error_msg shape), False for CCE."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The sender of a request: an access key ID, `token`, or `anonymous` when auth is off."""

    name: str


class Authenticator:
    """Checks AK/SK signatures against `credentials` and tokens against `tokens`.

    When both are empty, authentication is off and every request is accepted as `anonymous`.
    """

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        tokens: Collection[str] | None = None,
        max_skew_seconds: int = 900,
    ) -> None:
        self._credentials = dict(credentials or {})
        self._tokens = tuple(tokens or ())
        self._max_skew_seconds = max_skew_seconds

    @property
    def enabled(self) -> bool:
        return bool(self._credentials or self._tokens)

    def authenticate(
        self,
        *,
        method: str,
        path: str,
        query_string: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Caller:
        """Authenticate a request and return its caller, or raise AuthenticationError."""
        if not self.enabled:
            return Caller("anonymous")

        lowered = {name.lower(): value for name, value in headers.items()}
        token = lowered.get("x-auth-token")
        if token is not None:
            return self._check_token(token)

        authorization = lowered.get("authorization", "")
        if not authorization.startswith(ALGORITHM):
            raise AuthenticationError(
                AUTH_FAILED_CODE,
                "Incorrect IAM authentication information: no X-Auth-Token or AK/SK signature",
                gateway=True,
            )
        try:
            access_key = verify_request(
                method=method,
                path=path,
                query_string=query_string,
                headers=headers,
                body=body,
                lookup_secret=self._credentials.get,
                max_skew_seconds=self._max_skew_seconds,
            )
        except SignatureError as error:
            raise AuthenticationError(
                error.code,
                f"Incorrect IAM authentication information: {error.message}",
                gateway=True,
            ) from None
        return Caller(access_key)

    def _check_token(self, token: str) -> Caller:
        for known in self._tokens:
            if hmac.compare_digest(known.encode(), token.encode()):
                return Caller("token")
        raise AuthenticationError(
            TOKEN_INVALID_CODE,
            "Authorization failed: the token is invalid or expired",
            gateway=False,
        )
