"""Receiving one image body: limits, checks and storage, and how a failed answer is told.

The download engine (``crawler.fetch.curl``) feeds bodies here, so what an image
must be is decided apart from how it travels. Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from crawler.config import Limits
from crawler.errors import LeaseLost, PartialLost, PathConflict, StorageError
from crawler.fetch.engine import (  # the outcome helpers live with the engine; re-exported
    ACCEPT,
    Abandoned,
    SinkFactory,
    Task,
    failure,
    status_failure,
    storage_failure,
    too_large,
    too_slow,
)
from crawler.fetch.policy import (  # re-exported: page code imports them from here
    PERMANENT_STATUSES,
    retry_after_seconds,
    transient_status,
)
from crawler.model.imageend import ends_whole, stops_inside
from crawler.model.imagetype import (
    SNIFF_BYTES,
    ImageType,
    by_media_type,
    dimensions,
    looks_like_html,
    sniff,
    utf8_markup,
)
from crawler.model.outcome import HTML_PAGE_REASON, Attempt, FailureKind
from crawler.worker.store import Store, StoredFile

__all__ = ["ACCEPT", "PERMANENT_STATUSES", "Abandoned", "ImageSink", "failure", "kept_instead",
           "retry_after_seconds", "sinks_into", "status_failure", "storage_failure", "too_large",
           "too_slow", "transient_status"]

SPILL_AT = 1024 * 1024  # bodies up to this size are written in one call
SNIFF_AFTER = 4096  # enough leading bytes to tell every format apart, SVG's prologue included


class ImageSink:
    """One image body, fed chunk by chunk: bounded, sniffed, hashed and stored.

    A body up to SPILL_AT bytes is kept in memory and written with one call when
    it is complete (most images); a larger one goes to a partial file as it
    arrives. ``feed`` raises :class:`Abandoned` (too large, not an image) and
    StorageError; ``finish`` commits and returns the successful Attempt.
    """

    def __init__(self, url: str, store: Store, limits: Limits, started: float, *,
                 tried_before: bool = False) -> None:
        """``tried_before``: an earlier try of ``url`` may have stored its image."""
        self._url = url
        self._tried_before = tried_before
        self._store = store
        self._limits = limits
        self._started = started
        self._hasher = hashlib.sha256()
        self._head = bytearray()
        self._kind: ImageType | None = None
        self._held: list[bytes] = []
        self._partial: Path | None = None
        self._fh: BinaryIO | None = None
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limits.max_bytes:  # decoded size: no decompression bombs
            raise Abandoned(f"too large: over {self._limits.max_bytes} bytes",
                            FailureKind.TOO_LARGE)
        if len(self._head) < SNIFF_BYTES:
            self._head += chunk[: SNIFF_BYTES - len(self._head)]
            if self._kind is None and len(self._head) >= SNIFF_AFTER:
                self._kind = self._sniffed_early()
        self._hasher.update(chunk)
        if self._fh is not None:
            _write(self._fh, chunk, self._partial)
            return
        self._held.append(chunk)
        if self.size > SPILL_AT:
            self._spill()

    def _sniffed_early(self) -> ImageType | None:
        """The type of a body that has begun: None while text may still be an SVG's
        prolog; Abandoned for one that is no image. The same bytes get the same answer
        however they arrive: an SVG after a long comment was refused when its first
        packets ended inside the comment, and stored when they did not."""
        kind = sniff(bytes(self._head))
        if kind is not None:
            return kind
        if len(self._head) < SNIFF_BYTES and utf8_markup(bytes(self._head)).lstrip(
                b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            return None  # markup: an SVG's prolog may run on (finish() decides at the end)
        raise _not_an_image(self._head)

    def _require_whole(self, data: bytes | None, kind: ImageType, *, length_known: bool
                       ) -> None:
        """The body is no picture cut short. Whose length nothing vouched for, it must
        reach its format's end, or the connection cut it (a failure to try again).
        Whose every byte came, it must not stop inside one of its format's pieces: a
        file cut short on the server (a broken upload, a truncated copy a cache keeps),
        which a browser shows broken, and which may be whole at a later try."""
        if length_known:
            if data is not None:
                cut = stops_inside(data, kind)
            else:  # spilled to its partial file (over SPILL_AT): walked where it lies
                with self._read_back() as body:
                    cut = stops_inside(body, kind)
            if cut:
                raise Abandoned(CUT_SHORT_ON_THE_SERVER, FailureKind.BAD_RESPONSE,
                                transient=True)
            return
        if data is None:  # spilled: walked where it lies, as above
            with self._read_back() as body:
                whole = ends_whole(body, kind)
        else:
            whole = ends_whole(data, kind)
        if not whole:
            raise Abandoned(CUT_SHORT_IMAGE, FailureKind.CONNECTION, transient=True)

    @contextlib.contextmanager
    def _read_back(self) -> Iterator[bytes | mmap.mmap]:
        """The body spilled to its partial file, mapped (an empty one read: no mapping
        can be made of it)."""
        assert self._fh is not None and self._partial is not None
        try:
            self._fh.flush()
            if not self.size:
                body: bytes | mmap.mmap = self._partial.read_bytes()
            else:
                with self._partial.open("rb") as file:
                    body = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError as exc:  # its scratch file went, not the disk
            raise Abandoned(f"partial file {self._partial} is gone before it was "
                            "stored; did another program clean its folder?",
                            FailureKind.PARTIAL_LOST, transient=True) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {self._partial}: {exc.strerror or exc}"
                               ) from exc
        try:
            yield body
        finally:
            if isinstance(body, mmap.mmap):
                body.close()

    def _spill(self) -> None:
        self._partial, self._fh = self._store.open_partial()
        held, self._held = self._held, []
        for chunk in held:
            _write(self._fh, chunk, self._partial)

    def finish(self, content_type: str | None, *, length_known: bool = True) -> Attempt:
        """Check and store the complete body; the Attempt that reports it.

        ``length_known``: the transport vouched for the body's length (a Content-Length,
        chunked framing). Without it, a connection or HTTP/2 stream cut "without error"
        looks complete (even between two gzip members, each of which ends a compressed
        stream), so the body must reach its format's end. With it, a body that stops
        inside one of its format's pieces is a file cut short on the server (stored, it
        was a success that a browser shows broken).
        """
        leading = bytes(self._head)
        if not self.size:  # "not an image" said nothing of why: nothing came
            raise Abandoned(EMPTY_BODY, FailureKind.NOT_IMAGE)
        kind = self._kind or _require_image(leading)
        size_wh = dimensions(leading, kind)
        _check_dimensions(size_wh, self._limits)
        data = None
        if self._fh is None:
            data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
            self._held = []
        self._require_whole(data, kind, length_known=length_known)
        try:
            if data is not None:
                stored = self._store.store_bytes(self._url, kind, data, self._hasher.hexdigest(),
                                                 tried_before=self._tried_before)
            else:
                assert self._partial is not None and self._fh is not None
                self._fh.close()
                partial, self._partial = self._partial, None  # commit consumes it, come what may
                stored = self._store.commit(partial, self._url, kind, self.size,
                                            self._hasher.hexdigest(),
                                            tried_before=self._tried_before)
        except PathConflict as exc:  # one image's name is taken: not the disk failing
            raise Abandoned(str(exc), FailureKind.NAME_TAKEN) from exc
        except LeaseLost as exc:  # the worker drops it: another one holds the URL now
            raise Abandoned(str(exc), FailureKind.STOPPED, transient=True) from exc
        except PartialLost as exc:  # its scratch file went, not the disk: try it again
            raise Abandoned(str(exc), FailureKind.PARTIAL_LOST, transient=True) from exc
        media_type = _stored_type(content_type, kind)
        if stored.skipped and stored.sha256 != self._hasher.hexdigest():
            # Another download of this URL stored other bytes first (an earlier run, a
            # lease that ran out): that file is kept, and the manifest describes it,
            # its dimensions and type too, not the body just dropped.
            size_wh, kept_type = _described(stored.path_text)
            media_type = kept_type or kind.mime
        # The stored file's size and hash: a file another download of this URL stored
        # first is kept, and it is what the manifest must describe.
        return _stored_success(self._url, stored, size_wh, media_type,
                               time.monotonic() - self._started)

    def discard(self) -> None:
        """Drop what was received; safe to call more than once, and after finish."""
        self._held = []
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        if self._partial is not None:
            partial, self._partial = self._partial, None
            self._store.discard(partial)


# Failures that say only that the server gave no image this time: a file an earlier try of
# the URL stored stands for it. Not the crawl's own rules (size, dimensions, address,
# a redirect's robots.txt), which that file does not answer, nor the worker's own trouble.
_SERVER_GAVE_NONE = frozenset({
    FailureKind.STATUS, FailureKind.TIMEOUT, FailureKind.TOO_SLOW, FailureKind.CONNECTION,
    FailureKind.TLS, FailureKind.BAD_RESPONSE, FailureKind.NOT_IMAGE})


def kept_instead(store: Store, attempt: Attempt) -> Attempt:
    """``attempt``, or, for a failure of the server's, the success of the file an earlier
    try of its URL stored and could not report (its worker killed, its master dead).

    That file is kept, as a second download's other bytes would not replace it; reported
    failed, it sat in the folder in no line of the manifest.
    """
    if attempt.ok or attempt.kind not in _SERVER_GAVE_NONE:
        return attempt
    stored = store.stored_for(attempt.url)
    if stored is None:
        return attempt
    size_wh, content_type = _described(stored.path_text)
    return _stored_success(attempt.url, stored, size_wh, content_type, attempt.elapsed_s)


def _stored_success(url: str, stored: StoredFile, size_wh: tuple[int, int] | None,
                    content_type: str | None, elapsed_s: float) -> Attempt:
    """The success of ``url`` whose image is the file ``stored`` describes."""
    width, height = size_wh if size_wh else (None, None)
    return Attempt(url=url, ok=True, path=stored.relative_text, bytes=stored.size,
                   sha256=stored.sha256, content_type=content_type, width=width,
                   height=height, elapsed_s=elapsed_s, skipped=stored.skipped)


def _stored_type(declared: str | None, kind: ImageType) -> str:
    """The media type a success reports: the server's Content-Type where it names the type
    the body is, in lower case and without its parameters (a script that picks the
    image/png ones missed "Image/PNG" and "image/png; charset=binary"), else that type's
    own. A PNG served as image/jpeg or text/plain is stored as a PNG, and must not be
    described as a JPEG or as text."""
    if declared:
        named = declared.partition(";")[0].strip().lower()
        if by_media_type(named) == kind:
            return named
    return kind.mime


def _described(path: str) -> tuple[tuple[int, int] | None, str | None]:
    """The dimensions and media type of the image file at ``path`` (None where unknown)."""
    try:
        with Path(path).open("rb") as file:
            head = file.read(SNIFF_BYTES)
    except OSError:
        return None, None
    kind = sniff(head)
    return (dimensions(head, kind), kind.mime) if kind is not None else (None, None)


def _write(fh: BinaryIO, chunk: bytes, partial: Path | None) -> None:
    try:
        fh.write(chunk)
    except OSError as exc:
        raise StorageError(f"cannot write {partial}: {exc.strerror or exc}") from exc


def _require_image(head: bytes | bytearray) -> ImageType:
    kind = sniff(bytes(head))
    if kind is None:
        raise _not_an_image(head)
    return kind


CUT_SHORT_IMAGE = "connection broken: body cut short (the image stops before its end)"
EMPTY_BODY = "not an image: the body is empty (0 bytes)"
# Every byte the server said it had came, and the image stops inside one of its pieces.
CUT_SHORT_ON_THE_SERVER = "broken image: the server's file is cut short"


def _not_an_image(head: bytes | bytearray) -> Abandoned:
    """The failure of a body that is no image; an HTML page is told apart, so that
    the master can read one that a link led to as a page."""
    if looks_like_html(bytes(head)):
        return Abandoned(HTML_PAGE_REASON, FailureKind.HTML_PAGE)
    return Abandoned("not an image", FailureKind.NOT_IMAGE)


def _check_dimensions(size: tuple[int, int] | None, limits: Limits) -> None:
    if not (limits.min_width or limits.min_height or limits.max_width or limits.max_height):
        return
    if size is None:
        raise Abandoned("dimensions unknown, and a size limit is set", FailureKind.DIMENSIONS)
    width, height = size
    if width < limits.min_width or height < limits.min_height:
        raise Abandoned(f"too small: {width}x{height}", FailureKind.DIMENSIONS)
    if (limits.max_width and width > limits.max_width) or (
            limits.max_height and height > limits.max_height):
        raise Abandoned(f"too big: {width}x{height}", FailureKind.DIMENSIONS)


def sinks_into(store: Store, limits: Limits) -> SinkFactory:
    """What an engine calls for each image it receives: an ImageSink storing into ``store``."""
    def new_sink(task: Task, started: float) -> ImageSink:
        url, attempt = task
        # Only a URL's later tries look for a file an earlier one stored: looking for the
        # name of every other type more than doubled the cost of storing an image.
        return ImageSink(url, store, limits, started, tried_before=attempt > 1)
    return new_sink
