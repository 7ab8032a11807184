"""Find the pages and images an HTML page refers to.

Parsers report facts: ``extract`` is a pure function from a page (its HTML
and the URL it was fetched from) to the absolute, normalised URLs it links to
and the images it shows. It decides nothing about scope, robots.txt or
depth; the caller does. Pages come from the open web, so it never raises and
never hangs on bad markup: a URL it cannot make sense of is left out.

One parse (BeautifulSoup with lxml), then one pass over the elements that
dispatches on the tag name; URLs are resolved and normalised after the pass,
because the first ``<base href>`` applies to the whole document, even to
elements before it.
"""

from __future__ import annotations

import codecs
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urljoin

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag, XMLParsedAsHTMLWarning
from bs4.exceptions import ParserRejectedMarkup
from lxml import etree

from crawler.errors import InvalidURL
from crawler.model.imagetype import IMAGE_EXTENSIONS  # one list: what the store also names files by
from crawler.model.urls import normalize

__all__ = [
    "DEFAULT_LAZY_ATTRIBUTES",
    "IMAGE_EXTENSIONS",
    "MAX_URL_LENGTH",
    "SOURCES",
    "Extraction",
    "css_urls",
    "extract",
    "has_image_extension",
    "parse_srcset",
]

SOURCES: frozenset[str] = frozenset(
    {"img", "srcset", "picture", "lazy", "css", "meta", "link", "input", "svg", "anchor"})
DEFAULT_LAZY_ATTRIBUTES: tuple[str, ...] = (
    "data-src", "data-srcset", "data-original", "data-lazy-src", "data-lazy")
# Longer references are left out: no server accepts them (most stop at 8 KiB),
# and resolving megabyte-long junk attributes would only cost time.
MAX_URL_LENGTH = 16 * 1024

# These warnings are about the caller's markup (a page that is a bare URL, an
# XML page); pages are whatever the web serves, so they would only be noise.
warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning)
warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)

_NAV_TAGS = {"a": "href", "area": "href", "frame": "src", "iframe": "src"}
_META_KEYS = frozenset(
    {"og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src"})
_ICON_RELS = frozenset({"icon", "apple-touch-icon", "apple-touch-icon-precomposed", "image_src"})
_FETCHED_SCHEMES = frozenset({"http", "https"})
# Encodings whose documents put UTF-8 in URL queries (the URL standard's rule).
_UTF8_FOR_URLS = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                            "utf-32-le", "utf-32-be"})

# URL standard: strip leading/trailing C0 controls and spaces, drop tabs and newlines.
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")

# srcset, per the HTML standard's parsing algorithm: a URL runs to whitespace;
# descriptors run to the next comma outside parentheses.
_SRCSET_URL_RE = re.compile(r"[\t\n\f\r ,]*([^\t\n\f\r ]*)")
_SRCSET_DESCRIPTORS_RE = re.compile(r"[^,(]*+(?:\([^)]*+\)?+[^,(]*+)*+,?")

# One CSS token scanner. Comments and strings are matched (and skipped) so that
# "url(" inside them is not taken; @import preludes name stylesheets, not
# images. Every alternative stops at a quote, a paren or the end, so the scan
# stays linear on broken input (unterminated comments, many "url("); the
# possessive quantifiers (*+) forbid backtracking into escapes.
_CSS_TOKEN_RE = re.compile(
    r"""
      /\*.*?(?:\*/|\Z)
    | "(?:[^"\\\n]|\\.)*+"?
    | '(?:[^'\\\n]|\\.)*+'?
    | @import\b[^;{]*
    | \burl\(\s*(?:
          "(?P<dq>(?:[^"\\\n]|\\.)*+)"
        | '(?P<sq>(?:[^'\\\n]|\\.)*+)'
        | (?P<uq>(?:[^"'()\\\s]|\\[0-9a-fA-F]{1,6}+[ \t\n\r\f]?+|\\.)*+)
      )\s*\)
    """,
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_CSS_ESCAPE_RE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\r\f]?|(\r\n|[\n\r\f])|(.))", re.DOTALL)

# Encoding sniffing: an XML declaration or a <meta charset>/http-equiv near the
# start. Searched in a bounded prefix so a hostile page cannot make it slow.
_SNIFF_BYTES = 8192
_XML_DECL_RE = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:\-]+)""")
_META_CHARSET_RE = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"),
         (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))
# The HTML standard reads these labels as windows-1252, a superset.
_AS_WINDOWS_1252 = frozenset({"latin-1", "iso8859-1", "ascii"})


@dataclass(frozen=True)
class Extraction:
    """What a page refers to.

    ``base_url`` is the URL relative references were resolved against (the
    page's ``<base href>`` if it has one). ``links`` are pages to crawl next,
    ``images`` are images to download; both are normalised absolute http(s)
    URLs in document order, each listed once.
    """

    base_url: str
    links: tuple[str, ...]
    images: tuple[str, ...]


def has_image_extension(url: str) -> bool:
    """True when the URL's path (query ignored) ends in an image file extension."""
    path = url.partition("#")[0].partition("?")[0]
    name = path[path.rfind("/") + 1 :]
    dot = name.rfind(".")
    return dot >= 0 and name[dot + 1 :].lower() in IMAGE_EXTENSIONS


def parse_srcset(value: str) -> list[str]:
    """The candidate URLs of a ``srcset`` value, in order, descriptors dropped.

    Follows the HTML standard: a URL may contain commas ("a,b.jpg 1x"); a
    trailing comma ends it; descriptors ("640w", "2x", even odd ones with
    parentheses) run to the next comma outside parentheses.
    """
    urls: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        match = _SRCSET_URL_RE.match(value, pos)
        if match is None:  # cannot happen: the pattern matches the empty string
            break
        url, pos = match.group(1), match.end()
        if not url:
            break
        if url.endswith(","):
            url = url.rstrip(",")  # "a.jpg,b.jpg": no descriptors, next candidate
        else:
            descriptors = _SRCSET_DESCRIPTORS_RE.match(value, pos)
            if descriptors is not None:
                pos = descriptors.end()
        if url:
            urls.append(url)
    return urls


def _css_unescape_one(match: re.Match[str]) -> str:
    hex_digits, newline, char = match.groups()
    if hex_digits:
        code = int(hex_digits, 16)
        if code == 0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            return "\ufffd"
        return chr(code)
    if newline:
        return ""  # an escaped newline continues a string on the next line
    return char


def css_urls(css: str) -> list[str]:
    """The ``url(...)`` values of a style sheet or style attribute, unescaped.

    Skips ``url()`` in comments, in strings and in ``@import`` rules (those
    are style sheets, not images).
    """
    if "(" not in css:
        return []  # the common style attribute: no function at all
    found: list[str] = []
    for match in _CSS_TOKEN_RE.finditer(css):
        if match.lastgroup is None:
            continue  # a comment, a string or an @import prelude
        value = match.group(match.lastgroup)
        if "\\" in value:
            value = _CSS_ESCAPE_RE.sub(_css_unescape_one, value)
        found.append(value)
    return found


def _decode(data: bytes, encoding: str | None) -> tuple[str, str]:
    """Decode page bytes as browsers choose: a byte-order mark, else the given
    encoding, else a declared charset (or BOM-less UTF-16), else UTF-8 if the
    bytes are valid UTF-8, else windows-1252.

    Returns the text and the codec name used. Never raises: undecodable bytes
    become U+FFFD.
    """
    candidates: list[str] = []
    if encoding:
        candidates.append(encoding)
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(name, errors="replace"), name
    head = data[:_SNIFF_BYTES]
    declared = _XML_DECL_RE.match(head) or _META_CHARSET_RE.search(head)
    if declared is not None:
        label = declared.group(1).decode("ascii")
        # An ASCII-readable declaration cannot truly be UTF-16/32 (HTML standard).
        candidates.append("utf-8" if label.lower().startswith(("utf-16", "utf-32")) else label)
    elif len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        candidates.append("utf-16-le")  # BOM-less UTF-16 text: ASCII with NULs between
    elif len(data) >= 4 and data[0] == 0 and data[2] == 0 and data[1] != 0:
        candidates.append("utf-16-be")
    for label in candidates:
        try:
            name = codecs.lookup(label).name
        except LookupError:
            continue  # an unknown label: try the next guess
        if name in _AS_WINDOWS_1252:
            name = "cp1252"
        return data.decode(name, errors="replace"), name
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "cp1252"


def _parse(text: str) -> BeautifulSoup | None:
    """Parse with lxml; on the rare markup lxml rejects, with Python's parser; else None."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")  # as the HTML tokenizer does
    for parser in ("lxml", "html.parser"):
        try:
            return BeautifulSoup(text, parser, multi_valued_attributes=None)
        except (ParserRejectedMarkup, etree.LxmlError, ValueError, RecursionError):
            continue
    return None


_Attrs = dict[str, str]


class _Collector:
    """The single pass: record raw references in document order, tagged by kind."""

    def __init__(self, sources: frozenset[str], lazy_attributes: Sequence[str]) -> None:
        self.sources = sources
        self.lazy = tuple(dict.fromkeys(name.lower() for name in lazy_attributes))
        self.refs: list[tuple[str, str]] = []  # ("image" | "nav", raw reference)
        self.base: str | None = None
        self._source_verdicts: dict[int, bool] = {}  # id(<source>) -> inside a <picture>
        self.handlers: dict[str, Callable[[Tag, _Attrs], None]] = {
            "a": self._nav, "area": self._nav, "frame": self._nav, "iframe": self._nav,
            "img": self._img, "source": self._source, "meta": self._meta,
            "link": self._link, "input": self._input, "image": self._svg_image,
            "style": self._style, "base": self._base,
        }

    def run(self, soup: BeautifulSoup) -> None:
        handlers, lazy = self.handlers, self.lazy if "lazy" in self.sources else ()
        css = "css" in self.sources
        for tag in soup.find_all(True):
            attrs: _Attrs = tag.attrs
            handler = handlers.get(tag.name)
            if handler is not None:
                handler(tag, attrs)
            if not attrs:
                continue
            for attribute in lazy:
                value = attrs.get(attribute)
                if value:
                    if attribute.endswith("srcset"):
                        self._images(parse_srcset(value))
                    else:
                        self._image(value)
            if css:
                style = attrs.get("style")
                if style:
                    self._images(css_urls(style))

    def _image(self, raw: str | None) -> None:
        if raw:
            self.refs.append(("image", raw))

    def _images(self, raws: Iterable[str]) -> None:
        self.refs.extend(("image", raw) for raw in raws)

    def _nav(self, tag: Tag, attrs: _Attrs) -> None:
        raw = attrs.get(_NAV_TAGS[tag.name])
        if raw:
            self.refs.append(("nav", raw))

    def _img(self, tag: Tag, attrs: _Attrs) -> None:
        if "img" in self.sources:
            self._image(attrs.get("src"))
        if "srcset" in self.sources and attrs.get("srcset"):
            self._images(parse_srcset(attrs["srcset"]))

    def _source(self, tag: Tag, attrs: _Attrs) -> None:
        if "picture" not in self.sources or not self._in_picture(tag):
            return
        if attrs.get("srcset"):
            self._images(parse_srcset(attrs["srcset"]))
        self._image(attrs.get("src"))

    def _in_picture(self, tag: Tag) -> bool:
        """Is this <source> a <picture>'s (an image) rather than a <video>'s or <audio>'s?

        libxml2 does not know <source> is a void element, so it nests each
        following sibling inside the previous one: look through those, using
        the verdict already recorded for the enclosing <source> (parents are
        visited first), which keeps long chains linear.
        """
        parent = tag.parent
        if parent is None:
            verdict = False
        elif parent.name == "source":
            verdict = self._source_verdicts.get(id(parent), False)
        else:
            verdict = parent.name == "picture"
        self._source_verdicts[id(tag)] = verdict
        return verdict

    def _meta(self, tag: Tag, attrs: _Attrs) -> None:
        if "meta" not in self.sources:
            return
        for key in ("property", "name"):
            if (attrs.get(key) or "").strip().lower() in _META_KEYS:
                self._image(attrs.get("content"))
                return

    def _link(self, tag: Tag, attrs: _Attrs) -> None:
        if "link" not in self.sources:
            return
        rel = set((attrs.get("rel") or "").lower().split())
        if rel & _ICON_RELS:
            self._image(attrs.get("href"))
        elif "preload" in rel and (attrs.get("as") or "").strip().lower() == "image":
            self._image(attrs.get("href"))
            if attrs.get("imagesrcset"):
                self._images(parse_srcset(attrs["imagesrcset"]))

    def _input(self, tag: Tag, attrs: _Attrs) -> None:
        if "input" in self.sources and (attrs.get("type") or "").strip().lower() == "image":
            self._image(attrs.get("src"))

    def _svg_image(self, tag: Tag, attrs: _Attrs) -> None:
        if "svg" in self.sources:
            self._image(attrs.get("href"))
            self._image(attrs.get("xlink:href"))

    def _style(self, tag: Tag, attrs: _Attrs) -> None:
        if "css" in self.sources:
            self._images(css_urls(tag.get_text()))

    def _base(self, tag: Tag, attrs: _Attrs) -> None:
        if self.base is None and attrs.get("href") is not None:
            self.base = attrs["href"]  # only the first <base href> counts


def _clean(raw: str) -> str:
    """Strip what the URL standard strips: outer C0/space, inner tabs and newlines."""
    cleaned = raw.strip(_C0_AND_SPACE)
    if "\t" in cleaned or "\n" in cleaned or "\r" in cleaned:
        cleaned = cleaned.translate(_TAB_NEWLINE)
    return cleaned


class _Resolver:
    """Turn a raw reference into a normalised absolute http(s) URL, or None."""

    def __init__(self, base: str, query_encoding: str) -> None:
        self.base = base
        self.query_encoding = query_encoding
        scheme, sep, rest = base.partition("://")
        # For the two commonest reference forms, "/path" and "//host/path",
        # joining is concatenation; urljoin would cost as much as the parse.
        self.scheme = scheme.lower() if sep else ""
        self.origin = f"{scheme}://{rest.split('/', 1)[0]}" if sep else ""
        self.cache: dict[str, str | None] = {}  # pages repeat references (icons, spacers)

    def __call__(self, raw: str) -> str | None:
        if raw in self.cache:
            return self.cache[raw]
        url = self._resolve(raw)
        self.cache[raw] = url
        return url

    def _resolve(self, raw: str) -> str | None:
        ref = _clean(raw)
        if not ref or ref.startswith("#") or len(ref) > MAX_URL_LENGTH:
            return None  # empty, or a place in this same page
        scheme = _SCHEME_RE.match(ref)
        if scheme is not None and scheme.group(1).lower() not in _FETCHED_SCHEMES:
            return None  # data:, javascript:, mailto:, blob:, about:, ...
        if "\\" in ref:
            ref = _backslashes_to_slashes(ref)
        if self.query_encoding not in _UTF8_FOR_URLS and not ref.isascii():
            ref = _encode_query(ref, self.query_encoding)
        try:
            return normalize(self._join(ref, scheme is not None))
        except (InvalidURL, ValueError):  # urljoin rejects e.g. "http://[oops/"
            return None

    def _join(self, ref: str, has_scheme: bool) -> str:
        if self.scheme in _FETCHED_SCHEMES and ref.startswith("/"):
            if ref.startswith("//"):
                return f"{self.scheme}:{ref}"
            return self.origin + ref
        if has_scheme and ref[ref.find(":") + 1 :].startswith("//"):
            return ref  # already absolute
        return urljoin(self.base, ref)


def _backslashes_to_slashes(ref: str) -> str:
    """Browsers read "\\" as "/" before the query in http(s) URLs; do the same."""
    cut = min((i for i in (ref.find("?"), ref.find("#")) if i >= 0), default=len(ref))
    return ref[:cut].replace("\\", "/") + ref[cut:]


def _encode_query(ref: str, encoding: str) -> str:
    """Percent-encode a query's non-ASCII text in the page's encoding, as browsers do."""
    head, hash_mark, fragment = ref.partition("#")
    path, question_mark, query = head.partition("?")
    if not question_mark or query.isascii():
        return ref

    def encode(match: re.Match[str]) -> str:
        # Characters the encoding lacks become "&#NNNN;", the URL standard's rule.
        return quote(match.group(), safe="", encoding=encoding, errors="xmlcharrefreplace")

    return f"{path}?{_NON_ASCII_RE.sub(encode, query)}{hash_mark}{fragment}"


def _page_base(page_url: str) -> str:
    try:
        return normalize(page_url)
    except InvalidURL:
        return page_url  # absolute references on the page still resolve


def extract(
    html: str | bytes,
    page_url: str,
    *,
    sources: frozenset[str] = SOURCES,
    lazy_attributes: Sequence[str] = DEFAULT_LAZY_ATTRIBUTES,
    encoding: str | None = None,
) -> Extraction:
    """Find the links and images in a page fetched from ``page_url`` (after redirects).

    ``sources`` switches image sources on and off by name (see ``SOURCES``);
    links are always found. ``lazy_attributes`` names attributes that hold
    lazily loaded images, looked for on every element in addition to
    ``DEFAULT_LAZY_ATTRIBUTES``; names ending in "srcset" are read as srcset.
    ``encoding`` (say, the Content-Type charset) overrides detection for
    ``bytes`` input; only a byte-order mark beats it, as in browsers. Never
    raises for any page content; raises ``ValueError`` for an unknown source
    name, which is the caller's mistake.
    """
    wanted = frozenset(sources)
    if not wanted <= SOURCES:
        unknown = ", ".join(sorted(wanted - SOURCES))
        raise ValueError(f"unknown image sources: {unknown}; known: {', '.join(sorted(SOURCES))}")
    if isinstance(html, str):
        text, used_encoding = html, "utf-8"
    else:
        text, used_encoding = _decode(bytes(html), encoding)
    base = _page_base(page_url)
    soup = _parse(text)
    if soup is None:
        return Extraction(base_url=base, links=(), images=())

    if isinstance(lazy_attributes, str):
        lazy_attributes = (lazy_attributes,)  # one name, not a sequence of letters
    collector = _Collector(wanted, (*DEFAULT_LAZY_ATTRIBUTES, *lazy_attributes))
    collector.run(soup)
    if collector.base is not None:
        document_base = _Resolver(base, used_encoding)(collector.base)
        if document_base is not None:
            base = document_base
    resolve = _Resolver(base, used_encoding)

    links: dict[str, None] = {}  # dicts keep first-seen order and drop repeats
    images: dict[str, None] = {}
    anchors_are_images = "anchor" in wanted
    for kind, raw in collector.refs:
        url = resolve(raw)
        if url is None:
            continue
        if kind == "image":
            images.setdefault(url)
        elif not has_image_extension(url):
            links.setdefault(url)
        elif anchors_are_images:
            images.setdefault(url)
    return Extraction(base_url=base, links=tuple(links), images=tuple(images))
