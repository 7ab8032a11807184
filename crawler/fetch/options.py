"""What every request of a crawl carries: headers, cookies, credentials, TLS and proxy choices.

Built once from the ``[http]`` settings (files read here, so a bad path is one
clear error before anything starts), sent to workers when they join, and read
by both libcurl clients: the workers' engine for images, the master's for
pages. Secrets (cookies, passwords, header values) never appear in a repr or a
log line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from crawler.config import is_proxy_url, parse_header, parse_rate, without_password
from crawler.errors import BadCrawlInfo, ConfigError

log = logging.getLogger(__name__)

_LEADING_DIGITS = re.compile(r"\d+")
_PEM_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
# PKCS#8's encrypted form, and OpenSSL's older one (a header inside an RSA or EC block).
_ENCRYPTED_KEY = re.compile(r"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED")
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\s*",
                              re.DOTALL)


class Proxies(NamedTuple):
    """The proxy for each scheme, and the hosts reached directly (NO_PROXY's syntax)."""

    http: str = ""
    https: str = ""
    no_proxy: str = ""

    def for_scheme(self, scheme: str) -> str:
        return self.https if scheme == "https" else self.http


class RequestOptions(NamedTuple):
    """The request settings of a crawl, in the form the engines use."""

    user_agent: str = "crawler"
    headers: tuple[tuple[str, str], ...] = ()
    cookies: str = ""  # the text of a Netscape cookies.txt
    ca_bundle: str = ""  # PEM text of the CAs to trust instead of the system's
    ca_bundle_path: str = ""  # where that text came from, on this host (never sent)
    insecure: bool = False  # no certificate verification at all
    client_cert: str = ""  # a local PEM file (certificate, and key unless client_key)
    client_key: str = ""
    proxy: str = ""  # for every scheme; "" leaves it to env_proxies
    env_proxies: bool = True  # honour HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY
    limit_rate: int = 0  # bytes per second for a whole worker; 0: no cap
    credentials: tuple[tuple[str, str, str], ...] = ()  # (host, login, password)

    def __repr__(self) -> str:
        # Names and sizes only: header values, cookies and passwords are secrets.
        return (f"RequestOptions(user_agent={self.user_agent!r}, "
                f"headers={[n for n, _ in self.headers]}, cookies={len(self.cookies)} chars, "
                f"ca_bundle={'set' if self.ca_bundle else 'system'}, insecure={self.insecure}, "
                f"client_cert={self.client_cert!r}, proxy={'set' if self.proxy else 'none'}, "
                f"env_proxies={self.env_proxies}, limit_rate={self.limit_rate}, "
                f"credentials for {[h for h, _, _ in self.credentials]})")

    def credentials_for(self, host: str | None) -> tuple[str, str] | None:
        """The netrc login for ``host``, or its ``default`` entry, or None."""
        default = None
        for machine, login, password in self.credentials:
            if host is not None and machine.lower() == host.lower():  # as curl matches
                return login, password
            if machine == "":
                default = (login, password)
        return default

    def proxies(self, environ: dict[str, str] | None = None) -> Proxies:
        """The proxies to use: the setting, else the environment's unless told not to
        (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY for either when its own is not set, NO_PROXY)."""
        if self.proxy:
            return Proxies(self.proxy, self.proxy, "")
        if not self.env_proxies:
            return Proxies()
        env = os.environ if environ is None else environ
        http, https = _env_proxy(env, "http"), _env_proxy(env, "https")
        # ALL_PROXY for a scheme with none of its own, as curl reads it: unread, a
        # crawl meant to go through a SOCKS proxy (Tor's) went direct without a word.
        # Read only then: a desktop that sets all three may write it in a form curl
        # takes and we do not ("socks://"), which stopped a crawl that never used it.
        every = _env_proxy(env, "all") if not (http and https) else ""
        return Proxies(http or every, https or every, _env_proxy(env, "no"))

    def to_wire(self) -> dict[str, Any]:
        """What a worker is sent: file contents rather than paths, except the client key's."""
        return {"user_agent": self.user_agent, "headers": [list(h) for h in self.headers],
                "cookies": self.cookies, "ca_bundle": self.ca_bundle,
                "insecure": self.insecure, "proxy": self.proxy,
                # Paths: a worker on this host (a local worker) can read them; one
                # elsewhere uses its own --client-cert, or none.
                "client_cert": self.client_cert, "client_key": self.client_key,
                "env_proxies": self.env_proxies, "limit_rate": self.limit_rate,
                "credentials": [list(c) for c in self.credentials]}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RequestOptions:
        cert, key = _if_readable(data.get("client_cert", "")), data.get("client_key", "")
        if not cert or (key and not _if_readable(key)):
            # Its key unread, a certificate was presented with none: every image failed
            # with libcurl's "unable to set private key file: CERT", which named the
            # certificate. Neither is taken: the worker says so (from_crawl).
            cert = key = ""
        return cls(user_agent=data["user_agent"],
                   headers=tuple((str(n), str(v)) for n, v in data["headers"]),
                   cookies=data["cookies"], ca_bundle=data["ca_bundle"],
                   insecure=bool(data["insecure"]), proxy=data["proxy"],
                   client_cert=cert, client_key=key,
                   env_proxies=bool(data["env_proxies"]), limit_rate=int(data["limit_rate"]),
                   credentials=tuple((str(h), str(u), str(p)) for h, u, p in data["credentials"]))

    @classmethod
    def from_crawl(cls, data: object, *, client_cert: str = "", client_key: str = "",
                   env_proxies: bool = True, sender: str = "the master",
                   who: str = "this worker") -> RequestOptions:
        """The crawl's request settings (``to_wire``'s) as another process takes them: a
        worker, or a master that joins a crawl on a broker.

        The files' contents come with them (cookies, CA bundle, logins), so nothing
        the crawl's first master named is read here; what is this host's own stays
        its own: its client certificate (``client_cert``, ``client_key``; else the
        sender's path where this host can read it) and ``env_proxies`` False
        (``--no-proxy``). BadCrawlInfo when ``data`` cannot be read.
        """
        try:
            request = cls.from_wire(data)  # type: ignore[arg-type]  # checked by the failure
        except (KeyError, TypeError, ValueError, AttributeError):
            # (Not the exception's words: they may quote a value, and values are secrets.)
            raise BadCrawlInfo(f"{sender} sent request settings this crawler cannot read "
                               "(headers, cookies, logins): it runs another version; install "
                               "the same one on this host") from None
        sent = str(data.get("client_cert") or "")  # type: ignore[attr-defined]
        if client_cert:
            request = request._replace(client_cert=client_cert, client_key=client_key)
        elif sent and not request.client_cert:  # (a path relative elsewhere, another host)
            key = str(data.get("client_key") or "")  # type: ignore[attr-defined]
            unread = f"{sent} (or its key {key})" if key else sent
            log.warning("the master's client certificate %s cannot be read here: none is "
                        "presented; give %s --client-cert (and --client-key)", unread, who)
        if not env_proxies:
            request = request._replace(env_proxies=False)
        return request

    @classmethod
    def from_settings(cls, settings: Any) -> RequestOptions:
        """Read the files ``settings.http`` names; ConfigError naming the key when one fails."""
        http = settings.http
        client_cert, client_key = client_certificate(http)
        if not http.cookies and any(header.partition(":")[0].strip().lower() == "cookie"
                                    for header in http.headers):
            # (With a cookies file, _read_cookies says it, naming the file.)
            log.warning("a Cookie header replaces the cookies the sites set as they are "
                        "crawled (an image a page's cookie opens is refused): put that "
                        "cookie in a cookies.txt file (--cookies) instead")
        return cls(
            user_agent=settings.crawl.user_agent,
            headers=tuple(parse_header(h) for h in http.headers),
            cookies=_read_cookies(http.cookies, http.headers) if http.cookies else "",
            ca_bundle=_read_ca_bundle(http.ca_bundle) if http.ca_bundle else "",
            ca_bundle_path=http.ca_bundle,
            insecure=http.insecure,
            client_cert=client_cert, client_key=client_key,
            proxy=http.proxy, env_proxies=http.env_proxies,
            limit_rate=parse_rate(http.limit_rate),
            credentials=_read_netrc(http.netrc) if http.netrc else ())


def _env_proxy(env: Mapping[str, str], scheme: str) -> str:
    """The proxy ``$SCHEME_PROXY`` names ("" for none); ConfigError for one that is no
    proxy URL (``scheme`` "no": NO_PROXY's host list, unchecked)."""
    # The names curl and requests read; lower case first, as they do.
    name = next((n for n in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
                 if env.get(n, "").strip()), "")
    value = env[name].strip() if name else ""
    if value and scheme != "no" and not is_proxy_url(value):
        # Else a traceback ("Invalid IPv6 URL"), or "proxy name not found" with
        # neither the variable nor its value named.
        raise ConfigError(f"${name} is {without_password(value)!r}, not a proxy URL: "
                          "expected http://, https://, socks5:// or socks5h://HOST:PORT;"
                          " fix or unset it, or crawl with --no-proxy")
    return value


def _read_text(path: str, key: str) -> str:
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is no part of the text;
        # kept, it was the first cookie's domain, and that cookie went nowhere.
        return _expanded(path, key).read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc


def _expanded(path: str, key: str) -> Path:
    """``path`` with ``~`` or ``~user`` expanded; ConfigError for a user (or a home)
    that is not known here."""
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:  # "~nosuchuser", or "~" with no HOME and no passwd entry
        raise ConfigError(f"{key}: cannot read {path}: {exc}") from exc


def _read_cookies(path: str, headers: tuple[str, ...]) -> str:
    """A Netscape cookies.txt (what browsers' exports write), checked: libcurl skips a
    line it cannot read without a word, and a file of them sent no cookie at all."""
    text = _read_text(path, "http.cookies")
    bad, everywhere, expired, good = [], [], [], 0
    last_expiry, now = 0, time.time()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or (line.startswith("#") and not line.startswith("#HttpOnly_")):
            continue
        # As libcurl reads them: 7 fields (6 when an empty value lost its tab), or a header.
        if line.lower().startswith("set-cookie:"):
            if _names_a_domain(line):
                good += 1
            else:
                everywhere.append(number)
            continue
        fields = line.split("\t")
        expiry = _expiry(fields[4]) if len(fields) in (6, 7) else None
        if expiry is None:
            bad.append(number)
        elif 0 < expiry < now:
            # libcurl drops it as it loads the file, without a word: a cookies.txt
            # exported weeks ago sent no login, and every page was the login form.
            expired.append(number)
            last_expiry = max(last_expiry, expiry)
        else:
            good += 1
    if expired and not good:
        raise ConfigError(f"http.cookies: every cookie of {path} has expired (the last on "
                          f"{_day(last_expiry)}), and none would be sent: export them anew "
                          "from the browser, or crawl without cookies")
    if (bad or everywhere) and not good:
        raise ConfigError(f"http.cookies: {path} holds no cookie in the Netscape format (7 "
                          "fields separated by tabs, as browsers' cookies.txt exports write, "
                          "or Set-Cookie: lines with a Domain=)")
    if not good:
        # Empty, or comments alone (what curl -c writes when it kept none): no login sent,
        # and every page or image that needs one was refused, the crawl ending with 7.
        raise ConfigError(f"http.cookies: {path} holds no cookie (it is empty, or comments "
                          "alone): export the cookies again from a browser logged in to the "
                          "site, or crawl without --cookies")
    if expired:
        log.warning("http.cookies: line(s) %s of %s are cookies that expired (the last on "
                    "%s): not sent; export the cookies anew if the site wants them",
                    ", ".join(map(str, expired[:10])), path, _day(last_expiry))
    if bad:
        log.warning("http.cookies: line(s) %s of %s are no cookies (7 fields separated by "
                    "tabs, the fifth an expiry time in seconds, or Set-Cookie:): left out",
                    ", ".join(map(str, bad[:10])), path)
    if everywhere:
        # libcurl would send such a cookie to every host: pages' and images' alike.
        log.warning("http.cookies: line(s) %s of %s are Set-Cookie: lines with no Domain=, "
                    "which would be sent to every host: left out (add '; Domain=HOST')",
                    ", ".join(map(str, everywhere[:10])), path)
        left_out = set(everywhere)
        text = "".join(line for number, line in enumerate(text.splitlines(keepends=True), 1)
                       if number not in left_out)
    if any(header.partition(":")[0].strip().lower() == "cookie" for header in headers):
        log.warning("a Cookie header replaces the cookies of %s (and those sites set): put "
                    "that cookie in the file instead", path)
    return text


def _expiry(field: str) -> int | None:
    """A cookie line's expiry as libcurl reads it: seconds since 1970 (0: a session
    cookie), its leading digits only ("1900000000.5" is 1900000000); None for a field
    with none, a cookie libcurl drops."""
    digits = _LEADING_DIGITS.match(field)
    value = int(digits.group()) if digits else None
    return value if value is not None and value < 2**63 else None  # past: libcurl's overflow


def _day(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _names_a_domain(set_cookie: str) -> bool:
    """Whether a ``Set-Cookie:`` line has a non-empty Domain attribute (libcurl ignores an
    empty one)."""
    for attribute in set_cookie.split(";")[1:]:
        name, _, value = attribute.partition("=")
        if name.strip().lower() == "domain" and value.strip():
            return True
    return False


def _read_ca_bundle(path: str) -> str:
    text = _read_text(path, "http.ca_bundle")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"http.ca_bundle: {path} holds no PEM certificate")
    # Loaded once here: a damaged certificate inside failed only at the first request,
    # as "bad CA bundle" on every page and image, after the crawl had started.
    import ssl  # here: 6 ms of every start-up otherwise

    certificates = _PEM_CERTIFICATE.findall(text)
    if len(certificates) != text.count("-----BEGIN CERTIFICATE-----"):
        # libcurl is given the whole text, and refused it at every request ("bad CA
        # bundle"), while the complete certificates alone loaded here.
        raise ConfigError(f"http.ca_bundle: {path} holds a certificate cut short (a BEGIN "
                          "CERTIFICATE line without its END CERTIFICATE line)")
    try:  # the certificates alone: ssl takes ASCII only, and comments may hold any letter
        ssl.create_default_context(cadata="".join(certificates))
    except (ssl.SSLError, ValueError, TypeError) as exc:
        raise ConfigError(f"http.ca_bundle: {path} holds a certificate that cannot be "
                          f"read ({exc})") from None
    return text


def _if_readable(path: str) -> str:
    """A file the master named, if this host can read it; else "" (the worker says so,
    unless it has a certificate of its own)."""
    return path if path and Path(path).is_file() and os.access(path, os.R_OK) else ""


def readable_path(path: str, key: str) -> str:
    """``path`` made absolute (libcurl reads it as given, and a worker started in another
    folder is sent it), once it reads."""
    if not path:
        return path
    _read_text(path, key)
    return str(_expanded(path, key).absolute())


def client_certificate(http: Any) -> tuple[str, str]:
    """The paths of ``http``'s client certificate and key, as :func:`readable_path` gives
    them; ConfigError for a key without a certificate, which libcurl never presents
    (it was left unused without a word)."""
    if http.client_key and not http.client_cert:
        raise ConfigError("http.client_key: given without http.client_cert (--client-cert), "
                          "the certificate it is the key of: give both, or neither")
    cert = readable_path(http.client_cert, "http.client_cert")
    key = readable_path(http.client_key, "http.client_key")
    if cert:
        _check_client_pem(http.client_cert, http.client_key)
        _check_key_is_the_certificates(cert, key, http.client_cert, http.client_key)
    return cert, key


def _check_client_pem(cert: str, key: str) -> None:
    """ConfigError unless ``cert`` holds a PEM certificate and it or ``key`` a PEM private
    key: libcurl reads PEM only, and refused any other file at each request, after the
    crawl had started, failing a worker's images for good ("TLS error")."""
    cert_text = _read_text(cert, "http.client_cert")
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ConfigError(f"http.client_cert: {cert} holds no PEM certificate (a -----BEGIN "
                          "CERTIFICATE----- block): convert a .p12, .pfx or DER file to PEM "
                          "with openssl")
    # The key's file, or the certificate's when the key is beside it: each read once.
    holder, setting = (key, "http.client_key") if key else (cert, "http.client_cert")
    key_text = _read_text(key, setting) if key else cert_text
    if key and not _PEM_KEY.search(key_text):
        raise ConfigError(f"http.client_key: {key} holds no PEM private key (a -----BEGIN "
                          "PRIVATE KEY----- block, or RSA, EC or ENCRYPTED PRIVATE KEY)")
    if not key and not _PEM_KEY.search(key_text):
        raise ConfigError(f"http.client_cert: {cert} holds no private key beside its "
                          "certificate: give the key's file with --client-key "
                          "(http.client_key)")
    if _ENCRYPTED_KEY.search(key_text):
        raise ConfigError(f"{setting}: {holder} holds an encrypted private key, and the "
                          "crawler takes no passphrase (every https request would fail): "
                          f"decrypt a copy with 'openssl pkey -in {holder} -out PLAIN.key' "
                          "and give that, readable by you alone")


def _check_key_is_the_certificates(cert: str, key: str, said_cert: str, said_key: str) -> None:
    """ConfigError unless the key (at ``key``, or beside the certificate at ``cert``) is the
    certificate's: libcurl found out at each request ("unable to set private key file"),
    a worker's images failed one by one, and a master's seed as an unreadable robots.txt.
    ``said_cert`` and ``said_key``: the paths as the user wrote them."""
    import ssl  # (only with a client certificate: 6 ms of a start-up)

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key or None)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" not in str(exc) and "key values mismatch" not in str(exc):
            return  # anything else is said by the checks above, or by libcurl as it is
        setting = "http.client_key" if key else "http.client_cert"
        raise ConfigError(f"{setting}: the private key in {said_key or said_cert} is not the "
                          f"key of the certificate in {said_cert}: give the key made with "
                          "it") from exc
    except OSError:
        return  # not readable here: said where it is read


class _FirstEntries(dict[str, Any]):
    """A netrc's hosts, where a later entry for a machine (or a second ``default``) does
    not replace the first: curl and ftp use the first, Python's netrc kept the last."""

    def __setitem__(self, machine: str, entry: Any) -> None:
        # The parser sets {} as an entry starts, then its (login, account, password).
        if not isinstance(self.get(machine), tuple):
            super().__setitem__(machine, entry)


def _read_netrc(path: str) -> tuple[tuple[str, str, str], ...]:
    import netrc  # only the master reads one

    class FirstEntryNetrc(netrc.netrc):
        def _parse(self, *args: Any) -> None:
            self.hosts = _FirstEntries()  # here: __init__ sets a plain dict just before
            super()._parse(*args)  # type: ignore[misc]

    try:
        parsed = FirstEntryNetrc(str(_expanded(path, "http.netrc")))
    except OSError as exc:
        raise ConfigError(f"http.netrc: cannot read {path}: {exc.strerror or exc}") from exc
    except netrc.NetrcParseError as exc:
        # Its message quotes the token it stopped at (in ' or "), which may be a password.
        what = re.split("['\"]", exc.msg, maxsplit=1)[0].strip()
        raise ConfigError(f"http.netrc: {path} line {exc.lineno}: {what}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"http.netrc: {path} is not UTF-8 text (byte {exc.start})") from exc
    entries = []
    for machine, (login, _account, password) in parsed.hosts.items():
        entries.append(("" if machine == "default" else machine, login or "", password or ""))
    return tuple(entries)
