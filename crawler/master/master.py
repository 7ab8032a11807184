"""The master: crawl pages breadth-first, queue every image found, collect the results.

It owns the crawl loop and nothing else: pages are fetched and parsed by the
page loop (``master.pageloop``: one thread, and the parser processes), image
URLs go on the :class:`TaskBoard` that the queue server shares with the
workers, and final outcomes are journaled and written to results.log and
manifest.jsonl. The crawl ends when no page is left to
visit and every image URL has a final result; then the board announces it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from crawler.board.base import unsettled
from crawler.board.memory import LONG_HOLD, BoardPolicy, TaskBoard
from crawler.config import DEFAULTS, Settings
from crawler.errors import (
    BrokerError,
    BrokerUnreachable,
    CrawlerError,
    PageLoopFailed,
    StorageError,
)
from crawler.fetch.cookiefeed import CookieFeed
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.easy import EasyClient
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.master import resumed as resumed_work
from crawler.master.authkey import Authkey
from crawler.master.brokerlink import BROKER_WAIT, BrokerLink
from crawler.master.claim import (
    claim_for_embedded,
    drop_last_summary,
    forget_crawl,
)
from crawler.master.crawlinfo import crawl_info
from crawler.master.endwatch import EndWatch
from crawler.master.folderlock import FolderLock
from crawler.master.frontier import Frontier, PageQueue
from crawler.master.goodbye import await_goodbyes
from crawler.master.hungpages import HungPages
from crawler.master.inplace import FilesInPlace
from crawler.master.journal import Journal, PageDone, Resumed
from crawler.master.launcher import LocalWorkers, local_address
from crawler.master.ledger import BrokerLedger, JournalLedger, Ledger
from crawler.master.leftout import LeftOut
from crawler.master.linkedpages import LinkedPages, is_image_link
from crawler.master.missing import (
    MissingImages,
    WorkersElsewhere,
    stored_elsewhere,
    workers_elsewhere,
)
from crawler.master.pagecookies import CookiePost
from crawler.master.pageloop import PageLoop, PageLoopEnded
from crawler.master.results import ManifestTally, NoFiles, ResultFiles
from crawler.master.resumed import ResumedImage
from crawler.master.robots import ROBOTS_AT_ONCE, Robots
from crawler.master.scope import Scope
from crawler.master.stylesheets import BusyAnswer, Stylesheets, reading_rule
from crawler.master.summary import Summary
from crawler.master.takeup import (
    crawl_identity,
    queue_missing_again,
    say_if_long_to_rewrite,
    say_robots_refusals_stay,
    take_up,
)
from crawler.master.visit import PageVisitor, Visit
from crawler.master.workercall import WorkerCall
from crawler.model.files import (
    IMAGES_LEFT_KEPT,
    JOURNAL_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    PAGES_NAME,
    RESULTS_NAME,
)
from crawler.model.folders import folder_in_place_of_file, make_folder
from crawler.model.outcome import Attempt, Outcome, status_reason
from crawler.model.pacing import Paces
from crawler.model.progress import Reporter, Snapshot, write_out
from crawler.model.urls import host_key
from crawler.model.wire import CrawlInfo, Status
from crawler.parse.extract import MAX_URL_LENGTH
from crawler.parse.pool import PageParser

if TYPE_CHECKING:  # imported when used: broker mode's (a Redis client), the queue server
    from crawler.board.broker import BrokerCrawl
    from crawler.board.manager import QueueServer
    from crawler.board.redis import RedisBoard
    from crawler.board.redis_frontier import RedisFrontier
    from crawler.master.onbroker import EvictionWatch, StoresElsewhere

log = logging.getLogger(__name__)

LOOP_TICK = 0.05  # how often the loop looks at finished pages and results
# While pages are in flight, finished pages (one transaction) and settled results
# (another) are recorded at most this often: a real site's pages finish every
# millisecond or so, and each transaction costs more than its rows.
RECORD_EVERY = 0.005
# Settled results wait longer: nothing waits for them to be recorded (the board has
# them already), and a master killed meanwhile only has them downloaded again, as the
# store finds the same bytes. Fewer, larger transactions: on a page-heavy site the
# journal's were a third of the crawl loop's CPU, half of them for results.
COLLECT_EVERY = 0.05
REAP_EVERY = 0.5
# The files of record a master holds open in its output folder, beside its lock and journal.
_RECORDS = (RESULTS_NAME, MANIFEST_NAME, PAGES_NAME)
LEAVE_WAIT = 5.0  # how long local workers that said goodbye get to end by themselves
PAGE_LEASE = 10.0  # seconds a page stays this master's on the broker without a heartbeat
LOOK_EVERY = 0.1  # seconds between two reads of a broker's counts while pages are in flight
# Pages this master has in hand (waiting for a request, being fetched, waiting for a
# parser, being parsed and judged) per page fetched at once (crawl.page_concurrency).
# With only as many in hand as are fetched, the requests waited for the parsers and
# the parsers for the requests (a page read waits up to PARSE_HOLD for company), and
# crawls of page-bound sites took 7-25% longer. Against 8 in hand per request, 2 was
# 5-12% slower, 4 0-5% slower, and 16 the same within 2%.
PAGES_IN_HAND = 8
# Images found and not yet settled past which this master fetches no new page until its
# workers bring them below: it keeps each queued image in memory (about 370 bytes). On a
# site of 5,000 images a page, two workers stored 230 images/s while pages brought 55,000,
# and the master grew by 2 GB in 95 s (a restart read the backlog back into 7 GB). On a
# broker, Redis holds them.
IMAGE_BACKLOG = 200_000


class MasterOptions(NamedTuple):
    seeds: tuple[str, ...]  # normalised
    out_dir: Path
    bind: tuple[str, int]
    local_workers: int = 0
    worker_threads: int = DEFAULTS.worker.threads  # the settings' default: one catalogue
    dry_run: bool = False
    resume: bool = False  # go on with the folder's crawl even if seeds or scope changed
    fresh: bool = False  # forget the folder's crawl and start anew
    invite_workers: bool = True  # say how workers join (not when all are local)
    broker: BrokerCrawl | None = None  # the crawl's state on Redis; None: this master's own
    # A master that joins the broker's crawl: the crawl's request settings, as its record
    # holds them (the files' contents), with this host's own client certificate. None: a
    # master that starts (or starts again) a crawl, with the settings' own.
    joined_request: RequestOptions | None = None
    # The crawler command's main: local workers are forked and run it (see
    # master.launcher); None: each is a fresh interpreter.
    worker_command: Callable[[Sequence[str]], int] | None = None
    # A dry run's image URLs, a page's at a time; None: on standard output.
    on_images: Callable[[list[str]], None] | None = None
    # When this run started (ISO 8601 UTC), as its summary.json's started_at says: told
    # to workers, a worker back after the crawl's end finds this run's summary by it.
    run: str = ""


class _Pipeline(NamedTuple):
    """What carries a crawl's pages, opened for one run of the crawl loop."""

    session: EasyClient  # style sheets (and the cookie jar robots_session shares)
    robots_session: EasyClient  # robots.txt, of many origins at once
    robots: Robots
    stylesheets: Stylesheets
    pages: PageLoop
    frontier: PageQueue


@dataclass
class _LoopState:
    """The crawl loop's state between passes: when it does each of its chores next (or
    did it last), whether the crawl is over, since when the broker has not answered."""

    record_at: float  # pages finished are recorded
    collect_at: float  # settled results are recorded
    last_reap: float  # silent workers' leases reaped, this master's page leases renewed
    last_look: float  # the board's counts read
    all_done: bool = False
    broker_lost: float | None = None  # (time.monotonic()); None: it answers


def _remove_if_only(folder: Path, names: set[str]) -> None:
    """Remove ``folder`` if it holds nothing but files of ``names`` (and those files)."""
    with contextlib.suppress(OSError):
        held = list(folder.iterdir())
        if {path.name for path in held} <= names:
            for path in held:
                path.unlink()
            folder.rmdir()


def _cannot_forget(out_dir: Path, exc: OSError) -> StorageError:
    """--fresh could not remove a file of the crawl's: the one that stayed is named (the
    system said only "Is a directory"), and a folder in its place is said as such."""
    if exc.filename is None:
        return StorageError(f"cannot forget the crawl in {out_dir}: {exc.strerror or exc}")
    stayed = Path(exc.filename)
    if stayed.is_dir() and not stayed.is_symlink():
        return folder_in_place_of_file(stayed, f"forget the crawl in {out_dir}")
    return StorageError(f"cannot forget the crawl in {out_dir}: cannot remove {stayed}: "
                        f"{exc.strerror or exc}")


def _page_loop_failed() -> PageLoopFailed:
    return PageLoopFailed("the page loop stopped on a bug (its error is logged above; "
                          "please report it): what was done is recorded, and the same "
                          "command again resumes the crawl")


class Master:
    """The crawl loop: pages in from the page loop, images out to the board, results in.

    One piece on purpose: everything it holds (the frontier, the journal batch,
    the counts, the image refs, the seed failures) is changed by the loop's one
    thread, pass after pass, and the order of those changes is what makes a crash
    lose nothing (a page is journaled with what it found before its images are
    counted as settled). The pages' steps are in ``master.visit`` and
    ``master.pageloop``, the worker processes in ``master.launcher``, what an
    earlier run left in ``master.resumed``, the folder's identity in the journal.
    What runs once around the loop lives apart: the folder's crawl taken up at
    start (``master.takeup``, or ``master.onbroker`` on a broker), what workers
    are told (``master.crawlinfo``), the broker's link (``master.brokerlink``),
    the pages' cookies for the workers (``master.pagecookies``), the wait for
    the workers' goodbyes (``master.goodbye``) and the run's ``master.summary``.
    """

    def __init__(self, settings: Settings, options: MasterOptions, authkey: Authkey,
                 reporter: Reporter, parser: PageParser,
                 announce: Callable[[str], None] | None = print) -> None:
        self._settings = settings
        self._parser = parser
        self._options = options
        self._authkey = authkey
        self._reporter = reporter
        self._stop = threading.Event()  # the loop ends: asked to (Ctrl-C), or the crawl is over
        self._stop_asked = threading.Event()  # Ctrl-C or SIGTERM: a second one quits at once
        # Set when the crawl loop has news: a page finished, the last URL settled, a
        # worker left, a stop was asked for. Waiting on it instead of sleeping a tick
        # ends a crawl as soon as its last result is in.
        self._wake = threading.Event()
        self._snapshot = Snapshot()
        crawl = settings.crawl
        self._scope = Scope.from_seeds(options.seeds, crawl.scope, crawl.allow, crawl.deny,
                                       crawl.image_allow, crawl.image_deny)
        self._policy = AddressPolicy.from_seeds(options.seeds, settings.security.allow_networks)
        # Files read now: errors up front. (A master that joins has the crawl's.)
        self._request = options.joined_request or RequestOptions.from_settings(settings)
        self._request.proxies()  # and a malformed $http_proxy (or kin) said now
        if self._request.insecure:  # its pages too, not only the workers' images
            log.warning("TLS certificates are NOT verified (http.insecure = true): anyone on "
                        "the network path can read and change the pages and images")
        policy = BoardPolicy.from_settings(settings)
        self._id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        broker = options.broker
        # The in-memory board (embedded mode) or the broker's; the loop treats them alike.
        self._own_board: TaskBoard | None = None
        self._shared_board: RedisBoard | None = None
        self._board: TaskBoard | RedisBoard
        # Embedded, one pace per host for every request to it: the page loop's pages and
        # the board's images take turns of it, and a hold from either side holds both.
        # (On a broker, the board's paces are in Redis: the page loop keeps its own.)
        self._paces: Paces | None = None
        if broker is None:
            self._paces = Paces(settings.politeness.host_delay)
            self._board = self._own_board = TaskBoard(policy, wake=self._wake.set,
                                                      paces=self._paces)
        else:
            from crawler.board.redis import RedisBoard

            # Recorded: a crawl whose record left Redis takes none of this master's writes.
            self._board = self._shared_board = RedisBoard(broker.client, broker.name, policy,
                                                          recorded=True)
        self._started = time.monotonic()
        self._workers = LocalWorkers(options.out_dir, authkey, options.worker_threads,
                                     options.worker_command)
        self._call = WorkerCall(self._workers, local=options.local_workers,
                                invite=options.invite_workers, out_dir=options.out_dir,
                                authkey=authkey, announce=announce)
        self._workers_leaving = False  # all said goodbye: local ones end, reaped last
        self._frontier: PageQueue = Frontier()
        self._pages: PageLoop | None = None  # while the crawl loop runs
        self._shared_frontier: RedisFrontier | None = None
        # Whether an error means a lost broker, its wait, what a reconnection forgets.
        self._broker_link = BrokerLink(options.broker, self._stop)
        self._last_published = 0.0
        self._eviction_watch: EvictionWatch | None = None  # on a broker, from the start
        self._server: QueueServer | None = None
        self._pages_read = 0
        self._page_retries = 0  # pages put back after a passing failure, this run
        self._pages_done: list[PageDone] = []  # finished, to be journaled together
        # The cookies pages set, for workers (a dry run hands out no image: None).
        self._cookie_post: CookiePost | None = None
        self._page_of: dict[Future[Visit], str] = {}  # the page each future is the visit of
        self._page_delays: dict[str, float] = {}  # the Crawl-delay the frontier has, by host
        self._image_delays: dict[str, float] = {}  # the Crawl-delay told the board, by host
        self._recorded: set[str] = set()  # on a broker: images whose result is in the files
        # Found since the pages were last recorded (the board knows them then); in a dry
        # run, which records no image, every one found.
        self._images_seen: set[str] = set()
        self._seed_failures: list[tuple[str, str]] = []
        # Style sheets answered 429 or 503, told from the threads that read them: their
        # hosts are slowed down and held by the loop's pass (its one thread).
        self._busy_sheets: collections.deque[BusyAnswer] = collections.deque()
        self._pages_left = 0  # pages found and not visited for the page budget (max_pages)
        self._said_backlog = False  # that pages wait for the image backlog to shrink
        self._pages_at_depth_limit = 0  # pages at crawl.depth that link to pages not seen
        self._counted_at_limit: set[str] = set()  # this run's of those (one may be read again)
        self._images_over: set[str] = set()  # images met past the image budget (max_images)
        # Those an earlier run at this budget met, none of whose pages this run reads.
        self._images_left_before = 0
        self._left_out = LeftOut()  # what the scope and the page bound left out: the summary's
        # Image links that may lead to pages (a wiki's File:Photo.png), read as pages
        # when their workers find HTML there (see _collect and _visited).
        self._linked_pages = LinkedPages()
        # (url, page, ref) an earlier run left queued: put on the board once judged.
        self._resumed_images: list[ResumedImage] = []
        self._pages_to_retry = 0  # pages failed for a passing reason, left for the next run
        self._hung_pages = HungPages(settings.download.host_timeouts)
        # The output folder's files this master writes, looked at before each record.
        self._in_place: FilesInPlace | None = None
        # Which workers of this host store under another folder: noted in the journal for
        # a rerun's look for deleted images (the embedded mode's, which has one).
        self._elsewhere: WorkersElsewhere | None = None
        self._broker_elsewhere: StoresElsewhere | None = None  # the same, on a broker

    def stop(self) -> None:
        """Ask the crawl to stop (Ctrl-C, SIGTERM): state is saved, workers are told.
        Asked once the crawl is over, it stops waiting for workers to leave."""
        self._stop_asked.set()
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for already (the crawl's own end is not one)."""
        return self._stop_asked.is_set()

    # ----- what workers are told ---------------------------------------------

    def describe(self, full: bool = False) -> CrawlInfo | Status:
        info = crawl_info(self._settings, policy=self._policy, scope=self._scope,
                          folder=self._options.out_dir if self._options.broker is None else None,
                          run=self._options.run)
        if not full:  # a joining worker's: it holds secrets, which status must not show
            info["request"] = self._request.to_wire()  # headers, cookies, TLS, proxies, logins
            return info
        board = self._board.counts()
        # The board's counts are of now; the progress is of the loop's last look: one
        # count of downloads in flight, not two (2 beside 14 in one answer).
        progress = {**self._snapshot.as_dict(), "in_flight": board["in_flight"]}
        return Status(**info, seeds=list(self._options.seeds),
                      elapsed_s=round(time.monotonic() - self._started, 2),
                      progress=progress, board=board,
                      workers=self._board.workers() + self._board.tutorial_workers(),
                      closed=self._board.closed)

    # ----- the crawl -----------------------------------------------------------

    def run(self) -> Summary:
        try:
            return self._run_once()
        finally:
            try:
                self._reap_workers()
            finally:
                if self._server is not None:
                    self._server.stop()  # the port is free again when run() returns

    def _reap_workers(self) -> None:
        """End the local workers. Those that said goodbye are reaped last, so that they
        leave while the files and the journal are closed; each gets LEAVE_WAIT to end by
        itself (cut short by a stop asked meanwhile). The rest are stopped."""
        try:
            if self._workers_leaving:
                self._workers.wait_all(LEAVE_WAIT, until=self._stop_asked)
        finally:
            self._workers_leaving = False
            self._workers.stop()

    def _run_once(self) -> Summary:
        out_dir = self._options.out_dir
        if self._options.dry_run:
            # A dry run leaves the output folder alone: nothing is downloaded or recorded.
            journal = Journal(None)
            journal.add_seeds(self._options.seeds)
            return self._run(JournalLedger(journal, self._embedded_board()),
                             self._resumed_frontier, NoFiles())
        if self._options.broker is not None:
            return self._run_on_broker(self._options.broker)
        # Imported here: a dry run or a broker serves no queue, and multiprocessing's
        # managers are a sixth of a master's imports.
        from crawler.board.manager import QueueServer

        # The port first: a master that cannot serve its queue must leave no trace in
        # the output folder, or the next run there would resume a crawl never started.
        self._server = QueueServer(self._embedded_board(), self._options.bind,
                                   self._authkey.key, self.describe)
        lock = self._lock_folder(out_dir)
        try:
            return self._crawl_into(out_dir, lock)
        finally:
            try:
                self._reap_workers()  # in the lock: they write into the folder until they end
            finally:
                lock.release()

    def _lock_folder(self, out_dir: Path) -> FolderLock:
        """Make the output folder and take it for this master (another has it: refused)."""
        make_folder(out_dir, "the output folder")
        return FolderLock(out_dir)

    def _crawl_into(self, out_dir: Path, lock: FolderLock) -> Summary:
        """The embedded crawl, its folder locked and its queue's port bound."""
        assert self._server is not None
        claim_for_embedded(out_dir, fresh=self._options.fresh)
        lock.note_queue(local_address(*self._server.address[:2]))  # the folder is this crawl's
        if self._options.fresh:  # after the lock: the crawl forgotten is no other master's
            try:
                forget_crawl(out_dir)
            except OSError as exc:
                raise _cannot_forget(out_dir, exc) from exc
        if self._options.local_workers:
            # Forked while this process is small, before the journal is read: they
            # wait until the queue is served (see LocalWorkers.fork_early).
            host, port = self._server.address[:2]
            self._workers.fork_early(self._options.local_workers, host, port)
        try:
            journal = Journal(out_dir)
            try:
                # Before the result files are written from the journal.
                reopened = take_up(journal, crawl_identity(self._options.seeds,
                                                           self._settings.crawl),
                                   self._settings.crawl, out_dir=out_dir,
                                   resume=self._options.resume)
                depth = self._settings.crawl.depth
                max_images = self._settings.crawl.max_images
                if not reopened:  # none of those pages is read again: said again at the end
                    self._pages_at_depth_limit = journal.pages_at_depth_limit(depth)
                    self._images_left_before = journal.images_left(max_images)
                say_robots_refusals_stay(journal, self._settings.crawl, out_dir)
                drop_last_summary(out_dir)  # the folder's crawl is this run's now
                if journal.run_starts():  # its images need not wait for its workers
                    self._embedded_board().no_earlier_leases()
                journal.add_seeds(self._options.seeds)
                # One read of the journal's outcomes, counted as the files are rewritten
                # from them (a second read was half the restart of a large crawl).
                say_if_long_to_rewrite(out_dir)
                missing = MissingImages(out_dir, elsewhere=workers_elsewhere(journal))
                files = ResultFiles(out_dir, self._counted(missing.kept(journal.outcomes())))
                queue_missing_again(journal, missing, out_dir)
                self._in_place = FilesInPlace(out_dir, [LOCK_NAME, JOURNAL_NAME, *_RECORDS])
                self._elsewhere = WorkersElsewhere(journal, out_dir,
                                                   self._embedded_board().worker_info)
                try:
                    summary = self._run(JournalLedger(journal, self._embedded_board()),
                                        self._paced_frontier, files)
                    journal.note_pages_at_depth_limit(depth, self._pages_at_depth_limit)
                    journal.note_images_left(max_images, summary.images_left)
                    # Its results all recorded: what a worker holds now, it may yet store.
                    journal.run_ended(
                        leases_outstanding=self._embedded_board().stop_lending())
                    return summary
                finally:
                    files.close()
            finally:
                journal.close()
        except BaseException:
            self._workers.abandon()  # those still waiting to start leave; the rest stop
            raise

    def _embedded_board(self) -> TaskBoard:
        assert self._own_board is not None, "the in-memory board is made without a broker"
        return self._own_board

    def _paced_frontier(self, resumed: Resumed) -> Frontier:
        """The embedded mode's frontier, handing out no page of a host while one it handed
        out waits for the host's turn (the paces the board's images share)."""
        frontier = self._resumed_frontier(resumed)
        assert self._paces is not None, "the shared paces are made without a broker"
        frontier.follow_requests(self._paces)
        return frontier

    def _resumed_frontier(self, resumed: Resumed) -> Frontier:
        """The embedded mode's frontier: this master's own, refilled from the journal."""
        frontier, self._resumed_images = resumed_work.carry_over(
            resumed, seeds=set(self._options.seeds), scope=self._scope,
            depth=self._settings.crawl.depth, delay=self._settings.politeness.host_delay,
            left_out=self._left_out)
        self._board.remember(resumed.finished_images)
        # Queued once robots.txt is read (_queue_resumed_images), as a page's images are.
        self._snapshot.found += len(self._resumed_images)
        return frontier

    def _queue_resumed_images(self, robots: Robots) -> None:
        """Put the images an earlier run left queued on the board, judged by this run's
        robots.txt (``master.resumed``). Before the crawl loop starts: it must not find
        the crawl over, nor a page find them new, while they are being judged. A stop
        leaves them queued for the next run."""
        images = self._resumed_images
        if not images:
            return
        judgement = resumed_work.judge(images, robots, self._stop, LOOP_TICK)
        if judgement is None:
            return
        self._resumed_images = []
        if self._shared_board is not None:
            resumed_work.judge_again_on_broker(self._shared_board, images, judgement)
        else:
            resumed_work.queue_judged(self._embedded_board(), images, judgement)

    def _run_on_broker(self, broker: BrokerCrawl) -> Summary:
        """The crawl with its state on the broker, shared with other masters of it."""
        from crawler.board.redis import broker_errors

        with broker_errors(broker.client):  # a refused command: one line that says so
            return self._crawl_on_broker(broker)

    def _crawl_on_broker(self, broker: BrokerCrawl) -> Summary:
        out_dir = self._options.out_dir
        made = not out_dir.exists()
        lock = self._lock_folder(out_dir)
        lock.note_broker(str(broker.address), broker.name)
        try:
            return self._crawl_on_broker_into(broker, out_dir)
        except CrawlerError:
            # Refused by the broker (another crawl's seeds under that name, its ACL): a
            # folder made for this master, holding its lock alone, goes with it.
            lock.release()
            if made:
                _remove_if_only(out_dir, {LOCK_NAME})
            raise
        finally:
            lock.release()

    def _crawl_on_broker_into(self, broker: BrokerCrawl, out_dir: Path) -> Summary:
        from crawler.board.redis_frontier import RedisFrontier
        from crawler.master.onbroker import (
            StoresElsewhere,
            fetch_missing_again,
            forget_if_empty,
            images_to_retry,
            take_up_crawl,
        )

        # From now on, the crawl's settings: its limits are its first master's.
        self._settings, self._eviction_watch = take_up_crawl(
            broker, self._settings, out_dir=out_dir, seeds=self._options.seeds,
            worker_info=dict(self.describe()), board=self._board.policy._asdict(),
            request=self._request, joined=self._options.joined_request is not None)
        frontier = self._shared_frontier = RedisFrontier(
            broker.client, broker.name, self._id, delay=self._settings.politeness.host_delay,
            lease=PAGE_LEASE, max_pages=self._settings.crawl.max_pages)
        self._broker_link.frontier = frontier  # what a reconnection makes it forget
        assert self._shared_board is not None  # made with the broker in __init__
        self._broker_elsewhere = StoresElsewhere(self._shared_board, out_dir)
        joined = self._options.joined_request is not None  # (it brings no seeds)
        forgotten = not joined and forget_if_empty(broker, frontier, out_dir)
        frontier.add_many((seed, 0) for seed in self._options.seeds)
        taken = frontier.take_up_set_aside()
        if taken:
            log.info("%d page(s) set aside after passing failures are tried again", taken)
        if forgotten or taken:
            # A crawl that had ended has work again: once it is queued, or another
            # master's look at an idle crawl could close it again in between.
            self._shared_board.reopen()
        # Judged by this run's robots.txt once it is read (_queue_resumed_images).
        self._resumed_images = images_to_retry(broker, self._shared_board)
        # Before the first drain: the folder's files never list an image fetched again.
        fetch_missing_again(broker, self._shared_board, out_dir)
        ledger = BrokerLedger(broker.client, frontier, self._shared_board, self._image_delays)
        # Every outcome is on the broker: the folder's files are written anew from there.
        files = ResultFiles(out_dir, ())
        self._in_place = FilesInPlace(out_dir, [LOCK_NAME, *_RECORDS])
        try:
            return self._run(ledger, lambda _resumed: frontier, files)
        finally:
            files.close()

    def _run(self, ledger: Ledger, make_frontier: Callable[[Resumed], PageQueue],
             files: ResultFiles) -> Summary:
        pipeline = self._open_pipeline(ledger, make_frontier, files)
        frontier = pipeline.frontier
        running: set[Future[Visit]] = set()
        now = time.monotonic()
        state = _LoopState(record_at=now, collect_at=now, last_reap=now, last_look=now)
        try:
            self._loop(pipeline, running, ledger, files, state)
        finally:
            not_visited = self._close_pipeline(pipeline, state, running, ledger, files)
        try:
            interrupted = state.broker_lost is not None or bool(
                frontier or running or not_visited or self._board.unfinished()
                or self._resumed_images)
        except Exception as exc:
            if not self._broker_link.gone(exc):
                raise
            interrupted = True
        return self._summary(completed=not interrupted, interrupted=interrupted,
                             manifest=files.tally)

    def _open_pipeline(self, ledger: Ledger, make_frontier: Callable[[Resumed], PageQueue],
                       files: ResultFiles) -> _Pipeline:
        """What an earlier run left taken up, the workers served, the page loop started."""
        settings = self._settings
        resumed = ledger.resume()  # (its outcomes were counted as the files were rewritten)
        self._snapshot.found = len(resumed.finished_images)
        self._snapshot.pages = len(resumed.done_pages)
        self._snapshot.pages_failed = resumed.failed_pages
        # Style sheets, on the page loop's helper threads (a thread for each page in
        # hand): no more of them at once than pages are fetched.
        session = EasyClient(self._policy, self._request, ca_file=default_ca_file(),
                             at_once=settings.crawl.page_concurrency)
        if not self._options.dry_run:
            embedded = self._shared_frontier is None
            # Before any request: the cookies file's cookies, in the jar now, are no news.
            self._cookie_post = CookiePost(CookieFeed(session.share, session.jar_watch),
                                           self._board,
                                           folder=self._options.out_dir if embedded else None)
            if embedded:
                self._cookie_post.restore(session)
        # robots.txt files with their own bound, the session's jar and caches shared.
        # Each origin's is read once a day: a connection kept for it would idle for good,
        # 64 threads' worth of them on a crawl of many hosts.
        robots_session = EasyClient(self._policy, self._request, ca_file=default_ca_file(),
                                    at_once=ROBOTS_AT_ONCE, share=session.share,
                                    watch=session.jar_watch, keep_alive=False)
        robots = Robots(robots_session, settings.crawl.user_agent, settings.crawl.page_timeout,
                        settings.crawl.respect_robots,
                        max_delay=settings.politeness.max_crawl_delay,
                        max_age=settings.crawl.robots_max_age, retries=self._board.policy)
        if self._shared_frontier is not None:
            # On a broker, an earlier run's refusals for an unreadable robots.txt are
            # judged again before the results are read, so that one queued again leaves
            # the stream before the files are written from it.
            self._queue_resumed_images(robots)
            # The results there already (earlier runs, workers that went on while no
            # master ran) are recorded first: they are not this run's work.
            self._collect(ledger, files)
        self._snapshot.mark_resumed()  # rates count this run only
        frontier = self._frontier = make_frontier(resumed)
        if self._server is not None:
            self._call.serve(self._server)
        elif self._options.broker is not None:
            self._call.serve_on_broker(self._options.broker, BROKER_WAIT + 10)
        # The hosts' paces, for the page loop's requests and the sheets' (embedded, the
        # board's images' too; on a broker, the board's are in Redis).
        paces = self._paces if self._paces is not None else Paces(settings.politeness.host_delay)
        stylesheets = Stylesheets(
            session, timeout=settings.crawl.page_timeout, max_bytes=settings.crawl.max_page_bytes,
            may_read=reading_rule(self._scope.allows_stylesheet, robots),
            retries=self._board.policy, paces=paces, crawl_delay=robots.known_delay,
            on_busy=self._sheet_busy)
        visitor = PageVisitor(settings.crawl, client=session, robots=robots, scope=self._scope,
                              parser=self._parser, stylesheets=stylesheets,
                              slow_host=self._slow_host,
                              known=self._image_known, hung=self._hung_pages,
                              left_out=self._left_out)
        if not settings.crawl.respect_robots:
            log.warning("robots.txt is ignored (crawl.respect_robots = false)")
        self._queue_resumed_images(robots)
        pages = PageLoop(visitor, parser=self._parser, policy=self._policy,
                         options=self._request, timeout=settings.crawl.page_timeout,
                         max_bytes=settings.crawl.max_page_bytes, ca_file=default_ca_file(),
                         share=session.share, watch=session.jar_watch,
                         concurrency=PAGES_IN_HAND * settings.crawl.page_concurrency,
                         fetches=settings.crawl.page_concurrency,
                         delay=settings.politeness.host_delay, paces=paces)
        self._pages = pages
        return _Pipeline(session, robots_session, robots, stylesheets, pages, frontier)

    def _loop(self, pipeline: _Pipeline, running: set[Future[Visit]], ledger: Ledger,
              files: ResultFiles, state: _LoopState) -> None:
        """The crawl loop, until the crawl is over (``state.all_done``) or a stop."""
        ending = EndWatch(slowest=LOOP_TICK)  # on a broker: how long the loop may sleep
        while not self._stop.is_set():
            try:
                if state.broker_lost is not None:  # back: claim its pages before taking more
                    pipeline.frontier.heartbeat(self._working(running))
                state.all_done = self._pass(pipeline, running, ledger, files, state, ending)
            except Exception as exc:  # noqa: BLE001 - only a lost broker is waited out
                if self._broker_link.answered(exc):
                    state.broker_lost = None  # it is back (what it said ends the crawl)
                state.broker_lost = self._broker_link.lost(exc, state.broker_lost)
                continue
            state.broker_lost = None
            if state.all_done:
                return

    def _pass(self, pipeline: _Pipeline, running: set[Future[Visit]], ledger: Ledger,
              files: ResultFiles, state: _LoopState, ending: EndWatch) -> bool:
        """One pass of the crawl loop: pages handed out, finished ones taken in, results
        recorded, the board looked at. True when the crawl is over."""
        frontier = pipeline.frontier
        self._forget_after_reconnecting()
        self._submit(running, pipeline.pages)
        # A page of its own wakes the loop when it ends: no need to look.
        self._wake.wait(max(0.0, state.record_at - time.monotonic()) if self._pages_done
                        else LOOP_TICK if running else ending.pause)
        self._wake.clear()  # before looking: news from now on wakes the next wait
        for future in [f for f in running if f.done()]:
            self._visited(self._visit_of(future, running), pipeline.robots, files)
            self._page_of.pop(future, None)
            running.discard(future)  # only now: a lost broker leaves it to redo
        self._slow_down_busy_sheets_hosts()
        now = time.monotonic()
        if now >= state.record_at or not running:
            self._record_pages(ledger)
            state.record_at = now + RECORD_EVERY
        if now >= state.collect_at:  # the end records the rest (_finish)
            self._collect(ledger, files)
            state.collect_at = now + COLLECT_EVERY
        if time.monotonic() - state.last_reap > REAP_EVERY:
            expired = self._board.reap()
            if expired:  # else only a manifest's attempts showed it
                log.info("%d image lease(s) ran out (their worker fell silent, or took "
                         "longer than queue.lease_timeout): each counts as a try, and goes "
                         "to another worker, or, on its last try (download.max_attempts), "
                         "fails as lost, for the next run to try again", expired)
            frontier.heartbeat(self._working(running))  # its pages stay its own
            state.last_reap = time.monotonic()
        # On a broker each look is a round trip: while this master has pages in flight
        # the crawl cannot be over, and the display is fresh enough at a few looks a
        # second.
        now = time.monotonic()
        if (not running or now - state.last_look >= LOOK_EVERY
                or self._shared_frontier is None):
            state.last_look = now
            if self._look(frontier, running, ledger, files, ending, now):
                return True
        if not self._stop_asked.is_set():  # a Ctrl-C at the terminal stops them too: no news
            self._workers.report_ended()
            if self._workers.all_interrupted():
                # Waiting for workers from elsewhere, the crawl hung for good, holding
                # its folder's lock, and so did the caller's thread.
                log.warning("every local worker was interrupted (Ctrl-C), and this crawl's "
                            "thread heard no Ctrl-C of its own: stopping it as one does; "
                            "the same command (or crawl() call) again goes on")
                self.stop()
        return False

    def _look(self, frontier: PageQueue, running: set[Future[Visit]], ledger: Ledger,
              files: ResultFiles, ending: EndWatch, now: float) -> bool:
        """Count what is left, for the display and the end: True when the crawl is over."""
        # Pages first, then images: on a broker, another master's page is either still
        # counted here or its images are counted below.
        pages_left = len(frontier)
        # (On a broker, this master's pages in flight are leased there, and counted in
        # the frontier's length already.)
        self._snapshot.pages_queued = pages_left + (
            len(running) if self._shared_frontier is None else 0)
        counts = self._refresh()
        self._call.hint_when_no_worker(counts)
        if not pages_left and not running and unsettled(counts) == 0:
            # The last results may hold pages (an image link that led to one): recorded
            # first, the crawl ends only without any.
            self._collect(ledger, files)
            if not len(frontier):
                return True
        self._call.stop_if_nothing_can_store(counts)
        if (not pages_left and not running and not self._pages_done
                and self._own_board is not None):
            self._own_board.pages_over()  # its images are all on the board
        if self._shared_frontier is not None:
            ending.looked(counts, pages=pages_left + len(running), now=now)
        return False

    def _close_pipeline(self, pipeline: _Pipeline, state: _LoopState,
                        running: set[Future[Visit]], ledger: Ledger, files: ResultFiles) -> int:
        """Stopped: the pages in flight are finished and recorded, those not started stay
        to visit (in the journal, or on the broker once their leases lapse). Returns how
        many pages in hand were not visited."""
        self._stop.set()
        pipeline.pages.stop_starting()
        not_visited = 0
        try:
            if state.broker_lost is not None:
                # Stopped while the broker does not answer: each call would wait its
                # deadline in turn (a frozen broker held a SIGTERM for a minute).
                raise BrokerUnreachable("it did not answer as the crawl stopped")
            not_visited = self._wind_down(state.all_done, running, pipeline.frontier,
                                          pipeline.robots, ledger, files)
        except Exception as exc:
            if not self._broker_link.gone(exc):
                raise
            state.broker_lost = state.broker_lost or time.monotonic()
            log.warning("the broker is out of reach (%s): what this master had not "
                        "recorded goes back to the crawl when its leases run out", exc)
            self._workers.stop()
        finally:
            try:
                pipeline.pages.close()
                self._parser.let_go()  # no page comes any more: its children end meanwhile
            finally:
                pipeline.robots.close()
                pipeline.stylesheets.close()
                pipeline.robots_session.close()  # before the session: it closes the share
                pipeline.session.close()
        return not_visited

    def _wind_down(self, all_done: bool, running: set[Future[Visit]], frontier: PageQueue,
                   robots: Robots, ledger: Ledger, files: ResultFiles) -> int:
        """After the loop: close the crawl if it is over, finish and record the pages in
        flight, let the workers leave. Returns how many pages in hand were not visited
        (a stop cancels those not started: they stay to visit, and the crawl is not
        over, though neither the frontier nor the board holds them now)."""
        if self._shared_board is not None:
            # On a broker, the crawl is everyone's: a master that stops early leaves it
            # open for the other masters and the workers, and one that found it over
            # closes it only if no master has given it work again meanwhile.
            if all_done and not self._shared_board.close_if_idle():
                log.info("the crawl has work again (another master's): left open for it")
        elif all_done or not (frontier or running or self._board.unfinished()
                                or self._resumed_images):
            # Only a crawl that is over is closed (a stop asked as it ended is no matter):
            # told "closed", a worker leaves for good. One stopped early (Ctrl-C, an
            # error) leaves the board open, and its workers wait for the master to
            # come back.
            self._board.close()
        # Pages in flight are finished and recorded, so a resumed crawl does not fetch
        # them again. Waiting in short steps keeps a second Ctrl-C effective (a bare
        # join would hold the signal until the page is done).
        last_heartbeat = time.monotonic()
        not_visited = 0
        while running:
            finished, _ = wait(list(running), timeout=LOOP_TICK)
            for future in finished:
                if future.cancelled():
                    not_visited += 1
                else:
                    self._visited(self._visit_of(future, running), robots, files)
                running.discard(future)
                self._page_of.pop(future, None)  # no longer in hand (_room_for_pages)
            self._record_pages(ledger)
            if time.monotonic() - last_heartbeat > REAP_EVERY:  # a page may take a while
                frontier.heartbeat(self._working(running))
                last_heartbeat = time.monotonic()
        unleased = 0  # of those not visited, the ones the frontier counts again
        if not_visited and self._shared_frontier is not None:
            # Given back to the crawl's frontier now: left leased to this master until
            # their leases lapsed (10 s), they held up its rerun, or another master.
            with contextlib.suppress(BrokerError):  # (lost: they lapse as before)
                frontier.heartbeat(self._working(running))
            unleased = not_visited  # the frontier counts its leased pages too
        self._snapshot.pages_queued = len(frontier) + not_visited - unleased
        self._finish(ledger, files)
        return not_visited

    def _submit(self, running: set[Future[Visit]], pages: PageLoop) -> None:
        frontier = self._frontier
        max_pages = self._settings.crawl.max_pages
        free = pages.concurrency - len(running)
        if max_pages:
            budget = max_pages - self._snapshot.pages - len(running)
            if budget <= 0:
                if frontier:  # the page budget is spent: said in the summary
                    self._pages_left += frontier.clear()
                return
            free = min(free, budget)
        if self._backlog_full():
            return
        # pop_many says when nothing may be taken: on a broker, len(frontier) is a round
        # trip (a transaction), and asking it before each page cost a third of the loop;
        # and the pages come in one round trip, not one each.
        taken = frontier.pop_many(free, time.monotonic())
        try:
            futures = pages.submit_many(taken)
        except PageLoopEnded as exc:  # (the crawl loop closes it only once it ends)
            # The pages stay to visit: in the journal, or on the broker once their
            # leases lapse.
            raise _page_loop_failed() from exc
        for (url, _depth), future in zip(taken, futures, strict=True):
            self._page_of[future] = url
            future.add_done_callback(self._wake_up)
            running.add(future)

    def _backlog_full(self) -> bool:
        """Whether IMAGE_BACKLOG images wait for workers in this master's memory: then
        no new page is fetched (those in flight end) until they are fewer."""
        if self._shared_frontier is not None or self._options.dry_run:
            return False  # on a broker, Redis holds them; a dry run queues none
        waiting = self._snapshot.found - self._snapshot.done
        if waiting < IMAGE_BACKLOG:
            return False
        if not self._said_backlog:
            self._said_backlog = True
            log.info("%d images wait for workers: no new page is fetched until fewer than "
                     "%d do, to keep this master's memory bounded (more workers shorten "
                     "the wait)", waiting, IMAGE_BACKLOG)
        return True

    def _working(self, running: set[Future[Visit]]) -> list[str]:
        """The pages this master is working on: being fetched, or done and not recorded."""
        return [self._page_of[future] for future in running] + [
            page.url for page in self._pages_done]

    def _visit_of(self, future: Future[Visit], running: set[Future[Visit]]) -> Visit:
        """The visit ``future`` (done) brings; the broker's error it met, raised for the
        crawl loop to meet as its own (a refusal ends the crawl in a line, a lost broker
        is waited for). Such a page is no longer worked on: the next heartbeat gives its
        lease back to the crawl, whose masters fetch it again."""
        if future.cancelled():  # while the crawl goes on, only a loop that failed does it
            raise _page_loop_failed()
        visit = future.result()
        if visit.broker_error is not None:
            self._page_of.pop(future, None)
            running.discard(future)
            raise visit.broker_error
        return visit

    def _wake_up(self, _future: Future[Visit]) -> None:
        self._wake.set()

    def _forget_after_reconnecting(self) -> None:
        """What this master sent that a restarted Redis may have lost: forgotten, or sent
        again (see ``BrokerLink.forget_after_reconnecting``)."""
        self._broker_link.forget_after_reconnecting(self._images_seen, self._page_delays,
                                                    self._cookie_post)

    def _visited(self, visit: Visit, robots: Robots, files: ResultFiles) -> None:
        # A broker command since the loop's last look may have reconnected: what this
        # master sent is forgotten before this page's links and images are left out.
        self._forget_after_reconnecting()
        frontier = self._frontier
        depth = frontier.take_depth(visit.url, visit.depth)  # (a shorter path found since)
        if depth != visit.depth:
            visit = visit._replace(depth=depth)
        self._hung_pages.heard(visit.url, visit.page)
        if visit.extraction is None and self._retry_later(visit, robots):
            return
        again = frontier.reading_again(visit.url)  # read before, further from the seeds
        if not again:
            self._snapshot.pages += 1
        self._pace_pages(visit, robots)
        if visit.extraction is None:
            if again:  # its links stay at the depth they were found at
                log.info("page %s, read again nearer the seeds: %s", visit.url,
                         visit.page.skipped)
                frontier.note_read(visit.url, depth)
                self._pages_done.append(PageDone(visit.url, [], []))
            else:
                self._page_failed(visit, files)
            return
        frontier.note_read(visit.url, depth)
        if again:
            if visit.url in self._counted_at_limit:  # its links are followed now
                self._counted_at_limit.discard(visit.url)
                self._pages_at_depth_limit -= 1
        else:
            self._pages_read += 1
            files.page_crawled(visit.url)
        if visit.page.final_url != visit.url:
            # Read under its redirect's target (a folder's "/sub" sends to "/sub/"):
            # a link to the target later is the same page, not another one to read.
            frontier.mark_seen(visit.page.final_url)
        nofollow = visit.extraction.nofollow and self._settings.crawl.respect_robots
        if nofollow and visit.extraction.links:
            log.info("page %s: its robots meta tag says nofollow: its links are not followed",
                     visit.url)
        if visit.extraction.too_long:
            log.info("page %s: %d links or images left out: their addresses are longer than %d"
                     " characters, more than servers take", visit.url,
                     visit.extraction.too_long, MAX_URL_LENGTH)
        links_followed = visit.depth < self._settings.crawl.depth and not nofollow
        links, left, read_again = (self._new_links(visit.extraction.links, visit.depth)
                                   if links_followed else ([], (), ()))
        if not links_followed and not nofollow and self._links_on(visit.extraction.links):
            self._pages_at_depth_limit += 1  # a trap (a calendar) ends here: said at the end
            self._counted_at_limit.add(visit.url)
        found_before = self._snapshot.found
        new_images, complete = self._new_images(visit, links, links_followed)
        page_url = visit.page.final_url
        # (Counted as found: a dry run lists them, and queues none.)
        log.debug("page %s (depth %d): %d links, %d new images", visit.url, visit.depth,
                  len(links), self._snapshot.found - found_before)
        # Refusals are final at once, and recorded with the page: a crash right after
        # must not leave them looking queued, or a resumed crawl would download them.
        # The ledger puts the rest on the board when it records the page.
        self._pages_done.append(PageDone(visit.url, links, [
            (image, page_url, Outcome.from_attempt(
                Attempt(url=image, ok=False, reason=refused), page=page_url, worker=None,
                attempts=0, ref=ref).to_json() if refused is not None else None,
             json.dumps(ref) if ref else None)
            for image, refused, ref in new_images], complete=complete, left=left,
            again=read_again))

    def _page_failed(self, visit: Visit, files: ResultFiles) -> None:
        """A page that could not be read: recorded as failed for good, or set aside for a
        rerun when the reason may pass."""
        self._snapshot.pages_failed += 1
        if visit.depth == 0:
            self._seed_failures.append((visit.url, visit.page.skipped))
        log.info("page %s: %s", visit.url, visit.page.skipped)
        files.page_failed(visit.url, visit.page.skipped, visit.page.status,
                          final=not visit.page.transient)
        if not visit.page.transient:
            self._pages_done.append(PageDone(visit.url, [], [], failed=True))
        else:  # it stays to visit: a rerun tries it again
            self._frontier.set_aside(visit.url, visit.depth)
            self._pages_to_retry += 1

    def _new_links(self, found: Iterable[str], depth: int
                   ) -> tuple[list[tuple[str, int]], tuple[tuple[str, int], ...],
                              tuple[tuple[str, int], ...]]:
        """The links of a page at ``depth`` that are new pages of the crawl: those queued,
        those past what the page budget still allows, left to the journal, and the pages
        read already further from the seeds, to read again (``Frontier.read_again``). Held here,
        a site whose every page lists 100,000 links (a calendar, filters) grew the master
        by about max_pages times as many URLs, though this run reads none of them. Pages
        queued before through a longer path come first, with this path's depth, for the
        journal (the budget counts them already)."""
        queued: list[tuple[str, int]] = self._frontier.found_again(found, depth + 1)
        room = self._room_for_pages() + len(queued)
        left: list[tuple[str, int]] = []
        for link in self._unseen_pages(found, count_left_out=True):
            if len(queued) >= room:
                left.append((link, depth + 1))  # (said unseen again if listed again)
            elif self._frontier.add(link, depth + 1):
                queued.append((link, depth + 1))
        again = tuple(self._frontier.read_again(found, depth + 1, self._settings.crawl.depth))
        for link, _ in again:
            log.info("page %s, read further from the seeds, is linked from depth %d: read "
                     "again at depth %d, for the pages its links lead to", link, depth,
                     depth + 1)
        return queued, tuple(left), again

    def _room_for_pages(self) -> float:
        """How many more pages this run may queue before its page budget is spent (inf: no
        budget, or the broker's frontier, which keeps the crawl's budget itself)."""
        max_pages = self._settings.crawl.max_pages
        if not max_pages or self._shared_frontier is not None:
            return math.inf
        # The page being taken in is counted in pages already, and is still in hand; a
        # page to read again (in hand, or waiting) is none of the budget's.
        in_hand = len(self._page_of) - 1
        return (max_pages - self._snapshot.pages - in_hand - len(self._frontier)
                + self._frontier.again_count())

    def _links_on(self, found: Iterable[str]) -> bool:
        """Whether ``found`` holds a page of the crawl not seen yet. On a broker, this
        master's set lacks what other masters (and earlier runs) met: the crawl's is asked
        for the links new to this master, in one round trip."""
        unseen = self._unseen_pages(found)
        if self._shared_frontier is None:
            return next(unseen, None) is not None
        new = list(unseen)
        return bool(new and self._shared_frontier.unseen_by_the_crawl(new))

    def _unseen_pages(self, found: Iterable[str], *, count_left_out: bool = False
                      ) -> Iterator[str]:
        """The links of ``found`` that are pages of the crawl this master has not seen, one
        at a time (a link queued by the caller meanwhile is seen by the next look); with
        ``count_left_out``, those to other sites are counted for the summary."""
        frontier, scope = self._frontier, self._scope
        for link in found:
            if frontier.seen(link):
                continue
            if scope.allows_page(link):
                yield link
            elif count_left_out and scope.another_site(link):
                self._left_out.link(link)

    def _new_images(self, visit: Visit, links: list[tuple[str, int]], links_followed: bool
                    ) -> tuple[list[tuple[str, str | None, dict[str, Any] | None]], bool]:
        """The page's images met for the first time, each (url, refusal or None, ref), and
        whether the image budget left none of them out. An image link known to lead to
        a page is added to ``links`` instead; a dry run lists its images here."""
        frontier = self._frontier
        new_images: list[tuple[str, str | None, dict[str, Any] | None]] = []
        max_images = self._settings.crawl.max_images
        complete = True
        listed: list[str] = []  # a dry run's output: the page's new images, in one write
        for at, (image, refused, ref) in enumerate(visit.images):
            if self._linked_pages.is_page(image):
                # Known to lead to an HTML page, and not read as one when it was found
                # (at a shallower run's depth limit, say): this page's link reads it.
                if (links_followed and refused is None and is_image_link(ref)
                        and self._scope.allows_page(image)
                        and not frontier.seen(image) and frontier.add(image, visit.depth + 1)):
                    links.append((image, visit.depth + 1))
                continue
            if max_images and self._snapshot.found >= max_images:
                complete = False  # a rerun with a larger budget reads this page again
                if len(self._images_over) < IMAGES_LEFT_KEPT:  # a count, not a second set
                    self._images_over.update(   # of every image of a sampled site
                        url for url, _, _ in visit.images[at:] if url not in self._images_seen)
                break
            if image in self._images_seen or (self._shared_frontier is None
                                              and self._board.known(image)):
                continue  # on the broker, its put finds out: a round trip per image costs
            self._images_seen.add(image)
            self._snapshot.found += 1
            if self._options.dry_run:
                # Listed (refused ones are counted, for the summary to say), and neither
                # queued nor recorded: an outcome per image, written to a journal no one
                # reads, was a tenth of a dry run's master CPU.
                if refused is None:
                    listed.append(image)
                else:
                    self._left_out.unlisted_image(refused)
                continue
            new_images.append((image, refused, ref))
            if (refused is None and is_image_link(ref) and links_followed
                    and self._scope.allows_page(image)):
                self._linked_pages.await_result(image, visit.depth + 1)
        if listed:
            if self._options.on_images is not None:
                self._options.on_images(listed)
            else:
                write_out("\n".join(listed))
        return new_images, complete

    def _image_known(self, url: str) -> bool:
        """Whether ``url`` was found before, for the page loop (another thread): judging a
        known image again (robots.txt, scope) is most of a page's cost there, and the crawl
        loop would drop it. Known are the images this master has met and not yet put on the
        board (all of them in a dry run, which puts none there) and the board's own; on a
        broker, a look at the board would be a round trip per image: its put finds out."""
        # Membership tests of a set and a dict are atomic: no lock against the crawl loop.
        if self._linked_pages.is_page(url):
            return False  # a link to a page: the crawl loop may read it as one
        if self._shared_frontier is None:
            return url in self._images_seen or self._board.known(url)
        if self._broker_link.reconnected() is not None:
            return False  # reconnected, and the set not yet forgotten: Redis may have lost them
        return url in self._images_seen

    def _slow_host(self, host: str, seconds: float) -> None:
        """Tell the board an image host's Crawl-delay (from the page loop's threads), and
        keep it for the broker's ledger, which puts it again with the host's images."""
        self._board.set_host_delay(host, seconds)
        self._image_delays[host] = seconds

    def _record_pages(self, ledger: Ledger) -> None:
        """Record the pages finished since the last call, in one transaction, and queue
        their images."""
        if self._pages_done:
            if self._cookie_post is not None:  # before the images that may need them
                self._cookie_post.publish()
                self._forget_after_reconnecting()  # (that call reconnected: all of them)
            self._pages_left += ledger.pages_done(self._pages_done)  # the budget's: said
            self._pages_done = []
            if self._shared_frontier is None and not self._options.dry_run:
                self._images_seen.clear()  # the board knows them now

    def _pace_pages(self, visit: Visit, robots: Robots) -> None:
        """Space the host's pages by its Crawl-delay, from this page's request on: its first
        page is fetched before its robots.txt is known, and one read again past its age
        may ask for another delay."""
        if not robots.is_read(visit.url):
            return
        delay, host = robots.known_delay(visit.url) or 0.0, host_key(visit.url)
        if self._page_delays.get(host, 0.0) != delay:  # (on a broker, a round trip)
            self._frontier.set_crawl_delay(host, delay)
            self._page_delays[host] = delay
        if delay:
            self._frontier.hold(host, visit.started + delay)

    def _retry_later(self, visit: Visit, robots: Robots) -> bool:
        """Put a page that failed for a passing reason back, after a backoff, if tries are left.

        The backoff holds back every page of its host, as a 5xx or 429 is about the host;
        so does a Retry-After on its last try (a page out of tries is not tried again, but
        its host asked for a pause all the same). A page refused for want of a robots.txt
        waits for that file's next read, if it has one in this run.
        """
        policy = self._board.policy  # the images' tries and backoff
        if not visit.page.transient:
            return False
        if visit.page.held:
            if host_key(visit.page.held) != host_key(visit.url):
                # Redirected to another host: holding this one's pages for that host's
                # robots.txt would stall a site for one link that leaves it.
                return False
            return self._retry_when_robots_is_read(visit, robots.read_again_in(visit.page.held))
        if (self._hung_pages.unread(visit.url) is not None
                or self._hung_pages.unread(visit.page.final_url) is not None):
            # Its host, or the one its redirect led to, timed out again and again: the
            # next run reads it.
            return False
        if visit.page.host_is_busy:  # on its last try too: the host asked all the same
            self._slow_down_host(visit.page.final_url, visit.page.status)
        tries = self._frontier.failed(visit.url)
        pause = visit.page.retry_after
        if pause:
            self._hold_host(visit.url, min(pause, policy.backoff_max))
            if pause >= LONG_HOLD:
                log.info("%s asks to wait %.0f s (Retry-After on %s): its pages wait %.0f s"
                         " at most (download.backoff_max)", host_key(visit.url), pause,
                         visit.url, min(pause, policy.backoff_max))
        if tries >= policy.max_attempts:
            return False
        self._try_again_in(visit, tries, policy.backoff(tries, pause))
        return True

    def _retry_when_robots_is_read(self, visit: Visit, read_again_in: float | None) -> bool:
        """Put a page refused for want of a robots.txt back, to be visited once that file
        is read again (``read_again_in`` seconds from now; None: not in this run, and the
        page waits for the next), if the page has tries left."""
        if read_again_in is None:
            return False
        tries = self._frontier.failed(visit.url)
        if tries >= self._board.policy.max_attempts:
            return False
        self._try_again_in(visit, tries, read_again_in)
        return True

    def _try_again_in(self, visit: Visit, tries: int, seconds: float) -> None:
        """Queue a page that failed ``tries`` times again, its host's pages held ``seconds``."""
        self._hold_host(visit.url, seconds)
        log.info("page %s: %s; trying again in %.1f s (try %d of %d)", visit.url,
                 visit.page.skipped, seconds, tries + 1, self._board.policy.max_attempts)
        self._frontier.requeue(visit.url, visit.depth)
        self._page_retries += 1

    def _slow_down_host(self, url: str, status: int) -> None:
        """A page or a style sheet was answered 429 or 503 at ``url`` (the hop that
        answered: a redirect's target): its host is slowed down as for an image's (its
        pages and images go by one pace, of what the host allows: a host that refuses
        pages is rate limiting the whole host), and its pages wait the new delay from
        now, as its images do."""
        host = host_key(url)
        slowed = self._board.page_host_busy(host, status_reason(status), url)
        if slowed is None:
            return
        self._hold_host(url, slowed)
        if self._paces is None and self._pages is not None:
            # On a broker, the page loop's paces are its own: the pages this master holds
            # already, handed out before the slow-down, would go back to back.
            self._pages.slowed_elsewhere(host, slowed)

    def _sheet_busy(self, busy: BusyAnswer) -> None:
        """From a sheet's reading thread: its 429 or 503, for the loop's next pass, which
        it wakes (a sheet may be read on after the pages that linked it stopped waiting:
        with none in flight, the loop would only look at its pause)."""
        self._busy_sheets.append(busy)
        self._wake.set()

    def _slow_down_busy_sheets_hosts(self) -> None:
        """The hosts whose style sheets were answered 429 or 503 since the last pass are
        slowed down as for a page's answer, and held for the Retry-After they sent: the
        sheet is tried again after its backoff, and its host's pages and images went on
        at the pace it had just refused."""
        while self._busy_sheets:
            busy = self._busy_sheets.popleft()
            self._slow_down_host(busy.url, busy.status)
            if busy.retry_after:
                self._hold_host(busy.url, min(busy.retry_after, self._board.policy.backoff_max))

    def _hold_host(self, url: str, seconds: float) -> None:
        """Ask ``url``'s host for no page for ``seconds`` from now; a hold is never shortened."""
        host, until = host_key(url), time.monotonic() + seconds
        self._frontier.hold(host, until)
        if self._pages is not None:  # the pages handed out already wait too
            self._pages.hold(host, until)

    def _collect(self, ledger: Ledger, files: ResultFiles) -> None:
        if self._in_place is not None:  # before the drain: the board keeps what is settled
            self._in_place.check()
        settled = self._board.drain()
        for line in self._board.news():  # (a Retry-After the board could not go by)
            log.warning("%s", line)
        if not settled or self._options.dry_run:
            return  # a dry run downloads nothing: nothing to record
        if self._shared_frontier is not None:
            # A Redis that lost its last second of writes (a crash) may see a URL settled
            # twice: the files keep its first result, as the embedded board would.
            settled = [s for s in settled if s.attempt.url not in self._recorded]
            self._recorded.update(s.attempt.url for s in settled)
        outcomes = [Outcome.from_attempt(s.attempt, page=s.page, worker=s.worker,
                                         attempts=s.attempts,
                                         ref=json.loads(s.ref) if s.ref else None)
                    for s in settled]
        pages = self._linked_pages.settled(settled)
        if pages:
            self._read_as_pages(pages, ledger)
        if self._elsewhere is not None:  # before the results that a rerun reads with it
            self._elsewhere.note(s.worker for s in settled)
        elif self._broker_elsewhere is not None:
            self._broker_elsewhere.note(s.worker for s in settled if s.attempt.ok)
        ledger.record(outcomes)
        files.write(outcomes)
        for outcome in outcomes:
            self._count(outcome)

    def _read_as_pages(self, pages: list[tuple[str, int]], ledger: Ledger) -> None:
        """Queue links that named an image and led to an HTML page (a wiki's
        ``File:Photo.png``, a gallery's viewer) as the pages they are: what they show is
        the image the link was for. Recorded before their outcomes, so that a crash in
        between leaves both to do again, not the page lost."""
        frontier = self._frontier
        new = [(url, depth) for url, depth in pages if frontier.add(url, depth)]
        if new:
            ledger.pages_found(new)
            for url, _ in new:
                log.info("image link %s leads to an HTML page: read as a page", url)

    def _counted(self, outcomes: Iterable[Outcome]) -> Iterator[Outcome]:
        """``outcomes`` (an earlier run's), each counted, and noted if a link to a page."""
        for outcome in outcomes:
            self._count(outcome)
            self._linked_pages.recorded(outcome)
            yield outcome

    def _count(self, outcome: Outcome) -> None:
        if outcome.ok:
            self._snapshot.downloaded += 1
            self._snapshot.bytes += outcome.bytes or 0
        else:
            self._snapshot.failed += 1

    def _refresh(self) -> dict[str, int]:
        """Update the live display from the board's counts, and return them."""
        counts = self._board.counts()
        snapshot = self._snapshot
        snapshot.in_flight = counts["in_flight"]
        # Images' and pages'; a lease that ran out is a try, and its URL goes again (it
        # stayed "retries 0" while the log said so).
        snapshot.retries = counts["retries"] + counts["expired"] + self._page_retries
        snapshot.workers = counts["workers"]
        snapshot.tutorial_workers = bool(counts["tutorial"])
        shared = self._shared_frontier
        if shared is not None:  # the whole crawl's counts, every master's pages included
            snapshot.found = unsettled(counts) + counts["done"]
            snapshot.pages = shared.done_pages  # as of the last len(frontier)
            snapshot.pages_failed = shared.failed_pages
            self._publish()
        self._reporter.update(snapshot)
        return counts

    def _publish(self, *, ended: bool = False) -> None:
        """Tell ``crawler status`` on the broker how this master is doing: once a second,
        and when it ends."""
        broker = self._options.broker
        now = time.monotonic()
        if broker is None or (now - self._last_published < 1.0 and not ended):
            return
        from crawler.master.onbroker import publish_progress

        self._last_published = now
        publish_progress(broker, self._id, pages_read=self._pages_read,
                         snapshot=self._snapshot, ended=ended)
        if self._eviction_watch is not None:  # a round trip now and then: on this one's beat
            self._eviction_watch.look(now)

    def _finish(self, ledger: Ledger, files: ResultFiles) -> None:
        """After the loop: let workers report and say goodbye (those that
        fall silent are stopped), then record the rest."""
        if await_goodbyes(self._board, self._workers, wake=self._wake,
                          stop_asked=self._stop_asked,
                          collect=lambda: self._collect(ledger, files),
                          on_broker=self._shared_board is not None, tick=LOOP_TICK):
            self._workers_leaving = True  # reaped last (_reap_workers), as the files close
        if not self._workers_leaving:
            self._workers.stop()
        self._collect(ledger, files)
        self._refresh()
        self._publish(ended=True)
        self._reporter.close()

    def _summary(self, *, completed: bool, interrupted: bool,
                 manifest: ManifestTally) -> Summary:
        s = self._snapshot
        elsewhere = self._left_out.links()
        return Summary(completed=completed, interrupted=interrupted,
                       elapsed_s=time.monotonic() - self._started, pages=s.pages,
                       pages_failed=s.pages_failed, found=s.found, succeeded=s.downloaded,
                       failed=s.failed, bytes=s.bytes, out_dir=self._options.out_dir,
                       pages_read=self._pages_read, seed_failures=self._seed_failures,
                       stored_this_run=s.downloaded - s.resumed_stored,
                       pages_left=self._pages_left, pages_to_retry=self._pages_to_retry,
                       pages_at_depth_limit=self._pages_at_depth_limit,
                       images_left=min(IMAGES_LEFT_KEPT,
                                       len(self._images_over - self._images_seen)
                                       + self._images_left_before),
                       images_to_retry=manifest.transient,
                       links_out_of_scope=elsewhere.links,
                       hosts_out_of_scope=elsewhere.hosts,
                       links_to_other_hosts=elsewhere.by_host,
                       images_out_of_scope=self._left_out.images,
                       pages_cut=self._left_out.pages_cut,
                       images_unlisted=dict(self._left_out.unlisted.most_common()),
                       stored_elsewhere=stored_elsewhere(manifest.stored_by,
                                                         self._stores_elsewhere()),
                       manifest=manifest)

    def _stores_elsewhere(self) -> Container[str]:
        """The workers of this host that store under another folder than this master's,
        as known by now: nothing is asked of a broker that may be gone."""
        if self._elsewhere is not None:
            return self._elsewhere
        if self._broker_elsewhere is not None:
            return self._broker_elsewhere.noted()
        return ()

