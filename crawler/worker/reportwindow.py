"""When a worker's reports go to the master: together, unless waiting would cost.

An exchange with the master costs both sides about 0.3 ms of CPU however many
reports it carries. On a real site served on loopback a report went every 3 ms
with 3 or 4 images; letting a report wait up to :data:`REPORT_WAIT` for the
next ones halved the exchanges (GIMP manual: 5% less CPU, 3-6% less time).
A report never waits when nothing else is downloading (no company is coming),
when enough have gathered, or when something else must go at once.
"""

from __future__ import annotations

REPORT_WAIT = 0.005  # seconds; over a real network a small part of an image's time


class ReportWindow:
    """Says how long pending reports may still wait for company (0: send now)."""

    def __init__(self, batch: int, wait: float = REPORT_WAIT) -> None:
        self._batch = max(1, batch)  # this many reports go without waiting
        self._wait = wait
        self._since: float | None = None  # when the oldest report not sent came

    def left(self, *, reports: int, downloading: int, urgent: bool, now: float) -> float:
        """Seconds the ``reports`` pending may still wait, at ``now``.

        ``downloading``: downloads in hand, whose reports could join;
        ``urgent``: something else goes in the same exchange and must not wait.
        """
        if not reports:
            self._since = None
            return 0.0
        if self._since is None:
            self._since = now
        if urgent or not downloading or reports >= self._batch:
            return 0.0
        return max(0.0, self._since + self._wait - now)

    def sent(self) -> None:
        """The pending reports went: the next one starts a new wait."""
        self._since = None
