"""A value per key, computed once however many threads ask for it at the same time
(and again once it is older than its maximum age, if it has one)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from crawler.model.clock import since_boot

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class NotYet(Exception):
    """Raised by a computation whose value cannot be known yet: the caller gets the
    fallback, and the key is computed again when it is asked for next, or, with
    ``retry_in``, when it is asked for that many seconds later (asked before, it
    gets the fallback at once: a computation that waited long for nothing is not
    waited for again by every caller in turn).

    Raised while computing again a value past its maximum age, the old value
    stands instead of the fallback: until ``retry_in`` seconds from now, and for the
    caller."""

    def __init__(self, retry_in: float = 0.0) -> None:
        super().__init__()
        self.retry_in = retry_in


class Once(Generic[K, V]):
    """Computes ``compute(key)`` once per key; threads asking meanwhile wait for that answer.

    A thread that waits longer than ``wait`` seconds (the computing thread is
    stuck past its own deadline) gets ``fallback`` instead. If ``compute``
    raises, the key keeps ``fallback`` (or, past its age, its old value) until it
    is computed again, never without a maximum age; the error goes to its caller.
    :meth:`get_all` computes several keys at the same time, on up to ``at_once``
    threads of its own.

    ``max_age``: seconds a value is kept (on a clock that counts the machine's
    sleep); the first to ask for it after that computes it again, the others wait
    for that answer as for the first.
    """

    def __init__(self, compute: Callable[[K], V], *, fallback: V, wait: float,
                 at_once: int = 32, max_age: float | None = None) -> None:
        self._compute = compute
        self._fallback = fallback
        self._wait = wait
        self._at_once = at_once
        self._pool: ThreadPoolExecutor | None = None  # started by the first get_all
        self._closed = False
        self._lock = threading.Lock()
        self._max_age = max_age
        self._done: dict[K, V] = {}
        self._stale_at: dict[K, float] = {}  # since_boot() when a value is computed again
        self._running: dict[K, threading.Event] = {}
        self._not_before: dict[K, float] = {}  # keys computed again only from then on

    def get(self, key: K) -> V:
        done = self._done.get(key, _MISSING)  # one dict lookup is atomic: no lock for it
        if done is not _MISSING and self._fresh(key):
            return done  # type: ignore[return-value]
        with self._lock:
            if key in self._done and self._fresh(key):
                return self._done[key]
            # A value past its age stands while it is not due to be computed again.
            held = self._done.get(key, self._fallback)
            if key in self._not_before:
                if time.monotonic() < self._not_before[key]:
                    return held
                del self._not_before[key]
            event = self._running.get(key)
            mine = event is None
            if mine:
                event = self._running[key] = threading.Event()
        assert event is not None
        if not mine:  # another thread computes it: wait for its answer
            event.wait(self._wait)
            with self._lock:
                return self._done.get(key, self._fallback)
        value = held
        keep = True
        try:
            value = self._compute(key)
        except NotYet as exc:
            keep = False
            if exc.retry_in > 0:
                with self._lock:
                    self._not_before[key] = time.monotonic() + exc.retry_in
        finally:
            with self._lock:
                if keep:
                    if self._max_age is not None:  # before the value: see _fresh
                        self._stale_at[key] = since_boot() + self._max_age
                    self._done[key] = value
                    self._not_before.pop(key, None)
                del self._running[key]
            event.set()
        return value

    def get_all(self, keys: Iterable[K], *, within: float | None = None) -> None:
        """Compute the keys not known yet, ``at_once`` at the same time; return when all
        are known, or once each batch has had ``wait`` seconds. A page that names the
        robots.txt of 64 hosts or six style sheets, each read one after the other,
        took each one's deadline in turn: 64 hung hosts held a page (and a stop
        waiting for it) for over ten minutes. An error of ``compute`` is logged.

        ``within``: begin no key after that many seconds, however many batches are
        left, and wait for those begun (``wait`` at most). The keys not begun are
        not computed now: until ``wait`` seconds have passed, asking for them gives
        the fallback at once (the caller does not compute them one after the other
        instead). A key past its age, not begun, keeps its old value meanwhile.
        """
        missing = [key for key in dict.fromkeys(keys) if self.known(key) is None]
        if len(missing) < 2:
            return  # the caller's own get() computes it as soon
        with self._lock:
            if self._closed:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._at_once, thread_name_prefix="once")
            pool = self._pool
        try:
            futures = [pool.submit(self.get, key) for key in missing]
        except RuntimeError:  # closed meanwhile: nothing more is computed
            return
        if within is not None:
            wait(futures, timeout=within)
            late = [key for key, future in zip(missing, futures, strict=True)
                    if future.cancel()]  # True only for one not begun
            wait(futures, timeout=self._wait)  # those begun end within their own deadline
            until = time.monotonic() + self._wait
            with self._lock:
                for key in late:  # (one past its age keeps its old value meanwhile)
                    if key not in self._done or not self._fresh(key):
                        self._not_before[key] = until
        else:
            # Batch by batch: keys queued behind a full pool get their own wait, rather
            # than the caller computing them one after the other once the first is over.
            for first in range(0, len(futures), self._at_once):
                wait(futures[first:first + self._at_once], timeout=self._wait)
        for key, future in zip(missing, futures, strict=True):
            if future.done() and not future.cancelled() and future.exception() is not None:
                log.error("computing the value of %s failed", key,
                          exc_info=future.exception())

    def close(self) -> None:
        """Let the threads of get_all go (a computation under way ends by its deadline);
        get_all computes nothing more."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def known(self, key: K) -> V | None:
        """The value if it was computed already and :meth:`get` gives it without
        computing it again, else None (nothing is computed)."""
        with self._lock:
            if key not in self._done:
                return None
            if self._fresh(key) or time.monotonic() < self._not_before.get(key, 0.0):
                return self._done[key]
            return None

    def forget(self, key: K) -> None:
        """Drop ``key``'s value: the next to ask computes it again (one that is being
        computed is kept when it comes)."""
        with self._lock:
            self._done.pop(key, None)
            self._stale_at.pop(key, None)
            self._not_before.pop(key, None)

    def previous(self, key: K) -> V | None:
        """The value computed last, however old (None if none was): for a computation
        that may keep it."""
        with self._lock:
            return self._done.get(key)

    def _fresh(self, key: K) -> bool:
        """Whether ``key``'s value is within its maximum age (one being stored is not)."""
        return self._max_age is None or since_boot() < self._stale_at.get(key, 0.0)
