"""What every libcurl client sets up alike: the address guard, TLS, cookies, proxies, logins.

The workers' engine (``crawler.fetch.curl``, images) and the master's clients
(``crawler.fetch.multi`` for pages, ``crawler.fetch.easy`` for robots.txt and
style sheets) differ in how they drive libcurl, not in the rules a request
follows: those live here, once.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import re
import select
import selectors
import socket
from pathlib import Path
from urllib.parse import quote, urlsplit

import pycurl

from crawler.fetch.contentencoding import ACCEPT_ENCODING
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import Proxies, RequestOptions
from crawler.model.urls import DEFAULT_PORTS

log = logging.getLogger(__name__)

GUARD_CACHE = 4096  # addresses whose verdict is remembered
DRAIN_AT_MOST = 64 * 1024  # bytes of an unwanted body read so the connection can be kept
_NEEDS_QUOTING = re.compile(r"[^\x21-\x7e]")
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
             "/etc/ssl/cert.pem", "/etc/ssl/ca-bundle.pem")


def default_ca_file() -> str | None:
    """A CA bundle of this system (or certifi's): libcurl's built-in path may not exist here.

    ``SSL_CERT_FILE`` first, then the distributions' usual bundles, then OpenSSL's own
    default: the ``ssl`` module that knows it costs 6 ms of every start-up to import,
    and on the systems we know that default is one of the usual bundles anyway.
    """
    for candidate in (os.environ.get("SSL_CERT_FILE"), *_CA_FILES):
        if candidate and Path(candidate).is_file():
            return candidate
    import ssl

    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).is_file():
        return cafile
    try:
        import certifi
    except ImportError:
        return None
    return str(certifi.where())


class Guard:
    """The address policy as libcurl's callbacks ask it: one verdict per address, cached.

    The proxies the user configured are let through, at their own port only: with
    a proxy, the connection libcurl makes is to the proxy, which reaches the site
    itself. Any other port of the proxy's host is judged as any address is (a
    request that goes direct, by NO_PROXY or for a scheme without a proxy, to a
    site on that host).
    """

    def __init__(self, policy: AddressPolicy, proxies: Proxies) -> None:
        self._policy = policy
        self._exempt = proxy_endpoints(proxies.http, proxies.https)
        self._verdicts: dict[str, str | None] = {}  # address -> refusal (None: allowed)

    def refusal(self, address: str, port: int) -> str | None:
        """Why ``address`` may not be connected to at ``port``, or None when it may."""
        if (address, port) in self._exempt:
            return None
        try:
            return self._verdicts[address]
        except KeyError:
            pass
        try:
            why = self._policy.refusal(ipaddress.ip_address(address))
        except ValueError:
            why = "unparsable"
        if len(self._verdicts) >= GUARD_CACHE:
            self._verdicts.clear()
        self._verdicts[address] = why
        return why


Connection = tuple[str, int, str, int]  # (local address, port, peer address, port)
# Connections whose descriptor (and HTTP/1 use) a client remembers, the least recently
# used forgotten first: far more than libcurl keeps open, so none it may reuse (a
# client with more at once says so: ``at_least``).
FD_CACHE = 4096


class KeptConnections:
    """The connections a client's requests went out on, and which of them an idle HTTP/1
    answer left bytes on that nobody asked for.

    libcurl takes bytes waiting on a kept-alive HTTP/1 connection (plain, or over TLS)
    for the answer to the next request it sends there, unless the connection was idle
    a second or more: a server's stray answer (one longer than its Content-Length, one
    never asked for) became another URL's image, page or robots.txt. A client tells
    this of each new connection's descriptor (``opened``) and of each HTTP/1 answer
    over TLS (``answered_http1``), and asks ``unclean`` before a reused connection
    carries a request (libcurl's PREREQFUNCTION): one that is must go on a new
    connection. HTTP/2 connections carry frames at any time (other streams', pings):
    they are not looked at. Nor is a connection over TLS before an HTTP/1 answer came
    on it: it may be HTTP/2 (libcurl does not tell which ALPN chose before an answer).
    """

    def __init__(self, at_least: int = 0) -> None:
        self._capacity = max(FD_CACHE, at_least)
        self._fds: dict[Connection, int] = {}
        self._http1_tls: set[Connection] = set()  # https connections an HTTP/1 answer came on

    def opened(self, connection: Connection, fd: int) -> None:
        """A new connection (its protocol not known yet)."""
        self._forget(connection)  # an earlier one of the same addresses and ports
        if len(self._fds) >= self._capacity:
            # The least recently used only: forgotten all at once, the connections kept
            # idle then were not looked at again, and a stray answer on one was stored.
            self._forget(next(iter(self._fds)))
        self._fds[connection] = fd

    def answered_http1(self, connection: Connection, url: str) -> None:
        """An HTTP/1 answer to ``url`` came on ``connection``."""
        if url.startswith("https:") and connection in self._fds:
            self._http1_tls.add(connection)

    def _forget(self, connection: Connection) -> None:
        self._fds.pop(connection, None)
        self._http1_tls.discard(connection)

    def speaks_http1(self, connection: Connection, url: str) -> bool:
        """Whether ``connection``, carrying ``url``, is known to be HTTP/1: any over http
        (HTTP/2 is only offered over TLS), one over TLS once an HTTP/1 answer came on it."""
        return url.startswith("http:") or connection in self._http1_tls

    def unclean(self, connection: Connection, url: str) -> bool:
        """Whether the kept-alive ``connection`` about to carry ``url`` has bytes to read.
        Over TLS, a record read here may also be a close_notify or a late ticket: a new
        connection costs one handshake."""
        fd = self._fds.pop(connection, None)
        if fd is None:
            return False
        self._fds[connection] = fd  # used again: the last to be forgotten
        return self.speaks_http1(connection, url) and has_input(fd)


def curl_socket(family: int, kind: int, protocol: int) -> socket.socket | OSError:
    """A socket for libcurl's OPENSOCKETFUNCTION, or why there is none. pycurl dup()s the
    socket it is given: that needs a second descriptor, made sure of here (its own dup
    failing was said only as libcurl's "Could not connect to server")."""
    try:
        sock = socket.socket(family, kind, protocol)
    except OSError as exc:
        return exc
    try:
        os.close(os.dup(sock.fileno()))
    except OSError as exc:
        sock.close()
        return exc
    return sock


def has_input(fd: int) -> bool:
    """Whether an idle connection has bytes to read (or was closed by its server)."""
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class SocketWatch:
    """The sockets libcurl asks a multi handle's owner to watch, kept on its selector.

    Set as the multi handle's M_SOCKETFUNCTION; each socket is registered with
    ``data``, for the owner's loop to know whose it is.
    """

    def __init__(self, selector: selectors.BaseSelector, data: object = None) -> None:
        self._selector = selector
        self._data = data
        self._watched: dict[int, int] = {}  # fd -> selector events, as libcurl asked

    def __call__(self, what: int, fd: int, multi: object, socket_data: object) -> None:
        """libcurl says which events of ``fd`` to watch (or to stop watching it)."""
        if what == pycurl.POLL_REMOVE:
            if self._watched.pop(fd, None) is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(fd)
            return
        events = ((selectors.EVENT_READ if what & pycurl.POLL_IN else 0)
                  | (selectors.EVENT_WRITE if what & pycurl.POLL_OUT else 0))
        if not events or self._watched.get(fd) == events:
            return
        try:
            if fd in self._watched:
                self._selector.modify(fd, events, self._data)
            else:
                self._selector.register(fd, events, self._data)
        except (KeyError, OSError):
            # The number of a descriptor closed without a removal, now reused: the
            # selector's entry is stale. Start it afresh.
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(fd)
            self._selector.register(fd, events, self._data)
        self._watched[fd] = events

    def forget(self) -> None:
        """Stop watching every socket (the multi handle is being closed)."""
        for fd in list(self._watched):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(fd)
        self._watched.clear()


def curl_events(mask: int) -> int:
    """libcurl's CSELECT flags for a selector's ready ``mask``."""
    return ((pycurl.CSELECT_IN if mask & selectors.EVENT_READ else 0)
            | (pycurl.CSELECT_OUT if mask & selectors.EVENT_WRITE else 0))


def hop_options_vary(options: RequestOptions, proxies: Proxies) -> bool:
    """Whether logins or proxies can differ from one hop to the next (by host or
    scheme): then ``set_hop_options`` is set per request, else once per handle."""
    return bool(options.credentials or proxies.http != proxies.https)


def new_share(options: RequestOptions) -> pycurl.CurlShare:
    """One cookie jar, DNS cache and TLS session cache for the handles that take it,
    the crawl's cookies in the jar.

    The cookies go in here, once per jar, through a handle of their own: loaded by
    the first handle of each client that uses the jar, they were loaded again over
    a cookie a server had set meanwhile.
    """
    share = pycurl.CurlShare()
    for data in (pycurl.LOCK_DATA_COOKIE, pycurl.LOCK_DATA_DNS, pycurl.LOCK_DATA_SSL_SESSION):
        share.setopt(pycurl.SH_SHARE, data)
    if options.cookies:
        loader = pycurl.Curl()
        try:
            loader.setopt(pycurl.SHARE, share)
            loader.setopt(pycurl.COOKIEFILE, "")  # the cookie engine on, with the jar
            for line in cookie_lines(options.cookies):
                loader.setopt(pycurl.COOKIELIST, line.encode())
        finally:
            loader.close()
    return share


def set_common_options(handle: pycurl.Curl, options: RequestOptions, *,
                       ca_file: str | None, share: pycurl.CurlShare) -> None:
    """What every request of the crawl carries, set once on a new handle; ``share``
    holds the crawl's cookies (``new_share``)."""
    setopt = handle.setopt
    setopt(pycurl.NOSIGNAL, 1)
    setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    setopt(pycurl.FOLLOWLOCATION, 0)  # followed by the caller, each hop through the guard
    # A proxy's answer to the CONNECT of an https request ("200 Connection established",
    # or its refusal, a 403 or 502) is no head of the site's: handed to the header
    # callbacks, the workers' engine took it for the image's, and fed the site's redirect
    # or error page to an image ("not an image"), and a refusal was the site's "HTTP 403"
    # for good. The proxy's refusal is still said: libcurl's error, HTTP_CONNECTCODE.
    # (libcurl 7.54; the guard's PREREQFUNCTION needs 7.80 already.)
    setopt(_SUPPRESS_CONNECT_HEADERS, 1)
    # Asked for, and decoded by the caller (crawler.fetch.contentencoding): libcurl's decoder
    # takes a compressed body cut short for a whole one.
    setopt(pycurl.ACCEPT_ENCODING, ACCEPT_ENCODING)
    setopt(pycurl.HTTP_CONTENT_DECODING, 0)
    # Text goes to libcurl as UTF-8 bytes: pycurl takes a str as ASCII only, and a
    # user agent, header, cookie or password may hold any letter.
    setopt(pycurl.USERAGENT, options.user_agent.encode())
    setopt(pycurl.SHARE, share)
    if not gives_cookie_header(options):
        # The cookie engine on, with the shared jar. Not with a Cookie header of the
        # user's: that one replaces the jar's cookies (the file's, and those sites set),
        # where libcurl sent them as a second Cookie header beside it.
        setopt(pycurl.COOKIEFILE, "")
    # The same trust for an https:// proxy as for the sites: a private CA signs both.
    if options.insecure:
        for verify in (pycurl.SSL_VERIFYPEER, pycurl.SSL_VERIFYHOST,
                       pycurl.PROXY_SSL_VERIFYPEER, pycurl.PROXY_SSL_VERIFYHOST):
            setopt(verify, 0)
    elif options.ca_bundle:
        setopt(pycurl.CAINFO_BLOB, options.ca_bundle.encode())
        setopt(pycurl.PROXY_CAINFO_BLOB, options.ca_bundle.encode())
    elif ca_file:
        setopt(pycurl.CAINFO, ca_file)
        setopt(pycurl.PROXY_CAINFO, ca_file)
    if options.client_cert:
        setopt(pycurl.SSLCERT, options.client_cert)
        if options.client_key:
            setopt(pycurl.SSLKEY, options.client_key)
        # No passphrase: without one set, OpenSSL asked for an encrypted key's on the
        # terminal, in the middle of the progress display, and read nothing.
        setopt(pycurl.KEYPASSWD, "")


def cap_each_transfer(handle: pycurl.Curl, options: RequestOptions) -> None:
    """The bandwidth cap (--limit-rate) on each request of ``handle``, as curl's own: the
    master's clients, whose requests were not held to it while every image was. (The
    workers' engine caps all its downloads together, by pausing them.)"""
    if options.limit_rate:
        handle.setopt(pycurl.MAX_RECV_SPEED_LARGE, options.limit_rate)


def set_hop_options(handle: pycurl.Curl, options: RequestOptions, proxies: Proxies,
                    url: str) -> None:
    """Credentials and proxy that depend on the hop's host and scheme."""
    parts = urlsplit(url)
    login = options.credentials_for(parts.hostname)
    if login is None:
        handle.unsetopt(pycurl.USERPWD)
    else:
        handle.setopt(pycurl.USERNAME, login[0].encode())
        handle.setopt(pycurl.PASSWORD, login[1].encode())
    handle.setopt(pycurl.PROXY, proxies.for_scheme(parts.scheme))  # "": none, not the env's
    # Always set: unset, libcurl reads NO_PROXY from the environment itself, and a
    # proxy the crawl names (--proxy, or --no-proxy's environment left out) was skipped.
    handle.setopt(pycurl.NOPROXY, proxies.no_proxy)


def request_url(url: str) -> str:
    """``url`` as libcurl takes it: bytes outside printable ASCII percent-encoded."""
    return quote(url, _URL_SAFE) if _NEEDS_QUOTING.search(url) else url


# Headers the user gives that carry a login: sent to the origin of the URL asked for
# only. curl (-L -H) leaves them out of a redirect to another scheme, host or port, and
# a token for one site went on to wherever that site redirected.
LOGIN_HEADERS = frozenset({"authorization", "cookie"})


def header_lines(options: RequestOptions, accept: str, *,
                 other_origin: bool = False) -> list[bytes]:
    """The request headers besides User-Agent: Accept, unless given, and the crawl's own
    (UTF-8, as libcurl sends them); ``other_origin``: a redirect led away from the origin
    of the URL asked for, and the LOGIN_HEADERS are left out."""
    given = {name.lower() for name, _ in options.headers}
    lines = [] if "accept" in given else [f"Accept: {accept}"]
    # "Name:" with no value sends no such header, libcurl's own left out too, as curl's
    # -H 'Accept:' does (it went as an empty "Accept:", which is not what curl users mean).
    lines += [f"{name}: {value}" if value else f"{name}:" for name, value in options.headers
              if not (other_origin and name.lower() in LOGIN_HEADERS)]
    return [line.encode() for line in lines]


def gives_cookie_header(options: RequestOptions) -> bool:
    """Whether the crawl's headers hold a Cookie header (it replaces the cookie jar's)."""
    return any(name.lower() == "cookie" for name, _ in options.headers)


def gives_login_headers(options: RequestOptions) -> bool:
    """Whether the crawl's headers hold one that a redirect to another origin leaves out."""
    return any(name.lower() in LOGIN_HEADERS for name, _ in options.headers)


def other_origin(first: str, url: str) -> bool:
    """Whether ``url`` is of another origin than ``first`` (scheme, host, port), as curl
    judges a redirect whose login headers it keeps back."""
    origin = _origin(url)
    return origin is None or origin != _origin(first)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port out of range: of no origin, not even its own
        return None
    return scheme, (parts.hostname or "").lower(), port


def cookie_lines(text: str) -> list[str]:
    """The cookie lines of a Netscape cookies.txt (``#HttpOnly_`` lines are cookies too)."""
    return [line for line in text.splitlines()
            if line.strip() and (not line.startswith("#") or line.startswith("#HttpOnly_"))]


# The ports libcurl takes for a proxy URL that names none, by its scheme (no scheme is
# http): 80 for http (1080 before libcurl 7.88 or so: both are let through), 443 for
# https, 1080 for SOCKS.
_PROXY_PORTS = {"http": (80, 1080), "https": (443,)}
_SOCKS_PORTS = (1080,)


def proxy_endpoints(*proxies: str) -> frozenset[tuple[str, int]]:
    """The addresses and ports of the configured proxies: the guard lets libcurl connect
    to those."""
    found: set[tuple[str, int]] = set()
    for proxy in proxies:
        if not proxy:
            continue
        parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        try:
            host, port = parts.hostname, parts.port
        except ValueError:  # a port out of range: libcurl refuses the proxy itself
            continue
        if not host:
            continue
        ports = (port,) if port else _PROXY_PORTS.get(parts.scheme.lower(), _SOCKS_PORTS)
        with contextlib.suppress(OSError, UnicodeError):
            for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
                found.update((str(info[4][0]).split("%", 1)[0], each) for each in ports)
    return frozenset(found)


# CURLOPT_SUPPRESS_CONNECT_HEADERS (libcurl 7.54), which pycurl does not name.
_SUPPRESS_CONNECT_HEADERS: int = getattr(pycurl, "SUPPRESS_CONNECT_HEADERS", 265)

# CURLINFO_USED_PROXY came with libcurl 8.7 (2024): where pycurl lacks it, a request
# with a proxy set is taken to have used it (NO_PROXY hosts then read so too).
_USED_PROXY: int | None = getattr(pycurl, "USED_PROXY", None)
PROXY_AUTH_REQUIRED = 407


def used_proxy(handle: pycurl.Curl) -> bool:
    """Whether the request on ``handle`` went through a proxy (one is set for it)."""
    if _USED_PROXY is None:
        return True
    try:
        return bool(handle.getinfo(_USED_PROXY))
    except pycurl.error:
        return False


# libcurl's errno is that of the last system call that failed, not of the failure: a
# TLS error after an IPv6 address refused and IPv4 answered kept ECONNREFUSED, and
# "certificate has expired" read "TLS certificate not trusted: connection refused".
_ERRNO_TELLS = frozenset({pycurl.E_COULDNT_CONNECT, pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR,
                          pycurl.E_GOT_NOTHING})


def failure_cause(handle: pycurl.Curl, code: int) -> str:
    """What a user can act on: connection refused, DNS, an untrusted certificate…"""
    if code in (pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY):
        return "DNS lookup failed"
    if code not in _ERRNO_TELLS:
        return ""  # libcurl's own message says it (a certificate's error, a bad key)
    try:
        number = handle.getinfo(pycurl.OS_ERRNO)
    except pycurl.error:
        return ""
    if number in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH,
                  errno.ENETUNREACH):
        return os.strerror(number).lower()
    return ""


# Failures to reach a proxy, when the request went through one (never the site's: a
# site a proxy cannot reach is its 502 or 503 answer, or a tunnel's failure).
_PROXY_FAILURES = frozenset({pycurl.E_COULDNT_CONNECT, pycurl.E_OPERATION_TIMEDOUT,
                             pycurl.E_COULDNT_RESOLVE_PROXY})


def at_the_proxy(handle: pycurl.Curl, code: int, reason: str, proxies: Proxies,
                 url: str) -> str:
    """``reason``, the proxy named when the request on ``handle`` failed reaching it (or
    trusting its certificate): else "connection refused" read as the site's doing, and
    an https proxy's untrusted certificate as the site's (of an http:// site, too)."""
    proxy = proxies.for_scheme(urlsplit(url).scheme)
    if not proxy or not used_proxy(handle):
        return reason
    if code in _PROXY_FAILURES:
        named = code != pycurl.E_OPERATION_TIMEDOUT or reason.endswith("connecting")
    else:
        named = code == pycurl.E_PEER_FAILED_VERIFICATION and _proxy_certificate_failed(handle)
    return f"{reason}, at the proxy {shown_proxy(proxy)}" if named else reason


def _proxy_certificate_failed(handle: pycurl.Curl) -> bool:
    try:
        return bool(handle.getinfo(pycurl.PROXY_SSL_VERIFYRESULT))
    except pycurl.error:
        return False


def shown_proxy(proxy: str) -> str:
    """A proxy's URL as a message shows it: no user name or password."""
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def proxy_refusal(handle: pycurl.Curl, status: int, proxies: Proxies, url: str) -> str:
    """Why the proxy refused the request on ``handle`` ("": it did not), naming it.

    A 407 is the proxy's, whether it answered the request (http) or its CONNECT
    (https): taken for the site's answer, it failed each image for good and blamed
    its host, though the user's fix (the proxy's login) makes the next run succeed.
    """
    if status != PROXY_AUTH_REQUIRED:
        with contextlib.suppress(pycurl.error):
            status = handle.getinfo(pycurl.HTTP_CONNECTCODE)
        if status != PROXY_AUTH_REQUIRED:
            return ""
    proxy = proxies.for_scheme(urlsplit(url).scheme)
    if not proxy or not used_proxy(handle):
        return ""  # a site that answers 407 itself: its own answer, as any status
    return (f"proxy authentication required (HTTP {PROXY_AUTH_REQUIRED}), at the proxy "
            f"{shown_proxy(proxy)}")
