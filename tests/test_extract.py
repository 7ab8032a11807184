"""Discovery: the exact URLs found in one fixture page per construct, plus robustness.

Fixture pages live in tests/pages/discovery/ and are read as bytes, as the
crawler receives them; each is taken to have been fetched from PAGE.
"""

from __future__ import annotations

import gc
import time
from html import escape
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from crawler.model.urls import normalize
from crawler.parse.extract import (
    DEFAULT_LAZY_ATTRIBUTES,
    IMAGE_EXTENSIONS,
    MAX_URL_LENGTH,
    PARSERS,
    SOURCES,
    Extraction,
    ImageRef,
    _Collector,
    css_urls,
    extract,
    has_image_extension,
    parse_srcset,
    refresh_url,
    stylesheet_urls,
)
from crawler.parse.pagetext import decode
from crawler.parse.trees import _LxmlTree

PAGES = Path(__file__).parent / "pages" / "discovery"
CORPUS = Path(__file__).parent / "corpus" / "extract"
PAGE = "http://example.com/dir/page.html"
D = "http://example.com/dir/"  # the page's folder, where relative references land
ROOT = "http://example.com/"


def page(name: str, **options: object) -> Extraction:
    return extract((PAGES / f"{name}.html").read_bytes(), PAGE, **options)  # type: ignore[arg-type]


# --- one fixture per construct, exact results --------------------------------------


def test_img() -> None:
    result = page("img")
    assert result.images == (
        D + "relative.jpg",
        ROOT + "rooted.png",
        ROOT + "up.gif",
        "https://images.example.net/absolute.webp",
        "http://cdn.example.org/protocol-relative.avif",
        D + "UPPER.JPG",
        D + "padded.jpg",
        D + "no%20extension%20needed",
        D + "photo.jpg",
    )
    assert result.links == ()
    assert result.base_url == PAGE


def test_srcset() -> None:
    assert page("srcset").images == (
        D + "small.jpg", D + "medium.jpg", D + "large.jpg",
        D + "one.png", D + "one@2x.png", D + "one@3x.png",
        "https://img.example.net/w_200,h_100,c_fill/pic.jpg",
        "https://img.example.net/w_400,h_200,c_fill/pic.jpg",
        D + "comma,inside.jpg",
        D + "trailing-comma.jpg", D + "after-trailing.jpg",
        D + "line-1.jpg", D + "line-2.jpg",
        D + "parens.jpg", D + "after-parens.jpg",
        D + "leading-commas.jpg",
        D + "no-descriptor.jpg",
        D + "real.jpg",
    )


def test_picture_takes_picture_sources_but_not_video_or_audio_ones() -> None:
    # (A video's poster is an image the page shows; its sources are not.)
    assert page("picture").images == (
        D + "wide.avif", D + "wide-small.avif", D + "wide.webp", D + "legacy-source.jpg",
        D + "fallback.jpg", D + "video-poster.jpg",
    )


def test_lazy_attributes() -> None:
    assert page("lazy").images == (
        D + "placeholder.gif", D + "lazy-src.jpg", D + "lazy-1x.jpg", D + "lazy-2x.jpg",
        D + "original.jpg", D + "lazy-lazy-src.jpg", D + "div-lazy.png", D + "span-src.webp",
    )


def test_a_single_extra_lazy_attribute_may_be_a_string() -> None:
    assert D + "custom-bg.jpg" in page("lazy", lazy_attributes="data-bg").images


def test_extra_lazy_attributes_add_to_the_defaults() -> None:
    result = page("lazy", lazy_attributes=("data-bg", "DATA-HI-RES-SRCSET"))
    assert result.images[-3:] == (D + "custom-bg.jpg", D + "custom-1x.jpg", D + "custom-2x.jpg")
    assert D + "lazy-src.jpg" in result.images  # the defaults still apply
    assert len(result.images) == 11


def test_css_in_style_blocks_and_attributes() -> None:
    assert page("css").images == (
        D + "body-bg.png", D + "hero.jpg", D + "card.webp", D + "card-overlay.png",
        D + "esc(aped).png", D + "hex.png", D + "upper.gif", D + "set-1x.png", D + "set-2x.png",
        D + "inline.jpg", D + "inline-unquoted.png", D + "inline-double.gif",
    )


@pytest.mark.parametrize("parser", PARSERS)
def test_images_browsers_draw_from_older_html(parser: str) -> None:
    """background attributes, a video's poster, HTML's <image src> (read as <img> by
    browsers); not a background attribute where no browser draws one."""
    html = b"""<body background="/body.png"><table background="t.png"><tr>
        <td background="/td.png">x</td></tr></table><div background="/no.png"></div>
        <video poster="/poster.jpg"><source src="/movie.mp4"></video>
        <image src="/image-tag.png" alt="An image"><svg><image href="/svg.png"/></svg>"""
    found = extract(html, PAGE, parser=parser)
    assert [(ref.url.removeprefix(ROOT), ref.kind) for ref in found.image_refs] == [
        ("body.png", "css"), ("dir/t.png", "css"), ("td.png", "css"),
        ("poster.jpg", "poster"), ("image-tag.png", "img"), ("svg.png", "svg")]
    assert found.image_refs[4].alt == "An image"
    assert extract(html, PAGE, parser=parser, sources=SOURCES - {"css", "img"}).images == (
        ROOT + "svg.png",)


@pytest.mark.parametrize("parser", PARSERS)
def test_images_shown_by_object_and_embed(parser: str) -> None:
    """Browsers draw an image that an <object data> or <embed src> names (an SVG drawing
    most often), known by its type attribute or its extension; not plug-in content."""
    html = b"""<object data="diagram.svg" type="image/svg+xml" width="300">
          <img src="fallback.png" alt="Diagram"></object>
        <object data="/chart?id=3" type="Image/PNG"></object><object data=" photo.JPG "></object>
        <embed src="logo.svg" type="image/svg+xml"><embed src="/plain.png">
        <object data="movie.swf" type="application/x-shockwave-flash"></object>
        <object data="manual.pdf"></object><embed src="clip.swf"><object type="image/png">"""
    found = extract(html, PAGE, parser=parser)
    assert [(ref.url.removeprefix(ROOT), ref.kind) for ref in found.image_refs] == [
        ("dir/diagram.svg", "object"), ("dir/fallback.png", "img"), ("chart?id=3", "object"),
        ("dir/photo.JPG", "object"), ("dir/logo.svg", "embed"), ("plain.png", "embed")]
    assert found.image_refs[0].width == 300
    assert extract(html, PAGE, parser=parser, sources=SOURCES - {"img"}).images == ()


@pytest.mark.parametrize("parser", PARSERS)
def test_lazy_attributes_that_name_no_image_are_left_out(parser: str) -> None:
    """lazysizes' iframes (a video player), a script's or a video's source, and a switch
    (data-lazy="true") were queued as images."""
    html = b"""<iframe data-src="/embed/xyz" class="lazyload"></iframe>
        <video class="lazy"><source data-src="/movie.mp4" type="video/mp4"></video>
        <script data-src="/app.js"></script><img src="/a.png" data-lazy="true">
        <img src="/b.png" data-src=" 0 "><picture><source data-srcset="/p.webp">
        <img data-src="/p.jpg"></picture><div data-src="/d.png"></div>"""
    assert extract(html, PAGE, parser=parser).images == tuple(
        ROOT + name for name in ("a.png", "b.png", "p.webp", "p.jpg", "d.png"))


def test_references_too_long_to_fetch_are_left_out_and_counted() -> None:
    """A reference past MAX_URL_LENGTH is no URL the crawler fetches, but the page
    says how many it had (a framed page's too), each counted once; an inline data: image
    is no such one."""
    long_path = "a" * (MAX_URL_LENGTH + 1)
    html = (f'<a href="{long_path}">x</a><a href="{long_path}">again</a>'
            f'<img src="/{long_path}.png"><img src="data:image/png;base64,{long_path}">'
            f'<iframe srcdoc="<a href=b{long_path}>framed</a>"></iframe>'
            f'<a href="#{long_path}">a same-page anchor: no fetch to leave out</a>'
            '<a href="next.html">next</a><img src="ok.png">').encode()
    found = extract(html, PAGE)
    assert found.links == (D + "next.html",)
    assert found.images == (D + "ok.png",)
    assert found.too_long == 3


@pytest.mark.parametrize("parser", PARSERS)
def test_a_robots_meta_tag_saying_nofollow_is_told(parser: str) -> None:
    def told(meta: str) -> bool:
        html = f'{meta}<a href="next.html">next</a>'.encode()
        found = extract(html, PAGE, parser=parser)
        assert found.links == (D + "next.html",)  # facts: the caller decides
        return found.nofollow

    assert told('<meta name="robots" content="noindex, nofollow">')
    assert told('<meta name="ROBOTS" content=" None ">')
    assert not told('<meta name="robots" content="noindex">')
    assert not told('<meta name="googlebot" content="nofollow">')
    assert not told("")


def test_meta_images() -> None:
    assert page("meta").images == (
        ROOT + "og-image.jpg",
        "https://example.com/og-image-url.jpg",
        "https://secure.example.com/og-secure.jpg",
        D + "og-upper.png",
        "https://example.com/twitter.jpg",
        D + "twitter-src.jpg",
    )


def test_link_icons_and_preloaded_images() -> None:
    assert page("link").images == (
        ROOT + "favicon.ico", ROOT + "shortcut.ico", ROOT + "apple-touch.png",
        D + "image-src.jpg", D + "icon-upper.png",
        D + "preload.webp", D + "preload-480.webp", D + "preload-960.webp",
    )
    assert page("link").links == ()


def test_image_inputs() -> None:
    assert page("input").images == (D + "submit.png", D + "submit-upper.gif")


def test_svg_images() -> None:
    """Of an <image> with both, browsers fetch the href (SVG 2 ignores xlink:href then)."""
    assert page("svg").images == (D + "svg-href.png", D + "svg-xlink.jpg", D + "both-href.png")


@pytest.mark.parametrize("parser", PARSERS)
def test_an_svg_href_even_empty_hides_the_xlink_one(parser: str) -> None:
    """SVG 2 reads xlink:href only where no href is written; an empty href names this
    page, which is no image (and no link: the page itself)."""
    html = b"""<svg><image href="" xlink:href="old.png"/><use href="" xlink:href="s.svg#a"/>
        <a href="" xlink:href="other.html"><text>t</text></a>
        <image xlink:href="only-old.png"/></svg>"""
    found = extract(html, PAGE, parser=parser)
    assert found.images == (D + "only-old.png",)
    assert found.links == ()


@pytest.mark.parametrize("parser", PARSERS)
def test_svg_use_of_another_file(parser: str) -> None:
    """<use> of a sprite file draws that file's symbol: browsers fetch the file (href
    before xlink:href, as SVG 2 says); a symbol of the page itself is no download."""
    html = b"""<svg><use href="/icons/sprite.svg#home"/></svg>
        <svg><use xlink:href="sprite2.svg#a"></use><use href="#local"/></svg>
        <svg><use href="sprite3.svg#b" xlink:href="old.svg#b"/></svg>
        <svg><use href="/icons/sprite.svg#search"/></svg>"""
    found = extract(html, PAGE, parser=parser)
    assert [(ref.url, ref.kind) for ref in found.image_refs] == [
        (ROOT + "icons/sprite.svg", "svg"), (D + "sprite2.svg", "svg"),
        (D + "sprite3.svg", "svg")]
    assert extract(html, PAGE, parser=parser, sources=SOURCES - {"svg"}).images == ()


@pytest.mark.parametrize("parser", PARSERS)
def test_svg_fe_image_and_an_svg_link_the_old_way(parser: str) -> None:
    """A filter's <feImage href> is fetched by browsers; an SVG <a xlink:href> is a link
    like any other (to an image: that image)."""
    html = b"""<svg><filter id="f"><feImage href="/fx/noise.png"/></filter>
        <filter><feImage xlink:href="grain.png"/></filter>
        <a xlink:href="/full/photo.jpg"><text>full size</text></a>
        <a xlink:href="next.html"><text>next</text></a></svg>"""
    found = extract(html, PAGE, parser=parser)
    assert [(ref.url, ref.kind) for ref in found.image_refs] == [
        (ROOT + "fx/noise.png", "svg"), (D + "grain.png", "svg"),
        (ROOT + "full/photo.jpg", "anchor")]
    assert found.links == (D + "next.html",)


XHTML_PREFIXES = (PAGES / "xhtml_prefixes.xhtml").read_bytes()
B = ROOT + "base/"  # that page's <h:base href>


@pytest.mark.parametrize("parser", PARSERS)
def test_prefixed_elements_of_a_page_read_as_xml_are_the_elements_they_name(
        parser: str) -> None:
    """XHTML served as application/xhtml+xml is read as XML, where <h:img> with h bound
    to XHTML's namespace is an <img> and <svg:image> with svg bound to SVG's an SVG
    <image>; libxml2's HTML parser keeps the prefix in the name. A prefix bound to
    another namespace (even one rebound below), or to none, names no such element;
    an svg:href is in SVG's namespace, not the href SVG reads (no namespace) nor
    xlink:href."""
    found = extract(XHTML_PREFIXES, PAGE, parser=parser, xml=True)
    assert found.base_url == B  # <h:base>; the <svg:base> in the SVG is no base
    assert [(ref.url, ref.kind) for ref in found.image_refs] == [
        (B + "og.png", "og:image"), (B + "icon.png", "link"), (B + "img.png", "img"),
        (B + "small.png", "srcset"), (B + "large.png", "srcset"),
        (B + "picture.webp", "picture"), (B + "picture-fallback.jpg", "img"),
        (B + "figure.png", "img"), (B + "poster.jpg", "poster"), (B + "lazy.png", "lazy"),
        (B + "styled.png", "css"), (B + "table.png", "css"), (B + "submit.png", "input"),
        (B + "drawing.svg", "object"), (B + "embedded.png", "embed"),
        (B + "photo.jpg", "anchor"), (B + "svg-style.png", "css"),
        (B + "svg-href.png", "svg"), (B + "svg-xlink.png", "svg"), (B + "sprite.svg", "svg"),
        (B + "grain.png", "svg"), (B + "other-prefix.png", "svg"),
        (B + "rebound-to-xhtml.png", "img"), (B + "unprefixed.png", "img")]
    described = {ref.url: ref for ref in found.image_refs}
    assert described[B + "img.png"][2:] == ("An img", None, None, 40, None)
    assert described[B + "picture.webp"].alt == "The picture"
    assert described[B + "figure.png"].caption == "A caption"
    assert found.links == (B + "next.html", B + "area.html", B + "framed.html",
                           B + "svg-link.html")
    assert found.stylesheets == (B + "site.css",)


@pytest.mark.parametrize("parser", PARSERS)
def test_prefixed_elements_of_a_page_read_as_html_are_unknown_elements(parser: str) -> None:
    """In text/html the HTML parser makes <h:img> an unknown element of that name, and
    <svg:svg> no SVG: browsers show none of their images. Only what any element
    carries (a style, a lazy-loading attribute) and the unprefixed <img> count."""
    found = extract(XHTML_PREFIXES, PAGE, parser=parser)
    assert found.base_url == PAGE
    assert found.images == (D + "lazy.png", D + "styled.png", D + "unprefixed.png")
    assert found.links == () and found.stylesheets == ()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("parser", PARSERS)
def test_prefixes_of_elements_that_never_close_are_resolved_in_time_of_the_page(
        parser: str) -> None:
    """Each prefixed element's namespace is its nearest declaration's: asked of each
    element's way to the root, a page of elements nested in the one before took time
    of its square."""
    html = ('<html xmlns:h="http://www.w3.org/1999/xhtml"><body>' + "".join(
        f'<h:span><h:img src="/n/{n}.png"/>' for n in range(20_000))).encode()
    started = time.perf_counter()
    found = extract(html, PAGE, parser=parser, xml=True)
    elapsed = time.perf_counter() - started
    assert len(found.images) == 20_000
    assert elapsed < 10, f"{elapsed:.1f} s"


@pytest.mark.parametrize("parser", PARSERS)
def test_an_iframe_srcdoc_is_read_as_part_of_the_page(parser: str) -> None:
    """<iframe srcdoc> shows the page the attribute holds, not its src; that page's
    references resolve against the framing page's base."""
    html = b"""<head><base href="/base/"></head><img src="outer.png">
        <iframe src="ignored.html" srcdoc='<link rel=stylesheet href="in.css">
          <img src="inner.png" alt="Inner"><a href="next.html">n</a><img src="outer.png">
          <iframe srcdoc="&amp;lt;img src=/deeper.jpg&amp;gt;"></iframe>'></iframe>
        <iframe src="framed.html"></iframe><iframe srcdoc=""></iframe>"""
    found = extract(html, PAGE, parser=parser)
    assert [(ref.url, ref.kind, ref.alt) for ref in found.image_refs] == [
        (ROOT + "base/outer.png", "img", None), (ROOT + "base/inner.png", "img", "Inner"),
        (ROOT + "deeper.jpg", "img", None)]
    assert found.links == (ROOT + "base/next.html", ROOT + "base/framed.html")
    assert found.stylesheets == (ROOT + "base/in.css",)


def test_srcdoc_nesting_is_bounded() -> None:
    html = '<img src="0.png">'
    for level in range(1, 12):
        html = f'<img src="{level}.png"><iframe srcdoc="{escape(html)}"></iframe>'
    assert len(extract(html, PAGE).images) == 5  # the page and four levels of srcdoc


def test_anchors_split_into_pages_and_images() -> None:
    result = page("anchor")
    assert result.links == (
        D + "next.html",
        ROOT + "about",
        D + "gallery?img=cat.jpg",
        ROOT + "search?q=dogs",
        D + "area-page.html",
        "https://embed.example.org/widget",
        D + "frame.html",
    )
    assert result.images == (
        D + "photo.jpg",
        "https://images.example.net/full/PHOTO.PNG?size=large",
        D + "area.gif",
        D + "image.svg",
    )


def test_the_first_base_href_applies_to_the_whole_page() -> None:
    result = page("base")
    assert result.base_url == "http://example.com/assets/v2/"
    assert result.images == (
        "http://example.com/assets/v2/before-base.jpg",
        "http://example.com/assets/v2/logo.png",
        "http://example.com/assets/shared/icon.png",
        ROOT + "rooted.png",
    )
    assert result.links == ("http://example.com/assets/v2/docs/index.html",)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("holder", ["template", "svg", "math"])
def test_a_base_in_a_template_or_foreign_content_is_not_the_documents(
        parser: str, holder: str) -> None:
    html = (f'<{holder}><base href="/elsewhere/"></{holder}><img src="a.png">'
            '<a href="next.html">next</a><base href="/real/">').encode()
    found = extract(html, PAGE, parser=parser)
    assert found.base_url == ROOT + "real/"
    assert found.images == (ROOT + "real/a.png",) and found.links == (ROOT + "real/next.html",)


def test_html_entities_are_decoded_before_resolving() -> None:
    result = page("entities")
    assert result.images == (
        ROOT + "img?id=1&size=large",
        ROOT + "path/with/slashes.png",
        ROOT + "caf%C3%A9.jpg",
        ROOT + "copy%C2%A9.png",
        D + "quoted-entity.png",
        ROOT + "a%C2%A0b.png",
    )
    assert result.links == (ROOT + "list?a=1&b=2%3C3",)


def test_non_http_schemes_and_bad_urls_are_skipped() -> None:
    result = page("skip_schemes")
    # "http:///no-host.jpg" is no bad URL to a browser: it names the host "no-host.jpg".
    assert result.images == ("http://no-host.jpg/", D + "kept.jpg")
    assert result.links == (D + "kept.html",)


def test_broken_markup() -> None:
    result = page("broken_markup")
    assert result.links == (D + "page1.html", D + "page2.html")
    assert result.images == (
        D + "unquoted.jpg",
        D + "no-close-quote.png%20alt=",  # the attribute runs to the next quote, as in browsers
        D + "after.png",
        D + "in-table.gif",
        D + "single.jpg",  # of two src attributes, the first counts
        D + "spaced-attr.png",
        D + "tail.jpg",
    )


def test_latin1_page_bytes() -> None:
    raw = (PAGES / "latin1.html").read_bytes()
    assert "é".encode("iso-8859-1") in raw  # the fixture really is ISO-8859-1
    result = page("latin1")
    # Paths are always UTF-8; a query takes the page's encoding, as in browsers.
    assert result.images == (ROOT + "caf%C3%A9/cr%C3%A8me.jpg", ROOT + "search.png?q=%E9t%E9")
    assert result.links == (ROOT + "%C3%BCber.html",)


def test_shift_jis_page_bytes() -> None:
    result = page("shift_jis")
    assert result.images == (
        ROOT + "%E7%94%BB%E5%83%8F/%E5%86%99%E7%9C%9F.jpg",  # 画像/写真.jpg
        ROOT + "search.png?q=%93%FA%96%7B",  # 日本 in Shift_JIS
    )
    assert result.links == (ROOT + "%E3%83%9A%E3%83%BC%E3%82%B8.html",)


def test_utf16_page_bytes() -> None:
    result = page("utf16")
    assert result.images == (ROOT + "%C3%BCn%C3%AFc%C3%B6d%C3%A9.png?q=%C3%BC",)
    assert result.links == (ROOT + "stra%C3%9Fe.html",)


def test_an_explicit_encoding_overrides_detection() -> None:
    raw = '<meta charset="utf-8"><img src="/é.png">'.encode("iso-8859-1")
    assert extract(raw, PAGE, encoding="iso-8859-1").images == (ROOT + "%C3%A9.png",)
    assert extract(raw, PAGE).images == (ROOT + "%EF%BF%BD.png",)  # declared UTF-8, isn't


def test_a_byte_order_mark_beats_the_given_encoding() -> None:
    raw = '<img src="/ü.png">'.encode("utf-8-sig")
    assert extract(raw, PAGE, encoding="shift_jis").images == (ROOT + "%C3%BC.png",)


def test_text_and_bytes_give_the_same_result() -> None:
    raw = (PAGES / "css.html").read_bytes()
    assert extract(raw.decode("utf-8"), PAGE) == extract(raw, PAGE)


# --- sources switch on and off ------------------------------------------------------

# For each source, a fixture and one image only that source finds there.
_ONLY_FROM = {
    "img": ("img", ROOT + "rooted.png"),
    "srcset": ("srcset", D + "small.jpg"),
    "picture": ("picture", D + "wide.webp"),
    "lazy": ("lazy", D + "lazy-src.jpg"),
    "css": ("css", D + "body-bg.png"),
    "meta": ("meta", ROOT + "og-image.jpg"),
    "link": ("link", ROOT + "favicon.ico"),
    "input": ("input", D + "submit.png"),
    "svg": ("svg", D + "svg-href.png"),
    "anchor": ("anchor", D + "photo.jpg"),
}


def test_every_source_has_a_switch_test() -> None:
    assert set(_ONLY_FROM) == SOURCES


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_switching_a_source_off_removes_its_urls(source: str) -> None:
    fixture, url = _ONLY_FROM[source]
    assert url in page(fixture).images
    assert url not in page(fixture, sources=SOURCES - {source}).images
    assert url in page(fixture, sources=frozenset({source})).images


def test_with_no_sources_only_links_remain() -> None:
    result = page("anchor", sources=frozenset())
    assert result.images == ()
    assert D + "next.html" in result.links
    assert D + "photo.jpg" not in result.links  # an image file is never a page to crawl


@pytest.mark.parametrize(("content", "url"), [
    ("0; url=/next", "/next"), ("5;URL='/a b'", "/a b"), ('0 ; url = "/q" tail', "/q"),
    ("0, /next", "/next"), ("1.5; /c", "/c"), (".5;/d", "/d"), ("0;uRl=/a", "/a"),
    ("0; urx=/b", "urx=/b"), ("0;url", "url"),  # not "url=": the rest is the URL
    ("3", None), ("url=/x", None), ("0;url=", None), ("x; url=/y", None), ("", None)])
def test_a_refresh_names_its_url_as_the_html_standard_reads_it(content: str,
                                                               url: str | None) -> None:
    assert refresh_url(content) == url


@pytest.mark.parametrize("parser", ["lxml", "beautifulsoup"])
def test_a_meta_refresh_is_a_link(parser: str) -> None:
    """Many sites' front pages only send the browser on: that is where the crawl goes."""
    html = ('<html><head><meta http-equiv="Refresh" content="0; URL=en/index.html">'
            '<meta http-equiv="refresh" content="30"></head><body></body></html>')
    result = extract(html, PAGE, parser=parser, sources=frozenset())
    assert result.links == (D + "en/index.html",)


def test_picture_off_keeps_the_fallback_img() -> None:
    assert page("picture", sources=SOURCES - {"picture"}).images == (
        D + "fallback.jpg", D + "video-poster.jpg")


def test_an_unknown_source_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown image sources: video"):
        extract("<p>", PAGE, sources=frozenset({"img", "video"}))


# --- helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("a.jpg 1x, b.jpg 2x", ["a.jpg", "b.jpg"]),
    ("a.jpg 100w,b.jpg 200w", ["a.jpg", "b.jpg"]),
    ("a,b.jpg 1x", ["a,b.jpg"]),
    ("a.jpg,b.jpg", ["a.jpg,b.jpg"]),
    ("a.jpg, b.jpg", ["a.jpg", "b.jpg"]),
    ("a.jpg,, ,b.jpg", ["a.jpg", "b.jpg"]),
    ("a.jpg foo(1, 2) 1x, b.jpg", ["a.jpg", "b.jpg"]),
    ("a.jpg (unclosed, b.jpg", ["a.jpg"]),
    ("", []),
    (" , ,", []),
])
def test_parse_srcset(value: str, expected: list[str]) -> None:
    assert parse_srcset(value) == expected


@pytest.mark.parametrize(("css", "expected"), [
    ("a{background:url(x.png)}", ["x.png"]),
    ("a{background:url( 'x y.png' )}", ["x y.png"]),
    ('a{background:url("x\\"y.png")}', ['x"y.png']),
    ("a{background:url(\\31 23.png)}", ["123.png"]),
    ("@import url(s.css); a{b:url(i.png)}", ["i.png"]),
    ("/* url(c.png) */ a{b:url(i.png)}", ["i.png"]),
    ("a{content:'url(s.png)'} b{c:url(i.png)}", ["i.png"]),
    ("a{b:url(x y.png)}", []),  # whitespace inside an unquoted url() makes it invalid
    ("a{b:myurl(x.png)}", []),
    ("a{b:url(unclosed.png", []),
    # A namespace is no image (nor a request a browser makes).
    ("@namespace svg url(http://www.w3.org/2000/svg); a{b:url(i.png)}", ["i.png"]),
    ('@namespace url("http://www.w3.org/1999/xhtml");', []),
    # image-set(): each option's string or url() is an image a browser may load.
    ('a{b:image-set("x.png" 1x, "x-2x.png" 2x)}', ["x.png", "x-2x.png"]),
    ("a{b:-webkit-image-set(url(x.png) 1x, url('x-2x.png') 2x)}", ["x.png", "x-2x.png"]),
    ('a{b:image-set("x.avif" type("image/avif"), "x.png" type("image/png"))}',
     ["x.avif", "x.png"]),
    ('a{b:image-set(linear-gradient(red, blue) 1x, "x.png" 2x)} c{d:url(i.png)}',
     ["x.png", "i.png"]),
    # A paren inside a quoted url() of the set, a function two deep: what follows is read.
    ('a{b:image-set(url("a(1).png") 1x,url("b.png") 2x)}c{d:url(c.png)}',
     ["a(1).png", "b.png", "c.png"]),
    ('a{b:image-set(linear-gradient(rgba(0,0,0,.5),red) 1x, "x.png" 2x)} c{d:url(i.png)}',
     ["x.png", "i.png"]),
])
def test_css_urls(css: str, expected: list[str]) -> None:
    assert css_urls(css) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("http://a.example/x.jpg", True),
    ("http://a.example/x.JPEG?w=100", True),
    ("http://a.example/dir.png/page", False),
    ("http://a.example/page?file=x.png", False),
    ("http://a.example/x.svg#frag", True),
    ("http://a.example/", False),
    ("http://a.example/jpg", False),
])
def test_has_image_extension(url: str, expected: bool) -> None:
    assert has_image_extension(url) is expected


def test_constants() -> None:
    assert frozenset({"img", "srcset", "picture", "lazy", "css", "meta", "link", "input",
                      "svg", "anchor"}) == SOURCES
    assert DEFAULT_LAZY_ATTRIBUTES == (
        "data-src", "data-srcset", "data-original", "data-lazy-src", "data-lazy")
    assert frozenset({"jpg", "jpeg", "jpe", "png", "gif", "webp", "avif", "heic", "heif", "hif",
                      "jxl", "bmp", "tif", "tiff", "ico", "svg"}) == IMAGE_EXTENSIONS


@pytest.mark.parametrize("parser", PARSERS)
def test_what_comes_after_the_end_of_html_is_found(parser: str) -> None:
    """libxml2 puts what follows </html> in an <html> of its own, beside the page's: the
    lxml engine walked the page's alone, and lost a page's last images."""
    found = extract("<p>a</p></body></html><img src='/pixel.gif'><figure><img src='/f.png'>"
                    "<figcaption>Late</figcaption></figure><div style='background: url(/b.png)'>",
                    PAGE, parser=parser)
    assert [(ref.url.rsplit("/", 1)[1], ref.caption) for ref in found.image_refs] == [
        ("pixel.gif", None), ("f.png", "Late"), ("b.png", None)]


@pytest.mark.parametrize("parser", PARSERS)
def test_a_caption_is_its_text_without_scripts_and_style_sheets_on_every_engine(
        parser: str) -> None:
    """The lxml engine took a <script>'s code and a <style>'s rules into the caption;
    BeautifulSoup's left out an <rt>'s text, and all of a <template>'s caption."""
    found = extract("<figure><img src='/a.png'><figcaption>A<script>var x;</script>"
                    "<style>b{}</style> <ruby>K<rt>kan</rt></ruby></figcaption></figure>"
                    "<template><figure><img src='/t.png'><figcaption>T</figcaption></figure>"
                    "</template>", PAGE, parser=parser)
    assert [ref.caption for ref in found.image_refs] == ["A Kkan", "T"]


@pytest.mark.parametrize("parser", PARSERS)
def test_an_image_is_described_by_the_first_element_that_shows_it(parser: str) -> None:
    """A link to an image (a thumbnail's <a href> around it) or the head's og:image came
    first: the image's ref was theirs, and its alt text and caption were lost. Its place
    in the page's order stays that of its first reference."""
    found = extract("<head><meta property='og:image' content='/og.png'></head>"
                    "<a href='/a.png' title='link'>see</a><a href='/only.png'>x</a>"
                    "<figure><img src='/a.png' alt='shown'><figcaption>Cap</figcaption>"
                    "</figure><img src='/og.png' alt='the og image' width='40'>"
                    "<img src='/kept.png' alt='first'><a href='/kept.png'>again</a>"
                    "<img src='/kept.png' alt='second'>", PAGE, parser=parser)
    assert [(ref.url.rsplit("/", 1)[1], ref.kind, ref.alt, ref.caption, ref.width)
            for ref in found.image_refs] == [
        ("og.png", "img", "the og image", None, 40), ("a.png", "img", "shown", "Cap", None),
        ("only.png", "anchor", None, None, None), ("kept.png", "img", "first", None, None)]


def test_duplicates_are_removed_after_normalisation_keeping_the_first() -> None:
    html = """<img src="HTTP://Example.com:80/a.png#x"><img src="/b.png"><img src="/./a.png">
              <a href="/p"><a href="http://EXAMPLE.com/p#frag"><a href="/q">"""
    result = extract(html, PAGE)
    assert result.images == (ROOT + "a.png", ROOT + "b.png")
    assert result.links == (ROOT + "p", ROOT + "q")


def test_a_base_href_that_is_not_http_is_ignored() -> None:
    result = extract('<base href="javascript:x"><img src="a.png">', PAGE)
    assert result.base_url == PAGE
    assert result.images == (D + "a.png",)


def test_the_page_url_is_normalised_for_resolution() -> None:
    result = extract('<img src="a.png">', "HTTP://Example.COM:80/dir/./page.html#top")
    assert result.base_url == PAGE
    assert result.images == (D + "a.png",)


def test_a_bad_page_url_still_yields_absolute_references() -> None:
    result = extract('<img src="a.png"><img src="http://x.example/b.png">', "not a url")
    assert result.images == ("http://x.example/b.png",)


def test_backslashes_act_as_slashes_before_the_query() -> None:
    result = extract(r'<img src="\\cdn.example.org\img\a.png?x=\y">', PAGE)
    # In the query a backslash is sent as it is, as browsers send it.
    assert result.images == ("http://cdn.example.org/img/a.png?x=\\y",)


# --- robustness ---------------------------------------------------------------------


def _check(result: Extraction) -> None:
    for url in (*result.links, *result.images):
        assert url.startswith(("http://", "https://"))
        assert normalize(url) == url
    assert len(set(result.links)) == len(result.links)
    assert len(set(result.images)) == len(result.images)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_never_raises(html: str | bytes) -> None:
    _check(extract(html, PAGE))


_TAGS = ["a", "img", "source", "picture", "video", "link", "meta", "input", "image", "svg",
         "style", "base", "div", "iframe", "area", "frame", "script", "noscript", "table",
         "object", "embed", "use", "h:img", "svg:svg", "svg:image", "h:picture", "h:source"]
_ATTRIBUTES = ["src", "href", "srcset", "style", "data-src", "data-srcset", "rel", "as",
               "property", "name", "content", "type", "xlink:href", "imagesrcset", "data-x",
               "data", "srcdoc", "xmlns:h", "xmlns:svg"]
_VALUES = st.one_of(
    st.sampled_from(["a.png", "/b.jpg", "//h.example/c.gif", "https://x.example/d.webp",
                     "javascript:alert(1)", "data:image/png;base64,AA", "icon", "image",
                     "og:image", "url(e.png)", "f.png 1x, g.png 2x", "http://[::1", "http://a:x/",
                     "../../..", "?q", "#f", "", " ", "\\\\evil\\x.png", "%zz", "http://é.example/",
                     "http://www.w3.org/1999/xhtml", "http://www.w3.org/2000/svg"]),
    st.text(max_size=20),
)


@st.composite
def tag_soup(draw: st.DrawFn) -> str:
    """Fragments of HTML put together with no care for nesting, quoting or closing."""
    pieces = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.integers(0, 5))
        if kind <= 2:
            attributes = "".join(
                f' {draw(st.sampled_from(_ATTRIBUTES))}'
                f'{draw(st.sampled_from(["=", "=", " = ", ""]))}'
                f'{draw(st.sampled_from(["", chr(34), chr(39)]))}{draw(_VALUES)}'
                for _ in range(draw(st.integers(0, 4))))
            pieces.append(f"<{draw(st.sampled_from(_TAGS))}{attributes}"
                          f"{draw(st.sampled_from(['>', '/>', '', '>']))}")
        elif kind == 3:
            pieces.append(f"</{draw(st.sampled_from(_TAGS))}>")
        elif kind == 4:
            pieces.append(draw(st.sampled_from(
                ["<!--", "-->", "<![CDATA[", "&amp;", "&#0;", "&#x110000;", "url(", "/*", "<",
                 "@import ", '"', "'", "\x00", "<?xml version='1.0' encoding='bogus'?>"])))
        else:
            pieces.append(draw(st.text(max_size=15)))
    return "".join(pieces)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tag_soup(), st.sampled_from([None, "utf-8", "latin-1", "shift_jis", "no-such-codec"]))
def test_tag_soup_never_raises_and_yields_only_http_urls(soup: str, encoding: str | None) -> None:
    _check(extract(soup, PAGE))
    _check(extract(soup.encode("utf-8", "surrogatepass"), PAGE, encoding=encoding))
    _check(extract(soup, PAGE, xml=True))


@pytest.mark.timeout(30)
def test_nasty_corpus_finishes_quickly() -> None:
    files = sorted(CORPUS.glob("*.html"))
    assert len(files) >= 10
    for path in files:
        data = path.read_bytes()
        for html in (data, data.decode("utf-8", "replace")):
            started = time.perf_counter()
            _check(extract(html, "http://example.com/"))
            elapsed = time.perf_counter() - started
            assert elapsed < 5, f"{path.name} took {elapsed:.1f}s"


def test_corpus_results_that_matter() -> None:
    def images(name: str) -> tuple[str, ...]:
        return extract((CORPUS / name).read_bytes(), "http://example.com/").images

    assert images("deep_nesting.html") == (ROOT + "deep.png",)
    # A megabyte-long reference is left out; the images around it are kept.
    assert images("huge_attribute.html") == (ROOT + "a.png", ROOT + "after.png")
    assert images("nul_bytes.html") == (ROOT + "a%EF%BF%BDb.png", ROOT + "c.png")
    assert images("unterminated_comment.html") == ()
    assert images("nested_sources.html") == (ROOT + "s.png",)
    assert images("utf16_no_bom.html") == (ROOT + "%C3%BC.png",)
    assert images("bad_declared_charset.html") == (ROOT + "%C3%A9.png",)


# --- style sheets -------------------------------------------------------------------


def test_style_sheets_are_reported_apart_from_images() -> None:
    html = b"""<link rel="stylesheet" href="/css/site.css"><link rel="alternate stylesheet"
        href="alt.css"><link rel=icon href=/favicon.ico><style>@import url("print.css") print;
        @import 'more.css'; body { background: url(bg.png) }
        @font-face { font-family: F; src: url(f.woff2) }</style>"""
    result = extract(html, PAGE)
    # An alternate sheet is not applied by browsers: its images are shown nowhere.
    assert result.stylesheets == (ROOT + "css/site.css", D + "print.css", D + "more.css")
    assert result.images == (ROOT + "favicon.ico", D + "bg.png")
    assert extract(html, PAGE, sources=SOURCES - {"css"}).stylesheets == ()


def test_stylesheet_urls_finds_images_and_imports_but_no_fonts() -> None:
    css = r"""@import url("base.css") screen; @import 'x.css';
        @font-face { font-family: F; src: url(f.woff2) format("woff2"), url(f.svg#F) }
        body { background: url(../img/bg.png) } /* url(commented.png) */
        .a { background: url('data:image/png;base64,AA') } .b { src: url(loose.ttf?v=1) }
        .c { content: "url(in-a-string.png)"; background: url("a\62 c.png") }
        .d { background: url(//cdn.example/d.png), url(bg.png) }"""
    refs = stylesheet_urls(css, "http://example.com/css/site.css")
    assert refs.images == ("http://example.com/img/bg.png", "http://example.com/css/abc.png",
                           "http://cdn.example/d.png", "http://example.com/css/bg.png")
    assert refs.imports == ("http://example.com/css/base.css", "http://example.com/css/x.css")


@pytest.mark.parametrize("css", ["", "@import", "@import url(", "@font-face {", "url(",
                                 "@import 'unterminated", "a{b:url(x.png)"])
def test_stylesheet_urls_of_broken_css_never_raise(css: str) -> None:
    refs = stylesheet_urls(css, "http://example.com/s.css")
    assert all(url.startswith("http://") for url in (*refs.images, *refs.imports))


# Each took minutes before (a scan that failed only at the end, at every start):
# a style sheet or <style> block like these froze the master or a parser.
HOSTILE_CSS = {
    "at-rule without a block": "@font-face " * 200_000,
    "spaces of an unclosed url(": "url(" + " " * 2_000_000,
    "image-sets never closed": "image-set(" * 200_000,
    "an image-set of an unclosed string": 'image-set("' + "x" * 2_000_000,
    "namespaces without an end": "@namespace " * 200_000,
    "parens in an image-set never closed": "image-set(" + "((" * 500_000,
    "quotes in nested parens of an image-set": "image-set((\"" + "x" * 2_000_000,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(HOSTILE_CSS))
def test_hostile_css_is_scanned_in_one_pass(name: str) -> None:
    css = HOSTILE_CSS[name]
    for scan in (lambda: stylesheet_urls(css + "a{b:url(late.png)}", "http://example.com/s.css"),
                 lambda: extract(f"<style>{css}</style>", PAGE)):
        started = time.perf_counter()
        scan()
        elapsed = time.perf_counter() - started
        assert elapsed < 5, f"{name}: {elapsed:.1f} s for {len(css):,} characters"


# Each took minutes before: past 2,048 levels the page goes to BeautifulSoup's tree,
# where each image asked its way to the root for a <figure> (rows that never close), and
# each <source> searched its whole <picture> for the <img> (libxml2 nests sources it
# does not know as empty): time of the square of the page.
HOSTILE_PAGES = {
    "rows that never close": "".join(f'<div class="row"><img src="/i/{n}.png">'
                                     for n in range(20_000)),
    "a picture of thousands of sources": "<figure><picture>" + "".join(
        f'<source srcset="/s/{n}.webp">' for n in range(20_000))
        + '<img src="/s/last.png" alt="the picture"></picture></figure>',
    # Each nested in the one before: each picture's search for its <img> walked to the
    # end of the page below it first.
    "pictures that never close": "".join(
        f'<picture><source srcset="/p/{n}.webp"><img src="/p/{n}.png" alt="the picture">'
        for n in range(10_000)),
    # Past 2,048 levels: each image looked through all of the figure's children for its
    # <figcaption>, in Python.
    "a figure of thousands of images": "<div>" * 3_000 + "<figure>" + "".join(
        f'<img src="/f/{n}.png">' for n in range(20_000)) + "<figcaption>All</figcaption>",
    # Each caption held the rest of the page: the text of every caption was read to the
    # end of the page (200 s). A figure's caption leaves out the figures nested in it.
    "figures whose captions never close": "".join(
        f'<figure><figcaption>All<img src="/c/{n}.png">' for n in range(20_000)),
}

# BeautifulSoup's tree itself takes time of the square of these (it links each string
# added below an element with children by walking up to an ancestor with a next
# sibling: on a page nested past 2,048 levels, the root): the lxml engine's tree of
# such a page is built from libxml2's events (crawler.parse.eventtree). 250 s before.
HOSTILE_TO_BEAUTIFULSOUP = {
    "figures whose captions never close, a comment in each": "".join(
        f'<figure><img src="/b/{n}.png"><figcaption>All<b></b><!-- c --> '
        for n in range(20_000)),
    "spans that never close, text after a comment in each": "".join(
        f'<span>t<img src="/s/{n}.png"><!-- c --> ' for n in range(20_000)),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("name", list(HOSTILE_PAGES))
def test_hostile_pages_are_walked_in_time_of_their_length(name: str, parser: str) -> None:
    started = time.perf_counter()
    found = extract(HOSTILE_PAGES[name], PAGE, parser=parser)
    elapsed = time.perf_counter() - started
    assert len(found.images) == 20_000 + name.startswith("a picture")  # and its <img>
    assert elapsed < 10, f"{name}: {elapsed:.1f} s"
    if "picture" in name:
        assert {ref.alt for ref in found.image_refs} == {"the picture"}
    if "figure" in name:
        assert {ref.caption for ref in found.image_refs} == {"All"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(HOSTILE_TO_BEAUTIFULSOUP))
def test_pages_nested_past_libxml2s_trees_are_walked_in_time_of_their_length(
        name: str) -> None:
    started = time.perf_counter()
    found = extract(HOSTILE_TO_BEAUTIFULSOUP[name], PAGE)
    elapsed = time.perf_counter() - started
    assert len(found.images) == 20_000
    assert elapsed < 10, f"{name}: {elapsed:.1f} s"
    if "figure" in name:
        assert {ref.caption for ref in found.image_refs} == {"All"}


def test_an_unfinished_font_face_rule_runs_to_the_end_as_in_css() -> None:
    # Its prelude ends only at "{" or ";": what follows "@font-face x;" is read.
    assert css_urls("@font-face x; a{b:url(a.png)}") == ["a.png"]
    assert css_urls("@font-face x a{b:url(a.png)}") == []
    assert css_urls("a{b:url(   )} c{d:url(  c.png  )}") == ["", "c.png"]


# --- what the page said about each image ---------------------------------------------


def test_each_image_carries_its_kind_and_the_words_around_it() -> None:
    html = b"""<figure><picture><source srcset="a.webp 1x"><img src="a.jpg" alt=" A
        cat " title="T" width="640px" height="x"></picture>
        <figcaption>The <b>cat</b> <!-- not this -->sits</figcaption></figure>
        <meta property="og:image:url" content="/og.png"><img src="a.jpg" alt="again">
        <div style="background: url(bg.png)" title="bg"></div><a href="photo.jpg">p</a>
        <img srcset="s.png 2x" alt=""><input type=image src=go.png alt=Go>"""
    refs = extract(html, PAGE).image_refs
    assert refs == (
        ImageRef(D + "a.webp", "picture", "A cat", "T", "The cat sits", 640, None),
        ImageRef(D + "a.jpg", "img", "A cat", "T", "The cat sits", 640, None),
        ImageRef(ROOT + "og.png", "og:image"),
        ImageRef(D + "bg.png", "css", None, "bg"),
        ImageRef(D + "photo.jpg", "anchor"),
        ImageRef(D + "s.png", "srcset", ""),
        ImageRef(D + "go.png", "input", "Go"),
    )
    assert tuple(ref.url for ref in refs) == extract(html, PAGE).images


def test_image_refs_keep_to_a_bounded_size() -> None:
    html = b'<figure><img src="a.png" alt="' + b"x " * 100_000 + b'"><figcaption>' \
        + b"y" * 100_000 + b"</figcaption></figure>"
    (ref,) = extract(html, PAGE).image_refs
    assert ref.alt is not None and len(ref.alt) == 1000
    assert ref.caption is not None and len(ref.caption) == 1000


def test_an_undeclared_page_in_a_non_latin_encoding_is_recognised() -> None:
    text = ("<p>" + "日本語のテキストです。これは画像のページです。" * 5
            + '<img src="/画像.png?q=日本">')
    result = extract(text.encode("shift_jis"), PAGE)
    # Read as Shift_JIS (not windows-1252): the path in UTF-8, the query in the page's.
    assert result.images == (ROOT + "%E7%94%BB%E5%83%8F.png?q=%93%FA%96%7B",)


@pytest.mark.parametrize("charset", [None, "bogus-xyz"])
def test_a_few_accents_on_an_undeclared_page_are_windows_1252(charset: str | None) -> None:
    """Not a guess of the detector: on so few bytes it read Big5, which swallowed a letter."""
    html = b'<html><body><img src="/i/b\xe4d.png" alt="Gr\xf6\xdfe"></body></html>'
    assert extract(html, PAGE, encoding=charset).images == (ROOT + "i/b%C3%A4d.png",)


@pytest.mark.parametrize("label", ["base64", "hex", "rot13", "zlib", "bz2", "uu", "quopri",
                                   "idna", "punycode", "undefined", "utf-7", "unicode_escape"])
@pytest.mark.parametrize("parser", ["lxml", "beautifulsoup"])
def test_a_charset_naming_no_page_encoding_is_read_as_if_none_was_named(
        label: str, parser: str) -> None:
    """Python has codecs of these names; decoding a page with them raised or garbled it."""
    html = "<p>caf\u00e9</p><img src='/\u00e9t\u00e9.png'>".encode()
    expected = (ROOT + "%C3%A9t%C3%A9.png",)
    assert extract(html, PAGE, encoding=label, parser=parser).images == expected
    declared = f"<meta charset='{label}'>".encode() + html
    assert extract(declared, PAGE, parser=parser).images == expected
    assert decode(declared, label) == (declared.decode(), "utf-8")


@pytest.mark.parametrize("text", [
    "<p>Снимок экрана</p><img src='снимок.png'><img src='日本.png'>",
    "<p>Café déjà vu — naïve</p><img src='über.png'><img src='façade.png'>"])
def test_an_undeclared_utf8_page_with_a_stray_byte_is_utf8(text: str) -> None:
    """A footer's copyright sign pasted from a Latin-1 file: the rest is UTF-8, as
    Chromium reads it. Read as windows-1252 (the Cyrillic page) or as Thai (the French
    one, by the detector), every image address past ASCII was another, and 404."""
    page = text.encode() + b"<p>\xa9 2020</p>"
    expected = extract(text.encode(), PAGE).images
    assert len(expected) == 2
    assert extract(page, PAGE).images == expected
    assert decode(page, None) == (text + "<p>\ufffd 2020</p>", "utf-8")


def test_a_short_undeclared_japanese_page_is_still_recognised() -> None:
    """15 bytes past ASCII, in pairs: Shift_JIS, as the detector says."""
    text = '<title>画像ギャラリー</title><img src="/写真.png">'
    assert len([b for b in text.encode("shift_jis") if b > 127]) == 15
    assert extract(text.encode("shift_jis"), PAGE).images == (ROOT + "%E5%86%99%E7%9C%9F.png",)


def test_a_url_both_linked_and_shown_is_a_link_and_an_image() -> None:
    html = ('<a href="/show">x</a><a href="/show">again</a><img src="/show">'
            '<a href="/big.png">full size</a><a href="/big.png">again</a>')
    found = extract(html, "http://site.example/")
    assert found.links == ("http://site.example/show",)
    assert found.images == ("http://site.example/show", "http://site.example/big.png")
    assert [ref.kind for ref in found.image_refs] == ["img", "anchor"]


@pytest.mark.parametrize("raw", [
    "<p>caf\u00e9 <img src='/\u00e9t\u00e9.png' alt='\u00e9t\u00e9'></p>".encode(),  # clean UTF-8
    b"<p>\xe9t\xe9 <img src='/a.png' alt='\xff'></p><meta charset=utf-8>",  # invalid: replaced
    b"\xef\xbb\xbf<img src='/bom.png' alt='\xc3\xa9'>",  # a byte-order mark
    b"<img src='/nul.png' alt='a\x00b'><img src='/b\x00c.png'>",  # NULs
    "<img src='/\ufffd.png' alt='\ufffd'>".encode(),  # U+FFFD of its own
])
def test_utf8_bytes_are_read_as_their_decoded_text_is(raw: bytes) -> None:
    """Clean UTF-8 goes to lxml as it came; every page gives what its decoded text gives."""
    text, _ = decode(raw, None)
    assert extract(raw, "http://h/p/") == extract(text, "http://h/p/")


def test_utf8_named_by_the_http_charset_is_read_as_its_decoded_text_is() -> None:
    raw = b"<img src='/\xc3\xa9.png' alt='\xff'><img src='/b.png' alt='\xc3\xa9'>"
    text, used = decode(raw, "utf8")
    assert used == "utf-8"
    assert extract(raw, "http://h/p/", encoding="utf8") == extract(text, "http://h/p/")
    clean = "<img src='/\u00e9.png'>".encode()
    assert (extract(clean, "http://h/p/", encoding="UTF-8")
            == extract(decode(clean, "UTF-8")[0], "http://h/p/"))


@pytest.mark.parametrize("name", sorted(p.stem for p in PAGES.glob("*.html")))
def test_an_extraction_leaves_nothing_for_the_garbage_collector(name: str) -> None:
    """A page's tree and references are freed as soon as extract returns.

    A reference cycle per page (the collector once kept its handlers as bound methods)
    held every page's tree until a collection found it: a parser spent a tenth of its
    time collecting.
    """
    html = (PAGES / f"{name}.html").read_bytes()
    extract(html, PAGE)  # module-level caches filled
    gc.collect()
    debug = gc.get_debug()
    gc.set_debug(debug | gc.DEBUG_SAVEALL)  # what a collection finds is kept to look at
    try:
        for _ in range(3):
            extract(html, PAGE)
        gc.collect()
        # Only this module's and lxml's objects: other threads of the test run may
        # leave garbage of their own.
        left = [o for o in gc.garbage if isinstance(o, _Collector | _LxmlTree | etree._Element)]
    finally:
        gc.set_debug(debug)
        gc.garbage.clear()
    assert not left, f"{len(left)} objects of a page waited for the collector"
