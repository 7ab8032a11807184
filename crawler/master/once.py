"""A value per key, computed once however many threads ask for it at the same time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class Once(Generic[K, V]):
    """Computes ``compute(key)`` once per key; threads asking meanwhile wait for that answer.

    A thread that waits longer than ``wait`` seconds (the computing thread is
    stuck past its own deadline) gets ``fallback`` instead. If ``compute``
    raises, the key gets ``fallback`` for good and the error goes to its caller.
    """

    def __init__(self, compute: Callable[[K], V], *, fallback: V, wait: float) -> None:
        self._compute = compute
        self._fallback = fallback
        self._wait = wait
        self._lock = threading.Lock()
        self._done: dict[K, V] = {}
        self._running: dict[K, threading.Event] = {}

    def get(self, key: K) -> V:
        done = self._done.get(key, _MISSING)  # one dict lookup is atomic: no lock for it
        if done is not _MISSING:
            return done  # type: ignore[return-value]
        with self._lock:
            if key in self._done:
                return self._done[key]
            event = self._running.get(key)
            mine = event is None
            if mine:
                event = self._running[key] = threading.Event()
        assert event is not None
        if not mine:  # another thread computes it: wait for its answer
            event.wait(self._wait)
            with self._lock:
                return self._done.get(key, self._fallback)
        value = self._fallback
        try:
            value = self._compute(key)
        finally:
            with self._lock:
                self._done[key] = value
                del self._running[key]
            event.set()
        return value

    def known(self, key: K) -> V | None:
        """The value if it was computed already, else None (nothing is computed)."""
        with self._lock:
            return self._done.get(key)
