"""Node passwords in campaign documents: encryption at rest and resolution at call time.

A campaign gives a node login password either inline (`password`) or as a reference that the
worker resolves when it sends the sync request (`passwordFrom: {env: NAME}` or
`passwordFrom: {file: PATH}`). Inline passwords never reach Redis in clear: `stored_form()`
replaces each one with `passwordEncrypted`, a Fernet token made with ``CCE_SYNC_SECRET_KEY``,
and rejects the document when no key is configured.

``CCE_SYNC_SECRET_KEY`` contains one Fernet key, or several separated by commas to rotate
keys. The first one encrypts, and every one of them decrypts.

The content digest that decides whether a repeated `metadata.id` is the same campaign covers
passwords only through an HMAC keyed with the secret key, so the digest stored in Redis cannot
be used to guess a password offline.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from worker.campaigns.document import (
    CampaignDocument,
    DocumentError,
    FieldError,
    SyncTemplate,
    UserPasswordTemplate,
    reserved_file_directory,
)
from worker.cce.models import UpgradeNodePoolSpec, validate_password
from worker.settings import Settings

SECRET_KEY_VARIABLE: Final = "CCE_SYNC_SECRET_KEY"  # noqa: S105 - a variable name

#: Size limit of a `passwordFrom.file`, in bytes; a password has at most 26 characters.
MAX_PASSWORD_FILE_BYTES: Final = 1_024

_FINGERPRINT_LABEL: Final = b"cce-sync node password fingerprint v1"


class SecretKeyError(ValueError):
    """``CCE_SYNC_SECRET_KEY`` is set but is not a valid Fernet key."""


class SecretUnavailable(Exception):
    """A node password could not be resolved or decrypted on the worker.

    The target fails with the reason in `reason`. The message names the source that failed and
    never contains the password.
    """

    reason: Final = "secret_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SecretCipher:
    """Fernet encryption of node passwords, and keyed fingerprints of them.

    Args:
        keys: Fernet keys (URL-safe Base64 of 32 bytes); the first encrypts, all decrypt.

    Raises:
        SecretKeyError: no key is given, or one of them is not a Fernet key.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError(f"{SECRET_KEY_VARIABLE} is empty")
        fernets = []
        for position, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise SecretKeyError(
                    f"{SECRET_KEY_VARIABLE} key {position + 1} is not a Fernet key: expected "
                    "32 bytes in URL-safe Base64 (44 characters); generate one with "
                    "python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'"
                ) from None
        self._fernet = MultiFernet(fernets)
        self._fingerprint_key = hmac.new(
            keys[0].encode("ascii"), _FINGERPRINT_LABEL, hashlib.sha256
        ).digest()

    @classmethod
    def from_setting(cls, value: str) -> SecretCipher:
        """Build a cipher from the setting's text: one key, or several separated by commas."""
        return cls([key.strip() for key in value.split(",") if key.strip()])

    def __repr__(self) -> str:
        return "SecretCipher(keys=**********)"

    def encrypt(self, plaintext: str) -> str:
        """Return a Fernet token of `plaintext` (a new random IV each call)."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """Return the plaintext of a token made by `encrypt` with any of the keys.

        Raises:
            SecretUnavailable: the token is damaged or was made with a key not configured here.
        """
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretUnavailable(
                f"the stored node password cannot be decrypted with {SECRET_KEY_VARIABLE}: "
                "the key differs from the one the campaign was submitted with"
            ) from None

    def fingerprint(self, plaintext: str) -> str:
        """Return a keyed HMAC-SHA256 of `plaintext` (hex), equal for equal inputs."""
        return hmac.new(
            self._fingerprint_key, plaintext.encode("utf-8"), hashlib.sha256
        ).hexdigest()


def cipher_from_settings(settings: Settings) -> SecretCipher | None:
    """Return the cipher configured by ``CCE_SYNC_SECRET_KEY``, or None when it is unset.

    Raises:
        SecretKeyError: the setting is not a valid key list.
    """
    if settings.encryption_key is None:
        return None
    return SecretCipher.from_setting(settings.encryption_key.get_secret_value())


# Stored form --------------------------------------------------------------------------------


def _user_password(sync: SyncTemplate) -> UserPasswordTemplate | None:
    if sync.node_template is None:
        return None
    return sync.node_template.login.user_password


def _missing_key_error(path: str) -> FieldError:
    return FieldError(
        f"{path}.nodeTemplate.login.userPassword.password",
        f"an inline password is stored encrypted, but {SECRET_KEY_VARIABLE} is not set; set "
        f"{SECRET_KEY_VARIABLE} or use passwordFrom: {{env: NAME}} or passwordFrom: {{file: PATH}}",
    )


def _dump_sync(sync: SyncTemplate, password_form: Mapping[str, str] | None) -> dict[str, Any]:
    data = sync.model_dump(mode="json", by_alias=True, exclude_none=True)
    if password_form is not None:
        user_password = data["nodeTemplate"]["login"]["userPassword"]
        user_password.pop("password", None)
        user_password.update(password_form)
    return data


def stored_sync(sync: SyncTemplate, cipher: SecretCipher | None, *, path: str) -> dict[str, Any]:
    """Return a sync template as a JSON-safe dict with any inline password encrypted.

    Args:
        path: Field path of the template, for the error (``spec.targets[2].sync``).

    Raises:
        DocumentError: the template has an inline password and `cipher` is None.
    """
    user_password = _user_password(sync)
    if user_password is None or user_password.password is None:
        return _dump_sync(sync, None)
    if cipher is None:
        raise DocumentError([_missing_key_error(path)])

    token = cipher.encrypt(user_password.password.get_secret_value())
    return _dump_sync(sync, {"passwordEncrypted": token})


def _sync_locations(document: CampaignDocument) -> list[tuple[str, SyncTemplate]]:
    locations = []
    if document.spec.sync is not None:
        locations.append(("spec.sync", document.spec.sync))
    for index, entry in enumerate(document.spec.targets):
        if entry.sync is not None:
            locations.append((f"spec.targets[{index}].sync", entry.sync))
    return locations


def check_secrets(document: CampaignDocument, cipher: SecretCipher | None) -> None:
    """Check that every inline password of the document can be stored encrypted.

    Raises:
        DocumentError: naming each inline password, when `cipher` is None.
    """
    if cipher is not None:
        return
    errors = []
    for path, sync in _sync_locations(document):
        user_password = _user_password(sync)
        if user_password is not None and user_password.password is not None:
            errors.append(_missing_key_error(path))
    if errors:
        raise DocumentError(errors)


def _place_sync(data: dict[str, Any], path: str, value: dict[str, Any]) -> None:
    spec = data["spec"]
    if path == "spec.sync":
        spec["sync"] = value
        return
    index = int(path.removeprefix("spec.targets[").split("]")[0])
    spec["targets"][index]["sync"] = value


def stored_form(
    document: CampaignDocument, cipher: SecretCipher | None, *, campaign_id: str | None = None
) -> dict[str, Any]:
    """Return the document as a JSON-safe dict for Redis, with inline passwords encrypted.

    `load_document(result, stored=True)` reads it back. Durations are in seconds, timestamps
    ISO 8601. With `campaign_id`, `metadata.id` is set to it.

    Raises:
        DocumentError: the document has an inline password and `cipher` is None.
    """
    check_secrets(document, cipher)
    data = document.model_dump(mode="json", by_alias=True, exclude_none=True)
    for path, sync in _sync_locations(document):
        _place_sync(data, path, stored_sync(sync, cipher, path=path))
    if campaign_id is not None:
        data["metadata"]["id"] = campaign_id
    return data


def document_digest(document: CampaignDocument, cipher: SecretCipher | None) -> str:
    """Return the SHA-256 (hex) of the document's normalized content.

    Two documents that differ only in formatting, key order or spelled-out defaults have the
    same digest. Inline passwords enter only as keyed fingerprints.

    Raises:
        DocumentError: the document has an inline password and `cipher` is None.
    """
    check_secrets(document, cipher)
    data = document.model_dump(mode="json", by_alias=True, exclude_none=True)
    for path, sync in _sync_locations(document):
        user_password = _user_password(sync)
        password_form = None
        if user_password is not None and user_password.password is not None and cipher:
            secret = user_password.password.get_secret_value()
            password_form = {"passwordFingerprint": cipher.fingerprint(secret)}
        _place_sync(data, path, _dump_sync(sync, password_form))

    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Call time ----------------------------------------------------------------------------------


def _open_password_file(path: str) -> int:
    """Open the file read-only after resolving symbolic links, and return its descriptor.

    The document already rejects paths under /proc, /sys and /dev, but a symbolic link
    elsewhere can point there, so the rule is applied again to the resolved path.
    """
    real_path = os.path.realpath(path)
    directory = reserved_file_directory(real_path)
    if directory is not None:
        raise SecretUnavailable(
            f"the password file {path} named by passwordFrom.file resolves to {real_path}, "
            f"under {directory}, which cannot hold a node password"
        )
    # NOTE: a directory on the resolved path can still be replaced by a symbolic link between
    # realpath() and open(). O_NOFOLLOW covers the last segment only.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    descriptor = os.open(real_path, flags)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise SecretUnavailable(
            f"the password file {path} named by passwordFrom.file is not a regular file"
        )
    return descriptor


def _read_password_file(path: str) -> str:
    try:
        with open(_open_password_file(path), "rb") as handle:
            content = handle.read(MAX_PASSWORD_FILE_BYTES + 1)
    except OSError as error:
        raise SecretUnavailable(
            f"cannot read the password file {path} named by passwordFrom.file: "
            f"{error.strerror or type(error).__name__}"
        ) from None

    if len(content) > MAX_PASSWORD_FILE_BYTES:
        raise SecretUnavailable(
            f"the password file {path} is larger than {MAX_PASSWORD_FILE_BYTES} bytes"
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretUnavailable(f"the password file {path} is not valid UTF-8") from None
    return text.removesuffix("\n").removesuffix("\r")


def _resolve_password(
    user_password: UserPasswordTemplate, cipher: SecretCipher | None, environ: Mapping[str, str]
) -> str:
    if user_password.password is not None:
        return user_password.password.get_secret_value()

    if user_password.password_encrypted is not None:
        if cipher is None:
            raise SecretUnavailable(
                f"the node password is stored encrypted, but {SECRET_KEY_VARIABLE} is not set "
                "on this worker"
            )
        return cipher.decrypt(user_password.password_encrypted)

    source = user_password.password_from
    if source is not None and source.env is not None:
        value = environ.get(source.env)
        if value is None:
            raise SecretUnavailable(
                f"environment variable {source.env} named by passwordFrom.env is not set "
                "on this worker"
            )
        return value
    if source is not None and source.file is not None:
        return _read_password_file(source.file)
    raise SecretUnavailable("userPassword has no password source")


def _describe_source(user_password: UserPasswordTemplate) -> str:
    source = user_password.password_from
    if source is not None and source.env is not None:
        return f"environment variable {source.env}"
    if source is not None and source.file is not None:
        return f"file {source.file}"
    return "the campaign document"


def build_spec(
    sync: Mapping[str, Any],
    nodepool_id: str,
    node_ids: Sequence[str] | None,
    *,
    cipher: SecretCipher | None,
    environ: Mapping[str, str] | None = None,
) -> UpgradeNodePoolSpec:
    """Build the CCE request spec for one target from its stored sync template.

    Resolves the node password (decrypts `passwordEncrypted`, reads `passwordFrom`) and checks
    it against the CCE password rules.

    Args:
        sync: The target's stored sync template (`stored_sync` output).
        environ: Where `passwordFrom.env` is looked up; `os.environ` when omitted.

    Raises:
        SecretUnavailable: the password cannot be resolved, or breaks the password rules.
        pydantic.ValidationError: the stored template itself is invalid.
    """
    template = SyncTemplate.model_validate(sync, context={"stored": True})
    body: dict[str, Any] = template.model_dump(by_alias=True, exclude_none=True)
    body["nodePoolID"] = nodepool_id
    if node_ids:
        body["nodeIDs"] = list(node_ids)

    user_password = _user_password(template)
    if user_password is not None:
        password = _resolve_password(
            user_password, cipher, os.environ if environ is None else environ
        )
        try:
            validate_password(password, user_password.username)
        except ValueError as error:
            raise SecretUnavailable(
                f"the node password from {_describe_source(user_password)} does not meet the "
                f"CCE password rules: {error}"
            ) from None
        body["nodeTemplate"]["login"]["userPassword"] = {
            "username": user_password.username,
            "password": SecretStr(password),
        }
    return UpgradeNodePoolSpec.model_validate(body)
