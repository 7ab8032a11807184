"""The board's seam: what the master and the workers' adapters may ask of a task board.

A board holds every image URL of a crawl from queued to final. Handing a URL
to a worker is a *lease*: it stays that worker's until a result arrives, the
worker's heartbeats keep it alive, and one that expires goes back on the
queue. ``TaskBoard`` (``crawler.board.memory``) keeps it all in the master's
memory; the queue server (``crawler.board.manager``) and the tutorial's queue
views (``crawler.board.classic``) are adapters that serve it to workers.
``RedisBoard`` (``crawler.board.redis``) keeps the same rules with the state in
Redis, for a crawl shared by several masters and workers that call it directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from crawler.model.outcome import Attempt
from crawler.model.wire import LeaseAnswer

CLASSIC = "classic"
"""The holder of URLs handed to tutorial-style workers, which have no name of their own."""


def unsettled(counts: dict[str, int]) -> int:
    """How many image URLs have no final result yet, from a board's counts."""
    return counts["queued"] + counts["in_flight"] + counts["delayed"]


class Board(Protocol):
    """A task board; every method is safe to call from any thread."""

    def put(self, url: str, host: str, page: str | None, ref: str | None = None, *,
            tried_before: bool = False) -> bool:
        """Queue ``url`` (found on ``page``, paced as ``host``; ``ref``, a JSON string of
        what the page said of it, comes back with its final result). ``tried_before``: an
        earlier run left it unfinished and may have tried it; its attempt numbers count
        that try, so that a worker keeps a file that try stored (its own tries, and the
        manifest's attempts, are counted as for any URL).

        False: the board has it already, queued, in flight or finished; nothing changed.
        """
        ...

    def lease(self, worker: str, max_items: int, wait: float) -> LeaseAnswer:
        """Lease up to ``max_items`` URLs to ``worker``, waiting up to ``wait`` s for one.

        ``closed`` True: the crawl is over and no task will ever come. ``tasks``
        empty with ``closed`` False: none is ready now; ask again.
        """
        ...

    def report(self, worker: str, attempts: Iterable[Attempt]) -> int:
        """Record ``worker``'s results; the number recorded.

        Only a result for a URL ``worker`` holds counts: one whose lease ran out
        (the URL went back, or to another worker) is ignored, as is one for a
        URL the board never had.
        """
        ...

    def release(self, worker: str, urls: Iterable[str]) -> None:
        """Put back URLs ``worker`` holds and will not try; URLs it does not hold are ignored."""
        ...

    def heartbeat(self, worker: str) -> bool:
        """Renew every lease ``worker`` holds. False: the crawl is over (nothing to renew for)."""
        ...

    def reap(self) -> int:
        """Put the URLs of expired leases back (or fail those out of attempts); how many."""
        ...

    def close(self) -> None:
        """Announce the end of the crawl: from now on every lease answers ``closed``."""
        ...

    def publish_cookies(self, lines: list[str]) -> int:
        """Keep the Netscape cookie ``lines`` the crawl's pages set, for the workers'
        jars; the jar's version. Called before the images that follow are put, so that
        a lease of them says a version (``LeaseAnswer.cookies``) that has the lines."""
        ...

    def cookies_since(self, version: int) -> tuple[int, list[str]]:
        """The jar's version, and the cookie lines that changed after ``version``."""
        ...


class BoardClient(Protocol):
    """How a worker reaches a board: the master's queue (``board.manager.MasterClient``)
    or a crawl on the Redis broker (``board.redis_client.BrokerClient``)."""

    address: tuple[str, int]  # where to
    where: str  # the other end, named for messages: "the master at HOST:PORT"

    def unreachable(self, exc: BaseException) -> str:
        """Why a connect failed, with what to check (after "could not reach ...: ")."""
        ...

    def connect(self) -> Any:
        """The board's calls for a worker (``hello``, ``exchange``, ``goodbye``, ``status``).

        Raises ``OSError`` (``ConnectionError``) or ``EOFError`` while it cannot be reached.
        """
        ...

    def bound_calls(self, board: Any, seconds: float) -> None:
        """Give up on each call of ``board`` after ``seconds``."""
        ...

    def reset(self) -> None:
        """Forget cached connections (after the other end restarted)."""
        ...

    def close(self) -> None:
        """Close the connections this thread made (the worker has ended)."""
        ...
