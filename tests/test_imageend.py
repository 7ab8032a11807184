"""Whether an image's body reaches its format's end: whole images do, cut ones do not."""

from __future__ import annotations

import mmap
import struct
import tracemalloc
from pathlib import Path

import pytest

from crawler.demo.encode import encode_gif
from crawler.model.imageend import ends_whole, stops_inside
from crawler.model.imagetype import AVIF, BMP, GIF, JPEG, PNG, SVG, TIFF, ImageType, sniff
from tests.test_imagetype import (
    SVG_NS,
    box,
    jpeg_segment,
    make_avif,
    make_bmp,
    make_bmp_core,
    make_gif,
    make_ico,
    make_jpeg,
    make_png,
    make_svg,
    make_tiff,
    make_webp_lossless,
)


def _without_size(bmp: bytes) -> bytes:
    """A BMP whose file size field is 0, as encoders may write for uncompressed ones."""
    return bmp[:2] + b"\x00\x00\x00\x00" + bmp[6:]


def make_tiff_with_strips(width: int, height: int, *, rows_per_strip: int = 1,
                          big_endian: bool = False, directory_last: bool = False) -> bytes:
    """An 8-bit grey TIFF whose pixels lie in strips its directory lists (StripOffsets
    and StripByteCounts as LONGs, out of line when there are several): the directory
    first, or last as libtiff writes it."""
    order = ">" if big_endian else "<"
    magic = b"MM\x00*" if big_endian else b"II*\x00"
    strips = [bytes([n]) * width * min(rows_per_strip, height - row)
              for n, row in enumerate(range(0, height, rows_per_strip))]
    count = len(strips)
    entries_size = 2 + 12 * 6 + 4
    arrays_size = 8 * count if count > 1 else 0

    def layout(ifd_at: int, arrays_at: int, pixels_at: int) -> bytes:
        offsets, at = [], pixels_at
        for strip in strips:
            offsets.append(at)
            at += len(strip)
        sizes = [len(strip) for strip in strips]

        def entry(tag: int, kind: int, values: list[int]) -> bytes:
            if len(values) == 1:
                return struct.pack(order + "HHII", tag, kind, 1, values[0])
            where = arrays_at + (0 if tag == 273 else 4 * count)
            return struct.pack(order + "HHII", tag, kind, len(values), where)

        ifd = struct.pack(order + "H", 6)
        ifd += struct.pack(order + "HHII", 256, 4, 1, width)
        ifd += struct.pack(order + "HHII", 257, 4, 1, height)
        ifd += struct.pack(order + "HHIHH", 258, 3, 1, 8, 0)
        ifd += entry(273, 4, offsets)
        ifd += struct.pack(order + "HHII", 278, 4, 1, rows_per_strip)
        ifd += entry(279, 4, sizes)
        ifd += struct.pack(order + "I", 0)
        arrays = (struct.pack(f"{order}{count}I", *offsets)
                  + struct.pack(f"{order}{count}I", *sizes)) if count > 1 else b""
        return ifd + arrays

    pixels = b"".join(strips)
    if directory_last:
        ifd_at = 8 + len(pixels)
        return (magic + struct.pack(order + "I", ifd_at) + pixels
                + layout(ifd_at, ifd_at + entries_size, 8))
    return (magic + struct.pack(order + "I", 8)
            + layout(8, 8 + entries_size, 8 + entries_size + arrays_size) + pixels)


def _jpeg_with_exif_thumbnail() -> bytes:
    """A JPEG whose APP1 holds a whole JPEG (a camera's thumbnail, its EOI included)."""
    thumbnail = make_jpeg(8, 8)
    return make_jpeg(64, 48, extra=jpeg_segment(0xE1, b"Exif\x00\x00" + thumbnail))


def _animated_gif() -> bytes:
    """Two frames, each after a graphic control extension; the second with a local
    colour table. A looping extension first, as animation encoders write."""
    one = make_gif(6, 4)
    frame = one[19:-1]  # the image: descriptor, LZW code size, sub-blocks
    second = frame[:9] + bytes([frame[9] | 0x80]) + b"\x10\x20\x30\x40\x50\x60" + frame[10:]
    control = b"\x21\xf9\x04\x00\x0a\x00\x00\x00"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return one[:19] + loop + control + frame + control + second + b";"


WHOLE = [
    ("png", make_png(20, 10)),
    ("gif", make_gif(6, 4)),
    ("animated gif", _animated_gif()),
    ("gif of many sub-blocks", encode_gif(40, 30, [bytes((x * y) % 100 for x in range(40))
                                                   for y in range(30)], [(9, 9, 9)] * 100)),
    ("jpeg", make_jpeg(64, 48)),
    ("jpeg with a thumbnail", _jpeg_with_exif_thumbnail()),
    ("webp", make_webp_lossless(5, 5)),
    ("bmp", make_bmp(7, 3)),
    ("bmp without its size", _without_size(make_bmp(7, 3))),
    ("os/2 bmp without its size", _without_size(make_bmp_core(5, 2))),
    ("ico", make_ico(16, 16)),
    ("ico of two entries", make_ico(16, 16, count=2)),
    ("tiff, directory first", make_tiff_with_strips(6, 4)),
    ("tiff, directory last", make_tiff_with_strips(6, 4, directory_last=True)),
    ("tiff of one strip", make_tiff_with_strips(6, 4, rows_per_strip=4)),
    ("big-endian tiff", make_tiff_with_strips(6, 4, big_endian=True)),
    ("avif", make_avif(4, 3)),
    ("svg", make_svg('width="3" height="2"')),
    ("svg with a prefix", b'<s:svg xmlns:s="http://www.w3.org/2000/svg" width="3" height="2">'
                          b'<s:rect width="1" height="1"/></s:svg>'),
    ("svg closing itself", f'<?xml version="1.0"?>\n<svg {SVG_NS} width="3" height="2"/>'.encode()),
]


@pytest.mark.parametrize(("name", "body"), WHOLE)
def test_a_whole_image_ends_whole_and_one_cut_short_does_not(name: str, body: bytes) -> None:
    kind = sniff(body)
    assert kind is not None
    assert ends_whole(body, kind), name
    # Bytes after the end (a phone's trailer, a motion photo's video) are allowed.
    assert ends_whole(body + b"\x00" * 4 + b"trailer", kind), name
    for keep in range(len(body) - 1, 1, -max(1, len(body) // 40)):
        # (A still GIF whose trailer alone is missing has every pixel: see below.)
        still_gif_but_trailer = name in ("gif", "gif of many sub-blocks") and keep == len(body) - 1
        assert ends_whole(body[:keep], kind) is still_gif_but_trailer, (name, keep, len(body))


_UTF16_SVG = b"\xff\xfe" + make_svg('width="3" height="2"').decode().encode("utf-16-le")


@pytest.mark.parametrize(("name", "body"), [*WHOLE, ("utf-16 svg", _UTF16_SVG)])
def test_a_body_walked_in_its_file_is_judged_as_the_same_bytes_in_memory(
        name: str, body: bytes, tmp_path: Path) -> None:
    """A body spilled to its partial file is walked there, mapped, not copied into memory
    (up to download.max_bytes each): every format's walk gives a mapping the answers it
    gives the bytes, whole, with a trailer, and cut anywhere."""
    kind = sniff(body)
    assert kind is not None
    cuts = {len(body), *range(len(body) - 1, 0, -max(1, len(body) // 40))}
    for keep in sorted(cuts):
        part = body[:keep] + (b"\x00trailer" if keep == len(body) else b"")
        path = tmp_path / f"{keep}.part"
        path.write_bytes(part)
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0,
                                                  access=mmap.ACCESS_READ) as mapped:
            assert ends_whole(mapped, kind) is ends_whole(part, kind), (name, keep)
            assert stops_inside(mapped, kind) is stops_inside(part, kind), (name, keep)


@pytest.mark.parametrize("body", [
    make_svg('width="3" height="2"', prolog="<!--" + "x" * (16 << 20) + "-->"),
    make_webp_lossless(5, 5) + b"\x00" * (16 << 20),
    make_bmp(7, 3) + b"\x00" * (16 << 20),
], ids=["svg", "webp", "bmp"])
def test_a_large_body_is_walked_in_its_file_without_a_copy(body: bytes,
                                                           tmp_path: Path) -> None:
    kind = sniff(body)
    assert kind is not None
    path = tmp_path / "body.part"
    path.write_bytes(body)
    del body
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0,
                                              access=mmap.ACCESS_READ) as mapped:
        tracemalloc.start()
        try:
            assert not stops_inside(mapped, kind) and ends_whole(mapped, kind)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes taken to walk a body of 16 MiB"


def test_a_still_gif_without_its_trailer_is_whole_an_animation_is_not() -> None:
    """Some encoders leave the trailer out (Python's IDLE icons, minusnode.gif): browsers
    show such a picture whole, and judged cut short it was never stored. An animation
    that stops after a frame is another matter: its frames to come are missing."""
    still = make_gif(6, 4)
    assert still.endswith(b";") and ends_whole(still[:-1], GIF)
    assert not ends_whole(still[:-2], GIF)  # its image's last sub-block is not closed
    animated = _animated_gif()
    assert not ends_whole(animated[:-1], GIF)
    assert not ends_whole(animated[: animated.rindex(b"\x21\xf9")], GIF)  # one frame of two


@pytest.mark.parametrize(("name", "body"), [(name, body) for name, body in WHOLE
                                            if sniff(body) in (PNG, GIF, JPEG)])
def test_a_body_of_vouched_length_is_cut_where_it_stops_inside_a_piece(
        name: str, body: bytes) -> None:
    """A server's file cut short: a PNG chunk, a GIF block or a JPEG segment before its
    picture data whose length runs past the end. A body that ends between two pieces,
    its end marker alone missing, is shown in full by browsers: no cut."""
    kind = sniff(body)
    assert kind is not None
    assert not stops_inside(body, kind) and not stops_inside(body + b"trailer", kind), name
    assert stops_inside(body[:12], kind), name  # within the first piece after the header
    end_marker = {PNG: 12, GIF: 1, JPEG: 2}[kind]
    assert not stops_inside(body[:-end_marker], kind), name
    for keep in range(len(body) - 1, 1, -max(1, len(body) // 40)):
        if stops_inside(body[:keep], kind):
            assert not ends_whole(body[:keep], kind), (name, keep)  # milder, never wronger


@pytest.mark.parametrize(("name", "body"), [(name, body) for name, body in WHOLE
                                            if sniff(body) not in (PNG, GIF, JPEG)])
def test_a_body_of_vouched_length_short_of_its_stated_end_stops_inside(
        name: str, body: bytes) -> None:
    """Formats that state where they end (a RIFF's or BMP's size, the offsets of TIFF
    strips, ICO entries and AVIF boxes) or must close their markup (an SVG): short of
    that end, a file whose every byte came is cut short on the server, as a PNG cut
    inside a chunk is. They were all stored as successes."""
    kind = sniff(body)
    assert kind is not None
    trailer = b"\x00" * 4 + b"trailer"
    assert not stops_inside(body, kind) and not stops_inside(body + trailer, kind), name
    assert stops_inside(body[:len(body) // 2], kind), name
    assert stops_inside(body[:-1], kind), name  # its last byte alone missing


def test_a_png_that_ends_before_its_pixels_stops_inside() -> None:
    """Signature and header alone, every byte said came: a browser has no picture to
    show. One whose pixels came, its IEND alone missing, is shown whole."""
    whole = make_png(20, 10)
    assert stops_inside(whole[:whole.index(b"IDAT") - 4], PNG)
    assert not stops_inside(whole[:-12], PNG)


def test_what_decoders_skip_is_no_cut() -> None:
    """Every body is judged now, its length vouched for or not: a stray block terminator
    before a GIF's trailer (tests/site's favicon.gif has one) or bytes before a JPEG's
    next marker, which decoders skip and browsers show, were taken for a cut. A byte
    that starts no GIF block is a structure the walk does not know: taken as it is.
    Cut, each still falls short."""
    gif = make_gif(6, 4)
    padded = gif[:-1] + b"\x00;"
    assert ends_whole(padded, GIF)
    assert not ends_whole(padded[:-1], GIF)  # ends in the stray byte: no trailer
    assert ends_whole(gif[:-1] + b"\x99 unknown", GIF)
    jpeg = make_jpeg(16, 8)
    second = jpeg.index(b"\xff", 2)  # the marker after SOI's first segment
    extraneous = jpeg[:second] + b"\x00\x07junk" + jpeg[second:]
    assert ends_whole(extraneous, JPEG)
    for keep in range(len(extraneous) - 1, 2, -7):
        assert not ends_whole(extraneous[:keep], JPEG), keep


def test_an_avif_cut_between_its_boxes_is_not_whole() -> None:
    """A cut that falls just after the ``meta`` box leaves every box whole, and no pixels."""
    whole = make_avif(4, 3)
    assert not ends_whole(whole[:whole.index(b"mdat") - 4], AVIF)
    # Its pixels in an ``idat`` of the ``meta`` box: nothing else is needed.
    assert ends_whole(make_avif(4, 3, pixels_in_meta=True), AVIF)


def test_a_bmp_whose_size_field_is_wrong_is_judged_by_its_rows() -> None:
    """Encoders that write the size field wrong exist: a whole file is not cut short."""
    whole = make_bmp(7, 3)
    too_large = whole[:2] + (len(whole) + 100).to_bytes(4, "little") + whole[6:]
    assert ends_whole(too_large, BMP)
    assert not ends_whole(too_large[:-1], BMP)


def test_an_avif_sequence_indexed_by_a_moov_is_whole() -> None:
    ftyp = box(b"ftyp", b"avis\x00\x00\x00\x00avisavifmsf1")
    sequence = ftyp + box(b"moov", b"\x00" * 24) + box(b"mdat", b"\x00" * 32)
    assert ends_whole(sequence, AVIF)
    assert not ends_whole(sequence[:-1], AVIF)
    assert not ends_whole(sequence[:sequence.index(b"mdat") - 4], AVIF)


def test_a_bmp_without_its_size_is_judged_by_its_rows() -> None:
    body = _without_size(make_bmp(7, 3))
    rows_end = len(body)
    assert ends_whole(body, BMP) and not ends_whole(body[:rows_end - 1], BMP)
    # A compressed one (run-length) without its size says nowhere where it ends.
    rle = body[:30] + struct.pack("<I", 1) + struct.pack("<I", 0) + body[38:]
    assert ends_whole(rle[:60], BMP)


def test_a_tiff_the_walk_cannot_follow_is_taken_as_it_is() -> None:
    assert ends_whole(b"II+\x00\x08\x00\x00\x00" + b"\x00" * 8, TIFF)  # BigTIFF
    assert ends_whole(make_tiff(3, 3), TIFF)  # its directory lists no pixels
    assert not ends_whole(make_tiff(3, 3)[:20], TIFF)  # but is itself cut


def test_an_svg_whose_last_closing_tag_is_not_its_roots_is_not_whole() -> None:
    svg = make_svg('width="3" height="2"')
    assert not ends_whole(svg.replace(b"</svg>", b""), SVG)
    assert not ends_whole(svg.replace(b"</svg>", b"</svg"), SVG)
    assert not ends_whole(svg[:svg.index(b"<rect")], SVG)
    assert ends_whole(svg + b"\n<!-- drawn by hand -->\n", SVG)  # what may follow the root


def animation_played_once(frames: int, delay: int) -> bytes:
    """A GIF of ``frames`` frames shown ``delay`` hundredths of a second each, with no
    looping extension: an animation that plays once."""
    still = encode_gif(4, 2, [[0, 1, 0, 1], [1, 0, 1, 0]], [(255, 0, 0), (0, 0, 255)])
    screen = 13 + 3 * 128  # header, screen descriptor, global colour table
    control = b"\x21\xf9\x04\x04" + struct.pack("<H", delay) + b"\x00\x00"
    return still[:screen] + (control + still[screen:-1]) * frames + b";"


def test_an_svg_tag_that_never_closes_is_judged_at_once() -> None:
    """A hostile body of one 50 MB tag: the walk that looks for the tag's end held the
    worker's engine for 14 s. Timed in this process's CPU seconds (about 1 here), which
    other processes on a busy machine do not lengthen as they do the wall clock's."""
    import time

    bodies = [b"<svg " + b"a" * 50_000_000, b"<svg " + b'a"b"' * 10_000_000]
    started = time.process_time()
    for body in bodies:
        assert not ends_whole(body, SVG)
    assert time.process_time() - started < 4.0


def test_an_animation_cut_between_its_frames_is_not_whole() -> None:
    """Cut after its first frame, an animation without a looping extension looked like
    a still picture whose encoder left the trailer out."""
    played_once = animation_played_once(2, delay=50)
    first_frame = animation_played_once(1, delay=50)[:-1]  # no trailer
    assert played_once.startswith(first_frame)
    assert ends_whole(played_once, GIF)
    assert not ends_whole(first_frame, GIF)
    # A still picture with a graphic control extension of no delay (for its transparency)
    # and no trailer is still whole.
    still = animation_played_once(1, delay=0)
    assert ends_whole(still[:-1], GIF)


def test_an_svg_is_whole_only_where_its_root_closes() -> None:
    """Inner <svg> elements close before the root: a body cut after one is not whole,
    nor one whose last closing tag is hidden in a comment or CDATA."""
    inner = (b'<svg width="1" height="1"><rect width="1" height="1"/></svg>')
    svg = f'<svg {SVG_NS} width="3" height="2">'.encode() + inner * 2 + b"</svg>"
    assert ends_whole(svg, SVG)
    assert ends_whole(svg + b"\n<!-- drawn by hand -->\n", SVG)
    for end in range(len(svg)):
        assert not ends_whole(svg[:end], SVG), svg[:end]
    prefixed = b'<s:svg xmlns:s="x"><s:svg/><s:svg></s:svg></s:svg>'
    assert ends_whole(prefixed, SVG) and not ends_whole(prefixed[:-len(b"</s:svg>")], SVG)
    hidden = f'<svg {SVG_NS}><rect/><!-- </svg> --><![CDATA[ </svg> ]]>'.encode()
    assert not ends_whole(hidden, SVG) and ends_whole(hidden + b"</svg>", SVG)
    assert not ends_whole(f'<svg {SVG_NS}><rect/><!-- </svg>'.encode(), SVG)
    assert ends_whole(f'<svg {SVG_NS} data-x="a>b"><rect/></svg>'.encode(), SVG)
    declared = f'<!DOCTYPE svg [ <!ENTITY icon "<svg>"> ]><svg {SVG_NS}>&icon;</svg>'.encode()
    assert ends_whole(declared, SVG) and not ends_whole(declared[:-1], SVG)


@pytest.mark.parametrize(("body", "kind"), [
    (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00abcd\x00\x00\x00\x00" * 2000, PNG),
    (b"\xff\xd8" + b"\xff\xfe\x00\x02" * 2000, JPEG),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00" + b"\x21\xfe\x00" * 2000, GIF),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00," + b"\x00" * 9 + b"\x02" + b"\x01\x00" * 2000, GIF),
    (make_avif(4, 3).replace(b"mdat", b"free") + b"\x00\x00\x00\x08free" * 2000, AVIF),
    (b"II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHII", 273, 4, 2000, 22)
     + b"\x00" * 4 + struct.pack("<I", 0) * 1000, TIFF),  # (2000 listed)
])
def test_a_body_of_more_pieces_than_a_walk_takes_is_taken_as_it_is(
        body: bytes, kind: ImageType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tens of millions of empty chunks, segments or sub-blocks (a hostile server's 50 MB
    without a length) held a worker for seconds: the walk stops at its budget."""
    import crawler.model.imageend as imageend

    monkeypatch.setattr(imageend, "WALK_STEPS", 1000)
    assert ends_whole(body, kind)


def _tiff_directory(at: int, entries: int, next_at: int) -> bytes:
    """A little-endian TIFF directory at ``at`` of ``entries`` tags that locate no pixels
    (SHORT values held in the entry), pointing on to the directory at ``next_at``."""
    tags = b"".join(struct.pack("<HHIHH", 700 + i, 3, 1, 0, 0) for i in range(entries))
    return struct.pack("<H", entries) + tags + struct.pack("<I", next_at)


def test_a_tiff_whose_directories_run_in_a_circle_is_judged_at_once() -> None:
    """A directory that points back to itself (or to an earlier one) made the walk read
    it again and again: 2,000 tags, 24 kB, held the engine's thread for a minute, every
    download of the worker with it. libtiff stops at such a loop; so does the walk."""
    import time

    looped = b"II*\x00" + struct.pack("<I", 8) + _tiff_directory(8, 2000, 8)
    started = time.monotonic()
    assert ends_whole(looped, TIFF)  # every directory read whole: taken as it is
    assert time.monotonic() - started < 2.0
    # Directories that each point to the next, many of them: their tags count as steps.
    chain = b"II*\x00" + struct.pack("<I", 8)
    size = 2 + 12 * 50 + 4
    count = 400
    for n in range(count):
        at = 8 + n * size
        chain += _tiff_directory(at, 50, at + size if n + 1 < count else 0)
    started = time.monotonic()
    assert ends_whole(chain, TIFF)
    assert not ends_whole(chain[:-10], TIFF)  # the last directory cut
    assert time.monotonic() - started < 2.0
