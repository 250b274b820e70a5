"""`cce-sync status`, `export`, `pause`, `resume`, `cancel` and `schema` on a stored campaign."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_py
import yaml
from document_fixtures import base_document

from producers.cli import EXPORT_COLUMNS, main
from worker.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
CCE_SYNC = str(Path(sys.executable).parent / "cce-sync")
CAMPAIGN_ID = "chg-2026-1204"
TARGET_FIELDS = {
    "region",
    "projectId",
    "clusterId",
    "nodePoolId",
    "state",
    "reason",
    "attempts",
    "jobId",
}


@pytest.fixture
def campaign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, redis: redis_py.Redis
) -> str:
    """Submit the base document with the real command (no worker runs, targets stay pending)."""
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(base_document(), sort_keys=False))
    result = subprocess.run(
        [CCE_SYNC, "submit", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": str(Path(sys.executable).parent), "REDIS_URL": redis_url},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    return CAMPAIGN_ID


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    output = capsys.readouterr()
    return status, output.out, output.err


def test_status_json_shape(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["status", campaign, "--json"], capsys)
    data = json.loads(out)

    assert status == 0
    assert data["id"] == campaign
    assert data["state"] == "running"
    assert data["counts"]["pending"] == 2
    assert len(data["targets"]) == 2
    assert all(set(row) >= TARGET_FIELDS for row in data["targets"])
    assert {row["nodePoolId"] for row in data["targets"]} == {
        "cccccccc-cccc-cccc-cccc-cccccccccccc",
        "DefaultPool",
    }


def test_status_table(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["status", campaign], capsys)

    assert status == 0
    assert f"Campaign  {campaign}" in out
    assert "pending 2" in out
    assert "NODE POOL" in out
    assert "DefaultPool" in out


def test_status_lists_campaigns(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["status"], capsys)
    _, json_out, _ = run_main(["status", "--json"], capsys)

    assert status == 0
    assert campaign in out
    assert [item["id"] for item in json.loads(json_out)["campaigns"]] == [campaign]


def test_status_unknown_campaign(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main(["status", "no-such-campaign"], capsys)

    assert status == 1
    assert out == ""
    assert "not found" in err


def test_status_watch_stops_at_timeout(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main(
        ["status", campaign, "--watch", "--json", "--interval", "0.1", "--timeout", "0.35"], capsys
    )

    assert status == 0
    assert len(out.splitlines()) >= 2
    assert "stopped watching" in err


def test_status_watch_ends_when_cancelled(
    campaign: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_main(["cancel", campaign], capsys)

    status, out, _ = run_main(["status", campaign, "--watch", "--json", "--interval", "5"], capsys)

    assert status == 0
    assert json.loads(out)["state"] == "cancelled"


def test_pause_resume_cancel(
    campaign: str, redis: redis_py.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    key = f"cce-sync:campaign:{campaign}"

    assert run_main(["pause", campaign], capsys)[0] == 0
    assert redis.hget(key, "state") == "paused"
    assert run_main(["resume", campaign], capsys)[0] == 0
    assert redis.hget(key, "state") == "running"
    assert run_main(["cancel", campaign], capsys)[0] == 0
    assert redis.hget(key, "state") == "cancelled"


def test_pause_cancelled_campaign_fails(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_main(["cancel", campaign], capsys)

    status, _, err = run_main(["pause", campaign], capsys)

    assert status == 1
    assert "cancelled" in err


def test_pause_unknown_campaign(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_main(["pause", "no-such-campaign"], capsys)

    assert status == 1
    assert "not found" in err


def test_export_csv(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["export", campaign], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))

    assert status == 0
    assert out.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    assert len(rows) == 2
    assert {row["state"] for row in rows} == {"pending"}


def test_export_json(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["export", campaign, "--format", "json"], capsys)
    rows = json.loads(out)

    assert status == 0
    assert len(rows) == 2
    assert all(set(row) >= TARGET_FIELDS | {"updatedAt"} for row in rows)


def test_export_unknown_campaign(campaign: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_main(["export", "no-such-campaign"], capsys)

    assert status == 1
    assert "not found" in err


def test_schema_matches_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["schema"], capsys)

    assert status == 0
    assert out == (REPO / "docs" / "campaign.schema.json").read_text()


@pytest.mark.parametrize("command", ["worker", "simulator", "intake"])
def test_delegated_command_help(command: str) -> None:
    result = subprocess.run(
        [CCE_SYNC, command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert f"usage: cce-sync {command}" in result.stdout


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])

    assert caught.value.code == 2


def test_status_escapes_control_characters(
    campaign: str, redis: redis_py.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # Validation rejects control characters, but Redis may hold data written another way.
    redis.hset(f"cce-sync:campaign:{campaign}", "name", "evil \x1b[31mred\x1b[0m")
    redis.hset(f"cce-sync:campaign:{campaign}", "reason", "bell\x07")

    status, single, _ = run_main(["status", campaign], capsys)
    listed_status, listed, _ = run_main(["status"], capsys)

    assert status == 0
    assert listed_status == 0
    assert "\x1b" not in single
    assert "\x07" not in single
    assert "\x1b" not in listed
    assert "\\x1b[31mred" in single


@pytest.mark.parametrize("command", [["status"], ["submit", "-"]])
def test_invalid_redis_url_is_one_line(command: list[str]) -> None:
    result = subprocess.run(
        [CCE_SYNC, *command],
        input=json.dumps(base_document()),
        capture_output=True,
        text=True,
        env={"PATH": str(Path(sys.executable).parent), "REDIS_URL": "not-a-url-with-secret"},
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "invalid REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr
