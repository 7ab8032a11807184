"""What a master tells its operator about workers: where they join, and when none came.

The master announces its queue (or its crawl on the broker) and how workers
join it, starts the local ones, and, when images wait with no worker there (none
came, or every one left), says so, with the command to paste when the first
lines were not shown (``--quiet``). When every local worker left because the output folder
cannot take a file and no other worker is there, it ends the crawl with a
StorageError rather than wait for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from crawler.config import BROKER_PASSWORD_ENV
from crawler.errors import BrokerRefused, StorageError
from crawler.master.authkey import Authkey
from crawler.master.launcher import LocalWorkers, invitation
from crawler.model.shellword import shell_word

if TYPE_CHECKING:
    from crawler.board.broker import BrokerCrawl
    from crawler.board.manager import QueueServer

log = logging.getLogger(__name__)

# Seconds with images queued and not one taken by a worker, before the master says how
# workers join (a master started without --local-workers waits for them for ever).
NO_WORKER_HINT = 5.0


class WorkerCall:
    """The master's lines about workers, and the start of its local ones."""

    def __init__(self, workers: LocalWorkers, *, local: int, invite: bool, out_dir: Path,
                 authkey: Authkey, announce: Callable[[str], None] | None) -> None:
        self._workers = workers
        self._local = local  # --local-workers
        self._invite_workers = invite  # say how workers join (not when all are local)
        self._out_dir = out_dir
        self._authkey = authkey
        # None: the operator's lines (the queue's address, how workers join) are not
        # shown (--quiet); the hint of a master no worker came to then says how they join.
        self._announce = announce
        self._join_line: str | None = None  # how workers join, when it was not announced
        self._hinted = False  # said how workers join, with none there since
        self._queued_since: float | None = None  # since when images wait with no worker
        # Images settled when this run first looked: an earlier run's (its workers') on a
        # resumed crawl, or another master's on a broker. None: not looked yet.
        self._done_before: int | None = None

    def serve(self, server: QueueServer) -> None:
        """Announce the embedded queue, start the local workers, then serve."""
        host, port = server.address[:2]  # bound already; workers wait in its backlog
        self._say(f"queue on {host}:{port}")
        if self._invite_workers:
            self._invite(invitation(host, port, self._authkey, self._out_dir))
        if self._local:
            # Before the server's thread: local workers not forked yet are forked
            # while this is the master's only thread (see master.launcher).
            self._workers.start(self._local, host, port)
        server.start()

    def serve_on_broker(self, broker: BrokerCrawl, connect_wait: float) -> None:
        """Announce the crawl on the broker, and start the local workers."""
        self._say(f"crawl {broker.name} on the broker at {broker.address}")
        if self._invite_workers:
            ca = broker.address.ca_file
            self._invite(f"workers join with: crawler worker --broker {broker.address} "
                         f"--crawl {broker.name}"
                         + (f" --broker-ca {shell_word(ca)}" if ca else "") + (
                             f" (with {BROKER_PASSWORD_ENV} or --broker-password-file)"
                             if broker.address.password else ""))
        if self._local:
            self._workers.start_for_broker(self._local, broker.address, broker.name,
                                           connect_wait=connect_wait)

    def hint_when_no_worker(self, counts: dict[str, int]) -> None:
        """Say how workers join when images have waited ``NO_WORKER_HINT`` seconds with no
        worker there: once while none came, and again each time every worker has left
        (a worker killed mid-crawl left the master waiting without a word)."""
        if self._done_before is None:
            self._done_before = counts["done"]
        if counts["workers"] or counts.get("tutorial"):  # (tutorial workers say no hello)
            self._queued_since = None
            self._hinted = False  # a worker came: its leaving is said again
            return
        if (not counts["queued"] or counts["in_flight"] or counts["delayed"]
                or self._workers.left()):
            self._queued_since = None  # no image waits untaken: a wait begins again
            return
        if self._hinted:
            return
        now = time.monotonic()
        if self._queued_since is None:
            self._queued_since = now
        waited = now - self._queued_since
        if waited < NO_WORKER_HINT:
            return
        self._hinted = True
        ended = self._workers.started  # the master's own: no --local-workers N to advise
        what = (f"{counts['queued']} image(s) are queued and "
                + ("no worker has taken one" if counts["done"] <= self._done_before
                   else "every worker has left: none has been here")
                + f" in {waited:.0f} s")
        if self._join_line is None:
            log.warning("%s: start workers as said above%s", what,
                        "; the local workers have ended (their reasons above)" if ended
                        else ", or run the master with --local-workers N")
        else:  # the line was not shown (--quiet): the command itself, to paste
            log.warning("%s: start workers%s; %s", what,
                        " (the local workers have ended: their reasons above)" if ended
                        else ", or run the master with --local-workers N",
                        self._join_line)

    def stop_if_nothing_can_store(self, counts: dict[str, int]) -> None:
        """Every local worker has left because the output folder cannot be written (a
        full disk), or because the broker refuses their writes (a Redis full, which may
        still take the master's smaller ones), and no other worker is there: waiting for
        one would be for ever. Tutorial workers count (they store into folders of their
        own, and say no hello): the crawl they do went on."""
        if not counts["queued"] or counts["workers"] or counts.get("tutorial"):
            return  # no image waits for a worker, or one is there to take it
        why = self._workers.all_stopped_by(StorageError)
        if why is not None:
            self._workers.report_ended()  # each one's own line first
            raise StorageError(
                f"the local workers cannot store into {self._out_dir}"
                f"{f' ({why})' if why else ''}; once that is fixed, the same command goes "
                "on where this crawl stopped")
        why = self._workers.all_stopped_by(BrokerRefused)
        if why is not None:
            self._workers.report_ended()
            raise BrokerRefused(why or "the local workers stopped: the Redis broker refused "
                                "their writes (their logs say why); once that is fixed, the "
                                "same command goes on where this crawl stopped")

    def _say(self, line: str) -> None:
        if self._announce is not None:
            self._announce(line)

    def _invite(self, join_line: str) -> None:
        """Say how workers join; kept for the hint of a master no worker came to when
        it is not shown."""
        if self._announce is None:
            self._join_line = join_line
        else:
            self._announce(join_line)
