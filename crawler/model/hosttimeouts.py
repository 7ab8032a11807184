"""Timeouts in a row, by host, and the hosts given up for them (``download.host_timeouts``).

A server that accepts connections and never answers held each request for every
try's timeout. A host whose requests time out ``limit`` times in a row, with no
answer of its between (a success, any HTTP status), is given up for the run. The
embedded board counts its images so (``crawler.board.memory``; the Redis board's
scripts keep the same rule), and each master its pages (``crawler.master.hungpages``).
"""

from __future__ import annotations

from collections import Counter


class HostTimeouts:
    """The count of each host's timeouts in a row, and the hosts given up (limit 0: none)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_a_row: Counter[str] = Counter()
        self._given_up: set[str] = set()

    def timed_out(self, host: str) -> bool:
        """Count a timeout of ``host``'s; True when this one gives the host up."""
        self._in_a_row[host] += 1
        if not self.limit or self._in_a_row[host] < self.limit or host in self._given_up:
            return False
        self._given_up.add(host)
        return True

    def answered(self, host: str) -> None:
        """``host`` answered: its count starts again."""
        self._in_a_row.pop(host, None)

    @property
    def counting(self) -> bool:
        """Whether some host's count is under way (most crawls meet no timeout at all)."""
        return bool(self._in_a_row)

    @property
    def any_given_up(self) -> bool:
        return bool(self._given_up)

    def __contains__(self, host: str) -> bool:
        """Whether ``host`` is given up."""
        return host in self._given_up
