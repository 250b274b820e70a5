"""CCE base URLs per region, with an optional override for tests, proxies and the simulator."""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from worker.cce.errors import ConfigurationError

#: Region names such as `ap-southeast-1`, `cn-north-4` or `eu-west-101`. The region becomes part
#: of a host name, so it must be one DNS label in lowercase.
REGION_PATTERN: Final = r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$"
_REGION_RE: Final = re.compile(REGION_PATTERN)

#: Regions served outside `myhuaweicloud.com` (Huawei Cloud Europe).
_REGION_DOMAINS: Final = {"eu-west-101": "myhuaweicloud.eu"}
_DEFAULT_DOMAIN: Final = "myhuaweicloud.com"


def is_loopback_host(host: str) -> bool:
    """Return whether a host name or IP literal is the loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_for(region: str, override: str | None = None) -> str:
    """Return the CCE base URL (scheme and host, no trailing `/`) for a region.

    `override` replaces the public endpoint and may contain `{region}`. It must be an https URL,
    or an http URL whose host is loopback (the simulator).

    Raises:
        ConfigurationError: for an invalid region or an override that is not allowed.
    """
    if not _REGION_RE.fullmatch(region):
        raise ConfigurationError(
            f"invalid region {region!r}: expected a name such as 'ap-southeast-1'"
        )
    if override is None:
        return f"https://cce.{region}.{_REGION_DOMAINS.get(region, _DEFAULT_DOMAIN)}"

    url = override.replace("{region}", region).rstrip("/")
    _check_override(url)
    return url


def _check_override(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        raise ConfigurationError(
            "invalid CCE endpoint URL: expected https://HOST[:PORT] with a valid port"
        ) from None

    # The URL is echoed only after user info is ruled out, because user info may hold a password.
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError("invalid CCE endpoint URL: user info is not allowed")
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigurationError(
            f"invalid CCE endpoint {url!r}: expected https://HOST[:PORT] (http only for loopback)"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"invalid CCE endpoint {url!r}: a query or fragment is not allowed"
        )
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigurationError(
            f"plain http is allowed only for loopback hosts, got {host!r}: use https"
        )
