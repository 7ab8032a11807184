"""A listening socket on 127.0.0.1 whose connections are each handled on a thread of
their own, for the tests' scripted servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

# Seconds any one read or write of a handler may wait: under the tests' own timeout.
CONNECTION_DEADLINE = 60.0


def accept_each(handle: Callable[[socket.socket], None]) -> tuple[int, threading.Event]:
    """Listen on 127.0.0.1 (an OS-chosen port) and call ``handle(conn)`` for each
    connection on a thread of its own, until the returned event is set (it stops
    accepting within 0.2 s). Returns the port and that event."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        with listener:
            while not done.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                conn.settimeout(CONNECTION_DEADLINE)  # a handler's read ends, whatever comes
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

    port = listener.getsockname()[1]
    threading.Thread(target=serve, daemon=True).start()
    return port, done
