"""Scope: one test per rule for pages (mode, allow, deny) and images (image allow/deny)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from crawler.demo.site import png
from crawler.errors import ConfigError, InvalidURL
from crawler.master.scope import Scope, registrable_domain
from crawler.model.imagescope import readable
from crawler.model.urls import normalize

from .conftest import (
    FixtureHandler,
    FixtureServer,
    board_flags,
    manifest_lines,
    run_crawler,
    serve_routes,
)


def page_allowed(scope: Scope, url: str) -> bool:
    return scope.allows_page(normalize(url))


def image_allowed(scope: Scope, url: str) -> bool:
    return scope.allows_image(normalize(url))


def test_host_mode_keeps_to_the_seed_hosts() -> None:
    scope = Scope.from_seeds(["http://www.example.com/start", "https://other.example.org/"])
    assert page_allowed(scope, "http://www.example.com/any/page")
    assert page_allowed(scope, "https://www.example.com/tls")  # host, not scheme
    assert page_allowed(scope, "http://OTHER.example.org/x")
    assert not page_allowed(scope, "http://cdn.www.example.com/")  # a subdomain is another host
    assert not page_allowed(scope, "http://cdn.example.com/")  # so is a sibling
    assert not page_allowed(scope, "http://www.example.com.evil.test/")


@pytest.mark.parametrize(("seed", "twin", "not_twins"), [
    ("https://site.example/", "https://www.site.example/about",
     ["https://www.www.site.example/", "https://w.site.example/"]),
    ("https://www.site.example/", "https://site.example/about",
     ["https://www.www.site.example/", "https://example/"]),
    ("http://shop.localhost:8080/", "http://www.shop.localhost:8080/x",
     ["http://www.shop.localhost:8081/x", "http://www.shop.localhost/x"])])
def test_a_seed_host_and_its_www_twin_are_one_host(seed: str, twin: str,
                                                   not_twins: list[str]) -> None:
    """site.example commonly sends its visitors to www.site.example (or back), and its
    pages link to both: refused, the other was "another host than the seeds'", and a
    crawl of the site's own address read nothing. Only that twin, on the seed's port."""
    scope = Scope.from_seeds([seed])
    assert page_allowed(scope, twin)
    for other in not_twins:
        assert not page_allowed(scope, other), other


@pytest.mark.parametrize("seed", ["http://127.0.0.1:8080/", "http://[::1]/"])
def test_an_address_has_no_www_twin(seed: str) -> None:
    assert Scope.from_seeds([seed]).hosts == {seed.split("/")[2]}


def test_host_mode_treats_the_default_port_as_no_port() -> None:
    scope = Scope.from_seeds(["http://example.com:80/"])
    assert page_allowed(scope, "http://example.com/a")
    assert page_allowed(scope, "https://example.com:443/b")
    assert not page_allowed(scope, "http://example.com:8080/c")  # another server


def test_host_mode_with_a_port_in_the_seed() -> None:
    scope = Scope.from_seeds(["http://127.0.0.1:8000/"])
    assert page_allowed(scope, "http://127.0.0.1:8000/page")
    assert not page_allowed(scope, "http://127.0.0.1:8001/page")
    assert not page_allowed(scope, "http://127.0.0.1/page")


def test_host_mode_matches_internationalised_hosts_in_any_spelling() -> None:
    scope = Scope.from_seeds(["http://Bücher.de/"])
    assert page_allowed(scope, "http://xn--bcher-kva.de/katalog")
    assert page_allowed(scope, "http://bücher.de/katalog")


def test_domain_mode_takes_the_registrable_domain_and_its_subdomains() -> None:
    scope = Scope.from_seeds(["http://www.example.com/"], mode="domain")
    assert page_allowed(scope, "http://example.com/")
    assert page_allowed(scope, "http://www.example.com/a")
    assert page_allowed(scope, "https://img.cdn.example.com:8443/b")
    assert not page_allowed(scope, "http://notexample.com/")
    assert not page_allowed(scope, "http://example.com.evil.test/")
    assert not page_allowed(scope, "http://example.org/")


def test_domain_mode_with_a_multi_part_public_suffix() -> None:
    scope = Scope.from_seeds(["http://www.example.co.uk/"], mode="domain")
    assert page_allowed(scope, "http://shop.example.co.uk/")
    assert page_allowed(scope, "http://example.co.uk/")
    assert not page_allowed(scope, "http://other.co.uk/")  # co.uk itself is a public suffix
    assert not page_allowed(scope, "http://co.uk/")


@pytest.mark.parametrize(("host", "domain"), [
    ("www.example.co.uk", "example.co.uk"),
    ("a.b.example.com.au", "example.com.au"),
    ("city.kawasaki.jp", "city.kawasaki.jp"),  # an exception rule in the list
    ("alice.github.io", "alice.github.io"),  # a private suffix: one user's site
    ("www.xn--80aswg.xn--p1ai", "xn--80aswg.xn--p1ai"),  # сайт.рф
    ("localhost", "localhost"),
    ("127.0.0.1", "127.0.0.1"),
    ("[::1]", "[::1]"),
    ("co.uk", "co.uk"),
])
def test_registrable_domain(host: str, domain: str) -> None:
    assert registrable_domain(host) == domain


def test_domain_mode_keeps_private_suffix_sites_apart() -> None:
    scope = Scope.from_seeds(["https://alice.github.io/"], mode="domain")
    assert page_allowed(scope, "https://alice.github.io/blog")
    assert not page_allowed(scope, "https://bob.github.io/")


def test_domain_mode_with_an_ip_seed_is_that_host() -> None:
    scope = Scope.from_seeds(["http://10.0.0.1:8080/"], mode="domain")
    assert page_allowed(scope, "http://10.0.0.1:8080/a")
    assert page_allowed(scope, "http://10.0.0.1/a")  # domain mode ignores ports
    assert not page_allowed(scope, "http://20.0.0.1/a")
    assert not page_allowed(scope, "http://0.0.1/a")
    # An IP has no subdomains: a name ending in a number is no host at all to browsers.
    with pytest.raises(InvalidURL):
        normalize("http://x.10.0.0.1/a")


def test_any_mode_allows_every_http_page() -> None:
    scope = Scope.from_seeds(["http://example.com/"], mode="any")
    assert page_allowed(scope, "http://example.com/")
    assert page_allowed(scope, "https://anything.example.net:8443/x")
    assert not scope.allows_page("ftp://example.com/")


def test_allow_narrows_the_mode() -> None:
    scope = Scope.from_seeds(["http://example.com/"], allow=[r"/blog/", r"\?page=\d+$"])
    assert page_allowed(scope, "http://example.com/blog/post-1")
    assert page_allowed(scope, "http://example.com/list?page=2")
    assert not page_allowed(scope, "http://example.com/shop/")
    # Matching an allow pattern does not take a page outside the mode.
    assert not page_allowed(scope, "http://other.example/blog/post-1")


def test_deny_removes_pages() -> None:
    scope = Scope.from_seeds(["http://example.com/"], deny=[r"/private/", r"\.pdf$"])
    assert page_allowed(scope, "http://example.com/public/")
    assert not page_allowed(scope, "http://example.com/private/x")
    assert not page_allowed(scope, "http://example.com/doc.pdf")


def test_deny_beats_allow() -> None:
    scope = Scope.from_seeds(["http://example.com/"], allow=[r"/blog/"], deny=[r"/blog/drafts/"])
    assert page_allowed(scope, "http://example.com/blog/post")
    assert not page_allowed(scope, "http://example.com/blog/drafts/post")


def test_patterns_are_searched_in_the_normalised_url() -> None:
    scope = Scope.from_seeds(["http://example.com/"], allow=[r"^http://example\.com/~me/"])
    assert page_allowed(scope, "HTTP://EXAMPLE.COM:80/%7Eme/page#top")


def test_a_pattern_of_spaces_or_non_ascii_text_matches_the_url_as_an_address_bar_shows_it(
        ) -> None:
    """Normalised URLs are ASCII: "café" is "caf%C3%A9" there, a space "%20", a host
    "xn--...". Such a pattern never matched: --accept café dropped every image."""
    scope = Scope.from_seeds(["http://example.com/"], deny=["brouillons"],
                             image_allow=["café", "画像", "^https?://bücher\\.example/"],
                             image_deny=[" draft"])
    assert image_allowed(scope, "http://example.com/img/café.png")
    assert image_allowed(scope, "http://example.com/img/caf%C3%A9.png")
    assert image_allowed(scope, "http://example.com/%E7%94%BB%E5%83%8F/a.png")
    assert image_allowed(scope, "http://BÜCHER.example/a.png")
    assert readable(normalize("http://BÜCHER.example:8080/a.png")) == (
        "http://bücher.example:8080/a.png")
    for odd in ("xn--abc-.example", "xn--.example", "xn--a.example"):  # no IDN: kept
        assert readable(f"http://{odd}/a.png") == f"http://{odd}/a.png"
    faß = Scope.from_seeds(["http://example.com/"], image_allow=["faß"])
    assert image_allowed(faß, "http://faß.de/a.png")  # IDNA 2008: xn--fa-hia, not fass
    # An escaped "/", "?" or "#" stays escaped: no path or query a pattern could see.
    slash = Scope.from_seeds(["http://example.com/"], image_deny=["/b café"])
    assert image_allowed(slash, "http://example.com/a%2Fb%20café.png")
    assert not image_allowed(slash, "http://example.com/a/b%20café.png")
    assert not image_allowed(scope, "http://example.com/img/cafe.png")
    assert not image_allowed(scope, "http://example.com/img/café draft.png")
    # An escape that is no UTF-8 (a legacy query) stays as it is, and the rest decodes.
    assert image_allowed(scope, "http://example.com/a.png?t=%E9&x=caf%C3%A9")
    assert page_allowed(scope, "http://example.com/brouillon")  # ASCII patterns: as before
    assert not page_allowed(scope, "http://example.com/brouillons/")


def test_images_are_allowed_from_any_host_by_default() -> None:
    scope = Scope.from_seeds(["http://example.com/"])
    assert image_allowed(scope, "http://example.com/a.jpg")
    assert image_allowed(scope, "https://cdn.elsewhere.net/b.png")
    assert not scope.allows_image("data:image/png;base64,AAAA")


def test_image_allow_narrows_images() -> None:
    scope = Scope.from_seeds(["http://example.com/"], image_allow=[r"\.(jpe?g|png)$"])
    assert image_allowed(scope, "https://cdn.example.net/photo.JPG".lower())
    assert image_allowed(scope, "http://example.com/b.png")
    assert not image_allowed(scope, "http://example.com/c.gif")


def test_image_deny_beats_image_allow() -> None:
    scope = Scope.from_seeds(["http://example.com/"], image_allow=[r"\.png$"],
                             image_deny=[r"/thumbs/", r"tracker\."])
    assert image_allowed(scope, "http://example.com/full/a.png")
    assert not image_allowed(scope, "http://example.com/thumbs/a.png")
    assert not image_allowed(scope, "http://tracker.example/pixel.png")


def test_page_and_image_rules_are_separate() -> None:
    scope = Scope.from_seeds(["http://example.com/"], deny=[r"/img/"], image_deny=[r"/pages/"])
    assert not page_allowed(scope, "http://example.com/img/index.html")
    assert image_allowed(scope, "http://example.com/img/a.png")
    assert page_allowed(scope, "http://example.com/pages/a")
    assert not image_allowed(scope, "http://example.com/pages/a.png")


@pytest.mark.parametrize("setting", ["allow", "deny", "image_allow", "image_deny"])
def test_a_bad_regular_expression_is_a_config_error_naming_it(setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"{setting}: invalid regular expression '\(unclosed'"):
        Scope.from_seeds(["http://example.com/"], **{setting: ["fine", "(unclosed"]})


def test_an_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown mode 'planet'"):
        Scope.from_seeds(["http://example.com/"], mode="planet")


def test_a_bad_seed_is_an_invalid_url() -> None:
    with pytest.raises(InvalidURL):
        Scope.from_seeds(["ftp://example.com/"])


def test_a_single_pattern_string_is_one_pattern() -> None:
    scope = Scope.from_seeds(["http://example.com/"], deny="/private/")  # type: ignore[arg-type]
    assert not page_allowed(scope, "http://example.com/private/x")
    assert page_allowed(scope, "http://example.com/p")


def test_scope_is_frozen_hashable_and_picklable() -> None:
    scope = Scope.from_seeds(["http://example.com/"], mode="domain", allow=["a"], deny=["b"])
    with pytest.raises(AttributeError):
        scope.mode = "any"  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(scope))  # noqa: S301 - our own object, round-tripped
    assert copy == scope
    assert hash(copy) == hash(scope)


def test_a_refused_page_is_said_with_the_rule_that_refused_it_and_what_lets_it_in() -> None:
    """The seed "example.com" answering with a redirect to "shop.example.com": the
    message says how to crawl it."""
    scope = Scope.from_seeds(["https://example.com/"], deny=[r"/private/"],
                             allow=[r"example\.com/(docs|private)/"])
    assert scope.page_refusal("https://shop.example.com/") == (
        "another host than the seeds' (crawl with --scope domain, or give it as a seed)")
    assert scope.page_refusal("https://other.org/") == (
        "another host than the seeds' (give it as a seed, or crawl with --scope any)")
    assert scope.page_refusal("https://example.com/private/a") == (
        "matched by --deny (crawl.deny)")
    assert scope.page_refusal("https://example.com/blog/") == (
        "not matched by --allow (crawl.allow)")
    domain = Scope.from_seeds(["https://example.com/"], mode="domain")
    assert domain.page_refusal("https://other.org/") == (
        "another domain than the seeds' (give it as a seed, or crawl with --scope any)")


@pytest.mark.parametrize("board", ["embedded", "redis"])
def test_a_site_whose_address_sends_to_its_www_twin_is_crawled(
        board: str, make_server: Callable[[], FixtureServer], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """``crawler master site.example``, the site answering with a redirect to
    www.site.example, ended "no seed page could be fetched" (exit 5). Any *.localhost
    name is this host's loopback: one server answers both names, by the Host header."""
    server = make_server()
    port = server.server_address[1]
    bare, www = f"http://shop.localhost:{port}", f"http://www.shop.localhost:{port}"
    picture = png(9, 7, 4)

    def by_host(path: str, body: bytes, kind: str) -> Callable[[FixtureHandler], None]:
        def route(handler: FixtureHandler) -> None:
            if handler.headers.get("Host", "").startswith("www."):
                handler.send_body(200, body, kind)
            else:  # the site's own address sends its visitors to www
                handler.send_body(301, b"", "text/html", {"Location": www + path})
        return route

    server.routes["/"] = by_host("/", b'<html><a href="/shop.html">shop</a></html>', "text/html")
    server.routes["/shop.html"] = by_host(
        "/shop.html", f'<html><img src="{bare}/p.png"><img src="/q.png"></html>'.encode(),
        "text/html")
    server.routes["/p.png"] = by_host("/p.png", picture, "image/png")
    server.routes["/q.png"] = by_host("/q.png", picture, "image/png")
    out = tmp_path / "out"
    flags = ["--out", str(out), "--local-workers", "1", "--quiet"]
    flags += board_flags(board, request)
    done = run_crawler("master", bare + "/", *flags, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stored = {e["url"]: e["status"] for e in manifest_lines(out)}
    assert stored == {bare + "/p.png": "success", www + "/q.png": "success"}, stored
    assert "/shop.html" in {hit.path for hit in server.hits}


def test_the_summary_says_what_the_scope_left_out(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Links to pages on other hosts, and images --accept refused, were dropped without
    a word: --accept png,jpg (wget's list, a regex matching no URL) kept none of a
    page's 16 images and said nothing; a site whose pages sat on another host looked
    like a site of one page."""
    site, elsewhere = make_server(), make_server()
    other = elsewhere.url.partition("://")[2]
    picture = png(6, 4, 2)
    page = (f'<a href="{elsewhere.url}/a.html">a</a> <a href="{elsewhere.url}/b.html">b</a>'
            '<a href="/more.html">more</a> <img src="/a.png"> <img src="/b.jpg">'
            '<img src="/c.jpg">').encode()
    serve_routes(site, {"/": ("text/html", page), "/more.html": ("text/html", page),
                        "/a.png": ("image/png", picture), "/b.jpg": ("image/png", picture),
                        "/c.jpg": ("image/png", picture)})
    out = tmp_path / "out"
    done = run_crawler("master", site.url + "/", "--accept", r"\.png$", "--out", str(out),
                       "--local-workers", "1", "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    # Each page's two links count (the hosts, not the pages, are what a user acts on);
    # each refused image once, however many pages show it.
    assert (summary["links_out_of_scope"], summary["hosts_out_of_scope"]) == (4, 1)
    assert summary["links_to_other_hosts"] == {other: 4}
    assert summary["images_out_of_scope"] == 2
    assert (f"  other hosts     4 links to pages on 1 host out of the crawl's scope, not "
            f"followed (--scope): {other} (4)") in done.stderr, done.stderr
    assert ("  not accepted    2 image URLs refused by --accept or --reject "
            "(crawl.image_allow, crawl.image_deny)") in done.stderr
    # A dry run says them under a heading of their own, beside its list.
    listed = run_crawler("master", site.url + "/", "--accept", r"\.png$", "--dry-run",
                         cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [site.url + "/a.png"]
    assert ("dry run: the crawl's scope left pages or images out\n  other hosts     4 links"
            in listed.stderr), listed.stderr
    assert "the crawl's limits" not in listed.stderr
    assert elsewhere.paths() == []
    assert [e["url"] for e in manifest_lines(out)] == [site.url + "/a.png"]


def test_allow_and_deny_flags_narrow_the_pages_followed(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """crawl.allow and crawl.deny had no flag: a settings file was the only way to keep a
    crawl to a site's /docs/. The seed is read whatever it is; what the patterns refuse
    is left out of the summary's count of other hosts (the user chose it)."""
    site = make_server()
    picture = png(5, 5, 1)
    serve_routes(site, {
        "/": ("text/html", b'<a href="/docs/a.html">a</a><a href="/docs/old/b.html">b</a>'
                           b'<a href="/blog/c.html">c</a>'),
        "/docs/a.html": ("text/html", b'<img src="/a.png">'),
        "/docs/old/b.html": ("text/html", b'<img src="/b.png">'),
        "/blog/c.html": ("text/html", b'<img src="/c.png">'),
        "/a.png": ("image/png", picture), "/b.png": ("image/png", picture),
        "/c.png": ("image/png", picture)})
    out = tmp_path / "out"
    done = run_crawler("master", site.url + "/", "--allow", "/docs/", "--deny", "/old/",
                       "--out", str(out), "--local-workers", "1", "--bind", "127.0.0.1:0",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [e["url"] for e in manifest_lines(out)] == [site.url + "/a.png"]
    assert set(site.paths()) & {"/docs/old/b.html", "/blog/c.html"} == set()
    assert json.loads((out / "summary.json").read_text())["links_to_other_hosts"] == {}


def test_links_to_a_thousand_hosts_and_more_are_counted_in_all() -> None:
    """Past MAX_HOSTS hosts (a link farm), the rest are counted together: the total stays
    right, and no made-up host name is ranked."""
    from crawler.master.leftout import MAX_HOSTS, LeftOut

    left = LeftOut()
    for n in range(MAX_HOSTS + 500):
        left.link(f"http://h{n}.example/page")
    left.link("http://h1.example/other")
    links = left.links()
    assert (links.links, links.hosts, links.more) == (MAX_HOSTS + 501, MAX_HOSTS, True)
    assert list(links.by_host)[:2] == ["h1.example", "h0.example"]
    assert len(links.by_host) == 100
