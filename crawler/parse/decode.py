"""Page bytes to text, choosing the encoding as browsers do.

The order is the HTML standard's: a byte-order mark, else the HTTP charset,
else a declared charset (``<?xml encoding>`` or ``<meta charset>``), else
BOM-less UTF-16 recognised by its NULs, else UTF-8 when the bytes are valid
UTF-8. Only for a page that declares nothing and is not UTF-8 is a guess
needed; there BeautifulSoup's detector (``bs4.dammit``, backed by
charset-normalizer) reads Shift_JIS, GB18030, EUC-KR, KOI8-R and the like,
where lxml alone would read windows-1252 mojibake. It is imported then and
only then: most pages never need it.
"""

from __future__ import annotations

import codecs
import itertools
import re

__all__ = ["decode"]

# Searched in a bounded prefix so a hostile page cannot make sniffing slow.
_SNIFF_BYTES = 8192
# What the detector reads of an undeclared page: enough to recognise a language.
_GUESS_BYTES = 64 * 1024
_XML_DECL_RE = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:\-]+)""")
_META_CHARSET_RE = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"),
         (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))
# Pairs of bytes past ASCII side by side an undeclared page needs before the detector
# is asked: Chinese, Japanese, Korean and Cyrillic text is made of them, where a Latin
# page's accents mostly stand alone between ASCII letters.
MIN_FOREIGN_PAIRS = 2
_FOREIGN_PAIR = re.compile(rb"[\x80-\xff]{2}")
# The HTML standard reads these labels as windows-1252, a superset.
_AS_WINDOWS_1252 = frozenset({"latin-1", "iso8859-1", "ascii"})
# Text codecs of Python that are no page's encoding (none is in the Encoding Standard):
# a page that names one is read as if it named none.
_NOT_PAGE_ENCODINGS = frozenset({"idna", "punycode", "raw-unicode-escape", "unicode-escape",
                                 "undefined", "utf-7", "charmap"})
# Guesses worth more than windows-1252: encodings of scripts it cannot show.
# A guess of a Latin single-byte encoding on a short page is noise.
_TRUSTED_GUESSES = frozenset({
    "shift_jis", "cp932", "euc_jp", "iso2022_jp", "gb2312", "gbk", "gb18030", "big5",
    "big5hkscs", "euc_kr", "cp949", "koi8_r", "koi8_u", "cp1251", "iso8859-5", "cp1253",
    "iso8859-7", "cp1255", "iso8859-8", "cp1256", "iso8859-6", "tis-620", "cp874"})


def decode(data: bytes, encoding: str | None) -> tuple[str, str]:
    """Decode page bytes; ``encoding`` is the HTTP charset (only a BOM beats it).

    Returns the text and the codec name used. Never raises: undecodable bytes
    become U+FFFD.
    """
    candidates: list[str] = []
    if encoding:
        candidates.append(encoding)
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(name, errors="replace"), name
    head = data[:_SNIFF_BYTES]
    declared = _XML_DECL_RE.match(head) or _META_CHARSET_RE.search(head)
    if declared is not None:
        label = declared.group(1).decode("ascii")
        # An ASCII-readable declaration cannot truly be UTF-16/32 (HTML standard).
        candidates.append("utf-8" if label.lower().startswith(("utf-16", "utf-32")) else label)
    elif len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        candidates.append("utf-16-le")  # BOM-less UTF-16 text: ASCII with NULs between
    elif len(data) >= 4 and data[0] == 0 and data[2] == 0 and data[1] != 0:
        candidates.append("utf-16-be")
    for candidate in candidates:
        codec = _text_codec(candidate)
        if codec is None:
            continue  # an unknown label: try the next guess
        try:
            return data.decode(codec, errors="replace"), codec
        except (UnicodeError, ValueError):  # a codec that takes no "replace": not a page's
            continue
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    guessed = _guess(data)
    if guessed is not None:
        return guessed
    return data.decode("cp1252", errors="replace"), "cp1252"


def _text_codec(label: str) -> str | None:
    """The codec a charset label names, if it decodes bytes to text; else None.

    Python knows codecs that no web page means: "base64", "hex", "zlib",
    "rot13" or "punycode" as a charset would give something else than the
    page's text, or raise.
    """
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_PAGE_ENCODINGS:
        return None
    return "cp1252" if info.name in _AS_WINDOWS_1252 else info.name


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
        name = codecs.lookup(label or "").name
    except LookupError:
        return None
    if name not in _TRUSTED_GUESSES:
        return None
    try:
        return data.decode(name), name  # a guess that needs replacements is a wrong guess
    except UnicodeDecodeError:
        return None
