"""Pages parsed in a process of their own, forked from the master when it starts.

Parsing is a third of the master's CPU, and the master's one interpreter also
answers every worker; in a child process the parsing runs on another core (a
5,000-image crawl on 2 cores: 0.73 s, against 0.78 s in the master). The child
is forked before the master starts any thread (fork copies only the calling
thread), with BeautifulSoup and lxml already imported, so it is ready at once. A page
that kills the child (a parser crash, the kernel's out-of-memory killer) costs
that page only: the next page gets a new child. Where fork is not the
platform's way (Windows, macOS), pages are parsed in the master itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from crawler.errors import CrawlerError
from crawler.extract import Extraction, extract

log = logging.getLogger(__name__)

CLOSE_WAIT = 5.0  # seconds a child gets to leave once told, before it is killed


class ParserCrashed(CrawlerError):
    """The parser process died on a page; a new one takes the next page."""


class PageParser:
    """``extract`` in a child process; thread-safe, one page at a time."""

    def __init__(self, in_process: bool = not sys.platform.startswith("linux")) -> None:
        self._lock = threading.Lock()
        self._in_process = in_process
        self._closed = False
        self._conn: Connection | None = None
        self._process: Any = None
        if not in_process:
            self._start()

    @property
    def pid(self) -> int | None:
        """The child's process id; None when pages are parsed in this process."""
        return self._process.pid if self._process is not None else None

    def extract(self, html: bytes, page_url: str, **options: Any) -> Extraction:
        """``crawler.extract.extract(html, page_url, **options)``, in the child.

        Raises :class:`ParserCrashed` when the child died on this page.
        """
        if self._in_process:
            return extract(html, page_url, **options)
        with self._lock:
            if self._closed:
                raise ParserCrashed("the page parser was closed (the crawl is stopping)")
            if self._conn is None:
                self._start()  # the last one died
            assert self._conn is not None
            try:
                self._conn.send((html, page_url, options))
                parsed, result = self._conn.recv()
            except (EOFError, OSError) as exc:
                code = self._reap()
                raise ParserCrashed(f"the page parser died on this page (exit status {code})"
                                    ) from exc
        if not parsed:
            raise result  # extract's own error (a caller's mistake), as if called here
        return result  # type: ignore[no-any-return]

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """End the child: it leaves when its pipe closes, or is killed after ``wait`` s.

        With ``wait`` 0 it is killed first, so that a page it is parsing does not
        hold up the caller (whose page threads then see ParserCrashed).
        """
        self._closed = True
        process = self._process
        if process is not None and wait <= 0:
            process.kill()
        with self._lock:
            conn, self._conn = self._conn, None
            process, self._process = self._process, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(wait)
            if process.is_alive():
                process.kill()
                process.join(CLOSE_WAIT)

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, parent), name="page-parser",
                                  daemon=True)
        process.start()
        child.close()
        self._conn, self._process = parent, process

    def _reap(self) -> int | None:
        """Close the pipe to a child that failed and collect its exit status."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        process, self._process = self._process, None
        if process is None:
            return None
        process.join(CLOSE_WAIT)
        if process.is_alive():  # the pipe broke, but it lives on: do not leave it behind
            process.kill()
            process.join(CLOSE_WAIT)
        if not self._closed:
            log.warning("the page parser process ended (exit status %s); starting a new one",
                        process.exitcode)
        return process.exitcode  # type: ignore[no-any-return]


def _serve(conn: Connection, parents_end: Connection) -> None:
    """The child: parse what comes down the pipe until it closes."""
    parents_end.close()  # else the pipe would never read as closed here
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the master to handle
    while True:
        try:
            html, page_url, options = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[bool, Any] = (True, extract(html, page_url, **options))
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
            answer = (False, exc)
        conn.send(answer)
