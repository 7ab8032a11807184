"""The task board in Redis: one crawl shared by several masters and many workers on many hosts.

:class:`RedisBoard` keeps the rules of the in-memory
:class:`~crawler.board.memory.TaskBoard` (leases, heartbeats, numbered
exchanges applied once, holding reconciliation and ``lost``, retries with
backoff, per-host pacing and concurrency, fair shares among the workers
asking, worker_silence, max_attempts); the same behavioural tests run against
both. What differs is where the state lives: in Redis, so that any number of
processes on any hosts may call the same board at once. Every step that reads
and changes state is one Lua script (``redis_scripts.lua`` beside this
module), which Redis runs alone: two masters or workers never interleave.

Time: without a ``clock`` the scripts read the broker's own ``TIME``, so hosts
whose clocks disagree still agree on every deadline; with one (tests), its
reading is passed in.

The keys, all under ``crawler:{CRAWL}:`` (the braces are a hash tag: a cluster
keeps a whole crawl on one slot, as its scripts need):

============  ================================================================
items         hash: URL -> compact JSON (host, page, ref, state, attempts,
              holder) while unfinished; an empty value once final
q:HOST        list: the host's queued URLs
ready         list: hosts with queued URLs that may be asked, rotated (one URL
              per host per turn); ``paced``: sorted set of those waiting for
              their pace, by time; ``full``: set of those with every slot in
              flight; ``listed``: set of all three
leases        sorted set: URL leased to a holder without a record (the classic
              worker) -> deadline; a worker with a record keeps its leases while
              it calls, and loses them all when it falls silent
delayed       sorted set: URL waiting for a retry -> when it may go again
inflight      hash: host -> URLs leased; ``next``: host -> not asked before;
              ``delay``: host -> seconds between two requests (Crawl-delay);
              ``slow``: host -> its slow-down after a 429 or 503 (seconds between
              two requests: twice the longest of its delays, the page frontier's
              ``pages:delay`` among them, at each; worn off by successes; the
              frontier spaces pages by it too); ``slowed``: when it last grew
w:WORKER      hash: info, first (seen), ask (last asked for work), ex (the
              highest exchange applied), done, failed, bytes
held:WORKER   set: the URLs it holds; ``ph:WORKER``: hash host -> how many
contact       sorted set: worker -> last contact; ``asking``: worker -> last
              ask, for workers not gone; ``gone``: set of gone workers
counts        hash: the ``counts()`` numbers, and ``unfinished``
closed        present once the crawl is closed
results       stream: every final result (see ``drain``)
jar           hash: cookie key -> "VERSION LINE", the cookies the crawl's pages set
              (``publish_cookies``); ``jar_version``: the version of its last change
              (the clock's milliseconds: a restart from older files never lowers it)
said          hash: "HOST<TAB>KIND" -> 1, for each note made for the crawl's user (a
              Retry-After that could not be read, or was cut short); ``news``: stream of
              their lines, for the masters to say (see ``news``)
retry         hash: URL whose final result was a failure a rerun tries again -> its
              host, page, ref and stream entry (JSON), and ``n`` for a name taken in the
              image folder, for a rerun (``retry_failures_worth_a_rerun``);
              and a refusal for an unreadable robots.txt, marked ``j``, which a
              rerun's master judges again (``robots_refusals``)
============  ================================================================

Memory per URL: one hash field of its URL and about 40 bytes of JSON (plus its
page and ref) while unfinished, the URL alone once final; queued, it is in its
host's list too; leased, in its holder's ``held`` set (or ``leases``); delayed,
in ``delayed``. Each final result stays in the ``results`` stream (the Attempt's
JSON without its fields at their default, about 290 bytes for a success), so that
a master that joins later sees every result; a passing failure's page and ref
are kept in ``retry`` besides, until a rerun takes it up. Measured (``benchmarks/
redis_board.py``, URLs of 65 characters): about 280 bytes of the broker's
memory per queued URL, 480 per final one.

The client is made by the caller (``crawler.board.broker.connect``), with
``socket_timeout`` (and ``socket_connect_timeout``) set: every call then ends, and a broker that
cannot be reached or does not answer in time raises
:class:`~crawler.errors.BrokerUnreachable`. The client retries a command whose
connection failed once, after a short pause (``broker.connect``'s ``Retry``): a
script may then run twice, which each of them survives (a put finds its URL, a
report finds it no longer held, a lease whose answer was lost is reconciled by
the next exchange's ``holding``); a longer outage is the caller's to wait out.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import redis
import redis.client
import redis.exceptions

from crawler.board.broker import (
    CRAWL_GONE_CODE,
    CRAWL_GONE_LUA,
    REGISTRY,
    keys_prefix,
    redis_said,
    refusal,
    why_gone,
)
from crawler.board.memory import BOARD_AWAY, BoardPolicy, Settled, retry_after_note
from crawler.errors import BrokerError, BrokerRefused, BrokerUnreachable, CrawlGone, UsageError
from crawler.model.cookies import MAX_COOKIES, cookie_key
from crawler.model.outcome import (
    GIVEN_UP_NOTE,
    GIVEN_UP_REASON,
    Attempt,
    FailureKind,
    Requeued,
    one_line,
)
from crawler.model.pacing import (
    FIRST_SLOW_DOWN,
    SLOW_DOWN_FLOOR,
    SLOW_DOWN_GAP,
    SLOW_DOWN_WEARS_OFF,
)
from crawler.model.urls import host_key_of_normalized
from crawler.model.wire import LeaseAnswer, WorkerInfo

if TYPE_CHECKING:
    from crawler.board.base import Board

log = logging.getLogger(__name__)

FIRST_PAUSE = 0.005  # seconds between two polls of a waiting lease, doubling...
# ...up to this. The embedded board wakes a waiting worker the moment a URL comes;
# here a worker that has gone idle learns of one this late at most. At 0.1 s the
# workers of a real site (whose images come page by page) idled between pages.
LONGEST_PAUSE = 0.02
CHUNK = 1000  # URLs per script call where a call takes a list (Lua's stack is finite)
DRAIN_BATCH = 1000  # results read per XRANGE

_P = ParamSpec("_P")
_R = TypeVar("_R")


# The slow-down of a host that answers 429 or 503, as the embedded board's paces have it.
_SLOW_DOWN_LUA = (f"local FIRST_SLOW_DOWN, SLOW_DOWN_WEARS_OFF = {FIRST_SLOW_DOWN!r}, "
                  f"{SLOW_DOWN_WEARS_OFF!r}\nlocal SLOW_DOWN_FLOOR, SLOW_DOWN_GAP = "
                  f"{SLOW_DOWN_FLOOR!r}, {SLOW_DOWN_GAP!r}\n")
# The words of a host given up, as the embedded board's (printf-style, for string.format;
# ASCII, so that JSON's quoting is Lua's).
_GIVEN_UP_LUA = (f"local GIVEN_UP_REASON, GIVEN_UP_NOTE = {json.dumps(GIVEN_UP_REASON)}, "
                 f"{json.dumps(GIVEN_UP_NOTE)}\n")
_BOARD_AWAY_LUA = f"local BOARD_AWAY = {BOARD_AWAY!r}\n"


def _load_scripts() -> dict[str, str]:
    """Each script's full text: the crawl-gone check every writing script shares with
    the page frontier's (``CRAWL_GONE_LUA``), the board's shared part, then its own
    body, run as a function so that the counters it bumped are written once after it
    returns."""
    text = resources.files("crawler.board").joinpath("redis_scripts.lua").read_text("utf-8")
    shared, *bodies = re.split(r"^-- @script ", text, flags=re.MULTILINE)
    shared = CRAWL_GONE_LUA + _SLOW_DOWN_LUA + _GIVEN_UP_LUA + _BOARD_AWAY_LUA + shared
    return {body.split(":", 1)[0]: f"{shared}\nlocal result = (function()\n-- {body}\nend)()\n"
                                   "flush_bumps()\nreturn result" for body in bodies}


_SCRIPTS = _load_scripts()


def broker_address(client: redis.Redis) -> str:
    """``host:port`` (or the socket path) that ``client`` talks to, for messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextlib.contextmanager
def broker_errors(client: redis.Redis) -> Iterator[None]:
    """Turn redis-py's errors into ours (see ``broker_failure``). Callers that execute
    their own pipeline (see ``queue_puts``) wrap their ``execute`` in it too."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise broker_failure(exc, client) from exc


def broker_failure(exc: redis.exceptions.RedisError, client: redis.Redis) -> BrokerError:
    """Our error for redis-py's ``exc``, raised by a call of ``client``: BrokerUnreachable
    for a connection that failed or timed out, CrawlGone for a crawl whose record left,
    BrokerError, saying what to fix where it can, for a command the broker refused."""
    where = broker_address(client)
    if isinstance(exc, redis.exceptions.AuthenticationError):  # a ConnectionError, not "away"
        return BrokerError(f"the Redis broker at {where} refused our credentials: {exc} "
                           "(check the user and password given for it)")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return BrokerUnreachable(
            f"cannot reach the Redis broker at {where}: {exc} (is redis-server running "
            "there, and reachable from this host? check the broker address, then start the "
            "command again)", said=str(exc))
    if (isinstance(exc, redis.exceptions.ResponseError)
            and redis_said(exc).startswith(CRAWL_GONE_CODE)):  # (in a transaction too)
        return CrawlGone(f"the crawl is gone from the broker at {where} {why_gone(client)}: "
                         "nothing is left there to work on; its master, started again, starts "
                         "it anew")
    if redis_said(exc).startswith("WRONGTYPE"):
        # A key named as the crawler names its own holds a value of another kind: another
        # program's ("crawler:" is a likely prefix), which Redis's own words did not say.
        db = client.connection_pool.connection_kwargs.get("db", 0)
        return BrokerError(
            f"the Redis broker at {where} holds, in database {db}, a key named as the "
            f"crawler's own ({REGISTRY} or crawler:{{NAME}}:...) with another kind of value: "
            "another program keeps its data there; give the crawler a database of its own "
            "(--broker redis://HOST:PORT/N, with another N)")
    refused = refusal(exc, where, client)
    if refused is not None:
        return BrokerRefused(refused)
    return BrokerError(f"the Redis broker at {where} failed a command: {exc}")


def _translated(method: Callable[Concatenate[RedisBoard, _P], _R]
                ) -> Callable[Concatenate[RedisBoard, _P], _R]:
    def call(self: RedisBoard, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with broker_errors(self._client):
            return method(self, *args, **kwargs)
    functools.update_wrapper(call, method)  # its name and docstring
    return call


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(name): _text(value) for name, value in raw.items()}


def _put_args(url: str, host: str, page: str | None, ref: str | None,
              tried_before: bool) -> list[str]:
    """One image's arguments of ``put`` (whose calls take many of them in a row)."""
    return [url, host, _queued_item(host, page, ref, tried_before=tried_before)]


def _settle_now_args(attempt: Attempt, page: str | None, ref: str | None,
                     judged_again: bool) -> list[str]:
    """``settle_now``'s arguments; ``judged_again``: see ``RedisBoard.queue_settle_now``."""
    again = ""
    if judged_again:
        saved: dict[str, object] = {"h": host_key_of_normalized(attempt.url), "j": 1}
        if page is not None:
            saved["p"] = page
        if ref is not None:
            saved["r"] = ref
        again = _dumps(saved)
    return [attempt.url, again, *_result_fields(attempt, page, ref)]


def _queued_item(host: str, page: str | None, ref: str | None, *,
                 tried_before: bool = False) -> str:
    """The JSON of a URL queued with a fresh count of tries (a put's, or one queued
    again): its host, state and tries, and its page, ref and ``t`` mark only when set."""
    item: dict[str, object] = {"h": host, "s": "q", "a": 0}
    if tried_before:
        item["t"] = 1
    if page is not None:
        item["p"] = page
    if ref is not None:
        item["r"] = ref
    return _dumps(item)


def _dumps(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


_ATTEMPT_DEFAULTS = Attempt._field_defaults


def _rerun_mark(attempt: Attempt) -> str:
    """A report's ``transient`` argument to the scripts: "1" for a failure worth another
    try, "n" for a name taken in the image folder (final in this run, where it would only
    fail again, and tried by the next: see Attempt.rerun_tries_again), "r" for another
    failure the next run tries (a TLS one, which a setting fixes), "0" otherwise."""
    if attempt.transient:
        return "1"
    if not attempt.rerun_tries_again:
        return "0"
    return "n" if attempt.kind is FailureKind.NAME_TAKEN else "r"


def _stored(attempt: Attempt) -> str:
    """An attempt's JSON in the results stream: fields at their default left out (it is
    most of a success's), the time to the microsecond. Each final URL keeps one in
    the broker's memory, and it is the larger part of the append-only file."""
    wire = attempt.to_wire()
    wire["elapsed_s"] = round(attempt.elapsed_s, 6)
    return _dumps({name: value for name, value in wire.items()
                   if name not in _ATTEMPT_DEFAULTS or value != _ATTEMPT_DEFAULTS[name]})


class RedisBoard:
    """The Board of a crawl named ``crawl`` in Redis (see crawler.board.base for what each
    call means, and TaskBoard for the rules they keep).

    Several objects, in several processes on several hosts, may share one crawl: each
    call is one script (or, for a waiting lease, a few) that Redis runs alone. Unlike
    TaskBoard it wakes no one: a master polls ``unfinished`` and ``drain``.

    ``drain_from``: the results stream ID after which ``drain`` starts; the default,
    the stream's beginning, gives a new master every result so far.
    """

    def __init__(self, client: redis.Redis, crawl: str, policy: BoardPolicy,
                 clock: Callable[[], float] | None = None, *, drain_from: str = "0-0",
                 recorded: bool = False) -> None:
        """``recorded``: the crawl has a record on the broker (its masters write one
        first), and a worker's calls stop, CrawlGone, once it is gone."""
        if not crawl or any(c in crawl for c in "{}"):
            raise UsageError(f"crawl name {crawl[:100]!r} must be non-empty, without braces")
        self.policy = policy
        self._client = client
        self._clock = clock
        self._prefix = keys_prefix(crawl)
        # KEYS[2], when given, is the record the exchange and reap scripts look for.
        self._keys = [self._prefix, self._prefix + "crawl"] if recorded else [self._prefix]
        self._scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
        self._policy_args = [repr(float(value)) for value in (
            policy.lease_timeout, policy.max_attempts, policy.backoff_base, policy.backoff_max,
            policy.host_delay, policy.host_concurrency, policy.batch_size,
            policy.worker_silence, policy.host_timeouts)]
        self._cursor = drain_from
        self._draining = threading.Lock()  # one cursor, whichever thread drains
        self._news_cursor = "0-0"  # the last entry of ``news`` read

    # ----- the master's side -------------------------------------------------

    def queue_puts(self, pipe: redis.client.Pipeline,
                   images: Iterable[tuple[str, str, str | None, str | None]], *,
                   tried_before: bool = False) -> None:
        """Add ``put`` of each (url, host, page, ref) to the caller's transaction ``pipe``
        (MULTI/EXEC), so that a page's images are queued with the caller's own
        bookkeeping or not at all: one script call per thousand images. Its results
        in ``pipe.execute()`` count the URLs queued (the board had the others); the
        caller wraps that ``execute`` in ``broker_errors``. ``tried_before``: as ``put``'s."""
        args: list[str] = []
        for url, host, page, ref in images:
            args += _put_args(url, host, page, ref, tried_before)
            if len(args) == 3 * CHUNK:
                self._run("put", args, pipe)
                args = []
        if args:
            self._run("put", args, pipe)

    def put(self, url: str, host: str, page: str | None, ref: str | None = None, *,
            tried_before: bool = False) -> bool:
        """Queue ``url`` unless the board already has it; True when queued.

        ``ref`` (a JSON string: what ``page`` said of the image) comes back on its Settled.
        ``tried_before``: as the memory board's (``TaskBoard.put``).
        """
        with broker_errors(self._client):  # one script call: no transaction needed
            return bool(self._run("put", _put_args(url, host, page, ref, tried_before)))

    def queue_settle_now(self, pipe: redis.client.Pipeline, attempt: Attempt,
                         page: str | None, ref: str | None = None, *,
                         judged_again: bool = False) -> None:
        """Add ``settle_now`` to the caller's transaction ``pipe`` (see ``queue_puts``).
        ``judged_again``: a refusal that a rerun's master judges again (its host's
        robots.txt could not be read), kept for ``robots_refusals``."""
        self._run("settle_now", _settle_now_args(attempt, page, ref, judged_again), pipe)

    def settle_now(self, attempt: Attempt, page: str | None, ref: str | None = None) -> None:
        """Record a final result the master decided itself (robots.txt, scope, ...),
        unless the board has the URL already."""
        with broker_errors(self._client):  # one script call: no transaction needed
            self._run("settle_now", _settle_now_args(attempt, page, ref, judged_again=False))

    @_translated
    def robots_refusals(self) -> list[tuple[str, str | None, str | None]]:
        """The refusals for an unreadable robots.txt (url, page, ref) that a rerun judges
        again: by this run's robots.txt, as the embedded mode reads their pages again."""
        refusals = []
        for url, raw in self._client.hscan_iter(self._key("retry"), count=CHUNK):
            saved = json.loads(raw)
            if saved.get("j"):
                refusals.append((_text(url), saved.get("p"), saved.get("r")))
        return refusals

    @_translated
    def judged_again(self, allowed: Iterable[str],
                     refused: Iterable[tuple[Attempt, bool]]) -> int:
        """Apply a rerun's judgement of ``robots_refusals``: the ``allowed`` are queued
        with a fresh set of tries (the crawl is open again), each of the ``refused``
        (its new refusal, and whether that is for an unreadable robots.txt again) takes
        its result's place. How many were queued."""
        for attempt, unreadable in refused:
            saved = self._client.hget(self._key("retry"), attempt.url)
            fields = json.loads(saved) if saved else {}
            self._run("settle_again", [attempt.url, "1" if unreadable else "0",
                                       *_result_fields(attempt, fields.get("p"),
                                                       fields.get("r"))])
        return sum(int(self._run("retry_failed", ["judged", *chunk])[0])
                   for chunk in _chunks(allowed))

    @_translated
    def remember(self, urls: Iterable[str]) -> None:
        """Know ``urls`` as finished (a resumed crawl's results): never queue them again."""
        for chunk in _chunks(urls):
            self._run("remember", chunk)

    @_translated
    def page_host_busy(self, host: str, reason: str, url: str) -> float | None:
        """A page of ``host`` was answered ``reason`` (a 429 or 503): see
        ``TaskBoard.page_host_busy``. The crawl's pages go by the same slow-down (the
        page frontier's scripts read it), so every master's pages and every worker's
        images of the host slow down together."""
        slowed = self._run("page_host_busy", [self._now(), host, reason, url,
                                              *self._policy_args])
        return None if slowed is None else float(_text(slowed))

    def queue_pages_answered(self, pipe: redis.client.Pipeline, hosts: Iterable[str]) -> None:
        """Add to the caller's transaction ``pipe`` (see ``queue_puts``): a page of each
        of ``hosts`` (a host once per page) was answered well, which wears its slow-down
        off as an image's success does."""
        args = list(hosts)
        if args:
            self._run("pages_answered", [self._now(), *args], pipe)

    @_translated
    def set_host_delay(self, host: str, seconds: float) -> None:
        self._run("set_host_delay", [host, repr(float(seconds))])

    def queue_host_delays(self, pipe: redis.client.Pipeline,
                          delays: Mapping[str, float]) -> None:
        """Add ``set_host_delay`` of each host in ``delays`` to the caller's transaction
        ``pipe`` (see ``queue_puts``): put with their images, a Redis that kept the images
        keeps their hosts' delays."""
        args: list[str] = []
        for host, seconds in delays.items():
            args += (host, repr(float(seconds)))
        if args:
            self._run("set_host_delay", args, pipe)

    @_translated
    def publish_cookies(self, lines: list[str]) -> int:
        """Keep the cookie ``lines`` the crawl's pages set, for the workers (see
        ``TaskBoard.publish_cookies``); the jar's version."""
        args = [self._now(), str(MAX_COOKIES)]
        for line in lines:
            key = cookie_key(line)
            if key is not None:
                args += (key, line)
        return int(self._run("publish_cookies", args))

    @_translated
    def cookies_since(self, version: int) -> tuple[int, list[str]]:
        """The jar's version, and the cookie lines that came after ``version``."""
        now, lines = self._run("cookies_since", [str(int(version))])
        return int(now), [_text(line) for line in lines]

    def pages_over(self) -> None:
        """Nothing to do: an answer here waits for no more once it has a URL (the memory
        board's gathers for a moment, until every page is read)."""

    def no_earlier_leases(self) -> None:
        """Nothing to do: no image waits for an earlier run's leases here, which outlive
        a master (the memory board's hold them back for worker_silence)."""

    def stop_lending(self) -> int:
        """The crawl is every master's: its workers go on leasing when one master ends.
        Returns how many URLs workers hold, for all the crawl's masters."""
        return self.counts()["in_flight"]

    @_translated
    def close(self) -> None:
        """Announce the end of the crawl: leases from now on say "closed"."""
        self._client.set(self._key("closed"), 1)

    @_translated
    def close_if_idle(self) -> bool:
        """Close the crawl unless it has work again: pages waiting or leased, or images not
        settled (a master started again meanwhile took up pages set aside). One script,
        so no master's new work can come between the look and the close. True if closed."""
        return bool(self._run("close_if_idle", []))

    def tutorial_workers(self) -> list[dict[str, Any]]:
        """None: tutorial workers speak to the embedded queue only."""
        return []

    @_translated
    def retry_failures_worth_a_rerun(self) -> Requeued:
        """Queue again, with fresh tries, the images whose final result was a failure
        a rerun tries again (a timeout, a refused connection, a 5xx or 429 every time; a
        name taken in the image folder): a rerun's work, as on the embedded queue;
        returns how many, by why. The crawl is open again if any was. Every host given
        up in an earlier run (its timeouts in a row) has its chance again, and its note
        is forgotten (said again if this run gives it up too)."""
        self._run("give_hosts_again", [])
        urls = (_text(url) for url, _ in self._client.hscan_iter(self._key("retry"),
                                                                  count=CHUNK))
        again = name_taken = 0
        for chunk in _chunks(urls):
            queued, taken = self._run("retry_failed", ["passing", *chunk])
            again, name_taken = again + int(queued), name_taken + int(taken)
        return Requeued(passing=again - name_taken, name_taken=name_taken)

    @_translated
    def has_failures_to_retry(self) -> bool:
        return bool(self._client.hlen(self._key("retry")))

    @_translated
    def reopen(self) -> None:
        """The crawl has work again (pages set aside, taken up by a rerun): leases stop
        saying "closed"."""
        self._client.delete(self._key("closed"))

    @property
    @_translated
    def closed(self) -> bool:
        return bool(self._client.exists(self._key("closed")))

    @_translated
    def drain(self) -> list[Settled]:
        """The final results recorded since this object's last drain, by any process;
        the first drain starts at ``drain_from`` (by default, every result so far)."""
        with self._draining:
            settled, cursor = [], self._cursor
            for cursor, result in self._results(self._cursor):  # noqa: B007 - the last counts
                settled.append(result)
            self._cursor = cursor  # only once all were read: a failure loses none
            return settled

    @_translated
    def news(self) -> list[str]:
        """What the board has to tell the crawl's user, since this object's last call (a
        Retry-After it could not read, or cut short: see ``retry_after_note``): each once
        per host for the crawl, whichever worker met it; every master of the crawl reads
        them all."""
        with self._draining:
            entries = cast(list[tuple[Any, Any]], self._client.xrange(
                self._key("news"), f"({self._news_cursor}", "+", count=DRAIN_BATCH))
            if entries:
                self._news_cursor = _text(entries[-1][0])
            return [_fields(raw)["line"] for _, raw in entries]

    @_translated
    def settled_all(self) -> list[Settled]:
        """Every final result of the crawl so far (drain's place is kept)."""
        return [result for _, result in self._results("0-0")]

    @_translated
    def settled_with_ids(self) -> list[tuple[str, Settled]]:
        """Every final result of the crawl so far, with its entry's ID in the results
        stream (what ``fetch_again`` names it by)."""
        return list(self._results("0-0"))

    @_translated
    def fetch_again(self, results: Iterable[tuple[str, Settled]]) -> int:
        """Queue again, with fresh tries, the images of ``results`` (from
        ``settled_with_ids``) whose stored file is gone: each loses its result. Returns
        how many were queued; the crawl is open again if any was."""
        args: list[str] = []
        for entry, settled in results:
            url = settled.attempt.url
            args += (url, entry, _queued_item(host_key_of_normalized(url), settled.page,
                                              settled.ref))
        return sum(int(self._run("fetch_again", args[at:at + 3 * CHUNK]))
                   for at in range(0, len(args), 3 * CHUNK))

    @_translated
    def unfinished(self) -> int:
        """How many URLs have no final result yet."""
        return int(self._client.hget(self._key("counts"), "unfinished") or 0)

    @_translated
    def known(self, url: str) -> bool:
        return bool(self._client.hexists(self._key("items"), url))

    @_translated
    def reap(self) -> int:
        """Put the URLs of expired leases back on the queue; return how many."""
        return int(self._run("reap", [self._now(), *self._policy_args]))

    @_translated
    def counts(self) -> dict[str, int]:
        flat, live = self._run("counts", [self._now(), repr(self.policy.worker_silence)])
        numbers = {_text(flat[at]): int(flat[at + 1]) for at in range(0, len(flat), 2)}
        names = ("queued", "in_flight", "delayed", "done", "retries", "expired",
                 "duplicates", "unknown", "reclaimed", "refused")
        # No tutorial workers: they speak to the embedded queue only.
        return {**{name: numbers.get(name, 0) for name in names}, "workers": int(live),
                "tutorial": 0}

    # TaskBoard's counters, as attributes there.
    retries = property(lambda self: self._count("retries"))
    expired = property(lambda self: self._count("expired"))
    duplicates = property(lambda self: self._count("duplicates"))
    unknown = property(lambda self: self._count("unknown"))
    reclaimed = property(lambda self: self._count("reclaimed"))
    refused = property(lambda self: self._count("refused"))

    @_translated
    def worker_info(self, worker: str) -> Mapping[str, object] | None:
        """What ``worker`` said of itself in its hello (``TaskBoard.worker_info``)."""
        said = self._client.hget(self._key("w:" + worker), "info")
        return None if said is None else dict(json.loads(said))

    @_translated
    def workers(self) -> list[dict[str, Any]]:
        raw = self._run("workers", [self._now(), repr(self.policy.worker_silence)])
        now = float(_text(raw[0]))
        rows = []
        for at in range(1, len(raw), 9):
            name, info_json, first, contact, done, failed, sent = map(_text, raw[at:at + 7])
            held, gone = int(raw[at + 7]), int(raw[at + 8])
            info = json.loads(info_json)
            last_contact, done_n = float(contact), int(done)
            rows.append((float(first), {
                "worker": name, "host": info.get("host"), "pid": info.get("pid"),
                "threads": info.get("threads"), "held": held, "done": done_n,
                "failed": int(failed), "bytes": int(sent),
                "rate": done_n / max(1e-9, last_contact - float(first)),
                "last_contact_s": round(now - last_contact, 2), "gone": bool(gone)}))
        rows.sort(key=lambda row: row[0])  # in the order first seen, as TaskBoard's
        return [row for _, row in rows]

    # ----- the workers' side -------------------------------------------------

    @_translated
    def hello(self, worker: str, info: WorkerInfo) -> None:
        self._run("hello", [self._now(), worker, _dumps(dict(info))])

    @_translated
    def lease(self, worker: str, max_items: int, wait: float) -> LeaseAnswer:
        """Hand out up to ``max_items`` URLs, waiting up to ``wait`` seconds for one.

        Redis cannot wait on a condition: the lease is tried again after short
        pauses (5 ms doubling to 100 ms) until one comes or ``wait`` is over.
        """
        end = time.monotonic() + max(0.0, wait)
        limit = self._limit(max_items)
        return self._wait_for_tasks(worker, limit, end, self._lease_once(worker, limit))

    @_translated
    def report(self, worker: str, attempts: Iterable[Attempt]) -> int:
        """Record ``worker``'s results for URLs it holds; the number recorded."""
        attempts = list(attempts)
        recorded, unknown, duplicates = self._run("report", [
            self._now(), worker, str(len(attempts)), *self._policy_args,
            *self._report_args(attempts)])
        self._log_ignored(worker, unknown, duplicates)
        return int(recorded)

    @_translated
    def refuse(self, worker: str, why: str) -> None:
        """Count and log a report an adapter refused as malformed."""
        self._client.hincrby(self._key("counts"), "refused", 1)
        log.warning("refused a report from %s: %s", one_line(worker), one_line(why))

    @_translated
    def heartbeat(self, worker: str) -> bool:
        """Renew every lease ``worker`` holds; True while the crawl goes on."""
        return bool(self._run("heartbeat", [self._now(), worker, self._policy_args[0]]))

    @_translated
    def release(self, worker: str, urls: Iterable[str]) -> None:
        """Take back URLs a stopping worker holds but will not finish."""
        for chunk in _chunks(urls):
            self._run("release", [worker, *chunk])

    @_translated
    def exchange(self, worker: str, number: int, reports: Iterable[Attempt],
                 released: Iterable[str], max_items: int, wait: float,
                 holding: Iterable[str] | None = None) -> LeaseAnswer:
        """A worker's one round trip, applied once, its leases reconciled: see
        ``TaskBoard.exchange``. The release, the reports, the reconciliation and the
        first try at a lease are one script; only a wait for work polls again."""
        end = time.monotonic() + max(0.0, wait)
        attempts, given_back = list(reports), list(released)
        held = list(holding) if holding is not None else []
        limit = self._limit(max_items) if max_items > 0 else 0
        stale, closed, tasks, lost, unknown, duplicates, generation, jar = self._run("exchange", [
            self._now(), worker, str(number), str(limit), "1" if holding is not None else "0",
            str(len(attempts)), str(len(given_back)), str(len(held)), *self._policy_args,
            *self._report_args(attempts), *given_back, *held])
        self._log_ignored(worker, unknown, duplicates)
        answer = LeaseAnswer(closed=bool(closed), tasks=self._tasks(tasks))
        if jar:
            answer["cookies"] = int(jar)
        if not stale:
            if limit > 0:
                answer = self._wait_for_tasks(worker, limit, end, answer)
            if lost:
                answer["lost"] = [_text(url) for url in lost]
        if generation is not None:
            # Which settings these leases go by: a worker that has others takes them up
            # before it starts these (see crawler.board.broker.CrawlRecord.renew_request).
            with contextlib.suppress(ValueError):  # (anyone with the login may write there)
                answer["generation"] = int(_text(generation))
        return answer

    @_translated
    def goodbye(self, worker: str) -> None:
        self._run("goodbye", [worker])

    # ----- internals ---------------------------------------------------------

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _now(self) -> str:
        """The time the scripts work by: ours when a clock was given, else the broker's."""
        return "" if self._clock is None else repr(float(self._clock()))

    def _run(self, script: str, args: list[str],
             pipe: redis.client.Pipeline | None = None) -> Any:
        if pipe is not None:
            return self._scripts[script](keys=self._keys, args=args, client=pipe)
        try:
            return self._scripts[script](keys=self._keys, args=args, client=self._client)
        except redis.exceptions.NoScriptError:
            # redis-py loaded the script again after a NoScript (Redis restarted), and a
            # restart between that load and its call lost it too: once more by its text
            # (EVAL), which nothing on the server can lose. Nothing ran: a NoScript runs
            # no part of a script.
            return self._client.eval(_SCRIPTS[script], len(self._keys), *self._keys, *args)

    def _count(self, name: str) -> int:
        with broker_errors(self._client):
            return int(self._client.hget(self._key("counts"), name) or 0)

    def _limit(self, max_items: int) -> int:
        return max(1, min(max_items, self.policy.batch_size))

    def _lease_once(self, worker: str, limit: int) -> LeaseAnswer:
        closed, tasks, jar = self._run("lease", [self._now(), worker, str(limit),
                                                 *self._policy_args])
        answer = LeaseAnswer(closed=bool(closed), tasks=self._tasks(tasks))
        if jar:  # the cookies these tasks need, or later ones
            answer["cookies"] = int(jar)
        return answer

    def _wait_for_tasks(self, worker: str, limit: int, end: float,
                        answer: LeaseAnswer) -> LeaseAnswer:
        pause = FIRST_PAUSE
        while not answer["tasks"] and not answer["closed"]:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(pause, remaining))
            pause = min(2 * pause, LONGEST_PAUSE)
            answer = self._lease_once(worker, limit)
        return answer

    @staticmethod
    def _tasks(flat: list[Any]) -> list[tuple[str, int]]:
        return [(_text(flat[at]), int(flat[at + 1])) for at in range(0, len(flat), 2)]

    def _report_args(self, attempts: list[Attempt]) -> list[str]:
        args: list[str] = []
        for attempt in attempts:
            # (A success has no Retry-After: its host's key is not worked out for nothing.)
            note = None if attempt.ok else retry_after_note(
                attempt, host_key_of_normalized(attempt.url), self.policy)
            args += [attempt.url, "1" if attempt.ok else "0", _rerun_mark(attempt),
                     repr(float(attempt.retry_after)) if attempt.retry_after else "",
                     str(attempt.bytes or 0), repr(random.uniform(0.5, 1.0)),  # backoff jitter
                     attempt.reason if attempt.host_is_busy else "", _stored(attempt),
                     "\t".join(note) if note is not None else "",
                     "t" if attempt.timed_out else "a" if attempt.host_answered else "",
                     attempt.hop_host or ""]
        return args

    @staticmethod
    def _log_ignored(worker: str, unknown: list[Any], duplicates: list[Any]) -> None:
        for url in unknown:
            log.warning("refused a report from %s for %.200r: no such URL was queued",
                        one_line(worker), _text(url))
        for url in duplicates:
            log.info("ignored a report from %s for %.200s: it no longer holds that URL",
                     worker, _text(url))

    def _results(self, after: str) -> Iterator[tuple[str, Settled]]:
        """The results stream's entries after ID ``after``, oldest first."""
        stream = self._key("results")
        while True:
            entries = cast(list[tuple[Any, Any]],
                           self._client.xrange(stream, f"({after}", "+", count=DRAIN_BATCH))
            for raw_id, raw in entries:
                after = _text(raw_id)
                fields = _fields(raw)
                yield after, Settled(Attempt.from_wire(json.loads(fields["attempt"])),
                                     fields.get("page"), fields.get("worker"),
                                     int(fields["attempts"]), fields.get("ref"))
            if len(entries) < DRAIN_BATCH:
                return


if TYPE_CHECKING:
    def _is_a_board(board: RedisBoard) -> Board:  # mypy checks it keeps the protocol
        return board


def _result_fields(attempt: Attempt, page: str | None, ref: str | None) -> list[str]:
    """A result the master decided itself, as the fields of its stream entry."""
    fields = ["attempt", _stored(attempt), "attempts", "0"]
    if page is not None:
        fields += ["page", page]
    if ref is not None:
        fields += ["ref", ref]
    return fields


def _chunks(urls: Iterable[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for url in urls:
        chunk.append(url)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
