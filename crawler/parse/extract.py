"""Find the pages and images an HTML page refers to.

Parsers report facts: ``extract`` is a pure function from a page (its HTML
and the URL it was fetched from) to the absolute, normalised URLs it links to
and the images it shows. It decides nothing about scope, robots.txt or
depth; the caller does. Pages come from the open web, so it never raises and
never hangs on bad markup: a URL it cannot make sense of is left out.

One parse (lxml by default, BeautifulSoup on request: see ``trees``), then one
pass over the elements that dispatches on the tag name; URLs are resolved and
normalised after the pass, because the first ``<base href>`` applies to the
whole document, even to elements before it.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from crawler.model.imagetype import IMAGE_EXTENSIONS  # one list: what the store also names files by
from crawler.parse.css import css_references, css_urls, stylesheet_urls
from crawler.parse.pagetext import decode
from crawler.parse.resolve import MAX_URL_LENGTH, Resolver, page_base
from crawler.parse.srcset import parse_srcset
from crawler.parse.trees import PARSERS, Getter, Tree, parse

__all__ = [
    "DEFAULT_LAZY_ATTRIBUTES",
    "IMAGE_EXTENSIONS",
    "MAX_URL_LENGTH",
    "PARSERS",
    "SOURCES",
    "Extraction",
    "ImageRef",
    "css_urls",
    "extract",
    "has_image_extension",
    "parse_srcset",
    "stylesheet_urls",
]

SOURCES: frozenset[str] = frozenset(
    {"img", "srcset", "picture", "lazy", "css", "meta", "link", "input", "svg", "anchor"})
DEFAULT_LAZY_ATTRIBUTES: tuple[str, ...] = (
    "data-src", "data-srcset", "data-original", "data-lazy-src", "data-lazy")

# Elements whose lazy-loading attributes name no image: lazysizes' iframes (often a
# video player on another host), scripts, a video's or audio's own sources.
_NOT_LAZY_IMAGES = frozenset({"iframe", "frame", "script", "video", "audio", "embed",
                              "object", "track", "link", "a", "area"})
# What a lazy attribute holds when it is a switch, not a URL (<img data-lazy="true">).
_FLAG_VALUE = re.compile(r"\s*(?:true|false|yes|no|on|off|lazy|eager|auto|[01])\s*",
                         re.IGNORECASE)
# Elements whose background attribute browsers still draw.
_BACKGROUND_TAGS = frozenset({"body", "table", "thead", "tbody", "tfoot", "tr", "td", "th"})
_NAV_TAGS = {"a": "href", "area": "href", "frame": "src", "iframe": "src"}
_META_KEYS = frozenset(
    {"og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src"})
_ICON_RELS = frozenset({"icon", "apple-touch-icon", "apple-touch-icon-precomposed", "image_src"})


class Extraction(NamedTuple):
    """What a page refers to.

    ``base_url`` is the URL relative references were resolved against (the
    page's ``<base href>`` if it has one). ``links`` are pages to crawl next,
    ``images`` are images to download; both are normalised absolute http(s)
    URLs in document order, each listed once.
    """

    base_url: str
    links: tuple[str, ...]
    images: tuple[str, ...]
    # Style sheets the page loads (<link rel=stylesheet>, @import in <style>),
    # for the caller to fetch and read with css.stylesheet_urls. Empty when
    # the "css" source is off.
    stylesheets: tuple[str, ...] = ()
    # One per image, in the order of ``images``: how and with what words the
    # page showed it.
    image_refs: tuple[ImageRef, ...] = ()
    # The page asks robots not to follow its links: <meta name="robots"> saying
    # "nofollow" or "none" (the caller decides whether to obey).
    nofollow: bool = False
    # The encoding the page was read in (the Encoding Standard's name): its style
    # sheets that declare none are read in it, as browsers read them.
    encoding: str = "utf-8"
    # References left out for their length alone (past MAX_URL_LENGTH), each counted
    # once: no link or image the crawl could fetch, but the page had them.
    too_long: int = 0


class ImageRef(NamedTuple):
    """One image and what the page said about it, at its first reference.

    ``kind`` is how it was referred to: "img" (src), "srcset", "picture" (a
    <source>), "lazy", "css" (backgrounds: CSS, and HTML's background
    attribute), "poster" (a <video>'s), "object" and "embed" (an image
    shown by ``<object data>`` or ``<embed src>``), "og:image", "twitter:image", "link"
    (icons, preloads), "input", "svg" or "anchor". ``alt``, ``title``, ``width`` and
    ``height`` are the attributes of the element (for a <picture> source, of
    the picture's <img>), ``caption`` the text of the <figcaption> of an
    enclosing <figure>; None where the page says nothing. A tuple, so that a
    page's worth crosses a process boundary cheaply.
    """

    url: str
    kind: str
    alt: str | None = None
    title: str | None = None
    caption: str | None = None
    width: int | None = None
    height: int | None = None


def has_image_extension(url: str) -> bool:
    """True when the URL's path (query ignored) ends in an image file extension."""
    path = url.partition("#")[0].partition("?")[0]
    name = path[path.rfind("/") + 1 :]
    dot = name.rfind(".")
    return dot >= 0 and name[dot + 1 :].lower() in IMAGE_EXTENSIONS


_WHITESPACE = "\t\n\f\r "


def refresh_url(content: str) -> str | None:
    """The URL of a ``<meta http-equiv="refresh" content="...">``, or None if it names
    none: the HTML standard's declarative refresh steps (``5; url='/next'``,
    ``0;URL=/next``, ``0, /next``)."""
    text = content.lstrip(_WHITESPACE)
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits == 0 and not text.startswith("."):
        return None
    text = text[digits:].lstrip("0123456789.")
    if not text or text[0] not in ";," + _WHITESPACE:
        return None
    text = text.lstrip(_WHITESPACE)
    if text[:1] in (";", ","):
        text = text[1:].lstrip(_WHITESPACE)
    url = text
    if text[:1] in ("u", "U"):
        rest = text[1:]
        if rest[:1] in ("r", "R") and rest[1:2] in ("l", "L"):
            rest = rest[2:].lstrip(_WHITESPACE)
            if rest.startswith("="):
                url = _unquoted(rest[1:].lstrip(_WHITESPACE))
    else:
        url = _unquoted(text)
    return url or None


def _unquoted(text: str) -> str:
    if text[:1] in ("'", '"'):
        return text[1:].partition(text[0])[0]
    return text


class _Collector:
    """The single pass: record raw references in document order, tagged by kind."""

    def __init__(self, tree: Tree, sources: frozenset[str],
                 lazy_attributes: Sequence[str]) -> None:
        self.tree = tree
        self.sources = sources
        self.lazy = tuple(dict.fromkeys(name.lower() for name in lazy_attributes))
        # (role, raw reference, kind, node): role is "image", "nav" or "sheet";
        # kind and node say how and where the page referred to an image.
        self.refs: list[tuple[str, str, str, Any]] = []
        self.base: str | None = None
        self.nofollow = False  # <meta name="robots" content="nofollow">
        self._source_verdicts: dict[int, tuple[bool, Any]] = {}  # id(<source>) -> verdict

    def run(self) -> None:
        handlers = _HANDLERS
        lazy = self.lazy if "lazy" in self.sources else ()
        css = "css" in self.sources
        poster = "img" in self.sources
        # Attributes looked for on any element, found by the engine (libxml2's XPath):
        # walking every <td> of a page for a rare background cost more than the rest.
        attributes = (*lazy, *(("style", "background") if css else ()),
                      *(("poster",) if poster else ()))
        for name, get, node, carries in self.tree.elements(handlers.keys(), attributes):
            handler = handlers.get(name)
            if handler is not None:
                handler(self, get, node)
            if not carries:
                continue
            if css and name in _BACKGROUND_TAGS:  # the HTML background attribute
                self._image(get("background"), "css", node)
            if poster and name == "video":
                self._image(get("poster"), "poster", node)
            if lazy and name not in _NOT_LAZY_IMAGES and (
                    name != "source" or self._in_picture(node)):
                for attribute in lazy:
                    value = get(attribute)
                    if value:
                        if attribute.endswith("srcset"):
                            self._images(parse_srcset(value), "lazy", node)
                        elif not _FLAG_VALUE.fullmatch(value):
                            self._image(value, "lazy", node)
            if css:
                style = get("style")
                if style:
                    self._images(css_urls(style), "css", node)

    def _image(self, raw: str | None, kind: str, node: Any) -> None:
        if raw:
            self.refs.append(("image", raw, kind, node))

    def _images(self, raws: Iterable[str], kind: str, node: Any) -> None:
        self.refs.extend(("image", raw, kind, node) for raw in raws)

    def _anchor(self, get: Getter, node: Any) -> None:
        raw = _svg_href(get)  # (an SVG <a> may say it the old way)
        if raw:
            self.refs.append(("nav", raw, "anchor", node))

    def _frame(self, get: Getter, node: Any) -> None:
        raw = get("src")
        if raw:
            self.refs.append(("nav", raw, "anchor", node))

    def _iframe(self, get: Getter, node: Any) -> None:
        # <iframe srcdoc="...">: browsers show the page the attribute holds (and do not
        # load its src), whose references resolve against this page's base.
        srcdoc = get("srcdoc")
        if srcdoc is None:
            self._frame(get, node)
        elif srcdoc:
            self.refs.append(("srcdoc", srcdoc, "anchor", node))

    def _img(self, get: Getter, node: Any) -> None:
        if "img" in self.sources:
            self._image(get("src"), "img", node)
        if "srcset" in self.sources:
            srcset = get("srcset")
            if srcset:
                self._images(parse_srcset(srcset), "srcset", node)

    def _source(self, get: Getter, node: Any) -> None:
        if "picture" not in self.sources or not self._in_picture(node):
            return
        srcset = get("srcset")
        if srcset:
            self._images(parse_srcset(srcset), "picture", node)
        self._image(get("src"), "picture", node)

    def _in_picture(self, node: Any) -> bool:
        """Is this <source> a <picture>'s (an image) rather than a <video>'s or <audio>'s?

        libxml2 does not know <source> is a void element, so it nests each
        following sibling inside the previous one: look through those, using
        the verdict already recorded for the enclosing <source> (parents are
        visited first), which keeps long chains linear.
        """
        tree = self.tree
        parent = tree.parent(node)
        if parent is None:
            verdict = False
        else:
            parent_name = tree.name(parent)
            if parent_name == "source":
                verdict = self._source_verdicts.get(id(parent), (False, None))[0]
            elif parent_name == "svg":
                # Browsers end an <svg> at some HTML tags (<font face>), which
                # puts a following <source> back into the <picture>; libxml2
                # does not. Taking it is at worst one candidate too many.
                grandparent = tree.parent(parent)
                verdict = grandparent is not None and tree.name(grandparent) == "picture"
            else:
                verdict = parent_name == "picture"
        # The node is kept with its verdict: an lxml proxy's id is only its own
        # while the proxy lives.
        self._source_verdicts[id(node)] = (verdict, node)
        return verdict

    def _meta(self, get: Getter, node: Any) -> None:
        if (get("http-equiv") or "").strip().lower() == "refresh":
            # A page that sends the browser on (many sites' front pages) links there.
            target = refresh_url(get("content") or "")
            if target:
                self.refs.append(("nav", target, "anchor", node))
            return
        if (get("name") or "").strip().lower() == "robots":
            words = {word.strip().lower() for word in (get("content") or "").split(",")}
            self.nofollow = self.nofollow or bool(words & {"nofollow", "none"})
            return
        if "meta" not in self.sources:
            return
        for key in ("property", "name"):
            name = (get(key) or "").strip().lower()
            if name in _META_KEYS:
                # og:image:url is og:image; twitter:image:src is twitter:image
                self._image(get("content"), ":".join(name.split(":")[:2]), node)
                return

    def _link(self, get: Getter, node: Any) -> None:
        rel = set((get("rel") or "").lower().split())
        # An alternate style sheet is one a reader may switch to: browsers do not apply
        # it, so the images its rules name are shown by no page as it stands.
        if "stylesheet" in rel and "alternate" not in rel and "css" in self.sources:
            href = get("href")
            if href:
                self.refs.append(("sheet", href, "css", node))
        if "link" not in self.sources:
            return
        if rel & _ICON_RELS:
            self._image(get("href"), "link", node)
        elif "preload" in rel and (get("as") or "").strip().lower() == "image":
            self._image(get("href"), "link", node)
            srcset = get("imagesrcset")
            if srcset:
                self._images(parse_srcset(srcset), "link", node)

    def _object(self, get: Getter, node: Any) -> None:
        self._embedded(get("data"), get("type"), "object", node)

    def _embed(self, get: Getter, node: Any) -> None:
        self._embedded(get("src"), get("type"), "embed", node)

    def _embedded(self, raw: str | None, mime: str | None, kind: str, node: Any) -> None:
        """An <object data> or <embed src> that names an image, which browsers draw
        where the element stands (an SVG drawing, most often): by its type attribute
        or its file extension. Plug-in content (Flash, PDF) and pages are not images."""
        if "img" not in self.sources or not raw:
            return
        if (mime or "").strip().lower().startswith("image/") or has_image_extension(raw.strip()):
            self._image(raw, kind, node)

    def _input(self, get: Getter, node: Any) -> None:
        if "input" in self.sources and (get("type") or "").strip().lower() == "image":
            self._image(get("src"), "input", node)

    def _svg_image(self, get: Getter, node: Any) -> None:
        if get("src") and not (get("href") or get("xlink:href")):
            # HTML's <image src>, which browsers read as <img> (libxml2 keeps the name).
            self._img(get, node)
            return
        if "svg" in self.sources:
            self._image(_svg_href(get), "svg", node)

    def _svg_use(self, get: Getter, node: Any) -> None:
        # <use href="icons.svg#home">: the drawing of another file (an icon sprite), which
        # browsers fetch; "#home" alone is this page's own and resolves to nothing. An
        # SVG filter's <feImage href> is an image the browser fetches too.
        if "svg" in self.sources:
            self._image(_svg_href(get), "svg", node)

    def _style(self, get: Getter, node: Any) -> None:
        if "css" in self.sources:
            images, imports = css_references(self.tree.text(node))
            self._images(images, "css", node)
            self.refs.extend(("sheet", raw, "css", node) for raw in imports)

    def _base(self, get: Getter, node: Any) -> None:
        if self.base is None:
            href = get("href")
            # Only the first <base href> of the document counts: not one in a <template>
            # (whose content is no part of it) nor in SVG or MathML (another element).
            if href is not None and not any(
                    self.tree.enclosing(node, tag) is not None
                    for tag in ("template", "svg", "math")):
                self.base = href


def _svg_href(get: Getter) -> str | None:
    """An SVG element's link: its ``href``, or where it has none, the ``xlink:href`` of
    SVG 1.1. SVG 2 ignores the old one beside the new one, even an empty new one."""
    href = get("href")
    return href if href is not None else get("xlink:href")


# Tag name -> the collector's method for it. Beside the class, not on each collector: bound
# methods kept by the collector made a reference cycle per page, which held the page's
# tree and references until the garbage collector came by (a tenth of a parser's time
# went to collections, each finding about a thousand objects).
_HANDLERS: dict[str, Callable[[_Collector, Getter, Any], None]] = {
    "a": _Collector._anchor, "area": _Collector._anchor, "frame": _Collector._frame,
    "iframe": _Collector._iframe, "img": _Collector._img, "source": _Collector._source,
    "meta": _Collector._meta, "link": _Collector._link, "input": _Collector._input,
    "image": _Collector._svg_image, "style": _Collector._style, "base": _Collector._base,
    "object": _Collector._object, "embed": _Collector._embed, "use": _Collector._svg_use,
    "feimage": _Collector._svg_use,  # (tag names are lower case in an HTML tree)
}


def extract(
    html: str | bytes,
    page_url: str,
    *,
    sources: frozenset[str] = SOURCES,
    lazy_attributes: Sequence[str] = DEFAULT_LAZY_ATTRIBUTES,
    encoding: str | None = None,
    parser: str = "lxml",
    refresh: str | None = None,
    xml: bool = False,
    _nesting: int = 0,
) -> Extraction:
    """Find the links and images in a page fetched from ``page_url`` (after redirects).

    ``sources`` switches image sources on and off by name (see ``SOURCES``);
    links are always found. ``lazy_attributes`` names attributes that hold
    lazily loaded images, looked for on every element in addition to
    ``DEFAULT_LAZY_ATTRIBUTES``; names ending in "srcset" are read as srcset.
    ``encoding`` (say, the Content-Type charset) overrides detection for
    ``bytes`` input; only a byte-order mark beats it, as in browsers.
    ``parser`` names the HTML engine (see ``PARSERS``). ``refresh``: the page's
    HTTP ``Refresh`` header, whose URL is a link as a ``<meta>`` refresh's is
    (browsers follow either). ``xml``: the page was served as XHTML, which browsers
    read as XML (application/xhtml+xml; XML whose root is XHTML's <html>): an
    element written with a prefix bound to XHTML's or SVG's namespace
    (``<svg:image>``) is then the element of its local name. Never raises for any
    page content; raises ``ValueError`` for an unknown source or parser name,
    which is the caller's mistake.
    """
    wanted = frozenset(sources)
    if not wanted <= SOURCES:
        unknown = ", ".join(sorted(wanted - SOURCES))
        raise ValueError(f"unknown image sources: {unknown}; known: {', '.join(sorted(SOURCES))}")
    if parser not in PARSERS:
        raise ValueError(f"unknown parser {parser!r}; known: {', '.join(PARSERS)}")
    utf8 = None
    if isinstance(html, str):
        text, used_encoding = html, "utf-8"
    else:
        data = bytes(html)
        text, used_encoding = decode(data, encoding)
        if (used_encoding == "utf-8" and "\ufffd" not in text
                and not data.startswith(codecs.BOM_UTF8)):
            utf8 = data  # the text's own bytes: nothing was replaced or dropped
    base = page_base(page_url)
    tree = parse(text, parser, utf8, xml)
    if tree is None:
        return Extraction(base_url=base, links=(), images=())

    if isinstance(lazy_attributes, str):
        lazy_attributes = (lazy_attributes,)  # one name, not a sequence of letters
    collector = _Collector(tree, wanted, (*DEFAULT_LAZY_ATTRIBUTES, *lazy_attributes))
    target = refresh_url(refresh) if refresh else None
    if target:
        collector.refs.append(("nav", target, "anchor", None))  # where the page sends one
    collector.run()
    if collector.base is not None:
        document_base = Resolver(base, used_encoding)(collector.base)
        if document_base is not None:
            base = document_base
    resolve = Resolver(base, used_encoding)

    links: dict[str, None] = {}  # dicts keep first-seen order and drop repeats
    images: dict[str, ImageRef] = {}
    sheets: dict[str, None] = {}
    longer_framed = 0  # references too long to fetch in the pages its <iframe srcdoc> hold
    anchors_are_images = "anchor" in wanted
    pictures: dict[int, tuple[Any, Any]] = {}  # id(picture) -> (picture, its <img>)
    captions: dict[int, tuple[Any, str | None]] = {}  # id(figure) -> (figure, its caption)
    for role, raw, kind, node in collector.refs:
        if role == "srcdoc":
            if _nesting >= _MAX_SRCDOC_NESTING:
                continue
            # The framed page's links, images and style sheets are this page's own. (It
            # is HTML, even in an XHTML page: no xml.)
            inner = extract(raw, base, sources=wanted, lazy_attributes=lazy_attributes,
                            parser=parser, _nesting=_nesting + 1)
            for link in inner.links:
                links.setdefault(link)
            for sheet in inner.stylesheets:
                sheets.setdefault(sheet)
            for ref in inner.image_refs:
                known = images.get(ref.url)
                if known is None or _shows_better(known.kind, ref.kind):
                    images[ref.url] = ref
            longer_framed += inner.too_long
            continue
        url = resolve(raw)
        if url is None:
            continue
        if role == "nav":
            if url in links:  # a page links the same pages many times over
                continue
            if not has_image_extension(url):
                links[url] = None
                continue
            if not anchors_are_images:
                continue
        if role == "sheet":
            sheets.setdefault(url)
        elif (known := images.get(url)) is None or _shows_better(known.kind, kind):
            images[url] = ImageRef(url, kind, *_described(tree, kind, node, pictures,
                                                          captions))
    return Extraction(base_url=base, links=tuple(links), images=tuple(images),
                      stylesheets=tuple(sheets), image_refs=tuple(images.values()),
                      nofollow=collector.nofollow, encoding=used_encoding,
                      too_long=len(resolve.too_long) + longer_framed)


_MAX_SRCDOC_NESTING = 4  # <iframe srcdoc> within srcdoc, read this deep

# References that show no image: a link to it, and the head's (about the page). An image
# is described by the first element that shows it, though one of these came first (an
# <a href> around its thumbnail, an og:image): its alt text and caption were lost.
_SHOWS_NOTHING = frozenset({"anchor", "og:image", "twitter:image", "link"})


def _shows_better(known: str, kind: str) -> bool:
    """Whether a reference of ``kind`` describes its image better than one of ``known``."""
    return known in _SHOWS_NOTHING and kind not in _SHOWS_NOTHING


_TEXT_LIMIT = 1000  # characters kept of alt, title and caption text
_DIMENSION_RE = re.compile(r"[ \t\n\f\r]*([0-9]{1,6})")
_NOT_DESCRIBED = (None, None, None, None, None)


def _described(tree: Tree, kind: str, node: Any, pictures: dict[int, tuple[Any, Any]],
               captions: dict[int, tuple[Any, str | None]],
               ) -> tuple[str | None, str | None, str | None, int | None, int | None]:
    """(alt, title, caption, width, height) of the element that showed an image.

    ``pictures``: the <img> of each <picture> met so far on the page, so that a
    picture of thousands of sources looks for it once, not once per source; and
    ``captions``, of each <figure>, so that a figure of thousands of images (each
    one of its children) looks through them once, not once per image.
    """
    if kind in ("og:image", "twitter:image", "link"):
        return _NOT_DESCRIBED  # in the head: about the page, not the image
    element = node
    if kind == "picture":
        picture = tree.enclosing(node, "picture")
        img = None
        if picture is not None:
            known = pictures.get(id(picture))
            if known is None:  # (the picture is kept with it, so that its id stays its own)
                known = pictures[id(picture)] = (picture, tree.child(picture, "img",
                                                                      deep=True))
            img = known[1]
        element = img if img is not None else node
    figure = tree.enclosing(element, "figure")
    caption = None
    if figure is not None:
        known = captions.get(id(figure))
        if known is None:  # (the figure is kept with it, so that its id stays its own)
            known = captions[id(figure)] = (figure, _caption(tree, figure))
        caption = known[1]
    attribute = tree.attribute
    return (_text(attribute(element, "alt")), _text(attribute(element, "title")), caption,
            _dimension(attribute(element, "width")), _dimension(attribute(element, "height")))


def _caption(tree: Tree, figure: Any) -> str | None:
    figcaption = tree.child(figure, "figcaption")
    return _text(tree.caption_text(figcaption)) if figcaption is not None else None


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    return " ".join(value.split())[:_TEXT_LIMIT]


def _dimension(value: str | None) -> int | None:
    """An HTML dimension attribute's pixels ("640", "640px"); None if it has none."""
    if not value:
        return None
    match = _DIMENSION_RE.match(value)
    return int(match.group(1)) if match else None
