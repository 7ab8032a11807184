"""Download one image: fetch, bound, validate, store. Every failure becomes an Attempt."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import urllib3

from crawler.errors import StorageError
from crawler.httpclient import Watchdog, retry_after_seconds
from crawler.imagetype import SNIFF_BYTES, ImageType, dimensions, sniff
from crawler.netguard import BlockedAddress
from crawler.outcome import Attempt
from crawler.store import Store

CHUNK = 64 * 1024
SNIFF_AFTER = 4096  # enough leading bytes to tell every format apart, SVG's prologue included
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 410, 414, 451})
ACCEPT = "image/*,*/*;q=0.5"
# Follow redirects (each hop through the address guard); retry nothing: the master does.
_REDIRECTS_ONLY = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10,
                                raise_on_redirect=True, raise_on_status=False)


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    deadline: float = 120.0
    max_bytes: int = 50_000_000
    min_width: int = 0
    min_height: int = 0
    max_width: int = 0
    max_height: int = 0


class _Abandoned(Exception):
    """Raised inside a download to give up on it; the message is the reason."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


def download(pool: urllib3.PoolManager, url: str, store: Store, limits: Limits,
             watchdog: Watchdog, stop: threading.Event | None = None) -> Attempt:
    """Fetch ``url`` into ``store``; never raises for anything the server or network does.

    urllib3 rather than requests: per small image, requests' session machinery
    cost about as much CPU as everything else a worker does (see benchmarks/).
    """
    started = time.monotonic()

    def failed(reason: str, transient: bool = False, retry_after: float | None = None) -> Attempt:
        return Attempt(url=url, ok=False, reason=reason, transient=transient,
                       retry_after=retry_after, elapsed_s=time.monotonic() - started)

    try:
        response = pool.request(
            "GET", url, preload_content=False, decode_content=True,
            timeout=urllib3.Timeout(connect=limits.connect_timeout, read=limits.read_timeout),
            retries=_REDIRECTS_ONLY)
    except BlockedAddress as exc:
        return failed(str(exc))
    except urllib3.exceptions.MaxRetryError as exc:
        if isinstance(exc.reason, urllib3.exceptions.ResponseError):
            return failed("too many redirects")
        return _network_failure(exc.reason or exc, failed)
    except urllib3.exceptions.LocationValueError as exc:
        return failed(f"invalid URL: {_short(exc)}")
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return _network_failure(exc, failed)
    try:
        if response.status != 200:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            transient = response.status not in PERMANENT_STATUSES and (
                response.status in (408, 425, 429) or response.status >= 500)
            return failed(f"HTTP {response.status}", transient, retry_after)
        content_type = response.headers.get("Content-Type")
        declared = response.headers.get("Content-Length", "")
        if (declared.isdigit() and int(declared) > limits.max_bytes
                and response.headers.get("Content-Encoding", "identity") == "identity"):
            return failed(f"too large: {declared} bytes > {limits.max_bytes}")
        try:
            with watchdog.deadline(response, limits.deadline):
                attempt = _receive(response, url, store, limits, content_type, started, stop)
        except _Abandoned as exc:
            return failed(str(exc), exc.transient)
        except StorageError as exc:
            # The worker's disk, not the image, is at fault: another worker may succeed.
            return failed(f"storage error: {exc}", transient=True)
        response.release_conn()  # read to the end: the connection can be reused
        return attempt
    finally:
        if not response.isclosed() and response.connection is not None:
            response.close()  # an unread body: the connection cannot be reused


def _network_failure(exc: BaseException, failed: Callable[..., Attempt]) -> Attempt:
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return failed("timed out", transient=True)
    return failed(f"connection error: {_short(exc)}", transient=True)


def _receive(response: urllib3.BaseHTTPResponse, url: str, store: Store, limits: Limits,
             content_type: str | None, started: float,
             stop: threading.Event | None) -> Attempt:
    partial, fh = store.open_partial()
    try:
        hasher = hashlib.sha256()
        head = bytearray()
        size = 0
        kind: ImageType | None = None
        with fh:
            try:
                for chunk in response.stream(CHUNK, decode_content=True):
                    size += len(chunk)
                    if size > limits.max_bytes:  # decoded size: no decompression bombs
                        raise _Abandoned(f"too large: over {limits.max_bytes} bytes")
                    if len(head) < SNIFF_BYTES:
                        head += chunk[: SNIFF_BYTES - len(head)]
                        if kind is None and len(head) >= SNIFF_AFTER:
                            kind = _require_image(head)
                    hasher.update(chunk)
                    _write(fh, chunk, partial)
                    if time.monotonic() - started > limits.deadline:
                        raise _Abandoned(f"too slow: not finished within {limits.deadline:g} s")
                    if stop is not None and stop.is_set():
                        raise _Abandoned("worker stopping", transient=True)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if time.monotonic() - started > limits.deadline:
                    raise _Abandoned(
                        f"too slow: not finished within {limits.deadline:g} s") from exc
                if isinstance(exc, urllib3.exceptions.DecodeError):
                    raise _Abandoned(f"bad response: {_short(exc)}") from exc
                raise _Abandoned(f"connection broken: {_short(exc)}", transient=True) from exc
        leading = bytes(head)
        if kind is None:
            kind = _require_image(leading)
        size_wh = dimensions(leading, kind)
        _check_dimensions(size_wh, limits)
        stored = store.commit(partial, url, kind, size, hasher.hexdigest())
    except BaseException:
        store.discard(partial)
        raise
    width, height = size_wh if size_wh else (None, None)
    return Attempt(url=url, ok=True, path=stored.relative.as_posix(), bytes=size,
                   sha256=stored.sha256, content_type=content_type or kind.mime,
                   width=width, height=height, elapsed_s=time.monotonic() - started,
                   skipped=stored.skipped)


def _write(fh: BinaryIO, chunk: bytes, partial: Path) -> None:
    try:
        fh.write(chunk)
    except OSError as exc:
        raise StorageError(f"cannot write {partial}: {exc.strerror or exc}") from exc


def _require_image(head: bytes | bytearray) -> ImageType:
    kind = sniff(bytes(head))
    if kind is None:
        raise _Abandoned("not an image")
    return kind


def _check_dimensions(size: tuple[int, int] | None, limits: Limits) -> None:
    if not (limits.min_width or limits.min_height or limits.max_width or limits.max_height):
        return
    if size is None:
        raise _Abandoned("dimensions unknown, and a size limit is set")
    width, height = size
    if width < limits.min_width or height < limits.min_height:
        raise _Abandoned(f"too small: {width}x{height}")
    if (limits.max_width and width > limits.max_width) or (
            limits.max_height and height > limits.max_height):
        raise _Abandoned(f"too big: {width}x{height}")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
