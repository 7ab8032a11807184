"""What happened to one image URL: a worker's report of one try, and the final outcome.

Reports cross the queue as plain dicts (not pickled classes) so that a worker
of another version, or one written from the classic tutorial, can speak to
the master.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from crawler.model.wire import Report

SEPARATOR = "--->"
# Said with a result line refused: the tutorial worker's author sees it, and fixes the format.
_LINE_FORMS = f"; put 'URL{SEPARATOR}success' or 'URL{SEPARATOR}failure: reason'"
MAX_REASON_CHARS = 4096  # a failure's reason, at most (a report with a longer one is refused)
MAX_UNREAD_CHARS = 60  # of a Retry-After that cannot be read, kept to be said
# A 429 without Retry-After still says "too many requests", about the whole host: it
# waits this long, as if the header had said so (gallery-dl waits 60 s). The first
# backoff alone (about a second) met a rate limit again on every try, and each image
# of a host that allows 50 requests a second failed for good within 3 s.
RATE_LIMITED_PAUSE = 10.0

# The reason of an attempt that failed on the worker's own disk, not on the image.
STORAGE_ERROR = "storage error: "
# The folder under the output folder that holds every stored image; the path of a
# stored image, in a report and in manifest.jsonl, starts with it.
IMAGES_DIR = "images"


def escaped(text: str) -> str:
    """``text`` with each character that is not printable escaped (``\\x1b``, ``\\r``):
    a server's bytes, quoted in a reason or a message, must not reach a file's line or a
    terminal as control sequences."""
    if text.isprintable():
        return text
    return "".join(map(_shown, text))


def _shown(char: str) -> str:
    return char if char.isprintable() else repr(char)[1:-1]


def one_line(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """A failure's reason as results.log and the summary show it: one line, its runs of
    spaces, tabs and line breaks made one space, and any other character that is not
    printable escaped (:func:`escaped`). A reason may come from any worker: a tutorial
    worker's is often an exception's text quoting a server's bytes, and an escape
    sequence there reached the terminal in the summary.

    At most ``limit`` characters, cut between two characters of the reason, never inside
    an escape: escaped, a reason of the longest length a report may have grew up to ten
    times as long, and a cut after escaping could leave half an escape.
    """
    text = " ".join(reason.split())
    if text.isprintable():
        return text[:limit]
    pieces: list[str] = []
    length = 0
    for piece in map(_shown, text):
        length += len(piece)
        if length > limit:
            break
        pieces.append(piece)
    return "".join(pieces)


class FailureKind(enum.Enum):
    """Why a try failed, as a value code can act on; the reason text is for people.

    A worker decides from the kind (not by parsing the reason) what a failure
    means for it: STORAGE is its own disk's fault and stops it.
    """

    STATUS = "status"  # the server answered with a status other than 200
    TIMEOUT = "timeout"  # no connection, or no byte, within its timeout
    TOO_SLOW = "too-slow"  # past download.deadline, however steadily bytes came
    CONNECTION = "connection"  # refused, reset, broken off, name not found
    TLS = "tls"  # certificate or handshake
    BLOCKED = "blocked"  # the address guard refused the address
    REDIRECT = "redirect"  # too many, or to a URL that cannot be followed
    TOO_LARGE = "too-large"
    NOT_IMAGE = "not-image"
    HTML_PAGE = "html-page"  # not an image but a page: its master may read it as one
    DIMENSIONS = "dimensions"  # outside the pixel bounds, or unknown with a bound set
    BAD_RESPONSE = "bad-response"  # a broken encoding or framing
    INVALID_URL = "invalid-url"
    STORAGE = "storage"  # the worker's own disk
    NAME_TAKEN = "name-taken"  # the image's file name is taken by something not ours
    PARTIAL_LOST = "partial-lost"  # its partial file was removed before it was stored
    STOPPED = "stopped"  # the worker is stopping
    WORKER_ERROR = "worker-error"  # a bug: the worker itself failed


# The advice that ends the reason of a FailureKind.NAME_TAKEN failure: final in its run,
# where each try would meet the same file or folder again, and tried again by the next
# run (see Attempt.rerun_tries_again), by when the user may have moved it away.
NAME_TAKEN_ADVICE = "move it away, then run the same command again"

# The reason of a FailureKind.HTML_PAGE failure, which a recorded Outcome keeps (not its kind).
HTML_PAGE_REASON = "not an image: an HTML page"
# The start of the reason of a URL refused while its origin's robots.txt cannot be read.
ROBOTS_UNREACHABLE = "robots.txt unreachable"


# Answers that say the server as a whole is busy: a try that met one waits, and so does
# its host (a 500 is often one URL's alone: one broken image held a healthy host's every
# image for its backoff, and a few in a thousand slowed the host to a crawl).
BUSY_STATUSES = (429, 503)


def is_http_status(status: int) -> bool:
    """Three digits, the first 1 to 5 (RFC 9110, 15): libcurl reads "HTTP/1.1 4040" as
    status 4040, which was said "HTTP 4040" and tried again as a 5xx."""
    return 100 <= status <= 599


def status_reason(status: int) -> str:
    """The reason of a try answered with ``status`` (not 200)."""
    if not is_http_status(status):
        return f"bad response: status {status}, not an HTTP status (100-599)"
    return f"HTTP {status}"


_BUSY_REASONS = frozenset(status_reason(status) for status in BUSY_STATUSES)

# Tries that waited out a timeout or the deadline: a host whose images end so again and
# again, with no answer between, hangs the crawl (download.host_timeouts gives it up).
_TIMED_OUT = frozenset({FailureKind.TIMEOUT, FailureKind.TOO_SLOW})
# Failures the server answered (in HTTP): its host is not hanging. A refused or reset
# connection, a TLS failure or the worker's own say nothing either way.
_ANSWERED = frozenset({FailureKind.STATUS, FailureKind.REDIRECT, FailureKind.TOO_LARGE,
                       FailureKind.NOT_IMAGE, FailureKind.HTML_PAGE, FailureKind.DIMENSIONS,
                       FailureKind.BAD_RESPONSE})

# The reason of each image of a host given up (``%`` with the host and the timeouts in a
# row), and the note that tells the crawl's user once: printf-style, as the Redis board's
# scripts (Lua's string.format) word them too.
GIVEN_UP_REASON = "given up: %s timed out %d times in a row (download.host_timeouts)"
GIVEN_UP_NOTE = ("%s timed out %d times in a row, with no answer between: its other images "
                 "are given up in this run and tried again by the next "
                 "(download.host_timeouts)")


# A tutorial worker's reason is its exception's text: these say a passing failure (as
# urllib and requests word a 5xx, 408, 425 or 429, a timeout, a connection refused, reset
# or closed), which is tried again as our workers' are. Taken as final, such an image
# was not tried again, not even by the next run.
_PASSING_TUTORIAL_REASON = re.compile(
    r"\bHTTP Error (?:5\d\d|408|425|429)\b|\b(?:5\d\d|408|425|429) (?:Server|Client) Error\b"
    r"|timed out|\btimeout\b|connection (?:refused|reset|aborted)|remote end closed"
    r"|temporary failure|max retries exceeded|incompleteread|broken pipe",
    re.IGNORECASE)


_FIXED_BY_THE_USER = frozenset({FailureKind.NAME_TAKEN, FailureKind.TLS})


class Attempt(NamedTuple):
    """One try at downloading ``url``, as a worker reports it.

    A NamedTuple, not a frozen dataclass: one is made per image on the worker and
    again on the master, and a NamedTuple is made in about half the time.
    """

    url: str
    ok: bool
    reason: str = ""
    transient: bool = False  # worth trying again (timeouts, 5xx, 429)
    retry_after: float | None = None  # seconds the server asked us to wait
    path: str | None = None  # relative to the worker's output folder
    bytes: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    elapsed_s: float = 0.0
    skipped: bool = False  # already stored with the same size and hash
    kind: FailureKind | None = None  # of a failure; None for a success
    # A Retry-After the server sent that could not be read (its text, cut short): the
    # board waits as if none was sent, and says so once per host.
    retry_after_unread: str | None = None
    # The host (``host_key``) of the redirect's target this failed try ended on, when not
    # the image's own: the host that did not answer, whose timeouts in a row it counts
    # (download.host_timeouts), where the image's own host answered with the redirect.
    hop_host: str | None = None

    @property
    def rerun_tries_again(self) -> bool:
        """Whether the next run of the crawl tries this failed try's URL again: a failure
        worth another try (``transient``), or one the user fixes, then runs the crawl
        again: a name taken in the image folder (its message says to move what is in
        the way), a TLS failure (a CA to trust, a client certificate: settings, or a
        worker host's own trust, which the run does not change but the next may); and a
        refusal for a robots.txt that could not be read, which the next run reads."""
        return not self.ok and (self.transient or self.kind in _FIXED_BY_THE_USER
                                or self.reason.startswith(ROBOTS_UNREACHABLE))

    @property
    def timed_out(self) -> bool:
        """Whether this try waited out its timeout or the deadline (its host may hang)."""
        return self.kind in _TIMED_OUT

    @property
    def host_answered(self) -> bool:
        """Whether this try's server answered: a success, or a failure said in HTTP."""
        return self.ok or self.kind in _ANSWERED

    @property
    def host_is_busy(self) -> bool:
        """Whether this failed try's answer is about its whole host (a 429 or a 503)."""
        return self.kind is FailureKind.STATUS and self.reason in _BUSY_REASONS

    def to_wire(self) -> Report:
        # Not dataclasses.asdict: its deep copy showed in the worker's profile.
        wire: Report = {
            "url": self.url, "ok": self.ok, "reason": self.reason,
            "transient": self.transient, "retry_after": self.retry_after,
            "path": self.path, "bytes": self.bytes, "sha256": self.sha256,
            "content_type": self.content_type, "width": self.width, "height": self.height,
            "elapsed_s": self.elapsed_s, "skipped": self.skipped,
            # plain data on the wire, not a pickled class
            "kind": self.kind.value if self.kind is not None else None,
        }
        # Only when there is one: a master of a version before it refuses a report with
        # a field it does not know, and counted every image a new worker reported failed.
        if self.retry_after_unread is not None:
            wire["retry_after_unread"] = self.retry_after_unread
        if self.hop_host is not None:
            wire["hop_host"] = self.hop_host
        return wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Attempt:
        fields = {k: v for k, v in data.items() if k in ATTEMPT_FIELDS}
        kind = fields.get("kind")
        if kind is not None:
            try:
                fields["kind"] = FailureKind(kind)
            except ValueError:  # a kind this version does not know: the reason still says
                fields["kind"] = None
        return cls(**fields)

    @classmethod
    def from_line(cls, line: str) -> Attempt:
        """Parse a classic result string: ``URL--->success`` or ``URL--->failure: reason``."""
        url, sep, rest = line.partition(SEPARATOR)
        if not sep:
            raise ValueError(f"result {line[:200]!r} has no {SEPARATOR!r}{_LINE_FORMS}")
        rest = rest.strip()
        if rest.lower() == "success":
            return cls(url=url.strip(), ok=True)
        status, _, reason = rest.partition(":")
        if status.strip().lower() != "failure":
            raise ValueError(f"result {line[:200]!r} is neither success nor failure"
                             f"{_LINE_FORMS}")
        # One line, of a sensible length: it goes to results.log and the summary as is.
        reason = one_line(reason)
        return cls(url=url.strip(), ok=False, reason=reason or "failure",
                   transient=_PASSING_TUTORIAL_REASON.search(reason) is not None)


def given_up(url: str, host: str, timeouts: int) -> Attempt:
    """The final result of an image of ``host``, given up after ``timeouts`` timeouts in
    a row: a passing failure, which the next run tries again."""
    return Attempt(url=url, ok=False, reason=GIVEN_UP_REASON % (host, timeouts),
                   transient=True, kind=FailureKind.TIMEOUT)


@dataclass(frozen=True)
class Outcome:
    """The final result of one image URL: one line in results.log and manifest.jsonl."""

    url: str
    status: str  # "success" or "failure"
    reason: str
    page: str | None
    worker: str | None
    path: str | None
    bytes: int | None
    sha256: str | None
    content_type: str | None
    attempts: int
    elapsed_s: float
    width: int | None = None
    height: int | None = None
    # A failure the next run of the crawl tries again: one for a passing reason, or a name
    # taken in the image folder (see Attempt.rerun_tries_again).
    transient: bool = False
    # What the page said about the image where it referred to it: "kind" (img,
    # srcset, picture, css, og:image, ...) and, where given, "alt", "title",
    # "caption" (of an enclosing <figure>), "width" and "height" (attributes).
    ref: dict[str, Any] | None = None

    @classmethod
    def from_attempt(cls, attempt: Attempt, *, page: str | None, worker: str | None,
                     attempts: int, ref: dict[str, Any] | None = None) -> Outcome:
        return cls(url=attempt.url, status="success" if attempt.ok else "failure",
                   reason=attempt.reason, page=page, worker=worker, path=attempt.path,
                   bytes=attempt.bytes, sha256=attempt.sha256,
                   content_type=attempt.content_type, attempts=attempts,
                   elapsed_s=round(attempt.elapsed_s, 4), width=attempt.width,
                   height=attempt.height, transient=attempt.rerun_tries_again,
                   ref=ref)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def line(self) -> str:
        if self.ok:
            return f"{self.url}{SEPARATOR}success"
        reason = one_line(self.reason)  # one line per URL, whatever the reason held
        return f"{self.url}{SEPARATOR}failure: {reason}"

    def to_json(self) -> str:
        return self._json

    @cached_property
    def _json(self) -> str:
        # Serialised once: the journal and manifest.jsonl both take it.
        return _ENCODER.encode({name: getattr(self, name) for name in _OUTCOME_FIELDS})

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        """The outcome a journal row holds (the text ``to_json`` made).

        A restart reads every outcome of the crawl back to rewrite manifest.jsonl: for
        a row of this version's fields, the row is the manifest's line as it stands, so
        it is kept rather than encoded again, and the fields are set without the frozen
        ``__init__`` (one ``object.__setattr__`` each). The two were 4 s of 7.6 for
        100,000 images. A row of another version's fields (or a line break inside,
        which would split the manifest's line) is built and encoded anew.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or tuple(data) != _OUTCOME_FIELDS or (
                "\n" in text or "\r" in text):
            return cls(**data)
        outcome = object.__new__(cls)
        outcome.__dict__.update(data)
        outcome.__dict__["_json"] = text  # what the cached property would make again
        return outcome


class Requeued(NamedTuple):
    """The images a rerun queues again, by why their last run failed them."""

    passing: int  # a passing reason: a timeout, a refused connection, a 5xx or 429
    name_taken: int  # their name in the image folder was taken by a stray file or folder


ATTEMPT_FIELDS = frozenset(Attempt._fields)
_OUTCOME_FIELDS = tuple(f.name for f in dataclasses.fields(Outcome))
# One encoder for every outcome: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
