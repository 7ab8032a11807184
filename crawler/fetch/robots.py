"""One origin's robots.txt: read with libcurl, parsed with Protego, and what it allows.

The master reads it before pages and images (``crawler.master.robots`` keeps
its per-origin cache and the Crawl-delay); a worker reads it before following
an image's redirect to another URL (``crawler.worker.hops``). Both read it
here, so an unreachable or broken robots.txt means the same to both.
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple
from urllib.parse import urlsplit

from protego import Protego

from crawler.fetch.easy import EasyClient
from crawler.fetch.policy import REDIRECT_STATUSES, server_pause
from crawler.model.outcome import ROBOTS_UNREACHABLE, FailureKind, status_reason

log = logging.getLogger(__name__)

DISALLOWED = "disallowed by robots.txt"  # the refusal by the rules a robots.txt gave
MAX_ROBOTS_BYTES = 512 * 1024  # what Google reads of a robots.txt
ROBOTS_REDIRECTS = 5  # RFC 9309: at least five; past them, as if there were none
# Seconds after a failed refresh of rules past their age before the next try (less if
# the age is shorter): the old rules stand meanwhile (RFC 9309 2.4), and requests to
# their origin do not wait for a robots.txt asked for on each of them.
REFRESH_RETRY = 600.0


_DISALLOW_ALL = Protego.parse("User-agent: *\nDisallow: /\n")


class RobotsFile(NamedTuple):
    """The rules of one origin, and why its robots.txt could not be read (None if it could).

    An unreachable robots.txt disallows everything (RFC 9309); nothing of that
    is final: a later run reads it again.
    """

    rules: Protego
    unreachable: str | None = None
    # False when the file was not asked for at all (no connection was free): what it
    # says is not known, and it is read again when next needed.
    settled: bool = True
    # Seconds its 5xx or 429 asked to wait (Retry-After; a 429 without one, a default).
    retry_after: float | None = None
    # Unreachable for a reason time does not change (a TLS failure: a certificate not
    # trusted, expired or for another name; a client certificate refused): a setting
    # fixes it, and reading it again in this run would only fail the same way.
    final: bool = False

    def refusal(self, url: str, user_agent: str) -> str | None:
        """Why ``url`` may not be fetched, or None when it may."""
        if self.rules.can_fetch(url, user_agent):
            return None
        if self.unreachable:
            return f"{ROBOTS_UNREACHABLE} ({self.unreachable})"
        return DISALLOWED


ALLOW_ALL = RobotsFile(Protego.parse(""))
DISALLOW_ALL = RobotsFile(_DISALLOW_ALL)


def unreachable(why: str) -> RobotsFile:
    """The rules of an origin whose robots.txt could not be read: nothing allowed."""
    return RobotsFile(_DISALLOW_ALL, why)


def refresh_retry(max_age: float | None) -> float:
    """Seconds before a failed refresh is tried again, for rules kept ``max_age`` seconds."""
    return min(REFRESH_RETRY, max_age) if max_age else REFRESH_RETRY


def kept_on_refresh(read: RobotsFile, previous: RobotsFile | None) -> bool:
    """Whether the rules read before stay in force over ``read``, the refresh of them:
    RFC 9309 2.4, while the robots.txt is unreachable (a 4xx other than 429 is not: it
    means no rules)."""
    return read.unreachable is not None and previous is not None


# What the reason of a robots.txt whose redirect could not be followed ends with.
AT_A_REDIRECT = ", at a redirect"

# What an unreadable robots.txt means for the master (said in its warning); a worker,
# which reads it for an image's redirect, says its own.
NOT_CRAWLED = "not crawling that origin"


def read_robots(client: EasyClient, origin: str, timeout: float, *,
                refreshing: bool = False, unread_means: str = NOT_CRAWLED,
                logins: bool = True) -> RobotsFile:
    """Fetch and parse ``origin``'s robots.txt within ``timeout`` seconds, all of it.

    RFC 9309: its redirects are followed (ROBOTS_REDIRECTS of them, to any host:
    ``http://`` to ``https://`` and bare host to ``www.`` are common), and the
    file reached holds the rules of ``origin``; 4xx (or a redirect not followed)
    means no rules; 5xx or 429, a failed connection, a broken or too slow answer mean
    complete disallow. ``refreshing``: the caller keeps the rules it read before
    when this one is unreachable (said so in the warning); else ``unread_means`` is
    what the caller does meanwhile, for the warning. Without ``logins``, the user's
    Authorization and Cookie headers are left out: the origin was reached only by a
    redirect, which leaves them out of its requests too.
    """
    reply = client.follow(origin + "/robots.txt", hops=ROBOTS_REDIRECTS,
                          may_follow=_is_http, accept="text/plain,*/*;q=0.5",
                          max_bytes=MAX_ROBOTS_BYTES + 1, timeout=timeout, logins=logins)
    final = not reply.ok and reply.kind is FailureKind.TLS and not reply.transient
    then = ("keeping its rules read before" if refreshing
            else f"{NOT_CRAWLED} in this run (a setting fixes it, not time)" if final
            else unread_means)
    if reply.no_turn:  # the server was never asked: nothing to hold against it
        return RobotsFile(_DISALLOW_ALL, reply.failure, settled=False)
    if reply.blocked is not None:
        # The origin itself: every fetch from it will be refused anyway. A hop to a
        # refused address: a redirect not followed.
        return ALLOW_ALL
    if reply.timed_out:
        log.warning("robots.txt of %s too slow: %s", origin, then)
        # Said by the limit that cut it: a connection not made has its own, shorter one,
        # unless the whole deadline is shorter still.
        if reply.failure.startswith("timed out connecting"):
            # (", at the proxy URL" after it, when the proxy is the one that hung)
            within = min(client.connect_timeout, timeout)
            at = reply.failure.removeprefix("timed out connecting")
            return unreachable(f"too slow (no connection within {within:g} s{at})")
        return unreachable(f"too slow (over {timeout:g} s)")
    if not reply.ok and reply.status:  # the head came, the body did not
        log.warning("robots.txt of %s broke off (%s): %s", origin, reply.failure, then)
        return unreachable(f"broken response: {reply.failure}")
    if not reply.ok:
        if reply.url == origin + "/robots.txt":
            log.warning("robots.txt of %s unreachable (%s): %s", origin, reply.failure, then)
            return unreachable(reply.failure)._replace(final=final)
        # A hop's failure is said to be one: a robots.txt redirected to a server that is
        # down read as the origin's own server down. Its URL is logged, not put in the
        # reason, which the summary counts alike for every origin.
        log.warning("robots.txt of %s unreachable (%s at its redirect to %s): %s", origin,
                    reply.failure, reply.url, then)
        return unreachable(reply.failure + AT_A_REDIRECT)._replace(final=final)
    # A 429 is a 4xx, which RFC 9309 reads as no robots.txt; but it says "too many
    # requests", and taking it for leave to fetch everything at once would answer a
    # server that asks for less with more: it is unreachable for now, as a 5xx is
    # (and as Google reads it).
    if reply.status >= 500 or reply.status == 429:  # >= 500: out of range too
        log.warning("robots.txt of %s answered %s: %s", origin, status_reason(reply.status),
                    then)
        pause = server_pause(reply.status, reply.headers.get("retry-after"))
        return unreachable(status_reason(reply.status))._replace(retry_after=pause)
    if reply.status != 200:  # 4xx: no robots.txt; a redirect not followed: as if none
        if reply.status in REDIRECT_STATUSES:
            log.info("robots.txt of %s: redirects not followed past %s: as if none",
                     origin, reply.url)
        return ALLOW_ALL
    return RobotsFile(Protego.parse(_whole_lines(reply.body)
                                    .decode("utf-8-sig", errors="replace")))


def _whole_lines(body: bytes) -> bytes:
    """``body`` (read up to a byte past the limit) up to the limit, without the line the
    limit cut (as Google's parser past its own): ``Disallow: /private`` cut to
    ``Disallow: /p`` would refuse more, an ``Allow`` cut so would allow more. The byte
    past the limit tells a line that ends at the limit, kept whole, from one cut there."""
    if len(body) <= MAX_ROBOTS_BYTES:
        return body
    if body[MAX_ROBOTS_BYTES] in b"\r\n":
        return body[:MAX_ROBOTS_BYTES]
    kept = body[:MAX_ROBOTS_BYTES]
    end = max(kept.rfind(b"\n"), kept.rfind(b"\r"))  # (a line may end in either)
    return kept[:end + 1]


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what one robots.txt governs."""
    # Asked for every image and link. The crawler's URLs are normalised (a lower-case
    # scheme, nothing urlsplit would strip): their origin is a prefix, matched in C.
    found = _ORIGIN.match(url)
    if found is not None and url.isprintable():
        end = found.end()
        if end == len(url) or url[end] in "/?#":
            return found.group()
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


_ORIGIN = re.compile(r"[a-z][a-z0-9+.\-]*://[^/?#\s]*")
