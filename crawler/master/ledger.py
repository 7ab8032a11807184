"""Where a master keeps what a crash must not lose: two ledgers, one per broker.

The crawl loop hands over the pages it finished (``PageDone``: the page, its
new links, its images) and the final outcomes; a ledger records them and puts
the page's images on the board, in the order that loses nothing.

- :class:`JournalLedger` (the embedded queue): the SQLite journal in the
  output folder records first, then the images go on the master's in-memory
  board; a master that restarts rebuilds its board from the journal.
- :class:`BrokerLedger` (Redis): a page's "done", its links and its images go
  to Redis in one transaction, with the Crawl-delays of its images' hosts, so a
  master killed at any point leaves either all of it there or none (and then
  the page's lease runs out and another master reads it again), and a Redis
  that lost its last writes has no image without its host's delay. Outcomes
  are already in Redis, written by the board as workers report them; the
  output folder's files are rebuilt from there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from crawler.master.journal import Journal, PageDone, Resumed
from crawler.model.outcome import ROBOTS_UNREACHABLE, Attempt, Outcome
from crawler.model.urls import host_key, host_key_of_normalized

if TYPE_CHECKING:
    import redis

    from crawler.board.memory import TaskBoard
    from crawler.board.redis import RedisBoard
    from crawler.board.redis_frontier import RedisFrontier


class Ledger(Protocol):
    def resume(self) -> Resumed:
        """What an earlier run left to do (nothing, where the broker holds it)."""
        ...

    def pages_done(self, pages: list[PageDone]) -> int:
        """Record finished pages with their links, and queue their images on the board;
        returns how many links left to the page budget were new (see ``PageDone.left``)."""
        ...

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Record final outcomes the board handed over."""
        ...

    def pages_found(self, pages: list[tuple[str, int]]) -> None:
        """Record pages (URL, depth) found other than on a page: to visit."""
        ...


def _settled(image: tuple[str, str, str | None, str | None]) -> Attempt | None:
    """The final attempt of an image decided on its page (refused, dry run), or None."""
    url, _page, outcome, _ref = image
    if outcome is None:
        return None
    # Its reason is all the board needs: not the whole Outcome read back.
    return Attempt(url=url, ok=False, reason=str(json.loads(outcome)["reason"]))


class JournalLedger:
    """The embedded mode's ledger: the journal records, then the board is told."""

    def __init__(self, journal: Journal, board: TaskBoard) -> None:
        self._journal = journal
        self._board = board

    def resume(self) -> Resumed:
        return self._journal.resume()

    def pages_done(self, pages: list[PageDone]) -> int:
        left = self._journal.pages_done(pages)
        board = self._board
        for page in pages:
            for image in page.images:
                url, page_url, _, ref = image
                attempt = _settled(image)
                if attempt is not None:
                    board.settle_now(attempt, page_url, ref)
                else:
                    board.put(url, host_key_of_normalized(url), page_url, ref)
        return left

    def record(self, outcomes: Iterable[Outcome]) -> None:
        self._journal.record(outcomes)

    def pages_found(self, pages: list[tuple[str, int]]) -> None:
        self._journal.add_pages(pages)


class BrokerLedger:
    """The Redis mode's ledger: each page, with its links and images, in one transaction.

    ``delays``: the Crawl-delay told the board for each image host (by the page visits,
    once a host, and again when it changes), put again with the host's images. Told
    once only, it was gone for good from a Redis restarted from files older than it
    (a crash, a snapshot), and the images sent again after it went unpaced.
    """

    def __init__(self, client: redis.Redis, frontier: RedisFrontier, board: RedisBoard,
                 delays: Mapping[str, float]) -> None:
        self._client = client
        self._frontier = frontier
        self._board = board
        self._delays = delays

    def resume(self) -> Resumed:
        return Resumed([], set(), [], set())  # the broker holds the crawl's state

    def pages_done(self, pages: list[PageDone]) -> int:
        """(None is left to the page budget here: the crawl's frontier keeps its budget.)"""
        import redis

        try:
            self._pages_done(pages)
        except redis.exceptions.NoScriptError:
            # Redis restarted (its scripts gone) while redis-py retried the transaction,
            # which it does without loading them again: nothing was applied; once more.
            self._pages_done(pages)
        return 0

    def _pages_done(self, pages: list[PageDone]) -> None:
        pipe = self._client.pipeline(transaction=True)
        queued: list[tuple[str, str, str | None, str | None]] = []
        for page in pages:
            self._frontier.queue_done(pipe, page.url, page.links, failed=page.failed)
            for image in page.images:
                url, page_url, _, ref = image
                attempt = _settled(image)
                if attempt is not None:
                    # One refused for an unreadable robots.txt is judged again by a rerun.
                    self._board.queue_settle_now(
                        pipe, attempt, page_url, ref,
                        judged_again=attempt.reason.startswith(ROBOTS_UNREACHABLE))
                else:
                    queued.append((url, host_key_of_normalized(url), page_url, ref))
        # A page read was its host's good answer: a slowed-down host speeds up, as it
        # does for an embedded crawl's pages (and for images).
        self._board.queue_pages_answered(pipe, [host_key(page.url) for page in pages
                                                if not page.failed])
        delays = self._delays
        self._board.queue_host_delays(pipe, {host: delays[host] for _, host, _, _ in queued
                                             if host in delays})
        self._board.queue_puts(pipe, queued)  # after the pages: one transaction, all or none
        pipe.execute()

    def record(self, outcomes: Iterable[Outcome]) -> None:
        pass  # the board wrote them to the broker when they were reported

    def pages_found(self, pages: list[tuple[str, int]]) -> None:
        self._frontier.add_many(pages)  # the crawl's seen set keeps them once
