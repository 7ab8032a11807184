"""Page bytes to text, choosing the encoding as browsers do.

The order is the HTML standard's: a byte-order mark, else the HTTP charset,
else a declared charset (``<?xml encoding>``, or a ``<meta>`` found by the HTML
standard's prescan, which skips comments and other tags' attributes), else
BOM-less UTF-16 recognised by its NULs, else UTF-8 when the bytes are valid
UTF-8, or nearly all (a few stray bytes, as Chromium reads such a page).
Labels are the Encoding Standard's, read and decoded as browsers do
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

from crawler.parse.encodings import bom_encoding, declared, decode_as, encoding_of

__all__ = ["decode"]

# Searched in a bounded prefix so a hostile page cannot make sniffing slow. The HTML
# standard reads 1024 bytes; browsers read on through a long <head> (Chromium to the
# end of it), so more is read here, as before.
_SNIFF_BYTES = 8192
# What the detector reads of an undeclared page: enough to recognise a language.
_GUESS_BYTES = 64 * 1024
_XML_DECL_RE = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:\-]+)""")
# The prescan's "get an attribute": the end of the tag, or a name and maybe a value
# (double- or single-quoted, an unterminated quote, or unquoted).
_ATTRIBUTE_RE = re.compile(rb"""[\t\n\f\r /]*+(?:(>)|([^\t\n\f\r />][^\t\n\f\r /=>]*+)
    (?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"([^"]*+)"|'([^']*+)'|(["'])|([^\t\n\f\r >]*+)))?)""",
    re.VERBOSE)
_TAG_NAME_RE = re.compile(rb"[^\t\n\f\r >]*+")
_SPACE_OR_SLASH = frozenset(b"\t\n\f\r /")
_ASCII_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# The standard's "extracting a character encoding from a meta element" (in a lower-cased
# content value): an unmatched quote, or nothing after "=", names none.
_CONTENT_CHARSET_RE = re.compile(
    r"""charset[\t\n\f\r ]*=[\t\n\f\r ]*(?:"([^"]*)"|'([^']*)'|["']|([^\t\n\f\r ;]*))""")
# Pairs of bytes past ASCII side by side an undeclared page needs before the detector
# is asked: Chinese, Japanese, Korean and Cyrillic text is made of them, where a Latin
# page's accents mostly stand alone between ASCII letters.
MIN_FOREIGN_PAIRS = 2
_FOREIGN_PAIR = re.compile(rb"[\x80-\xff]{2}")
# Characters past ASCII in valid UTF-8, per stray byte, that make an undeclared page
# that is not all UTF-8 read as UTF-8 all the same.
MOSTLY_UTF8 = 3
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
    bom = bom_encoding(data)
    if bom is not None:
        return decode_as(data[bom[1] :], bom[0]), bom[0]
    name = (encoding_of(encoding) if encoding else None) or _declared(data)
    if name is not None:
        return decode_as(data, name), name
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    mostly = _mostly_utf8(data)
    if mostly is not None:
        return mostly, "utf-8"
    guessed = _guess(data)
    if guessed is not None:
        return guessed
    return decode_as(data, "windows-1252"), "windows-1252"


def _declared(data: bytes) -> str | None:
    """The encoding the page declares, or BOM-less UTF-16 seen in its NULs; else None."""
    head = data[:_SNIFF_BYTES]
    xml = _XML_DECL_RE.match(head)
    name = encoding_of(xml.group(1).decode("ascii")) if xml is not None else _prescan(head)
    if name is not None:
        return declared(name)
    if xml is None and len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        return "utf-16le"  # BOM-less UTF-16 text: ASCII with NULs between
    if xml is None and len(data) >= 4 and data[0] == 0 and data[2] == 0 and data[1] != 0:
        return "utf-16be"
    return None


def _prescan(head: bytes) -> str | None:
    """The HTML standard's "prescan a byte stream to determine its encoding": the first
    ``<meta charset>``, or ``<meta http-equiv="content-type" content="...charset=...">``,
    outside comments, naming an encoding. A browser ignores a charset in a comment,
    in another tag's attribute or in a ``<meta>`` that is no Content-Type pragma."""
    if b"charset" not in head.lower():
        return None  # most undeclared pages: their tags need no reading
    position = head.find(b"<")
    while position >= 0:
        after = head[position + 1 : position + 6]
        if after.startswith(b"!--"):
            end = head.find(b"-->", position + 2)  # "<!-->" is a whole comment
            position = end + 3 if end >= 0 else -1
        elif after[:4].lower() == b"meta" and after[4:] and after[4] in _SPACE_OR_SLASH:
            found, position = _meta(head, position + 6)
            if found is not None:
                return found
        elif after[:1] and (after[0] in _ASCII_LETTERS or (
                after[0] == 0x2F and after[1:2] and after[1] in _ASCII_LETTERS)):
            # Another tag: its attributes are skipped as the prescan reads them.
            name = _TAG_NAME_RE.match(head, position + 2)
            position = _skip_attributes(head, name.end()) if name is not None else -1
        elif after[:1] in (b"!", b"/", b"?"):
            end = head.find(b">", position + 2)
            position = end + 1 if end >= 0 else -1
        else:
            position += 1
        if position < 0:
            return None  # the prescan ran off the end
        position = head.find(b"<", position)
    return None


def _attribute(head: bytes, position: int) -> re.Match[bytes] | None:
    """The prescan's "get an attribute" at ``position``: group 1 is the tag's ">", else
    group 2 the name and 3, 4 or 6 its value. None where it runs off the end."""
    attribute = _ATTRIBUTE_RE.match(head, position)
    if attribute is None or attribute.group(5) is not None:
        return None  # nothing but spaces, or a quote never closed
    if attribute.group(1) is None and attribute.end() >= len(head):
        return None  # a name or value cut by the end: maybe longer
    return attribute


def _skip_attributes(head: bytes, position: int) -> int:
    """Where the tag whose attributes start at ``position`` ends; -1 past the end."""
    while (attribute := _attribute(head, position)) is not None:
        position = attribute.end()
        if attribute.group(1) is not None:
            return position
    return -1


def _meta(head: bytes, position: int) -> tuple[str | None, int]:
    """The encoding a ``<meta`` whose attributes start at ``position`` declares, if it
    declares one, and where the prescan goes on (-1: it ran off the end)."""
    seen: set[bytes] = set()
    got_pragma = False
    need_pragma: bool | None = None
    charset: str | None = None
    decided = False  # charset taken from an attribute (None: a label of no encoding)
    while True:
        attribute = _attribute(head, position)
        if attribute is None:
            return None, -1
        position = attribute.end()
        if attribute.group(1) is not None:
            break
        name = attribute.group(2).lower()
        if name in seen:
            continue
        seen.add(name)
        raw = attribute.group(3) or attribute.group(4) or attribute.group(6) or b""
        value = raw.lower().decode("latin-1")
        if name == b"http-equiv":
            got_pragma = value == "content-type"
        elif name == b"content" and not decided:
            found = _CONTENT_CHARSET_RE.search(value)
            label = next((g for g in found.groups() if g is not None), None) if found else None
            if label is not None and encoding_of(label) is not None:
                charset, need_pragma, decided = encoding_of(label), True, True
        elif name == b"charset" and not decided:
            charset, need_pragma, decided = encoding_of(value), False, True
    if charset is None or (need_pragma and not got_pragma):
        return None, position
    return ("windows-1252" if charset == "x-user-defined" else declared(charset)), position


def _mostly_utf8(data: bytes) -> str | None:
    """The text of an undeclared page that is UTF-8 but for a few stray bytes (a
    footer's "\xa9" pasted from a Latin-1 file), as Chromium's detector reads it; else
    None. Read as windows-1252, or guessed Thai, every address on it past ASCII was
    another one, and 404. A Latin page's accents are stray bytes nearly all: UTF-8
    needs a lead byte and its continuation bytes side by side, which windows-1252 text
    makes only as mojibake."""
    text = data.decode("utf-8", errors="replace")
    stray = text.count("\ufffd")
    valid = len(text) - len(text.encode("ascii", errors="ignore")) - stray
    return text if valid >= MOSTLY_UTF8 * stray else None


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
