"""robots.txt is read again once older than ``crawl.robots_max_age`` (RFC 9309 2.4).

Real fixture servers on 127.0.0.1 whose robots.txt changes while a crawl runs:
the master's cache on its own, a worker's (for the redirects its images take),
then a whole crawl by a master process.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crawler.board.memory import BoardPolicy
from crawler.fetch.easy import EasyClient
from crawler.fetch.engine import HopRefusal
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.master.robots import Robots
from crawler.worker.hops import RobotsReader

from .conftest import FixtureHandler, FixtureServer, run_crawler, serve_routes

LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))
AGENT = "crawler"
MAX_AGE = 0.5  # seconds: a short crawl.robots_max_age


class RobotsRoute:
    """A robots.txt route whose answer a test swaps while the crawler runs."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self._lock = threading.Lock()
        self._answer = (status, body)

    def swap(self, body: bytes, status: int = 200) -> None:
        with self._lock:
            self._answer = (status, body)

    def __call__(self, handler: FixtureHandler) -> None:
        with self._lock:
            status, body = self._answer
        handler.send_body(status, body, "text/plain")


def disallowing(*paths: str) -> bytes:
    return b"User-agent: *\n" + b"".join(b"Disallow: %s\n" % p.encode() for p in paths)


@pytest.fixture
def client() -> Iterator[EasyClient]:
    easy = EasyClient(LOOPBACK, RequestOptions())
    yield easy
    easy.close()


def robots_reads(server: FixtureServer) -> int:
    return server.paths().count("/robots.txt")


def past_max_age() -> None:
    time.sleep(MAX_AGE + 0.1)


def test_rules_past_their_max_age_are_read_again_before_the_next_request(
        make_server: Callable[[], FixtureServer], client: EasyClient) -> None:
    server = make_server()
    server.routes["/robots.txt"] = route = RobotsRoute(disallowing("/old"))
    robots = Robots(client, AGENT, 5.0, max_age=MAX_AGE)
    assert robots.refusal(server.url + "/old") == "disallowed by robots.txt"
    route.swap(disallowing("/new"))
    assert robots.refusal(server.url + "/new") is None, "read again before its age"
    assert robots.is_read(server.url + "/new")
    past_max_age()
    assert not robots.is_read(server.url + "/new"), "past its age, it is to be read again"
    assert robots.refusal(server.url + "/new") == "disallowed by robots.txt"
    assert robots.refusal(server.url + "/old") is None
    assert robots_reads(server) == 2


def test_without_a_max_age_rules_are_kept_for_good(
        make_server: Callable[[], FixtureServer], client: EasyClient) -> None:
    server = make_server()
    server.routes["/robots.txt"] = route = RobotsRoute(disallowing("/old"))
    robots = Robots(client, AGENT, 5.0)
    assert robots.refusal(server.url + "/old") == "disallowed by robots.txt"
    route.swap(disallowing("/new"))
    past_max_age()
    assert robots.refusal(server.url + "/new") is None
    assert robots_reads(server) == 1


def test_a_refresh_answered_503_keeps_the_old_rules_and_is_tried_again_later(
        make_server: Callable[[], FixtureServer], client: EasyClient,
        caplog: pytest.LogCaptureFixture) -> None:
    """RFC 9309 2.4: unreachable, the cached file stays in force; it is not asked for on
    every request meanwhile, but again once the retry's time has come."""
    server = make_server()
    server.routes["/robots.txt"] = route = RobotsRoute(disallowing("/old"))
    robots = Robots(client, AGENT, 5.0, max_age=MAX_AGE)
    assert robots.refusal(server.url + "/old") == "disallowed by robots.txt"
    route.swap(b"down for maintenance", status=503)
    past_max_age()
    assert robots.verdict(server.url + "/old") == ("disallowed by robots.txt", False)
    assert robots.refusal(server.url + "/new") is None
    assert robots.is_read(server.url + "/new"), "the old rules answer without a wait"
    for _ in range(5):
        assert robots.refusal(server.url + "/new") is None
    assert robots_reads(server) == 2, "the failed refresh is not tried on every request"
    assert "answered HTTP 503: keeping its rules read before" in caplog.text
    route.swap(disallowing("/new"))
    past_max_age()  # the retry comes after MAX_AGE when that is shorter than its own
    assert robots.refusal(server.url + "/new") == "disallowed by robots.txt"
    assert robots.refusal(server.url + "/old") is None
    assert robots_reads(server) == 3


def test_a_refresh_answered_404_means_no_rules(
        make_server: Callable[[], FixtureServer], client: EasyClient) -> None:
    """As on a first read: a 4xx is no robots.txt, not an unreachable one."""
    server = make_server()
    server.routes["/robots.txt"] = route = RobotsRoute(disallowing("/old"))
    robots = Robots(client, AGENT, 5.0, max_age=MAX_AGE)
    assert robots.refusal(server.url + "/old") == "disallowed by robots.txt"
    route.swap(b"not found", status=404)
    past_max_age()
    assert robots.refusal(server.url + "/old") is None


class HopVerdicts:
    """A worker's robots.txt reader, asked as its engine asks, answers waited for."""

    def __init__(self, client: EasyClient, max_age: float | None, timeout: float = 5.0) -> None:
        self.reader = RobotsReader(client, AGENT, timeout, max_age=max_age)

    def refusal(self, url: str) -> str | None:
        answers: queue.SimpleQueue[HopRefusal | None] = queue.SimpleQueue()
        self.reader.ask(url, answers.put)
        answer = answers.get(timeout=10)
        return answer.reason if answer is not None else None


def test_a_workers_rules_past_their_max_age_are_read_again_and_kept_through_a_503(
        make_server: Callable[[], FixtureServer]) -> None:
    """The robots.txt a worker reads for its images' redirects ages as the master's."""
    server = make_server()
    server.routes["/robots.txt"] = route = RobotsRoute(disallowing("/old"))
    hops = HopVerdicts(EasyClient(LOOPBACK, RequestOptions()), MAX_AGE)
    try:
        assert hops.refusal(server.url + "/old") == "disallowed by robots.txt"
        route.swap(b"down", status=503)
        past_max_age()
        assert hops.refusal(server.url + "/old") == "disallowed by robots.txt"
        assert hops.refusal(server.url + "/new") is None
        assert robots_reads(server) == 2, "the failed refresh is not tried on every request"
        route.swap(disallowing("/new"))
        past_max_age()
        assert hops.refusal(server.url + "/new") == "disallowed by robots.txt"
        assert hops.refusal(server.url + "/old") is None
        assert robots_reads(server) == 3
    finally:
        hops.reader.close()


def test_a_workers_robots_txt_unreachable_at_first_is_read_again_after_its_timeout(
        make_server: Callable[[], FixtureServer], caplog: pytest.LogCaptureFixture) -> None:
    """The redirects it refused are tried again, by this run or the next (a worker outlives
    a run): none may meet the same refusal for the rules' whole age, a day by default.
    Its warning says so (it said "not crawling that origin", as a master's does)."""
    caplog.set_level(logging.WARNING)
    server = make_server()
    server.routes["/robots.txt"] = route = RobotsRoute(b"down", status=503)
    timeout = 1.0
    hops = HopVerdicts(EasyClient(LOOPBACK, RequestOptions()), None, timeout)
    try:
        unreachable = "robots.txt unreachable (HTTP 503)"
        assert hops.refusal(server.url + "/a") == unreachable
        assert hops.refusal(server.url + "/a") == unreachable
        assert robots_reads(server) == 1, "not read again on every redirect"
        assert (f"robots.txt of {server.url} answered HTTP 503: redirects to it fail for "
                "now, and are tried again") in caplog.text
        assert "not crawling" not in caplog.text
        route.swap(disallowing("/old"))
        time.sleep(timeout + 0.1)
        assert hops.refusal(server.url + "/a") is None
        assert hops.refusal(server.url + "/old") == "disallowed by robots.txt"
        assert robots_reads(server) == 2
    finally:
        hops.reader.close()


PAGES = 8  # /p0 links /p1, which links /p2, ...
PAGE_DELAY = 0.4  # seconds each page takes: the crawl lasts past a short max age


def chain_of_pages() -> dict[str, tuple[str, bytes]]:
    files = {f"/p{i}": ("text/html", f'<img src="/i{i}.png"><a href="/p{i + 1}">next</a>'
                        .encode()) for i in range(PAGES - 1)}
    files[f"/p{PAGES - 1}"] = ("text/html", f'<img src="/i{PAGES - 1}.png">'.encode())
    return files


@pytest.mark.parametrize(("settings", "late_pages_fetched"), [
    (f"[crawl]\nrobots_max_age = {MAX_AGE * 2}\n", False),
    ("", True),  # the default, a day: the crawl keeps the robots.txt it read first
])
def test_a_crawl_obeys_a_robots_txt_changed_while_it_runs(
        make_server: Callable[[], FixtureServer], tmp_path: Path, settings: str,
        late_pages_fetched: bool) -> None:
    """The site's robots.txt comes to disallow the last pages while the crawl is at its
    second: read again past its age, they are not fetched."""
    server = make_server()
    serve_routes(server, chain_of_pages(), page_delay=PAGE_DELAY)
    server.routes["/robots.txt"] = route = RobotsRoute(b"")
    late = [f"/p{i}" for i in range(PAGES - 2, PAGES)]
    second_page = server.routes["/p1"]

    def changing_robots(handler: FixtureHandler) -> None:
        route.swap(disallowing(*late))
        second_page(handler)

    server.routes["/p1"] = changing_robots
    (tmp_path / "settings.toml").write_text(settings)
    done = run_crawler("master", server.url + "/p0", "--dry-run", "--depth", str(PAGES),
                       "--settings", str(tmp_path / "settings.toml"),
                       "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    fetched = set(server.paths())
    assert {f"/p{i}" for i in range(PAGES - 2)} <= fetched
    assert (set(late) <= fetched) is late_pages_fetched, sorted(fetched)
    assert bool(set(late) & fetched) is late_pages_fetched, sorted(fetched)
    assert (robots_reads(server) > 1) is not late_pages_fetched


def test_a_robots_txt_asked_after_its_client_closed_is_refused_for_now_not_an_error(
        make_server: Callable[[], FixtureServer], caplog: pytest.LogCaptureFixture) -> None:
    """A thread still judging queued images as the crawl wound down made a handle on the
    closed client's cookie share: a pycurl.error ("CurlShare is closed"), logged with its
    traceback as a crawler error. It is refused for now, as one not read in time."""
    server = make_server()
    server.routes["/robots.txt"] = RobotsRoute(disallowing("/old"))
    easy = EasyClient(LOOPBACK, RequestOptions())
    easy.close()
    robots = Robots(easy, AGENT, 5.0, max_age=MAX_AGE)
    with caplog.at_level(logging.INFO):
        assert robots.refusal(server.url + "/new") == "robots.txt unreachable (not read in time)"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "not sent: the crawl is stopping" in caplog.text
    assert "/robots.txt" not in server.paths()


def test_a_robots_txt_that_cannot_be_read_is_read_again_when_a_page_asks_once_due(
        make_server: Callable[[], FixtureServer], client: EasyClient) -> None:
    """Read again as often as a page is tried, after the backoff, when one of its pages
    asks (an image goes by the last answer, and reads nothing); a page refused while
    the read it was due is under way is tried again a deadline later, not set aside for
    the next run with tries left."""
    server = make_server()
    server.routes["/robots.txt"] = route = RobotsRoute(b"busy", status=503)
    robots = Robots(client, AGENT, 5.0,
                    retries=BoardPolicy(max_attempts=3, backoff_base=1.0, backoff_max=1.0))
    page, image = server.url + "/a", server.url + "/b.png"
    assert robots.verdict(page, page=True) == ("robots.txt unreachable (HTTP 503)", True)
    again = robots.read_again_in(page)  # (0.5-1 s: the backoff's jitter)
    assert again is not None and 0 < again <= 1.0, again
    assert robots.refusal(image) == "robots.txt unreachable (HTTP 503)"
    assert robots.verdict(page, page=True)[1] and robots_reads(server) == 1  # not due yet
    time.sleep(1.05)
    assert not robots.ready_for_page(page) and robots.is_read(image)
    assert robots.refusal(image) == "robots.txt unreachable (HTTP 503)"
    assert robots_reads(server) == 1, "an image reads nothing"
    assert robots.verdict(page, page=True) == ("robots.txt unreachable (HTTP 503)", True)
    assert robots_reads(server) == 2
    time.sleep(1.05)
    # Due, and its read under way (as a page's verdict begins it): a page refused by the
    # stand-in meanwhile goes again one deadline later.
    origin = server.url
    assert robots._due(origin)
    robots._rules.forget(origin)
    assert robots.read_again_in(page) == 5.0
    route.swap(disallowing("/private"))
    assert robots.verdict(page, page=True) == (None, False)
    assert robots_reads(server) == 3 and robots.read_again_in(page) is None
    assert robots.refusal(server.url + "/private/c.png") == "disallowed by robots.txt"
