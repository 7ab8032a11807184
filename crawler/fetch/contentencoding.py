"""Content-Encoding decoded here, not by libcurl: a compressed body must be whole.

libcurl's decoder is as lenient as a browser's: a gzip, deflate or brotli
stream that stops before its end is delivered as far as it goes, and the
transfer succeeds. When the bytes on the wire are framed right (a
Content-Length that matches what was sent, or a connection closed on an
HTTP/1.0 answer), that stored half a picture as a success. Decoding here
knows whether each stream reached its end (zlib's ``eof``, brotli's
``is_finished``), and so a body cut short is a failure worth another try.

Output comes in pieces of about ``PIECE`` bytes (brotli's may reach twice that),
lazily: the caller's size cap stops a decompression bomb a piece or two past
it, whatever the ratio. The bytes as sent are capped too, at twice the size
cap: empty blocks one after another decode to nothing, and the caller's cap
never came (the body was read at full speed until its deadline).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Protocol

import brotli

from crawler.fetch.engine import Abandoned
from crawler.model.outcome import FailureKind

PIECE = 256 * 1024  # most decoded bytes handed on at once
ACCEPT_ENCODING = "gzip, deflate, br"  # what is decoded here, and so asked for
MAX_CODINGS = 3  # "gzip, br" is a chain of two; longer chains are not from a real server
# Compressed bytes taken per byte of the size cap: even data that does not compress
# grows by far less, under each of the codings of a chain.
SENT_PER_KEPT = 2  # (its reason says "twice")
_GZIP_MAGIC = b"\x1f\x8b"
_ALIASES = {"x-gzip": "gzip"}
_AS_SENT = frozenset({"identity", "none"})  # "none": what PHP scripts say; libcurl took it

CUT_SHORT = "bad response: compressed body cut short"
BROKEN = "bad response: broken encoding"


def broken(detail: str = "") -> Abandoned:
    """A body that is not what its Content-Encoding says: the same next time."""
    return Abandoned(f"{BROKEN} ({detail})" if detail else BROKEN, FailureKind.BAD_RESPONSE)


def body_decoder(content_encoding: str | None, max_bytes: int) -> BodyDecoder | None:
    """The decoder for a response's Content-Encoding (None: the body is as sent), for a
    body of ``max_bytes`` at most once decoded.

    Raises :class:`Abandoned` for an encoding that is not decoded here.
    """
    if not content_encoding:
        return None
    codings = [_ALIASES.get(name, name) for name in
               (part.strip().lower() for part in content_encoding.split(","))
               if name and name not in _AS_SENT]
    if not codings:
        return None
    unknown = [name for name in codings if name not in _STEPS]
    if unknown or len(codings) > MAX_CODINGS:
        shown = content_encoding if len(content_encoding) <= 60 else content_encoding[:57] + "..."
        raise Abandoned(f"bad response: unsupported content encoding {shown!r}",
                        FailureKind.BAD_RESPONSE)
    return BodyDecoder(codings, SENT_PER_KEPT * max_bytes)


class BodyDecoder:
    """The decoding of one body, encoded by ``codings`` in that order (undone in reverse),
    of ``most_sent`` bytes at most as sent."""

    def __init__(self, codings: list[str], most_sent: int) -> None:
        self._steps = [_STEPS[name]() for name in reversed(codings)]
        self._most_sent = most_sent
        self._fed = 0

    def decode(self, chunk: bytes) -> Iterator[bytes]:
        """The decoded bytes of the next ``chunk`` of the body, in pieces."""
        if chunk:
            self._fed += len(chunk)
            if self._fed > self._most_sent:
                raise Abandoned(f"too large: over {self._most_sent} bytes compressed "
                                f"(twice the size limit)", FailureKind.TOO_LARGE)
            yield from self._through(chunk, 0)

    def finish(self) -> None:
        """The body has ended: raise :class:`Abandoned` unless every stream ended too."""
        if self._fed and not all(step.ended for step in self._steps):
            raise Abandoned(CUT_SHORT, FailureKind.BAD_RESPONSE, transient=True)

    def _through(self, data: bytes, at: int) -> Iterator[bytes]:
        if at == len(self._steps):
            yield data
            return
        for piece in self._steps[at].pieces(data):
            yield from self._through(piece, at + 1)


class _Zlib:
    """gzip (members one after another, as gunzip reads them) or deflate."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._inflate: zlib._Decompress | None = None
        self._head = b""  # deflate's first byte, until its second tells zlib from raw

    @property
    def ended(self) -> bool:
        return self._inflate is not None and self._inflate.eof

    def pieces(self, data: bytes) -> Iterator[bytes]:
        while data:
            inflate = self._inflate
            if inflate is None:
                if not self._gzip and len(self._head) + len(data) < 2:
                    self._head += data
                    return
                data, self._head = self._head + data, b""
                inflate = self._inflate = zlib.decompressobj(self._window(data))
            elif inflate.eof:
                if not (self._gzip and data.startswith(_GZIP_MAGIC[:len(data)])):
                    raise broken("bytes after the end of the compressed data")
                inflate = self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                piece = inflate.decompress(data, PIECE)
                while True:
                    if piece:
                        yield piece
                    # At the end, CPython leaves the rest in unconsumed_tail as well as in
                    # unused_data: fed again, it would be "decoded" for ever.
                    if inflate.eof:
                        break
                    # A full piece may leave output inside zlib though every byte was
                    # taken in (the rest of a long match): ask until a piece falls short.
                    if not inflate.unconsumed_tail and len(piece) < PIECE:
                        break
                    piece = inflate.decompress(inflate.unconsumed_tail, PIECE)
            except zlib.error as exc:
                raise broken(_zlib_detail(exc)) from None
            data = inflate.unused_data  # the next gzip member, or bytes after the end

    def _window(self, data: bytes) -> int:
        if self._gzip:
            return 16 + zlib.MAX_WBITS
        # "deflate" is zlib's format by the standard, raw deflate by old servers (as
        # libcurl and browsers, read both): zlib's two-byte header tells them apart.
        header = (data[0] << 8) | data[1]
        return zlib.MAX_WBITS if data[0] & 0x0F == 8 and header % 31 == 0 else -zlib.MAX_WBITS


def _zlib_detail(exc: zlib.error) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("Error -") and ": " in text else text


class _Brotli:
    def __init__(self) -> None:
        self._decoder = brotli.Decompressor()

    @property
    def ended(self) -> bool:
        return bool(self._decoder.is_finished())

    def pieces(self, data: bytes) -> Iterator[bytes]:
        decoder = self._decoder
        if decoder.is_finished():
            raise broken("bytes after the end of the compressed data")
        try:
            piece = decoder.process(data, output_buffer_limit=PIECE)
            while True:
                if piece:  # none for the next step: an ended one would take it for more
                    yield piece
                # Output stops growing past the limit and the rest waits in the decoder:
                # ask until a piece falls short (can_accept_more_data() says True early).
                if len(piece) < PIECE:
                    break
                piece = decoder.process(b"", output_buffer_limit=PIECE)
        except brotli.error:
            raise broken("not brotli data") from None


class _Step(Protocol):
    """One coding undone: its output pieces for each input, and whether its stream ended."""

    @property
    def ended(self) -> bool: ...

    def pieces(self, data: bytes) -> Iterator[bytes]: ...


_STEPS: dict[str, Callable[[], _Step]] = {
    "gzip": lambda: _Zlib(gzip=True), "deflate": lambda: _Zlib(gzip=False), "br": _Brotli}
