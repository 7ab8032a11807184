"""The in-memory task board: every image URL the master found, from queued to final.

The :class:`~crawler.board.base.Board` the master keeps in its own memory. A
URL handed to a worker is a *lease*: it stays in flight until a result
arrives, the worker's heartbeats keep it alive, and a lease that expires puts
the URL back on the queue. Transient failures come back after a backoff; only
the result of the worker that holds the URL counts. The board also paces
hand-outs per host (delay and concurrency), so that politeness holds across
the whole cluster, not per worker; its paces may be shared with the master's
page requests (see ``crawler.model.pacing``), so that a host's delay spaces its
pages and images together.

All methods are thread-safe: the queue server calls them from one thread per
worker connection while the master's crawl loop adds URLs and drains results.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from crawler.board.base import CLASSIC
from crawler.config import DEFAULTS, Settings
from crawler.model.cookies import MAX_COOKIES, cookie_key
from crawler.model.hosttimeouts import HostTimeouts
from crawler.model.outcome import (
    GIVEN_UP_NOTE,
    RATE_LIMITED_PAUSE,
    Attempt,
    given_up,
    one_line,
)
from crawler.model.pacing import Pace, Paces
from crawler.model.wire import LeaseAnswer, WorkerInfo

log = logging.getLogger(__name__)

LONG_HOLD = 30.0  # seconds: a Retry-After that holds a host this long is logged
# The status line of every tutorial worker together (get_task_queue: no name, no hello).
CLASSIC_ROW = "tutorial workers (classic)"
ASKING_WINDOW = 2.0  # seconds: a worker that asked for work this recently shares hosts
# Seconds without a reap (the crawl loop reaps twice a second, every worker of a broker
# once) that say the board was away: its process stopped, its Redis restarted or hung.
# The workers' silence in that stretch is not theirs.
BOARD_AWAY = 2.0
# Workers that left (holding nothing) whose records are kept, the most recent: each
# worker process has a name of its own, and every lease looks at every record, so a
# crawl whose workers came and went 100,000 times spent 6.8 ms a lease on them.
DEPARTED_KEPT = 1000
# Seconds an idle worker's answer waits for more URLs once it has some and none is left:
# while pages are the limit, each page's few images made a round trip of their own
# (about 200 a worker on a 686-page site, five images each). Not once every page is read
# (pages_over): the last images of a crawl waited it out for nothing.
GATHER_FOR = 0.01

QUEUED, LEASED, DELAYED, DONE = "queued", "leased", "delayed", "done"


@dataclass(slots=True)
class _Item:
    url: str
    host: str
    page: str | None
    ref: str | None = None  # what the page said of the image (JSON), carried to Settled
    state: str = QUEUED
    attempts: int = 0
    holder: str | None = None
    last_holder: str | None = None  # whose lease ran out last (a late success counts)
    deadline: float = 0.0


# What the board keeps of every URL with a final result: one shared record. Its URL,
# page and ref went out on its Settled, and a settled URL is never leased, delayed or
# held again (nothing writes to a record in DONE), so only "known, and done" is kept:
# each settled URL's own record (the ref, what its page said of it, often the longest
# string of the lot) had stayed for the rest of the crawl, about half the board's
# memory per URL once a large crawl's images were all in.
_SETTLED = _Item("", "", None, state=DONE)


@dataclass(slots=True)
class _Lane:
    """The queued URLs of one host, and how fast they may be handed out."""

    urls: deque[str] = field(default_factory=deque)
    in_flight: int = 0
    pace: Pace = field(default_factory=Pace)
    listed: bool = False


@dataclass(slots=True)
class WorkerRecord:
    worker: str
    info: Mapping[str, object]
    first_seen: float
    last_contact: float
    done: int = 0
    failed: int = 0
    bytes: int = 0
    held: set[str] = field(default_factory=set)
    per_host: Counter[str] = field(default_factory=Counter)  # of held, by host
    last_ask: float = -math.inf  # when it last asked for work
    unmet: int = 0  # how many of the URLs it last asked for it did not get
    gone: bool = False
    last_exchange: int = 0  # the highest exchange number applied: none at or below again


def _shown(w: WorkerRecord, now: float, *, gone: bool) -> dict[str, Any]:
    """A worker's line of ``workers``, as crawler status shows it."""
    return {"worker": w.worker, "host": w.info.get("host"), "pid": w.info.get("pid"),
            "threads": w.info.get("threads"), "held": len(w.held), "done": w.done,
            "failed": w.failed, "bytes": w.bytes,
            "rate": w.done / max(1e-9, w.last_contact - w.first_seen),
            "last_contact_s": round(now - w.last_contact, 2), "gone": gone}


class Settled(NamedTuple):
    """A URL's final attempt, with what the board knows about it."""

    attempt: Attempt
    page: str | None
    worker: str | None
    attempts: int
    ref: str | None = None  # what the page said of the image (JSON), as given to put


# Each rule of a board is a setting of its master's ("section.key"), by field.
POLICY_SETTINGS = {"lease_timeout": "queue.lease_timeout",
                   "max_attempts": "download.max_attempts",
                   "host_timeouts": "download.host_timeouts",
                   "backoff_base": "download.backoff_base",
                   "backoff_max": "download.backoff_max",
                   "host_delay": "politeness.host_delay",
                   "host_concurrency": "politeness.host_concurrency",
                   "batch_size": "queue.batch_size", "worker_silence": "queue.worker_silence"}


class BoardPolicy(NamedTuple):
    """The settings a board works by; the defaults are the settings' own (one catalogue)."""

    lease_timeout: float = DEFAULTS.queue.lease_timeout
    max_attempts: int = DEFAULTS.download.max_attempts
    backoff_base: float = DEFAULTS.download.backoff_base
    backoff_max: float = DEFAULTS.download.backoff_max
    host_delay: float = DEFAULTS.politeness.host_delay
    host_concurrency: int = DEFAULTS.politeness.host_concurrency
    batch_size: int = DEFAULTS.queue.batch_size
    worker_silence: float = DEFAULTS.queue.worker_silence
    host_timeouts: int = DEFAULTS.download.host_timeouts

    @classmethod
    def from_settings(cls, settings: Settings) -> BoardPolicy:
        values = {}
        for rule, key in POLICY_SETTINGS.items():
            section, name = key.split(".")
            values[rule] = getattr(getattr(settings, section), name)
        return cls(**values)

    def backoff(self, failures: int, retry_after: float | None) -> float:
        """Seconds to wait after the ``failures``-th transient failure: exponential with
        jitter, at most ``backoff_max``; a longer Retry-After wins, up to ``backoff_max``
        too: a server's "Retry-After: 999999999" held every image of its host (and the
        crawl) ten minutes per answer, without a word.
        """
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** (failures - 1))
        delay *= random.uniform(0.5, 1.0)
        if retry_after:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay


def retry_after_note(attempt: Attempt, host: str, policy: BoardPolicy) -> tuple[str, str] | None:
    """What a board tells the crawl's user of ``attempt``'s Retry-After, once per host:
    (its kind, its line), or None. The host then waits otherwise than its server asked:
    a Retry-After that cannot be read is taken as none, and one longer than
    ``backoff_max`` is cut to it (a "Retry-After: 999999999" held every image of its
    host, and the crawl, without end)."""
    url = attempt.url[:200]
    if attempt.retry_after_unread is not None:
        if attempt.retry_after:  # (the worker's pause for a 429 without one)
            instead = (f"its images wait {min(attempt.retry_after, policy.backoff_max):g} s, "
                       f"as after {attempt.reason} without one")
        elif attempt.host_is_busy:
            instead = (f"its images wait their backoff (download.backoff_base, doubling at "
                       f"each try), as after {attempt.reason} without one")
        elif attempt.transient:
            instead = "the image is tried again after its backoff, as without one"
        else:
            return None  # a final answer: nothing waits
        return "unread", (f"{host} sent a Retry-After that cannot be read "
                          f"({attempt.retry_after_unread!r}, {attempt.reason} on {url}): "
                          f"taken as none: {instead}")
    # Past RATE_LIMITED_PAUSE too: that long, it may be the worker's pause for a 429
    # that sent none, which no server asked for.
    if attempt.retry_after and attempt.retry_after > max(policy.backoff_max,
                                                         RATE_LIMITED_PAUSE):
        return "capped", (f"{host} asks to wait {attempt.retry_after:.0f} s (Retry-After on "
                          f"{url}): its images wait {policy.backoff_max:g} s at most "
                          "(download.backoff_max)")
    return None


def slow_down_note(host: str, seconds: float, reason: str, url: str) -> str:
    """The line that says ``host`` is slowed down after it answered ``url`` with
    ``reason`` (a 429 or 503)."""
    return (f"{host} answered {reason} ({url[:200]}): slowed down to one "
            f"request every {seconds:.2g} s, across all workers; it speeds up again as "
            "the host answers")


class TaskBoard:
    """The Board in the master's memory (see crawler.board.base for what each call means).

    One piece on purpose: every URL is in exactly one state, counted once, in
    its host's lane while queued and held by at most one worker while leased;
    leases, numbered exchanges, retries and fair shares all change that state
    together, under one lock. Split, each part would need the others' lock and
    their invariants would live in no one place.
    """

    def __init__(self, policy: BoardPolicy, clock: Callable[[], float] = time.monotonic,
                 wake: Callable[[], None] = lambda: None, paces: Paces | None = None) -> None:
        """``wake`` is called (under the board's lock, so it must be quick) when the
        crawl loop should look now rather than at its next tick: the last unfinished
        URL settled, or a worker said goodbye. ``paces``: the hosts' paces, shared with
        whatever else makes requests to them (the master's pages), on ``clock``'s time.
        """
        self.policy = policy
        self._clock = clock
        self._wake = wake
        self._paces = paces if paces is not None else Paces(policy.host_delay)
        self._cond = threading.Condition()
        self._items: dict[str, _Item] = {}
        self._lanes: dict[str, _Lane] = {}
        self._ready: deque[str] = deque()  # hosts whose lane has queued URLs
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._settled: list[Settled] = []
        self._workers: dict[str, WorkerRecord] = {}
        # Tutorial workers, all one holder: counted for status, but kept out of the
        # records that shares and silence are reckoned on (they send no heartbeat).
        self._classic: WorkerRecord | None = None
        self._closed = False
        self._pages_over = False  # the master expects no more puts: gather nothing
        self._unfinished = 0
        self._news: list[str] = []  # for the crawl's user, since the last ``news``
        self._said: set[tuple[str, str]] = set()  # (host, kind) of each note made
        # A host whose images timed out host_timeouts times in a row, no answer between,
        # is given up for this run: a hung server held each image for every try's
        # timeout, a slot of the crawl's at a time, for minutes a host.
        self._timeouts = HostTimeouts(policy.host_timeouts)
        # Kept up to date on every change, so counts and reaping never walk every URL.
        self._in_state = {QUEUED: 0, LEASED: 0, DELAYED: 0, DONE: 0}
        self._leased: set[str] = set()
        # URLs an earlier run left unfinished, which it may have tried: a set, not a field
        # of every item, as they are few (what a stopped or killed run held and queued).
        self._tried_before: set[str] = set()
        # Until then, those wait: a worker of that run (the master's death unknown to it
        # yet) may still store one, as the lease its master's last answer vouched for
        # lasts (vouched_for: half of worker_silence). Handed to another worker meanwhile,
        # an image of another type by then was stored twice, under two names, one of
        # them in no line of the manifest. As a live master takes a silent worker's
        # leases: after worker_silence, counted from this board's start (at once when
        # that run ended with no lease outstanding: ``no_earlier_leases``).
        self._earlier_leases_end = clock() + policy.worker_silence
        self._reaped_at: float | None = None  # (on the clock) when reap last ran
        self._lending = True  # False once the master records no more results
        self.retries = 0
        self.expired = 0
        self.duplicates = 0
        self.unknown = 0
        self.reclaimed = 0  # leases a worker did not know it had, put back (lost answers)
        self.refused = 0  # malformed reports
        # The cookies the crawl's pages set (crawler.model.cookies): key -> (the jar's
        # version when its line came, the line); the version goes up with each change.
        self._jar: dict[str, tuple[int, str]] = {}
        self._jar_version = 0

    # ----- the master's side -------------------------------------------------

    def put(self, url: str, host: str, page: str | None, ref: str | None = None, *,
            tried_before: bool = False) -> bool:
        """Queue ``url`` unless the board already has it; True when queued.

        ``ref`` (a JSON string: what ``page`` said of the image) comes back on its Settled.
        ``tried_before``: an earlier run left it unfinished, and may have tried it; its
        attempt numbers then count that try, so that the worker looks for a file it
        stored (``Store.stored_for``), as after a try of this run. Its tries this run,
        and the manifest's ``attempts``, are counted as for any other URL. It is handed
        out no sooner than worker_silence after this board's start, when no worker of
        that run may still store it unasked (``_earlier_leases_end``), unless that run
        ended holding none (``no_earlier_leases``).
        """
        with self._cond:
            if url in self._items:
                return False
            item = self._items[url] = _Item(url, host, page, ref)
            self._pages_over = False
            self._unfinished += 1
            self._in_state[QUEUED] += 1
            if tried_before:
                self._tried_before.add(url)
            if tried_before and self._clock() < self._earlier_leases_end:
                self._delay_until(item, self._earlier_leases_end)
            else:
                self._enqueue(url, host, front=False)
            self._cond.notify()
            return True

    def settle_now(self, attempt: Attempt, page: str | None, ref: str | None = None) -> None:
        """Record a final result the master decided itself (robots.txt, scope, ...)."""
        with self._cond:
            if attempt.url in self._items:
                return
            self._items[attempt.url] = _SETTLED
            self._in_state[DONE] += 1
            self._settled.append(Settled(attempt, page, None, 0, ref))

    def no_earlier_leases(self) -> None:
        """The earlier run ended with no lease outstanding: no worker of it may store what
        it left, which then goes out at once. Called before that run's images are put."""
        with self._cond:
            self._earlier_leases_end = -math.inf

    def stop_lending(self) -> int:
        """The master records no more results: hand out nothing from now on (what a worker
        took now, no one would record, and a next run would not wait for). Returns how
        many URLs workers hold still, and may yet store."""
        with self._cond:
            self._lending = False
            return self._in_state[LEASED]

    def remember(self, urls: Iterable[str]) -> None:
        """Know ``urls`` as finished (a resumed crawl's results): never queue them again."""
        with self._cond:
            for url in urls:
                if url not in self._items:
                    self._items[url] = _SETTLED
                    self._in_state[DONE] += 1

    def set_host_delay(self, host: str, seconds: float) -> None:
        with self._cond:
            lane = self._lanes.get(host) or self._new_lane(host)
            lane.pace.set_crawl_delay(seconds)

    def page_host_busy(self, host: str, reason: str, url: str) -> float | None:
        """A page of ``host`` was answered ``reason`` (a 429 or 503): the host is slowed
        down as an image's answer slows it, in the pace its pages and images share; the
        new seconds between two requests (None: not slowed down further)."""
        with self._cond:
            seconds = self._paces.of(host).slow_down(self._clock(), self.policy.backoff_max)
            self._slowed_down(host, seconds, reason, url)
            return seconds

    def pages_over(self) -> None:
        """Every page is read and its images put: an idle worker's answer waits for no
        more (a put says otherwise again)."""
        with self._cond:
            if not self._pages_over:
                self._pages_over = True
                self._cond.notify_all()

    def close(self) -> None:
        """Announce the end of the crawl: leases from now on say "closed"."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def drain(self) -> list[Settled]:
        with self._cond:
            settled, self._settled = self._settled, []
            return settled

    def news(self) -> list[str]:
        """What the board has to tell the crawl's user since the last call (a Retry-After
        it could not read, or cut short: see ``retry_after_note``), each once per host."""
        with self._cond:
            news, self._news = self._news, []
        return news

    def unfinished(self) -> int:
        """How many URLs have no final result yet."""
        with self._cond:
            return self._unfinished

    def known(self, url: str) -> bool:
        # One dict lookup is atomic: the page loop asks for every image it finds.
        return url in self._items

    def reap(self) -> int:
        """Put the URLs of expired leases back on the queue; return how many."""
        now = self._clock()
        expired = 0
        with self._cond:
            self._forgive_board_away(now)
            self._promote_delayed(now)
            for record in self._workers.values():
                if record.held and now - record.last_contact > self.policy.worker_silence:
                    # Our workers call every second: this one is stopped, cut off or
                    # dead. Its leases end now rather than after lease_timeout.
                    for url in record.held:
                        self._items[url].deadline = now - 1.0
            for url in list(self._leased):
                item = self._items[url]
                if item.deadline >= now:
                    continue
                expired += 1
                self._unlease(item)
                if item.attempts >= self.policy.max_attempts:
                    # No server said no: a worker killed, cut off or stopped took it
                    # down with it. A passing failure, which the next run tries again.
                    self._finish(item, Attempt(
                        url=item.url, ok=False, transient=True,
                        reason=f"lost: no result after {item.attempts} attempts "
                               "(worker gone or too slow)"), None)
                else:
                    self._set_state(item, QUEUED)
                    self._enqueue(item.url, item.host, front=True)
            for record in self._workers.values():
                if not record.gone and now - record.last_contact > self.policy.lease_timeout:
                    record.gone = True
            self._forget_departed()
            if expired:
                self.expired += expired
                self._cond.notify_all()
        return expired

    def _forgive_board_away(self, now: float) -> None:
        """After a stretch with no reap (BOARD_AWAY), move the workers' last contacts and
        the leases' deadlines on by it: no one could call. The Redis board does the same
        (a 6 s restart of redis-server ended every lease at once, of workers that called
        again as soon as it was back); a worker dead all the same loses its leases
        worker_silence later. The lock held."""
        last, self._reaped_at = self._reaped_at, now
        if last is None or now - last <= BOARD_AWAY:
            return
        if any(record.last_contact > last for record in self._workers.values()):
            # A worker reached the board meanwhile: it was there, only its reaper was slow
            # (the embedded board's is the crawl loop: a long commit, a loaded host), and
            # a dead worker's leases must not live on for it.
            return
        away = now - last
        for record in self._workers.values():
            record.last_contact = min(now, record.last_contact + away)
        for url in self._leased:
            self._items[url].deadline += away

    def counts(self) -> dict[str, int]:
        now = self._clock()
        with self._cond:
            states = self._in_state
            return {"queued": states[QUEUED], "in_flight": states[LEASED],
                    "delayed": states[DELAYED], "done": states[DONE],
                    "retries": self.retries, "expired": self.expired,
                    "duplicates": self.duplicates, "unknown": self.unknown,
                    "reclaimed": self.reclaimed, "refused": self.refused,
                    "workers": sum(1 for w in self._workers.values()
                                   if not self._is_gone(w, now)),
                    # Whether tutorial workers are at work (how many, no one knows): the
                    # display said "workers 0" while they did the whole crawl.
                    "tutorial": int(self._classic is not None
                                    and not self._tutorial_gone(self._classic, now))}

    def _is_gone(self, record: WorkerRecord, now: float) -> bool:
        """Gone, as shown: it said goodbye, or fell silent for worker_silence (our workers
        call every second, and its leases end then), reaped or not yet."""
        return record.gone or now - record.last_contact > self.policy.worker_silence

    def worker_info(self, worker: str) -> Mapping[str, object] | None:
        """What ``worker`` said of itself in its hello; None for one this board does not
        know (a tutorial worker, or one forgotten since it left)."""
        with self._cond:
            record = self._workers.get(worker)
            return None if record is None else record.info

    def workers(self) -> list[dict[str, Any]]:
        now = self._clock()
        with self._cond:
            return [_shown(w, now, gone=self._is_gone(w, now)) for w in self._workers.values()]

    def tutorial_workers(self) -> list[dict[str, Any]]:
        """The tutorial workers as one line in the form of ``workers`` (none before one
        called): how many they are is unknown (they share one holder and say no
        hello); gone after ``lease_timeout`` of silence. Not among ``workers``, which
        the end of a crawl waits on: they need no goodbye."""
        w = self._classic
        if w is None:
            return []
        now = self._clock()
        with self._cond:
            return [_shown(w, now, gone=self._tutorial_gone(w, now))]

    def _tutorial_gone(self, record: WorkerRecord, now: float) -> bool:
        """Tutorial workers call no more than a get() and a put() a URL: silent for
        lease_timeout, the time each has for its URL, they are taken as gone."""
        return now - record.last_contact > self.policy.lease_timeout

    # ----- the workers' side -------------------------------------------------

    def hello(self, worker: str, info: WorkerInfo) -> None:
        now = self._clock()
        with self._cond:
            record = self._workers.get(worker)
            if record is None:
                self._workers[worker] = WorkerRecord(worker, dict(info), now, now)
            else:
                record.last_contact, record.gone = now, False

    def publish_cookies(self, lines: list[str]) -> int:
        """Keep the cookie ``lines`` the crawl's pages set (a line replaces the one of the
        same cookie), for the workers; the jar's version, raised if anything changed.
        Called before the images that need them are put: a lease that hands those out
        says a version that has them."""
        with self._cond:
            version = self._jar_version + 1
            for line in lines:
                key = cookie_key(line)
                if key is None or self._jar.get(key, (0, ""))[1] == line or (
                        key not in self._jar and len(self._jar) >= MAX_COOKIES):
                    continue
                self._jar[key] = (version, line)
                self._jar_version = version
            return self._jar_version

    def cookies_since(self, version: int) -> tuple[int, list[str]]:
        """The jar's version, and the cookie lines that came after ``version``."""
        with self._cond:
            return self._jar_version, [line for at, line in self._jar.values() if at > version]

    def lease(self, worker: str, max_items: int, wait: float) -> LeaseAnswer:
        """Hand out up to ``max_items`` URLs, waiting up to ``wait`` seconds for one; the
        answer says the cookie jar's version (``cookies``) once pages set any."""
        answer = self._lease(worker, max_items, wait)
        if self._jar_version:  # read after the lease: what its URLs need, or later
            answer["cookies"] = self._jar_version
        return answer

    def _lease(self, worker: str, max_items: int, wait: float) -> LeaseAnswer:
        limit = max(1, min(max_items, self.policy.batch_size))
        with self._cond:
            end = self._clock() + max(0.0, wait)
            record = self._touch(worker) or self._classic_record(worker)
            while True:
                if self._closed:
                    return LeaseAnswer(closed=True, tasks=[])
                now = self._clock()
                if record is not None:
                    record.last_ask = now  # asking for as long as it waits: it has a share
                self._promote_delayed(now)
                tasks = self._take(worker, limit, now)
                if record is not None:
                    record.unmet = limit - len(tasks)  # what others leave it room for
                if tasks:
                    if wait > 0 and len(tasks) < limit and not self._ready and not self._pages_over:
                        # An idle worker took all there was: what the next pages bring
                        # in the next moments goes in the same answer, not one each
                        # (unless no page is left to bring any).
                        tasks += self._gather(worker, limit - len(tasks),
                                              time.monotonic() + min(wait, GATHER_FOR))
                    return LeaseAnswer(closed=False, tasks=tasks)
                remaining = end - now
                if remaining <= 0:
                    return LeaseAnswer(closed=False, tasks=[])
                self._cond.wait(min(remaining, self._until_ready(now)))

    def report(self, worker: str, attempts: Iterable[Attempt]) -> int:
        """Record ``worker``'s results for URLs it holds; the number recorded."""
        recorded = 0
        with self._cond:
            record = self._touch(worker) or self._classic_record(worker)
            for attempt in attempts:
                if not self._holds(worker, attempt):
                    continue
                if record is not None:
                    if attempt.ok:
                        record.done += 1
                        record.bytes += attempt.bytes or 0
                    else:
                        record.failed += 1
                self._record(attempt, worker)
                recorded += 1
        return recorded

    def refuse(self, worker: str, why: str) -> None:
        """Count and log a report an adapter refused as malformed."""
        with self._cond:
            self.refused += 1
        log.warning("refused a report from %s: %s", one_line(worker), one_line(why))

    def heartbeat(self, worker: str) -> bool:
        """Renew every lease ``worker`` holds; True while the crawl goes on."""
        with self._cond:
            self._touch(worker)
            return not self._closed

    def release(self, worker: str, urls: Iterable[str]) -> None:
        """Take back URLs a stopping worker holds but will not finish."""
        with self._cond:
            for url in urls:
                item = self._items.get(url)
                if item is not None and item.state == LEASED and item.holder == worker:
                    self._unlease(item)
                    item.attempts -= 1  # it was never tried
                    self._set_state(item, QUEUED)
                    self._enqueue(url, item.host, front=True)
            self._cond.notify_all()

    def exchange(self, worker: str, number: int, reports: Iterable[Attempt],
                 released: Iterable[str], max_items: int, wait: float,
                 holding: Iterable[str] | None = None) -> LeaseAnswer:
        """A worker's one round trip: ``release``, ``report``, then ``lease`` (or, for
        ``max_items`` 0, ``heartbeat``), with two guarantees the separate calls lack.

        Applied once: a worker numbers its exchanges upwards and, when it lost an
        answer, sends the same ``number`` and payload again; only the lease part
        is done again, and a number lower than one already seen (a copy held up
        in the network) does nothing. Leases reconciled:
        ``holding`` (every URL the worker still has to say something about) puts
        back any URL leased to it that it never received, as when the answer that
        carried it was lost; without that, heartbeats would renew such a lease
        forever and the crawl would never end. And the answer's ``lost`` names
        the URLs of ``holding`` the worker no longer holds (it fell silent and
        they went to others): it must not store or report them.
        """
        reports, released = list(reports), list(released)
        lost: list[str] = []
        with self._cond:
            record = self._touch(worker)
            if record is not None and number < record.last_exchange:
                # A copy held up in the network, overtaken by the worker's later calls:
                # all of it was applied already, or sent again, and its holding list
                # is out of date. Its answer would go nowhere: lease nothing.
                return LeaseAnswer(closed=self._closed, tasks=[])
            if record is None or number > record.last_exchange:
                if record is not None:
                    record.last_exchange = number
                self.release(worker, released)
                self.report(worker, reports)
            if record is not None and holding is not None:
                kept = frozenset(holding)
                unknown = [url for url in record.held if url not in kept]
                self.release(worker, unknown)  # never received, so never tried
                self.reclaimed += len(unknown)
                spoken = {attempt.url for attempt in reports}.union(released)
                now = self._clock()
                lost = [url for url in kept if url not in record.held and url not in spoken
                        and not self._adopt(record, url, now)]
        if max_items > 0:
            answer = self.lease(worker, max_items, wait)
        else:
            answer = LeaseAnswer(closed=not self.heartbeat(worker), tasks=[])
        if lost:
            answer["lost"] = lost
        return answer

    def goodbye(self, worker: str) -> None:
        with self._cond:
            record = self._workers.get(worker)
            if record is not None:
                record.gone = True
            self._wake()

    # ----- internals (lock held) ---------------------------------------------

    def _forget_departed(self) -> None:
        """Drop the records of workers that left holding nothing, past the most recent
        DEPARTED_KEPT of them (the crawl's own counts keep what they did)."""
        departed = [r for r in self._workers.values() if r.gone and not r.held]
        excess = len(departed) - DEPARTED_KEPT
        if excess > 0:
            for record in heapq.nsmallest(excess, departed, key=lambda r: r.last_contact):
                del self._workers[record.worker]

    def _holds(self, worker: str, attempt: Attempt) -> bool:
        """Whether ``worker``'s result for its URL counts: it holds the URL, or stored it
        while its lease ran out and no one holds it since. Any other result is counted
        and logged."""
        url = attempt.url
        item = self._items.get(url)
        if item is None:
            self.unknown += 1
            log.warning("refused a report from %s for %.200r: no such URL was queued",
                        one_line(worker), url)
            return False
        if (attempt.ok and item.state in (QUEUED, DELAYED)
                and (item.last_holder == worker or url in self._tried_before)):
            # A late success: stored by a worker cut off from its master, whose lease ran
            # out meanwhile (or by a worker of a run before this master's restart), and
            # handed to no one since. Ignored, it was downloaded again by a worker on
            # another host, into its own folder: a second file, the first in no line of
            # the manifest.
            log.info("took a late result from %s for %.200s: stored while its lease ran "
                     "out, and handed to no one since", worker, url)
            return True
        if item.state != LEASED or item.holder != worker:
            # Its lease ran out (the URL went back, or to another worker): only the
            # current holder's result counts, and a stored file is never replaced.
            self.duplicates += 1
            log.info("ignored a report from %s for %.200s: it no longer holds that URL",
                     worker, url)
            return False
        return True

    def _adopt(self, record: WorkerRecord, url: str, now: float) -> bool:
        """Lease ``url`` to the worker of ``record``, which says it holds it, if an earlier
        run left it unfinished (this master's restart) and no one was handed it since:
        held back for such a worker (``put``), it was told the URL was lost, dropped the
        download under way, and the URL was downloaded again once handed out."""
        item = self._items.get(url)
        if (item is None or item is _SETTLED or url not in self._tried_before
                or item.state not in (QUEUED, DELAYED)
                or item.last_holder not in (None, record.worker)):
            return False  # (another worker had it since: its file, if any, counts)
        # (Its place in a lane or among the delayed is skipped when reached: not QUEUED,
        # not DELAYED there.)
        self._lease_to(item, self._lanes.get(item.host) or self._new_lane(item.host),
                       record.worker, record, now)
        log.info("%s, back after this master's restart, holds %.200s: leased to it again",
                 record.worker, url)
        return True

    def _lease_to(self, item: _Item, lane: _Lane, worker: str, record: WorkerRecord | None,
                  now: float) -> None:
        """Lease ``item`` (of ``lane``'s host) to ``worker``, held in its ``record``."""
        self._set_state(item, LEASED)
        item.holder = worker
        item.attempts += 1
        item.deadline = now + self.policy.lease_timeout
        lane.in_flight += 1
        if record is not None:
            record.held.add(item.url)
            record.per_host[item.host] += 1

    def _touch(self, worker: str) -> WorkerRecord | None:
        now = self._clock()
        record = self._workers.get(worker)
        if record is None and worker != CLASSIC:
            record = self._workers[worker] = WorkerRecord(worker, {}, now, now)
        if record is not None:
            record.last_contact, record.gone = now, False
            deadline = now + self.policy.lease_timeout
            for url in record.held:
                self._items[url].deadline = deadline
        return record

    def _classic_record(self, worker: str) -> WorkerRecord | None:
        """The tutorial workers' tally, seen now, when ``worker`` is their holder."""
        if worker != CLASSIC:
            return None
        now = self._clock()
        if self._classic is None:
            self._classic = WorkerRecord(CLASSIC_ROW, {}, now, now)
        self._classic.last_contact = now
        return self._classic

    def _new_lane(self, host: str) -> _Lane:
        lane = self._lanes[host] = _Lane(pace=self._paces.of(host))
        return lane

    def _enqueue(self, url: str, host: str, *, front: bool) -> None:
        """Queue ``url``, a QUEUED item's (or end it, if ``host`` is given up)."""
        if host in self._timeouts:
            self._finish(self._items[url],
                         given_up(url, host, self.policy.host_timeouts), None, tried=False)
            return
        lane = self._lanes.get(host) or self._new_lane(host)
        if front:
            lane.urls.appendleft(url)
        else:
            lane.urls.append(url)
        if not lane.listed:
            lane.listed = True
            self._ready.append(host)

    def _gather(self, worker: str, limit: int, until: float) -> list[tuple[str, int]]:
        """Up to ``limit`` more URLs for ``worker`` as they are put, until ``until``
        (``time.monotonic()``: a moment of real time, whatever the board's clock)."""
        more: list[tuple[str, int]] = []
        while len(more) < limit and not self._closed and not self._pages_over:
            left = until - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
            if self._closed:
                break  # nothing more after a stop
            now = self._clock()
            self._promote_delayed(now)
            more += self._take(worker, limit - len(more), now)
            if self._ready:
                # What is left waits for a slot or the pace, or is beyond this worker's
                # share: no use waiting, and the wake-up that brought it may have been
                # meant for an idle worker waiting behind this one (put wakes one).
                self._cond.notify()
                break
        return more

    def _take(self, worker: str, limit: int, now: float) -> list[tuple[str, int]]:
        tasks: list[tuple[str, int]] = []
        if not self._lending:
            return tasks
        record = self._workers.get(worker)
        asking = self._asking(now)
        share = math.ceil(self.policy.host_concurrency / max(1, len(asking)))
        floor = self.policy.host_concurrency // max(1, len(asking))
        owed: dict[str, int] = {}  # by host: what the others lack of floor (see _owed)
        blocked = 0  # lanes in a row that may not send now; all of them means stop
        while len(tasks) < limit and self._ready and blocked < len(self._ready):
            host = self._ready[0]
            lane = self._lanes[host]
            while lane.urls and self._items[lane.urls[0]].state != QUEUED:
                lane.urls.popleft()  # settled while queued (a late result): skip
            if not lane.urls:
                self._ready.popleft()
                lane.listed = False
                continue
            # The pace is taken last: once taken, this URL is leased.
            mine = record.per_host[host] if record is not None else 0
            # Past its share rounded down (none with more workers than slots), a worker
            # leaves free what the others are owed: asked once a host per call.
            if record is not None and 0 < floor <= mine < share and host not in owed:
                owed[host] = _owed(asking, record, host, floor)
            if (lane.in_flight >= self.policy.host_concurrency
                    or (record is not None and (
                        mine >= share
                        or (0 < floor <= mine
                            and owed[host] >= self.policy.host_concurrency - lane.in_flight)))
                    or not lane.pace.take(now)):
                self._ready.rotate(-1)
                blocked += 1
                continue
            blocked = 0
            item = self._items[lane.urls.popleft()]
            # The tutorial workers' record holds what they took too (what _owed counts of
            # them), though no share bounds them here.
            held_by = record if record is not None else self._classic_record(worker)
            self._lease_to(item, lane, worker, held_by, now)
            tasks.append((item.url, item.attempts + (item.url in self._tried_before)))
            self._ready.rotate(-1)  # one URL per host per turn: fair across hosts
        return tasks

    def _asking(self, now: float) -> list[WorkerRecord]:
        """The workers asking for work lately, who share each host's slots evenly: none
        may hold more than ``ceil(slots / asking)`` of a host's, so none holds them all
        while others get nothing. (The tutorial workers count, one share together: left
        out, ours kept every slot of a host full, and a tutorial worker's get() waited
        until it gave up.)"""
        asking = [record for record in self._workers.values()
                  if not record.gone and now - record.last_ask <= ASKING_WINDOW]
        if self._classic is not None and now - self._classic.last_ask <= ASKING_WINDOW:
            asking.append(self._classic)
        return asking

    def _until_ready(self, now: float) -> float:
        """Seconds until a paced host or a delayed retry may be ready (bounded)."""
        soonest = 1.0
        if self._delayed:
            soonest = min(soonest, self._delayed[0][0] - now)
        for host in self._ready:
            due = self._lanes[host].pace.image_due(now)
            if due > now:
                soonest = min(soonest, due - now)
        return max(0.001, soonest)

    def _promote_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, url = heapq.heappop(self._delayed)
            item = self._items[url]
            if item.state == DELAYED:
                self._set_state(item, QUEUED)
                self._enqueue(url, item.host, front=True)

    def _unlease(self, item: _Item) -> None:
        if item.state != LEASED:
            return
        lane = self._lanes[item.host]
        lane.in_flight -= 1
        record = self._workers.get(item.holder or "")
        if record is not None:
            record.held.discard(item.url)
            record.per_host[item.host] -= 1
        elif item.holder == CLASSIC and self._classic is not None:
            self._classic.held.discard(item.url)
            self._classic.per_host[item.host] -= 1
        item.holder, item.last_holder = None, item.holder

    def _record(self, attempt: Attempt, worker: str) -> None:
        """Apply the result of a URL ``worker`` holds (report checked that)."""
        item = self._items[attempt.url]
        self._unlease(item)
        now = self._clock()
        # (A late result's host may have no lane yet: its URLs only held back so far.)
        pace = (self._lanes.get(item.host) or self._new_lane(item.host)).pace
        if attempt.ok:
            pace.answered(now)
        elif attempt.host_is_busy:
            self._slowed_down(item.host, pace.slow_down(now, self.policy.backoff_max),
                              attempt.reason, attempt.url)
        if attempt.retry_after:
            held = min(attempt.retry_after, self.policy.backoff_max)
            pace.hold(now + held)
            if LONG_HOLD <= held == attempt.retry_after:  # (one cut short is a note)
                log.info("%s asks to wait %.0f s (Retry-After on %s): its images wait %.0f s",
                         item.host, attempt.retry_after, attempt.url, held)
        note = retry_after_note(attempt, item.host, self.policy)
        if note is not None:
            self._say_once(item.host, *note)
        # The host that did not answer counts: a redirect's target, where the image's own
        # host answered with the redirect.
        hop_host = attempt.hop_host or item.host
        if hop_host != item.host:
            self._timeouts.answered(item.host)
        if attempt.timed_out:
            if self._timeouts.timed_out(hop_host):
                self._give_up(hop_host)
        elif attempt.host_answered:
            self._timeouts.answered(hop_host)
        attempts = max(item.attempts, 1)
        if (not attempt.ok and attempt.transient and attempts < self.policy.max_attempts
                and item.host not in self._timeouts and hop_host not in self._timeouts):
            # (A 429 or 503 is about the server: its host was slowed down above, which
            # spaces its other images; held for this image's backoff, a rate-limited
            # host's images waited seconds at each answer its limit refused.)
            backoff = self.policy.backoff(attempts, attempt.retry_after)
            self._delay_until(item, now + backoff)
            self.retries += 1
            return
        self._finish(item, attempt, worker)

    def _give_up(self, host: str) -> None:
        """``host`` timed out host_timeouts times in a row: its queued images end now, and
        later ones as they come (``_enqueue``); the ones in flight end with their own
        tries, not tried again."""
        limit = self.policy.host_timeouts
        self._say_once(host, "given up", GIVEN_UP_NOTE % (host, limit))
        lane = self._lanes.get(host)  # (none: a host only redirects led to)
        if lane is None:
            return
        for url in lane.urls:
            item = self._items[url]
            if item.state == QUEUED:
                self._finish(item, given_up(url, host, limit), None, tried=False)
        lane.urls.clear()

    def _slowed_down(self, host: str, seconds: float | None, reason: str, url: str) -> None:
        """Say that ``host`` is slowed down to one request every ``seconds`` (None: it
        was not slowed down further): a warning the first time, as the crawl slows."""
        if seconds is None:
            return
        line = slow_down_note(host, seconds, reason, url)
        if not self._say_once(host, "slowed", line):
            log.info("%s", line)

    def _say_once(self, host: str, kind: str, line: str) -> bool:
        """Tell the crawl's user ``line``, the first note of its ``kind`` for ``host``;
        whether it was the first."""
        if (host, kind) in self._said:
            return False
        self._said.add((host, kind))
        self._news.append(line)
        return True

    def _delay_until(self, item: _Item, until: float) -> None:
        """``item`` waits until ``until`` (``_promote_delayed`` queues it again then)."""
        self._set_state(item, DELAYED)
        heapq.heappush(self._delayed, (until, next(self._seq), item.url))

    def _set_state(self, item: _Item, state: str) -> None:
        self._in_state[item.state] -= 1
        self._in_state[state] += 1
        if item.state == LEASED:
            self._leased.discard(item.url)
        elif state == LEASED:
            self._leased.add(item.url)
        item.state = state

    def _finish(self, item: _Item, attempt: Attempt, worker: str | None, *,
                tried: bool = True) -> None:
        """``item`` settles with ``attempt``; ``tried``: False for one settled without a try
        of its own (its host given up), whose tries are those made, none perhaps."""
        self._set_state(item, DONE)
        self._unfinished -= 1
        if self._unfinished == 0:
            self._wake()
        attempts = max(item.attempts, 1) if tried else item.attempts
        self._settled.append(Settled(attempt, item.page, worker, attempts, item.ref))
        self._items[item.url] = _SETTLED  # its own record is of no more use
        self._tried_before.discard(item.url)


def _owed(asking: list[WorkerRecord], record: WorkerRecord, host: str,
          floor: int) -> int:
    """The slots of ``host`` the other workers asking lately lack to hold ``floor`` each,
    as far as they asked for more than they got (one with few threads, full, lacks none).

    A worker at ``floor`` of a host's slots (its share rounded down) takes another only
    when that leaves these free: shares rounded up add up to more than the host has,
    and workers at theirs took back, in their own exchange, each slot their report
    freed; a worker that came later (the fifth of five, with 16 slots) got none for as
    long as the host had URLs.
    """
    return sum(min(other.unmet, max(0, floor - other.per_host[host])) for other in asking
               if other is not record)
