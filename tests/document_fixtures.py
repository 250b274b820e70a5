"""Campaign documents for the document, submit and CLI tests: one valid, many invalid.

`BAD_DOCUMENTS` lists mutations of `base_document()`, each breaking one rule, with the field
path that the validation error must name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Mutation = Callable[[dict[str, Any]], None]

STRONG_PASSWORD = "Nv7!kQz2pLx"
WEAK_PASSWORD = "abc"


def base_document() -> dict[str, Any]:
    """A valid document with both request shapes of the CCE reference page."""
    return {
        "apiVersion": "cce-sync/v1",
        "kind": "Campaign",
        "metadata": {
            "id": "chg-2026-1204",
            "name": "weekly OS patch",
            "labels": {"team": "platform"},
        },
        "spec": {
            "region": "ap-southeast-1",
            "projectId": "0a1b2c3d4e5f",
            "sync": {"maxUnavailable": 1},
            "targets": [
                {
                    "clusterId": "3f8e0000-aaaa-bbbb-cccc-000000000001",
                    "nodePools": ["cccccccc-cccc-cccc-cccc-cccccccccccc"],
                    "nodeIDs": [
                        "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa",
                        "bbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbb",
                    ],
                },
                {
                    "clusterId": "77aa0000-aaaa-bbbb-cccc-000000000002",
                    "region": "eu-west-101",
                    "nodePools": ["DefaultPool"],
                    "sync": {
                        "maxUnavailable": 3,
                        "nodeTemplate": {
                            "lifeCycle": {"preInstall": "ZWNobyAx", "postInstall": "ZWNobyAx"},
                            "login": {
                                "userPassword": {
                                    "username": "root",
                                    "passwordFrom": {"env": "NODE_PASSWORD"},
                                }
                            },
                        },
                    },
                },
                {
                    "clusterSelector": {"nameRegex": "^prod-", "status": "Available"},
                    "nodePools": "*",
                },
            ],
            "policy": {
                "maxInFlight": 10,
                "errorBudget": {"maxFailures": 5, "maxFailureRatio": 0.2},
                "window": {"notBefore": "2026-12-05T01:00:00Z", "notAfter": "2026-12-05T05:00:00Z"},
                "retry": {"maxAttempts": 8, "maxAge": "2h"},
                "trackCompletion": True,
            },
            "dryRun": False,
        },
    }


def inline_login(password: str = STRONG_PASSWORD, username: str = "root") -> dict[str, Any]:
    return {"userPassword": {"username": username, "password": password}}


def with_sync_template(template: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        document["spec"]["sync"]["nodeTemplate"] = template

    return mutate


def setting(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Return a mutation that sets a dotted path (list indexes as numbers) to `value`."""

    def mutate(document: dict[str, Any]) -> None:
        parts = path.split(".")
        node: Any = document
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def removing(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        parts = path.split(".")
        node: Any = document
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[parts[-1]]

    return mutate


def adding_target(target: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        document["spec"]["targets"].append(target)

    return mutate


def both(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(document)

    return mutate


def password_file(path: str) -> Callable[[dict[str, Any]], None]:
    """Return a mutation that makes the default template read the password from `path`."""
    return with_sync_template({"login": {"userPassword": {"passwordFrom": {"file": path}}}})


CLUSTER_1 = "3f8e0000-aaaa-bbbb-cccc-000000000001"
PASSWORD_FILE_PATH = "spec.sync.nodeTemplate.login.userPassword.passwordFrom.file"
NAME_REGEX_PATH = "spec.targets[2].clusterSelector.nameRegex"
POOL_1 = "cccccccc-cccc-cccc-cccc-cccccccccccc"

# (case, mutation of base_document(), field path the error must name)
BAD_DOCUMENTS: list[tuple[str, Mutation, str]] = [
    ("maxUnavailable zero", setting("spec.sync.maxUnavailable", 0), "spec.sync.maxUnavailable"),
    ("maxUnavailable 21", setting("spec.sync.maxUnavailable", 21), "spec.sync.maxUnavailable"),
    ("maxUnavailable string", setting("spec.sync.maxUnavailable", "3"), "spec.sync.maxUnavailable"),
    ("maxUnavailable float", setting("spec.sync.maxUnavailable", 2.0), "spec.sync.maxUnavailable"),
    ("maxUnavailable bool", setting("spec.sync.maxUnavailable", True), "spec.sync.maxUnavailable"),
    (
        "maxUnavailable on target string",
        setting("spec.targets.1.sync.maxUnavailable", "3"),
        "spec.targets[1].sync.maxUnavailable",
    ),
    (
        "maxUnavailable missing",
        removing("spec.sync.maxUnavailable"),
        "spec.targets[0].sync.maxUnavailable",
    ),
    ("unknown sync field", setting("spec.sync.maxUnavailble", 2), "spec.sync.maxUnavailble"),
    ("unknown top-level field", setting("specs", {}), "specs"),
    ("unknown target field", setting("spec.targets.0.nodePool", ["x"]), "spec.targets[0].nodePool"),
    ("nodePoolID in sync", setting("spec.sync.nodePoolID", "x"), "spec.sync.nodePoolID"),
    (
        "cluster ID with slash",
        setting("spec.targets.0.clusterId", "../../x"),
        "spec.targets[0].clusterId",
    ),
    (
        "pool ID with slash",
        setting("spec.targets.0.nodePools", ["a/b"]),
        "spec.targets[0].nodePools[0]",
    ),
    ("project ID with query", setting("spec.projectId", "p1?x=1"), "spec.projectId"),
    (
        "node ID with percent",
        setting("spec.targets.0.nodeIDs", ["n%2F1"]),
        "spec.targets[0].nodeIDs[0]",
    ),
    ("campaign ID with space", setting("metadata.id", "chg 1"), "metadata.id"),
    ("name with ESC", setting("metadata.name", "patch\x1b[2J\x1b[H"), "metadata.name"),
    ("name with newline", setting("metadata.name", "patch\nfake line"), "metadata.name"),
    ("name with C1 CSI", setting("metadata.name", "patch\x9b31m"), "metadata.name"),
    ("name with DEL", setting("metadata.name", "patch\x7f"), "metadata.name"),
    (
        "label value with ESC",
        setting("metadata.labels.team", "\x1b]0;owned\x07"),
        "metadata.labels.team",
    ),
    (
        "label key with ESC",
        setting("metadata.labels", {"team\x1b[2J": "platform"}),
        "metadata.labels.team\\x1b[2J.[key]",
    ),
    (
        "username with tab",
        with_sync_template(
            {"login": {"userPassword": {"username": "ro\tot", "passwordFrom": {"env": "NODE_PW"}}}}
        ),
        "spec.sync.nodeTemplate.login.userPassword.username",
    ),
    (
        "sshKey with ESC",
        with_sync_template({"login": {"sshKey": "ops\x1b[2J"}}),
        "spec.sync.nodeTemplate.login.sshKey",
    ),
    ("region with underscore", setting("spec.region", "AP_SOUTH"), "spec.region"),
    (
        "cluster ID as number",
        setting("spec.targets.0.clusterId", 12345),
        "spec.targets[0].clusterId",
    ),
    (
        "duplicate pool across targets",
        adding_target({"clusterId": CLUSTER_1, "nodePools": [POOL_1]}),
        "spec.targets[3].nodePools[0]",
    ),
    (
        "duplicate pool inside target",
        both(
            setting("spec.targets.0.nodePools", [POOL_1, POOL_1]),
            removing("spec.targets.0.nodeIDs"),
        ),
        "spec.targets[0].nodePools[1]",
    ),
    (
        "all pools of a named cluster",
        adding_target({"clusterId": CLUSTER_1, "nodePools": "*"}),
        "spec.targets[3].nodePools",
    ),
    (
        "duplicate selector",
        adding_target(
            {"clusterSelector": {"nameRegex": "^prod-", "status": "Available"}, "nodePools": "*"}
        ),
        "spec.targets[3].clusterSelector",
    ),
    (
        "nodeIDs with two pools",
        setting("spec.targets.0.nodePools", ["p-1", "p-2"]),
        "spec.targets[0].nodeIDs",
    ),
    ("nodeIDs with all pools", setting("spec.targets.0.nodePools", "*"), "spec.targets[0].nodeIDs"),
    (
        "nodeIDs with selector",
        setting("spec.targets.2.nodeIDs", ["n-1"]),
        "spec.targets[2].nodeIDs",
    ),
    (
        "nodeIDs repeated",
        setting("spec.targets.0.nodeIDs", ["n-1", "n-1"]),
        "spec.targets[0].nodeIDs",
    ),
    ("nodePools empty", setting("spec.targets.2.nodePools", []), "spec.targets[2].nodePools"),
    (
        "nodePools other string",
        setting("spec.targets.2.nodePools", "all"),
        "spec.targets[2].nodePools",
    ),
    ("no targets", setting("spec.targets", []), "spec.targets"),
    (
        "cluster ID and selector",
        setting("spec.targets.0.clusterSelector", {"status": "Available"}),
        "spec.targets[0]",
    ),
    ("neither cluster ID nor selector", removing("spec.targets.0.clusterId"), "spec.targets[0]"),
    (
        "invalid selector regex",
        setting("spec.targets.2.clusterSelector.nameRegex", "(prod"),
        "spec.targets[2].clusterSelector.nameRegex",
    ),
    (
        "nameRegex with nested plus",
        setting("spec.targets.2.clusterSelector.nameRegex", "^(a+)+$"),
        NAME_REGEX_PATH,
    ),
    (
        "nameRegex with nested star",
        setting("spec.targets.2.clusterSelector.nameRegex", "(a*)*"),
        NAME_REGEX_PATH,
    ),
    (
        "nameRegex with nested group",
        setting("spec.targets.2.clusterSelector.nameRegex", "^prod-(?:[a-z0-9]+-?)+$"),
        NAME_REGEX_PATH,
    ),
    (
        "nameRegex with lazy nesting",
        setting("spec.targets.2.clusterSelector.nameRegex", r"(x\d+)*?y"),
        NAME_REGEX_PATH,
    ),
    (
        "nameRegex over 256 characters",
        setting("spec.targets.2.clusterSelector.nameRegex", "a" * 257),
        NAME_REGEX_PATH,
    ),
    (
        "nameRegex with ESC",
        setting("spec.targets.2.clusterSelector.nameRegex", "^prod-\x1b"),
        NAME_REGEX_PATH,
    ),
    (
        "unknown cluster phase",
        setting("spec.targets.2.clusterSelector.status", "Ready"),
        "spec.targets[2].clusterSelector.status",
    ),
    ("missing region", removing("spec.region"), "spec.targets[0].region"),
    ("missing project", removing("spec.projectId"), "spec.targets[0].projectId"),
    ("wrong apiVersion", setting("apiVersion", "cce-sync/v2"), "apiVersion"),
    ("wrong kind", setting("kind", "Job"), "kind"),
    (
        "preInstall extra padding",
        with_sync_template({"lifeCycle": {"preInstall": "ZWNobyAx="}, "login": {"sshKey": "ops"}}),
        "spec.sync.nodeTemplate.lifeCycle.preInstall",
    ),
    (
        "postInstall nonzero unused bits",
        with_sync_template({"lifeCycle": {"postInstall": "ZWNobyB="}, "login": {"sshKey": "ops"}}),
        "spec.sync.nodeTemplate.lifeCycle.postInstall",
    ),
    (
        "postInstall with line break",
        with_sync_template(
            {"lifeCycle": {"postInstall": "ZWNo\nbyAx"}, "login": {"sshKey": "ops"}}
        ),
        "spec.sync.nodeTemplate.lifeCycle.postInstall",
    ),
    (
        "preInstall not Base64",
        with_sync_template({"lifeCycle": {"preInstall": "echo 1"}, "login": {"sshKey": "ops"}}),
        "spec.sync.nodeTemplate.lifeCycle.preInstall",
    ),
    (
        "scripts over 10240 characters",
        with_sync_template(
            {
                "lifeCycle": {"preInstall": "QUFB" * 1500, "postInstall": "QUFB" * 1200},
                "login": {"sshKey": "ops"},
            }
        ),
        "spec.sync.nodeTemplate.lifeCycle",
    ),
    ("login missing", with_sync_template({"lifeCycle": {}}), "spec.sync.nodeTemplate.login"),
    (
        "login with both",
        with_sync_template({"login": {"sshKey": "ops", **inline_login()}}),
        "spec.sync.nodeTemplate.login",
    ),
    ("login with neither", with_sync_template({"login": {}}), "spec.sync.nodeTemplate.login"),
    (
        "password too short",
        with_sync_template({"login": inline_login(WEAK_PASSWORD)}),
        "spec.sync.nodeTemplate.login.userPassword.password",
    ),
    (
        "password with two character classes",
        with_sync_template({"login": inline_login("abcdefgh12")}),
        "spec.sync.nodeTemplate.login.userPassword.password",
    ),
    (
        "password containing username",
        with_sync_template({"login": inline_login("Xroot1234!", "root")}),
        "spec.sync.nodeTemplate.login.userPassword.password",
    ),
    (
        "password containing reversed username",
        with_sync_template({"login": inline_login("Xnimda12!", "admin")}),
        "spec.sync.nodeTemplate.login.userPassword.password",
    ),
    (
        "password and passwordFrom",
        with_sync_template(
            {
                "login": {
                    "userPassword": {
                        "password": STRONG_PASSWORD,
                        "passwordFrom": {"env": "NODE_PW"},
                    }
                }
            }
        ),
        "spec.sync.nodeTemplate.login.userPassword",
    ),
    (
        "passwordFrom with env and file",
        with_sync_template(
            {"login": {"userPassword": {"passwordFrom": {"env": "A", "file": "/run/pw"}}}}
        ),
        "spec.sync.nodeTemplate.login.userPassword.passwordFrom",
    ),
    (
        "passwordFrom reading the secret key",
        with_sync_template(
            {"login": {"userPassword": {"passwordFrom": {"env": "HUAWEICLOUD_SDK_SK"}}}}
        ),
        "spec.sync.nodeTemplate.login.userPassword.passwordFrom.env",
    ),
    (
        "passwordFrom reading proc",
        with_sync_template(
            {"login": {"userPassword": {"passwordFrom": {"file": "/proc/self/environ"}}}}
        ),
        "spec.sync.nodeTemplate.login.userPassword.passwordFrom.file",
    ),
    ("passwordFrom double slash proc", password_file("//proc/self/environ"), PASSWORD_FILE_PATH),
    (
        "passwordFrom dot-dot into proc",
        password_file("/tmp/../proc/self/environ"),
        PASSWORD_FILE_PATH,
    ),
    ("passwordFrom dot-dot elsewhere", password_file("/run/secrets/../pw"), PASSWORD_FILE_PATH),
    ("passwordFrom dot into dev", password_file("/./dev/stdin"), PASSWORD_FILE_PATH),
    ("passwordFrom repeated slashes", password_file("/sys//kernel/notes"), PASSWORD_FILE_PATH),
    ("passwordFrom proc directory", password_file("/proc"), PASSWORD_FILE_PATH),
    ("passwordFrom with ESC", password_file("/run/pw\x1b[2J"), PASSWORD_FILE_PATH),
    (
        "passwordFrom relative file",
        with_sync_template({"login": {"userPassword": {"passwordFrom": {"file": "pw.txt"}}}}),
        "spec.sync.nodeTemplate.login.userPassword.passwordFrom.file",
    ),
    (
        "passwordEncrypted submitted",
        with_sync_template({"login": {"userPassword": {"passwordEncrypted": "gAAAA"}}}),
        "spec.sync.nodeTemplate.login.userPassword.passwordEncrypted",
    ),
    ("retryTimes negative", setting("spec.sync.retryTimes", -1), "spec.sync.retryTimes"),
    ("force as string", setting("spec.sync.force", "yes"), "spec.sync.force"),
    ("maxInFlight zero", setting("spec.policy.maxInFlight", 0), "spec.policy.maxInFlight"),
    (
        "failure ratio above one",
        setting("spec.policy.errorBudget.maxFailureRatio", 1.5),
        "spec.policy.errorBudget.maxFailureRatio",
    ),
    (
        "window reversed",
        setting("spec.policy.window.notAfter", "2026-12-05T00:00:00Z"),
        "spec.policy.window",
    ),
    (
        "window without time zone",
        setting("spec.policy.window.notBefore", "2026-12-05T01:00:00"),
        "spec.policy.window.notBefore",
    ),
    (
        "maxAge unparseable",
        setting("spec.policy.retry.maxAge", "2 hours"),
        "spec.policy.retry.maxAge",
    ),
    (
        "maxAttempts zero",
        setting("spec.policy.retry.maxAttempts", 0),
        "spec.policy.retry.maxAttempts",
    ),
    ("dryRun as string", setting("spec.dryRun", "false"), "spec.dryRun"),
]
