"""Hosts whose pages time out again and again: given up for the run, as the board gives
up a host whose images do (``download.host_timeouts``).

A server that accepts connections and never answers held each of its pages for
every try's timeout (30 s, three tries), a page slot of the master's at a time.
Each master counts its own pages' timeouts in a row, per host; a page the host
answers (a success, any HTTP status) starts the count again. Once a host is
given up, its pages are not tried again in this run, and those still to read are
set aside unread: the next run tries them all again.
"""

from __future__ import annotations

import logging
from collections import Counter

from crawler.master.pages import Page

log = logging.getLogger(__name__)

# The reason of a page of a host given up, set aside unread (``%`` with the host and
# the timeouts in a row).
PAGE_GIVEN_UP = "not read: %s timed out %d times in a row (download.host_timeouts)"


class HungPages:
    """The pages' timeouts in a row, by host, and the hosts given up (0: never)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_a_row: Counter[str] = Counter()
        self._given_up: set[str] = set()

    def heard(self, host: str, page: Page) -> None:
        """Count what ``host`` made of a page: a timeout, an answer, or neither."""
        if page.timed_out:
            self._in_a_row[host] += 1
            if self._limit and self._in_a_row[host] >= self._limit and (
                    host not in self._given_up):
                self._given_up.add(host)
                log.warning("%s timed out %d times in a row, with no answer between: its "
                            "other pages are set aside in this run and read by the next "
                            "(download.host_timeouts)", host, self._limit)
        elif page.ok or page.status:
            self._in_a_row.pop(host, None)

    def given_up(self, host: str) -> bool:
        return host in self._given_up

    def reason(self, host: str) -> str:
        """Why a page of ``host`` (given up) is set aside unread."""
        return PAGE_GIVEN_UP % (host, self._limit)
