"""Credentials for CCE calls: an AK/SK pair (with an optional security token) or an IAM token.

Credentials come only from settings (the environment). Nothing here reads an instance metadata
service: a worker without configured credentials fails with `CredentialsError` instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from worker.cce.errors import CredentialsError

if TYPE_CHECKING:
    from worker.settings import Settings

_FINGERPRINT_HEX_CHARS = 12


@dataclass(frozen=True, slots=True)
class Credentials:
    """AK/SK (optionally with a temporary security token) or an IAM token.

    When both are given, AK/SK signing wins. The repr shows only `credential_id`.
    """

    access_key: SecretStr | None = field(default=None, repr=False)
    secret_key: SecretStr | None = field(default=None, repr=False)
    security_token: SecretStr | None = field(default=None, repr=False)
    auth_token: SecretStr | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.access_key is None) != (self.secret_key is None):
            raise CredentialsError(
                "an access key needs its secret key and the other way round: set both "
                "HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK"
            )
        if self.access_key is None and self.auth_token is None:
            raise CredentialsError(
                "no CCE credentials configured: set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK "
                "(or CLOUD_SDK_AK and CLOUD_SDK_SK), or CCE_SYNC_AUTH_TOKEN"
            )

    @classmethod
    def from_keys(
        cls, access_key: str, secret_key: str, security_token: str | None = None
    ) -> Credentials:
        """Build AK/SK credentials from plain strings."""
        return cls(
            access_key=SecretStr(access_key),
            secret_key=SecretStr(secret_key),
            security_token=SecretStr(security_token) if security_token else None,
        )

    @classmethod
    def from_token(cls, auth_token: str) -> Credentials:
        """Build IAM token credentials (sent as `X-Auth-Token`)."""
        return cls(auth_token=SecretStr(auth_token))

    @property
    def uses_signing(self) -> bool:
        """Whether requests are AK/SK signed (else they carry `X-Auth-Token`)."""
        return self.access_key is not None

    @property
    def credential_id(self) -> str:
        """Non-secret fingerprint: `ak-` or `token-` and 12 hex digits of the key's SHA-256."""
        if self.access_key is not None:
            prefix, secret = "ak", self.access_key
        else:
            assert self.auth_token is not None  # __post_init__ guarantees one of the two
            prefix, secret = "token", self.auth_token
        digest = hashlib.sha256(secret.get_secret_value().encode("utf-8")).hexdigest()
        return f"{prefix}-{digest[:_FINGERPRINT_HEX_CHARS]}"

    def __repr__(self) -> str:
        return f"Credentials(credential_id={self.credential_id!r})"

    __str__ = __repr__


def from_settings(settings: Settings) -> Credentials:
    """Build credentials from settings.

    Raises:
        CredentialsError: when neither AK/SK nor an IAM token is set, or only half of AK/SK.
    """
    return Credentials(
        access_key=_non_blank(settings.access_key),
        secret_key=_non_blank(settings.secret_key),
        security_token=_non_blank(settings.security_token),
        auth_token=_non_blank(settings.auth_token),
    )


def _non_blank(value: SecretStr | None) -> SecretStr | None:
    if value is None or not value.get_secret_value().strip():
        return None
    return value
