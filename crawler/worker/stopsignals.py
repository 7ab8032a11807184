"""The signals that stop a worker, kept to the thread that talks to the master.

A stop (SIGINT, SIGTERM, SIGHUP) must cut short a call to a master that answers
no more: only the main thread, which makes those calls, can have it. Every
other thread a worker starts (its engine's, libcurl's resolver's, the sync's,
the progress callback's) is started with them blocked, so that the kernel
delivers them to the main one. Apart from the worker's loop: which thread hears
a signal is a property of how threads are started, not of what they do.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

# What stops a worker (see crawler.api.run_worker): handled in the main thread, which
# makes the calls to the master. Blocked in the worker's other threads, so that the
# kernel delivers them to the main one, where they cut a call short: one that reached
# another thread waited out a call to a master that answers no more, up to its deadline.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextlib.contextmanager
def deaf_to_stops() -> Iterator[None]:
    """Threads started inside the block have the stop signals blocked (they inherit this
    thread's mask)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
