"""Fetch one HTML page for the master: redirects checked hop by hop, bodies bounded."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from crawler.fetch.guard import BlockedAddress
from crawler.fetch.policy import MAX_REDIRECTS, retry_after_seconds, transient_status
from crawler.fetch.session import TRANSIENT_ERRORS, Watchdog
from crawler.model.urls import normalize

HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class Page:
    url: str  # where it was asked for
    final_url: str  # after redirects: links on it resolve against this
    status: int
    body: bytes = b""
    encoding: str | None = None
    truncated: bool = False
    skipped: str = ""  # why the body was not read ("" when it was)
    transient: bool = False  # worth another try (connection errors, 5xx, 429)
    retry_after: float | None = None  # seconds the server asked us to wait

    @property
    def ok(self) -> bool:
        return not self.skipped


def fetch_page(session: requests.Session, url: str, *, timeout: float, max_bytes: int,
               may_visit: Callable[[str], bool], watchdog: Watchdog) -> Page:
    """GET ``url``; follow redirects to pages ``may_visit`` allows; read HTML bodies only.

    ``timeout`` bounds the whole page, every hop's head and body included: a
    server that trickles its answer is cut off then.
    """
    with watchdog.bound(timeout) as bound:
        page = _fetch(session, url, timeout, max_bytes, may_visit)
    if bound.expired:
        # Cut off: http.client takes a head that ends early for a whole one, so
        # what was read may look complete. Past the deadline nothing read counts.
        return dataclasses.replace(page, body=b"", skipped=f"page too slow (over {timeout:g} s)",
                                   transient=True)
    return page


def _fetch(session: requests.Session, url: str, timeout: float, max_bytes: int,
           may_visit: Callable[[str], bool]) -> Page:
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            response = session.get(current, stream=True, allow_redirects=False,
                                   timeout=(min(timeout, 10.0), timeout),
                                   headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.5"})
        except BlockedAddress as exc:
            return Page(url, current, 0, skipped=str(exc))
        except TRANSIENT_ERRORS as exc:
            return Page(url, current, 0, skipped=f"connection error: {cause(exc)}",
                        transient=True)
        except requests.RequestException as exc:
            return Page(url, current, 0, skipped=f"request failed: {exc.__class__.__name__}")
        except ValueError as exc:  # requests parses a Location it will not follow, too
            return Page(url, current, 0, skipped=f"bad redirect: {exc}")
        with response:
            if response.is_redirect:
                location = response.headers.get("Location", "")
                try:
                    target = normalize(urljoin(current, location))
                except ValueError:  # InvalidURL, or urljoin's own (a broken IPv6 host)
                    return Page(url, current, response.status_code,
                                skipped=f"bad redirect to {location[:200]!r}")
                if not may_visit(target):
                    return Page(url, current, response.status_code,
                                skipped=f"redirected to {target}, out of scope or "
                                        "disallowed by robots.txt")
                current = target
                continue
            if response.status_code != 200:
                status = response.status_code
                return Page(url, current, status, skipped=f"HTTP {status}",
                            transient=transient_status(status),
                            retry_after=retry_after_seconds(response.headers.get("Retry-After")))
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if kind and kind not in HTML_TYPES:
                return Page(url, current, 200, skipped=f"not HTML ({kind})")
            return _read_body(response, url, current, max_bytes)
    return Page(url, current, 0, skipped=f"more than {MAX_REDIRECTS} redirects")


def _read_body(response: requests.Response, url: str, final_url: str, max_bytes: int) -> Page:
    chunks: list[bytes] = []
    size = 0
    truncated = False
    try:
        for chunk in response.iter_content(64 * 1024):
            chunks.append(chunk)
            size += len(chunk)
            if size >= max_bytes:  # a page over the limit is cut, not dropped
                truncated = True
                break
    except (requests.RequestException, *TRANSIENT_ERRORS) as exc:
        return Page(url, final_url, 200, skipped=f"broken response: {cause(exc)}",
                    transient=True)
    body = b"".join(chunks)[:max_bytes]
    encoding = response.encoding if "charset" in response.headers.get("Content-Type", "") else None
    return Page(url, final_url, 200, body, encoding, truncated)


def cause(exc: BaseException) -> str:
    """What a user can act on in a failed request: refused, DNS, an untrusted certificate…

    requests wraps urllib3's errors, which wrap the socket's or ssl's; the first
    of those that is known names the cause, else the outermost class does.
    """
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            return f"certificate not trusted ({link.verify_message or link.reason})"
        if isinstance(link, ssl.SSLError):
            return f"TLS failed ({link.reason or link.__class__.__name__})"
        if isinstance(link, socket.gaierror):
            return "DNS lookup failed"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, ConnectionResetError):
            return "connection reset"
        if isinstance(link, TimeoutError | requests.Timeout):
            return "timed out"
    return exc.__class__.__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the errors urllib3 keeps in ``reason``/args."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        link = todo.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        nested = [getattr(link, "reason", None), link.__cause__, link.__context__,
                  *(a for a in link.args if isinstance(a, BaseException))]
        todo += [n for n in nested if isinstance(n, BaseException)]
