"""Whether a worker follows an image's redirect: the crawl's image scope, then robots.txt.

The master judges the URL it queues; where that URL redirects to is seen
only by the worker, hop by hop. Each target must be in the crawl's image
scope and allowed by its own origin's robots.txt for the crawl's user agent,
read the way the master reads it (``crawler.fetch.robots``): once per
origin per worker, an unreachable one refusing everything (for now: such an
image is worth another try, by this run or the next, as the master's are, and
the file is read again its timeout later), and again once older than the
crawl's ``crawl.robots_max_age`` (RFC 9309 2.4), the old rules standing while
it is unreachable then.

The engine asks on its event thread and must not wait there: a robots.txt
may take up to its timeout. So the engine parks the transfer, a few reader
threads here fetch robots.txt, and the verdict goes back by callback; a
known origin answers at once. The parked transfer stays under its download
deadline meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import NamedTuple

from crawler.fetch.curlsetup import other_origin
from crawler.fetch.easy import EasyClient
from crawler.fetch.engine import HopRefusal, HopVerdict
from crawler.fetch.robots import (
    RobotsFile,
    kept_on_refresh,
    origin_of,
    read_robots,
    refresh_retry,
    unreachable,
)
from crawler.model.clock import since_boot
from crawler.model.imagescope import ImageScope

log = logging.getLogger(__name__)

READERS = 4  # robots.txt fetched at once, each on its own thread and connection
MAX_ORIGINS = 4096  # robots.txt files kept; the oldest goes first
TICK = 0.5  # how often an idle reader looks for the end
CLOSE_GRACE = 1.0  # seconds close() waits for readers before leaving them to the exit


# A worker crawls no origin: what it does while a redirect target's robots.txt is unread.
_UNREAD_MEANS = "redirects to it fail for now, and are tried again"


class _Asker(NamedTuple):
    url: str
    verdict: HopVerdict
    asked_at: float  # time.monotonic()


class _Read(NamedTuple):
    robots: RobotsFile
    stale_at: float  # since_boot() when it is read again


class RobotsReader:
    """robots.txt per origin, read by a few threads of its own; verdicts by callback."""

    def __init__(self, client: EasyClient, user_agent: str, timeout: float,
                 readers: int = READERS, max_age: float | None = None,
                 gives_up: float | None = None) -> None:
        """``max_age``: seconds an origin's rules are kept before they are read again
        (None: for good). ``gives_up``: seconds after which an asker waits no more (its
        download's deadline cut it): an origin none waits for is not read (None: never)."""
        self._client = client
        self._gives_up = gives_up
        self._agent = user_agent
        self._timeout = timeout
        self._readers = readers
        self._max_age = max_age
        self._refresh_retry = refresh_retry(max_age)
        self._lock = threading.Lock()
        self._files: dict[str, _Read] = {}
        self._waiting: dict[str, list[_Asker]] = {}  # origin -> its askers
        self._origins: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()

    def ask(self, url: str, verdict: HopVerdict, *, logins: bool = False) -> None:
        """Give ``verdict`` why robots.txt refuses ``url`` (None: allowed), now or later.
        ``logins``: ``url`` is of the origin the image was asked at, which gets the user's
        Authorization and Cookie headers (a redirect to another origin leaves them out,
        its robots.txt too); the first asker of an origin's file decides."""
        origin = origin_of(url)
        with self._lock:
            known = self._files.get(origin)
            if known is None or since_boot() >= known.stale_at:
                askers = self._waiting.setdefault(origin, [])
                askers.append(_Asker(url, verdict, time.monotonic()))
                if len(askers) == 1:  # the first to ask: read it
                    self._origins.put((origin, logins))
                    self._add_reader()
                return
        verdict(_hop_refusal(known.robots, url, self._agent))

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
                origin, logins = self._origins.get(timeout=TICK)
            except queue.Empty:
                continue
            if not self._still_awaited(origin):
                continue
            read = self._read(origin, logins)
            with self._lock:
                self._files.pop(origin, None)  # one read again goes last
                if len(self._files) >= MAX_ORIGINS:
                    del self._files[next(iter(self._files))]
                self._files[origin] = read
                askers = self._waiting.pop(origin, [])
            for url, verdict, _ in askers:
                verdict(_hop_refusal(read.robots, url, self._agent))

    def _still_awaited(self, origin: str) -> bool:
        """Whether an asker still waits for ``origin``'s robots.txt; if none does, it is
        forgotten until the next one asks. A hung file read for askers already cut held a
        reader its whole timeout, and the redirects behind it waited past their deadline."""
        if self._gives_up is None:
            return True
        cut_before = time.monotonic() - self._gives_up
        with self._lock:
            askers = [asker for asker in self._waiting.get(origin, ())
                      if asker.asked_at > cut_before]
            if askers:
                self._waiting[origin] = askers
                return True
            self._waiting.pop(origin, None)
            return False

    def _read(self, origin: str, logins: bool) -> _Read:
        """``origin``'s rules and when to read them again; past their age, the rules
        read before while the file is unreachable, tried again a while later. A file
        never read yet is read again its timeout after it could not be: the redirects
        it refused are tried again, and this worker may outlive the run."""
        with self._lock:
            previous = self._files.get(origin)
        if previous is not None and previous.robots.unreachable is not None:
            previous = None  # no rules were read: none to keep
        try:
            robots = read_robots(self._client, origin, self._timeout,
                                 refreshing=previous is not None, unread_means=_UNREAD_MEANS,
                                 logins=logins)
        except Exception:  # a bug must not leave the askers without an answer
            log.exception("robots.txt of %s could not be read", origin)
            robots = unreachable("crawler error")
        if previous is not None and kept_on_refresh(robots, previous.robots):
            log.info("robots.txt of %s: %s on its refresh; read again in %g s",
                     origin, robots.unreachable, self._refresh_retry)
            return _Read(previous.robots, since_boot() + self._refresh_retry)
        max_age = self._max_age if self._max_age is not None else float("inf")
        if robots.unreachable is not None:
            return _Read(robots, since_boot() + min(self._timeout, max_age))
        return _Read(robots, since_boot() + max_age)


def _hop_refusal(robots: RobotsFile, url: str, user_agent: str) -> HopRefusal | None:
    """Why ``robots`` refuses a redirect to ``url``: for want of the file (unreachable),
    a refusal a later try may not meet, as the master's of a page or image is."""
    reason = robots.refusal(url, user_agent)
    if reason is None:
        return None
    return HopRefusal(reason, passing=robots.unreachable is not None)


class RedirectCheck:
    """The engine's ``check_hop``: image scope first (no request), then robots.txt."""

    def __init__(self, scope: ImageScope, robots: RobotsReader | None) -> None:
        self._scope = scope
        self._robots = robots

    def __call__(self, url: str, verdict: HopVerdict, first: str) -> None:
        if not self._scope.allows(url):
            verdict(HopRefusal(self._scope.refusal(url)))
        elif self._robots is None:
            verdict(None)
        else:
            self._robots.ask(url, verdict, logins=not other_origin(first, url))

    def close(self) -> None:
        if self._robots is not None:
            self._robots.close()
