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

from crawler.master.pages import Page
from crawler.model.hosttimeouts import HostTimeouts
from crawler.model.urls import host_key

log = logging.getLogger(__name__)

# The reason of a page of a host given up, set aside unread (``%`` with the host and
# the timeouts in a row).
PAGE_GIVEN_UP = "not read: %s timed out %d times in a row (download.host_timeouts)"


class HungPages:
    """The pages' timeouts in a row, by host, and the hosts given up (0: never)."""

    def __init__(self, limit: int) -> None:
        self._timeouts = HostTimeouts(limit)

    def heard(self, url: str, page: Page) -> None:
        """Count what the hosts of ``url`` and of its last hop (a redirect's target, where
        its request timed out or was answered) made of its page: a timeout, an answer,
        or neither. A host that redirected answered: a page of one host led by a redirect
        to one that never answers gave up the host that redirected, and read no more of
        its pages, while the host that hung went on being asked."""
        if not page.timed_out and not self._timeouts.counting:
            return  # (most crawls meet no timeout: no host key worked out, page by page)
        host = host_key(page.final_url)
        first = host_key(url) if page.final_url != url else host
        if first != host:
            self._timeouts.answered(first)
        if page.timed_out:
            if self._timeouts.timed_out(host):
                log.warning("%s timed out %d times in a row, with no answer between: its "
                            "other pages are set aside in this run and read by the next "
                            "(download.host_timeouts)", host, self._timeouts.limit)
        elif page.ok or page.status:
            self._timeouts.answered(host)

    def unread(self, url: str) -> str | None:
        """Why the page ``url`` is set aside unread (its host given up), or None."""
        if not self._timeouts.any_given_up:  # (then no host key worked out, page by page)
            return None
        host = host_key(url)
        return PAGE_GIVEN_UP % (host, self._timeouts.limit) if host in self._timeouts else None
