"""Tests for crawler.model.imagetype: sniffing image types and reading sizes from headers.

Every image here is built by the test code itself (no binary fixtures), so a
reader can see exactly which bytes each rule is checked against.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.model.imageend import ends_whole
from crawler.model.imagetype import (
    AVIF,
    BMP,
    GIF,
    HEIC,
    ICO,
    IMAGE_EXTENSIONS,
    JPEG,
    JXL,
    PNG,
    SNIFF_BYTES,
    SVG,
    TIFF,
    TYPES,
    WEBP,
    ImageType,
    by_name,
    dimensions,
    extensions,
    sniff,
)

# --------------------------------------------------------------------------- builders


def make_png(width: int, height: int) -> bytes:
    """A complete 8-bit RGB PNG, every pixel red (filter 0 on every row)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data)
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def make_gif(width: int, height: int, version: bytes = b"89a") -> bytes:
    """A complete two-colour GIF, every pixel colour 0.

    LZW with minimum code size 2 (clear = 4, end = 5): a clear code before
    every two pixels keeps the table from growing past 3-bit codes.
    """
    codes: list[int] = []
    for pixel in range(width * height):
        if pixel % 2 == 0:
            codes.append(4)
        codes.append(0)
    codes.append(5)
    data, bits, count = bytearray(), 0, 0
    for code in codes:  # GIF packs codes least significant bit first
        bits |= code << count
        count += 3
        while count >= 8:
            data.append(bits & 0xFF)
            bits >>= 8
            count -= 8
    if count:
        data.append(bits)
    blocks = b"".join(
        bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255)
    )
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # 2-entry global colour table
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return (
        b"GIF"
        + version
        + screen
        + b"\x00\x00\x00\xff\xff\xff"
        + descriptor
        + b"\x02"
        + blocks
        + b"\x00;"
    )


def make_bmp(width: int, height: int, *, top_down: bool = False) -> bytes:
    """A complete 24-bit BMP with a BITMAPINFOHEADER; rows padded to 4 bytes."""
    row = (b"\x00\x00\xff" * width).ljust((width * 3 + 3) // 4 * 4, b"\x00")
    pixels = row * height
    info = struct.pack(
        "<IiiHHIIiiII",
        40,
        width,
        -height if top_down else height,
        1,
        24,
        0,
        len(pixels),
        2835,
        2835,
        0,
        0,
    )
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 54) + info + pixels


def make_bmp_core(width: int, height: int) -> bytes:
    """An OS/2 BMP with the 12-byte BITMAPCOREHEADER (16-bit sides)."""
    row = (b"\x00\x00\xff" * width).ljust((width * 3 + 3) // 4 * 4, b"\x00")
    pixels = row * height
    core = struct.pack("<IHHHH", 12, width, height, 1, 24)
    return b"BM" + struct.pack("<IHHI", 26 + len(pixels), 0, 0, 26) + core + pixels


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def make_jpeg(width: int, height: int, *, sof: int = 0xC0, extra: bytes = b"") -> bytes:
    """A grey baseline JPEG: SOI, APP0, ``extra`` segments, DQT, SOFn, DHT, SOS, data, EOI.

    One Huffman table whose only symbol is 0 serves as DC (difference 0) and AC
    (end of block), so each 8x8 block is two zero bits.
    """
    app0 = jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = jpeg_segment(0xDB, b"\x00" + b"\x01" * 64)
    frame = jpeg_segment(sof, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    counts = bytes([1] + [0] * 15)  # one code of length 1
    dht = jpeg_segment(0xC4, b"\x00" + counts + b"\x00" + b"\x10" + counts + b"\x00")
    sos = jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    blocks = -(-width // 8) * -(-height // 8)
    scan = bytearray(-(-2 * blocks // 8))
    if 2 * blocks % 8:
        scan[-1] = (1 << (8 - 2 * blocks % 8)) - 1  # pad the last byte with one bits
    return b"\xff\xd8" + app0 + extra + dqt + frame + dht + sos + bytes(scan) + b"\xff\xd9"


def riff_webp(chunk_type: bytes, payload: bytes) -> bytes:
    chunk = chunk_type + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def make_webp_lossless(width: int, height: int) -> bytes:
    """A WebP whose VP8L header says ``width`` x ``height`` (no pixel data follows)."""
    bits = (width - 1) | ((height - 1) << 14)
    return riff_webp(b"VP8L", b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8)


def make_webp_lossy(width: int, height: int) -> bytes:
    """A WebP whose VP8 key frame header says ``width`` x ``height``."""
    frame = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return riff_webp(b"VP8 ", frame + b"\x00" * 10)


def make_webp_extended(width: int, height: int) -> bytes:
    """A WebP with a VP8X canvas header of ``width`` x ``height``."""
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff_webp(b"VP8X", b"\x10\x00\x00\x00" + canvas)


def box(box_type: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + box_type + payload


def full_box(box_type: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(box_type, bytes([version]) + flags.to_bytes(3, "big") + payload)


def ispe(width: int, height: int) -> bytes:
    return full_box(b"ispe", struct.pack(">II", width, height))


def make_avif(
    width: int,
    height: int,
    *,
    major: bytes = b"avif",
    compatible: bytes = b"avifmif1miaf",
    with_primary: bool = True,
    pixels_in_meta: bool = False,
) -> bytes:
    """An AVIF container: ftyp, then meta with the primary item's ``ispe``.

    A larger ``ispe`` for a second item (as an alpha or a grid might have) comes
    first, so only honouring ``pitm`` + ``ipma`` gives the right size.
    """
    ftyp = box(b"ftyp", major + b"\x00\x00\x00\x00" + compatible)
    hdlr = full_box(b"hdlr", b"\x00\x00\x00\x00pict" + b"\x00" * 12 + b"\x00")
    pitm = full_box(b"pitm", struct.pack(">H", 1))
    ipco = box(b"ipco", ispe(4000, 3000) + ispe(width, height))
    associations = struct.pack(">HB", 1, 1) + bytes([0x80 | 2])
    associations += struct.pack(">HB", 2, 1) + bytes([1])
    ipma = full_box(b"ipma", struct.pack(">I", 2) + associations)
    idat = box(b"idat", b"\x00" * 16) if pixels_in_meta else b""
    meta = full_box(b"meta", hdlr + (pitm if with_primary else b"") + box(b"iprp", ipco + ipma)
                    + idat)
    return ftyp + meta + (b"" if pixels_in_meta else box(b"mdat", b"\x00" * 16))


def make_ico(width: int, height: int, count: int = 1) -> bytes:
    """An ICO whose entries all hold one PNG; sides of 256 are stored as 0."""
    image = make_png(min(width, 16), min(height, 16))
    entry = struct.pack(
        "<BBBBHHII", width % 256, height % 256, 0, 0, 1, 32, len(image), 6 + 16 * count
    )
    return struct.pack("<HHH", 0, 1, count) + entry * count + image


def make_tiff(width: int, height: int, *, big_endian: bool = False) -> bytes:
    """A TIFF header with an IFD stating ImageWidth (SHORT) and ImageLength (LONG)."""
    order = ">" if big_endian else "<"
    magic = b"MM\x00*" if big_endian else b"II*\x00"
    entries = struct.pack(order + "HHIHH", 256, 3, 1, width, 0)
    entries += struct.pack(order + "HHII", 257, 4, 1, height)
    entries += struct.pack(order + "HHIHH", 259, 3, 1, 1, 0)  # compression: none
    ifd = struct.pack(order + "H", 3) + entries + struct.pack(order + "I", 0)
    return magic + struct.pack(order + "I", 8) + ifd + b"\x00" * (width * height)


SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'


def make_svg(attributes: str, prolog: str = "") -> bytes:
    return f'{prolog}<svg {SVG_NS} {attributes}><rect width="1" height="1"/></svg>'.encode()


# One of each kind, with the size it must report.
SAMPLES: list[tuple[str, bytes, ImageType, tuple[int, int]]] = [
    ("png", make_png(3, 2), PNG, (3, 2)),
    ("gif89a", make_gif(5, 4), GIF, (5, 4)),
    ("gif87a", make_gif(2, 7, b"87a"), GIF, (2, 7)),
    ("jpeg", make_jpeg(17, 9), JPEG, (17, 9)),
    ("jpeg-progressive", make_jpeg(640, 480, sof=0xC2), JPEG, (640, 480)),
    ("webp-vp8l", make_webp_lossless(300, 200), WEBP, (300, 200)),
    ("webp-vp8", make_webp_lossy(1024, 768), WEBP, (1024, 768)),
    ("webp-vp8x", make_webp_extended(5000, 16000), WEBP, (5000, 16000)),
    ("avif", make_avif(1920, 1080), AVIF, (1920, 1080)),
    ("heic", make_avif(4032, 3024, major=b"heic", compatible=b"mif1heic"), HEIC, (4032, 3024)),
    ("bmp", make_bmp(3, 5), BMP, (3, 5)),
    ("bmp-top-down", make_bmp(4, 6, top_down=True), BMP, (4, 6)),
    ("bmp-core", make_bmp_core(7, 3), BMP, (7, 3)),
    ("ico", make_ico(32, 16), ICO, (32, 16)),
    ("ico-256", make_ico(256, 256), ICO, (256, 256)),
    ("tiff-le", make_tiff(6, 4), TIFF, (6, 4)),
    ("tiff-be", make_tiff(6, 4, big_endian=True), TIFF, (6, 4)),
    ("svg", make_svg('width="100" height="50"'), SVG, (100, 50)),
]


# --------------------------------------------------------------------------- types


def test_types_are_distinct_and_complete() -> None:
    assert len({kind.name for kind in TYPES}) == len(TYPES)
    assert {kind.extension for kind in TYPES} <= IMAGE_EXTENSIONS
    expected = {"jpg", "jpeg", "jpe", "png", "gif", "webp", "avif", "heic", "heif", "hif",
                "jxl", "bmp", "tif", "tiff", "ico"}
    assert expected | {"svg"} == IMAGE_EXTENSIONS
    assert all(kind.mime.startswith("image/") for kind in TYPES)


def test_extensions_include_aliases() -> None:
    assert extensions(JPEG) == {"jpg", "jpeg", "jpe"}
    assert extensions(TIFF) == {"tif", "tiff"}
    assert extensions(PNG) == {"png"}
    assert extensions(HEIC) == {"heic", "heif", "hif"}
    assert extensions(ImageType("qoi", "QOI", "image/qoi")) == {"qoi"}


def test_by_name() -> None:
    assert by_name("jpeg") is JPEG
    assert by_name("nope") is None


def test_image_type_is_frozen_value() -> None:
    assert ImageType("jpeg", "jpg", "image/jpeg") == JPEG
    with pytest.raises(AttributeError):
        JPEG.name = "x"  # type: ignore[misc]


def test_sniff_bytes() -> None:
    assert SNIFF_BYTES == 64 * 1024


# --------------------------------------------------------------------------- sniff + size


@pytest.mark.parametrize(
    ("data", "kind", "size"), [s[1:] for s in SAMPLES], ids=[s[0] for s in SAMPLES]
)
def test_sniff_and_dimensions(data: bytes, kind: ImageType, size: tuple[int, int]) -> None:
    assert sniff(data) is kind
    assert dimensions(data, kind) == size
    assert dimensions(data[:SNIFF_BYTES], kind) == size


@pytest.mark.parametrize(("data", "kind"), [s[1:3] for s in SAMPLES], ids=[s[0] for s in SAMPLES])
def test_dimensions_of_another_kind_is_none(data: bytes, kind: ImageType) -> None:
    for other in TYPES:
        if other is not kind:
            assert dimensions(data, other) is None, other


@pytest.mark.parametrize(("data", "kind"), [s[1:3] for s in SAMPLES], ids=[s[0] for s in SAMPLES])
def test_truncated_header_gives_no_size(data: bytes, kind: ImageType) -> None:
    for cut in range(10):
        assert dimensions(data[:cut], kind) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b'{"error": "not found"}',
        b"[1, 2, 3]",
        b"Not Found\n",
        b"<!DOCTYPE html><html><head><title>404</title></head><body>gone</body></html>",
        b"<html><body><p>hello</p></body></html>",
        b"%PDF-1.7\n",
        b"PK\x03\x04",
        b"\x1f\x8b\x08\x00",
        b"BMW is a car maker, not a bitmap.",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",  # an MP4 video
        b"\x00\x00\x01\x00\x00\x00",  # ICO header claiming zero images
        b"\x00\x00\x01\x00\x01\x00" + b"\xff" * 16,  # ICO entry that cannot be
    ],
    ids=lambda data: repr(data[:20]),
)
def test_not_images(data: bytes) -> None:
    assert sniff(data) is None


# --------------------------------------------------------------------------- JPEG


def test_jpeg_skips_large_app_segments() -> None:
    exif = jpeg_segment(0xE1, b"Exif\x00\x00" + b"\xff" * 30000)
    icc = jpeg_segment(0xE2, b"ICC_PROFILE\x00" + b"\x00" * 20000)
    data = make_jpeg(4000, 3000, extra=exif + icc)
    assert sniff(data) is JPEG
    assert dimensions(data, JPEG) == (4000, 3000)


def test_jpeg_fill_bytes_before_marker() -> None:
    data = make_jpeg(12, 34)
    data = data[:2] + b"\xff\xff" + data[2:]  # fill bytes may precede any marker
    assert dimensions(data, JPEG) == (12, 34)


def test_jpeg_sof_beyond_head_is_none() -> None:
    padding = b"".join(jpeg_segment(0xE1, b"\x00" * 60000) for _ in range(2))
    data = make_jpeg(800, 600, extra=padding)
    assert sniff(data) is JPEG
    assert dimensions(data, JPEG) == (800, 600)
    assert dimensions(data[:SNIFF_BYTES], JPEG) is None


def test_jpeg_cut_inside_sof_is_none() -> None:
    data = make_jpeg(800, 600)
    sof = data.index(b"\xff\xc0")
    assert dimensions(data[: sof + 6], JPEG) is None
    assert dimensions(data[: sof + 9], JPEG) == (800, 600)


def test_jpeg_scan_before_frame_is_none() -> None:
    data = b"\xff\xd8" + jpeg_segment(0xDA, b"\x00" * 6) + b"\xff\xd9"
    assert dimensions(data, JPEG) is None


def test_jpeg_garbage_instead_of_marker_is_none() -> None:
    assert dimensions(b"\xff\xd8\xff\xe0\x00\x04\x00\x00garbage", JPEG) is None


def test_jpeg_zero_height_is_none() -> None:
    assert dimensions(make_jpeg(10, 0), JPEG) is None  # height set later by a DNL marker


# --------------------------------------------------------------------------- others


def test_png_without_ihdr_first_is_none() -> None:
    data = make_png(2, 2)
    assert dimensions(data[:12] + b"JUNK" + data[16:], PNG) is None


def test_gif_zero_screen_is_none() -> None:
    assert dimensions(make_gif(0, 0), GIF) is None


def test_webp_unknown_chunk_is_none() -> None:
    data = riff_webp(b"ALPH", b"\x00" * 32)
    assert sniff(data) is WEBP
    assert dimensions(data, WEBP) is None


def test_webp_bad_signature_is_none() -> None:
    data = bytearray(make_webp_lossless(10, 10))
    data[20] = 0x00
    assert dimensions(bytes(data), WEBP) is None


def test_avif_brand_in_compatible_brands() -> None:
    data = make_avif(640, 360, major=b"mif1", compatible=b"miafavifMA1A")
    assert sniff(data) is AVIF
    assert dimensions(data, AVIF) == (640, 360)


def test_avis_brand() -> None:
    assert sniff(make_avif(8, 8, major=b"avis", compatible=b"msf1")) is AVIF


def test_heic_is_not_avif() -> None:
    """A HEIC (an iPhone's photo, which Safari shows) was "not an image"."""
    heic = make_avif(8, 8, major=b"heic", compatible=b"mif1heic")
    assert sniff(heic) is HEIC and dimensions(heic, AVIF) is None
    assert sniff(make_avif(8, 8, major=b"mif1", compatible=b"heic")) is HEIC
    # An AVIF lists mif1 too: AVIF it stays.
    assert sniff(make_avif(8, 8, major=b"mif1", compatible=b"miafavif")) is AVIF
    assert ends_whole(heic, HEIC) and not ends_whole(heic[:-4], HEIC)


JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


def test_jpeg_xl_bare_and_in_its_container() -> None:
    """JPEG XL (Safari shows it, a <picture> offers it with type="image/jxl") was "not
    an image". Its size is not read (its header is bit-packed): no size limit is met."""
    bare = b"\xff\x0a" + bytes(range(40))
    assert sniff(bare) is JXL and ends_whole(bare, JXL) and dimensions(bare, JXL) is None
    ftyp = box(b"ftyp", b"jxl \x00\x00\x00\x00jxl ")
    whole = JXL_CONTAINER + ftyp + box(b"jxlc", bare) + box(b"Exif", b"\x00" * 8)
    assert sniff(whole) is JXL and ends_whole(whole, JXL)
    assert not ends_whole(JXL_CONTAINER + ftyp + box(b"jxlc", bare)[:-1], JXL)
    assert not ends_whole(JXL_CONTAINER + ftyp, JXL)  # no codestream at all
    parts = (box(b"jxlp", b"\x00\x00\x00\x00" + bare[:20])
             + box(b"jxlp", b"\x80\x00\x00\x01" + bare[20:]))
    assert ends_whole(JXL_CONTAINER + ftyp + parts, JXL)
    assert not ends_whole(JXL_CONTAINER + ftyp + parts[:30], JXL)  # the last part missing


def test_avif_without_primary_uses_largest_extent() -> None:
    assert dimensions(make_avif(64, 64, with_primary=False), AVIF) == (4000, 3000)


def test_avif_without_ispe_is_none() -> None:
    data = box(b"ftyp", b"avif\x00\x00\x00\x00avifmif1") + box(b"mdat", b"\x00" * 8)
    assert sniff(data) is AVIF
    assert dimensions(data, AVIF) is None


def test_avif_ispe_beyond_head_is_none() -> None:
    data = make_avif(100, 100)
    cut = data.index(b"ispe")
    assert sniff(data[:cut]) is AVIF
    assert dimensions(data[:cut], AVIF) is None


def test_avif_64bit_box_size() -> None:
    data = make_avif(320, 240)
    ftyp_size = struct.unpack(">I", data[:4])[0]
    ftyp = data[:ftyp_size]
    large = struct.pack(">I", 1) + b"ftyp" + struct.pack(">Q", ftyp_size + 8) + ftyp[8:]
    assert dimensions(large + data[ftyp_size:], AVIF) == (320, 240)
    assert sniff(large + data[ftyp_size:]) is AVIF


def test_bmp_negative_width_is_none() -> None:
    data = bytearray(make_bmp(3, 3))
    data[18:22] = struct.pack("<i", -3)
    assert dimensions(bytes(data), BMP) is None


def test_ico_zero_means_256() -> None:
    assert dimensions(make_ico(0, 0), ICO) == (256, 256)


def test_ico_with_several_entries_uses_first() -> None:
    assert dimensions(make_ico(48, 48, count=3), ICO) == (48, 48)


def test_tiff_ifd_beyond_head_is_none() -> None:
    data = b"II*\x00" + struct.pack("<I", 100_000) + b"\x00" * 16
    assert sniff(data) is TIFF
    assert dimensions(data, TIFF) is None


# --------------------------------------------------------------------------- SVG


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (make_svg('width="100" height="50"'), (100, 50)),
        (make_svg('width="10px" height=" 20px "'), (10, 20)),
        (make_svg("width='33.6' height='12.2'"), (34, 12)),
        (make_svg('viewBox="0 0 300 150"'), (300, 150)),
        (make_svg('viewBox="-10,-10,64,32"'), (64, 32)),
        (make_svg('width="100%" height="100%" viewBox="0 0 24 48"'), (24, 48)),
        (make_svg('width="200" viewBox="0 0 100 50"'), (200, 100)),
        (make_svg('height="10" viewBox="0 0 100 50"'), (20, 10)),
        (make_svg('width="2em" height="3em"'), None),
        (make_svg('width="0" height="0"'), None),
        (make_svg('width="1e999" height="5"'), None),
        (make_svg('width="-5" height="5"'), None),
        (make_svg('viewBox="0 0 0 10"'), None),
        (make_svg('viewBox="nonsense"'), None),
        (make_svg(""), None),
        (make_svg('data-note="a > b" width="7" height="8"'), (7, 8)),
    ],
)
def test_svg_dimensions(data: bytes, size: tuple[int, int] | None) -> None:
    assert sniff(data) is SVG
    assert dimensions(data, SVG) == size


@pytest.mark.parametrize(
    "prolog",
    [
        "",
        "\ufeff",
        "\n\t  ",
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n',
        '<?xml version="1.0"?><?xml-stylesheet href="s.css" type="text/css"?>',
        "<!-- Generator: Adobe Illustrator 24.0.0 -->\n",
        '<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"'
        ' "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n',
        '<!DOCTYPE svg [ <!ENTITY ns "http://example.com/>"> ]>',
        "<!-- a --><!-- b -->\n<!doctype svg>",
    ],
)
def test_svg_prologs(prolog: str) -> None:
    data = make_svg('width="16" height="16"', prolog)
    assert sniff(data) is SVG
    assert dimensions(data, SVG) == (16, 16)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_an_svg_saved_as_utf16_is_an_svg(encoding: str) -> None:
    """Some Windows tools save SVG as UTF-16, with its byte-order mark; browsers show it,
    and it was "not an image". Cut, it is no whole one."""
    text = make_svg('width="7" height="5"', '<?xml version="1.0" encoding="UTF-16"?>\n'
                    ).decode("utf-8")
    data = "\ufeff".encode(encoding) + text.encode(encoding)
    assert sniff(data) is SVG and sniff(data[:SNIFF_BYTES]) is SVG
    assert dimensions(data, SVG) == (7, 5)
    assert ends_whole(data, SVG) and not ends_whole(data[:-8], SVG)
    assert sniff("\ufeff<html><body>page</body></html>".encode(encoding)) is None


def test_svg_with_namespace_prefix() -> None:
    data = b'<svg:svg xmlns:svg="http://www.w3.org/2000/svg" width="5" height="6"/>'
    assert sniff(data) is SVG
    assert dimensions(data, SVG) == (5, 6)


def test_svg_root_split_from_head_is_none() -> None:
    data = make_svg('width="16" height="16"')
    assert sniff(data[:4]) is None  # "<svg" with nothing after it proves nothing
    assert dimensions(data[:30], SVG) is None  # the start tag never closes


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html>\n<html><body><svg width='10' height='10'></svg></body></html>",
        b"<html><svg width='10' height='10'></svg></html>",
        b"<!-- page --><!doctype HTML><svg></svg>",
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><svg/></html>',
        b"<div><svg width='10' height='10'></svg></div>",
        b"<p>an <svg> tag</p>",
        b"hello <svg width='1' height='1'/>",
        b"<svgx width='1' height='1'/>",
        b"<!-- never closed <svg width='1' height='1'/>",
        b"<?xml version='1.0' <svg/>",
        b"<!DOCTYPE svg <svg/>",
        b"<!DOCTYPE foo><svg/>",
        b"<SVG width='1' height='1'/>",
    ],
)
def test_html_and_lookalikes_are_not_svg(data: bytes) -> None:
    assert sniff(data) is None


# --------------------------------------------------------------------------- robustness


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    kind = sniff(data)
    assert kind is None or kind in TYPES
    for each in TYPES:
        size = dimensions(data, each)
        assert size is None or (size[0] > 0 and size[1] > 0)


@st.composite
def damaged_images(draw: st.DrawFn) -> tuple[bytes, ImageType]:
    """A real sample, cut short and with some bytes overwritten."""
    _, data, kind, _ = draw(st.sampled_from(SAMPLES))
    damaged = bytearray(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(0, 8))):
        if damaged:
            damaged[draw(st.integers(0, len(damaged) - 1))] = draw(st.integers(0, 255))
    return bytes(damaged), kind


@settings(max_examples=1000)
@given(damaged_images())
def test_damaged_images_never_raise(sample: tuple[bytes, ImageType]) -> None:
    data, kind = sample
    sniff(data)
    size = dimensions(data, kind)
    assert size is None or (size[0] > 0 and size[1] > 0)


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    data = text.encode("utf-8", errors="surrogatepass")
    for prefix in (b"", b"<svg ", b"<?xml ", b"<!DOCTYPE svg ", b"\xef\xbb\xbf<svg "):
        sniff(prefix + data)
        dimensions(prefix + data, SVG)


def test_longer_input_than_sniff_bytes_is_used() -> None:
    padding = jpeg_segment(0xE1, b"\x00" * 65500)  # SOF lands just past SNIFF_BYTES
    data = make_jpeg(20, 10, extra=padding)
    assert dimensions(data, JPEG) == (20, 10)
    assert dimensions(data[:SNIFF_BYTES], JPEG) is None
