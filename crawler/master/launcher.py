"""How workers join a master: the command it prints for them, and the workers it starts itself.

The master announces its queue and, for workers started by hand, the exact
command (on this host with the master's output folder, so a worker's images
land where the master records and reports them). Local workers
(``--local-workers``) are processes of the same program; their output goes to
``OUT/worker-N.log``, and one that ends early is reported with the last line
of that log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from crawler.config import BROKER_PASSWORD_ENV
from crawler.master.authkey import ENV_VAR, Authkey, is_loopback

if TYPE_CHECKING:
    from crawler.board.broker import BrokerAddress

log = logging.getLogger(__name__)

STOP_WAIT = 5.0  # seconds a local worker gets to leave once told, before it is killed


def invitation(host: str, port: int, authkey: Authkey, out_dir: Path) -> str:
    """The line that tells an operator how a worker joins the queue at ``host:port``."""
    if is_loopback(host):
        # --out: a worker on this host stores where the master records and reports.
        out = shlex.quote(str(out_dir.resolve()))
        return (f"workers on this host: crawler worker {host}:{port} --out {out} "
                + _key_hint(authkey, other_hosts=False))
    return (f"workers on other hosts: crawler worker {_public_name(host)}:{port} "
            + _key_hint(authkey, other_hosts=True))


def _key_hint(authkey: Authkey, *, other_hosts: bool) -> str:
    """How a worker gets the key."""
    if authkey.source == "environment":
        return f"(with the same {ENV_VAR} as the master)"
    notes = []
    if authkey.fresh:
        notes.append("a new key")
    if other_hosts:
        notes.append("copy that file to each worker host")
    return f"--authkey-file {authkey.source}" + (f" ({': '.join(notes)})" if notes else "")


def _public_name(host: str) -> str:
    """A name other hosts can use for this one, when bound to every interface."""
    return socket.getfqdn() if host in ("0.0.0.0", "::") else host  # noqa: S104


class LocalWorkers:
    """Worker processes this master started, on this host."""

    def __init__(self, out_dir: Path, authkey: Authkey, threads: int) -> None:
        self._out_dir = out_dir
        self._authkey = authkey
        self._threads = threads
        self._processes: list[subprocess.Popen[bytes]] = []
        self._reported: set[int] = set()

    def start(self, count: int, host: str, port: int) -> None:
        every_interface = host in ("0.0.0.0", "::", "")  # noqa: S104 - a comparison, not a bind
        address = f"{'127.0.0.1' if every_interface else host}:{port}"
        env = dict(os.environ)
        env[ENV_VAR] = self._authkey.key.decode()  # the environment, not argv: ps shows argv
        self._spawn(count, [address], env)

    def start_for_broker(self, count: int, broker: BrokerAddress, crawl: str) -> None:
        """Start ``count`` workers of the broker's crawl ``crawl`` (the password, if any,
        in their environment, never in their arguments)."""
        env = dict(os.environ)
        if broker.password:
            env[BROKER_PASSWORD_ENV] = broker.password
        target = ["--broker", str(broker), "--crawl", crawl]
        if broker.ca_file is not None:
            target += ["--broker-ca", str(broker.ca_file)]
        self._spawn(count, target, env)

    def _spawn(self, count: int, target: list[str], env: dict[str, str]) -> None:
        for n in range(len(self._processes), len(self._processes) + count):
            with self._log_path(n + 1).open("ab") as log_file:
                self._processes.append(subprocess.Popen(
                    [sys.executable, "-m", "crawler", "worker", *target,
                     "--out", str(self._out_dir), "--threads", str(self._threads), "--quiet",
                     "--connect-wait", "30"],
                    env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file))

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self._processes if p.poll() is None]

    def report_ended(self) -> None:
        """Say once, with the reason from its log, when a local worker has ended early."""
        for n, process in enumerate(self._processes, 1):
            if n in self._reported or process.poll() is None:
                continue  # reported already, or still running
            self._reported.add(n)
            log_path = self._log_path(n)
            last = ""
            with contextlib.suppress(OSError):
                lines = log_path.read_text(errors="replace").strip().splitlines()
                last = f": {lines[-1]}" if lines else ""
            left = len(self.alive())
            log.warning("local worker %d exited with status %s%s (log: %s); %d local worker(s)"
                        " left%s", n, process.returncode, last, log_path, left,
                        "" if left else ", the crawl waits for workers from elsewhere")

    def wait_one(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the first live worker to leave."""
        alive = self.alive()
        if alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                alive[0].wait(timeout=seconds)

    def stop(self) -> None:
        """Ask the ones still running to leave; kill those that do not in time."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                process.kill()

    def _log_path(self, n: int) -> Path:
        return self._out_dir / f"worker-{n}.log"
