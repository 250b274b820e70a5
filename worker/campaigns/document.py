"""The campaign document (``apiVersion: cce-sync/v1``, ``kind: Campaign``).

A campaign document is YAML or JSON. Its field names follow the CCE API (``maxUnavailable``,
``nodePoolID``, ``nodeTemplate``...), and its `spec.sync` is a CCE `UpgradeNodePoolSpec`
without ``nodePoolID`` and ``nodeIDs``: those come from each target.

`load_document()` parses and validates a document completely before anything is stored, and
raises `DocumentError`, whose errors each name the field path (for example
``spec.targets[3].sync.maxUnavailable``) and the rule that is broken. Error messages never
contain the value of a password, and YAML errors are reported without the source snippet that
PyYAML would print, because that snippet may be the line with a password.

The document is then turned into `TargetRule` objects (one per entry of `spec.targets`, with
region, project and sync template resolved) and, for rules that name their cluster and pools,
into `Target` objects (one per node pool).
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeAlias

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from worker.cce.models import (
    MAX_MAX_UNAVAILABLE,
    MIN_MAX_UNAVAILABLE,
    RESOURCE_ID_PATTERN,
    NodeLifecycleConfig,
    validate_password,
)

API_VERSION: Final = "cce-sync/v1"
KIND: Final = "Campaign"

#: Size limit of a document as submitted, in bytes (UTF-8).
DEFAULT_MAX_DOCUMENT_BYTES: Final = 1_000_000

#: Entries of `spec.targets`, and node pools named explicitly over all of them.
MAX_TARGET_RULES: Final = 10_000
MAX_EXPLICIT_TARGETS: Final = 100_000

#: `nodePools` value that means every pool of the cluster, the default pool included.
ALL_NODE_POOLS: Final = "*"

#: Region names become part of a host name (``cce.{region}.myhuaweicloud.com``).
REGION_PATTERN: Final = r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$"

ENV_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

#: `passwordFrom.env` must not read the worker's own credentials or configuration: a campaign
#: author could otherwise send the AK/SK to CCE as a node password and read it on the node.
RESERVED_ENV_PREFIXES: Final = ("HUAWEICLOUD_", "CLOUD_SDK_", "CCE_SYNC_", "REDIS_")

#: `passwordFrom.file` must not point into these kernel file systems (``/proc/self/environ``
#: contains the worker's credentials). The rule applies to the normalized path, and the worker
#: applies it again to the path with symbolic links resolved.
RESERVED_FILE_DIRECTORIES: Final = ("/proc", "/sys", "/dev")

MAX_FILE_PATH_CHARS: Final = 4_096

#: Longest `clusterSelector.nameRegex`, in characters.
MAX_NAME_REGEX_CHARS: Final = 256

#: C0 controls, DEL and C1 controls. Free-text fields reject them because `cce-sync status`
#: prints those fields to a terminal, where ESC starts an escape sequence.
CONTROL_CHARACTER_RANGES: Final = r"\u0000-\u001f\u007f-\u009f"

MAX_REPORTED_ERRORS: Final = 50

ClusterPhase: TypeAlias = Literal[
    "Available",
    "Unavailable",
    "ScalingUp",
    "ScalingDown",
    "Creating",
    "Deleting",
    "Upgrading",
    "Resizing",
    "RollingBack",
    "RollbackFailed",
    "Hibernating",
    "Hibernation",
    "Awaking",
    "Error",
]

_RESOURCE_ID_RE: Final = re.compile(RESOURCE_ID_PATTERN)
_CONTROL_CHARACTER_RE: Final = re.compile(f"[{CONTROL_CHARACTER_RANGES}]")
_REGION_RE: Final = re.compile(REGION_PATTERN)
_ENV_NAME_RE: Final = re.compile(ENV_NAME_PATTERN)
_DURATION_RE: Final = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DURATION_UNITS_SECONDS: Final = (86_400, 3_600, 60, 1)
MAX_DURATION_SECONDS: Final = 30 * 86_400

# Union members are tagged so that only one member validates a value. The tags show up in
# pydantic's error locations and are removed from the paths shown to users.
_TAG_POOL_LIST: Final = "node-pool-list"
_TAG_ALL_POOLS: Final = "all-node-pools"
_UNION_TAGS: Final = frozenset({_TAG_POOL_LIST, _TAG_ALL_POOLS})

# Validation context flag that admits `passwordEncrypted`, which only stored documents carry.
_STORED_CONTEXT: Final = "stored"


# Errors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One broken rule: the field path (``spec.targets[3].sync.maxUnavailable``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DocumentError(ValueError):
    """The campaign document is invalid; `errors` lists every broken rule found.

    The string form has one ``path: message`` line per error.
    """

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        lines = [str(error) for error in self.errors[:MAX_REPORTED_ERRORS]]
        hidden = len(self.errors) - len(lines)
        if hidden > 0:
            lines.append(f"... and {hidden} more errors")
        super().__init__("\n".join(lines) or "invalid campaign document")

    @property
    def paths(self) -> list[str]:
        """The field paths of the errors, in order."""
        return [error.path for error in self.errors]


def escape_control_characters(text: str) -> str:
    """Replace each C0/C1 control character of `text` with a ``\\xNN`` escape."""
    return _CONTROL_CHARACTER_RE.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def format_path(location: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``spec.targets[3].sync.maxUnavailable``.

    Control characters in keys are escaped, because a document's keys (unknown fields, label
    keys) become part of the path that is printed.
    """
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS:
            continue
        else:
            name = escape_control_characters(part)
            path += f".{name}" if path else name
    return path or "document"


def _field_errors(error: ValidationError) -> list[FieldError]:
    errors = []
    for detail in error.errors(include_input=False, include_url=False):
        message = detail["msg"].removeprefix("Value error, ")
        errors.append(FieldError(format_path(tuple(detail["loc"])), message))
    return errors


# Value types ------------------------------------------------------------------------------


def _check_resource_id(value: str) -> str:
    if _RESOURCE_ID_RE.fullmatch(value) is None:
        raise ValueError(
            f"invalid ID {value[:80]!r}: use 1 to 128 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def _check_region(value: str) -> str:
    if _REGION_RE.fullmatch(value) is None:
        raise ValueError(
            f"invalid region {value[:80]!r}: use lowercase letters, digits and '-', "
            "for example ap-southeast-1"
        )
    return value


def _check_no_control_characters(value: str) -> str:
    match = _CONTROL_CHARACTER_RE.search(value)
    if match is not None:
        raise ValueError(
            f"contains the control character U+{ord(match.group()):04X} at position "
            f"{match.start()}; remove it, because control characters (such as ESC, tab or "
            "newline) are not allowed in this field"
        )
    return value


def reserved_file_directory(path: str) -> str | None:
    """Return the directory of `RESERVED_FILE_DIRECTORIES` that contains `path`, or None.

    `path` must be absolute and normalized (no ``.``, ``..`` or repeated ``/``).
    """
    for directory in RESERVED_FILE_DIRECTORIES:
        if path == directory or path.startswith(directory + "/"):
            return directory
    return None


def normalize_file_path(path: str) -> str:
    """Return the absolute `path` with ``.`` segments and repeated ``/`` removed.

    `os.path.normpath` keeps a leading ``//`` (POSIX leaves its meaning to the system), and
    Linux treats it as ``/``, so it becomes ``/`` here.
    """
    return "/" + os.path.normpath(path).lstrip("/")


def _parse_duration(value: object) -> object:
    """Turn ``"2h"``, ``"1h30m"``, ``"45s"`` or ``"1d"`` into seconds; pass other values on."""
    if not isinstance(value, str):
        return value
    match = _DURATION_RE.fullmatch(value.strip())
    if match is None or not any(match.groups()):
        raise ValueError(
            f"invalid duration {value[:40]!r}: use seconds as an integer or a string such as "
            "'45s', '90m', '2h' or '1h30m'"
        )
    counts = (int(count or 0) for count in match.groups())
    return sum(count * unit for count, unit in zip(counts, _DURATION_UNITS_SECONDS, strict=True))


ResourceId = Annotated[
    StrictStr,
    AfterValidator(_check_resource_id),
    WithJsonSchema({"type": "string", "pattern": RESOURCE_ID_PATTERN}),
]
Region = Annotated[
    StrictStr,
    AfterValidator(_check_region),
    WithJsonSchema({"type": "string", "pattern": REGION_PATTERN}),
]
DurationSeconds = Annotated[
    StrictInt,
    BeforeValidator(_parse_duration),
    Field(ge=1, le=MAX_DURATION_SECONDS),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_DURATION_SECONDS},
                {"type": "string", "pattern": _DURATION_RE.pattern},
            ],
            "description": "Seconds, or a duration such as '45s', '90m', '2h', '1h30m', '1d'.",
        }
    ),
]
LabelKey = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")]

#: Text that is printed to terminals (names, label values), with control characters rejected.
PlainText = Annotated[
    StrictStr,
    AfterValidator(_check_no_control_characters),
    Field(json_schema_extra={"pattern": f"^[^{CONTROL_CHARACTER_RANGES}]*$"}),
]


def _unique(values: list[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)
    return values


# Regular expressions ----------------------------------------------------------------------

# The parser that `re.compile` itself uses (a private CPython module since 3.11), so the check
# below inspects the same syntax tree that matching runs.
_RE_PARSER: Final[Any] = importlib.import_module("re._parser")
_REPEAT_OPCODES: Final = (_RE_PARSER.MAX_REPEAT, _RE_PARSER.MIN_REPEAT)
_ALL_REPEAT_OPCODES: Final = (*_REPEAT_OPCODES, _RE_PARSER.POSSESSIVE_REPEAT)


def _subpatterns(argument: object) -> list[Any]:
    """Return the parsed subpatterns nested in one opcode's argument."""
    if isinstance(argument, _RE_PARSER.SubPattern):
        return [argument]
    if isinstance(argument, tuple | list):
        return [found for item in argument for found in _subpatterns(item)]
    return []


def _has_unbounded_repeat(subpattern: Any) -> bool:
    for opcode, argument in subpattern:
        if opcode in _ALL_REPEAT_OPCODES and argument[1] == _RE_PARSER.MAXREPEAT:
            return True
        if any(_has_unbounded_repeat(child) for child in _subpatterns(argument)):
            return True
    return False


def _find_nested_quantifier(subpattern: Any) -> bool:
    for opcode, argument in subpattern:
        if opcode in _REPEAT_OPCODES:
            _, maximum, body = argument
            if maximum > 1 and _has_unbounded_repeat(body):
                return True
        if any(_find_nested_quantifier(child) for child in _subpatterns(argument)):
            return True
    return False


def has_nested_quantifier(pattern: str) -> bool:
    """Return whether a backtracking repetition contains an unbounded quantifier.

    Such patterns (``(a+)+``, ``(a*)*``, ``(x\\d+)*``) can take exponential time on a string
    that almost matches. A possessive outer repetition (``(a+)++``) never backtracks into its
    body and is allowed, and so is an alternation such as ``(a|aa)+``.

    NOTE: this is a heuristic. It rejects some safe patterns, such as ``(\\d+\\.)+``, and
    misses slow patterns without nesting, such as ``(a|a)+b`` or ``a*a*a*b``.

    Raises:
        re.error: `pattern` is not a valid regular expression.
    """
    return _find_nested_quantifier(_RE_PARSER.parse(pattern))


# Models -----------------------------------------------------------------------------------


class _DocumentModel(BaseModel):
    # Only the CCE spelling (the alias) is accepted in documents; code builds models from
    # dicts with those names too.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


class PasswordSource(_DocumentModel):
    """Source of a node password that the worker reads at call time: an env variable or a file."""

    env: StrictStr | None = Field(default=None, description="Environment variable on the worker.")
    file: PlainText | None = Field(
        default=None,
        max_length=MAX_FILE_PATH_CHARS,
        description=(
            "Absolute path of a file on the worker, outside /proc, /sys and /dev; "
            "a trailing newline is ignored."
        ),
    )

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _ENV_NAME_RE.fullmatch(value) is None:
            raise ValueError(f"invalid environment variable name {value[:80]!r}")
        if value.upper().startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(
                f"environment variable {value!r} is reserved for cce-sync's own settings and "
                f"credentials (prefixes {', '.join(RESERVED_ENV_PREFIXES)}); use another name"
            )
        return value

    @field_validator("file")
    @classmethod
    def _check_file(cls, value: str | None) -> str | None:
        """Check the path and return it normalized, so the worker reads the path checked here."""
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute file path, got {value[:80]!r}")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..' segments; give the direct absolute path")
        normalized = normalize_file_path(value)
        directory = reserved_file_directory(normalized)
        if directory is not None:
            raise ValueError(
                f"{normalized} is under {directory}, and files under "
                f"{', '.join(RESERVED_FILE_DIRECTORIES)} cannot hold a node password; "
                "put the password in a regular file elsewhere, such as /run/secrets"
            )
        return normalized

    @model_validator(mode="after")
    def _check_exactly_one(self) -> PasswordSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("passwordFrom needs exactly one of env or file")
        return self


class UserPasswordTemplate(_DocumentModel):
    """Password login of the nodes: `password` inline, or `passwordFrom` an env var or file.

    An inline password is checked against the CCE password rules here and stored encrypted. A
    password from `passwordFrom` is read and checked by the worker when it sends the request.
    """

    username: PlainText = Field(default="root", min_length=1, max_length=64)
    password: SecretStr | None = None
    password_from: PasswordSource | None = Field(default=None, alias="passwordFrom")
    password_encrypted: SkipJsonSchema[StrictStr | None] = Field(
        default=None, alias="passwordEncrypted"
    )

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            validate_password(value.get_secret_value(), info.data.get("username", "root"))
        return value

    @field_validator("password_encrypted")
    @classmethod
    def _check_stored_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        context = info.context or {}
        if value is not None and not context.get(_STORED_CONTEXT):
            raise ValueError(
                "passwordEncrypted is written by cce-sync itself; give password or passwordFrom"
            )
        return value

    @model_validator(mode="after")
    def _check_exactly_one(self) -> UserPasswordTemplate:
        given = [self.password, self.password_from, self.password_encrypted]
        if sum(value is not None for value in given) != 1:
            raise ValueError("userPassword needs exactly one of password or passwordFrom")
        return self


class LoginTemplate(_DocumentModel):
    """Node login mode: exactly one of `sshKey` (a key pair name) or `userPassword`."""

    ssh_key: PlainText | None = Field(default=None, alias="sshKey", min_length=1, max_length=255)
    user_password: UserPasswordTemplate | None = Field(default=None, alias="userPassword")

    @model_validator(mode="after")
    def _check_exactly_one(self) -> LoginTemplate:
        if self.ssh_key is not None and self.user_password is not None:
            raise ValueError("login needs exactly one of sshKey or userPassword, not both")
        if self.ssh_key is None and self.user_password is None:
            raise ValueError("login needs exactly one of sshKey or userPassword, got neither")
        return self


class NodeTemplateSpec(_DocumentModel):
    """`nodeTemplate` of the sync request: lifecycle scripts (optional) and login (required)."""

    life_cycle: NodeLifecycleConfig | None = Field(default=None, alias="lifeCycle")
    login: LoginTemplate


class SyncTemplate(_DocumentModel):
    """A CCE `UpgradeNodePoolSpec` without `nodePoolID` and `nodeIDs`.

    Every field is optional here because `spec.sync` and a target's `sync` are merged field by
    field. The target's value wins, and `nodeTemplate` is replaced as a whole. After merging,
    `maxUnavailable` must be set.
    """

    max_unavailable: StrictInt | None = Field(
        default=None,
        alias="maxUnavailable",
        ge=MIN_MAX_UNAVAILABLE,
        le=MAX_MAX_UNAVAILABLE,
        description="Nodes of one pool reset (and unavailable) at the same time.",
    )
    node_template: NodeTemplateSpec | None = Field(default=None, alias="nodeTemplate")
    force: StrictBool | None = Field(
        default=None, description="Reset nodes even when pods cannot be evicted."
    )
    # NOTE: CCE publishes no range for retryTimes; only negative values are rejected.
    retry_times: StrictInt | None = Field(default=None, alias="retryTimes", ge=0)
    skipped_nodes: list[ResourceId] | None = Field(default=None, alias="skippedNodes")

    @field_validator("skipped_nodes")
    @classmethod
    def _check_unique(cls, value: list[str] | None) -> list[str] | None:
        return _unique(value, "node ID")

    def merged(self, override: SyncTemplate | None) -> SyncTemplate:
        """Return this template with every field that `override` sets replaced by its value."""
        if override is None:
            return self
        return self.model_copy(
            update={name: getattr(override, name) for name in override.model_fields_set}
        )


class ClusterSelector(_DocumentModel):
    """Clusters found by listing a project's clusters; every given condition must match."""

    name_regex: PlainText | None = Field(
        default=None,
        alias="nameRegex",
        max_length=MAX_NAME_REGEX_CHARS,
        description=(
            "Python regular expression searched in the cluster name; a repeated group that "
            "contains an unbounded quantifier, such as (a+)+, is rejected."
        ),
    )
    status: ClusterPhase | None = Field(default=None, description="Cluster status.phase.")

    @field_validator("name_regex")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"invalid regular expression: {error}") from None
        if has_nested_quantifier(value):
            raise ValueError(
                "has a nested quantifier: a repeated group contains an unbounded quantifier, "
                "as in (a+)+ or (a*)*, which can make matching take exponential time because "
                "Python's re has no timeout; remove one of the two repetitions, for example "
                "^prod-[a-z0-9-]+$ in place of ^prod-([a-z0-9]+-?)+$"
            )
        return value

    def matches(self, name: str, phase: str | None) -> bool:
        """Return whether a cluster with this name and `status.phase` is selected."""
        if self.status is not None and phase != self.status:
            return False
        return self.name_regex is None or re.search(self.name_regex, name) is not None


def _node_pools_member(value: object) -> str:
    return _TAG_ALL_POOLS if isinstance(value, str) else _TAG_POOL_LIST


NodePools = Annotated[
    Annotated[list[ResourceId], Tag(_TAG_POOL_LIST), Field(min_length=1)]
    | Annotated[Literal["*"], Tag(_TAG_ALL_POOLS)],
    Discriminator(_node_pools_member),
]


class TargetSpec(_DocumentModel):
    """One entry of `spec.targets`: a cluster (by ID or selector) and its node pools."""

    cluster_id: ResourceId | None = Field(default=None, alias="clusterId")
    cluster_selector: ClusterSelector | None = Field(default=None, alias="clusterSelector")
    region: Region | None = None
    project_id: ResourceId | None = Field(default=None, alias="projectId")
    node_pools: NodePools = Field(
        alias="nodePools",
        description='Node pool IDs (DefaultPool for the default pool), or "*" for every pool.',
    )
    node_ids: list[ResourceId] | None = Field(
        default=None,
        alias="nodeIDs",
        min_length=1,
        description="Only these nodes; allowed only with exactly one node pool.",
    )
    sync: SyncTemplate | None = None

    @field_validator("node_ids")
    @classmethod
    def _check_unique(cls, value: list[str] | None) -> list[str] | None:
        return _unique(value, "node ID")

    @model_validator(mode="after")
    def _check_cluster(self) -> TargetSpec:
        if (self.cluster_id is None) == (self.cluster_selector is None):
            raise ValueError("a target needs exactly one of clusterId or clusterSelector")
        return self


class ErrorBudget(_DocumentModel):
    """Failures after which the campaign stops submitting (remaining targets end skipped)."""

    max_failures: StrictInt | None = Field(default=None, alias="maxFailures", ge=0)
    max_failure_ratio: float | None = Field(
        default=None, alias="maxFailureRatio", ge=0.0, le=1.0, strict=True
    )


class Window(_DocumentModel):
    """Time window in which syncs may be submitted (timestamps with a time zone)."""

    not_before: AwareDatetime | None = Field(default=None, alias="notBefore")
    not_after: AwareDatetime | None = Field(default=None, alias="notAfter")

    @model_validator(mode="after")
    def _check_order(self) -> Window:
        if self.not_before and self.not_after and self.not_before >= self.not_after:
            raise ValueError("notBefore must be earlier than notAfter")
        return self


class RetryPolicy(_DocumentModel):
    """Limits on retrying one target."""

    max_attempts: StrictInt = Field(default=8, alias="maxAttempts", ge=1, le=100)
    max_age: DurationSeconds = Field(
        default=7_200,
        alias="maxAge",
        description="Time after a target's first attempt when it stops retrying, in seconds.",
    )


class Policy(_DocumentModel):
    """Limits on the campaign's pace, failures, time window and retries."""

    max_in_flight: StrictInt = Field(
        default=10,
        alias="maxInFlight",
        ge=1,
        le=10_000,
        description="Node pools of this campaign submitted and not yet finished at once.",
    )
    error_budget: ErrorBudget | None = Field(default=None, alias="errorBudget")
    window: Window | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    track_completion: StrictBool = Field(default=True, alias="trackCompletion")


class Metadata(_DocumentModel):
    """Campaign ID (an idempotency key), display name and labels."""

    id: ResourceId | None = Field(default=None, description="Campaign ID; generated when absent.")
    name: PlainText | None = Field(default=None, max_length=256)
    labels: dict[LabelKey, Annotated[PlainText, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=64
    )


class CampaignSpec(_DocumentModel):
    """Defaults, targets and policy of a campaign."""

    region: Region | None = Field(default=None, description="Default region of every target.")
    project_id: ResourceId | None = Field(
        default=None, alias="projectId", description="Default project of every target."
    )
    sync: SyncTemplate | None = None
    targets: list[TargetSpec] = Field(min_length=1, max_length=MAX_TARGET_RULES)
    policy: Policy = Field(default_factory=Policy)
    dry_run: StrictBool = Field(
        default=False,
        alias="dryRun",
        description="Go through the campaign without sending any sync request.",
    )


class CampaignDocument(_DocumentModel):
    """A campaign document, version cce-sync/v1."""

    api_version: Literal["cce-sync/v1"] = Field(alias="apiVersion")
    kind: Literal["Campaign"]
    metadata: Metadata = Field(default_factory=Metadata)
    spec: CampaignSpec


# Targets ----------------------------------------------------------------------------------


def target_key(region: str, project_id: str, cluster_id: str, nodepool_id: str) -> str:
    """Return the key that names one node pool: ``region/project/cluster/pool``."""
    return f"{region}/{project_id}/{cluster_id}/{nodepool_id}"


@dataclass(frozen=True)
class TargetRule:
    """One entry of `spec.targets` with its region, project and merged sync template resolved.

    Exactly one of `cluster_id` and `cluster_selector` is set. `node_pools` is a tuple of pool
    IDs or `ALL_NODE_POOLS`. `index` is the entry's position in `spec.targets`.
    """

    index: int
    region: str
    project_id: str
    cluster_id: str | None
    cluster_selector: ClusterSelector | None
    node_pools: tuple[str, ...] | Literal["*"]
    node_ids: tuple[str, ...] | None
    sync: SyncTemplate

    @property
    def explicit(self) -> bool:
        """Whether the rule names its cluster and pools, so no listing is needed."""
        return self.cluster_id is not None and self.node_pools != ALL_NODE_POOLS


@dataclass(frozen=True)
class Target:
    """One node pool to synchronize; `rule_index` is its entry's position in `spec.targets`."""

    region: str
    project_id: str
    cluster_id: str
    nodepool_id: str
    node_ids: tuple[str, ...] | None
    sync: SyncTemplate
    rule_index: int = 0

    @property
    def key(self) -> str:
        """``region/project/cluster/pool``, unique within a campaign."""
        return target_key(self.region, self.project_id, self.cluster_id, self.nodepool_id)


def target_rules(document: CampaignDocument) -> list[TargetRule]:
    """Resolve every entry of `spec.targets` against the spec's defaults.

    The document must come from `load_document()`, which guarantees that region, project and
    `maxUnavailable` resolve for every entry.
    """
    spec = document.spec
    default_sync = spec.sync or SyncTemplate()
    rules = []
    for index, entry in enumerate(spec.targets):
        region = entry.region or spec.region
        project_id = entry.project_id or spec.project_id
        if region is None or project_id is None:
            raise ValueError(f"spec.targets[{index}] has no region or project; use load_document")
        pools = entry.node_pools
        rules.append(
            TargetRule(
                index=index,
                region=region,
                project_id=project_id,
                cluster_id=entry.cluster_id,
                cluster_selector=entry.cluster_selector,
                node_pools=pools if pools == ALL_NODE_POOLS else tuple(pools),
                node_ids=tuple(entry.node_ids) if entry.node_ids else None,
                sync=default_sync.merged(entry.sync),
            )
        )
    return rules


def explicit_targets(document: CampaignDocument) -> list[Target]:
    """Return one `Target` per node pool named by ID, in document order."""
    targets = []
    for rule in target_rules(document):
        if rule.cluster_id is None or rule.node_pools == ALL_NODE_POOLS:
            continue
        for pool in rule.node_pools:
            targets.append(
                Target(
                    region=rule.region,
                    project_id=rule.project_id,
                    cluster_id=rule.cluster_id,
                    nodepool_id=pool,
                    node_ids=rule.node_ids,
                    sync=rule.sync,
                    rule_index=rule.index,
                )
            )
    return targets


# Cross-field rules ------------------------------------------------------------------------


def _check_entry(spec: CampaignSpec, index: int, entry: TargetSpec) -> list[FieldError]:
    base = f"spec.targets[{index}]"
    errors = []
    if entry.region is None and spec.region is None:
        errors.append(FieldError(f"{base}.region", "missing: set it here or as spec.region"))
    if entry.project_id is None and spec.project_id is None:
        errors.append(FieldError(f"{base}.projectId", "missing: set it here or as spec.projectId"))

    merged = (spec.sync or SyncTemplate()).merged(entry.sync)
    if merged.max_unavailable is None:
        errors.append(
            FieldError(f"{base}.sync.maxUnavailable", "missing: set it here or in spec.sync")
        )

    if entry.node_ids is not None:
        if entry.cluster_selector is not None:
            errors.append(
                FieldError(f"{base}.nodeIDs", "not allowed with clusterSelector; use clusterId")
            )
        elif entry.node_pools == ALL_NODE_POOLS:
            errors.append(
                FieldError(f"{base}.nodeIDs", 'needs exactly one node pool, not nodePools "*"')
            )
        elif len(entry.node_pools) != 1:
            errors.append(
                FieldError(
                    f"{base}.nodeIDs",
                    f"needs exactly one node pool in nodePools, got {len(entry.node_pools)}",
                )
            )

    if entry.node_pools != ALL_NODE_POOLS:
        first_seen: dict[str, int] = {}
        for position, pool in enumerate(entry.node_pools):
            if pool in first_seen:
                errors.append(
                    FieldError(
                        f"{base}.nodePools[{position}]",
                        f"duplicate node pool {pool!r} (also at nodePools[{first_seen[pool]}])",
                    )
                )
            first_seen.setdefault(pool, position)
    return errors


def _check_duplicates(spec: CampaignSpec) -> list[FieldError]:
    """Find pools, clusters and selectors that two entries of `spec.targets` both name."""
    errors: list[FieldError] = []
    pools_seen: dict[str, int] = {}
    clusters_seen: dict[str, int] = {}
    clusters_all: dict[str, int] = {}
    selectors_seen: dict[str, int] = {}

    for index, entry in enumerate(spec.targets):
        base = f"spec.targets[{index}]"
        region = entry.region or spec.region or ""
        project = entry.project_id or spec.project_id or ""

        if entry.cluster_selector is not None:
            selector = entry.cluster_selector.model_dump_json()
            identity = f"{region}/{project}/{selector}/{entry.node_pools!r}"
            if identity in selectors_seen:
                errors.append(
                    FieldError(
                        f"{base}.clusterSelector",
                        f"duplicate target: same selector as spec.targets[{selectors_seen[identity]}]",
                    )
                )
            selectors_seen.setdefault(identity, index)
            continue

        cluster = f"{region}/{project}/{entry.cluster_id}"
        covering = clusters_all.get(cluster)
        if covering is None and entry.node_pools == ALL_NODE_POOLS:
            covering = clusters_seen.get(cluster)
        if covering is not None:
            errors.append(
                FieldError(
                    f"{base}.nodePools",
                    f"duplicate target: cluster {entry.cluster_id} is also named by "
                    f'spec.targets[{covering}], and nodePools "*" covers every pool',
                )
            )
            continue
        clusters_seen.setdefault(cluster, index)
        if entry.node_pools == ALL_NODE_POOLS:
            clusters_all[cluster] = index
            continue

        for position, pool in enumerate(entry.node_pools):
            key = f"{cluster}/{pool}"
            first = pools_seen.get(key)
            if first is not None and first != index:
                errors.append(
                    FieldError(
                        f"{base}.nodePools[{position}]",
                        f"duplicate target: node pool {pool} of cluster {entry.cluster_id} "
                        f"is also named by spec.targets[{first}]",
                    )
                )
            pools_seen.setdefault(key, index)
    return errors


def _check_rules(document: CampaignDocument) -> list[FieldError]:
    spec = document.spec
    errors: list[FieldError] = []
    for index, entry in enumerate(spec.targets):
        errors.extend(_check_entry(spec, index, entry))
    errors.extend(_check_duplicates(spec))

    explicit = sum(
        len(entry.node_pools)
        for entry in spec.targets
        if entry.cluster_id is not None and entry.node_pools != ALL_NODE_POOLS
    )
    if explicit > MAX_EXPLICIT_TARGETS:
        errors.append(
            FieldError(
                "spec.targets",
                f"names {explicit} node pools, more than the limit of {MAX_EXPLICIT_TARGETS}; "
                "split the campaign",
            )
        )
    return errors


# Parsing ----------------------------------------------------------------------------------


_YAML_MERGE_TAG: Final = "tag:yaml.org,2002:merge"

_SPLIT_HINT: Final = "; split the campaign into smaller documents"
_EMPTY_DOCUMENT_MESSAGE: Final = (
    f"is empty; a campaign document is a mapping with apiVersion: {API_VERSION}, "
    f"kind: {KIND}, metadata and spec"
)

#: Values (mappings, lists and scalars) a parsed document may expand to. YAML aliases share one
#: object, so a small text can stand for a huge document ("billion laughs"); this bounds it.
MAX_DOCUMENT_VALUES: Final = 2_000_000


class _StrictSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that rejects duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _YAML_MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(value: object) -> None:
    pending = [value]
    count = 0
    while pending:
        count += 1
        if count > MAX_DOCUMENT_VALUES:
            raise DocumentError(
                [
                    FieldError(
                        "document",
                        f"expands to more than {MAX_DOCUMENT_VALUES} values (YAML aliases)",
                    )
                ]
            )
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _parse_json(text: str) -> object:
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as error:
        message = f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
    except (ValueError, RecursionError) as error:
        message = f"invalid JSON: {error}"
    raise DocumentError([FieldError("document", message)])


def _parse_yaml(text: str) -> object:
    try:
        value = yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        # Deliberately without str(error): it quotes the source line, which may hold a password.
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(part for part in (error.context, error.problem) if part)
        message = f"invalid YAML{where}: {problem or 'syntax error'}"
    except (yaml.YAMLError, RecursionError) as error:
        message = f"invalid YAML: {type(error).__name__}"
    else:
        _check_expanded_size(value)
        return value
    raise DocumentError([FieldError("document", message)])


def parse_text(data: str | bytes, *, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> object:
    """Parse YAML or JSON text (JSON when it starts with ``{``) into Python values.

    Raises:
        DocumentError: the text is larger than `max_bytes`, not UTF-8, or not valid YAML/JSON
            (duplicate keys count as invalid), or expands to more than `MAX_DOCUMENT_VALUES`
            values through YAML aliases.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        # No size in the message: readers stop after max_bytes + 1 bytes, so `size` is
        # often not the size of the whole document.
        raise DocumentError(
            [
                FieldError(
                    "document", f"is larger than the limit of {max_bytes:,} bytes{_SPLIT_HINT}"
                )
            ]
        )

    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise DocumentError(
                [FieldError("document", f"is not valid UTF-8 (byte {error.start})")]
            ) from None

    if data.lstrip().startswith("{"):
        return _parse_json(data)
    return _parse_yaml(data)


def load_document(
    data: str | bytes | Mapping[str, Any],
    *,
    max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    stored: bool = False,
) -> CampaignDocument:
    """Parse and validate a campaign document.

    Args:
        data: YAML or JSON text, or the already parsed mapping.
        max_bytes: Size limit of the text, or of the mapping serialized as JSON, in bytes.
        stored: Accept the stored form, in which inline passwords are `passwordEncrypted`
            (see `worker.campaigns.secrets.stored_form`).

    Raises:
        DocumentError: listing every broken rule with its field path.
    """
    if isinstance(data, str | bytes):
        parsed = parse_text(data, max_bytes=max_bytes)
    else:
        parsed = data
        size = len(json.dumps(parsed, default=str))
        if size > max_bytes:
            message = f"is {size:,} bytes as JSON, larger than the limit of {max_bytes:,} bytes"
            raise DocumentError([FieldError("document", message + _SPLIT_HINT)])

    if parsed is None:
        raise DocumentError([FieldError("document", _EMPTY_DOCUMENT_MESSAGE)])
    if not isinstance(parsed, Mapping):
        raise DocumentError(
            [FieldError("document", f"must be a mapping, got {type(parsed).__name__}")]
        )

    try:
        document = CampaignDocument.model_validate(parsed, context={_STORED_CONTEXT: stored})
    except ValidationError as error:
        raise DocumentError(_field_errors(error)) from None

    errors = _check_rules(document)
    if errors:
        raise DocumentError(errors)
    return document


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of the campaign document."""
    schema = CampaignDocument.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "cce-sync campaign document v1",
    }
