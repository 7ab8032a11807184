"""Whether an image's body reaches its format's end, read from the bytes alone.

For every body a worker stores. Whose length nothing vouched for (no
Content-Length; an HTTP/2 stream reset "without error", which libcurl takes for
its end), a transfer cut short there looks complete; and a server may send,
whole, a file cut short on its disk. Either way half a picture would be stored
as a success. Each check walks the format's own structure (chunks, segments,
blocks, boxes, directories) to where the format says the picture ends. Nothing
is decoded. What decoders skip (stray bytes between a JPEG's segments or a GIF's
blocks) is skipped, and a structure the walk does not know is taken as it is: a
cut runs out of bytes, it does not make unknown ones.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Callable
from typing import NamedTuple

from crawler.model.imagetype import (
    AVIF,
    BMP,
    GIF,
    HEIC,
    ICO,
    JPEG,
    JXL,
    PNG,
    SVG,
    TIFF,
    WEBP,
    ImageType,
    utf8_markup,
)

Body = bytes | mmap.mmap  # a large body is walked where it lies, in its file

# Steps (chunks, segments, blocks) a walk takes at most: real images take a few, up to
# some 200,000 for a GIF of 50 MB; a hostile body of tiny blocks is taken as it is.
WALK_STEPS = 250_000
_FF_RUN = re.compile(rb"\xff+")
# In a JPEG's entropy-coded data an 0xFF byte is followed by 0x00 (stuffing) or a
# restart marker: anything else is the next marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def ends_whole(body: Body, kind: ImageType) -> bool:
    """Whether ``body`` reaches its format's end: a PNG's IEND, a JPEG's EOI, a GIF's
    trailer, a RIFF's or BMP's size, the pixels of every TIFF directory and ICO
    entry, an AVIF's boxes, an SVG's closing root tag.

    Bytes after the end (a phone's trailer, a motion photo's video) are allowed,
    and a body of more than :data:`WALK_STEPS` pieces counts as whole, so that judging
    one costs little whatever a server sends.
    """
    check = _CHECKS.get(kind.name)
    return check(body) if check else True


def stops_inside(body: Body, kind: ImageType) -> bool:
    """Whether ``body``, whose length was vouched for, stops inside one of its format's
    pieces: a PNG chunk, a GIF block, or a JPEG segment before its picture data, whose
    own length runs past the body's end (or no picture data at all: a PNG without an
    IDAT chunk). That is a file cut short on the server: a browser shows a broken image.

    Milder than :func:`ends_whole` for those three: a body that ends between two
    pieces, its end marker alone missing (a JPEG without its end of image, a PNG
    without ``IEND``, a GIF without its trailer), is shown in full by browsers, and a
    JPEG cut within its picture data cannot be told from one. The other formats state
    where they end (a RIFF's or BMP's size, the offsets of TIFF strips, ICO entries and
    AVIF boxes) or must close their markup (an SVG, which a browser does not show
    unclosed): short of that end, they stop inside.
    """
    check = _STOPS_INSIDE.get(kind.name)
    if check is not None:
        return check(body)
    whole = _CHECKS.get(kind.name)
    if whole is None:
        return False
    # A body in its file is walked there (a mapping): a copy cost up to max_bytes.
    return not whole(body)


def _png_stops_inside(body: Body) -> bool:
    end = _png_walk(body)
    return end == "inside" or (end == "between" and not _png_has_pixels(body))


def _png_has_pixels(body: Body) -> bool:
    """Whether a PNG that ends between two chunks has an IDAT among them: without one,
    a browser has no picture to show."""
    pos = 8
    for _ in range(WALK_STEPS):
        if pos + 8 > len(body):
            return False
        if body[pos + 4:pos + 8] == b"IDAT":
            return True
        pos += 12 + int.from_bytes(body[pos:pos + 4], "big")
    return True


def _gif_blocks_start(body: Body) -> int | None:
    """Where a GIF's blocks begin: after its header, logical screen descriptor and
    global colour table (which may run past a short body); None for a shorter body."""
    if len(body) < 13:
        return None
    return 13 + ((3 << ((body[10] & 7) + 1)) if body[10] & 0x80 else 0)


def _gif_stops_inside(body: Body) -> bool:
    return _gif_walk(body).end == "inside"


def _jpeg_stops_inside(body: Body) -> bool:
    return _jpeg_reaches_end(body, scans=False) is False


def _png_whole(body: Body) -> bool:
    return _png_walk(body) == "whole"


def _png_walk(body: Body) -> str:
    """Where a PNG's chunk walk ends: "whole" (its IEND and that chunk's CRC, or the
    walk's step limit), "iend-cut" (its IEND, the CRC cut: the picture is whole),
    "between" (the body ends between two chunks) or "inside" (within one)."""
    pos = 8
    for _ in range(WALK_STEPS):
        if pos >= len(body):
            return "between"
        if pos + 8 > len(body):
            return "inside"
        if body[pos + 4:pos + 8] == b"IEND":
            return "whole" if pos + 12 <= len(body) else "iend-cut"
        pos += 12 + int.from_bytes(body[pos:pos + 4], "big")
        if pos > len(body):
            return "inside"
    return "whole"


def _gif_whole(body: Body) -> bool:
    """Whether the block walk reaches the trailer; or, for a still picture, the end of
    its one image's data exactly at the body's end: encoders that leave the trailer
    out exist (Python's own IDLE icons), and browsers show every pixel of them. An
    animation cut between its first two frames ends so too: one whose first frame has
    a delay is not taken for a still picture."""
    walk = _gif_walk(body)
    return walk.end == "taken" or (walk.end == "between" and walk.images == 1
                                   and walk.last == 0x2C and not walk.animated)


class _GifWalk(NamedTuple):
    # "taken": a trailer, a block the walk does not know (a cut runs out of bytes, it
    # does not make unknown ones) or the walk's step limit, all taken as whole;
    # "between": the body ends between two blocks; "inside": within one (or its header).
    end: str
    images: int
    # Frames to come: a looping extension (NETSCAPE2.0, ANIMEXTS1.0), or a frame shown for
    # a while (a delay in its graphic control extension), as an animation that plays once.
    animated: bool
    last: int  # the last block's introducer


def _gif_walk(body: Body) -> _GifWalk:
    pos = _gif_blocks_start(body)
    if pos is None:
        return _GifWalk("inside", 0, False, 0)
    images = 0
    animated = False
    steps = 0
    block = 0
    while pos < len(body):
        steps += 1
        if steps > WALK_STEPS:
            return _GifWalk("taken", images, animated, block)
        block = body[pos]
        if block == 0x3B:  # the trailer
            return _GifWalk("taken", images, animated, block)
        if block == 0x21:  # an extension: its label, then sub-blocks
            animated = animated or _frames_to_come(body, pos)
            pos += 2
        elif block == 0x2C:  # an image: its descriptor, colour table, LZW code size
            if pos + 10 > len(body):
                return _GifWalk("inside", images, animated, block)
            images += 1
            flags = body[pos + 9]
            pos += 10 + 1  # and the LZW code size after its colour table
            if flags & 0x80:
                pos += 3 << ((flags & 7) + 1)
        elif block == 0:  # a stray block terminator, which decoders (and browsers) skip
            pos += 1
            continue
        else:
            return _GifWalk("taken", images, animated, block)
        while pos < len(body) and body[pos]:  # sub-blocks, up to the empty one
            pos += 1 + body[pos]
            steps += 1
            if steps > WALK_STEPS:
                return _GifWalk("taken", images, animated, block)
        pos += 1
    return _GifWalk("between" if pos == len(body) else "inside", images, animated, block)


def _frames_to_come(body: Body, pos: int) -> bool:
    """Whether the GIF extension at ``pos`` says that frames follow: a looping one, or a
    graphic control extension that shows its frame for a while before the next."""
    label = body[pos + 1:pos + 2]
    if label == b"\xff":
        return body[pos + 3:pos + 11] in (b"NETSCAPE", b"ANIMEXTS")
    return (label == b"\xf9" and body[pos + 2:pos + 3] == b"\x04"
            and int.from_bytes(body[pos + 4:pos + 6], "little") > 0)


def _jpeg_whole(body: Body) -> bool:
    return _jpeg_reaches_end(body, scans=True) is True


def _jpeg_reaches_end(body: Body, *, scans: bool) -> bool | None:
    """Walk a JPEG's segments after its start of image. True: it reaches its end of
    image (or the walk its step limit). False: it stops before, inside a segment, or
    (``scans``) inside its picture data. None, without ``scans``: it reaches its
    picture data, where a cut cannot be told from an end of image left out."""
    pos = 2
    for _ in range(WALK_STEPS):
        if pos + 2 > len(body):
            return False
        if body[pos] != 0xFF:  # bytes before the next marker, which decoders skip
            found = _JPEG_MARKER.search(body, pos)
            if found is None:
                return False
            pos = found.start()
        pos = _FF_RUN.match(body, pos).end() - 1  # type: ignore[union-attr]  # fill bytes
        if pos + 2 > len(body):
            return False
        marker = body[pos + 1]
        if marker == 0xD9:  # EOI
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            pos += 2
            continue
        if pos + 4 > len(body):
            return False
        pos += 2 + int.from_bytes(body[pos + 2:pos + 4], "big")
        if marker == 0xDA:  # SOS: entropy-coded data up to the next marker
            if not scans:
                return None if pos <= len(body) else False
            found = _JPEG_MARKER.search(body, pos)
            if found is None:
                return False
            pos = found.start()
    return True


def _webp_whole(body: Body) -> bool:
    return len(body) >= max(12, 8 + int.from_bytes(body[4:8], "little"))


# BMP compressions whose pixel rows are stored as they are (none, bit fields).
_BMP_ROWS_AS_THEY_ARE = frozenset({0, 3, 6})


def _bmp_whole(body: Body) -> bool:
    """Its file size field; where that is 0 (allowed for uncompressed bitmaps) or more
    than the body (encoders that write it wrong exist), the pixel data's offset plus the
    rows its width, height and depth make, or the image size its header states."""
    if len(body) < 26:
        return False
    declared = int.from_bytes(body[2:6], "little")
    if declared and len(body) >= declared:
        return True
    pixels_at = int.from_bytes(body[10:14], "little")
    dib = int.from_bytes(body[14:18], "little")
    if dib == 12:  # BITMAPCOREHEADER: 16-bit sides, never compressed
        width, height, _planes, depth = struct.unpack_from("<HHHH", body, 18)
        compression, image_size = 0, 0
    else:
        if len(body) < 38:
            return False
        width, height, _planes, depth, compression, image_size = struct.unpack_from(
            "<iiHHII", body, 18)
    if compression in _BMP_ROWS_AS_THEY_ARE:
        image_size = (abs(width) * depth + 31) // 32 * 4 * abs(height)
    if compression in _BMP_ROWS_AS_THEY_ARE or image_size:
        return len(body) >= pixels_at + image_size
    # Compressed, its size nowhere: the size field, if any, is all there is to go by.
    return not declared


def _ico_whole(body: Body) -> bool:
    """Every entry's image within the body (its directory gives each one's offset and size)."""
    count = int.from_bytes(body[4:6], "little")
    if len(body) < 6 + 16 * count:
        return False
    for entry in range(6, 6 + 16 * count, 16):
        size, offset = struct.unpack_from("<II", body, entry + 8)
        if offset + size > len(body):
            return False
    return True


# TIFF tags that locate the pixels (strips or tiles) and their byte counts.
_TIFF_PIXELS = {273: 279, 324: 325}  # StripOffsets: StripByteCounts, TileOffsets: ...
_TIFF_WIDTHS = {3: 2, 4: 4}  # SHORT and LONG, the types these tags take


def _tiff_whole(body: Body) -> bool:
    """Every directory of the chain, and every strip or tile they list, within the body.

    BigTIFF, and tags of types these offsets never take, are not walked (taken as
    they are). A chain that comes back to a directory read already ends there, as
    libtiff stops at such a loop; every tag read counts against WALK_STEPS."""
    if len(body) < 8:
        return False
    order = "<" if body[:2] == b"II" else ">"
    if body[2:4] != (b"*\x00" if order == "<" else b"\x00*"):
        return True  # BigTIFF (43): 64-bit offsets throughout
    (ifd,) = struct.unpack_from(order + "I", body, 4)
    steps = 0
    seen: set[int] = set()
    while ifd and ifd not in seen:
        seen.add(ifd)
        if ifd + 2 > len(body):
            return False
        (count,) = struct.unpack_from(order + "H", body, ifd)
        if ifd + 2 + 12 * count + 4 > len(body):
            return False
        steps += count
        if steps > WALK_STEPS:
            return True
        tags: dict[int, tuple[int, ...]] = {}
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, values = struct.unpack_from(order + "HHI", body, entry)
            if kind not in _TIFF_WIDTHS or not (tag in _TIFF_PIXELS
                                               or tag in _TIFF_PIXELS.values()):
                continue
            steps += values
            if steps > WALK_STEPS:
                return True
            width = _TIFF_WIDTHS[kind]
            at = entry + 8
            if values * width > 4:  # not in the entry itself: at the offset it holds
                (at,) = struct.unpack_from(order + "I", body, entry + 8)
                if at + values * width > len(body):
                    return False
            code = "H" if width == 2 else "I"
            tags[tag] = struct.unpack_from(f"{order}{values}{code}", body, at)
        for offsets_tag, counts_tag in _TIFF_PIXELS.items():
            ends = [offset + size for offset, size in zip(
                tags.get(offsets_tag, ()), tags.get(counts_tag, ()), strict=False)]
            if ends and max(ends) > len(body):
                return False
        (ifd,) = struct.unpack_from(order + "I", body, ifd + 2 + 12 * count)
        steps += 1
        if steps > WALK_STEPS:
            return True
    return True


def _avif_whole(body: Body) -> bool:
    """Every top-level box whole, a ``meta`` (or a sequence's ``moov``) among them, and
    the pixels' ``mdat`` (or an ``idat`` in the ``meta``): a body cut between two boxes
    lacks the second. An AVIF's or a HEIC's: both are HEIF."""
    pos = 0
    seen: set[bytes] = set()
    for _ in range(WALK_STEPS):
        if pos + 8 > len(body):
            break
        if not all(0x20 <= c <= 0x7E for c in body[pos + 4:pos + 8]):
            break  # no box: bytes after the last one
        box = _box_at(body, pos)
        if box is None:
            return False
        kind, header, size = box
        if size < header:
            break
        if pos + size > len(body):
            return False
        if kind == b"meta" and body.find(b"idat", pos, pos + size) >= 0:
            seen.add(b"mdat")
        seen.add(kind)
        pos += size
    else:
        return True
    # An image sequence (avis) may keep its frames' index in a moov instead of a meta.
    return (b"meta" in seen or b"moov" in seen) and b"mdat" in seen


def _box_at(body: Body, pos: int) -> tuple[bytes, int, int] | None:
    """The ISO BMFF box at ``pos`` (AVIF's, HEIC's, JPEG XL's container): its type, the
    length of its header and its size, read as given (a 64-bit one after the type; 0:
    to the body's end); None where the body ends within its header."""
    if pos + 8 > len(body):
        return None
    size, kind, header = int.from_bytes(body[pos:pos + 4], "big"), body[pos + 4:pos + 8], 8
    if size == 1:
        if pos + 16 > len(body):
            return None
        size, header = int.from_bytes(body[pos + 8:pos + 16], "big"), 16
    elif size == 0:
        size = len(body) - pos
    return bytes(kind), header, size


def _jxl_whole(body: Body) -> bool:
    """A JPEG XL in its container: every box whole, and its codestream's (``jxlc``, or
    the last of its ``jxlp`` parts, whose counter's high bit marks it) among them. A
    bare codestream states no end: taken as it is."""
    if body[:2] == b"\xff\x0a":
        return True
    pos = 0
    for _ in range(WALK_STEPS):
        box = _box_at(body, pos)
        if box is None:
            return False
        kind, header, size = box
        if size < header or pos + size > len(body):
            return False
        if kind == b"jxlc" or (kind == b"jxlp" and size >= header + 4
                               and body[pos + header] & 0x80):
            return True  # (what follows the codestream is metadata a decoder may skip)
        pos += size
    return True


# What the walk of an SVG stops at: a comment, CDATA or a processing instruction (which
# may hold any text, "</svg>" too), a declaration (a DOCTYPE's entities may hold "<svg>")
# and the start or end tag of an <svg> element, with or without a namespace prefix.
_SVG_MARK = re.compile(
    rb"<!--|<!\[CDATA\[|<\?|<!(?=[A-Za-z])|<(/?)(?:[A-Za-z_][-\w.]*:)?svg(?=[\s/>])")
_SVG_SKIP_TO = {b"<!--": b"-->", b"<![CDATA[": b"]]>", b"<?": b"?>"}
# The rest of a tag: a ">" in a quoted attribute value does not end it. Runs of plain
# bytes at once, and never given back (possessive): a hostile 50 MB tag that never
# closes costs a tenth of a second, where a byte at a time, backtracking, took 14 s.
_TAG_REST = re.compile(rb"""(?:[^>"']+|"[^"]*"|'[^']*')*+>""")


def _svg_whole(body: Body) -> bool:
    """Whether the root <svg> element closes: its own end tag, or ``<svg .../>``.

    The <svg> elements inside it are counted: an SVG that draws its icons in <svg>s of
    their own, cut just after one's end tag, ends on "</svg>" as a whole one does.
    """
    body = utf8_markup(body)
    depth = 0  # <svg> elements open
    pos = 0
    for _ in range(WALK_STEPS):
        mark = _SVG_MARK.search(body, pos)
        if mark is None:
            return False
        skip_to = _SVG_SKIP_TO.get(mark.group())
        if skip_to is not None:
            end = body.find(skip_to, mark.end())
            if end < 0:
                return False  # cut inside it
            pos = end + len(skip_to)
            continue
        tag = _TAG_REST.match(body, mark.end())
        if tag is None:
            return False  # cut inside the tag
        pos = tag.end()
        if mark.group() == b"<!":  # a declaration, skipped as a tag is
            continue
        if mark.group(1):  # an end tag
            if depth == 1:
                return True
            depth = max(0, depth - 1)
        elif body[pos - 2:pos - 1] != b"/":
            depth += 1
        elif depth == 0:
            return True  # a root that closes itself
    return True


_STOPS_INSIDE: dict[str, Callable[[Body], bool]] = {
    PNG.name: _png_stops_inside, GIF.name: _gif_stops_inside, JPEG.name: _jpeg_stops_inside}
_CHECKS = {
    PNG.name: _png_whole, JPEG.name: _jpeg_whole, GIF.name: _gif_whole,
    WEBP.name: _webp_whole, BMP.name: _bmp_whole, ICO.name: _ico_whole,
    TIFF.name: _tiff_whole, AVIF.name: _avif_whole, HEIC.name: _avif_whole,
    JXL.name: _jxl_whole, SVG.name: _svg_whole,
}
