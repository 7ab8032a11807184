"""Page bytes to text, choosing the encoding as browsers do.

The order is the HTML standard's: a byte-order mark, else the HTTP charset,
else a declared charset (``<?xml encoding>`` or ``<meta charset>``), else
BOM-less UTF-16 recognised by its NULs, else UTF-8 when the bytes are valid
UTF-8. Labels are the Encoding Standard's, read and decoded as browsers do
(``crawler.parse.encodings``): "gb2312" is GBK, "iso-8859-1" windows-1252,
"shift_jis" Microsoft's superset; a label it does not know counts as none.
Only for a page that declares nothing and is not UTF-8 is a guess
needed; there BeautifulSoup's detector (``bs4.dammit``, backed by
charset-normalizer) reads Shift_JIS, GB18030, EUC-KR, KOI8-R and the like,
where lxml alone would read windows-1252 mojibake. It is imported then and
only then: most pages never need it.
"""

from __future__ import annotations

import codecs
import itertools
import re

from crawler.parse.encodings import decode_as, encoding_of

__all__ = ["decode"]

# Searched in a bounded prefix so a hostile page cannot make sniffing slow.
_SNIFF_BYTES = 8192
# What the detector reads of an undeclared page: enough to recognise a language.
_GUESS_BYTES = 64 * 1024
_XML_DECL_RE = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:\-]+)""")
_META_CHARSET_RE = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE)
# The Encoding Standard's three: a UTF-32 page is no page a browser reads.
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16le"),
         (codecs.BOM_UTF16_BE, "utf-16be"))
# Pairs of bytes past ASCII side by side an undeclared page needs before the detector
# is asked: Chinese, Japanese, Korean and Cyrillic text is made of them, where a Latin
# page's accents mostly stand alone between ASCII letters.
MIN_FOREIGN_PAIRS = 2
_FOREIGN_PAIR = re.compile(rb"[\x80-\xff]{2}")
# Guesses worth more than windows-1252: encodings of scripts it cannot show.
# A guess of a Latin single-byte encoding on a short page is noise.
# (the detector's codec, the standard's encoding it is part of)
_TRUSTED_GUESSES = {
    "shift_jis": "shift_jis", "cp932": "shift_jis", "euc_jp": "euc-jp",
    "iso2022_jp": "iso-2022-jp", "gb2312": "gbk", "gbk": "gbk", "gb18030": "gb18030",
    "big5": "big5", "big5hkscs": "big5", "euc_kr": "euc-kr", "cp949": "euc-kr",
    "koi8_r": "koi8-r", "koi8_u": "koi8-u", "cp1251": "windows-1251",
    "iso8859-5": "iso-8859-5", "cp1253": "windows-1253", "iso8859-7": "iso-8859-7",
    "cp1255": "windows-1255", "iso8859-8": "iso-8859-8", "cp1256": "windows-1256",
    "iso8859-6": "iso-8859-6", "tis-620": "windows-874", "cp874": "windows-874"}


def decode(data: bytes, encoding: str | None) -> tuple[str, str]:
    """Decode page bytes; ``encoding`` is the HTTP charset (only a BOM beats it).

    Returns the text and the Encoding Standard's name of the encoding used,
    lower-cased ("utf-8", "windows-1252", "shift_jis"). Never raises:
    undecodable bytes become U+FFFD.
    """
    for bom, unicode in _BOMS:
        if data.startswith(bom):
            return decode_as(data[len(bom) :], unicode), unicode
    name = (encoding_of(encoding) if encoding else None) or _declared(data)
    if name is not None:
        return decode_as(data, name), name
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    guessed = _guess(data)
    if guessed is not None:
        return guessed
    return decode_as(data, "windows-1252"), "windows-1252"


def _declared(data: bytes) -> str | None:
    """The encoding the page declares, or BOM-less UTF-16 seen in its NULs; else None."""
    head = data[:_SNIFF_BYTES]
    declared = _XML_DECL_RE.match(head) or _META_CHARSET_RE.search(head)
    if declared is not None:
        name = encoding_of(declared.group(1).decode("ascii"))
        # An ASCII-readable declaration cannot truly be UTF-16 (HTML standard).
        return "utf-8" if name in ("utf-16le", "utf-16be") else name
    if len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        return "utf-16le"  # BOM-less UTF-16 text: ASCII with NULs between
    if len(data) >= 4 and data[0] == 0 and data[2] == 0 and data[1] != 0:
        return "utf-16be"
    return None


def _guess(data: bytes) -> tuple[str, str] | None:
    """The detector's reading of an undeclared non-UTF-8 page, if it is one worth trusting."""
    sample = data[:_GUESS_BYTES]
    pairs = itertools.islice(_FOREIGN_PAIR.finditer(sample), MIN_FOREIGN_PAIRS)
    if sum(1 for _ in pairs) < MIN_FOREIGN_PAIRS:
        # Guessed, "/i/b\xe4d.png" became a Big5 character that swallowed the "d".
        return None
    try:
        from bs4.dammit import EncodingDetector
    except ImportError:  # the detector is a nicety: without it, windows-1252
        return None
    # Its first answer is its statistical guess (this page has no BOM and no
    # declaration); the ones after are UTF-8 and windows-1252, tried already.
    label = next(iter(EncodingDetector(sample, is_html=True).encodings), None)
    try:
        name = _TRUSTED_GUESSES.get(codecs.lookup(label or "").name)
    except LookupError:
        return None
    if name is None:
        return None
    text = decode_as(data, name)
    # A guess that needs replacements is a wrong guess.
    return (text, name) if "\ufffd" not in text else None
