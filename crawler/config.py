"""Settings: one frozen, typed object, loaded once.

Precedence is built-in defaults < settings file < command-line flags. The
settings file is the first of: ``--settings FILE``, ``$CRAWLER_SETTINGS``,
``./settings.toml`` when it is the crawler's (another project's file of that
name is skipped), ``$XDG_CONFIG_HOME/crawler/settings.toml`` (by default
``~/.config/crawler/settings.toml``); see :func:`find_settings`. Every
default lives here, in one catalogue; ``settings.toml`` at the top of the
repository repeats them with comments (a test keeps the two in step). An
unknown key, a wrong type or a bad value is a :class:`ConfigError` that names
the file and the key.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from crawler import PROJECT_URL, __version__
from crawler.errors import ConfigError

DEFAULT_PORT = 24601  # below the ephemeral range (32768-60999), so no outgoing socket takes it
DEFAULT_SETTINGS_FILE = "settings.toml"
SETTINGS_ENV = "CRAWLER_SETTINGS"
# The product token robots.txt groups match ("User-agent: crawler"), a version, and
# where a site's owner can read what this crawler is.
DEFAULT_USER_AGENT = f"crawler/{__version__} (+{PROJECT_URL})"
# The HTML engines crawler.parse offers (lxml: libxml2's tree, walked directly, about
# ten times faster on large pages (README); beautifulsoup: a BeautifulSoup tree over
# the same libxml2 parse).
PARSERS = ("lxml", "beautifulsoup")
ALL_SOURCES = ("img", "srcset", "picture", "lazy", "css", "meta", "link", "input", "svg", "anchor")
SCOPE_MODES = ("host", "domain", "any")
# Local workers one master starts at most: each is a process with its own connections to
# the master's queue, and a thousand of them kept its handshakes from being answered.
# More hosts is the way to more workers (crawler worker, or a broker).
MAX_LOCAL_WORKERS = 256
# Page parser processes one master forks at most (crawl.parsers): its pool makes a slot
# for each at start, and more processes than cores only queue for them.
MAX_PARSERS = 1024


# [http] values: checked here, parsed the same way by crawler.fetch.options.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Beyond any sensible count, size, rate or number of seconds, and far within what libcurl
# takes (milliseconds in a C long, bytes in a 64-bit curl_off_t): inf, nan and 1e300 are
# refused here, not by a traceback later.
_LARGEST = 10**12
# 2M, 2MiB/s; a lowercase b ("2Mb", "2Mbit", "2Mbps") is bits, refused by parse_rate.
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?B|i?b|bits?|bps)?(?:/s)?\s*")
_RATE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# What libcurl takes as a proxy: a scheme it speaks, then where ("HOST:PORT", maybe a login).
# A path or query after it is taken and left unused, as libcurl does; an IPv6 address
# may carry its zone ("[fe80::1%25eth0]").
_PROXY = re.compile(r"(?:(?:https?|socks4a?|socks5h?)://)?(?:[^\s/@]+@)?"
                    r"(?:\[[0-9A-Fa-f:.]+(?:%25[^\]\s]+)?\]|[^\s/:@\[\]]+)"
                    r"(?::(?P<port>\d{1,5}))?(?:[/?]\S*)?", re.IGNORECASE)
# The password of a URL's login, left out of messages: "http://user:***@host" (and a
# login of one word, often a token: "http://***@host"), up to the last @.
_NO_PASSWORD = re.compile(r"^((?:[a-z0-9+.-]+://)?(?:[^/@:]*:)?).*@", re.IGNORECASE)
# Headers the engines set themselves from other settings.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# Headers with a setting of their own, which other steps read too.
_HEADER_SETTINGS = {"user-agent": "crawl.user_agent (--user-agent), which robots.txt groups "
                                  "are matched by"}
# Headers that are the proxy's, which the crawl's headers never reach as meant: libcurl
# leaves them out of the CONNECT for an https site, and sends them to the site inside it.
_PROXY_HEADERS = {"proxy-authorization": "give the proxy's login in its URL (--proxy, "
                                         "http.proxy or $HTTPS_PROXY: "
                                         "http://USER:PASSWORD@HOST:PORT); a header goes to "
                                         "every site, not to the proxy"}


def parse_rate(text: str) -> int:
    """Bytes per second from ``2M``, ``500k``, ``1.5G`` or a plain number; 0 means no cap."""
    match = _RATE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a rate such as 500k, 2M or 1G (bytes per second)")
    bits = _rate_in_bits(text)
    if bits:
        raise ValueError(bits)
    too_large = _rate_too_large(text)
    if too_large:
        raise ValueError(too_large)
    rate = int(float(match.group(1)) * _RATE_UNITS[match.group(2).lower()])
    if rate == 0 and float(match.group(1)) > 0:  # 0.5 bytes a second would mean no cap
        raise ValueError(f"{text!r} is less than one byte per second: write 0 for no cap")
    return rate


def without_password(url: str) -> str:
    """``url`` as a message may quote it: a login's password as ``***``."""
    return _NO_PASSWORD.sub(r"\1***@", url)


def shown_value(key: str, value: Any) -> Any:
    """What a message about the setting ``key`` may quote of ``value``: a proxy URL's
    password is not quoted (a malformed one is said back to whoever gave it, and into
    the log file)."""
    return without_password(value) if key == "http.proxy" and isinstance(value, str) else value


def _rate_in_bits(text: str) -> str:
    """What to write instead of a rate in bits ("2Mb"); "" for any other text. Not read
    as bits: a cap is bytes per second, as wget's and curl's --limit-rate are."""
    match = _RATE.fullmatch(text)
    if not match or not match.group(3) or match.group(3).endswith("B"):
        return ""
    number, unit = match.group(1), match.group(2)
    amount = f"{number} {unit.upper()}iB" if unit else f"{number} bytes"
    return (f"{text!r} is in bits (a lowercase b): the rate is in bytes per second; write "
            f"{number}{unit} (or {number}{unit.upper()}B) for {amount} a second")


def _rate_too_large(text: str) -> str:
    """What is wrong with a rate past any sensible one ("" for any other text): hundreds of
    digits are inf to float(), and past 2**63 bytes libcurl's option raised
    OverflowError on every request (a traceback, and no seed page fetched)."""
    match = _RATE.fullmatch(text)
    if not match:
        return ""
    number = float(match.group(1)) * _RATE_UNITS[match.group(2).lower()]
    if math.isfinite(number) and number <= _LARGEST:
        return ""
    return f"{text!r} is too large a rate (at most {_LARGEST:.0e} bytes per second)"


def _rate_fault(text: str) -> str:
    """What is wrong with a rate the check refuses, where that says more than what was
    expected: in bits, or too large."""
    return _rate_in_bits(text) or _rate_too_large(text)


def valid_rate(text: str) -> bool:
    try:
        parse_rate(text)
    except ValueError:
        return False
    return True


def parse_header(text: str) -> tuple[str, str]:
    """Split ``Name: value``; ValueError with the reason when it is not a header."""
    name, colon, value = text.partition(":")
    if not colon or not _HEADER_NAME.fullmatch(name):  # (the text may hold a secret)
        raise ValueError("not a header: write it as 'Name: value'")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"header {name}: a value may not hold a line break")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"header {name}: set by the crawler itself, it cannot be given")
    if name.lower() in _HEADER_SETTINGS:
        raise ValueError(f"header {name}: set it with {_HEADER_SETTINGS[name.lower()]}")
    if name.lower() in _PROXY_HEADERS:
        raise ValueError(f"header {name}: {_PROXY_HEADERS[name.lower()]}")
    return name, value.strip()


def valid_headers(values: tuple[str, ...]) -> bool:
    try:
        for value in values:
            parse_header(value)
    except ValueError:
        return False
    return True



class Check(NamedTuple):
    """What a setting's value must be, beyond its type: ``Annotated[int, Check(...)]``."""

    test: Callable[[Any], bool]
    expected: str  # what the error message says was expected
    # What is wrong with a value that fails, where that says more than what was expected
    # ("'[::1]:0' is IPv6: ..."); "" for a value it has nothing more to say of.
    fault: Callable[[Any], str] | None = None


class ValueFault(ValueError):
    """A value that fails its setting's check, said by what is wrong with it."""


def _too_large(value: float) -> str:
    """What is wrong with a count or a time past any sensible one ("" for any other)."""
    return f"{value!r} is too large (at most {_LARGEST:,})" if value > _LARGEST else ""


def _size_too_large(value: int) -> str:
    """As _too_large, of a size: in the unit it was likely written in ("2000G"), as the
    bytes it was read as (2147483648000) were no number the user wrote."""
    return (f"{_size_text(value)} is too large (at most {_LARGEST:,} bytes)"
            if value > _LARGEST else "")


def _size_text(size: int) -> str:
    """``size`` in the largest of G, M and k that it is a whole number of, else bytes."""
    for unit, power in (("G", 3), ("M", 2), ("k", 1)):
        if size % 1024**power == 0:
            return f"{size // 1024**power}{unit}"
    return f"{size} bytes"


# The bound is said only to a value past it: "> 0 (at most 1e+12)" read as a typo.
_NON_NEGATIVE = Check(lambda v: 0 <= v <= _LARGEST, "a number >= 0", _too_large)
_POSITIVE = Check(lambda v: 0 < v <= _LARGEST, "a number > 0", _too_large)
_POSITIVE_SIZE = Check(_POSITIVE.test, _POSITIVE.expected, _size_too_large)
# Control characters (a line break would add a header of its own to every request).
_CONTROLS = re.compile("[\x00-\x1f\x7f]")


def regex_error(pattern: str) -> str | None:
    """Why ``pattern`` is no Python regular expression (in re's words); None if it is one."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def _compiles(patterns: tuple[str, ...]) -> bool:
    return all(regex_error(pattern) is None for pattern in patterns)


def glob_hint(pattern: str) -> str:
    """What a pattern written as a shell glob ("*.jpg", or wget's "*.jpg,*.png") means as
    a regular expression, which it is not, as "; ..." to follow re's words; "" for any
    other."""
    if not pattern.startswith("*"):
        return ""
    said = "; a regular expression, not a shell pattern: "
    if _GLOB_SUFFIXES.fullmatch(pattern):
        suffixes = [re.escape(glob.strip()[2:]) for glob in pattern.split(",")]
        if len(suffixes) == 1:
            return f"{said}for names ending in .{suffixes[0]}, write '\\.{suffixes[0]}$'"
        return f"{said}for names ending in those, write '\\.({'|'.join(suffixes)})$'"
    return f"{said}'.*' is any text, '\\.' a dot"


def _patterns_fault(patterns: tuple[str, ...]) -> str:
    """A wget-style list of suffixes among ``patterns``, with the pattern it meant ("" if
    none: a pattern that does not compile is said by ``_wrong_item`` or the flag)."""
    for pattern in patterns:
        suffixes = _suffix_list(pattern)
        if suffixes:
            return (f"{pattern!r} is a list of file suffixes, as wget takes them; this takes "
                    f"a regular expression: for those, write '\\.({'|'.join(suffixes)})$'")
    return ""


def _image_patterns(patterns: tuple[str, ...]) -> bool:
    # A list such as "png,jpg" compiles, and matches the text "png,jpg" itself, which no
    # image's URL holds: every image was left out without a word.
    return _compiles(patterns) and not any(map(_suffix_list, patterns))


def _suffix_list(pattern: str) -> list[str]:
    """The suffixes of a wget-style list ("png,jpg", ".jpeg, .gif"); [] for any other."""
    if not _WGET_LIST.fullmatch(pattern):
        return []
    return [re.escape(word.strip().lstrip(".")) for word in pattern.split(",")]


# A comma-separated list of file suffixes: wget's --accept takes one. Each has a letter:
# numbers between commas are an IIIF image's region or size ("0,0,512,512", "150,").
_SUFFIX = r"\.?(?=[0-9]*[A-Za-z])[A-Za-z0-9]{1,5}"
_WGET_LIST = re.compile(rf"\s*{_SUFFIX}(?:\s*,\s*{_SUFFIX})+\s*")
# Shell globs of suffixes ("*.jpg", "*.jpg,*.png"), which compile as no regular expression.
_GLOB_SUFFIXES = re.compile(r"\*\.[A-Za-z0-9]{1,5}(?:\s*,\s*\*\.[A-Za-z0-9]{1,5})*")

_PATTERNS = Check(_compiles, "a list of Python regular expressions")
_IMAGE_PATTERNS = Check(_image_patterns, "a list of Python regular expressions",
                        _patterns_fault)


# The Redis broker (crawler.board.broker); here so that the command line can name
# them without importing a Redis client.
BROKER_ENV = "CRAWLER_BROKER"  # the broker URL, when not given with --broker
BROKER_PASSWORD_ENV = "CRAWLER_BROKER_PASSWORD"  # noqa: S105 - a variable's name, not a secret
DEFAULT_CRAWL = "crawl"  # the crawl's name on the broker when none is given


# Each section is a NamedTuple: immutable, and about five times cheaper to define than a
# frozen dataclass, which every command paid at start-up (11 classes, ~10 ms). A key's
# check travels in its annotation, read once by section_checks().
_SCOPE_MODE = Check(lambda v: v in SCOPE_MODES, "one of " + ", ".join(SCOPE_MODES))
_SOURCES = Check(lambda v: bool(v) and set(v) <= set(ALL_SOURCES),
                  "a list drawn from " + ", ".join(ALL_SOURCES),
                  # An empty list looks nowhere: a crawl that could find no image.
                  lambda v: "" if v else "an empty list finds no image: leave the key out "
                                         "to look everywhere, or name the sources to read")
_PARSER = Check(lambda v: v in PARSERS, "one of " + ", ".join(PARSERS))
# An HTML attribute's name: no space, quote, ">", "/" or "=" (HTML's own rule), and no
# brace: lxml reads "{ns}name" as a namespace, and "" or "{x}" failed every page.
_ATTRIBUTE_NAME = re.compile(r"[^\s\"'>/={}\x00-\x1f\x7f]+")
_ATTRIBUTE_NAMES = Check(lambda v: all(_ATTRIBUTE_NAME.fullmatch(name) for name in v),
                         "a list of attribute names such as \"data-original\"")
_PARSERS = Check(lambda v: 0 <= v <= MAX_PARSERS,
                 f"a number from 0 to {MAX_PARSERS} (0: one per core the master may use)")
_USER_AGENT = Check(lambda v: v.strip() != "" and not _CONTROLS.search(v),
                     "a non-empty string without line breaks or other control characters")
# An hour between two requests to a host is already a crawl of weeks.
_HOST_DELAY = Check(lambda v: 0 <= v <= 3600, "seconds from 0 to 3600")


class CrawlSettings(NamedTuple):
    depth: Annotated[int, _NON_NEGATIVE] = 3
    max_pages: Annotated[int, _NON_NEGATIVE] = 1000
    max_images: Annotated[int, _NON_NEGATIVE] = 0
    scope: Annotated[str, _SCOPE_MODE] = "host"
    allow: Annotated[tuple[str, ...], _PATTERNS] = ()
    deny: Annotated[tuple[str, ...], _PATTERNS] = ()
    image_allow: Annotated[tuple[str, ...], _IMAGE_PATTERNS] = ()
    image_deny: Annotated[tuple[str, ...], _IMAGE_PATTERNS] = ()
    sources: Annotated[tuple[str, ...], _SOURCES] = ALL_SOURCES
    lazy_attributes: Annotated[tuple[str, ...], _ATTRIBUTE_NAMES] = ()
    parser: Annotated[str, _PARSER] = "lxml"
    parsers: Annotated[int, _PARSERS] = 0  # 0: one per core the master may use
    page_concurrency: Annotated[int, _POSITIVE] = 8
    max_page_bytes: Annotated[int, _POSITIVE_SIZE] = 10_000_000
    page_timeout: Annotated[float, _POSITIVE] = 30.0
    user_agent: Annotated[str, _USER_AGENT] = DEFAULT_USER_AGENT
    respect_robots: bool = True
    # RFC 9309 2.4: a cached robots.txt is used 24 hours at most.
    robots_max_age: Annotated[float, _POSITIVE] = 86400.0


class PolitenessSettings(NamedTuple):
    host_delay: Annotated[float, _HOST_DELAY] = 0.0
    host_concurrency: Annotated[int, _POSITIVE] = 16
    max_crawl_delay: Annotated[float, _NON_NEGATIVE] = 30.0


class DownloadSettings(NamedTuple):
    connect_timeout: Annotated[float, _POSITIVE] = 5.0
    read_timeout: Annotated[float, _POSITIVE] = 30.0
    deadline: Annotated[float, _POSITIVE] = 120.0
    max_bytes: Annotated[int, _POSITIVE_SIZE] = 50_000_000
    max_attempts: Annotated[int, _POSITIVE] = 3
    host_timeouts: Annotated[int, _NON_NEGATIVE] = 5  # 0: never give a host up
    backoff_base: Annotated[float, _NON_NEGATIVE] = 1.0
    backoff_max: Annotated[float, _NON_NEGATIVE] = 60.0
    min_width: Annotated[int, _NON_NEGATIVE] = 0
    min_height: Annotated[int, _NON_NEGATIVE] = 0
    max_width: Annotated[int, _NON_NEGATIVE] = 0
    max_height: Annotated[int, _NON_NEGATIVE] = 0


_DOWNLOAD = DownloadSettings()


class Limits(NamedTuple):
    """The download settings that bound each image, as the master sends them to workers.

    The defaults are the settings' own, so there is one catalogue of them.
    """

    connect_timeout: float = _DOWNLOAD.connect_timeout
    read_timeout: float = _DOWNLOAD.read_timeout
    deadline: float = _DOWNLOAD.deadline
    max_bytes: int = _DOWNLOAD.max_bytes
    min_width: int = _DOWNLOAD.min_width
    min_height: int = _DOWNLOAD.min_height
    max_width: int = _DOWNLOAD.max_width
    max_height: int = _DOWNLOAD.max_height

    @classmethod
    def from_settings(cls, download: DownloadSettings) -> Limits:
        return cls(**{name: getattr(download, name) for name in cls._fields})


def _valid_bind(value: str) -> bool:
    try:
        parse_address(value)
    except ValueError:
        return False
    return True


def _bind_fault(value: str) -> str:
    """Said of a bracketed address (IPv6, or IPv4 in brackets), as a worker given one
    says it (``parse_address``)."""
    match = _ADDRESS.fullmatch(value.strip())
    if not (match and match.group(1)):
        return ""
    try:
        parse_address(value)
    except ValueError as exc:  # IPv6, or IPv4 in brackets: what to write instead
        return str(exc)
    return ""


_BIND = Check(_valid_bind, "HOST:PORT, an IPv4 address or a host name and a port from 0 to 65535",
              _bind_fault)


class QueueSettings(NamedTuple):
    bind: Annotated[str, _BIND] = f"127.0.0.1:{DEFAULT_PORT}"
    lease_timeout: Annotated[float, _POSITIVE] = 60.0
    worker_silence: Annotated[float, _POSITIVE] = 5.0
    batch_size: Annotated[int, _POSITIVE] = 64


class WorkerSettings(NamedTuple):
    threads: Annotated[int, _POSITIVE] = 16
    connect_wait: Annotated[float, _NON_NEGATIVE] = 300.0


_HEADERS = Check(valid_headers, "a list of headers such as \"Referer: https://example.com/\"")
def is_proxy_url(value: str) -> bool:
    """Whether libcurl can take ``value`` as a proxy: a scheme it speaks, HOST[:PORT]."""
    match = _PROXY.fullmatch(value)
    return match is not None and int(match.group("port") or 0) <= 65535


_PROXY_URL = Check(lambda v: v == "" or is_proxy_url(v),
                    "a proxy URL: http://, https://, socks5:// or socks5h://HOST:PORT")
_RATE_TEXT = Check(valid_rate, "a rate in bytes per second such as \"500k\", \"2M\" or \"0\"",
                   _rate_fault)


class HttpSettings(NamedTuple):
    """What every request carries, pages and images alike (see crawler/fetch/options.py)."""

    headers: Annotated[tuple[str, ...], _HEADERS] = ()
    cookies: str = ""  # a Netscape cookies.txt file
    netrc: str = ""  # a netrc file: a login per host
    ca_bundle: str = ""  # PEM file of CAs to trust instead of the system's
    insecure: bool = False
    client_cert: str = ""
    client_key: str = ""
    proxy: Annotated[str, _PROXY_URL] = ""
    env_proxies: bool = True
    limit_rate: Annotated[str, _RATE_TEXT] = "0"


class OutputSettings(NamedTuple):
    # "~/images" is the home folder, as on a command line: see _section_values.
    dir: Annotated[str, Check(lambda v: v != "", "a folder path")] = "downloads"


def _home_expanded(folder: str) -> str:
    """``~/images`` in a settings file means the home folder, as on a command line (and
    as http.cookies and http.netrc read it), not a folder named "~" here."""
    if folder.startswith("~"):
        with contextlib.suppress(RuntimeError):  # no such user: as written, as a shell does
            return str(Path(folder).expanduser())
    return folder


def _valid_networks(values: tuple[str, ...]) -> bool:
    import ipaddress  # here, not at the top: only a set allow_networks needs it

    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


class SecuritySettings(NamedTuple):
    allow_networks: Annotated[tuple[str, ...], Check(
        _valid_networks, "a list of networks such as \"10.0.0.0/8\"")] = ()


class Settings(NamedTuple):
    crawl: CrawlSettings = CrawlSettings()
    politeness: PolitenessSettings = PolitenessSettings()
    download: DownloadSettings = _DOWNLOAD
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()
    output: OutputSettings = OutputSettings()
    security: SecuritySettings = SecuritySettings()
    http: HttpSettings = HttpSettings()

    def with_values(self, values: Mapping[str, Any], source: str = "with_values()") -> Settings:
        """Return a copy with ``{"section.key": value}`` applied, validated like a file."""
        nested: dict[str, dict[str, Any]] = {}
        for dotted, value in values.items():
            section, dot, key = str(dotted).partition(".")
            if not dot:
                raise ConfigError(f"{source}: {dotted!r}: name a setting as SECTION.KEY, "
                                  f"such as 'crawl.depth' (sections: {', '.join(self._fields)})")
            nested.setdefault(section, {})[key] = value
        return _merge(self, nested, source)

    def with_sections(self, data: Mapping[str, Any], source: str) -> Settings:
        """Return a copy with ``{"section": {"key": value}}`` applied (``to_dict``'s
        shape; None values skipped), validated like a file named ``source``."""
        return _merge(self, {section: {key: value for key, value in table.items()
                                       if value is not None}
                             for section, table in data.items()}, source)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {key: list(value) if isinstance(value, tuple) else value
                       for key, value in section._asdict().items()}
                for name, section in self._asdict().items()}


DEFAULTS = Settings()  # every built-in default, for code that needs one of them


@functools.cache
def section_types(section: type) -> dict[str, Any]:
    """Each key's type in a settings section class, read from its annotations once.

    ``typing.get_type_hints`` evaluates every annotation each time it is called;
    the command line asks for each flag's setting (a list or not) before any
    command runs, so the answer is kept.
    """
    return typing.get_type_hints(section)


@functools.cache
def section_checks(section: type) -> dict[str, Check]:
    """The check each key of a settings section class must pass, where it has one."""
    hints = typing.get_type_hints(section, include_extras=True)
    return {name: check for name, hint in hints.items()
            for check in getattr(hint, "__metadata__", ()) if isinstance(check, Check)}


def setting_type(key: str) -> Any:
    """The type of the setting ``section.name`` (KeyError for an unknown one)."""
    section, name = key.split(".", 1)
    return section_types(section_types(Settings)[section])[name]


def is_pattern_setting(key: str) -> bool:
    """Whether the setting ``section.name`` is a list of regular expressions."""
    section, name = key.split(".", 1)
    return section_checks(section_types(Settings)[section]).get(name) in (_PATTERNS,
                                                                          _IMAGE_PATTERNS)


def setting_value(key: str, raw: Any) -> Any:
    """``raw`` as a value of the setting ``section.name``, as a settings file's would be
    read; ValueError saying what was expected ("a whole number") if it is not one."""
    section, name = key.split(".", 1)
    kind = section_types(Settings)[section]
    return _checked(raw, section_types(kind)[name], section_checks(kind).get(name))


_ADDRESS = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]*):(\d+)")
_IPV4_ONLY = ("is IPv6: the queue speaks IPv4 only (Python's multiprocessing); use an IPv4 "
              "address or a host name")


def parse_address(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT``; raise ValueError if malformed, or an IPv6 ``[v6]:PORT``.

    The queue is multiprocessing's listener and client, which speak IPv4 only.
    """
    match = _ADDRESS.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not HOST:PORT")
    port = int(match.group(2) or match.group(4))  # leading zeros allowed, as by ss and curl
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    bracketed = match.group(1)
    if bracketed and ":" not in bracketed:  # "[127.0.0.1]:PORT": IPv4, in IPv6's brackets
        raise ValueError(f"{value!r}: an IPv4 address goes without brackets: "
                         f"{bracketed}:{port}")
    if bracketed:
        raise ValueError(f"{value!r} {_IPV4_ONLY}")
    return match.group(3) or "127.0.0.1", port


class SettingsSource(NamedTuple):
    """Which settings file to read (``path`` None: the built-in defaults), and why not others."""

    path: Path | None
    notes: tuple[str, ...] = ()  # files passed over, one line each, for -v
    # Why a file nobody named was read, said after a mistake found in it: a
    # ./settings.toml may be another program's that only looks like ours.
    found: str = ""


_FOUND_HERE = ("read as the crawler's settings because it is in the current folder: if it "
               "is another program's, give --settings FILE (in Python: settings=) or start "
               "the crawler from another folder")


def find_settings(explicit: Path | None = None, *, environ: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> SettingsSource:
    """Pick the settings file: ``explicit``, else ``$CRAWLER_SETTINGS``, else
    ``./settings.toml`` if it is the crawler's, else the user's
    ``$XDG_CONFIG_HOME/crawler/settings.toml``; the first one found wins.

    A named file (flag or variable) must exist; the others are read only when
    present. ``./settings.toml`` none of whose top-level names is one of ours
    (a ``[database]`` section, say) belongs to another project and is skipped.
    """
    env = os.environ if environ is None else environ
    if explicit is not None:
        return SettingsSource(explicit)
    if env.get(SETTINGS_ENV):
        if not env[SETTINGS_ENV].strip():  # Path(" ") is a name, said as " : not found"
            raise ConfigError(f"${SETTINGS_ENV} is {env[SETTINGS_ENV]!r}, blank: name a "
                              "settings file there, or unset it")
        named = Path(env[SETTINGS_ENV])
        # Said with where its name came from: set long ago, forgotten.
        where = f"(named by ${SETTINGS_ENV}; unset it to use the default settings)"
        if not named.exists():
            raise ConfigError(f"{named}: settings file not found {where}")
        if named.is_dir():
            raise ConfigError(f"{named}: is a folder, not a settings file {where}")
        return SettingsSource(named)
    notes: list[str] = []
    local = (cwd or Path.cwd()) / DEFAULT_SETTINGS_FILE
    if local.is_file():
        foreign = _foreign_names(local)
        if not foreign:
            return SettingsSource(Path(DEFAULT_SETTINGS_FILE) if cwd is None else local,
                                  found=_FOUND_HERE)
        notes.append(f"ignoring ./{DEFAULT_SETTINGS_FILE}: another program's settings "
                     f"(its {', '.join(foreign)} are not the crawler's)")
    user = user_settings_path(env)
    if user is not None and user.is_file():
        return SettingsSource(user, tuple(notes))
    return SettingsSource(None, tuple(notes))


def user_settings_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$XDG_CONFIG_HOME/crawler/settings.toml``, XDG's default being ``~/.config``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    if not base or not Path(base).is_absolute():  # the XDG spec: a relative value is ignored
        home = env.get("HOME")
        if not home:
            return None
        base = str(Path(home) / ".config")
    return Path(base) / "crawler" / DEFAULT_SETTINGS_FILE


def _foreign_names(path: Path) -> list[str]:
    """The top-level names of ``path`` that say it is another program's file; [] when it
    is ours (or cannot be read: then reading it says what is wrong, naming the file).

    A file with at least one of our sections or keys is ours, so a misspelt
    section among right ones is refused with a message, not skipped; so is one
    whose only section is a slip of one of ours (``[crawll]``).
    """
    try:
        data = _read_toml(path)
    except ConfigError:
        return []
    ours = set(Settings._fields) | {key for section in DEFAULTS for key in section._fields}
    if not data or any(name in ours for name in data):
        return []
    import difflib  # only a file with none of our names needs it

    # "[crawll]" with a key of [crawl] in it is a slip of ours, not another program's
    # section: the file is read, and its mistake named.
    for name, value in data.items():
        close = difflib.get_close_matches(name, Settings._fields, n=1, cutoff=0.75)
        if close and isinstance(value, Mapping) and (
                set(value) & set(getattr(DEFAULTS, close[0])._fields)):
            return []
    return [f"[{name}]" if isinstance(value, Mapping) else name for name, value in data.items()]


def load_settings(path: Path | None) -> Settings:
    """Load ``path`` over the built-in defaults; ``None``: the file :func:`find_settings` picks."""
    if path is None:
        return read_settings(find_settings())
    return _merge(Settings(), _files_beside(_read_toml(path), path.parent), str(path))


def read_settings(source: SettingsSource) -> Settings:
    """The settings of ``source``'s file (the defaults without one); a mistake in a file
    nobody named also says why that file was read."""
    if source.path is None:
        return Settings()
    try:
        return load_settings(source.path)
    except ConfigError as exc:
        if not source.found:
            raise
        raise ConfigError(f"{exc} ({source.found})") from exc


# The [http] keys that name files: relative in a settings file, they are relative to
# it (a settings file in ~/.config/crawler naming "ca.pem" means the one beside it,
# not one in whatever folder the crawler is started from).
_FILE_KEYS = ("ca_bundle", "client_cert", "client_key", "cookies", "netrc")


def _files_beside(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    http = data.get("http")
    if isinstance(http, dict):
        for key in _FILE_KEYS:
            value = http.get(key)
            if (isinstance(value, str) and value and not value.startswith("~")
                    and not Path(value).is_absolute()):
                http[key] = str(folder.absolute() / value)
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # here, not at the top: a command run without a settings file needs none

    try:
        data = path.read_bytes()
        # A byte-order mark (Windows editors write one) is no TOML, but it says UTF-8.
        return tomllib.loads(data.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: settings file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a folder, not a settings file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read settings file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        hint = _toml_hint(data.removeprefix(b"\xef\xbb\xbf").decode("utf-8"), str(exc))
        raise ConfigError(f"{path}: not valid TOML: {_toml_said(str(exc))}{hint}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start}:"
                          f" {exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8"
                          ) from exc


# Where tomllib says its error is, and a line "key = value" whose value is one bare word.
_TOML_AT = re.compile(r"\(at line (\d+), column \d+\)$")
_TOML_KEY_LINE = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*=\s*([^\s#]*)\s*(?:#.*)?")
_TOML_TABLE_LINE = re.compile(r"\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(?:#.*)?")
_TOML_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]*")
_TOML_NUMBER_AND_UNIT = re.compile(r"\d+(?:\.\d+)?[A-Za-z/]+")
_NOT_TOML_BOOLEANS = frozenset({"true", "false", "yes", "no", "on", "off"})


# A key as tomllib's messages show it: a Python tuple, ('crawl',) or ('crawl', "it's").
_TOML_KEY_TUPLE = re.compile(r"""\(((?:'[^'\\]*'|"[^"\\]*")(?:, (?:'[^'\\]*'|"[^"\\]*"))*),?\)""")
_TOML_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(parts: Sequence[str]) -> str:
    """A dotted key as TOML writes it: a part that is no bare key in quotes."""
    return ".".join(part if _TOML_BARE_KEY.fullmatch(part) else json.dumps(part)
                    for part in parts)


def _toml_said(message: str) -> str:
    """tomllib's message with its keys as a settings file writes them: "Cannot declare
    ('crawl',) twice" reads "Cannot declare [crawl] twice", and says what to do."""
    import ast  # (an error's message alone needs it)

    declare = message.startswith("Cannot declare")

    def written(found: re.Match[str]) -> str:
        key = _toml_key(ast.literal_eval(f"({found.group(1)},)"))
        return f"[{key}]" if declare else key

    said = _TOML_KEY_TUPLE.sub(written, message)
    if declare and said != message:
        said += ": each table or key is declared once"
    return said


def _toml_hint(text: str, message: str) -> str:
    """What to write instead, after tomllib's message, for the slips most made in a
    settings file: a word without quotes (scope = host), Python's True, a key twice, a
    size or a number with its unit and no quotes (max_bytes = 10M, page_timeout = 30s)
    ("Invalid value", "Cannot overwrite a value" and "Expected newline" say where, not
    what); "" otherwise."""
    at = _TOML_AT.search(message)
    lines = text.splitlines()
    number = int(at.group(1)) if at else 0
    line = _TOML_KEY_LINE.fullmatch(lines[number - 1]) if 0 < number <= len(lines) else None
    if line is None:
        return ""
    key, value = line.groups()
    if message.startswith("Invalid value") and _TOML_WORD.fullmatch(value):
        if value.lower() in _NOT_TOML_BOOLEANS:
            return ": write true or false, in lower case"
        numeric = _number_setting(lines[:number - 1], key)
        if numeric is not None:  # quotes would only trade this error for the next one
            name, default = numeric
            if name in SIZE_KEYS:
                return (f": {name} is a size: bytes in digits, or in quotes with k, M or G "
                        f"({key} = \"50M\")")
            return (f": {name} is a number, written in digits without quotes (its default: "
                    f"{key} = {default!r})")
        return f": text is written in quotes: {key} = \"{value}\""
    if message.startswith("Cannot overwrite a value"):
        return f": {key} is given twice: keep one"
    if message.startswith("Expected newline") and _TOML_NUMBER_AND_UNIT.fullmatch(value):
        # tomllib read the digits of max_bytes = 10M, then found a word after its value.
        sized = _setting_name(lines[:number - 1], key)
        if sized in SIZE_KEYS or sized == "http.limit_rate":
            return f": {sized} with k, M or G is written in quotes: {key} = \"{value}\""
        numeric = _number_setting(lines[:number - 1], key)
        if numeric is not None:
            name, default = numeric
            return (f": {name} is a number, written in digits alone (its default: "
                    f"{key} = {default!r})")
    return ""


def _setting_name(lines_before: list[str], key: str) -> str | None:
    """"section.key" of ``key`` in the table the lines before it open last (or of a
    dotted key before any table); None when neither names a section."""
    tables = [match.group(1) for text in lines_before
              if (match := _TOML_TABLE_LINE.fullmatch(text))]
    if tables:
        return f"{tables[-1]}.{key}"
    if key.count(".") == 1:  # crawl.depth = 2, before any table
        return key
    return None


def _number_setting(lines_before: list[str], key: str) -> tuple[str, int | float] | None:
    """("section.key", its default) when ``key``, in the table the lines before it open
    last, is a setting that takes a number; None otherwise."""
    name = _setting_name(lines_before, key)
    if name is None or name.count(".") != 1:
        return None
    table, key = name.split(".")
    section = getattr(DEFAULTS, table, None)
    if not isinstance(section, tuple) or table not in Settings._fields:
        return None
    kind = section_types(type(section)).get(key)
    default = getattr(section, key, None)
    if kind not in (int, float) or isinstance(default, bool) or default is None:
        return None
    return f"{table}.{key}", default


_SIZE_SUFFIXES = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def parse_size(text: str) -> int:
    """A byte count such as ``500``, ``64k``, ``10M`` or ``1.5G`` (powers of 1024, case
    ignored, an optional trailing ``B``/``iB``: ``10MiB`` is ``10M``); ValueError if not."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size: a number with an optional k, M or G "
                         "(powers of 1024)")
    number, suffix = match.groups()
    size = float(number) * _SIZE_SUFFIXES[suffix.lower()]
    if not math.isfinite(size):  # hundreds of digits: float says inf, int() would raise
        raise ValueError(f"{text!r} is too large a size")
    if size != int(size) and not suffix:
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(size)


def _merge(base: Settings, data: Mapping[str, Any], source: str) -> Settings:
    sections = Settings._fields
    updated: dict[str, Any] = {}
    for name, table in data.items():
        if name not in sections:
            home = [section for section in sections
                    if name in getattr(base, section)._fields]
            if home and not isinstance(table, Mapping):
                raise ConfigError(f"{source}: {name} must be under [{home[0]}], not at the top")
            if not isinstance(table, Mapping):  # a key (title = "x"), not a [section]
                raise ConfigError(f"{source}: unknown key {name} at the top{_hint(name)}; "
                                  "only sections go there: "
                                  + ", ".join(f"[{s}]" for s in sections))
            raise ConfigError(f"{source}: unknown section [{name}]{_hint(name)}; "
                              "known sections: " + ", ".join(sections))
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table of settings")
        current = getattr(base, name)
        values = _section_values(current, name, table, source)
        if name == "http":
            values = _empty_proxy_is_none(values)
        updated[name] = current._replace(**values)
    merged = base._replace(**updated)
    _check_consistent(merged, source)
    return merged


def _empty_proxy_is_none(http: dict[str, Any]) -> dict[str, Any]:
    """``proxy = ""`` written (or ``--proxy ""``) means no proxy at all, as curl's
    ``--proxy ""``: the environment's too, unless the same place says ``env_proxies``
    (the documented settings.toml writes both, empty and true)."""
    if http.get("proxy") == "" and "env_proxies" not in http:
        return {**http, "env_proxies": False}
    return http


def _check_consistent(settings: Settings, source: str) -> None:
    """Refuse settings that each look fine but together can match nothing, or make one
    of them mean nothing."""
    dl = settings.download
    for side in ("width", "height"):
        low, high = getattr(dl, f"min_{side}"), getattr(dl, f"max_{side}")
        if high and low > high:
            raise ConfigError(f"{source}: download.min_{side} ({low}) is above "
                              f"download.max_{side} ({high}): no image could be kept")
    if dl.backoff_base > dl.backoff_max:
        raise ConfigError(f"{source}: download.backoff_base ({dl.backoff_base:g}) is above "
                          f"download.backoff_max ({dl.backoff_max:g}): every wait would be "
                          "backoff_max")


# Byte counts, which a file may also write as a size ("10M"), as their flags take them.
SIZE_KEYS = frozenset({"crawl.max_page_bytes", "download.max_bytes"})

# Settings that existed once, and what to do instead.
REMOVED_KEYS = {
    "worker.fast_lane": "is gone: every download now goes through one libcurl engine "
                        "(http and https alike); remove the line",
}


# The flags named otherwise than their settings, by the key a user who knows the flag
# writes ("accept = [...]"), and what each sets: the hint of such an unknown key. The
# command line's flags are kept in step by a test.
FLAG_KEYS = {
    "accept": "crawl.image_allow", "reject": "crawl.image_deny", "out": "output.dir",
    "header": "http.headers", "worker_threads": "worker.threads",
    "ignore_robots": "crawl.respect_robots = false", "no_proxy": "http.env_proxies = false",
}


def _hint(name: str, section: str | None = None) -> str:
    """" (did you mean ...?)" for a section or key name that is a slip of one of ours,
    that belongs in another section or that is written as its flag; "" when nothing
    comes close."""
    import difflib  # only a mistake needs it

    as_flag = name.lower().replace("-", "_")
    if as_flag in FLAG_KEYS:
        return f" (--{as_flag.replace('_', '-')} sets {FLAG_KEYS[as_flag]})"
    if section is None:
        close = difflib.get_close_matches(name, Settings._fields, n=1, cutoff=0.75)
        return f" (did you mean [{close[0]}]?)" if close else ""
    others = [other for other in Settings._fields if other != section]
    homes = [other for other in others if name in getattr(DEFAULTS, other)._fields]
    if homes:
        return f" (it is a key of [{homes[0]}])"
    keys = getattr(DEFAULTS, section)._fields
    close = difflib.get_close_matches(name, keys, n=1, cutoff=0.75)
    if close:
        return f" (did you mean {close[0]}?)"
    # A slip of another section's key ("max_byte" in [crawl]).
    elsewhere = {key: other for other in others for key in getattr(DEFAULTS, other)._fields}
    close = difflib.get_close_matches(name, elsewhere, n=1, cutoff=0.85)
    return f" (did you mean {close[0]}, a key of [{elsewhere[close[0]]}]?)" if close else ""


def _section_values(current: Any, section: str, table: Mapping[str, Any],
                    source: str) -> dict[str, Any]:
    fields = current._fields
    hints = section_types(current.__class__)
    checks = section_checks(current.__class__)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        where = f"{source}: {section}.{key}"
        if f"{section}.{key}" in REMOVED_KEYS:
            raise ConfigError(f"{where} {REMOVED_KEYS[f'{section}.{key}']}")
        if key not in fields:
            raise ConfigError(f"{where}: unknown key{_hint(key, section)}; known keys in "
                              f"[{section}]: " + ", ".join(fields))
        written = raw  # what the message quotes: a size as the file wrote it ("0k")
        sized = f"{section}.{key}" in SIZE_KEYS or f"{section}.{key}" == "http.limit_rate"
        if sized and type(raw) is float and raw.is_integer():
            raw = int(raw)  # 2e6 in TOML is a float, though a whole number of bytes
        if f"{section}.{key}" == "http.limit_rate" and type(raw) is int:
            raw = str(raw)  # bytes per second, as max_bytes takes bytes
        if f"{section}.{key}" == "http.limit_rate" and type(raw) is float:
            # Not whole (2.5, inf, nan): no rate, though a number is one ("a string" misled).
            raise ConfigError(f"{where}: expected {_RATE_TEXT.expected}, got {raw!r}")
        if f"{section}.{key}" in SIZE_KEYS and isinstance(raw, str):
            try:
                raw = parse_size(raw)
            except ValueError:
                raise ConfigError(f"{where}: expected a size such as \"10M\" (bytes, or with "
                                  f"k, M or G: powers of 1024), got {_as_written(raw)}") from None
        try:
            value = _checked(raw, hints[key], checks.get(key))
        except ValueFault as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except ValueError as exc:
            if f"{section}.{key}" == "http.headers":  # never echo a header's value
                said = (_header_problem(written) if isinstance(written, list)
                        else f"expected {exc} (not quoted here: a header may hold a secret)")
                if said:
                    raise ConfigError(f"{where}: {said}") from None
            shown = _as_written(shown_value(f"{section}.{key}", written))
            expected, hint = str(exc), _quoted_hint(key, raw, hints[key])
            if hint.startswith(" (quoted"):
                unquoted = _unquoted(raw)
                if unquoted is None:  # no TOML value either ("01"): no advice
                    hint = ""
                else:
                    try:  # the value unquoted: out of range as well, that is what to say
                        _checked(unquoted, hints[key], checks.get(key))
                    except ValueFault as fault:
                        raise ConfigError(f"{where}: {fault}") from None
                    except ValueError as fault:
                        expected, hint = str(fault), ""
            raise ConfigError(f"{where}: expected {expected}, got {shown}{hint}"
                              f"{_wrong_item(f'{section}.{key}', written)}") from None
        values[key] = _home_expanded(value) if (section, key) == ("output", "dir") else value
    return values


def _quoted_hint(key: str, raw: Any, hint: Any) -> str:
    """What to write when ``raw`` is text that, unquoted, is what ``hint`` takes: "got
    \"false\"" beside "expected true or false" reads as a contradiction; "" otherwise.
    (The caller checks the unquoted value's range: the advice to write depth = -1
    led to the next refusal.)"""
    if not isinstance(raw, str):
        return ""
    text = raw.strip()
    if ((hint is bool and text in ("true", "false"))
            or (hint is int and _TOML_INTEGER.fullmatch(text))
            or (hint is float and _TOML_DECIMAL.fullmatch(text))):
        return f" (quoted, it is text: write {key} = {text})"
    if typing.get_origin(hint) is tuple:
        if key in ("image_allow", "image_deny") and _suffix_list(raw):
            return f" ({_patterns_fault((raw,))})"  # (as one item, it is refused too)
        return f" (one item is a list too: {key} = [{_as_written(raw)}])"
    return ""


def _unquoted(text: str) -> Any:
    """A TOML scalar written in quotes, as it reads unquoted (``_quoted_hint`` matched it);
    None if it reads as none (``"01"``: TOML takes no leading zero)."""
    import tomllib  # (a settings file was read already: imported then)

    try:
        return tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        return None


def _wrong_item(key: str, raw: Any) -> str:
    """Which item of a list of patterns or sources is wrong, and why: in a list of a
    dozen, "expected a list of Python regular expressions" left the user to find it."""
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        return ""  # said already: not a list of strings
    if is_pattern_setting(key):
        for pattern in raw:
            reason = regex_error(pattern)
            if reason is not None:
                return f" ({_as_written(pattern)} is not one: {reason}{glob_hint(pattern)})"
    if key == "crawl.sources":
        unknown = [item for item in raw if item not in ALL_SOURCES]
        if unknown:
            return f" ({', '.join(_as_written(item) for item in unknown)}: no such source)"
    return ""


_TOML_INTEGER = re.compile(r"[+-]?[0-9]+")
_TOML_DECIMAL = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _header_problem(headers: list[Any]) -> str:
    """What is wrong with the first bad one of ``headers`` (naming it, not its value)."""
    for header in headers:
        try:
            parse_header(str(header))
        except ValueError as exc:
            return f"{header_shown(str(header))!r}: {exc}"
    return ""


def header_problem(text: str) -> str:
    """Why ``text`` is no header ("" if it is one), without its value."""
    return _header_problem([text])


def header_shown(text: str) -> str:
    """What a message may show of a header: its name (or its first word), then "...".
    A value may be a token: "Authorization Bearer TOKEN", its colon forgotten, was
    echoed whole in the error."""
    leading = _HEADER_NAME.match(text)  # the name's own characters: no "=", space or tab
    name = leading.group() if leading else ""
    if name == text:
        # One word and no colon: a name whose value was left out, or a token whose name
        # was ("sk-live-..." was echoed whole, a JWT its first 40): its first letters only.
        return text if len(text) <= 4 else f"{text[:4]}..."
    return f"{name[:40]}..."


def _as_written(raw: Any) -> str:
    """``raw`` as a settings file writes it (``true``, not Python's ``True``)."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str):  # as a TOML basic string: escapes as JSON's, on one line
        return json.dumps(raw, ensure_ascii=False)
    if isinstance(raw, list | tuple):
        return "[" + ", ".join(_as_written(item) for item in raw) + "]"
    if isinstance(raw, dict):  # a table, as "depth.x = 1" makes of depth
        return "{ " + ", ".join(f"{_toml_key([key])} = {_as_written(value)}"
                                for key, value in raw.items()) + " }"
    import datetime  # (an error's message alone needs it)

    if isinstance(raw, datetime.date | datetime.time):  # an unquoted 2026-01-01
        return raw.isoformat()
    return repr(raw)


def _checked(raw: Any, hint: Any, check: Check | None) -> Any:
    """``raw`` as a value of type ``hint`` (ints are accepted where floats are expected)
    that passes ``check``; ValueError saying what was expected if it is not one."""
    value = _coerce(raw, hint)
    if check is not None and not check.test(value):
        fault = check.fault(value) if check.fault is not None else ""
        raise ValueFault(fault) if fault else ValueError(check.expected)
    return value


def _coerce(raw: Any, hint: Any) -> Any:
    """Check ``raw`` against a field's type; ValueError saying what was expected."""
    if typing.get_origin(hint) is tuple:
        if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
            raise ValueError("a list of strings")
        return tuple(raw)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ValueError("true or false")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError("a whole number")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError("a number")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise ValueError("a string")
        return raw
    raise TypeError(f"unsupported settings type {hint!r}")  # a bug in this module, not input

