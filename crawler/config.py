"""Settings: one frozen, typed object, loaded once.

Precedence is built-in defaults < settings file < command-line flags. Every
default lives here, in one catalogue; ``settings.toml`` at the top of the
repository repeats them with comments (a test keeps the two in step). An
unknown key, a wrong type or a bad value is a :class:`ConfigError` that names
the file and the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crawler.errors import ConfigError

DEFAULT_PORT = 24601  # below the ephemeral range (32768-60999), so no outgoing socket takes it
DEFAULT_SETTINGS_FILE = "settings.toml"
# The HTML engines crawler.parse offers (lxml: libxml2's tree, about 20 times
# faster; beautifulsoup: a BeautifulSoup tree over the same libxml2 parse).
PARSERS = ("lxml", "beautifulsoup")
ALL_SOURCES = ("img", "srcset", "picture", "lazy", "css", "meta", "link", "input", "svg", "anchor")
SCOPE_MODES = ("host", "domain", "any")


def _check(predicate: Callable[[Any], bool], expected: str) -> dict[str, Any]:
    return {"check": predicate, "expected": expected}


_NON_NEGATIVE = _check(lambda v: v >= 0, "a number >= 0")
_POSITIVE = _check(lambda v: v > 0, "a number > 0")


def _compiles(patterns: tuple[str, ...]) -> bool:
    try:
        for pattern in patterns:
            re.compile(pattern)
    except re.error:
        return False
    return True


_PATTERNS = _check(_compiles, "a list of Python regular expressions")


@dataclass(frozen=True)
class CrawlSettings:
    depth: int = field(default=3, metadata=_NON_NEGATIVE)
    max_pages: int = field(default=1000, metadata=_NON_NEGATIVE)
    max_images: int = field(default=0, metadata=_NON_NEGATIVE)
    scope: str = field(default="host", metadata=_check(
        lambda v: v in SCOPE_MODES, "one of " + ", ".join(SCOPE_MODES)))
    allow: tuple[str, ...] = field(default=(), metadata=_PATTERNS)
    deny: tuple[str, ...] = field(default=(), metadata=_PATTERNS)
    image_allow: tuple[str, ...] = field(default=(), metadata=_PATTERNS)
    image_deny: tuple[str, ...] = field(default=(), metadata=_PATTERNS)
    sources: tuple[str, ...] = field(default=ALL_SOURCES, metadata=_check(
        lambda v: set(v) <= set(ALL_SOURCES), "a list drawn from " + ", ".join(ALL_SOURCES)))
    lazy_attributes: tuple[str, ...] = ()
    parser: str = field(default="lxml", metadata=_check(
        lambda v: v in PARSERS, "one of " + ", ".join(PARSERS)))
    parsers: int = field(default=0, metadata=_NON_NEGATIVE)  # 0: one per core
    page_concurrency: int = field(default=4, metadata=_POSITIVE)
    max_page_bytes: int = field(default=10_000_000, metadata=_POSITIVE)
    page_timeout: float = field(default=30.0, metadata=_POSITIVE)
    user_agent: str = field(default="crawler/0.1 (image crawler; python-requests)",
                            metadata=_check(lambda v: v.strip() != "", "a non-empty string"))
    respect_robots: bool = True


@dataclass(frozen=True)
class PolitenessSettings:
    host_delay: float = field(default=0.0, metadata=_NON_NEGATIVE)
    host_concurrency: int = field(default=16, metadata=_POSITIVE)


@dataclass(frozen=True)
class DownloadSettings:
    connect_timeout: float = field(default=5.0, metadata=_POSITIVE)
    read_timeout: float = field(default=30.0, metadata=_POSITIVE)
    deadline: float = field(default=120.0, metadata=_POSITIVE)
    max_bytes: int = field(default=50_000_000, metadata=_POSITIVE)
    max_attempts: int = field(default=3, metadata=_POSITIVE)
    backoff_base: float = field(default=1.0, metadata=_NON_NEGATIVE)
    backoff_max: float = field(default=60.0, metadata=_NON_NEGATIVE)
    min_width: int = field(default=0, metadata=_NON_NEGATIVE)
    min_height: int = field(default=0, metadata=_NON_NEGATIVE)
    max_width: int = field(default=0, metadata=_NON_NEGATIVE)
    max_height: int = field(default=0, metadata=_NON_NEGATIVE)


@dataclass(frozen=True)
class Limits:
    """The download settings that bound each image, as the master sends them to workers.

    The defaults are the settings' own, so there is one catalogue of them.
    """

    connect_timeout: float = DownloadSettings.connect_timeout
    read_timeout: float = DownloadSettings.read_timeout
    deadline: float = DownloadSettings.deadline
    max_bytes: int = DownloadSettings.max_bytes
    min_width: int = DownloadSettings.min_width
    min_height: int = DownloadSettings.min_height
    max_width: int = DownloadSettings.max_width
    max_height: int = DownloadSettings.max_height

    @classmethod
    def from_settings(cls, download: DownloadSettings) -> Limits:
        return cls(**{f.name: getattr(download, f.name) for f in dataclasses.fields(cls)})


def _valid_bind(value: str) -> bool:
    try:
        parse_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class QueueSettings:
    bind: str = field(default=f"127.0.0.1:{DEFAULT_PORT}",
                      metadata=_check(_valid_bind, "HOST:PORT, an IPv4 address or a host"
                                      " name and a port from 0 to 65535"))
    lease_timeout: float = field(default=60.0, metadata=_POSITIVE)
    batch_size: int = field(default=64, metadata=_POSITIVE)


@dataclass(frozen=True)
class WorkerSettings:
    threads: int = field(default=16, metadata=_POSITIVE)
    connect_wait: float = field(default=300.0, metadata=_NON_NEGATIVE)
    fast_lane: bool = True


@dataclass(frozen=True)
class OutputSettings:
    dir: str = field(default="downloads", metadata=_check(lambda v: v != "", "a folder path"))


def _valid_networks(values: tuple[str, ...]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class SecuritySettings:
    allow_networks: tuple[str, ...] = field(default=(), metadata=_check(
        _valid_networks, "a list of networks such as \"10.0.0.0/8\""))


@dataclass(frozen=True)
class Settings:
    crawl: CrawlSettings = CrawlSettings()
    politeness: PolitenessSettings = PolitenessSettings()
    download: DownloadSettings = DownloadSettings()
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()
    output: OutputSettings = OutputSettings()
    security: SecuritySettings = SecuritySettings()

    def with_values(self, values: Mapping[str, Any], source: str = "command line") -> Settings:
        """Return a copy with ``{"section.key": value}`` applied, validated like a file."""
        nested: dict[str, dict[str, Any]] = {}
        for dotted, value in values.items():
            section, key = dotted.split(".", 1)
            nested.setdefault(section, {})[key] = value
        return _merge(self, nested, source)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            f.name: {k: list(v) if isinstance(v, tuple) else v
                     for k, v in dataclasses.asdict(getattr(self, f.name)).items()}
            for f in dataclasses.fields(self)
        }


def parse_address(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT``; raise ValueError if malformed, or an IPv6 ``[v6]:PORT``.

    The queue is multiprocessing's listener and client, which speak IPv4 only.
    """
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\s\[\]]*):(\d{1,5})", value.strip())
    if not match:
        raise ValueError(f"{value!r} is not HOST:PORT")
    if match.group(1):
        raise ValueError(f"{value!r} is IPv6: the queue speaks IPv4 only (Python's "
                         "multiprocessing); use an IPv4 address or a host name")
    host = match.group(1) or match.group(3) or "127.0.0.1"
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def load_settings(path: Path | None) -> Settings:
    """Load ``path``, or ``./settings.toml`` when present, over the built-in defaults."""
    if path is None:
        default = Path(DEFAULT_SETTINGS_FILE)
        if not default.is_file():
            return Settings()
        path = default
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: settings file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read settings file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start}:"
                          f" {exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8"
                          ) from exc
    return _merge(Settings(), data, str(path))


def _merge(base: Settings, data: Mapping[str, Any], source: str) -> Settings:
    sections = {f.name: f for f in dataclasses.fields(Settings)}
    updated: dict[str, Any] = {}
    for name, table in data.items():
        if name not in sections:
            home = [section for section in sections
                    if name in {k.name for k in dataclasses.fields(getattr(base, section))}]
            if home and not isinstance(table, Mapping):
                raise ConfigError(f"{source}: {name} must be under [{home[0]}], not at the top")
            raise ConfigError(f"{source}: unknown section [{name}]; known sections: "
                              + ", ".join(sections))
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table of settings")
        current = getattr(base, name)
        values = _section_values(current, name, table, source)
        updated[name] = dataclasses.replace(current, **values)
    return dataclasses.replace(base, **updated)


def _section_values(current: Any, section: str, table: Mapping[str, Any],
                    source: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(current)}
    hints = typing.get_type_hints(type(current))
    values: dict[str, Any] = {}
    for key, raw in table.items():
        where = f"{source}: {section}.{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key; known keys in [{section}]: "
                              + ", ".join(fields))
        value = _coerce(raw, hints[key], where)
        meta = fields[key].metadata
        if "check" in meta and not meta["check"](value):
            raise ConfigError(f"{where}: expected {meta['expected']}, got {raw!r}")
        values[key] = value
    return values


def _coerce(raw: Any, hint: Any, where: str) -> Any:
    """Check ``raw`` against a field's type; ints are accepted where floats are expected."""
    if typing.get_origin(hint) is tuple:
        if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
            raise ConfigError(f"{where}: expected a list of strings, got {raw!r}")
        return tuple(raw)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected a whole number, got {raw!r}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: expected a number, got {raw!r}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string, got {raw!r}")
        return raw
    raise TypeError(f"unsupported settings type {hint!r}")  # a bug in this module, not input

