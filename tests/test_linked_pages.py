"""A link that names an image but leads to an HTML page is read as that page.

Wikis link each thumbnail to ``File:Photo.png``, a page that shows the image
in full; galleries link thumbnails to viewer pages. The worker tells an HTML
page from an image, and the master reads such a page, within the crawl's depth
and scope, for the images it shows: on the embedded queue and on the broker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from crawler.demo.site import png
from crawler.model.imagetype import looks_like_html

from .conftest import FixtureServer, board_flags, manifest_lines, run_crawler, serve_routes

THUMB, FULL, OTHER = png(8, 6, 1), png(80, 60, 2), png(20, 10, 3)
WIKI_PAGE = b"""<!DOCTYPE html><html><body><h1>File:Photo.png</h1>
<a href="/upload/photo.png"><img src="/upload/photo-preview.png"></a>
<a href="/wiki/Other_page">elsewhere</a></body></html>"""
INDEX = b"""<!doctype html><html><body>
<a href="/wiki/File:Photo.png"><img src="/thumb/photo.png" alt="thumb"></a>
<a href="/elsewhere/File:Away.png">a page beyond scope</a>
</body></html>"""


def _serve_wiki(server: FixtureServer, away: FixtureServer) -> None:
    serve_routes(server, {
        "/": ("text/html", INDEX.replace(b"/elsewhere/", away.url.encode() + b"/")),
        "/thumb/photo.png": ("image/png", THUMB),
        "/wiki/File:Photo.png": ("text/html; charset=utf-8", WIKI_PAGE),
        "/upload/photo.png": ("image/png", FULL),
        "/upload/photo-preview.png": ("image/png", OTHER),
        "/wiki/Other_page": ("text/html", b"<html><body><img src=/never.png></body></html>"),
    })
    serve_routes(away, {"/File:Away.png": ("text/html", b"<html><img src=/away.png></html>"),
                        "/away.png": ("image/png", OTHER)})


@pytest.mark.parametrize("board", ["embedded", "redis"])
def test_an_image_link_to_an_html_page_is_read_as_the_page(
        board: str, make_server: Callable[[], FixtureServer], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    server, away = make_server(), make_server()
    _serve_wiki(server, away)
    out = tmp_path / "out"
    flags = ["--out", str(out), "--local-workers", "1", "--quiet", "--depth", "1"]
    flags += board_flags(board, request)
    done = run_crawler("master", server.url + "/", *flags, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entries = {e["url"]: e for e in manifest_lines(out)}
    wiki = entries[server.url + "/wiki/File:Photo.png"]
    assert wiki["status"] == "failure" and wiki["reason"] == "not an image: an HTML page"
    # The page it is was read: the full image it links to and the preview it shows.
    for path, body in (("/upload/photo.png", FULL), ("/upload/photo-preview.png", OTHER),
                       ("/thumb/photo.png", THUMB)):
        entry = entries[server.url + path]
        assert entry["status"] == "success", entry
        assert (out / entry["path"]).read_bytes() == body
    assert entries[server.url + "/upload/photo.png"]["page"] == wiki["url"]
    # Read at depth 1, the crawl's last: its own links are not followed.
    assert server.url + "/never.png" not in entries
    # Out of the pages' scope (another host): downloaded as an image link, not read.
    assert entries[away.url + "/File:Away.png"]["reason"] == "not an image: an HTML page"
    assert away.url + "/away.png" not in entries


def test_an_image_link_beyond_the_depth_is_not_read(make_server: Callable[[], FixtureServer],
                                                   tmp_path: Path) -> None:
    server, away = make_server(), make_server()
    _serve_wiki(server, away)
    out = tmp_path / "out"
    done = run_crawler("master", server.url + "/", "--out", str(out), "--local-workers", "1",
                       "--bind", "127.0.0.1:0", "--quiet", "--depth", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entries = {e["url"]: e for e in manifest_lines(out)}
    assert entries[server.url + "/wiki/File:Photo.png"]["status"] == "failure"
    assert entries[server.url + "/thumb/photo.png"]["status"] == "success"
    assert server.url + "/upload/photo.png" not in entries


def test_a_deeper_rerun_reads_an_image_link_that_led_to_a_page(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server, away = make_server(), make_server()
    _serve_wiki(server, away)
    out = tmp_path / "out"
    flags = ["--out", str(out), "--local-workers", "1", "--bind", "127.0.0.1:0", "--quiet"]
    first = run_crawler("master", server.url + "/", *flags, "--depth", "0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    wiki = server.url + "/wiki/File:Photo.png"
    entries = {e["url"]: e for e in manifest_lines(out)}
    assert entries[wiki]["reason"] == "not an image: an HTML page"
    assert server.url + "/upload/photo.png" not in entries
    # The seed, read at the first run's limit, is read again, and its links followed.
    again = run_crawler("master", server.url + "/", *flags, "--depth", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    entries = {e["url"]: e for e in manifest_lines(out)}
    full = entries.get(server.url + "/upload/photo.png")
    assert full is not None and full["status"] == "success", full
    assert (out / full["path"]).read_bytes() == FULL


GALLERY = b"""<!doctype html><html><body>
<a href="/photo?id=3"><img src="/thumb/3.png" alt="3"></a>
<a href="/latest">the latest</a> <a href="/about">about</a>
</body></html>"""


def _serve_gallery(server: FixtureServer) -> None:
    """A gallery whose links to its images say nothing of what they lead to."""
    serve_routes(server, {"/": ("text/html", GALLERY), "/thumb/3.png": ("image/png", THUMB),
                          "/photo": ("image/png", FULL), "/pics/2026": ("image/png", OTHER),
                          "/about": ("text/html", b"<html><p>no images</p></html>")})
    server.routes["/latest"] = lambda h: h.send_body(302, b"", "text/html",
                                                     {"Location": "/pics/2026"})


@pytest.mark.parametrize("board", ["embedded", "redis"])
def test_a_link_that_leads_to_an_image_is_downloaded_as_one(
        board: str, make_server: Callable[[], FixtureServer], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """A page link without an image's extension (``/photo?id=3``, ``/latest``) that the
    server answers with an image was "not HTML (image/png)" and its image lost. It is an
    image the page links to, as ``<a href="photo.png">`` is: the workers download it,
    where the redirect led."""
    server = make_server()
    _serve_gallery(server)
    out = tmp_path / "out"
    flags = ["--out", str(out), "--local-workers", "1", "--quiet"]
    flags += board_flags(board, request)
    done = run_crawler("master", server.url + "/", *flags, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entries = {e["url"]: e for e in manifest_lines(out)}
    for url, body in ((server.url + "/photo?id=3", FULL), (server.url + "/pics/2026", OTHER),
                      (server.url + "/thumb/3.png", THUMB)):
        assert entries[url]["status"] == "success", entries[url]
        assert (out / entries[url]["path"]).read_bytes() == body
    assert entries[server.url + "/photo?id=3"]["ref"] == {"kind": "anchor"}
    assert len(entries) == 3  # nothing else, and /latest not as an image of its own
    pages = (out / "pages.jsonl").read_text() if (out / "pages.jsonl").exists() else ""
    assert "not HTML" not in pages


def test_a_link_that_leads_to_an_image_is_a_page_unread_without_the_anchor_source(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """With links switched off as image sources, such a link is what it was: a page not
    read; and a dry run lists the image of a link that leads to one, once."""
    server = make_server()
    _serve_gallery(server)
    out = tmp_path / "out"
    settings = tmp_path / "img-only.toml"
    settings.write_text('[crawl]\nsources = ["img"]\n')
    done = run_crawler("master", server.url + "/", "--out", str(out), "--bind", "127.0.0.1:0",
                       "--quiet", "--local-workers", "1", "--settings", str(settings),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [e["url"] for e in manifest_lines(out)] == [server.url + "/thumb/3.png"]
    assert "not HTML (image/png)" in (out / "pages.jsonl").read_text()
    listed = run_crawler("master", server.url + "/", "--out", str(tmp_path / "dry"),
                         "--bind", "127.0.0.1:0", "--quiet", "--dry-run", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == sorted(
        server.url + path for path in ("/photo?id=3", "/pics/2026", "/thumb/3.png"))


@pytest.mark.parametrize(("head", "html"), [
    (b"<!DOCTYPE html><html>", True),
    (b"\xef\xbb\xbf\r\n  <HTML lang=en>", True),
    (b"<!-- a comment -->\n<p>", True),
    (b"<body>", True),
    (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", False),
    # An XHTML page's first line (an error page, a wiki's) went for XML, not a page.
    (b'<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n<html>', True),
    (b"\xef\xbb\xbf<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'>", True),
    (b"<?xml version='1.0'?>", False),
    (b"<?xml-stylesheet href='a.css'?><html>", False),  # (a processing instruction)
    # After the declaration, only an HTML DOCTYPE or root: a feed's comment is no page.
    (b'<?xml version="1.0"?>\n<!-- generated --><rss version="2.0">', False),
    (b'<?xml version="1.0"?>\n<!-- a page --><?php x ?>\n<HTML lang="en">', True),
    (b"<svg>", False),
    (b"<htmlish>", False),
    (b"plain text", False),
    (b"\x89PNG\r\n\x1a\n", False),
])
def test_html_is_told_by_the_sniffing_standards_patterns(head: bytes, html: bool) -> None:
    assert looks_like_html(head) is html


def test_links_awaited_become_pages_and_others_are_kept_for_later() -> None:
    from crawler.board.memory import Settled
    from crawler.master.linkedpages import LinkedPages, is_image_link
    from crawler.model.outcome import HTML_PAGE_REASON, Attempt, FailureKind, Outcome

    def html(url: str) -> Settled:
        return Settled(Attempt(url=url, ok=False, reason=HTML_PAGE_REASON,
                               kind=FailureKind.HTML_PAGE), "http://h/", "w", 1)

    linked = LinkedPages()
    linked.await_result("http://h/File:A.png", 2)
    linked.await_result("http://h/b.png", 2)
    pages = linked.settled([html("http://h/File:A.png"), html("http://h/File:C.png"),
                            Settled(Attempt(url="http://h/b.png", ok=True), None, "w", 1)])
    assert pages == [("http://h/File:A.png", 2)]  # awaited, and a page
    assert linked.is_page("http://h/File:C.png")  # a page no followed link awaited: later
    assert not linked.is_page("http://h/b.png") and not linked.is_page("http://h/File:A.png")
    assert linked.settled([html("http://h/File:A.png")]) == []  # awaited once only
    earlier = LinkedPages()
    earlier.recorded(Outcome.from_attempt(html("http://h/File:D.png").attempt, page=None,
                                          worker=None, attempts=1))
    assert earlier.is_page("http://h/File:D.png")
    assert is_image_link({"kind": "anchor"}) and not is_image_link({"kind": "img"})
    assert not is_image_link(None)
