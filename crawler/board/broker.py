"""The Redis broker: its address, the connection, and the crawls registered on it.

In broker mode a crawl's state lives in Redis instead of one master's memory
(see ``crawler.board.redis`` for the images, ``crawler.board.redis_frontier``
for the pages). This module owns what comes before: reading
``redis://[user@]HOST:PORT/DB`` (``rediss://`` for TLS), finding the
password where ``ps`` cannot show it, connecting with deadlines on every
call, and the record of each crawl (its settings, seeds and what workers need
to download) that the first master writes and every later master, worker and
``crawler status`` reads.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawler.config import BROKER_PASSWORD_ENV as PASSWORD_ENV
from crawler.config import DEFAULT_CRAWL as DEFAULT_CRAWL
from crawler.errors import (
    BrokerError,
    BrokerRefused,
    BrokerUnreachable,
    CrawlFormatMismatch,
    CrawlNotFound,
    UsageError,
)

# The Redis client is imported when a broker is used: workers of the embedded queue
# never load it.
if TYPE_CHECKING:
    import redis

CONNECT_DEADLINE = 5.0  # seconds to connect to Redis
CALL_DEADLINE = 10.0  # seconds for any one command; the longest script is far shorter
# Seconds for the whole first check (connect, TLS, login, PING): a deadline on each
# read alone let a port answering a byte now and then hold its caller for ever.
CHECK_DEADLINE = 2 * CONNECT_DEADLINE
REGISTRY = "crawler:crawls"  # the names of the crawls on this database
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in to it; ``str()`` never shows the password."""

    host: str
    port: int
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None

    def __str__(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        user = f"{urllib.parse.quote(self.username)}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}/{self.db}"


def parse_broker(url: str, *, password_file: Path | None = None,
                 environ: Mapping[str, str] | None = None, from_command_line: bool = True,
                 ca_file: Path | None = None) -> BrokerAddress:
    """The broker at ``url``; UsageError, saying what is wrong, for anything else.

    The password comes from ``password_file`` or ``$CRAWLER_BROKER_PASSWORD``.
    A password inside a URL given on the command line is refused: every user
    of the machine could read it in ``ps``. (In ``$CRAWLER_BROKER`` it is fine.)
    """
    env = os.environ if environ is None else environ
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError as exc:  # neither the URL nor urlsplit's words (they quote it): a password
        raise UsageError("the broker URL cannot be read (a bracket or a character out of "
                         "place): expected redis://HOST:PORT/DB or rediss://HOST:PORT/DB"
                         ) from exc
    url = _shown(parts)  # what messages may quote: never a password
    if parts.scheme not in ("redis", "rediss"):
        raise UsageError(f"broker {url!r}: expected redis://HOST:PORT/DB or rediss://HOST:PORT/DB")
    if not parts.hostname:
        raise UsageError(f"broker {url!r}: no host")
    try:
        port = parts.port if parts.port is not None else 6379
    except ValueError as exc:
        raise UsageError(f"broker {url!r}: bad port ({exc})") from exc
    if port == 0:  # (was taken for no port: 6379, another server than the one named)
        raise UsageError(f"broker {url!r}: bad port (0)")
    if ca_file is not None and parts.scheme != "rediss":
        raise UsageError(f"broker {url!r}: --broker-ca is for a TLS broker (rediss://); "
                         "this one is plain redis://")
    if ca_file is not None:
        _check_ca_file(ca_file)
    path = parts.path.strip("/") or "0"
    if not (path.isascii() and path.isdigit()):  # "²".isdigit() is true, int() of it fails
        raise UsageError(f"broker {url!r}: the database is a number, not {path!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"broker {url!r}: options after ? or # are not read; "
                         "use the settings or flags")
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if password is not None and from_command_line:
        raise UsageError(f"broker URL with a password: anyone on this machine can read it in "
                         f"ps; put it in a file for --broker-password-file or in ${PASSWORD_ENV}")
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the broker password file {password_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from exc
        if not password:
            raise UsageError(f"the broker password file {password_file} is empty")
    elif env.get(PASSWORD_ENV):
        password = env[PASSWORD_ENV]
    username = urllib.parse.unquote(parts.username) if parts.username else None
    return BrokerAddress(host=parts.hostname, port=port, db=int(path),
                         tls=parts.scheme == "rediss", username=username,
                         password=password, ca_file=ca_file)


def _check_ca_file(ca_file: Path) -> None:
    """A --broker-ca that cannot be read, or holds no certificate, said at once: it was
    said as "cannot reach the broker ... No such file or directory; is redis-server
    running there", and a worker tried it again for its whole --connect-wait."""
    import ssl

    try:
        ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as exc:  # (an OSError too)
        raise UsageError(f"the broker's CA file {ca_file} holds no certificate in PEM form "
                         f"({exc.reason or exc})") from exc
    except OSError as exc:
        raise UsageError(f"cannot read the broker's CA file {ca_file}: "
                         f"{exc.strerror or exc}") from exc


def _shown(parts: urllib.parse.SplitResult) -> str:
    """A URL as messages may show it: any password replaced by ***."""
    if parts.password is None:
        return parts.geturl()
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def check_crawl_name(name: str) -> str:
    """``name`` if it may name a crawl (it becomes part of Redis keys); UsageError if not."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise UsageError(f"crawl name {name!r}: use 1 to 64 letters, digits, '-', '_' or '.'")
    return name


class Connections:
    """How often a client's connections to the broker were made again.

    A connection made again may follow a restart of Redis, and a Redis that
    crashed has lost up to its last second of writes: what a master remembers of
    the crawl beside Redis (the links and images it sent) may be gone there. A
    connection the pool adds for a second thread at once is no such sign.
    """

    def __init__(self) -> None:
        self.again = 0  # connections made a second time (or more)
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()

    def __call__(self, connection: Any) -> None:
        """redis-py's hook for a new connection: set it up as redis-py would, and count it.

        Without a health check: the socket is new, and a check that fails (a login
        refused) would reconnect, and so call this again, without end.
        """
        set_up = getattr(connection, "on_connect_check_health", None)
        if set_up is not None:
            set_up(check_health=False)
        else:  # a redis-py without it: its plain set-up
            connection.on_connect()
        if connection in self._made:
            self.again += 1
        self._made.add(connection)


def _ping_within(probe: redis.Redis, address: BrokerAddress, seconds: float) -> None:
    """``probe.ping()`` (and the connection it opens), over within ``seconds`` in all;
    BrokerUnreachable after that. redis-py bounds each read only: the PING runs on a
    thread of its own, and closing the probe's connection ends a read under way."""
    failed: list[BaseException] = []

    def ping() -> None:
        try:
            probe.ping()
        except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
            failed.append(exc)

    pinging = threading.Thread(target=ping, name="broker-check", daemon=True)
    pinging.start()
    pinging.join(seconds)
    if pinging.is_alive():
        probe.connection_pool.disconnect()  # the thread's read fails, and it ends
        raise BrokerUnreachable(f"the broker at {address} took the connection and did not "
                                f"answer our first command within {seconds:g} s: is "
                                "redis-server running there, and is the address right?")
    if failed:
        raise failed[0]


def connect(address: BrokerAddress, connections: Connections | None = None) -> redis.Redis:
    """A client of the broker whose every call has a deadline; checked with a PING.

    BrokerUnreachable when Redis cannot be reached in time, BrokerError when it
    refuses our login. ``connections`` counts the connections it opens.
    """
    import redis
    import redis.exceptions
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {"host": address.host, "port": address.port, "db": address.db,
                               "username": address.username, "password": address.password,
                               "socket_connect_timeout": CONNECT_DEADLINE,
                               "decode_responses": True}
    if address.tls:
        options.update(ssl=True, ssl_cert_reqs="required", ssl_check_hostname=True,
                       ssl_ca_certs=str(address.ca_file) if address.ca_file else None)
    client = redis.Redis(socket_timeout=CALL_DEADLINE, socket_keepalive=True,
                         health_check_interval=30,
                         # One quick retry rides out a reconnect; a longer outage is the
                         # caller's to wait out (it knows what a lost answer means).
                         retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
                         # Called with the new connection, whatever redis-py's hint says.
                         redis_connect_func=connections,  # type: ignore[arg-type]
                         **options)
    # The check on a connection of its own, one try, CONNECT_DEADLINE for each step: a
    # port that takes connections and never answers is told in seconds (with the
    # client's own deadlines and retry, the login and the PING took 40 s to give up).
    probe = redis.Redis(socket_timeout=CONNECT_DEADLINE, retry=Retry(NoBackoff(), 0),
                        **options)
    try:
        _ping_within(probe, address, CHECK_DEADLINE)
    except redis.AuthenticationError as exc:
        if not address.password:  # redis-py 8 says so as "HELLO must be called ... AUTH"
            empty = (f" (${PASSWORD_ENV} is set, but empty)"
                     if os.environ.get(PASSWORD_ENV) == "" else "")
            raise BrokerError(f"the broker at {address} wants a password: give it with "
                              f"${PASSWORD_ENV} or --broker-password-file{empty}") from exc
        raise BrokerError(f"the broker at {address} refused our login ({_said(exc)}): check "
                          f"${PASSWORD_ENV} or --broker-password-file") from exc
    except redis.ResponseError as exc:
        if "DB index is out of range" in str(exc):  # (said as Redis's words, status 1)
            raise UsageError(f"the broker at {address} has no database {address.db}: its "
                             "databases are numbered from 0 to its 'databases' setting less "
                             "one (16 by default: 0-15)") from exc
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise BrokerError(f"the broker at {address} wants a password ({_said(exc)}): give it "
                              f"with ${PASSWORD_ENV} or --broker-password-file") from exc
        refused = refusal(exc, str(address), probe)
        if refused is not None:
            raise BrokerRefused(refused) from exc
        raise BrokerError(f"the broker at {address} answered {_said(exc)}") from exc
    except (redis.ConnectionError, redis.TimeoutError, socket.gaierror) as exc:
        if address.tls and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            # It answered, over TLS: its certificate is what to fix, not its address.
            hint = ("the CA file given does not sign it" if address.ca_file is not None
                    else "give the CA that signs it with --broker-ca FILE")
            raise BrokerError(f"the broker at {address} has a certificate this host does not "
                              f"trust ({_said(exc)}): {hint}") from exc
        # A plain redis-server waits for a command where TLS waits for its hello: such a
        # port only times out, which said nothing of TLS. The other way round, a TLS
        # port resets the plain command it cannot read as a hello: "reset by peer",
        # which sent the user looking for a redis-server that was running.
        tls = (" (rediss:// speaks TLS: is that port a TLS one? a plain one is redis://)"
               if address.tls else
               " (a TLS port resets a plain connection: for a TLS broker, write rediss://)"
               if _was_reset(exc) else "")
        raise BrokerUnreachable(f"cannot reach the broker at {address}: {_said(exc)}{tls}; "
                                "is redis-server running there, and is the address right?"
                                ) from exc
    except redis.exceptions.InvalidResponse as exc:  # an HTTP or SSH server, say
        raise BrokerError(f"the broker at {address} does not speak Redis's protocol "
                          f"({_said(exc)}): is that a redis-server's port?") from exc
    except redis.RedisError as exc:
        raise BrokerError(f"the broker at {address} failed our first command: "
                          f"{_said(exc)}") from exc
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # A server that speaks the protocol's framing but is no Redis ("+OK" to HELLO,
        # where a map belongs): redis-py fails inside its handshake.
        raise BrokerError(f"the broker at {address} does not answer as Redis does (its "
                          "answer to HELLO is no map): is that a redis-server's port?"
                          ) from exc
    finally:
        probe.close()
    return client


def _was_reset(exc: BaseException) -> bool:
    """Whether the server reset the connection: redis-py says so only in its message,
    the reset itself being the exception it was raised from or during."""
    causes = (exc.__cause__, exc.__context__)
    return (any(isinstance(cause, ConnectionResetError) for cause in causes)
            or "reset by peer" in str(exc))


def _said(exc: BaseException) -> str:
    """What redis-py said, without the full stop it ends some sentences with (the message
    goes on after it)."""
    return str(exc).strip().rstrip(".")


def redis_said(exc: BaseException) -> str:
    """What Redis said in ``exc``, without what redis-py adds: which command of a pipeline
    failed, which line of a script."""
    said = _said(exc)
    said = said.partition(" of pipeline caused error: ")[2] or said
    return said.partition(". script: ")[0]


def refusal(exc: BaseException, where: str, client: redis.Redis | None = None) -> str | None:
    """What to fix, in one line, when the broker at ``where`` refused a command for a
    reason of its own set-up (full, unable to save, short of replicas, a replica, an ACL,
    a command renamed away, protected mode); None for any other error. ``client`` (the
    one refused) may be asked more."""
    import redis.exceptions

    said = redis_said(exc)
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return (f"the Redis broker at {where} is full: its memory reached its maxmemory, and "
                "it refuses writes; raise its maxmemory (CONFIG SET maxmemory, and in its "
                "configuration file) or free memory there, then start this command again: "
                "the crawl carries on from what Redis holds")
    if said.startswith("MISCONF"):  # its last snapshot or append-only write failed
        return (f"the Redis broker at {where} refuses writes: it cannot save to its disk "
                "(MISCONF); its log says why, often a full disk or a folder it may not "
                "write to: fix that, then start this command again: the crawl carries on "
                "from what Redis holds")
    if said.startswith("NOREPLICAS"):
        return (f"the Redis broker at {where} refuses writes: fewer of its replicas are in "
                "touch than its min-replicas-to-write asks for; bring them back (or lower "
                "min-replicas-to-write), then start this command again: the crawl carries "
                "on from what Redis holds")
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        primary = _primary_of(client)
        return (f"the Redis broker at {where} is a read-only replica"
                + (f" of {primary}" if primary else "") + ", which takes no writes: give "
                "--broker its primary's address")
    if isinstance(exc, redis.exceptions.NoPermissionError):
        user = (client.connection_pool.connection_kwargs.get("username")
                if client is not None else None)
        return (f"the Redis broker at {where} refused "
                + (f"user {user!r}" if user else "its default user") + f" a command ({said}): "
                "its ACL must let that user run the crawler's commands, Lua scripts "
                "(@scripting) among them, on the keys ~crawler:{NAME}:* and ~crawler:crawls")
    if said.startswith("unknown command"):
        return (f"the Redis broker at {where} does not know a command the crawler uses "
                f"({said.partition(', with args')[0]}): the crawler needs Redis 6.2 or later, "
                "with none of its commands (EVAL, EVALSHA, SCRIPT among them) renamed away by "
                "rename-command")
    if said.startswith("DENIED"):
        return (f"the Redis broker at {where} takes clients from its own host only: it runs "
                "in protected mode, as it has no password; give it one (requirepass, and "
                f"here ${PASSWORD_ENV} or --broker-password-file), or run this command on "
                "its host")
    return None


def _primary_of(client: redis.Redis | None) -> str | None:
    """``host:port`` of the primary a replica ``client`` talks to follows, if it says."""
    if client is None:
        return None
    try:
        replication = client.info("replication")
        return f"{replication['master_host']}:{replication['master_port']}"
    except Exception:  # noqa: BLE001 - only a detail of a message: INFO may be refused too
        return None


@dataclass(frozen=True)
class BrokerCrawl:
    """One crawl on one broker, connected: what a master or a worker in broker mode holds."""

    address: BrokerAddress
    client: redis.Redis
    name: str
    connections: Connections = field(default_factory=Connections)  # the client's


def open_crawl(address: BrokerAddress, name: str | None) -> BrokerCrawl:
    """Connect to the broker and pick the crawl (``name``, else its only one)."""
    from crawler.board.redis import broker_errors

    connections = Connections()
    client = connect(address, connections)
    try:
        with broker_errors(client):
            return BrokerCrawl(address, client, check_crawl_name(name) if name
                               else only_crawl(client, address), connections)
    except BaseException:
        client.close()
        raise


def broker_time(client: redis.Redis) -> float:
    """The broker's clock, in seconds: the one every host of a crawl reads alike."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


MASTER_SILENCE = 10.0  # seconds without a word (they publish every second) before a
# master of a broker crawl is taken as gone


def masters_of(client: redis.Redis, crawl: str) -> tuple[list[dict[str, Any]], float]:
    """What each master of ``crawl`` last published (``live_masters`` tells which are at
    work), and the broker's time now, the clock their "at" is on."""
    masters = [json.loads(str(text)) for text in client.hvals(keys_prefix(crawl) + "masters")]
    return masters, broker_time(client)


def live_masters(masters: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    return [m for m in masters
            if not m.get("ended") and now - float(m.get("at", 0)) < MASTER_SILENCE]


# The policies by which a full Redis evicts keys without a TTL, such as every key of a
# crawl: with any other (noeviction, volatile-*: the crawler sets no TTL), a full Redis
# refuses writes instead, and the crawl stops with an error that says so.
EVICTING_POLICIES = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})


def set_up_warnings(client: redis.Redis, address: BrokerAddress | str) -> list[str]:
    """What in the broker's set-up may lose the crawl's state without a word: a policy that
    evicts its keys once full, a replica that takes writes. Read at start by masters,
    workers and crawler status; what this user may not read is not said."""
    return [warning for warning in (eviction_warning(client, address),
                                    replica_warning(client, address)) if warning]


def replica_warning(client: redis.Redis, address: BrokerAddress | str) -> str | None:
    """A warning for a broker that is a replica taking writes (replica-read-only no): what
    is written there never reaches its primary, and its next full sync drops it. A
    read-only one refuses the first write, in a line that says so (see ``refusal``)."""
    import redis

    try:
        replication = client.info("replication")
        if replication.get("role") != "slave":
            return None
        primary = f"{replication.get('master_host')}:{replication.get('master_port')}"
        read_only = client.config_get("replica-read-only").get("replica-read-only")
    except redis.RedisError:
        return None
    if read_only != "no":
        return None
    return (f"the Redis broker at {address} is a replica of {primary} that takes writes "
            "(replica-read-only no): what the crawl writes there never reaches its primary, "
            "and its next full sync with it drops the crawl; give --broker its primary's "
            "address")


def eviction_warning(client: redis.Redis, address: BrokerAddress | str) -> str | None:
    """A warning for a broker that would evict the crawl's keys once full; None for one
    that would not, or that does not say (INFO and CONFIG refused to this user)."""
    policy, limit = _memory_policy(client)
    if policy not in EVICTING_POLICIES:
        return None
    try:
        if int(limit or 0) == 0:  # no limit (yet): nothing is evicted
            return None
    except ValueError:
        pass
    return (f"the Redis broker at {address} evicts keys when it is full (maxmemory-policy "
            f"{policy}): an evicted key of the crawl loses its state without a word, and the "
            "crawl may stall or forget work; set maxmemory-policy noeviction (CONFIG SET "
            "maxmemory-policy noeviction, and in its configuration file), with which a full "
            "Redis refuses writes and the crawl stops in a line, to carry on once given room")


def _memory_policy(client: redis.Redis) -> tuple[Any, Any]:
    """The broker's (maxmemory-policy, maxmemory): from INFO, else from CONFIG GET (one of
    them may be refused to this user, or renamed away); (None, None) when neither says."""
    import redis

    try:
        memory = client.info("memory")
        return memory.get("maxmemory_policy"), memory.get("maxmemory")
    except redis.RedisError:
        pass
    try:
        found = client.config_get("maxmemory*")
        return found.get("maxmemory-policy"), found.get("maxmemory")
    except redis.RedisError:
        return None, None


# A crawl whose record is gone (its keys deleted, or Redis restarted without its
# append-only file) takes no more writes: what a master or a worker wrote there would make
# its keys anew, without a record, for a later crawl of that name to start from. Every
# script that writes to a crawl (the board's, in redis_scripts.lua, and the page
# frontier's) starts with CRAWL_GONE_LUA, and answers CRAWL_GONE_ERROR when
# crawl_gone(the crawl's record key) says so; a record key of nil (a board that keeps no
# record) is never gone. ``broker_failure`` tells the answer by its code.
CRAWL_GONE_CODE = "CRAWLGONE"
CRAWL_GONE_ERROR = f"{CRAWL_GONE_CODE} the crawl is gone from the broker"
CRAWL_GONE_LUA = f"""
local CRAWL_GONE = '{CRAWL_GONE_ERROR}'
local function crawl_gone(record) return record and redis.call('EXISTS', record) == 0 end
"""


def why_gone(client: redis.Redis) -> str:
    """Why a crawl's keys may have left the broker, in a parenthesis for a message."""
    import redis

    try:
        evicted = int(client.info("stats").get("evicted_keys", 0))
    except (redis.RedisError, ValueError):
        evicted = 0
    policy = _memory_policy(client)[0] if evicted else None
    if evicted and policy in EVICTING_POLICIES:
        return (f"(Redis has evicted {evicted} key(s) to make room, by its maxmemory-policy "
                f"{policy}, the crawl's among them it seems: set it to noeviction)")
    return "(its keys were deleted, or Redis restarted without its append-only file)"


def is_link_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the broker is out of reach (down, restarting, cut off)."""
    import redis

    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | BrokerUnreachable)


def keys_prefix(crawl: str) -> str:
    """The start of every key of ``crawl``; the braces keep a crawl on one cluster slot."""
    return f"crawler:{{{crawl}}}:"


# What the keys of a crawl on the broker mean (crawler/board/redis*.py): raised whenever
# a version of the crawler reads or writes them otherwise, so that masters and workers of
# different versions never share a crawl. A record without it is format 1. Format 2: a
# worker's leases are in its held set alone, not in the leases sorted set.
BOARD_FORMAT = 2

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""


_NOTHING = object()  # no default given


class CrawlRecord:
    """A crawl's record on the broker: written by its first master, read by the rest.

    ``settings`` are the first master's (a joining master crawls by them, not by
    its own), ``seeds`` and ``identity`` say which crawl it is, ``info`` is what
    a joining worker needs (it holds the request secrets: cookies, headers; the
    broker's login guards it, as the authkey guards the embedded queue), and a
    joining master takes the crawl's request settings from it too (the files'
    contents, not their paths). The request settings alone are written again:
    by a master that starts the crawl again with others (``renew_request``),
    which raises ``generation``, the number workers watch for a change.
    """

    def __init__(self, client: redis.Redis, crawl: str) -> None:
        self.client = client
        self.crawl = check_crawl_name(crawl)
        self.key = keys_prefix(crawl) + "crawl"

    def create(self, *, settings: dict[str, Any], seeds: list[str], identity: dict[str, Any],
               info: dict[str, Any], board: dict[str, Any]) -> bool:
        """Write the record unless the crawl exists; True when this call created it."""
        fields: dict[Any, Any] = {"settings": json.dumps(settings), "seeds": json.dumps(seeds),
                  "identity": json.dumps(identity, sort_keys=True), "info": json.dumps(info),
                  "board": json.dumps(board), "started": json.dumps(broker_time(self.client)),
                  "format": json.dumps(BOARD_FORMAT), "generation": json.dumps(1)}
        # One script: a master killed half-way must not leave half a record.
        create = self.client.register_script(_CREATE)
        flat = [item for pair in fields.items() for item in pair]
        return bool(create(keys=[self.key, REGISTRY], args=[self.crawl, *flat]))

    def exists(self) -> bool:
        return bool(self.client.exists(self.key))

    def worker_info(self) -> dict[str, Any]:
        """What a worker of the crawl is told (``info``), with the ``generation`` of its
        request settings, read together; CrawlNotFound when the crawl is not there."""
        info_text, generation_text = self.client.hmget(self.key, ["info", "generation"])
        info = dict(self._decoded("info", info_text))
        generation = self._decoded("generation", generation_text, None)
        if generation is not None:
            info["generation"] = generation
        return info

    def renew_request(self, request: dict[str, Any], user_agent: str,
                      http: dict[str, Any]) -> bool:
        """Make ``request`` (``RequestOptions.to_wire()``) and ``user_agent`` the crawl's
        request settings, for its workers and for the masters that join it from now
        on (``http``: the ``[http]`` settings they came from, kept in ``settings``);
        True when they differed from the crawl's, whose ``generation`` then went up.

        One transaction: two masters starting at once leave one's settings whole.
        """
        changed = False

        def renew(pipe: redis.client.Pipeline) -> None:
            nonlocal changed
            info_text, settings_text, generation_text = pipe.hmget(
                self.key, ["info", "settings", "generation"])
            info = self._decoded("info", info_text)
            settings = self._decoded("settings", settings_text)
            generation = self._decoded("generation", generation_text, 0)
            changed = (info.get("request") != request or info.get("user_agent") != user_agent)
            if not changed:
                return
            info = {**info, "request": request, "user_agent": user_agent}
            settings = {**settings, "http": http,
                        "crawl": {**settings.get("crawl", {}), "user_agent": user_agent}}
            pipe.multi()
            pipe.hset(self.key, mapping={"info": json.dumps(info),
                                         "settings": json.dumps(settings),
                                         "generation": json.dumps(generation + 1)})
            # The cookies pages set under the old settings (an expired login's session)
            # would override the new cookies file's in the workers' jars.
            pipe.delete(keys_prefix(self.crawl) + "jar")

        self.client.transaction(renew, self.key)
        return changed

    def check_format(self) -> None:
        """CrawlFormatMismatch unless the crawl keeps its state as this crawler does."""
        text = self.client.hget(self.key, "format")
        theirs: object = 1  # a record from before formats were kept
        if text is not None:
            try:
                theirs = json.loads(str(text))
            except ValueError:
                theirs = str(text)
        if type(theirs) is not int or theirs != BOARD_FORMAT:
            from crawler import __version__

            shown = theirs if type(theirs) is int else repr(theirs)
            raise CrawlFormatMismatch(
                f"the crawl {self.crawl!r} on the broker keeps its state in format {shown}, "
                f"and this crawler ({__version__}) in format {BOARD_FORMAT}: it was started by "
                "another version, and every master and worker of a crawl must run the same "
                "one; go on with the version that started it, or start a new crawl (another "
                "--crawl NAME)")

    def field(self, name: str, missing: Any = _NOTHING) -> Any:
        """One field of the record, decoded; BrokerError when the crawl is not there.
        ``missing``: what a record without the field gives (one of an earlier version)."""
        return self._decoded(name, self.client.hget(self.key, name), missing)

    def _decoded(self, name: str, text: Any, missing: Any = _NOTHING) -> Any:
        """Field ``name``'s ``text`` as read from the record, decoded and checked."""
        if text is None and missing is not _NOTHING:
            return missing
        if text is None:
            known = sorted(str(crawl) for crawl in self.client.smembers(REGISTRY))
            raise CrawlNotFound(f"no crawl named {self.crawl!r} on the broker"
                              + (f"; it has {', '.join(known)}" if known else
                                 "; start one with crawler master URL --broker ..."))
        try:
            value = json.loads(str(text))
        except json.JSONDecodeError as exc:
            raise BrokerError(f"the record of crawl {self.crawl!r} on the broker is damaged "
                              f"({name}: {exc})") from exc
        shape = _RECORD_SHAPES.get(name)
        if shape is not None and not shape(value):
            raise BrokerError(f"the record of crawl {self.crawl!r} on the broker is damaged "
                              f"({name}: {str(text)[:60]!r} is not what its masters write)")
        return value


# What each field of a crawl's record holds, as its first master writes it: anyone with
# the broker's login can write there, and a master or worker must not trip on it.
_RECORD_SHAPES: dict[str, Callable[[Any], bool]] = {
    "settings": lambda v: isinstance(v, dict) and all(isinstance(t, dict) for t in v.values()),
    "seeds": lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    "identity": lambda v: isinstance(v, dict),
    "info": lambda v: isinstance(v, dict),
    "board": lambda v: isinstance(v, dict),
    "started": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "generation": lambda v: type(v) is int,
}


def only_crawl(client: redis.Redis, address: BrokerAddress) -> str:
    """The one crawl registered on the broker, for commands given no --crawl."""
    names = sorted(str(name) for name in client.smembers(REGISTRY))
    if len(names) == 1:
        return names[0]
    if not names:
        raise CrawlNotFound(f"no crawl on the broker at {address} yet: start a master first "
                          "(crawler master URL --broker ...)")
    # Which one is the user's to say: a usage error, not a failure of the broker.
    raise UsageError(f"the broker at {address} has several crawls ({', '.join(names)}): "
                     "name one with --crawl")
