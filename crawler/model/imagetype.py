"""What counts as an image, decided from its first bytes only.

A server's ``Content-Type`` and a URL's extension are claims; the leading bytes
are evidence. ``sniff`` recognises the image formats browsers display (and a
few they used to), ``dimensions`` reads width and height from the header
without decoding any pixels. Both work on a bounded prefix of the body
(``SNIFF_BYTES``) and never raise: a truncated or malformed header gives None.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple, overload

SNIFF_BYTES = 64 * 1024
"""How many leading bytes callers keep for ``sniff`` and ``dimensions``."""


class ImageType(NamedTuple):
    """An image format: a short name, the extension files get, and its MIME type."""

    name: str
    extension: str
    mime: str


JPEG = ImageType("jpeg", "jpg", "image/jpeg")
PNG = ImageType("png", "png", "image/png")
GIF = ImageType("gif", "gif", "image/gif")
WEBP = ImageType("webp", "webp", "image/webp")
AVIF = ImageType("avif", "avif", "image/avif")
# HEIF's HEVC images, what iPhones take (Safari shows them), and JPEG XL (Safari too):
# served to it by a <picture>'s <source type="image/heic"> or type="image/jxl".
HEIC = ImageType("heic", "heic", "image/heic")
JXL = ImageType("jxl", "jxl", "image/jxl")
BMP = ImageType("bmp", "bmp", "image/bmp")
TIFF = ImageType("tiff", "tiff", "image/tiff")
ICO = ImageType("ico", "ico", "image/x-icon")
SVG = ImageType("svg", "svg", "image/svg+xml")

TYPES: tuple[ImageType, ...] = (JPEG, PNG, GIF, WEBP, AVIF, HEIC, JXL, BMP, TIFF, ICO, SVG)
"""Every type ``sniff`` can return."""

# Extensions (lower-case, no dot) that name each type; the first is ``extension``.
_ALIASES: dict[str, frozenset[str]] = {
    "jpeg": frozenset({"jpg", "jpeg", "jpe"}),
    "tiff": frozenset({"tif", "tiff"}),
    "heic": frozenset({"heic", "heif", "hif"}),
}

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    ext for kind in TYPES for ext in _ALIASES.get(kind.name, frozenset({kind.extension}))
)
"""Every extension (lower-case, no dot) that names one of ``TYPES``."""


def extensions(kind: ImageType) -> frozenset[str]:
    """The extensions (lower-case, no dot) that already name ``kind`` correctly."""
    return _ALIASES.get(kind.name, frozenset()) | {kind.extension.lower()}


def by_name(name: str) -> ImageType | None:
    """The known type called ``name`` (as in ``ImageType.name``), or None."""
    return next((kind for kind in TYPES if kind.name == name), None)


# Other names servers give a type by: its registered one (an icon's), those of old
# browsers and servers. Each names the type the bytes are as well as ours does.
_MEDIA_TYPE_SYNONYMS: dict[str, frozenset[str]] = {
    "ico": frozenset({"image/vnd.microsoft.icon", "image/ico", "image/icon"}),
    "jpeg": frozenset({"image/jpg", "image/pjpeg"}),
    "bmp": frozenset({"image/x-bmp", "image/x-ms-bmp"}),
    "png": frozenset({"image/x-png"}),
    "heic": frozenset({"image/heif", "image/heic-sequence", "image/heif-sequence"}),
}
_BY_MEDIA_TYPE: dict[str, ImageType] = {
    **{kind.mime: kind for kind in TYPES},
    **{synonym: kind for kind in TYPES for synonym in _MEDIA_TYPE_SYNONYMS.get(kind.name, ())},
}


def by_media_type(media_type: str) -> ImageType | None:
    """The known type a media type names (in lower case, without parameters), by its own
    name or another one servers use for it (``image/jpg``), or None."""
    return _BY_MEDIA_TYPE.get(media_type)


# --------------------------------------------------------------------------- sniffing


def sniff(head: bytes) -> ImageType | None:
    """The image type ``head`` starts with, by magic bytes; None for anything else.

    ``head`` is normally the first ``SNIFF_BYTES`` of a body; a longer one is
    fine but only lets an SVG prolog be longer.
    """
    head = bytes(head)
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return WEBP
    if head[4:8] == b"ftyp" and _is_avif_ftyp(head):
        return AVIF
    if head[4:8] == b"ftyp" and _has_brand(head, _HEIF_BRANDS):
        return HEIC
    if head.startswith((b"\xff\x0a", _JXL_CONTAINER)):
        return JXL
    if head.startswith(b"BM") and _is_bmp(head):
        return BMP
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    if head.startswith(b"\x00\x00\x01\x00") and _is_ico(head):
        return ICO
    if _svg_root(utf8_markup(head)) is not None:
        return SVG
    return None


_UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}


@overload
def utf8_markup(body: bytes) -> bytes: ...


@overload
def utf8_markup(body: mmap.mmap) -> bytes | mmap.mmap: ...  # a body walked in its file


def utf8_markup(body: bytes | mmap.mmap) -> bytes | mmap.mmap:
    """Markup as UTF-8: an SVG saved as UTF-16 (its byte-order mark says so, as some
    Windows tools write it), which browsers show, was "not an image". Other bytes are
    returned as they are."""
    encoding = _UTF16_BOMS.get(body[:2])
    if encoding is None:
        return body
    even = len(body) - len(body) % 2  # (a head may end halfway through a character)
    return body[2:even].decode(encoding, errors="replace").encode("utf-8")


def _is_avif_ftyp(head: bytes) -> bool:
    """An ISO BMFF ``ftyp`` box whose major or a compatible brand is avif/avis."""
    return _has_brand(head, (b"avif", b"avis"))


# HEIF's brands of HEVC images and sequences, and its generic image and sequence brands
# (looked at after AVIF's: an AVIF lists mif1 too).
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
                b"mif1", b"msf1")
# A JPEG XL file in its ISO BMFF container: a "JXL " box first (a bare codestream
# starts with FF 0A).
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


def _has_brand(head: bytes, wanted: tuple[bytes, ...]) -> bool:
    """Whether an ISO BMFF ``ftyp`` box's major or a compatible brand is one of ``wanted``."""
    if len(head) < 16:
        return False
    size, at = int.from_bytes(head[0:4], "big"), 8
    if size == 1:  # a 64-bit size after the type
        size, at = int.from_bytes(head[8:16], "big"), 16
    if size < at + 8:
        return False
    brands = [head[at : at + 4]]  # major brand; the next 4 bytes are the minor version
    end = min(size, len(head))
    brands += [head[i : i + 4] for i in range(at + 8, end - 3, 4)]
    return any(brand in wanted for brand in brands)


# DIB header sizes that exist (core, OS/2 v2 short, info, v2, v3, OS/2 v2, v4, v5).
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def _is_bmp(head: bytes) -> bool:
    """``BM`` alone is two letters of text; a known DIB header size makes it a bitmap."""
    return len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES


def _is_ico(head: bytes) -> bool:
    """Four zero-ish bytes are common; require a sane count and a plausible first entry."""
    if len(head) < 22:
        return False
    count = int.from_bytes(head[4:6], "little")
    reserved, planes, bpp = head[9], int.from_bytes(head[10:12], "little"), head[12]
    size, offset = struct.unpack_from("<II", head, 14)
    return (
        1 <= count <= 512
        and reserved == 0
        and planes in (0, 1)
        and bpp in (0, 1, 2, 4, 8, 16, 24, 32)
        and head[13] == 0
        and size > 0
        and offset >= 6 + 16 * count
    )


_XML_SPACE = re.compile(rb"[ \t\r\n\f\v]*")
_SVG_START = re.compile(rb"<(?:[A-Za-z_][-\w.]*:)?svg[\s/>]")
_DOCTYPE = re.compile(rb"<!DOCTYPE\s+([^\s\[>]+)", re.IGNORECASE)


def _svg_root(head: bytes) -> int | None:
    """Offset of the ``<svg`` root start tag, or None when ``head`` is not an SVG document.

    Only a prolog may come first: BOM, whitespace, processing instructions,
    comments and an ``svg`` DOCTYPE. An HTML page with an inline ``<svg>`` starts
    with something else and is therefore not an image.
    """
    pos = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    while True:
        pos = _XML_SPACE.match(head, pos).end()  # type: ignore[union-attr]  # "*" always matches
        if head.startswith(b"<?", pos):
            close = head.find(b"?>", pos + 2)
            if close < 0:
                return None
            pos = close + 2
        elif head.startswith(b"<!--", pos):
            close = head.find(b"-->", pos + 4)
            if close < 0:
                return None
            pos = close + 3
        elif doctype := _DOCTYPE.match(head, pos):
            root = doctype.group(1).rsplit(b":", 1)[-1]
            if root.lower() != b"svg":
                return None
            after = _doctype_end(head, doctype.end())
            if after is None:
                return None
            pos = after
        elif _SVG_START.match(head, pos):
            return pos
        else:
            return None


# The WHATWG MIME Sniffing Standard's patterns of an HTML document ("identify an
# unknown MIME type"): after whitespace, one of these tags, any case, then a space or ">".
_HTML_START = re.compile(
    rb"[\t\n\x0c\r ]*<(?:!DOCTYPE HTML|HTML|HEAD|SCRIPT|IFRAME|H1|DIV|FONT|TABLE|A|STYLE|"
    rb"TITLE|B|BODY|BR|P|!--)[ >]", re.IGNORECASE)


def looks_like_html(head: bytes) -> bool:
    """Whether ``head`` starts an HTML document, as a browser sniffing a body decides.

    A link that names an image but leads to a page (a wiki's ``File:Photo.png``,
    a gallery's viewer) answers with one of these; an image never does.
    """
    start = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    declaration = _XML_DECLARATION.match(head, start)
    if declaration is not None:
        # An XHTML page's first line, which the standard takes for XML's: then only an
        # HTML document's DOCTYPE or root tells it, after comments and processing
        # instructions (an RSS feed that opens with a comment is no page).
        return _XHTML_START.match(head, declaration.end()) is not None
    return _HTML_START.match(head, start) is not None


_XML_DECLARATION = re.compile(rb"[\t\n\x0c\r ]*<\?xml[\t\n\x0c\r ][^>]{0,256}\?>")
_XHTML_START = re.compile(rb"(?:[\t\n\x0c\r ]+|<!--.{0,4096}?-->|<\?.{0,512}?\?>)*"
                          rb"<(?:!DOCTYPE[\t\n\x0c\r ]+html|html)[\t\n\x0c\r />]",
                          re.IGNORECASE | re.DOTALL)


def _doctype_end(head: bytes, pos: int) -> int | None:
    """The offset just past a DOCTYPE's closing ``>``, skipping quotes and ``[...]``."""
    return _closing_bracket(head, pos, subsets=True)


def _closing_bracket(head: bytes, pos: int, *, subsets: bool) -> int | None:
    """The offset just past the ``>`` ending the markup at ``pos``; quotes may hold ``>``.

    With ``subsets``, a ``>`` inside ``[...]`` (a DOCTYPE's internal subset) does not count.
    """
    quote: int | None = None
    depth = 0
    for i in range(pos, len(head)):
        byte = head[i]
        if quote is not None:
            if byte == quote:
                quote = None
        elif byte in b"\"'":
            quote = byte
        elif subsets and byte == ord("["):
            depth += 1
        elif subsets and byte == ord("]"):
            depth = max(0, depth - 1)
        elif byte == ord(">") and depth == 0:
            return i + 1
    return None


# --------------------------------------------------------------------------- dimensions


# ------------------------------------------------------------------ whole or cut short



def dimensions(head: bytes, kind: ImageType) -> tuple[int, int] | None:
    """(width, height) read from the header of an image of type ``kind``, or None.

    Nothing is decoded; only what the first bytes say. None when the header is
    truncated (the size lies beyond ``head``), malformed, not of type ``kind``,
    or does not state a size.
    """
    reader = _READERS.get(kind.name)
    if reader is None:
        return None
    try:
        size = reader(bytes(head))
    except (struct.error, IndexError, ValueError, OverflowError):
        # Readers check their bounds; this only keeps the never-raise promise
        # if a malformed header slips past a check.
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _png(head: bytes) -> tuple[int, int] | None:
    if not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR" or len(head) < 24:
        return None
    width, height = struct.unpack_from(">II", head, 16)
    return width, height


def _gif(head: bytes) -> tuple[int, int] | None:
    if not head.startswith((b"GIF87a", b"GIF89a")) or len(head) < 10:
        return None
    width, height = struct.unpack_from("<HH", head, 6)
    return width, height


# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def _jpeg(head: bytes) -> tuple[int, int] | None:
    if not head.startswith(b"\xff\xd8"):
        return None
    pos, end = 2, len(head)
    while pos < end:
        if head[pos] != 0xFF:
            return None  # not at a marker: the segment lengths lied
        while pos < end and head[pos] == 0xFF:  # fill bytes may pad any marker
            pos += 1
        if pos >= end:
            return None
        marker = head[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            return None  # end of image or start of scan before any frame header
        if pos + 2 > end:
            return None
        length = int.from_bytes(head[pos : pos + 2], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if pos + 7 > end:
                return None
            height, width = struct.unpack_from(">HH", head, pos + 3)
            return width, height
        pos += length
    return None


def _webp(head: bytes) -> tuple[int, int] | None:
    if not head.startswith(b"RIFF") or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", head, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        if head[20] != 0x2F:
            return None
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    return None


def _bmp(head: bytes) -> tuple[int, int] | None:
    if not head.startswith(b"BM") or len(head) < 26:
        return None
    dib = int.from_bytes(head[14:18], "little")
    if dib == 12:  # BITMAPCOREHEADER: unsigned 16-bit sides
        width, height = struct.unpack_from("<HH", head, 18)
        return width, height
    if dib not in _BMP_DIB_SIZES:
        return None
    width, height = struct.unpack_from("<ii", head, 18)
    return width, abs(height)  # a negative height means rows are stored top-down


def _ico(head: bytes) -> tuple[int, int] | None:
    if not _is_ico(head):
        return None
    return head[6] or 256, head[7] or 256  # a zero byte means 256


def _tiff(head: bytes) -> tuple[int, int] | None:
    if head.startswith(b"II*\x00"):
        order = "<"
    elif head.startswith(b"MM\x00*"):
        order = ">"
    else:
        return None
    if len(head) < 8:
        return None
    (ifd,) = struct.unpack_from(order + "I", head, 4)
    if ifd + 2 > len(head):
        return None
    (count,) = struct.unpack_from(order + "H", head, ifd)
    found: dict[int, int] = {}
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(head) - 11), 12):
        tag, typ = struct.unpack_from(order + "HH", head, entry)
        if tag not in (256, 257):
            continue
        if typ == 3:  # SHORT, left-justified in the 4-byte value field
            (found[tag],) = struct.unpack_from(order + "H", head, entry + 8)
        elif typ == 4:  # LONG
            (found[tag],) = struct.unpack_from(order + "I", head, entry + 8)
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISO BMFF boxes in ``buf[start:end]`` as (type, payload start, payload end).

    A box cut off by the end of ``buf`` is yielded with its payload clamped, so
    callers must check lengths; a malformed size ends the walk.
    """
    end = min(end, len(buf))
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(buf[pos : pos + 4], "big")
        box_type = buf[pos + 4 : pos + 8]
        header = 8
        if size == 1:  # 64-bit size follows the type
            if pos + 16 > end:
                return
            size = int.from_bytes(buf[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:  # box extends to the end of its container
            size = end - pos
        if size < header:
            return
        yield box_type, pos + header, min(pos + size, end)
        pos += size


def _avif(head: bytes) -> tuple[int, int] | None:
    return _heif_extents(head) if _is_avif_ftyp(head) else None


def _heic(head: bytes) -> tuple[int, int] | None:
    if _is_avif_ftyp(head) or not _has_brand(head, _HEIF_BRANDS):
        return None
    return _heif_extents(head)


def _heif_extents(head: bytes) -> tuple[int, int] | None:
    """A HEIF's (an AVIF's, a HEIC's) primary item's ``ispe`` (image spatial extents),
    else the largest one."""
    meta = next(((s, e) for t, s, e in _boxes(head, 0, len(head)) if t == b"meta"), None)
    if meta is None:
        return None
    primary: int | None = None
    properties: list[tuple[bytes, int, int]] = []
    associations: dict[int, list[int]] = {}
    for box_type, start, end in _boxes(head, meta[0] + 4, meta[1]):  # meta is a FullBox
        if box_type == b"pitm" and end - start >= 6:
            wide = head[start] != 0
            primary = int.from_bytes(head[start + 4 : start + (8 if wide else 6)], "big")
        elif box_type == b"iprp":
            for child, cstart, cend in _boxes(head, start, end):
                if child == b"ipco":
                    properties = list(_boxes(head, cstart, cend))
                elif child == b"ipma":
                    _read_ipma(head, cstart, cend, associations)
    sizes: dict[int, tuple[int, int]] = {}
    for index, (box_type, start, end) in enumerate(properties, start=1):
        if box_type == b"ispe" and end - start >= 12:
            sizes[index] = struct.unpack_from(">II", head, start + 4)
    if not sizes:
        return None
    for index in associations.get(primary, []) if primary is not None else ():
        if index in sizes:
            return sizes[index]
    return max(sizes.values(), key=lambda size: size[0] * size[1])


def _read_ipma(buf: bytes, start: int, end: int, into: dict[int, list[int]]) -> None:
    """Add the item -> property-index associations of one ``ipma`` box to ``into``."""
    if end - start < 8:
        return
    version, flags = buf[start], int.from_bytes(buf[start + 1 : start + 4], "big")
    id_size = 2 if version < 1 else 4
    index_size = 2 if flags & 1 else 1
    index_mask = 0x7FFF if index_size == 2 else 0x7F  # the top bit marks "essential"
    count = int.from_bytes(buf[start + 4 : start + 8], "big")
    pos = start + 8
    for _ in range(count):
        if pos + id_size + 1 > end:
            return
        item = int.from_bytes(buf[pos : pos + id_size], "big")
        n = buf[pos + id_size]
        pos += id_size + 1
        if pos + n * index_size > end:
            return
        into.setdefault(item, []).extend(
            int.from_bytes(buf[p : p + index_size], "big") & index_mask
            for p in range(pos, pos + n * index_size, index_size)
        )
        pos += n * index_size


_SVG_ATTRIBUTE = re.compile(r"""([A-Za-z_:][-\w:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_SVG_LENGTH = re.compile(r"\s*\+?((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?:px)?\s*")
_SVG_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_MAX_SIDE = 1 << 31  # anything larger is a typo or an attack, not a size


def _svg(head: bytes) -> tuple[int, int] | None:
    """``width``/``height`` in plain numbers or px; otherwise the ``viewBox`` size."""
    head = utf8_markup(head)
    start = _svg_root(head)
    if start is None:
        return None
    end = _tag_end(head, start)
    if end is None:
        return None
    tag = head[start:end].decode("utf-8", errors="replace")
    attributes = {m.group(1): m.group(2) or m.group(3) or "" for m in _SVG_ATTRIBUTE.finditer(tag)}
    width = _svg_length(attributes.get("width"))
    height = _svg_length(attributes.get("height"))
    box = _svg_viewbox(attributes.get("viewBox"))
    if width is None or height is None:
        if box is None:
            return None
        if width is not None:  # one side given: the other follows the aspect ratio
            height = width * box[1] / box[0]
        elif height is not None:
            width = height * box[0] / box[1]
        else:
            width, height = box
    sides = (round(width), round(height)) if max(width, height) < _MAX_SIDE else (0, 0)
    return sides if min(sides) >= 1 else None


def _tag_end(head: bytes, start: int) -> int | None:
    """The offset just past the ``>`` that closes the tag at ``start`` (quotes may hold ``>``)."""
    return _closing_bracket(head, start, subsets=False)


def _svg_length(value: str | None) -> float | None:
    if value is None:
        return None
    match = _SVG_LENGTH.fullmatch(value)
    if match is None:
        return None  # %, em, mm...: no size without a layout
    number = float(match.group(1))
    return number if math.isfinite(number) and number > 0 else None


def _svg_viewbox(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    numbers = _SVG_NUMBER.findall(value)
    if len(numbers) != 4:
        return None
    width, height = float(numbers[2]), float(numbers[3])
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        return None
    return width, height


_READERS: dict[str, Callable[[bytes], tuple[int, int] | None]] = {
    "jpeg": _jpeg,
    "png": _png,
    "gif": _gif,
    "webp": _webp,
    "avif": _avif,
    "heic": _heic,
    "bmp": _bmp,
    "tiff": _tiff,
    "ico": _ico,
    "svg": _svg,
}
