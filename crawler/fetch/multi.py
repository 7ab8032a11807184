"""Many requests at once on one libcurl multi handle, driven by its owner's event loop.

The master's page loop (``crawler.master.pageloop``) fetches every page this
way, from one thread: a page thread per request made the master's threads hand
its interpreter to each other about 25 times a page, which cost more than the
requests. Each request is what ``EasyClient.get`` makes, with the same rules
(``crawler.fetch.curlsetup``) and the same reply (``crawler.fetch.easy``): no
redirect followed, one deadline on the whole request (``TIMEOUT_MS``), the
address guard on every socket and on every reused connection, the body cut at
``max_bytes``.

The owner's loop waits on the selector it gave (the sockets libcurl asks to
watch are registered there with this client as their data), calls
:meth:`MultiClient.act` for those that are ready and :meth:`MultiClient.tick`
when :meth:`MultiClient.due` says libcurl's timer is up, and collects finished
requests with :meth:`MultiClient.finished`. Not thread-safe: one thread only.
"""

from __future__ import annotations

import contextlib
import functools
import selectors
import socket
import time
from collections.abc import Callable, Hashable
from typing import Any

import pycurl

from crawler.fetch.cookiefeed import JarWatch
from crawler.fetch.curlsetup import (
    Guard,
    KeptConnections,
    SocketWatch,
    cap_each_transfer,
    curl_events,
    gives_login_headers,
    header_lines,
    hop_options_vary,
    new_share,
    other_origin,
    request_url,
    set_common_options,
    set_hop_options,
)
from crawler.fetch.easy import (
    Exchange,
    Reply,
    conclude,
    guarded_peer,
    guarded_socket,
    new_socket,
)
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions


class _Carrier:
    """One easy handle, its callbacks bound once, and the request it carries."""

    def __init__(self, handle: pycurl.Curl) -> None:
        self.handle = handle
        self.exchange: Exchange | None = None
        self.token: Hashable = None
        self.deadline = 0.0  # time.monotonic() by which the request must be done
        self.fresh = False  # FRESH_CONNECT is set on the handle


class MultiClient:
    """GETs started with :meth:`start`, run together by the owner's loop; see the module doc."""

    def __init__(self, policy: AddressPolicy, options: RequestOptions, *,
                 selector: selectors.BaseSelector, connect_timeout: float = 10.0,
                 ca_file: str | None = None, share: pycurl.CurlShare | None = None,
                 watch: JarWatch | None = None) -> None:
        """``share``: another client's cookie jar, DNS and TLS cache, to use with it
        (that client closes it); by default one of its own. ``watch``: told when a
        response sets a cookie."""
        self._options = options
        self._selector = selector
        self._connect_ms = max(1, int(connect_timeout * 1000))
        self._ca_file = ca_file
        self._proxies = options.proxies()
        self._guard = Guard(policy, self._proxies)
        # Logins and proxies the same for every hop: set once per handle, not per request.
        self._per_hop = hop_options_vary(options, self._proxies)
        self._watch = watch
        self._own_share = share is None
        self._share = new_share(options) if share is None else share
        self._headers: dict[tuple[str, bool], list[bytes]] = {}  # by Accept, other origin
        # Only a crawl with login headers tells hops to another origin apart (no urlsplit
        # a request otherwise).
        self._logins = gives_login_headers(options)
        self._free: list[_Carrier] = []
        self._busy: dict[int, _Carrier] = {}  # by id(handle)
        self._sockets = SocketWatch(selector, self)  # registered with this client as data
        self._kept = KeptConnections()  # to look for unasked bytes on an HTTP/1 one
        self._due: float | None = None  # libcurl's timer (time.monotonic())
        self._finished: list[tuple[Hashable, Reply]] = []
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._sockets)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)

    def start(self, token: Hashable, url: str, *, accept: str, max_bytes: int, timeout: float,
              wants: Callable[[int, dict[str, str]], bool] = lambda status, headers: True,
              first_url: str | None = None) -> None:
        """GET ``url`` (no redirect followed) within ``timeout`` seconds, all of it; its
        reply comes out of :meth:`finished` with ``token``. ``wants``, ``max_bytes`` and
        ``first_url`` as for ``EasyClient.get``."""
        carrier = self._free.pop() if self._free else self._new_carrier()
        carrier.exchange = Exchange(url, max_bytes, wants, self._watch)
        carrier.token = token
        carrier.deadline = time.monotonic() + timeout
        handle = carrier.handle
        if carrier.fresh:
            handle.setopt(pycurl.FRESH_CONNECT, 0)
            carrier.fresh = False
        handle.setopt(pycurl.URL, request_url(url))
        handle.setopt(pycurl.TIMEOUT_MS, max(1, int(timeout * 1000)))
        key = (accept, self._logins and first_url is not None and other_origin(first_url, url))
        lines = self._headers.get(key)
        if lines is None:
            lines = self._headers[key] = header_lines(self._options, accept,
                                                      other_origin=key[1])
        handle.setopt(pycurl.HTTPHEADER, lines)
        if self._per_hop:
            set_hop_options(handle, self._options, self._proxies, url)
        self._busy[id(handle)] = carrier
        self._multi.add_handle(handle)

    @property
    def in_flight(self) -> int:
        """Requests started and not yet ended."""
        return len(self._busy)

    def due(self) -> float | None:
        """When libcurl's timer is up (``time.monotonic()``), or None while it has none."""
        return self._due

    def tick(self) -> None:
        """Let libcurl act on its timer (timeouts, and work it put off)."""
        self._due = None
        self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        self._collect()

    def act(self, fd: int, mask: int) -> None:
        """Let libcurl act on a socket the selector found ready."""
        self._multi.socket_action(fd, curl_events(mask))
        self._collect()

    def finished(self) -> list[tuple[Hashable, Reply]]:
        """The requests that ended since the last call, with their tokens."""
        done, self._finished = self._finished, []
        return done

    def close(self) -> None:
        """End every request in flight (their replies are dropped) and free libcurl."""
        for carrier in list(self._busy.values()):
            with contextlib.suppress(pycurl.error):
                self._multi.remove_handle(carrier.handle)
            self._free.append(carrier)
        self._busy.clear()
        self._sockets.forget()
        for carrier in self._free:
            carrier.handle.close()
        self._free.clear()
        self._multi.close()
        if self._own_share:
            self._share.close()

    # ----- handles ----------------------------------------------------------------

    def _new_carrier(self) -> _Carrier:
        handle = pycurl.Curl()
        carrier = _Carrier(handle)
        set_common_options(handle, self._options, ca_file=self._ca_file, share=self._share)
        setopt = handle.setopt
        setopt(pycurl.CONNECTTIMEOUT_MS, self._connect_ms)
        cap_each_transfer(handle, self._options)
        setopt(pycurl.WRITEFUNCTION, functools.partial(self._on_body, carrier))
        setopt(pycurl.HEADERFUNCTION, functools.partial(self._on_header, carrier))
        setopt(pycurl.OPENSOCKETFUNCTION, functools.partial(self._on_open_socket, carrier))
        setopt(pycurl.PREREQFUNCTION, functools.partial(self._on_connected, carrier))
        setopt(pycurl.SOCKOPTFUNCTION, functools.partial(self._on_new_socket, carrier))
        if not self._per_hop:
            set_hop_options(handle, self._options, self._proxies, "http:")
        return carrier

    def _collect(self) -> None:
        while True:
            queued, succeeded, failed = self._multi.info_read()
            for handle in succeeded:
                self._end(handle, 0, "")
            for handle, code, message in failed:
                self._end(handle, code, message)
            if not queued:
                return

    def _end(self, handle: pycurl.Curl, code: int, message: str) -> None:
        carrier = self._busy[id(handle)]
        self._multi.remove_handle(handle)
        exchange = carrier.exchange
        if exchange is not None and exchange.unclean:  # again, on a new connection
            carrier.exchange = exchange.again()
            handle.setopt(pycurl.FRESH_CONNECT, 1)
            carrier.fresh = True
            handle.setopt(pycurl.TIMEOUT_MS,
                          max(1, int((carrier.deadline - time.monotonic()) * 1000)))
            self._multi.add_handle(handle)
            return
        del self._busy[id(handle)]
        if exchange is not None and exchange.http1 and exchange.connection is not None:
            self._kept.answered_http1(exchange.connection, exchange.reply.url)
        token = carrier.token
        carrier.exchange, carrier.token = None, None
        self._free.append(carrier)
        assert exchange is not None
        self._finished.append((token, conclude(exchange, handle, code, message,
                                               self._proxies)))

    # ----- libcurl's callbacks (on the owner's thread, from socket_action) --------

    def _on_timer(self, timeout_ms: int) -> None:
        self._due = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def _on_header(self, carrier: _Carrier, line: bytes) -> int | None:
        if carrier.exchange is None:
            return -1
        carrier.exchange.on_header(line)
        return None

    def _on_body(self, carrier: _Carrier, chunk: bytes) -> int | None:
        if carrier.exchange is None:
            return -1
        return carrier.exchange.on_body(chunk)

    def _on_open_socket(self, carrier: _Carrier, purpose: int,
                        address: tuple[int, int, int, tuple[Any, ...]]) -> socket.socket | int:
        return guarded_socket(self._guard, carrier.exchange, address)

    def _on_new_socket(self, carrier: _Carrier, fd: int, purpose: int) -> int:
        return new_socket(carrier.exchange, fd)

    def _on_connected(self, carrier: _Carrier, peer: str, local: str, peer_port: int,
                      local_port: int) -> int:
        return guarded_peer(self._guard, self._kept, carrier.exchange,
                            (local, local_port, peer, peer_port))
