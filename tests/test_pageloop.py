"""The master's page loop: pages in flight together, none waiting for another's slowness.

Real fixture servers on 127.0.0.1 and real parser processes; the loop is
built as the master builds it. What each step decides (robots.txt, scope,
redirects, the images of a page) is the visitor's, tested with the crawl.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from typing import Any

import pytest

from crawler.config import CrawlSettings
from crawler.fetch.easy import EasyClient
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.fetch.policy import RATE_LIMITED_PAUSE
from crawler.master.master import PAGES_IN_HAND
from crawler.master.pageloop import PageLoop, PageLoopEnded
from crawler.master.robots import Robots
from crawler.master.scope import Scope
from crawler.master.stylesheets import Stylesheets, reading_rule
from crawler.master.visit import PageVisitor, Visit
from crawler.parse.pool import PageParser

from .conftest import FixtureHandler, FixtureServer

LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))
PAGE = b'<html><body><img src="/a.png"><a href="/next.html">next</a></body></html>'


def html(body: bytes = PAGE, delay: float = 0.0) -> Callable[[FixtureHandler], None]:
    def route(handler: FixtureHandler) -> None:
        time.sleep(delay)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a page cut off
            handler.send_body(200, body, "text/html")
    return route


def robots_after(delay: float, status: int = 404, body: bytes = b"",
                 ) -> Callable[[FixtureHandler], None]:
    """A robots.txt answered ``delay`` seconds late."""
    def route(handler: FixtureHandler) -> None:
        time.sleep(delay)
        handler.send_body(status, body, "text/plain")
    return route


class Loop:
    """A page loop as the master builds it, for pages of ``seeds``' sites."""

    def __init__(self, seeds: list[str], *,
                 slow_host: Callable[[str, float], None] = lambda host, delay: None,
                 options: RequestOptions | None = None, image_deny: tuple[str, ...] = (),
                 parsers: int = 2, **crawl: object) -> None:
        settings = CrawlSettings()._replace(**crawl)
        options = options or RequestOptions()
        self.client = EasyClient(LOOPBACK, options)
        robots = Robots(self.client, settings.user_agent, settings.page_timeout,
                        settings.respect_robots)
        scope = Scope.from_seeds(seeds, image_deny=image_deny)
        self.parser = PageParser(in_process=not parsers, processes=parsers or None)
        sheets = Stylesheets(self.client, may_read=reading_rule(scope.allows_stylesheet, robots),
                             timeout=settings.page_timeout, max_bytes=settings.max_page_bytes)
        self.visitor = PageVisitor(settings, client=self.client, robots=robots, scope=scope,
                                   parser=self.parser, stylesheets=sheets,
                                   slow_host=slow_host)
        self.pages = PageLoop(self.visitor, parser=self.parser, policy=LOOPBACK,
                              options=options, timeout=settings.page_timeout,
                              max_bytes=settings.max_page_bytes, share=self.client.share,
                              concurrency=PAGES_IN_HAND * settings.page_concurrency,
                              fetches=settings.page_concurrency)

    def close(self) -> None:
        self.pages.close()
        self.parser.close()
        self.client.close()


@pytest.fixture
def make_loop() -> Iterator[Callable[..., Loop]]:
    loops: list[Loop] = []

    def make(seeds: list[str], **options: Any) -> Loop:
        loop = Loop(seeds, **options)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()


def visit_of(future: Future[Visit], timeout: float = 20) -> Visit:
    return future.result(timeout)


def test_a_page_is_fetched_parsed_and_judged(make_server: Callable[[], FixtureServer],
                                             make_loop: Callable[..., Loop]) -> None:
    server = make_server()
    server.routes["/"] = html()
    visit = visit_of(make_loop([server.url + "/"]).pages.submit(server.url + "/", 0))
    assert visit.page.ok and visit.extraction is not None
    assert visit.extraction.links == (server.url + "/next.html",)
    assert [image for image, _, _ in visit.images] == [server.url + "/a.png"]
    assert server.paths() == ["/robots.txt", "/"]


def test_pages_in_flight_do_not_wait_for_a_slow_one(make_server: Callable[[], FixtureServer],
                                                    make_loop: Callable[..., Loop]) -> None:
    server = make_server()
    server.routes["/slow.html"] = html(delay=3.0)
    for n in range(6):
        server.routes[f"/p{n}.html"] = html()
    pages = make_loop([server.url + "/"]).pages
    slow = pages.submit(server.url + "/slow.html", 0)
    fast = [pages.submit(f"{server.url}/p{n}.html", 0) for n in range(6)]
    done, _ = wait(fast, timeout=2.5)
    assert len(done) == 6 and not slow.done(), "the fast pages came while the slow one waited"
    assert all(visit_of(f).extraction is not None for f in fast)
    assert visit_of(slow).extraction is not None


def test_a_slow_robots_txt_holds_no_page_of_another_site(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    slow_site, other = make_server(), make_server()

    slow_site.routes["/robots.txt"] = robots_after(
        2.0, 200, b"User-agent: *\nDisallow: /private/\n")
    slow_site.routes["/"] = other.routes["/"] = html()
    pages = make_loop([slow_site.url + "/", other.url + "/"]).pages
    waiting = pages.submit(slow_site.url + "/", 0)
    quick = pages.submit(other.url + "/", 0)
    assert visit_of(quick, timeout=1.5).extraction is not None
    assert not waiting.done(), "its robots.txt is still being read"
    assert visit_of(waiting).extraction is not None
    refused = visit_of(pages.submit(slow_site.url + "/private/x.html", 0))
    assert refused.extraction is None and "robots.txt" in refused.page.skipped


def test_redirects_are_judged_hop_by_hop(make_server: Callable[[], FixtureServer],
                                        make_loop: Callable[..., Loop]) -> None:
    server, elsewhere = make_server(), make_server()

    def to(location: str) -> Callable[[FixtureHandler], None]:
        def route(handler: FixtureHandler) -> None:
            handler.send_body(301, b"", "text/html", {"Location": location})
        return route

    server.routes["/old"] = to("/new.html")
    server.routes["/new.html"] = html()
    server.routes["/away"] = to(elsewhere.url + "/")
    server.routes["/loop"] = to("/loop")
    pages = make_loop([server.url + "/"]).pages
    moved = visit_of(pages.submit(server.url + "/old", 0))
    assert moved.page.final_url == server.url + "/new.html" and moved.extraction is not None
    away = visit_of(pages.submit(server.url + "/away", 0))
    assert away.extraction is None and away.page.status == 301
    # Which rule refused it, and what would let it in (same address, another port).
    assert away.page.skipped == (f"redirected to {elsewhere.url}/: another host than the "
                                 "seeds' (crawl with --scope domain, or give it as a seed)")
    looping = visit_of(pages.submit(server.url + "/loop", 0))
    assert looping.page.skipped.startswith("more than") and "redirects" in looping.page.skipped
    assert elsewhere.paths() == []


@pytest.mark.parametrize("location", ["", "   "])
def test_a_redirect_with_an_empty_location_is_its_own_answer(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        location: str) -> None:
    """As libcurl, an empty Location is none: followed, it led back to the same page ten
    times over. Its reason says what was wrong, as an image's does ("HTTP 301" alone
    did not)."""
    server = make_server()
    server.routes["/empty"] = lambda h: h.send_body(301, b"", "text/html",
                                                    {"Location": location})
    visit = visit_of(make_loop([server.url + "/"]).pages.submit(server.url + "/empty", 0))
    assert (visit.page.status, visit.page.skipped) == (
        301, "HTTP 301: a redirect without a Location (nowhere to go)")
    assert server.paths().count("/empty") == 1


def test_a_location_with_raw_utf8_leads_to_the_page_it_names(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    server = make_server()
    server.routes["/caf%C3%A9/"] = html()
    server.routes["/old"] = lambda h: h.send_body(
        301, b"", "text/html", {"Location": "/caf\u00e9/".encode().decode("latin-1")})
    moved = visit_of(make_loop([server.url + "/"]).pages.submit(server.url + "/old", 0))
    assert moved.page.final_url == server.url + "/caf%C3%A9/", moved.page.skipped
    assert moved.extraction is not None


@pytest.mark.parametrize("location", ["\\\\{host}\\new.html", "/\\{host}/new.html",
                                      "  /new.html  "])
def test_a_location_is_resolved_as_browsers_resolve_it(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        location: str) -> None:
    """By the URL standard: a backslash is a slash in an http(s) URL, and "\\\\host"
    names a host (Python's urljoin made paths of them, and the crawler went to 404s)."""
    server = make_server()
    server.routes["/new.html"] = html()
    host = server.url.removeprefix("http://")
    server.routes["/old"] = lambda h: h.send_body(
        301, b"", "text/html", {"Location": location.format(host=host)})
    moved = visit_of(make_loop([server.url + "/"]).pages.submit(server.url + "/old", 0))
    assert moved.page.final_url == server.url + "/new.html", moved.page.skipped
    assert moved.extraction is not None


class Counting:
    """Routes that count the requests being answered at once (the most seen in ``peak``)."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self._lock = threading.Lock()

    def route(self, delay: float) -> Callable[[FixtureHandler], None]:
        def answer(handler: FixtureHandler) -> None:
            with self._lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(delay)
            with self._lock:  # before the answer: the next request can only come after it
                self.now -= 1
            html()(handler)
        return answer


def test_no_more_pages_are_requested_at_once_than_page_concurrency(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """Pages in hand beyond page_concurrency wait for a request slot, and their deadline
    runs from their own first request, not from their wait."""
    server, counting = make_server(), Counting()
    for n in range(6):
        server.routes[f"/p{n}.html"] = counting.route(delay=0.4)
    pages = make_loop([server.url + "/"], page_concurrency=2, page_timeout=1.0).pages
    futures = [pages.submit(f"{server.url}/p{n}.html", n) for n in range(6)]
    visits = [visit_of(f) for f in futures]
    assert counting.peak == 2
    # The last two waited about 0.8 s for a slot: with their 1 s deadline counted from
    # their submission they would have been cut.
    assert all(v.extraction is not None for v in visits), [v.page.skipped for v in visits]


def test_a_hosts_pages_go_over_connections_kept_alive(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """A connection per page would pay a handshake per page (over TLS, a dear one): 12
    pages of one host, 2 at a time, take two connections and robots.txt's at most."""
    server = make_server()
    accepted = itertools.count()
    inner = server.process_request

    def counting(request: Any, address: Any) -> None:
        next(accepted)
        inner(request, address)

    server.process_request = counting  # type: ignore[method-assign]
    for n in range(12):
        server.routes[f"/p{n}.html"] = html()
    pages = make_loop([server.url + "/"], page_concurrency=2).pages
    futures = [pages.submit(f"{server.url}/p{n}.html", 1) for n in range(12)]
    assert all(visit_of(f).extraction is not None for f in futures)
    assert next(accepted) <= 3


def test_a_page_being_redirected_keeps_its_slot_while_its_next_hosts_robots_txt_is_read(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """Its deadline runs: it must not wait behind pages that have not started."""
    server, other = make_server(), make_server()

    other.routes["/robots.txt"] = robots_after(0.5)
    other.routes["/new.html"] = html()
    server.routes["/old.html"] = lambda handler: handler.send_body(
        301, b"", "text/html", {"Location": other.url + "/new.html"})
    for name in ("/a.html", "/b.html", "/c.html"):
        server.routes[name] = html()
    pages = make_loop([server.url + "/", other.url + "/"], page_concurrency=1).pages
    # Its robots.txt read first: pages whose robots.txt is known wait in their order.
    assert visit_of(pages.submit(server.url + "/a.html", 0)).extraction is not None
    futures = [pages.submit(server.url + path, 0) for path in ("/old.html", "/b.html", "/c.html")]
    assert all(visit_of(f).extraction is not None for f in futures)
    moved = next(hit.at for hit in other.hits if hit.path == "/new.html")
    assert all(hit.at > moved for hit in server.hits if hit.path in ("/b.html", "/c.html"))


def test_a_hosts_crawl_delay_spaces_the_first_requests_of_pages_handed_out_together(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """Pages handed out before their robots.txt was read (or that waited here) would
    otherwise go back to back once it is."""
    server = make_server()
    server.routes["/robots.txt"] = lambda handler: handler.send_body(
        200, b"User-agent: *\nCrawl-delay: 0.3\n", "text/plain")
    for n in range(3):
        server.routes[f"/p{n}.html"] = html()
    pages = make_loop([server.url + "/"]).pages
    futures = [pages.submit(f"{server.url}/p{n}.html", 0) for n in range(3)]
    assert all(visit_of(f).extraction is not None for f in futures)
    times = [hit.at for hit in server.hits if hit.path.startswith("/p")]
    assert len(times) == 3
    assert all(later - earlier >= 0.28 for earlier, later in itertools.pairwise(times)), times


def test_a_429_without_retry_after_asks_its_host_for_the_rate_limit_pause(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    server = make_server()
    server.routes["/limited.html"] = lambda h: h.send_body(429, b"", "text/plain")
    server.routes["/told.html"] = lambda h: h.send_body(429, b"", "text/plain",
                                                        {"Retry-After": "3"})
    server.routes["/busy.html"] = lambda h: h.send_body(503, b"", "text/plain")
    pages = make_loop([server.url + "/"]).pages
    asked = {name: visit_of(pages.submit(f"{server.url}/{name}.html", 0)).page
             for name in ("limited", "told", "busy")}
    assert all(page.transient for page in asked.values())
    assert {name: page.retry_after for name, page in asked.items()} == {
        "limited": RATE_LIMITED_PAUSE, "told": 3.0, "busy": None}


def test_a_hold_keeps_the_pages_in_hand_from_their_host_until_it_ends(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """A 429 or 503 holds the host back: pages handed out before wait for it too."""
    server = make_server()
    for name in ("/a.html", "/b.html"):
        server.routes[name] = html()
    pages = make_loop([server.url + "/"]).pages
    assert visit_of(pages.submit(server.url + "/a.html", 0)).extraction is not None
    held_at = time.monotonic()
    pages.hold(server.url.split("://", 1)[1], held_at + 0.6)
    assert visit_of(pages.submit(server.url + "/b.html", 0)).extraction is not None
    [asked] = [hit.at for hit in server.hits if hit.path == "/b.html"]
    assert asked - held_at >= 0.55


def test_a_stop_cancels_the_pages_not_started_and_lets_those_in_flight_end(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    server = make_server()
    for n in range(4):
        server.routes[f"/p{n}.html"] = html(delay=0.5)
    pages = make_loop([server.url + "/"], page_concurrency=1).pages
    futures = [pages.submit(f"{server.url}/p{n}.html", 0) for n in range(4)]
    deadline = time.monotonic() + 5
    while not any(hit.path.startswith("/p") for hit in server.hits):
        assert time.monotonic() < deadline, "no page was requested"
        time.sleep(0.01)
    pages.stop_starting()
    done, _ = wait(futures, timeout=5)
    assert len(done) == 4
    assert [f.cancelled() for f in futures].count(False) == 1
    [finished] = [f for f in futures if not f.cancelled()]
    assert finished.result().extraction is not None
    assert len([hit for hit in server.hits if hit.path.startswith("/p")]) == 1


def test_a_parsed_page_keeps_no_body_while_it_is_judged(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """The bodies the page loop counts are those waiting for or in a parser; a page being
    judged (say, waiting on a helper thread for a style sheet) holds none."""
    server = make_server()
    server.routes["/"] = html()
    visit = visit_of(make_loop([server.url + "/"]).pages.submit(server.url + "/", 0))
    assert visit.extraction is not None and visit.page.ok and visit.page.body == b""


def test_no_page_is_requested_while_the_pages_waiting_for_a_parser_hold_enough(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """The bodies read and not yet parsed stay under page_concurrency * max_page_bytes
    (and what the requests in flight bring): a slow parser stops the fetching."""
    server = make_server()
    body = b"<html><body><p>" + b"x" * 580 + b"</p></body></html>"  # 600 bytes
    for n in range(6):
        server.routes[f"/p{n}.html"] = html(body)
    loop = make_loop([server.url + "/"], page_concurrency=1, max_page_bytes=1000, parsers=1)
    [parser] = loop.parser.pids
    os.kill(parser, signal.SIGSTOP)  # a parser that does not answer, for now
    try:
        futures = [loop.pages.submit(f"{server.url}/p{n}.html", 0) for n in range(6)]
        time.sleep(1.0)
        # The first page read went to the parser, the second waits for it: 1,200 bytes
        # held, at least 1,000.
        assert len([p for p in server.paths() if p != "/robots.txt"]) == 2
    finally:
        os.kill(parser, signal.SIGCONT)
    assert all(visit_of(f).extraction is not None for f in futures)
    assert len(server.paths()) == 7


def test_a_page_past_its_deadline_is_cut_and_may_be_tried_again(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    server = make_server()
    server.routes["/stuck.html"] = html(delay=5.0)
    pages = make_loop([server.url + "/"], page_timeout=1.0).pages
    started = time.monotonic()
    visit = visit_of(pages.submit(server.url + "/stuck.html", 0))
    assert time.monotonic() - started < 4
    assert visit.page.skipped == "page too slow (over 1 s)" and visit.page.transient


def test_a_page_too_slow_to_parse_fails_for_good_and_the_others_are_read(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from crawler.parse import pool

    monkeypatch.setattr(pool, "PARSE_CPU_LIMIT", 0.2)  # the parsers are forked with it
    server = make_server()
    # (Many seconds of CPU: far past the deadline whatever else the machine does.)
    server.routes["/slow.html"] = html(b"<body>" + b"".join(
        b'<img src="/%d.png">' % n for n in range(500_000)))
    server.routes["/good.html"] = html()
    loop = make_loop([server.url + "/"], parsers=1)
    slow = visit_of(loop.pages.submit(server.url + "/slow.html", 0), timeout=60)
    good = visit_of(loop.pages.submit(server.url + "/good.html", 0))
    assert slow.extraction is None and not slow.page.transient
    assert slow.page.skipped == "page too slow to parse (over 0.2 s of CPU)"
    assert good.extraction is not None


def test_a_page_answered_203_is_read_as_browsers_read_it(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """203: a 200 that a proxy on the way changed; its body is the page."""
    server = make_server()
    server.routes["/proxied.html"] = lambda h: h.send_body(203, PAGE, "text/html")
    visit = visit_of(make_loop([server.url + "/"]).pages.submit(server.url + "/proxied.html",
                                                                0))
    assert visit.extraction is not None and visit.page.status == 203, visit.page.skipped


@pytest.mark.parametrize("media_type", ["application/xml", "text/xml"])
def test_an_xhtml_page_served_as_xml_is_read_as_browsers_read_it(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        media_type: str) -> None:
    """Browsers show XML whose root is XHTML's <html> as a page, its images with it; it
    was skipped as "not HTML". Other XML (a feed, a sitemap) is still no page."""
    server = make_server()
    xhtml = (b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>\n<!-- made by hand -->\n'
             b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
             b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
             b'<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en"><body>'
             b'<img src="/x.png" alt="x"/><a href="/next.html">n</a></body></html>')
    feed = (b'<?xml version="1.0"?><rss version="2.0"><channel><link>/a.html</link>'
            b'<image><url>/feed.png</url></image></channel></rss>')
    server.routes["/page.xml"] = lambda h: h.send_body(200, xhtml, media_type)
    server.routes["/feed.xml"] = lambda h: h.send_body(200, feed, media_type)
    loop = make_loop([server.url + "/"])
    page = visit_of(loop.pages.submit(server.url + "/page.xml", 0))
    assert page.extraction is not None, page.page.skipped
    assert [image for image, _, _ in page.images] == [server.url + "/x.png"]
    assert page.extraction.links == (server.url + "/next.html",)
    other = visit_of(loop.pages.submit(server.url + "/feed.xml", 0))
    assert other.extraction is None and other.page.skipped == f"not HTML ({media_type})"


@pytest.mark.parametrize(("media_type", "as_xml"), [
    ("application/xhtml+xml; charset=utf-8", True), ("application/xml", True),
    ("text/html", False)])
def test_prefixed_elements_count_where_browsers_read_the_page_as_xml(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        media_type: str, as_xml: bool) -> None:
    """XHTML read as XML (its media type says so) makes <h:img>, h bound to XHTML's
    namespace, an <img>; read as HTML it is an unknown element that shows nothing."""
    server = make_server()
    xhtml = (b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml" '
             b'xmlns:h="http://www.w3.org/1999/xhtml"><body><img src="/plain.png"/>'
             b'<h:img src="/prefixed.png"/></body></html>')
    server.routes["/page.xhtml"] = lambda h: h.send_body(200, xhtml, media_type)
    loop = make_loop([server.url + "/"])
    visit = visit_of(loop.pages.submit(server.url + "/page.xhtml", 0))
    assert visit.extraction is not None, visit.page.skipped
    assert visit.page.xml == as_xml
    assert [image for image, _, _ in visit.images] == (
        [server.url + "/plain.png"] + [server.url + "/prefixed.png"] * as_xml)


def test_a_link_answered_with_an_image_is_that_image_and_a_seed_is_not(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """A link followed as a page whose answer is an image is the image, where its
    redirects led, in the loop and in a visit taken step by step; a seed stays a page
    that is not HTML."""
    server = make_server()
    server.routes["/latest"] = lambda h: h.send_body(302, b"", "text/html",
                                                     {"Location": "/pics/2026"})
    server.routes["/pics/2026"] = lambda h: h.send_body(200, b"\x89PNG\r\n\x1a\n",
                                                        "image/png")
    loop = make_loop([server.url + "/"])
    image = server.url + "/pics/2026"
    for visit in (visit_of(loop.pages.submit(server.url + "/latest", 1)),
                  loop.visitor.visit(server.url + "/latest", 1)):
        assert visit.extraction is not None and visit.page.ok, visit.page.skipped
        assert visit.page.final_url == image and not visit.page.body
        assert visit.images == [(image, None, {"kind": "anchor"})]
    seed = visit_of(loop.pages.submit(server.url + "/latest", 0))
    assert seed.extraction is None and seed.page.skipped == "not HTML (image/png)"


def test_a_pages_refresh_header_is_a_link_as_a_meta_refresh_is(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """Browsers follow an HTTP Refresh header as they follow <meta http-equiv=refresh>;
    sites send their front page on with either."""
    server = make_server()
    server.routes["/"] = lambda h: h.send_body(200, b"<p>moved</p>", "text/html",
                                               {"Refresh": "0; url=/home.html"})
    visit = visit_of(make_loop([server.url + "/"]).pages.submit(server.url + "/", 0))
    assert visit.extraction is not None
    assert visit.extraction.links == (server.url + "/home.html",)


def test_a_bug_in_one_page_fails_that_page_alone(make_server: Callable[[], FixtureServer],
                                                 make_loop: Callable[..., Loop],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()
    server.routes["/bad.html"] = server.routes["/good.html"] = html()
    loop = make_loop([server.url + "/"])
    judge = loop.visitor.judge

    def buggy(url: str, *args: object, **kwargs: object) -> Visit | None:
        if url.endswith("/bad.html"):
            raise RuntimeError("a bug")
        return judge(url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop.visitor, "judge", buggy)
    bad = visit_of(loop.pages.submit(server.url + "/bad.html", 0))
    good = visit_of(loop.pages.submit(server.url + "/good.html", 0))
    assert bad.extraction is None and bad.page.skipped == "crawler error: RuntimeError"
    assert good.extraction is not None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_bug_that_stops_the_loop_ends_its_pages_in_flight(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug outside a page's steps stops the loop: its pages were cancelled without a
    word to concurrent.futures.wait(), which the crawl waits on, and the crawl waited
    for them for ever (a master hung ten minutes, its log saying the loop had failed)."""
    server = make_server()
    server.routes["/slow.html"] = html(delay=1.0)
    loop = make_loop([server.url + "/"])
    future = loop.pages.submit(server.url + "/slow.html", 0)
    time.sleep(0.3)  # its request is on its way

    def bug() -> None:
        raise RuntimeError("a bug in the loop itself")

    monkeypatch.setattr(loop.pages, "_take_fetched", bug)
    done, _ = wait([future], timeout=10)
    assert done == {future} and future.cancelled()
    with pytest.raises(PageLoopEnded):
        loop.pages.submit(server.url + "/slow.html", 0)


def test_close_cancels_the_pages_in_flight(make_server: Callable[[], FixtureServer],
                                           make_loop: Callable[..., Loop]) -> None:
    server = make_server()
    server.routes["/slow.html"] = html(delay=3.0)
    loop = make_loop([server.url + "/"])
    future = loop.pages.submit(server.url + "/slow.html", 0)
    time.sleep(0.5)
    loop.pages.close()
    assert future.cancelled()
    with pytest.raises(PageLoopEnded):
        loop.pages.submit(server.url + "/slow.html", 0)


def test_pages_of_many_new_sites_read_their_robots_txt_at_once(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """Each page in flight may wait on a robots.txt of its own: none waits behind another's
    (a redirect's deadline would run out in such a queue)."""
    sites = [make_server() for _ in range(6)]
    for site in sites:
        site.routes["/robots.txt"] = robots_after(1.5)
        site.routes["/"] = html()
    pages = make_loop([site.url + "/" for site in sites]).pages
    futures = [pages.submit(site.url + "/", 0) for site in sites]
    done, _ = wait(futures, timeout=2.8)  # six helpers at once: 1.5 s; four: 3 s
    assert len(done) == 6
    assert all(visit_of(future).extraction is not None for future in futures)


def test_a_cookie_a_page_sets_goes_with_its_style_sheet(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    server = make_server()

    def page(handler: FixtureHandler) -> None:
        handler.send_body(200, b'<link rel="stylesheet" href="/site.css"><p>hi</p>',
                          "text/html", {"Set-Cookie": "sid=abc; Path=/"})

    def sheet(handler: FixtureHandler) -> None:
        if "sid=abc" not in (handler.headers.get("Cookie") or ""):
            handler.send_body(403, b"no session", "text/plain")
            return
        handler.send_body(200, b"body { background: url(/bg.png) }", "text/css")

    server.routes["/"], server.routes["/site.css"] = page, sheet
    visit = visit_of(make_loop([server.url + "/"]).pages.submit(server.url + "/", 0))
    assert [image for image, _, _ in visit.images] == [server.url + "/bg.png"]


def test_telling_the_board_a_crawl_delay_holds_no_other_page(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """On a broker, telling the board a host's Crawl-delay is a round trip: it is made
    off the loop, once per origin, and pages of other sites go on meanwhile."""
    slow_site, other = make_server(), make_server()
    slow_site.routes["/robots.txt"] = html(b"User-agent: *\nCrawl-delay: 1\n")
    slow_site.routes["/"] = other.routes["/"] = html()
    told: list[tuple[str, float]] = []

    def slow_board(host: str, delay: float) -> None:
        time.sleep(2.0)
        told.append((host, delay))

    pages = make_loop([slow_site.url + "/", other.url + "/"], slow_host=slow_board).pages
    waiting = pages.submit(slow_site.url + "/", 0)
    time.sleep(0.3)  # its robots.txt read: it is telling the board
    quick = pages.submit(other.url + "/", 0)
    assert visit_of(quick, timeout=1.5).extraction is not None
    assert not waiting.done()
    assert visit_of(waiting).extraction is not None
    assert told == [(slow_site.url.partition("://")[2], 1.0)]


def test_the_crawls_cookies_do_not_come_back_over_one_a_server_set(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """One jar for pages, robots.txt and style sheets, the crawl's cookies put in it
    once: the first style sheet read (robots.txt ignored) comes after the page that set
    a newer value, and must carry that value."""
    server = make_server()
    seen: list[str] = []

    def page(handler: FixtureHandler) -> None:
        handler.send_body(200, b'<link rel="stylesheet" href="/site.css">', "text/html",
                          {"Set-Cookie": "sid=fresh; Path=/"})

    def sheet(handler: FixtureHandler) -> None:
        seen.append(handler.headers.get("Cookie") or "")
        handler.send_body(200, b"p { background: url(/bg.png) }", "text/css")

    server.routes["/"], server.routes["/site.css"] = page, sheet
    cookies = "127.0.0.1\tFALSE\t/\tFALSE\t0\tsid\tstale\n"
    loop = make_loop([server.url + "/"], options=RequestOptions(cookies=cookies),
                     respect_robots=False)
    visit_of(loop.pages.submit(server.url + "/", 0))
    assert seen == ["sid=fresh"]


def test_a_page_showing_images_out_of_scope_is_judged_without_waiting(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """Images the scope refuses need no robots.txt: a page that shows one (from a site
    whose robots.txt is never read) is judged on the loop, not sent to a helper."""
    server = make_server()
    server.routes["/"] = html(b'<img src="/a.png"><img src="http://127.0.0.9:9/ad.png">')
    loop = make_loop([server.url + "/"], image_deny=(r"/ad\.png$",))
    first = visit_of(loop.pages.submit(server.url + "/", 0))
    assert [image for image, _, _ in first.images] == [server.url + "/a.png"]
    assert first.extraction is not None
    again = loop.visitor.judge(server.url + "/", 0, first.page, first.extraction,
                               first.started, may_wait=False)
    assert again is not None, "nothing to wait for"


def test_a_page_linking_sheets_the_crawl_may_not_read_is_judged_without_waiting(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """A style sheet of another site, or one robots.txt disallows, is never read: once
    that is known, pages linking it are judged on the loop, not sent to a helper."""
    server = make_server()
    server.routes["/robots.txt"] = lambda handler: handler.send_body(
        200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
    server.routes["/"] = html(b'<link rel="stylesheet" href="http://127.0.0.9:9/cdn.css">'
                              b'<link rel="stylesheet" href="/private/site.css">'
                              b'<img src="/a.png">')
    loop = make_loop([server.url + "/"])
    first = visit_of(loop.pages.submit(server.url + "/", 0))
    assert [image for image, _, _ in first.images] == [server.url + "/a.png"]
    assert first.extraction is not None and len(first.extraction.stylesheets) == 2
    again = loop.visitor.judge(server.url + "/", 0, first.page, first.extraction,
                               first.started, may_wait=False)
    assert again is not None, "nothing to wait for"
    assert "/private/site.css" not in server.paths()


def test_pages_being_parsed_when_the_parser_closes_fail_and_are_not_lost(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    server = make_server()
    huge = b"<div>" + b'<img src="/i.png" data-src="/j.png" style="x">' * 400_000 + b"</div>"
    server.routes["/huge.html"] = html(huge)
    loop = make_loop([server.url + "/"])
    future = loop.pages.submit(server.url + "/huge.html", 0)
    time.sleep(1.5)  # fetched (18 MB on loopback), and well into its parse
    loop.parser.close(wait=0)
    visit = visit_of(future, timeout=10)
    assert visit.extraction is None and "closed" in visit.page.skipped


def test_pages_waiting_for_a_parser_go_to_it_together_and_one_that_kills_it_fails_alone(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages that wait for a parser share a message; when a page kills the parser under
    such a batch, the others are parsed alone and only that page fails."""
    import os

    from crawler.parse import pool

    real = pool.extract
    batches: list[list[str]] = []
    real_send_many = PageParser.send_many

    def deadly(html: bytes, page_url: str, **options: object) -> Any:
        if page_url.endswith("/deadly.html"):
            os._exit(70)
        return real(html, page_url, **options)  # type: ignore[arg-type]

    def recorded(self: PageParser, jobs: list[Any], *, suspect: bool = False) -> int | None:
        slot = real_send_many(self, jobs, suspect=suspect)
        if slot is not None:
            batches.append([url.rpartition("/")[2] for _, url, _ in jobs])
        return slot

    monkeypatch.setattr(pool, "extract", deadly)  # before the loop's children are forked
    monkeypatch.setattr(PageParser, "send_many", recorded)
    server = make_server()
    # Two long pages keep both parsers busy while the others come and wait.
    big = b"<div>" + b'<img src="/i.png" data-src="/j.png">' * 150_000 + b"</div>"
    names = ["big0", "big1", "p0", "p1", "deadly", "p2", "p3", "p4", "p5", "p6"]
    for name in names:
        server.routes[f"/{name}.html"] = html(
            big if name.startswith("big") else f'<img src="/{name}.png">'.encode())
    pages = make_loop([server.url + "/"]).pages
    futures = {name: pages.submit(f"{server.url}/{name}.html", 0) for name in names[:2]}
    deadline = time.monotonic() + 20
    while len(batches) < 2:  # each long page handed to a parser of its own
        assert time.monotonic() < deadline, batches
        time.sleep(0.01)
    futures.update({name: pages.submit(f"{server.url}/{name}.html", 0) for name in names[2:]})
    visits = {name: visit_of(future, timeout=60) for name, future in futures.items()}
    for name in names:
        if name.startswith("p"):
            assert [image for image, _, _ in visits[name].images] == [f"{server.url}/{name}.png"]
    assert visits["big0"].extraction is not None and visits["big1"].extraction is not None
    assert visits["deadly"].extraction is None
    assert "died on this page 2 time" in visits["deadly"].page.skipped
    assert any(len(batch) > 1 and "deadly.html" in batch for batch in batches), batches


def test_a_page_read_while_others_are_fetched_waits_a_little_for_company(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each message wakes a parser: a page read while others are on their way waits up to
    PARSE_HOLD for them, and goes with those that came meanwhile. The last page, with
    nothing else on its way, goes at once."""
    from crawler.master import pageloop

    batches: list[list[str]] = []
    real_send_many = PageParser.send_many

    def recorded(self: PageParser, jobs: list[Any], *, suspect: bool = False) -> int | None:
        slot = real_send_many(self, jobs, suspect=suspect)
        if slot is not None:
            batches.append([url.rpartition("/")[2] for _, url, _ in jobs])
        return slot

    monkeypatch.setattr(PageParser, "send_many", recorded)
    monkeypatch.setattr(pageloop, "PARSE_HOLD", 1.0)  # long enough for a slow machine
    server = make_server()
    server.routes["/slow.html"] = html(delay=3.0)
    for name in ("a", "b", "c"):
        server.routes[f"/{name}.html"] = html()
    pages = make_loop([server.url + "/"], parsers=1).pages
    slow = pages.submit(server.url + "/slow.html", 0)
    first = pages.submit(server.url + "/a.html", 0)
    time.sleep(0.2)  # a.html is read by now, and waits
    later = [pages.submit(f"{server.url}/{name}.html", 0) for name in ("b", "c")]
    assert all(visit_of(f).extraction is not None for f in (first, *later))
    assert not slow.done()
    assert [sorted(batch) for batch in batches] == [["a.html", "b.html", "c.html"]]
    assert visit_of(slow).extraction is not None
    assert batches[1:] == [["slow.html"]]


@pytest.mark.parametrize(("parsers", "hold"), [(1, 0.05), (0, 30.0)],
                         ids=["the hold ends the wait", "parsed in the master"])
def test_a_page_held_for_company_is_parsed_long_before_the_slow_page_comes(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop],
        monkeypatch: pytest.MonkeyPatch, parsers: int, hold: float) -> None:
    """The loop's wait ends with the hold, however long it would sleep otherwise. And
    without parser processes (no child to be had, no fork on this system) a page is
    parsed where it was read, at once: waiting for company would save no wake-up."""
    from crawler.master import pageloop

    monkeypatch.setattr(pageloop, "PARSE_HOLD", hold)
    monkeypatch.setattr(pageloop, "TICK", 30.0)  # no other reason to wake for 30 s
    server = make_server()
    server.routes["/slow.html"] = html(delay=6.0)
    server.routes["/a.html"] = html()
    pages = make_loop([server.url + "/"], parsers=parsers).pages
    slow = pages.submit(server.url + "/slow.html", 0)
    first = pages.submit(server.url + "/a.html", 0)
    assert visit_of(first, timeout=4.0).extraction is not None
    assert not slow.done()


def test_a_stop_cancels_a_redirect_hop_that_waits_for_its_hosts_pace(
        make_server: Callable[[], FixtureServer], make_loop: Callable[..., Loop]) -> None:
    """A page's redirect hop waits for its host's pace (a Retry-After's hold, up to a
    minute; a Crawl-delay, up to 30 s). A stop let it wait that long, holding the
    master's stop (SIGTERM, Ctrl-C) while it waited for its pages in flight: the page
    is not visited, and stays to visit, as the pages not started are."""
    server = make_server()
    held: list[float] = []

    def moved(handler: FixtureHandler) -> None:
        # The host asks to be left alone as the page's first answer goes out.
        pages.hold(server.url.split("://", 1)[1], time.monotonic() + 30)
        held.append(time.monotonic())
        handler.send_body(301, b"", "text/html", {"Location": "/sub/"})

    server.routes["/sub"] = moved
    server.routes["/sub/"] = html()
    pages = make_loop([server.url + "/"]).pages
    future = pages.submit(server.url + "/sub", 0)
    deadline = time.monotonic() + 5
    while not held:
        assert time.monotonic() < deadline, "the page was not requested"
        time.sleep(0.01)
    time.sleep(0.2)  # its hop waits for the hold now
    stopped_at = time.monotonic()
    pages.stop_starting()
    done, _ = wait([future], timeout=5)
    assert done, "a stop waited for the hop's turn"
    assert future.cancelled()
    assert time.monotonic() - stopped_at < 2
    assert "/sub/" not in server.paths()
