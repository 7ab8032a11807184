"""A downloader worker: lease image URLs from the master, download, store, report.

One coordinator thread talks to the master (leases in batches, reports in
batches, heartbeats) so a worker holds one connection; one engine thread
downloads (libcurl, ``crawler.fetch.curl``). The worker ends when the master
announces that the crawl is over — never by looking at an empty queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from crawler.board.base import BoardClient
from crawler.config import DEFAULTS, Limits
from crawler.errors import (
    BadCrawlInfo,
    ConfigError,
    CrawlerError,
    MasterFailed,
    StorageError,
    WorkerFailed,
)
from crawler.fetch.engine import Engine, Task
from crawler.model.clock import since_boot
from crawler.model.outcome import STORAGE_ERROR, Attempt, FailureKind
from crawler.model.wire import CrawlInfo, LeaseAnswer, Report, limits_from_wire
from crawler.worker.enginerules import build_engine, changed_rules
from crawler.worker.hops import RedirectCheck
from crawler.worker.masterlink import (
    LINK_ERRORS,
    CrawlEnded,
    MasterLink,
    Stopped,
    vouched_for,
    why_lost,
)
from crawler.worker.notifier import Notifier
from crawler.worker.reportwindow import ReportWindow
from crawler.worker.sink import failure, kept_instead, too_slow
from crawler.worker.stopsignals import deaf_to_stops
from crawler.worker.store import Store

log = logging.getLogger(__name__)

SYNC_EVERY = 2.0  # seconds between flushes of stored images to disk
IDLE_ASK_EVERY = 0.1  # seconds between asks for work that found none, while busy
HOLDING_EVERY = 1.0  # seconds between telling the master which URLs we hold
STUCK_GRACE = 10.0  # seconds past its longest possible life before a download counts as stuck
CONFIRM_WAIT = 10.0  # seconds a store waits for a fresh answer after a silence
ENGINE_END_WAIT = 5.0  # seconds the download engine has to end, handing back what it holds


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    bytes: int = 0


class WorkerOptions(NamedTuple):
    out_dir: Path
    # The defaults are the settings' own: one catalogue of them (crawler/config.py).
    threads: int = DEFAULTS.worker.threads  # downloads in flight at once
    connect_wait: float = DEFAULTS.worker.connect_wait
    # This host's own: a client certificate (the master's paths mean nothing here),
    # and whether to ignore HTTP_PROXY and friends.
    client_cert: str = ""
    client_key: str = ""
    env_proxies: bool = True


class Worker:
    """A worker: leases from the master, downloads with the engine, reports, hands back.

    One piece on purpose: its link to the master (numbered exchanges sent again
    after a reconnect, pending reports and hand-backs, leases it lost while
    silent) and the engine's results are one state, changed together on its
    coordinating thread, so that every leased URL is reported or handed back
    exactly once, whatever breaks when. How the master is reached, greeted and
    left is ``masterlink``'s; how its rules make an engine, ``enginerules``'.
    """

    def __init__(self, client: BoardClient, options: WorkerOptions,
                 on_progress: Callable[[WorkerStats], None] | None = None) -> None:
        self._client = client
        self._options = options
        # The pid alone is not enough: containers sharing a host name may all be pid 1.
        self._id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self._on_progress = on_progress
        self._notifier: Notifier[WorkerStats] | None = None  # calls on_progress
        self._worked = False  # whether a URL was ever leased to it: progress is told once
        self.stats = WorkerStats()
        self._stop = threading.Event()  # set by a signal: hand back and leave
        self._link = MasterLink(client, self._id, threads=options.threads,
                                out_dir=options.out_dir, connect_wait=options.connect_wait,
                                stop=self._stop)
        # Finished downloads, in lists: a result of None hands the URL back unfinished.
        self._done: queue.SimpleQueue[list[tuple[str, Attempt | None]]] = queue.SimpleQueue()
        self._held: dict[str, float] = {}  # URL -> when it went to the engine
        # URLs held on a later try (leased before, by this crawl or the run it resumes):
        # only such a try's failure may stand for a file an earlier try stored unreported.
        # A first try's file there is an earlier crawl's (kept by --fresh), not its result.
        self._later_tries: set[str] = set()
        self._overdue: set[str] = set()  # reported stuck: the engine's late word is dropped
        # A URL leased to us again while the engine still has a try of an earlier lease of
        # it (a lease lost while silent, or reported stuck, came back): that try is
        # superseded, may not store, and its word is dropped; the new lease's own try,
        # deferred till then, begins when it has ended. So the engine never has two tries
        # of one URL, one of which could store a file of another type (another name)
        # beside the other's, in no line of the manifest. Guarded by _answered.
        self._superseded: set[str] = set()
        self._deferred: dict[str, Task] = {}
        self._stuck_after = float("inf")  # seconds; set from the crawl's limits
        self._limits = Limits()
        self._pending_reports: list[Report] = []
        self._engine: Engine | None = None
        self._engine_thread: threading.Thread | None = None
        self._store: Store | None = None  # set by run()
        self._crawl: CrawlInfo | None = None  # the rules the engine works by (the master's)
        # The version of the board's cookies (those the crawl's pages set) that the
        # engine's jar has: 0 for a new engine, and after a reconnect (a master started
        # again counts anew; lines added twice change nothing).
        self._jar_version = 0
        self._redirects: RedirectCheck | None = None  # the engine's check of redirect targets
        self._pending_releases: list[str] = []  # URLs to give back, kept across reconnects
        self._number = 0  # of our last exchange with the master: they only go up
        # How many of the pending reports and releases an unanswered exchange carried:
        # sent again unchanged, under the same number, after a reconnect.
        self._outstanding: tuple[int, int] | None = None
        self.stop_reason = ""
        self._quitting = False  # asked to leave now, without the hand-back (quit_now)
        # Leases the master said went to others while we were silent: their downloads
        # are neither stored nor reported. Guarded by _answered, which is notified
        # on every answer; _asked_at is when the last answered exchange was sent.
        self._lost: set[str] = set()
        self._answered = threading.Condition()
        self._asked_at = since_boot()
        self._recheck = False  # a store waits: say what we hold in the next exchange
        # Set while an engine ends for new rules (_adopt): a store of it that waits for
        # news of its lease stops waiting, and its image goes back with the rest.
        self._retiring = threading.Event()
        # How long an answer vouches for our leases: the master takes them only after
        # worker_silence (or lease_timeout) without a call; half leaves room for delays.
        self._fresh_for = 0.0
        # Why the worker gave up by itself: run() raises it after handing back.
        self.failure: CrawlerError | None = None

    def stop(self, reason: str = "stopping") -> None:
        self.stop_reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for already (not the worker's own giving up)."""
        return bool(self.stop_reason)

    def quit_now(self) -> None:
        """Leave without handing back (a second stop), as the KeyboardInterrupt the
        caller raises next does; noted first, as Python swallows one raised while a
        finalizer runs (said as "Exception ignored in"), and the hand-back went on."""
        self._quitting = True

    def run(self) -> None:
        """Work until the master says the crawl is over, or a stop is asked for.

        Raises :class:`MasterUnreachable`, :class:`AuthenticationFailed`,
        :class:`BadCrawlInfo` (the master's rules cannot be read: nothing leased), or
        :class:`WorkerFailed` (after handing its URLs back).
        """
        # The folder first: one that cannot be written is said at once, not after the
        # wait for a master (up to --connect-wait).
        store = self._store = Store(self._options.out_dir, may_store=self._may_store)
        try:
            crawl = self._connect(first=True)
        except Stopped:
            store.close_unused()
            return  # stopped while waiting for the master: nothing held, nothing to hand back
        except BaseException:
            store.close_unused()  # no master reached (or not ours): no empty folder left
            raise
        store.clean_partials()
        self._start_engine(crawl)
        with deaf_to_stops():
            threading.Thread(target=self._sync_loop, args=(store,), name="sync",
                             daemon=True).start()
            if self._on_progress is not None:  # closed below, whatever happens
                self._notifier = Notifier(self._on_progress, self._stats_now(),
                                          on_error=self._stop.set)
        try:
            self._coordinate()
        except Stopped:
            pass  # stopped while reconnecting: hand back below what can be handed back
        except KeyboardInterrupt:
            # Asked twice (a hand-back that hangs on a master that answers no more):
            # leave now; its leases go back when the master finds this worker silent.
            self._quitting = True
            raise
        finally:
            self._stop.set()
            self._stop_engine(0.0 if self._quitting else ENGINE_END_WAIT)
            if not self._quitting:
                self._hand_back(store)  # (a second stop here leaves it, as above)
                # Partials of workers on this host that died (kill -9) are ours to remove.
                with contextlib.suppress(StorageError):
                    store.clean_partials()
                store.close()  # and the folders they leave empty
            if self._notifier is not None:
                self._notifier.close(self._stats_now())
        if self._quitting:
            raise KeyboardInterrupt  # the one quit_now was for, swallowed on its way
        if self._notifier is not None and self._notifier.error is not None:
            raise self._notifier.error  # the callback's own: it stopped the worker
        if self.failure is not None:
            raise self.failure

    def _start_engine(self, crawl: CrawlInfo) -> None:
        """Start a download engine that works by ``crawl``'s rules (and note them as the
        ones this worker works by). One that cannot start stops the worker, which hands
        every URL it holds back."""
        assert self._store is not None
        self._crawl = crawl
        self._jar_version = 0
        try:
            limits = self._limits = limits_from_wire(crawl.get("limits"))
            # Past this a download the engine has not reported is stuck: it may wait for a
            # slot behind downloads that each take up to the deadline, then take its own.
            self._stuck_after = 2 * (limits.deadline + limits.connect_timeout) + STUCK_GRACE
            with deaf_to_stops():  # the engine's threads too (libcurl's resolver's)
                engine, self._redirects = build_engine(crawl, limits, self._store,
                                                       self._options, report=self._done.put,
                                                       stop=self._stop)
                self._engine = engine
                thread = threading.Thread(target=self._run_engine, args=(engine,),
                                          name="engine", daemon=True)
                thread.start()
            self._engine_thread = thread
        except (BadCrawlInfo, ConfigError) as exc:
            # The master's rules cannot be read, or this host's proxy variable: said in one
            # line, no traceback.
            log.error("%s", exc)
            self._engine = None
            self.failure = exc
            self._stop.set()
        except Exception as exc:  # no thread (a process limit), a broken libcurl, bad options
            log.exception("cannot start the download engine")
            self._engine = None  # tasks go straight back (see _take)
            self.failure = WorkerFailed(f"cannot start the download engine: {exc}")
            self._stop.set()  # leave now: _hand_back gives every held URL back

    def _stop_engine(self, wait: float) -> None:
        """End the download engine: what it has in flight comes back unfinished (None),
        for the next exchange to hand back."""
        engine, thread = self._engine, self._engine_thread
        self._engine = self._engine_thread = None
        if engine is not None:
            engine.close()
            if thread is not None:
                thread.join(timeout=wait)
                if thread.is_alive() and wait:
                    log.warning("the download engine did not end within %g s", wait)
        if self._redirects is not None:
            self._redirects.close()
            self._redirects = None

    def _adopt(self, crawl: CrawlInfo) -> None:
        """Work by ``crawl`` from now on: the crawl info the master gave after a
        reconnect, or the broker's after the crawl's settings changed.

        A master started again may have other request settings (headers, cookies,
        logins, a proxy, a CA, a rate cap), another address policy, image scope or
        robots.txt rules, or be another crawl altogether (an embedded master of
        another folder on the same port): none of what this worker did by the old
        rules may go on under the new ones, and nothing leased by the new master may
        go out with the old ones (a token for one crawl's site would go to another's).
        So, when they differ, the engine ends first, what it had in flight is handed
        back (downloaded again by the new rules), and a new engine starts. Results
        of an earlier crawl are dropped: its master has gone, and its journal keeps
        those URLs queued for its next run.
        """
        old = self._crawl
        if old is None or old == crawl:
            return
        self._crawl = crawl
        changed = changed_rules(old, crawl)
        another = old.get("folder") != crawl.get("folder")
        if not changed and not another:
            return  # its timings alone (lease_timeout, worker_silence): read where used
        self._retiring.set()
        try:
            with self._answered:
                self._answered.notify_all()  # a store waiting for news of its lease
            self._stop_engine(ENGINE_END_WAIT)
        finally:
            self._retiring.clear()
        reports, released = self._pending_reports, self._pending_releases
        self._collect(reports, released, wait=0.0)
        self._held.clear()  # (an engine that did not end in time: the master takes them back)
        self._later_tries.clear()
        self._overdue.clear()
        self._deferred.clear()  # (_superseded stays: such an engine's try may not store)
        if another:
            log.warning("%s now crawls into %s, not into %s: another crawl; this worker works "
                        "for it, by its settings (%d results and %d unfinished URLs of the "
                        "earlier crawl are dropped: its journal keeps them queued)",
                        self._client.where, crawl.get("folder"), old.get("folder"),
                        len(reports), len(released))
            reports.clear()
            released.clear()
            self._outstanding = None
            with self._answered:
                self._lost.clear()
        else:
            # What the old engine did past the exchange on its way (sent again as it was):
            # its images stored stand; its failures (a 403 for an expired cookie) and what
            # it had not finished are not said. The URLs go back as leases this worker no
            # longer holds, taken back by the next exchange (it says what it holds) and
            # tried again, by the new settings: said as a result or handed back, they
            # could meet a lease of the same URL that a master started again just gave it.
            n_reports, n_released = self._outstanding or (0, 0)
            failed = [report for report in reports[n_reports:] if not report.get("ok")]
            again = len(failed) + len(released) - n_released
            reports[n_reports:] = [report for report in reports[n_reports:] if report.get("ok")]
            del released[n_released:]
            self.stats.failed -= len(failed)  # not failures: tried again
            self._recheck = True
            log.warning("the crawl's settings changed (%s): the download engine starts again "
                        "with them; %d downloads begun with the old ones go back to be "
                        "downloaded again", ", ".join(changed), again)
        if self.failure is None:
            self._start_engine(crawl)

    # ----- talking to the master ---------------------------------------------

    def _connect(self, first: bool) -> CrawlInfo:
        """Connect (again), waiting for the master up to ``connect_wait`` seconds."""
        crawl = self._link.connect(first)
        self._fresh_for = vouched_for(crawl)
        self._jar_version = 0
        return crawl

    def _hello(self) -> CrawlInfo:
        """Say hello to the master again: the crawl info it answers, its deadlines set."""
        crawl = self._link.hello()
        self._fresh_for = vouched_for(crawl)
        return crawl

    def _capacity(self) -> int:
        """URLs to hold: what the engine downloads at once (fewer than the worker's threads
        under a bandwidth cap) and a small prefetch, no more than that: a URL then waits
        behind one download at most, and starts within its stuck clock (2 deadlines)."""
        slots = self._engine.slots if self._engine is not None else self._options.threads
        return slots + min(slots, max(2, slots // 2))

    def _coordinate(self) -> None:
        reports = self._pending_reports  # what _hand_back sends if we leave before it goes
        released = self._pending_releases
        last_call = since_boot()
        last_answered = True
        last_holding = 0.0  # when we last told the master what we hold
        window = ReportWindow(batch=self._options.threads // 2)
        gather = 0.0  # how long the pending reports may still wait for company
        answered_at: float | None = None  # when the last answer came (None: none yet)
        came_back = False  # told of leases lost while silent (or stopped), no work since
        # This loop's turns come every few ms (an exchange waits 1 s at most): a gap past
        # worker_silence between two is this process stopped (^Z, a laptop asleep), wherever
        # it fell, even between taking the time of a call and making it.
        last_turn = since_boot()
        while not self._stop.is_set():
            turn = since_boot()
            if turn - last_turn > self._crawl_silence():
                came_back = True
            last_turn = turn
            self._collect(reports, released, wait=(gather or 0.02) if self._held else 0.0)
            if since_boot() - last_holding >= HOLDING_EVERY:
                self._report_stuck(reports)
            gather = window.left(reports=len(reports), downloading=len(self._held),
                                 urgent=bool(released or self._outstanding is not None
                                             or self._recheck), now=since_boot())
            if gather:
                continue  # downloads in hand: their reports can go in the same exchange
            want = self._capacity() - len(self._held)
            # While busy, ask for more at once when the last ask was answered, and
            # only now and then when it was not: a hundred busy workers polling an
            # empty queue every few milliseconds would keep the master's server busy.
            quiet = since_boot() - last_call < IDLE_ASK_EVERY and not last_answered
            ask = want if want > 0 and not (self._held and quiet) else 0
            assert self._crawl is not None  # (run() set it before)
            # At least once a second, so the master knows who is still listening at the end.
            heartbeat_every = min(1.0, float(self._crawl["lease_timeout"]) / 4)
            if not (ask or reports or released or self._outstanding is not None or self._recheck
                    or since_boot() - last_call > heartbeat_every):
                continue
            now = since_boot()
            holding = now - last_holding >= HOLDING_EVERY or self._recheck
            try:
                # Reports, hand-backs and the next ask travel in one round trip.
                answer = self._exchange(ask, 0.0 if self._held else 1.0, holding)
                self._answer_came(answer, asked_at=now, holding=holding)
                generation = answer.get("generation")
                if generation is not None and generation != self._crawl.get("generation"):
                    # The crawl's settings changed on the broker (a master started it
                    # again): taken up before the URLs of this answer go to the engine.
                    self._adopt(self._hello())
                self._take_cookies(answer)
            except LINK_ERRORS as exc:
                log.warning("lost %s (%s); reconnecting", self._client.where, why_lost(exc))
                # A master started again (or another one on its port) may have other
                # settings, or be another crawl: its rules from now on.
                try:
                    self._adopt(self._connect(first=False))
                except CrawlEnded:
                    self._link.board = None  # no master to hand anything back to
                    _say_it_was_over(True, new=False)
                    return
                last_holding = 0.0  # a lost answer may have leased us URLs we never saw
                continue
            if holding:
                last_holding = now
            window.sent()
            last_call = since_boot()
            if since_boot() - now > self._crawl_silence():
                came_back = True  # stopped while the call was on its way
            last_turn = since_boot()
            came_back = (came_back or bool(answer.get("lost"))) and not answer["tasks"]
            if answer["closed"]:
                # Silent long enough for our leases to go to others (a cut link, a laptop
                # asleep, a stopped process: counted to when this call went, as the
                # master counts, or told so by the master), or new: say why nothing
                # (more) came.
                away = came_back or (answered_at is not None
                                     and now - answered_at > self._crawl["worker_silence"])
                _say_it_was_over(away, new=answered_at is None)
                return  # the crawl is over: hand back and leave
            answered_at = since_boot()
            if ask:
                last_answered = bool(answer["tasks"])
                self._take(answer["tasks"])

    def _crawl_silence(self) -> float:
        """Seconds without a call after which the master gives this worker's leases away."""
        assert self._crawl is not None
        return float(self._crawl["worker_silence"])

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
        held = (sorted(set(self._held).union(released, (r["url"] for r in reports)))
                if holding else None)
        answer: LeaseAnswer = self._link.board.exchange(
            self._id, self._number, reports[:n_reports], released[:n_released], ask, wait, held)
        del reports[:n_reports]
        del released[:n_released]
        self._outstanding = None
        return answer

    def _answer_came(self, answer: LeaseAnswer, *, asked_at: float, holding: bool) -> None:
        """Note the leases we lost, and wake stores waiting for news of them."""
        lost = answer.get("lost", [])
        with self._answered:
            # Said again by each answer while the engine still has them: told once.
            new = [url for url in lost if url not in self._lost]
            self._lost.update(lost)
            if holding:  # only an exchange that said what we hold vouches for it
                self._asked_at = asked_at
                self._recheck = False
            self._answered.notify_all()
        if new:
            # Queued again for any worker (this one too), or failed where it was the
            # image's last try: which, the answer does not say.
            one = len(new) == 1
            log.warning("lost %d lease%s while silent: the crawl took %s back (%squeued "
                        "again, or failed on its last try), and this worker drops %s",
                        len(new), "" if one else "s", "it" if one else "them",
                        "" if one else "each ",
                        "its download of it" if one else "its downloads of them")
            if self._engine is not None:  # their bytes would go nowhere
                self._engine.drop(new)

    def _take_cookies(self, answer: LeaseAnswer) -> None:
        """Into the engine's jar, the cookies the crawl's pages set since it was filled,
        before the URLs of ``answer`` go to the engine: they may need them, as a
        browser's image requests carry the cookies its pages set."""
        version = answer.get("cookies")
        if (type(version) is not int or version <= self._jar_version
                or self._engine is None):
            return
        now, lines = self._link.board.cookies(self._id, self._jar_version)
        if type(now) is not int or not isinstance(lines, list):
            log.warning("%s sent a malformed cookie jar: left out", self._client.where)
            return
        self._engine.add_cookies([line for line in lines if isinstance(line, str)])
        self._jar_version = now
        log.debug("took %d cookies set by the crawl's pages (version %d)", len(lines), now)

    def _may_store(self, url: str) -> bool:
        """Whether ``url``'s lease is still ours, asked of the master after a silence.

        A worker that was stopped or cut off for longer than the master's
        worker_silence has lost its leases to others: it learns which before it
        stores any image, never after. Called by the engine just before an image
        takes its name; quick while the master answers.
        """
        with self._answered:
            since = since_boot()
            if since - self._asked_at > self._fresh_for:
                self._recheck = True
                deadline = since + CONFIRM_WAIT
                while self._asked_at < since:  # an answer to a question asked after now
                    left = deadline - since_boot()
                    if left <= 0 or self._stop.is_set() or self._retiring.is_set():
                        return False  # unconfirmed: keep nothing we may not own
                    self._answered.wait(min(left, 0.1))
            return url not in self._lost and url not in self._superseded

    def _take(self, tasks: list[tuple[str, int]]) -> None:
        """Hand leased URLs to the engine. One it still has a try of (an earlier lease's)
        waits for that try to end: see _superseded."""
        if not tasks:
            return
        log.debug("leased %d URLs", len(tasks))
        if not self._worked:
            self._worked = True
            if self._notifier is not None:  # the work begins: where a rate is counted from
                self._notifier.poke(self._stats_now())
        now = since_boot()
        begin: list[Task] = []
        for url, attempt in tasks:
            if url in self._held or url in self._overdue or url in self._superseded:
                with self._answered:
                    self._superseded.add(url)
                    self._lost.discard(url)  # said of the earlier lease, not of this one
                self._overdue.discard(url)
                # After a try that may have stored the image: this one keeps that file.
                self._deferred[url] = (url, max(attempt, 2))
                self._later_tries.add(url)
            else:
                begin.append((url, attempt))
                if attempt > 1:
                    self._later_tries.add(url)
                else:
                    self._later_tries.discard(url)
            self._held[url] = now
        self._begin(begin)

    def _begin(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        if self._engine is not None:
            self._engine.submit(tasks)
        else:  # it never started, or has ended: the URLs go back with the rest
            self._done.put([(url, None) for url, _ in tasks])

    def _report_stuck(self, reports: list[Report]) -> None:
        """Fail what the engine holds past any deadline, so heartbeats stop renewing it.

        The engine cuts every download at ``download.deadline``; one still held long
        after is stuck (a bug, a wedged library). Its lease would be renewed by every
        exchange for ever: it is reported as too slow instead, and a late result
        from the engine is dropped.
        """
        now = since_boot()
        stuck = [url for url, since in self._held.items() if now - since > self._stuck_after]
        for url in stuck:
            since = self._held.pop(url)
            if self._deferred.pop(url, None) is None:  # (else the engine never had it)
                self._overdue.add(url)
            log.warning("%s is still downloading %.0f s after it started: reported as too "
                        "slow", url, now - since)
            attempt = failure(url, since, too_slow(self._limits), FailureKind.TOO_SLOW,
                              transient=True)
            reports.append(attempt.to_wire())
            self._count(attempt)

    def _collect(self, reports: list[Report], released: list[str], wait: float) -> None:
        """Move finished downloads from the lane and the threads into the next report."""
        try:
            results = self._done.get(timeout=wait) if wait else self._done.get_nowait()
        except queue.Empty:
            return
        while True:
            for url, attempt in results:
                if url in self._superseded:  # the try of an earlier lease: its word dropped
                    self._next_lease_begins(url)
                    continue
                if url in self._overdue:  # reported stuck already
                    self._overdue.discard(url)
                    continue
                self._held.pop(url, None)
                later_try = url in self._later_tries
                self._later_tries.discard(url)
                if url in self._lost:  # another worker holds it now: nothing to say
                    with self._answered:
                        self._lost.discard(url)
                    continue
                if attempt is None or self._cannot_store(attempt):
                    released.append(url)
                else:
                    if not attempt.ok and later_try and self._store is not None:
                        attempt = kept_instead(self._store, attempt)
                    reports.append(attempt.to_wire())
                    self._count(attempt)
            try:
                results = self._done.get_nowait()
            except queue.Empty:
                return

    def _next_lease_begins(self, url: str) -> None:
        """The superseded try of ``url`` has ended: the try of its current lease begins
        (unless that lease was lost meanwhile too, or reported stuck while it waited)."""
        with self._answered:
            self._superseded.discard(url)
            lost = url in self._lost
            self._lost.discard(url)
        task = self._deferred.pop(url, None)
        if task is None:
            return
        if lost:
            self._held.pop(url, None)
            return
        self._held[url] = since_boot()  # its own try begins now: so does its stuck clock
        self._begin([task])

    def _cannot_store(self, attempt: Attempt) -> bool:
        """A failure of our own disk (full, read-only): stop, and give the URL back.

        Counted against the image, it would use up its attempts on a worker that
        cannot store anything, and end as a failure that a rerun does not retry.
        """
        if attempt.kind is not FailureKind.STORAGE:
            return False
        if self.failure is None:
            log.error("cannot store %s: %s", attempt.url, attempt.reason)
            self.failure = StorageError(
                f"cannot store images under {self._options.out_dir}: "
                f"{attempt.reason[len(STORAGE_ERROR):]}; the URLs this worker held went back"
                " to the master; start it again once that is fixed")
            self._stop.set()
        return True

    def _count(self, attempt: Attempt) -> None:
        if attempt.ok:
            self.stats.done += 1
            self.stats.bytes += attempt.bytes or 0
        else:
            self.stats.failed += 1
            log.info("failed %s: %s", attempt.url, attempt.reason)
        if self._notifier is not None:
            self._notifier.poke(self._stats_now())

    def _stats_now(self) -> WorkerStats:
        """A copy of the counts, for the progress callback on its own thread."""
        stats = self.stats
        return WorkerStats(done=stats.done, failed=stats.failed, bytes=stats.bytes)

    def _hand_back(self, store: Store) -> None:
        """On the way out: report what finished, give back what did not."""
        reports = self._pending_reports
        released = self._pending_releases
        self._collect(reports, released, wait=0.0)
        released.extend(set(self._held) - set(released))
        if self._link.board is None or self._quitting:
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
            if handing_back:  # (to "the master at HOST:PORT", or to the broker's crawl)
                log.info("handed %d unfinished URLs back to %s", handing_back,
                         self._client.where)
        except LINK_ERRORS:
            log.warning("could not report %d results and hand %d URLs back: %s is gone; the "
                        "leases will expire and put them back", len(reports), len(released),
                        self._client.where)
            return
        except MasterFailed as exc:
            if reports or released:  # (else the error itself, said as the worker ends)
                log.warning("could not report %d results and hand %d URLs back: %s; the "
                            "leases will expire and put them back", len(reports),
                            len(released), exc)
            return
        # A master whose crawl is over may exit as soon as it has our goodbye, before
        # answering it: nothing is lost then, so that is no error.
        self._link.goodbye()

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

    def _run_engine(self, engine: Engine) -> None:
        """The engine thread. If the engine fails, the worker stops and hands its URLs back."""
        try:
            engine.run()
        except Exception as exc:
            log.exception("the download engine failed")
            if self.failure is None:
                self.failure = WorkerFailed(f"the download engine failed: "
                                            f"{exc.__class__.__name__}: {exc}")
            self._stop.set()


def _say_it_was_over(away: bool, *, new: bool) -> None:
    """The crawl had ended when we came back to it, or joined it: say so, for a user
    would wonder why nothing (more) was downloaded. (The leases we lost meanwhile are
    told of as they are learned.)"""
    if away:
        log.warning("the crawl ended while this worker was away: leaving")
    elif new:
        log.info("the crawl is over: nothing was left to download")
