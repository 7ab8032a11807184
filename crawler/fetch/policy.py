"""HTTP rules shared by pages and images: which statuses are worth a retry, Retry-After, redirects.

The master's page fetcher and the workers' image engine answer the same server
behaviour in the same way because they read it here.
"""

from __future__ import annotations

import math
import re
import time
from typing import Protocol

from crawler.model.outcome import MAX_UNREAD_CHARS, RATE_LIMITED_PAUSE
from crawler.model.urls import resolve

# Answers that another try will not change.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 410, 414, 451})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10  # hops followed for one URL, page or image
# Why a page or an image ends when its redirects go on past that (the same words for both).
TOO_MANY_REDIRECTS = f"more than {MAX_REDIRECTS} redirects"
SWITCHING_PROTOCOLS = 101


class Retries(Protocol):
    """How often a failure for a passing reason is tried again, and after how long (the
    board's policy, for pages, images, style sheets and robots.txt alike)."""

    @property
    def max_attempts(self) -> int: ...

    def backoff(self, failures: int, retry_after: float | None) -> float: ...


def interim(status: int) -> bool:
    """Whether an answer with ``status`` is an interim one (1xx), the real answer to
    follow. Not a 101 (Switching Protocols): never asked for here, libcurl takes it for
    the final answer, and what follows for its body."""
    return 100 <= status < 200 and status != SWITCHING_PROTOCOLS


# "bytes 0-LAST/SIZE" of a Content-Range: a 206 whose one part is the whole file.
_WHOLE_RANGE = re.compile(r"\s*bytes\s+0-(\d{1,20})/(\d{1,20})\s*", re.I)


def whole_answer(status: int, content_range: str | None) -> bool:
    """Whether an answer with ``status`` carries the whole file: a 200, a 203 (a proxy's
    transformed copy), or a 206 whose ``Content-Range`` covers every byte. No Range is
    asked for; servers that answer 206 all the same exist, and browsers show the image."""
    if status in (200, 203):
        return True
    if status != 206 or not content_range:
        return False
    whole = _WHOLE_RANGE.fullmatch(content_range)
    return whole is not None and int(whole.group(1)) + 1 == int(whole.group(2))


def transient_status(status: int) -> bool:
    """Whether an answer with ``status`` (not 200) is worth a retry: 5xx, 408, 425, 429."""
    return status not in PERMANENT_STATUSES and (status in (408, 425, 429)
                                                 or 500 <= status <= 599)


def server_pause(status: int, retry_after: str | None) -> float | None:
    """Seconds a failed answer asks its host to be left alone: its ``Retry-After``, or
    RATE_LIMITED_PAUSE for a 429 without one; None when it asks nothing."""
    seconds = retry_after_seconds(retry_after)
    return RATE_LIMITED_PAUSE if seconds is None and status == 429 else seconds


def unreadable_retry_after(value: str | None) -> str | None:
    """The text of a ``Retry-After`` that was sent and cannot be read (words, a negative
    or fractional number, more digits than a float holds), cut short to be said; None
    when none was sent, or it was read."""
    if not value or not value.strip() or retry_after_seconds(value) is not None:
        return None
    return " ".join(value.split())[:MAX_UNREAD_CHARS]


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "\u00b2".isdigit() is true, float() of it fails
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None  # 400 digits: inf, no pause
    import datetime  # (email.utils imports it anyway)
    import email.utils  # here: the email package is 15 modules, for a rare header form

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # the asctime form names no zone: an HTTP date is GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


def location_text(raw: bytes) -> str:
    """A ``Location`` header's bytes as URL text: each byte past ASCII percent-encoded.

    Servers put raw UTF-8 there (and now and then Latin-1). Read as Latin-1, as
    other headers are, "/caf\u00e9/" went out as "/caf%C3%83%C2%A9/"; browsers and
    curl send the bytes as they came, which is this (and UTF-8 in a host name
    is still read as one by the URL parser).
    """
    if raw.isascii():
        return raw.decode("ascii")
    return "".join(chr(byte) if byte < 0x80 else f"%{byte:02X}" for byte in raw)


def redirect_target(current: str, location: str) -> str:
    """The normalised URL a ``Location`` header sends ``current`` to; ValueError if none.

    Resolved by the URL standard, as browsers and the pages' own references are:
    Python's urljoin took "\\\\host\\new" and "/\\host/new" for paths on this host.
    """
    return resolve(location, current)


SHOWN_URL = 1000  # characters of a redirect target a reason shows (reports are bounded)


def redirected_to(url: str) -> str:
    """How a failure's reason begins when it came at a redirect's target ``url``: the
    image's own host was fine, and the user looks for where it sent the request."""
    shown = url if len(url) <= SHOWN_URL else url[:SHOWN_URL] + "..."
    return f"redirected to {shown}: "
