"""Every cce-sync setting, its default and its unit.

Settings come from the environment (pydantic-settings), read when `get_settings()` is first
called, never at import. Secrets are `SecretStr` so that a repr, a log line or a traceback shows
`**********` instead of the value.
"""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: Conservative default for sync POSTs per (endpoint, project). One public measurement saw CCE
#: write calls throttled near 10 per minute, so production campaigns should set this explicitly.
DEFAULT_RATE_PER_SECOND = 1.0

#: Read calls (show pool, show job) are throttled far later than writes. The same public
#: measurement saw reads throttled near 70 per second, and this default stays well below it.
DEFAULT_READ_RATE_PER_SECOND = 20.0


class Settings(BaseSettings):
    """Process-wide configuration, from environment variables."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_url: str = Field(
        default=DEFAULT_REDIS_URL,
        validation_alias=AliasChoices("REDIS_URL"),
        description="Redis holding queues, campaigns, limiter buckets and locks.",
    )
    redis_socket_timeout_seconds: float = Field(
        default=10.0, gt=0, validation_alias=AliasChoices("CCE_SYNC_REDIS_SOCKET_TIMEOUT_SECONDS")
    )
    redis_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, validation_alias=AliasChoices("CCE_SYNC_REDIS_CONNECT_TIMEOUT_SECONDS")
    )

    endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CCE_SYNC_ENDPOINT"),
        description="Override of the CCE base URL; may contain {region}. http:// only for loopback.",
    )
    # NOTE: no code obtains IAM tokens yet, so this setting has no effect; CCE_SYNC_AUTH_TOKEN
    # must hold a ready token, which cce-sync does not refresh.
    iam_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("CCE_SYNC_IAM_ENDPOINT")
    )

    rate_per_second: float = Field(
        default=DEFAULT_RATE_PER_SECOND,
        gt=0,
        validation_alias=AliasChoices("CCE_SYNC_RATE_PER_SECOND"),
        description="Sync POSTs per second per (endpoint, project); the adaptive ceiling.",
    )
    rate_overrides: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("CCE_SYNC_RATE_OVERRIDES"),
        description="Per-project ceilings, 'projectId=rate,projectId=rate'.",
    )
    read_rate_per_second: float = Field(
        default=DEFAULT_READ_RATE_PER_SECOND,
        gt=0,
        validation_alias=AliasChoices("CCE_SYNC_READ_RATE_PER_SECOND"),
    )

    access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("HUAWEICLOUD_SDK_AK", "CLOUD_SDK_AK")
    )
    secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("HUAWEICLOUD_SDK_SK", "CLOUD_SDK_SK")
    )
    security_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("HUAWEICLOUD_SDK_SECURITY_TOKEN")
    )
    auth_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CCE_SYNC_AUTH_TOKEN")
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CCE_SYNC_SECRET_KEY"),
        description="Fernet key that encrypts inline node passwords stored in Redis.",
    )

    http_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, validation_alias=AliasChoices("CCE_SYNC_HTTP_CONNECT_TIMEOUT_SECONDS")
    )
    http_read_timeout_seconds: float = Field(
        default=15.0, gt=0, validation_alias=AliasChoices("CCE_SYNC_HTTP_READ_TIMEOUT_SECONDS")
    )
    http_deadline_seconds: float = Field(
        default=20.0,
        gt=0,
        validation_alias=AliasChoices("CCE_SYNC_HTTP_DEADLINE_SECONDS"),
        description="Overall limit on one HTTP call, connect to last byte.",
    )

    events_max_length: int = Field(
        default=100_000, ge=100, validation_alias=AliasChoices("CCE_SYNC_EVENTS_MAX_LENGTH")
    )
    track_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices("CCE_SYNC_TRACK_POLL_SECONDS"),
        description="Delay between two completion checks of one accepted sync.",
    )
    reconcile_settle_seconds: float = Field(
        default=15.0,
        gt=0,
        validation_alias=AliasChoices("CCE_SYNC_RECONCILE_SETTLE_SECONDS"),
        description="How long a sync with an unknown outcome must show no job before it is resent.",
    )
    housekeeping_interval_seconds: float = Field(
        default=15.0, gt=0, validation_alias=AliasChoices("CCE_SYNC_HOUSEKEEPING_INTERVAL_SECONDS")
    )
    housekeeping_stale_seconds: float = Field(
        default=120.0,
        gt=0,
        validation_alias=AliasChoices("CCE_SYNC_HOUSEKEEPING_STALE_SECONDS"),
        description="Time without any message for an unfinished target before one is sent again; "
        "above the completion poll interval and the 30 s pool-lock recheck.",
    )
    heartbeat_timeout_seconds: float = Field(
        default=15.0,
        ge=5,
        validation_alias=AliasChoices("CCE_SYNC_HEARTBEAT_TIMEOUT_SECONDS"),
        description="Silence after which a worker's unacknowledged messages are requeued.",
    )
    metrics_port: int = Field(
        default=9191, ge=0, le=65535, validation_alias=AliasChoices("CCE_SYNC_METRICS_PORT")
    )
    metrics_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - Prometheus scrapes pods over the network
        validation_alias=AliasChoices("CCE_SYNC_METRICS_HOST"),
    )

    @field_validator("rate_overrides", mode="before")
    @classmethod
    def _parse_rate_overrides(cls, value: object) -> object:
        if not isinstance(value, str):
            return value

        overrides: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            project, separator, rate = item.partition("=")
            if not separator or not project.strip():
                raise ValueError(
                    f"invalid entry {item!r}: expected 'projectId=rate', e.g. '0a1b2c=2.5'"
                )
            overrides[project.strip()] = float(rate)
        return overrides

    def rate_for(self, project_id: str) -> float:
        """Return the configured sync rate ceiling for a project, in requests per second."""
        return self.rate_overrides.get(project_id, self.rate_per_second)


@functools.cache
def get_settings() -> Settings:
    """Return the process's settings, read from the environment on first call."""
    return Settings()
