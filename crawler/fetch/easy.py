"""One request at a time on a libcurl easy handle of the calling thread: robots.txt, style sheets.

The master reads robots.txt files and style sheets (and, with
``PageVisitor.visit``, whole pages) from helper threads; each thread keeps one
easy handle (and so its own kept-alive connections, unless the client keeps none:
robots.txt), and ``perform``
releases the GIL while libcurl works. libcurl enforces what requests could
not: one hard deadline on the whole request, response head included
(``TIMEOUT_MS``), however slowly the bytes come. Policy stays in Python: the
address guard on every socket and on every reused connection, redirects left
to the caller (one hop per call), and a cap on the body. The page loop's
client (``crawler.fetch.multi``) makes the same requests many at a time, with
this module's :class:`Exchange` and :func:`conclude`: one reply for both.

It applies the crawl's request settings (headers, cookies, TLS, proxies,
logins) the same way as the workers' engine (``crawler.fetch.curl``).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pycurl

from crawler.fetch.contentencoding import BodyDecoder, body_decoder
from crawler.fetch.cookiefeed import JarWatch
from crawler.fetch.curlsetup import (
    DRAIN_AT_MOST,
    Connection,
    Guard,
    KeptConnections,
    at_the_proxy,
    cap_each_transfer,
    curl_socket,
    failure_cause,
    gives_login_headers,
    header_lines,
    new_share,
    other_origin,
    proxy_refusal,
    request_url,
    set_common_options,
    set_hop_options,
)
from crawler.fetch.engine import Abandoned, curl_failure, message_failure
from crawler.fetch.guard import AddressPolicy, BlockedAddress
from crawler.fetch.options import Proxies, RequestOptions
from crawler.fetch.policy import REDIRECT_STATUSES, interim, location_text, redirect_target
from crawler.model.openfiles import out_of_files, out_of_files_reason
from crawler.model.outcome import FailureKind

_WANTED = frozenset({"content-type", "location", "retry-after", "content-length",
                     "content-encoding", "refresh"})


@dataclass
class Reply:
    """What one request got: an answer (status, headers, body), or why there was none."""

    url: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, the wanted ones
    body: bytes = b""
    truncated: bool = False  # more than max_bytes came: the body was cut to max_bytes
    refused: bool = False  # ``wants`` turned the body down after the head
    failure: str = ""  # why there is no answer ("" when there is one)
    kind: FailureKind | None = None
    transient: bool = False  # worth another try
    blocked: BlockedAddress | None = None  # the address guard refused the connection
    out_of_files: bool = False  # no socket could be made: the process's files are all open
    timed_out: bool = False  # the deadline cut the request off
    # Never sent: every connection the client allows stayed busy with other requests
    # until the deadline. Nothing is known of the server; ask again later.
    no_turn: bool = False

    @property
    def ok(self) -> bool:
        return not self.failure


class Exchange:
    """The state of the request in flight on one handle."""

    def __init__(self, url: str, max_bytes: int,
                 wants: Callable[[int, dict[str, str]], bool],
                 watch: JarWatch | None = None) -> None:
        self.reply = Reply(url)
        self.watch = watch  # told of a Set-Cookie: the jar changed
        self.max_bytes = max_bytes
        self.wants = wants
        # The body: one buffer, which getvalue() hands over without a copy (a list of
        # chunks joined at the end held the body twice, 20 MB for a 10 MB style sheet).
        self.body = io.BytesIO()
        self.size = 0
        self.head_done = False
        self.keep = True  # whether the body is wanted
        self.decoder: BodyDecoder | None = None  # of a compressed body
        self.spoiled: Abandoned | None = None  # why the body cannot be had (its encoding)
        # The connection (KeptConnections): the descriptor of a socket opened for this
        # request, the connection it went out on, whether it is a second try on a new one
        # because the kept-alive one had bytes nobody asked for, and whether HTTP/1 answered.
        self.new_fd: int | None = None
        self.connection: Connection | None = None
        self.fresh = False
        self.unclean = False
        self.http1 = False

    def again(self) -> Exchange:
        """The same request, to be sent again on a new connection (this one was unclean)."""
        fresh = Exchange(self.reply.url, self.max_bytes, self.wants, self.watch)
        fresh.fresh = True
        return fresh

    def on_header(self, line: bytes) -> None:
        reply = self.reply
        if line.startswith(b"HTTP/"):
            self.http1 = line.startswith(b"HTTP/1")
            parts = line.split(None, 2)
            reply.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            reply.headers = {}
            self.head_done = False
            return
        if self.head_done:
            return  # trailers
        if line in (b"\r\n", b"\n"):
            if not interim(reply.status):  # else the real answer follows
                self.head_done = True
                self.keep = self.wants(reply.status, reply.headers)
                reply.refused = not self.keep
                if self.keep and 200 <= reply.status < 300:  # others' bodies go unread
                    try:
                        self.decoder = body_decoder(reply.headers.get("content-encoding"),
                                                    self.max_bytes)
                    except Abandoned as exc:  # an encoding not decoded here
                        self.spoiled, self.keep = exc, False
            return
        name, colon, value = line.partition(b":")
        if colon:
            key = name.strip().lower().decode("latin-1")
            if key in _WANTED:
                value = value.strip()
                if not value and key == "location":
                    # None, as libcurl reads it: followed, it led back to this URL until
                    # the redirects ran out; the status is the answer.
                    return
                text = location_text(value) if key == "location" else value.decode("latin-1")
                if key == "content-encoding" and key in reply.headers:
                    text = f"{reply.headers[key]}, {text}"  # one list (RFC 9110)
                reply.headers[key] = text
            elif key == "set-cookie" and self.watch is not None:
                self.watch.changed = True

    def on_body(self, chunk: bytes) -> int | None:
        if self.spoiled is not None:
            return -1
        if not self.keep:  # read a little, so the connection can carry the next request
            self.size += len(chunk)
            return -1 if self.size > DRAIN_AT_MOST else None
        if self.decoder is None:
            return -1 if self._took_enough(chunk) else None
        try:
            for piece in self.decoder.decode(chunk):
                if self._took_enough(piece):
                    return -1
        except Abandoned as exc:
            self.spoiled = exc
            return -1
        return None

    def ended(self) -> None:
        """The body came to its end: a compressed one must be whole (else ``spoiled``)."""
        if self.decoder is not None and self.spoiled is None and not self.reply.truncated:
            try:
                self.decoder.finish()
            except Abandoned as exc:
                self.spoiled = exc

    def _took_enough(self, piece: bytes) -> bool:
        """Keep ``piece`` of the body, up to ``max_bytes`` (True: enough, read no more).

        Only a byte past the cap cuts the body: one of exactly ``max_bytes`` is whole."""
        self.size += len(piece)
        if self.size > self.max_bytes:
            self.body.write(piece[:len(piece) - (self.size - self.max_bytes)])
            self.reply.truncated = True
            return True
        self.body.write(piece)
        return False


class EasyClient:
    """Blocking GETs for the calling thread, each bounded by one deadline."""

    def __init__(self, policy: AddressPolicy, options: RequestOptions, *,
                 connect_timeout: float = 10.0, ca_file: str | None = None,
                 at_once: int | None = None, share: pycurl.CurlShare | None = None,
                 watch: JarWatch | None = None, keep_alive: bool = True) -> None:
        """``at_once``: requests in flight at most, whatever the threads asking (None: no
        bound); a request waiting for its turn waits within its own deadline. ``share``
        and ``watch``: another client's cookie jar, DNS and TLS cache and its watch on
        the jar, to use with it (that client closes the share); by default its own.
        ``keep_alive``: False closes each connection after its request, for requests
        that seldom go to one origin twice (else each thread's handle keeps up to five
        idle connections open for good)."""
        self._options = options
        self._turns = threading.BoundedSemaphore(at_once) if at_once else None
        self.at_once = at_once
        self.connect_timeout = connect_timeout
        self._connect_ms = max(1, int(connect_timeout * 1000))
        self._keep_alive = keep_alive
        self._ca_file = ca_file
        self._proxies = options.proxies()
        self._guard = Guard(policy, self._proxies)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list[pycurl.Curl] = []
        self._closed = False  # no request starts after close()
        self._own_share = share is None
        # One cookie jar, DNS, TLS cache: every handle.
        self._share = new_share(options) if share is None else share
        self.jar_watch = JarWatch() if watch is None else watch  # a response set a cookie
        self._logins = gives_login_headers(options)  # else no hop is told apart by origin

    def get(self, url: str, *, accept: str, max_bytes: int, timeout: float,
            wants: Callable[[int, dict[str, str]], bool] = lambda status, headers: True,
            first_url: str | None = None, logins: bool = True) -> Reply:
        """GET ``url`` (no redirect followed) within ``timeout`` seconds, all of it.

        ``wants(status, headers)`` is asked once the head is in: False leaves the
        body unread (a page that is not HTML). The body is cut at ``max_bytes``.
        ``first_url``: the URL whose redirects led to ``url`` (None: ``url`` itself); the
        user's Authorization and Cookie headers go to its origin only, and nowhere
        without ``logins``.
        """
        if self._closed:
            # Asked as the crawl winds down (a thread still judging queued images): a
            # handle made now would take a closed share, and fail as a pycurl.error.
            return _stopping(url)
        exchange = Exchange(url, max_bytes, wants, self.jar_watch)
        turns, started = self._turns, time.monotonic()
        if turns is not None and not turns.acquire(timeout=max(0.0, timeout)):
            return Reply(url, failure=f"not sent: all {self.at_once} connections stayed busy "
                         f"for {timeout:g} s", kind=FailureKind.TIMEOUT, transient=True,
                         timed_out=True, no_turn=True)
        try:
            return self._perform(self._handle(), exchange, url, accept,
                                 timeout - (time.monotonic() - started),
                                 self._logins and (not logins or (first_url is not None
                                                   and other_origin(first_url, url))))
        except pycurl.error:
            if not self._closed:
                raise
            # close() came after the check above: it closed this thread's handle, or the
            # share a new one takes. The request was never sent.
            return _stopping(url)
        finally:
            if turns is not None:
                turns.release()

    def follow(self, url: str, *, hops: int, may_follow: Callable[[str], bool], accept: str,
               max_bytes: int, timeout: float,
               turn: Callable[[str, float], bool] | None = None, logins: bool = True
               ) -> Reply:
        """GET ``url`` and follow its redirects, ``hops`` of them at most, to the URLs
        ``may_follow`` allows, all within one ``timeout``. Each hop is a :meth:`get` (the
        address guard on each). The reply is the last hop's (``reply.url``): still a
        redirect when its target was refused or no hop was left.

        ``turn(url, deadline)``: waits, before each hop, for its host's turn (its pace),
        up to ``deadline`` (time.monotonic()); False, no turn came: the hop is not sent,
        and its reply says so (``no_turn``). Its wait is not counted in ``timeout``.
        ``logins``: as for :meth:`get`."""
        deadline = time.monotonic() + timeout
        current = url
        for hop in range(hops + 1):
            if turn is not None:
                waited = time.monotonic()
                if not turn(current, waited + max(0.001, deadline - waited)):
                    return Reply(current, failure="not sent: its host's pace left it no turn"
                                 f" within {timeout:g} s", kind=FailureKind.TIMEOUT,
                                 transient=True, timed_out=True, no_turn=True)
                deadline += time.monotonic() - waited
            reply = self.get(current, accept=accept, max_bytes=max_bytes,
                             timeout=max(0.001, deadline - time.monotonic()), first_url=url,
                             logins=logins)
            location = reply.headers.get("location")
            if hop == hops or not (reply.ok and reply.status in REDIRECT_STATUSES and location):
                return reply
            try:
                target = redirect_target(current, location)
            except ValueError:  # a Location that is no URL
                return reply
            if not may_follow(target):
                return reply
            current = target
        raise AssertionError("unreachable: the last hop returns")

    def _perform(self, handle: pycurl.Curl, exchange: Exchange, url: str, accept: str,
                 timeout: float, elsewhere: bool) -> Reply:
        deadline = time.monotonic() + timeout
        setopt = handle.setopt
        setopt(pycurl.URL, request_url(url))
        setopt(pycurl.TIMEOUT_MS, max(1, int(timeout * 1000)))
        setopt(pycurl.HTTPHEADER, header_lines(self._options, accept, other_origin=elsewhere))
        set_hop_options(handle, self._options, self._proxies, url)
        code, message = self._run(handle, exchange)
        if exchange.unclean:  # the same request again, on a new connection
            exchange = exchange.again()
            setopt(pycurl.FRESH_CONNECT, 1)
            setopt(pycurl.TIMEOUT_MS, max(1, int((deadline - time.monotonic()) * 1000)))
            try:
                code, message = self._run(handle, exchange)
            finally:
                setopt(pycurl.FRESH_CONNECT, 0)
        if exchange.http1 and exchange.connection is not None:
            self._local.kept.answered_http1(exchange.connection, url)
        return conclude(exchange, handle, code, message, self._proxies)

    def _run(self, handle: pycurl.Curl, exchange: Exchange) -> tuple[int, str]:
        """perform() the request on ``handle`` for ``exchange``: libcurl's code and message."""
        self._local.exchange = exchange
        try:
            handle.perform()
        except pycurl.error as exc:
            # perform() raises (code, message); a bare (message,) has no libcurl code
            code, message = exc.args if len(exc.args) == 2 else (-1, exc.args[0])
            return code, str(message)
        finally:
            self._local.exchange = None
        return 0, ""

    @property
    def share(self) -> pycurl.CurlShare:
        """The cookie jar, DNS and TLS cache of this client's handles, for another client
        of the same crawl to take (a cookie a page sets goes with its style sheets)."""
        return self._share

    def close(self) -> None:
        with self._lock:
            self._closed = True
            handles, self._handles = self._handles, []
        for handle in handles:
            # One a helper thread still performs on (a wind-down cut short) is left.
            with contextlib.suppress(pycurl.error):
                handle.close()
        if self._own_share:
            with contextlib.suppress(pycurl.error):  # a handle still uses it: left too
                self._share.close()

    # ----- handles -----------------------------------------------------------------

    def _handle(self) -> pycurl.Curl:
        handle: pycurl.Curl | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._new_handle()
            with self._lock:
                if self._closed:  # close() took the list already: this one would stay open
                    handle.close()
                    raise pycurl.error("the client is closed")
                self._handles.append(handle)
            self._local.handle = handle
            self._local.kept = KeptConnections()  # the connections of this thread's handle
        return handle

    def _new_handle(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        set_common_options(handle, self._options, ca_file=self._ca_file, share=self._share)
        setopt = handle.setopt
        setopt(pycurl.CONNECTTIMEOUT_MS, self._connect_ms)
        if not self._keep_alive:
            setopt(pycurl.FORBID_REUSE, 1)
        cap_each_transfer(handle, self._options)
        setopt(pycurl.WRITEFUNCTION, self._on_body)
        setopt(pycurl.HEADERFUNCTION, self._on_header)
        setopt(pycurl.OPENSOCKETFUNCTION, self._on_open_socket)
        setopt(pycurl.PREREQFUNCTION, self._on_connected)
        setopt(pycurl.SOCKOPTFUNCTION, self._on_new_socket)
        return handle

    # ----- libcurl's callbacks, on the calling thread ------------------------------

    def _on_header(self, line: bytes) -> None:
        self._local.exchange.on_header(line)

    def _on_body(self, chunk: bytes) -> int | None:
        result: int | None = self._local.exchange.on_body(chunk)
        return result

    def _on_open_socket(self, purpose: int,
                        address: tuple[int, int, int, tuple[object, ...]]) -> socket.socket | int:
        return guarded_socket(self._guard, self._local.exchange, address)

    def _on_new_socket(self, fd: int, purpose: int) -> int:
        return new_socket(self._local.exchange, fd)

    def _on_connected(self, peer: str, local: str, peer_port: int, local_port: int) -> int:
        return guarded_peer(self._guard, self._local.kept, self._local.exchange,
                            (local, local_port, peer, peer_port))


def guarded_socket(guard: Guard, exchange: Exchange | None,
                   address: tuple[int, int, int, tuple[object, ...]]) -> socket.socket | int:
    """libcurl's OPENSOCKETFUNCTION for a page client: a socket, if the guard lets the
    request connect to ``address`` (else the refusal goes in the exchange's reply)."""
    family, kind, protocol, sockaddr = address
    port = sockaddr[1]
    if not isinstance(port, int) or not _admits(guard, exchange,
                                                str(sockaddr[0]).split("%", 1)[0], port):
        return pycurl.SOCKET_BAD
    sock = curl_socket(family, kind, protocol)
    if exchange is not None:  # (the last try's: another address may be refused)
        exchange.reply.out_of_files = isinstance(sock, OSError) and out_of_files(sock)
    if isinstance(sock, OSError):  # libcurl reports a failed connection
        return pycurl.SOCKET_BAD
    return sock


def new_socket(exchange: Exchange | None, fd: int) -> int:
    """libcurl's SOCKOPTFUNCTION for a page client: a socket opened for the request."""
    if exchange is not None:
        exchange.new_fd = fd
    return pycurl.SOCKOPT_OK


def guarded_peer(guard: Guard, kept: KeptConnections, exchange: Exchange | None,
                 connection: Connection) -> int:
    """libcurl's PREREQFUNCTION for a page client: a connection, new or kept alive, is
    about to carry the request; its peer must pass the guard too, and a kept-alive HTTP/1
    one must have nothing to read (``exchange.unclean``: send it again on a new one)."""
    _, _, peer, port = connection
    if not _admits(guard, exchange, peer, port):
        return pycurl.PREREQFUNC_ABORT
    if exchange is None:
        return pycurl.PREREQFUNC_OK
    exchange.connection = connection
    if exchange.new_fd is not None:
        kept.opened(connection, exchange.new_fd)
        exchange.new_fd = None
    elif not exchange.fresh and kept.unclean(connection, exchange.reply.url):
        # A stray answer there was read as this request's: another page's links, or
        # another robots.txt's rules, were taken for its own.
        exchange.unclean = True
        return pycurl.PREREQFUNC_ABORT
    return pycurl.PREREQFUNC_OK


def _admits(guard: Guard, exchange: Exchange | None, address: str, port: int) -> bool:
    why = guard.refusal(address, port)
    if why is None:
        return True
    if exchange is not None:
        host = urlsplit(exchange.reply.url).hostname or "?"
        exchange.reply.blocked = BlockedAddress(host, address, why)
    return False


def conclude(exchange: Exchange, handle: pycurl.Curl, code: int, message: str,
             proxies: Proxies) -> Reply:
    """The reply of a request that libcurl ended with ``code`` (0: it went through)."""
    reply = exchange.reply
    if not code:
        # One address refused and another one answered ("localhost": ::1 and 127.0.0.1,
        # tried in turn): the answer stands, and nothing was blocked.
        reply.blocked = None
        exchange.ended()
    spoiled = exchange.spoiled
    refused_by = proxy_refusal(handle, reply.status, proxies, reply.url)
    if refused_by:  # the proxy's answer (a tunnel's too), not the site's
        reply.status, reply.failure, reply.kind, reply.transient = (
            0, refused_by, FailureKind.CONNECTION, True)
    elif spoiled is not None and code in (0, pycurl.E_WRITE_ERROR):
        reply.failure, reply.kind, reply.transient = str(spoiled), spoiled.kind, spoiled.transient
    elif code and reply.refused and exchange.head_done and reply.blocked is None:
        # The head is the answer (a redirect, a 404, a page that is not HTML): the body
        # left unread may break off, or stall past the deadline, as it will. An HTTP/2
        # stream reset after a redirect's head failed the page, and it was tried again,
        # where the workers' engine followed it.
        pass
    elif code and not (code == pycurl.E_WRITE_ERROR and (reply.truncated or reply.refused)):
        fail(reply, handle, code, message)  # (a write error we caused: what was read stands)
        reply.failure = at_the_proxy(handle, code, reply.failure, proxies, reply.url)
    if reply.ok:
        reply.body = exchange.body.getvalue() if exchange.keep else b""
    return reply


def fail(reply: Reply, handle: pycurl.Curl, code: int, message: str) -> None:
    """Say in ``reply`` why libcurl's request on ``handle`` ended with ``code``."""
    if reply.blocked is not None:
        reply.failure, reply.kind = str(reply.blocked), FailureKind.BLOCKED
        return
    if reply.out_of_files and code == pycurl.E_COULDNT_CONNECT:
        reply.failure, reply.kind, reply.transient = (out_of_files_reason(),
                                                      FailureKind.CONNECTION, True)
        return
    if code == pycurl.E_OPERATION_TIMEDOUT:  # "timed out", or "timed out connecting"
        reply.failure, reply.kind, reply.transient = (curl_failure(code, message)[1],
                                                      FailureKind.TIMEOUT, True)
        reply.timed_out = True
        return
    told = message_failure(message)  # a TLS alert, say: libcurl's errno may be stale
    if told is not None:
        reply.kind, reply.failure, reply.transient = told
        return
    kind, reason, transient = curl_failure(code, "")
    cause = failure_cause(handle, code)
    reply.failure = f"{reason}: {cause}" if cause else curl_failure(code, message)[1]
    reply.kind, reply.transient = kind, transient


def _stopping(url: str) -> Reply:
    """The reply to a request the client's close() kept from being sent."""
    return Reply(url, failure="not sent: the crawl is stopping", kind=FailureKind.STOPPED,
                 transient=True, no_turn=True)
