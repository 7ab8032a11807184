"""The fetch engine seam: what a worker asks of a downloader, and what transport errors mean.

An engine takes leased image URLs with :meth:`Engine.submit` and reports each
exactly once through the ``report`` callback it was built with: an Attempt, or
None for a URL it did not finish because it was closed or stopped (the worker
hands those back to the master). Transport errors become a
:class:`~crawler.model.outcome.FailureKind` and a reason in one table, here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

import pycurl

from crawler.config import Limits
from crawler.errors import StorageError
from crawler.fetch.policy import (
    TOO_MANY_REDIRECTS,
    server_pause,
    transient_status,
    unreadable_retry_after,
)
from crawler.model.outcome import (
    MAX_REASON_CHARS,
    STORAGE_ERROR,
    Attempt,
    FailureKind,
    escaped,
    is_http_status,
    status_reason,
)

ACCEPT = "image/*,*/*;q=0.5"  # the Accept header of every image request

# (url, attempt number), as leased from the master; above 1, an earlier try (of this run,
# or of an earlier run that left the URL unfinished) may have stored the image
Task = tuple[str, int]
Results = list[tuple[str, Attempt | None]]
Report = Callable[[Results], None]


class HopRefusal(NamedTuple):
    """Why a redirect is not followed. ``passing``: for a reason a later try may not meet
    (the target's robots.txt could not be read), so the image is worth another try, by
    this run or the next, as a page or image refused so by the master is."""

    reason: str
    passing: bool = False


# Whether a redirect may be followed. A check is called with the target URL, a verdict
# to give once, at once or later from any thread (why not, or None to follow), and the
# URL the image was asked by (whose origin alone gets the user's login headers).
HopVerdict = Callable[[HopRefusal | None], None]
HopCheck = Callable[[str, HopVerdict, str], None]


class Sink(Protocol):
    """Where one image body goes as it arrives (the worker's: checked, hashed, stored)."""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes; raises :class:`Abandoned` to give up on the image."""

    def finish(self, content_type: str | None, *, length_known: bool = True) -> Attempt:
        """The body is complete: keep it, and say how it went (``length_known``: the
        transport vouched for where the body ends)."""

    def discard(self) -> None:
        """Drop whatever was kept of an unfinished body."""


SinkFactory = Callable[[Task, float], Sink]  # (task, when its download started) -> its sink


class Abandoned(Exception):
    """Raised inside a download to give up on it; the message is the reason."""

    def __init__(self, reason: str, kind: FailureKind, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.kind = kind
        self.transient = transient


UNTRUSTED = "TLS certificate not trusted"  # a certificate verification failed


def too_slow(limits: Limits) -> str:
    """The reason of a download cut at ``download.deadline`` (a transient failure)."""
    return f"too slow: not finished within {limits.deadline:g} s"


def too_large(declared: str | int, limits: Limits) -> str:
    if isinstance(declared, str) and len(declared) > 24:  # a Content-Length of 4,000 digits
        declared = f"{declared[:12]}... ({len(declared)} digits)"
    return f"too large: {declared} bytes > {limits.max_bytes}"


def failure(url: str, started: float, reason: str, kind: FailureKind, transient: bool = False,
            retry_after: float | None = None, retry_after_unread: str | None = None
            ) -> Attempt:
    # A reason quotes the server now and then (a header, a target): never past what a
    # report may carry, or the master refuses the report.
    return Attempt(url=url, ok=False, reason=reason[:MAX_REASON_CHARS], transient=transient,
                   retry_after=retry_after, elapsed_s=time.monotonic() - started, kind=kind,
                   retry_after_unread=retry_after_unread)


def status_failure(url: str, started: float, status: int, retry_after: str | None) -> Attempt:
    """The Attempt for an answer other than 200."""
    kind = FailureKind.STATUS if is_http_status(status) else FailureKind.BAD_RESPONSE
    return failure(url, started, status_reason(status), kind, transient_status(status),
                   server_pause(status, retry_after),
                   unreadable_retry_after(retry_after))


def storage_failure(url: str, started: float, exc: StorageError) -> Attempt:
    """The worker's disk, not the image, is at fault: another worker may succeed."""
    return failure(url, started, f"{STORAGE_ERROR}{exc}", FailureKind.STORAGE, transient=True)


class Engine(Protocol):
    """Downloads submitted images until closed; runs on a thread of its own."""

    @property
    def slots(self) -> int:
        """How many downloads it runs at once (fewer than asked under a bandwidth cap)."""

    def submit(self, tasks: list[Task]) -> None:
        """Queue ``tasks`` (thread-safe). After the engine ended they are reported as None."""

    def drop(self, urls: Iterable[str]) -> None:
        """Stop downloading ``urls`` (thread-safe): each begun or waiting is reported as
        not finished (None)."""

    def add_cookies(self, lines: list[str]) -> None:
        """Add Netscape cookie ``lines`` to the engine's jar (thread-safe), before any
        task submitted after this call starts."""

    def run(self) -> None:
        """Download until :meth:`close` or the stop event; what is unfinished reports None."""

    def close(self) -> None:
        """Ask :meth:`run` to end soon (thread-safe)."""


# Codes pycurl 7.49 has no name for (libcurl's curl.h numbers them).
CURLE_WEIRD_SERVER_REPLY = 8
CURLE_HTTP2_STREAM = 92
CURLE_PROXY = 97
CURLE_TOO_LARGE = 100

# How libcurl refuses a status line's version ("HTTP/1.2", "HTTP/0.9 200", or two spaces
# after "HTTP/1.1"), under the code of a URL of another scheme.
_VERSION_REFUSED = ("Unsupported HTTP/1 subversion in response",
                    "Unsupported HTTP version in response")
# How libcurl refuses a body's chunked framing, under a broken connection's code: the
# server's bytes, the same next time (and its message quotes them: "0x7a").
_BROKEN_CHUNKS = ("chunk hex-length ", "invalid chunk size: ",
                  "Malformed encoding found in chunked-encoding",
                  "Illegal or missing hexadecimal sequence in chunked-encoding",
                  "Too long hexadecimal number in chunked-encoding")
HEAD_TOO_LARGE = "bad response: head too large"
# How libcurl says a head is past its limits, whatever its error code: the same next
# time, not a connection's passing failure (and no reason per head size, "307677 > ...").
_HEAD_TOO_LARGE = ("Too large response headers", "Too many response headers",
                   "A value or data field grew larger than allowed")

# libcurl's error codes -> (kind, reason, worth another try). The reason is the
# text results.log shows; libcurl's own message is added after a colon where it
# says something the code does not.
CURL_ERRORS: dict[int, tuple[FailureKind, str, bool]] = {
    pycurl.E_COULDNT_RESOLVE_HOST: (FailureKind.CONNECTION, "connection error: name not found",
                                    True),
    pycurl.E_COULDNT_RESOLVE_PROXY: (FailureKind.CONNECTION,
                                     "connection error: proxy name not found", True),
    pycurl.E_COULDNT_CONNECT: (FailureKind.CONNECTION, "connection error", True),
    pycurl.E_OPERATION_TIMEDOUT: (FailureKind.TIMEOUT, "timed out", True),
    pycurl.E_RECV_ERROR: (FailureKind.CONNECTION, "connection broken", True),
    pycurl.E_SEND_ERROR: (FailureKind.CONNECTION, "connection broken", True),
    pycurl.E_GOT_NOTHING: (FailureKind.CONNECTION, "connection broken: empty reply", True),
    pycurl.E_PARTIAL_FILE: (FailureKind.CONNECTION, "connection broken: body cut short", True),
    pycurl.E_HTTP2: (FailureKind.CONNECTION, "connection broken: HTTP/2 error", True),
    CURLE_HTTP2_STREAM: (FailureKind.CONNECTION, "connection broken: HTTP/2 stream error",
                            True),
    CURLE_PROXY: (FailureKind.CONNECTION, "proxy error", True),
    pycurl.E_SSL_CONNECT_ERROR: (FailureKind.TLS, "TLS error", True),
    pycurl.E_PEER_FAILED_VERIFICATION: (FailureKind.TLS, UNTRUSTED, False),
    pycurl.E_SSL_CACERT_BADFILE: (FailureKind.TLS, "TLS error: bad CA bundle", False),
    pycurl.E_SSL_CERTPROBLEM: (FailureKind.TLS, "TLS error: bad client certificate", False),
    # What libcurl 8 says of a client key it cannot use (encrypted, or not the
    # certificate's): "unable to set private key file".
    pycurl.E_BAD_FUNCTION_ARGUMENT: (FailureKind.TLS, "TLS error", False),
    pycurl.E_BAD_CONTENT_ENCODING: (FailureKind.BAD_RESPONSE, "bad response: broken encoding",
                                    False),
    CURLE_WEIRD_SERVER_REPLY: (FailureKind.BAD_RESPONSE, "bad response", False),
    pycurl.E_URL_MALFORMAT: (FailureKind.INVALID_URL, "invalid URL", False),
    pycurl.E_UNSUPPORTED_PROTOCOL: (FailureKind.INVALID_URL, "invalid URL: not http or https",
                                    False),
    pycurl.E_TOO_MANY_REDIRECTS: (FailureKind.REDIRECT, TOO_MANY_REDIRECTS, False),
    pycurl.E_FILESIZE_EXCEEDED: (FailureKind.TOO_LARGE, "too large", False),
    # A header line past 100 KB, or more lines than libcurl takes (libcurl 8.6).
    CURLE_TOO_LARGE: (FailureKind.BAD_RESPONSE, HEAD_TOO_LARGE, False),
}
UNKNOWN_ERROR = (FailureKind.CONNECTION, "connection error", True)


# What a TLS alert from the server says of our client certificate: the server asked for
# one, and got none (TLS 1.3's certificate_required) or refused the one it got. libcurl
# files the first under a broken connection (it comes as the answer is read), which
# made a setting to fix a passing failure, tried again on every run.
CLIENT_CERT_REQUIRED = ("TLS error: the server requires a client certificate "
                        "(http.client_cert)")
CLIENT_CERT_REFUSED = "TLS error: the server refused the client certificate (http.client_cert)"
_CLIENT_CERT_ALERTS = {
    "alert certificate required": CLIENT_CERT_REQUIRED,
    **dict.fromkeys(("alert bad certificate", "alert unsupported certificate",
                     "alert certificate revoked", "alert certificate expired",
                     "alert certificate unknown", "alert unknown ca"), CLIENT_CERT_REFUSED),
}
# libcurl's word for an HTTP/1 body whose connection closed before its Content-Length
# came, the bytes missing counted: one reason per count, were it said as it is.
_ENDED_SHORT = re.compile(r"(?:end of response with \d+ bytes missing"
                          r"|transfer closed with \d+ bytes remaining to read)$")
ENDED_SHORT = ("connection broken: body cut short (the connection closed before its "
               "Content-Length)")
# nghttp2's word for an HTTP/2 stream that ended (END_STREAM) with fewer bytes than its
# Content-Length said (-532, a violation of HTTP messaging, on a frame with eos=1): the
# HTTP/1.1 answer cut short, which says so ("[HTTP2] received invalid frame: ...").
_H2_ENDED_SHORT = re.compile(r"received invalid frame: FRAME\[\w+, [^\]]*\beos=1\b[^\]]*\], "
                             r"error -532\b")
H2_ENDED_SHORT = ("connection broken: body cut short (the HTTP/2 stream ended before its "
                  "Content-Length)")


def message_failure(message: str) -> tuple[FailureKind, str, bool] | None:
    """The kind, reason and transience that libcurl's ``message`` tells, whatever its
    error code (None: the code tells)."""
    if "HTTP/0.9" in message:  # libcurl files an answer without a status line under code 1
        return FailureKind.BAD_RESPONSE, "bad response: no status line (HTTP/0.9)", False
    if message.startswith(_VERSION_REFUSED):  # code 1 too: no URL's fault
        return FailureKind.BAD_RESPONSE, "bad response: HTTP version not supported", False
    if " alert " in message:
        for alert, reason in _CLIENT_CERT_ALERTS.items():
            if alert in message:
                return FailureKind.TLS, reason, False
    if message.startswith(_BROKEN_CHUNKS):
        return FailureKind.BAD_RESPONSE, "bad response: broken chunked encoding", False
    if message.startswith(_HEAD_TOO_LARGE):
        return FailureKind.BAD_RESPONSE, HEAD_TOO_LARGE, False
    if _ENDED_SHORT.match(message):
        return FailureKind.CONNECTION, ENDED_SHORT, True
    if "error -532" in message and _H2_ENDED_SHORT.search(message):
        return FailureKind.CONNECTION, H2_ENDED_SHORT, True
    return None


def signed_by_an_unknown_ca(reason: str) -> bool:
    """Whether a failure's reason is a certificate signed by no CA this host trusts (its
    own, a company's, a test's): what --ca-bundle mends, unlike a name that does not
    match or a certificate past its date. In OpenSSL's words, 1.1's and 3's."""
    return UNTRUSTED in reason and any(words in reason for words in _UNKNOWN_CA_WORDS)


_UNKNOWN_CA_WORDS = ("unable to get local issuer", "self-signed certificate",
                     "self signed certificate")


def curl_failure(code: int, message: str) -> tuple[FailureKind, str, bool]:
    """The kind, reason and transience of libcurl error ``code`` (message: libcurl's text)."""
    told = message_failure(message)
    if told is not None:
        return told
    kind, reason, transient = CURL_ERRORS.get(code, UNKNOWN_ERROR)
    if kind is FailureKind.TIMEOUT and message.startswith(("Connection timed out",
                                                           "Failed to connect")):
        reason = "timed out connecting"
    elif (kind in (FailureKind.CONNECTION, FailureKind.TLS, FailureKind.BAD_RESPONSE,
                   FailureKind.INVALID_URL) and message and message not in _SAID_BY_CODE
          and not message.startswith(_NOT_THE_CAUSE)):
        # Without libcurl's timing ("after 0 ms"), nor the number of an HTTP/2 stream
        # or the length of its frame, one cause is one reason in the summary's
        # failures_by_reason, not one per millisecond count or per image. Escaped: it
        # may quote a server's bytes (a header libcurl ignored).
        reason = f"{reason}: {_short(escaped(_without_counts(message)))}"
    return kind, reason, transient


# libcurl's messages that only repeat what the code's reason says ("connection broken:
# empty reply: Empty reply from server").
_SAID_BY_CODE = frozenset({"Empty reply from server"})
# What libcurl said last of the transfer though it was no error: an HTTP/2 header field
# it dropped and went on without. A stream reset later was said to have failed for it.
_NOT_THE_CAUSE = ("Ignoring received invalid HTTP header field",)
_AFTER_MS = re.compile(r" after \d+ ms")
_STREAM_NUMBER = re.compile(r"(?<=\bstream )\d+ |(?<=\[HTTP2\] )\[\d+\] ")
_FRAME_LENGTH = re.compile(r"(?<=\blen=)\d+")
# OpenSSL's part of a message: its version, its error's number and library
# ("OpenSSL/3.0.13: error:0A000126:SSL routines::unexpected eof while reading, errno 0"),
# which say nothing to a user and made one cause two reasons across an upgrade.
_OPENSSL_NOISE = re.compile(r"OpenSSL/\d[\w.-]*: |error:[0-9A-Fa-f]{8}:[^:]*:[^:]*:"
                            r"|, errno \d+$")


def _without_counts(message: str) -> str:
    """libcurl's ``message`` without what differs from one image, or one OpenSSL, to the
    next."""
    message = _STREAM_NUMBER.sub("", _AFTER_MS.sub("", message))
    return _OPENSSL_NOISE.sub("", _FRAME_LENGTH.sub("N", message))


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."
