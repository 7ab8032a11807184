"""Fetch one HTML page for the master: redirects checked hop by hop, bodies bounded.

One deadline (``crawl.page_timeout``) covers the page, every hop's head and
body included: libcurl cuts the request off then, however slowly the server
sends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import NamedTuple

from crawler.fetch.easy import EasyClient, Reply
from crawler.fetch.policy import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    TOO_MANY_REDIRECTS,
    redirect_target,
    redirected_to,
    server_pause,
    transient_status,
)
from crawler.model.outcome import BUSY_STATUSES, FailureKind, status_reason
from crawler.parse.encodings import charset_param

HTML_TYPES = ("text/html", "application/xhtml+xml")
# XML that may be a page: browsers show one whose root is XHTML's <html> as XHTML.
XML_TYPES = ("application/xml", "text/xml")
# An XHTML document's start: an XML declaration, comments and a doctype, then its root.
_XHTML_ROOT = re.compile(
    rb"(?:\xef\xbb\xbf)?(?:\s|<\?xml[^>]*\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*"
    rb"<html\b[^>]*\bxmlns\s*=\s*[\"']http://www\.w3\.org/1999/xhtml[\"']", re.S | re.I)
_XHTML_SNIFF_BYTES = 4096  # of an XML body, where its root must begin to be a page
ACCEPT_HTML = "text/html,application/xhtml+xml,*/*;q=0.5"


class Page(NamedTuple):
    url: str  # where it was asked for
    final_url: str  # after redirects: links on it resolve against this
    status: int
    body: bytes = b""
    encoding: str | None = None
    truncated: bool = False
    skipped: str = ""  # why the body was not read ("" when it was)
    transient: bool = False  # worth another try (connection errors, 5xx, 429)
    retry_after: float | None = None  # seconds the server asked us to wait
    # Refused for want of a robots.txt (unreachable, or not read in time): the URL it
    # was refused at (the page's, or its redirect's target), "" if it was not. Not final:
    # tried again once that robots.txt is read again (in this run while tries are left).
    held: str = ""
    refresh: str | None = None  # its Refresh header, which browsers follow as <meta> refresh
    timed_out: bool = False  # no connection or byte in time, or past the page's deadline
    image: bool = False  # answered with an image (an image/* type), not a page: body unread
    # Served as XHTML (application/xhtml+xml, or XML whose root is XHTML's <html>), which
    # browsers read as XML: its prefixed elements (<svg:image>) are the elements they name.
    xml: bool = False

    @property
    def ok(self) -> bool:
        return not self.skipped

    @property
    def host_is_busy(self) -> bool:
        """Whether its answer is about its whole host (a 429 or a 503), as an image's is."""
        return not self.ok and self.status in BUSY_STATUSES


def fetch_page(client: EasyClient, url: str, *, timeout: float, max_bytes: int,
               hop_refusal: Callable[[str, str, int, str], Page | None]) -> Page:
    """GET ``url``; follow redirects ``hop_refusal`` lets through; read HTML bodies only.

    ``hop_refusal(url, current, status, target)`` is the Page of a redirect from
    ``current`` to ``target`` that may not be followed, or None.

    The master's page loop takes the same steps without waiting (``master.pageloop``).
    """
    started = time.monotonic()
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        left = started + timeout - time.monotonic()
        if left <= 0:
            return too_slow(url, current, timeout)
        reply = client.get(current, accept=ACCEPT_HTML, max_bytes=max_bytes, timeout=left,
                           wants=wants_html, first_url=url)
        step = after_hop(url, current, reply, timeout)
        if isinstance(step, Page):
            return step
        refused = hop_refusal(url, current, reply.status, step)
        if refused is not None:
            return refused
        current = step
    return too_many_redirects(url, current)


def after_hop(url: str, current: str, reply: Reply, timeout: float) -> Page | str:
    """What the reply to one hop (``current``, on the way from ``url``) makes of the page:
    the Page, or the URL it redirects to, for the caller to judge and fetch next."""
    if not reply.ok:
        if reply.timed_out:  # (not sent at all, for want of a connection: not the host's)
            return too_slow(url, current, timeout, host_hung=not reply.no_turn)
        failure = reply.failure
        if reply.kind is FailureKind.BLOCKED and current != url:
            # Where a redirect led, as the other refusals of one say it (an image's too).
            failure = redirected_to(current) + failure
        return Page(url, current, reply.status, skipped=failure, transient=reply.transient)
    if reply.status in REDIRECT_STATUSES and "location" in reply.headers:
        location = reply.headers["location"]
        try:
            return redirect_target(current, location)
        except ValueError:  # InvalidURL, or urljoin's own (a broken IPv6 host)
            return Page(url, current, reply.status,
                        skipped=f"bad redirect to {location[:200]!r}")
    return _answer(url, current, reply)


def redirect_refused(url: str, current: str, status: int, target: str, why: str) -> Page:
    return Page(url, current, status, skipped=redirected_to(target) + why)


def redirect_held(url: str, current: str, status: int, target: str, why: str) -> Page:
    """A redirect to an origin whose robots.txt could not be read: not final, as a page
    of that origin is not (a later run tries again)."""
    return Page(url, current, status, skipped=redirected_to(target) + why, transient=True,
                held=target)


def too_many_redirects(url: str, current: str) -> Page:
    return Page(url, current, 0, skipped=TOO_MANY_REDIRECTS)


# Answers whose body is the page: 203 is a 200 a proxy changed, and browsers show it.
PAGE_STATUSES = (200, 203)


def wants_html(status: int, headers: dict[str, str]) -> bool:
    """Whether to read the body: a page's, or XML's, which may be an XHTML page."""
    return status in PAGE_STATUSES and _media_type(headers) in ("", *HTML_TYPES, *XML_TYPES)


def is_xhtml(body: bytes) -> bool:
    """Whether an XML body is an XHTML page: its root is XHTML's <html>."""
    return _XHTML_ROOT.match(body[:_XHTML_SNIFF_BYTES]) is not None


def _answer(url: str, final_url: str, reply: Reply) -> Page:
    status = reply.status
    if status not in PAGE_STATUSES:
        reason = status_reason(status)
        if status in REDIRECT_STATUSES:  # (one with a Location was followed)
            reason += ": a redirect without a Location (nowhere to go)"
        return Page(url, final_url, status, skipped=reason,
                    transient=transient_status(status),
                    retry_after=server_pause(status, reply.headers.get("retry-after")))
    kind = _media_type(reply.headers)
    if kind not in ("", *HTML_TYPES) and not (kind in XML_TYPES and is_xhtml(reply.body)):
        return Page(url, final_url, status, skipped=f"not HTML ({kind})",
                    image=kind.startswith("image/"))
    charset = charset_param(reply.headers.get("content-type", ""))
    return Page(url, final_url, status, reply.body, charset, reply.truncated,
                refresh=reply.headers.get("refresh"), xml=kind not in ("", "text/html"))


def too_slow(url: str, current: str, timeout: float, *, host_hung: bool = True) -> Page:
    return Page(url, current, 0, skipped=f"page too slow (over {timeout:g} s)", transient=True,
                timed_out=host_hung)


def _media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()
