"""`cce-sync submit` against a private Redis: valid documents are stored and enqueued, invalid
ones exit 2, name the field and leave Redis untouched, and node passwords never reach Redis in
clear."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
import yaml
from cryptography.fernet import Fernet
from document_fixtures import (
    BAD_DOCUMENTS,
    NAME_REGEX_PATH,
    PASSWORD_FILE_PATH,
    STRONG_PASSWORD,
    Mutation,
    base_document,
    inline_login,
    setting,
    with_sync_template,
)

from producers.cli import main
from worker.embedded import free_port
from worker.settings import get_settings

CCE_SYNC = str(Path(sys.executable).parent / "cce-sync")
CAMPAIGN_ID = "chg-2026-1204"

#: dramatiq's keys for the cce-sync queue (namespace from worker.broker).
QUEUE_MESSAGES_KEY = "cce-sync-dramatiq:cce-sync.msgs"


def run_cli(
    args: list[str],
    *,
    redis_url: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `cce-sync` command with REDIS_URL pointing at the private server."""
    environment = dict(os.environ)
    environment["REDIS_URL"] = redis_url
    environment.update(env or {})
    return subprocess.run(
        [CCE_SYNC, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def write_document(tmp_path: Path, document: dict[str, Any], name: str = "campaign.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def mutated(mutation: Mutation) -> dict[str, Any]:
    document = base_document()
    mutation(document)
    return document


def redis_contents(client: redis_py.Redis) -> str:
    """Return every key and value of the server as one text, for searching."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        parts.append(key)
        if kind == "string":
            parts.append(str(client.get(key)))
        elif kind == "hash":
            parts.append(json.dumps(client.hgetall(key)))
        elif kind == "list":
            parts.append(json.dumps(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(json.dumps(sorted(client.smembers(key))))
        elif kind == "zset":
            parts.append(json.dumps(client.zrange(key, 0, -1, withscores=True)))
        elif kind == "stream":
            parts.append(json.dumps(client.xrange(key)))
        else:
            parts.append(f"<{kind}>")
    return "\n".join(parts)


def queued_actor_calls(client: redis_py.Redis) -> list[tuple[str, list[Any]]]:
    calls = []
    for raw in client.hvals(QUEUE_MESSAGES_KEY):
        message = json.loads(raw)
        calls.append((message["actor_name"], message["args"]))
    return calls


@pytest.fixture
def use_redis(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> str:
    """Point this process's settings at the private Redis, for in-process `main()` calls."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    return redis_url


# Invalid documents ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutation", "path"),
    [pytest.param(mutation, path, id=case) for case, mutation, path in BAD_DOCUMENTS],
)
def test_submit_main_rejects_bad_document(
    mutation: Mutation,
    path: str,
    tmp_path: Path,
    use_redis: str,
    redis: redis_py.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    document_path = write_document(tmp_path, mutated(mutation))

    status = main(["submit", str(document_path)])
    output = capsys.readouterr()

    assert status == 2
    assert f"{path}: " in output.err
    assert "\x1b" not in output.err
    assert output.out == ""
    assert redis.dbsize() == 0


# Each of these runs the installed command in its own process.
COMMAND_CASES: list[tuple[str, str, str]] = [
    ("maxUnavailable string", "maxUnavailable: 1", 'maxUnavailable: "3"'),
    ("maxUnavailable float", "maxUnavailable: 1", "maxUnavailable: 2.0"),
    ("maxUnavailable out of range", "maxUnavailable: 1", "maxUnavailable: 25"),
    ("unknown field", "maxUnavailable: 1", "maxUnavailable: 1\n    maxUnavalable: 2"),
]


@pytest.mark.parametrize(
    ("find", "replace"),
    [pytest.param(find, replace, id=case) for case, find, replace in COMMAND_CASES],
)
def test_submit_command_rejects_edited_yaml(
    find: str, replace: str, tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    text = yaml.safe_dump(base_document(), sort_keys=False).replace(find, replace, 1)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)

    result = run_cli(["submit", str(path)], redis_url=redis_url)

    assert result.returncode == 2, result.stderr
    assert "spec.sync.maxUn" in result.stderr
    assert redis.dbsize() == 0


@pytest.mark.parametrize(
    ("case", "path"),
    [
        ("path characters in IDs", "spec.targets[0].clusterId"),
        ("duplicate pool across targets", "spec.targets[3].nodePools[0]"),
        ("nodeIDs with two pools", "spec.targets[0].nodeIDs"),
        ("preInstall not Base64", "spec.sync.nodeTemplate.lifeCycle.preInstall"),
        ("scripts over 10240 characters", "spec.sync.nodeTemplate.lifeCycle"),
        ("login with both", "spec.sync.nodeTemplate.login"),
        ("login with neither", "spec.sync.nodeTemplate.login"),
        ("password too short", "spec.sync.nodeTemplate.login.userPassword.password"),
        (
            "password containing reversed username",
            "spec.sync.nodeTemplate.login.userPassword.password",
        ),
        ("passwordFrom double slash proc", PASSWORD_FILE_PATH),
        ("passwordFrom dot-dot into proc", PASSWORD_FILE_PATH),
        ("nameRegex with nested plus", NAME_REGEX_PATH),
        ("name with ESC", "metadata.name"),
        ("label value with ESC", "metadata.labels.team"),
        ("label key with ESC", "metadata.labels.team\\x1b[2J.[key]"),
        ("preInstall extra padding", "spec.sync.nodeTemplate.lifeCycle.preInstall"),
    ],
)
def test_submit_command_rejects_bad_document(
    case: str, path: str, tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    mutations = {name: mutation for name, mutation, _ in BAD_DOCUMENTS}
    mutations["path characters in IDs"] = setting("spec.targets.0.clusterId", "../../x")
    document_path = write_document(tmp_path, mutated(mutations[case]))

    result = run_cli(["submit", str(document_path)], redis_url=redis_url)

    assert result.returncode == 2, result.stderr
    assert f"{path}: " in result.stderr
    assert "\x1b" not in result.stderr
    assert result.stdout == ""
    assert redis.dbsize() == 0


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("apiVersion: cce-sync/v1\nspec: [unclosed\n", id="yaml"),
        pytest.param('{"apiVersion": "cce-sync/v1", "spec": }', id="json"),
    ],
)
def test_submit_command_rejects_unparseable(
    text: str, redis_url: str, redis: redis_py.Redis
) -> None:
    result = run_cli(["submit", "-"], redis_url=redis_url, stdin=text)

    assert result.returncode == 2
    assert "document: invalid" in result.stderr
    assert redis.dbsize() == 0


def test_submit_command_rejects_five_megabytes(redis_url: str, redis: redis_py.Redis) -> None:
    document = base_document()
    document["metadata"]["name"] = "x" * (5 * 1024 * 1024)

    result = run_cli(["submit", "-"], redis_url=redis_url, stdin=json.dumps(document))

    assert result.returncode == 2
    assert "document: is larger than the limit of 1,000,000 bytes" in result.stderr
    assert "1000001" not in result.stderr
    assert redis.dbsize() == 0


def test_submit_command_rejects_six_megabyte_file(
    tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    document = base_document()
    document["metadata"]["name"] = "x" * (6 * 1024 * 1024)
    path = tmp_path / "large.json"
    path.write_text(json.dumps(document))

    result = run_cli(["submit", str(path)], redis_url=redis_url)

    assert result.returncode == 2
    assert "document: is larger than the limit of 1,000,000 bytes" in result.stderr
    assert "1000001" not in result.stderr
    assert redis.dbsize() == 0


def test_submit_command_rejects_empty_stdin(redis_url: str, redis: redis_py.Redis) -> None:
    result = run_cli(["submit", "-"], redis_url=redis_url, stdin="")

    assert result.returncode == 2
    assert "document: is empty" in result.stderr
    assert "NoneType" not in result.stderr
    assert "apiVersion" in result.stderr
    assert redis.dbsize() == 0


def test_submit_command_rejects_empty_file(
    tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")

    result = run_cli(["submit", str(path)], redis_url=redis_url)

    assert result.returncode == 2
    assert "document: is empty" in result.stderr
    assert "NoneType" not in result.stderr
    assert redis.dbsize() == 0


def test_inline_password_without_key_rejected(
    tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    document = mutated(with_sync_template({"login": inline_login()}))

    result = run_cli(["submit", str(write_document(tmp_path, document))], redis_url=redis_url)

    assert result.returncode == 2
    assert "spec.sync.nodeTemplate.login.userPassword.password: " in result.stderr
    assert "CCE_SYNC_SECRET_KEY" in result.stderr
    assert STRONG_PASSWORD not in result.stderr
    assert redis.dbsize() == 0


def test_invalid_secret_key_fails(tmp_path: Path, redis_url: str, redis: redis_py.Redis) -> None:
    document = mutated(with_sync_template({"login": inline_login()}))

    result = run_cli(
        ["submit", str(write_document(tmp_path, document))],
        redis_url=redis_url,
        env={"CCE_SYNC_SECRET_KEY": "not-a-fernet-key"},
    )

    assert result.returncode == 1
    assert "CCE_SYNC_SECRET_KEY" in result.stderr
    assert "not-a-fernet-key" not in result.stderr
    assert redis.dbsize() == 0


def test_missing_file_fails(tmp_path: Path, redis_url: str) -> None:
    result = run_cli(["submit", str(tmp_path / "absent.yaml")], redis_url=redis_url)

    assert result.returncode == 1
    assert "absent.yaml" in result.stderr


def test_unreachable_redis_fails(tmp_path: Path) -> None:
    unused_url = f"redis://127.0.0.1:{free_port()}/0"

    result = run_cli(
        ["submit", str(write_document(tmp_path, base_document()))], redis_url=unused_url
    )

    assert result.returncode == 1
    assert "REDIS_URL" in result.stderr


# Valid documents ------------------------------------------------------------------------------


def test_submit_stores_and_enqueues(tmp_path: Path, redis_url: str, redis: redis_py.Redis) -> None:
    result = run_cli(
        ["submit", str(write_document(tmp_path, base_document()))], redis_url=redis_url
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{CAMPAIGN_ID}\n"
    assert redis.hget(f"cce-sync:campaign:{CAMPAIGN_ID}", "state") == "running"
    assert redis.hlen(f"cce-sync:campaign:{CAMPAIGN_ID}:targets") == 2
    assert ("expand_campaign", [CAMPAIGN_ID]) in queued_actor_calls(redis)


def test_submit_json_output(tmp_path: Path, redis_url: str) -> None:
    path = write_document(tmp_path, base_document())

    result = run_cli(["submit", str(path), "--json"], redis_url=redis_url)

    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["campaign_id"] == CAMPAIGN_ID
    assert output["targets"] == 2
    assert output["created"] is True


def test_resubmit_same_content_is_idempotent(
    tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    path = write_document(tmp_path, base_document())
    first = run_cli(["submit", str(path)], redis_url=redis_url)
    events_after_first = redis.xlen("cce-sync:events")
    reordered = tmp_path / "campaign.json"
    reordered.write_text(json.dumps(base_document(), indent=1, sort_keys=True))

    second = run_cli(["submit", str(reordered), "--json"], redis_url=redis_url)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {
        "campaign_id": CAMPAIGN_ID,
        "targets": 2,
        "created": False,
    }
    assert redis.xlen("cce-sync:events") == events_after_first
    assert redis.zcard("cce-sync:campaigns") == 1


def test_resubmit_other_content_conflicts(
    tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    first = run_cli(["submit", str(write_document(tmp_path, base_document()))], redis_url=redis_url)
    stored = redis.hget(f"cce-sync:campaign:{CAMPAIGN_ID}", "document")
    changed = mutated(setting("spec.sync.maxUnavailable", 2))

    second = run_cli(
        ["submit", str(write_document(tmp_path, changed, "changed.yaml"))], redis_url=redis_url
    )

    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    assert "metadata.id" in second.stderr
    assert redis.hget(f"cce-sync:campaign:{CAMPAIGN_ID}", "document") == stored


def test_generated_campaign_id(tmp_path: Path, redis_url: str, redis: redis_py.Redis) -> None:
    document = base_document()
    del document["metadata"]["id"]

    result = run_cli(["submit", str(write_document(tmp_path, document))], redis_url=redis_url)

    assert result.returncode == 0, result.stderr
    campaign_id = result.stdout.strip()
    assert re.fullmatch(r"cmp-\d{8}-\d{6}-[0-9a-f]{8}", campaign_id)
    assert redis.exists(f"cce-sync:campaign:{campaign_id}")


def test_dry_run_leaves_redis_untouched(
    tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    result = run_cli(
        ["submit", "--dry-run", str(write_document(tmp_path, base_document()))],
        redis_url=redis_url,
    )

    assert result.returncode == 0, result.stderr
    assert "dry run" in result.stdout
    assert "cccccccc-cccc-cccc-cccc-cccccccccccc" in result.stdout
    assert redis.dbsize() == 0


def test_dry_run_json_plan(tmp_path: Path, redis_url: str, redis: redis_py.Redis) -> None:
    result = run_cli(
        ["submit", "--dry-run", "--json", str(write_document(tmp_path, base_document()))],
        redis_url=redis_url,
    )

    output = json.loads(result.stdout)
    assert output["dry_run"] is True
    assert output["rules_pending"] == 1
    assert [row["nodePoolId"] for row in output["plan"]] == [
        "cccccccc-cccc-cccc-cccc-cccccccccccc",
        "DefaultPool",
    ]
    assert redis.dbsize() == 0


def test_inline_password_never_in_redis(
    tmp_path: Path, redis_url: str, redis: redis_py.Redis
) -> None:
    document = base_document()
    document["spec"]["sync"]["nodeTemplate"] = {
        "lifeCycle": {"preInstall": "ZWNobyAx"},
        "login": inline_login(),
    }
    document["spec"]["targets"][1]["sync"]["nodeTemplate"]["login"] = inline_login("Kp4$zXc9vBn")

    result = run_cli(
        ["submit", str(write_document(tmp_path, document))],
        redis_url=redis_url,
        env={"CCE_SYNC_SECRET_KEY": Fernet.generate_key().decode()},
    )
    contents = redis_contents(redis)

    assert result.returncode == 0, result.stderr
    assert STRONG_PASSWORD not in contents
    assert "Kp4$zXc9vBn" not in contents
    assert contents.count("passwordEncrypted") >= 4
    assert STRONG_PASSWORD not in result.stdout + result.stderr


def test_example_campaign_submits(redis_url: str, redis: redis_py.Redis) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "campaign.yaml"

    result = run_cli(["submit", str(example), "--json"], redis_url=redis_url)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["targets"] == 64
    assert redis.hget("cce-sync:campaign:demo-os-patch", "expanded") == "0"
