"""libcurl's callbacks for one transfer: the guard on its sockets, its head, its body.

libcurl calls these from inside ``socket_action`` on the engine's thread, once
per socket it opens, per connection a request goes out on, per line of an
answer's head and per chunk of its body: the hottest code of a worker, kept
cheap. Apart from the event loop (``crawler.fetch.curl``), which decides when
a hop ends and what comes next: here is what a transfer is told as its bytes
come, and what it makes of them (the address guard's verdict, the status and
headers, the sink its body goes to, and the worker's bandwidth cap, which
pauses a body here and wakes it again as time passes).

Each slot's handle has these bound once, as ``functools.partial(method, slot)``:
a call costs what it did as the engine's own methods.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pycurl

from crawler.config import Limits
from crawler.errors import StorageError
from crawler.fetch.contentencoding import body_decoder
from crawler.fetch.curlsetup import (
    DRAIN_AT_MOST,
    Guard,
    KeptConnections,
    curl_socket,
)
from crawler.fetch.engine import (
    Abandoned,
    SinkFactory,
    status_failure,
    storage_failure,
    too_large,
)
from crawler.fetch.guard import BlockedAddress
from crawler.fetch.policy import (
    REDIRECT_STATUSES,
    interim,
    location_text,
    redirected_to,
    whole_answer,
)
from crawler.fetch.transfer import Slot, Transfer, failed
from crawler.model.openfiles import out_of_files
from crawler.model.outcome import FailureKind

log = logging.getLogger(__name__)

RATE_BURST = 0.1  # seconds of the bandwidth cap that may be spent at once
# Bytes/s a download gets at least of a worker's bandwidth cap: as many downloads run at
# once as the cap gives each that much. Sixteen sharing 200 KB/s made 12 KB/s each, and
# images of a few hundred KB ran past download.deadline, failed "too slow", and got
# their host given up for its timeouts in a row, for the user's own cap.
RATE_PER_DOWNLOAD = 64 * 1024


def downloads_at_once(slots: int, rate: int) -> int:
    """How many of ``slots`` downloads run at once under a bandwidth cap of ``rate``
    bytes/s (0: none): all of them, or as many as get RATE_PER_DOWNLOAD each, one at least."""
    return slots if not rate else max(1, min(slots, rate // RATE_PER_DOWNLOAD))


_WANTED = frozenset({b"content-length", b"content-type", b"content-encoding", b"location",
                     b"retry-after", b"transfer-encoding", b"content-range"})
_WANTED_FIRST = frozenset(name[0] for name in _WANTED)  # "c", "l", "r", "t"


class TransferCallbacks:
    """The callbacks libcurl makes for the transfers of the engine's slots, and the
    bandwidth budget they spend; see the module doc. Touched only from the engine's
    thread."""

    def __init__(self, *, guard: Guard, kept: KeptConnections, limits: Limits,
                 new_sink: SinkFactory, rate: int) -> None:
        self._guard = guard
        # The connections, to look for unasked bytes before an HTTP/1 one is used again
        # (the engine's too: it asks which speak HTTP/1).
        self._kept = kept
        self._limits = limits
        self._new_sink = new_sink
        self._rate = rate  # bytes per second for the whole worker; 0: no cap
        self._budget = 0.0
        self._refilled = time.monotonic()
        self.paused: set[Slot] = set()  # slots whose body waits for the budget


    def on_open_socket(self, slot: Slot, purpose: int,
                        address: tuple[int, int, int, tuple[Any, ...]]) -> socket.socket | int:
        """The address guard, before libcurl connects anywhere."""
        family, kind, protocol, sockaddr = address
        host = str(sockaddr[0]).split("%", 1)[0]
        why = self._guard.refusal(host, int(sockaddr[1]))
        if why is not None:
            transfer = slot.transfer
            if transfer is not None:
                transfer.blocked = BlockedAddress(urlsplit(transfer.url).hostname or "?", host,
                                                  why)
            return pycurl.SOCKET_BAD
        sock = curl_socket(family, kind, protocol)
        if slot.transfer is not None:  # (the last try's: another address may be refused)
            slot.transfer.out_of_files = isinstance(sock, OSError) and out_of_files(sock)
        if isinstance(sock, OSError):  # libcurl reports a failed connection
            return pycurl.SOCKET_BAD
        return sock

    def on_new_socket(self, slot: Slot, fd: int, purpose: int) -> int:
        transfer = slot.transfer
        if transfer is not None:
            transfer.new_fd = fd
            # Connecting: also when libcurl asks a request again itself, the connection
            # it went out on lost (a GOAWAY, a close): its read timeout starts again
            # when the new one carries it, and the connect timeout applies till then.
            transfer.last_io = None
        return pycurl.SOCKOPT_OK

    def on_connected(self, slot: Slot, peer: str, local: str, peer_port: int,
                      local_port: int) -> int:
        """A connection, new or reused, is about to carry the request: check it first.

        Its peer must pass the guard. A reused HTTP/1 connection (plain, or over TLS)
        must have nothing to read: bytes there were never asked for (a stray answer),
        and libcurl would take them for the answer to this request.
        """
        transfer = slot.transfer
        if transfer is None:
            return pycurl.PREREQFUNC_ABORT
        transfer.last_io = time.monotonic()  # the read timeout runs from here
        why = self._guard.refusal(peer, peer_port)
        if why is not None:
            transfer.blocked = BlockedAddress(urlsplit(transfer.url).hostname or "?", peer, why)
            return pycurl.PREREQFUNC_ABORT
        key = (local, local_port, peer, peer_port)
        transfer.connection = key
        transfer.shared = transfer.new_fd is None
        if transfer.new_fd is not None:
            self._kept.opened(key, transfer.new_fd)
            transfer.new_fd = None
        elif not transfer.fresh and self._kept.unclean(key, transfer.url):
            # Stray bytes on an idle HTTP/1 connection, over TLS too, were read as this
            # request's answer, and another image was stored under its name.
            transfer.unclean = True
            return pycurl.PREREQFUNC_ABORT
        return pycurl.PREREQFUNC_OK

    def on_header(self, slot: Slot, line: bytes) -> int | None:
        """One line of a response head (libcurl calls this per line: kept cheap)."""
        transfer = slot.transfer
        if transfer is None:
            return -1
        first = line[0] | 0x20  # the first letter, in lower case
        if first in _WANTED_FIRST:  # only c..., l..., r..., t...: most lines go no further
            name, colon, value = line.partition(b":")
            if colon and not transfer.head_done:
                # Read as libcurl reads the framing: "Content-Length :" (no space is
                # allowed before the colon) is no length, and the connection's close ends
                # the body; taken for one here, half a picture passed for a whole one.
                name = name.lower()
                if name in _WANTED:
                    value = value.strip()
                    if not value and name == b"location":
                        # None, as libcurl reads it: followed, it led back to this
                        # URL till the redirects ran out; the status is the answer.
                        return None
                    text = (location_text(value) if name == b"location"
                            else value.decode("latin-1"))
                    if name == b"content-encoding" and name in transfer.headers:
                        text = f"{transfer.headers[name]}, {text}"  # one list (RFC 9110)
                    transfer.headers[name] = text
            return None
        if line.startswith(b"HTTP/"):
            transfer.last_io = time.monotonic()
            if transfer.connection is not None and line.startswith(b"HTTP/1"):
                self._kept.answered_http1(transfer.connection, transfer.url)
            parts = line.split(None, 2)
            transfer.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            transfer.headers = {}
            transfer.head_done = False
            return None
        if len(line) <= 2 and line.strip() == b"" and not transfer.head_done:
            transfer.last_io = time.monotonic()
            if interim(transfer.status):
                return None  # the real answer follows
            transfer.head_done = True
            return self._on_head(transfer)
        return None  # another header, or a trailer of a chunked body

    def _on_head(self, transfer: Transfer) -> int | None:
        """Decide from the status and headers what to do with the body (-1: stop now)."""
        status, headers = transfer.status, transfer.headers
        if status in REDIRECT_STATUSES and b"location" in headers:
            transfer.location = headers[b"location"]
            return None  # its body is drained, then the next hop starts
        url = transfer.task[0]
        if status != 200 and not whole_answer(status, headers.get(b"content-range")):
            answer = status_failure(url, transfer.started, status, headers.get(b"retry-after"))
            if status in REDIRECT_STATUSES:  # (one with a Location went on above)
                answer = answer._replace(reason=f"{answer.reason}: a redirect without a "
                                                "Location (nowhere to go)")
            if transfer.hops and not answer.host_is_busy:
                # Said where it came, as a refusal at a redirect is ("HTTP 404" named
                # the image's own URL); a 429 or 503 stays as it is: its host is told
                # by the hop's (Attempt.hop_host), and slowed down by its words.
                answer = answer._replace(reason=redirected_to(transfer.url) + answer.reason)
            transfer.answer = answer
            return None
        try:
            transfer.decoder = body_decoder(headers.get(b"content-encoding"),
                                            self._limits.max_bytes)
        except Abandoned as exc:  # an encoding not decoded here
            transfer.answer = failed(transfer, str(exc), exc.kind)
            return -1
        declared = headers.get(b"content-length", "")
        if (transfer.decoder is None  # the length of the body as it is stored
                and declared.isascii() and declared.isdigit()
                # len first: int() refuses more than 4,300 digits (a hostile header)
                and (len(declared) > 20 or int(declared) > self._limits.max_bytes)):
            transfer.answer = failed(transfer, too_large(declared, self._limits),
                                     FailureKind.TOO_LARGE)
            return -1
        transfer.content_type = headers.get(b"content-type")
        transfer.sink = self._new_sink(transfer.task, transfer.started)
        return None

    def on_body(self, slot: Slot, chunk: bytes) -> int | None:
        transfer = slot.transfer
        if transfer is None:
            return -1
        sink = transfer.sink
        if sink is None:  # an error or redirect body: read a little to keep the connection
            transfer.drained += len(chunk)
            return -1 if transfer.drained > DRAIN_AT_MOST or not transfer.head_done else None
        now = time.monotonic()
        if self._rate:
            if self._budget <= 0:
                self.paused.add(slot)
                return pycurl.WRITEFUNC_PAUSE  # libcurl hands the same bytes again later
            self._budget -= len(chunk)
            transfer.fed_at = now
        transfer.last_io = now
        try:
            decoder = transfer.decoder
            if decoder is None:
                sink.feed(chunk)
            else:
                for piece in decoder.decode(chunk):
                    sink.feed(piece)
        except Abandoned as exc:
            transfer.answer = failed(transfer, str(exc), exc.kind, exc.transient)
            return -1
        except StorageError as exc:
            transfer.answer = storage_failure(transfer.task[0], transfer.started, exc)
            return -1
        except Exception as exc:  # a bug must not lose the URL, nor kill the loop
            log.exception("unexpected error receiving %s", transfer.task[0])
            transfer.answer = failed(transfer, f"worker error: {exc.__class__.__name__}: "
                                     f"{exc}", FailureKind.WORKER_ERROR, True)
            return -1
        return None

    def refill(self, now: float, active: set[Slot]) -> None:
        """Give the bandwidth cap's budget back as time passes; wake paused transfers."""
        self._budget = min(self._budget + (now - self._refilled) * self._rate,
                           self._rate * RATE_BURST)
        self._refilled = now
        if self._budget > 0 and self.paused:
            # The one the cap let through longest ago goes first: a resumed transfer hands
            # its waiting bytes at once, and may spend the budget before the next one is
            # resumed; in any order, one download got none for seconds and ran past the
            # deadline while the others ended.
            paused = sorted(self.paused, key=_fed_at)
            self.paused.clear()  # emptied in place: the event loop holds this set
            for slot in paused:
                if slot.transfer is not None and slot in active:
                    slot.transfer.last_io = now
                    slot.handle.pause(pycurl.PAUSE_CONT)  # may pause it again at once


def _fed_at(slot: Slot) -> float:
    return slot.transfer.fed_at if slot.transfer is not None else 0.0
