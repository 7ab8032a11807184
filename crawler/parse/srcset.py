"""The candidate URLs of a ``srcset`` attribute."""

from __future__ import annotations

import re

__all__ = ["parse_srcset"]

# srcset, per the HTML standard's parsing algorithm: a URL runs to whitespace;
# descriptors run to the next comma outside parentheses.
_SRCSET_URL_RE = re.compile(r"[\t\n\f\r ,]*([^\t\n\f\r ]*)")
_SRCSET_DESCRIPTORS_RE = re.compile(r"[^,(]*+(?:\([^)]*+\)?+[^,(]*+)*+,?")


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
