"""A scripted HTTP/2 server over TLS on 127.0.0.1, for hostile-server tests.

Each request's stream is answered by a script of its own (chosen by path), on a
thread of its own, through a :class:`Stream`: send a head, body bytes, reset the
stream, send GOAWAY, stall, or write raw frames. The ``h2`` package keeps the
protocol state; flow control is honoured unless a script writes raw frames.
Every read and write of a connection's TLS socket is made under its lock: an
OpenSSL connection used by two threads at once (a script writing while the
connection's thread reads) broke now and then, and the reading side took it for
the client's close and closed the connection under the other streams.
Needs the ``h2`` package (the dev extra): a test module importing this one skips
without it (``pytest.importorskip("h2")`` first).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

LINGER = 60.0  # the longest a connection is served (a stop() ends them all sooner)


class Stream:
    """One request's stream, as its script sees it."""

    def __init__(self, conn: Connection, stream_id: int, path: str) -> None:
        self.conn = conn
        self.id = stream_id
        self.path = path

    def head(self, status: int = 200, headers: tuple[tuple[str, str], ...] = (),
             *, end: bool = False) -> None:
        self.conn.act(lambda h2c: h2c.send_headers(
            self.id, [(":status", str(status)), *headers], end_stream=end))

    def body(self, data: bytes, *, end: bool = True) -> None:
        """Send ``data`` within the peer's flow-control windows (waiting for them)."""
        self.conn.send_data(self.id, data, end)

    def reset(self, code: int = 2) -> None:  # INTERNAL_ERROR
        self.conn.act(lambda h2c: h2c.reset_stream(self.id, code))

    def stall(self, seconds: float = LINGER) -> None:
        self.conn.closed.wait(seconds)


@dataclass
class Connection:
    sock: ssl.SSLSocket
    h2c: h2.connection.H2Connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    window: threading.Condition = field(default_factory=threading.Condition)
    closed: threading.Event = field(default_factory=threading.Event)

    def act(self, change: Callable[[h2.connection.H2Connection], object]) -> None:
        with self.lock:
            if self.closed.is_set():
                return
            with contextlib.suppress(h2.exceptions.ProtocolError):
                change(self.h2c)
            self._flush()

    def raw(self, data: bytes) -> None:
        """Bytes on the connection past the h2 state machine (hand-made frames)."""
        with self.lock, contextlib.suppress(OSError):
            self.send_locked(data)

    def goaway(self, last_stream_id: int | None = None, code: int = 0) -> None:
        self.act(lambda h2c: h2c.close_connection(code, last_stream_id=last_stream_id))

    def close(self) -> None:
        """Close the TCP connection at once (no close_notify): a FIN the client sees
        though the reading thread is still in recv()."""
        self.closed.set()
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # ends a write's wait
        with self.lock, contextlib.suppress(OSError):  # no read or write is under way
            self.sock.close()

    def send_locked(self, data: bytes) -> None:
        """All of ``data`` on the (non-blocking) socket; the caller holds the lock."""
        view = memoryview(data)
        deadline = time.monotonic() + LINGER
        while view:
            if self.closed.is_set() or time.monotonic() > deadline:
                raise ConnectionAbortedError("the connection is closed")
            try:
                view = view[self.sock.send(view):]
            except ssl.SSLWantReadError:
                select.select([self.sock], [], [], 0.05)
            except ssl.SSLWantWriteError:
                select.select([], [self.sock], [], 0.05)

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        deadline = time.monotonic() + LINGER
        while True:
            with self.lock:
                if self.closed.is_set():
                    return
                try:
                    room = min(self.h2c.local_flow_control_window(stream_id),
                               self.h2c.max_outbound_frame_size)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    return
                if room >= len(data) or room > 0:
                    piece, data = data[:room], data[room:]
                    last = end and not data
                    try:
                        self.h2c.send_data(stream_id, piece, end_stream=last)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        return
                    self._flush()
                    if not data:
                        return
                    continue
            with self.window:
                self.window.wait(0.05)
            if time.monotonic() > deadline:
                return

    def _flush(self) -> None:
        out = self.h2c.data_to_send()
        if out:
            try:
                self.send_locked(out)
            except OSError:
                self.closed.set()


Script = Callable[[Stream], None]


class H2Server:
    """Serves each request with ``scripts[path]`` (or ``default``), a thread per stream.

    ``on_connection(conn)`` runs once per new connection after the preface (settings
    of its own, a GOAWAY timer...). ``connections`` counts the connections accepted.
    ``handshakes``: how many connections are accepted at all; those after them wait
    in the listener's backlog, their TLS handshake never answered (a server gone
    dark), till :meth:`stop`. (Not accepted: an accepted one may be given the number
    of a connection just closed, and a late write of a thread still serving that one
    reached it: a handshake failed on it, "unexpected message".)
    """

    def __init__(self, context: ssl.SSLContext, scripts: dict[str, Script],
                 default: Script | None = None,
                 on_connection: Callable[[Connection], None] | None = None,
                 settings: dict[int, int] | None = None, handshakes: int | None = None,
                 ) -> None:
        context.set_alpn_protocols(["h2"])
        self.context = context
        self.scripts = scripts
        self.default = default
        self.on_connection = on_connection
        self.settings = settings or {}
        self.connections = 0
        self.paths: list[str] = []
        self.handshakes = handshakes
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.base = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._done = threading.Event()
        self._open: list[Connection] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._done.set()
        for conn in self._open:
            conn.close()
        self._listener.close()

    def __enter__(self) -> H2Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        accepted = 0
        while not self._done.is_set():
            if self.handshakes is not None and accepted >= self.handshakes:
                self._done.wait(0.2)
                continue
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(LINGER)
        try:
            sock = self.context.wrap_socket(raw, server_side=True)
        except OSError:
            raw.close()
            return
        self.connections += 1
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
        sock.setblocking(False)  # reads and writes share the lock: none may block in it
        conn = Connection(sock, h2c)
        self._open.append(conn)
        conn.act(lambda c: (c.initiate_connection(),
                            c.update_settings(self.settings) if self.settings else None))
        if self.on_connection is not None:
            self.on_connection(conn)
        end = time.monotonic() + LINGER
        try:
            while not conn.closed.is_set() and time.monotonic() < end:
                with conn.lock:
                    if conn.closed.is_set():
                        return
                    try:
                        data = sock.recv(65536)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        data = None
                    except OSError:  # ssl.SSLError too
                        return
                    if data == b"":
                        return
                    try:
                        events = h2c.receive_data(data) if data else []
                    except h2.exceptions.ProtocolError:
                        return
                    self._flush_locked(conn)
                if data is None:  # nothing to read yet: wait for it outside the lock
                    with contextlib.suppress(OSError, ValueError):  # closed meanwhile
                        select.select([sock], [], [], 0.2)
                    continue
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict(event.headers)
                        path = str(headers.get(":path", "/"))
                        self.paths.append(path)
                        script = self.scripts.get(path, self.default)
                        if script is None:
                            conn.act(lambda c, sid=event.stream_id: c.send_headers(
                                sid, [(":status", "404")], end_stream=True))
                            continue
                        threading.Thread(target=self._run, args=(script, Stream(
                            conn, event.stream_id, path)), daemon=True).start()
                    elif isinstance(event, h2.events.WindowUpdated | h2.events.SettingsAcknowledged
                                    | h2.events.RemoteSettingsChanged):
                        with conn.window:
                            conn.window.notify_all()
        finally:
            conn.close()

    @staticmethod
    def _flush_locked(conn: Connection) -> None:
        out = conn.h2c.data_to_send()
        if out:
            with contextlib.suppress(OSError):
                conn.send_locked(out)

    @staticmethod
    def _run(script: Script, stream: Stream) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            script(stream)


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One raw HTTP/2 frame."""
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags])
            + stream_id.to_bytes(4, "big") + payload)
