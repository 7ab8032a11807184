"""A worker's connection to its master: reaching it, reconnecting, hello and goodbye.

The worker connects once at start and again whenever a call fails; each time it
waits for the master up to ``connect_wait`` (often at first, for a master that
starts with its workers, then backing off with jitter), says hello, bounds its
calls by the crawl's deadlines, and checks that this master's crawl is one it
may serve (a local worker serves only the folder of the master that started
it). Apart from the worker's loop: how a master is reached and what it is told
on arrival and departure are the link's matter; what goes over it once there
(the numbered exchanges, leases, reports and hand-backs) is the worker's, which
calls ``board`` directly, as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

from crawler.board.base import BoardClient
from crawler.errors import (
    AnotherMastersCrawl,
    AuthenticationFailed,
    BrokerUnreachable,
    MasterUnreachable,
    NoHandshake,
)
from crawler.model.clock import since_boot
from crawler.model.files import LOCK_NAME, SUMMARY_NAME
from crawler.model.shellword import shell_word
from crawler.model.wire import LOCAL_WORKER_ENV, CrawlInfo, WorkerInfo, crawl_info_from_wire

log = logging.getLogger(__name__)

FAST_RECONNECT_FOR = 2.0  # seconds a starting worker retries every 10-20 ms
# Seconds a wait goes unsaid where info lines are not shown (--quiet) before it is warned
# of: a master started with its workers is there well within them.
QUIET_WAIT = 5.0


class WaitNote:
    """What a worker says of a wait (for its master, for the master's key file): a line as
    it begins (info) and, where info lines are not shown (--quiet), a warning once it has
    lasted QUIET_WAIT seconds. A mistyped address or folder, or a master not started,
    was said under --quiet only as the worker gave up, minutes later."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._started = time.monotonic()
        self._begun = False
        self._warned = False

    def say(self, begins: str, goes_on: str) -> None:
        """``begins`` the first time; ``goes_on`` once past QUIET_WAIT, if info is not shown."""
        if not self._begun:
            self._begun = True
            self._log.info("%s", begins)
        elif (not self._warned and time.monotonic() - self._started >= QUIET_WAIT
              and not self._log.isEnabledFor(logging.INFO)):
            self._warned = True
            self._log.warning("%s", goes_on)


class Stopped(Exception):
    """A stop was asked for while the worker waited for its master."""


class CrawlEnded(Exception):
    """The crawl ended while the worker was away: its master's summary of the run the
    worker worked for says it completed, so no master will come back to it."""


LINK_ERRORS = (OSError, EOFError)  # how a lost master shows itself on a proxy call


def call_deadline(crawl: CrawlInfo) -> float:
    """How long one call to the master may take before the worker reconnects.

    Twice the silence after which the master takes a worker's leases away: a call
    that takes longer has cost them anyway. Not the whole lease_timeout: after a
    cut link comes back, the pending call's TCP connection can sit in
    retransmission backoff for half a minute, where a new connection gets
    through at once (measured: a cut worker host idle 26 s after its link
    returned).
    """
    return min(float(crawl["lease_timeout"]), max(2.0, 2 * float(crawl["worker_silence"])))


def vouched_for(crawl: CrawlInfo) -> float:
    """How long an answer of the master vouches for the worker's leases: the master
    takes them only after worker_silence (or lease_timeout) without a call; half leaves
    room for delays."""
    return min(crawl["worker_silence"], crawl["lease_timeout"]) / 2


class MasterLink:
    """The worker's way to its master (``board``: the master's proxy, None before the
    first connection and once the master was found to crawl for another folder)."""

    def __init__(self, client: BoardClient, worker_id: str, *, threads: int, out_dir: Path,
                 connect_wait: float, stop: threading.Event) -> None:
        self._client = client
        self._id = worker_id
        self._threads = threads
        self._out_dir = out_dir
        self._connect_wait = connect_wait
        self._stop = stop  # the worker's: set, a master that does not answer is not waited for
        self.board: Any = None
        self._told_beside = False  # that it stores beside its master's folder
        self._master_folder: str | None = None  # where the master said it crawls into
        self._run: str | None = None  # when the master's run began, as it said

    def connect(self, first: bool) -> CrawlInfo:
        """Connect (again), waiting for the master up to ``connect_wait`` seconds."""
        where = self._client.where
        started = since_boot()
        give_up = started + self._connect_wait
        delay = 0.02
        note = WaitNote(log)
        while True:
            try:
                self.board = self._client.connect()
                log.debug("connected to %s as %s", where, self._id)
                crawl = self.hello()
                self._check_folder(crawl)
                return crawl
            except AuthenticationFailed:
                raise
            except LINK_ERRORS as exc:
                if self._stop.is_set():
                    raise Stopped from exc
                if not first and self._ended_while_away():
                    raise CrawlEnded from exc
                if since_boot() >= give_up:
                    what = "reach" if first else "reconnect to"
                    raise MasterUnreachable(
                        f"could not {what} {where} within {self._connect_wait:g} s: "
                        f"{self._client.unreachable(exc)}") from exc
                note.say(f"waiting for {where} ({_why_not(exc)}): trying again for up to "
                         f"{self._connect_wait:g} s ...",
                         f"still waiting for {where} after {QUIET_WAIT:g} s (trying again for "
                         f"up to {self._connect_wait:g} s in all): "
                         f"{self._client.unreachable(exc)}")
                # Jitter: after a master restart every worker reconnects at once.
                time.sleep(min(delay, max(0.0, give_up - since_boot())) *
                           random.uniform(0.5, 1.0))
                # A master starting with its workers listens within a fraction of a
                # second: ask often at first, then back off for one that is down. Not
                # on a reconnect, when every worker of the cluster asks at once.
                if not first or since_boot() - started > FAST_RECONNECT_FOR:
                    delay = min(delay * 2, 2.0)

    def hello(self) -> CrawlInfo:
        """Say hello to the master (again): the crawl info it answers, its deadlines set."""
        crawl = crawl_info_from_wire(self.board.hello(
            self._id, WorkerInfo(host=socket.gethostname(), pid=os.getpid(),
                                 threads=self._threads,
                                 folder=str(self._out_dir.absolute()))))
        self._client.bound_calls(self.board, call_deadline(crawl))
        folder, run = crawl.get("folder"), crawl.get("run")
        self._master_folder = folder if isinstance(folder, str) else None
        self._run = run if isinstance(run, str) and run else None
        return crawl

    def _ended_while_away(self) -> bool:
        """Whether the master's folder, seen from here (its host, or a disk shared with
        it), holds the summary of the run this worker worked for, completed: a worker
        stopped (^Z, a laptop asleep) past the crawl's end waited for the master for
        connect_wait, then ended with status 1 and blamed the address. The run is told
        by its start, as the master said it: a summary of another run, or a folder of
        the same name on another host, is not this one's."""
        if self._master_folder is None or self._run is None:
            return False
        try:
            summary = json.loads((Path(self._master_folder) / SUMMARY_NAME).read_bytes())
        except (OSError, ValueError):
            return False  # no summary (not this host's folder), or not whole
        return (isinstance(summary, dict) and summary.get("started_at") == self._run
                and summary.get("completed") is True and not summary.get("interrupted"))

    def _check_folder(self, crawl: CrawlInfo) -> None:
        """A worker its master started stores into that master's folder: it serves no
        other master (one that took the port of its dead master, with the same key).
        One started by hand that can see its master's folder is told to store there."""
        mine = str(self._out_dir.absolute())
        theirs = crawl.get("folder")
        if not os.environ.get(LOCAL_WORKER_ENV):
            self._say_if_beside(theirs, mine)
            return
        if theirs is not None and Path(theirs).resolve() != Path(mine).resolve():
            # Nothing of the dead master's crawl goes to this one, no report: only the
            # goodbye, so that it does not wait for this worker at its end.
            if self.board is not None:
                self.goodbye()
            self.board = None
            raise AnotherMastersCrawl(
                f"the master at {self._client.where} crawls into {theirs}, not into {mine}, "
                "the folder of the master that started this worker (it has ended): leaving")

    def _say_if_beside(self, theirs: str | None, mine: str) -> None:
        """Warn, once, a worker on its master's host (or on a disk they share) that stores
        beside the master's folder: its images are in no folder the master's results and
        report look into (the manifest's paths are relative to the master's folder)."""
        if (theirs is None or self._told_beside
                or not (Path(theirs) / LOCK_NAME).exists()  # a folder on another host
                or Path(theirs).resolve() == Path(mine).resolve()):
            return
        self._told_beside = True
        log.warning("%s crawls into %s, which is on this host, and this worker stores into "
                    "%s: the master's results and report look for images in its own folder; "
                    "to have them there, start the worker with --out %s",
                    self._client.where, theirs, mine, shell_word(theirs))

    def goodbye(self) -> None:
        """Tell the master this worker leaves; a master that is gone already is no error."""
        with contextlib.suppress(*LINK_ERRORS):
            self.board.goodbye(self._id)


def why_lost(exc: BaseException) -> str:
    """Why a call to the master failed, in a few words ("no answer in time")."""
    if isinstance(exc, (BlockingIOError, TimeoutError)):  # the call's deadline passed
        return "no answer in time"
    if isinstance(exc, EOFError):
        return "it closed the connection"
    cause: BaseException | None = exc
    for _ in range(8):  # a chain, not a cycle
        if isinstance(cause, BrokerUnreachable):  # (its message says to start again: not yet)
            return cause.said
        cause = cause.__cause__ if cause is not None else None
    return _why_not(exc)


def _why_not(exc: BaseException) -> str:
    """A connect's failure in a few words ("connection refused"): the system's reason,
    where the error or one it came from has one; else the first one's own words."""
    cause: BaseException | None = exc
    for _ in range(8):  # a chain, not a cycle
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
        if isinstance(cause, NoHandshake):  # its words say more than the reason under it
            return str(cause)[:200]
        cause = cause.__cause__ or cause.__context__
    return str(exc)[:200] or type(exc).__name__
