"""A master's dealings with a crawl whose state is on a broker, beside the crawl loop.

The crawl taken up as a master starts (its folder checked and marked, the
broker's set-up looked at), its record there (created by its first master,
checked by the rest), the request settings a master that starts the crawl again
brings, the failed images a rerun tries again, and the line each master writes
for ``crawler status``. Several masters may work on one crawl; "others at work"
are those whose last word is recent, less the dead ones of this host.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from crawler.board.broker import (
    BrokerCrawl,
    CrawlRecord,
    broker_time,
    eviction_warning,
    keys_prefix,
    live_masters,
    masters_of,
    replica_warning,
)
from crawler.board.redis import RedisBoard
from crawler.board.redis_frontier import RedisFrontier
from crawler.config import Settings
from crawler.errors import CrawlMismatch
from crawler.fetch.options import RequestOptions
from crawler.master.claim import check_for_broker, drop_last_summary, mark_for_broker
from crawler.master.missing import MissingImages, say_fetched_again, worker_prefix
from crawler.master.resumed import ResumedImage
from crawler.master.takeup import crawl_identity, drop_failed_pages, say_requeued
from crawler.model.processes import process_alive
from crawler.model.progress import Snapshot

log = logging.getLogger(__name__)

CRAWL_LIMITS = ("depth", "max_pages", "max_images")  # a broker crawl's are its first master's


def take_up_crawl(broker: BrokerCrawl, settings: Settings, *, out_dir: Path,
                  seeds: Sequence[str], worker_info: dict[str, Any], board: dict[str, Any],
                  request: RequestOptions, joined: bool) -> tuple[Settings, EvictionWatch]:
    """The crawl on the broker taken up by a master as it starts, before its first page:
    the output folder checked to be this crawl's, the broker's set-up looked at, the
    crawl's record written or checked (:func:`register`), the folder marked as the
    crawl's. Returns the settings to crawl with, and the watch on the broker's policy."""
    check_for_broker(out_dir, broker.name, crawl_identity(seeds, settings.crawl))
    # What in the broker's set-up may lose the crawl's state without a word: a policy
    # that evicts its keys, looked at again as the crawl goes (the watch returned), and
    # a replica that takes writes.
    eviction_watch = EvictionWatch(broker)
    eviction_watch.look(time.monotonic())
    replica = replica_warning(broker.client, broker.address)
    if replica is not None:
        log.warning("%s", replica)
    settings = register(broker, settings, seeds=list(seeds),
                        identity=crawl_identity(seeds, settings.crawl),
                        worker_info=worker_info, board=board, request=request, joined=joined)
    mark_for_broker(out_dir, str(broker.address), broker.name,
                    crawl_identity(seeds, settings.crawl))
    drop_last_summary(out_dir)
    return settings, eviction_watch


def register(broker: BrokerCrawl, settings: Settings, *, seeds: list[str],
             identity: dict[str, Any], worker_info: dict[str, Any], board: dict[str, Any],
             request: RequestOptions, joined: bool) -> Settings:
    """Write the crawl's record on the broker, or check that the one there is this crawl.

    Returns the settings to crawl with: a crawl's limits are its first master's (one
    with other limits would stop at, or read past, another bound than the rest).
    ``joined``: this master joins with the crawl's request settings; one that starts
    the crawl again brings its own (:func:`bring_request_settings`).
    """
    record = CrawlRecord(broker.client, broker.name)
    if record.create(settings=settings.to_dict(), seeds=seeds, identity=identity,
                     info=worker_info, board=board):
        log.info("crawl %s created on the broker at %s", broker.name, broker.address)
        return settings
    record.check_format()
    if record.field("identity") != identity:
        raise CrawlMismatch(
            f"the broker at {broker.address} has a crawl named {broker.name!r} with other "
            f"seeds or scope: add --join {broker.name} (and no seeds) to help with it, or "
            "name this one with --crawl NAME")
    log.info("crawl %s found on the broker at %s: carrying on with it", broker.name,
             broker.address)
    if not joined:
        bring_request_settings(record, broker, request, settings)
    first = record.field("settings").get("crawl", {})
    mine = settings.crawl
    limits = {f"crawl.{key}": first[key] for key in CRAWL_LIMITS
              if key in first and first[key] != getattr(mine, key)}
    if not limits:
        return settings
    log.warning("the crawl's limits are its first master's: %s (not this run's)",
                ", ".join(f"{key.split('.')[1]} {value}" for key, value in limits.items()))
    return settings.with_values(limits)


def bring_request_settings(record: CrawlRecord, broker: BrokerCrawl, request: RequestOptions,
                           settings: Settings) -> None:
    """A master that starts a crawl again brings its request settings: a cookies.txt
    exported anew when the old one expired, a new token, another proxy. Its pages
    go out with them; so do the workers' images from now on (each takes them up
    at its next exchange, handing back what it had begun with the old ones), and
    the pages of masters that join later."""
    if not record.renew_request(request.to_wire(), settings.crawl.user_agent,
                                settings.to_dict()["http"]):
        return
    log.info("the crawl's request settings (http, crawl.user_agent) are this master's "
             "now: its workers take them up")
    others = others_at_work(broker)
    if others:
        log.warning("%d other master(s) at work on crawl %s fetch their pages with the "
                    "request settings they started with, until they are started again "
                    "(or joined again)", len(others), broker.name)


def forget_if_empty(broker: BrokerCrawl, frontier: RedisFrontier, out_dir: Path) -> bool:
    """A master that starts the crawl again, with no other at work on it, forgets its
    pages when it read none and found no image, as the embedded mode forgets such a
    crawl in its folder: its seeds, failed for good (a 404, a robots.txt refusal), are
    tried again, so that a rerun with --ignore-robots, or once the seed is served,
    crawls it rather than end "completed" with nothing read. True when it did."""
    if others_at_work(broker) or not frontier.forget_if_empty():
        return False
    drop_failed_pages(out_dir)
    log.info("crawl %s read no page before: its seeds are tried again", broker.name)
    return True


def images_to_retry(broker: BrokerCrawl, board: RedisBoard) -> list[ResumedImage]:
    """A rerun queues again the images that failed for a passing reason; a master that
    joins others at work does not: their failures are minutes old, their host likely
    still failing, and the others' files keep the first result.

    Returns the images an earlier run refused for an unreadable robots.txt, to be
    judged again by this run's (``master.resumed``); none for a master that joins.
    """
    others = others_at_work(broker)
    if others:
        if board.has_failures_to_retry():
            log.info("images that failed for a passing reason are not tried again by a "
                     "master that joins others at work (%d): a start of the crawl with "
                     "none at work tries them", len(others))
        return []
    say_requeued(board.retry_failures_worth_a_rerun())  # (it reopens the crawl)
    return [(url, page, json.loads(ref) if ref else None)
            for url, page, ref in board.robots_refusals()]


def fetch_missing_again(broker: BrokerCrawl, board: RedisBoard, out_dir: Path) -> int:
    """A rerun fetches again the images stored into this master's folder whose file is
    gone since (deleted by hand), as on the embedded queue (``master.missing``); returns
    how many. Only those a worker of this host stored there are looked for: a worker
    elsewhere, or one of this host with its own --out (its hello says its folder), stores
    where this master cannot see. A master that joins others at work does not look:
    they are writing those images' lines into their own files."""
    if others_at_work(broker):
        return 0
    missing = MissingImages(out_dir, elsewhere=StoresElsewhere(board, out_dir))
    gone = [(entry, settled) for entry, settled in board.settled_with_ids()
            if missing.gone(settled.attempt.ok, settled.attempt.path, settled.worker,
                            settled.attempt.bytes)]
    again = board.fetch_again(gone) if gone else 0
    if again:
        say_fetched_again(again, out_dir)
    return again


class StoresElsewhere:
    """The workers whose hello on the broker names another folder than this master's:
    ``worker in`` it, asked once per worker."""

    def __init__(self, board: RedisBoard, out_dir: Path) -> None:
        self._board = board
        self._folder = out_dir.resolve()
        self._known: dict[str, bool] = {}

    def __contains__(self, worker: object) -> bool:
        if not isinstance(worker, str):
            return False
        if worker not in self._known:
            self._ask(worker)
        return self._known[worker]

    def note(self, workers: Iterable[str | None], host: str | None = None) -> None:
        """Ask now of each of ``workers`` of this host not asked of yet, as their results
        come in (while the broker answers): the summary reads ``noted`` alone, which asks
        nothing of a broker that may be gone by then."""
        prefix = worker_prefix(host)
        for worker in workers:
            if worker is not None and worker not in self._known and worker.startswith(prefix):
                self._ask(worker)

    def _ask(self, worker: str) -> None:
        folder = (self._board.worker_info(worker) or {}).get("folder")
        # One that says no folder (an earlier version) keeps the host's rule.
        self._known[worker] = isinstance(folder, str) and (
            Path(folder).resolve() != self._folder)

    def noted(self) -> set[str]:
        """The workers asked of so far that store elsewhere."""
        return {worker for worker, away in self._known.items() if away}


def others_at_work(broker: BrokerCrawl) -> list[dict[str, Any]]:
    """The other masters at work on the crawl: not one of this host's that is dead
    (killed, and restarted within moments as this one), whose last word still reads
    as live for a while."""
    here = socket.gethostname()
    return [m for m in live_masters(*masters_of(broker.client, broker.name))
            if m.get("host") != here or _may_be_running(m.get("pid"))]


def publish_progress(broker: BrokerCrawl, master_id: str, *, pages_read: int,
                     snapshot: Snapshot, ended: bool) -> None:
    """Tell ``crawler status`` how this master is doing."""
    broker.client.hset(keys_prefix(broker.name) + "masters", master_id, json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "pages_read": pages_read,
         "progress": snapshot.as_dict(), "at": broker_time(broker.client), "ended": ended}))


class EvictionWatch:
    """Warns when the broker comes to evict the crawl's keys once full: at the start, and
    whenever a look finds its maxmemory-policy changed to such a one (a CONFIG SET made
    mid-crawl, which the start's look cannot see). A look is one INFO, asked at most
    every ``EVERY`` seconds; the same warning is given once, until it no longer holds."""

    EVERY = 10.0  # seconds between two looks

    def __init__(self, broker: BrokerCrawl) -> None:
        self._broker = broker
        self._next = 0.0  # time.monotonic() of the next look
        self._said: str | None = None  # the warning in force, given already

    def look(self, now: float) -> None:
        """Look at the broker's policy if ``EVERY`` seconds have passed (``now``:
        time.monotonic()); warn if it evicts, and did not when last looked at."""
        if now < self._next:
            return
        self._next = now + self.EVERY
        warning = eviction_warning(self._broker.client, self._broker.address)
        if warning is not None and warning != self._said:
            log.warning("%s", warning)
        self._said = warning


def _may_be_running(pid: object) -> bool:
    """Whether the process a master's record names may run on this host (True when the
    record names none)."""
    return not isinstance(pid, int) or pid <= 0 or process_alive(pid)
