"""URL identity: one spelling per resource, so the crawler fetches each page and image once.

URLs are read as browsers read them: ``resolve`` and ``normalize`` parse with
ada, an implementation of the WHATWG URL standard, so a URL sends the request a
browser would send (an empty path segment is kept, "https:cdn.example/x.png"
and "///cdn.example/x" name the host cdn.example, IPv4 numbers are read). On
top, ``normalize`` applies rules that cannot change what the URL points to
(RFC 3986 section 6.2.2): escapes of unreserved characters decoded, hex in
upper case, and the fragment (never sent to a server) dropped. The query is
otherwise kept as written, parameter order included, because servers may read
it in any way they like.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import ada_url

from crawler.errors import InvalidURL

__all__ = ["DEFAULT_PORTS", "host_key", "is_http_url", "normalize", "resolve"]

DEFAULT_PORTS = {"http": 80, "https": 443}  # the schemes crawled, and each one's port
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE_RE = re.compile(r"%[0-9A-Fa-f]{2}")
_LONE_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# A URL already in canonical form, which ``normalize`` would return unchanged: a
# lower-case scheme and ASCII host whose last label starts with a letter (so it
# is no IPv4 number to rewrite) and holds no punycode to check, or an IPv4
# address in its four-number decimal form (as the standard writes it), no userinfo, a
# port without leading zeros, a path and query of characters browsers send as
# they are (no escapes; no "'" in the query, which they escape), no fragment.
# Most URLs on most pages look like this, and the check costs a tenth of a full
# parse. Dot segments and default ports are ruled out in ``normalize`` itself.
_IPV4_PART = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zero: not octal
_CANONICAL_RE = re.compile(
    r"(https?)://(?:(?:[a-z0-9\-]+\.)*[a-z][a-z0-9\-]*|" + rf"{_IPV4_PART}(?:\.{_IPV4_PART}){{3}})"
    r"(?::([1-9][0-9]{0,4}))?"
    r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*"
    r"(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@/?]*)?")


def _upper_escape(match: re.Match[str]) -> str:
    return match.group().upper()


def _fix_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group()[1:], 16))
    return char if char in _UNRESERVED else match.group().upper()


def normalize(url: str) -> str:
    """Return the canonical spelling of an absolute http(s) URL.

    The URL is parsed as browsers parse it (the WHATWG URL standard, by ada):
    that lower-cases the scheme and host, encodes an internationalised host
    with IDNA, reads IPv4 numbers, drops a default port, resolves dot
    segments and percent-encodes what browsers encode. On top: escapes of
    unreserved characters are decoded and the others upper-cased (RFC 3986
    section 6.2.2), and the fragment, never sent to a server, is dropped.
    The query is otherwise kept as written, parameter order included.

    Raises ``InvalidURL`` for anything that is not an http(s) URL with a host,
    or that the URL standard rejects (a bad port, a malformed IPv6 address, a
    host name with forbidden characters or that IDNA rejects).
    """
    if not isinstance(url, str):
        raise InvalidURL(f"URL must be a string, not {type(url).__name__}")
    canonical = _CANONICAL_RE.fullmatch(url)
    if canonical is not None and "/." not in url and "xn--" not in url:
        port = canonical.group(2)
        if port is None or (int(port) <= 65535
                            and int(port) != DEFAULT_PORTS[canonical.group(1)]):
            return url
    return _normalize_in_full(url)


def _normalize_in_full(url: str) -> str:
    try:
        href = ada_url.URL(url).href
    except (ValueError, UnicodeEncodeError) as exc:  # the latter: lone surrogates
        raise InvalidURL(_why_invalid(url)) from exc
    return _canonical_href(href, url)


_SCHEME_RE = re.compile(r"[\x00-\x20]*([A-Za-z][A-Za-z0-9+.\-]*):")
_AUTHORITY_RE = re.compile(r"[^:]*:[/\\]*([^/\\?#]*)")
_FORBIDDEN_HOST_RE = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")


def _why_invalid(url: str) -> str:
    """A one-line reason the URL standard rejected ``url``, for the person who wrote it."""
    scheme = _SCHEME_RE.match(url)
    if scheme is None or scheme.group(1).lower() not in DEFAULT_PORTS:
        shown = repr(scheme.group(1).lower()) if scheme else "none"
        return f"URL {url!r} is not http or https (scheme: {shown})"
    authority = _AUTHORITY_RE.match(url)
    hostport = authority.group(1).rpartition("@")[2] if authority else ""
    if hostport.startswith("["):
        return f"cannot parse URL {url!r}: invalid IPv6 address in {hostport!r}"
    host, _, port = hostport.partition(":")
    if not host:
        if hostport.count(":") >= 2:  # "::1", "::1:8080": an IPv6 address, unbracketed
            return (f"URL {url!r} has no host: an IPv6 address goes in brackets, as in "
                    "http://[::1]:8080/")
        return f"URL {url!r} has no host"
    if not host.isascii() and not _encodable(host):
        return f"URL {url!r}: host {host!r} is not a valid internationalised domain name"
    if not _encodable(url):
        return f"URL {url!r} contains characters that are not valid Unicode"
    if "%" in host:
        try:
            unquote_to_bytes(host).decode("utf-8")
        except UnicodeDecodeError:
            return f"URL {url!r}: host {host!r} has percent-escapes that are not UTF-8"
    if port and not (port.isascii() and port.isdigit()):  # "²".isdigit() is true
        return f"URL {url!r} has a bad port {port!r}"
    if port and int(port) > 65535:
        return f"URL {url!r} has a port out of range: {int(port)}"
    if _FORBIDDEN_HOST_RE.search(host):
        return f"URL {url!r}: host {host!r} contains a character not allowed in host names"
    return f"URL {url!r}: host {host!r} is not a valid internationalised domain name or address"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def resolve(reference: str, base: str) -> str:
    """The normalised absolute URL ``reference`` names on a page at ``base``.

    Resolution is the URL standard's, as in browsers: "img//x.png" keeps its
    empty segment, "https:cdn.example/x.png" and "///cdn.example/x.png" name
    the host cdn.example. Raises ``InvalidURL`` when the URL standard rejects
    the reference or it names no http(s) URL.
    """
    try:
        href = ada_url.join_url(base, reference)
    except (ValueError, UnicodeEncodeError):
        # A base that is no URL still lets an absolute reference through.
        try:
            href = ada_url.URL(reference).href
        except (ValueError, UnicodeEncodeError) as exc:
            raise InvalidURL(f"cannot resolve {reference!r} against {base!r}") from exc
    return _canonical_href(href, reference)


def _canonical_href(href: str, given: str) -> str:
    """Our rules on top of a URL the URL standard has serialised."""
    scheme, _, rest = href.partition("://")
    if scheme not in DEFAULT_PORTS:
        shown = href.partition(":")[0] or "none"
        raise InvalidURL(f"URL {given!r} is not http or https (scheme: {shown})")
    authority_end = rest.find("/")
    if authority_end < 0 or authority_end == 0 or rest.startswith("@"):
        raise InvalidURL(f"URL {given!r} has no host")
    head, tail = rest[:authority_end], rest[authority_end:].partition("#")[0]
    if "%" in tail:
        # Beside a lone "%" (sent as is), a decoded "%41" could make a new escape.
        fix = _upper_escape if _LONE_PERCENT_RE.search(tail) else _fix_escape
        tail = _ESCAPE_RE.sub(fix, tail)
        if "/." in tail.partition("?")[0]:
            # A decoded "%2E" can make a dot segment the URL standard did not see.
            tail = ada_url.URL(f"{scheme}://{head}{tail}").href.partition("://")[2]
            tail = tail[tail.find("/"):]
    return f"{scheme}://{head}{tail}"


def host_key(url: str) -> str:
    """The ``host[:port]`` a URL is fetched from, for per-host politeness.

    The port appears only when it is not the scheme's default, so
    ``http://a.example/`` and ``http://a.example:80/`` share one key.
    """
    return host_key_of_normalized(normalize(url))


def host_key_of_normalized(url: str) -> str:
    """``host_key`` of a URL ``normalize`` returned, without normalising it again."""
    return url.partition("://")[2].partition("/")[0].rpartition("@")[2]


def is_http_url(url: str) -> bool:
    """True when ``url`` is an absolute http(s) URL that ``normalize`` accepts."""
    try:
        normalize(url)
    except InvalidURL:
        return False
    return True
