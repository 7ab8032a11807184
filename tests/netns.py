"""A private test LAN of network namespaces: each "host" a namespace, joined by a bridge.

Nothing is created in the root namespace. The bridge lives in a namespace of
its own; each host namespace gets a veth pair whose inside end is ``eth0``
(with one address of the test subnet) and whose other end is a port of that
bridge. With no default route, a host can reach only the other hosts of the
LAN, never anything else. ``Lan.close`` kills every process started in the
LAN and deletes every namespace (which deletes the veths and the bridge).

The tests use it, and so does ``benchmarks/scaleout.py`` (which imports it as
``tests.netns``): one copy of the namespace plumbing, owned by the tests,
which must not depend on the benchmarks.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SUBNET = "10.213.7"  # a private /24 of our own; only addresses handed out below are used
PREFIX_LENGTH = 24
IP_TIMEOUT = 10.0  # seconds for one `ip` command


class NetnsUnavailable(Exception):
    """Network namespaces cannot be used here (not root, no `ip`, no permission)."""


@dataclass(frozen=True)
class Host:
    """One host of the LAN: a network namespace with one address."""

    role: str
    netns: str
    address: str
    port: str = ""  # its veth's other end: a port of the bridge, in the bridge's namespace

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT,
                            check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they may be."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    return None


class Lan:
    """Host namespaces on one bridge; every name carries a tag unique to this LAN."""

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        # Namespace names: pid for the humans, a random part for uniqueness.
        self.tag = f"crwt{os.getpid()}{secrets.token_hex(2)}"
        self.bridge_netns = f"{self.tag}-br"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []
        added = _ip("netns", "add", self.bridge_netns, check=False)
        if added.returncode != 0:
            raise NetnsUnavailable(f"ip netns add failed: {added.stderr.strip()}")
        self._namespaces.append(self.bridge_netns)
        try:
            _ip("-n", self.bridge_netns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge_netns, "link", "set", "br0", "up")
            _ip("-n", self.bridge_netns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, role: str, last_octet: int) -> Host:
        """A new namespace with ``lo`` up and ``eth0`` at SUBNET.last_octet on the bridge."""
        if not 1 <= last_octet <= 254 or any(
                h.address == f"{SUBNET}.{last_octet}" for h in self.hosts.values()):
            raise ValueError(f"bad or taken host address {SUBNET}.{last_octet}")
        netns = f"{self.tag}-{role}"
        _ip("netns", "add", netns)
        self._namespaces.append(netns)
        port = f"p{len(self.hosts)}"  # the bridge's end, named inside the bridge namespace
        _ip("-n", self.bridge_netns, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", netns)
        _ip("-n", self.bridge_netns, "link", "set", port, "master", "br0")
        _ip("-n", self.bridge_netns, "link", "set", port, "up")
        address = f"{SUBNET}.{last_octet}"
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(role, netns, address, port)
        self.hosts[role] = host
        return host

    def start(self, host: Host, argv: Sequence[str], *, cwd: Path, env: dict[str, str],
              stdout: int | IO[str] | None = subprocess.PIPE,
              stderr: int | IO[str] | None = subprocess.PIPE) -> subprocess.Popen[str]:
        """Start ``argv`` inside ``host``; ``close`` kills it if it is still running."""
        process = subprocess.Popen(host.command(*argv), cwd=cwd, env=env, stdout=stdout,
                                   stderr=stderr, stdin=subprocess.DEVNULL, text=True)
        self._processes.append(process)
        return process

    def set_link(self, host: Host, *, up: bool) -> None:
        """Cut ``host`` off the LAN (``up`` False) or plug it back in, as a pulled cable."""
        _ip("-n", self.bridge_netns, "link", "set", host.port, "up" if up else "down")

    def namespaces(self) -> list[str]:
        """The namespaces this LAN made and has not deleted yet."""
        return list(self._namespaces)

    def close(self) -> None:
        """Kill what runs in the LAN, then delete its namespaces (veths and bridge go too)."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        for netns in reversed(self._namespaces):
            # Anything still running in a namespace of ours was started by this LAN
            # (a child of a process above): end it by pid so the namespace can go.
            pids = _ip("netns", "pids", netns, check=False).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", netns, check=False)
        self._namespaces = [n for n in self._namespaces
                            if n in _ip("netns", "list", check=False).stdout.split()]


@contextmanager
def lan() -> Iterator[Lan]:
    """A ``Lan`` that is always torn down, whatever happens inside the ``with``."""
    network = Lan()
    try:
        yield network
    finally:
        network.close()
