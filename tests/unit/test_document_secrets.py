"""Node passwords: encrypted in the stored form, resolved and checked at call time."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from worker.campaigns.document import explicit_targets, load_document
from worker.campaigns.secrets import (
    SecretCipher,
    SecretKeyError,
    SecretUnavailable,
    build_spec,
    cipher_from_settings,
    document_digest,
    stored_form,
    stored_sync,
)
from worker.cce.models import UpgradeNodePoolRequest
from worker.settings import Settings

PASSWORD = "Nv7!kQz2pLx"
OTHER_PASSWORD = "Qm3@wRt8yUi"


def document_with_login(login: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cce-sync/v1",
        "kind": "Campaign",
        "metadata": {"id": "chg-1"},
        "spec": {
            "region": "ap-southeast-1",
            "projectId": "project-1",
            "sync": {
                "maxUnavailable": 2,
                "nodeTemplate": {"lifeCycle": {"preInstall": "ZWNobyAx"}, "login": login},
            },
            "targets": [
                {"clusterId": "cluster-1", "nodePools": ["DefaultPool"], "nodeIDs": ["node-1"]},
                {"clusterId": "cluster-2", "nodePools": ["pool-2"], "sync": {"maxUnavailable": 4}},
            ],
        },
    }


def inline(password: str = PASSWORD) -> dict[str, Any]:
    return {"userPassword": {"username": "root", "password": password}}


@pytest.fixture
def cipher() -> SecretCipher:
    return SecretCipher([Fernet.generate_key().decode()])


def test_stored_form_has_no_clear_password(cipher: SecretCipher) -> None:
    document = load_document(document_with_login(inline()))

    stored = stored_form(document, cipher, campaign_id="chg-1")
    text = json.dumps(stored)

    assert PASSWORD not in text
    assert "**********" not in text
    user_password = stored["spec"]["sync"]["nodeTemplate"]["login"]["userPassword"]
    assert set(user_password) == {"username", "passwordEncrypted"}


def test_stored_form_reloads(cipher: SecretCipher) -> None:
    document = load_document(document_with_login(inline()))

    reloaded = load_document(stored_form(document, cipher), stored=True)

    assert [t.key for t in explicit_targets(reloaded)] == [
        t.key for t in explicit_targets(document)
    ]
    assert reloaded.spec.policy == document.spec.policy


def test_stored_form_sets_generated_id(cipher: SecretCipher) -> None:
    raw = document_with_login({"sshKey": "ops-key"})
    del raw["metadata"]["id"]

    stored = stored_form(load_document(raw), cipher, campaign_id="cmp-generated")

    assert stored["metadata"]["id"] == "cmp-generated"


def test_stored_sync_round_trip_to_wire(cipher: SecretCipher) -> None:
    target = explicit_targets(load_document(document_with_login(inline())))[0]

    record = stored_sync(target.sync, cipher, path="spec.sync")
    spec = build_spec(
        json.loads(json.dumps(record)), target.nodepool_id, target.node_ids, cipher=cipher
    )
    body = UpgradeNodePoolRequest(spec=spec).to_wire()

    assert body["spec"]["nodePoolID"] == "DefaultPool"
    assert body["spec"]["nodeIDs"] == ["node-1"]
    assert body["spec"]["maxUnavailable"] == 2
    assert body["spec"]["nodeTemplate"]["lifeCycle"] == {"preInstall": "ZWNobyAx"}
    assert body["spec"]["nodeTemplate"]["login"]["userPassword"] == {
        "username": "root",
        "password": PASSWORD,
    }
    assert PASSWORD not in repr(spec)


def test_build_spec_without_node_ids(cipher: SecretCipher) -> None:
    target = explicit_targets(load_document(document_with_login({"sshKey": "ops-key"})))[1]

    spec = build_spec(stored_sync(target.sync, cipher, path="x"), "pool-2", None, cipher=cipher)
    body = UpgradeNodePoolRequest(spec=spec).to_wire()

    assert body["spec"] == {
        "maxUnavailable": 4,
        "nodePoolID": "pool-2",
        "nodeTemplate": {"lifeCycle": {"preInstall": "ZWNobyAx"}, "login": {"sshKey": "ops-key"}},
    }


def test_digest_ignores_formatting(cipher: SecretCipher) -> None:
    raw = document_with_login(inline())
    spelled_out = json.loads(json.dumps(raw))
    spelled_out["spec"]["policy"] = {"maxInFlight": 10, "retry": {"maxAge": "2h"}}

    from_yaml = document_digest(load_document(yaml.safe_dump(raw)), cipher)
    from_json = document_digest(load_document(json.dumps(spelled_out, indent=4)), cipher)

    assert from_yaml == from_json


def test_digest_changes_with_password(cipher: SecretCipher) -> None:
    first = document_digest(load_document(document_with_login(inline(PASSWORD))), cipher)
    second = document_digest(load_document(document_with_login(inline(OTHER_PASSWORD))), cipher)

    assert first != second


def test_digest_depends_on_key() -> None:
    document = load_document(document_with_login(inline()))
    first = SecretCipher([Fernet.generate_key().decode()])
    second = SecretCipher([Fernet.generate_key().decode()])

    assert document_digest(document, first) != document_digest(document, second)


def test_digest_without_inline_password_needs_no_key() -> None:
    document = load_document(
        document_with_login({"userPassword": {"passwordFrom": {"env": "NODE_PW"}}})
    )

    assert len(document_digest(document, None)) == 64


def test_password_from_env() -> None:
    login = {"userPassword": {"username": "admin", "passwordFrom": {"env": "NODE_PW"}}}
    target = explicit_targets(load_document(document_with_login(login)))[0]
    record = stored_sync(target.sync, None, path="spec.sync")

    spec = build_spec(record, "DefaultPool", None, cipher=None, environ={"NODE_PW": PASSWORD})
    body = UpgradeNodePoolRequest(spec=spec).to_wire()

    assert body["spec"]["nodeTemplate"]["login"]["userPassword"] == {
        "username": "admin",
        "password": PASSWORD,
    }


def test_password_from_env_missing() -> None:
    login = {"userPassword": {"passwordFrom": {"env": "NODE_PW"}}}
    record = stored_sync(
        explicit_targets(load_document(document_with_login(login)))[0].sync, None, path="x"
    )

    with pytest.raises(SecretUnavailable) as caught:
        build_spec(record, "DefaultPool", None, cipher=None, environ={})

    assert "NODE_PW" in str(caught.value)
    assert caught.value.reason == "secret_unavailable"


def test_password_from_env_breaks_rules() -> None:
    login = {"userPassword": {"passwordFrom": {"env": "NODE_PW"}}}
    record = stored_sync(
        explicit_targets(load_document(document_with_login(login)))[0].sync, None, path="x"
    )

    with pytest.raises(SecretUnavailable) as caught:
        build_spec(record, "DefaultPool", None, cipher=None, environ={"NODE_PW": "rootroot1A"})

    assert "password rules" in str(caught.value)
    assert "rootroot1A" not in str(caught.value)


def test_password_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "node-password"
    secret_file.write_text(PASSWORD + "\n")
    login = {"userPassword": {"passwordFrom": {"file": str(secret_file)}}}
    record = stored_sync(
        explicit_targets(load_document(document_with_login(login)))[0].sync, None, path="x"
    )

    spec = build_spec(record, "DefaultPool", None, cipher=None)

    assert (
        UpgradeNodePoolRequest(spec=spec).to_wire()["spec"]["nodeTemplate"]["login"][
            "userPassword"
        ]["password"]
        == PASSWORD
    )


def test_password_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    login = {"userPassword": {"passwordFrom": {"file": str(missing)}}}
    record = stored_sync(
        explicit_targets(load_document(document_with_login(login)))[0].sync, None, path="x"
    )

    with pytest.raises(SecretUnavailable) as caught:
        build_spec(record, "DefaultPool", None, cipher=None)

    assert str(missing) in str(caught.value)


def test_password_file_too_large(tmp_path: Path) -> None:
    large = tmp_path / "large"
    large.write_text("A" * 5000)
    login = {"userPassword": {"passwordFrom": {"file": str(large)}}}
    record = stored_sync(
        explicit_targets(load_document(document_with_login(login)))[0].sync, None, path="x"
    )

    with pytest.raises(SecretUnavailable):
        build_spec(record, "DefaultPool", None, cipher=None)


def file_record(path: Path) -> dict[str, Any]:
    """Return the stored sync template of a document that reads the password from `path`."""
    login = {"userPassword": {"passwordFrom": {"file": str(path)}}}
    document = load_document(document_with_login(login))
    return stored_sync(explicit_targets(document)[0].sync, None, path="x")


@pytest.mark.parametrize("target", ["/proc/self/environ", "/sys/kernel", "/dev/null"])
def test_password_file_link_to_kernel_rejected(tmp_path: Path, target: str) -> None:
    link = tmp_path / "node-password"
    link.symlink_to(target)
    record = file_record(link)

    with pytest.raises(SecretUnavailable) as caught:
        build_spec(record, "DefaultPool", None, cipher=None)

    message = str(caught.value)
    assert str(link) in message
    assert f"resolves to {os.path.realpath(target)}" in message
    assert "cannot hold a node password" in message


def test_password_file_link_chain_to_proc_rejected(tmp_path: Path) -> None:
    directory_link = tmp_path / "kernel"
    directory_link.symlink_to("/proc/self")
    record = file_record(directory_link / "environ")

    with pytest.raises(SecretUnavailable) as caught:
        build_spec(record, "DefaultPool", None, cipher=None)

    assert "under /proc" in str(caught.value)


def test_password_file_link_to_regular_file(tmp_path: Path) -> None:
    # The layout of a Kubernetes secret volume: the name is a link into a versioned directory.
    data = tmp_path / "..2026_01_01" / "node-password"
    data.parent.mkdir()
    data.write_text(PASSWORD)
    link = tmp_path / "node-password"
    link.symlink_to(data)

    spec = build_spec(file_record(link), "DefaultPool", None, cipher=None)

    wire = UpgradeNodePoolRequest(spec=spec).to_wire()
    assert wire["spec"]["nodeTemplate"]["login"]["userPassword"]["password"] == PASSWORD


def test_password_file_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(SecretUnavailable) as caught:
        build_spec(file_record(tmp_path), "DefaultPool", None, cipher=None)

    assert "not a regular file" in str(caught.value)


def test_password_file_fifo_rejected(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    with pytest.raises(SecretUnavailable) as caught:
        build_spec(file_record(fifo), "DefaultPool", None, cipher=None)

    assert "not a regular file" in str(caught.value)


def test_encrypted_password_needs_key(cipher: SecretCipher) -> None:
    record = stored_sync(
        explicit_targets(load_document(document_with_login(inline())))[0].sync, cipher, path="x"
    )

    with pytest.raises(SecretUnavailable) as caught:
        build_spec(record, "DefaultPool", None, cipher=None)

    assert "CCE_SYNC_SECRET_KEY" in str(caught.value)


def test_encrypted_password_wrong_key(cipher: SecretCipher) -> None:
    record = stored_sync(
        explicit_targets(load_document(document_with_login(inline())))[0].sync, cipher, path="x"
    )
    other = SecretCipher([Fernet.generate_key().decode()])

    with pytest.raises(SecretUnavailable) as caught:
        build_spec(record, "DefaultPool", None, cipher=other)

    assert "cannot be decrypted" in str(caught.value)


def test_key_rotation_decrypts_old_tokens() -> None:
    old_key = Fernet.generate_key().decode()
    new_key = Fernet.generate_key().decode()
    token = SecretCipher([old_key]).encrypt(PASSWORD)

    rotated = SecretCipher.from_setting(f"{new_key}, {old_key}")

    assert rotated.decrypt(token) == PASSWORD
    assert SecretCipher([new_key]).decrypt(rotated.encrypt(PASSWORD)) == PASSWORD


@pytest.mark.parametrize("key", ["", "not-a-key", "x" * 44])
def test_invalid_secret_key(key: str) -> None:
    with pytest.raises(SecretKeyError) as caught:
        SecretCipher.from_setting(key)

    assert "CCE_SYNC_SECRET_KEY" in str(caught.value)


def test_cipher_repr_hides_key() -> None:
    key = Fernet.generate_key().decode()

    assert key not in repr(SecretCipher([key]))


def test_cipher_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("CCE_SYNC_SECRET_KEY", key)
    with_key = cipher_from_settings(Settings())
    monkeypatch.delenv("CCE_SYNC_SECRET_KEY")

    assert with_key is not None
    assert with_key.decrypt(SecretCipher([key]).encrypt(PASSWORD)) == PASSWORD
    assert cipher_from_settings(Settings()) is None
