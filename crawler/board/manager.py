"""The network queue: a ``BaseManager`` server in the master, and the client our workers use.

The server runs in a thread of the master and serves the master's own
:class:`TaskBoard` (never a copy in a forked manager process) through
adapters: the two names of the classic tutorial, ``get_task_queue`` and
``get_result_queue`` (``crawler.board.classic``), whose items are plain URL
strings and ``URL--->success`` lines, plus ``get_board`` (:class:`BoardView`)
with the richer calls our own workers make (batched leases, structured
reports, heartbeats).

What the standard library leaves out, and this module adds (see the notes on
``multiprocessing.managers``): ``TCP_NODELAY`` on both ends, against 40 ms
Nagle stalls; a listen backlog of 1024 instead of 16, so a crowd of workers
connecting at once is not dropped; a deadline on the authentication handshake,
so idle unauthenticated sockets cannot pin server threads; a deadline on each
request once begun, and TCP keepalive, so neither a client stalled mid-request
nor a worker host gone without a word holds a server thread for ever; a logged
refusal of wrong authkeys; and on the client, connect and call deadlines,
because a hung master otherwise blocks a worker forever.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import io
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing import AuthenticationError, BufferTooShort, connection, process
from multiprocessing.managers import (  # type: ignore[attr-defined]  # listener_client: see below
    BaseManager,
    BaseProxy,
    RemoteError,
    Server,
    listener_client,
)
from traceback import format_exc
from typing import TYPE_CHECKING, Any, ClassVar

from crawler.board.mastercalls import MasterCalls, remote_error_line
from crawler.config import DEFAULTS
from crawler.errors import (
    AuthenticationFailed,
    BindError,
    MasterFailed,
    NoHandshake,
    NotAMaster,
    QueueError,
)
from crawler.model.openfiles import out_of_files, out_of_files_reason
from crawler.model.outcome import MAX_REASON_CHARS, Attempt, FailureKind
from crawler.model.wire import (
    CrawlInfo,
    LeaseAnswer,
    Report,
    ReportRefused,
    Status,
    WorkerInfo,
    attempt_from_report,
)

if TYPE_CHECKING:  # the master's side only: a worker imports this module for its client
    from crawler.board.classic import ResultQueueView, TaskQueueView
    from crawler.board.memory import TaskBoard

log = logging.getLogger(__name__)

SERIALIZER = "crawler"  # pickle on the wire, like the default; our client adds deadlines
HANDSHAKE_DEADLINE = 5.0
# An authenticated client may idle between requests for as long as it likes (a tutorial
# worker's task.get(timeout=...) does), but a request, once its first byte came, must
# arrive whole within this. A worker's exchange is about 2 KB (8 reports); 1000 reports
# held back by a lost link, 250 KB, get through this at 200 kbit/s. It is also the
# worker's own bound on a call with the default settings (twice worker_silence), and
# the server never takes less than that (see QueueServer).
REQUEST_DEADLINE = 10.0
# poll() takes a C int of milliseconds, and refused more: a request's deadline (twice
# worker_silence, which may be set to years) is cut at 24.8 days.
LONGEST_POLL_MS = 2**31 - 1
# TCP keepalive on accepted connections: a worker's host gone without a word (power off,
# cable cut: no FIN, no RST) is let go after KEEPALIVE_IDLE + KEEPALIVE_INTERVAL *
# KEEPALIVE_PROBES seconds, two minutes. Idle live workers cost a probe a minute, which
# their kernel answers; a link down for less than that keeps its connection. The same
# bound holds while a reply waits unacknowledged (TCP_USER_TIMEOUT), where the kernel
# alone would retransmit for about 15 minutes.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 15
KEEPALIVE_PROBES = 4
# Until hello says the master's lease_timeout: the settings' default, named as such.
# After it, a call may take as long as a lease lives (see MasterClient.bound_calls).
FIRST_CALL_DEADLINE = DEFAULTS.queue.lease_timeout
BACKLOG = 1024
MAX_HANDSHAKING = 64  # connections not yet authenticated; more are closed at once
# Of those, from one address: a client that opened idle connections (no key needed)
# and opened them again as each was closed held all 64, and no new worker, no worker
# back after a master's restart, no crawler status got in while it went on.
# (A host's own workers started at once, a master's local ones among them, share it:
# those past it are closed and try again.)
MAX_HANDSHAKING_PER_ADDRESS = 32
ACCEPT_PAUSE = 0.05  # seconds the accepting thread rests after it could not serve one


class _Throttled:
    """A warning said at most once every few seconds, with how often it happened; one
    held back is said when its few seconds are over (it waited for the next, or for the
    run's end: a wrong key tried twice was said once, then a minute later)."""

    EVERY = 5.0

    def __init__(self, message: str) -> None:
        self._message = message
        self._count = 0
        self._why = ""
        self._last = -self.EVERY
        self._lock = threading.Lock()  # noted from each connection's own thread
        self._timer: threading.Timer | None = None

    def note(self, why: str) -> None:
        with self._lock:
            self._count += 1
            self._why = why
            now = time.monotonic()
            if now - self._last < self.EVERY:
                if self._timer is None:
                    self._timer = threading.Timer(self._last + self.EVERY - now, self._due)
                    self._timer.daemon = True
                    self._timer.start()
                return
            count, self._count, self._last = self._count, 0, now
        log.warning(self._message, count, why)

    def _due(self) -> None:
        with self._lock:
            self._timer = None
            count, self._count, self._last = self._count, 0, time.monotonic()
        if count:
            log.warning(self._message, count, self._why)

    def flush(self) -> None:
        """Say what was held back since the last line: a flood within the last few seconds
        of a run was said as its first connection alone."""
        with self._lock:
            count, self._count = self._count, 0
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if count:
            log.warning(self._message, count, self._why)


def _set_deadline(sock: socket.socket, seconds: float) -> None:
    """Bound blocking reads and writes on ``sock``; 0 removes the bound.

    ``Connection`` reads the raw descriptor, so ``settimeout`` has no effect;
    the kernel's ``SO_RCVTIMEO``/``SO_SNDTIMEO`` do.
    """
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _keep_alive(sock: socket.socket) -> None:
    """Probe an idle connection, so that a peer gone without a word is noticed.

    Linux has every option; elsewhere those missing keep the system's defaults.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
               ("TCP_KEEPCNT", KEEPALIVE_PROBES),
               ("TCP_USER_TIMEOUT",
                (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES) * 1000))  # in ms
    for name, value in options:
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class _RequestStalled(EOFError):
    """A client began a request and did not finish it within its deadline.

    An EOFError: Server.serve_client ends the connection's thread on one, as when
    its client goes away (any other exception it would send back, and read on).
    """


class _Requests:
    """Reads an authenticated client's requests: ``Connection._recv_bytes`` in its place.

    The wait for a request's first bytes is a plain blocking read, with no deadline, as
    in the standard library; the rest of the frame must come within ``deadline`` of
    them. No system call is added per request: the rest is read without blocking
    (``MSG_DONTWAIT``) in place of the standard library's blocking read, and only a
    frame that is not there in full yet is waited for with ``poll``.
    """

    def __init__(self, conn: connection.Connection, sock: socket.socket, peer: str,
                 deadline: float) -> None:
        self._handle = conn.fileno()
        self._sock = sock
        self._peer = peer
        self._deadline = deadline

    def recv_bytes(self, maxsize: int | None = None) -> io.BytesIO:
        head = os.read(self._handle, 4)  # idle between requests: as long as it likes
        if not head:
            raise EOFError
        end = time.monotonic() + self._deadline
        if len(head) < 4:
            head += self._rest(4 - len(head), end)
        size, = struct.unpack("!i", head)
        if size == -1:  # a frame of 2 GiB or more: its size in 8 bytes more
            size, = struct.unpack("!Q", self._rest(8, end))
        if maxsize is not None and size > maxsize:
            raise OSError(f"a request of {size} bytes, more than {maxsize}")
        return io.BytesIO(self._rest(size, end))

    def _rest(self, size: int, end: float) -> bytes:
        try:
            chunk = self._sock.recv(size, socket.MSG_DONTWAIT)
        except BlockingIOError:
            chunk = b""
        else:
            if len(chunk) == size:
                return chunk  # the whole of it at once: every small request
            if not chunk:
                raise OSError("got end of file during message")
        return self._wait_for_rest(chunk, size, end)

    def _wait_for_rest(self, first: bytes, size: int, end: float) -> bytes:
        parts = [first]
        remaining = size - len(first)
        waiting = select.poll()  # not select(): a busy master's descriptors pass 1024
        waiting.register(self._handle, select.POLLIN)
        while remaining > 0:
            left = end - time.monotonic()
            if left <= 0 or not waiting.poll(min(LONGEST_POLL_MS, max(1, int(left * 1000)))):
                log.warning("cut the queue connection from %s: a request begun %.0f s ago "
                            "is still not all there", self._peer, self._deadline)
                raise _RequestStalled(f"{self._peer} stalled in the middle of a request")
            try:
                chunk = self._sock.recv(remaining, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue  # woken for nothing: wait again
            if not chunk:
                raise OSError("got end of file during message")
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)


def _socket_of(conn: connection.Connection) -> socket.socket:
    # A second socket object on the same descriptor: options set on it apply to both.
    return socket.socket(fileno=conn.fileno())


def _client(address: Any, family: str | None = None, authkey: bytes | None = None,
            ) -> connection.Connection:
    """``multiprocessing.connection.Client`` with TCP_NODELAY and deadlines."""
    sock = socket.create_connection(address, timeout=HANDSHAKE_DEADLINE)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = connection.Connection(sock.detach())
    view = _socket_of(conn)
    try:
        if authkey is not None:
            _handshake(conn, view, authkey, HANDSHAKE_DEADLINE, CLIENT_STEPS)
        _set_deadline(view, FIRST_CALL_DEADLINE)
    except (BlockingIOError, TimeoutError) as exc:  # something else listens there
        conn.close()
        host, port = address[:2]
        # No seconds said: the caller's own wait (--connect-wait) is the one a user set.
        raise NoHandshake(f"{host}:{port} took the connection and made no handshake: "
                              "is that a crawler master's queue port?") from exc
    except EOFError as exc:
        # Closed at once, without a word: said as "EOFError: " (a class, no words) and
        # asked whether something ran where something had answered.
        conn.close()
        host, port = address[:2]
        raise NoHandshake(f"{host}:{port} closed the connection before any handshake (a "
                          "master does so while too many workers connect at once): is that "
                          "a crawler master's queue port?") from exc
    except (AssertionError, OSError) as exc:
        # Something that speaks first with other words: a message that is no challenge
        # (multiprocessing asserts on it: a traceback), or a length no message has ("bad
        # message length"; an SSH banner). Errors of the connection itself go on.
        conn.close()
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        host, port = address[:2]
        if "end of file" in str(exc):  # ("got end of file during message": cut mid-way)
            raise NoHandshake(f"{host}:{port} closed the connection during the handshake (a "
                              "master does so while too many workers connect at once): is "
                              "that a crawler master's queue port?") from exc
        raise NoHandshake(f"{host}:{port} answered with something other than a crawler "
                          "master's handshake: is that a crawler master's queue port?"
                          ) from exc
    except BaseException:
        conn.close()  # a refused key, a reset: no descriptor left behind
        raise
    finally:
        view.detach()  # the descriptor is conn's
    return conn


# listener_client, CPython's undocumented table of transports, is absent from typeshed.
listener_client[SERIALIZER] = (connection.Listener, _client)


_Step = Callable[[connection.Connection, bytes], None]
# Who speaks first: the server challenges, then answers the client's challenge.
SERVER_STEPS: tuple[_Step, ...] = (connection.deliver_challenge, connection.answer_challenge)
CLIENT_STEPS: tuple[_Step, ...] = (connection.answer_challenge, connection.deliver_challenge)


def _handshake(conn: connection.Connection, sock: socket.socket, authkey: bytes,
               seconds: float, steps: tuple[_Step, ...]) -> None:
    """One side of the authkey handshake (``steps``), all of it within ``seconds``.

    A deadline on each read alone let a peer trickle its part a byte at a time, each
    just within it: on the server, a stranger's 260 bytes held a place among
    MAX_HANDSHAKING for over twenty minutes, and that many such strangers kept every
    worker out; on a worker, a port trickling a challenge held it past any
    --connect-wait. Each read here waits only for what is left of the one deadline.
    """
    end = time.monotonic() + seconds

    def read(handle: int, size: int) -> bytes:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the handshake took too long")
        _set_deadline(sock, max(left, 0.001))  # 0 would mean no deadline at all
        return os.read(handle, size)

    # Connection._recv reads through its ``read`` argument: this connection's reads go
    # through ours until the handshake is over.
    # (Connection's private _recv is absent from typeshed: hence setattr and delattr.)
    setattr(conn, "_recv", functools.partial(  # noqa: B010
        connection.Connection._recv, conn, read=read))  # type: ignore[attr-defined]
    try:
        _set_deadline(sock, seconds)  # for the writes
        for step in steps:
            step(conn, authkey)
    finally:
        delattr(conn, "_recv")


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end of ``sock`` closed it (or it broke), without waiting."""
    waiting = select.poll()  # not select(): a busy master's descriptors pass 1024
    waiting.register(sock.fileno(), select.POLLIN)
    try:
        return bool(waiting.poll(0)) and not sock.recv(1, socket.MSG_PEEK)
    except OSError:  # reset by the peer
        return True


class _GuardedServer(Server):
    """A manager server that sets socket options, bounds and logs refused connections,
    and whose accepting thread outlives any failure to serve one connection."""

    refused = 0  # per instance once the first refusal is counted
    # Strangers and wrong keys: the first is said at once, a flood a line every few
    # seconds (a line each grew a log file without bound).
    _refusals: _Throttled | None = None
    _turned_away: _Throttled | None = None
    max_handshaking = MAX_HANDSHAKING
    request_deadline = REQUEST_DEADLINE  # QueueServer sets it for its board
    stopping = False  # set by stop(): the accepting loop ends
    # Set by Server.__init__; typeshed does not declare them.
    listener: connection.Listener
    authkey: bytes

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._serving = threading.local()  # .sock: the client of the connection a thread serves
        # Connections not yet authenticated, by the address they come from.
        self._strangers: collections.Counter[str] = collections.Counter()
        self._strangers_lock = threading.Lock()

    def client_gone(self) -> bool:
        """Whether the client of the connection this thread serves closed it: a call
        of a worker that died while it waited answers no one."""
        sock = getattr(self._serving, "sock", None)
        return sock is not None and _closed_by_peer(sock)

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`, on this thread.

        Server.serve_forever's own end suits a manager's own process only: it resets
        sys.stdout and sys.stderr (a caller's redirection, pytest's capture) and exits.
        """
        self.stop_event = threading.Event()  # Server.shutdown(), a client's call, sets it
        process.current_process()._manager_server = self  # type: ignore[attr-defined]
        self.accepter()

    def stop(self) -> None:
        """Stop accepting and free the port; connections being served end with their
        clients."""
        self.stopping = True
        listening = self.listener._listener._socket  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            listening.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        self.listener.close()
        for throttled in (self._refusals, self._turned_away):  # no connection comes now
            if throttled is not None:
                throttled.flush()
        current = process.current_process()
        if getattr(current, "_manager_server", None) is self:
            del current._manager_server  # type: ignore[attr-defined]  # and the board with it

    def accepter(self) -> None:
        handshaking = threading.BoundedSemaphore(self.max_handshaking)
        turned_away = self._turned_away = _Throttled("turned away %d queue connection(s): %s")
        while not self.stopping:  # till stop(): without it, no worker gets in again
            try:
                self._accept_one(handshaking, turned_away)
            except Exception:
                log.exception("the queue server could not take a connection")
                time.sleep(ACCEPT_PAUSE)

    def _accept_one(self, handshaking: threading.BoundedSemaphore,
                    turned_away: _Throttled) -> None:
        try:
            conn = self.listener.accept()
        except OSError as exc:  # out of descriptors (EMFILE), or the peer gave up
            if self.stopping:
                return  # stop() closed the socket
            if out_of_files(exc):  # (what to do about it, too)
                turned_away.note(f"cannot accept: {out_of_files_reason()}")
            else:
                turned_away.note(f"cannot accept: {exc.strerror or exc}")
            time.sleep(ACCEPT_PAUSE)  # not a busy loop while descriptors run out
            return
        address = self._address_of(conn)
        if not self._let_in(address):
            self.refused += 1
            turned_away.note(f"{MAX_HANDSHAKING_PER_ADDRESS} connections from {address} are "
                             "still to authenticate (its workers starting at once, who try "
                             "again, or a flood)")
            conn.close()
            return
        if not handshaking.acquire(blocking=False):
            self._let_go(address)
            self.refused += 1
            turned_away.note(f"{self.max_handshaking} connections are still to "
                             "authenticate (a flood?)")
            conn.close()
            return
        try:
            threading.Thread(target=self.handle_request, args=(conn, handshaking, address),
                             daemon=True).start()
        except RuntimeError:  # no thread to serve it: drop this one, keep accepting
            handshaking.release()
            self._let_go(address)
            conn.close()
            turned_away.note("cannot start a thread to serve them")
            time.sleep(ACCEPT_PAUSE)

    @staticmethod
    def _address_of(conn: connection.Connection) -> str:
        sock = _socket_of(conn)
        try:
            return str(sock.getpeername()[0])
        except OSError:  # gone already: its handshake fails at once
            return "?"
        finally:
            sock.detach()  # the descriptor stays the connection's (else closed with it)

    def _let_in(self, address: str) -> bool:
        """Count a connection from ``address`` as one to authenticate, unless that
        address has MAX_HANDSHAKING_PER_ADDRESS of them already."""
        with self._strangers_lock:
            if self._strangers[address] >= MAX_HANDSHAKING_PER_ADDRESS:
                return False
            self._strangers[address] += 1
            return True

    def _let_go(self, address: str) -> None:
        with self._strangers_lock:
            self._strangers[address] -= 1
            if self._strangers[address] <= 0:
                del self._strangers[address]

    def handle_request(self, conn: connection.Connection,
                       handshaking: threading.BoundedSemaphore | None = None,
                       address: str | None = None) -> None:
        sock = _socket_of(conn)
        self._serving.sock = sock  # a thread serves one connection, and ends with it
        try:
            try:
                host, port = sock.getpeername()[:2]
                peer = f"{host}:{port}"
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _keep_alive(sock)
                try:
                    _handshake(conn, sock, self.authkey, HANDSHAKE_DEADLINE, SERVER_STEPS)
                except (AuthenticationError, OSError, EOFError) as exc:
                    self.refused += 1
                    why = ("wrong authkey" if isinstance(exc, AuthenticationError)
                           else "no handshake")
                    if self._refusals is None:
                        self._refusals = _Throttled("refused %d queue connection(s), "
                                                    "the last from %s")
                    self._refusals.note(f"{peer}: {why}")
                    return
            finally:
                if handshaking is not None:
                    handshaking.release()  # authenticated or refused: no longer a stranger
                if address is not None:
                    self._let_go(address)
            _set_deadline(sock, 0)  # an authenticated worker may idle between calls...
            # ...but not stall in the middle of one: Connection.recv reads through this.
            # (Connection's private _recv_bytes is absent from typeshed: hence setattr.)
            setattr(conn, "_recv_bytes",  # noqa: B010
                    _Requests(conn, sock, peer, self.request_deadline).recv_bytes)
            self._serve_authenticated(conn)
        except SystemExit:
            pass  # serve_client() ends with sys.exit(0) when its client goes away or stalls
        except (OSError, EOFError):
            pass  # the peer vanished or stalled mid-call: nothing to answer
        finally:
            sock.detach()
            conn.close()

    def _serve_authenticated(self, conn: connection.Connection) -> None:
        # The rest of Server._handle_request, after the handshake we did ourselves.
        try:
            _ignored, funcname, args, kwds = conn.recv()
            if funcname not in self.public:
                raise ValueError(f"{funcname!r} unrecognized")
            func = getattr(self, funcname)
        except EOFError:
            raise  # gone, or stalled mid-request: no one to answer
        except Exception:  # noqa: BLE001 - any failure goes back to the client, as in Server
            msg: tuple[str, Any] = ("#TRACEBACK", format_exc())
        else:
            try:
                msg = ("#RETURN", func(conn, *args, **kwds))
            except Exception:  # noqa: BLE001 - the client re-raises it
                msg = ("#TRACEBACK", format_exc())
        conn.send(msg)


class BoardView:
    """``get_board``: what our own workers and ``crawler status`` may call.

    An adapter: reports arrive as dicts from the network and are checked here
    (``attempt_from_report``) before the board sees them as Attempts; the
    board checks that the worker holds each URL. Waits are kept below half a
    lease, so a call always ends well within the client's deadline.
    """

    def __init__(self, board: TaskBoard, describe: Callable[..., Any]) -> None:
        self._board = board
        self._describe = describe
        self._longest_wait = board.policy.lease_timeout / 2

    def hello(self, worker: str, info: WorkerInfo) -> CrawlInfo:
        self._board.hello(worker, info)
        crawl: CrawlInfo = self._describe()
        return crawl

    def lease(self, worker: str, max_items: int, wait: float) -> LeaseAnswer:
        return self._board.lease(worker, max_items, min(wait, self._longest_wait))

    def report(self, worker: str, reports: list[Report]) -> None:
        self._board.report(worker, self._attempts(worker, reports))

    def exchange(self, worker: str, number: int, reports: list[Report],
                 released: list[str], max_items: int, wait: float,
                 holding: list[str] | None = None) -> LeaseAnswer:
        """A busy worker's one round trip, applied once: see ``TaskBoard.exchange``.

        Each round trip costs the master more than the work in it, so one call
        instead of three halves its cost per URL.
        """
        return self._board.exchange(worker, number, self._attempts(worker, reports), released,
                                    max_items, min(wait, self._longest_wait), holding)

    def heartbeat(self, worker: str) -> bool:
        return self._board.heartbeat(worker)

    def cookies(self, worker: str, since: int) -> tuple[int, list[str]]:
        """The cookies the crawl's pages set that came after version ``since``, and the
        jar's version (see ``LeaseAnswer.cookies``): secrets, over this link only."""
        return self._board.cookies_since(since if type(since) is int else 0)

    def release(self, worker: str, urls: list[str]) -> None:
        self._board.release(worker, urls)

    def goodbye(self, worker: str) -> None:
        self._board.goodbye(worker)

    def status(self) -> Status:
        status: Status = self._describe(full=True)
        return status

    def _attempts(self, worker: str, reports: list[Report]) -> list[Attempt]:
        attempts = []
        for data in reports:
            try:
                attempts.append(attempt_from_report(data))
            except ReportRefused as exc:
                self._board.refuse(worker, str(exc))
                # Dropped, the URL stayed leased to a worker that had let it go: handed
                # back as never received (its try undone), it went round for ever. A
                # report of a URL the worker holds counts as a failed try saying why:
                # another worker may do better, and the tries run out.
                url = data.get("url") if isinstance(data, dict) else None
                if isinstance(url, str) and url:
                    attempts.append(Attempt(
                        url=url, ok=False, kind=FailureKind.BAD_RESPONSE, transient=True,
                        reason=f"the worker's report was refused: {exc}"[:MAX_REASON_CHARS]))
        return attempts


def _failures_logged(view: type[BoardView]) -> type[BoardView]:
    """``view`` with each of BoardView's calls logging its failure."""
    for name, call in vars(BoardView).items():  # every call a worker may make
        if not name.startswith("_") and callable(call):
            setattr(view, name, _logged_here(call))
    return view


def _logged_here(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception:
            log.exception("a worker's call %s() failed on this master", method.__name__)
            raise

    return call


@_failures_logged
class _ServedBoardView(BoardView):
    """The board as the master's queue serves it to workers: a call that fails is the
    master's fault, logged where the crawl's user reads (the worker gets the error
    back, and stops with MasterFailed)."""


class QueueServer:
    """Serve ``board`` on ``address`` from a daemon thread of this process, until
    :meth:`stop` (a crawl run from Python leaves no port open behind it)."""

    def __init__(self, board: TaskBoard, address: tuple[str, int], authkey: bytes,
                 describe: Callable[..., Any], max_handshaking: int = MAX_HANDSHAKING) -> None:
        from crawler.board.classic import ResultQueueView, TaskQueueView

        # The server is made below, once the views it serves are registered.
        task_view = TaskQueueView(board, client_gone=lambda: self._server.client_gone())
        result_view = ResultQueueView(board)
        board_view = _ServedBoardView(board, describe)

        def get_task_queue() -> TaskQueueView:
            return task_view

        def get_result_queue() -> ResultQueueView:
            return result_view

        def get_board() -> BoardView:
            return board_view

        # A class per server: the registry lives on the class, and no state is module-level.
        class CrawlerManager(BaseManager):
            # Filled by register(); typeshed does not declare it.
            _registry: ClassVar[dict[str, tuple[Callable[..., Any], Any, Any, Any]]]

        CrawlerManager.register("get_task_queue", callable=get_task_queue)
        CrawlerManager.register("get_result_queue", callable=get_result_queue)
        CrawlerManager.register("get_board", callable=get_board)
        try:
            self._server = _GuardedServer(CrawlerManager._registry, address, authkey, SERIALIZER)
        except OSError as exc:
            # Advice for what failed: a port in use or not ours, or a name or address
            # that is not this host's.
            # Named for a Python caller too: crawl() has no --bind, but bind=.
            hint = ("choose another port with --bind, or bind= in Python"
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES)
                    else "give --bind, or bind= in Python, an address of this host, such as "
                         "127.0.0.1:PORT")
            raise BindError(f"cannot serve the queue on {address[0]}:{address[1]}: "
                            f"{exc.strerror or exc} ({hint})") from exc
        self._server.max_handshaking = max_handshaking
        # Never shorter than a worker's own bound on a call (twice worker_silence): a
        # request the worker still waits for is not cut here.
        self._server.request_deadline = max(REQUEST_DEADLINE,
                                            2 * board.policy.worker_silence)
        # Server() listens with a backlog of 16; a crowd of workers needs more.
        # Listener keeps its socket private; this is the only way to its backlog.
        self._server.listener._listener._socket.listen(BACKLOG)  # type: ignore[attr-defined]
        self.address: tuple[str, int] = self._server.listener.address  # what Server.address holds
        self._thread = threading.Thread(target=self._server.serve_forever, name="queue-server",
                                        daemon=True)

    def start(self) -> QueueServer:
        self._thread.start()
        return self

    def stop(self, wait: float = 1.0) -> None:
        """Stop accepting and free the port (served or not)."""
        self._server.stop()
        if self._thread.is_alive():
            self._thread.join(wait)

    @property
    def refused(self) -> int:
        """How many connections failed the authkey handshake."""
        return self._server.refused


class MasterClient:
    """A worker's (or ``crawler status``'s) connection to the master's board."""

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self.address = address
        self.where = f"the master at {address[0]}:{address[1]}"
        self._authkey = authkey

    def unreachable(self, exc: BaseException) -> str:
        if isinstance(exc, NoHandshake):
            return str(exc)  # something answers there: it asks its own question
        if isinstance(exc, ConnectionRefusedError):
            return "nothing listens there (connection refused); is it running, and is the " \
                   "address right?"
        if isinstance(exc, socket.gaierror):  # no master to ask after: the name has none
            words = (exc.strerror or str(exc)).lower()
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
                return f"the host name {self.address[0]} does not resolve: {words}; check " \
                       "its spelling, or give the master's IP address"
            return f"the host name {self.address[0]} could not be looked up: {words}; is " \
                   "this host's DNS working? (or give the master's IP address)"
        # The system's words, not the exception's class ("[Errno 113] No route to host").
        words = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"{words or exc.__class__.__name__}; is it running, and is the address right?"

    def connect(self) -> MasterCalls:
        """Connect and return the master's board, its calls' failures translated.

        Raises :class:`AuthenticationFailed` for a wrong authkey, :class:`NotAMaster`
        for a BaseManager that is not ours, and ``OSError`` (or ``EOFError``) when the
        master cannot be reached.
        """
        self.reset()
        class CrawlerClient(BaseManager):
            get_board: Callable[[], Any]  # made by register()

        CrawlerClient.register("get_board")
        manager = CrawlerClient(address=self.address, authkey=self._authkey,
                                serializer=SERIALIZER)
        host, port = self.address
        try:
            manager.connect()
            board = manager.get_board()
        except RemoteError as exc:
            why = remote_error_line(exc)
            if why != "KeyError: 'get_board'":
                raise MasterFailed(f"{self.where} failed as we joined ({why})") from exc
            # It took our key, and has no board to give.
            raise NotAMaster(
                f"{host}:{port} took our authkey but is not a crawler master: it has "
                f"no crawler board ({why}); a tutorial's master takes the tutorial's own "
                "worker script, and `crawler worker` joins the queue that `crawler master` "
                "serves") from exc
        except AuthenticationError as exc:
            raise AuthenticationFailed(
                f"the master at {host}:{port} refused our authkey: give the master's key "
                "with CRAWLER_AUTHKEY or --authkey-file (a master started without one "
                "keeps its own in OUT/authkey)") from exc
        except BufferTooShort as exc:
            raise QueueError(f"{host}:{port} does not speak the crawler protocol") from exc
        return MasterCalls(board, self.where)

    def bound_calls(self, board: Any, seconds: float) -> None:
        """Give up on each call of ``board`` (a proxy from ``connect``) after ``seconds``.

        Workers pass twice the master's worker_silence: a call that takes longer
        has cost them their leases anyway, and a hung master or a stalled
        connection is better left for a reconnect. The proxy's connection of this
        thread exists after its first call.
        """
        if isinstance(board, MasterCalls):
            board = board.proxy
        conn = getattr(getattr(board, "_tls", None), "connection", None)
        if conn is None:
            return
        with socket.socket(fileno=conn.fileno()) as view:
            _set_deadline(view, seconds)
            view.detach()

    def reset(self) -> None:
        """Forget cached connections to the master.

        Proxies keep one connection per thread in a class-level table; after the
        master restarts, that stale connection would fail every call with
        ``BrokenPipeError`` (CPython issues 86320 and 87495).
        """
        BaseProxy._address_to_local.pop(self.address, None)

    def close(self) -> None:
        """Close this thread's connection to the master. Left open, it held a thread of
        the master's server (and a socket on both sides) until this process ended."""
        local = BaseProxy._address_to_local.pop(self.address, None)
        connection = getattr(local[0], "connection", None) if local else None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()
