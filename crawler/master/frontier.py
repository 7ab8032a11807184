"""The page frontier: pages to visit, pages seen, and when each host may be asked again.

Pages wait in one queue per host, breadth-first within a host; hosts take
turns. Each host has a :class:`~crawler.model.pacing.Pace`, as the board's
image lanes do: its delay between two pages (``host_delay``, raised by a
Crawl-delay) and any hold (the backoff after a 5xx or 429). A host that must
wait lets other hosts' pages go ahead. Handing a page out is no request: the page
loop paces those with the paces it shares with the images (which keep the host's
slow-down after a 429 or 503, a page's or an image's: one for both), and while a
page of a host waits there for its turn (see :meth:`Frontier.follow_requests`),
the host's next page waits here. Finding the next page costs a look at each host,
never a walk over every page waiting.
"""

from __future__ import annotations

import collections
import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from crawler.model.depths import ShallowestDepths
from crawler.model.pacing import Pace, Paces
from crawler.model.urls import host_key


class PageQueue(Protocol):
    """What the crawl loop asks of a frontier: this one, or the broker's shared one
    (``crawler.board.redis_frontier``)."""

    def __len__(self) -> int: ...
    def add(self, url: str, depth: int) -> bool: ...
    def seen(self, url: str) -> bool: ...
    def mark_seen(self, url: str) -> None: ...
    def pop_many(self, count: int, now: float | None = None) -> list[tuple[str, int]]: ...
    def hold(self, host: str, until: float) -> None: ...
    def set_crawl_delay(self, host: str, delay: float) -> None: ...
    def failed(self, url: str) -> int: ...
    def requeue(self, url: str, depth: int) -> None: ...
    def found_again(self, links: Iterable[str], depth: int) -> list[tuple[str, int]]: ...
    def take_depth(self, url: str, depth: int) -> int: ...
    def note_read(self, url: str, depth: int) -> None: ...
    def read_again(self, links: Iterable[str], depth: int, limit: int
                   ) -> list[tuple[str, int]]: ...
    def reading_again(self, url: str) -> bool: ...
    def again_count(self) -> int: ...
    def set_aside(self, url: str, depth: int) -> None: ...
    def heartbeat(self, working: Iterable[str] = ()) -> int: ...
    def clear(self) -> int: ...


class Frontier:
    def __init__(self, pending: Iterable[tuple[str, int]] = (), seen: Iterable[str] = (), *,
                 delay: float = 0.0) -> None:
        self._queues: dict[str, deque[tuple[str, int]]] = {}
        self._paces = Paces(delay)  # every host's delay between two pages, to begin with
        self._requests: Paces | None = None  # the paces the page requests go by
        self._seen: set[str] = set(seen)
        self._tries: collections.Counter[str] = collections.Counter()  # transient failures
        self._depths = ShallowestDepths()
        # The depth of each page read at 2 or more this run (a link can find one of those
        # nearer the seeds), and the pages queued to be read again nearer (read_again).
        self._read_at: dict[str, int] = {}
        self._again: set[str] = set()
        self._waiting = 0
        for url, depth in pending:
            self._seen.add(url)
            self._push(url, depth)

    def __len__(self) -> int:
        """Pages waiting to be fetched."""
        return self._waiting

    def add(self, url: str, depth: int) -> bool:
        """Queue ``url`` unless it was seen before; True when it is new."""
        if url in self._seen:
            return False
        self._seen.add(url)
        self._push(url, depth)
        return True

    def seen(self, url: str) -> bool:
        return url in self._seen

    def mark_seen(self, url: str) -> None:
        """Never queue ``url``: it was read already (the target of a page's redirect)."""
        self._seen.add(url)

    def pop(self, now: float | None = None) -> tuple[str, int] | None:
        """The next page of a host that may be asked now, or None if every host must wait."""
        now = time.monotonic() if now is None else now
        for host, queue in self._queues.items():
            pace = self._pace(host)
            if pace.ready(now) and not self._page_waits(host):
                pace.took(now)
                url_depth = queue.popleft()
                self._waiting -= 1
                del self._queues[host]
                if queue:  # to the back: hosts take turns
                    self._queues[host] = queue
                return url_depth
        return None

    def pop_many(self, count: int, now: float | None = None) -> list[tuple[str, int]]:
        """Up to ``count`` pages, as ``count`` calls of ``pop`` would give them."""
        now = time.monotonic() if now is None else now
        pages: list[tuple[str, int]] = []
        while len(pages) < count and (page := self.pop(now)) is not None:
            pages.append(page)
        return pages

    def next_ready(self) -> float | None:
        """When the earliest held-back host may be asked again (None: nothing waits)."""
        times = [self._pace(host).next_time for host in self._queues]
        return min(times) if times else None

    def hold(self, host: str, until: float) -> None:
        """Ask nothing of ``host`` before ``until`` (time.monotonic()); never shortens a hold."""
        self._pace(host).hold(until)

    def set_crawl_delay(self, host: str, delay: float) -> None:
        """``delay`` seconds between two pages of ``host`` (its Crawl-delay, which a
        robots.txt read again may change), never less than the configured delay."""
        self._pace(host).set_crawl_delay(delay)

    def follow_requests(self, paces: Paces) -> None:
        """Hand out no page of a host while one handed out before waits for its turn at
        ``paces`` (the page loop's, shared with the images): pages of one host handed out
        faster than they can go would fill the pages in hand, and other hosts' pages
        would wait behind them."""
        self._requests = paces

    def _pace(self, host: str) -> Pace:
        return self._paces.of(host)

    def _page_waits(self, host: str) -> bool:
        return self._requests is not None and self._requests.of(host).page_waits

    def failed(self, url: str) -> int:
        """Count a passing failure of ``url``; returns how often it has failed so far."""
        self._tries[url] += 1
        return self._tries[url]

    def requeue(self, url: str, depth: int) -> None:
        """Queue a page seen before once more (after a passing failure)."""
        self._push(url, depth)

    def found_again(self, links: Iterable[str], depth: int) -> list[tuple[str, int]]:
        """Pages of ``links`` seen before and not read yet, now found at ``depth``: those
        that wait at a greater depth take this one (listed, with it)."""
        return self._depths.found_again(links, depth)

    def take_depth(self, url: str, depth: int) -> int:
        """The depth a page handed out at ``depth`` is read at (see ShallowestDepths)."""
        return self._depths.take(url, depth)

    def note_read(self, url: str, depth: int) -> None:
        """``url`` was read at ``depth``, its links followed from there (or not, at the
        depth limit): a link that finds it nearer the seeds later has it read again."""
        self._again.discard(url)
        if depth >= 2:
            self._read_at[url] = depth

    def read_again(self, links: Iterable[str], depth: int, limit: int
                   ) -> list[tuple[str, int]]:
        """Pages of ``links`` read this run at a greater depth than ``depth``, now found at
        it: queued to be read again there (listed, with it), as their links reach further
        from it, unless ``depth`` is the depth limit ``limit``, where no link is followed.

        Pages are read several at once and taken in as they end, so a slow page nearer
        the seeds may come in after a page further away that leads to the same page: that
        page was read at the limit (its links not followed) while it was within reach of
        more, and the crawl ended short of pages ``--depth`` covers (8 images of 56, in
        one run of four). Reading it again costs one request; it is rare.
        """
        if depth >= limit:
            return []
        read_at, again = self._read_at, []
        for link in links:
            known = read_at.get(link)
            if known is not None and depth < known:
                del read_at[link]  # noted again when it is read (note_read)
                self._again.add(link)
                self._push(link, depth)
                again.append((link, depth))
        return again

    def reading_again(self, url: str) -> bool:
        """Whether ``url`` is a page read this run already, queued again by ``read_again``."""
        return url in self._again

    def again_count(self) -> int:
        """Pages queued again (``read_again``) and not read yet: no new pages of the
        page budget's."""
        return len(self._again)

    def set_aside(self, url: str, depth: int) -> None:
        """Leave a page for a later run: here, that is to do nothing with it (the journal
        keeps it, at its depth)."""
        self._again.discard(url)

    def heartbeat(self, working: Iterable[str] = ()) -> int:
        """Nothing to renew: this frontier's pages are leased to no one."""
        return 0

    def clear(self) -> int:
        """Forget the pages waiting (the page budget is spent); the seen set stays; how
        many they were."""
        waiting, self._waiting = self._waiting, 0
        self._queues.clear()
        self._depths.clear()
        self._again.clear()
        return waiting

    def _push(self, url: str, depth: int) -> None:
        host = host_key(url)
        queue = self._queues.get(host)
        if queue is None:
            queue = self._queues[host] = deque()
        queue.append((url, depth))
        self._depths.queued(url, depth)
        self._waiting += 1
