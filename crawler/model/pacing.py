"""Per-host pacing, for pages and images alike: when may a host be asked again.

A host's pace has a delay between two requests (``host_delay``, raised by a
robots.txt Crawl-delay) and a time before which it is not asked at all (the
delay since its last request, or a backoff its server asked for with
Retry-After or a 5xx). In the embedded mode the master's page loop (when a
page's first request goes) and the board (when an image is leased to a worker)
share one pace per host, so that the delay spaces every request to the host and
a hold from either side holds both; the page frontier keeps paces of its own
for when a page is handed to the page loop, which is no request.

A host that answers 429 or 503 (too many requests, overloaded), to a page or
an image, is slowed down beyond that: a delay of its own, twice the host's delay
at each such answer and worn off a little by each success, so that a
rate-limited host is asked about as often as it allows rather than in bursts
that it refuses. A host that refuses pages is rate limiting the whole host: the
slow-down is one for its pages and images (embedded, in the pace they share; on
a broker, in the board's scripts, which the page frontier's read, with these
constants).

Shared, pages and images take turns: while a page waits for the host, an
image leaves it the turn after an image's. Otherwise the workers, woken the
moment the host is free, would take every turn while its images last, and its
pages (and the links and images they bring) would wait that long.
"""

from __future__ import annotations

import threading

# Seconds an image waits to look again while a page has the host's turn and the
# host has no delay: the page takes it within moments.
PAGE_TURN = 0.005

# A host's first slow-down: at most four requests a second, across all workers
# (or half as many as its delay allowed, if fewer); the later ones halve the pace.
FIRST_SLOW_DOWN = 0.25
# Each success wears a slow-down off by this factor: halved in about 23 requests,
# so that a host whose rate limit was met is not pushed into it again at once.
SLOW_DOWN_WEARS_OFF = 0.97
# A slow-down wears off to this, not below: a host that said "too many" once keeps
# one (100 requests a second at most), so that its next "too many" doubles what it
# allowed, instead of the burst that reached it starting again from FIRST_SLOW_DOWN.
SLOW_DOWN_FLOOR = 0.01
# A second slow-down waits this long at least (or the slow-down, if longer): the
# requests already in flight when the host said "too many" were sent too fast for
# the first one, and their answers are the same news.
SLOW_DOWN_GAP = 1.0


class Pace:
    """One host's pace."""

    __slots__ = ("_asked", "_floor", "_lock", "_page_went_last", "_slowed", "_slowed_at",
                 "delay", "next_time", "page_waits")

    def __init__(self, delay: float = 0.0) -> None:
        self._floor = delay  # the configured delay, which no Crawl-delay shortens
        self._asked = delay  # the configured delay or the host's Crawl-delay, the longer
        self._slowed = 0.0  # the slow-down a 429 or 503 brought, worn off by successes
        self._slowed_at = float("-inf")  # when it last grew
        self.delay = delay  # seconds between two requests to the host: the longest of them
        self.next_time = 0.0  # not asked before this time (time.monotonic())
        self.page_waits = False  # a page waits for its turn (set by the page loop alone)
        self._page_went_last = False
        # Pages (the page loop's thread) and images (the board, under its own lock)
        # take turns of one pace: its changes are made under this lock.
        self._lock = threading.Lock()

    def ready(self, now: float) -> bool:
        return self.next_time <= now

    def took(self, now: float) -> None:
        """A request to the host goes out now: the next waits for the delay."""
        if self.delay:
            with self._lock:
                self.next_time = max(self.next_time, now + self.delay)

    def take(self, now: float, *, page: bool = False) -> bool:
        """Take the host's turn if it is ready ``now`` (True), in one step: of two
        threads asking at once, one gets it. An image (not ``page``) leaves the turn
        after an image's to a page that waits."""
        if self.next_time > now or (self.page_waits and not page and not self._page_went_last):
            return False  # no lock needed to say no
        if not self.delay:  # no spacing to keep: taking changes no time, needs no lock
            self._page_went_last = page
            return True
        with self._lock:
            if self.next_time > now:
                return False
            self.next_time = now + self.delay  # (0 if a Crawl-delay went since: no spacing)
            self._page_went_last = page
            return True

    def image_due(self, now: float) -> float:
        """When an image may next try to take a turn (a page's turn comes first)."""
        if self._pages_turn():
            return max(self.next_time, now) + (self.delay or PAGE_TURN)
        return self.next_time

    def _pages_turn(self) -> bool:
        return self.page_waits and not self._page_went_last

    def hold(self, until: float) -> None:
        """Ask nothing of the host before ``until``; a hold is never shortened."""
        with self._lock:
            if until > self.next_time:
                self.next_time = until

    def set_crawl_delay(self, delay: float) -> None:
        """``delay`` seconds between two requests from now on (the host's Crawl-delay, as
        its robots.txt says it now: read again, it may ask for more or less), never less
        than the configured delay."""
        with self._lock:
            self._asked = max(self._floor, delay)
            self.delay = max(self._asked, self._slowed)

    def slow_down(self, now: float, at_most: float) -> float | None:
        """The host answered 429 or 503: double its delay (at most ``at_most`` seconds
        between two requests); the new one, or None when this answer is news already
        had (it came within the gap after the last slow-down) or ``at_most`` allows the
        host no slower pace."""
        with self._lock:
            if self._within_gap(now):
                return None
            # Twice the delay the host has (a Crawl-delay may be longer than the slow-down);
            # at first, no less than FIRST_SLOW_DOWN: the delay the burst it refused went at
            # (none) says nothing of what it allows, a delay it refused since does.
            slowed = min(at_most, max(0.0 if self._slowed else FIRST_SLOW_DOWN, 2 * self.delay))
            if slowed <= self.delay:
                return None  # download.backoff_max allows the host no slower pace
            self._slowed_to(now, slowed)
            return slowed

    def slowed_elsewhere(self, now: float, seconds: float) -> None:
        """The host was slowed down to ``seconds`` between two requests by the rule of
        :meth:`slow_down` applied elsewhere (the broker's, for every master of a crawl):
        the requests paced here go by it too, from now, and it wears off here as there."""
        with self._lock:
            self._slowed_to(now, seconds)

    def _slowed_to(self, now: float, seconds: float) -> None:
        """The slow-down is ``seconds`` from ``now`` (the caller holds the lock): from this
        answer on, the next request waits it too."""
        self._slowed, self._slowed_at = seconds, now
        self.delay = max(self._asked, seconds)
        self.next_time = max(self.next_time, now + seconds)

    def answered(self, now: float) -> None:
        """The host answered a request well: its slow-down, if any, wears off a little
        (not within the gap after it grew: worn off at once, the pace it refused came
        back before it could say so again, and every answer met its limit)."""
        if self._slowed <= SLOW_DOWN_FLOOR or self._within_gap(now):
            return  # no lock needed: most hosts are never slowed down
        with self._lock:
            self._slowed = max(SLOW_DOWN_FLOOR, self._slowed * SLOW_DOWN_WEARS_OFF)
            self.delay = max(self._asked, self._slowed)

    def _within_gap(self, now: float) -> bool:
        """Whether ``now`` is within SLOW_DOWN_GAP (or the slow-down, if longer) of the
        slow-down's last growth."""
        return now - self._slowed_at < max(SLOW_DOWN_GAP, self._slowed)


class Paces:
    """A pace per host, each made on first use with ``delay`` between two requests.

    Safe to share between threads: two asking for a new host at once get one pace.
    """

    __slots__ = ("_by_host", "_delay")

    def __init__(self, delay: float = 0.0) -> None:
        self._delay = delay
        self._by_host: dict[str, Pace] = {}

    def of(self, host: str) -> Pace:
        pace = self._by_host.get(host)
        if pace is None:  # setdefault is atomic: the pace another thread just made wins
            pace = self._by_host.setdefault(host, Pace(self._delay))
        return pace
