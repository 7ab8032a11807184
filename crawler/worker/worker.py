"""A downloader worker: lease image URLs from the master, download, store, report.

One coordinator thread talks to the master (leases in batches, reports in
batches, heartbeats) so a worker holds one connection; download threads, each
with its own HTTP connection pool, do the work. The worker ends when the master
announces that the crawl is over — never by looking at an empty queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawler.board.manager import MasterClient
from crawler.config import Limits
from crawler.errors import (
    AuthenticationFailed,
    CrawlerError,
    MasterUnreachable,
    StorageError,
    WorkerFailed,
)
from crawler.fetch.guard import AddressPolicy
from crawler.model.outcome import STORAGE_ERROR, Attempt
from crawler.model.wire import CrawlInfo, LeaseAnswer, Report, WorkerInfo
from crawler.worker.fastlane import FastLane
from crawler.worker.sink import ACCEPT
from crawler.worker.store import Store

if TYPE_CHECKING:
    from crawler.fetch.session import Watchdog

log = logging.getLogger(__name__)

class _Stopped(Exception):
    """A stop was asked for while the worker waited for its master."""


LINK_ERRORS = (OSError, EOFError)  # how a lost master shows itself on a proxy call
SYNC_EVERY = 2.0  # seconds between flushes of stored images to disk
IDLE_ASK_EVERY = 0.1  # seconds between asks for work that found none, while busy
FAST_RECONNECT_FOR = 2.0  # seconds a starting worker retries every 10-20 ms
HOLDING_EVERY = 1.0  # seconds between telling the master which URLs we hold
CONFIRM_WAIT = 10.0  # seconds a store waits for a fresh answer after a silence


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class WorkerOptions:
    out_dir: Path
    threads: int = 16
    connect_wait: float = 300.0
    fast_lane: bool = True  # plain-HTTP downloads on one event loop (worker/fastlane.py)


class Worker:
    def __init__(self, client: MasterClient, options: WorkerOptions,
                 on_progress: Callable[[WorkerStats], None] | None = None) -> None:
        self._client = client
        self._options = options
        # The pid alone is not enough: containers sharing a host name may all be pid 1.
        self._id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self._on_progress = on_progress or (lambda stats: None)
        self.stats = WorkerStats()
        self._stop = threading.Event()  # set by a signal: hand back and leave
        self._todo: queue.SimpleQueue[tuple[str, int] | None] = queue.SimpleQueue()
        # Finished downloads, in lists: a result of None hands the URL back unfinished.
        self._done: queue.SimpleQueue[list[tuple[str, Attempt | None]]] = queue.SimpleQueue()
        self._held: set[str] = set()
        self._board: Any = None
        self._pending_reports: list[Report] = []
        self._lane: FastLane | None = None
        # The download threads, started on first need (see _start_threads).
        self._threads: list[threading.Thread] = []
        self._threads_started = False
        self._threads_lock = threading.Lock()
        self._thread_args: tuple[Store, Limits, AddressPolicy, str] | None = None
        self._pending_releases: list[str] = []  # URLs to give back, kept across reconnects
        self._number = 0  # of our last exchange with the master: they only go up
        # How many of the pending reports and releases an unanswered exchange carried:
        # sent again unchanged, under the same number, after a reconnect.
        self._outstanding: tuple[int, int] | None = None
        self.stop_reason = ""
        # Leases the master said went to others while we were silent: their downloads
        # are neither stored nor reported. Guarded by _answered, which is notified
        # on every answer; _asked_at is when the last answered exchange was sent.
        self._lost: set[str] = set()
        self._answered = threading.Condition()
        self._asked_at = time.monotonic()
        self._recheck = False  # a store waits: say what we hold in the next exchange
        # How long an answer vouches for our leases: the master takes them only after
        # worker_silence (or lease_timeout) without a call; half leaves room for delays.
        self._fresh_for = 0.0
        # Why the worker gave up by itself: run() raises it after handing back.
        self.failure: CrawlerError | None = None

    def stop(self, reason: str = "stopping") -> None:
        self.stop_reason = reason
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop("SIGTERM"))
        signal.signal(signal.SIGINT, lambda *_: self.stop("interrupted"))

    def run(self) -> None:
        """Work until the master says the crawl is over, or a stop is asked for.

        Raises :class:`MasterUnreachable`, :class:`AuthenticationFailed`, or
        :class:`WorkerFailed` (after handing its URLs back).
        """
        try:
            crawl = self._connect(first=True)
        except _Stopped:
            return  # stopped while waiting for the master: nothing held, nothing to hand back
        store = Store(self._options.out_dir, may_store=self._may_store)
        store.clean_partials()
        limits = Limits(**crawl["limits"])
        policy = AddressPolicy.from_wire(crawl["policy"])
        self._thread_args = (store, limits, policy, crawl["user_agent"])
        lane_thread = None
        if not self._options.fast_lane:
            self._start_threads()
        else:
            self._lane = FastLane(slots=self._options.threads, store=store, limits=limits,
                                  policy=policy, user_agent=crawl["user_agent"], accept=ACCEPT,
                                  report=self._done.put,
                                  hand_over=self._to_threads, stop=self._stop)
            lane_thread = threading.Thread(target=self._lane.run, name="fast-lane", daemon=True)
            lane_thread.start()
        threading.Thread(target=self._sync_loop, args=(store,), name="sync", daemon=True).start()
        try:
            self._coordinate(crawl)
        except _Stopped:
            pass  # stopped while reconnecting: hand back below what can be handed back
        finally:
            self._stop.set()
            if self._lane is not None and lane_thread is not None:
                self._lane.close()
                lane_thread.join(timeout=5)
            with self._threads_lock:
                threads, self._threads_started = self._threads, True  # none start from now on
            for _ in threads:
                self._todo.put(None)
            for thread in threads:
                thread.join(timeout=5)
            self._hand_back(store)
            # Partials of workers on this host that died (kill -9) are ours to remove.
            with contextlib.suppress(StorageError):
                store.clean_partials()
        if self.failure is not None:
            raise self.failure

    # ----- talking to the master ---------------------------------------------

    def _connect(self, first: bool) -> CrawlInfo:
        """Connect (again), waiting for the master up to ``connect_wait`` seconds."""
        host, port = self._client.address
        started = time.monotonic()
        give_up = started + self._options.connect_wait
        delay = 0.02
        announced = False
        while True:
            try:
                self._board = self._client.connect()
                log.debug("connected to the master at %s:%s as %s", host, port, self._id)
                crawl: CrawlInfo = self._board.hello(
                    self._id, WorkerInfo(host=socket.gethostname(), pid=os.getpid(),
                                         threads=self._options.threads))
                self._client.bound_calls(self._board, float(crawl["lease_timeout"]))
                self._fresh_for = min(crawl["worker_silence"], crawl["lease_timeout"]) / 2
                return crawl
            except AuthenticationFailed:
                raise
            except LINK_ERRORS as exc:
                if self._stop.is_set():
                    raise _Stopped from exc
                if time.monotonic() >= give_up:
                    what = "reach" if first else "reconnect to"
                    raise MasterUnreachable(
                        f"could not {what} the master at {host}:{port} within "
                        f"{self._options.connect_wait:g} s ({exc.__class__.__name__}: {exc}); "
                        "is it running, and is the address right?") from exc
                if not announced:
                    log.info("waiting for the master at %s:%s ...", host, port)
                    announced = True
                # Jitter: after a master restart every worker reconnects at once.
                time.sleep(min(delay, max(0.0, give_up - time.monotonic())) *
                           random.uniform(0.5, 1.0))
                # A master starting with its workers listens within a fraction of a
                # second: ask often at first, then back off for one that is down. Not
                # on a reconnect, when every worker of the cluster asks at once.
                if not first or time.monotonic() - started > FAST_RECONNECT_FOR:
                    delay = min(delay * 2, 2.0)

    def _coordinate(self, crawl: CrawlInfo) -> None:
        capacity = self._options.threads + max(2, self._options.threads // 2)  # a small prefetch
        # At least once a second, so the master knows who is still listening at the end.
        heartbeat_every = min(1.0, float(crawl["lease_timeout"]) / 4)
        reports = self._pending_reports  # what _hand_back sends if we leave before it goes
        released = self._pending_releases
        last_call = time.monotonic()
        last_answered = True
        last_holding = 0.0  # when we last told the master what we hold
        while not self._stop.is_set():
            self._collect(reports, released, wait=0.02 if self._held else 0.0)
            want = capacity - len(self._held)
            # While busy, ask for more at once when the last ask was answered, and
            # only now and then when it was not: a hundred busy workers polling an
            # empty queue every few milliseconds would keep the master's server busy.
            quiet = time.monotonic() - last_call < IDLE_ASK_EVERY and not last_answered
            ask = want if want > 0 and not (self._held and quiet) else 0
            if not (ask or reports or released or self._outstanding is not None or self._recheck
                    or time.monotonic() - last_call > heartbeat_every):
                continue
            now = time.monotonic()
            holding = now - last_holding >= HOLDING_EVERY or self._recheck
            try:
                # Reports, hand-backs and the next ask travel in one round trip.
                answer = self._exchange(ask, 0.0 if self._held else 1.0, holding)
                self._answer_came(answer, asked_at=now, holding=holding)
            except LINK_ERRORS as exc:
                log.warning("lost the master (%s); reconnecting", exc.__class__.__name__)
                self._connect(first=False)
                last_holding = 0.0  # a lost answer may have leased us URLs we never saw
                continue
            if holding:
                last_holding = now
            last_call = time.monotonic()
            if answer["closed"]:
                return  # the crawl is over (or stopped): hand back and leave
            if ask:
                last_answered = bool(answer["tasks"])
                self._take(answer["tasks"])

    def _exchange(self, ask: int, wait: float, holding: bool) -> LeaseAnswer:
        """Send the pending reports and releases, and ask for ``ask`` URLs, in one call.

        The master applies an exchange once: one whose answer was lost goes again
        unchanged, under the same number. Its part of the pending lists is where it
        was, since they only grow at their end. With ``holding``, the call also says
        every URL we still have to speak of, so that the master puts back any lease
        we never received.
        """
        reports, released = self._pending_reports, self._pending_releases
        if self._outstanding is None:
            self._number += 1
            self._outstanding = (len(reports), len(released))
        n_reports, n_released = self._outstanding
        held = (sorted(self._held.union(released, (r["url"] for r in reports)))
                if holding else None)
        answer: LeaseAnswer = self._board.exchange(
            self._id, self._number, reports[:n_reports], released[:n_released], ask, wait, held)
        del reports[:n_reports]
        del released[:n_released]
        self._outstanding = None
        return answer

    def _answer_came(self, answer: LeaseAnswer, *, asked_at: float, holding: bool) -> None:
        """Note the leases we lost, and wake stores waiting for news of them."""
        lost = answer.get("lost", [])
        if lost:
            log.warning("lost %d leases while silent: other workers have them now", len(lost))
        with self._answered:
            self._lost.update(lost)
            self._held.difference_update(lost)
            if holding:  # only an exchange that said what we hold vouches for it
                self._asked_at = asked_at
                self._recheck = False
            self._answered.notify_all()

    def _may_store(self, url: str) -> bool:
        """Whether ``url``'s lease is still ours, asked of the master after a silence.

        A worker that was stopped or cut off for longer than the master's
        worker_silence has lost its leases to others: it learns which before it
        stores any image, never after. Called by the download threads and the fast
        lane just before an image takes its name; quick while the master answers.
        """
        with self._answered:
            since = time.monotonic()
            if since - self._asked_at > self._fresh_for:
                self._recheck = True
                deadline = since + CONFIRM_WAIT
                while self._asked_at < since:  # an answer to a question asked after now
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stop.is_set():
                        return False  # unconfirmed: keep nothing we may not own
                    self._answered.wait(min(left, 0.1))
            return url not in self._lost

    def _take(self, tasks: list[tuple[str, int]]) -> None:
        """Start leased URLs: plain http on the fast lane, the rest on the download threads."""
        if tasks:
            log.debug("leased %d URLs", len(tasks))
        lane, for_lane = self._lane, []
        for url, attempt in tasks:
            self._held.add(url)
            if lane is not None and lane.takes(url):
                for_lane.append((url, attempt))
            else:
                self._to_threads((url, attempt))
        if lane is not None and for_lane:
            lane.submit(for_lane)

    def _collect(self, reports: list[Report], released: list[str], wait: float) -> None:
        """Move finished downloads from the lane and the threads into the next report."""
        try:
            results = self._done.get(timeout=wait) if wait else self._done.get_nowait()
        except queue.Empty:
            return
        while True:
            for url, attempt in results:
                self._held.discard(url)
                if url in self._lost:  # another worker holds it now: nothing to say
                    with self._answered:
                        self._lost.discard(url)
                    continue
                if attempt is None or self._cannot_store(attempt):
                    released.append(url)
                else:
                    reports.append(attempt.to_wire())
                    self._count(attempt)
            try:
                results = self._done.get_nowait()
            except queue.Empty:
                return

    def _cannot_store(self, attempt: Attempt) -> bool:
        """A failure of our own disk (full, read-only): stop, and give the URL back.

        Counted against the image, it would use up its attempts on a worker that
        cannot store anything, and end as a failure that a rerun does not retry.
        """
        if attempt.ok or not attempt.reason.startswith(STORAGE_ERROR):
            return False
        if self.failure is None:
            log.error("cannot store %s: %s", attempt.url, attempt.reason)
            self.failure = StorageError(
                f"cannot store images under {self._options.out_dir}: "
                f"{attempt.reason[len(STORAGE_ERROR):]}; the URLs this worker held went back"
                " to the master: free some space (or fix the folder), then start it again")
            self._stop.set()
        return True

    def _count(self, attempt: Attempt) -> None:
        if attempt.ok:
            self.stats.done += 1
            self.stats.bytes += attempt.bytes or 0
        else:
            self.stats.failed += 1
            log.info("failed %s: %s", attempt.url, attempt.reason)
        self._on_progress(self.stats)

    def _hand_back(self, store: Store) -> None:
        """On the way out: report what finished, give back what did not."""
        reports = self._pending_reports
        released = self._pending_releases
        self._collect(reports, released, wait=0.0)
        while True:  # tasks still waiting in the local queue were never started
            try:
                task = self._todo.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                released.append(task[0])
        released.extend(self._held - set(released))
        if self._board is None:
            return
        handing_back = len(released)
        try:
            if reports:
                store.flush_to_disk()
            for _ in range(2):  # an unanswered exchange first, if any; then the rest
                if reports or released or self._outstanding is not None:
                    # Holding: what we still speak of. Leases an answer lost on the way
                    # gave us go back now, not after the lease timeout.
                    self._exchange(0, 0.0, holding=True)
            if handing_back:
                log.info("handed %d unfinished URLs back to the master", handing_back)
        except LINK_ERRORS:
            log.warning("could not report %d results and hand %d URLs back: the master is "
                        "gone; its leases will expire and put them back",
                        len(reports), len(released))
            return
        # A master whose crawl is over may exit as soon as it has our goodbye, before
        # answering it: nothing is lost then, so that is no error.
        with contextlib.suppress(*LINK_ERRORS):
            self._board.goodbye(self._id)

    # ----- downloading ---------------------------------------------------------

    def _sync_loop(self, store: Store) -> None:
        """Flush stored images to disk every SYNC_EVERY seconds while downloads go on.

        One syncfs for many files instead of an fsync each: per-file fsync cost a
        fifth of the wall time on disk. Results are reported before that flush, so a
        power cut on this host can lose up to SYNC_EVERY seconds of images the master
        already recorded as stored (the rename keeps every name whole or absent).
        """
        stored = 0
        while not self._stop.wait(SYNC_EVERY):
            if self.stats.done != stored:
                stored = self.stats.done
                try:
                    store.flush_to_disk()
                except StorageError as exc:
                    log.warning("%s", exc)

    def _to_threads(self, task: tuple[str, int]) -> None:
        """Queue ``task`` for the download threads, starting them on first use."""
        if not self._threads_started:
            self._start_threads()
        self._todo.put(task)

    def _start_threads(self) -> None:
        """Start the download threads (urllib3), once.

        Only when something needs them: a crawl of plain-HTTP images never
        does, and then the worker spares itself importing requests and urllib3.
        If they cannot start, the worker stops: its URLs go back to the master.
        """
        with self._threads_lock:
            if self._threads_started:
                return
            self._threads_started = True  # one try: tasks queued meanwhile are handed back
            assert self._thread_args is not None, "run() sets them before any task arrives"
            try:
                from crawler.fetch.session import Watchdog, make_pool
                from crawler.worker.download import download

                watchdog = Watchdog()
                for n in range(self._options.threads):
                    thread = threading.Thread(
                        target=self._download_loop, name=f"download-{n}", daemon=True,
                        args=(*self._thread_args, watchdog, download, make_pool))
                    thread.start()
                    self._threads.append(thread)
            except Exception as exc:  # no threads (a process limit), or a broken install
                log.exception("cannot start the download threads")
                self.failure = WorkerFailed(f"cannot start the download threads: {exc}")
                self._stop.set()  # leave now: _hand_back gives every held URL back

    def _download_loop(self, store: Store, limits: Limits, policy: AddressPolicy,
                       user_agent: str, watchdog: Watchdog, download: Callable[..., Attempt],
                       make_pool: Callable[..., Any]) -> None:
        pool = make_pool(policy, user_agent, ACCEPT)
        try:
            while True:
                task = self._todo.get()
                if task is None:
                    return
                url, _ = task
                if self._stop.is_set():
                    self._done.put([(url, None)])
                    continue
                try:
                    attempt = download(pool, url, store, limits, watchdog, self._stop)
                except Exception as exc:  # a thread that dies would hold its URL forever
                    log.exception("download of %s failed unexpectedly", url)
                    attempt = Attempt(url=url, ok=False, transient=True,
                                      reason=f"worker error: {exc.__class__.__name__}: {exc}")
                if self._stop.is_set() and not attempt.ok:
                    self._done.put([(url, None)])  # cut short by the stop: hand it back
                else:
                    self._done.put([(url, attempt)])
        finally:
            pool.clear()
