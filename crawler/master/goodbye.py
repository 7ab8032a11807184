"""The crawl's end as its workers meet it: the wait for their goodbyes.

Once the crawl loop has stopped, workers still report what they hold, and say
goodbye when they hear that the crawl is over. The master waits for that, up to
SHUTDOWN_GRACE, and only while some worker is still heard from: one silent for
WORKER_SILENCE will not hear the end either. Apart from the crawl loop: the wait
reads the board's list of workers and the local processes, and its only part in
the loop's state is the results it has recorded meanwhile (``collect``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from crawler.master.endwatch import END_TICK
from crawler.master.launcher import LocalWorkers

if TYPE_CHECKING:
    from crawler.board.memory import TaskBoard
    from crawler.board.redis import RedisBoard

SHUTDOWN_GRACE = 10.0  # how long workers get to notice the end and leave
WORKER_SILENCE = 3.0  # a worker not heard from for this long will not hear the end either
# On a broker no goodbye wakes the master: it looks for them every END_TICK at first.
END_WATCH = 0.25


def await_goodbyes(board: TaskBoard | RedisBoard, workers: LocalWorkers, *,
                   wake: threading.Event, stop_asked: threading.Event,
                   collect: Callable[[], None], on_broker: bool, tick: float) -> bool:
    """Let workers report (``collect`` records it) and say goodbye; True when every one
    did, False when the grace ran out, a stop was asked for, or the last ones listening
    fell silent (those the caller stops). ``wake`` is set by news on the board; ``tick``
    is the crawl loop's."""
    # A crawl left open on the broker goes on without this master: only its own
    # workers are stopped (they hand their URLs back).
    grace_end = time.monotonic() + (SHUTDOWN_GRACE if board.closed else 0.0)
    # A goodbye wakes the wait below on the embedded board; on a broker it is looked
    # for, often at first: the workers hear of the end within their next poll.
    watch_until = time.monotonic() + (END_WATCH if on_broker else 0.0)
    while time.monotonic() < grace_end and not stop_asked.is_set():
        collect()
        # Every worker calls at least once a second; one silent for longer is gone.
        known = board.workers()
        listening = [w for w in known
                     if not w["gone"] and w["last_contact_s"] < WORKER_SILENCE]
        if listening:
            wake.wait(END_TICK if time.monotonic() < watch_until else tick)
            wake.clear()
        elif all(w["gone"] for w in known) or not workers.alive():
            # Every worker said goodbye: local processes are on their way out, and
            # are reaped when the master ends, as it closes its files.
            return True
        else:  # one fell silent: stopped by the caller, a local one reports on its way out
            workers.wait_all(tick)
    return False
