"""CCE wire models: validation rules, wire form, secret hiding and response parsing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from worker.cce.models import (
    Login,
    NodeLifecycleConfig,
    UpgradeNodePoolRequest,
    UpgradeNodePoolSpec,
    UserPassword,
    format_validation_errors,
    is_resource_id,
    parse_clusters,
    parse_job,
    parse_job_id,
    parse_node_pool_status,
    parse_node_pools,
    validate_password,
)

PASSWORD = "Sync-Pass42"


def spec_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"maxUnavailable": 1, "nodePoolID": "pool-1"}
    body.update(changes)
    return body


def password_template(password: str = PASSWORD, username: str = "root") -> dict[str, Any]:
    return {"login": {"userPassword": {"username": username, "password": password}}}


def error_locations(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in item["loc"]) for item in error.errors()]


# Reference page request shapes ---------------------------------------------------------------


def test_reference_shape_with_node_ids() -> None:
    body = {
        "spec": {
            "maxUnavailable": 1,
            "nodeIDs": [
                "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa",
                "bbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbb",
            ],
            "nodePoolID": "cccccccc-cccc-cccc-cccc-cccccccccccc",
        }
    }

    request = UpgradeNodePoolRequest.model_validate(body)

    assert request.to_wire() == body


def test_reference_shape_default_pool_with_password() -> None:
    body = {
        "spec": {
            "maxUnavailable": 1,
            "nodePoolID": "DefaultPool",
            "nodeTemplate": {
                "lifeCycle": {
                    "preInstall": base64.b64encode(b"echo pre").decode(),
                    "postInstall": base64.b64encode(b"echo post").decode(),
                },
                "login": {"userPassword": {"username": "root", "password": PASSWORD}},
            },
        }
    }

    request = UpgradeNodePoolRequest.model_validate_json(json.dumps(body))

    assert request.to_wire() == body


def test_python_names_are_accepted() -> None:
    spec = UpgradeNodePoolSpec.model_validate(
        {"max_unavailable": 3, "node_pool_id": "p1", "force": True, "retry_times": 2}
    )

    assert spec.model_dump(by_alias=True, exclude_none=True) == {
        "maxUnavailable": 3,
        "nodePoolID": "p1",
        "force": True,
        "retryTimes": 2,
    }


def test_newer_optional_fields_are_accepted() -> None:
    spec = UpgradeNodePoolSpec.model_validate(
        spec_body(
            force=False,
            retryTimes=0,
            skippedNodes=["n-1"],
            nodeTemplate={"login": {"sshKey": "kp"}},
        )
    )

    assert spec.skipped_nodes == ["n-1"]
    assert spec.node_template is not None
    assert spec.node_template.life_cycle is None


def test_default_username_is_root_on_the_wire() -> None:
    spec = UpgradeNodePoolSpec.model_validate(
        spec_body(nodeTemplate={"login": {"userPassword": {"password": PASSWORD}}})
    )

    wire = UpgradeNodePoolRequest(spec=spec).to_wire()

    assert wire["spec"]["nodeTemplate"]["login"]["userPassword"] == {
        "username": "root",
        "password": PASSWORD,
    }


# Validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 21, -1, True, "1", 1.0])
def test_max_unavailable_rejected(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        UpgradeNodePoolSpec.model_validate(spec_body(maxUnavailable=value))

    assert error_locations(caught.value) == ["maxUnavailable"]


@pytest.mark.parametrize("value", [1, 20])
def test_max_unavailable_bounds_accepted(value: int) -> None:
    assert (
        UpgradeNodePoolSpec.model_validate(spec_body(maxUnavailable=value)).max_unavailable == value
    )


def test_missing_required_fields_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        UpgradeNodePoolSpec.model_validate({})

    assert sorted(error_locations(caught.value)) == ["maxUnavailable", "nodePoolID"]


def test_unknown_field_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        UpgradeNodePoolSpec.model_validate(spec_body(maxUnavaliable=2))

    assert error_locations(caught.value) == ["maxUnavaliable"]


@pytest.mark.parametrize("pool_id", ["", "../x", "a/b", "a b", "a?b", "-lead", "x" * 129])
def test_invalid_pool_id_rejected(pool_id: str) -> None:
    with pytest.raises(ValidationError):
        UpgradeNodePoolSpec.model_validate(spec_body(nodePoolID=pool_id))


def test_resource_id_syntax() -> None:
    assert is_resource_id("DefaultPool")
    assert is_resource_id("3f8e2c1a-0b9d-11ee-8c90-0242ac120002")
    assert not is_resource_id("a%2Fb")


def test_empty_node_ids_rejected() -> None:
    with pytest.raises(ValidationError):
        UpgradeNodePoolSpec.model_validate(spec_body(nodeIDs=[]))


def test_repeated_node_ids_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        UpgradeNodePoolSpec.model_validate(spec_body(nodeIDs=["n-1", "n-1"]))

    assert "must not repeat" in str(caught.value)


def test_node_template_needs_login() -> None:
    with pytest.raises(ValidationError) as caught:
        UpgradeNodePoolSpec.model_validate(spec_body(nodeTemplate={"lifeCycle": {}}))

    assert error_locations(caught.value) == ["nodeTemplate.login"]


@pytest.mark.parametrize("login", [{}, {"sshKey": "kp", "userPassword": {"password": PASSWORD}}])
def test_login_needs_exactly_one_mode(login: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        Login.model_validate(login)

    assert "exactly one of sshKey or userPassword" in str(caught.value)


def test_empty_ssh_key_rejected() -> None:
    with pytest.raises(ValidationError):
        Login.model_validate({"sshKey": ""})


@pytest.mark.parametrize(
    "script",
    [
        "not base64!",
        "aGVsbG8",
        "aGVs bG8=",
        "aGVsbG8=\n",
        pytest.param("ZWNobyAx=", id="extra-padding-one"),
        pytest.param("ZWNobyAx==", id="extra-padding-two"),
        pytest.param("ZWNobyA==", id="padding-past-a-multiple-of-four"),
        pytest.param("ZWNobyB=", id="nonzero-unused-bits"),
        pytest.param("ZWNo\nbyAx", id="line-break"),
        pytest.param("ZWNobyAx\u00e9", id="non-ascii"),
        pytest.param("ZW-obyAx", id="url-safe-alphabet"),
    ],
)
def test_lifecycle_script_must_be_base64(script: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NodeLifecycleConfig.model_validate({"preInstall": script})

    assert "canonical Base64" in str(caught.value)
    assert "preInstall" in str(caught.value)


@pytest.mark.parametrize(
    "script",
    [
        pytest.param("ZWNobyAx", id="reference-page-example"),
        pytest.param("ZWNobyA=", id="one-padding-character"),
        pytest.param("ZWNobw==", id="two-padding-characters"),
        pytest.param("", id="empty"),
        pytest.param(base64.b64encode(bytes(range(256))).decode(), id="every-byte"),
    ],
)
def test_lifecycle_script_canonical_accepted(script: str) -> None:
    config = NodeLifecycleConfig.model_validate({"preInstall": script, "postInstall": script})

    assert config.pre_install == script


def test_lifecycle_scripts_combined_limit() -> None:
    half = base64.b64encode(b"x" * 3840).decode()  # 5120 characters
    NodeLifecycleConfig.model_validate({"preInstall": half, "postInstall": half})

    longer = base64.b64encode(b"x" * 3843).decode()  # 5124 characters
    with pytest.raises(ValidationError) as caught:
        NodeLifecycleConfig.model_validate({"preInstall": half, "postInstall": longer})

    assert "10240" in str(caught.value)


# Passwords -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "username", "rule"),
    [
        ("Ab1!", "root", "8 to 26 characters"),
        ("Ab1!" * 7, "root", "8 to 26 characters"),
        ("abcdefgh1", "root", "at least 3 of"),
        ("ABCDEFGH!", "root", "at least 3 of"),
        ("Abcdefgh#1", "root", "not allowed"),
        ("Abcdefgh 1", "root", "not allowed"),
        ("Abcd\u00e9fgh1", "root", "not allowed"),
        ("Xroot-pass1", "root", "username"),
        ("Xtoor-pass1", "root", "username"),
        ("Paul.Smith1", "Smith", "username"),
    ],
)
def test_password_rules(password: str, username: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule) as caught:
        validate_password(password, username)

    assert password not in str(caught.value)


@pytest.mark.parametrize("password", ["Abcdefg1", "abcdefg1!", "ABCDEFG1-", "Ab1!" * 6 + "Ab"])
def test_password_accepted(password: str) -> None:
    validate_password(password, "root")


def test_password_hidden_in_repr_and_dump() -> None:
    user_password = UserPassword(password=PASSWORD)  # type: ignore[arg-type]

    assert PASSWORD not in repr(user_password)
    assert PASSWORD not in str(user_password.model_dump())
    assert PASSWORD not in user_password.model_dump_json()


def test_password_hidden_in_validation_errors() -> None:
    leaked = "rootSecret1!"
    with pytest.raises(ValidationError) as caught:
        UpgradeNodePoolSpec.model_validate(
            spec_body(maxUnavailable=0, nodeTemplate=password_template(leaked))
        )

    assert leaked not in str(caught.value)
    assert leaked not in repr(caught.value.errors(include_input=False))
    assert leaked not in "\n".join(format_validation_errors(caught.value))


def test_format_validation_errors_paths() -> None:
    with pytest.raises(ValidationError) as caught:
        UpgradeNodePoolRequest.model_validate(
            {"spec": spec_body(nodeIDs=["ok", "a/b"], nodeTemplate=password_template("short"))}
        )

    assert format_validation_errors(caught.value, prefix="body") == [
        "body.spec.nodeIDs[1]: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$'",
        "body.spec.nodeTemplate.login.userPassword: password must be 8 to 26 characters long, "
        "got 5",
    ]


def test_password_rule_error_location() -> None:
    with pytest.raises(ValidationError) as caught:
        UpgradeNodePoolSpec.model_validate(spec_body(nodeTemplate=password_template("short")))

    assert error_locations(caught.value) == ["nodeTemplate.login.userPassword"]


# Response parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "job_id"),
    [
        ({"jobid": "j-1"}, "j-1"),
        ({"jobID": "j-2"}, "j-2"),
        ({"jobId": "j-3"}, "j-3"),
        ({"metadata": {"uid": "j-4"}, "spec": {}}, "j-4"),
        ({"jobid": ""}, None),
        ({}, None),
        (None, None),
        ([], None),
        ("text", None),
        ({"jobid": 7}, None),
    ],
)
def test_parse_job_id(body: object, job_id: str | None) -> None:
    assert parse_job_id(body) == job_id


def test_parse_node_pool_status_while_synchronizing() -> None:
    body = {
        "metadata": {"uid": "pool-1", "name": "p"},
        "status": {
            "currentNode": 3,
            "configurationSyncedNodeCount": 1,
            "jobId": "job-9",
            "phase": "",
            "conditions": [
                {"type": "Scalable", "status": "True"},
                {"type": "ConfigurationSynchronizing", "status": "True"},
            ],
        },
    }

    status = parse_node_pool_status(body, "pool-1")

    assert status.synchronizing is True
    assert status.job_id == "job-9"
    assert status.current_node == 3
    assert status.synced_node_count == 1
    assert status.phase is None


def test_parse_node_pool_status_sparse() -> None:
    status = parse_node_pool_status({"status": {"currentNode": "3", "phase": "SoldOut"}}, "p-2")

    assert status.nodepool_id == "p-2"
    assert status.synchronizing is None
    assert status.current_node is None
    assert status.phase == "SoldOut"


def test_parse_lists() -> None:
    pools = parse_node_pools(
        {"items": [{"metadata": {"uid": "a", "name": "one"}}, {"metadata": {}}, "junk"]}
    )
    clusters = parse_clusters(
        {"items": [{"metadata": {"uid": "c", "name": "prod"}, "status": {"phase": "Available"}}]}
    )

    assert [(pool.id, pool.name) for pool in pools] == [("a", "one")]
    assert [(cluster.id, cluster.name, cluster.phase) for cluster in clusters] == [
        ("c", "prod", "Available")
    ]
    assert parse_node_pools({"items": None}) == []


def test_parse_job() -> None:
    job = parse_job({"status": {"phase": "Failed", "reason": "node reset failed"}}, "j")

    assert (job.job_id, job.phase, job.reason) == ("j", "Failed", "node reset failed")
