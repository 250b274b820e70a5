"""The signer agrees byte for byte with huaweicloudsdkcore's Signer, and verification is strict.

The SDK is used offline only: SdkRequest objects are built and signed in memory, nothing is sent.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from worker.cce.signer import (
    SignatureError,
    canonical_query,
    canonical_request,
    compute_signature,
    sign_request,
    verify_request,
)

KAT_HOST = "service.endpoint.myhuaweicloud.com"
KAT_DATE = datetime(2020, 6, 8, 2, 39, 0, tzinfo=UTC)
KAT_GET_SIGNATURE = "cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842"
KAT_POST_SIGNATURE = "436b1ac0a1ae03705934bb70ef2f2e09f7bfed2117d731a38235053199323a1f"
KAT_POST_BODY = b'{"name":"test","id":1}'

GENERATED_REQUESTS = 400


@pytest.fixture(autouse=True)
def _sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # With keys in the environment the SDK never falls back to its instance metadata provider.
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "test-ak")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", "test-sk")


def sdk_authorization(
    *,
    method: str,
    host: str,
    resource_path: str,
    query_pairs: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
) -> tuple[str, str]:
    """Sign with the SDK; return its Authorization header and the URI it would send."""
    request = SdkRequest(
        method=method,
        schema="https",
        host=host,
        resource_path=resource_path,
        query_params=list(query_pairs),
        header_params=dict(headers),
        body=body,
    )
    signed = Signer(BasicCredentials(access_key, secret_key)).sign(request)
    return signed.header_params["Authorization"], signed.uri


# Known-answer vectors of the SDK's own test suite --------------------------------------------


def test_sign_request_matches_sdk_vector_for_get() -> None:
    request = httpx.Request("GET", f"https://{KAT_HOST}/resources?size=1")

    sign_request(request, access_key="AccessKey", secret_key="SecretKey", now=KAT_DATE)

    assert request.headers["X-Sdk-Date"] == "20200608T023900Z"
    assert request.headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, "
        f"Signature={KAT_GET_SIGNATURE}"
    )


def test_sign_request_matches_sdk_vector_for_post() -> None:
    request = httpx.Request("POST", f"https://{KAT_HOST}/resources?size=1", content=KAT_POST_BODY)

    sign_request(request, access_key="AccessKey", secret_key="SecretKey", now=KAT_DATE)

    assert request.headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, "
        f"Signature={KAT_POST_SIGNATURE}"
    )


def test_compute_signature_matches_sdk_vector() -> None:
    # The SDK vector also carries a header with "_" in its name, which is never signed.
    headers = {"Host": KAT_HOST, "X-Sdk-Date": "20200608T023900Z", "TEST_UNDERSCORE": "TEST_VALUE"}
    canonical, signed = canonical_request("GET", "/resources", [("size", "1")], headers, b"")

    assert signed == ["host", "x-sdk-date"]
    assert compute_signature("SecretKey", "20200608T023900Z", canonical) == KAT_GET_SIGNATURE


def test_canonical_query_matches_sdk_vector() -> None:
    pairs = [
        ("limit", "1"),
        ("enable", "true"),
        ("test", "\u4e00 (&=?!#%.*)"),
        ("path", "/tmp/123"),
        ("multi", "3"),
        ("multi", "1"),
        ("multi", "2"),
    ]

    assert canonical_query(pairs) == (
        "enable=true&limit=1&multi=1&multi=2&multi=3"
        "&path=%2Ftmp%2F123&test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29"
    )


def test_canonical_request_shape() -> None:
    canonical, signed = canonical_request(
        "post",
        "/api/v3/projects/p1/clusters",
        [],
        {"Host": "h", "X-Sdk-Date": "20240101T000000Z", "Content-Type": " application/json "},
        b"",
    )

    assert signed == ["content-type", "host", "x-sdk-date"]
    assert canonical.split("\n") == [
        "POST",
        "/api/v3/projects/p1/clusters/",
        "",
        "content-type:application/json",
        "host:h",
        "x-sdk-date:20240101T000000Z",
        "",
        "content-type;host;x-sdk-date",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ]


# Generated requests --------------------------------------------------------------------------

_TEXT_ALPHABET = string.ascii_letters + string.digits + " -_.~!*'();:@&=+$,/?#[]%\"<>^`{|}\\"
_UNICODE = "\u00e9\u00fc\u4e00\u0416\U0001f600"


@dataclass
class GeneratedRequest:
    method: str
    host: str
    segments: list[str]
    query_pairs: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    access_key: str
    secret_key: str
    security_token: str | None
    moment: datetime

    @property
    def url(self) -> str:
        path = "/" + "/".join(quote(segment, safe="") for segment in self.segments)
        query = "&".join(
            f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in self.query_pairs
        )
        return f"https://{self.host}{path}" + (f"?{query}" if query else "")


def _text(rng: random.Random, low: int, high: int) -> str:
    alphabet = _TEXT_ALPHABET + (_UNICODE if rng.random() < 0.3 else "")
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _header_value(rng: random.Random) -> str:
    printable = string.ascii_letters + string.digits + " -_.~!*'();:@&=+$,/?[]"
    core = "".join(rng.choice(printable) for _ in range(rng.randint(1, 30))).strip() or "v"
    return " " * rng.randint(0, 2) + core + " " * rng.randint(0, 2)


def _generate(rng: random.Random) -> GeneratedRequest:
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
    host = rng.choice(["cce.ap-southeast-1.myhuaweicloud.com", "127.0.0.1:8443", "h.example"])
    segments = [_text(rng, 1, 12) for _ in range(rng.randint(1, 6))]
    if rng.random() < 0.2:
        segments.append("")  # a path ending in "/"

    keys = [_text(rng, 1, 8) for _ in range(rng.randint(0, 3))]
    query_pairs = (
        [(rng.choice(keys), _text(rng, 0, 10)) for _ in range(rng.randint(0, 6))] if keys else []
    )

    headers: dict[str, str] = {}
    if rng.random() < 0.8:
        headers["Content-Type"] = rng.choice(
            ["application/json", "application/json;charset=utf-8", "application/bson"]
        )
    if rng.random() < 0.7:
        headers["X-Project-Id"] = "".join(rng.choice("0123456789abcdef") for _ in range(32))
    for _ in range(rng.randint(0, 4)):
        name = "X-" + "".join(rng.choice(string.ascii_letters + "-_") for _ in range(6))
        if name.lower() not in {existing.lower() for existing in headers}:
            headers[name] = _header_value(rng)

    body = b""
    if method != "GET" and rng.random() < 0.8:
        body = rng.choice(
            [
                _text(rng, 1, 200).encode("utf-8"),
                bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))),
            ]
        )

    return GeneratedRequest(
        method=method,
        host=host,
        segments=segments,
        query_pairs=query_pairs,
        headers=headers,
        body=body,
        access_key="".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(20)),
        secret_key=_text(rng, 10, 40),
        security_token=(
            "".join(rng.choice(string.ascii_letters + string.digits + "+/=") for _ in range(40))
            if rng.random() < 0.3
            else None
        ),
        moment=datetime(2020, 1, 1, tzinfo=UTC)
        + timedelta(seconds=rng.randint(0, 10 * 365 * 86400)),
    )


def _generated() -> Iterator[GeneratedRequest]:
    rng = random.Random(20_260_608)
    for _ in range(GENERATED_REQUESTS):
        yield _generate(rng)


def _signed_httpx_request(generated: GeneratedRequest) -> httpx.Request:
    request = httpx.Request(
        generated.method, generated.url, headers=generated.headers, content=generated.body
    )
    sign_request(
        request,
        access_key=generated.access_key,
        secret_key=generated.secret_key,
        security_token=generated.security_token,
        now=generated.moment,
    )
    return request


def test_generated_requests_match_sdk_signatures() -> None:
    mismatches = []
    for index, generated in enumerate(_generated()):
        request = _signed_httpx_request(generated)

        sdk_headers = dict(generated.headers)
        sdk_headers["X-Sdk-Date"] = generated.moment.strftime("%Y%m%dT%H%M%SZ")
        if generated.security_token is not None:
            sdk_headers["X-Security-Token"] = generated.security_token
        sdk_auth, sdk_uri = sdk_authorization(
            method=generated.method,
            host=generated.host,
            resource_path=request.url.raw_path.split(b"?")[0].decode("ascii"),
            query_pairs=generated.query_pairs,
            headers=sdk_headers,
            body=generated.body,
            access_key=generated.access_key,
            secret_key=generated.secret_key,
        )

        if request.headers["Authorization"] != sdk_auth:
            mismatches.append((index, generated.url, request.headers["Authorization"], sdk_auth))
        if request.url.raw_path.decode("ascii") != sdk_uri:
            mismatches.append((index, generated.url, request.url.raw_path.decode(), sdk_uri))

    assert mismatches == []


def test_generated_requests_verify() -> None:
    for generated in _generated():
        request = _signed_httpx_request(generated)
        path, _, query = request.url.raw_path.decode("ascii").partition("?")

        access_key = verify_request(
            method=request.method,
            path=path,
            query_string=query,
            headers=dict(request.headers),
            body=request.content,
            lookup_secret={generated.access_key: generated.secret_key}.get,
            now=generated.moment + timedelta(seconds=30),
        )

        assert access_key == generated.access_key


def test_verify_accepts_sdk_signed_requests() -> None:
    rng = random.Random(7)
    for _ in range(50):
        generated = _generate(rng)
        headers = dict(generated.headers)
        headers["X-Sdk-Date"] = generated.moment.strftime("%Y%m%dT%H%M%SZ")
        headers["User-Agent"] = "huaweicloud-usdk-python/3.0"
        request = SdkRequest(
            method=generated.method,
            schema="https",
            host=generated.host,
            resource_path=httpx.URL(generated.url).raw_path.split(b"?")[0].decode("ascii"),
            query_params=list(generated.query_pairs),
            header_params=headers,
            body=generated.body,
        )
        signed = Signer(BasicCredentials(generated.access_key, generated.secret_key)).sign(request)
        _, _, query = signed.uri.partition("?")

        access_key = verify_request(
            method=generated.method,
            path=signed.resource_path,
            query_string=query,
            headers=signed.header_params,
            body=signed.body,
            lookup_secret={generated.access_key: generated.secret_key}.get,
            now=generated.moment,
        )

        assert access_key == generated.access_key


def test_sdk_unsigned_payload_header_matches() -> None:
    headers = {
        "Host": "h",
        "X-Sdk-Date": "20240102T030405Z",
        "Content-Type": "application/octet-stream",
    }
    sdk_auth, _ = sdk_authorization(
        method="PUT",
        host="h",
        resource_path="/objects/a",
        query_pairs=[],
        headers=headers,
        body=b"\x00\x01binary",
        access_key="AK",
        secret_key="SK",
    )
    # The SDK adds this header for bodies that are not JSON and signs it instead of the body.
    ours_headers = dict(headers, **{"X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD"})
    canonical, signed = canonical_request("PUT", "/objects/a", [], ours_headers, b"\x00\x01binary")
    signature = compute_signature("SK", "20240102T030405Z", canonical)

    assert sdk_auth == (
        f"SDK-HMAC-SHA256 Access=AK, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )


# Signing behaviour ---------------------------------------------------------------------------


def test_sign_request_refreshes_date_and_signature() -> None:
    request = httpx.Request("GET", "https://h/a")
    sign_request(request, access_key="AK", secret_key="SK", now=KAT_DATE)
    first = request.headers["Authorization"]

    sign_request(request, access_key="AK", secret_key="SK", now=KAT_DATE + timedelta(seconds=1))

    assert request.headers["X-Sdk-Date"] == "20200608T023901Z"
    assert request.headers["Authorization"] != first
    assert len(request.headers.get_list("Authorization")) == 1


def test_sign_request_adds_and_signs_security_token() -> None:
    request = httpx.Request("GET", "https://h/a")

    sign_request(request, access_key="AK", secret_key="SK", security_token="tok", now=KAT_DATE)

    assert request.headers["X-Security-Token"] == "tok"
    assert "SignedHeaders=host;x-sdk-date;x-security-token," in request.headers["Authorization"]


def test_sign_request_leaves_hop_by_hop_headers_unsigned() -> None:
    request = httpx.Request(
        "POST", "https://h/a", headers={"Connection": "keep-alive"}, content=b"{}"
    )

    sign_request(request, access_key="AK", secret_key="SK", now=KAT_DATE)

    assert "SignedHeaders=host;x-sdk-date," in request.headers["Authorization"]


def test_sign_request_rewrites_query_to_canonical_form() -> None:
    request = httpx.Request("GET", "https://h/a", params=[("b", "x y"), ("a", "2"), ("a", "1")])

    sign_request(request, access_key="AK", secret_key="SK", now=KAT_DATE)

    assert request.url.query == b"a=1&a=2&b=x%20y"


def test_sign_request_converts_aware_time_to_utc() -> None:
    request = httpx.Request("GET", "https://h/a")
    plus_two = KAT_DATE.astimezone(__import__("datetime").timezone(timedelta(hours=2)))

    sign_request(request, access_key="AK", secret_key="SK", now=plus_two)

    assert request.headers["X-Sdk-Date"] == "20200608T023900Z"


# Verification failures -----------------------------------------------------------------------


def _signed_post() -> httpx.Request:
    request = httpx.Request(
        "POST",
        "https://h/api/v3/projects/p/clusters?x=1",
        headers={"Content-Type": "application/json", "X-Project-Id": "p"},
        content=b'{"spec":{}}',
    )
    sign_request(request, access_key="AK", secret_key="SK", now=KAT_DATE)
    return request


def _verify(request: httpx.Request, **changes: object) -> str:
    path, _, query = request.url.raw_path.decode("ascii").partition("?")
    arguments: dict[str, object] = {
        "method": request.method,
        "path": path,
        "query_string": query,
        "headers": dict(request.headers),
        "body": request.content,
        "lookup_secret": {"AK": "SK"}.get,
        "now": KAT_DATE,
    }
    arguments.update(changes)
    return verify_request(**arguments)  # type: ignore[arg-type]


def test_verify_accepts_untampered_request() -> None:
    assert _verify(_signed_post()) == "AK"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"spec":{"x":1}}'}, "mismatch"),
        ({"path": "/api/v3/projects/p/clusters/other"}, "mismatch"),
        ({"query_string": "x=2"}, "mismatch"),
        ({"method": "PUT"}, "mismatch"),
        ({"lookup_secret": {"AK": "other"}.get}, "mismatch"),
        ({"lookup_secret": {}.get}, "unknown_access_key"),
        ({"now": KAT_DATE + timedelta(minutes=16)}, "expired"),
        ({"now": KAT_DATE - timedelta(minutes=16)}, "expired"),
    ],
)
def test_verify_rejects_changed_request(change: dict[str, object], reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        _verify(_signed_post(), **change)

    assert caught.value.code == "APIGW.0301"
    assert caught.value.reason == reason


def test_verify_accepts_small_clock_skew() -> None:
    assert _verify(_signed_post(), now=KAT_DATE + timedelta(minutes=14)) == "AK"


def test_verify_rejects_changed_signed_header() -> None:
    request = _signed_post()
    headers = dict(request.headers)
    headers["x-project-id"] = "q"

    with pytest.raises(SignatureError) as caught:
        _verify(request, headers=headers)

    assert caught.value.reason == "mismatch"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing"),
        ("Basic abc", "malformed"),
        ("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=zz", "malformed"),
        (
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=x-sdk-date, Signature=" + "0" * 64,
            "malformed",
        ),
        (
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-missing;x-sdk-date, Signature="
            + "0" * 64,
            "malformed",
        ),
    ],
)
def test_verify_rejects_bad_authorization(authorization: str | None, reason: str) -> None:
    request = _signed_post()
    headers = {k: v for k, v in request.headers.items() if k != "authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization

    with pytest.raises(SignatureError) as caught:
        _verify(request, headers=headers)

    assert caught.value.reason == reason


def test_verify_rejects_bad_date_header() -> None:
    request = httpx.Request("GET", "https://h/a", headers={"X-Sdk-Date": "yesterday"})
    headers = {"host": "h", "x-sdk-date": "yesterday"}
    canonical, _ = canonical_request("GET", "/a", [], headers, b"")
    headers["Authorization"] = (
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature="
        + compute_signature("SK", "yesterday", canonical)
    )

    with pytest.raises(SignatureError) as caught:
        _verify(request, path="/a", query_string="", headers=headers, body=b"")

    assert caught.value.reason == "malformed"


def test_verify_rejects_false_content_hash_declaration() -> None:
    headers = {
        "Host": "h",
        "X-Sdk-Date": "20200608T023900Z",
        "Content-Type": "application/json",
        "X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD",
    }
    canonical, signed = canonical_request("POST", "/a", [], headers, b"{}")
    headers["Authorization"] = (
        f"SDK-HMAC-SHA256 Access=AK, SignedHeaders={';'.join(signed)}, "
        f"Signature={compute_signature('SK', '20200608T023900Z', canonical)}"
    )
    request = httpx.Request("POST", "https://h/a")

    with pytest.raises(SignatureError) as caught:
        _verify(request, path="/a", query_string="", headers=headers, body=b"{}")

    assert caught.value.reason == "mismatch"


def test_signature_error_message_has_no_secret() -> None:
    with pytest.raises(SignatureError) as caught:
        _verify(_signed_post(), lookup_secret={"AK": "very-secret-key"}.get)

    assert "very-secret-key" not in str(caught.value)
