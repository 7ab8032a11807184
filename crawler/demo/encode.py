"""Image files written in pure Python and fast: PNG, JPEG, GIF, from rows of pixels.

Each writer takes the rows a :class:`~crawler.demo.pictures.Canvas` holds and
leaves the heavy work to C (zlib, ``bytes`` slicing and ``sum``), so the demo
site's few hundred images are made in well under a second.

The JPEG keeps, per 8x8 block, the mean colour and one horizontal and one
vertical ramp: gradients stay smooth, edges soften, and Huffman tables of
fixed-length codes cover every symbol such a block needs. The GIF is stored
without compression (7-bit codes and a clear code every 120 pixels keep
every LZW code one byte long), which any decoder reads.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def encode_png(width: int, height: int, rows: Sequence[bytes], *, pad_to: int = 0,
               padding: bytes = b"") -> bytes:
    """A truecolour PNG of ``rows`` (RGB); ``pad_to`` adds a private chunk of ``padding``
    bytes to reach about that size."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    image = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
             + _png_chunk(b"IDAT", zlib.compress(raw, 6)))
    if pad_to > len(image) + 24:
        image += _png_chunk(b"pdDa", padding[:pad_to - len(image) - 24])
    return image + _png_chunk(b"IEND", b"")


# --------------------------------------------------------------------------- GIF

GIF_COLOURS = 128
"""The most colours a GIF here may use: indices must stay below the LZW clear code."""

_GIF_RUN = 120  # literals between clear codes, before the code width would grow


def encode_gif(width: int, height: int, rows: Sequence[bytes],
               palette: Sequence[tuple[int, int, int]]) -> bytes:
    """A GIF of ``rows`` of palette indices (each below :data:`GIF_COLOURS`)."""
    if not 0 < len(palette) <= GIF_COLOURS:
        raise ValueError(f"a GIF here has 1 to {GIF_COLOURS} colours, not {len(palette)}")
    table = b"".join(bytes(colour) for colour in palette)
    table += b"\x00" * (3 * GIF_COLOURS - len(table))  # a table of 2**7 entries
    pixels = b"".join(bytes(row) for row in rows)
    clear, end = bytes([GIF_COLOURS]), bytes([GIF_COLOURS + 1])
    codes = b"".join(clear + pixels[i:i + _GIF_RUN] for i in range(0, len(pixels), _GIF_RUN))
    codes += clear + end
    blocks = b"".join(bytes([len(codes[i:i + 255])]) + codes[i:i + 255]
                      for i in range(0, len(codes), 255))
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF6, 0, 0) + table
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
            + bytes([7]) + blocks + b"\x00;")


# --------------------------------------------------------------------------- JPEG

_DC_QUANT = 8  # the mean of a block, in steps of 1 (its coefficient is 8 x the mean)
_AC_QUANT = 4
# The two ramps of a block from the difference of its halves: F(1,0) of a step is
# -3.624 x (right - left); the same holds for top and bottom.
_RAMP = 3.624


def _category(value: int) -> int:
    return abs(value).bit_length()


def _value_bits(value: int, size: int) -> int:
    return value if value >= 0 else value + (1 << size) - 1


class _Bits:
    """Bits written most significant first, with JPEG's 0xFF byte stuffing."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._count = 0

    def put(self, value: int, size: int) -> None:
        self._acc = (self._acc << size) | (value & ((1 << size) - 1))
        self._count += size
        while self._count >= 8:
            self._count -= 8
            byte = (self._acc >> self._count) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)
        self._acc &= (1 << self._count) - 1

    def flush(self) -> bytes:
        if self._count:
            self.put((1 << (8 - self._count)) - 1, 8 - self._count)  # padded with ones
        return bytes(self.out)


# Fixed-length codes: 12 DC categories in 4 bits; end-of-block and the AC symbols a
# two-ramp block uses (run 0 or 1, size 1 to 10) in 5 bits.
_DC_SYMBOLS = list(range(12))
_AC_SYMBOLS = [0x00, *range(0x01, 0x0B), *range(0x11, 0x1B)]
_DC_CODES = {symbol: (n, 4) for n, symbol in enumerate(_DC_SYMBOLS)}
_AC_CODES = {symbol: (n, 5) for n, symbol in enumerate(_AC_SYMBOLS)}


def _dht(table_class: int, symbols: list[int], length: int) -> bytes:
    counts = [0] * 16
    counts[length - 1] = len(symbols)
    body = bytes([table_class << 4]) + bytes(counts) + bytes(symbols)
    return b"\xff\xc4" + struct.pack(">H", len(body) + 2) + body


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _column_sums(rows: Sequence[bytes]) -> memoryview:
    """The sum of ``rows`` byte by byte: each row widened to 16-bit lanes and added as one
    integer, which keeps the work in C."""
    size = len(rows[0])
    total = 0
    for row in rows:
        wide = bytearray(2 * size)
        wide[0::2] = row
        total += int.from_bytes(wide, "little")
    return memoryview(total.to_bytes(2 * size, "little")).cast("H")


def _blocks(width: int, rows: Sequence[bytes]) -> list[list[tuple[float, ...]]]:
    """Per 8x8 block: (mean, right-left, bottom-top) of R, G and B, row of blocks by row."""
    out = []
    for top in range(0, len(rows), 8):
        upper, lower = _column_sums(rows[top:top + 4]), _column_sums(rows[top + 4:top + 8])
        line = []
        for left in range(0, width * 3, 24):
            values: list[float] = []
            for channel in range(left, left + 3):
                up, down = sum(upper[channel:channel + 24:3]), sum(lower[channel:channel + 24:3])
                right = sum(upper[channel + 12:channel + 24:3]) \
                    + sum(lower[channel + 12:channel + 24:3])
                values += [(up + down) / 64, (2 * right - up - down) / 32, (down - up) / 32]
            line.append(tuple(values))
        out.append(line)
    return out


def encode_jpeg(width: int, height: int, rows: Sequence[bytes]) -> bytes:
    """A baseline JPEG of ``rows`` (RGB); width and height must be multiples of 8."""
    if width % 8 or height % 8:
        raise ValueError(f"JPEG size {width}x{height}: both must be multiples of 8")
    bits = _Bits()
    previous = [0, 0, 0]
    for line in _blocks(width, rows):
        for r, rx, ry, g, gx, gy, b, bx, by in line:
            ycc = (
                (0.299 * r + 0.587 * g + 0.114 * b - 128, 0.299 * rx + 0.587 * gx + 0.114 * bx,
                 0.299 * ry + 0.587 * gy + 0.114 * by),
                (-0.168736 * r - 0.331264 * g + 0.5 * b, -0.168736 * rx - 0.331264 * gx
                 + 0.5 * bx, -0.168736 * ry - 0.331264 * gy + 0.5 * by),
                (0.5 * r - 0.418688 * g - 0.081312 * b, 0.5 * rx - 0.418688 * gx - 0.081312 * bx,
                 0.5 * ry - 0.418688 * gy - 0.081312 * by),
            )
            for component, (mean, across, down) in enumerate(ycc):
                # One block of one component as a single run of bits: DC, ramps, end.
                dc = round(8 * mean / _DC_QUANT)
                diff, previous[component] = dc - previous[component], dc
                size = _category(diff)
                code, length = _DC_CODES[size]
                code, length = (code << size) | _value_bits(diff, size), length + size
                run = 0
                for coefficient in (-_RAMP * across, -_RAMP * down):  # zigzag 1 and 2
                    value = max(-1023, min(1023, round(coefficient / _AC_QUANT)))
                    if not value:
                        run += 1
                        continue
                    size = _category(value)
                    symbol, symbol_length = _AC_CODES[(run << 4) | size]
                    code = (((code << symbol_length) | symbol) << size) | _value_bits(value, size)
                    length += symbol_length + size
                    run = 0
                end, end_length = _AC_CODES[0x00]
                bits.put((code << end_length) | end, length + end_length)
    quant = bytes([_DC_QUANT] + [_AC_QUANT] * 63)
    components = b"".join(bytes([n, 0x11, 0]) for n in (1, 2, 3))
    return (b"\xff\xd8"
            + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + _segment(0xDB, b"\x00" + quant)
            + _segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + components)
            + _dht(0, _DC_SYMBOLS, 4) + _dht(1, _AC_SYMBOLS, 5)
            + _segment(0xDA, b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00")
            + bits.flush() + b"\xff\xd9")
