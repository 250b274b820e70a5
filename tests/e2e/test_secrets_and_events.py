"""A campaign's events arrive in order, and no secret reaches logs, metrics, status or Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from conftest import TEST_AK, TEST_SK, campaign_document, worker_environment
from cryptography.fernet import Fernet
from processes import WorkerProcess, run_cli, wait_until

from worker.events import EventReader

pytestmark = pytest.mark.slow

INLINE_PASSWORD = "Inl1ne-Secret-Pw"
ENV_PASSWORD = "Env-Secret-Pw-42"


def campaign_with_passwords(fleet: Any, campaign_id: str) -> dict[str, Any]:
    """Six pools: default pools with an inline password and with passwordFrom, plus plain pools."""
    document = campaign_document(fleet, campaign_id=campaign_id, pools=2)
    clusters = fleet.projects[0].clusters
    template = {
        "lifeCycle": {"preInstall": "ZWNobyAx"},
        "login": {"userPassword": {"username": "root"}},
    }
    inline = json.loads(json.dumps(template))
    inline["login"]["userPassword"]["password"] = INLINE_PASSWORD
    from_env = json.loads(json.dumps(template))
    from_env["login"]["userPassword"]["passwordFrom"] = {"env": "NODE_PASSWORD"}
    document["spec"]["targets"] += [
        {
            "clusterId": clusters[5].id,
            "nodePools": ["DefaultPool"],
            "sync": {"maxUnavailable": 2, "nodeTemplate": inline},
        },
        {
            "clusterId": clusters[6].id,
            "nodePools": ["DefaultPool"],
            "sync": {"maxUnavailable": 2, "nodeTemplate": from_env},
        },
        {
            "clusterId": clusters[7].id,
            "nodePools": "*",
            "sync": {"maxUnavailable": 1, "nodeTemplate": inline},
        },
    ]
    document["spec"]["projectId"] = fleet.projects[0].id
    return document


def every_redis_value(client: redis_py.Redis) -> str:
    """Return every key and value in the database as one text (streams and hashes included)."""
    parts: list[str] = []
    for key in client.scan_iter(count=500):
        parts.append(repr(key))
        kind = client.type(key)
        if kind == b"string":
            parts.append(repr(client.get(key)))
        elif kind == b"hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == b"list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind == b"set":
            parts.append(repr(client.smembers(key)))
        elif kind == b"zset":
            parts.append(repr(client.zrange(key, 0, -1, withscores=True)))
        elif kind == b"stream":
            parts.append(repr(client.xrange(key)))
    return "\n".join(parts)


def test_events_in_order_and_no_secrets(redis_url: str, simulator_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    simulator = simulator_factory(
        projects=1, clusters_per_project=10, pools_per_cluster=1, job_seconds=0.5
    )
    environment = worker_environment(
        redis_url,
        simulator.url,
        CCE_SYNC_SECRET_KEY=Fernet.generate_key().decode(),
        NODE_PASSWORD=ENV_PASSWORD,
    )
    document = campaign_with_passwords(simulator.fleet, "secrets-and-events")
    worker = WorkerProcess(
        environment, log_path=tmp_path / "worker.log", processes=2, threads=4
    ).start()
    try:
        worker.wait_metrics()
        submitted = run_cli(environment, "submit", "-", "--json", stdin=json.dumps(document))
        assert submitted.returncode == 0, submitted.stderr
        client = redis_py.Redis.from_url(redis_url)
        wait_until(
            lambda: client.hget("cce-sync:campaign:secrets-and-events", "state") == b"finished",
            timeout=90,
            message=f"campaign did not finish; worker log:\n{worker.log_tail()}",
        )
        status_text = run_cli(environment, "status", "secrets-and-events").stdout
        status_json = run_cli(environment, "status", "secrets-and-events", "--json").stdout
        export_csv = run_cli(environment, "export", "secrets-and-events", "--format", "csv").stdout
        metrics_text = worker.metrics_text()
    finally:
        worker.stop()

    pools = simulator.audit()
    assert len(pools) == 6
    assert json.loads(status_json)["counts"]["synced"] == 6
    assert set(pools.values()) == {1}

    events = EventReader(
        redis_py.Redis.from_url(redis_url, decode_responses=True), start_id="0"
    ).read()
    types = [event.type for event in events]
    assert types[0] == "campaign.accepted"
    assert types[-1] == "campaign.finished"
    assert types.count("campaign.finished") == 1
    accepted = [event.data["target"] for event in events if event.type == "target.accepted"]
    synced = [event.data["target"] for event in events if event.type == "target.synced"]
    assert sorted(accepted) == sorted(pools)
    assert sorted(synced) == sorted(pools)
    for key in pools:
        assert types.index("target.accepted") < types.index("target.synced")
        positions = [index for index, event in enumerate(events) if event.data.get("target") == key]
        assert [events[index].type for index in positions] == ["target.accepted", "target.synced"]

    redis_dump = every_redis_value(redis_py.Redis.from_url(redis_url))
    worker_log = worker.log_path.read_text(errors="replace")
    for secret in (TEST_SK, INLINE_PASSWORD, ENV_PASSWORD):
        assert secret not in redis_dump
        assert secret not in worker_log
        assert secret not in metrics_text
        assert secret not in status_text
        assert secret not in status_json
        assert secret not in export_csv
    assert TEST_AK not in worker_log
    assert TEST_AK not in redis_dump
