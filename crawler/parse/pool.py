"""Pages parsed in processes of their own, forked from the master when it starts.

Parsing is most of the master's CPU, and the master's one interpreter also
answers every worker; in child processes the parsing runs on every core
(``crawl.parsers`` children at most, by default one per core it may use). The first is
forked before the master starts its threads, with lxml already imported, so it
is ready at once; a child forked later (for more pages at once, or after a
crash) is the same, and each leaves when
its pipe closes, so the descriptors it inherits do not outlive the master.

Each child parses what it is handed, one page or a few (a batch: one message
there and one back, which spares a child a wake-up per page); as many batches as
there are children are in flight at once: one per calling thread of ``extract``,
or handed over by ``send`` or ``send_many`` and answered by ``receive`` or
``receive_many`` when the child's pipe turns readable (the master's page loop,
which waits on every pipe at once). Children are forked as pages need
them: the first at once, another when all are busy, up to the limit. A child
that dies (a parser crash, the kernel's out-of-memory killer) is replaced, and
the page it was given is tried once more on the new child: only a page that
kills two children fails, and the other children's pages are untouched. A
child that dies under a batch of several pages blames none of them: the caller
hands each over again alone (:class:`BatchBroken`), as a suspect, where the same
rule holds (so the page that did it has killed three children when it fails). Where
fork is not the platform's way (Windows, macOS), pages are parsed in the
master itself; so are they, with a warning, while no child can be forked (a
host out of processes or memory), except a page that has killed a child.

Pages go down the pipe as bytes; results come back packed into plain tuples
(``_pack``), each image's description a tuple, the image list rebuilt from them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from crawler.errors import ParserCrashed, ParseTooSlow
from crawler.parse.extract import Extraction, ImageRef, extract

log = logging.getLogger(__name__)

CLOSE_WAIT = 5.0  # seconds a child gets to leave once told, before it is killed
# Seconds of CPU a child may spend on one page. A 10 MB page, the largest read, takes
# a few; a page built to be slow (thousands of sources, rows that never close) must not
# hold a parser, and a stop waiting for it, for minutes.
PARSE_CPU_LIMIT = 20.0
# Seconds of CPU between two strikes of the deadline once it is past: the exception a
# strike raises may be caught on its way (in a library's callback, an except that
# falls back to another parser), and the page would go on unbounded.
PARSE_DEADLINE_AGAIN = 0.5
ORPHAN_CHECK = 1.0  # seconds between a child's looks at whether its master is still there
PARSE_ATTEMPTS = 2  # children a page may see die before it is failed
# Seconds without trying to fork again after a fork failed: pages are parsed in the
# master meanwhile (and multiprocessing leaves four descriptors open per failed fork).
NO_CHILD_WAIT = 1.0
_MASTERS_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

Job = tuple[bytes, str, dict[str, Any]]  # a page's bytes, its URL, extract's options


# Held across each fork of a page parser of this process, and while a pool takes a child
# out and closes its pipe: a fork in between would copy an end no pool lists any more.
_FORKING = threading.RLock()
_POOLS: weakref.WeakSet[PageParser] = weakref.WeakSet()  # the pools of this process


class _NoChild(Exception):
    """No child process could be started (the system is out of processes or memory)."""


class BatchBroken(Exception):
    """The child died under a batch of several pages (or their answers could not be
    read): which page did it is unknown, so none is blamed; hand each over again
    alone, with ``suspect`` (a dead child is replaced when next needed)."""


class NoChildProcess(Exception):
    """Pages are parsed in the calling process for now: :meth:`PageParser.extract` it."""


@dataclass
class _Child:
    conn: Connection
    process: Any  # multiprocessing's Process of the fork context


class PageParser:
    """``extract`` in a pool of child processes; thread-safe, one page per child at a time.

    Up to ``processes`` children (None: one per core it may use); one is started at once,
    another only when a page comes while every started one is busy, so a
    master that parses one page at a time has one child.
    ``parser`` is the HTML engine for calls whose options name none.
    """

    def __init__(self, in_process: bool = not sys.platform.startswith("linux"),
                 parser: str = "lxml", processes: int | None = None) -> None:
        self._parser = parser
        self._in_process = in_process
        self._closed = False
        self._cond = threading.Condition()
        # One fork at a time in this process (_FORKING): a child closes its copies of
        # the master's ends of every other pipe, which it can only know of if none is
        # being made meanwhile; those of another pool too (two crawls in one program).
        with _FORKING:
            _POOLS.add(self)
        count = 0 if in_process else max(1, processes or usable_cores())
        self._children: list[_Child | None] = [None] * count
        self._leaving: list[_Child] = []  # let go (their pipes closed), not yet reaped
        # Slots no page is using; a slot's child is forked when the slot is
        # first needed, the first one now (before the master starts threads).
        self._idle: set[int] = set(range(count))
        self._last_pid: int | None = None
        # Batches handed over by send_many() and not yet answered: slot -> (jobs, attempt).
        self._sent: dict[int, tuple[list[Job], int]] = {}
        self._generation = 0  # children forked and reaped so far
        self._said_no_child = False
        self._no_child_until = 0.0  # no fork is tried before this (time.monotonic())
        self._no_child_why = ""
        if count:
            try:
                self._start(0)
            except _NoChild as exc:
                self._no_child(exc)
            self._last_pid = self._pid_of(0)

    @property
    def pid(self) -> int | None:
        """The process id of the child last given a page (at first, the first child's);
        None when pages are parsed in this process."""
        return self._last_pid

    @property
    def pids(self) -> list[int]:
        """The process ids of the children alive now, by slot."""
        return [child.process.pid for child in self._children if child is not None]

    @property
    def processes(self) -> int:
        """How many pages can be parsed at once in children (0: in this process)."""
        return len(self._children)

    def extract(self, html: bytes, page_url: str, **options: Any) -> Extraction:
        """``crawler.parse.extract.extract(html, page_url, **options)``, in a child.

        Blocks while every child is busy. Raises :class:`ParserCrashed` when two
        children in turn died on this page, or the parser was closed.
        """
        options.setdefault("parser", self._parser)
        if self._in_process:
            return extract(html, page_url, **options)
        slot = self._acquire()
        try:
            parsed, result = self._parse_in(slot, (html, page_url, options))
        except _NoChild as exc:
            # Slower, and without a child's protection, but the page is not lost.
            self._no_child(exc)
            return extract(html, page_url, **options)
        finally:
            self._release(slot)
        if not parsed:
            raise result  # extract's own error (a caller's mistake), as if called here
        return _unpack(result)

    # --- without waiting: for one event loop (the master's page loop) ----------------

    def send(self, html: bytes, page_url: str, **options: Any) -> int | None:
        """Hand a page to an idle child without waiting for its answer: the child's slot,
        whose pipe (in :meth:`pipes`) turns readable when the answer is there; then
        call :meth:`receive`. None when every child is busy: send it again later.

        Raises :class:`NoChildProcess` when pages are parsed in this process (not
        on Linux, or no child can be forked now): call :meth:`extract` instead.
        Raises :class:`ParserCrashed` when the parser was closed.
        """
        return self.send_many([(html, page_url, options)])

    def send_many(self, jobs: list[Job], *, suspect: bool = False) -> int | None:
        """:meth:`send` for several pages at once, ``(html, page_url, options)`` each, in
        one message to one child; their answers come together (:meth:`receive_many`).

        ``suspect``: these pages were in a batch whose child died; while no child can
        be forked they fail with :class:`ParserCrashed` rather than be parsed in this
        process, as a page that killed a child does.
        """
        if self._in_process:
            raise NoChildProcess("pages are parsed in this process")
        if not jobs:
            raise ValueError("no page to send")
        jobs = [(html, url, {"parser": self._parser, **options}) for html, url, options in jobs]
        with self._cond:
            if self._closed:
                raise ParserCrashed("the page parser was closed (the crawl is stopping)")
            if not self._idle:
                return None
            slot = min(self._idle)
            self._idle.discard(slot)
        try:
            self._hand_over(slot, jobs, attempt=1)
        except _NoChild as exc:
            self._release(slot)
            self._no_child(exc)
            if suspect:  # it may have killed a child: parsed here, it could kill this one
                raise ParserCrashed(f"the page parser died under this page and others,"
                                    f" and {exc}") from exc
            raise NoChildProcess(str(exc)) from exc
        except BaseException:
            self._release(slot)
            raise
        return slot

    @property
    def idle(self) -> int:
        """How many children (started or not) have no page now."""
        with self._cond:
            return len(self._idle)

    @property
    def generation(self) -> int:
        """A number that changes whenever a child is forked or its pipe closed."""
        return self._generation

    def pipes(self) -> dict[int, tuple[int, int]]:
        """The descriptor of each live child's pipe, with its slot and the child's
        process id (they change as children are forked and replaced: see
        :attr:`generation`)."""
        with self._cond:
            return {child.conn.fileno(): (slot, child.process.pid)
                    for slot, child in enumerate(self._children) if child is not None}

    def receive(self, slot: int) -> Extraction | None:
        """The answer to the page sent to ``slot`` (its pipe is readable).

        None when there is none yet: the child died and the page went to a new one
        (whose pipe is then in :meth:`pipes`), or the child had no page and died idle
        (it is replaced when next needed). Raises :class:`ParserCrashed` when two
        children in turn died on the page, extract's own error as if called here.
        """
        answers = self.receive_many(slot)
        if answers is None:
            return None
        [answer] = answers  # BatchBroken is for batches of several: send() sends one
        if isinstance(answer, Exception):
            raise answer  # extract's own error (a caller's mistake), as if called here
        return answer

    def receive_many(self, slot: int) -> list[Extraction | Exception] | None:
        """The answers to the batch sent to ``slot`` (its pipe is readable), in its order:
        each page's Extraction, or extract's own error for that page.

        None when there are none yet (see :meth:`receive`). Raises :class:`BatchBroken`
        when the child died under several pages, or their answers could not be read;
        :class:`ParserCrashed` when the parser was closed under them, or when two
        children in turn died on a batch of one page.
        """
        sent = self._sent.get(slot)
        child = self._children[slot]
        if child is None:
            if sent is None:
                return None
            del self._sent[slot]  # closed under it
            self._release(slot)
            raise ParserCrashed("the page parser was closed under this page"
                                " (the crawl is stopping)")
        try:
            answers = child.conn.recv()
        except (EOFError, OSError) as exc:
            code = self._reap(slot, child)
            if sent is None:
                return None  # it died idle: not a page's doing
            jobs, attempt = sent
            if self._closed or attempt >= PARSE_ATTEMPTS or len(jobs) > 1:
                del self._sent[slot]
                self._release(slot)
                if self._closed:
                    raise ParserCrashed("the page parser was closed under this page"
                                        " (the crawl is stopping)") from exc
                if len(jobs) > 1:
                    raise BatchBroken(f"the page parser died under {len(jobs)} pages"
                                      f" (exit status {code})") from exc
                raise ParserCrashed(f"the page parser died on this page {attempt} time(s)"
                                    f" (last exit status {code})") from exc
            try:
                self._hand_over(slot, jobs, attempt + 1)
            except _NoChild as no_child:
                del self._sent[slot]
                self._release(slot)
                # It killed a child: parsed here, it could kill the master.
                raise ParserCrashed(f"the page parser died on this page, and {no_child}"
                                    ) from no_child
            except BaseException:
                del self._sent[slot]
                self._release(slot)
                raise
            return None
        except BaseException as exc:  # an answer that cannot be read (an error class that
            if sent is not None:      # does not unpickle): the page fails, the child stays
                del self._sent[slot]
                self._release(slot)
                if len(sent[0]) > 1 and isinstance(exc, Exception):
                    raise BatchBroken(f"the answers to {len(sent[0])} pages could not be"
                                      f" read ({exc.__class__.__name__}: {exc})") from exc
            raise
        if sent is None:  # an answer nobody waits for: a child that lost its way
            return None
        del self._sent[slot]
        self._release(slot)
        return [_unpack(result) if parsed else result for parsed, result in answers]

    def _hand_over(self, slot: int, jobs: list[Job], attempt: int) -> None:
        """Send ``jobs`` to the child of ``slot`` (forked if needed, replaced if it died
        idle); raises _NoChild when none can be forked, ParserCrashed when closed."""
        for tries in (1, 2):
            if self._closed:
                raise ParserCrashed("the page parser was closed (the crawl is stopping)")
            child = self._children[slot]
            if child is None:
                child = self._start(slot)
            self._last_pid = child.process.pid
            try:
                child.conn.send(jobs)
            except OSError as exc:  # it died idle, before the page reached it
                self._reap(slot, child)
                if tries == 2:
                    raise ParserCrashed(f"the page parser could not be given the page ({exc})"
                                        ) from exc
                continue
            self._sent[slot] = (jobs, attempt)
            return

    def let_go(self) -> None:
        """No page comes any more: the idle children are told to leave now (their pipes
        closed), without waiting for them; :meth:`close` reaps them.

        A child's exit takes a few milliseconds (its copy of the master's memory is
        unmapped): it then overlaps what the caller does before it closes the pool.
        """
        with _FORKING:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
                leaving = [(slot, child) for slot, child in enumerate(self._children)
                           if child is not None and slot in self._idle]
                for slot, child in leaving:
                    self._children[slot] = None
                    self._leaving.append(child)
                if leaving:
                    self._generation += 1
            for _, child in leaving:
                with contextlib.suppress(OSError):
                    child.conn.close()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """End the children: each leaves when its pipe closes, or is killed after ``wait`` s.

        Pages in flight get up to ``wait`` s to finish. With ``wait`` 0 the
        children are killed first, so that pages being parsed do not hold up
        the caller (whose pages in flight then end with ParserCrashed).
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            children = [child for child in self._children if child is not None]
        if wait <= 0:
            for child in children:
                child.process.kill()
        deadline = time.monotonic() + max(wait, 0.0)
        with self._cond:
            while len(self._idle) < len(self._children):  # pages in flight
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        with _FORKING, self._cond:
            children = [child for child in self._children if child is not None]
            self._children = [None] * len(self._children)
            self._generation += 1
            children += self._leaving
            self._leaving = []
            for child in children:
                with contextlib.suppress(OSError):
                    child.conn.close()
        for child in children:
            _join_or_kill(child.process, max(wait, 0.0))

    # --- slots ----------------------------------------------------------------------

    def _acquire(self) -> int:
        """The lowest idle slot: started children before new ones, and a dead
        idle child is found (and replaced) before it is left lying."""
        with self._cond:
            while not self._idle and not self._closed:
                self._cond.wait()
            if self._closed:
                raise ParserCrashed("the page parser was closed (the crawl is stopping)")
            slot = min(self._idle)
            self._idle.discard(slot)
            return slot

    def _release(self, slot: int) -> None:
        with self._cond:
            self._idle.add(slot)
            self._cond.notify()

    def _parse_in(self, slot: int, job: Job) -> tuple[bool, Any]:
        for attempt in range(1, PARSE_ATTEMPTS + 1):
            if self._closed:
                raise ParserCrashed("the page parser was closed (the crawl is stopping)")
            child = self._children[slot]
            if child is None:
                try:
                    child = self._start(slot)  # the last one died
                except _NoChild as exc:
                    if attempt == 1:
                        raise  # not this page's doing: it is parsed here instead
                    # It killed a child: parsed here, it could kill the master.
                    raise ParserCrashed(f"the page parser died on this page, and {exc}"
                                        ) from exc
            self._last_pid = child.process.pid
            try:
                child.conn.send([job])
                [answer] = child.conn.recv()
                return answer  # type: ignore[no-any-return]
            except (EOFError, OSError) as exc:
                # The child may have died idle, before this page reached it:
                # a fresh child gets the page once more before it is blamed.
                code = self._reap(slot, child)
                if self._closed:
                    raise ParserCrashed("the page parser was closed under this page"
                                        " (the crawl is stopping)") from exc
                if attempt == PARSE_ATTEMPTS:
                    raise ParserCrashed(
                        f"the page parser died on this page {attempt} time(s)"
                        f" (last exit status {code})") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    # --- children -------------------------------------------------------------------

    def _pid_of(self, slot: int) -> int | None:
        child = self._children[slot]
        return child.process.pid if child is not None else None

    def _start(self, slot: int) -> _Child:
        with _FORKING:
            if time.monotonic() < self._no_child_until:
                raise _NoChild(self._no_child_why)
            try:
                return self._fork(slot)
            except _NoChild as exc:
                self._no_child_until = time.monotonic() + NO_CHILD_WAIT
                self._no_child_why = str(exc)
                raise

    def _fork(self, slot: int) -> _Child:
        context = multiprocessing.get_context("fork")
        try:
            parent, child_end = context.Pipe()
        except OSError as exc:  # out of descriptors
            raise _NoChild(f"no page parser process can be started ({exc})") from exc
        # The child gets copies of the master's ends of its siblings' pipes, and of
        # another pool's; it closes them, or a sibling would not see its pipe close
        # (two crawls at once in threads each waited CLOSE_WAIT for their parsers).
        masters_ends = [parent]
        for pool in list(_POOLS):
            with pool._cond:
                masters_ends += [c.conn for c in pool._children if c is not None]
        process = context.Process(target=_serve, args=(child_end, masters_ends),
                                  name=f"page-parser-{slot}", daemon=True)
        # Blocked across the fork, so that the child has ignored them before one
        # can reach it; the parent gets any that came meanwhile when unblocked.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _MASTERS_SIGNALS)
        try:
            process.start()
        except OSError as exc:  # fork failed (EAGAIN, ENOMEM): no pipe is left open
            parent.close()
            child_end.close()
            raise _NoChild(f"no page parser process can be started ({exc})") from exc
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child_end.close()  # before the next fork, or that child would hold it open
        child = _Child(parent, process)
        with self._cond:
            if self._closed:  # closed while this one was forked: it goes at once
                parent.close()
                _join_or_kill(process, CLOSE_WAIT)
                raise ParserCrashed("the page parser was closed (the crawl is stopping)")
            self._children[slot] = child
            self._generation += 1
        return child

    def _no_child(self, exc: _NoChild) -> None:
        if not self._said_no_child:
            self._said_no_child = True
            log.warning("%s: pages are parsed in the master until one can be", exc)

    def _reap(self, slot: int, child: _Child) -> int | None:
        """Close the pipe to a child that failed and collect its exit status."""
        with _FORKING:
            with self._cond:
                if self._children[slot] is child:
                    self._children[slot] = None
                    self._generation += 1
            with contextlib.suppress(OSError):
                child.conn.close()
        _join_or_kill(child.process, CLOSE_WAIT)  # the pipe broke; if it lives on, not for long
        if not self._closed:
            log.warning("the page parser process ended (exit status %s); starting a new one",
                        child.process.exitcode)
        return child.process.exitcode  # type: ignore[no-any-return]


def usable_cores() -> int:
    """The cores this process may run on: in a container or under ``taskset`` often
    fewer than the host's (``os.cpu_count``), and parsers beyond them only queue."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on every platform
        return max(1, os.cpu_count() or 1)


def _join_or_kill(process: Any, wait: float) -> None:
    """Wait up to ``wait`` s for ``process`` to leave, then kill it: none is left behind."""
    process.join(wait)
    if process.is_alive():
        process.kill()
        process.join(CLOSE_WAIT)


_Packed = tuple[str, tuple[str, ...], tuple[str, ...], tuple[tuple[Any, ...], ...], bool, str,
                int]


def _pack(extraction: Extraction) -> _Packed:
    """An extraction as plain tuples: no class per image, no image URL sent twice."""
    return (extraction.base_url, extraction.links, extraction.stylesheets,
            tuple(tuple(ref) for ref in extraction.image_refs), extraction.nofollow,
            extraction.encoding, extraction.too_long)


def _unpack(packed: _Packed) -> Extraction:
    base_url, links, stylesheets, refs, nofollow, encoding, too_long = packed
    image_refs = tuple(ImageRef._make(ref) for ref in refs)
    return Extraction(base_url=base_url, links=links,
                      images=tuple(ref.url for ref in image_refs),
                      stylesheets=stylesheets, image_refs=image_refs, nofollow=nofollow,
                      encoding=encoding, too_long=too_long)


def _serve(conn: Connection, masters_ends: list[Connection]) -> None:
    """A child: parse what comes down the pipe until it closes."""
    for end in masters_ends:  # else its pipe, or a sibling's, would never read as closed
        with contextlib.suppress(OSError):
            end.close()
    # Ctrl-C, a polite kill and a hang-up are for the master to handle: it closes the pipe.
    for signum in _MASTERS_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTERS_SIGNALS)
    _leave_with_the_master()
    _first_to_end_when_memory_runs_out()
    signal.signal(signal.SIGPROF, _too_slow)
    while True:
        try:
            jobs = conn.recv()
        except (EOFError, OSError):
            return
        answers: list[tuple[bool, Any]] = []
        for html, page_url, options in jobs:
            # One answer per page, whenever the deadline strikes: built here, and
            # appended once (a late signal used to add a second answer for one page).
            answer: tuple[bool, Any]
            try:
                _DEADLINE.armed, _DEADLINE.struck = True, False
                # This page's CPU, and again and again past it (see PARSE_DEADLINE_AGAIN).
                signal.setitimer(signal.ITIMER_PROF, PARSE_CPU_LIMIT, PARSE_DEADLINE_AGAIN)
                try:
                    found = extract(html, page_url, **options)
                finally:
                    _DEADLINE.armed = False  # from here, a late signal is let go
                    signal.setitimer(signal.ITIMER_PROF, 0)
                if _DEADLINE.struck:  # its exception was caught on the way: too slow all the same
                    raise _too_slow_error()
                answer = (True, _pack(found))
            except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
                answer = (False, exc)  # extract's own error, or ParseTooSlow
            answers.append(answer)
        conn.send(answers)


class _Deadline:
    armed = False  # a page is being parsed: its deadline may stop it
    struck = False  # the page went past its deadline


_DEADLINE = _Deadline()


def _too_slow(signum: int, frame: object) -> None:
    if _DEADLINE.armed:
        _DEADLINE.struck = True
        raise _too_slow_error()


def _too_slow_error() -> ParseTooSlow:
    return ParseTooSlow(f"page too slow to parse (over {PARSE_CPU_LIMIT:g} s of CPU)")


def _first_to_end_when_memory_runs_out() -> None:
    """Have the kernel end this child before any other process when the machine runs out
    of memory: a hostile page of 10 MB takes a child past a gigabyte (a page of nested
    elements, images or sources), and a child killed costs its page alone, where the
    master, chosen for its size, was the whole crawl. (A score may be raised unasked.)"""
    with contextlib.suppress(OSError):  # not Linux, or no /proc
        Path("/proc/self/oom_score_adj").write_text("1000")


def _leave_with_the_master() -> None:
    """End this child when the process that forked it is gone: its pipe closing says so
    only when the child next reads it, and a child busy with a page (a master killed
    with -9 under a slow one) went on alone for as long as the page took."""
    master = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(ORPHAN_CHECK)
            if os.getppid() != master:
                os._exit(1)

    threading.Thread(target=watch, name="master-watch", daemon=True).start()
