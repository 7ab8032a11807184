"""Pages parsed in a process of their own, forked from the master when it starts.

Parsing is a third of the master's CPU, and the master's one interpreter also
answers every worker; in a child process the parsing runs on another core (a
5,000-image crawl on 2 cores: 0.73 s, against 0.78 s in the master). The first
child is forked before the master starts its threads, with BeautifulSoup and
lxml already imported, so it is ready at once; a child forked later (after a
crash) is the same, and it leaves when its pipe closes, so the descriptors it
inherits do not outlive the master. A child that dies (a parser crash, the
kernel's out-of-memory killer) is replaced, and the page it was given is tried
once more on the new child: only a page that kills two children fails. Where
fork is not the platform's way (Windows, macOS), pages are parsed in the master
itself.
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
from crawler.parse.extract import Extraction, extract

log = logging.getLogger(__name__)

CLOSE_WAIT = 5.0  # seconds a child gets to leave once told, before it is killed
PARSE_ATTEMPTS = 2  # children a page may see die before it is failed
_MASTERS_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class ParserCrashed(CrawlerError):
    """The parser process died twice on one page (or was closed under it)."""


class PageParser:
    """``extract`` in a child process; thread-safe, one page at a time."""

    def __init__(self, in_process: bool = not sys.platform.startswith("linux"),
                 parser: str = "lxml") -> None:
        self._parser = parser  # the engine for calls that name none
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
        """``crawler.parse.extract.extract(html, page_url, **options)``, in the child.

        Raises :class:`ParserCrashed` when two children in turn died on this page.
        """
        options.setdefault("parser", self._parser)
        if self._in_process:
            return extract(html, page_url, **options)
        with self._lock:
            for attempt in range(1, PARSE_ATTEMPTS + 1):
                if self._closed:
                    raise ParserCrashed("the page parser was closed (the crawl is stopping)")
                if self._conn is None:
                    self._start()  # the last one died
                assert self._conn is not None
                try:
                    self._conn.send((html, page_url, options))
                    parsed, result = self._conn.recv()
                    break
                except (EOFError, OSError) as exc:
                    # The child may have died idle, before this page reached it:
                    # a fresh child gets the page once more before it is blamed.
                    code = self._reap()
                    if self._closed:
                        raise ParserCrashed("the page parser was closed under this page"
                                            " (the crawl is stopping)") from exc
                    if attempt == PARSE_ATTEMPTS:
                        raise ParserCrashed(
                            f"the page parser died on this page {attempt} time(s)"
                            f" (last exit status {code})") from exc
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
            _join_or_kill(process, wait)

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, parent), name="page-parser",
                                  daemon=True)
        # Blocked across the fork, so that the child has ignored them before one
        # can reach it; the parent gets any that came meanwhile when unblocked.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _MASTERS_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
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
        _join_or_kill(process, CLOSE_WAIT)  # the pipe broke; if it lives on, not for long
        if not self._closed:
            log.warning("the page parser process ended (exit status %s); starting a new one",
                        process.exitcode)
        return process.exitcode  # type: ignore[no-any-return]


def _join_or_kill(process: Any, wait: float) -> None:
    """Wait up to ``wait`` s for ``process`` to leave, then kill it: none is left behind."""
    process.join(wait)
    if process.is_alive():
        process.kill()
        process.join(CLOSE_WAIT)


def _serve(conn: Connection, parents_end: Connection) -> None:
    """The child: parse what comes down the pipe until it closes."""
    parents_end.close()  # else the pipe would never read as closed here
    # Ctrl-C and a polite kill are for the master to handle: it closes the pipe.
    for signum in _MASTERS_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTERS_SIGNALS)
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
