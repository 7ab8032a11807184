"""What travels between master and workers, and the checks a report passes on arrival.

The manager protocol carries plain dicts, lists and strings (never our own
classes, so that either side may change them), and what the master receives
comes from the network: ``attempt_from_report`` turns a report into an
:class:`Attempt` only when it is well-formed, and says why not otherwise. A
worker checks the crawl's rules it receives the same way
(``limits_from_wire``, ``image_scope_from_wire``, ``robots_rules_from_wire``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any, NotRequired, TypedDict

from crawler.config import CrawlSettings, Limits, ValueFault, setting_value
from crawler.errors import BadCrawlInfo, ConfigError
from crawler.model.imagescope import ImagePatterns, ImageScope
from crawler.model.outcome import (
    ATTEMPT_FIELDS,
    IMAGES_DIR,
    MAX_REASON_CHARS,
    MAX_UNREAD_CHARS,
    Attempt,
    one_line,
)

# Set in the environment of the workers a master starts on its own host: they store
# into its output folder, and must not serve another master that takes its port after
# it died (same port, same key), whose images would land in the dead master's folder.
LOCAL_WORKER_ENV = "CRAWLER_LOCAL_WORKER"
# Set in the environment of every worker a master starts, of either queue: its master
# stops it with SIGTERM as it ends, after the Ctrl-C that reached them both, so that a
# second stop is no user's asking it to quit without handing its images back.
STOPPED_BY_ITS_MASTER_ENV = "CRAWLER_STOPPED_BY_ITS_MASTER"


class WorkerInfo(TypedDict):
    """What a worker says of itself in ``hello``."""

    host: str
    pid: int
    threads: int
    # Its --out, absolute: a master of its host tells by it whether the images it stores
    # are in the master's folder, where a rerun looks for those deleted since.
    folder: NotRequired[str]


class RobotsRules(TypedDict):
    """How the crawl treats robots.txt, for the redirects a worker follows."""

    respect: bool  # crawl.respect_robots
    timeout: float  # seconds a robots.txt may take in all (crawl.page_timeout)
    max_age: float  # seconds a robots.txt is obeyed before it is read again (crawl.robots_max_age)


class CrawlInfo(TypedDict):
    """The master's answer to ``hello``: what every worker needs to download."""

    limits: dict[str, Any]  # crawler.config.Limits, field by field
    policy: dict[str, Any]  # crawler.fetch.guard.AddressPolicy.to_wire()
    user_agent: str
    image_scope: ImagePatterns  # checked again on every redirect an image takes
    robots: RobotsRules
    lease_timeout: float  # seconds a lease lives without a heartbeat
    worker_silence: float  # seconds one of our workers may be silent before its leases end
    request: NotRequired[dict[str, Any]]  # RequestOptions.to_wire(): to joining workers only
    folder: NotRequired[str]  # the embedded master's output folder (absolute)
    run: NotRequired[str]  # when its run started: its summary.json's started_at
    # On a broker: how often the crawl's request settings were changed (a master that
    # starts the crawl again brings its own); a worker takes them up when it changes.
    generation: NotRequired[int]


class Status(CrawlInfo):
    """``crawler status``: the crawl info, and how the crawl is going."""

    seeds: list[str]
    elapsed_s: float
    progress: dict[str, Any]
    board: dict[str, int]
    workers: list[dict[str, Any]]
    closed: bool


class LeaseAnswer(TypedDict):
    """The answer to ``lease``, ``exchange`` and ``heartbeat``-only exchanges."""

    closed: bool  # the crawl is over: no task will ever come
    tasks: list[tuple[str, int]]  # (url, attempt number), each now leased to the asker
    lost: NotRequired[list[str]]  # URLs the asker said it holds, now no longer its own
    generation: NotRequired[int]  # on a broker: the crawl info's generation (CrawlInfo's)
    # The version of the cookies the crawl's pages set, once they set any: a worker whose
    # jar is older fetches what came since (``cookies``) before it starts these tasks.
    cookies: NotRequired[int]


class Report(TypedDict, total=False):
    """One Attempt as it crosses the wire (``Attempt.to_wire``)."""

    url: str
    ok: bool
    reason: str
    transient: bool
    retry_after: float | None
    path: str | None
    bytes: int | None
    sha256: str | None
    content_type: str | None
    width: int | None
    height: int | None
    elapsed_s: float
    skipped: bool
    kind: str | None  # FailureKind's value
    retry_after_unread: str | None
    hop_host: str | None

_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_URL_CHARS = 65536  # longer than any URL a page parser hands out
MAX_HOST_CHARS = 300  # a host name (253), its brackets and a port


class ReportRefused(ValueError):
    """A worker's report that the master does not record; the message says why."""


def attempt_from_report(data: object) -> Attempt:
    """The Attempt a structured report describes; ReportRefused when it is malformed.

    A success must name a file inside the output folder's image tree and a
    SHA-256 in hex; every field must have its type. Whether the worker holds
    the URL is the board's to check.
    """
    if not isinstance(data, dict):
        raise ReportRefused(f"a report is a dict, not {type(data).__name__}")
    unknown = set(data) - ATTEMPT_FIELDS
    if unknown:
        raise ReportRefused(f"unknown fields {sorted(map(str, unknown))[:5]}")
    url, ok = data.get("url"), data.get("ok")
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise ReportRefused("no URL")
    if not isinstance(ok, bool):
        raise ReportRefused("'ok' is not true or false")
    _check_types(data)
    path, sha256 = data.get("path"), data.get("sha256")
    if ok:
        if not isinstance(path, str) or not is_image_path(path):
            raise ReportRefused(f"path {str(path)[:200]!r} is not inside the output folder's "
                                f"{IMAGES_DIR}/ folder")
        if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
            raise ReportRefused(f"sha256 {str(sha256)[:80]!r} is not 64 hex digits")
    elif path is not None or sha256 is not None:
        raise ReportRefused("a failure names no stored file")
    kind = data.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise ReportRefused("'kind' is not text")
    reason = data.get("reason")
    if isinstance(reason, str) and not reason.isprintable():  # one line in results.log
        data = {**data, "reason": one_line(reason)}
    return Attempt.from_wire(data)  # the kind back to a FailureKind, as every reader needs


def crawl_info_from_wire(data: object, sender: str = "the master") -> CrawlInfo:
    """The crawl info a master (or a broker's crawl record) gave a joining worker, with
    the fields every worker reads at once; BadCrawlInfo, naming what is wrong, if not."""
    if not isinstance(data, dict):
        raise BadCrawlInfo(f"{sender} sent no crawl info (got {type(data).__name__})")
    for name in ("lease_timeout", "worker_silence"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0):
            raise BadCrawlInfo(f"{sender} sent a {name} of {value!r:.40}, not a number of "
                               "seconds > 0")
    if not isinstance(data.get("user_agent"), str):
        raise BadCrawlInfo(f"{sender} sent no user_agent")
    for name in ("limits", "policy", "image_scope", "robots"):
        if not isinstance(data.get(name), dict):
            raise BadCrawlInfo(f"{sender} sent no {name}")
    return data  # type: ignore[return-value]  # (the rest is read by its own *_from_wire)


def _known_fields(data: object, known: Collection[str], what: str,
                 sender: str = "the master") -> dict[str, Any]:
    """``data``, a dict whose keys are all ``known``; BadCrawlInfo otherwise.

    A key this version does not know comes from a newer one, and is refused: a
    worker would work by a rule it cannot apply. ``what`` names the record in the
    message ("download limits"), ``sender`` whoever wrote it.
    """
    if not isinstance(data, dict):
        raise BadCrawlInfo(f"{sender} sent no {what}")
    unknown = sorted(str(name)[:40] for name in set(data) - set(known))
    if unknown:
        raise BadCrawlInfo(f"{sender} sent {what} this crawler does not know "
                           f"({', '.join(unknown[:5])}): it runs a newer crawler; install "
                           "the same version on this host")
    return data


def settings_from_wire(data: object, keys: Mapping[str, str], what: str,
                       sender: str = "the master") -> dict[str, Any]:
    """The values of settings another process sent, by field; BadCrawlInfo, naming what
    is wrong, if malformed.

    ``keys`` gives each field's setting ("download.deadline"): a value must have
    its type (a whole number where the setting is one) and pass its check, as
    it would in a settings file. A field left out is left out (an older sender).
    """
    values = dict(_known_fields(data, keys, what, sender))
    for name, value in values.items():
        try:
            values[name] = setting_value(keys[name], value)
        except ValueFault as exc:  # says what is wrong, the value quoted
            raise BadCrawlInfo(f"{sender} sent a {name} that is refused: {exc}") from None
        except ValueError as exc:
            raise BadCrawlInfo(f"{sender} sent a {name} of {value!r:.40}, not {exc}") from None
    return values


_LIMITS = {name: f"download.{name}" for name in Limits._fields}


def limits_from_wire(data: object) -> Limits:
    """The download limits a master sent; BadCrawlInfo, naming what is wrong, if malformed.

    A limit the master leaves out keeps its default (an older master).
    """
    return Limits(**settings_from_wire(data, _LIMITS, "download limits"))


def image_scope_from_wire(data: object) -> ImageScope:
    """The image scope a master sent; BadCrawlInfo, naming what is wrong, if malformed."""
    if not isinstance(data, dict) or set(data) != {"allow", "deny"}:
        raise BadCrawlInfo("the master sent no image scope ('allow' and 'deny' lists)")
    for name in ("allow", "deny"):
        patterns = data[name]
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise BadCrawlInfo(f"the master sent an image_{name} that is not a list of text")
    try:
        return ImageScope.from_patterns(data["allow"], data["deny"])
    except ConfigError as exc:
        raise BadCrawlInfo(f"the master sent a bad image scope: {exc}") from exc


def robots_rules_from_wire(data: object) -> RobotsRules:
    """The robots.txt rules a master sent; BadCrawlInfo if malformed.

    A max age left out keeps its default: a broker's crawl record is written once, when
    the crawl is made, so a crawl made before the rules had one holds none.
    """
    if (not isinstance(data, dict)
            or not {"respect", "timeout"} <= set(data) <= {"respect", "timeout", "max_age"}):
        raise BadCrawlInfo("the master sent no robots.txt rules ('respect' and 'timeout', "
                           "and 'max_age' or none)")
    respect = data["respect"]
    if not isinstance(respect, bool):
        raise BadCrawlInfo("the master sent a robots.txt 'respect' that is not true or false")
    max_age = (_robots_seconds(data, "max_age") if "max_age" in data
               else CrawlSettings._field_defaults["robots_max_age"])
    return RobotsRules(respect=respect, timeout=_robots_seconds(data, "timeout"),
                       max_age=max_age)


def _robots_seconds(data: dict[str, Any], name: str) -> float:
    value = data[name]
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or value <= 0):
        raise BadCrawlInfo(f"the master sent a robots.txt {name} of {str(value)[:40]!r}, "
                           "not a positive number of seconds")
    return float(value)


def is_image_path(path: str) -> bool:
    """Whether ``path`` is relative, stays inside the image tree, and names a file in it."""
    if not path or "\\" in path or "\x00" in path or len(path) > 4096:
        return False
    parts = path.split("/")  # no empty, "." or ".." part: what pathlib would fold away
    return (len(parts) >= 3 and parts[0] == IMAGES_DIR
            and all(part not in (".", "..", "") for part in parts))


def _check_types(data: dict[str, object]) -> None:
    for name in ("reason", "path", "sha256", "content_type", "retry_after_unread",
                 "hop_host"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise ReportRefused(f"{name!r} is not text")
    unread = data.get("retry_after_unread")
    if isinstance(unread, str) and len(unread) > MAX_UNREAD_CHARS:
        raise ReportRefused("'retry_after_unread' is too long")
    hop_host = data.get("hop_host")
    if isinstance(hop_host, str) and len(hop_host) > MAX_HOST_CHARS:
        raise ReportRefused("'hop_host' is too long")
    reason = data.get("reason")
    if isinstance(reason, str) and len(reason) > MAX_REASON_CHARS:
        raise ReportRefused("'reason' is too long")
    for name in ("bytes", "width", "height"):
        value = data.get(name)
        if value is not None and (type(value) is not int or value < 0):
            raise ReportRefused(f"{name!r} is not a count")
    for name in ("retry_after", "elapsed_s"):
        value = data.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)
                                  or not math.isfinite(value) or value < 0):
            raise ReportRefused(f"{name!r} is not a number of seconds")
    for name in ("transient", "skipped"):
        if name in data and not isinstance(data[name], bool):
            raise ReportRefused(f"{name!r} is not true or false")
