"""Linked style sheets and what pages say about images, end to end with a real master.

A fixture server on 127.0.0.1 serves pages that link style sheets (with
``@import``, a font and images in ``url()``); one local worker downloads.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crawler.board.memory import BoardPolicy
from crawler.demo.site import png
from crawler.fetch.easy import EasyClient
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.master import stylesheets
from crawler.master.robots import Robots
from crawler.master.stylesheets import MAX_SHEETS_PER_PAGE, Stylesheets, reading_rule
from crawler.parse.css import StylesheetRefs, stylesheet_urls

from .conftest import (
    FixtureHandler,
    FixtureServer,
    finish,
    manifest_lines,
    run_crawler,
    serve_routes,
    start_crawler,
)

PAGE = b"""<html><head><link rel="stylesheet" href="/css/site.css"></head><body>
<a href="/other.html">other</a>
<figure><img src="/photo.png" alt="A red square" title="Red" width="300" height="200">
<figcaption> The  square,
 at noon </figcaption></figure></body></html>"""
OTHER = b"""<html><head><link rel="stylesheet" href="/css/site.css"></head><body>
<img src="/plain.png"></body></html>"""
SITE_CSS = b"""@import url("/css/more.css");
@font-face { font-family: x; src: url(/fonts/x.woff2) format("woff2"); }
body { background: url('/bg.png') }"""
MORE_CSS = b".icon { background-image: url(icon.png) }"


def _anything(url: str, redirected: bool) -> bool:
    """A reading rule that lets every sheet be read."""
    return True


def _crawl(server: FixtureServer, tmp_path: Path) -> str:
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
    err = finish(master, 90)
    assert master.returncode == 0, err
    return err


def test_images_of_linked_style_sheets_are_found_once_each(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    image = ("image/png", png(8, 8, 3))
    serve_routes(server, {"/": ("text/html", PAGE), "/other.html": ("text/html", OTHER),
                          "/css/site.css": ("text/css", SITE_CSS),
                          "/css/more.css": ("text/css", MORE_CSS),
                          "/photo.png": image, "/plain.png": image, "/bg.png": image,
                          "/css/icon.png": image, "/fonts/x.woff2": ("font/woff2", b"wOF2")})
    _crawl(server, tmp_path)
    entries = {e["url"][len(server.url):]: e for e in manifest_lines(tmp_path / "out")}
    assert set(entries) == {"/photo.png", "/plain.png", "/bg.png", "/css/icon.png"}
    assert all(e["status"] == "success" for e in entries.values()), entries
    for path in ("/bg.png", "/css/icon.png"):  # the sheet's images, with the linking page
        assert entries[path]["page"] == server.url + "/"
        assert entries[path]["ref"] == {"kind": "css"}
    paths = server.paths()
    assert paths.count("/css/site.css") == 1, "a style sheet is read once per crawl"
    assert paths.count("/css/more.css") == 1
    assert "/fonts/x.woff2" not in paths, "fonts are not images"


def test_a_style_sheet_behind_redirects_is_read_where_they_lead(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Followed hop by hop, each in scope and allowed by robots.txt, and its relative
    URLs taken relative to where it was read."""
    server, elsewhere = make_server(), make_server()
    image = ("image/png", png(8, 8, 3))
    page = (b'<html><head><link rel="stylesheet" href="/old.css">'
            b'<link rel="stylesheet" href="/away.css"></head><body></body></html>')
    serve_routes(server, {"/": ("text/html", page),
                          "/css/new.css": ("text/css", b".x { background: url(new.png) }"),
                          "/css/new.png": image})
    server.routes["/old.css"] = lambda h: h.send_body(301, b"", "text/plain",
                                                      {"Location": "/css/new.css"})
    server.routes["/away.css"] = lambda h: h.send_body(302, b"", "text/plain",
                                                       {"Location": elsewhere.url + "/a.css"})
    elsewhere.routes["/a.css"] = lambda h: h.send_body(200, b".y { background: url(/b.png) }",
                                                       "text/css")
    err = _crawl(server, tmp_path)
    entries = {e["url"]: e for e in manifest_lines(tmp_path / "out")}
    assert set(entries) == {server.url + "/css/new.png"}, entries
    assert entries[server.url + "/css/new.png"]["status"] == "success"
    assert elsewhere.paths() == [], "another site's sheet is out of the crawl's scope"
    assert f"style sheet {server.url}/away.css: redirected from {server.url}/away.css " \
           f"to {elsewhere.url}/a.css, not read" in err, err


def test_the_manifest_says_what_the_page_said_about_each_image(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    image = ("image/png", png(8, 8, 3))
    serve_routes(server, {"/": ("text/html", PAGE), "/other.html": ("text/html", OTHER),
                          "/css/site.css": ("text/css", b""),
                          "/photo.png": image, "/plain.png": image})
    _crawl(server, tmp_path)
    entries = {e["url"][len(server.url):]: e for e in manifest_lines(tmp_path / "out")}
    assert entries["/photo.png"]["ref"] == {
        "kind": "img", "alt": "A red square", "title": "Red", "caption": "The square, at noon",
        "width": 300, "height": 200}
    assert entries["/plain.png"]["ref"] == {"kind": "img"}


def test_a_set_of_sheets_is_read_once_and_one_refused_for_now_is_asked_about_again(
        make_server: Callable[[], FixtureServer]) -> None:
    server = make_server()
    serve_routes(server, {"/css/site.css": ("text/css", SITE_CSS),
                          "/css/more.css": ("text/css", MORE_CSS)})
    asked: list[str] = []

    def may_read(url: str, redirected: bool) -> bool | None:
        asked.append(url)
        if url.endswith("/elsewhere.css"):
            return False  # not in this crawl (the scope, a robots.txt read)
        return None if url.endswith("/later.css") else True

    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=may_read, timeout=5.0, max_bytes=1 << 20)
    site = (server.url + "/css/site.css",)
    expected = [server.url + "/bg.png", server.url + "/css/icon.png"]
    try:
        assert sheets.images(site) == expected
        before = len(asked)
        assert sheets.images(site) == expected  # another page linking the same sheet
        assert len(asked) == before, "a set of sheets all read is not judged again"
        with_later = (*site, server.url + "/css/later.css")
        assert sheets.images(with_later) == expected
        assert not sheets.ready(with_later)
        before = len(asked)
        assert sheets.images(with_later) == expected
        assert len(asked) > before, "a sheet refused for now is asked about on the next page"
        with_elsewhere = (*site, server.url + "/css/elsewhere.css")
        assert sheets.images(with_elsewhere) == expected
        assert sheets.ready(with_elsewhere), "a sheet the crawl may not read is settled"
        before = len(asked)
        assert sheets.images(with_elsewhere) == expected
        assert len(asked) == before
    finally:
        client.close()
    assert server.paths().count("/css/site.css") == 1
    assert server.paths().count("/css/more.css") == 1
    assert not any(path.endswith(("/later.css", "/elsewhere.css")) for path in server.paths())


def test_a_redirect_to_a_sheet_refused_for_now_is_followed_once_allowed(
        make_server: Callable[[], FixtureServer]) -> None:
    server = make_server()
    serve_routes(server, {"/css/more.css": ("text/css", MORE_CSS)})
    server.routes["/old.css"] = lambda h: h.send_body(301, b"", "text/plain",
                                                      {"Location": "/css/more.css"})
    robots_read = False

    def may_read(url: str, redirected: bool) -> bool | None:
        if url.endswith("/css/more.css") and not robots_read:
            return None  # its robots.txt is still being read by another thread
        return True

    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=may_read, timeout=5.0, max_bytes=1 << 20)
    old = (server.url + "/old.css",)
    try:
        assert sheets.images(old) == [] and not sheets.ready(old)
        robots_read = True
        assert sheets.images(old) == [server.url + "/css/icon.png"]
        assert sheets.ready(old)
    finally:
        client.close()
    assert server.paths().count("/old.css") == 2 and server.paths().count("/css/more.css") == 1


def test_an_import_refused_once_is_asked_about_again(
        make_server: Callable[[], FixtureServer]) -> None:
    """A refusal may be passing (robots.txt still being read by another thread): the
    images of a set of sheets are kept only when every sheet in it was settled."""
    server = make_server()
    serve_routes(server, {"/css/site.css": ("text/css", SITE_CSS),
                          "/css/more.css": ("text/css", MORE_CSS)})
    refused_once: set[str] = set()

    def may_read(url: str, redirected: bool) -> bool | None:
        if url.endswith("/more.css") and url not in refused_once:
            refused_once.add(url)
            return None
        return True

    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=may_read, timeout=5.0, max_bytes=1 << 20)
    site = (server.url + "/css/site.css",)
    try:
        assert sheets.images(site) == [server.url + "/bg.png"]
        assert sheets.images(site) == [server.url + "/bg.png", server.url + "/css/icon.png"]
    finally:
        client.close()


def test_the_crawls_rule_for_reading_a_sheet(make_server: Callable[[], FixtureServer]) -> None:
    """In scope and allowed: read; out of scope, disallowed by a robots.txt read, or on
    a site whose robots.txt cannot be read: refused for the whole crawl."""
    allowing, refusing, broken = make_server(), make_server(), make_server()
    serve_routes(allowing, {"/robots.txt": ("text/plain", b"User-agent: *\nDisallow: /x/\n")})
    serve_routes(refusing, {"/robots.txt": ("text/plain", b"User-agent: *\nDisallow: /\n")})
    broken.routes["/robots.txt"] = lambda handler: handler.send_body(503, b"", "text/plain")
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    in_scope = lambda url: not url.endswith("/elsewhere.css")  # noqa: E731
    try:
        rule = reading_rule(in_scope, Robots(client, "crawler-test", 5.0, True))
        assert rule(allowing.url + "/site.css", False) is True
        assert rule(allowing.url + "/x/site.css", False) is False
        assert rule(allowing.url + "/elsewhere.css", False) is False
        assert rule(refusing.url + "/site.css", False) is False
        assert rule(broken.url + "/site.css", False) is False
        ignoring = reading_rule(in_scope, Robots(client, "crawler-test", 5.0, False))
        assert ignoring(refusing.url + "/site.css", False) is True
        assert ignoring(refusing.url + "/elsewhere.css", False) is False
    finally:
        client.close()


class _ReadMeanwhile:
    """A robots.txt whose reader finishes just after a stand-in refused: a race that a
    real server cannot time reliably."""

    def __init__(self) -> None:
        self.read = False

    def allowed(self, url: str, *, redirected: bool) -> bool:
        answer = self.read  # the stand-in refuses; the rules, once read, allow
        self.read = True
        return answer

    def is_read(self, url: str) -> bool:
        return self.read


def test_a_stand_ins_refusal_is_not_kept_once_the_rules_are_read() -> None:
    rule = reading_rule(lambda url: True, _ReadMeanwhile())  # type: ignore[arg-type]
    assert rule("http://h/site.css", False) is True


def test_sheets_read_on_many_threads_take_turns_within_their_deadline(
        make_server: Callable[[], FixtureServer]) -> None:
    """The page loop reads robots.txt and style sheets on a helper thread per page in
    hand: its client makes no more requests at once than pages are fetched, and a
    request waiting for its turn waits within its own deadline."""
    server = make_server()
    lock, counts = threading.Lock(), {"now": 0, "peak": 0}

    def sheet(handler: FixtureHandler) -> None:
        with lock:
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
        time.sleep(0.3)
        with lock:  # before the answer: the next request can only come after it
            counts["now"] -= 1
        handler.send_body(200, b"body { color: red }", "text/css")

    for n in range(6):
        server.routes[f"/s{n}.css"] = sheet
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions(),
                        at_once=2)
    try:
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda n: client.get(
                f"{server.url}/s{n}.css", accept="text/css", max_bytes=1 << 20, timeout=5.0),
                range(6)))
        assert [r.ok for r in replies] == [True] * 6
        assert counts["peak"] == 2
        with ThreadPoolExecutor(2) as pool:  # one holds the only turn for 0.3 s
            one = EasyClient(AddressPolicy(frozenset({"public", "loopback"})),
                             RequestOptions(), at_once=1)
            slow = pool.submit(one.get, f"{server.url}/s0.css", accept="text/css",
                               max_bytes=1 << 20, timeout=5.0)
            time.sleep(0.05)
            started = time.monotonic()
            late = one.get(f"{server.url}/s1.css", accept="text/css", max_bytes=1 << 20,
                           timeout=0.1)
            assert time.monotonic() - started < 0.25
            assert not late.ok and late.timed_out and late.no_turn
            assert slow.result().ok
            one.close()
    finally:
        client.close()


def test_the_style_sheets_of_a_page_are_read_at_once_not_in_turn(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    image = ("image/png", png(8, 8, 3))
    links = "".join(f'<link rel="stylesheet" href="/s{n}.css">' for n in range(4))
    serve_routes(server, {"/": ("text/html", f"<html><head>{links}</head></html>".encode()),
                          **{f"/i{n}.png": image for n in range(4)}})

    def slow_sheet(n: int) -> Callable[[FixtureHandler], None]:
        def route(h: FixtureHandler) -> None:
            time.sleep(0.8)
            h.send_body(200, f".x{{background:url(/i{n}.png)}}".encode(), "text/css")
        return route

    for n in range(4):
        server.routes[f"/s{n}.css"] = slow_sheet(n)
    _crawl(server, tmp_path)
    assert {e["url"] for e in manifest_lines(tmp_path / "out")} == {
        f"{server.url}/i{n}.png" for n in range(4)}
    asked = sorted(hit.at for hit in server.hits if hit.path.endswith(".css"))
    assert len(asked) == 4 and asked[-1] - asked[0] < 1.2, \
        f"sheets asked for one after the other: {[round(t - asked[0], 2) for t in asked]}"


def test_a_sheet_that_got_no_turn_is_not_waited_for_by_every_page_in_turn(
        make_server: Callable[[], FixtureServer]) -> None:
    """Every connection held by a stuck read: the sheet read after it waited a deadline
    for a turn, and so did the next page linking it, and the next."""
    server = make_server()
    release = threading.Event()

    def stuck(handler: FixtureHandler) -> None:
        release.wait(10)
        handler.send_body(200, b"", "text/css")

    server.routes["/stuck.css"] = stuck
    server.routes["/a.css"] = lambda h: h.send_body(200, b".a{background:url(/a.png)}",
                                                    "text/css")
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions(),
                        at_once=1)
    sheets = Stylesheets(client, may_read=_anything, timeout=0.5, max_bytes=1 << 20)
    try:
        with ThreadPoolExecutor(1) as pool:
            # Another reader of the client (robots.txt) with a longer deadline.
            holder = pool.submit(client.get, server.url + "/stuck.css", accept="text/css",
                                 max_bytes=1 << 20, timeout=10.0)
            time.sleep(0.1)
            started = time.monotonic()
            assert sheets.images((server.url + "/a.css",)) == []  # no turn within 0.5 s
            assert 0.4 < time.monotonic() - started < 2
            started = time.monotonic()
            assert sheets.images((server.url + "/a.css",)) == []  # the next page: at once
            assert time.monotonic() - started < 0.2
            release.set()
            holder.result(timeout=10)
        time.sleep(0.5)  # the hold-off over, the sheet is read when next asked for
        assert sheets.images((server.url + "/a.css",)) == [server.url + "/a.png"]
    finally:
        release.set()
        sheets.close()
        client.close()


def test_a_page_linking_many_sheets_that_hang_waits_about_one_deadline_for_them(
        make_server: Callable[[], FixtureServer], caplog: pytest.LogCaptureFixture) -> None:
    """Read a few at a time, 30 sheets that never answer held the page a deadline per
    few of them (a thousand, at the defaults, for hours), and the client's
    connections that robots.txt reads share with it."""
    server = make_server()
    release = threading.Event()

    def hang(handler: FixtureHandler) -> None:
        release.wait(10)
        handler.send_body(200, b"", "text/css")

    server.routes["/ok.css"] = lambda h: h.send_body(200, b".a{background:url(/a.png)}",
                                                     "text/css")
    for n in range(30):
        server.routes[f"/hang{n}.css"] = hang
    linked = (server.url + "/ok.css", *(f"{server.url}/hang{n}.css" for n in range(30)))
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions(),
                        at_once=2)
    sheets = Stylesheets(client, may_read=_anything, timeout=0.3, max_bytes=1 << 20)
    try:
        with caplog.at_level(logging.WARNING, logger="crawler.master.stylesheets"):
            started = time.monotonic()
            assert sheets.images(linked) == [server.url + "/a.png"]
            took = time.monotonic() - started
        assert took < 2.5, f"the page waited {took:.1f} s for its sheets"
        assert "style sheets" in caplog.text and "left out of this page" in caplog.text
        assert not sheets.ready(linked), "the next page linking them reads them again"
    finally:
        release.set()
        sheets.close()
        client.close()


def test_a_page_looks_at_512_sheets_at_most_and_says_what_it_left_out(
        make_server: Callable[[], FixtureServer], caplog: pytest.LogCaptureFixture) -> None:
    """A sheet of 200,000 @imports cost each page that linked it 9 s and 500 MB."""
    server = make_server()
    imports = 600
    server.routes["/all.css"] = lambda h: h.send_body(
        200, "".join(f'@import "/s{n}.css";' for n in range(imports)).encode(), "text/css")
    for n in range(imports):
        server.routes[f"/s{n}.css"] = functools.partial(
            FixtureHandler.send_body, status=200, content_type="text/css",
            body=f".a{{background:url(/i{n}.png)}}".encode())
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=_anything, timeout=20, max_bytes=1 << 20)
    try:
        with caplog.at_level(logging.WARNING, logger="crawler.master.stylesheets"):
            images = sheets.images((server.url + "/all.css",))
        assert images == [f"{server.url}/i{n}.png" for n in range(MAX_SHEETS_PER_PAGE - 1)]
        assert (f"{imports + 1 - MAX_SHEETS_PER_PAGE} style sheets past the first "
                f"{MAX_SHEETS_PER_PAGE} that a page links and imports are left out, and the "
                f"images they name (page linking {server.url}/all.css)") in caplog.text
        assert len(server.hits) == MAX_SHEETS_PER_PAGE
    finally:
        sheets.close()
        client.close()


def test_a_sheet_longer_than_max_page_bytes_is_read_to_there_with_a_warning(
        make_server: Callable[[], FixtureServer], caplog: pytest.LogCaptureFixture) -> None:
    """Cut there as a page is, its later images were left out without a word."""
    server = make_server()
    sheet = b".a{background:url(/first.png)}" + b" " * 200_000 + b".b{background:url(/last.png)}"
    serve_routes(server, {"/long.css": ("text/css", sheet)})
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=_anything, timeout=5.0, max_bytes=100_000)
    try:
        with caplog.at_level(logging.WARNING, logger="crawler.master.stylesheets"):
            assert sheets.images((server.url + "/long.css",)) == [server.url + "/first.png"]
    finally:
        client.close()
    assert f"style sheet {server.url}/long.css is longer than crawl.max_page_bytes " \
           "(100000 bytes)" in caplog.text, caplog.text


def _failing(times: int, status: int, body: bytes,
             headers: dict[str, str] | None = None) -> Callable[[FixtureHandler], None]:
    """A route that answers ``status`` the first ``times`` requests, then the sheet."""
    count = 0

    def route(handler: FixtureHandler) -> None:
        nonlocal count
        count += 1
        if count <= times:
            handler.send_body(status, b"busy", "text/plain", headers or {})
        else:
            handler.send_body(200, body, "text/css")
    return route


def test_a_sheet_that_fails_for_a_passing_reason_is_read_again_after_a_backoff(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A 503 once used to cost the sheet's images for the whole crawl, with a line at
    info level only: the crawl said it was complete."""
    server = make_server()
    image = ("image/png", png(8, 8, 3))
    serve_routes(server, {"/": ("text/html", OTHER), "/plain.png": image, "/bg.png": image,
                          "/css/more.css": ("text/css", MORE_CSS), "/css/icon.png": image})
    server.routes["/css/site.css"] = _failing(2, 503, SITE_CSS)
    (tmp_path / "settings.toml").write_text("[download]\nbackoff_base = 0.1\n")
    _crawl(server, tmp_path)
    entries = {e["url"][len(server.url):]: e for e in manifest_lines(tmp_path / "out")}
    assert set(entries) == {"/plain.png", "/bg.png", "/css/icon.png"}, entries
    assert server.paths().count("/css/site.css") == 3


def test_a_sheet_that_keeps_failing_is_given_up_with_a_warning(
        make_server: Callable[[], FixtureServer], caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()
    server.routes["/always.css"] = _failing(99, 500, MORE_CSS)
    # A Retry-After past the deadline is not waited for: the pages wait for the sheet.
    server.routes["/later.css"] = _failing(99, 503, MORE_CSS, {"Retry-After": "60"})
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=_anything, timeout=5.0, max_bytes=1 << 20,
                         retries=BoardPolicy(max_attempts=2, backoff_base=0.05))
    try:
        with caplog.at_level(logging.WARNING, logger="crawler.master.stylesheets"):
            assert sheets.images((server.url + "/always.css",)) == []
            assert sheets.images((server.url + "/later.css",)) == []
    finally:
        client.close()
    assert server.paths().count("/always.css") == 2, "max_attempts tries"
    assert server.paths().count("/later.css") == 1
    said = caplog.text
    assert f"style sheet {server.url}/always.css: HTTP 500 (2 tries): the images it " \
           "names are left out" in said, said
    assert f"style sheet {server.url}/later.css: HTTP 503 (asks for 60 s more)" in said, said


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/css; charset=windows-1251", '@charset "windows-1251"; .a{background:url(/фон.png)}'),
    ("text/css; charset=windows-1251", ".a{background:url(/фон.png)}"),
    ("text/css", '@charset "windows-1251"; .a{background:url(/фон.png)}'),
    ("text/css; charset=x-cp1251", '@charset "utf-8"; .a{background:url(/фон.png)}'),
])
def test_a_sheet_is_read_in_the_encoding_a_browser_reads_it_in(
        make_server: Callable[[], FixtureServer], content_type: str, body: str) -> None:
    """Read as UTF-8 whatever it said, a windows-1251 sheet's /фон.png was /%EF%BF%BD..."""
    server = make_server()
    serve_routes(server, {"/c.css": (content_type, body.encode("cp1251"))})
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=_anything, timeout=5.0, max_bytes=1 << 20)
    try:
        assert sheets.images((server.url + "/c.css",)) == [server.url + "/%D1%84%D0%BE%D0%BD.png"]
    finally:
        client.close()


def test_a_sheet_that_declares_no_encoding_is_read_in_its_pages(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """No charset, no @charset: a browser reads the sheet in the encoding of the page
    that linked it (a windows-1251 site's sheets are windows-1251 too)."""
    server = make_server()
    page = ('<meta charset="windows-1251"><link rel="stylesheet" href="/c.css">'
            "<p>Фон</p>").encode("cp1251")
    serve_routes(server, {"/": ("text/html", page),
                          "/c.css": ("text/css", ".a{background:url(/фон.png)}".encode("cp1251"))})
    done = run_crawler("master", server.url + "/", "--dry-run", "--out", str(tmp_path / "out"),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [server.url + "/%D1%84%D0%BE%D0%BD.png"]


def test_the_sets_of_sheets_kept_name_a_bounded_count_of_images(
        make_server: Callable[[], FixtureServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages that each linked one sheet of 300,000 images beside one of their own had
    the master keep that sheet's images once per page: 2 MB a page, gigabytes in all."""
    monkeypatch.setattr(stylesheets, "MAX_REMEMBERED_IMAGES", 5000)
    server = make_server()
    sheet = "".join(f".a{n}{{background:url(/i{n}.png)}}" for n in range(3000)).encode()
    serve_routes(server, {"/big.css": ("text/css", sheet)})
    expected = [f"{server.url}/i{n}.png" for n in range(3000)]
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=_anything, timeout=5.0, max_bytes=1 << 20)
    first, second = ((server.url + "/big.css", f"{server.url}/own{n}.css") for n in (1, 2))
    try:
        assert sheets.images(first) == expected
        assert sheets.ready(first)
        assert sheets.images(second) == expected
        assert not sheets.ready(second), "past the bound, a set's images are not kept"
        assert sheets.images(second) == expected, "but found again from its sheets"
    finally:
        sheets.close()
        client.close()
    assert server.paths().count("/big.css") == 1, "the sheet itself is read once"


def test_a_sheet_read_under_many_urls_keeps_its_image_urls_once(
        make_server: Callable[[], FixtureServer]) -> None:
    """Each URL of one sheet of 286,000 images (a query that changes) had the master
    keep 27 MB for the rest of the crawl: its image URLs once more."""
    server = make_server()
    sheet = "".join(f".a{n}{{background:url(/i{n}.png)}}" for n in range(10_000)).encode()
    serve_routes(server, {"/s.css": ("text/css", sheet)})
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=_anything, timeout=5.0, max_bytes=1 << 20)
    tracemalloc.start()
    try:
        kept = []
        for n in range(4):
            assert len(sheets.images((f"{server.url}/s.css?v={n}",))) == 10_000
            kept.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
        sheets.close()
        client.close()
    first = kept[0]
    later = (kept[-1] - kept[0]) / 3
    # Each later URL keeps its list of the same names (80 KB) and the page's (80 KB),
    # not the names themselves (900 KB).
    assert later < 300_000 < first, (first, later)


def test_style_sheets_wait_for_their_hosts_pace_as_pages_do(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A host that asks for a Crawl-delay of 1 s gets its pages, their redirect hops and
    the style sheets they link a second apart; only robots.txt, which says so, comes
    first at once. Sheets went right after their page, all at once."""
    server = make_server()
    links = "".join(f'<link rel="stylesheet" href="/s{n}.css">' for n in range(2))
    serve_routes(server, {
        "/robots.txt": ("text/plain", b"User-agent: *\nCrawl-delay: 1\n"),
        "/home": ("text/html", f"<html><head>{links}</head></html>".encode()),
        **{f"/s{n}.css": ("text/css", b"body { color: red }") for n in range(2)}})
    server.routes["/"] = lambda h: h.send_body(302, b"", "text/html", {"Location": "/home"})
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), "--dry-run", cwd=tmp_path)
    err = finish(master, 60)
    assert master.returncode == 0, err
    hits = [hit for hit in server.hits if hit.path != "/robots.txt"]
    assert sorted(hit.path for hit in hits) == ["/", "/home", "/s0.css", "/s1.css"], err
    gaps = [round(later.at - earlier.at, 2) for earlier, later in itertools.pairwise(hits)]
    assert min(gaps) >= 0.9, f"{[hit.path for hit in hits]} asked {gaps} s apart"


def test_a_sheets_urls_are_resolved_as_they_are_found() -> None:
    """A list of every raw url() of a sheet, held beside the URLs kept, cost 17 MB more
    of a 10 MB sheet of 222,000 images at the peak."""
    text = "".join(f".a{n}{{background:url(/i{n}.png)}}" for n in range(20_000))
    tracemalloc.start()
    try:
        refs = stylesheet_urls(text, "http://h/s.css")
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(refs.images) == 20_000
    assert peak - kept < kept / 2, (kept, peak)


def test_a_body_is_held_once_as_it_is_read(make_server: Callable[[], FixtureServer]) -> None:
    """The chunks of a body and the body they were joined into were held together: a
    10 MB sheet cost 20 MB before it was read."""
    server = make_server()
    body = b"x" * 4_000_000
    serve_routes(server, {"/big.css": ("text/css", body)})
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    tracemalloc.start()
    try:
        reply = client.get(server.url + "/big.css", accept="text/css", max_bytes=1 << 23,
                           timeout=10.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        client.close()
    assert reply.body == body
    assert peak < 1.5 * len(body), peak


def test_sheets_are_read_one_at_a_time_once_fetched(
        make_server: Callable[[], FixtureServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a sheet's text holds the GIL: eight read side by side took as long as in
    turn, and held eight texts and their URLs (65 MB each for 10 MB sheets) at once."""
    server = make_server()
    serve_routes(server, {f"/s{n}.css": ("text/css", f".a{{background:url(/i{n}.png)}}"
                                         .encode()) for n in range(4)})
    lock, counts = threading.Lock(), {"now": 0, "peak": 0}

    def reading(text: str, url: str) -> StylesheetRefs:
        with lock:
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
        time.sleep(0.1)
        with lock:
            counts["now"] -= 1
        return stylesheet_urls(text, url)

    monkeypatch.setattr(stylesheets, "stylesheet_urls", reading)
    client = EasyClient(AddressPolicy(frozenset({"public", "loopback"})), RequestOptions())
    sheets = Stylesheets(client, may_read=_anything, timeout=5.0, max_bytes=1 << 20)
    try:
        with ThreadPoolExecutor(4) as pool:
            found = list(pool.map(lambda n: sheets.images((f"{server.url}/s{n}.css",)),
                                  range(4)))
    finally:
        sheets.close()
        client.close()
    assert found == [[f"{server.url}/i{n}.png"] for n in range(4)]
    assert counts["peak"] == 1
