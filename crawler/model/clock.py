"""The clock a worker measures its own silences with.

A master gives a worker's leases away after ``worker_silence`` without a call,
timed on the master's clock (or the broker's), which runs on while the
worker's machine sleeps. ``time.monotonic()`` does not count that sleep on
Linux (CLOCK_MONOTONIC) nor on macOS: a laptop waking after an hour would take
its last answer for fresh and store images whose leases went to others. The
clocks below count it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial


def _awake_or_asleep() -> Callable[[], float]:
    if sys.platform.startswith("linux") and hasattr(time, "CLOCK_BOOTTIME"):
        return partial(time.clock_gettime, time.CLOCK_BOOTTIME)
    if sys.platform == "darwin":  # macOS's CLOCK_MONOTONIC counts sleep; monotonic() not
        return partial(time.clock_gettime, time.CLOCK_MONOTONIC)
    return time.monotonic  # elsewhere: the best there is


since_boot: Callable[[], float] = _awake_or_asleep()
"""Seconds, never going back, sleep of the machine included."""
