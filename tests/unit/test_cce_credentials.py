"""Credentials from settings, their fingerprint, and endpoint selection."""

from __future__ import annotations

import hashlib

import pytest

from worker.cce.credentials import Credentials, from_settings
from worker.cce.endpoints import endpoint_for, is_loopback_host
from worker.cce.errors import ConfigurationError, CredentialsError
from worker.settings import Settings

_CREDENTIAL_VARIABLES = (
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "CLOUD_SDK_AK",
    "CLOUD_SDK_SK",
    "CCE_SYNC_AUTH_TOKEN",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_from_settings_aksk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AKVALUE")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", "SKVALUE")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SECURITY_TOKEN", "TOKENVALUE")

    credentials = from_settings(Settings())

    assert credentials.uses_signing
    assert credentials.security_token is not None
    assert credentials.security_token.get_secret_value() == "TOKENVALUE"


def test_from_settings_cloud_sdk_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_SDK_AK", "AKVALUE")
    monkeypatch.setenv("CLOUD_SDK_SK", "SKVALUE")

    assert from_settings(Settings()).uses_signing


def test_from_settings_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCE_SYNC_AUTH_TOKEN", "IAMTOKEN")

    credentials = from_settings(Settings())

    assert not credentials.uses_signing
    assert credentials.credential_id.startswith("token-")


def test_from_settings_without_credentials_fails() -> None:
    with pytest.raises(CredentialsError, match="HUAWEICLOUD_SDK_AK"):
        from_settings(Settings())


def test_from_settings_blank_values_count_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", " ")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", "")

    with pytest.raises(CredentialsError):
        from_settings(Settings())


def test_half_a_key_pair_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AKVALUE")

    with pytest.raises(CredentialsError, match="both"):
        from_settings(Settings())


def test_credential_id_is_sha256_prefix() -> None:
    credentials = Credentials.from_keys("AKVALUE", "SKVALUE")

    assert credentials.credential_id == "ak-" + hashlib.sha256(b"AKVALUE").hexdigest()[:12]


def test_repr_hides_secrets() -> None:
    credentials = Credentials.from_keys("AKVALUE", "SKVALUE", "TOKENVALUE")
    token_credentials = Credentials.from_token("IAMTOKEN")

    for text in (repr(credentials), str(credentials), repr(token_credentials)):
        for secret in ("AKVALUE", "SKVALUE", "TOKENVALUE", "IAMTOKEN"):
            assert secret not in text


# Endpoints -----------------------------------------------------------------------------------


def test_endpoint_default() -> None:
    assert endpoint_for("ap-southeast-1", None) == "https://cce.ap-southeast-1.myhuaweicloud.com"


def test_endpoint_europe() -> None:
    assert endpoint_for("eu-west-101", None) == "https://cce.eu-west-101.myhuaweicloud.eu"


def test_endpoint_override_with_region() -> None:
    assert (
        endpoint_for("cn-north-4", "https://proxy.example/{region}/")
        == "https://proxy.example/cn-north-4"
    )


@pytest.mark.parametrize(
    "override", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9000"]
)
def test_endpoint_plain_http_on_loopback(override: str) -> None:
    assert endpoint_for("ap-southeast-1", override) == override


@pytest.mark.parametrize(
    "override",
    [
        "http://cce.example.com",
        "http://10.0.0.1:8080",
        "ftp://127.0.0.1",
        "https://",
        "https://h?x=1",
        "https://h:notaport",
    ],
)
def test_endpoint_override_rejected(override: str) -> None:
    with pytest.raises(ConfigurationError):
        endpoint_for("ap-southeast-1", override)


def test_endpoint_user_info_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as caught:
        endpoint_for("ap-southeast-1", "https://user:hunter2@h")

    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "region", ["", "a", "AP-southeast-1", "ap-southeast-", "x.y-1", "ap/../1", "a" * 65]
)
def test_endpoint_invalid_region(region: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid region"):
        endpoint_for(region, None)


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.2")
    assert is_loopback_host("::1")
    assert not is_loopback_host("169.254.169.254")
    assert not is_loopback_host("example.com")
