"""robots.txt for the master: read once per origin, obeyed for pages and images.

How one file is read and what it allows is ``crawler.fetch.robots``; this is
the master's cache of those files, shared by its page loop and helper threads, and the
Crawl-delay it takes from them. RFC 9309 (2.4) keeps a cached file 24 hours at most
(``crawl.robots_max_age``): one older is read again before its origin's next
request, and while it cannot be read (5xx, no connection) the rules read before
stay in force.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from crawler.fetch.easy import EasyClient
from crawler.fetch.policy import Retries
from crawler.fetch.robots import (
    NOT_CRAWLED,
    RobotsFile,
    kept_on_refresh,
    origin_of,
    read_robots,
    refresh_retry,
    unreachable,
)
from crawler.master.once import NotYet, Once

log = logging.getLogger(__name__)

READ_AT_ONCE = 8  # robots.txt files read_all reads at once, when the client has no bound
# robots.txt files the master reads at once, each of another origin. Not the pages' bound
# (crawl.page_concurrency): a page showing images of 200 hosts, 8 of whose robots.txt
# never answered, had those 8 hold every turn for a deadline, and the images of the
# hosts not begun by then, answering at once, were refused for the run.
ROBOTS_AT_ONCE = 64
# What a thread that could not wait longer for a robots.txt takes: disallowed, for now.
NOT_READ_IN_TIME = unreachable("not read in time")


class Robots:
    """What robots.txt allows, per origin, read on first use and again past its maximum
    age; off, it allows everything."""

    def __init__(self, client: EasyClient, user_agent: str, timeout: float = 10.0,
                 enabled: bool = True, max_delay: float = 30.0,
                 max_age: float | None = None, retries: Retries | None = None) -> None:
        """``max_age``: seconds an origin's rules are kept before they are read again
        (None: for good). ``retries``: how often a robots.txt that could not be read (a
        5xx, a 429, no connection, too slow) is read again in this run, and after how
        long, as a page would be (None: not again, till the next run)."""
        self._client = client
        self._retries = retries
        # Origins whose robots.txt failed, by failed reads in a row, and when each is
        # read again (time.monotonic()) while tries are left.
        self._failed_reads: dict[str, int] = {}
        self._read_again_at: dict[str, float] = {}
        self._max_delay = max_delay
        self._capped: set[str] = set()  # origins whose Crawl-delay was cut, warned about once
        # Origins the crawl asks directly (a page's, an image's): their robots.txt is read
        # with the user's Authorization and Cookie headers. One reached only by redirects
        # gets none, as the redirect's own request does not.
        self._direct: set[str] = set()
        self._agent = user_agent
        self._timeout = timeout
        self._enabled = enabled
        self._lock = threading.Lock()
        # An origin's rules are read once; threads asking meanwhile wait for them. One
        # stuck past its deadline leaves the others with "unreachable" (RFC 9309: disallow,
        # and not final). Read several at once (read_all) no more than the client lets
        # through: one waiting for its turn would spend its deadline there. One that
        # spent it all the same (other pages' reads held every connection) is not held
        # against its origin: it is read again when next asked.
        self._refresh_retry = refresh_retry(max_age)
        self._rules: Once[str, RobotsFile] = Once(self._read, fallback=NOT_READ_IN_TIME,
                                                  wait=timeout + 1,
                                                  at_once=client.at_once or READ_AT_ONCE,
                                                  max_age=max_age)

    def read_all(self, urls: Iterable[str], *, all_of_them: bool = False) -> None:
        """Read the robots.txt of the origins of ``urls`` not read yet, at the same time,
        rather than one after the other as they are asked for: none is begun after one
        deadline, so a page waits two at most. A page showing images of 200 hosts that
        never answer waited for them a batch after another (page_concurrency at a
        time), 25 deadlines, and a stop with it. Those not begun are "not read in
        time" for one deadline (their images refused for now, which a rerun tries
        again), then read when next needed.

        ``all_of_them``: read every one, a batch after another, each batch within its
        deadline, however long they take together (for a caller that a stop does not
        wait for: the images an earlier run queued, of any number of hosts)."""
        if self._enabled:
            origins = dict.fromkeys(origin_of(url) for url in urls)  # (in the order found)
            self._direct.update(origins)
            self._rules.get_all(origins, within=None if all_of_them else self._timeout + 1)

    def close(self) -> None:
        self._rules.close()

    def allowed(self, url: str, *, redirected: bool = False) -> bool:
        return self.refusal(url, redirected=redirected) is None

    def refusal(self, url: str, *, redirected: bool = False) -> str | None:
        """Why ``url`` may not be fetched, or None when it may. ``redirected``: it is a
        redirect's target, not a URL the crawl asks for itself."""
        if not self._enabled:
            return None
        return self._rules.get(self._origin(url, redirected)).refusal(url, self._agent)

    def verdict(self, url: str, *, redirected: bool = False,
                page: bool = False) -> tuple[str | None, bool]:
        """Why ``url`` may not be fetched (None when it may), and whether that is for
        want of its robots.txt (unreachable, or not read in time): not final then.
        ``redirected`` as for :meth:`refusal`. ``page``: asked for a page, which may
        wait for the file to be read again, once it is due (``read_again_in``).

        Both from the one answer: the stand-in given while a file is not read is in
        no cache that ``unreachable`` could look at.
        """
        if not self._enabled:
            return None, False
        origin = self._origin(url, redirected)
        if page and self._due(origin):
            self._rules.forget(origin)
        rules = self._rules.get(origin)
        refused = rules.refusal(url, self._agent)
        return refused, refused is not None and rules.unreachable is not None

    def _origin(self, url: str, redirected: bool) -> str:
        origin = origin_of(url)
        if not redirected:
            self._direct.add(origin)
        return origin

    def is_read(self, url: str) -> bool:
        """Whether the rules for ``url``'s origin are known for this run (or not needed)."""
        return not self._enabled or self._rules.known(origin_of(url)) is not None

    def unreachable(self, url: str) -> str | None:
        """Why the robots.txt of ``url``'s origin could not be read, if it could not.

        Its origin is then not crawled in this run (RFC 9309), but nothing of it
        is final: a later run tries again.
        """
        known = self._rules.known(origin_of(url))
        return known.unreachable if known is not None else None

    def ready_for_page(self, url: str) -> bool:
        """Whether a page's verdict waits for nothing: its origin's rules are known, and
        not due to be read again."""
        if not self._enabled:
            return True
        with self._lock:
            at = self._read_again_at.get(origin_of(url))
        return self.is_read(url) and (at is None or time.monotonic() < at)

    def _due(self, origin: str) -> bool:
        """Whether ``origin``'s robots.txt is due to be read again now; if it is, it is
        no longer (the caller reads it: one thread of those asking at once)."""
        with self._lock:
            at = self._read_again_at.get(origin)
            if at is None or time.monotonic() < at:
                return False
            del self._read_again_at[origin]
            return True

    def read_again_in(self, url: str) -> float | None:
        """Seconds before the robots.txt of ``url``'s origin, which could not be read, is
        read again in this run (0 if it may be now), or None if it is not: it was read,
        or its tries are spent (then its pages wait for the next run)."""
        origin = origin_of(url)
        with self._lock:
            at = self._read_again_at.get(origin)
            failed = self._failed_reads.get(origin, 0)
        if at is not None:
            return max(0.0, at - time.monotonic())
        if (self._retries is not None and 0 < failed < self._retries.max_attempts
                and self._rules.known(origin) is None):
            # Due, and not read this time (no connection was free, or another thread's
            # read ran past this one's wait): its stand-in refused the page. Read again
            # one deadline later, as such a file is; set aside, the page lost its tries.
            return self._timeout
        return None

    def crawl_delay(self, url: str) -> float | None:
        """The Crawl-delay for ``url``'s host (its robots.txt may be read first)."""
        if not self._enabled:
            return None
        origin = origin_of(url)
        return self._host_delay(origin, self._rules.get(origin))

    def known_delay(self, url: str) -> float | None:
        """The Crawl-delay for ``url``'s host if its origin's robots.txt was already read."""
        if not self._enabled:
            return None
        origin = origin_of(url)
        rules = self._rules.known(origin)
        return self._host_delay(origin, rules) if rules is not None else None

    def _host_delay(self, origin: str, rules: RobotsFile) -> float | None:
        """The Crawl-delay of ``origin``'s rules, or the longer one of the same host's other
        scheme where its robots.txt is read too: one pace serves a host's http and https
        pages and images, and told each in turn it took the last told."""
        delay = self._capped_delay(origin, rules)
        scheme, _, rest = origin.partition("://")
        sibling = f"{'http' if scheme == 'https' else 'https'}://{rest}"
        other = self._rules.previous(sibling)  # (past its age too: till it is read again)
        if other is not None:
            other_delay = self._capped_delay(sibling, other)
            if other_delay is not None and (delay is None or other_delay > delay):
                return other_delay
        return delay

    def _capped_delay(self, url: str, robots: RobotsFile) -> float | None:
        """The Crawl-delay, at most ``max_delay``: a robots.txt may not stall a crawl for years."""
        delay = robots.rules.crawl_delay(self._agent)
        if delay is None:
            return None
        if delay <= self._max_delay:
            return float(delay)
        origin = origin_of(url)
        with self._lock:
            first = origin not in self._capped
            self._capped.add(origin)
        if first:
            log.warning("robots.txt of %s asks for %g s between requests; taking %g s"
                        " (politeness.max_crawl_delay)", origin, delay, self._max_delay)
        return self._max_delay

    def _read(self, origin: str) -> RobotsFile:
        previous = self._rules.previous(origin)  # rules past their age, read again now
        with self._lock:
            tries = self._failed_reads.get(origin, 0) + 1
        retries = self._retries if previous is None else None
        retried = retries is not None and tries < retries.max_attempts
        if retries is None:
            unread_means = NOT_CRAWLED
        elif retried:
            # (An origin of images alone is not read again: its images are refused for now.)
            unread_means = f"refused for now, read again when one of its pages is next " \
                f"asked for (try {tries} of {retries.max_attempts})"
        else:
            unread_means = f"{NOT_CRAWLED} in this run (read {tries} times)"
        try:
            robots = read_robots(self._client, origin, self._timeout,
                                 refreshing=previous is not None, unread_means=unread_means,
                                 logins=origin in self._direct)
        except Exception:
            log.exception("robots.txt of %s could not be read: %s", origin, unread_means)
            robots = unreachable("crawler error")
        if not robots.settled:
            log.info("robots.txt of %s: %s; read again when needed %g s from now",
                     origin, robots.unreachable, self._timeout)
            raise NotYet(retry_in=self._timeout)
        if kept_on_refresh(robots, previous):
            log.info("robots.txt of %s: %s on its refresh; read again in %g s",
                     origin, robots.unreachable, self._refresh_retry)
            raise NotYet(retry_in=self._refresh_retry)
        with self._lock:
            if robots.unreachable is None:
                self._failed_reads.pop(origin, None)
            elif robots.final and retries is not None:  # its tries spent: time fixes nothing
                self._failed_reads[origin] = retries.max_attempts
            else:
                self._failed_reads[origin] = tries
            self._read_again_at.pop(origin, None)
        if robots.unreachable is not None and retried and not robots.final:
            assert retries is not None
            # As a page's passing failure: a backoff, or the server's Retry-After (up to
            # backoff_max). The answer stands meanwhile, and for images and style sheets
            # after it too: only a page asks for the file again (see verdict).
            pause = retries.backoff(tries, robots.retry_after)
            with self._lock:
                self._read_again_at[origin] = time.monotonic() + pause
            log.info("robots.txt of %s read again in %.1f s, when one of its pages asks",
                     origin, pause)
        return robots
