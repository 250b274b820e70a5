"""The alert rules pass `promtool check rules` and their unit tests (`promtool test rules`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from prometheus_fixtures import PROMTOOL_BINARY, find_binary

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"


def _promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary(PROMTOOL_BINARY), *arguments],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_silent_in_tests() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])

    assert _alert_names() - firing == set()
    assert _alert_names() - silent == set()


def test_every_alert_has_runbook_section() -> None:
    operations = (PROMETHEUS_DIR.parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")
    headings = {
        line.lstrip("#").strip() for line in operations.splitlines() if line.startswith("#")
    }

    assert _alert_names() - headings == set()
