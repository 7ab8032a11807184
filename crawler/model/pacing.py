"""Per-host pacing, for pages and images alike: when may a host be asked again.

A host's pace has a delay between two requests (``host_delay``, raised by a
robots.txt Crawl-delay) and a time before which it is not asked at all (the
delay since its last request, or a backoff its server asked for with
Retry-After or a 5xx). The master's page frontier (when a page is handed
out), its page loop (when a page's first request goes) and the board's image
lanes each keep a pace per host and read it the same way.
"""

from __future__ import annotations


class Pace:
    """One host's pace."""

    __slots__ = ("delay", "next_time")

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # seconds between two requests to the host
        self.next_time = 0.0  # not asked before this time (time.monotonic())

    def ready(self, now: float) -> bool:
        return self.next_time <= now

    def took(self, now: float) -> None:
        """A request to the host goes out now: the next waits for the delay."""
        if self.delay:
            self.next_time = max(self.next_time, now + self.delay)

    def hold(self, until: float) -> None:
        """Ask nothing of the host before ``until``; a hold is never shortened."""
        if until > self.next_time:
            self.next_time = until

    def slow_to(self, delay: float) -> None:
        """At least ``delay`` seconds between two requests from now on (never faster)."""
        if delay > self.delay:
            self.delay = delay


class Paces:
    """A pace per host, each made on first use with ``delay`` between two requests."""

    __slots__ = ("_by_host", "_delay")

    def __init__(self, delay: float = 0.0) -> None:
        self._delay = delay
        self._by_host: dict[str, Pace] = {}

    def of(self, host: str) -> Pace:
        pace = self._by_host.get(host)
        if pace is None:
            pace = self._by_host[host] = Pace(self._delay)
        return pace
