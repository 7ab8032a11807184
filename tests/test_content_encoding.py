"""Content-Encoding decoded by the crawler: whole bodies pass, cut or broken ones do not."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import brotli
import pytest

from crawler.fetch.contentencoding import CUT_SHORT, PIECE, BodyDecoder, body_decoder
from crawler.fetch.engine import Abandoned
from crawler.model.outcome import FailureKind

BODY = bytes(range(256)) * 40 + b"the end"
ANY_SIZE = 1 << 30  # a size cap no body here reaches


def raw_deflate(data: bytes) -> bytes:
    squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return squeeze.compress(data) + squeeze.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress, "x-gzip": gzip.compress, "deflate": zlib.compress,
    "raw deflate": raw_deflate, "br": brotli.compress}


def decoder_for(name: str) -> BodyDecoder:
    decoder = body_decoder(name.split()[-1], ANY_SIZE)
    assert decoder is not None
    return decoder


def decoded(decoder: BodyDecoder, body: bytes, step: int) -> bytes:
    out = b"".join(piece for at in range(0, len(body), step)
                   for piece in decoder.decode(body[at:at + step]))
    decoder.finish()
    return out


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("step", [1, 2, 1000, 1 << 20])
def test_a_whole_body_decodes_however_it_arrives(name: str, step: int) -> None:
    assert decoded(decoder_for(name), ENCODERS[name](BODY), step) == BODY


@pytest.mark.parametrize("name", ENCODERS)
def test_a_body_cut_anywhere_is_cut_short_and_worth_another_try(name: str) -> None:
    encoded = ENCODERS[name](BODY)
    for cut in (1, len(encoded) // 3, len(encoded) - 1):
        with pytest.raises(Abandoned) as caught:
            decoded(decoder_for(name), encoded[:cut], 500)
        assert (str(caught.value), caught.value.kind, caught.value.transient) == (
            CUT_SHORT, FailureKind.BAD_RESPONSE, True), (name, cut)


@pytest.mark.parametrize("name", ENCODERS)
def test_bytes_after_the_end_are_a_broken_encoding_for_good(name: str) -> None:
    with pytest.raises(Abandoned, match=r"^bad response: broken encoding") as caught:
        decoded(decoder_for(name), ENCODERS[name](BODY) + b"more", 100_000)
    assert not caught.value.transient


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_garbage_is_a_broken_encoding(name: str) -> None:
    with pytest.raises(Abandoned, match=r"^bad response: broken encoding \(.+\)$"):
        decoded(decoder_for(name), b"\x1f\x8b" + b"not compressed at all" * 10, 100_000)


def test_an_empty_body_is_no_stream_to_finish() -> None:
    """Nothing came (a 200 with no body): the sink says "empty", not the decoder."""
    assert decoded(decoder_for("gzip"), b"", 1) == b""


def test_a_bomb_comes_out_in_bounded_pieces_and_only_as_far_as_it_is_read() -> None:
    bomb = b"\0" * (200 * PIECE)
    for encoded in (gzip.compress(bomb, 9), brotli.compress(bomb)):
        pieces = decoder_for("gzip" if encoded[:2] == b"\x1f\x8b" else "br").decode(encoded)
        sizes = [len(next(pieces)) for _ in range(3)]  # the caller's cap stops here
        assert all(0 < size <= 2 * PIECE for size in sizes), sizes


def test_gzip_members_one_after_another_are_one_body() -> None:
    members = gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])
    for step in (1, 7, len(members)):
        assert decoded(decoder_for("gzip"), members, step) == BODY


def test_a_second_member_cut_short_is_cut_short() -> None:
    members = gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])[:50]
    with pytest.raises(Abandoned, match=CUT_SHORT):
        decoded(decoder_for("gzip"), members, 1000)


@pytest.mark.parametrize("name", ENCODERS)
def test_output_held_inside_the_decoder_after_a_full_piece_still_comes_out(name: str) -> None:
    """Long runs: every input byte taken in while zlib still held the rest of a match,
    and a whole raw-deflate picture was said to be cut short."""
    for extra in range(1, 600, 7):  # where the piece ends inside a match depends on it
        black = b"P5 640 480 255\n" + bytes(PIECE + extra)
        assert decoded(decoder_for(name), ENCODERS[name](black), 1 << 20) == black, extra


def test_the_same_coding_twice_is_undone_twice() -> None:
    """An empty brotli piece went on to the next step, which had ended: "bytes after the
    end" for a whole body."""
    twice = brotli.compress(brotli.compress(BODY))
    decoder = body_decoder("br, br", ANY_SIZE)
    assert decoder is not None
    assert decoded(decoder, twice, 1) == BODY


def test_codings_are_undone_in_reverse_order() -> None:
    decoder = body_decoder("deflate, identity, br", ANY_SIZE)  # deflate applied first, then br
    assert decoder is not None
    assert decoded(decoder, brotli.compress(zlib.compress(BODY)), 333) == BODY


@pytest.mark.parametrize("header", [None, "", "identity", " Identity , identity", "none"])
def test_no_coding_is_no_decoder(header: str | None) -> None:
    assert body_decoder(header, ANY_SIZE) is None


@pytest.mark.parametrize("header", ["compress", "zstd", "gzip, lzw", "gzip, gzip, gzip, gzip"])
def test_an_encoding_not_decoded_here_is_named(header: str) -> None:
    with pytest.raises(Abandoned, match=r"^bad response: unsupported content encoding '") as caught:
        body_decoder(header, ANY_SIZE)
    assert caught.value.kind is FailureKind.BAD_RESPONSE and not caught.value.transient
