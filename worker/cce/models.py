"""CCE wire models: the body of the node pool sync request and the parts of responses we read.

The request models mirror `UpgradeNodePoolSpec` of the CCE v3 API field for field. Python
attributes are snake_case; every field's alias is the CCE name, and both spellings are accepted
on input. Unknown keys are rejected so that a misspelt field fails loudly instead of being
dropped. `str(ValidationError)` never echoes input values, which may hold a node password, but
`ValidationError.errors()` does unless called with `include_input=False`: build messages with
`format_validation_errors`, which never includes inputs.

The node password is a `SecretStr`: reprs, logs and `model_dump()` show `**********`. Only
`UpgradeNodePoolRequest.to_wire()` reveals it, for the HTTP body and nothing else.

Response parsing is defensive because CCE and its SDKs disagree on shapes: a sync response may have
an empty body, `{"jobid": ...}`, `{"jobID": ...}`, `{"jobId": ...}` or a whole Job object whose
`metadata.uid` is the job ID.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

#: Node pool, node and cluster IDs: letters, digits, `-` and `_` only, so an ID can never change
#: the shape of a URL path it is placed in. CCE IDs are UUIDs; the default pool is `DefaultPool`.
RESOURCE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
_RESOURCE_ID_RE: Final = re.compile(RESOURCE_ID_PATTERN)

DEFAULT_NODE_POOL_ID: Final = "DefaultPool"

MIN_MAX_UNAVAILABLE: Final = 1
MAX_MAX_UNAVAILABLE: Final = 20

#: Combined length of the Base64-encoded preInstall and postInstall scripts, in characters.
MAX_LIFECYCLE_SCRIPT_CHARS: Final = 10_240

MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 26
PASSWORD_SPECIAL_CHARACTERS: Final = "!@$%^-_=+[{}]:,./?"  # noqa: S105 - a character set
#: A password needs characters of at least this many of the four classes
#: (uppercase, lowercase, digit, special).
MIN_PASSWORD_CHARACTER_CLASSES: Final = 3

ResourceId = Annotated[StrictStr, Field(pattern=RESOURCE_ID_PATTERN)]


def is_resource_id(value: str) -> bool:
    """Return whether `value` is a valid cluster, node pool or node ID."""
    return _RESOURCE_ID_RE.fullmatch(value) is not None


def validate_password(password: str, username: str) -> None:
    """Check a node login password against the CCE password rules.

    Raises:
        ValueError: naming the rule that is broken. The message never contains the password.
    """
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long, "
            f"got {len(password)}"
        )

    has_upper = has_lower = has_digit = has_special = False
    for character in password:
        if character in PASSWORD_SPECIAL_CHARACTERS:
            has_special = True
        elif character.isascii() and character.isupper():
            has_upper = True
        elif character.isascii() and character.islower():
            has_lower = True
        elif character.isascii() and character.isdigit():
            has_digit = True
        else:
            raise ValueError(
                "password contains a character that is not allowed: use only ASCII letters, "
                f"digits and the special characters {PASSWORD_SPECIAL_CHARACTERS}"
            )

    classes = sum((has_upper, has_lower, has_digit, has_special))
    if classes < MIN_PASSWORD_CHARACTER_CLASSES:
        raise ValueError(
            f"password must contain at least {MIN_PASSWORD_CHARACTER_CLASSES} of: uppercase "
            f"letters, lowercase letters, digits, special characters "
            f"{PASSWORD_SPECIAL_CHARACTERS} (it contains {classes})"
        )

    if username and (username in password or username[::-1] in password):
        raise ValueError("password must not contain the username or the username reversed")


def format_validation_errors(error: ValidationError, prefix: str = "") -> list[str]:
    """Return one `path: message` line per error, without input values.

    `prefix` is prepended to every path, for example `spec` or `spec.targets[3].sync`.
    """
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        path = prefix
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}" if path else str(part)
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _check_base64(value: str | None) -> str | None:
    """Check that `value` is canonical standard Base64 and return it.

    Canonical means equal to the encoding of its decoded bytes: `b64decode` alone also accepts
    extra ``=`` padding and non-zero unused bits in the last character.
    """
    if value is None:
        return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = None
    if decoded is None or base64.b64encode(decoded).decode("ascii") != value:
        raise ValueError(
            "must be canonical Base64 (standard alphabet, '=' padding only up to a multiple of "
            "4 characters, no line breaks); encode the script with: base64 -w0 script.sh"
        )
    return value


class _WireModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        strict=True,
        frozen=True,
        hide_input_in_errors=True,
    )


class UserPassword(_WireModel):
    """Password login for the nodes of a pool; the password is checked against the CCE rules."""

    username: StrictStr = Field(default="root", min_length=1)
    password: SecretStr

    @model_validator(mode="after")
    def _check_password(self) -> UserPassword:
        validate_password(self.password.get_secret_value(), self.username)
        return self


class Login(_WireModel):
    """Node login mode: exactly one of a key pair name or a user password."""

    ssh_key: StrictStr | None = Field(default=None, alias="sshKey", min_length=1)
    user_password: UserPassword | None = Field(default=None, alias="userPassword")

    @model_validator(mode="after")
    def _check_exactly_one(self) -> Login:
        if (self.ssh_key is None) == (self.user_password is None):
            raise ValueError("login needs exactly one of sshKey or userPassword")
        return self


class NodeLifecycleConfig(_WireModel):
    """Pre- and post-installation scripts, each Base64-encoded."""

    pre_install: StrictStr | None = Field(default=None, alias="preInstall")
    post_install: StrictStr | None = Field(default=None, alias="postInstall")

    @field_validator("pre_install", "post_install")
    @classmethod
    def _check_base64_text(cls, value: str | None) -> str | None:
        return _check_base64(value)

    @model_validator(mode="after")
    def _check_combined_length(self) -> NodeLifecycleConfig:
        total = len(self.pre_install or "") + len(self.post_install or "")
        if total > MAX_LIFECYCLE_SCRIPT_CHARS:
            raise ValueError(
                f"preInstall and postInstall together must be at most "
                f"{MAX_LIFECYCLE_SCRIPT_CHARS} Base64 characters, got {total}"
            )
        return self


class NodeTemplate(_WireModel):
    """Template the synchronized nodes are reset with. `lifeCycle` may be omitted."""

    life_cycle: NodeLifecycleConfig | None = Field(default=None, alias="lifeCycle")
    login: Login


class UpgradeNodePoolSpec(_WireModel):
    """`spec` of the node pool sync request."""

    max_unavailable: StrictInt = Field(
        alias="maxUnavailable", ge=MIN_MAX_UNAVAILABLE, le=MAX_MAX_UNAVAILABLE
    )
    node_pool_id: ResourceId = Field(alias="nodePoolID")
    node_ids: list[ResourceId] | None = Field(default=None, alias="nodeIDs", min_length=1)
    node_template: NodeTemplate | None = Field(default=None, alias="nodeTemplate")
    force: StrictBool | None = None
    # NOTE: CCE publishes no range for retryTimes; only negative values are rejected here.
    retry_times: StrictInt | None = Field(default=None, alias="retryTimes", ge=0)
    skipped_nodes: list[ResourceId] | None = Field(default=None, alias="skippedNodes")

    @field_validator("node_ids", "skipped_nodes")
    @classmethod
    def _check_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("node IDs must not repeat")
        return value


class UpgradeNodePoolRequest(_WireModel):
    """Body of `POST .../nodepools/{nodepool_id}/operation/upgrade`."""

    spec: UpgradeNodePoolSpec

    def to_wire(self) -> dict[str, Any]:
        """Return the JSON-ready body with CCE field names and the node password in clear.

        Use the result only to build the HTTP request body: it contains the secret.
        """
        body = self.model_dump(by_alias=True, exclude_none=True)
        login = body["spec"].get("nodeTemplate", {}).get("login", {})
        user_password = login.get("userPassword")
        if user_password is not None:
            secret = user_password["password"]
            user_password["password"] = secret.get_secret_value()
        return body


# Responses ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Outcome of an accepted sync request."""

    job_id: str | None
    request_id: str | None
    status_code: int


@dataclass(frozen=True, slots=True)
class NodePoolStatus:
    """The parts of a node pool's `status` that tell whether a sync runs or has finished.

    `synchronizing` is the `ConfigurationSynchronizing` condition (None when CCE does not report
    it). `phase` describes scaling and is not a sync signal.
    """

    nodepool_id: str
    job_id: str | None
    synchronizing: bool | None
    current_node: int | None
    synced_node_count: int | None
    phase: str | None


@dataclass(frozen=True, slots=True)
class NodePoolSummary:
    """One entry of a node pool list."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    """One entry of a cluster list."""

    id: str
    name: str
    phase: str | None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A CCE job's phase (Initializing, Running, Success, Failed) and failure reason."""

    job_id: str
    phase: str | None
    reason: str | None


def _non_empty_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_job_id(body: object) -> str | None:
    """Return the job ID of a sync response body, or None when it carries none.

    Accepts `jobid`, `jobID`, `jobId` and a Job object's `metadata.uid`; any other shape
    (including an empty body, parsed as None) gives None.
    """
    data = _mapping(body)
    for key in ("jobid", "jobID", "jobId"):
        job_id = _non_empty_str(data.get(key))
        if job_id is not None:
            return job_id
    return _non_empty_str(_mapping(data.get("metadata")).get("uid"))


def parse_node_pool_status(body: object, nodepool_id: str) -> NodePoolStatus:
    """Extract the sync-relevant status of a node pool from a show node pool response."""
    data = _mapping(body)
    status = _mapping(data.get("status"))

    synchronizing: bool | None = None
    conditions = status.get("conditions")
    if isinstance(conditions, list):
        for condition in map(_mapping, conditions):
            if condition.get("type") == "ConfigurationSynchronizing":
                flag = condition.get("status")
                if isinstance(flag, str) and flag.lower() in ("true", "false"):
                    synchronizing = flag.lower() == "true"

    return NodePoolStatus(
        nodepool_id=_non_empty_str(_mapping(data.get("metadata")).get("uid")) or nodepool_id,
        job_id=_non_empty_str(status.get("jobId")),
        synchronizing=synchronizing,
        current_node=_optional_int(status.get("currentNode")),
        synced_node_count=_optional_int(status.get("configurationSyncedNodeCount")),
        phase=_non_empty_str(status.get("phase")),
    )


def _items(body: object) -> list[Mapping[str, Any]]:
    items = _mapping(body).get("items")
    if not isinstance(items, list):
        return []
    return [_mapping(item) for item in items]


def parse_node_pools(body: object) -> list[NodePoolSummary]:
    """Extract ID and name of each node pool of a list node pools response."""
    pools = []
    for item in _items(body):
        metadata = _mapping(item.get("metadata"))
        pool_id = _non_empty_str(metadata.get("uid"))
        if pool_id is not None:
            pools.append(NodePoolSummary(id=pool_id, name=str(metadata.get("name") or "")))
    return pools


def parse_clusters(body: object) -> list[ClusterSummary]:
    """Extract ID, name and phase of each cluster of a list clusters response."""
    clusters = []
    for item in _items(body):
        metadata = _mapping(item.get("metadata"))
        cluster_id = _non_empty_str(metadata.get("uid"))
        if cluster_id is None:
            continue
        clusters.append(
            ClusterSummary(
                id=cluster_id,
                name=str(metadata.get("name") or ""),
                phase=_non_empty_str(_mapping(item.get("status")).get("phase")),
            )
        )
    return clusters


def parse_job(body: object, job_id: str) -> JobStatus:
    """Extract the phase and failure reason of a show job response."""
    status = _mapping(_mapping(body).get("status"))
    return JobStatus(
        job_id=job_id,
        phase=_non_empty_str(status.get("phase")),
        reason=_non_empty_str(status.get("reason")),
    )
