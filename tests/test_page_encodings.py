"""A page's encoding as browsers choose and read it: the Encoding Standard's labels
and decoders, the HTML standard's prescan of ``<meta>``."""

from __future__ import annotations

import pytest

from crawler.parse.css import decode_stylesheet
from crawler.parse.encodings import decode_as, encode_as, encoding_of
from crawler.parse.extract import extract
from crawler.parse.pagetext import decode

PAGE = "http://site.example/dir/page.html"
ROOT = "http://site.example/"


# (label, the text, how the page is encoded, the image URL a browser asks for)
_READ_AS_BROWSERS_DO = [
    ("gb2312", "喆", "gb18030", "%E5%96%86"),  # GBK, not GB2312
    ("GBK", "喆", "gb18030", "%E5%96%86"),
    ("x-gbk", "喆", "gb18030", "%E5%96%86"),
    ("euc-kr", "똠", "cp949", "%EB%98%A0"),  # windows-949
    ("ks_c_5601-1987", "똠", "cp949", "%EB%98%A0"),
    ("shift_jis", "①", "cp932", "%E2%91%A0"),  # windows-31j
    ("x-sjis", "ド", "cp932", "%E3%83%89"),
    ("windows-31j", "①", "cp932", "%E2%91%A0"),
    ("x-euc-jp", "ド", "euc_jp", "%E3%83%89"),
    ("euc-jp", "①", "euc_jis_2004", "%E2%91%A0"),  # NEC's row 13
    ("x-cp1251", "ф", "cp1251", "%D1%84"),
    ("x-mac-cyrillic", "ф", "mac_cyrillic", "%D1%84"),
    ("dos-874", "ก", "cp874", "%E0%B8%81"),
    ("tis-620", "€", "cp874", "%E2%82%AC"),  # windows-874
    ("iso-8859-9", "€", "cp1254", "%E2%82%AC"),  # windows-1254
    ("iso-8859-1", "€", "cp1252", "%E2%82%AC"),  # windows-1252
    ("latin1", "€", "cp1252", "%E2%82%AC"),
    ("ascii", "é", "cp1252", "%C3%A9"),
    ("unicode-1-1-utf-8", "é", "utf-8", "%C3%A9"),
    (" Big5\t", "喆", "big5hkscs", "%E5%96%86"),
]


@pytest.mark.parametrize(("label", "char", "codec", "escaped"), _READ_AS_BROWSERS_DO)
def test_a_declared_label_is_read_as_the_encoding_standard_reads_it(
        label: str, char: str, codec: str, escaped: str) -> None:
    """Read as Python's codec of that name, gb2312 made U+FFFD of 喆 and x-sjis was a guess."""
    page = f'<meta charset="{label}"><img src="/img/{char}.png">'.encode(codec)
    expected = (f"{ROOT}img/{escaped}.png",)
    assert extract(page, PAGE).images == expected
    undeclared = f'<img src="/img/{char}.png">'.encode(codec)
    assert extract(undeclared, PAGE, encoding=label).images == expected  # the HTTP charset
    content = f'<meta http-equiv="Content-Type" content="text/html; charset={label}">'
    assert extract(content.encode() + undeclared, PAGE).images == expected


def test_the_standards_labels_name_its_encodings() -> None:
    assert encoding_of(" ISO-8859-1\n") == "windows-1252"
    assert encoding_of("unicode") == encoding_of("ucs-2") == "utf-16le"
    assert encoding_of("iso-2022-kr") == encoding_of("hz-gb-2312") == "replacement"
    assert encoding_of("latin-1") is None  # Python's, not the standard's
    assert encoding_of("utf-7") is None


def test_the_replacement_encoding_is_one_error_and_x_user_defined_keeps_its_bytes() -> None:
    assert decode(b"\x1b$)C<img src='/a.png'>", "iso-2022-kr") == ("\ufffd", "replacement")
    assert extract(b"<img src='/a.png'>", PAGE, encoding="hz-gb-2312").images == ()
    assert decode_as(b"a\x80\xff", "x-user-defined") == "a\uf780\uf7ff"
    assert decode_as(b"\x81\x9d", "windows-1252") == "\x81\x9d"  # the standard's C1 controls


def test_shift_jis_single_bytes_it_does_not_map_are_errors() -> None:
    """cp932 reads 0xA0, 0xFD, 0xFE and 0xFF as U+F8F0 to U+F8F3 (Private Use): the
    standard's Shift_JIS decoder reads each as an error, its encoder knows none of them,
    and its user-defined area (0xF040...) stays Private Use."""
    assert decode_as(b"a\xa0b\xfd\xfe\xff", "shift_jis") == "a\ufffdb\ufffd\ufffd\ufffd"
    assert decode_as(b"\xf0\x40\x82\xa0", "shift_jis") == "\ue000\u3042"
    assert encode_as("\uf8f0\u3042", "shift_jis") == b"&#63728;\x82\xa0"


@pytest.mark.parametrize(("label", "codec", "char", "query"), [
    ("windows-949", "cp949", "똠", "%8Cc"), ("euc-kr", "cp949", "똠", "%8Cc"),
    ("gb2312", "gb18030", "喆", "%86%B4"), ("shift_jis", "cp932", "①", "%87%40"),
    ("iso-8859-1", "cp1252", "€", "%80"), ("utf-16", "utf-16-le", "€", "%E2%82%AC"),
    ("windows-1251", "utf-8", "人", "%26%2320154%3B"),  # one it lacks: "&#20154;"
])
def test_a_query_is_encoded_in_the_pages_encoding_as_the_standard_names_it(
        label: str, codec: str, char: str, query: str) -> None:
    html = f'<img src="/a.png?q={char}">'
    data = html.encode(codec) if codec != "utf-8" else html.replace(char, "&#20154;").encode()
    assert extract(data, PAGE, encoding=label).images == (f"{ROOT}a.png?q={query}",)


# --- the prescan of <meta> ------------------------------------------------------------

@pytest.mark.parametrize("head", [
    '<!-- <meta charset="iso-8859-1"> --><meta charset="utf-8">',
    '<meta name="keywords" content="charset=windows-1251">',
    '<meta name="description" content="text/html; charset=iso-8859-1"><meta charset=utf-8>',
    '<a title=\'<meta charset="iso-8859-1">\'>x</a>',
    '<!--><meta charset="utf-8"><!-- <meta charset="koi8-r"> -->',
    '<?xml-stylesheet href="a.xsl"?><meta charset="utf-8"><meta charset="windows-1251">',
    '<script data-x="<meta charset=windows-1251>"></script><meta charset="utf-8">',
    '<meta charset="bogus" content="charset=windows-1251" http-equiv="content-type">',
    '<meta charset="utf-16"><meta charset="windows-1251">',  # UTF-16 in a meta is UTF-8
])
def test_charsets_a_browser_ignores_are_ignored(head: str) -> None:
    """Taken by a regular expression, they read a UTF-8 page's ü as Ã¼."""
    page = f'<html><head>{head}</head><body><img src="/\u00fc.png"></body></html>'.encode()
    assert extract(page, PAGE).images == (ROOT + "%C3%BC.png",)


@pytest.mark.parametrize("head", [
    '<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">',
    "<META CONTENT='text/html;charset=\"windows-1251\"' HTTP-EQUIV=content-type>",
    '<meta/charset=windows-1251>',
    '<!-- a comment --><link rel=stylesheet href="/a.css"><meta charset= "windows-1251" >',
    '<meta charset="windows-1251" charset="utf-8">',  # the first of a name counts
    '<!--><meta charset=windows-1251>',
])
def test_charsets_a_browser_takes_are_taken(head: str) -> None:
    page = f"<html><head>{head}</head><body><img src='/\u0444.png'></body></html>"
    assert extract(page.encode("cp1251"), PAGE).images == (ROOT + "%D1%84.png",)


def test_x_user_defined_in_a_meta_is_windows_1252() -> None:
    assert decode(b"<meta charset=x-user-defined>\xe9", None)[1] == "windows-1252"


# --- style sheets ---------------------------------------------------------------------

@pytest.mark.parametrize(("data", "charset", "referrer", "text"), [
    ("\ufeffф".encode("utf-8"), "windows-1251", None, "ф"),  # a BOM first
    ("\ufeffф".encode("utf-16-le"), None, None, "ф"),
    ("ф".encode("cp1251"), "cp1251", "utf-8", "ф"),  # then the HTTP charset
    ('@charset "x-cp1251"; ф'.encode("cp1251"), "bogus", None, '@charset "x-cp1251"; ф'),
    ('@charset "utf-16"; ф'.encode(), None, "windows-1251", '@charset "utf-16"; ф'),
    ("@charset 'koi8-r'; ф".encode("cp1251"), None, None, "@charset 'koi8-r'; \ufffd"),
    (' @charset "koi8-r"; ф'.encode("cp1251"), None, "windows-1251", ' @charset "koi8-r"; ф'),
    ("ф".encode("cp1251"), None, "windows-1251", "ф"),  # then the referrer's
    ("ф".encode(), None, None, "ф"),  # else UTF-8
])
def test_a_style_sheets_encoding_is_css_syntaxs_fallback_encoding(
        data: bytes, charset: str | None, referrer: str | None, text: str) -> None:
    """Only the exact bytes '@charset "' open the rule: single quotes or a space first do not."""
    assert decode_stylesheet(data, charset, referrer) == text
