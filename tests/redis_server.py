"""A real redis-server on 127.0.0.1 for the tests: started, killed, restarted with AOF."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_DEADLINE = 10.0  # seconds for a started server to answer PING
STOP_DEADLINE = 10.0
SOCKET_TIMEOUT = 5.0  # every client call ends within this


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def client_of(host: str, port: int) -> redis.Redis:
    """A client that fails at once when the server is away: redis-py's default retries
    (three, backing off for seconds) would only slow the tests that kill a server."""
    return redis.Redis(host=host, port=port, socket_timeout=SOCKET_TIMEOUT,
                       socket_connect_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0))


class RedisServer:
    """One redis-server process on a port of its own, its files in ``folder``.

    ``start(appendonly=True)`` after ``kill()`` or ``stop()`` brings it back on
    the same port with what its append-only file kept.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return client_of("127.0.0.1", self.port)

    def start(self, *, appendonly: bool = False, options: Sequence[str] = ()) -> RedisServer:
        """Start it; ``options`` (``"--maxmemory", "1mb"``...) come after ours, and win."""
        path = redis_server_path()
        assert path is not None, "redis-server is not installed"
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
                 "--dir", str(self.folder), "--daemonize", "no", "--protected-mode", "yes",
                 *options],
                stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_DEADLINE
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0,
                            socket_connect_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                       f"{self.log.read_text(errors='replace')[-2000:]}")
                with contextlib.suppress(redis.exceptions.ConnectionError,
                                         redis.exceptions.BusyLoadingError):
                    if probe.ping():
                        return
                time.sleep(0.02)
        finally:
            probe.close()
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING within "
                           f"{START_DEADLINE} s")

    def stop(self) -> None:
        """End it as an operator would (SIGTERM: it writes its AOF and exits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_DEADLINE)
        self.process = None

    def restart_from(self, kept: Path) -> None:
        """Kill it and start it again from the append-only files ``kept`` earlier (a copy
        of ``folder / "appendonlydir"``): what a crash leaves of the writes made since
        then (appendfsync everysec) or a restart from an older snapshot."""
        aof = self.folder / "appendonlydir"
        self.kill()
        shutil.rmtree(aof)
        shutil.copytree(kept, aof)
        self.start(appendonly=True)

    def kill(self) -> None:
        """End it at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_DEADLINE)
        self.process = None
