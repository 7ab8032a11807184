"""Politeness and scope across the cluster, measured at a real fixture server."""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from crawler.config import CrawlSettings
from crawler.demo.site import Site, build_site, png
from crawler.fetch.easy import EasyClient
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.fetch.robots import MAX_ROBOTS_BYTES, RobotsFile, read_robots
from crawler.master.robots import Robots
from crawler.master.scope import Scope
from crawler.master.stylesheets import Stylesheets
from crawler.master.visit import PageVisitor
from crawler.parse.pool import PageParser

from .conftest import (
    FixtureHandler,
    FixtureServer,
    crawl_with_two_workers,
    fail_first,
    finish,
    manifest_lines,
    run_crawler,
    serve_routes,
    start_crawler,
    stop,
    wait_for_output,
    wait_until,
)
from .tls import make_ca, server_context


def image_times(server: FixtureServer, images: set[str]) -> list[float]:
    return sorted(hit.at for hit in server.hits if hit.path in images)


def gaps_between(times: list[float]) -> list[float]:
    """Seconds between each two requests in a row of ``times`` (sorted)."""
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# How much later than it was sent the test's server may see a request arrive on a busy
# machine (its thread not scheduled at once): two image requests the crawler spaced by
# 0.3 s were seen 0.17 s apart with the whole suite running beside other work.
ARRIVAL_JITTER = 0.15


def assert_spaced(times: list[float], delay: float, what: str) -> None:
    """Requests seen arriving at ``times`` were sent ``delay`` apart: each two in a row
    at least ``delay - ARRIVAL_JITTER`` apart, and the whole row, whose first arrival
    alone may have come late, at least as long as its delays less that."""
    gaps = gaps_between(times)
    assert gaps, f"{what}: fewer than two requests"
    assert min(gaps) >= delay - ARRIVAL_JITTER, f"{what}: {gaps}"
    assert times[-1] - times[0] >= delay * len(gaps) - ARRIVAL_JITTER, f"{what}: {gaps}"


def test_host_delay_spaces_requests_from_two_workers(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = build_site(pages=1, images_per_page=8, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    crawl_with_two_workers(server, tmp_path, "--host-delay", "0.25")
    times = image_times(server, set(site.images))
    assert len(times) == 8
    assert_spaced(times, 0.25, "requests closer than the host delay")


def test_host_concurrency_holds_across_workers(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = build_site(pages=1, images_per_page=10, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    lock = threading.Lock()
    active = {"now": 0, "max": 0}

    def counted(route: Callable[[FixtureHandler], None]) -> Callable[[FixtureHandler], None]:
        def wrapper(handler: FixtureHandler) -> None:
            with lock:
                active["now"] += 1
                active["max"] = max(active["max"], active["now"])
            try:
                time.sleep(0.2)
                route(handler)
            finally:
                with lock:
                    active["now"] -= 1
        return wrapper

    for path in site.images:
        server.routes[path] = counted(server.routes[path])
    crawl_with_two_workers(server, tmp_path, "--host-concurrency", "2")
    assert active["max"] == 2, f"{active['max']} image downloads at once"
    assert len(manifest_lines(tmp_path / "out")) == 10


def test_robots_txt_disallow_and_crawl_delay(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = build_site(pages=3, images_per_page=3, min_kb=1, max_kb=2)
    files = dict(site.files)
    files["/robots.txt"] = ("text/plain",
                            b"User-agent: *\nCrawl-delay: 0.3\nDisallow: /images/1/\n")
    serve_routes(server, files)
    crawl_with_two_workers(server, tmp_path)
    disallowed = {p for p in site.images if p.startswith("/images/1/")}
    assert disallowed and not disallowed & set(server.paths())
    entries = {e["url"][len(server.url):]: e for e in manifest_lines(tmp_path / "out")}
    for path in disallowed:
        assert entries[path]["reason"] == "disallowed by robots.txt"
    assert server.paths().count("/robots.txt") == 1, "robots.txt is fetched once per host"
    for kind in (set(site.images) - disallowed, set(site.pages)):
        times = image_times(server, kind)
        assert_spaced(times, 0.3, "Crawl-delay not honoured")


def test_a_robots_txt_that_starts_with_a_byte_order_mark_is_obeyed(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """Windows editors write one; read as part of "User-agent", it hid every rule."""
    server = make_server()
    site = build_site(pages=2, images_per_page=3, min_kb=1, max_kb=2)
    files = dict(site.files)
    files["/robots.txt"] = ("text/plain", b"\xef\xbb\xbfUser-agent: *\r\nDisallow: /images/1/\r\n")
    serve_routes(server, files)
    crawl_with_two_workers(server, tmp_path)
    _check_images_1_disallowed(server, site, tmp_path)


def _check_images_1_disallowed(server: FixtureServer, site: Site, tmp_path: Path) -> None:
    """The crawl fetched none of /images/1/, and refused each for robots.txt."""
    disallowed = {p for p in site.images if p.startswith("/images/1/")}
    assert disallowed and not disallowed & set(server.paths())
    entries = {e["url"][len(server.url):]: e for e in manifest_lines(tmp_path / "out")}
    assert {path for path, e in entries.items()
            if e["reason"] == "disallowed by robots.txt"} == disallowed


def _moved(to: str) -> Callable[[FixtureHandler], None]:
    return lambda h: h.send_body(301, b"", "text/plain", {"Location": to})


def test_a_robots_txt_behind_redirects_is_followed_to_its_rules(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """RFC 9309: a robots.txt's redirects are followed (five at least, to any host), and
    the file reached holds the first origin's rules."""
    server, elsewhere = make_server(), make_server()
    site = build_site(pages=2, images_per_page=3, min_kb=1, max_kb=2)
    files = dict(site.files)
    files["/robots.txt"] = ("text/plain", b"")  # replaced below: a redirect
    serve_routes(server, files)
    server.routes["/robots.txt"] = _moved("/robots-moved.txt")
    server.routes["/robots-moved.txt"] = _moved(elsewhere.url + "/rules.txt")
    elsewhere.routes["/rules.txt"] = lambda h: h.send_body(
        200, b"User-agent: *\nDisallow: /images/1/\n", "text/plain")
    crawl_with_two_workers(server, tmp_path)
    _check_images_1_disallowed(server, site, tmp_path)
    assert elsewhere.paths() == ["/rules.txt"], "read once, by the master"


def test_robots_txt_redirects_past_five_or_out_of_http_are_as_if_none(
        make_server: Callable[[], FixtureServer]) -> None:
    server = make_server()
    for n in range(6):
        server.routes[f"/r{n}.txt"] = _moved(f"/r{n + 1}.txt")
    server.routes["/r6.txt"] = lambda h: h.send_body(200, b"User-agent: *\nDisallow: /\n",
                                                     "text/plain")
    server.routes["/robots.txt"] = _moved("/r2.txt")  # five redirects reach /r6.txt
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    try:
        assert read_robots(client, server.url, 5.0).refusal(server.url + "/a.png", "x") == \
            "disallowed by robots.txt"
        server.routes["/robots.txt"] = _moved("/r1.txt")  # six: not followed to the end
        assert read_robots(client, server.url, 5.0).refusal(server.url + "/a.png", "x") is None
        server.routes["/robots.txt"] = _moved("ftp://127.0.0.1/robots.txt")
        assert read_robots(client, server.url, 5.0).refusal(server.url + "/a.png", "x") is None
    finally:
        client.close()
    assert server.paths().count("/r5.txt") == 2 and server.paths().count("/r6.txt") == 1


def test_ignoring_robots_txt_warns(make_server: Callable[[], FixtureServer], tmp_path: Path,
                                   authkey: str) -> None:
    server = make_server()
    site = build_site(pages=1, images_per_page=2, min_kb=1, max_kb=2)
    files = dict(site.files)
    files["/robots.txt"] = ("text/plain", b"User-agent: *\nDisallow: /\n")
    serve_routes(server, files)
    err = crawl_with_two_workers(server, tmp_path, "--ignore-robots")
    assert "robots.txt is ignored" in err
    assert "/robots.txt" not in server.paths()
    assert all(e["status"] == "success" for e in manifest_lines(tmp_path / "out"))


def test_retry_after_on_429_slows_the_host(make_server: Callable[[], FixtureServer],
                                           tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = build_site(pages=1, images_per_page=3, min_kb=1, max_kb=2)
    serve_routes(server, site.files, fail_once=429, retry_after="1")
    (tmp_path / "settings.toml").write_text("[download]\nbackoff_base = 0.05\n")
    crawl_with_two_workers(server, tmp_path, "--host-concurrency", "1")
    times = image_times(server, set(site.images))
    assert len(times) == 6  # each image: a 429, then a success
    first_429 = times[0]
    assert all(t == first_429 or t - first_429 >= 0.95 for t in times), \
        "the host was asked again before its Retry-After"
    assert {e["attempts"] for e in manifest_lines(tmp_path / "out")} == {2}


def requests_to_host(server: FixtureServer) -> list[float]:
    """When each request for a page or an image arrived (robots.txt is read before any)."""
    return sorted(hit.at for hit in server.hits if hit.path != "/robots.txt")


@pytest.mark.parametrize("queue", ["embedded", "broker"])
def test_a_retry_after_that_cannot_be_read_is_said_once_per_host(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str,
        request: pytest.FixtureRequest, queue: str) -> None:
    """Each image answered a 503 with "Retry-After: soon" first: taken as none, without
    a word. The master now says so once for the host, not once per image, on either
    board (on a broker, the worker that met it is not the master)."""
    server = make_server()
    site = build_site(pages=1, images_per_page=6, min_kb=1, max_kb=2)
    serve_routes(server, site.files, fail_once=503, retry_after="soon")
    (tmp_path / "settings.toml").write_text("[download]\nbackoff_base = 0.05\n")
    if queue == "embedded":
        err = crawl_with_two_workers(server, tmp_path)
    else:
        broker = request.getfixturevalue("redis_server")
        done = run_crawler("master", server.url + "/", "--broker", broker.url, "--crawl",
                           request.getfixturevalue("crawl_name"), "--out",
                           str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        err = done.stderr
    said = re.findall(
        rf"WARNING: {re.escape(server.url.partition('//')[2])} sent a Retry-After that cannot "
        rf"be read \('soon', HTTP 503 on {re.escape(server.url)}/\S+\): taken as none: its "
        r"images wait their backoff \(download.backoff_base, doubling at each try\), as "
        r"after HTTP 503 without one\n", err)
    assert len(said) == 1, err
    entries = manifest_lines(tmp_path / "out")
    assert len(entries) == 6 and {e["attempts"] for e in entries} == {2}, entries


class RateLimit:
    """A server's rate limit: ``burst`` requests at once, refilled at ``rate`` a second."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._last = float(burst), time.monotonic()
        self._lock = threading.Lock()
        self.refused = 0
        self.served: set[str] = set()  # the paths answered within the limit

    def allows(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                self.refused += 1
                return False
            self._tokens -= 1
            return True


def rate_limited(server: FixtureServer, paths: list[str], limit: RateLimit, *,
                 status: int = 503, headers: dict[str, str] | None = None) -> None:
    """Answer ``status`` (with ``headers``) to the requests for ``paths`` past ``limit``
    (the others as before)."""
    def route_for(served: Callable[[FixtureHandler], None]) -> Callable[[FixtureHandler], None]:
        def route(handler: FixtureHandler) -> None:
            if limit.allows():
                limit.served.add(handler.path)
                served(handler)
            else:
                handler.send_body(status, b"too many requests", "text/plain", headers)
        return route

    for path in paths:
        server.routes[path] = route_for(server.routes[path])


@pytest.mark.parametrize("queue", ["embedded", "broker"])
def test_a_rate_limited_host_is_slowed_down_and_loses_no_image(
        make_server: Callable[[], FixtureServer], tmp_path: Path,
        request: pytest.FixtureRequest, queue: str) -> None:
    """A host that allows 4 requests at once and 40 a second was sent bursts of 16, and
    again after each short backoff: 5 or 6 of its 16 images failed for good (3 tries each)."""
    server = make_server()
    site = build_site(pages=1, images_per_page=16, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    limit = RateLimit(rate=40, burst=4)
    rate_limited(server, sorted(site.images), limit)
    (tmp_path / "settings.toml").write_text("[download]\nbackoff_base = 0.05\n")
    err = _crawl_with_one_worker(server, tmp_path, request, queue)
    entries = manifest_lines(tmp_path / "out")
    assert len(entries) == 16 and {e["status"] for e in entries} == {"success"}, err
    assert limit.refused >= 1  # (the first burst met the limit)
    _said_slowed_down_once(err, server, 503)


@pytest.mark.parametrize("queue", ["embedded", "broker"])
def test_a_host_that_rate_limits_its_pages_is_slowed_down_and_loses_no_page(
        make_server: Callable[[], FixtureServer], tmp_path: Path,
        request: pytest.FixtureRequest, queue: str) -> None:
    """A host that allows 4 pages at once and 8 a second, crawled with the default
    settings: its pages went 8 at a time after each 1 s hold its 429s asked for, 34 to
    46 of them were refused, and 6 to 10 of its 30 pages were lost (3 tries each). Now
    7 to 12 are refused, most of them in the first burst, and none is lost. On a
    broker, the pages a master held already went back to back after the slow-down
    (about 20 refused) until its page loop went by the slow-down too."""
    server = make_server()
    site = build_site(pages=30, images_per_page=0)
    serve_routes(server, site.files)
    limit = RateLimit(rate=8, burst=4)
    rate_limited(server, sorted(site.pages), limit, status=429, headers={"Retry-After": "1"})
    err = _crawl_with_one_worker(server, tmp_path, request, queue)
    assert limit.served == site.pages, err
    assert limit.refused <= 16, (limit.refused, err)
    _said_slowed_down_once(err, server, 429)


@pytest.mark.parametrize("queue", ["embedded", "broker"])
def test_a_style_sheet_answered_429_slows_its_host_down_as_a_page_does(
        make_server: Callable[[], FixtureServer], tmp_path: Path,
        request: pytest.FixtureRequest, queue: str) -> None:
    """A 429 on a page or an image slows its host down; one on a style sheet only had the
    sheet tried again after its Retry-After, and the host's images then went at once, at
    the pace the host had just refused. They go by the slow-down now."""
    server = make_server()
    site = build_site(pages=1, images_per_page=6, min_kb=1, max_kb=2)
    images = sorted(site.images)
    page = ('<html><head><link rel="stylesheet" href="/style.css"></head><body>'
            + "".join(f'<img src="{path}">' for path in images) + "</body></html>")
    serve_routes(server, {**site.files, "/": ("text/html", page.encode())})
    answered: list[int] = []

    def sheet(handler: FixtureHandler) -> None:
        answered.append(429 if not answered else 200)
        if answered[-1] == 429:
            handler.send_body(429, b"slow down", "text/plain", {"Retry-After": "1"})
        else:
            handler.send_body(200, b"body { color: black }", "text/css")

    server.routes["/style.css"] = sheet
    err = _crawl_with_one_worker(server, tmp_path, request, queue)
    assert answered == [429, 200], err
    _said_slowed_down_once(err, server, 429)
    assert_spaced(image_times(server, set(images)), 0.2, "the host was not slowed down")


def _crawl_with_one_worker(server: FixtureServer, tmp_path: Path,
                           request: pytest.FixtureRequest, queue: str) -> str:
    """A crawl of ``server`` with one local worker, on ``queue`` (embedded, or a broker
    from the test's fixtures), that ends 0; its stderr."""
    broker = (["--broker", request.getfixturevalue("redis_server").url, "--crawl",
               request.getfixturevalue("crawl_name")] if queue == "broker" else [])
    done = run_crawler("master", server.url + "/", *broker, "--bind", "127.0.0.1:0",
                       "--out", str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _said_slowed_down_once(err: str, server: FixtureServer, status: int) -> None:
    """The warning that ``server``'s host, answering ``status``, is slowed down: once."""
    host = re.escape(server.url.partition("//")[2])
    said = re.findall(rf"WARNING: {host} answered HTTP {status} \({re.escape(server.url)}/\S+\): "
                      r"slowed down to one request every 0.25 s, across all workers; it "
                      r"speeds up again as the host answers\n", err)
    assert len(said) == 1, err


@pytest.mark.parametrize("source", ["robots.txt", "--host-delay"])
def test_a_hosts_delay_spaces_its_pages_and_images_together(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str,
        source: str) -> None:
    """One pace per host: pages and images, each spaced, interleaved at half the delay."""
    server = make_server()
    site = build_site(pages=3, images_per_page=4, min_kb=1, max_kb=2)
    files = dict(site.files)
    flags: tuple[str, ...] = ("--host-delay", "0.5")
    if source == "robots.txt":
        files["/robots.txt"] = ("text/plain", b"User-agent: *\nCrawl-delay: 0.5\n")
        flags = ()
    serve_routes(server, files)
    crawl_with_two_workers(server, tmp_path, *flags)
    times = requests_to_host(server)
    assert len(times) == len(site.pages) + len(site.images), server.paths()
    assert_spaced(times, 0.5, "two requests to the host closer than its delay")


def test_a_pages_redirect_waits_for_its_hosts_delay(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A redirect's hop is a request too: a folder's "/sub" sent on to "/sub/" (the
    commonest redirect of all) went at once, twice the rate Crawl-delay asked for."""
    server = make_server()
    pages = {f"/p{n}/": ("text/html", f"<p>{n}</p>".encode()) for n in range(3)}
    links = "".join(f'<a href="/p{n}">{n}</a>' for n in range(3))
    serve_routes(server, {"/": ("text/html", links.encode()), **pages,
                          "/robots.txt": ("text/plain", b"User-agent: *\nCrawl-delay: 0.5\n")})
    for n in range(3):
        server.routes[f"/p{n}"] = _moved(f"/p{n}/")
    result = run_crawler("master", server.url + "/", "--dry-run", "--out",
                         str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(server.paths()) == sorted(["/robots.txt", "/", *pages, "/p0", "/p1", "/p2"])
    assert_spaced(requests_to_host(server), 0.5,
                  "two requests to the host closer than its delay")


def test_a_paced_hosts_pages_take_turns_with_its_images(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """Its pages are not left until its images run out: they bring the next images."""
    server = make_server()
    site = build_site(pages=2, images_per_page=6, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    crawl_with_two_workers(server, tmp_path, "--host-delay", "0.3")
    paths = server.paths()
    before_the_next_page = paths[paths.index("/") + 1:paths.index("/page/1.html")]
    assert len(before_the_next_page) <= 2, paths


def _hold_kept(server: FixtureServer, answered: str, hold: float, latency: float) -> None:
    """No request to the host from ``latency`` after ``answered`` was first answered (the
    news of its hold on its way to the master) to the end of its ``hold``; some after."""
    start = next(hit.at for hit in server.hits if hit.path == answered)
    times = requests_to_host(server)
    inside = [round(t - start, 2) for t in times if start + latency < t < start + hold - 0.1]
    assert not inside, f"requests to the host inside its hold (s after it began): {inside}"
    assert any(t >= start + hold - 0.1 for t in times), "nothing was left for after the hold"


def test_a_pages_retry_after_holds_its_hosts_images_too(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    images = [f"/i{n}.png" for n in range(16)]
    tags = "".join(f'<img src="{path}">' for path in images)
    serve_routes(server, {
        "/": ("text/html", f'<a href="/busy.html">busy</a>{tags}'.encode()),
        "/busy.html": ("text/html", b"<p>busy</p>"),
        **{path: ("image/png", png(4, 4, n)) for n, path in enumerate(images)}})
    fail_first(server, {"/busy.html"}, 429, times=1, retry_after="3")
    crawl_with_two_workers(server, tmp_path, "--host-delay", "0.25")
    assert server.paths().count("/busy.html") == 2
    _hold_kept(server, "/busy.html", hold=3.0, latency=0.3)


def test_an_images_retry_after_holds_its_hosts_pages_too(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    pages = [f"/p{n}.html" for n in range(16)]
    links = "".join(f'<a href="{path}">page</a>' for path in pages)
    serve_routes(server, {
        "/": ("text/html", f'<img src="/busy.png">{links}'.encode()),
        "/busy.png": ("image/png", png(4, 4, 1)),
        **{path: ("text/html", b"<p>nothing here</p>") for path in pages}})
    fail_first(server, {"/busy.png"}, 503, times=1, retry_after="3")
    crawl_with_two_workers(server, tmp_path, "--host-delay", "0.25")
    assert server.paths().count("/busy.png") == 2
    _hold_kept(server, "/busy.png", hold=3.0, latency=0.5)


YEAR = 365 * 24 * 3600


@pytest.mark.parametrize("retry_after", [2, YEAR])
def test_a_pages_last_try_answered_429_still_holds_its_host(
        make_server: Callable[[], FixtureServer], tmp_path: Path, retry_after: int) -> None:
    """A page out of tries is not tried again, but its Retry-After was about the host:
    the host's next pages went at once. A year is held download.backoff_max, and said."""
    server = make_server()
    pages = [f"/p{n}.html" for n in range(4)]
    links = "".join(f'<a href="{path}">page</a>' for path in ["/busy.html", *pages])
    serve_routes(server, {"/": ("text/html", links.encode()),
                          "/busy.html": ("text/html", b"<p>busy</p>"),
                          **{path: ("text/html", b"<p>here</p>") for path in pages}})
    fail_first(server, {"/busy.html"}, 429, times=1, retry_after=str(retry_after))
    (tmp_path / "settings.toml").write_text("[download]\nmax_attempts = 1\nbackoff_max = 2\n")
    done = run_crawler("master", server.url + "/", "--dry-run", "--host-delay", "0.25",
                       "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert server.paths().count("/busy.html") == 1
    _hold_kept(server, "/busy.html", hold=2.0, latency=0.2)
    said = f"asks to wait {YEAR} s (Retry-After on {server.url}/busy.html): its pages wait 2 s"
    assert (said in done.stderr) is (retry_after == YEAR), done.stderr


def test_user_agent_names_the_project_and_is_configurable(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    seen: list[str] = []
    body = png(4, 4, 1)

    def page(handler: FixtureHandler) -> None:
        seen.append(handler.headers.get("User-Agent", ""))
        handler.send_body(200, b'<img src="/a.png">', "text/html")

    def image(handler: FixtureHandler) -> None:
        seen.append(handler.headers.get("User-Agent", ""))
        handler.send_body(200, body, "image/png")

    server.routes.update({"/": page, "/a.png": image})
    crawl_with_two_workers(server, tmp_path)
    assert len(seen) == 2 and all(ua.startswith("crawler/") for ua in seen)
    seen.clear()
    (tmp_path / "again").mkdir()
    crawl_with_two_workers(server, tmp_path / "again", "--user-agent", "PoliteBot/2.0")
    assert seen == ["PoliteBot/2.0", "PoliteBot/2.0"]


def test_scope_redirects_non_html_and_bounds(make_server: Callable[[], FixtureServer],
                                             tmp_path: Path, authkey: str) -> None:
    server = make_server()
    other = make_server()
    body = png(4, 4, 2)
    written = {"bytes": 0}

    def binary(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(64 * 1024 * 1024))
        handler.end_headers()
        chunk = b"\0" * 65536
        try:
            for _ in range(1024):
                handler.wfile.write(chunk)
                written["bytes"] += len(chunk)
        except OSError:
            pass  # the crawler hung up, as it should

    def redirect(target: str) -> Callable[[FixtureHandler], None]:
        def route(handler: FixtureHandler) -> None:
            handler.send_body(302, b"", "text/plain", {"Location": target})
        return route

    links = "".join(f'<a href="{p}">x</a>' for p in ("/data.bin", "/moved", "/away", "/deep1"))
    server.routes.update({
        "/": lambda h: h.send_body(200, f'<img src="/a.png">{links}'.encode(), "text/html"),
        "/a.png": lambda h: h.send_body(200, body, "image/png"),
        "/data.bin": binary,
        "/moved": redirect("/landing"),
        "/landing": lambda h: h.send_body(200, b'<img src="/b.png">', "text/html"),
        "/b.png": lambda h: h.send_body(200, body, "image/png"),
        "/away": redirect(other.url + "/elsewhere"),
        "/deep1": lambda h: h.send_body(200, b'<a href="/deep2">x</a>', "text/html"),
        "/deep2": lambda h: h.send_body(200, b'<img src="/deep.png">', "text/html"),
    })
    crawl_with_two_workers(server, tmp_path, "--depth", "1")
    found = {e["url"][len(server.url):] for e in manifest_lines(tmp_path / "out")}
    assert found == {"/a.png", "/b.png"}, "the redirect target in scope is crawled"
    assert other.paths() == [], "a redirect out of scope is not followed"
    assert "/deep2" not in server.paths(), "depth 1 stops after one hop"
    assert written["bytes"] < 32 * 1024 * 1024, "a non-HTML page's body was read"


def test_a_redirect_target_read_once_is_not_read_again_when_linked(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A folder's "/sub" sends to "/sub/": the page read there is the one a later link to
    "/sub/" names, and is not fetched (and counted) a second time."""
    import json

    server = make_server()
    body = png(4, 4, 2)
    server.routes.update({
        "/": lambda h: h.send_body(200, b'<a href="/sub">s</a><a href="/other.html">o</a>',
                                   "text/html"),
        "/sub": lambda h: h.send_body(301, b"", "text/plain", {"Location": "/sub/"}),
        "/sub/": lambda h: h.send_body(200, b'<img src="/a.png">', "text/html"),
        "/other.html": lambda h: h.send_body(200, b'<a href="/sub/">again</a>', "text/html"),
        "/a.png": lambda h: h.send_body(200, body, "image/png"),
    })
    out = tmp_path / "out"
    result = run_crawler("master", server.url + "/", "--out", str(out), "--bind",
                         "127.0.0.1:0", "--local-workers", "1", "--page-concurrency", "1",
                         "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert server.paths().count("/sub/") == 1, server.paths()
    assert json.loads((out / "summary.json").read_text())["pages"] == 3


def test_a_trap_of_ever_deeper_pages_ends_at_the_depth_limit_and_says_so(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A calendar trap (each month links the next, for ever) ends at --depth, as
    --max-pages ends a wide one; the summary says how many pages had links it did not
    follow, so that a crawl that stopped short does not look like a whole site."""
    server = make_server()
    months = [f"/cal/{month}" for month in range(6)]
    serve_routes(server, {month: ("text/html", f'<a href="{after}">next</a>'
                                  '<a href="/cal/0">first</a>'.encode())
                          for month, after in zip(months, [*months[1:], "/cal/6"], strict=True)})

    def crawl(depth: str) -> tuple[dict[str, Any], str]:
        out = tmp_path / f"depth-{depth}"
        result = run_crawler("master", server.url + "/cal/0", "--depth", depth, "--out",
                             str(out), "--bind", "127.0.0.1:0", cwd=tmp_path, timeout=30)
        assert result.returncode == 0, result.stderr
        return json.loads((out / "summary.json").read_text()), result.stderr

    summary, err = crawl("3")
    assert (summary["pages"], summary["pages_at_depth_limit"]) == (4, 1)
    assert "  depth limit     1 pages at the last hop (--depth) link to pages not visited;" \
        " a rerun with a larger one goes on" in err, err
    # The same command again reads nothing: it still says so (it said 0, and nothing).
    summary, err = crawl("3")
    assert (summary["pages"], summary["pages_at_depth_limit"]) == (4, 1)
    assert "  depth limit     1 pages at the last hop" in err, err
    summary, err = crawl("5")  # the last month's page links one more: the limit, again
    assert (summary["pages"], summary["pages_at_depth_limit"]) == (6, 1)
    summary, err = crawl("6")  # /cal/6 is no page (404): nothing past the limit to read
    assert (summary["pages"], summary["pages_at_depth_limit"]) == (7, 0)
    assert "depth limit" not in err


def test_max_pages_max_images_and_page_size_bound_the_crawl(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = build_site(pages=6, images_per_page=6, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    out = tmp_path / "out"
    err = crawl_with_two_workers(server, tmp_path, "--max-pages", "2", "--max-images", "8")
    pages = [p for p in server.paths() if p in site.pages]
    assert len(pages) == 2
    assert len(manifest_lines(out)) == 8
    # The budget spent is said, with the pages it left out (a crawl that looks done).
    left = len(site.pages) - 2
    assert json.loads((out / "summary.json").read_text())["pages_left"] == left
    assert f"  not visited     {left} pages found: the page budget (--max-pages) was spent" \
        in err, err
    # And the images it left out: those of the pages read, past the first eight.
    numbers = {0 if page == "/" else int(page.split("/")[-1].split(".")[0]) for page in pages}
    over = sum(image.split("/")[2] in map(str, numbers) for image in site.images) - 8
    assert over > 0 and json.loads((out / "summary.json").read_text())["images_left"] == over
    assert f"  not queued      {over} images found: the image budget (--max-images) was " \
           "spent; a rerun with a larger one goes on" in err, err
    # The same command again reads none of those pages: it said 0 images left, and nothing,
    # though they are still left (a rerun with a larger budget fetches them).
    again = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                        str(out), "--max-pages", "2", "--max-images", "8", "--local-workers",
                        "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["images_left"] == over
    assert f"  not queued      {over} images found" in again.stderr, again.stderr

    cut = make_server()
    tags = "".join(f'<img src="/i{n}.png">' for n in range(40))
    cut.routes["/"] = lambda h: h.send_body(200, f"<html><body>{tags}".encode(), "text/html")
    for n in range(40):
        cut.routes[f"/i{n}.png"] = lambda h: h.send_body(200, png(4, 4, 9), "image/png")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "settings.toml").write_text("[crawl]\nmax_page_bytes = 400\n")
    err = crawl_with_two_workers(cut, tmp_path / "cut")
    found = len(manifest_lines(tmp_path / "cut" / "out"))
    assert 0 < found < 40, "a page over the size limit is cut, not dropped"
    assert (f"page {cut.url}/ is longer than crawl.max_page_bytes (400 bytes): read up to "
            "there, what follows is left out") in err, "and the cut is said"


def test_an_absurd_crawl_delay_is_capped_with_a_warning(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = build_site(pages=1, images_per_page=3, min_kb=1, max_kb=2)
    files = dict(site.files)
    files["/robots.txt"] = ("text/plain", b"User-agent: *\nCrawl-delay: 1000000000\n")
    serve_routes(server, files)
    (tmp_path / "settings.toml").write_text("[politeness]\nmax_crawl_delay = 0.3\n")
    err = crawl_with_two_workers(server, tmp_path)
    assert (f"robots.txt of {server.url} asks for 1e+09 s between requests; taking 0.3 s"
            in err), err
    assert err.count("asks for 1e+09 s") == 1, "one warning per host"
    times = image_times(server, set(site.images))
    assert len(times) == 3
    assert_spaced(times, 0.3, "the capped Crawl-delay is not obeyed")


def test_an_image_queued_before_still_brings_its_hosts_crawl_delay(
        make_server: Callable[[], FixtureServer]) -> None:
    """On a resumed crawl the board starts without host delays; a page showing an
    image the board already holds (from the journal) must still tell it the delay."""
    server = make_server()
    serve_routes(server, {"/": ("text/html", b'<img src="/a.png"><img src="/b.png">'),
                          "/robots.txt": ("text/plain", b"User-agent: *\nCrawl-delay: 2\n"),
                          "/a.png": ("image/png", png(4, 4, 1)),
                          "/b.png": ("image/png", png(4, 4, 2))})
    crawl = CrawlSettings()
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    robots = Robots(client, crawl.user_agent)
    told: list[tuple[str, float]] = []
    visitor = PageVisitor(
        crawl, client=client, robots=robots, scope=Scope.from_seeds([server.url + "/"]),
        parser=PageParser(in_process=True),
        stylesheets=Stylesheets(client, may_read=lambda url, redirected: True, timeout=5.0,
                                max_bytes=1 << 20),
        slow_host=lambda host, delay: told.append((host, delay)),
        known=lambda url: True)  # both images are on the board already
    try:
        visit = visitor.visit(server.url + "/", 0)
    finally:
        client.close()
    assert visit.extraction is not None and visit.images == []  # nothing new to queue
    assert told == [(server.url.partition("://")[2], 2.0)]  # told once, not per image


def test_a_crawl_delay_a_refreshed_robots_txt_asks_for_spaces_pages_and_images(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """robots.txt is read again past crawl.robots_max_age: a Crawl-delay it asks for then
    spaced the pages alone, while the page loop and the board kept the none read first."""
    server = make_server()
    pages = 6
    files: dict[str, tuple[str, bytes]] = {}
    for n in range(pages):
        tags = "".join(f'<img src="/i{n}-{k}.png">' for k in range(3))
        link = f'<a href="/p{n + 1}.html">next</a>' if n + 1 < pages else ""
        files["/" if n == 0 else f"/p{n}.html"] = ("text/html", (tags + link).encode())
        files.update({f"/i{n}-{k}.png": ("image/png", png(4, 4, 3 * n + k)) for k in range(3)})
    serve_routes(server, files, page_delay=0.3)
    robots = [b"User-agent: *\n"]
    server.routes["/robots.txt"] = lambda handler: handler.send_body(200, robots[0],
                                                                     "text/plain")
    seed = server.routes["/"]
    changed: list[float] = []

    def slow_down(handler: FixtureHandler) -> None:
        robots[0] = b"User-agent: *\nCrawl-delay: 0.5\n"
        changed.append(time.monotonic())
        seed(handler)

    server.routes["/"] = slow_down  # served once both workers joined (see below)
    (tmp_path / "settings.toml").write_text("[crawl]\nrobots_max_age = 1.0\n")
    crawl_with_two_workers(server, tmp_path)
    # The first read of robots.txt with the delay. (It was asked for as the second page
    # was served: on a busy machine the seed, which waits for both workers, took past
    # robots_max_age, robots.txt was read again before that page, and that read, with
    # no delay yet, was taken for the one with it; the next came with three requests
    # left, too few to tell.)
    reads = [hit.at for hit in server.hits if hit.path == "/robots.txt" and hit.at > changed[0]]
    assert reads, server.paths()
    # Those asked for before the new delay was read may still arrive after it.
    after = [at for at in requests_to_host(server) if at > reads[0] + 0.3]
    assert len(after) >= 4, server.paths()
    assert_spaced(after, 0.5, "the refreshed Crawl-delay is not obeyed")


def test_a_pages_robots_meta_nofollow_is_obeyed_unless_robots_are_ignored(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """<meta name="robots" content="nofollow">: the page's images are taken, its links
    not followed (as wget does), unless robots are ignored."""
    server = make_server()
    serve_routes(server, {
        "/": ("text/html", b'<meta name="robots" content="noindex, NoFollow">'
                           b'<img src="/here.png"><a href="/next.html">next</a>'),
        "/next.html": ("text/html", b'<img src="/there.png">'),
    })
    obeyed = run_crawler("master", server.url + "/", "--dry-run", "--out",
                         str(tmp_path / "obeyed"), cwd=tmp_path)
    assert obeyed.returncode == 0, obeyed.stderr
    assert obeyed.stdout.split() == [server.url + "/here.png"]
    assert "/next.html" not in server.paths()
    ignored = run_crawler("master", server.url + "/", "--dry-run", "--ignore-robots", "--out",
                          str(tmp_path / "ignored"), cwd=tmp_path)
    assert ignored.returncode == 0, ignored.stderr
    assert ignored.stdout.split() == [server.url + "/here.png", server.url + "/there.png"]


def _queue_without_workers(server: FixtureServer, tmp_path: Path) -> None:
    """A first run that queues the site's images and is stopped before any is taken."""
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), cwd=tmp_path)
    try:
        wait_for_output(master, r"no worker has taken one", 30)
    finally:
        stop(master)


def test_a_resumed_crawl_obeys_this_runs_robots_txt(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """Images an earlier run queued went to the board unjudged: a robots.txt that came to
    disallow them was never read, and a Crawl-delay never spaced them."""
    server = make_server()
    site = build_site(pages=1, images_per_page=8, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    _queue_without_workers(server, tmp_path)
    server.routes["/robots.txt"] = lambda h: h.send_body(
        200, b"User-agent: *\nCrawl-delay: 0.3\nDisallow: /images/0/img1\n"
        b"Disallow: /images/0/img2\n", "text/plain")
    server.hits.clear()
    done = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                       str(tmp_path / "out"), "--local-workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    disallowed = {p for p in site.images if p.startswith(("/images/0/img1", "/images/0/img2"))}
    allowed = set(site.images) - disallowed
    assert len(disallowed) == 2 and len(allowed) == 6
    assert not disallowed & set(server.paths())
    entries = {e["url"][len(server.url):]: e for e in manifest_lines(tmp_path / "out")}
    assert {entries[p]["reason"] for p in disallowed} == {"disallowed by robots.txt"}
    assert {entries[p]["status"] for p in allowed} == {"success"}
    times = image_times(server, allowed)
    assert len(times) == len(allowed)
    assert_spaced(times, 0.3, "Crawl-delay not honoured")


def test_a_stop_while_a_resumed_crawls_robots_txt_hangs_is_prompt(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """The robots.txt of the images an earlier run queued was read on the master's main
    thread: one that never answered held Ctrl-C (a second one too) for page_timeout. A
    stop now ends the run at once, and the images stay queued for the next."""
    server = make_server()
    site = build_site(pages=1, images_per_page=4, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    _queue_without_workers(server, tmp_path)
    answer = threading.Event()
    server.routes["/robots.txt"] = lambda h: (answer.wait(20), h.send_body(404, b"", "text/plain"))
    server.hits.clear()
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), cwd=tmp_path)
    try:
        wait_until(lambda: "/robots.txt" in server.paths(), 30, "robots.txt asked")
        time.sleep(0.3)
        asked = time.monotonic()
        master.send_signal(signal.SIGINT)
        err = finish(master, 30)
        took = time.monotonic() - asked
    finally:
        answer.set()
        stop(master)
    assert master.returncode == 130, err
    assert took < 5, (took, err)
    answer.set()
    server.routes.pop("/robots.txt")
    done = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                       str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "queued 4" in done.stderr
    entries = manifest_lines(tmp_path / "out")
    assert {e["status"] for e in entries} == {"success"} and len(entries) == 4


def test_a_resumed_crawl_reads_the_robots_txt_of_every_host_of_its_images(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """The robots.txt of the images an earlier run queued were read as a page's are, cut
    after one deadline: with more hosts than a deadline's worth of batches, the images of
    the rest were refused "not read in time", their robots.txt answering well in time."""
    seed, *hosts = [make_server() for _ in range(7)]
    body = png(40, 40, 7)
    for server in hosts:
        server.routes["/a.png"] = lambda h: h.send_body(200, body, "image/png")
    page = "".join(f'<img src="{server.url}/a.png">' for server in hosts)
    seed.routes["/"] = lambda h: h.send_body(200, f"<body>{page}</body>".encode(), "text/html")
    settings = tmp_path / "settings.toml"
    settings.write_text("[crawl]\npage_timeout = 2.0\npage_concurrency = 1\n")
    master = start_crawler("master", seed.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), "--settings", str(settings), cwd=tmp_path)
    try:
        wait_for_output(master, r"no worker has taken one", 30)
    finally:
        stop(master)

    def slow(handler: FixtureHandler) -> None:
        time.sleep(0.8)  # well within the deadline, one after the other
        handler.send_body(404, b"", "text/plain")

    for server in hosts:
        server.routes["/robots.txt"] = slow
    done = run_crawler("master", seed.url + "/", "--bind", "127.0.0.1:0", "--out",
                       str(tmp_path / "out"), "--settings", str(settings),
                       "--local-workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entries = manifest_lines(tmp_path / "out")
    assert len(entries) == 6 and {e["reason"] for e in entries} == {""}, entries


class _EitherScheme(ThreadingHTTPServer):
    """http and https on one port, told apart by the first byte (a TLS hello's 0x16):
    http://127.0.0.1:P and https://127.0.0.1:P are one host, with two robots.txt."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, robots: dict[str, bytes]) -> None:
        self.context = context
        self.robots = robots
        super().__init__(("127.0.0.1", 0), _RobotsOfItsScheme)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = self.socket.accept()
        conn.settimeout(5.0)
        if conn.recv(1, socket.MSG_PEEK) == b"\x16":
            conn = self.context.wrap_socket(conn, server_side=True)
        return conn, address


class _RobotsOfItsScheme(BaseHTTPRequestHandler):
    server: _EitherScheme

    def do_GET(self) -> None:
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        body = self.server.robots[scheme]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.mark.parametrize("longer", ["http", "https"])
def test_a_hosts_crawl_delay_is_the_longer_of_its_http_and_https_robots_txt(
        tmp_path: Path, longer: str) -> None:
    """One pace serves a host's two schemes: told each origin's Crawl-delay in turn, it
    took the last told, and a short one undid the long one of the other scheme."""
    ca = make_ca(tmp_path)
    other = "https" if longer == "http" else "http"
    server = _EitherScheme(server_context(ca), {
        longer: b"User-agent: *\nCrawl-delay: 2\n", other: b"User-agent: *\nCrawl-delay: 0.5\n"})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})),
                        RequestOptions(ca_bundle=ca.ca_cert.read_text()))
    try:
        port = server.server_address[1]
        short, long = (f"{scheme}://127.0.0.1:{port}/a.png" for scheme in (other, longer))
        robots = Robots(client, "crawler", max_age=0.5)
        assert robots.crawl_delay(short) == 0.5, "the other scheme's is not read yet"
        assert robots.crawl_delay(long) == 2.0
        assert robots.known_delay(short) == 2.0 and robots.crawl_delay(short) == 2.0
        time.sleep(0.6)  # both past their age: the one read again first keeps the longer
        assert robots.crawl_delay(short) == 2.0 and not robots.is_read(long)
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def _peak_rss_mib(process: subprocess.Popen[str], timeout: float) -> float:
    """The most memory ``process`` (not its children) held, read until it ends."""
    peak_kib, deadline = 0, time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:  # ended meanwhile
            break
        peak_kib = max([peak_kib, *(int(line.split()[1]) for line in status.splitlines()
                                    if line.startswith("VmHWM:"))])
        time.sleep(0.02)
    return peak_kib / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_links_past_the_page_budget_are_left_to_the_journal_not_held(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A trap whose every page lists 20,000 links: the master holds no more of them than
    its page budget can read (held, they grew it from 97 to 157 MiB), says how many
    distinct pages it left, and a rerun with a larger budget reads them."""
    server = make_server()
    pages = [f"/p{n}" for n in range(29)]
    routes = {"/": ("text/html", "".join(f'<a href="{p}">p</a>' for p in pages).encode())}
    for n, page in enumerate(pages):  # each page's links are half its neighbour's
        routes[page] = ("text/html", "".join(f'<a href="/t/{n * 10_000 + k}/{"x" * 100}">t</a>'
                                             for k in range(20_000)).encode())
    serve_routes(server, routes)
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--max-pages", "30",
                           "--page-concurrency", "1", "--out", str(out),
                           "--bind", "127.0.0.1:0", cwd=tmp_path)
    peak = _peak_rss_mib(master, timeout=60)
    finish(master, timeout=30)
    assert master.returncode == 0
    assert json.loads((out / "summary.json").read_text())["pages_left"] == 300_000
    assert peak < 125, f"the master held {peak:.0f} MiB"  # 157 when it held them
    result = run_crawler("master", server.url + "/", "--max-pages", "31", "--out", str(out),
                         "--bind", "127.0.0.1:0", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert any(path.startswith("/t/") for path in server.paths())


def _robots_read_from(server: FixtureServer, body: bytes) -> RobotsFile:
    """The rules the crawler reads from ``server`` serving ``body`` as its robots.txt."""
    server.routes["/robots.txt"] = lambda h: h.send_body(200, body, "text/plain")
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    try:
        return read_robots(client, server.url, 5.0)
    finally:
        client.close()


@pytest.mark.parametrize("after", [b"", b"\n", b"\r\n# more rules past the limit\n"],
                         ids=["ends-there", "newline-past", "more-past"])
def test_a_robots_txt_rule_that_ends_at_the_read_limit_is_kept(
        make_server: Callable[[], FixtureServer], after: bytes) -> None:
    """A last rule whose line ends at the limit was taken for one the limit cut, and left
    out: a file of exactly the limit, or one whose line break came a byte past it."""
    server = make_server()
    head, rule = b"User-agent: *\n# ", b"Disallow: /private"
    filler = b"x" * (MAX_ROBOTS_BYTES - len(head) - len(rule) - 1) + b"\n"
    body = head + filler + rule + after
    assert len(head + filler + rule) == MAX_ROBOTS_BYTES
    robots = _robots_read_from(server, body)
    assert robots.refusal(server.url + "/private/a.png", "x") == "disallowed by robots.txt"
    assert robots.refusal(server.url + "/public/a.png", "x") is None


def test_a_robots_txt_past_the_read_limit_drops_the_line_the_limit_cuts(
        make_server: Callable[[], FixtureServer]) -> None:
    """Read up to its limit, a rule cut mid-line would be another rule: ``Disallow:
    /private`` cut to ``Disallow: /p`` refuses /public too; the partial line is left out,
    as Google's parser leaves it past its own limit."""
    server = make_server()
    head = b"User-agent: *\n# "
    cut_to = b"Disallow: /p"
    filler = b"x" * (MAX_ROBOTS_BYTES - len(head) - len(cut_to) - 1) + b"\n"
    body = head + filler + b"Disallow: /private\n"
    robots = _robots_read_from(server, body)
    assert robots.refusal(server.url + "/public/a.png", "x") is None
