"""AK/SK request signing for Huawei Cloud APIs (SDK-HMAC-SHA256), and its verification.

The algorithm agrees byte for byte with `huaweicloudsdkcore.signer.signer.Signer` (checked by the
unit tests against the SDK on its own known-answer vector and on generated requests):

1. `X-Sdk-Date` is the signing time, UTC, as `%Y%m%dT%H%M%SZ`. Gateways reject a signature whose
   date is more than 15 minutes off, so every attempt of a request is signed again.
2. The canonical request is six lines: method, canonical URI, canonical query, canonical headers
   (one `name:value` line each, so the block ends with a newline), signed header names joined by
   `;`, and the hex SHA-256 of the body.
3. The canonical URI percent-decodes the path, encodes each segment leaving only letters, digits
   and `-_.~`, and always ends with `/`.
4. The canonical query sorts the decoded (key, value) pairs, then encodes both parts the same way,
   so a space is `%20` and `/` is `%2F`. Repeated keys stay repeated pairs.
5. Header names are lowercased and sorted, values trimmed. Names containing `_` are never signed.
6. The string to sign is `SDK-HMAC-SHA256`, the date and the hex SHA-256 of the canonical request,
   one per line. The signature is the hex HMAC-SHA256 of it keyed with the secret key.

Secret keys and security tokens never appear in an exception message or a log line from here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qsl, quote, unquote

import httpx

ALGORITHM: Final = "SDK-HMAC-SHA256"
SDK_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
DEFAULT_MAX_SKEW_SECONDS: Final = 900

HEADER_SDK_DATE: Final = "X-Sdk-Date"
HEADER_SECURITY_TOKEN: Final = "X-Security-Token"  # noqa: S105 - a header name
HEADER_CONTENT_SHA256: Final = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
EMPTY_BODY_SHA256: Final = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

#: Gateway error code for every authentication failure of a signed request.
AUTH_FAILED_CODE: Final = "APIGW.0301"

#: Headers that `sign_request` leaves unsigned: hop-by-hop headers that proxies may change or
#: drop, the signature itself, and Content-Length (the payload hash already covers the body).
_UNSIGNED_HEADERS: Final = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_AUTHORIZATION_RE: Final = re.compile(
    rf"^{ALGORITHM}\s+Access=(?P<access>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


class SignatureError(Exception):
    """A signed request failed verification.

    `code` is the gateway error code for the 401 response (`APIGW.0301`); `reason` is a short machine
    word: missing, malformed, expired, unknown_access_key or mismatch.
    """

    def __init__(self, code: str, message: str, *, reason: str = "mismatch") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reason = reason


def _encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Return the canonical form of a URL path (encoded segments, trailing `/`)."""
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(query_pairs: Iterable[tuple[str, str]]) -> str:
    """Return the canonical query string of decoded (key, value) pairs.

    Pairs are sorted on their decoded text before encoding, as the SDK does.
    """
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(query_pairs))


def payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    """Return the payload hash line: hex SHA-256 of the body, or `X-Sdk-Content-Sha256` if set."""
    if not body:
        return EMPTY_BODY_SHA256
    declared = _header(headers, HEADER_CONTENT_SHA256)
    if declared:
        return declared
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str,
    path: str,
    query_pairs: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
) -> tuple[str, list[str]]:
    """Build the canonical request and the sorted names of the headers it signs.

    Args:
        method: HTTP method, any case.
        path: URL path as sent, percent-encoded or not.
        query_pairs: decoded query pairs, in any order.
        headers: every header to sign; names containing `_` are skipped.
        body: exact body bytes sent.
    """
    values = {
        name.lower(): str(value).strip() for name, value in headers.items() if "_" not in name
    }
    signed = sorted(values)
    header_block = "".join(f"{name}:{values[name]}\n" for name in signed)

    lines = (
        method.upper(),
        canonical_uri(path),
        canonical_query(query_pairs),
        header_block,
        ";".join(signed),
        payload_hash(body, headers),
    )
    return "\n".join(lines), signed


def compute_signature(secret_key: str, sdk_date: str, canonical: str) -> str:
    """Return the hex signature of a canonical request signed at `sdk_date` (X-Sdk-Date form)."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{sdk_date}\n{digest}"
    return hmac.new(
        secret_key.encode("utf-8"), string_to_sign.encode("utf-8"), "sha256"
    ).hexdigest()


def format_sdk_date(moment: datetime) -> str:
    """Format a time as X-Sdk-Date; a naive datetime is taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(SDK_DATE_FORMAT)


def parse_query(query_string: str) -> list[tuple[str, str]]:
    """Decode a query string into pairs (`+` is a space, blank values kept)."""
    return parse_qsl(query_string, keep_blank_values=True)


def sign_request(
    request: httpx.Request,
    *,
    access_key: str,
    secret_key: str,
    security_token: str | None = None,
    now: datetime | None = None,
) -> None:
    """Sign an httpx request in place.

    Sets `X-Sdk-Date` (always fresh, from `now` or the current time), `Host` when absent,
    `X-Security-Token` when a token is given, and `Authorization`. Every other header present is
    signed too, except hop-by-hop headers and names containing `_`. The query is rewritten to
    its canonical form so that the bytes sent are the bytes signed. Call it again for every
    attempt: a resent request needs a new date.
    """
    headers = request.headers
    headers.pop("Authorization", None)
    headers[HEADER_SDK_DATE] = format_sdk_date(now or datetime.now(UTC))
    if "Host" not in headers:
        headers["Host"] = request.url.netloc.decode("ascii")
    if security_token is not None:
        headers[HEADER_SECURITY_TOKEN] = security_token

    query_pairs = parse_query(request.url.query.decode("ascii"))
    if query_pairs:
        request.url = request.url.copy_with(query=canonical_query(query_pairs).encode("ascii"))

    to_sign = {name: value for name, value in headers.items() if name not in _UNSIGNED_HEADERS}
    canonical, signed = canonical_request(
        request.method,
        request.url.raw_path.split(b"?", 1)[0].decode("ascii"),
        query_pairs,
        to_sign,
        request.content,
    )
    signature = compute_signature(secret_key, headers[HEADER_SDK_DATE], canonical)
    headers["Authorization"] = (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered_name = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered_name:
            return value
    return None


def _fail(message: str, reason: str) -> SignatureError:
    return SignatureError(AUTH_FAILED_CODE, message, reason=reason)


def _check_date(sdk_date: str | None, now: datetime, max_skew_seconds: int) -> None:
    if sdk_date is None:
        raise _fail("missing X-Sdk-Date header", "missing")
    try:
        signed_at = datetime.strptime(sdk_date.strip(), SDK_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise _fail(
            f"invalid X-Sdk-Date {sdk_date!r}: expected {SDK_DATE_FORMAT}", "malformed"
        ) from None
    skew = abs((now - signed_at).total_seconds())
    if skew > max_skew_seconds:
        raise _fail(
            f"signature expired: X-Sdk-Date is {skew:.0f} s off the server clock "
            f"(limit {max_skew_seconds} s)",
            "expired",
        )


def _check_payload_declaration(headers: Mapping[str, str], body: bytes) -> None:
    declared = _header(headers, HEADER_CONTENT_SHA256)
    if declared is None or not body:
        return
    content_type = (_header(headers, "Content-Type") or "").strip().lower()
    if declared.strip() == UNSIGNED_PAYLOAD and not content_type.startswith(
        ("application/json", "application/bson")
    ):
        return
    if declared.strip() != hashlib.sha256(body).hexdigest():
        raise _fail(f"{HEADER_CONTENT_SHA256} does not match the body", "mismatch")


def verify_request(
    *,
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime | None = None,
    max_skew_seconds: int = DEFAULT_MAX_SKEW_SECONDS,
) -> str:
    """Verify an SDK-HMAC-SHA256 signed request and return its access key.

    `lookup_secret(access_key)` returns the secret key, or None for an unknown access key. The
    `Host` and `X-Sdk-Date` headers must be signed. A declared `X-Sdk-Content-Sha256` must match
    the body unless it is `UNSIGNED-PAYLOAD` on a body that is not JSON (the SDK does that).

    Raises:
        SignatureError: with code `APIGW.0301` and a reason of missing, malformed, expired,
            unknown_access_key or mismatch.
    """
    authorization = _header(headers, "Authorization")
    if authorization is None:
        raise _fail("missing Authorization header", "missing")
    match = _AUTHORIZATION_RE.match(authorization.strip())
    if match is None:
        raise _fail(f"Authorization header is not {ALGORITHM} Access=..., ...", "malformed")

    signed_names = match["signed"].split(";")
    if "host" not in signed_names or "x-sdk-date" not in signed_names:
        raise _fail("the host and x-sdk-date headers must be signed", "malformed")
    signed_headers: dict[str, str] = {}
    for name in signed_names:
        value = _header(headers, name)
        if value is None:
            raise _fail(f"signed header {name!r} is missing from the request", "malformed")
        signed_headers[name] = value

    _check_date(signed_headers["x-sdk-date"], now or datetime.now(UTC), max_skew_seconds)
    _check_payload_declaration(signed_headers, body)

    access_key = match["access"]
    secret_key = lookup_secret(access_key)
    if secret_key is None:
        raise _fail("unknown access key", "unknown_access_key")

    canonical, computed_names = canonical_request(
        method, path, parse_query(query_string), signed_headers, body
    )
    expected = compute_signature(secret_key, signed_headers["x-sdk-date"].strip(), canonical)
    if computed_names != signed_names or not hmac.compare_digest(expected, match["signature"]):
        raise _fail("signature does not match the request", "mismatch")
    return access_key
