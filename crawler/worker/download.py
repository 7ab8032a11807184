"""Download one image with urllib3: fetch, bound, validate, store. Every failure becomes an Attempt.

The worker's download threads use this for whatever its fast lane
(``crawler.worker.fastlane``) does not take: https, redirects, encoded bodies, and
connections that fail. Both clients share ``crawler.worker.sink``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import urllib3

from crawler.config import Limits
from crawler.errors import StorageError
from crawler.fetch.guard import BlockedAddress
from crawler.fetch.session import Watchdog
from crawler.model.outcome import STORAGE_ERROR, Attempt
from crawler.worker.sink import (
    Abandoned,
    ImageSink,
    failure,
    status_failure,
    too_large,
    too_slow,
)
from crawler.worker.store import Store

CHUNK = 64 * 1024
# Follow redirects (each hop through the address guard); retry nothing: the master does.
_REDIRECTS_ONLY = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10,
                                raise_on_redirect=True, raise_on_status=False)


def download(pool: urllib3.PoolManager, url: str, store: Store, limits: Limits,
             watchdog: Watchdog, stop: threading.Event | None = None) -> Attempt:
    """Fetch ``url`` into ``store``; never raises for anything the server or network does.

    urllib3 rather than requests: per small image, requests' session machinery
    cost about as much CPU as everything else a worker does (see benchmarks/).
    """
    started = time.monotonic()
    failed = functools.partial(failure, url, started)

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
            return status_failure(url, started, response.status,
                                  response.headers.get("Retry-After"))
        content_type = response.headers.get("Content-Type")
        declared = response.headers.get("Content-Length", "")
        if (declared.isdigit() and int(declared) > limits.max_bytes
                and response.headers.get("Content-Encoding", "identity") == "identity"):
            return failed(too_large(declared, limits))
        try:
            with watchdog.deadline(response, limits.deadline):
                attempt = _receive(response, url, store, limits, content_type, started, stop)
        except Abandoned as exc:
            return failed(str(exc), exc.transient)
        except StorageError as exc:
            # The worker's disk, not the image, is at fault: another worker may succeed.
            return failed(f"{STORAGE_ERROR}{exc}", transient=True)
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
    sink = ImageSink(url, store, limits, started)
    try:
        try:
            for chunk in response.stream(CHUNK, decode_content=True):
                sink.feed(chunk)
                if time.monotonic() - started > limits.deadline:
                    raise Abandoned(too_slow(limits))
                if stop is not None and stop.is_set():
                    raise Abandoned("worker stopping", transient=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if time.monotonic() - started > limits.deadline:
                raise Abandoned(too_slow(limits)) from exc
            if isinstance(exc, urllib3.exceptions.DecodeError):
                raise Abandoned(f"bad response: {_short(exc)}") from exc
            raise Abandoned(f"connection broken: {_short(exc)}", transient=True) from exc
        return sink.finish(content_type)
    except BaseException:
        sink.discard()
        raise


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
