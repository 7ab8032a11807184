"""The Python front door: run a whole crawl, or a worker, from code.

    >>> from crawler import crawl
    >>> summary = crawl(["https://site.example/"], out="downloads", depth=1)
    >>> summary.succeeded, summary.failures_by_reason, summary.manifest

``crawl`` wires a master, its page parser and local worker processes, and
returns a :class:`Summary`; the ``crawler master`` command calls the same
code. Both calls leave the caller's process as they found it: no logging
handler added or replaced, every signal handler they set restored, and no
``exit``: a failure is an exception from :mod:`crawler.errors`.

Heavy modules (the master, requests, lxml) are imported on the first call,
not with this module, so that ``crawler --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import signal
import threading
import time
import typing
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from crawler import __version__
from crawler.config import (
    DEFAULTS,
    MAX_LOCAL_WORKERS,
    Settings,
    load_settings,
    parse_address,
)
from crawler.errors import (
    AuthkeyError,
    ConfigError,
    CrawlerError,
    InvalidURL,
    NothingCrawled,
    UnknownSetting,
    UsageError,
)
from crawler.model.files import PAGES_NAME, SUMMARY_NAME, SUMMARY_PARTIAL_NAME

if typing.TYPE_CHECKING:
    from crawler.board.broker import BrokerAddress, BrokerCrawl
    from crawler.fetch.options import RequestOptions
    from crawler.master.authkey import Authkey
    from crawler.master.summary import Summary as MasterSummary

log = logging.getLogger("crawler")

# A scheme is letters then ":"; "localhost:8080" is a host and a port, not a scheme.
# "http:" or "https:" before anything but a port is the scheme with its slashes left
# out, as browsers read it: "http:127.0.0.1:8000/" is no host "http" with a port
# "127.0.0.1:8000".
_HAS_SCHEME = re.compile(r"(?i:https?):(?!\d+(?:[/?#]|$))|[A-Za-z][A-Za-z0-9+.-]*:(?!\d)")
# A scheme whose colon was left out or mistyped: "http//host/" and "http;//host/"
# are no host named "http" or "http;".
# A seed without a scheme that starts so is a file's path, never a host name.
_PATH_STARTS = ("/", "./", "../", "~")
_SCHEME_SLIP = re.compile(r"(https?);?//", re.IGNORECASE)


@dataclass(frozen=True)
class Summary:
    """What a crawl did: the counts, why images failed, and where its results are.

    Counts of pages and images cover the whole crawl of the output folder,
    earlier runs included when this one resumed it. The same fields, as one
    JSON object, are written to ``OUT/summary.json`` and printed by
    ``crawler master --json``.
    """

    completed: bool  # every page in scope was crawled (within the limits: pages_left) and
    # every image settled (false when no seed page could be fetched: the crawl read nothing)
    interrupted: bool  # stopped by a signal (or the caller); state saved, a rerun resumes
    dry_run: bool
    seeds: tuple[str, ...]
    elapsed_s: float  # this run's wall time
    pages: int  # pages crawled
    pages_failed: int  # pages that failed or were skipped
    found: int  # image URLs found
    succeeded: int  # images stored
    failed: int  # images that failed for good
    bytes: int  # bytes of the images stored
    images_by_status: dict[str, int] = field(default_factory=dict)  # success / failure
    failures_by_reason: dict[str, int] = field(default_factory=dict)  # most common first
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)  # host: succeeded, failed, bytes
    download_s: dict[str, float] = field(default_factory=dict)  # total, mean, max per image
    attempts: int = 0  # downloads tried, retries included
    stored_this_run: int = 0  # of succeeded, those this run stored (resumed: not the earlier)
    pages_left: int = 0  # pages found and not visited: the page budget (crawl.max_pages)
    # was spent; a rerun with a larger one visits them
    pages_at_depth_limit: int = 0  # pages at the depth limit (crawl.depth) that link to
    # pages not visited; a rerun with a larger one goes on from them
    images_left: int = 0  # images found and not queued: the image budget (crawl.max_images)
    # was spent; a rerun with a larger one queues them
    pages_to_retry: int = 0  # pages and images that failed for a passing reason (a timeout,
    images_to_retry: int = 0  # a 5xx, 429, a refused connection): the next run tries them
    # This run's links to pages on hosts out of crawl.scope: in all, the hosts (up to
    # 1,000: past that, at least that many), the 100 most linked (most first); and image
    # URLs crawl.image_allow/image_deny (--accept, --reject) refused (up to 100,000)
    links_out_of_scope: int = 0
    hosts_out_of_scope: int = 0
    links_to_other_hosts: dict[str, int] = field(default_factory=dict)
    images_out_of_scope: int = 0
    # Pages longer than crawl.max_page_bytes, read up to there: their images and links
    # past it are left out
    pages_cut: int = 0
    # A dry run's image URLs left out of its list, by why: refused by robots.txt, or for
    # want of it (unreadable: a real crawl reads it again); most first. A real crawl
    # records each refusal as a failure instead, and leaves this empty
    images_unlisted: dict[str, int] = field(default_factory=dict)
    # Of the images stored (succeeded), those in other folders than out_dir, by the host
    # of the worker that stored them (a worker on another host stores under its own --out,
    # as does one here started with its own): most first. Empty when all are in out_dir.
    stored_elsewhere: dict[str, int] = field(default_factory=dict)
    seed_failures: tuple[tuple[str, str], ...] = ()  # (seed, why) for seeds that failed
    started_at: str = ""  # this run's start and end, ISO 8601 UTC
    finished_at: str = ""
    out_dir: Path | None = None  # None for a dry run, which writes nothing
    results_log: Path | None = None
    manifest: Path | None = None
    summary_json: Path | None = None
    version: str = __version__

    @property
    def images_per_second(self) -> float:
        """This run's images stored per second of its wall time."""
        return self.stored_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: paths as strings, pairs as lists."""
        data = dataclasses.asdict(self)
        for name, value in data.items():
            if isinstance(value, Path):
                data[name] = str(value)
        data["seeds"] = list(self.seeds)
        data["seed_failures"] = [list(pair) for pair in self.seed_failures]
        data["images_per_second"] = round(self.images_per_second, 3)
        return data

    def to_json(self) -> str:
        """The summary as JSON text. A folder whose name is not UTF-8 holds lone
        surrogates (Python's stand-ins for its bytes): they are written as JSON's
        escapes (\\udcff), which read back to the same path, where the text would not
        be UTF-8 at all."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def summarize(master: MasterSummary, seeds: tuple[str, ...], *, dry_run: bool,
              started_at: str = "", finished_at: str = "") -> Summary:
    """The public summary of a master's run: its counts, and what manifest.jsonl holds."""
    out = None if dry_run else Path(master.out_dir)
    tally = master.manifest
    download_s = ({"total": round(tally.seconds, 3),
                   "mean": round(tally.seconds / tally.entries, 4),
                   "max": round(tally.slowest, 4)} if tally.entries else {})
    return Summary(
        completed=master.completed and not master.nothing_crawled,
        interrupted=master.interrupted, dry_run=dry_run,
        seeds=seeds, elapsed_s=round(master.elapsed_s, 3), pages=master.pages,
        pages_failed=master.pages_failed, found=master.found, succeeded=master.succeeded,
        failed=master.failed, bytes=master.bytes, images_by_status=dict(tally.by_status),
        # Most first, and equal counts by name: not in whatever order the results came.
        failures_by_reason=dict(sorted(tally.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        hosts={host: {"succeeded": c["succeeded"], "failed": c["failed"], "bytes": c["bytes"]}
               for host, c in sorted(tally.hosts.items(), key=lambda kv: -sum(kv[1].values()))},
        download_s=download_s, attempts=tally.attempts, stored_this_run=master.stored_this_run,
        pages_left=master.pages_left, images_left=master.images_left,
        pages_at_depth_limit=master.pages_at_depth_limit,
        pages_to_retry=master.pages_to_retry,
        images_to_retry=master.images_to_retry,
        links_out_of_scope=master.links_out_of_scope,
        hosts_out_of_scope=master.hosts_out_of_scope,
        links_to_other_hosts=master.links_to_other_hosts,
        images_out_of_scope=master.images_out_of_scope,
        pages_cut=master.pages_cut,
        images_unlisted=master.images_unlisted,
        stored_elsewhere=master.stored_elsewhere,
        seed_failures=tuple((seed, why) for seed, why in master.seed_failures),
        started_at=started_at, finished_at=finished_at, out_dir=out,
        results_log=out / "results.log" if out else None,
        manifest=out / "manifest.jsonl" if out else None,
        summary_json=out / SUMMARY_NAME if out else None)


def seed_urls(urls: Iterable[str]) -> tuple[str, ...]:
    """Normalised, deduplicated seeds; a seed without a scheme (``example.com``) is https."""
    from crawler.model.urls import normalize

    seeds = []
    for url in urls:
        text = _with_scheme(url)
        given = url.strip()
        if text != given and given.startswith(_PATH_STARTS):
            # It was https://tmp/file.html, and a DNS lookup failed for "tmp".
            raise UsageError(f"seed {url!r} is a file's path, not a URL: the crawler fetches "
                             "pages over http(s) (to crawl a folder of files, serve it with "
                             "'python3 -m http.server' and give http://127.0.0.1:8000/)")
        if text != given and given.startswith("-"):
            raise UsageError(f"seed {url!r} is no URL: no host name starts with '-' "
                             "(a flag given after '--'?)")
        if text != url.strip():
            slip = _SCHEME_SLIP.match(url.strip())
            if slip:  # else https://http//host/, and a DNS lookup failed for "http"
                scheme, rest = slip.group(1).lower(), url.strip()[slip.end():]
                raise UsageError(f"seed {url!r}: did you mean {scheme}://{rest}?")
        try:
            seeds.append(normalize(text))
        except InvalidURL as exc:
            raise UsageError(f"seed {url!r}: {exc}") from exc
        _warn_of_a_password(seeds[-1])
    if not seeds:
        raise UsageError("no seed URL given")
    return tuple(dict.fromkeys(seeds))


def schemeless_seeds(urls: Iterable[str]) -> frozenset[str]:
    """Those of ``urls`` given without a scheme, normalised as :func:`seed_urls` makes
    them (https), for a hint that names the https a seed was given without."""
    from crawler.model.urls import normalize

    given = set()
    for url in urls:
        text = _with_scheme(url)
        if text != url.strip():
            with contextlib.suppress(InvalidURL):
                given.add(normalize(text))
    return frozenset(given)


def _with_scheme(url: str) -> str:
    """``url`` stripped, https:// before it when it has no scheme."""
    text = url.strip()
    if text and "://" not in text and not _HAS_SCHEME.match(text):
        return "https://" + text
    return text


def _warn_of_a_password(seed: str) -> None:
    """A login in a seed URL is sent, and written wherever the URL is: say so."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(seed)
    if parts.password:
        where = parts.netloc.rpartition("@")[2]
        shown = urlunsplit(parts._replace(netloc=f"{parts.username}:***@{where}"))
        log.warning("seed %s holds a password: it is written wherever the URL is (logs, "
                    "results.log, manifest.jsonl, pages.jsonl) and shows in ps; give the "
                    "login with --netrc instead", shown)


def read_seed_file(path: str) -> list[str]:
    """Seed URLs from ``path`` (``-``: standard input), one a line; blank lines, lines
    starting with ``#`` and a ``# comment`` after a URL are skipped."""
    import sys

    where = "standard input" if path == "-" else f"seed file {path}"
    if path == "-" and sys.stdin is None:  # started with it closed (<&-)
        raise UsageError("-i -: standard input is closed: give the seeds there, or -i FILE")
    # Standard input as bytes, as a file is read: as text, bytes that are not UTF-8 became
    # surrogates (or an error, by the locale), not this message.
    stdin = getattr(sys.stdin, "buffer", None) if path == "-" else None
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is no part of the first URL.
        text = (stdin.read().decode("utf-8-sig") if stdin is not None
                else sys.stdin.read().removeprefix("\ufeff") if path == "-"
                else Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError as exc:
        raise UsageError(f"seed file {path}: not found") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from exc
    seeds = []
    # Lines as an editor numbers them: splitlines() would also break at form feeds.
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        url, *after = line.split(None, 1)  # a URL holds no raw space: what follows is a comment
        if after and not after[0].startswith("#"):
            raise UsageError(f"{where}, line {number}: one URL a line ({after[0][:60]!r} "
                             "follows it; a comment starts with #)")
        try:
            seed_urls([url])  # a bad one is named where it is, not only by its text
        except UsageError as exc:
            raise UsageError(f"{where}, line {number}: {exc}") from None
        seeds.append(url)
    return seeds


def _checked(settings: Settings, caller: str) -> Settings:
    """``settings`` validated as a file is: one made with ``_replace`` (a NamedTuple's
    own) skipped the checks, and a depth of "2" failed deep in the crawl as a TypeError."""
    try:
        data = settings.to_dict()
    except AttributeError as exc:  # a section that is a dict, or something else
        raise UsageError(f"{caller} settings: a section of the wrong kind ({exc}); change "
                         "settings with settings.with_values({'crawl.depth': 1})") from exc
    return DEFAULTS.with_sections(data, source=f"{caller} settings")


def settings_with(settings: Settings | None, overrides: Mapping[str, Any],
                  caller: str = "crawl()") -> Settings:
    """``settings`` (default: the settings file found as the command finds it) with
    keyword overrides: ``depth=1`` or ``crawl__depth=1``; a name that is no setting is
    an UnknownSetting (a ConfigError, and a TypeError as for any unknown keyword)."""
    base = _checked(settings, caller) if settings is not None else load_settings(None)
    if not overrides:
        return base
    sections = {name: section._fields for name, section in DEFAULTS._asdict().items()}
    dotted: dict[str, Any] = {}
    named: dict[str, str] = {}  # dotted: the argument that gave it

    def take(setting: str, name: str, value: Any) -> None:
        if setting in named:  # depth=0 and crawl__depth=3: the last won, unsaid
            raise ConfigError(f"{caller} arguments: {named[setting]} and {name} are the "
                              f"same setting ({setting}): give one")
        named[setting] = name
        dotted[setting] = value

    for name, value in overrides.items():
        if isinstance(value, os.PathLike):  # a file's setting given as out= takes it: a Path
            value = os.fspath(value)
        section, _, key = name.partition("__")
        if key and key in sections.get(section, ()):
            take(f"{section}.{key}", name, value)
            continue
        homes = [s for s, keys in sections.items() if name in keys]
        if len(homes) != 1:
            raise UnknownSetting(
                f"{caller} arguments: {name!r} is no setting (a setting's key, such as "
                "depth=1, or SECTION__KEY, such as crawl__depth=1)" if not homes else
                f"{caller} arguments: setting {name!r} is ambiguous: say {homes[0]}__{name}")
        take(f"{homes[0]}.{name}", name, value)
    return base.with_values({k: list(v) if isinstance(v, list | tuple) else v
                             for k, v in dotted.items()}, source=f"{caller} arguments")


def _with_out(overrides: dict[str, Any], out: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``out``, when given, is output.dir; else the settings' (the file's, the object's,
    or ``output__dir=``), as ``crawler master`` takes it: the default "downloads" won
    over all of them."""
    return overrides if out is None else {**overrides, "output__dir": os.fspath(out)}


def _argument_key(authkey: bytes | str) -> Authkey:
    """A key given as an argument, stripped as a key file's and $CRAWLER_AUTHKEY are: the
    text of a key file (its newline kept) made the crawl's own local workers, which get
    it stripped, refused."""
    from crawler.master.authkey import Authkey

    key = (authkey.encode() if isinstance(authkey, str) else authkey).strip()
    if not key:
        raise AuthkeyError("authkey: empty once its spaces and line breaks are dropped")
    return Authkey(key, "argument")


def crawl(seeds: str | Iterable[str], *, out: str | os.PathLike[str] | None = None,
          local_workers: int = 2, settings: Settings | None = None, dry_run: bool = False,
          resume: bool = False, fresh: bool = False, authkey: bytes | str | None = None,
          on_image: Callable[[str], None] | None = None,
          broker: str | BrokerAddress | None = None, crawl_name: str | None = None,
          join: bool = False, **overrides: Any) -> Summary:
    """Crawl from ``seeds`` into ``out`` with ``local_workers`` worker processes; return
    the :class:`Summary` once the crawl is over (also written to ``out/summary.json``).

    ``settings`` defaults to the settings file the command would read;
    ``overrides`` set single settings by name (``depth=1``, ``host_delay=0.5``,
    ``image_deny=[r"\\.gif$"]``). The queue serves on ``queue.bind``; pass
    ``bind="127.0.0.1:0"`` for any free port. With ``local_workers=0`` the
    crawl waits for workers started elsewhere (``crawler worker``). A dry run
    calls ``on_image(url)`` for each image URL it would queue; without it, the
    URLs go to standard output, as ``crawler master --dry-run`` prints them.

    With ``broker`` (``"redis://HOST:PORT/DB"``, as :func:`run_worker` takes it), the
    crawl's state is in Redis under ``crawl_name`` (default ``"crawl"``), as
    ``crawler master --broker`` keeps it: no queue is served (workers join the
    broker), and the same call again carries the crawl on. ``join=True``, with no
    seeds, joins the crawl ``crawl_name`` that another master started there.

    Raises :class:`~crawler.errors.NothingCrawled` when no seed page could be
    fetched, and the other :class:`~crawler.errors.CrawlerError` kinds for bad
    settings, an unusable output folder or a port in use. SIGINT, SIGTERM and
    SIGHUP (at its default action) stop the crawl cleanly while it runs (from the main
    thread only); a second
    SIGINT raises ``KeyboardInterrupt``; the previous handlers are back afterwards (after
    a hang-up, SIGHUP stays ignored: a shell's SIGHUP to its job follows the kernel's).
    """
    from crawler.master.authkey import forget_if_refused, master_authkey
    from crawler.master.journal import check_room_for_journal

    # Every argument checked before anything is made (the output folder, its key file).
    if type(local_workers) is not int or not 0 <= local_workers <= MAX_LOCAL_WORKERS:
        raise UsageError(f"local_workers must be a whole number from 0 to {MAX_LOCAL_WORKERS} "
                         f"(got {local_workers!r})")
    for name, value in (("dry_run", dry_run), ("resume", resume), ("fresh", fresh)):
        if not isinstance(value, bool):  # fresh="false" forgot the folder's crawl
            raise UsageError(f"{name} must be True or False (got {value!r})")
    if on_image is not None and not dry_run:
        raise UsageError("on_image is for a dry run (dry_run=True): a crawl's images are "
                         "in its Summary and manifest.jsonl")
    if on_image is not None and not callable(on_image):
        raise UsageError(f"on_image must be a function of one URL (got "
                         f"{type(on_image).__name__})")
    if resume and fresh:
        raise UsageError("resume and fresh: give one of them (resume goes on with the "
                         "folder's crawl, fresh forgets it)")
    _check_kinds(settings, out, authkey)
    address = _broker_address(broker, crawl_name)
    given = [seeds] if isinstance(seeds, str) else _seed_list(seeds)
    _check_broker_crawl(address, join=join, seeds=given, dry_run=dry_run, resume=resume,
                        fresh=fresh, authkey=authkey)
    seed_list = seed_urls(given) if given or not join else ()
    chosen = settings_with(settings, _with_out(overrides, out))
    if address is not None:
        from crawler.master.authkey import Authkey

        key = Authkey()  # no queue served: workers log in to the broker
    else:
        if not dry_run:  # before anything is made in the folder
            check_room_for_journal(Path(chosen.output.dir))
        key = (_argument_key(authkey) if authkey is not None
               else master_authkey(None, Path(chosen.output.dir), keep=not dry_run))

    def on_images(urls: list[str]) -> None:
        assert on_image is not None
        for url in urls:
            on_image(url)

    # The queue's address (bind may be port 0) and how workers join: to the log.
    try:
        return run_crawl(chosen, seed_list, key, local_workers=local_workers,
                         dry_run=dry_run, resume=resume, fresh=fresh, announce=log.info,
                         on_images=on_images if on_image is not None else None,
                         schemeless=schemeless_seeds(given), broker=address,
                         crawl_name=crawl_name, join=join)
    except CrawlerError as exc:
        forget_if_refused(key, exc)  # refused as it started: no key or folder left
        raise


def _broker_address(broker: object, crawl_name: object) -> BrokerAddress | None:
    """``run_worker()``'s broker as a :class:`BrokerAddress`: a URL is read as
    ``$CRAWLER_BROKER`` is (a password in it is fine: code shows in no process list),
    and the crawl's name checked as ``--crawl``'s; UsageError for anything else. Taken
    as it was, a URL failed deep in the worker as an AttributeError."""
    from crawler.board.broker import BrokerAddress, check_crawl_name, parse_broker

    if crawl_name is not None:
        if not isinstance(crawl_name, str):
            raise UsageError(f"crawl_name must be text (got {type(crawl_name).__name__})")
        check_crawl_name(crawl_name)
    if broker is None:
        if crawl_name is not None:
            raise UsageError("crawl_name is for a crawl on a broker: give broker= too")
        return None
    if isinstance(broker, BrokerAddress):
        return broker
    if not isinstance(broker, str):
        raise UsageError(f"broker must be a URL, redis://HOST:PORT/DB (got "
                         f"{type(broker).__name__})")
    return parse_broker(broker, from_command_line=False)


def _check_broker_crawl(broker: BrokerAddress | None, *, join: object, seeds: list[str],
                        dry_run: bool, resume: bool, fresh: bool, authkey: object) -> None:
    """UsageError for crawl() arguments that do not go with a crawl on a broker (or
    that need one), as ``crawler master --broker`` refuses the same flags."""
    if not isinstance(join, bool):
        raise UsageError(f"join must be True or False (got {join!r})")
    if join and broker is None:
        raise UsageError("join is for a crawl on a broker: give broker= (and crawl_name=)")
    if join and seeds:
        raise UsageError("join takes the crawl's seeds from the broker: give no seeds ([])")
    if broker is None:
        return
    if dry_run:
        raise UsageError("dry_run records nothing, on a broker or elsewhere: drop broker=")
    if resume or fresh:
        raise UsageError("resume and fresh are about the output folder's journal; on a "
                         "broker, the crawl's state is there: call again to carry the crawl "
                         "on, or give a new crawl_name")
    if authkey is not None:
        raise UsageError("authkey is the queue's key, and a crawl on a broker serves no "
                         "queue (its workers log in to the broker): drop authkey=")


def _check_kinds(settings: object, out: object, authkey: object) -> None:
    """UsageError for a crawl() or run_worker() argument of the wrong kind."""
    if settings is not None and not isinstance(settings, Settings):
        raise UsageError(f"settings must be a crawler.Settings (got {type(settings).__name__}):"
                         " Settings().with_values({'crawl.depth': 1}) makes one")
    if out is not None and not isinstance(out, str | os.PathLike):
        raise UsageError(f"out must be a folder path (got {type(out).__name__})")
    if authkey is not None and not isinstance(authkey, str | bytes):
        raise UsageError(f"authkey must be text or bytes (got {type(authkey).__name__})")


def _seed_list(seeds: object) -> list[str]:
    """``seeds`` as a list of text, or UsageError saying what they are instead."""
    # (A mapping iterates over its keys: {"a": 1} crawled https://a/.)
    if not isinstance(seeds, Iterable) or isinstance(seeds, bytes | Mapping):
        raise UsageError(f"seeds must be a URL or a list of URLs (got {type(seeds).__name__})")
    listed = list(seeds)
    wrong = [seed for seed in listed if not isinstance(seed, str)]
    if wrong:
        raise UsageError(f"seeds must be text: {wrong[0]!r} is a {type(wrong[0]).__name__}")
    return listed


def run_crawl(settings: Settings, seeds: tuple[str, ...], authkey: Authkey, *,
              local_workers: int, dry_run: bool = False, resume: bool = False,
              fresh: bool = False, invite_workers: bool = True, progress: bool = False,
              announce: Callable[[str], None] | None = None,
              on_signal_note: Callable[[int], None] | None = None,
              on_summary: Callable[[Summary], None] | None = None,
              broker: BrokerAddress | None = None, crawl_name: str | None = None,
              join: bool = False,
              worker_command: Callable[[Sequence[str]], int] | None = None,
              on_images: Callable[[list[str]], None] | None = None,
              schemeless: Collection[str] = ()) -> Summary:
    """A master's whole run: the wiring both :func:`crawl` and ``crawler master`` use.

    ``progress`` draws the progress display on stderr; ``announce`` receives
    the lines meant for the operator (the queue address, the worker command;
    without it, the worker command goes into the warning of a master no worker
    came to); ``on_summary`` gets the summary before a crawl that read nothing raises.
    With ``broker``, the crawl ``crawl_name`` lives in Redis; ``join`` helps
    with one that runs already, by its seeds and settings (``seeds`` unused).
    ``worker_command`` is the ``crawler`` command's main: given, local workers are
    forked from this process and run it, instead of starting fresh interpreters.
    ``schemeless``: the seeds given without a scheme (see :func:`schemeless_seeds`).
    """
    from crawler.master.authkey import check_for_bind
    from crawler.master.master import Master, MasterOptions
    from crawler.parse.pool import PageParser
    from crawler.ui.progress import make_reporter

    try:
        bind = parse_address(settings.queue.bind)
    except ValueError as exc:
        raise UsageError(f"bad queue address: {exc}") from exc
    shared = joined_request = None
    if broker is not None:
        from crawler.board.broker import DEFAULT_CRAWL, open_crawl
        from crawler.board.redis import broker_errors

        shared = open_crawl(broker, crawl_name or DEFAULT_CRAWL)
        if join:
            with broker_errors(shared.client):  # a refused command: what to fix, in a line
                settings, seeds, joined_request = _joined(shared, settings)
    else:
        check_for_bind(authkey, bind[0])
    started_at = _now()  # summary.json's, and told to workers (see MasterOptions.run)
    options = MasterOptions(seeds=seeds, out_dir=Path(settings.output.dir), bind=bind,
                            local_workers=local_workers, worker_threads=settings.worker.threads,
                            dry_run=dry_run, resume=resume, fresh=fresh,
                            invite_workers=invite_workers, broker=shared,
                            joined_request=joined_request,
                            worker_command=worker_command, on_images=on_images,
                            run=started_at)
    # Before the progress display and the queue start their threads: it forks.
    parser = PageParser(parser=settings.crawl.parser, processes=settings.crawl.parsers or None)
    closing = False  # the crawl has ended: its closing files are being written
    asked_while_closing = False
    try:
        master = Master(settings, options, authkey, make_reporter(not progress or dry_run),
                        parser, announce=announce)

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal asked_while_closing
            if closing:  # nothing is left to stop: the summary is saved in a moment, whole
                if signum == signal.SIGHUP:
                    if on_signal_note is not None:
                        on_signal_note(signum)  # (a terminal gone fails the summary's writes)
                    return
                if master.stopping or asked_while_closing:
                    raise KeyboardInterrupt  # asked twice: a write may be stuck (a full pipe)
                asked_while_closing = True
                return
            if master.stopping:
                if signum == signal.SIGHUP:
                    # A terminal that closes sends two or more (its shell's to the job,
                    # the kernel's to the foreground group): not a user's second Ctrl-C.
                    return
                raise KeyboardInterrupt  # asked twice: stop waiting for a clean end
            master.stop()
            if on_signal_note is not None:
                on_signal_note(signum)

        # Until the summary is saved and shown: a stop after the crawl's own handling,
        # at Python's, left no summary.json (and said only "interrupted").
        with _signals_handled_by(on_signal):
            ran = master.run()
            parser.close()
            closing = True
            summary = summarize(ran, seeds, dry_run=dry_run, started_at=started_at,
                                finished_at=_now())
            if summary.summary_json is not None:
                _write_summary(summary)
            if ran.seed_failures and not ran.nothing_crawled:
                _say_seeds_not_crawled(ran.seed_failures, seeds, schemeless, summary.out_dir,
                                       settings.http.ca_bundle)
            if on_summary is not None:
                on_summary(summary)
    except BaseException:
        parser.close(wait=0.0)  # a second Ctrl-C: not even the page in flight is awaited
        raise
    if ran.completed and ran.nothing_crawled:
        seed, why = ran.seed_failures[0]
        more = len(ran.seed_failures) - 1
        raise NothingCrawled(f"no seed page could be fetched: {seed}: {why}"
                             + (f" (and {more} more seed(s))" if more else "")
                             + _seed_hint(seed, why, schemeless=seed in schemeless,
                                          ca_bundle=settings.http.ca_bundle))
    return summary


def _say_seeds_not_crawled(failures: Sequence[tuple[str, str]], seeds: Sequence[str],
                           schemeless: Collection[str], out_dir: Path | None,
                           ca_bundle: str = "") -> None:
    """Warn of seeds that failed in a crawl that read others, in the order given: said
    only as a page's INFO line before, a seed list's typo (a 404) went unseen, with -q
    above all, where a dry run wrote nothing but the other seeds' images."""
    given = {seed: at for at, seed in enumerate(seeds)}
    failures = sorted(failures, key=lambda failure: given.get(failure[0], len(given)))
    for seed, why in failures[:SEEDS_SAID]:
        log.warning("seed %s was not crawled: %s%s", seed, why,
                    _seed_hint(seed, why, schemeless=seed in schemeless,
                               ca_bundle=ca_bundle))
    if len(failures) > SEEDS_SAID:
        where = (f"{out_dir / PAGES_NAME} lists each" if out_dir is not None
                 else "-v lists each")  # (a dry run writes no file)
        log.warning("%d more seeds were not crawled (%s)", len(failures) - SEEDS_SAID, where)


SEEDS_SAID = 5  # seeds not crawled named one by one; the rest are counted

# What OpenSSL says when the other end answers a TLS hello in plain text.
_NOT_TLS = ("wrong version number", "packet length too long", "record layer failure",
            "unknown protocol")


def _seed_hint(seed: str, why: str, *, schemeless: bool, ca_bundle: str = "") -> str:
    """A hint for a seed that failed as ``why``: an https seed whose server answered
    without TLS (often a seed given without a scheme, read as https, on a server of
    plain HTTP), a seed that is no page, one whose server (or its redirect's) refused
    the connection, one its site's robots.txt disallows, and one refused while its
    server answers robots.txt with an error (5xx, 429, a broken body)."""
    from crawler.fetch.engine import signed_by_an_unknown_ca

    if schemeless and "DNS lookup failed" in why and _names_a_local_file(seed):
        # site/index.html was read as https://site/index.html (a folder a wget mirror
        # made is named as its host, so a seed may name one too: a hint, no refusal).
        return ("; there is a file of that name in this folder: the crawler fetches pages "
                "over http(s) (to crawl a folder of files, serve it with 'python3 -m "
                "http.server' and give http://127.0.0.1:8000/)")
    if why.startswith("not HTML"):
        return ("; a seed must be an HTML page" + (
            ": images are found on the pages that show them, so give such a page"
            if "(image/" in why else ""))
    from crawler.fetch.robots import AT_A_REDIRECT, DISALLOWED
    from crawler.model.outcome import ROBOTS_UNREACHABLE

    if why == DISALLOWED:
        return ("; the site's robots.txt asks crawlers to keep out of it: --ignore-robots "
                "crawls it anyway, where the site's owner lets you")
    # Its server answered, but not with a robots.txt: a server not found or not reached
    # (a timeout may be the name's or the handshake's) is said below, or by its own words.
    if why.startswith(tuple(f"{ROBOTS_UNREACHABLE} ({answered}" for answered in (
            "HTTP ", "broken response"))):
        return ("; until its robots.txt can be read, the site is not crawled (RFC 9309): "
                "the same command tries again, --ignore-robots crawls without it")

    if ("connection error: connection refused" in why and "proxy" not in why
            and AT_A_REDIRECT not in why):  # (a robots.txt's redirect: not the seed's)
        # The first request of a site is its robots.txt, so a server that is not running
        # read as a robots.txt problem ("robots.txt unreachable (connection error: ...)").
        # The server is the seed's, or that of the redirect it took.
        refused = why.removeprefix("redirected to ").split(": ", 1)[0] if why.startswith(
            "redirected to ") else seed
        address = _host_and_port(refused)
        if address:
            return (f"; nothing listens at {address}: is its server running, and is the "
                    "address right?")
    if signed_by_an_unknown_ca(why):
        if ca_bundle:  # told to give the bundle it was given
            return (f"; no CA of {ca_bundle} (--ca-bundle) signs its certificate: give the "
                    "one that does (--insecure skips the check)")
        # Signed by a CA this host does not know (a company's own, a test's): the user's.
        return ("; if its certificate is signed by a CA of your own, give it with "
                "--ca-bundle FILE (--insecure skips the check)")
    if not seed.startswith("https://") or not any(words in why for words in _NOT_TLS):
        return ""
    return (f"; the server there does not speak TLS: for plain HTTP, give "
            f"http://{seed.removeprefix('https://')}"
            + (" (a seed without a scheme is https)" if schemeless else ""))


def _names_a_local_file(seed: str) -> bool:
    """Whether a seed given without a scheme (``seed`` as https) names a file here."""
    with contextlib.suppress(OSError, ValueError):
        return Path(unquote(seed.removeprefix("https://"))).is_file()
    return False


def _host_and_port(url: str) -> str:
    """``HOST:PORT`` of ``url`` (its scheme's port if it names none; no user or password),
    or "" if it is no URL."""
    from crawler.model.urls import DEFAULT_PORTS

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return ""
    if not host or port is None:
        return ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"



# What a master that joins a crawl keeps of its own settings (the rest are the crawl's):
# as a worker, its own client certificate, and --no-proxy.
JOINING_MASTER_KEEPS = ("output", "worker", "crawl.page_concurrency", "crawl.parsers",
                        "http.client_cert", "http.client_key", "http.env_proxies")


def kept_by_a_joining_master(key: str) -> bool:
    """Whether a master that joins a crawl uses its own value of setting ``key``."""
    return any(key == kept or key.startswith(kept + ".") for kept in JOINING_MASTER_KEEPS)


def _joined(shared: BrokerCrawl, mine: Settings
            ) -> tuple[Settings, tuple[str, ...], RequestOptions]:
    """The running crawl's settings, seeds and request settings, for a master that joins it.

    What belongs to this host stays this host's: the output folder, the worker
    settings, how many pages it fetches at once and how many parsers it runs, its
    client certificate and --no-proxy. The request settings are the crawl's as its
    workers get them, the files' contents: the paths its first master named (a
    cookies.txt, a netrc, a CA bundle, relative to that master's folder) mean
    nothing on this host, and are not read.
    """
    from crawler.board.broker import CrawlRecord
    from crawler.fetch.options import RequestOptions, client_certificate

    record = CrawlRecord(shared.client, shared.name)
    if not record.exists():
        raise UsageError(f"no crawl named {shared.name!r} on the broker at {shared.address} "
                         "to join: start it with crawler master URL --broker ... first")
    record.check_format()
    data = record.field("settings")
    own = mine.to_dict()
    for kept in JOINING_MASTER_KEEPS:
        section, _, name = kept.partition(".")
        if name:
            data.setdefault(section, {})[name] = own[section][name]
        else:
            data[section] = own[section]
    # Its own [http] (but for what it keeps, read by no one): none of the first master's
    # paths, which from_settings would read, is left in this master's settings.
    data["http"] = own["http"]
    theirs = Settings().with_sections(data, f"the settings of crawl {shared.name!r} on the broker")
    info = record.field("info")
    sender = f"the crawl {shared.name!r} on the broker"
    client_cert, client_key = client_certificate(mine.http)
    request = RequestOptions.from_crawl(
        info.get("request"), client_cert=client_cert, client_key=client_key,
        env_proxies=mine.http.env_proxies, sender=sender, who="this master")
    return theirs, tuple(record.field("seeds")), request


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _write_summary(summary: Summary) -> None:
    """OUT/summary.json, replaced whole: a reader never sees half of it."""
    from crawler.errors import StorageError

    assert summary.summary_json is not None
    partial = summary.summary_json.with_name(SUMMARY_PARTIAL_NAME)
    try:
        partial.write_text(summary.to_json() + "\n", encoding="utf-8")
        partial.replace(summary.summary_json)
    except BaseException as exc:  # a full disk, or a Ctrl-C: no half copy is left behind
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {summary.summary_json}: "
                               f"{exc.strerror or exc}") from exc
        raise


@contextlib.contextmanager
def _signals_handled_by(handler: Callable[..., None]) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP go to ``handler`` inside the block, to what they went
    to before after it; SIGHUP only from its default action (ignored, as ``nohup``
    asks, it stays ignored; a caller's own handler stays). Signal handlers can only be
    set from the main thread: elsewhere this sets none (the caller's own handling
    stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from crawler.errors import raise_stop

    handled = [signal.SIGINT, signal.SIGTERM]
    # At its default action, or the crawler command's stand-in for it (a stop as it
    # starts); not nohup's SIG_IGN, nor a caller's own: a closed terminal, stop cleanly.
    if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, raise_stop):
        handled.append(signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    came: set[int] = set()

    def noted(signum: int, frame: object) -> None:
        came.add(signum)
        handler(signum, frame)

    try:
        for signum in previous:
            signal.signal(signum, noted)
        yield
    finally:
        for signum, old in previous.items():
            if signum == signal.SIGHUP and signum in came:
                # The terminal is gone, and the shell's SIGHUP to its job comes a moment
                # after the kernel's: at its default action it killed what had just saved
                # its state, and the exit status was the signal's.
                old = signal.SIG_IGN
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def check_proxy_variables(settings: Settings) -> None:
    """ConfigError, in one line, for a malformed ``$http_proxy`` (or kin) a worker would
    use: said as it starts, as a master says it, not in a traceback once it has joined.

    A local worker's environment is its master's, checked by it where its crawl uses
    it (and left alone where the crawl has a proxy of its own).
    """
    from crawler.fetch.options import RequestOptions
    from crawler.model.wire import LOCAL_WORKER_ENV

    if not os.environ.get(LOCAL_WORKER_ENV):
        RequestOptions(env_proxies=settings.http.env_proxies).proxies()


@dataclass(frozen=True)
class WorkerSummary:
    """What one worker did before it stopped."""

    stop_reason: str  # "": the master said the crawl is over; else "interrupted", "SIGTERM"
    done: int  # images stored
    failed: int  # images that failed for good
    bytes: int  # bytes stored
    elapsed_s: float


def run_worker(master: str | None, *, out: str | os.PathLike[str] | None = None,
               settings: Settings | None = None, authkey: bytes | str | None = None,
               progress: Callable[[int, int, int], None] | None = None,
               broker: str | BrokerAddress | None = None, crawl_name: str | None = None,
               on_signal_note: Callable[[int], None] | None = None,
               on_quit_now: Callable[[], None] | None = None,
               **overrides: Any) -> WorkerSummary:
    """Download images for the master at ``master`` (``HOST:PORT``) into ``out`` until it
    says the crawl is over, or a signal stops it; return a :class:`WorkerSummary`.

    With ``broker`` (``"redis://HOST:PORT/DB"``, or ``rediss://``; its password from
    the URL or ``$CRAWLER_BROKER_PASSWORD``) instead of ``master``, the worker works
    for the crawl ``crawl_name`` (default: the broker's only one) in Redis, with no
    master in between. ``authkey`` defaults to ``$CRAWLER_AUTHKEY``; ``progress`` is called with
    (images done, failed, bytes) when its first URLs come (zeros: the work begins) and
    as images end, on a thread of its own (a slow one costs no lease),
    with the latest numbers: calls that would come while one runs, or within 50 ms of
    its end, are merged, and the
    last one, with the final numbers, ends before this returns. While it runs, SIGINT,
    SIGTERM or SIGHUP (from the main thread; SIGHUP at its default action) hands the
    worker's URLs back and ends it, with
    ``stop_reason`` ``"interrupted"``, ``"SIGTERM"`` or ``"SIGHUP"``; a second SIGINT or
    SIGTERM meanwhile raises ``KeyboardInterrupt`` at once, without the hand-back (the
    master gives the URLs to others once it finds the worker silent; a local worker,
    which its master stops too, takes only the first); the previous
    handlers are back afterwards (after a hang-up, SIGHUP stays ignored).
    Raises :class:`~crawler.errors.MasterUnreachable`,
    :class:`~crawler.errors.AuthenticationFailed` and the other ``CrawlerError``
    kinds instead of exiting.
    """
    from crawler.board.manager import MasterClient
    from crawler.fetch.options import client_certificate
    from crawler.master.authkey import load_authkey
    from crawler.model.wire import STOPPED_BY_ITS_MASTER_ENV
    from crawler.worker.worker import Worker, WorkerOptions

    if typing.TYPE_CHECKING:
        from crawler.board.redis_client import BrokerClient

    _check_kinds(settings, out, authkey)
    if master is not None and not isinstance(master, str):
        raise UsageError(f"master must be text, HOST:PORT (got {type(master).__name__})")
    broker = _broker_address(broker, crawl_name)
    if broker is not None and master is not None:
        raise UsageError("give the master's HOST:PORT or a broker, not both")
    if progress is not None and not callable(progress):
        raise UsageError(f"progress must be a function of (done, failed, bytes) (got "
                         f"{type(progress).__name__})")
    chosen = settings_with(settings, _with_out(overrides, out), "run_worker()")
    check_proxy_variables(chosen)
    # As libcurl takes them: "~" expanded, absolute.
    client_cert, client_key = client_certificate(chosen.http)
    client: MasterClient | BrokerClient
    if broker is not None:
        from crawler.board.redis_client import BrokerClient

        client = BrokerClient(broker, crawl_name)
    elif master is None:
        raise UsageError("a worker needs the master's HOST:PORT, or a broker")
    else:
        if master.strip().lower().startswith(("redis://", "rediss://")):
            raise UsageError(f"master {master!r} is a broker's URL: give it as "
                             "broker=, and the crawl's name as crawl_name=")
        try:
            address = parse_address(master)
        except ValueError as exc:
            raise UsageError(f"bad master address: {exc}") from exc
        key = (_argument_key(authkey) if authkey is not None
               else load_authkey(None, generate=False))
        client = MasterClient(address, key.key)
    worker = Worker(client,
                    WorkerOptions(out_dir=Path(chosen.output.dir),
                                  threads=chosen.worker.threads,
                                  connect_wait=chosen.worker.connect_wait,
                                  client_cert=client_cert, client_key=client_key,
                                  env_proxies=chosen.http.env_proxies),
                    on_progress=(lambda stats: progress(stats.done, stats.failed, stats.bytes))
                    if progress else None)
    signals = {signal.SIGINT: "interrupted", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
    started = time.monotonic()
    try:
        def on_signal(signum: int, _frame: object) -> None:
            if worker.stopping:
                # A closed terminal sends two SIGHUPs or more; a local worker's master
                # stops it with SIGTERM after the Ctrl-C that reached them both (and
                # kills it if it hangs): neither is a user's second stop.
                if signum == signal.SIGHUP or os.environ.get(STOPPED_BY_ITS_MASTER_ENV):
                    return
                worker.quit_now()  # asked twice: leave now, without the hand-back
                if on_quit_now is not None:
                    on_quit_now()  # (the command exits there: see crawler.cli)
                raise KeyboardInterrupt
            worker.stop(signals[signal.Signals(signum)])
            if on_signal_note is not None:
                on_signal_note(signum)

        with _signals_handled_by(on_signal):
            worker.run()
    finally:
        client.close()  # the calling process is left as it was found
    stats = worker.stats
    return WorkerSummary(stop_reason=str(worker.stop_reason or ""), done=stats.done,
                         failed=stats.failed, bytes=stats.bytes,
                         elapsed_s=round(time.monotonic() - started, 3))
