"""The master's HTTP session for pages: address guard, request settings, and a watchdog.

Images go through libcurl (``crawler.fetch.curl``); pages and robots.txt through
this ``requests`` session, which carries the same request settings
(:class:`~crawler.fetch.options.RequestOptions`): headers, cookies, netrc
logins, TLS choices and proxies.

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

import atexit
import contextlib
import http.cookiejar
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth
from requests.utils import should_bypass_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from crawler.errors import ConfigError
from crawler.fetch.guard import AddressPolicy, guarded_connect
from crawler.fetch.options import RequestOptions

log = logging.getLogger(__name__)

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
    """Direct connections pass the address guard; ``no_proxy`` hosts skip the proxy."""

    def __init__(self, policy: AddressPolicy, pool_size: int = 10, no_proxy: str = "") -> None:
        self._policy = policy
        self._no_proxy = no_proxy
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._policy)

    def send(self, request: requests.PreparedRequest, *args: Any,
             **kwargs: Any) -> requests.Response:
        # requests reads NO_PROXY only with trust_env, which would also let the
        # environment change everything else: the list is applied here instead.
        if self._no_proxy and kwargs.get("proxies") and should_bypass_proxies(
                request.url or "", no_proxy=self._no_proxy):
            kwargs["proxies"] = {}
        return super().send(request, *args, **kwargs)


class NetrcAuth(AuthBase):
    """Basic credentials for each request's own host, from the crawl's netrc file."""

    def __init__(self, options: RequestOptions) -> None:
        self._options = options

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        login = self._options.credentials_for(urlsplit(request.url or "").hostname)
        if login is None:
            return request
        result: requests.PreparedRequest = HTTPBasicAuth(*login)(request)
        return result


def make_session(policy: AddressPolicy, options: RequestOptions | str,
                 pool_size: int = 10) -> requests.Session:
    """A session with the crawl's request settings; every direct connection is guarded.

    ``options`` may be just a user agent, for callers that have no other settings.
    Through a proxy, the guard checks the connection to the proxy, which the user chose.
    """
    if isinstance(options, str):
        options = RequestOptions(user_agent=options)
    session = requests.Session()
    # The environment's proxies, netrc and CA bundle are read through ``options``
    # only, so that pages and images see the same ones.
    session.trust_env = False
    proxies = options.proxies()
    adapter = GuardedAdapter(policy, pool_size, proxies.no_proxy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = options.user_agent
    session.headers.update(dict(options.headers))
    session.proxies = {k: v for k, v in (("http", proxies.http), ("https", proxies.https)) if v}
    if options.insecure:
        log.warning("TLS certificates are NOT verified (http.insecure = true): anyone on the "
                    "network path can read and change the pages fetched")
        session.verify = False
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    elif options.ca_bundle:
        session.verify = options.ca_bundle_path or _pem_file(options.ca_bundle)
    if options.client_cert:
        session.cert = ((options.client_cert, options.client_key) if options.client_key
                        else options.client_cert)
    if options.cookies:
        session.cookies.update(cookie_jar(options.cookies))
    if options.credentials:
        session.auth = NetrcAuth(options)
    return session


def cookie_jar(text: str) -> http.cookiejar.MozillaCookieJar:
    """A cookie jar from the text of a Netscape cookies.txt; ConfigError if it is not one."""
    path = _temporary_file(text, ".txt")
    jar = http.cookiejar.MozillaCookieJar()
    try:
        jar.load(path, ignore_discard=True, ignore_expires=True)
    except http.cookiejar.LoadError as exc:
        raise ConfigError(f"http.cookies: not a Netscape cookies.txt file: {exc}") from exc
    finally:
        Path(path).unlink(missing_ok=True)
    for cookie in jar:
        if cookie.expires == 0:  # "0" in cookies.txt: a session cookie, as curl reads it
            cookie.expires = None
            cookie.discard = True
    return jar


def _pem_file(text: str) -> str:
    """A file holding ``text`` for as long as this process runs (requests wants a path)."""
    path = _temporary_file(text, ".pem")
    atexit.register(Path(path).unlink, missing_ok=True)
    return path


def _temporary_file(text: str, suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix="crawler-", suffix=suffix)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


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
