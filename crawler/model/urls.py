"""URL identity: one spelling per resource, so the crawler fetches each page and image once.

``normalize`` rewrites an absolute http(s) URL into a canonical form using only
rules that cannot change what the URL points to (RFC 3986 section 6.2.2 and the
scheme-based rules of 6.2.3): case of scheme and host, IDNA for host names,
default ports, dot segments, percent-encoding of unreserved characters, and the
fragment (never sent to a server). The query is kept as written, parameter
order included, because servers may read it in any way they like.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import quote, unquote_to_bytes, urlsplit

import idna

from crawler.errors import InvalidURL

__all__ = ["host_key", "is_http_url", "normalize"]

_DEFAULT_PORTS = {"http": 80, "https": 443}

# The URL standard strips leading and trailing C0 controls and spaces, and drops
# tabs and newlines anywhere: pasted or wrapped URLs keep working.
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS = "!$&'()*+,;="
# What may appear literally in each component (RFC 3986 section 3); anything
# else is percent-encoded as UTF-8.
_PATH_SAFE = _SUB_DELIMS + ":@/"
_QUERY_SAFE = _PATH_SAFE + "?"
_USERINFO_SAFE = _SUB_DELIMS + ":"


def _component_pattern(safe: str) -> re.Pattern[str]:
    """Match the pieces of a component that normalisation rewrites.

    A percent-escape, a lone ``%`` or a run of characters that must be encoded.
    """
    allowed = re.escape("".join(sorted(_UNRESERVED)) + safe)
    return re.compile(rf"%[0-9A-Fa-f]{{2}}|%|[^{allowed}%]+")


_PATH_RE = _component_pattern(_PATH_SAFE)
_QUERY_RE = _component_pattern(_QUERY_SAFE)
_USERINFO_RE = _component_pattern(_USERINFO_SAFE)

# Code points never valid in a host name (URL standard "forbidden domain code point").
_FORBIDDEN_HOST_RE = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")
_PORT_RE = re.compile(r"[0-9]*")

# A URL already in canonical form, which ``normalize`` would return unchanged: a
# lower-case scheme and ASCII host, no userinfo, a port without leading zeros,
# a path and query of literal characters only (no escapes, nothing to encode),
# no fragment. Most URLs on most pages look like this, and the check costs a
# tenth of a full normalisation. Dot segments and default ports are ruled out
# in ``normalize`` itself.
_CANONICAL_RE = re.compile(
    r"(https?)://[a-z0-9.\-]+(?::([1-9][0-9]{0,4}))?"
    r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*"
    r"(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*)?")


def _fix_escape(match: re.Match[str]) -> str:
    piece = match.group()
    if piece[0] != "%":
        try:
            return quote(piece, safe="", encoding="utf-8", errors="strict")
        except UnicodeEncodeError as exc:
            # Lone surrogates cannot be sent as UTF-8; no server could be asked for this.
            raise InvalidURL(f"URL contains characters that are not valid Unicode: {piece!r}") \
                from exc
    if len(piece) == 1:
        return "%25"  # a lone "%" must itself be escaped to mean a percent sign
    char = chr(int(piece[1:], 16))
    return char if char in _UNRESERVED else piece.upper()


def _normalize_component(text: str, pattern: re.Pattern[str]) -> str:
    """Percent-encoding normalisation: upper-case hex, decode unreserved, encode the rest."""
    if pattern.search(text) is None:
        return text  # the common case: nothing to rewrite
    return pattern.sub(_fix_escape, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for a path that starts with "/"."""
    segments = path.split("/")[1:]
    if "." not in segments and ".." not in segments:
        return path
    output: list[str] = []
    for segment in segments:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    if segments[-1] in (".", ".."):
        output.append("")  # "/a/b/.." names the directory "/a/", slash included
    return "/" + "/".join(output)


@functools.lru_cache(maxsize=4096)
def _normalize_host(raw: str) -> str:
    """Lower-case an ASCII host, encode an internationalised one with IDNA, check IPv6."""
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise InvalidURL(f"unterminated IPv6 address in host {raw!r}")
        literal = raw[1:-1]
        try:
            return f"[{ipaddress.IPv6Address(literal).compressed}]"
        except ValueError as exc:
            raise InvalidURL(f"invalid IPv6 address {literal!r}") from exc
    host = _unquote_host(raw) if "%" in raw else raw
    ascii_host = host.lower() if host.isascii() else _idna_encode(host)
    if not ascii_host:
        raise InvalidURL("URL has no host")
    # Checked after IDNA too: its mappings can produce ASCII that is not allowed
    # (U+00A0 becomes a space).
    if _FORBIDDEN_HOST_RE.search(ascii_host):
        raise InvalidURL(f"host {host!r} contains a character not allowed in host names")
    return ascii_host


def _idna_encode(host: str) -> str:
    """IDNA 2008 with UTS 46 mapping, as browsers do; IDNA 2003 for what it rejects."""
    if _FORBIDDEN_HOST_RE.search(host):
        raise InvalidURL(f"host {host!r} contains a character not allowed in host names")
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        pass  # IDNA 2008 is stricter than browsers; try the IDNA 2003 codec
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InvalidURL(f"host {host!r} is not a valid internationalised domain name") from exc


def _unquote_host(raw: str) -> str:
    """Decode percent-escapes in a host name, as browsers do, strictly as UTF-8."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidURL(f"host {raw!r} has percent-escapes that are not UTF-8") from exc


def _split_authority(netloc: str) -> tuple[str | None, str, str]:
    """Split ``userinfo@host:port`` into its three parts (userinfo None when absent)."""
    userinfo: str | None = None
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
    else:
        hostport = netloc
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise InvalidURL(f"unterminated IPv6 address in {netloc!r}")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidURL(f"unexpected text after IPv6 address in {netloc!r}")
        port = rest[1:]
    else:
        host, _, port = hostport.partition(":")
    return userinfo, host, port


def normalize(url: str) -> str:
    """Return the canonical spelling of an absolute http(s) URL.

    Raises ``InvalidURL`` for anything that is not an http(s) URL with a host,
    or that cannot be parsed (a bad port, a malformed IPv6 address, a host name
    IDNA rejects).
    """
    if not isinstance(url, str):
        raise InvalidURL(f"URL must be a string, not {type(url).__name__}")
    canonical = _CANONICAL_RE.fullmatch(url)
    if canonical is not None and "/." not in url:
        port = canonical.group(2)
        if port is None or (int(port) <= 65535
                            and int(port) != _DEFAULT_PORTS[canonical.group(1)]):
            return url
    return _normalize_in_full(url)


def _normalize_in_full(url: str) -> str:
    cleaned = url.strip(_C0_AND_SPACE).translate(_TAB_NEWLINE)
    try:
        parts = urlsplit(cleaned)
    except ValueError as exc:  # e.g. "http://[::1" (unbalanced bracket)
        raise InvalidURL(f"cannot parse URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = f"{scheme!r}" if scheme else "none"
        raise InvalidURL(f"URL {url!r} is not http or https (scheme: {shown})")
    if not parts.netloc:
        raise InvalidURL(f"URL {url!r} has no host")

    userinfo, raw_host, raw_port = _split_authority(parts.netloc)
    host = _normalize_host(raw_host)
    if not _PORT_RE.fullmatch(raw_port):
        raise InvalidURL(f"URL {url!r} has a bad port {raw_port!r}")
    netloc = host
    if raw_port:
        port = int(raw_port)
        if port > 65535:
            raise InvalidURL(f"URL {url!r} has a port out of range: {port}")
        if port != _DEFAULT_PORTS[scheme]:
            netloc = f"{host}:{port}"
    if userinfo:
        netloc = f"{_normalize_component(userinfo, _USERINFO_RE)}@{netloc}"

    # Escapes first, then dots: "%2E%2E" is ".." once decoded (RFC 3986 6.2.2).
    path = _remove_dot_segments(_normalize_component(parts.path, _PATH_RE) or "/")
    result = f"{scheme}://{netloc}{path}"
    # Keep a "?" even with an empty query: "/a?" and "/a" are different URLs.
    if parts.query or "?" in cleaned.partition("#")[0]:
        result += "?" + _normalize_component(parts.query, _QUERY_RE)
    return result


def host_key(url: str) -> str:
    """The ``host[:port]`` a URL is fetched from, for per-host politeness.

    The port appears only when it is not the scheme's default, so
    ``http://a.example/`` and ``http://a.example:80/`` share one key.
    """
    netloc = urlsplit(normalize(url)).netloc
    return netloc.rpartition("@")[2]


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
