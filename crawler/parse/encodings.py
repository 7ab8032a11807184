"""Encoding labels read as the WHATWG Encoding Standard reads them, and decoded as browsers do.

A page's charset label ("gb2312", "x-sjis", "iso-8859-1") names one of the
standard's encodings, not a Python codec: a browser reads gb2312 as GBK,
iso-8859-1 as windows-1252 and Shift_JIS as Microsoft's superset, and knows
labels Python does not ("x-sjis", "windows-31j", "x-cp1251"). ``encoding_of``
turns a label into the standard's encoding name (lower-cased), ``decode_as``
decodes with it and ``encode_as`` encodes a URL query's text with it.

Each encoding is decoded by the Python codec that reads what the standard's
index reads, checked byte sequence by byte sequence against a browser:
Shift_JIS by cp932 (its four single bytes aside) and EUC-KR by cp949 (no difference
on valid sequences), GBK
and gb18030 by gb18030 (21 of 23,940 pairs differ: mappings the standard moved
out of the Private Use Area), Big5 by big5hkscs. Python's single-byte tables
leave out the C1 controls the standard's windows-* indexes keep, and its KOI8-U
is not the standard's (which is KOI8-RU): those are read from tables built
from Python's with the standard's differences. EUC-JP is Python's euc_jp with
the standard's JIS X 0208 rows it lacks (NEC's row 13, IBM's rows 89 to 92,
read through cp932) and its six different mappings (U+FF5E for U+301C, ...).
"""

from __future__ import annotations

import codecs
import functools
import re
from typing import Any

__all__ = ["bom_encoding", "charset_param", "declared", "decode_as", "encode_as", "encoding_of",
           "url_encoding"]

# The standard's encodings (names lower-cased) and their labels: its encodings.json.
_LABELS: dict[str, tuple[str, ...]] = {
    "utf-8": ("unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8",
              "x-unicode20utf8"),
    "ibm866": ("866", "cp866", "csibm866", "ibm866"),
    "iso-8859-2": ("csisolatin2", "iso-8859-2", "iso-ir-101", "iso8859-2", "iso88592",
                   "iso_8859-2", "iso_8859-2:1987", "l2", "latin2"),
    "iso-8859-3": ("csisolatin3", "iso-8859-3", "iso-ir-109", "iso8859-3", "iso88593",
                   "iso_8859-3", "iso_8859-3:1988", "l3", "latin3"),
    "iso-8859-4": ("csisolatin4", "iso-8859-4", "iso-ir-110", "iso8859-4", "iso88594",
                   "iso_8859-4", "iso_8859-4:1988", "l4", "latin4"),
    "iso-8859-5": ("csisolatincyrillic", "cyrillic", "iso-8859-5", "iso-ir-144", "iso8859-5",
                   "iso88595", "iso_8859-5", "iso_8859-5:1988"),
    "iso-8859-6": ("arabic", "asmo-708", "csiso88596e", "csiso88596i", "csisolatinarabic",
                   "ecma-114", "iso-8859-6", "iso-8859-6-e", "iso-8859-6-i", "iso-ir-127",
                   "iso8859-6", "iso88596", "iso_8859-6", "iso_8859-6:1987"),
    "iso-8859-7": ("csisolatingreek", "ecma-118", "elot_928", "greek", "greek8", "iso-8859-7",
                   "iso-ir-126", "iso8859-7", "iso88597", "iso_8859-7", "iso_8859-7:1987",
                   "sun_eu_greek"),
    "iso-8859-8": ("csiso88598e", "csisolatinhebrew", "hebrew", "iso-8859-8", "iso-8859-8-e",
                   "iso-ir-138", "iso8859-8", "iso88598", "iso_8859-8", "iso_8859-8:1988",
                   "visual"),
    "iso-8859-8-i": ("csiso88598i", "iso-8859-8-i", "logical"),
    "iso-8859-10": ("csisolatin6", "iso-8859-10", "iso-ir-157", "iso8859-10", "iso885910",
                    "l6", "latin6"),
    "iso-8859-13": ("iso-8859-13", "iso8859-13", "iso885913"),
    "iso-8859-14": ("iso-8859-14", "iso8859-14", "iso885914"),
    "iso-8859-15": ("csisolatin9", "iso-8859-15", "iso8859-15", "iso885915", "iso_8859-15",
                    "l9"),
    "iso-8859-16": ("iso-8859-16",),
    "koi8-r": ("cskoi8r", "koi", "koi8", "koi8-r", "koi8_r"),
    "koi8-u": ("koi8-ru", "koi8-u"),
    "macintosh": ("csmacintosh", "mac", "macintosh", "x-mac-roman"),
    "windows-874": ("dos-874", "iso-8859-11", "iso8859-11", "iso885911", "tis-620",
                    "windows-874"),
    "windows-1250": ("cp1250", "windows-1250", "x-cp1250"),
    "windows-1251": ("cp1251", "windows-1251", "x-cp1251"),
    "windows-1252": ("ansi_x3.4-1968", "ascii", "cp1252", "cp819", "csisolatin1", "ibm819",
                     "iso-8859-1", "iso-ir-100", "iso8859-1", "iso88591", "iso_8859-1",
                     "iso_8859-1:1987", "l1", "latin1", "us-ascii", "windows-1252",
                     "x-cp1252"),
    "windows-1253": ("cp1253", "windows-1253", "x-cp1253"),
    "windows-1254": ("cp1254", "csisolatin5", "iso-8859-9", "iso-ir-148", "iso8859-9",
                     "iso88599", "iso_8859-9", "iso_8859-9:1989", "l5", "latin5",
                     "windows-1254", "x-cp1254"),
    "windows-1255": ("cp1255", "windows-1255", "x-cp1255"),
    "windows-1256": ("cp1256", "windows-1256", "x-cp1256"),
    "windows-1257": ("cp1257", "windows-1257", "x-cp1257"),
    "windows-1258": ("cp1258", "windows-1258", "x-cp1258"),
    "x-mac-cyrillic": ("x-mac-cyrillic", "x-mac-ukrainian"),
    "gbk": ("chinese", "csgb2312", "csiso58gb231280", "gb2312", "gb_2312", "gb_2312-80", "gbk",
            "iso-ir-58", "x-gbk"),
    "gb18030": ("gb18030",),
    "big5": ("big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5"),
    "euc-jp": ("cseucpkdfmtjapanese", "euc-jp", "x-euc-jp"),
    "iso-2022-jp": ("csiso2022jp", "iso-2022-jp"),
    "shift_jis": ("csshiftjis", "ms932", "ms_kanji", "shift-jis", "shift_jis", "sjis",
                  "windows-31j", "x-sjis"),
    "euc-kr": ("cseuckr", "csksc56011987", "euc-kr", "iso-ir-149", "korean", "ks_c_5601-1987",
               "ks_c_5601-1989", "ksc5601", "ksc_5601", "windows-949"),
    "replacement": ("csiso2022kr", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext",
                    "iso-2022-kr", "replacement"),
    "utf-16be": ("unicodefffe", "utf-16be"),
    "utf-16le": ("csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff", "utf-16",
                 "utf-16le"),
    "x-user-defined": ("x-user-defined",),
}
_ENCODING_OF = {label: name for name, labels in _LABELS.items() for label in labels}

# Encodings a Python codec reads as browsers do (see the module's docstring).
_CODECS = {"utf-8": "utf-8", "utf-16be": "utf-16-be", "utf-16le": "utf-16-le",
           "gbk": "gb18030", "gb18030": "gb18030", "big5": "big5hkscs", "euc-jp": "euc_jp",
           "iso-2022-jp": "iso2022_jp_ext", "shift_jis": "cp932", "euc-kr": "cp949"}
# cp932 reads the bytes 0xA0, 0xFD, 0xFE and 0xFF alone as these (Private Use): to the
# standard's Shift_JIS they are errors, U+FFFD; nor does its encoder know them.
_CP932_ONLY = re.compile("[\uf8f0-\uf8f3]")
# Single-byte encodings, read from a table built from the Python codec's.
_SINGLE_BYTE = {
    "ibm866": "cp866", "iso-8859-2": "iso8859_2", "iso-8859-3": "iso8859_3",
    "iso-8859-4": "iso8859_4", "iso-8859-5": "iso8859_5", "iso-8859-6": "iso8859_6",
    "iso-8859-7": "iso8859_7", "iso-8859-8": "iso8859_8", "iso-8859-8-i": "iso8859_8",
    "iso-8859-10": "iso8859_10", "iso-8859-13": "iso8859_13", "iso-8859-14": "iso8859_14",
    "iso-8859-15": "iso8859_15", "iso-8859-16": "iso8859_16", "koi8-r": "koi8_r",
    "koi8-u": "koi8_u", "macintosh": "mac_roman", "x-mac-cyrillic": "mac_cyrillic",
    "windows-874": "cp874", "windows-1250": "cp1250", "windows-1251": "cp1251",
    "windows-1252": "cp1252", "windows-1253": "cp1253", "windows-1254": "cp1254",
    "windows-1255": "cp1255", "windows-1256": "cp1256", "windows-1257": "cp1257",
    "windows-1258": "cp1258", "x-user-defined": "ascii"}
# Where the standard's table differs from the Python codec's beyond the C1 controls.
_SINGLE_BYTE_CHANGES = {
    "koi8-u": {0xAE: "\u045e", 0xBE: "\u040e"},  # KOI8-RU's short u
    "windows-1255": {0xCA: "\u05ba"},
    "x-user-defined": {byte: chr(0xF780 + byte - 0x80) for byte in range(0x80, 0x100)},
}
# Encodings whose documents put UTF-8 in URL queries (the standard's "output encoding").
_UTF8_OUTPUT = frozenset({"utf-8", "utf-16be", "utf-16le", "replacement"})
_EUC_JP_CHANGES = str.maketrans({"\u301c": "\uff5e", "\u2016": "\u2225", "\u2212": "\uff0d",
                                 "\u00a2": "\uffe0", "\u00a3": "\uffe1", "\u00ac": "\uffe2"})
_EUC_JP_ERRORS = "crawler-euc-jp"
_ASCII_WHITESPACE = "\t\n\f\r "


# The Encoding Standard's byte-order marks: a UTF-32 one is no page a browser reads.
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16le"),
         (codecs.BOM_UTF16_BE, "utf-16be"))


def bom_encoding(data: bytes) -> tuple[str, int] | None:
    """The encoding ``data``'s byte-order mark names, and the mark's length; None without
    one. A mark wins over every label, for pages and style sheets alike."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, len(bom)
    return None


def declared(name: str) -> str:
    """The encoding a declaration written in ASCII (``<meta>``, ``@charset``, an XML
    declaration) gives, naming ``name``: one that reads as ASCII cannot be UTF-16."""
    return "utf-8" if name in ("utf-16le", "utf-16be") else name


def encoding_of(label: str) -> str | None:
    """The standard's encoding (its name lower-cased) that ``label`` names; None if none."""
    return _ENCODING_OF.get(label.strip(_ASCII_WHITESPACE).lower())


def charset_param(content_type: str) -> str | None:
    """The charset a Content-Type header names, if it names one (a label, unchecked)."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"\'') or None
    return None


def url_encoding(name: str) -> str:
    """The encoding a document in ``name`` gives URL queries: UTF-16's and the replacement
    encoding's documents give UTF-8."""
    return "utf-8" if name in _UTF8_OUTPUT or name not in _LABELS else name


def decode_as(data: bytes, name: str) -> str:
    """``data`` read in the standard's encoding ``name`` (as ``encoding_of`` gives it);
    errors become U+FFFD."""
    codec = _CODECS.get(name)
    if name == "euc-jp":
        return data.decode("euc_jp", _EUC_JP_ERRORS).translate(_EUC_JP_CHANGES)
    if codec is not None:
        text = data.decode(codec, "replace")
        if name == "shift_jis" and _CP932_ONLY.search(text):
            return _CP932_ONLY.sub("\ufffd", text)
        return text
    if name == "replacement":
        return "\ufffd" if data else ""  # the standard's one error for a whole stream
    return codecs.charmap_decode(data, "replace", _decoding_table(name))[0]


def encode_as(text: str, name: str) -> bytes:
    """``text`` in the encoding ``name``; characters it lacks become "&#N;" (the URL
    standard's rule for queries)."""
    codec = _CODECS.get(name)
    if name == "shift_jis":  # (not in the standard's index: a character reference)
        text = _CP932_ONLY.sub(lambda found: f"&#{ord(found[0])};", text)
    if codec is not None:
        return text.encode(codec, "xmlcharrefreplace")
    if name in _SINGLE_BYTE:
        return codecs.charmap_encode(text, "xmlcharrefreplace", _encoding_map(name))[0]
    return text.encode("utf-8", "surrogatepass")


@functools.cache
def _decoding_table(name: str) -> str:
    codec = _SINGLE_BYTE[name]
    changes = _SINGLE_BYTE_CHANGES.get(name, {})
    chars = []
    for byte in range(256):
        try:
            char = changes.get(byte) or bytes([byte]).decode(codec)
        except UnicodeDecodeError:
            # Microsoft's tables leave out bytes the standard maps to the C1 controls.
            windows = name.startswith("windows-") and byte < 0xA0
            char = chr(byte) if windows else "\ufffe"  # U+FFFE: undefined, to charmap
        chars.append(char)
    return "".join(chars)


@functools.cache
def _encoding_map(name: str) -> dict[int, int] | Any:  # an EncodingMap (no public type)
    return codecs.charmap_build(_decoding_table(name))


def _euc_jp_rows(error: UnicodeError) -> tuple[str, int]:
    """Python's euc_jp lacks rows of JIS X 0208 the standard's index has (NEC's row 13 with
    circled digits, the IBM rows 89 to 92): read those as Shift_JIS, whose cp932 has
    them. Any other error is one U+FFFD, for the pair or triple it spoils as the
    standard says."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    data, start = error.object, error.start
    lead, pair = data[start], data[start + 1 : start + 3]
    if 0xA1 <= lead <= 0xFE and pair[:1] and 0xA1 <= pair[0] <= 0xFE:
        row, cell = lead - 0xA0, pair[0] - 0xA0
        sjis_lead = (row + (0x101 if row <= 62 else 0x181)) >> 1
        # Odd rows take the first half of a Shift_JIS lead byte's trails, even rows the second.
        sjis_trail = (cell + (0x3F if cell <= 63 else 0x40)) if row % 2 else cell + 0x9E
        char = bytes([sjis_lead, sjis_trail]).decode("cp932", "replace")
        return (char if len(char) == 1 else "\ufffd"), start + 2
    if lead == 0x8F and len(pair) == 2 and min(pair) >= 0xA1 and max(pair) <= 0xFE:
        return "\ufffd", start + 3
    return "\ufffd", start + 1


codecs.register_error(_EUC_JP_ERRORS, _euc_jp_rows)
