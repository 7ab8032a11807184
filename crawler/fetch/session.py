"""HTTP sessions: address guard, pools, timeouts, and a watchdog for total deadlines.

``requests`` enforces connect and read timeouts per socket operation, so a
server that sends one byte every few seconds never trips them. The
:class:`Watchdog` closes the socket of any response that outlives its total
deadline, which unblocks the reading thread. Inside ``Watchdog.bound`` the
deadline covers the whole request, the response head included: each
connection registers its socket as it starts to read a response, and the
socket stays watched until the bound ends (a ``Connection: close`` answer
keeps reading from a socket its connection no longer holds).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from crawler.fetch.guard import AddressPolicy, guarded_connect

_local = threading.local()  # .bound: the _Bound of the request this thread is making


class _GuardedConnectionMixin:
    """Connect only to addresses the policy allows (checked after DNS, on the real peer)."""

    policy: AddressPolicy

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        bound: _Bound | None = getattr(_local, "bound", None)
        sock = getattr(self, "sock", None)
        if bound is not None and sock is not None:
            bound.watch(sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]

    def _new_conn(self) -> socket.socket:
        conn: Any = self
        timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
        try:
            return guarded_connect(self.policy, conn._dns_host, conn.port, timeout,
                                   conn.source_address, conn.socket_options)
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(conn, f"failed to connect: {exc}") from exc


def _pool_classes(policy: AddressPolicy) -> dict[str, type]:
    http_conn = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection),
                     {"policy": policy})
    https_conn = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection),
                      {"policy": policy})
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: AddressPolicy, pool_size: int = 10) -> None:
        self._policy = policy
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._policy)


def make_session(policy: AddressPolicy, user_agent: str, pool_size: int = 10) -> requests.Session:
    """A session whose every connection, redirects included, passes the address guard."""
    session = requests.Session()
    # Proxies from the environment would hide the real peer from the guard.
    session.trust_env = False
    adapter = GuardedAdapter(policy, pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


def make_pool(policy: AddressPolicy, user_agent: str, accept: str,
              pool_size: int = 4) -> urllib3.PoolManager:
    """A urllib3 pool manager whose every connection passes the address guard."""
    pool = urllib3.PoolManager(num_pools=32, maxsize=pool_size,
                               headers={"User-Agent": user_agent, "Accept": accept})
    pool.pool_classes_by_scheme = _pool_classes(policy)  # type: ignore[assignment]
    return pool


class Watchdog:
    """One thread that cuts off responses past their total deadline."""

    def __init__(self, tick: float = 0.25) -> None:
        self._tick = tick
        self._lock = threading.Lock()
        self._active: dict[int, tuple[float, Any]] = {}
        self._thread: threading.Thread | None = None

    @contextmanager
    def deadline(self, response: Any, seconds: float) -> Iterator[None]:
        """Cut ``response`` (requests' or urllib3's) off after ``seconds``."""
        key = self._watch(response, time.monotonic() + seconds)
        try:
            yield
        finally:
            self._forget([key])

    @contextmanager
    def bound(self, seconds: float) -> Iterator[_Bound]:
        """Cut every response this thread reads inside off ``seconds`` from now, heads included."""
        bound = _Bound(self, time.monotonic() + seconds)
        previous = getattr(_local, "bound", None)
        _local.bound = bound
        try:
            yield bound
        finally:
            _local.bound = previous
            self._forget(bound.keys)

    def _watch(self, target: Any, deadline: float) -> int:
        key = id(target)
        with self._lock:
            self._active[key] = (deadline, target)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
        return key

    def _forget(self, keys: list[int]) -> None:
        with self._lock:
            for key in keys:
                self._active.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)
            now = time.monotonic()
            with self._lock:
                expired = [r for deadline, r in self._active.values() if deadline < now]
            for response in expired:
                _cut(response)


class _Bound:
    """One request's total deadline, and the sockets watched for it."""

    def __init__(self, watchdog: Watchdog, deadline: float) -> None:
        self.watchdog = watchdog
        self.deadline = deadline
        self.keys: list[int] = []

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def watch(self, sock: socket.socket) -> None:
        self.keys.append(self.watchdog._watch(sock, self.deadline))


def _cut(target: Any) -> None:
    if isinstance(target, socket.socket):
        sock: Any = target
    else:
        raw = getattr(target, "raw", target)  # a requests.Response wraps urllib3's
        connection = getattr(raw, "connection", None)
        sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: the reader has finished anyway
            sock.shutdown(socket.SHUT_RDWR)


TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,  # from a raw read: broken, timed out or badly encoded
)
