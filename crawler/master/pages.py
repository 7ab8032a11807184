"""Fetch one HTML page for the master: redirects checked hop by hop, bodies bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
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
    """GET ``url``; follow redirects to pages ``may_visit`` allows; read HTML bodies only."""
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            response = session.get(current, stream=True, allow_redirects=False,
                                   timeout=(min(timeout, 10.0), timeout),
                                   headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.5"})
        except BlockedAddress as exc:
            return Page(url, current, 0, skipped=str(exc))
        except TRANSIENT_ERRORS as exc:
            return Page(url, current, 0, skipped=f"connection error: {exc.__class__.__name__}",
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
            return _read_body(response, url, current, timeout, max_bytes, watchdog)
    return Page(url, current, 0, skipped=f"more than {MAX_REDIRECTS} redirects")


def _read_body(response: requests.Response, url: str, final_url: str, timeout: float,
               max_bytes: int, watchdog: Watchdog) -> Page:
    chunks: list[bytes] = []
    size = 0
    truncated = False
    started = time.monotonic()
    try:
        with watchdog.deadline(response, timeout * 2):
            for chunk in response.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size >= max_bytes:  # a page over the limit is cut, not dropped
                    truncated = True
                    break
                if time.monotonic() - started > timeout * 2:
                    return Page(url, final_url, 200, skipped="page too slow", transient=True)
    except (requests.RequestException, *TRANSIENT_ERRORS) as exc:
        return Page(url, final_url, 200, skipped=f"broken response: {exc.__class__.__name__}",
                    transient=True)
    body = b"".join(chunks)[:max_bytes]
    encoding = response.encoding if "charset" in response.headers.get("Content-Type", "") else None
    return Page(url, final_url, 200, body, encoding, truncated)
