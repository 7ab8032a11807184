"""robots.txt: fetched once per origin, parsed with Protego, obeyed for pages and images."""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

from protego import Protego

from crawler.fetch.easy import EasyClient

log = logging.getLogger(__name__)

MAX_ROBOTS_BYTES = 512 * 1024  # what Google reads of a robots.txt

_ALLOW_ALL = Protego.parse("")
_DISALLOW_ALL = Protego.parse("User-agent: *\nDisallow: /\n")


class Robots:
    def __init__(self, client: EasyClient, user_agent: str, timeout: float = 10.0,
                 enabled: bool = True, max_delay: float = 30.0) -> None:
        self._client = client
        self._max_delay = max_delay
        self._capped: set[str] = set()  # origins whose Crawl-delay was cut, warned about once
        self._agent = user_agent
        self._timeout = timeout
        self._enabled = enabled
        self._lock = threading.Lock()
        self._rules: dict[str, Protego] = {}
        self._fetching: dict[str, threading.Event] = {}
        self._unreachable: dict[str, str] = {}  # origin: why its robots.txt could not be read

    def allowed(self, url: str) -> bool:
        if not self._enabled:
            return True
        return bool(self._rules_for(url).can_fetch(url, self._agent))

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be fetched, or None when it may."""
        if self.allowed(url):
            return None
        why = self.unreachable(url)
        return f"robots.txt unreachable ({why})" if why else "disallowed by robots.txt"

    def unreachable(self, url: str) -> str | None:
        """Why the robots.txt of ``url``'s origin could not be read, if it could not.

        Its origin is then not crawled in this run (RFC 9309), but nothing of it
        is final: a later run tries again.
        """
        with self._lock:
            return self._unreachable.get(_origin(url))

    def crawl_delay(self, url: str) -> float | None:
        if not self._enabled:
            return None
        return self._capped_delay(url, self._rules_for(url))

    def known_delay(self, url: str) -> float | None:
        """The Crawl-delay for ``url``'s origin if its robots.txt was already read."""
        if not self._enabled:
            return None
        with self._lock:
            rules = self._rules.get(_origin(url))
        return self._capped_delay(url, rules) if rules is not None else None

    def _capped_delay(self, url: str, rules: Protego) -> float | None:
        """The Crawl-delay, at most ``max_delay``: a robots.txt may not stall a crawl for years."""
        delay = rules.crawl_delay(self._agent)
        if delay is None:
            return None
        if delay <= self._max_delay:
            return float(delay)
        origin = _origin(url)
        with self._lock:
            first = origin not in self._capped
            self._capped.add(origin)
        if first:
            log.warning("robots.txt of %s asks for %g s between requests; taking %g s"
                        " (politeness.max_crawl_delay)", origin, delay, self._max_delay)
        return self._max_delay

    def _rules_for(self, url: str) -> Protego:
        origin = _origin(url)
        with self._lock:
            known = self._rules.get(origin)
            if known is not None:
                return known
            event = self._fetching.get(origin)
            mine = event is None
            if mine:
                event = self._fetching[origin] = threading.Event()
        assert event is not None
        if not mine:  # another thread is fetching it: wait for its answer
            event.wait(self._timeout + 1)
            with self._lock:
                return self._rules.get(origin, _ALLOW_ALL)
        rules = _DISALLOW_ALL  # if _fetch fails unforeseen
        unreachable: str | None = "crawler error"
        try:
            rules, unreachable = self._fetch(origin)
        finally:
            with self._lock:
                self._rules[origin] = rules
                if unreachable:
                    self._unreachable[origin] = unreachable
            event.set()
        return rules

    def _fetch(self, origin: str) -> tuple[Protego, str | None]:
        """The rules of ``origin``, and why its robots.txt was unreachable (None if it was not)."""
        reply = self._client.get(origin + "/robots.txt", accept="text/plain,*/*;q=0.5",
                                 max_bytes=MAX_ROBOTS_BYTES, timeout=self._timeout)
        if reply.blocked is not None:
            return _ALLOW_ALL, None  # every fetch from that origin will be refused anyway
        if reply.timed_out:
            log.warning("robots.txt of %s too slow: not crawling that origin", origin)
            return _DISALLOW_ALL, f"too slow (over {self._timeout:g} s)"
        if not reply.ok and reply.status:  # the head came, the body did not
            log.warning("robots.txt of %s broke off (%s): not crawling that origin",
                        origin, reply.failure)
            return _DISALLOW_ALL, f"broken response: {reply.failure}"
        if not reply.ok:
            # RFC 9309: an unreachable robots.txt means complete disallow.
            log.warning("robots.txt of %s unreachable (%s): not crawling that origin",
                        origin, reply.failure)
            return _DISALLOW_ALL, reply.failure
        if reply.status >= 500:
            log.warning("robots.txt of %s answered HTTP %d: not crawling that origin",
                        origin, reply.status)
            return _DISALLOW_ALL, f"HTTP {reply.status}"
        if reply.status != 200:  # 4xx: no robots.txt; a redirect not followed: as if none
            return _ALLOW_ALL, None
        return Protego.parse(reply.body.decode("utf-8", errors="replace")), None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
