"""One image's download in the engine, and the libcurl handle that carries it.

A ``Transfer`` is one leased URL through its redirects until it has its
Attempt: the state libcurl's callbacks fill in (the answer's head, the
connection it went on, the sink its body goes to). A ``Slot`` is a libcurl
easy handle with the options set on it, reused from one transfer to the next.
Apart from the event loop (``crawler.fetch.curl``), which creates, drives and
ends them: this is what one download is, that is how many run at once. Plain
data, its fields read and written directly on the hot path, as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pycurl

from crawler.fetch.contentencoding import BodyDecoder
from crawler.fetch.engine import Sink, Task, failure
from crawler.fetch.guard import BlockedAddress
from crawler.model.outcome import Attempt, FailureKind
from crawler.model.urls import host_key_of_normalized


@dataclass(eq=False)  # compared and hashed by identity
class Transfer:
    """One leased URL, through its redirects, until it has its Attempt."""

    task: Task
    url: str  # of the current hop
    started: float = field(default_factory=time.monotonic)
    hops: int = 0
    status: int = 0
    headers: dict[bytes, str] = field(default_factory=dict)
    head_done: bool = False
    location: str | None = None  # of a redirect answer
    sink: Sink | None = None
    decoder: BodyDecoder | None = None  # of a compressed body
    content_type: str | None = None
    answer: Attempt | None = None  # decided before the transfer ended
    blocked: BlockedAddress | None = None
    out_of_files: bool = False  # no socket could be made: the process's files are all open
    last_io: float | None = None  # None while connecting: the connect timeout applies
    drained: int = 0
    fed_at: float = 0.0  # when the bandwidth cap last let its bytes through
    new_fd: int | None = None  # of a socket opened for this hop
    connection: tuple[str, int, str, int] | None = None  # (local, port, peer, port) of the hop
    unclean: bool = False  # the reused connection had bytes nobody asked for
    fresh: bool = False  # this hop goes on a new connection
    shared: bool = False  # this hop went on a connection opened for another
    asked_again: bool = False  # this hop was asked again after its connection died

    def new_request(self) -> None:
        """Forget what the last request left: its answer's head, the connection it went
        on and when that was last heard from. The same hop is asked again (on a new
        connection, or once more after its connection died unanswered), or the next
        hop is: until libcurl says which connection carries it (PREREQFUNCTION), none
        does, and the connect timeout applies, not the read timeout. (``url``,
        ``fresh`` and ``asked_again`` are the caller's to set.)"""
        self.status, self.headers, self.head_done, self.location = 0, {}, False, None
        self.decoder, self.content_type, self.blocked = None, None, None
        self.out_of_files = False
        self.last_io, self.drained = None, 0
        self.new_fd, self.connection, self.unclean, self.shared = None, None, False, False


@dataclass(eq=False)
class Slot:
    """A libcurl easy handle, its callbacks bound once, and the transfer it carries."""

    handle: pycurl.Curl
    transfer: Transfer | None = None
    fresh: bool = False  # FRESH_CONNECT is set on the handle
    pipewait: bool = False  # PIPEWAIT is set on the handle
    other_origin: bool = False  # its headers are those of a hop to another origin


def failed(transfer: Transfer, reason: str, kind: FailureKind,
           transient: bool = False) -> Attempt:
    """The failed Attempt of ``transfer``, timed from its start; on a redirect's target of
    another host, that host's (``Attempt.hop_host``)."""
    attempt = failure(transfer.task[0], transfer.started, reason, kind, transient)
    if transfer.url != transfer.task[0]:
        hop_host = host_key_of_normalized(transfer.url)
        if hop_host != host_key_of_normalized(transfer.task[0]):
            return attempt._replace(hop_host=hop_host)
    return attempt
