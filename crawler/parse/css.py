"""URLs in CSS: the images of style sheets, ``<style>`` blocks and ``style`` attributes.

Fonts are not images: ``url()`` inside ``@font-face`` is skipped, and so is
any URL naming a font file. ``@import`` rules name style sheets, reported apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from crawler.errors import InvalidURL
from crawler.model.urls import resolve
from crawler.parse.encodings import bom_encoding, declared, decode_as, encoding_of

__all__ = ["FONT_EXTENSIONS", "StylesheetRefs", "css_references", "css_urls",
           "decode_stylesheet", "is_font_url", "stylesheet_urls"]

FONT_EXTENSIONS = frozenset({"woff", "woff2", "ttf", "otf", "eot"})

# One CSS token scanner. Comments and strings are matched (and skipped) so that
# "url(" inside them is not taken; @import preludes name stylesheets, not
# images. Every alternative stops at a quote, a paren or the end, so the scan
# stays linear on broken input (unterminated comments, many "url("); the
# possessive quantifiers (*+) forbid backtracking into escapes and spaces. An
# alternative that could fail only after scanning to the end would make the
# scan quadratic: an at-rule without "{" or ";" runs to the end, as in CSS
# itself, and the spaces of "url(" are taken once. An image-set() is taken whole, to
# its closing paren, with the strings and functions (two deep) inside it paired, so
# that a paren in a quoted URL does not end it; its options are read apart.
_CSS_TOKEN_RE = re.compile(
    r"""
      /\*.*?(?:\*/|\Z)
    | "(?:[^"\\\n]|\\.)*+"?
    | '(?:[^'\\\n]|\\.)*+'?
    | @import\b(?P<prelude>[^;{]*)
    | @font-face\b[^{;]*+(?:\{[^}]*+\}?)?
    | @namespace\b[^;{]*+
    | (?:-webkit-)?image-set\((?P<set>(?:
          [^()"']
        | "(?:[^"\\\n]|\\.)*+"?
        | '(?:[^'\\\n]|\\.)*+'?
        | \((?:[^()"']|"(?:[^"\\\n]|\\.)*+"?|'(?:[^'\\\n]|\\.)*+'?|\([^()"']*+\)?)*+\)?
      )*+)\)?
    | \burl\(\s*+(?:
          "(?P<dq>(?:[^"\\\n]|\\.)*+)"
        | '(?P<sq>(?:[^'\\\n]|\\.)*+)'
        | (?P<uq>(?:[^"'()\\\s]|\\[0-9a-fA-F]{1,6}+[ \t\n\r\f]?+|\\.)*+)
      )\s*+\)
    """,
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
# The URL of an @import prelude: url(...) or a bare string.
_IMPORT_URL_RE = re.compile(
    r"""\s*(?:url\(\s*(?:"(?P<dq>(?:[^"\\]|\\.)*+)"|'(?P<sq>(?:[^'\\]|\\.)*+)'
                       |(?P<uq>[^"'()\s]*+))\s*\)
           |"(?P<ds>(?:[^"\\]|\\.)*+)"|'(?P<ss>(?:[^'\\]|\\.)*+)')""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE)
# An image-set() option's image: a string or a url(), each at the start of an option.
_SET_OPTION_RE = re.compile(
    r"""(?:^|,)\s*+(?:"(?P<dq>(?:[^"\\\n]|\\.)*+)"|'(?P<sq>(?:[^'\\\n]|\\.)*+)'
                    |url\(\s*+(?:"(?P<udq>(?:[^"\\\n]|\\.)*+)"|'(?P<usq>(?:[^'\\\n]|\\.)*+)'
                                |(?P<uq>[^"'()\s]*+))\s*+\))""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE)
_CSS_ESCAPE_RE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\r\f]?|(\r\n|[\n\r\f])|(.))", re.DOTALL)


_CHARSET_RULE = b'@charset "'
_CHARSET_RULE_BYTES = 1024  # CSS Syntax looks this far for the rule's end


def decode_stylesheet(data: bytes, charset: str | None, referrer: str | None = None) -> str:
    """A style sheet's bytes as text, in CSS Syntax's order ("determine the fallback
    encoding"): a byte-order mark, else the HTTP ``charset``, else an
    ``@charset "...";`` rule as the sheet's very first bytes, else the encoding of the
    ``referrer`` (the document or sheet that linked it), else UTF-8. Labels are the
    Encoding Standard's; undecodable bytes become U+FFFD."""
    bom = bom_encoding(data)
    if bom is not None:
        return decode_as(data[bom[1] :], bom[0])
    encoding = encoding_of(charset) if charset else None
    if encoding is None and data.startswith(_CHARSET_RULE):
        end = data.find(b'";', len(_CHARSET_RULE), _CHARSET_RULE_BYTES)
        if end >= 0:
            named = encoding_of(data[len(_CHARSET_RULE) : end].decode("latin-1"))
            encoding = declared(named) if named is not None else None
    if encoding is None and referrer:
        encoding = encoding_of(referrer)
    return decode_as(data, encoding or "utf-8")


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


def _unescape(value: str) -> str:
    return _CSS_ESCAPE_RE.sub(_css_unescape_one, value) if "\\" in value else value


def css_references(css: str) -> tuple[list[str], list[str]]:
    """The image ``url()`` values and the ``@import`` URLs of CSS text, unescaped.

    Skips ``url()`` in comments, in strings and in ``@font-face`` rules.
    """
    images: list[str] = []
    imports: list[str] = []
    for is_import, value in _references(css):
        (imports if is_import else images).append(value)
    return images, imports


def _references(css: str) -> Iterator[tuple[bool, str]]:
    """:func:`css_references`'s values one at a time, in order, each with whether it is
    an ``@import``'s: a style sheet's are resolved as they come, not held all at once."""
    if "(" not in css and "@" not in css:
        return  # the common style attribute: no function at all
    for match in _CSS_TOKEN_RE.finditer(css):
        group = match.lastgroup
        if group is None:
            continue  # a comment, a string or a @font-face rule
        if group == "prelude":
            found = _IMPORT_URL_RE.match(match.group("prelude"))
            if found is not None and found.lastgroup is not None:
                yield True, _unescape(found.group(found.lastgroup))
            continue
        if group == "set":  # image-set(): its strings are images, as its url()s are
            for found in _SET_OPTION_RE.finditer(match.group("set")):
                if found.lastgroup is not None:
                    yield False, _unescape(found.group(found.lastgroup))
            continue
        yield False, _unescape(match.group(group))


def css_urls(css: str) -> list[str]:
    """The image ``url(...)`` values of a style sheet or style attribute, unescaped.

    Skips ``url()`` in comments, in strings, in ``@font-face`` rules and in
    ``@import`` rules (those are style sheets, not images).
    """
    if "(" not in css:
        return []
    return css_references(css)[0]


def is_font_url(url: str) -> bool:
    """True when the URL's path (query ignored) ends in a font file extension."""
    path = url.partition("#")[0].partition("?")[0]
    name = path[path.rfind("/") + 1 :]
    return name.rpartition(".")[2].lower() in FONT_EXTENSIONS and "." in name


class StylesheetRefs(NamedTuple):
    """What a style sheet refers to: normalised absolute http(s) URLs, in order, once each."""

    images: tuple[str, ...]
    imports: tuple[str, ...]  # other style sheets (@import)


def stylesheet_urls(css: str, stylesheet_url: str) -> StylesheetRefs:
    """The images and imported style sheets of a style sheet fetched from ``stylesheet_url``.

    Pure and total: references that are not http(s) (data:, fonts by
    extension) or that cannot be resolved are left out; never raises.
    """
    # Resolved as they are found: a list of every raw url() first held 17 MB more of a
    # 10 MB sheet of 222,000 images than the URLs kept.
    images: dict[str, None] = {}
    imports: dict[str, None] = {}
    for is_import, raw in _references(css):
        url = _resolved(raw, stylesheet_url, skip_font=not is_import)
        if url is not None:
            (imports if is_import else images).setdefault(url)
    return StylesheetRefs(images=tuple(images), imports=tuple(imports))


def _resolved(raw: str, base: str, *, skip_font: bool) -> str | None:
    """The absolute http(s) URL ``raw`` names, or None (not one, or a font skipped)."""
    reference = raw.strip()
    if not reference or reference.startswith("#") or len(reference) > 16 * 1024:
        return None
    try:
        url = resolve(reference, base)
    except InvalidURL:
        return None  # data:, a bad reference, or a base that is no http(s) URL
    return None if skip_font and is_font_url(url) else url
