"""Raw references found in a page to normalised absolute http(s) URLs.

Resolution is the URL standard's (``crawler.model.urls.resolve``), so a
reference means to the crawler what it means to a browser; what is added here
is what the URL standard leaves to the document: skipping references to this
same page and to schemes no one downloads, and a query's non-ASCII text in the
page's own encoding.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from crawler.errors import InvalidURL
from crawler.model.urls import normalize, resolve
from crawler.parse.encodings import encode_as, encoding_of, url_encoding

__all__ = ["MAX_URL_LENGTH", "Resolver", "page_base"]

# Longer references are left out: no server accepts them (most stop at 8 KiB),
# and resolving megabyte-long junk attributes would only cost time.
MAX_URL_LENGTH = 16 * 1024

_FETCHED_SCHEMES = frozenset({"http", "https"})

# URL standard: strip leading/trailing C0 controls and spaces, drop tabs and newlines.
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")

# Resolutions that depend only on the base's folder, shared by the pages of a process:
# a site's pages repeat their navigation (on a documentation site four references in
# five are ones another page of the same folder made). Emptied when full; references
# longer than a URL usually is are not kept (inline data: images would weigh megabytes).
_SHARED_MAX = 8192
_SHARED_LONGEST = 2048
_shared: dict[tuple[str, str, str], str | None] = {}
_UNKNOWN = ""  # never a resolution: those are None or a URL


def _clean(raw: str) -> str:
    """Strip what the URL standard strips: outer C0/space, inner tabs and newlines."""
    cleaned = raw.strip(_C0_AND_SPACE)
    if "\t" in cleaned or "\n" in cleaned or "\r" in cleaned:
        cleaned = cleaned.translate(_TAB_NEWLINE)
    return cleaned


class Resolver:
    """Turn a raw reference into a normalised absolute http(s) URL, or None."""

    def __init__(self, base: str, query_encoding: str) -> None:
        """``query_encoding`` is the page's encoding label (as ``decode`` names it)."""
        self.base = base
        # The encoding its queries are sent in: UTF-8 for UTF-16 pages and unknown labels.
        self.query_encoding = url_encoding(encoding_of(query_encoding) or "utf-8")
        scheme, sep, rest = base.partition("://")
        fetched = sep and scheme.lower() in _FETCHED_SCHEMES
        self.origin = f"{scheme}://{rest.split('/', 1)[0]}" if fetched else ""
        # A relative path resolves to the base's folder and the path, dot segments
        # and all, as the URL standard parses one whole URL: normalize's fast path
        # then reads it, where the standard's join costs a parse of the base each time.
        self.folder = _folder(base) if fetched else ""
        self.cache: dict[str, str | None] = {}  # pages repeat references (icons, spacers)
        # References refused for their length alone: no URL a server takes, but the page
        # had them, and a user may want to know (never from the shared cache: too long).
        self.too_long: set[str] = set()

    def __call__(self, raw: str) -> str | None:
        if raw in self.cache:
            return self.cache[raw]
        shared = bool(self.folder) and len(raw) <= _SHARED_LONGEST
        key = (self.folder, self.query_encoding, raw)
        url = _shared.get(key, _UNKNOWN) if shared else _UNKNOWN
        if url is _UNKNOWN:  # (one lookup: a parsing thread may empty it meanwhile)
            url, folder_only = self._resolve(raw)
            if folder_only and shared:
                if len(_shared) >= _SHARED_MAX:
                    _shared.clear()
                _shared[key] = url
        self.cache[raw] = url
        return url

    def _resolve(self, raw: str) -> tuple[str | None, bool]:
        """The URL ``raw`` names, and whether any page of the base's folder gets the same."""
        # What is refused at once costs less to refuse again than to keep.
        ref = _clean(raw)
        if not ref or ref.startswith("#"):
            return None, False  # empty, or a place in this same page
        scheme = _SCHEME_RE.match(ref)
        if scheme is not None and scheme.group(1).lower() not in _FETCHED_SCHEMES:
            return None, False  # data:, javascript:, mailto:, blob:, about:, ...
        if len(ref) > MAX_URL_LENGTH:
            self.too_long.add(raw)
            return None, False
        if self.query_encoding != "utf-8" and not ref.isascii():
            ref = _encode_query(ref, self.query_encoding)
        # "/path" and "path" depend on the base's folder only, and "scheme://..." on
        # nothing; the rest ("?query", "http:?query") on the whole base.
        if self.origin and ref.startswith("/") and not ref.startswith(("//", "/\\")):
            # "/path", the commonest form: joining is concatenation.
            joined, folder_only = self.origin + ref, True
        elif self.folder and scheme is None and ref[0] not in "/\\?":
            joined, folder_only = self.folder + ref, True  # "path", "../path": the same
        else:
            joined = None
            folder_only = scheme is not None and ref[scheme.end():scheme.end() + 2] == "//"
        try:
            return (normalize(joined) if joined is not None else resolve(ref, self.base),
                    folder_only)
        except InvalidURL:
            return None, folder_only


def _folder(base: str) -> str:
    """``base`` up to the last "/" of its path, if it is a normalised http(s) URL; else ""."""
    try:
        if normalize(base) != base:
            return ""
    except InvalidURL:
        return ""
    path_end = min(base.find(mark) if mark in base else len(base) for mark in "?#")
    return base[:base.rfind("/", 0, path_end) + 1]


def _encode_query(ref: str, encoding: str) -> str:
    """Percent-encode a query's non-ASCII text in the page's encoding, as browsers do."""
    head, hash_mark, fragment = ref.partition("#")
    path, question_mark, query = head.partition("?")
    if not question_mark or query.isascii():
        return ref

    def encode(match: re.Match[str]) -> str:
        # Characters the encoding lacks become "&#NNNN;", the URL standard's rule.
        return quote(encode_as(match.group(), encoding), safe="")

    return f"{path}?{_NON_ASCII_RE.sub(encode, query)}{hash_mark}{fragment}"


def page_base(page_url: str) -> str:
    try:
        return normalize(page_url)
    except InvalidURL:
        return page_url  # absolute references on the page still resolve
