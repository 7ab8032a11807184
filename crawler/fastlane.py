"""The fast lane: plain-HTTP image downloads on one thread, over many keep-alive connections.

A download thread with urllib3 cost a worker about 0.4 ms of CPU per small
image, most of it urllib3's generality (URL parsing, header parsing through the
``email`` package) and hand-offs of the GIL between threads. Most image URLs
need none of that: ``http://``, an answer with a ``Content-Length``, no
transfer or content encoding, no redirect. The lane does exactly those on
non-blocking sockets driven by one selector; anything else (https, redirects,
chunked or compressed bodies, a connection that fails) it hands over to the
download threads, which do everything through urllib3. Both report the same
Attempt for the same answer.

The address guard applies here too: every address is checked before the
connection, and the peer again after it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import logging
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from crawler.download import (
    Abandoned,
    ImageSink,
    Limits,
    failure,
    status_failure,
    too_large,
    too_slow,
)
from crawler.errors import StorageError
from crawler.netguard import AddressPolicy, BlockedAddress
from crawler.outcome import Attempt
from crawler.store import Store

log = logging.getLogger(__name__)

Task = tuple[str, int]  # (url, attempt number), as leased from the master
RECV_BYTES = 256 * 1024
MAX_HEAD = 64 * 1024  # a longer response head goes to urllib3, which has its own limits
DRAIN_AT_MOST = 64 * 1024  # an error body up to this size is read to keep the connection
DNS_TTL = 60.0  # seconds a resolved host is reused by the lane
TICK = 0.25  # longest sleep in select(), so timeouts and a stop are seen promptly
SWEEP_EVERY = 0.1  # seconds between checks of every request's timeouts
IDLE_PER_SLOT = 2  # idle keep-alive connections kept, per slot
_UNSAFE = re.compile(r"[^\x21-\x7e]")  # what may not stand in a request line unquoted


class HandOver(Exception):
    """This request is not for the lane (or the lane lost it early): give it to urllib3."""


@dataclass
class _Request:
    task: Task
    host: str
    port: int
    message: bytes
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return self.task[0]


@dataclass(eq=False)  # compared and hashed by identity: kept in sets
class _Connection:
    sock: socket.socket
    key: tuple[str, int]
    addresses: list[tuple]  # addresses not yet tried, for a connection that fails
    request: _Request | None = None
    phase: str = "connect"  # connect, send, head, body, drain
    reused: bool = False
    keep_alive: bool = True
    pending: memoryview | None = None  # request bytes not yet sent
    head: bytearray = field(default_factory=bytearray)
    remaining: int = 0  # body bytes still to come
    sink: ImageSink | None = None
    answer: Attempt | None = None  # decided from the head; sent once a drained body ends
    content_type: str | None = None
    received: int = 0  # bytes of this answer so far
    last_io: float = field(default_factory=time.monotonic)


class FastLane:
    """Downloads handed to it with :meth:`submit` until :meth:`close`; see the module doc.

    ``report(url, attempt)`` receives every result (None: not finished because
    of a stop, to be handed back to the master); ``hand_over(task)`` receives
    what the lane will not do. Both are called on the lane's thread.
    """

    def __init__(self, *, slots: int, store: Store, limits: Limits, policy: AddressPolicy,
                 user_agent: str, accept: str,
                 report: Callable[[str, Attempt | None], None],
                 hand_over: Callable[[Task], None], stop: threading.Event) -> None:
        self._slots = slots
        self._store = store
        self._limits = limits
        self._policy = policy
        self._headers = (f"User-Agent: {user_agent}\r\nAccept: {accept}\r\n"
                         "Accept-Encoding: identity\r\n\r\n")
        self._report = report
        self._hand_over = hand_over
        self._stop = stop
        self._closed = False
        self._incoming: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._waiting: collections.deque[Task] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._active: set[_Connection] = set()
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._resolved: dict[tuple[str, int], tuple[float, list[tuple]]] = {}

    @staticmethod
    def takes(url: str) -> bool:
        """Whether the lane may try ``url`` at all (it may still hand it over)."""
        return url.startswith("http://")

    # ----- called from other threads ------------------------------------------------

    def submit(self, tasks: list[Task]) -> None:
        for task in tasks:
            self._incoming.put(task)
        self._wake()

    def close(self) -> None:
        """End :meth:`run`: what is in flight is handed back (reported as None)."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe wakes it already
            self._wake_w.send(b"\0")

    # ----- the lane's thread --------------------------------------------------------

    def run(self) -> None:
        next_sweep = 0.0
        try:
            while not (self._closed or self._stop.is_set()):
                self._take_incoming()
                self._start_waiting()
                for key, _ in self._selector.select(TICK):
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError, OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._step(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._expire(now)
                    next_sweep = now + SWEEP_EVERY
        finally:
            self._shut_down()

    def _take_incoming(self) -> None:
        while True:
            try:
                self._waiting.append(self._incoming.get_nowait())
            except queue.Empty:
                return

    def _start_waiting(self) -> None:
        while self._waiting and len(self._active) < self._slots:
            task = self._waiting.popleft()
            try:
                self._start(self._prepare(task))
            except HandOver:
                self._hand_over(task)

    def _timeout_of(self, conn: _Connection) -> float:
        assert conn.request is not None
        limits = self._limits
        wait = limits.connect_timeout if conn.phase == "connect" else limits.read_timeout
        return min(conn.last_io + wait, conn.request.started + limits.deadline)

    def _prepare(self, task: Task) -> _Request:
        url = task[0]
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError as exc:
            raise HandOver from exc
        host = parts.hostname
        if parts.scheme != "http" or not host or parts.username is not None or not host.isascii():
            raise HandOver
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc.rpartition("@")[2]
        if _UNSAFE.search(target) or _UNSAFE.search(netloc):
            raise HandOver  # urllib3 quotes what may not stand in a request line
        message = f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\n{self._headers}".encode("ascii")
        return _Request(task, host, port, message)

    def _start(self, request: _Request) -> None:
        key = (request.host, request.port)
        idle = self._idle.get(key)
        if idle:
            conn = idle.pop()
            self._idle_count -= 1
            conn.reused = True
            self._send(conn, request)
            return
        conn = self._connect(key, self._addresses(key), request)
        if conn is not None:
            self._active.add(conn)

    def _addresses(self, key: tuple[str, int]) -> list[tuple]:
        now = time.monotonic()
        cached = self._resolved.get(key)
        if cached is not None and cached[0] > now:
            return list(cached[1])
        try:
            infos = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
        except OSError as exc:
            raise HandOver from exc  # urllib3 words the error, and resolves again
        self._resolved[key] = (now + DNS_TTL, infos)
        return list(infos)

    def _connect(self, key: tuple[str, int], addresses: list[tuple],
                 request: _Request) -> _Connection | None:
        """Start a connection to the first allowed address; None when none is (reported)."""
        refused: BlockedAddress | None = None
        while addresses:
            family, kind, proto, _, sockaddr = addresses.pop(0)
            why = self._policy.refusal(_address(sockaddr))
            if why is not None:
                refused = BlockedAddress(key[0], str(_address(sockaddr)), why)
                continue
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = sock.connect_ex(sockaddr)
            if error not in (0, errno.EINPROGRESS):
                sock.close()
                continue
            conn = _Connection(sock, key, addresses, request)
            self._selector.register(sock, selectors.EVENT_WRITE, conn)
            return conn
        if refused is not None:
            self._report(request.url, failure(request.url, request.started, str(refused)))
            return None
        raise HandOver

    def _send(self, conn: _Connection, request: _Request) -> None:
        conn.request = request
        conn.phase = "send"
        conn.pending = memoryview(request.message)
        conn.head = bytearray()
        conn.sink = None
        conn.answer = None
        conn.received = 0
        conn.last_io = time.monotonic()
        self._active.add(conn)
        self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _step(self, conn: _Connection) -> None:
        """The socket of ``conn`` is ready: move its request on."""
        try:
            if conn.phase == "connect":
                self._connected(conn)
            elif conn.phase == "send":
                self._write(conn)
            else:
                self._read(conn)
        except _Retried:
            pass  # restarted on a fresh connection
        except HandOver:
            self._give_up(conn, hand_over=True)
        except Abandoned as exc:
            self._finish(conn, self._failed(conn, str(exc), exc.transient), reuse=False)
        except StorageError as exc:
            # The worker's disk, not the image, is at fault: another worker may succeed.
            self._finish(conn, self._failed(conn, f"storage error: {exc}", True), reuse=False)

    def _connected(self, conn: _Connection) -> None:
        error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        request = conn.request
        assert request is not None
        self._selector.unregister(conn.sock)
        if error:
            conn.sock.close()
            self._active.discard(conn)
            retry = self._connect(conn.key, conn.addresses, request)  # the next address
            if retry is not None:
                self._active.add(retry)
            return
        peer = _address(conn.sock.getpeername())
        why = self._policy.refusal(peer)
        if why is not None:
            refused = BlockedAddress(conn.key[0], str(peer), why)
            self._finish(conn, self._failed(conn, str(refused)), reuse=False)
            return
        conn.addresses = []
        self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        conn.phase = "send"
        conn.pending = memoryview(request.message)
        conn.last_io = time.monotonic()

    def _write(self, conn: _Connection) -> None:
        assert conn.pending is not None
        try:
            sent = conn.sock.send(conn.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise self._lost(conn) from exc
        conn.pending = conn.pending[sent:]
        conn.last_io = time.monotonic()
        if not conn.pending:
            conn.pending = None
            conn.phase = "head"
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise self._lost(conn) from exc
        if not data:
            raise self._lost(conn)
        conn.last_io = time.monotonic()
        conn.received += len(data)
        if conn.phase == "head":
            conn.head += data
            end = conn.head.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.head) > MAX_HEAD:
                    raise HandOver
                return
            rest = bytes(conn.head[end + 4:])
            self._answer(conn, bytes(conn.head[:end]))
            if conn.phase == "done":
                return
            data = rest
        self._body(conn, data)

    def _body(self, conn: _Connection, data: bytes) -> None:
        if len(data) > conn.remaining:
            raise HandOver  # more than the server announced: not a server to trust with reuse
        conn.remaining -= len(data)
        if conn.sink is not None and data:
            conn.sink.feed(data)
            request = conn.request
            assert request is not None
            if time.monotonic() - request.started > self._limits.deadline:
                raise Abandoned(too_slow(self._limits))
        if conn.remaining:
            return
        if conn.sink is not None:
            attempt = conn.sink.finish(conn.content_type)
            conn.sink = None
        else:
            attempt = conn.answer
        assert attempt is not None
        self._finish(conn, attempt, reuse=conn.keep_alive)

    def _answer(self, conn: _Connection, head: bytes) -> None:
        """Decide from the status line and headers what to do with the body."""
        request = conn.request
        assert request is not None
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status_text = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not status_text.isdigit():
            raise HandOver
        status = int(status_text)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if not colon or not name or line[:1] in (" ", "\t"):
                raise HandOver  # folded or broken headers: urllib3 judges them
            value = value.strip()
            if name in headers and headers[name] != value:
                if name in ("content-length", "transfer-encoding", "content-encoding"):
                    raise HandOver
                headers[name] += ", " + value
            else:
                headers[name] = value
        if "transfer-encoding" in headers or status < 200 or 300 <= status < 400:
            raise HandOver  # chunked bodies and redirects: urllib3
        if headers.get("content-encoding", "identity").lower() != "identity":
            raise HandOver
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        conn.keep_alive = version == "HTTP/1.1" and "close" not in tokens
        declared = headers.get("content-length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        if status != 200:
            conn.answer = status_failure(request.url, request.started, status,
                                         headers.get("retry-after"))
            if length is None or length > DRAIN_AT_MOST:
                self._finish(conn, conn.answer, reuse=False)
                return
            conn.phase = "drain"
            conn.remaining = length
            return
        if length is None:
            raise HandOver  # a body that ends when the connection does
        if length > self._limits.max_bytes:
            self._finish(conn, self._failed(conn, too_large(length, self._limits)), reuse=False)
            return
        conn.phase = "body"
        conn.remaining = length
        conn.content_type = headers.get("content-type")
        conn.sink = ImageSink(request.url, self._store, self._limits, request.started)

    def _lost(self, conn: _Connection) -> HandOver:
        """The connection broke. A reused one the server had closed is retried afresh."""
        if conn.reused and conn.received == 0 and conn.request is not None:
            request = conn.request
            self._close(conn)
            fresh = self._connect(conn.key, self._addresses(conn.key), request)
            if fresh is not None:
                self._active.add(fresh)
            return _Retried()
        return HandOver()

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._active if self._timeout_of(c) <= now]:
            request = conn.request
            assert request is not None
            if now - request.started >= self._limits.deadline:
                self._finish(conn, self._failed(conn, too_slow(self._limits)), reuse=False)
            else:
                self._finish(conn, self._failed(conn, "timed out", True), reuse=False)

    def _failed(self, conn: _Connection, reason: str, transient: bool = False) -> Attempt:
        assert conn.request is not None
        return failure(conn.request.url, conn.request.started, reason, transient)

    def _finish(self, conn: _Connection, attempt: Attempt, *, reuse: bool) -> None:
        request = conn.request
        assert request is not None
        self._release(conn, reuse)
        self._report(request.url, attempt)

    def _give_up(self, conn: _Connection, *, hand_over: bool) -> None:
        request = conn.request
        self._release(conn, reuse=False)
        if request is not None and hand_over:
            self._hand_over(request.task)

    def _release(self, conn: _Connection, reuse: bool) -> None:
        if conn.sink is not None:
            conn.sink.discard()
            conn.sink = None
        self._active.discard(conn)
        if reuse and self._idle_count < self._slots * IDLE_PER_SLOT:
            conn.request = None
            conn.phase = "idle"
            self._selector.unregister(conn.sock)
            self._idle.setdefault(conn.key, []).append(conn)
            self._idle_count += 1
        else:
            self._close(conn)
            conn.phase = "done"

    def _close(self, conn: _Connection) -> None:
        self._active.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _shut_down(self) -> None:
        """Hand back everything not finished: it was never reported."""
        for conn in list(self._active):
            request = conn.request
            self._release(conn, reuse=False)
            if request is not None:
                self._report(request.url, None)
        self._take_incoming()
        while self._waiting:
            self._report(self._waiting.popleft()[0], None)
        for idle in self._idle.values():
            for conn in idle:
                conn.sock.close()
        self._idle.clear()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


class _Retried(HandOver):
    """Raised after the request was restarted on a fresh connection: nothing to hand over."""


def _address(sockaddr: tuple) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
