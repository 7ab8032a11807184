"""Whether a worker follows an image's redirect: the crawl's image scope, then robots.txt.

The master judges the URL it queues; where that URL redirects to is seen
only by the worker, hop by hop. Each target must be in the crawl's image
scope and allowed by its own origin's robots.txt for the crawl's user agent,
read the way the master reads it (``crawler.fetch.robots``): once per
origin per worker, an unreachable one refusing everything.

The engine asks on its event thread and must not wait there: a robots.txt
may take up to its timeout. So the engine parks the transfer, a few reader
threads here fetch robots.txt, and the verdict goes back by callback; a
known origin answers at once. The parked transfer stays under its download
deadline meanwhile.

A hop allowed is a request to its target's host, so it goes in that host's
pace, the one the crawl's images of that host are leased by (its delay, raised
by its Crawl-delay, and its holds; ``Board.hop_turns``): ``HopTurns`` keeps the
hops that wait for a turn, and the worker's coordinator asks the board for
their hosts' turns as it talks to it, the hop still parked. An image with no
redirect costs nothing of this.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable

from crawler.fetch.easy import EasyClient
from crawler.fetch.engine import HopVerdict
from crawler.fetch.robots import RobotsFile, origin_of, read_robots, unreachable
from crawler.model.imagescope import ImageScope
from crawler.model.urls import host_key
from crawler.model.wire import HopTurn, HopWant

log = logging.getLogger(__name__)

OUT_OF_SCOPE = "out of the crawl's image scope"
READERS = 4  # robots.txt fetched at once, each on its own thread and connection
MAX_ORIGINS = 4096  # robots.txt files kept; the oldest goes first
TICK = 0.5  # how often an idle reader looks for the end
CLOSE_GRACE = 1.0  # seconds close() waits for readers before leaving them to the exit


class RobotsReader:
    """robots.txt per origin, read by a few threads of its own; verdicts by callback."""

    def __init__(self, client: EasyClient, user_agent: str, timeout: float,
                 readers: int = READERS, max_delay: float = 30.0) -> None:
        self._client = client
        self._agent = user_agent
        self._timeout = timeout
        self._max_delay = max_delay  # the longest Crawl-delay obeyed
        self._capped: set[str] = set()  # origins whose Crawl-delay was said to be capped
        self._readers = readers
        self._lock = threading.Lock()
        self._files: dict[str, RobotsFile] = {}
        self._waiting: dict[str, list[tuple[str, HopVerdict]]] = {}  # origin -> its askers
        self._origins: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()

    def ask(self, url: str, verdict: HopVerdict) -> None:
        """Give ``verdict`` why robots.txt refuses ``url`` (None: allowed), now or later."""
        origin = origin_of(url)
        with self._lock:
            known = self._files.get(origin)
            if known is None:
                askers = self._waiting.setdefault(origin, [])
                askers.append((url, verdict))
                if len(askers) == 1:  # the first to ask: read it
                    self._origins.put(origin)
                    self._add_reader()
                return
        verdict(known.refusal(url, self._agent))

    def crawl_delay(self, url: str) -> float:
        """The Crawl-delay of ``url``'s origin, at most the crawl's longest, once its
        robots.txt was read (0: none, or not read)."""
        origin = origin_of(url)
        with self._lock:
            known = self._files.get(origin)
        delay = known.rules.crawl_delay(self._agent) if known is not None else None
        if not delay:
            return 0.0
        if delay <= self._max_delay:
            return float(delay)
        if origin not in self._capped:  # (a race may say it twice: no harm)
            self._capped.add(origin)
            log.warning("robots.txt of %s asks for %g s between requests; taking %g s"
                        " (politeness.max_crawl_delay)", origin, delay, self._max_delay)
        return self._max_delay

    def close(self) -> None:
        """Stop the readers; the client is closed only if none is still in a request."""
        self._closed.set()
        deadline = time.monotonic() + CLOSE_GRACE
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            return  # one waits on a robots.txt: its handle is in use until the process ends
        self._client.close()

    def _add_reader(self) -> None:
        if len(self._threads) < self._readers and not self._closed.is_set():
            thread = threading.Thread(target=self._read_loop, name="robots", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            try:
                origin = self._origins.get(timeout=TICK)
            except queue.Empty:
                continue
            try:
                robots = read_robots(self._client, origin, self._timeout)
            except Exception:  # a bug must not leave the askers without an answer
                log.exception("robots.txt of %s could not be read", origin)
                robots = unreachable("crawler error")
            with self._lock:
                if len(self._files) >= MAX_ORIGINS:
                    del self._files[next(iter(self._files))]
                self._files[origin] = robots
                askers = self._waiting.pop(origin, [])
            for url, verdict in askers:
                verdict(robots.refusal(url, self._agent))


class HopTurns:
    """Hops allowed, waiting for their host's turn; the turns come from the board.

    Thread-safe: hops are added by the engine's and the robots readers' threads,
    and the worker's coordinator asks for their turns (``wanted``) and hands out
    those the board gave (``answered``), whose verdicts let the hops go. A hop
    that waited past the download deadline is dropped unanswered: its transfer
    was cut by then, and must not take a turn of its host.
    """

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._deadline = deadline
        self._clock = clock
        self._lock = threading.Lock()
        # host -> its waiting hops (when asked, verdict), in order; its Crawl-delay; and
        # when the board may be asked for it again
        self._hops: dict[str, collections.deque[tuple[float, HopVerdict]]] = {}
        self._delays: dict[str, float] = {}
        self._look_at: dict[str, float] = {}

    def ask(self, url: str, delay: float, verdict: HopVerdict) -> None:
        """Let the hop to ``url`` go (``verdict(None)``) when its host gives it a turn;
        ``delay``: the host's Crawl-delay (0: none or unknown)."""
        host = host_key(url)
        with self._lock:
            self._hops.setdefault(host, collections.deque()).append((self._clock(), verdict))
            self._delays[host] = max(delay, self._delays.get(host, 0.0))

    def wanted(self) -> list[HopWant]:
        """The hosts to ask the board about now, with how many hops wait for each."""
        if not self._hops:  # the common case, asked at each of the coordinator's turns
            return []
        now = self._clock()
        wants: list[HopWant] = []
        with self._lock:
            for host, hops in list(self._hops.items()):
                while hops and now - hops[0][0] > self._deadline:
                    hops.popleft()  # cut by its deadline meanwhile
                if not hops:
                    self._forget(host)
                elif self._look_at.get(host, 0.0) <= now:
                    wants.append((host, len(hops), self._delays[host]))
        return wants

    def answered(self, wants: list[HopWant], turns: list[HopTurn]) -> None:
        """The board's ``turns`` for ``wants``: the hops given one go."""
        now = self._clock()
        going: list[HopVerdict] = []
        with self._lock:
            for (host, _count, _delay), (granted, wait) in zip(wants, turns, strict=True):
                hops = self._hops.get(host)
                if hops is None:
                    continue
                for _ in range(min(granted, len(hops))):
                    going.append(hops.popleft()[1])
                if hops:
                    self._look_at[host] = now + wait
                else:
                    self._forget(host)
        for verdict in going:  # outside the lock: a verdict wakes the engine
            verdict(None)

    def waiting(self) -> int:
        with self._lock:
            return sum(len(hops) for hops in self._hops.values())

    def _forget(self, host: str) -> None:
        del self._hops[host]
        self._delays.pop(host, None)
        self._look_at.pop(host, None)


class RedirectCheck:
    """The engine's ``check_hop``: image scope first (no request), then robots.txt, then
    the target host's turn (``turns``; None: the hop goes at once)."""

    def __init__(self, scope: ImageScope, robots: RobotsReader | None,
                 turns: HopTurns | None = None) -> None:
        self._scope = scope
        self._robots = robots
        self.turns = turns

    def __call__(self, url: str, verdict: HopVerdict) -> None:
        if not self._scope.allows(url):
            verdict(OUT_OF_SCOPE)
        elif self._robots is None:
            self._take_turn(url, verdict, None)
        else:
            self._robots.ask(url, lambda refusal: self._take_turn(url, verdict, refusal))

    def _take_turn(self, url: str, verdict: HopVerdict, refusal: str | None) -> None:
        if refusal is not None or self.turns is None:
            verdict(refusal)
            return
        delay = self._robots.crawl_delay(url) if self._robots is not None else 0.0
        self.turns.ask(url, delay, verdict)

    def close(self) -> None:
        if self._robots is not None:
            self._robots.close()
