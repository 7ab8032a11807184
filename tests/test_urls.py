"""URL identity: example tests for each normalisation rule, and properties.

The properties check that ``normalize`` is idempotent and never changes what a
URL points to: the same host (compared as punycode), port, path (compared
decoded, after dot-segment removal) and query (compared decoded).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

import ada_url
import idna
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from crawler.errors import InvalidURL
from crawler.fetch.robots import origin_of
from crawler.model.urls import (
    _normalize_in_full,
    host_key,
    host_key_of_normalized,
    is_http_url,
    normalize,
    resolve,
)
from crawler.parse import resolve as resolve_module
from crawler.parse.resolve import Resolver

# --- examples, one rule each ---------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("HTTP://Example.COM/Path", "http://example.com/Path"),
    ("HtTpS://WWW.EXAMPLE.com/", "https://www.example.com/"),
])
def test_scheme_and_host_are_lower_cased_but_path_is_not(url: str, expected: str) -> None:
    assert normalize(url) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("http://bücher.de/", "http://xn--bcher-kva.de/"),
    ("http://BÜCHER.de/", "http://xn--bcher-kva.de/"),
    ("http://例え.テスト/", "http://xn--r8jz45g.xn--zckzah/"),
    ("http://straße.de/", "http://xn--strae-oqa.de/"),  # IDNA 2008, not transitional
    ("http://ｅｘａｍｐｌｅ.com/", "http://example.com/"),  # full-width letters map to ASCII
    ("http://xn--bcher-kva.DE/", "http://xn--bcher-kva.de/"),
    ("http://%65xample.com/", "http://example.com/"),
    ("http://my_host.example.com/", "http://my_host.example.com/"),
])
def test_host_names_become_lower_case_punycode(url: str, expected: str) -> None:
    assert normalize(url) == expected


def test_a_name_idna_2008_rejects_falls_back_to_the_idna_2003_codec() -> None:
    # U+2665 (a symbol) is disallowed by IDNA 2008 but allowed by IDNA 2003.
    with pytest.raises(idna.IDNAError):
        idna.encode("i♥.example", uts46=True)
    assert normalize("http://i♥.example/") == "http://xn--i-n3p.example/"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://example.com:80/", "http://example.com/"),
    ("https://example.com:443/", "https://example.com/"),
    ("http://example.com:443/", "http://example.com:443/"),
    ("https://example.com:80/", "https://example.com:80/"),
    ("http://example.com:8080/", "http://example.com:8080/"),
    ("http://example.com:0080/", "http://example.com/"),
    ("http://example.com:/", "http://example.com/"),
])
def test_default_ports_are_dropped(url: str, expected: str) -> None:
    assert normalize(url) == expected


def test_the_fragment_is_dropped() -> None:
    assert normalize("http://example.com/a?b=c#frag") == "http://example.com/a?b=c"
    assert normalize("http://example.com/a#") == "http://example.com/a"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://a.example/b/c/./../../g", "http://a.example/g"),
    ("http://a.example/b/c/..", "http://a.example/b/"),
    ("http://a.example/b/c/.", "http://a.example/b/c/"),
    ("http://a.example/../../x", "http://a.example/x"),
    ("http://a.example/a//../b", "http://a.example/a/b"),
    ("http://a.example/%2E%2E/x/%2e", "http://a.example/x/"),
    ("http://a.example/.hidden/..more", "http://a.example/.hidden/..more"),
])
def test_dot_segments_are_removed(url: str, expected: str) -> None:
    assert normalize(url) == expected


def test_an_empty_path_becomes_slash() -> None:
    assert normalize("http://example.com") == "http://example.com/"
    assert normalize("http://example.com?q=1") == "http://example.com/?q=1"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://a.example/%7euser/%e2%82%ac", "http://a.example/~user/%E2%82%AC"),
    ("http://a.example/%41%42%2D%5F", "http://a.example/AB-_"),
    ("http://a.example/a b/ü", "http://a.example/a%20b/%C3%BC"),
    ("http://a.example/100%/%zz", "http://a.example/100%/%zz"),  # browsers send a lone % as is
    ("http://a.example/{x}|^`\"<>", "http://a.example/%7Bx%7D|%5E%60%22%3C%3E"),  # | as browsers
])
def test_percent_encoding_is_normalised(url: str, expected: str) -> None:
    assert normalize(url) == expected


@pytest.mark.parametrize("escape", ["%2F", "%3F", "%23", "%26", "%3D", "%25", "%2B", "%40"])
def test_reserved_characters_stay_encoded(escape: str) -> None:
    url = f"http://a.example/x{escape}y?k=v{escape}w"
    assert normalize(url) == url
    assert normalize(url.lower()) == url  # only the hex digits change case


def test_the_query_is_kept_as_written() -> None:
    url = "http://a.example/p?z=1&a=2&a=1&empty=&flag&utm_source=x"
    assert normalize(url) == url
    assert normalize("http://a.example/p?q=a b&r=é") == "http://a.example/p?q=a%20b&r=%C3%A9"
    assert normalize("http://a.example/p?a=/x?y") == "http://a.example/p?a=/x?y"
    assert normalize("http://a.example/p?") == "http://a.example/p?"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://[::1]/", "http://[::1]/"),
    ("http://[::1]:8080/", "http://[::1]:8080/"),
    ("http://[2001:DB8:0:0:0:0:0:1]:80/", "http://[2001:db8::1]/"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/"),
])
def test_ip_hosts(url: str, expected: str) -> None:
    assert normalize(url) == expected


def test_userinfo_is_kept() -> None:
    assert normalize("http://User:P%40ss@Example.com/") == "http://User:P%40ss@example.com/"
    assert normalize("http://a@b@example.com/") == "http://a%40b@example.com/"


def test_surrounding_whitespace_and_inner_newlines_are_dropped() -> None:
    assert normalize("  http://exa\nmple.com/a\tb\r\n ") == "http://example.com/ab"


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/", "not http or https"),
    ("mailto:someone@example.com", "not http or https"),
    ("/relative/path", "not http or https"),
    ("example.com/no-scheme", "not http or https"),
    ("", "not http or https"),
    ("http://", "no host"),
    ("http://user@/", "no host"),
    ("http://::1:8080/", r"no host: an IPv6 address goes in brackets, as in http://\[::1\]"),
    ("http://:80/", r"has no host'?$"),
    ("http://example.com:99999/", "port out of range"),
    ("http://example.com:8o/", "bad port"),
    ("http://[::1/", "cannot parse"),
    ("http://[not-ipv6]/", "IPv6"),
    ("http://exa mple.com/", "not allowed in host names"),
    ("http://a<b.example/", "not allowed in host names"),
    ("http://%ff.example/", "not UTF-8"),
    ("http://\udc80.example/", "not a valid internationalised domain name"),
    ("http://a.example/\udc80", "not valid Unicode"),
])
def test_invalid_urls_raise_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(InvalidURL, match=message):
        normalize(url)


def test_invalid_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not http"):
        normalize("gopher://example.com/")


@pytest.mark.parametrize(("url", "expected"), [
    ("http://Example.com/x", "example.com"),
    ("http://example.com:80/x", "example.com"),
    ("https://example.com:443/", "example.com"),
    ("http://example.com:8080/", "example.com:8080"),
    ("http://user:pw@example.com:8080/", "example.com:8080"),
    ("http://[::1]:9000/", "[::1]:9000"),
    ("http://bücher.de/", "xn--bcher-kva.de"),
])
def test_host_key(url: str, expected: str) -> None:
    assert host_key(url) == expected


def test_host_key_rejects_invalid_urls() -> None:
    with pytest.raises(InvalidURL):
        host_key("ftp://example.com/")


@pytest.mark.parametrize(("url", "expected"), [
    ("http://example.com/", True),
    ("HTTPS://example.com", True),
    ("ftp://example.com/", False),
    ("javascript:alert(1)", False),
    ("//example.com/", False),
    ("http://", False),
    ("http://example.com:bad/", False),
])
def test_is_http_url(url: str, expected: bool) -> None:
    assert is_http_url(url) is expected


# --- properties -------------------------------------------------------------------

_ASCII_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_UNICODE_LABEL = st.one_of(
    st.sampled_from(["bücher", "BÜCHER", "пример", "例え", "münchen", "straße", "café", "测试",
                     "ドメイン", "ελληνικά", "ñandú", "ÅNGSTRÖM"]),
    st.text(alphabet="abcxyzéüñøåçЖжяΩω", min_size=1, max_size=8),
)
_LABEL = st.one_of(_ASCII_LABEL, _UNICODE_LABEL).filter(
    lambda label: label[2:4] != "--")  # "ab--" labels are reserved by IDNA
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
_IPV4 = st.ip_addresses(v=4).map(str)
_IPV6 = st.ip_addresses(v=6).map(lambda ip: f"[{ip}]")
_HOST = st.one_of(_DOMAIN, _DOMAIN, _IPV4, _IPV6)

_SCHEME = st.sampled_from(["http", "https", "HTTP", "Https"])
_PORT = st.one_of(st.none(), st.sampled_from([80, 443, 8080]), st.integers(1, 65535))

_ESCAPE = st.builds(lambda byte, upper: f"%{byte:02X}" if upper else f"%{byte:02x}",
                    st.integers(0, 255), st.booleans())
# Text that may appear in a path: everything but the delimiters that end it,
# and no lone surrogates (those cannot be sent).
_PATH_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="?#\t\n\r")
_SEGMENT = st.one_of(
    st.sampled_from([".", "..", "", "%2E", "%2e%2E", "a.b", "~x", "%2F", "%25"]),
    st.lists(st.one_of(_PATH_CHAR, _ESCAPE, st.just("%")), max_size=6).map("".join),
)
_PATH = st.lists(_SEGMENT, max_size=6).map(lambda segments: "".join("/" + s for s in segments))
_QUERY_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="#\t\n\r")
_QUERY = st.one_of(
    st.none(),
    st.lists(st.one_of(_QUERY_CHAR, _ESCAPE, st.sampled_from(["&", "=", "+", "?", "/", "%"])),
             max_size=12).map("".join),
)
_FRAGMENT = st.one_of(st.none(), st.text(max_size=5))
_USERINFO = st.one_of(st.none(), st.sampled_from(["user", "user:pass", "u%40x:p"]))


@st.composite
def http_urls(draw: st.DrawFn) -> dict[str, object]:
    """A generated URL with the parts it was built from."""
    parts = {
        "scheme": draw(_SCHEME), "userinfo": draw(_USERINFO), "host": draw(_HOST),
        "port": draw(_PORT), "path": draw(_PATH), "query": draw(_QUERY),
        "fragment": draw(_FRAGMENT),
    }
    url = f"{parts['scheme']}://"
    if parts["userinfo"] is not None:
        url += f"{parts['userinfo']}@"
    url += str(parts["host"])
    if parts["port"] is not None:
        url += f":{parts['port']}"
    url += str(parts["path"])
    if parts["query"] is not None:
        url += f"?{parts['query']}"
    if parts["fragment"] is None and url[-1] <= " ":
        parts["fragment"] = ""  # else the URL standard strips the trailing space or control
    if parts["fragment"] is not None:
        url += f"#{parts['fragment']}"
    parts["url"] = url
    return parts


def _expected_host(host: str) -> str:
    """The host as the URL standard reads it (IPv4 numbers too), by its parser in ada."""
    return str(ada_url.URL(f"http://{host}/").host)


def _accepted(url: str) -> bool:
    """Does the URL standard accept ``url`` (a host such as "a.0" it does not)?"""
    try:
        ada_url.URL(url)
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def _decode_unreserved(text: str) -> str:
    """Decode only %XX of unreserved characters, as RFC 3986 6.2.2.2 allows."""
    out, i = [], 0
    while i < len(text):
        piece = text[i : i + 3]
        if (len(piece) == 3 and piece[0] == "%" and all(c in "0123456789abcdefABCDEF"
                                                         for c in piece[1:])):
            char = chr(int(piece[1:], 16))
            if char.isascii() and (char.isalnum() or char in "-._~"):
                out.append(char)
                i += 3
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _rfc_remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, literally, as an independent reference."""
    output = ""
    while path:
        if path.startswith("../"):
            path = path[3:]
        elif path.startswith(("./", "/./")):
            path = path[2:]
        elif path == "/.":
            path = "/"
        elif path.startswith("/../"):
            path = path[3:]
            output = output[: max(output.rfind("/"), 0)]
        elif path == "/..":
            path = "/"
            output = output[: max(output.rfind("/"), 0)]
        elif path in (".", ".."):
            path = ""
        else:
            start = 1 if path.startswith("/") else 0
            end = path.find("/", start)
            end = len(path) if end < 0 else end
            output += path[:end]
            path = path[end:]
    return output


def _decoded_segments(path: str) -> list[str]:
    """A path as its segments, each decoded: what a server sees ("%2F" stays inside one)."""
    return [unquote(segment) for segment in path.split("/")]


def _expected_segments(path: str) -> list[str]:
    """The decoded segments ``path`` names once RFC 3986 removes its dot segments.

    A segment is a dot segment when it is "." or ".." after decoding unreserved
    escapes ("%2E%2E" is ".."). Other segments become placeholder tokens, so the
    literal RFC algorithm moves them around without reading them.
    """
    segments = path.split("/")
    tokens = []
    for index, segment in enumerate(segments):
        dots = _decode_unreserved(segment)
        tokens.append(dots if dots in (".", "..") else f"s{index}")
    kept = _rfc_remove_dot_segments("/".join(tokens)).split("/")
    return [unquote(segments[int(token[1:])]) if token else "" for token in kept]


_PROPERTY_SETTINGS = settings(max_examples=400, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY_SETTINGS
@given(http_urls())
@example({"url": "http://a.example/%2e%2E/b/../c?x=%7e#f"})
def test_normalize_is_idempotent(parts: dict[str, object]) -> None:
    assume(_accepted(str(parts["url"])))
    once = normalize(str(parts["url"]))
    assert normalize(once) == once


@_PROPERTY_SETTINGS
@given(http_urls())
def test_normalize_keeps_what_the_url_points_to(parts: dict[str, object]) -> None:
    assume(_accepted(str(parts["url"])))
    result = urlsplit(normalize(str(parts["url"])))
    scheme = str(parts["scheme"]).lower()
    assert result.scheme == scheme
    assert result.fragment == ""

    authority = result.netloc.rpartition("@")[2]
    expected_port = parts["port"] if parts["port"] is not None else {"http": 80, "https": 443}[
        scheme]
    assert (result.port or {"http": 80, "https": 443}[scheme]) == expected_port
    host = authority[: authority.rfind(":")] if ":" in authority.rpartition("]")[2] else authority
    assert host == _expected_host(str(parts["host"]))

    if parts["userinfo"] is not None:
        assert unquote(result.netloc.rpartition("@")[0]) == unquote(str(parts["userinfo"]))

    # A backslash in an http(s) path is a slash to the URL standard.
    path = str(parts["path"]).replace("\\", "/")
    assert _decoded_segments(result.path) == _expected_segments(path or "/")

    query = parts["query"]
    if query is None:
        assert result.query == ""
    else:
        assert unquote(result.query) == unquote(str(query))
        assert parse_qsl(result.query, keep_blank_values=True) == parse_qsl(
            str(query), keep_blank_values=True)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=40))
@example("0:²")  # "²".isdigit() is true, and int() of it fails
@example("http://h:²/")
def test_normalize_of_arbitrary_text_is_idempotent_or_raises_invalid_url(text: str) -> None:
    for candidate in (text, "http://" + text, "https://example.com/" + text):
        try:
            once = normalize(candidate)
        except InvalidURL:
            continue
        assert normalize(once) == once
        assert once.startswith(("http://", "https://"))


@given(http_urls())
@example({"url": "http://user:pw@[::1]:9000/a@b?c@d"})
def test_host_key_of_a_normalized_url_needs_no_second_normalisation(
        parts: dict[str, object]) -> None:
    url = str(parts["url"])
    assume(_accepted(url))
    assert host_key_of_normalized(normalize(url)) == host_key(url)


# Canonical URLs, half of them with one piece of trouble inserted anywhere: what must
# send a URL the long way (an escape, a dot segment, a default port, upper case...).
_CANONICAL_PATH_CHARS = "Aaz09-._~!$&'()*+,;=:@"
_TROUBLE = ["/.", "/..", ".", "%41", "%2e", "#", "#f", " ", "[", "]", "é", "\\", "%", ":80",
            ":443", ":0", ":00080", ":65536", "A", "//", "?", "@", "\t", "HTTP"]


@st.composite
def near_canonical_urls(draw: st.DrawFn) -> str:
    host = draw(st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,9}", fullmatch=True)
                | st.from_regex(r"0?[0-9]{1,3}(\.0?[0-9]{1,3}){0,4}", fullmatch=True))  # IPv4
    port = draw(st.sampled_from(["", ":8080", ":1", ":65535"]))
    segments = draw(st.lists(st.text(alphabet=_CANONICAL_PATH_CHARS, max_size=6), min_size=1,
                             max_size=4))
    query = draw(st.sampled_from(["", "?", "?a=1&b=/x?y"]))
    url = f"{draw(st.sampled_from(['http', 'https']))}://{host}{port}"
    url += "".join("/" + segment for segment in segments) + query
    if draw(st.booleans()):
        where = draw(st.integers(0, len(url)))
        url = url[:where] + draw(st.sampled_from(_TROUBLE)) + url[where:]
    return url


@settings(max_examples=800, deadline=None)
@given(near_canonical_urls())
@example("http://a:80/x")
@example("https://a.b/./x")
@example("http://h:8080/a?b=/./c")
@example("http://127.0.0.1:8080/x")
@example("http://1.2.3.04/x")
@example("http://255.255.255.255/")
@example("http://256.0.0.1/")
@example("http://1.2.3/")
def test_the_canonical_shortcut_agrees_with_full_normalisation(url: str) -> None:
    try:
        expected = _normalize_in_full(url)
    except InvalidURL:
        with pytest.raises(InvalidURL):
            normalize(url)
        return
    assert normalize(url) == expected


# --- resolution as browsers do it ----------------------------------------------------


@pytest.mark.parametrize(("reference", "base", "expected"), [
    ("img//x.png", "http://a.example/dir/page.html", "http://a.example/dir/img//x.png"),
    ("img.png", "http://a.example/a//b/page.html", "http://a.example/a//b/img.png"),
    ("https:cdn.example/x.png", "http://a.example/p", "https://cdn.example/x.png"),
    ("http:x.png", "http://a.example/dir/p", "http://a.example/dir/x.png"),
    ("///cdn.example/x.png", "http://a.example/p", "http://cdn.example/x.png"),
    ("\\\\cdn.example\\x.png", "https://a.example/p", "https://cdn.example/x.png"),
    ("../../../x.png#f", "http://a.example/a/b", "http://a.example/x.png"),
    ("x.png?q=%7e", "http://a.example/", "http://a.example/x.png?q=~"),
])
def test_resolve_follows_the_url_standard(reference: str, base: str, expected: str) -> None:
    assert resolve(reference, base) == expected


def test_a_missing_host_is_read_as_browsers_read_it() -> None:
    # "http:///path" names the host "path" in browsers; RFC 3986 tools disagree.
    assert normalize("http:///path") == "http://path/"


@pytest.mark.parametrize(("reference", "base"), [
    ("http://[oops/x.png", "http://a.example/"), ("javascript:alert(1)", "http://a.example/"),
    ("data:,x", "http://a.example/"), ("x.png", "mailto:a@b.example")])
def test_resolve_rejects_what_is_no_http_url(reference: str, base: str) -> None:
    with pytest.raises(InvalidURL):
        resolve(reference, base)


# --- the origin robots.txt governs ----------------------------------------------


def _origin_by_urlsplit(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/a/b.png", "https://x.org", "https://u:p@x.org:1/?q#f",
    "http://x.org?q=1", "HTTP://X.org/a", "http://x.org#f", "http://x\t.org/a",
    "http://x y.org/", " http://x.org/", "http://é.org/", "http://[::1]:80/x",
    "data:image/png;base64,AA", "http:/x.org/", "ht-tp+1://x.org/"])
def test_origin_of_is_scheme_and_authority(url: str) -> None:
    assert origin_of(url) == _origin_by_urlsplit(url)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.from_regex(r"\A[A-Za-z][A-Za-z0-9+.-]{0,5}:(//)?[^\x00]{0,40}\Z"))
def test_origin_of_matches_urlsplit_on_any_text(url: str) -> None:
    try:
        expected = _origin_by_urlsplit(url)
    except ValueError:  # an unclosed "[": no origin; normalised URLs never have one
        return
    assert origin_of(url) == expected


# --- the resolver's shortcut for relative paths --------------------------------

_BASES = ["http://site.example/a/b/page.html", "https://site.example:8443/dir/",
          "http://user:pw@site.example/x?q=1/2", "http://127.0.0.1:8080/",
          "https://xn--bcher-kva.example/a/b"]


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_BASES),
       st.text(alphabet="ab./\\?#%:;@ 1é-_~=&+", min_size=1, max_size=14))
def test_relative_paths_resolve_as_the_url_standard_joins_them(base: str, ref: str) -> None:
    fast = Resolver(base, "utf-8")
    standard = Resolver(base, "utf-8")
    standard.folder = ""  # every reference through ada's join
    assert fast(ref) == standard(ref)


# --- the resolutions pages of one folder share --------------------------------

_SIBLINGS = ["http://site.example/docs/a.html", "http://site.example/docs/b.html?x=1",
             "http://site.example/docs/", "http://site.example/docs/a.html?y=%C3%A9"]
_SHARED_REFS = ["c.png", "../up.png", "/root.png", "?q=1", "http:?q=2", "http:c.png",
                "#top", "", "//other.example/d.png", "http://other.example/e.png",
                "https:x.png", "c.png?ü=é", "?ü=é", "mailto:x@y", " \t?split", "\\back.png"]


@pytest.mark.parametrize("encoding", ["utf-8", "windows-1252"])
@pytest.mark.parametrize("ref", _SHARED_REFS)
def test_a_reference_resolved_on_a_sibling_page_resolves_as_if_first_seen(
        ref: str, encoding: str) -> None:
    """Pages of one folder share resolutions that depend on the folder only:
    "?query" and the like, which depend on the page itself, are never shared."""
    for page in _SIBLINGS:
        resolve_module._shared.clear()
        alone = Resolver(page, encoding)(ref)
        for sibling in _SIBLINGS:
            resolve_module._shared.clear()
            Resolver(sibling, encoding)(ref)  # seen first on the sibling
            assert Resolver(page, encoding)(ref) == alone, (page, sibling)


def test_pages_of_a_folder_share_their_references_but_not_inline_data() -> None:
    resolve_module._shared.clear()
    Resolver("http://site.example/docs/a.html", "utf-8")("c.png")
    Resolver("http://site.example/docs/a.html", "utf-8")("data:image/png;base64," + "A" * 5000)
    Resolver("http://site.example/docs/a.html", "utf-8")("/" + "x" * 5000 + ".png")
    assert list(resolve_module._shared.values()) == ["http://site.example/docs/c.png"]
