"""The cookies the crawl's pages set, fed from the master's jar to the workers' jars.

Browsers and wget send the cookies a site's pages set with the image requests
that follow. The master's page clients share one libcurl jar (``new_share``);
each worker has a jar of its own. The page clients note a response that set a
cookie (:class:`JarWatch`); before the master queues a page's images,
:class:`CookieFeed` exports the jar and hands over what changed, for the board to
keep and the workers to add to their jars (:func:`add_to_jar`) before they start
those images. Nothing is exported while no response set a cookie (the default).
"""

from __future__ import annotations

import logging

import pycurl

from crawler.model.cookies import (
    COOKIE_ENCODING,
    MAX_COOKIE_BYTES,
    MAX_COOKIES,
    cookie_key,
    expired,
)

log = logging.getLogger(__name__)


class JarWatch:
    """Set by a page client when a response carried Set-Cookie; cleared by the reader.

    A plain flag: set from any thread, read and cleared by one; a cookie set after
    the clear sets it again, and the export that follows a clear misses nothing set
    before it.
    """

    changed = False


def jar_lines(share: pycurl.CurlShare) -> list[str]:
    """Every cookie in ``share``'s jar, as Netscape lines (libcurl's own export).

    A cookie is bytes as the site sent them, UTF-8 or not (a hostile site's 0xFF):
    each byte is one character here (Latin-1), and :func:`add_to_jar` gives the
    same bytes back.
    """
    handle = pycurl.Curl()
    try:
        handle.setopt(pycurl.SHARE, share)
        handle.setopt(pycurl.COOKIEFILE, "")  # the cookie engine on, with the jar
        raw: list[bytes] = handle.getinfo_raw(pycurl.INFO_COOKIELIST)
        return [line.decode(COOKIE_ENCODING) for line in raw]
    finally:
        handle.close()


def add_to_jar(share: pycurl.CurlShare, lines: list[str]) -> None:
    """Add Netscape ``lines`` to ``share``'s jar (a line of a cookie there replaces it);
    anything but a cookie line is left out: libcurl takes some words as commands."""
    handle = pycurl.Curl()
    try:
        handle.setopt(pycurl.SHARE, share)
        handle.setopt(pycurl.COOKIEFILE, "")
        for line in lines:
            if cookie_key(line) is not None:
                handle.setopt(pycurl.COOKIELIST, line.encode(COOKIE_ENCODING))
    finally:
        handle.close()


class CookieFeed:
    """What changed in the master's jar since the last call: the lines to publish.

    The cookies of the user's cookies file are in the jar from the start, and the
    workers have them already: they are the starting point, not news. A cookie
    that left the jar (the site deleted it, or it expired) goes as a line that
    deletes it. At most MAX_COOKIES cookies and MAX_COOKIE_BYTES are published;
    past that, new ones are left out (said once), changed ones still go.
    """

    def __init__(self, share: pycurl.CurlShare, watch: JarWatch) -> None:
        self._share = share
        self._watch = watch
        self._sent = self._by_key(jar_lines(share))  # what the workers' jars hold
        self._published: dict[str, str] = {}  # key -> the line we last sent for it
        self._bytes = 0
        self._warned = False

    def news(self) -> list[str]:
        """The lines that are new or changed since the last call (none without a
        Set-Cookie since: no export)."""
        if not self._watch.changed:
            return []
        self._watch.changed = False  # before the export: a cookie set during it is next
        now = self._by_key(jar_lines(self._share))
        changes: list[tuple[str, str | None]] = [
            (key, line) for key, line in now.items() if self._sent.get(key) != line]
        changes += [(key, None) for key in self._sent if key not in now]
        news = []
        for key, line in changes:
            sent = expired(self._sent[key]) if line is None else line
            if not self._fits(key, sent):
                continue
            news.append(sent)
            if line is None:
                del self._sent[key]
            else:
                self._sent[key] = line
        return news

    def page_cookies(self) -> list[str]:
        """The cookies the crawl's pages set (or changed) that the jar holds now, as they
        were published."""
        return [self._sent[key] for key in self._published if key in self._sent]

    def again(self, lines: list[str]) -> None:
        """``lines`` of :meth:`news` did not reach the board (a broker that did not
        answer): the next call gives them again."""
        for line in lines:
            key = cookie_key(line)
            if key is not None:
                self._sent[key] = expired(line)  # no line the jar exports: news again
        self._watch.changed = True

    def resend(self) -> None:
        """The next call gives again every cookie sent so far (one the jar no longer
        holds, as a line that deletes it): the board lost them (a Redis restarted from
        files older than they), and a page read again that sets the same ones is no news."""
        self.again(list(self._published.values()))

    def _fits(self, key: str, line: str) -> bool:
        """Whether ``line`` for ``key`` may go (within the caps), counted if so."""
        grown = self._bytes + len(line) - len(self._published.get(key, ""))
        if (key not in self._published and len(self._published) >= MAX_COOKIES) or (
                grown > MAX_COOKIE_BYTES):
            if not self._warned:
                self._warned = True
                log.warning("the crawl's pages set more cookies than the %d (%d KiB) sent "
                            "on to the workers: the others are left out of image requests",
                            MAX_COOKIES, MAX_COOKIE_BYTES // 1024)
            return False
        self._bytes, self._published[key] = grown, line
        return True

    @staticmethod
    def _by_key(lines: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for line in lines:
            key = cookie_key(line)
            if key is not None:
                found[key] = line
        return found
