"""The fast lane: plain-HTTP image downloads on one thread, over many keep-alive connections.

A download thread with urllib3 cost a worker about 0.4 ms of CPU per small
image, most of it urllib3's generality (URL parsing, header parsing through the
``email`` package) and hand-offs of the GIL between threads. Most image URLs
need none of that: ``http://``, an answer with a ``Content-Length``, no
transfer or content encoding, no redirect. The lane does exactly those on
non-blocking sockets driven by one selector; anything else (https, redirects,
chunked or compressed bodies, odd answers, a connection that fails) it hands
over to the download threads, which do everything through urllib3. Both report
the same Attempt for the same answer.

The address guard applies here too: every address is checked before the
connection, and the peer again after it. Host names are resolved on a small
thread pool, so a slow DNS server holds up only the downloads from its hosts.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from crawler.config import Limits
from crawler.errors import StorageError
from crawler.fetch.guard import AddressPolicy, BlockedAddress
from crawler.model.outcome import STORAGE_ERROR, Attempt
from crawler.worker.sink import (
    Abandoned,
    ImageSink,
    failure,
    status_failure,
    too_large,
    too_slow,
)
from crawler.worker.store import Store

log = logging.getLogger(__name__)

Task = tuple[str, int]  # (url, attempt number), as leased from the master
Key = tuple[str, int]  # (host, port)
Results = list[tuple[str, Attempt | None]]

RECV_BYTES = 256 * 1024
MAX_HEAD = 64 * 1024  # a longer response head goes to urllib3, which has its own limits
DRAIN_AT_MOST = 64 * 1024  # an error body up to this size is read to keep the connection
TICK = 0.25  # longest sleep in select(), so a stop is seen promptly
SWEEP_EVERY = 0.1  # seconds between checks of every request's timeouts
IDLE_PER_SLOT = 2  # idle keep-alive connections kept, per slot (least recently used go)
DNS_TTL = 60.0  # seconds a resolved host is reused by the lane
DNS_FAILURE_TTL = 10.0  # seconds a failed lookup sends the host's URLs straight to urllib3
DNS_CACHE_SIZE = 4096
RESOLVERS = 2  # threads that resolve host names
# What urllib3 would quote or rewrite in a request target (and the lane will not):
# controls, spaces, non-ASCII, characters unsafe in URLs, a "%" not starting an
# escape, and dot segments.
_ODD_TARGET = re.compile(r'[^\x21-\x7e]|["<>\\^`{|}]|%(?![0-9A-Fa-f]{2})|/\.\.?(?:[/?]|$)')
_ODD_HOST = re.compile(r"[^\x21-\x7e]|[@/\\]")


class HandOver(Exception):
    """This request is not for the lane (or the lane lost it early): give it to urllib3."""


class _Retried(HandOver):
    """Raised after the request was restarted on a fresh connection: nothing to hand over."""


@dataclass
class _Request:
    task: Task
    key: Key
    message: bytes
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return self.task[0]


@dataclass(eq=False)  # compared and hashed by identity: kept in sets
class _Connection:
    sock: socket.socket
    key: Key
    addresses: list[tuple]  # addresses not yet tried, for a connection that fails
    request: _Request | None = None
    phase: str = "connect"  # connect, send, head, body, drain, idle, closed
    events: int = 0  # what the selector watches for (0: not registered)
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


@dataclass(frozen=True)
class Head:
    """A response's status line and headers (names in lower case)."""

    version: str
    status: int
    headers: dict[str, str]

    def length(self) -> int | None:
        """The Content-Length, None when absent; HandOver when it is not a plain number."""
        declared = self.headers.get("content-length")
        if declared is None:
            return None
        if not (declared.isascii() and declared.isdigit()):
            raise HandOver
        return int(declared)


def parse_head(head: bytes) -> Head:
    """Parse a response head (without its blank line); HandOver for anything unusual."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest.partition(" ")[0]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not (
            len(code) == 3 and code.isascii() and code.isdigit()):
        raise HandOver
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or "\n" in line:
            raise HandOver  # folded, broken or oddly spaced headers: urllib3 judges them
        name = name.lower()
        value = value.strip()
        if name in headers and headers[name] != value:
            if name in ("content-length", "transfer-encoding", "content-encoding"):
                raise HandOver
            headers[name] += ", " + value
        else:
            headers[name] = value
    return Head(version, int(code), headers)


class FastLane:
    """Downloads handed to it with :meth:`submit` until :meth:`close`; see the module doc.

    ``report(results)`` receives every result as (url, attempt) pairs, once per
    turn of the loop (attempt None: not finished because of a stop, to be
    handed back to the master); ``hand_over(task)`` receives what the lane will
    not do. Every submitted task reaches exactly one of them, once.
    """

    def __init__(self, *, slots: int, store: Store, limits: Limits, policy: AddressPolicy,
                 user_agent: str, accept: str, report: Callable[[Results], None],
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
        # Results of one turn of the loop, reported together: one wake-up of the
        # worker's coordinator per turn, not per image.
        self._outbox: Results = []
        self._lock = threading.Lock()  # submit() against the end of run()
        self._closing = False
        self._ended = False
        self._incoming: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._waiting: collections.deque[Task] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._active: set[_Connection] = set()
        self._idle: dict[Key, list[_Connection]] = {}
        self._idle_order: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._resolved: dict[Key, tuple[float, list[tuple] | None]] = {}
        self._parked: dict[Key, list[_Request]] = {}  # waiting for their host's address
        self._parked_count = 0
        self._resolutions: queue.SimpleQueue[tuple[Key, list[tuple] | None]] = (
            queue.SimpleQueue())
        self._resolver: ThreadPoolExecutor | None = None

    @staticmethod
    def takes(url: str) -> bool:
        """Whether the lane may try ``url`` at all (it may still hand it over)."""
        return url.startswith("http://")

    # ----- called from other threads ------------------------------------------------

    def submit(self, tasks: list[Task]) -> None:
        """Queue ``tasks``; once the lane has ended they go straight to ``hand_over``."""
        with self._lock:
            if not self._ended:
                for task in tasks:
                    self._incoming.put(task)
                self._wake()
                return
        for task in tasks:
            self._hand_over(task)

    def close(self) -> None:
        """End :meth:`run`: what is in flight is handed back (reported as None)."""
        self._closing = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full socket buffer wakes it already
            self._wake_w.send(b"\0")

    # ----- the loop -------------------------------------------------------------------

    def run(self) -> None:
        next_sweep = 0.0
        crashed = False
        try:
            while not (self._closing or self._stop.is_set()):
                self._take_incoming()
                self._take_resolutions()
                self._start_waiting()
                for key, _ in self._selector.select(TICK):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._step(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._expire(now)
                    next_sweep = now + SWEEP_EVERY
                self._send_outbox()
        except Exception:
            crashed = True
            log.exception("the fast lane failed; its downloads go to the download threads")
        finally:
            self._shut_down(crashed)

    def _send_outbox(self) -> None:
        if self._outbox:
            results, self._outbox = self._outbox, []
            self._report(results)

    def _take_incoming(self) -> None:
        while True:
            try:
                self._waiting.append(self._incoming.get_nowait())
            except queue.Empty:
                return

    def _start_waiting(self) -> None:
        while self._waiting and len(self._active) + self._parked_count < self._slots:
            task = self._waiting.popleft()
            try:
                self._start(self._prepare(task))
            except HandOver:
                self._hand_over(task)
            except Exception:  # a lane bug must not lose the URL: urllib3 tries it
                log.exception("fast lane: unexpected error starting %s; handed to the "
                              "download threads", task[0])
                self._hand_over(task)

    def _prepare(self, task: Task) -> _Request:
        url = task[0]
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError as exc:
            raise HandOver from exc
        host = parts.hostname
        netloc = parts.netloc
        if (parts.scheme != "http" or not host or "@" in netloc or _ODD_HOST.search(netloc)
                or not host.isascii()):
            raise HandOver
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if _ODD_TARGET.search(target):
            raise HandOver  # urllib3 quotes or rewrites these; the lane does not
        message = f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\n{self._headers}".encode("ascii")
        return _Request(task, (host, port), message)

    def _start(self, request: _Request) -> None:
        conn = self._take_idle(request.key)
        if conn is not None:
            conn.reused = True
            self._begin(conn, request)
            return
        self._start_fresh(request)

    # ----- addresses and connections -------------------------------------------------

    def _cached_addresses(self, key: Key) -> list[tuple] | None:
        """The host's addresses if known (HandOver if its lookup failed lately), else None."""
        cached = self._resolved.get(key)
        if cached is not None and cached[0] > time.monotonic():
            if cached[1] is None:
                raise HandOver  # urllib3 resolves again, and words the error
            return list(cached[1])
        try:
            ipaddress.ip_address(key[0])
        except ValueError:
            return None  # a name: resolved on the pool, not on this thread
        infos = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICHOST)
        self._cache(key, infos)
        return list(infos)

    def _cache(self, key: Key, infos: list[tuple] | None) -> None:
        if len(self._resolved) >= DNS_CACHE_SIZE:
            self._resolved.clear()
        ttl = DNS_TTL if infos is not None else DNS_FAILURE_TTL
        self._resolved[key] = (time.monotonic() + ttl, infos)

    def _park(self, request: _Request) -> None:
        waiting = self._parked.setdefault(request.key, [])
        waiting.append(request)
        self._parked_count += 1
        if len(waiting) == 1:  # the first for this host: look it up
            if self._resolver is None:
                self._resolver = ThreadPoolExecutor(RESOLVERS, thread_name_prefix="lane-dns")
            self._resolver.submit(self._resolve, request.key)

    def _resolve(self, key: Key) -> None:
        """On a resolver thread: look ``key`` up and hand the answer to the loop."""
        try:
            infos: list[tuple] | None = socket.getaddrinfo(key[0], key[1],
                                                           type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            infos = None
        self._resolutions.put((key, infos))
        self._wake()

    def _take_resolutions(self) -> None:
        while True:
            try:
                key, infos = self._resolutions.get_nowait()
            except queue.Empty:
                return
            self._cache(key, infos)
            requests = self._parked.pop(key, [])
            self._parked_count -= len(requests)
            for request in requests:
                try:
                    if infos is None:
                        raise HandOver
                    self._open(request, list(infos))
                except HandOver:
                    self._hand_over(request.task)
                except Exception:  # a lane bug must not lose the URL: urllib3 tries it
                    log.exception("fast lane: unexpected error starting %s; handed to the "
                                  "download threads", request.url)
                    self._hand_over(request.task)

    def _open(self, request: _Request, addresses: list[tuple]) -> None:
        """Start a connection to the first allowed address; HandOver when none can start."""
        refused: BlockedAddress | None = None
        while addresses:
            family, kind, proto, _, sockaddr = addresses.pop(0)
            why = self._policy.refusal(_address(sockaddr))
            if why is not None:
                refused = BlockedAddress(request.key[0], str(_address(sockaddr)), why)
                continue
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # out of descriptors, or no such address family here
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = sock.connect_ex(sockaddr)
            if error not in (0, errno.EINPROGRESS):
                sock.close()
                continue
            conn = _Connection(sock, request.key, addresses, request)
            self._active.add(conn)
            self._watch(conn, selectors.EVENT_WRITE)
            return
        if refused is not None:
            self._outbox.append((request.url, failure(request.url, request.started,
                                                      str(refused))))
            return
        raise HandOver

    def _take_idle(self, key: Key) -> _Connection | None:
        """A kept-alive connection to ``key`` that is still good, if there is one."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            del self._idle_order[conn]
            if not idle:
                del self._idle[key]
            if _quiet(conn.sock):
                return conn
            self._close(conn)  # closed by the server, or sent something unasked
        return None

    def _keep(self, conn: _Connection) -> None:
        conn.request = None
        conn.phase = "idle"
        conn.sink = None
        self._active.discard(conn)
        # Still watched for reading: the server closing it shows up as an event.
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_order[conn] = None
        if len(self._idle_order) > self._slots * IDLE_PER_SLOT:
            oldest = next(iter(self._idle_order))
            self._forget_idle(oldest)
            self._close(oldest)

    def _forget_idle(self, conn: _Connection) -> None:
        self._idle_order.pop(conn, None)
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def _watch(self, conn: _Connection, events: int) -> None:
        if conn.events == events:
            return
        if not conn.events:
            self._selector.register(conn.sock, events, conn)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Connection) -> None:
        self._active.discard(conn)
        if conn.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn.sock)
            conn.events = 0
        conn.sock.close()
        conn.phase = "closed"

    # ----- one request -------------------------------------------------------------

    def _begin(self, conn: _Connection, request: _Request) -> None:
        """Send ``request`` on the connected ``conn``."""
        conn.request = request
        conn.phase = "send"
        conn.pending = memoryview(request.message)
        conn.head = bytearray()
        conn.sink = None
        conn.answer = None
        conn.received = 0
        conn.last_io = time.monotonic()
        self._active.add(conn)
        self._advance(conn, self._write)  # at once: the socket is almost always writable

    def _step(self, conn: _Connection) -> None:
        """The selector says ``conn`` is ready: move its request on."""
        if conn.phase == "idle":
            self._forget_idle(conn)  # closed by the server, or it sent something unasked
            self._close(conn)
        elif conn.phase == "connect":
            self._advance(conn, self._connected)
        elif conn.phase == "send":
            self._advance(conn, self._write)
        elif conn.phase != "closed":
            self._advance(conn, self._read)

    def _advance(self, conn: _Connection, action: Callable[[_Connection], None]) -> None:
        """Run ``action``; whatever goes wrong, the request gets exactly one outcome."""
        try:
            action(conn)
        except _Retried:
            pass  # restarted on a fresh connection
        except HandOver:
            self._end(conn, hand_over=True)
        except Abandoned as exc:
            self._finish(conn, self._failed(conn, str(exc), exc.transient), reuse=False)
        except StorageError as exc:
            # The worker's disk, not the image, is at fault: another worker may succeed.
            self._finish(conn, self._failed(conn, f"{STORAGE_ERROR}{exc}", True), reuse=False)
        except Exception:  # a lane bug must not lose the URL: urllib3 tries it
            log.exception("fast lane: unexpected error on %s; handed to the download threads",
                          conn.request.url if conn.request else "?")
            self._end(conn, hand_over=True)

    def _connected(self, conn: _Connection) -> None:
        request = conn.request
        assert request is not None
        error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._close(conn)
            self._open(request, conn.addresses)  # the next address, or HandOver
            return
        peer = _address(conn.sock.getpeername())
        why = self._policy.refusal(peer)
        if why is not None:
            refused = BlockedAddress(conn.key[0], str(peer), why)
            self._finish(conn, self._failed(conn, str(refused)), reuse=False)
            return
        conn.addresses = []
        self._begin(conn, request)

    def _write(self, conn: _Connection) -> None:
        assert conn.pending is not None
        try:
            sent = conn.sock.send(conn.pending)
        except (BlockingIOError, InterruptedError):
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except OSError as exc:
            raise self._lost(conn) from exc
        conn.pending = conn.pending[sent:]
        conn.last_io = time.monotonic()
        if conn.pending:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        conn.pending = None
        conn.phase = "head"
        self._watch(conn, selectors.EVENT_READ)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if conn.phase == "drain":  # the answer is known; only its body broke off
                self._finish(conn, conn.answer, reuse=False)
                return
            raise self._lost(conn) from exc
        if not data:
            if conn.phase == "drain":
                self._finish(conn, conn.answer, reuse=False)
                return
            raise self._lost(conn)
        conn.last_io = time.monotonic()
        conn.received += len(data)
        if conn.phase == "head":
            conn.head += data
            end = conn.head.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.head) > MAX_HEAD or b"\n\n" in conn.head:
                    raise HandOver
                return
            rest = bytes(conn.head[end + 4:])
            self._answer(conn, parse_head(bytes(conn.head[:end])))
            if conn.phase not in ("body", "drain"):
                return  # decided from the head alone
            data = rest
        self._body(conn, data)

    def _answer(self, conn: _Connection, head: Head) -> None:
        """Decide from the status line and headers what to do with the body."""
        request = conn.request
        assert request is not None
        status, headers = head.status, head.headers
        if "transfer-encoding" in headers or status < 200 or 300 <= status < 400:
            raise HandOver  # chunked bodies and redirects: urllib3
        if headers.get("content-encoding", "identity").lower() != "identity":
            raise HandOver
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        conn.keep_alive = head.version == "HTTP/1.1" and "close" not in tokens
        if status != 200:
            conn.answer = status_failure(request.url, request.started, status,
                                         headers.get("retry-after"))
            length = None if status == 204 else _length_or_none(head)
            if length is None or length > DRAIN_AT_MOST or not conn.keep_alive:
                self._finish(conn, conn.answer, reuse=False)
                return
            conn.phase = "drain"
            conn.remaining = length
            return
        length = head.length()
        if length is None:
            raise HandOver  # a body that ends when the connection does
        if length > self._limits.max_bytes:
            self._finish(conn, self._failed(conn, too_large(length, self._limits)), reuse=False)
            return
        conn.phase = "body"
        conn.remaining = length
        conn.content_type = headers.get("content-type")
        conn.sink = ImageSink(request.url, self._store, self._limits, request.started)

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
        self._finish(conn, attempt, reuse=conn.keep_alive)

    def _lost(self, conn: _Connection) -> HandOver:
        """The connection broke. A reused one the server had closed is retried afresh."""
        request = conn.request
        if conn.reused and conn.received == 0 and request is not None:
            self._close(conn)
            self._start_fresh(request)
            return _Retried()
        return HandOver()

    def _start_fresh(self, request: _Request) -> None:
        """Start ``request`` on a new connection, once its host's address is known."""
        addresses = self._cached_addresses(request.key)
        if addresses is None:
            self._park(request)
        else:
            self._open(request, addresses)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._active if self._timeout_of(c) <= now]:
            request = conn.request
            assert request is not None
            if now - request.started >= self._limits.deadline:
                self._finish(conn, self._failed(conn, too_slow(self._limits)), reuse=False)
            elif conn.phase == "drain":
                self._finish(conn, conn.answer, reuse=False)
            elif conn.phase == "connect" and conn.addresses:
                self._close(conn)  # this address does not answer: try the next
                self._advance(conn, lambda c, r=request: self._open(r, c.addresses))
            else:
                self._finish(conn, self._failed(conn, "timed out", True), reuse=False)

    def _timeout_of(self, conn: _Connection) -> float:
        assert conn.request is not None
        limits = self._limits
        wait = limits.connect_timeout if conn.phase == "connect" else limits.read_timeout
        return min(conn.last_io + wait, conn.request.started + limits.deadline)

    # ----- endings -------------------------------------------------------------------

    def _failed(self, conn: _Connection, reason: str, transient: bool = False) -> Attempt:
        assert conn.request is not None
        return failure(conn.request.url, conn.request.started, reason, transient)

    def _finish(self, conn: _Connection, attempt: Attempt | None, *, reuse: bool) -> None:
        request = conn.request
        assert request is not None and attempt is not None
        self._release(conn, reuse)
        self._outbox.append((request.url, attempt))

    def _end(self, conn: _Connection, *, hand_over: bool) -> None:
        request = conn.request
        self._release(conn, reuse=False)
        if request is not None:
            if hand_over:
                self._hand_over(request.task)
            else:
                self._outbox.append((request.url, None))

    def _release(self, conn: _Connection, reuse: bool) -> None:
        if conn.sink is not None:
            conn.sink.discard()
            conn.sink = None
        if reuse:
            self._keep(conn)
        else:
            self._close(conn)

    def _shut_down(self, crashed: bool) -> None:
        """Give back everything not finished: to urllib3 after a crash, else to the master."""
        with self._lock:
            self._ended = True  # from now on submit() hands over itself
        for conn in list(self._active):
            self._end(conn, hand_over=crashed)
        self._take_incoming()
        parked = [r.task for requests in self._parked.values() for r in requests]
        self._parked.clear()
        for task in [*self._waiting, *parked]:
            if crashed:
                self._hand_over(task)
            else:
                self._outbox.append((task[0], None))
        self._waiting.clear()
        self._send_outbox()
        for conn in list(self._idle_order):
            self._close(conn)
        self._idle.clear()
        self._idle_order.clear()
        if self._resolver is not None:
            self._resolver.shutdown(wait=False, cancel_futures=True)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _length_or_none(head: Head) -> int | None:
    try:
        return head.length()
    except HandOver:
        return None


def _quiet(sock: socket.socket) -> bool:
    """Whether an idle keep-alive socket is still open and has nothing unread."""
    try:
        sock.recv(1, socket.MSG_PEEK)  # b"": closed by the server; a byte: sent unasked
    except (BlockingIOError, InterruptedError):
        return True  # nothing to read: still open and quiet
    except OSError:
        pass
    return False


def _address(sockaddr: tuple) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
