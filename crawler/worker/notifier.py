"""A worker's progress callback, called on a thread of its own.

The worker's coordinating thread sends the heartbeats that keep its leases.
Called there, once per finished image, a callback that took half a second
(a slow terminal, a GUI, a database) held the heartbeats back until the master
took every lease away: the whole crawl's images ended "lost", for good. Here
the callback runs beside it; the numbers it gets are the latest, and calls
that would come while one runs, or within ``CALL_GAP`` of its end, are merged
into the next: woken once per image, the thread cost a worker about 25 us of
CPU per image (a wake-up, and the interpreter's lock passed back and forth),
a tenth of its work on a real site, for a line drawn once a second.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

S = TypeVar("S")

CALL_GAP = 0.05  # seconds between two calls at least (the last, at close, waits for none)


class Notifier(Generic[S]):
    """Calls ``call(state)`` with the state last given to :meth:`poke`, off the caller's
    thread (each state a copy the caller no longer changes).

    An exception from ``call`` ends the calls; ``on_error`` is told at once (the
    worker stops), and :attr:`error` keeps it for the worker to raise.
    """

    def __init__(self, call: Callable[[S], None], state: S,
                 on_error: Callable[[], None]) -> None:
        self._call = call
        self._state = state
        self._on_error = on_error
        self._due = threading.Event()
        self._closing = threading.Event()  # the last call is due; it cuts a gap short
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def poke(self, state: S) -> None:
        self._state = state
        self._due.set()

    def close(self, state: S) -> None:
        """One last call with the final ``state``, and its end waited for: the callback
        is the caller's, which ran to its end on the worker's thread before."""
        self._state = state
        self._closing.set()
        self._due.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            closing = self._closing.is_set()  # first: a call made now has the final numbers
            try:
                self._call(self._state)
            except BaseException as exc:  # noqa: BLE001 - the caller's own, raised by the worker
                self.error = exc
                self._on_error()
                return
            if closing:
                return
            # Pokes meanwhile only set the flag (no thread waits on it): one call after.
            self._closing.wait(CALL_GAP)
