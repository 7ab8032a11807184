"""The master: crawl pages breadth-first, queue every image found, collect the results.

It owns the crawl loop and nothing else: pages are fetched and parsed by a
small thread pool, image URLs go on the :class:`TaskBoard` that the queue
server shares with the workers, and final outcomes are journaled and written
to results.log and manifest.jsonl. The crawl ends when no page is left to
visit and every image URL has a final result; then the board announces it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawler.board.memory import BoardPolicy, TaskBoard
from crawler.config import Limits, Settings, WorkerSettings
from crawler.errors import StorageError
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.easy import EasyClient
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.master.authkey import Authkey
from crawler.master.frontier import Frontier
from crawler.master.journal import JOURNAL_NAME, Journal, PageDone
from crawler.master.launcher import LocalWorkers, invitation
from crawler.master.results import ResultFiles
from crawler.master.robots import Robots
from crawler.master.scope import Scope
from crawler.master.stylesheets import Stylesheets
from crawler.master.visit import PageVisitor, Visit
from crawler.model.files import MANIFEST_NAME, PAGES_NAME, RESULTS_NAME
from crawler.model.outcome import Attempt, Outcome
from crawler.model.progress import Reporter, Snapshot, write_out
from crawler.model.urls import host_key, host_key_of_normalized
from crawler.model.wire import CrawlInfo, Status
from crawler.parse.pool import PageParser

if TYPE_CHECKING:
    from crawler.board.manager import QueueServer

log = logging.getLogger(__name__)

LOOP_TICK = 0.05  # how often the loop looks at finished pages and results
REAP_EVERY = 0.5
SHUTDOWN_GRACE = 10.0  # how long workers get to notice the end and leave
WORKER_SILENCE = 3.0  # a worker not heard from for this long will not hear the end either


@dataclass(frozen=True)
class MasterOptions:
    seeds: tuple[str, ...]  # normalised
    out_dir: Path
    bind: tuple[str, int]
    local_workers: int = 0
    worker_threads: int = WorkerSettings.threads  # the settings' default: one catalogue
    dry_run: bool = False
    resume: bool = False  # go on with the folder's crawl even if seeds or scope changed
    fresh: bool = False  # forget the folder's crawl and start anew
    invite_workers: bool = True  # say how workers join (not when all are local)


@dataclass
class Summary:
    completed: bool
    interrupted: bool
    elapsed_s: float
    pages: int
    pages_failed: int
    found: int
    succeeded: int
    failed: int
    bytes: int
    out_dir: Path
    pages_read: int = 0  # pages fetched and parsed in this run
    seed_failures: list[tuple[str, str]] = field(default_factory=list)  # (seed, why)

    @property
    def nothing_crawled(self) -> bool:
        """Every seed page this run tried failed, and no other page was read."""
        return bool(self.seed_failures) and self.pages_read == 0

    @property
    def images_per_second(self) -> float:
        return self.succeeded / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Master:
    """The crawl loop: pages in from the page threads, images out to the board, results in.

    One piece on purpose: everything it holds (the frontier, the journal batch,
    the counts, the image refs, the seed failures) is changed by the loop's one
    thread, pass after pass, and the order of those changes is what makes a crash
    lose nothing (a page is journaled with what it found before its images are
    counted as settled). The page threads' work is in ``master.visit``, the worker
    processes in ``master.launcher``, the folder's identity in the journal.
    """

    def __init__(self, settings: Settings, options: MasterOptions, authkey: Authkey,
                 reporter: Reporter, parser: PageParser,
                 announce: Callable[[str], None] = print) -> None:
        self._settings = settings
        self._parser = parser
        self._options = options
        self._authkey = authkey
        self._reporter = reporter
        self._announce = announce
        self._stop = threading.Event()
        # Set when the crawl loop has news: a page finished, the last URL settled, a
        # worker left, a stop was asked for. Waiting on it instead of sleeping a tick
        # ends a crawl as soon as its last result is in.
        self._wake = threading.Event()
        self._snapshot = Snapshot()
        crawl = settings.crawl
        self._scope = Scope.from_seeds(options.seeds, crawl.scope, crawl.allow, crawl.deny,
                                       crawl.image_allow, crawl.image_deny)
        self._policy = AddressPolicy.from_seeds(options.seeds, settings.security.allow_networks)
        self._request = RequestOptions.from_settings(settings)  # files read now: errors up front
        self._board = TaskBoard(BoardPolicy.from_settings(settings), wake=self._wake.set)
        self._started = time.monotonic()
        self._workers = LocalWorkers(options.out_dir, authkey, options.worker_threads)
        self._frontier = Frontier()
        self._server: QueueServer | None = None
        self._pages_read = 0
        self._pages_done: list[PageDone] = []  # finished, to be journaled together
        self._refs: dict[str, dict[str, Any]] = {}  # queued image -> what its page said of it
        self._seed_failures: list[tuple[str, str]] = []

    def stop(self) -> None:
        """Ask the crawl to stop (Ctrl-C, SIGTERM): state is saved, workers are told."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ----- what workers are told ---------------------------------------------

    def describe(self, full: bool = False) -> CrawlInfo | Status:
        dl = self._settings.download
        info = CrawlInfo(limits=dataclasses.asdict(Limits.from_settings(dl)),
                         policy=self._policy.to_wire(),
                         user_agent=self._settings.crawl.user_agent,
                         lease_timeout=self._settings.queue.lease_timeout,
                         worker_silence=self._settings.queue.worker_silence)
        if not full:  # a joining worker's: it holds secrets, which status must not show
            info["request"] = self._request.to_wire()  # headers, cookies, TLS, proxies, logins
            return info
        return Status(**info, seeds=list(self._options.seeds),
                      elapsed_s=round(time.monotonic() - self._started, 2),
                      progress=self._snapshot.as_dict(), board=self._board.counts(),
                      workers=self._board.workers(), closed=self._board.closed)

    # ----- the crawl -----------------------------------------------------------

    def run(self) -> Summary:
        out_dir = self._options.out_dir
        if self._options.dry_run:
            # A dry run leaves the output folder alone: nothing is downloaded or recorded.
            journal = Journal(None)
            return self._run(journal, _NoFiles())
        # Imported here: a dry run serves no queue, and multiprocessing's managers
        # are a sixth of a master's imports.
        from crawler.board.manager import QueueServer

        # The port first: a master that cannot serve its queue must leave no trace in
        # the output folder, or the next run there would resume a crawl never started.
        self._server = QueueServer(self._board, self._options.bind, self._authkey.key,
                                   self.describe)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if self._options.fresh:
                for name in (JOURNAL_NAME, JOURNAL_NAME + "-wal", JOURNAL_NAME + "-shm",
                             RESULTS_NAME, MANIFEST_NAME, PAGES_NAME):
                    (out_dir / name).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the output folder {out_dir}: "
                               f"{exc.strerror or exc}") from exc
        journal = Journal(out_dir)
        try:
            self._take_up(journal)  # before the result files are written from the journal
            files = ResultFiles(out_dir, journal.outcomes())
            try:
                return self._run(journal, files)
            finally:
                files.close()
        finally:
            journal.close()

    def _run(self, journal: Journal, files: ResultFiles) -> Summary:
        settings, options = self._settings, self._options
        journal.add_seeds(options.seeds)
        resumed = journal.resume()
        for outcome in journal.outcomes():
            self._count(outcome)
        self._snapshot.found = len(resumed.finished_images)
        self._snapshot.pages = len(resumed.done_pages)
        self._snapshot.mark_resumed()  # rates count this run only
        frontier = self._frontier = Frontier(resumed.pending_pages, seen=resumed.done_pages,
                                             delay=settings.politeness.host_delay)
        if resumed.done_pages or resumed.finished_images:
            log.info("resuming: %d pages done, %d to visit, %d images finished, %d queued",
                     len(resumed.done_pages), len(frontier), len(resumed.finished_images),
                     len(resumed.pending_images))
        self._board.remember(resumed.finished_images)
        for url, page, ref in resumed.pending_images:
            if ref is not None:
                self._refs[url] = ref
            self._board.put(url, host_key(url), page)
            self._snapshot.found += 1
        if self._server is not None:
            self._serve(self._server)
        session = EasyClient(self._policy, self._request, ca_file=default_ca_file())
        robots = Robots(session, settings.crawl.user_agent, settings.crawl.page_timeout,
                        settings.crawl.respect_robots,
                        max_delay=settings.politeness.max_crawl_delay)
        stylesheets = Stylesheets(
            session, timeout=settings.crawl.page_timeout, max_bytes=settings.crawl.max_page_bytes,
            may_read=lambda url: self._scope.allows_stylesheet(url) and robots.allowed(url))
        visitor = PageVisitor(settings.crawl, client=session, robots=robots, scope=self._scope,
                              parser=self._parser, stylesheets=stylesheets,
                              slow_host=self._board.set_host_delay)
        if not settings.crawl.respect_robots:
            log.warning("robots.txt is ignored (crawl.respect_robots = false)")
        pool = ThreadPoolExecutor(settings.crawl.page_concurrency, thread_name_prefix="page")
        running: set[Future[Visit]] = set()
        last_reap = time.monotonic()
        try:
            while not self._stop.is_set():
                self._submit(running, pool, visitor)
                self._wake.wait(LOOP_TICK)
                self._wake.clear()  # before looking, so news from now on wakes the next wait
                for future in [f for f in running if f.done()]:
                    running.discard(future)
                    self._visited(future.result(), journal, robots, files)
                self._record_pages(journal)
                self._collect(journal, files)
                if time.monotonic() - last_reap > REAP_EVERY:
                    self._board.reap()
                    last_reap = time.monotonic()
                self._snapshot.pages_queued = len(frontier) + len(running)
                self._refresh()
                self._workers.report_ended()
                if not frontier and not running and self._board.unfinished() == 0:
                    break
        finally:
            self._stop.set()
            self._board.close()
            pool.shutdown(wait=False, cancel_futures=True)  # pages not started stay queued
            # Pages in flight are finished and recorded, so a resumed crawl does not fetch
            # them again. Waiting in short steps keeps a second Ctrl-C effective (a bare
            # join would hold the signal until the page is done).
            while running:
                finished, _ = wait(list(running), timeout=LOOP_TICK)
                for future in finished:
                    running.discard(future)
                    if not future.cancelled():
                        self._visited(future.result(), journal, robots, files)
                self._record_pages(journal)
            self._snapshot.pages_queued = len(frontier)
            self._finish(journal, files)
            session.close()
        interrupted = bool(frontier or running or self._board.unfinished())
        return self._summary(completed=not interrupted, interrupted=interrupted)

    def _take_up(self, journal: Journal) -> None:
        """Check that the folder's crawl is this one; reopen what this run's limits extend."""
        crawl = self._settings.crawl
        identity = {"seeds": sorted(self._options.seeds),
                    "scope": [crawl.scope, *(list(patterns) for patterns in (
                        crawl.allow, crawl.deny, crawl.image_allow, crawl.image_deny))]}
        reopened = journal.take_up(identity, depth=crawl.depth, max_images=crawl.max_images,
                                   resume=self._options.resume)
        if reopened:
            log.info("%d page(s) done before are visited again for this run's limits", reopened)

    def _submit(self, running: set[Future[Visit]], pool: ThreadPoolExecutor,
                visitor: PageVisitor) -> None:
        frontier = self._frontier
        max_pages = self._settings.crawl.max_pages
        now = time.monotonic()
        while frontier and len(running) < self._settings.crawl.page_concurrency:
            if max_pages and self._snapshot.pages + len(running) >= max_pages:
                frontier.clear()  # the page budget is spent
                return
            popped = frontier.pop(now)
            if popped is None:
                return  # every host with pages waiting is held back for now
            url, depth = popped
            future = pool.submit(visitor.visit, url, depth)
            future.add_done_callback(self._wake_up)
            running.add(future)

    def _wake_up(self, _future: Future[Visit]) -> None:
        self._wake.set()

    def _visited(self, visit: Visit, journal: Journal, robots: Robots,
                 files: ResultFiles) -> None:
        frontier = self._frontier
        if visit.extraction is None and self._retry_later(visit, robots):
            return
        self._snapshot.pages += 1
        # The first page of a host is fetched before its robots.txt is known: pace from it.
        delay = robots.known_delay(visit.url)
        if delay:
            host = host_key(visit.url)
            frontier.slow_to(host, delay)
            frontier.hold(host, visit.started + delay)
        if visit.extraction is None:
            self._snapshot.pages_failed += 1
            if visit.depth == 0:
                self._seed_failures.append((visit.url, visit.page.skipped))
            log.info("page %s: %s", visit.url, visit.page.skipped)
            files.page_failed(visit.url, visit.page.skipped, visit.page.status,
                              final=not visit.page.transient)
            if not visit.page.transient:  # else it stays to visit: a rerun tries it again
                self._pages_done.append(PageDone(visit.url, [], []))
            return
        self._pages_read += 1
        links: list[tuple[str, int]] = []
        if visit.depth < self._settings.crawl.depth:
            for link in visit.extraction.links:
                if (not frontier.seen(link) and self._scope.allows_page(link)
                        and frontier.add(link, visit.depth + 1)):
                    links.append((link, visit.depth + 1))
        new_images: list[tuple[str, str | None, dict[str, Any] | None]] = []
        max_images = self._settings.crawl.max_images
        complete = True
        for image, refused, ref in visit.images:
            if max_images and self._snapshot.found >= max_images:
                complete = False  # a rerun with a larger budget reads this page again
                break
            if self._board.known(image):
                continue
            new_images.append((image, refused, ref))
            self._snapshot.found += 1
            if self._options.dry_run and refused is None:  # refused ones are never queued
                write_out(image)
        page_url = visit.page.final_url
        log.debug("page %s (depth %d): %d links, %d new images", visit.url, visit.depth,
                  len(links), len(new_images))
        # Refusals are final at once, and journaled with the page: a crash right after
        # must not leave them looking queued, or a resumed crawl would download them.
        refusals = {image: Attempt(url=image, ok=False, reason=refused)
                    for image, refused, _ in new_images if refused is not None}
        self._pages_done.append(PageDone(visit.url, links, [
            (image, page_url, Outcome.from_attempt(refusals[image], page=page_url, worker=None,
                                                   attempts=0, ref=ref).to_json()
             if image in refusals else None, json.dumps(ref) if ref else None)
            for image, _, ref in new_images], complete=complete))
        for image, refused, ref in new_images:
            if ref is not None and refused is None:
                self._refs[image] = ref  # until its outcome is recorded
            if refused is not None:
                self._board.settle_now(refusals[image], page_url)
            elif self._options.dry_run:
                self._board.settle_now(Attempt(url=image, ok=False, reason="dry run"), page_url)
            else:
                self._board.put(image, host_key_of_normalized(image), page_url)  # from extract()

    def _record_pages(self, journal: Journal) -> None:
        """Journal the pages finished since the last call, in one transaction."""
        if self._pages_done:
            journal.pages_done(self._pages_done)
            self._pages_done = []

    def _retry_later(self, visit: Visit, robots: Robots) -> bool:
        """Put a page that failed for a passing reason back, after a backoff, if tries are left.

        The backoff holds back every page of its host, as a 5xx or 429 is about the host.
        """
        policy = self._board.policy  # the images' tries and backoff
        if not visit.page.transient or robots.unreachable(visit.url):
            return False  # robots.txt is read once per run: the page waits for the next
        tries = self._frontier.failed(visit.url)
        if tries >= policy.max_attempts:
            return False
        backoff = policy.backoff(tries, visit.page.retry_after)
        self._frontier.hold(host_key(visit.url), time.monotonic() + backoff)
        log.info("page %s: %s; trying again in %.1f s (try %d of %d)", visit.url,
                 visit.page.skipped, backoff, tries + 1, policy.max_attempts)
        self._frontier.requeue(visit.url, visit.depth)
        return True

    def _collect(self, journal: Journal, files: ResultFiles) -> None:
        settled = self._board.drain()
        if not settled or self._options.dry_run:
            return  # a dry run downloads nothing: nothing to record
        refs = self._refs
        outcomes = [Outcome.from_attempt(s.attempt, page=s.page, worker=s.worker,
                                         attempts=s.attempts, ref=refs.pop(s.attempt.url, None))
                    for s in settled]
        journal.record(outcomes)
        files.write(outcomes)
        for outcome in outcomes:
            self._count(outcome)

    def _count(self, outcome: Outcome) -> None:
        if outcome.ok:
            self._snapshot.downloaded += 1
            self._snapshot.bytes += outcome.bytes or 0
        else:
            self._snapshot.failed += 1

    def _refresh(self) -> None:
        counts = self._board.counts()
        self._snapshot.in_flight = counts["in_flight"]
        self._snapshot.retries = counts["retries"]
        self._snapshot.workers = counts["workers"]
        self._reporter.update(self._snapshot)

    # ----- serving and local workers -------------------------------------------

    def _serve(self, server: QueueServer) -> None:
        server.start()
        host, port = server.address[:2]
        self._announce(f"queue on {host}:{port}")
        if self._options.invite_workers:
            self._announce(invitation(host, port, self._authkey, self._options.out_dir))
        if self._options.local_workers:
            self._workers.start(self._options.local_workers, host, port)

    def _finish(self, journal: Journal, files: ResultFiles) -> None:
        """After the board is closed: let workers report and leave, then record the rest."""
        grace_end = time.monotonic() + SHUTDOWN_GRACE
        while time.monotonic() < grace_end:
            self._collect(journal, files)
            # Every worker calls at least once a second; one silent for longer is gone.
            listening = [w for w in self._board.workers()
                         if not w["gone"] and w["last_contact_s"] < WORKER_SILENCE]
            if not listening and not self._workers.alive():
                break
            if listening:
                self._wake.wait(LOOP_TICK)  # a goodbye wakes it
                self._wake.clear()
            else:  # every worker said goodbye: the local processes are on their way out
                self._workers.wait_one(LOOP_TICK)
        self._workers.stop()
        self._collect(journal, files)
        self._refresh()
        self._reporter.close()

    def _summary(self, *, completed: bool, interrupted: bool) -> Summary:
        s = self._snapshot
        return Summary(completed=completed, interrupted=interrupted,
                       elapsed_s=time.monotonic() - self._started, pages=s.pages,
                       pages_failed=s.pages_failed, found=s.found, succeeded=s.downloaded,
                       failed=s.failed, bytes=s.bytes, out_dir=self._options.out_dir,
                       pages_read=self._pages_read, seed_failures=self._seed_failures)


class _NoFiles(ResultFiles):
    """What a dry run writes: nothing."""

    def __init__(self) -> None:
        pass

    def write(self, outcomes: Iterable[Outcome]) -> None:
        pass

    def page_failed(self, url: str, reason: str, http_status: int, *, final: bool) -> None:
        pass

    def close(self) -> None:
        pass
