"""One page visit, step by step: robots.txt, the fetch, the parse, the images it shows.

It reports facts (:class:`Visit`); what they mean for the crawl (the frontier,
the board, the journal) is decided by the crawl loop in ``master.master``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from crawler.config import CrawlSettings
from crawler.errors import BrokerError, ParserCrashed
from crawler.fetch.easy import EasyClient
from crawler.fetch.robots import origin_of
from crawler.master.leftout import LeftOut
from crawler.master.linkedpages import ANCHOR
from crawler.master.pages import Page, fetch_page, redirect_held, redirect_refused
from crawler.master.robots import Robots
from crawler.master.scope import Scope
from crawler.master.stylesheets import Stylesheets
from crawler.model.urls import host_key_of_normalized
from crawler.parse.extract import Extraction, ImageRef
from crawler.parse.pool import PageParser

if TYPE_CHECKING:
    from crawler.master.hungpages import HungPages

log = logging.getLogger(__name__)


class Visit(NamedTuple):
    """What a page's visit hands back to the crawl loop."""

    url: str
    depth: int
    page: Page
    extraction: Extraction | None
    images: list[tuple[str, str | None, dict[str, Any] | None]]  # (url, refusal or None, ref)
    started: float  # when the page request was made (time.monotonic())
    # The broker's error the visit met (telling the board a Crawl-delay): the crawl's, not
    # the page's, which the crawl loop gives back to the crawl.
    broker_error: BrokerError | None = None


class PageVisitor:
    """The steps of a page visit, for the page loop (``master.pageloop``) and its helper
    threads, or taken in turn by :meth:`visit`; thread-safe."""

    def __init__(self, crawl: CrawlSettings, *, client: EasyClient, robots: Robots,
                 scope: Scope, parser: PageParser, stylesheets: Stylesheets,
                 slow_host: Callable[[str, float], None],
                 known: Callable[[str], bool] = lambda url: False,
                 hung: HungPages | None = None, left_out: LeftOut | None = None) -> None:
        self._crawl = crawl
        self._left_out = left_out if left_out is not None else LeftOut()
        self._hung = hung  # hosts whose pages timed out again and again
        # Images queued before (most of a site's icons are on every page): the crawl
        # loop would drop them; judging them again here is most of a page's cost.
        self._known = known
        # The Crawl-delay the board was told this run, by origin: an image queued by an
        # earlier run (resumed) still brings its host's delay, and a robots.txt read
        # again past its age brings its new one.
        self._delay_told: dict[str, float] = {}
        self._client = client
        self._robots = robots
        self._scope = scope
        self._parser = parser
        self._stylesheets = stylesheets
        self._slow_host = slow_host  # an image host's Crawl-delay, for the board
        self._sources = frozenset(crawl.sources)

    def visit(self, url: str, depth: int) -> Visit:
        """Fetch and parse one page, waiting for each step; never raises."""
        try:
            return self._fetch_and_parse(url, depth)
        except Exception as exc:  # noqa: BLE001 - failed() logs it; the page fails alone
            return self.failed(url, depth, exc)

    def failed(self, url: str, depth: int, exc: Exception) -> Visit:
        """The visit of a page a bug stopped: logged, and failed alone. One the broker
        stopped (a write refused, the broker out of reach) carries its error instead."""
        if isinstance(exc, BrokerError):
            return Visit(url, depth, Page(url, url, 0, skipped=str(exc)), None, [],
                         time.monotonic(), broker_error=exc)
        log.error("page %s failed unexpectedly", url, exc_info=exc)
        reason = f"crawler error: {exc.__class__.__name__}"
        return Visit(url, depth, Page(url, url, 0, skipped=reason), None, [], time.monotonic())

    def _fetch_and_parse(self, url: str, depth: int) -> Visit:
        """Fetch and parse one page; decide robots for its images."""
        refused = self.refused(url, depth)
        if refused is not None:
            return refused
        started = time.monotonic()
        page = fetch_page(self._client, url, timeout=self._crawl.page_timeout,
                          max_bytes=self._crawl.max_page_bytes, hop_refusal=self.hop_refusal)
        if not page.ok:
            image = self.linked_image(depth, page)
            if image is None:
                return self.unread(url, depth, page, started)
            extraction = image
            page = page._replace(skipped="")
        else:
            self.say_if_truncated(page)
            try:
                extraction = self._parser.extract(page.body, page.final_url,
                                                  **self.parse_options(page))
            except ParserCrashed as exc:
                return self.unread(url, depth, page._replace(skipped=str(exc)), started)
        visit = self.judge(url, depth, page, extraction, started)
        assert visit is not None
        return visit

    # --- the steps of a visit, for the page loop as well (master.pageloop) -------------

    def robots_ready(self, url: str) -> bool:
        """Whether robots.txt rules for ``url`` are known: asking costs no wait."""
        return self._robots.ready_for_page(url)

    def crawl_delay(self, url: str) -> float | None:
        """The Crawl-delay of ``url``'s origin (0 for none), or None while its robots.txt
        is not read."""
        if not self._robots.is_read(url):
            return None
        return self._robots.known_delay(url) or 0.0

    def refused(self, url: str, depth: int) -> Visit | None:
        """The visit of a page robots.txt refuses (it may be read first), or None."""
        refused, held = self._robots.verdict(url, page=True)
        if not refused:
            return None
        # Held for want of its robots.txt: not final, a rerun tries again.
        return Visit(url, depth, Page(url, url, 0, skipped=refused, transient=held,
                                      held=url if held else ""), None, [], time.monotonic())

    def host_given_up(self, url: str, depth: int) -> Visit | None:
        """The visit of a page set aside unread, its host given up for its timeouts in a
        row (``master.hungpages``), or None. Asked as its request would start: a page
        handed to the loop before its host was given up is not sent either."""
        why = self._hung.unread(url) if self._hung is not None else None
        if why is None:
            return None
        return Visit(url, depth, Page(url, url, 0, skipped=why, transient=True), None, [],
                     time.monotonic())

    def hop_refusal(self, url: str, current: str, status: int, target: str) -> Page | None:
        """The Page of a redirect of ``url`` from ``current`` to ``target`` that may not be
        followed, or None when it may (robots.txt may be read first)."""
        if not self._scope.allows_page(target):
            return redirect_refused(url, current, status, target,
                                    self._scope.page_refusal(target))
        refused, held = self._robots.verdict(target, redirected=True, page=True)
        if refused is None:
            return None
        if held:
            return redirect_held(url, current, status, target, refused)
        return redirect_refused(url, current, status, target, refused)

    def parse_options(self, page: Page) -> dict[str, Any]:
        return {"sources": self._sources,
                "lazy_attributes": self._crawl.lazy_attributes,  # added to the defaults
                "encoding": page.encoding, "refresh": page.refresh, "xml": page.xml}

    def say_if_truncated(self, page: Page) -> None:
        """A page cut at crawl.max_page_bytes: warned of now, and counted for the summary."""
        if page.truncated:
            self._left_out.page_cut()
            log.warning("page %s is longer than crawl.max_page_bytes (%d bytes): read up to "
                        "there, what follows is left out", page.url, self._crawl.max_page_bytes)

    def linked_image(self, depth: int, page: Page) -> Extraction | None:
        """A link that led to an image, not to a page (an address such as
        ``/photo?id=3`` or ``/latest`` says nothing of what it is): the image, as a page
        that showed it alone would list it, when links count as images (the ``anchor``
        source); None for a page not read for any other reason. A seed must be a page."""
        if not page.image or depth == 0 or "anchor" not in self._sources:
            return None
        image = page.final_url  # where it is: the workers need not follow its redirects
        return Extraction(base_url=image, links=(), images=(image,),
                          image_refs=(ImageRef(image, ANCHOR),))

    def unread(self, url: str, depth: int, page: Page, started: float) -> Visit:
        """The visit of a page that was not read or not parsed (``page.skipped`` says why)."""
        return Visit(url, depth, page, None, [], started)

    def judge(self, url: str, depth: int, page: Page, extraction: Extraction, started: float,
              *, may_wait: bool = True) -> Visit | None:
        """The visit of a parsed page: the images it shows that are new, each with its
        robots.txt verdict. A style sheet or a robots.txt not read yet is read first,
        unless ``may_wait`` is False: then None says that this would wait."""
        sheets = extraction.stylesheets
        if sheets and not may_wait and not self._stylesheets.ready(sheets):
            return None
        refs = {ref.url: ref for ref in extraction.image_refs}
        css = (dict.fromkeys(self._stylesheets.images(sheets, extraction.encoding))
               if sheets else {})  # what a browser shows of them is the page's
        known, allows = self._known, self._scope.allows_image
        # (image, not queued before): those queued before still bring their hosts' delays
        # (a resumed crawl's board starts without them); new ones must be in scope.
        kept: list[tuple[str, bool]] = []
        for image in dict.fromkeys((*extraction.images, *refs, *css)):
            fresh = not known(image)
            if not fresh or allows(image):
                kept.append((image, fresh))
            else:
                self._left_out.image(image)  # (--accept, --reject: said in the summary)
        if not may_wait and not self._robots_ready_for(image for image, _ in kept):
            return None
        robots = self._robots
        if may_wait:  # (else all are read) those not read yet, all at once
            robots.read_all(image for image, _ in kept)
        images: list[tuple[str, str | None, dict[str, Any] | None]] = []
        told = "\0"  # "ORIGIN/" of the last image whose host's delay is told: most share it
        for image, fresh in kept:
            if not image.startswith(told):
                told = self._tell_delay(image)
            if fresh:
                ref = refs.get(image)
                images.append((image, robots.refusal(image), _said(ref) if ref is not None
                               else {"kind": "css"} if image in css else None))
        return Visit(url, depth, page, extraction, images, started)

    def _robots_ready_for(self, images: Iterable[str]) -> bool:
        """Whether judging ``images`` waits for nothing: the robots.txt of every image's
        origin is read, and no Crawl-delay is still to be told to the board (on a
        broker, a round trip)."""
        ready = "\0"  # "ORIGIN/" of the last image found ready: most share it
        for image in images:
            if image.startswith(ready):
                continue
            if not self._robots.is_read(image):
                return False
            if self._delay_told.get(origin_of(image), 0.0) != self._crawl_delay(image):
                return False
            ready = origin_of(image) + "/"
        return True

    def _tell_delay(self, image: str) -> str:
        """Tell the board the Crawl-delay of ``image``'s host, once its robots.txt is read
        and again when it is read anew with another; return ``ORIGIN/`` when that is done
        (images that start with it need nothing more), else a string no URL starts with."""
        origin = origin_of(image)
        delay = self._crawl_delay(image)
        if not self._robots.is_read(image):  # a stand-in while another thread reads it
            return "\0"
        if self._delay_told.get(origin, 0.0) != delay:
            self._slow_host(host_key_of_normalized(image), delay)
            self._delay_told[origin] = delay
        return origin + "/"

    def _crawl_delay(self, url: str) -> float:
        """The Crawl-delay of ``url``'s origin, 0 for none (its robots.txt may be read)."""
        return self._robots.crawl_delay(url) or 0.0


def _said(ref: ImageRef) -> dict[str, Any]:
    """What the page said about an image, as the manifest's ``ref``: only what it said."""
    said: dict[str, Any] = {"kind": ref.kind}
    for name in ("alt", "title", "caption", "width", "height"):
        value = getattr(ref, name)
        if value is not None:
            said[name] = value
    return said
