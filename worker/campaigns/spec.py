"""The request body of one target, built on the worker at call time."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from worker.campaigns.secrets import SecretUnavailable, build_spec, cipher_from_settings
from worker.campaigns.store import TargetRecord
from worker.cce.models import UpgradeNodePoolSpec, format_validation_errors
from worker.settings import Settings
from worker.workflow import TargetSpecError


def spec_builder(settings: Settings) -> Callable[[TargetRecord], UpgradeNodePoolSpec]:
    """Return a function that builds a target's `UpgradeNodePoolSpec`.

    The function resolves `passwordFrom` references and decrypts inline passwords with
    ``CCE_SYNC_SECRET_KEY``. It raises `TargetSpecError` (reason `secret_unavailable` or
    `invalid_request`) rather than build a body that CCE would reject.
    """
    cipher = cipher_from_settings(settings)

    def build(target: TargetRecord) -> UpgradeNodePoolSpec:
        try:
            return build_spec(target.sync, target.nodepool_id, target.node_ids, cipher=cipher)
        except SecretUnavailable as error:
            raise TargetSpecError("secret_unavailable", error.message) from None
        except ValidationError as error:
            detail = "; ".join(format_validation_errors(error, prefix="sync."))
            raise TargetSpecError("invalid_request", detail) from None

    return build
