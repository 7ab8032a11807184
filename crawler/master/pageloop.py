"""The master's pages, from one event thread: every fetch, every hand-over to a parser.

A page visit is the steps of ``master.visit.PageVisitor``: robots.txt, the
fetch (redirects judged hop by hop), the parse in a parser process, the images
it shows. This loop takes them for all pages in flight at once: the requests
run together on one libcurl multi handle (``crawler.fetch.multi``), pages go
to idle parser processes down their pipes (pages that wait, a few to a message;
a page read while others are on their way waits a few milliseconds for company)
and come back when those turn readable, and the rest is done here between two
waits. A thread per page, as
before, made the master's threads hand its interpreter to each other about 25
times a page, which cost more than fetching and handing over the page itself.

A step that may have to wait on the network (a robots.txt or a style sheet
not read yet: once per origin or sheet) runs on a helper thread instead, and
the page comes back to the loop when it is done, so that no page waits for
another's robots.txt. Each page's future gets its :class:`Visit`, never an
exception: a bug fails that page alone, as a page thread's did.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pycurl

from crawler.errors import ParserCrashed
from crawler.fetch.cookiefeed import JarWatch
from crawler.fetch.easy import Reply
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.multi import MultiClient
from crawler.fetch.options import RequestOptions
from crawler.fetch.policy import MAX_REDIRECTS
from crawler.master.pages import (
    ACCEPT_HTML,
    Page,
    after_hop,
    too_many_redirects,
    too_slow,
    wants_html,
)
from crawler.master.visit import PageVisitor, Visit
from crawler.model.pacing import Pace, Paces
from crawler.model.urls import host_key
from crawler.parse.extract import Extraction
from crawler.parse.pool import BatchBroken, NoChildProcess, PageParser

log = logging.getLogger(__name__)

TICK = 0.25  # longest wait for news, so that a close is seen promptly
HELPERS = 4  # threads at least for steps that wait on the network (robots.txt, style sheets)
# Pages handed to one parser in one message at most. With pages in hand enough to fill
# them, 16 took 2-4% less time and CPU than 8 (GIMP manual, page-heavy site, dry run).
PARSE_BATCH = 16
# Seconds a page read may wait for company before it goes to a free parser alone, while
# other pages are still being fetched: each message costs the parser a wake-up.
PARSE_HOLD = 0.004
T = TypeVar("T")


@dataclass(eq=False)  # compared and hashed by identity
class _Job:
    """One page on its way through the loop."""

    url: str
    depth: int
    future: Future[Visit]
    started: float = 0.0  # when its first request was made (time.monotonic()); 0 before
    current: str = ""  # the URL of the hop being fetched
    hops: int = 0  # requests made
    paced_at: float = 0.0  # when its next hop began to wait for its host's pace
    status: int = 0  # of the last reply
    page: Page | None = None  # once read
    alone: bool = False  # it was in a batch whose parser died: it goes to one alone
    read_at: float = 0.0  # when its page was read and began to wait for a parser


class PageLoopEnded(RuntimeError):
    """A page was submitted to a page loop that has ended."""


class _Wake:
    """The selector's data for the socket other threads wake the loop with."""


class PageLoop:
    """Visits pages submitted from any thread, on one thread of its own; see the module doc."""

    def __init__(self, visitor: PageVisitor, *, parser: PageParser, policy: AddressPolicy,
                 options: RequestOptions, timeout: float, max_bytes: int,
                 ca_file: str | None = None, share: pycurl.CurlShare | None = None,
                 watch: JarWatch | None = None, concurrency: int = HELPERS,
                 fetches: int | None = None, delay: float = 0.0,
                 paces: Paces | None = None) -> None:
        """``share``: the cookie jar (and caches) of the client that reads robots.txt and
        style sheets, so that they see the cookies pages set (``watch``: told when one
        does). ``concurrency``: pages
        submitted at most at once; each may have a step on a helper thread, so there
        are that many helpers (started as needed): none waits behind another's.

        ``fetches``: pages being fetched at most at once (default: ``concurrency``),
        from a page's first request until it is read, its redirects included; the
        other pages wait, in the order they came. While the pages read and not yet
        parsed hold ``fetches * max_bytes`` or more, none starts: the parsers catch up
        first. Each request of a page (a redirect's hop too) waits for its host's pace: ``delay``
        seconds between two (or its robots.txt's Crawl-delay, if longer), and any
        :meth:`hold`. The crawl loop paces the pages it hands out, but a page handed
        out may wait here, and pages handed out before their robots.txt was read
        would otherwise go back to back once it is. ``paces``: the hosts' paces,
        shared with whatever else makes requests to them (the board's image leases),
        so that the delay spaces them all and a hold from either side holds both
        (default: the loop's own, with ``delay``)."""
        self._visitor = visitor
        self._parser = parser
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._selector = selectors.DefaultSelector()
        self._client = MultiClient(policy, options, selector=self._selector, ca_file=ca_file,
                                   share=share, watch=watch)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _Wake)
        self._incoming: queue.SimpleQueue[_Job] = queue.SimpleQueue()  # submitted pages
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()  # steps back
        self._lock = threading.Lock()  # submit() against the end of the loop
        self._ended = False
        self._jobs: set[_Job] = set()
        self.concurrency = concurrency  # pages in hand at most: the crawl loop's room
        self._fetches = fetches or concurrency
        self._to_fetch: collections.deque[_Job] = collections.deque()  # waiting for a request
        self._fetching: set[_Job] = set()  # first request made, page not read yet
        # Redirect hops of pages being fetched, waiting for their host's pace (a hop is
        # a request too); they hold their fetch's room already.
        self._hops: collections.deque[_Job] = collections.deque()
        self._starting = True  # False once stop_starting() was called
        self._paces = paces if paces is not None else Paces(delay)
        self._waits_told: list[Pace] = []  # paces told a page waits, by _start_fetches
        self._crawl_delays: dict[str, float] = {}  # the Crawl-delay in each host's pace
        self._paced_until: float | None = None  # when a page waiting for its pace may go
        self._to_parse: collections.deque[_Job] = collections.deque()
        self._parsing: dict[int, list[_Job]] = {}  # by parser slot
        self._pipes: dict[int, tuple[int, int]] = {}  # fd -> (slot, pid), as registered
        self._generation = -1  # the parser's generation the registrations are of
        self._helpers = ThreadPoolExecutor(max(HELPERS, concurrency),
                                           thread_name_prefix="page-helper")
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="pages", daemon=True)
        self._thread.start()

    # ----- called from other threads ------------------------------------------------

    def submit(self, url: str, depth: int) -> Future[Visit]:
        """Visit ``url`` (found at ``depth``); the future gets its Visit.

        Raises PageLoopEnded once the loop has ended (closed, or stopped by a bug).
        """
        return self.submit_many([(url, depth)])[0]

    def submit_many(self, pages: Iterable[tuple[str, int]]) -> list[Future[Visit]]:
        """Visit each of ``pages`` (URL, depth), as :meth:`submit`, with one wake-up of
        the loop: one a page (a write to its socket, and the loop's thread taking the
        interpreter's lock in the middle of the batch) was 45 ms of the crawl loop's
        thread for a real site's 691 pages."""
        jobs = [_Job(url, depth, Future()) for url, depth in pages]
        with self._lock:
            if self._ended:
                raise PageLoopEnded("the page loop has ended; no page can be visited")
            for job in jobs:
                self._incoming.put(job)
        if jobs:
            self._wake()
        return [job.future for job in jobs]

    def hold(self, host: str, until: float) -> None:
        """Make no new request of ``host`` (``host_key``) before ``until``
        (time.monotonic()); a hold is never shortened."""
        # At once, from the caller's thread (a pace is safe to share): the board's image
        # leases, which may share the pace, are held from now, not from the loop's turn.
        self._paces.of(host).hold(until)

    def slowed_elsewhere(self, host: str, seconds: float) -> None:
        """``host`` was slowed down to ``seconds`` between two requests where the crawl's
        paces are kept (a broker's board): the pages in hand here go by it too."""
        self._paces.of(host).slowed_elsewhere(time.monotonic(), seconds)

    def stop_starting(self) -> None:
        """Fetch no page not started yet: the pages waiting for a request are cancelled
        (their futures say so), and those in flight go on."""
        self._post(self._cancel_waiting)

    def close(self, wait: float = 5.0) -> None:
        """Stop the loop; pages still in flight are cancelled (their futures say so)."""
        self._closing = True
        self._wake()
        self._thread.join(wait)
        self._helpers.shutdown(wait=False, cancel_futures=True)

    def _post(self, step: Callable[[], None]) -> None:
        self._inbox.put(step)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full socket buffer wakes it already
            self._wake_w.send(b"\0")

    # ----- the loop -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                self._wait_and_act()
                self._take_inbox()
                self._take_fetched()
                self._feed_parsers()
                self._start_fetches()
        except BaseException:
            log.exception("the page loop failed")
            raise
        finally:
            self._shut_down()

    def _wait_and_act(self) -> None:
        wait = TICK
        for due in (self._client.due(), self._held_until(), self._paced_until):
            if due is not None:
                wait = max(0.0, min(wait, due - time.monotonic()))
        for key, mask in self._selector.select(wait):
            data = key.data
            if data is _Wake:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            elif data is self._client:
                self._client.act(key.fd, mask)
            elif self._pipes.get(key.fd) == data:  # not a pipe replaced since the select
                self._answered(data[0])
        due = self._client.due()
        if due is not None and time.monotonic() >= due:
            self._client.tick()

    def _take_inbox(self) -> None:
        # Steps first: a stop_starting() asked before a submit() applies to its page.
        while True:
            try:
                step = self._inbox.get_nowait()
            except queue.Empty:
                break
            step()
        while True:
            try:
                job = self._incoming.get_nowait()
            except queue.Empty:
                return
            self._jobs.add(job)
            self._guarded(job, functools.partial(self._begin, job))

    def _shut_down(self) -> None:
        with self._lock:
            self._ended = True  # from now on submit() refuses
        self._no_page_waits()  # no page of this loop's waits any more: images go on
        while True:
            try:
                self._jobs.add(self._incoming.get_nowait())
            except queue.Empty:
                break
        for job in list(self._jobs):
            # Said to wait() too: cancelled alone, a page of a loop a bug stopped was
            # waited for by the crawl for ever.
            self._cancel(job)
        self._client.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ----- the steps of a page ----------------------------------------------------------

    def _guarded(self, job: _Job, step: Callable[[], None]) -> None:
        """Run one of ``job``'s steps; a bug in it fails that page alone."""
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - failed() logs it; the page fails alone
            self._done(job, self._visitor.failed(job.url, job.depth, exc))

    def _off_loop(self, job: _Job, work: Callable[[], T], then: Callable[[T], None]) -> None:
        """Run ``work`` on a helper thread (it may wait on the network); ``then`` its
        result back on the loop."""
        def back(future: Future[T]) -> None:
            def step() -> None:
                error = future.exception() if not future.cancelled() else None
                if future.cancelled() or error is not None:
                    cause = error if isinstance(error, Exception) else RuntimeError("cancelled")
                    self._done(job, self._visitor.failed(job.url, job.depth, cause))
                    return
                self._guarded(job, lambda: then(future.result()))
            self._post(step)

        self._helpers.submit(work).add_done_callback(back)

    def _begin(self, job: _Job) -> None:
        visitor = self._visitor
        if visitor.robots_ready(job.url):
            self._guarded(job, lambda: self._checked(job, visitor.refused(job.url, job.depth)))
        else:
            self._off_loop(job, lambda: visitor.refused(job.url, job.depth),
                           lambda refused: self._checked(job, refused))

    def _checked(self, job: _Job, refused: Visit | None) -> None:
        if refused is not None:
            self._done(job, refused)
            return
        job.current = job.url
        self._fetch(job)

    def _fetch(self, job: _Job) -> None:
        """Request ``job``'s current hop: a redirect's at once (its page is being
        fetched), a page's first once it may start (see ``__init__``)."""
        if job.hops:
            job.paced_at = time.monotonic()
            self._hops.append(job)
            self._start_fetches()
        elif not self._starting:
            self._cancel(job)
        else:
            self._to_fetch.append(job)
            self._start_fetches()

    def _start_fetches(self) -> None:
        self._paced_until = None
        self._no_page_waits()  # told again below, of the hosts a page still waits for
        if self._hops:
            self._start_hops()
        waiting = self._to_fetch
        if not waiting or len(self._fetching) >= self._fetches:
            return
        # Each page read waits for a parser with its body: a deeper pipeline must not
        # hold more of them than the fetches themselves could bring.
        if self._held_bytes() >= self._fetches * self._max_bytes:
            return
        now, paced, later = time.monotonic(), [], []
        while waiting and len(self._fetching) < self._fetches:
            job = waiting.popleft()
            given_up = self._visitor.host_given_up(job.url, job.depth)
            if given_up is not None:  # its host timed out again and again as it waited
                self._done(job, given_up)
                continue
            pace = self._pace_of(job.url)
            if not pace.take(now, page=True):
                paced.append(job)
                later.append(pace.next_time)
                self._page_waits(pace)
                continue
            self._fetching.add(job)
            self._guarded(job, functools.partial(self._request, job))
        waiting.extendleft(reversed(paced))  # in their order, before the rest
        if later and (self._paced_until is None or min(later) < self._paced_until):
            self._paced_until = min(later)  # (a hop may wait for an earlier time already)

    def _start_hops(self) -> None:
        """Request the redirect hops whose host's pace allows one now; the others wait."""
        now, paced = time.monotonic(), []
        while self._hops:
            job = self._hops.popleft()
            pace = self._pace_of(job.current)
            if pace.take(now, page=True):
                job.started += now - job.paced_at  # its deadline is for requests, not waits
                self._guarded(job, functools.partial(self._request, job))
            else:
                paced.append(job)
                self._page_waits(pace)
                if self._paced_until is None or pace.next_time < self._paced_until:
                    self._paced_until = pace.next_time
        self._hops.extend(paced)

    def _page_waits(self, pace: Pace) -> None:
        """Tell ``pace`` a page waits for its turn: its images leave it the next."""
        if not pace.page_waits:
            pace.page_waits = True
            self._waits_told.append(pace)

    def _no_page_waits(self) -> None:
        for pace in self._waits_told:
            pace.page_waits = False
        self._waits_told.clear()

    def _pace_of(self, url: str) -> Pace:
        host = host_key(url)
        pace = self._paces.of(host)
        # Asked at each request: a robots.txt read again past its age may change it.
        delay = self._visitor.crawl_delay(url)  # None while its robots.txt is not read
        if delay is not None and self._crawl_delays.get(host) != delay:
            self._crawl_delays[host] = delay
            pace.set_crawl_delay(delay)
        return pace

    def _cancel_waiting(self) -> None:
        self._starting = False
        while self._to_fetch:
            self._cancel(self._to_fetch.popleft())
        # A redirect's hop that waits for its host's pace (a hold of up to
        # download.backoff_max, a Crawl-delay) is not sent either: its page stays to
        # visit, as those not started, instead of holding the stop for that long.
        while self._hops:
            job = self._hops.popleft()
            self._fetching.discard(job)
            self._cancel(job)
        self._no_page_waits()

    def _cancel(self, job: _Job) -> None:
        self._jobs.discard(job)
        job.future.cancel()  # never set running: a cancel always takes
        # Only then does concurrent.futures.wait() count it as done (the crawl loop
        # waits for its pages so when it stops).
        job.future.set_running_or_notify_cancel()

    def _held_bytes(self) -> int:
        held = sum(len(job.page.body) for job in self._to_parse if job.page is not None)
        for jobs in self._parsing.values():
            held += sum(len(job.page.body) for job in jobs if job.page is not None)
        return held

    def _request(self, job: _Job) -> None:
        if not job.started:  # its time runs from its first request, not from its wait
            job.started = time.monotonic()
        left = job.started + self._timeout - time.monotonic()
        if left <= 0:
            self._read(job, too_slow(job.url, job.current, self._timeout))
            return
        job.hops += 1
        self._client.start(job, job.current, accept=ACCEPT_HTML, max_bytes=self._max_bytes,
                           timeout=left, wants=wants_html, first_url=job.url)

    def _take_fetched(self) -> None:
        for token, reply in self._client.finished():
            job = token
            assert isinstance(job, _Job)
            job.status = reply.status
            self._guarded(job, functools.partial(self._hop_done, job, reply))

    def _hop_done(self, job: _Job, reply: Reply) -> None:
        if reply.ok and reply.status < 400:  # an answer: a slowed-down host speeds up
            self._paces.of(host_key(job.current)).answered(time.monotonic())
        step = after_hop(job.url, job.current, reply, self._timeout)
        if isinstance(step, Page):
            self._read(job, step)
            return
        target, visitor = step, self._visitor
        def refusal() -> Page | None:
            return visitor.hop_refusal(job.url, job.current, job.status, target)

        if visitor.robots_ready(target):
            self._judged_hop(job, target, refusal())
        else:
            self._off_loop(job, refusal, lambda refused: self._judged_hop(job, target, refused))

    def _judged_hop(self, job: _Job, target: str, refused: Page | None) -> None:
        if refused is not None:
            self._read(job, refused)
            return
        if job.hops > MAX_REDIRECTS:
            self._read(job, too_many_redirects(job.url, target))
            return
        job.current = target
        self._fetch(job)

    def _read(self, job: _Job, page: Page) -> None:
        """The page is read (or why not is known): to a parser, or done."""
        self._fetching.discard(job)
        if not page.ok:
            image = self._visitor.linked_image(job.depth, page)
            if image is None:
                self._done(job, self._visitor.unread(job.url, job.depth, page, job.started))
            else:  # (its robots.txt, its host's delay: those of the page it was asked as)
                job.page = page._replace(skipped="")
                self._guarded(job, functools.partial(self._judge, job, image))
            return
        self._visitor.say_if_truncated(page)
        job.page = page
        job.read_at = time.monotonic()
        self._to_parse.append(job)

    def _feed_parsers(self) -> None:
        if self._held_until() is None:  # else the loop wakes when the hold ends
            self._send_waiting()
        self._watch_pipes()

    def _send_waiting(self) -> None:
        """Hand the waiting pages to the free parsers, shared out among them."""
        parser = self._parser
        while self._to_parse:
            jobs = self._next_batch()
            job = jobs[0]
            try:
                slot = parser.send_many([self._parse_job(one) for one in jobs],
                                        suspect=job.alone)
            except NoChildProcess:  # parsed here, while no child can be had
                self._to_parse.popleft()
                self._guarded(job, functools.partial(self._parsed_here, job))
                continue
            except ParserCrashed as exc:
                self._to_parse.popleft()
                self._unparsed(job, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - failed() logs it
                self._to_parse.popleft()
                self._done(job, self._visitor.failed(job.url, job.depth, exc))
                continue
            if slot is None:
                break  # every parser is busy: the next answer makes room
            for _ in jobs:
                self._to_parse.popleft()
            self._parsing[slot] = jobs

    def _held_until(self) -> float | None:
        """Until when the waiting pages wait for company (None: they go now).

        Fewer than PARSE_BATCH pages wait, other pages are being fetched, and the
        first to wait has waited less than PARSE_HOLD: the next page read may go in
        the same message. Pages that come one by one each woke a parser, and a
        wake-up costs a process more than the message on a virtual machine. Pages
        parsed in this process (no child to be had) save nothing by waiting.
        """
        waiting = self._to_parse
        if (not waiting or len(waiting) >= PARSE_BATCH or waiting[0].alone
                or not self._parser.processes or not self._client.in_flight):
            return None  # no company is coming, or none is worth waiting for
        until = waiting[0].read_at + PARSE_HOLD
        return until if until > time.monotonic() else None

    def _next_batch(self) -> list[_Job]:
        """The pages at the front of the queue that go to the next free parser together:
        the waiting ones shared out among the free parsers, PARSE_BATCH at most. One
        message for several pages spares a parser a wake-up per page, which costs more
        than the message (benchmarks/parse_rhythm.py)."""
        waiting = self._to_parse
        if waiting[0].alone:
            return [waiting[0]]
        size = min(PARSE_BATCH, -(-len(waiting) // max(1, self._parser.idle)))
        return list(itertools.takewhile(lambda job: not job.alone,
                                        itertools.islice(waiting, size)))

    def _parse_job(self, job: _Job) -> tuple[bytes, str, dict[str, Any]]:
        page = job.page
        assert page is not None
        return page.body, page.final_url, self._visitor.parse_options(page)

    def _parsed_here(self, job: _Job) -> None:
        page = job.page
        assert page is not None
        try:
            extraction = self._parser.extract(page.body, page.final_url,
                                              **self._visitor.parse_options(page))
        except ParserCrashed as exc:
            self._unparsed(job, exc)
            return
        self._judge(job, extraction)

    def _answered(self, slot: int) -> None:
        """A parser's pipe is readable: its answers, or its end."""
        jobs = self._parsing.get(slot, [])
        try:
            answers = self._parser.receive_many(slot)
        except BatchBroken as exc:
            # None of them is blamed: each goes again, alone, first in the queue.
            self._parsing.pop(slot, None)
            log.info("%s: each goes to a parser alone", exc)
            for job in reversed(jobs):
                job.alone = True
                self._to_parse.appendleft(job)
            return
        except ParserCrashed as exc:
            self._parsing.pop(slot, None)
            for job in jobs:
                self._unparsed(job, exc)
            return
        except Exception as exc:  # noqa: BLE001 - an answer that cannot be read: logged
            self._parsing.pop(slot, None)
            for job in jobs:
                self._done(job, self._visitor.failed(job.url, job.depth, exc))
            return
        finally:
            self._watch_pipes()  # a child that died was replaced, or is gone
        if answers is None or not jobs:
            return  # not answered yet: the pages went to a new child
        del self._parsing[slot]
        for job, answer in zip(jobs, answers, strict=True):
            if isinstance(answer, ParserCrashed):  # too slow to parse: the page's doing
                self._unparsed(job, answer)
            elif isinstance(answer, Exception):  # extract's own error (a bug): logged
                self._done(job, self._visitor.failed(job.url, job.depth, answer))
            else:
                self._guarded(job, functools.partial(self._judge, job, answer))

    def _unparsed(self, job: _Job, exc: Exception) -> None:
        page = job.page
        assert page is not None
        self._done(job, self._visitor.unread(job.url, job.depth, page._replace(skipped=str(exc)),
                                             job.started))

    def _judge(self, job: _Job, extraction: Extraction) -> None:
        page, visitor = job.page, self._visitor
        assert page is not None
        # Parsed: the body is needed no more, and the page may wait a while yet (for a
        # style sheet, on a helper thread) and then for the crawl loop.
        job.page = page = page._replace(body=b"")
        visit = visitor.judge(job.url, job.depth, page, extraction, job.started, may_wait=False)
        if visit is not None:
            self._done(job, visit)
            return
        self._off_loop(job, lambda: visitor.judge(job.url, job.depth, page, extraction,
                                                  job.started),
                       lambda judged: self._done(job, _certain(judged)))

    def _done(self, job: _Job, visit: Visit) -> None:
        self._fetching.discard(job)
        self._jobs.discard(job)
        if not job.future.done():
            job.future.set_result(visit)

    # ----- the parsers' pipes ---------------------------------------------------------

    def _watch_pipes(self) -> None:
        """Watch the pipe of every live parser child (children come and go)."""
        generation = self._parser.generation
        if generation == self._generation:
            return
        pipes = self._parser.pipes()
        for fd, seen in self._pipes.items():
            if pipes.get(fd) != seen:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(fd)
        for fd, seen in pipes.items():
            if self._pipes.get(fd) != seen:
                try:
                    self._selector.register(fd, selectors.EVENT_READ, seen)
                except KeyError:  # registered for another slot's pipe, now closed
                    self._selector.modify(fd, selectors.EVENT_READ, seen)
        self._pipes, self._generation = pipes, generation
        # A page whose child is gone and not replaced (the parser was closed under it)
        # has no pipe to wait on: asked now, it fails.
        live = {slot for slot, _pid in pipes.values()}
        for slot in [slot for slot in self._parsing if slot not in live]:
            self._answered(slot)


def _certain(visit: Visit | None) -> Visit:
    assert visit is not None, "judge() waits when it may: it always has a visit"
    return visit

