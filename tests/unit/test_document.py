"""Validation of campaign documents: every broken rule is reported with its field path."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from document_fixtures import (
    BAD_DOCUMENTS,
    CLUSTER_1,
    POOL_1,
    WEAK_PASSWORD,
    base_document,
    inline_login,
)

from worker.campaigns.document import (
    ALL_NODE_POOLS,
    DocumentError,
    explicit_targets,
    has_nested_quantifier,
    json_schema,
    load_document,
    target_rules,
)
from worker.campaigns.secrets import check_secrets

REPO = Path(__file__).resolve().parents[2]

#: Control characters other than the newline that separates error lines.
CONTROL_CHARACTER = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@pytest.mark.parametrize(
    ("mutation", "path"),
    [pytest.param(mutation, path, id=case) for case, mutation, path in BAD_DOCUMENTS],
)
def test_bad_document_names_field(mutation: Callable[[dict[str, Any]], None], path: str) -> None:
    document = base_document()
    mutation(document)

    with pytest.raises(DocumentError) as caught:
        load_document(document)

    assert path in caught.value.paths, str(caught.value)
    assert f"{path}: " in str(caught.value)


@pytest.mark.parametrize(
    ("mutation", "path"),
    [pytest.param(mutation, path, id=case) for case, mutation, path in BAD_DOCUMENTS],
)
def test_bad_document_as_yaml_names_field(
    mutation: Callable[[dict[str, Any]], None], path: str
) -> None:
    document = base_document()
    mutation(document)
    text = yaml.safe_dump(document, sort_keys=False)

    with pytest.raises(DocumentError) as caught:
        load_document(text)

    assert path in caught.value.paths, str(caught.value)


@pytest.mark.parametrize(
    ("mutation", "path"),
    [pytest.param(mutation, path, id=case) for case, mutation, path in BAD_DOCUMENTS],
)
def test_bad_document_error_is_printable(
    mutation: Callable[[dict[str, Any]], None], path: str
) -> None:
    document = base_document()
    mutation(document)

    with pytest.raises(DocumentError) as caught:
        load_document(document)

    assert CONTROL_CHARACTER.search(str(caught.value)) is None, repr(str(caught.value))


def test_unknown_key_with_escape_is_escaped() -> None:
    document = base_document()
    document["spec"]["sync"]["\x1b[2Jevil"] = 1

    with pytest.raises(DocumentError) as caught:
        load_document(document)

    assert caught.value.paths == ["spec.sync.\\x1b[2Jevil"]
    assert "\x1b" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(" \n\n", id="blank-lines"),
        pytest.param("# a comment only\n", id="comment-only"),
        pytest.param("\ufeff", id="byte-order-mark-only"),
    ],
)
def test_empty_document_says_empty(text: str) -> None:
    with pytest.raises(DocumentError) as caught:
        load_document(text)

    message = str(caught.value)
    assert caught.value.paths == ["document"]
    assert "is empty" in message
    assert "NoneType" not in message
    for field in ("apiVersion", "kind", "metadata", "spec"):
        assert field in message


@pytest.mark.parametrize(
    "pattern",
    ["^(a+)+$", "(a*)*", "(?:a+)*", "(x\\d+)*?y", "((a)+b)+", "(a|b+)+", "(a+){2}", "(?:[a-z]*-)+"],
)
def test_nested_quantifier_detected(pattern: str) -> None:
    assert has_nested_quantifier(pattern)


@pytest.mark.parametrize(
    "pattern",
    ["^prod-", "(a|aa)+", "^prod-[a-z0-9-]+$", "(a+)?", "[a+]+", "(ab)+", "(a{2,5})+", "(a+)++"],
)
def test_simple_pattern_accepted(pattern: str) -> None:
    document = base_document()
    document["spec"]["targets"][2]["clusterSelector"]["nameRegex"] = pattern

    assert not has_nested_quantifier(pattern)
    load_document(document)


def test_nested_quantifier_message_suggests_fix() -> None:
    document = base_document()
    document["spec"]["targets"][2]["clusterSelector"]["nameRegex"] = "^(a+)+$"

    with pytest.raises(DocumentError) as caught:
        load_document(document)

    message = str(caught.value)
    assert "nested quantifier" in message
    assert "exponential time" in message
    assert "for example" in message


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        ("/run/secrets/pw", "/run/secrets/pw"),
        ("/run//secrets/./pw", "/run/secrets/pw"),
        ("//run/secrets/pw", "/run/secrets/pw"),
        ("/run/secrets/pw/", "/run/secrets/pw"),
        ("/processes/pw", "/processes/pw"),
        ("/device-secrets/pw", "/device-secrets/pw"),
    ],
)
def test_password_file_path_normalized(path: str, normalized: str) -> None:
    document = base_document()
    login = document["spec"]["targets"][1]["sync"]["nodeTemplate"]["login"]
    login["userPassword"]["passwordFrom"] = {"file": path}

    loaded = load_document(document)

    sync = loaded.spec.targets[1].sync
    assert sync is not None and sync.node_template is not None
    user_password = sync.node_template.login.user_password
    assert user_password is not None and user_password.password_from is not None
    assert user_password.password_from.file == normalized


def test_printable_unicode_name_accepted() -> None:
    document = base_document()
    document["metadata"]["name"] = "Wöchentliches Patch: 週次"
    document["metadata"]["labels"] = {"team": "plate-forme é"}

    loaded = load_document(document)

    assert loaded.metadata.name == "Wöchentliches Patch: 週次"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "apiVersion: [cce-sync/v1\nkind: Campaign\n", "invalid YAML at line", id="unclosed-yaml"
        ),
        pytest.param(
            '{"apiVersion": "cce-sync/v1",}', "invalid JSON at line 1", id="trailing-comma-json"
        ),
        pytest.param(
            '{"kind": "Campaign", "kind": "Job"}', "duplicate key 'kind'", id="duplicate-json-key"
        ),
        pytest.param(
            "kind: Campaign\nkind: Job\n", "duplicate key 'kind'", id="duplicate-yaml-key"
        ),
        pytest.param("- 1\n- 2\n", "must be a mapping", id="yaml-list"),
        pytest.param("just text", "must be a mapping", id="yaml-scalar"),
        pytest.param('{"a": NaN}', "NaN", id="json-nan"),
        pytest.param("---\na: 1\n---\nb: 2\n", "invalid YAML", id="two-yaml-documents"),
    ],
)
def test_unparseable_document_names_document(text: str, expected: str) -> None:
    with pytest.raises(DocumentError) as caught:
        load_document(text)

    assert caught.value.paths == ["document"]
    assert expected in str(caught.value)


def test_yaml_error_omits_source_line() -> None:
    text = "spec:\n  sync:\n    password: Secret#Value1 : [\n"

    with pytest.raises(DocumentError) as caught:
        load_document(text)

    assert "Secret#Value1" not in str(caught.value)


def test_yaml_alias_expansion_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]

    with pytest.raises(DocumentError) as caught:
        load_document("\n".join(lines) + "\n")

    assert caught.value.paths == ["document"]
    assert "YAML aliases" in str(caught.value)


def test_yaml_anchors_and_merge_keys_allowed() -> None:
    text = yaml.safe_dump(base_document(), sort_keys=False)
    text = text.replace(
        "  sync:\n    maxUnavailable: 1\n", "  sync: &defaults\n    maxUnavailable: 1\n", 1
    )
    text += "x-unused: *defaults\n"
    document = yaml.safe_load(text)
    del document["x-unused"]
    document["spec"]["targets"][0]["sync"] = {"force": True}
    merged = yaml.safe_dump(document, sort_keys=False).replace(
        "    sync:\n      force: true\n",
        "    sync:\n      <<: {maxUnavailable: 2}\n      force: true\n",
        1,
    )

    rules = target_rules(load_document(merged))

    assert rules[0].sync.max_unavailable == 2
    assert rules[0].sync.force is True


def test_invalid_utf8_rejected() -> None:
    with pytest.raises(DocumentError) as caught:
        load_document(b"kind: \xff\xfe\n")

    assert "UTF-8" in str(caught.value)


def test_five_megabyte_document_rejected() -> None:
    document = base_document()
    document["metadata"]["name"] = "x" * (5 * 1024 * 1024)
    text = json.dumps(document)

    with pytest.raises(DocumentError) as caught:
        load_document(text)

    assert str(caught.value) == (
        "document: is larger than the limit of 1,000,000 bytes; "
        "split the campaign into smaller documents"
    )


def test_truncated_read_reports_no_size() -> None:
    # What the CLI passes on for a 6 MB file: the first limit + 1 bytes.
    text = json.dumps(base_document() | {"x": "y" * 6_000_000})[:1_000_001]

    with pytest.raises(DocumentError) as caught:
        load_document(text)

    assert "1000001" not in str(caught.value)
    assert "1,000,001" not in str(caught.value)
    assert "larger than the limit of 1,000,000 bytes" in str(caught.value)


def test_five_megabyte_mapping_rejected() -> None:
    document = base_document()
    document["metadata"]["name"] = "x" * (5 * 1024 * 1024)
    size = len(json.dumps(document))

    with pytest.raises(DocumentError) as caught:
        load_document(document)

    assert caught.value.paths == ["document"]
    assert f"is {size:,} bytes as JSON, larger than the limit of 1,000,000 bytes" in str(
        caught.value
    )


def test_inline_password_without_secret_key() -> None:
    document = base_document()
    document["spec"]["targets"][1]["sync"]["nodeTemplate"]["login"] = inline_login()
    loaded = load_document(document)

    with pytest.raises(DocumentError) as caught:
        check_secrets(loaded, None)

    assert caught.value.paths == ["spec.targets[1].sync.nodeTemplate.login.userPassword.password"]
    assert "CCE_SYNC_SECRET_KEY" in str(caught.value)
    assert "passwordFrom" in str(caught.value)


@pytest.mark.parametrize("password", [WEAK_PASSWORD, "Xroot1234!", "abcdefgh12"])
def test_password_absent_from_errors(password: str) -> None:
    document = base_document()
    document["spec"]["sync"]["nodeTemplate"] = {"login": inline_login(password)}
    document["spec"]["sync"]["maxUnavailable"] = "3"

    with pytest.raises(DocumentError) as caught:
        load_document(yaml.safe_dump(document))

    assert password not in str(caught.value)
    assert password not in repr(caught.value.errors)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_every_error_reported_at_once() -> None:
    document = base_document()
    document["spec"]["sync"]["maxUnavailable"] = 0
    document["spec"]["targets"][0]["clusterId"] = "a/b"
    document["metadata"]["id"] = "x y"

    with pytest.raises(DocumentError) as caught:
        load_document(document)

    assert set(caught.value.paths) >= {
        "spec.sync.maxUnavailable",
        "spec.targets[0].clusterId",
        "metadata.id",
    }


# Valid documents ----------------------------------------------------------------------------


def test_valid_document_loads() -> None:
    loaded = load_document(base_document())

    assert loaded.metadata.id == "chg-2026-1204"
    assert loaded.spec.policy.retry.max_age == 7200
    assert loaded.spec.policy.error_budget is not None
    assert loaded.spec.policy.error_budget.max_failure_ratio == 0.2


def test_yaml_and_json_give_same_document() -> None:
    document = base_document()

    from_yaml = load_document(yaml.safe_dump(document))
    from_json = load_document(json.dumps(document))

    assert from_yaml == from_json


def test_target_overrides_merge_field_by_field() -> None:
    document = base_document()
    document["spec"]["sync"]["force"] = True

    rules = target_rules(load_document(document))

    assert rules[0].sync.max_unavailable == 1
    assert rules[1].sync.max_unavailable == 3
    assert rules[1].sync.force is True
    assert rules[1].region == "eu-west-101"
    assert rules[1].project_id == "0a1b2c3d4e5f"


def test_target_rules_mark_listing_entries() -> None:
    rules = target_rules(load_document(base_document()))

    assert [rule.explicit for rule in rules] == [True, True, False]
    assert rules[2].node_pools == ALL_NODE_POOLS
    assert rules[2].cluster_selector is not None
    assert rules[2].cluster_selector.matches("prod-001", "Available")
    assert not rules[2].cluster_selector.matches("dev-001", "Available")
    assert not rules[2].cluster_selector.matches("prod-001", "Unavailable")


def test_explicit_targets_keys() -> None:
    targets = explicit_targets(load_document(base_document()))

    assert [target.key for target in targets] == [
        f"ap-southeast-1/0a1b2c3d4e5f/{CLUSTER_1}/{POOL_1}",
        "eu-west-101/0a1b2c3d4e5f/77aa0000-aaaa-bbbb-cccc-000000000002/DefaultPool",
    ]
    assert targets[0].node_ids == (
        "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa",
        "bbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbb",
    )
    assert targets[1].node_ids is None
    assert targets[1].rule_index == 1


def test_same_pool_in_two_regions_allowed() -> None:
    document = base_document()
    document["spec"]["targets"].append(
        {"clusterId": CLUSTER_1, "region": "cn-north-4", "nodePools": [POOL_1]}
    )

    targets = explicit_targets(load_document(document))

    assert len({target.key for target in targets}) == 3


@pytest.mark.parametrize(
    ("text", "seconds"), [("45s", 45), ("90m", 5400), ("1h30m", 5400), ("1d", 86400), (600, 600)]
)
def test_max_age_durations(text: str | int, seconds: int) -> None:
    document = base_document()
    document["spec"]["policy"]["retry"]["maxAge"] = text

    assert load_document(document).spec.policy.retry.max_age == seconds


# Files in the repository --------------------------------------------------------------------


def test_schema_file_matches_model() -> None:
    committed = json.loads((REPO / "docs" / "campaign.schema.json").read_text())

    assert committed == json_schema(), "regenerate it: cce-sync schema > docs/campaign.schema.json"


def test_schema_accepts_examples() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    example = yaml.safe_load((REPO / "deploy" / "examples" / "campaign.yaml").read_text())
    example["spec"]["policy"] = {}

    validator.validate(base_document() | {"spec": {**base_document()["spec"], "policy": {}}})
    validator.validate(json.loads(json.dumps(example, default=str)))


def test_schema_rejects_string_max_unavailable() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    document = base_document()
    document["spec"]["policy"] = {}
    document["spec"]["sync"]["maxUnavailable"] = "3"

    assert not validator.is_valid(document)


def test_example_campaign_loads() -> None:
    example = load_document((REPO / "deploy" / "examples" / "campaign.yaml").read_bytes())
    targets = explicit_targets(example)
    clusters = {
        (target.project_id, target.cluster_id)
        for target in target_rules(example)
        if target.cluster_id
    }

    assert len(clusters) >= 30
    assert len({target.project_id for target in targets}) == 2
    assert any(target.node_ids and target.nodepool_id != "DefaultPool" for target in targets)
    assert any(
        target.nodepool_id == "DefaultPool"
        and target.sync.node_template is not None
        and target.sync.node_template.life_cycle is not None
        for target in targets
    )


def test_example_campaign_matches_simulator_fleet() -> None:
    fleet_module = pytest.importorskip("simulator.fleet")
    fleet = fleet_module.Fleet(fleet_module.FleetOptions())
    example = load_document((REPO / "deploy" / "examples" / "campaign.yaml").read_bytes())
    pool_keys = set(fleet.pool_keys())

    for target in explicit_targets(example):
        assert target.key in pool_keys
        pool = fleet.pool(target.project_id, target.cluster_id, target.nodepool_id)
        node_ids = {node.id for node in pool.nodes}
        assert set(target.node_ids or ()) <= node_ids


def test_copy_of_base_document_unchanged() -> None:
    first = base_document()
    second = copy.deepcopy(first)

    load_document(first)

    assert first == second
