"""Style sheets the crawled pages link: each read once, its images (and @imports) taken.

A browser shows the images a page's linked style sheets name (backgrounds,
icons), so the crawler reads them too: each style sheet of the crawled site
(the scope's mode) once per crawl, cached by URL, following ``@import`` a few
levels deep. Fonts are left out (``crawler.parse.css``). robots.txt applies
as to pages. A sheet that fails for a passing reason (a 5xx or 429, a
timeout, a connection cut) is read again after a backoff, as a page is, within
about one page deadline; a 429 or 503 slows its host down, as a page's does.
One that cannot be read costs only its own images, with a warning. A page
waits about two deadlines at most for its sheets, however many it links or they
import: those not begun within one are left out of that page, with a warning,
and read when another page links them. A sheet the crawl
may not read (another site's, a font service's) is settled as soon as that is
known, so that the pages linking it are judged without waiting, like the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from crawler.fetch.easy import EasyClient, Reply
from crawler.fetch.policy import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    Retries,
    server_pause,
    transient_status,
)
from crawler.master.once import NotYet, Once
from crawler.model.outcome import BUSY_STATUSES, status_reason
from crawler.model.urls import host_key
from crawler.parse.css import decode_stylesheet, stylesheet_urls
from crawler.parse.encodings import charset_param

if TYPE_CHECKING:
    from crawler.master.robots import Robots
    from crawler.model.pacing import Paces

log = logging.getLogger(__name__)

READ_AT_ONCE = 8  # sheets read at once, when the client has no bound
MAX_IMPORT_DEPTH = 4  # @import chains followed this far from a page's <link>
ACCEPT_CSS = "text/css,*/*;q=0.1"
MAX_REMEMBERED = 4096  # sets of sheets whose images are kept, not read again
# Images those kept sets name, all together: a site's sets name a few dozen each, and
# pages that each linked one sheet of 300,000 images beside one of their own had the
# master keep 2 MB per page, 8 GB for the sets kept.
MAX_REMEMBERED_IMAGES = 1_000_000
# Sheets one page links and imports, all levels together, that are looked at: a page
# needs a few dozen at most, and a sheet of 200,000 @imports cost each page that linked
# it 9 s and 500 MB.
MAX_SHEETS_PER_PAGE = 512
# Image URLs the sheets name that are kept to be shared (see Stylesheets._names): the
# table is emptied once past it (before a sheet adds its own), so that it stays a few
# tens of megabytes.
MAX_SHARED_NAMES = 500_000
Refs = tuple[tuple[str, ...], tuple[str, ...]]  # a sheet's (images, imports)
# Whether a sheet may be read: True; False, not in this crawl; None, not yet (ask again).
# Asked with whether the sheet is a redirect's target (its robots.txt read without the
# user's login headers, as its request is).
MayRead = Callable[[str, bool], "bool | None"]


class BusyAnswer(NamedTuple):
    """A sheet's request answered 429 or 503: its host asks for fewer requests."""

    url: str  # the URL that answered (a redirect's target)
    status: int
    retry_after: float | None  # the seconds its Retry-After asked for, if any


def reading_rule(in_scope: Callable[[str], bool], robots: Robots) -> MayRead:
    """The crawl's rule for reading a sheet: in scope, and allowed by robots.txt.

    A refusal by the scope, or by a robots.txt that was read, holds for the whole
    crawl. One by a stand-in (the robots.txt still being read by another thread
    past the deadline) holds for now: the sheet is asked about again.
    """
    def may_read(url: str, redirected: bool) -> bool | None:
        if not in_scope(url):
            return False
        if robots.allowed(url, redirected=redirected):
            return True
        if not robots.is_read(url):
            return None
        # Asked again: the refusal may have been the stand-in's, and the rules read
        # meanwhile; now they are the ones kept for the crawl.
        return robots.allowed(url, redirected=redirected)
    return may_read


class Stylesheets:
    """The images of style sheets, each sheet fetched once however many pages link it."""

    def __init__(self, client: EasyClient, *, may_read: MayRead,
                 timeout: float, max_bytes: int, retries: Retries | None = None,
                 paces: Paces | None = None,
                 crawl_delay: Callable[[str], float | None] = lambda url: None,
                 on_busy: Callable[[BusyAnswer], None] | None = None) -> None:
        """``paces``: the hosts' paces, which each request of a sheet (a redirect's hop
        too) waits for as a page's does, with the host's Crawl-delay (``crawl_delay``:
        None while its robots.txt is not read); None, sheets go unpaced. ``on_busy``:
        told of each 429 or 503 a sheet was answered with, from the reading thread: the
        host asks for fewer requests, of its pages and images too."""
        self._client = client
        self._may_read = may_read  # scope and robots.txt
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._retries = retries  # None: one try
        self._paces = paces
        self._crawl_delay = crawl_delay
        self._on_busy = on_busy
        self._closed = threading.Event()  # ends a backoff: the crawl is stopping
        # url: (images, imports); read once per crawl, by the first thread to ask
        # (several at once no more than the client lets through: see Robots)
        self._refs: Once[str, Refs] = Once(
            self._fetch, fallback=((), ()), wait=timeout + 1,
            at_once=client.at_once or READ_AT_ONCE)
        # A site's pages link the same few sheets: their images, per set of sheets.
        self._images_of: dict[tuple[str, ...], list[str]] = {}
        self._remembered_images = 0  # the images of the sets kept, all together
        # Each image URL the sheets name, kept once however many sheets name it: sheets
        # are kept for the crawl, and a site of one sheet under many URLs (a query
        # that changes) had the master keep 27 MB per URL of a sheet of 286,000 images.
        self._names: dict[str, str] = {}
        # One sheet's text read at a time: the reading holds the GIL all along, so sheets
        # read side by side took as long, and each held its text and its URLs meanwhile
        # (8 sheets of 10 MB, 65 MB each at the peak: 520 MB).
        self._reading = threading.Lock()
        # The encoding of the first page that linked each sheet, which a sheet that
        # declares none is read in.
        self._referrers: dict[str, str] = {}

    def images(self, sheets: tuple[str, ...], referrer: str | None = None) -> list[str]:
        """The images the style sheets ``sheets`` (and those they import) name, in order.

        ``referrer``: the encoding of the page that links them, which a sheet that
        declares none is read in (the first page to link a sheet reads it)."""
        known = self._images_of.get(sheets)
        if known is not None:
            return known
        found, read, complete = self._read(sheets, referrer)
        # Kept only when every sheet named was settled, and read as the crawl keeps it: a
        # sheet refused for now (while its robots.txt was being read) or answered by a
        # stand-in (its reader stuck past the deadline) is asked about again.
        # Past MAX_REMEMBERED_IMAGES, a set's images are gathered again from its sheets'
        # (which are read once all the same) for each page that links it.
        if (complete and len(self._images_of) < MAX_REMEMBERED
                and self._remembered_images + len(found) <= MAX_REMEMBERED_IMAGES
                and all(self._refs.known(sheet) is refs for sheet, refs in read.items())):
            self._images_of[sheets] = found
            self._remembered_images += len(found)
        return found

    def close(self) -> None:
        self._closed.set()
        self._refs.close()

    def ready(self, sheets: tuple[str, ...]) -> bool:
        """Whether :meth:`images` of ``sheets`` is known: asking costs no wait."""
        return sheets in self._images_of

    def _read(self, sheets: tuple[str, ...], referrer: str | None,
              ) -> tuple[list[str], dict[str, Refs], bool]:
        """The images; what each sheet read gave; whether no sheet was refused for now."""
        found: dict[str, None] = {}
        read: dict[str, Refs] = {}
        complete = True
        level = list(sheets)
        # No sheet is begun past one deadline: hundreds of sheets that hang (linked or
        # imported) held the page a deadline per READ_AT_ONCE of them, and the client's
        # connections, which robots.txt reads share, with it.
        until = time.monotonic() + self._timeout + 1
        late: list[str] = []
        looked_at: set[str] = set()
        left_out = 0
        for _depth in range(MAX_IMPORT_DEPTH + 1):
            following: list[str] = []
            level = [sheet for sheet in dict.fromkeys(level) if sheet not in looked_at]
            room = MAX_SHEETS_PER_PAGE - len(looked_at)
            left_out += max(0, len(level) - room)
            level = level[:room]
            looked_at.update(level)
            verdicts = {sheet: self._may_read(sheet, False) for sheet in level}
            if referrer:  # (an imported sheet too: the page's, where a browser would
                for sheet in verdicts:  # take the importing sheet's, most often the same)
                    self._referrers.setdefault(sheet, referrer)
            allowed = [sheet for sheet, verdict in verdicts.items() if verdict]
            complete = complete and None not in verdicts.values()
            if allowed and time.monotonic() >= until:
                late += allowed
                break
            self._refs.get_all(allowed, within=until - time.monotonic())
            for sheet in allowed:
                # Past the deadline, only what is known: get() would read each sheet not
                # begun in time, one after the other.
                refs = (self._refs.get(sheet) if time.monotonic() < until
                        else self._refs.known(sheet))
                if refs is not None and refs is self._refs.known(sheet):
                    read[sheet] = refs
                    images, imports = refs
                    found.update(dict.fromkeys(images))
                    following += [url for url in imports if url not in read]
                    continue
                complete = False  # not read for this page: asked about by the next
                if time.monotonic() >= until:
                    late.append(sheet)  # not begun in time (or still read elsewhere)
            level = following
            if not level:
                break
        else:
            complete = False  # imports deeper than followed
        if left_out:
            log.warning("%d style sheets past the first %d that a page links and imports "
                        "are left out, and the images they name (page linking %s)", left_out,
                        MAX_SHEETS_PER_PAGE, sheets[0])
        if late:
            log.warning("%d style sheets (%s first) not read within %.0f s: the images "
                        "they name are left out of this page", len(late), late[0],
                        self._timeout + 1)
        return list(found), read, complete and not late

    def _fetch(self, url: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        # Redirected as pages are: each hop in scope and allowed by robots.txt.
        not_yet = False

        def may_follow(target: str) -> bool:
            nonlocal not_yet
            verdict = self._may_read(target, True)
            not_yet = verdict is None
            return bool(verdict)

        started = time.monotonic()
        tries = 1
        while True:
            reply = self._client.follow(url, hops=MAX_REDIRECTS, may_follow=may_follow,
                                        accept=ACCEPT_CSS, max_bytes=self._max_bytes,
                                        timeout=self._timeout,
                                        turn=self._turn if self._paces is not None else None)
            # The seconds its Retry-After asks for (None: none, or no answer).
            asked = (server_pause(reply.status, reply.headers.get("retry-after"))
                     if reply.ok else None)
            if self._on_busy is not None and reply.ok and reply.status in BUSY_STATUSES:
                self._on_busy(BusyAnswer(reply.url, reply.status, asked))
            if not _passing(reply) or self._retries is None:
                break
            if tries >= self._retries.max_attempts:
                log.warning("style sheet %s: %s (%d tries): the images it names are left "
                            "out", url, _failure(reply), tries)
                return (), ()
            pause = self._retries.backoff(tries, asked)
            # Within about one deadline, as the pages that wait for it wait for it.
            if time.monotonic() + pause - started > self._timeout:
                log.warning("style sheet %s: %s (asks for %.0f s more): the images it names "
                            "are left out", url, _failure(reply), pause)
                return (), ()
            log.info("style sheet %s: %s; trying again in %.1f s (try %d of %d)", url,
                     _failure(reply), pause, tries + 1, self._retries.max_attempts)
            if self._closed.wait(pause):
                return (), ()
            tries += 1
        if reply.ok and reply.status in REDIRECT_STATUSES and not_yet:
            raise NotYet  # its target's robots.txt is being read: asked about again
        if reply.no_turn:
            # Never sent: other reads held every connection for a whole deadline. Read
            # again after one more, not by the next page at once, each page waiting a
            # deadline in turn behind the same stuck reads (as for robots.txt).
            raise NotYet(retry_in=self._timeout)
        if reply.ok and reply.status in REDIRECT_STATUSES:
            log.info("style sheet %s: redirected from %s to %s, not read (out of scope, "
                     "disallowed by robots.txt, or more than %d redirects)", url, reply.url,
                     reply.headers.get("location", "nowhere"), MAX_REDIRECTS)
            return (), ()
        if not reply.ok or reply.status != 200:
            log.info("style sheet %s: %s", url, _failure(reply))
            return (), ()
        if reply.truncated:
            log.warning("style sheet %s is longer than crawl.max_page_bytes (%d bytes): read "
                        "up to there, the images named after are left out", url,
                        self._max_bytes)
        # Read in the encoding a browser reads it in (the Content-Type's charset is one
        # clue); its relative URLs are relative to where it was read.
        charset = charset_param(reply.headers.get("content-type", ""))
        with self._reading:
            text = decode_stylesheet(reply.body, charset, self._referrers.get(url))
            reply.body = b""  # (the text is what is read: not both held while it is)
            refs = stylesheet_urls(text, reply.url)
            del text
        names = self._names
        if len(names) >= MAX_SHARED_NAMES:
            names.clear()
        return tuple(names.setdefault(url, url) for url in refs.images), refs.imports


    def _turn(self, url: str, deadline: float) -> bool:
        """Wait for the turn of ``url``'s host, up to ``deadline``: True once it is taken.

        A sheet's request is spaced from the host's pages and images as one of theirs
        is (a Crawl-delay, a hold after a 429 or 503): a site's pages each linked a few
        sheets, and those went to it all at once, right after their page."""
        assert self._paces is not None
        pace = self._paces.of(host_key(url))
        delay = self._crawl_delay(url)
        if delay is not None:
            pace.set_crawl_delay(delay)  # (one read again past its age may change it)
        while True:
            now = time.monotonic()
            # As a page's: a page waiting for the host takes the turn before an image.
            if pace.take(now, page=True):
                return True
            if pace.next_time > deadline or self._closed.wait(
                    min(max(0.0, pace.next_time - now), deadline - now)):
                return False


def _passing(reply: Reply) -> bool:
    """Whether the sheet failed for a passing reason: worth another try now (one never
    sent is asked for again later instead)."""
    if reply.no_turn:
        return False
    return (reply.transient if not reply.ok
            else reply.status != 200 and transient_status(reply.status))


def _failure(reply: Reply) -> str:
    return reply.failure or status_reason(reply.status)
