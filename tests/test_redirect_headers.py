"""Headers given by the user that carry a login (``Authorization``, ``Cookie``) go to the
origin of the URL asked for only, as curl's ``-L -H`` sends them: a redirect to another
scheme, host or port leaves them out, and the other headers go on.

Checked for every client that follows redirects (the workers' engine for images, the
master's page loop and page visitor, robots.txt and style sheets through
``EasyClient.follow``) at real servers on 127.0.0.1 and 127.0.0.2 that record what
arrived, and end to end with a crawler process and its worker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from crawler.demo.site import png
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.easy import EasyClient
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.fetch.robots import read_robots
from crawler.master.pages import fetch_page
from crawler.model.imagescope import ImageScope
from crawler.model.outcome import Attempt
from crawler.worker.hops import RedirectCheck, RobotsReader

from .conftest import manifest_lines, run_crawler
from .test_curl import Engine

PNG = png(20, 10, 3)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))
GIVEN = (("Authorization", "Bearer tok-given"), ("Cookie", "manual=given"),
         ("X-Keep", "kept"))
OPTIONS = RequestOptions(headers=GIVEN, env_proxies=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Site

    def do_GET(self) -> None:
        self.server.record(self.path, dict(self.headers.items()))
        status, body, kind, extra = self.server.routes.get(
            self.path, (404, b"not found", "text/plain", {}))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass


class Site(ThreadingHTTPServer):
    """A server on ``host`` that records the path and headers of every request."""

    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.routes: dict[str, tuple[int, bytes, str, dict[str, str]]] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"

    def record(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.seen.append((path, headers))

    def moved(self, path: str, to: str) -> None:
        self.routes[path] = (302, b"", "text/plain", {"Location": to})

    def serve(self, path: str, body: bytes, kind: str) -> None:
        self.routes[path] = (200, body, kind, {})

    def heads(self, path: str) -> list[dict[str, str]]:
        with self._lock:
            return [headers for seen, headers in self.seen if seen == path]


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site, Site]]:
    """A site on 127.0.0.1, another host (127.0.0.2), and another port of the first host."""
    made = [Site("127.0.0.1"), Site("127.0.0.2"), Site("127.0.0.1")]
    try:
        yield made[0], made[1], made[2]
    finally:
        for site in made:
            site.shutdown()
            site.server_close()


def _given_only_to_the_first(first: list[dict[str, str]], others: list[dict[str, str]]) -> None:
    assert first and others, (first, others)
    for head in first:
        assert head["Authorization"] == "Bearer tok-given" and head["Cookie"] == "manual=given"
    for head in others:
        assert "Authorization" not in head and "Cookie" not in head, head
        assert head["X-Keep"] == "kept", head  # the rest goes on, as curl sends it


def _download(url: str, tmp_path: Path) -> Attempt:
    engine = Engine(tmp_path / "out", options=OPTIONS, slots=2)  # as a worker runs it
    try:
        return engine.one(url, timeout=30)
    finally:
        engine.close()


def test_an_images_redirect_to_another_host_or_port_leaves_the_login_headers_behind(
        sites: tuple[Site, Site, Site], tmp_path: Path) -> None:
    first, other_host, other_port = sites
    for site in sites:
        site.serve("/img.png", PNG, "image/png")
    first.moved("/host.png", other_host.url + "/img.png")
    first.moved("/port.png", other_port.url + "/img.png")
    first.moved("/same.png", first.url + "/img.png")
    # There and back: curl sends them again to the first URL's origin, and so do we.
    first.moved("/away.png", other_host.url + "/back.png")
    other_host.moved("/back.png", first.url + "/img.png")
    for path in ("/host.png", "/port.png", "/same.png", "/away.png"):
        attempt = _download(first.url + path, tmp_path / path[1:-4])
        assert attempt.ok, attempt
    _given_only_to_the_first(first.heads("/host.png") + first.heads("/img.png"),
                             other_host.heads("/img.png") + other_port.heads("/img.png")
                             + other_host.heads("/back.png"))
    assert len(first.heads("/img.png")) == 2  # /same.png's and /away.png's last hop


def test_robots_txt_and_style_sheets_follow_without_the_login_headers(
        sites: tuple[Site, Site, Site]) -> None:
    """Both follow with ``EasyClient.follow``: robots.txt here."""
    first, other_host, _ = sites
    first.moved("/robots.txt", other_host.url + "/robots.txt")
    other_host.serve("/robots.txt", b"User-agent: *\nDisallow: /private\n", "text/plain")
    client = EasyClient(LOOPBACK, OPTIONS, ca_file=default_ca_file())
    try:
        robots = read_robots(client, first.url, 10)
    finally:
        client.close()
    assert robots.refusal(first.url + "/private/a.png", "crawler") is not None
    _given_only_to_the_first(first.heads("/robots.txt"), other_host.heads("/robots.txt"))


def test_a_workers_robots_txt_of_a_redirect_has_the_login_headers_in_the_images_origin_only(
        sites: tuple[Site, Site, Site]) -> None:
    """A worker reads the robots.txt of an image's redirect target: with the user's login
    headers where the image was asked (a redirect within its origin keeps them, as curl
    does), without them anywhere else."""
    first, other_host, _ = sites
    for site in (first, other_host):
        site.serve("/robots.txt", b"User-agent: *\nDisallow: /private\n", "text/plain")
    client = EasyClient(LOOPBACK, OPTIONS, ca_file=default_ca_file())
    check = RedirectCheck(ImageScope(), RobotsReader(client, "crawler", 10))
    verdicts: queue.SimpleQueue[object] = queue.SimpleQueue()
    try:
        check(first.url + "/b.png", verdicts.put, first.url + "/a.png")
        check(other_host.url + "/private/c.png", verdicts.put, first.url + "/a.png")
        answers = [verdicts.get(timeout=20), verdicts.get(timeout=20)]
    finally:
        client.close()
    assert sum(answer is None for answer in answers) == 1, answers  # /private is refused
    _given_only_to_the_first(first.heads("/robots.txt"), other_host.heads("/robots.txt"))


def test_the_page_visitors_redirects_leave_the_login_headers_behind(
        sites: tuple[Site, Site, Site]) -> None:
    first, other_host, _ = sites
    first.moved("/", other_host.url + "/page.html")
    other_host.serve("/page.html", b"<html><body>here</body></html>", "text/html")
    client = EasyClient(LOOPBACK, OPTIONS, ca_file=default_ca_file())
    try:
        page = fetch_page(client, first.url + "/", timeout=10, max_bytes=100_000,
                          hop_refusal=lambda *_: None)
    finally:
        client.close()
    assert page.ok and page.final_url == other_host.url + "/page.html", page
    _given_only_to_the_first(first.heads("/"), other_host.heads("/page.html"))


def test_a_crawl_sends_the_login_headers_to_the_seeds_origin_only(
        sites: tuple[Site, Site, Site], tmp_path: Path, authkey: str) -> None:
    """Pages (the master's page loop), robots.txt and images (a worker), redirected from
    the seed's host to another one; and the robots.txt of that host, which the master
    (for the page's redirect) and the worker (for the image's) read: it went with them."""
    first, other_host, _ = sites
    first.moved("/", other_host.url + "/page.html")
    first.moved("/robots.txt", other_host.url + "/moved-robots.txt")
    other_host.serve("/page.html", f"<html><body><img src='{first.url}/r.png'></body></html>"
                     .encode(), "text/html")
    first.moved("/r.png", other_host.url + "/img.png")
    other_host.serve("/img.png", PNG, "image/png")
    result = run_crawler("master", first.url + "/", "--scope", "any", "--bind", "127.0.0.1:0",
                         "--out", str(tmp_path / "out"), "--local-workers", "1",
                         *(arg for name, value in GIVEN for arg in ("--header",
                                                                    f"{name}: {value}")),
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [e["status"] for e in manifest_lines(tmp_path / "out")] == ["success"]
    to_first = [head for path in ("/", "/robots.txt", "/r.png") for head in first.heads(path)]
    redirected = [head for path in ("/page.html", "/moved-robots.txt", "/img.png")
                  for head in other_host.heads(path)]
    assert len(redirected) == 3, other_host.seen
    their_robots = other_host.heads("/robots.txt")
    assert len(their_robots) == 2, other_host.seen  # the master's, and the worker's
    _given_only_to_the_first(to_first, redirected + their_robots)
