"""Raw references found in a page to normalised absolute http(s) URLs."""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin

from crawler.errors import InvalidURL
from crawler.model.urls import normalize

__all__ = ["MAX_URL_LENGTH", "Resolver", "page_base"]

# Longer references are left out: no server accepts them (most stop at 8 KiB),
# and resolving megabyte-long junk attributes would only cost time.
MAX_URL_LENGTH = 16 * 1024

_FETCHED_SCHEMES = frozenset({"http", "https"})
# Encodings whose documents put UTF-8 in URL queries (the URL standard's rule).
_UTF8_FOR_URLS = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                            "utf-32-le", "utf-32-be"})

# URL standard: strip leading/trailing C0 controls and spaces, drop tabs and newlines.
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")


def _clean(raw: str) -> str:
    """Strip what the URL standard strips: outer C0/space, inner tabs and newlines."""
    cleaned = raw.strip(_C0_AND_SPACE)
    if "\t" in cleaned or "\n" in cleaned or "\r" in cleaned:
        cleaned = cleaned.translate(_TAB_NEWLINE)
    return cleaned


class Resolver:
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


def page_base(page_url: str) -> str:
    try:
        return normalize(page_url)
    except InvalidURL:
        return page_url  # absolute references on the page still resolve
