"""URLs in CSS: the images of style sheets, ``<style>`` blocks and ``style`` attributes."""

from __future__ import annotations

import re

__all__ = ["css_urls"]

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
