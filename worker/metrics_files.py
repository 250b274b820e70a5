"""The directory of prometheus-client's multiprocess files, prepared before any metric exists.

This module imports nothing from ``prometheus_client``, so a runner can prepare the directory
and set ``PROMETHEUS_MULTIPROC_DIR`` before `worker.metrics` defines its metrics::

    from worker.metrics_files import prepare_multiprocess_dir

    prepare_multiprocess_dir(metrics_dir)   # creates, empties, sets the variable
    from worker import metrics              # metrics now write to metrics_dir

prometheus-client chooses between in-memory and file-backed values when it is first imported
in a process. A metric without labels also opens its file at definition, so the directory must
exist before that import.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

MULTIPROCESS_DIR_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    """Return whether this process records metric values in multiprocess files.

    Returns False while ``prometheus_client`` is not imported, because its first import decides.
    """
    values = sys.modules.get("prometheus_client.values")
    value_class = getattr(values, "ValueClass", None)
    return bool(getattr(value_class, "_multiprocess", False))


def prepare_multiprocess_dir(path: str | os.PathLike[str]) -> Path:
    """Create the metrics directory, remove files of earlier runs and export its path.

    Call it in the parent process before any worker process starts, ideally before the first
    import of `worker.metrics`. Files that this process created itself are kept. Every other
    ``*.db`` file belongs to an earlier run, and its counters must not add to this run's.

    Args:
        path: Directory shared by the worker processes and the exposition server of one host.

    Returns:
        The directory as an absolute path. ``PROMETHEUS_MULTIPROC_DIR`` is set to it in
        ``os.environ`` so that child processes inherit it.

    Raises:
        FileExistsError: If `path` exists and is not a directory.
    """
    directory = Path(path).resolve()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    own_suffix = f"_{os.getpid()}.db"
    removed = 0
    for stale in directory.glob("*.db"):
        if stale.name.endswith(own_suffix):
            continue
        stale.unlink(missing_ok=True)
        removed += 1

    os.environ[MULTIPROCESS_DIR_VARIABLE] = str(directory)
    logger.info(
        "Metrics directory %s ready; removed %d files of an earlier run", directory, removed
    )
    if "prometheus_client" in sys.modules and not multiprocess_enabled():
        logger.warning(
            "prometheus_client was imported before %s was set, so metrics recorded in this "
            "process and in children forked from it are not exported; call "
            "prepare_multiprocess_dir before importing worker.metrics, or spawn the workers",
            MULTIPROCESS_DIR_VARIABLE,
        )
    return directory
