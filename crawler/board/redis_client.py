"""A worker's (and ``crawler status``'s) way to a crawl on the Redis broker.

The same calls as :class:`crawler.board.manager.MasterClient`, so a worker
does not know which broker it has: ``connect`` returns a board whose
``hello``, ``exchange``, ``goodbye`` and ``status`` act on the crawl's state
in Redis directly (through the same :class:`BoardView` checks the embedded
queue applies). No master is in the way: workers go on while masters restart.

A broker that cannot be reached, or a crawl not created yet, shows itself as
``ConnectionError``, as a master that is down does: the worker waits for it
(``worker.connect_wait``) and reconnects the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from crawler.board.base import unsettled
from crawler.board.broker import (
    BrokerAddress,
    CrawlRecord,
    live_masters,
    masters_of,
    open_crawl,
    set_up_warnings,
)
from crawler.board.manager import BoardView
from crawler.board.memory import POLICY_SETTINGS, BoardPolicy
from crawler.board.redis import RedisBoard, broker_errors, broker_failure
from crawler.errors import BrokerUnreachable, CrawlNotFound
from crawler.model.progress import Snapshot
from crawler.model.wire import CrawlInfo, LeaseAnswer, Status, settings_from_wire

log = logging.getLogger(__name__)

_LINK = (redis.ConnectionError, redis.TimeoutError, BrokerUnreachable)


def _policy(data: object) -> BoardPolicy:
    """The board's rules the crawl's master wrote; BadCrawlInfo if malformed, or if this
    version lacks one of them."""
    return BoardPolicy(**settings_from_wire(data, POLICY_SETTINGS, "board rules",
                                            sender="the crawl's master"))


class BrokerClient:
    def __init__(self, address: BrokerAddress, crawl: str | None) -> None:
        self.broker = address
        self.address = (address.host, address.port)
        # Named with its crawl: the broker may be up and the crawl not started yet.
        self.where = (f"the crawl {crawl!r} on the broker at {address}" if crawl
                      else f"the broker at {address}")
        self._crawl = crawl
        self._clients: list[redis.Redis] = []  # one per connect, closed by close()
        self._looked = False  # at the broker's set-up, for what may lose the crawl

    def unreachable(self, exc: BaseException) -> str:
        # The broker's own words say what to check; the line they end names the broker
        # already ("could not reach the broker at X within N s: cannot reach the broker
        # at X: ..." said it twice).
        return str(exc).removeprefix(f"cannot reach the broker at {self.broker}: ")

    def connect(self) -> _LinkErrors:
        """The crawl's board; ConnectionError while the broker or the crawl is not there."""
        try:
            crawl = open_crawl(self.broker, self._crawl)
            try:
                with broker_errors(crawl.client):  # a refused command: what to fix, in a line
                    record = CrawlRecord(crawl.client, crawl.name)
                    record.field("info")
                    record.check_format()
                    policy = _policy(record.field("board"))
                    if not self._looked:  # once: not at every reconnection
                        self._looked = True
                        for warning in set_up_warnings(crawl.client, self.broker):
                            log.warning("%s", warning)
            except BaseException:
                crawl.client.close()
                raise
        except (*_LINK, CrawlNotFound) as exc:  # the crawl: its master may create it yet
            raise ConnectionError(str(exc)) from exc
        self._clients.append(crawl.client)
        board = RedisBoard(crawl.client, crawl.name, policy, recorded=True)
        describe = _describer(record, board)
        return _LinkErrors(_BrokerView(board, describe, crawl.client, crawl.name), crawl.client)

    def bound_calls(self, board: object, seconds: float) -> None:
        """Nothing to do: every call to the broker has the client's socket deadline."""

    def reset(self) -> None:
        """Nothing cached to forget: ``connect`` makes a new client."""

    def close(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            client.close()


class _BrokerView(BoardView):
    """BoardView, plus what a master does for the embedded board: put the URLs of
    expired leases back. Workers do it too here, so that one that died while no
    master runs does not keep its URLs from the others."""

    REAP_EVERY = 1.0  # seconds, per worker; the script is atomic, so many may call it
    # Seconds of answers with nothing in them after which the worker looks whether any
    # master is at work on the crawl, and says so if none is.
    IDLE_LOOK_AFTER = 10.0

    def __init__(self, board: RedisBoard, describe: Callable[..., Any],
                 client: redis.Redis, crawl: str) -> None:
        super().__init__(board, describe)  # type: ignore[arg-type]
        self._redis_board = board
        self._client = client
        self._crawl = crawl
        self._last_reap = 0.0
        self._idle_since: float | None = None
        self._said_idle = False

    def exchange(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._last_reap >= self.REAP_EVERY:
            self._last_reap = now
            self._redis_board.reap()
        answer = super().exchange(*args, **kwargs)
        self._note_idle(answer, now)
        return answer

    def _note_idle(self, answer: LeaseAnswer, now: float) -> None:
        """A worker whose crawl has nothing left for it and no master at work on it (one
        was killed after its pages) waits for one to come: said once, where it sat
        silent for good."""
        if answer.get("tasks") or answer.get("closed"):
            self._idle_since, self._said_idle = None, False
            return
        if self._idle_since is None:
            self._idle_since = now
        if self._said_idle or now - self._idle_since < self.IDLE_LOOK_AFTER:
            return
        masters, broker_now = masters_of(self._client, self._crawl)
        if live_masters(masters, broker_now):
            self._idle_since = now  # (looked again a while later)
            return
        self._said_idle = True
        # (Its own last downloads may still be under way, and images held back for a
        # retry may come: "none now", not "nothing left".)
        log.warning("no image to hand out now, and no master at work on crawl %r: waiting "
                    "for one to go on with it or close it (crawler master --broker ... "
                    "--join %s), Ctrl-C to stop this worker", self._crawl, self._crawl)


class _LinkErrors:
    """The view's calls, with a lost broker raised as ConnectionError (a lost link), and
    any other error of redis-py's as ours (a command refused: BrokerError)."""

    def __init__(self, view: BoardView, client: redis.Redis) -> None:
        self._view = view
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        call = getattr(self._view, name)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, **kwargs)
            except _LINK as exc:
                raise ConnectionError(f"lost the broker: {exc}") from exc
            except redis.RedisError as exc:
                raise broker_failure(exc, self._client) from exc

        return guarded


def _describer(record: CrawlRecord, board: RedisBoard) -> Callable[..., CrawlInfo | Status]:
    """The crawl info as the record has it now: a master that starts the crawl again
    brings its request settings, and a worker asks again when their generation moves."""
    def describe(full: bool = False) -> CrawlInfo | Status:
        info = record.worker_info()
        if not full:
            return cast(CrawlInfo, info)
        return broker_status(record.client, record.crawl, info, board)

    return describe


def broker_status(client: redis.Redis, crawl: str, info: dict[str, Any],
                  board: RedisBoard) -> Status:
    """``crawler status`` of a crawl on the broker: every master's progress, summed."""
    public = {key: value for key, value in info.items() if key != "request"}  # no secrets
    record = CrawlRecord(client, crawl)
    masters, now = masters_of(client, crawl)  # now: their clock, whatever this host's
    live = live_masters(masters, now)
    progress: dict[str, Any] = {**Snapshot().as_dict(), "masters": 0}  # before any master
    if masters:  # the freshest master's view: the pages it counted
        progress = dict(max(masters, key=lambda m: float(m.get("at", 0)))["progress"])
        progress["masters"] = len(live)
    # The images' counts from Redis itself, not from a master's last word: workers go on
    # while no master runs, and a master that died said nothing more.
    counts, workers, closed = board.counts(), board.workers(), board.closed
    downloaded = sum(int(worker["done"]) for worker in workers)
    progress.update(found=unsettled(counts) + counts["done"], downloaded=downloaded,
                    failed=max(0, counts["done"] - downloaded),
                    bytes=sum(int(worker["bytes"]) for worker in workers),
                    in_flight=counts["in_flight"], retries=counts["retries"],
                    workers=counts["workers"])
    started = float(record.field("started", missing=now))  # (missing: an old record)
    # An ended crawl's time is up to its masters' last word, not up to now.
    ended_at = max((float(m.get("at", 0)) for m in masters), default=now)
    until = ended_at if closed and masters and not live else now
    return cast(Status, {**public, "seeds": record.field("seeds"),
                         "elapsed_s": round(until - started, 2), "progress": progress,
                         "board": counts, "workers": workers, "closed": closed})
