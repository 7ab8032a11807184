"""Every error the crawler raises on purpose, and the exit status each one ends in.

    CrawlerError                 root; exit 1
    ├── UsageError               bad command line or seed URL; exit 2
    │   ├── CrawlMismatch        the output folder holds a crawl of other seeds or scope; exit 2
    │   └── OutputFolderInUse    another master is crawling into the output folder; exit 2
    ├── ConfigError              bad settings file, key or value; exit 2
    │   └── UnknownSetting       a keyword of crawl() or run_worker() that names no setting
    │                            (a TypeError too); exit 2
    ├── AuthkeyError             a missing, short or unreadable authkey; exit 2
    ├── QueueError               the master's queue cannot be served or reached; exit 1
    │   ├── BindError            the queue port cannot be bound (in use, no permission); exit 4
    │   ├── MasterUnreachable    a worker gave up waiting for its master; exit 1
    │   ├── AuthenticationFailed the master refused our authkey; exit 1
    │   ├── AnotherMastersCrawl  a local worker found another master at its master's address; exit 1
    │   ├── BadCrawlInfo         the master's description of the crawl is malformed; exit 1
    │   └── BrokerError          the Redis broker refused us, or has no such crawl; exit 1
    │       ├── BrokerRefused    the broker refuses writes for its own set-up (full, MISCONF,
    │       │                    replicas, read-only, ACL); exit 6
    │       ├── BrokerUnreachable the Redis broker cannot be reached in time; exit 1
    │       ├── CrawlFormatMismatch the crawl on the broker was started by another version; exit 1
    │       ├── CrawlGone        the crawl's record left the broker while it ran; exit 1
    │       └── CrawlNotFound    the broker holds no crawl of that name (yet); exit 1
    ├── StorageError             the output folder cannot be written (permission, disk full); exit 3
    │   └── JournalDamaged       the crawl journal is not a readable SQLite file; exit 3
    ├── PathConflict             an image's name is taken by something the crawler did not store
    ├── LeaseLost                a worker would store an image whose lease went to another worker
    ├── PartialLost              a download's partial file was removed before it was stored
    ├── WorkerFailed             a worker cannot go on (no download engine); exit 1
    ├── ParserCrashed            a page killed the page parser twice: that page fails
    │   └── ParseTooSlow         a page took its parser past its CPU deadline: that page fails
    ├── PageLoopFailed           the master's page loop stopped on a bug; exit 1
    ├── NothingCrawled           no seed page could be fetched (refused, DNS, TLS…); exit 5
    ├── OutputLost               standard output cannot be written (closed pipe, full); exit 120
    └── InvalidURL               a URL that cannot be crawled (not http(s), no host); exit 2

    KeyboardInterrupt
    ├── Terminated               SIGTERM outside the command's own handling; exit 130
    │                            (a worker: 0, as for a SIGTERM it handles)
    ├── HungUp                   SIGHUP outside the command's own handling; exit 130
    │                            (a worker: 0, as for a hang-up it handles)
    └── StopSaid                 a crawl quit by a second stop, its line already said; exit 130

Download failures are not exceptions that end the program: each becomes a
result line with a reason (see ``crawler.model.outcome``).
"""

from __future__ import annotations

import signal
from typing import NoReturn


class CrawlerError(Exception):
    """The root of every error the crawler raises on purpose."""

    exit_code = 1


class UsageError(CrawlerError):
    exit_code = 2


class CrawlMismatch(UsageError):
    """The output folder holds another crawl; --resume or --fresh says what to do."""


class OutputFolderInUse(UsageError):
    """Another master is crawling into the output folder: two would garble its files."""


class ConfigError(CrawlerError):
    """A settings file, key or value is wrong; the message names the file and the key."""

    exit_code = 2


class UnknownSetting(ConfigError, TypeError):
    """A keyword argument of ``crawl()`` or ``run_worker()`` that names no setting: a
    ConfigError like any wrong setting, and a TypeError like any unknown keyword."""


class AuthkeyError(CrawlerError):
    exit_code = 2


class QueueError(CrawlerError):
    exit_code = 1


class NoHandshake(ConnectionError):
    """What listens at a master's address took the connection and made no handshake:
    most likely another program's port. A connection error still (it is waited out as
    one), whose words say so where the system's reason under it ("resource temporarily
    unavailable") did not."""


class BindError(QueueError):
    exit_code = 4


class MasterUnreachable(QueueError):
    exit_code = 1


class AuthenticationFailed(QueueError):
    exit_code = 1


class NotAMaster(QueueError):
    """What answers at the address took our authkey but offers no crawler board: a
    tutorial's master, or another program's BaseManager."""

    exit_code = 1


class MasterFailed(QueueError):
    """The master raised an error of its own while it answered a call (a fault of the
    master, which logs it): asking again would fail the same way."""

    exit_code = 1


class AnotherMastersCrawl(QueueError):
    """A worker its master started on its host found another master at that address
    (its own died, and another took the port): that one's images are not for the dead
    master's folder."""

    exit_code = 1


class BadCrawlInfo(QueueError):
    """What the master told a joining worker (its rules for the crawl) is malformed: a
    bad pattern, a missing field. The worker cannot download by rules it cannot read."""

    exit_code = 1


class BrokerError(QueueError):
    """The Redis broker refused a login or a command, or holds no such crawl."""

    exit_code = 1


class BrokerRefused(BrokerError):
    """The Redis broker refused the crawl's writes for a reason of its own set-up (full,
    unable to save, short of replicas, a replica, an ACL): the message says what to fix.
    Its own status, so that a master can tell its local workers stopped for it."""

    exit_code = 6


class BrokerUnreachable(BrokerError):
    """The Redis broker did not answer in time (down, wrong address, cut off).

    ``said``: why, in a few words, for a line that goes on waiting (the message ends by
    telling the user to check the address and start again: said while still waiting,
    it contradicted the wait)."""

    exit_code = 1

    def __init__(self, message: str, said: str = "") -> None:
        super().__init__(message)
        self.said = said or message


class CrawlFormatMismatch(BrokerError):
    """The crawl on the broker keeps its state in another format than this crawler's: it
    was started by another version. Every master and worker of one crawl must run the
    same version, or one could not see what another leased."""


class CrawlGone(BrokerError):
    """The crawl's record left the broker while the crawl ran (its keys deleted, Redis
    restarted without its append-only file): there is nothing left to work on."""

    exit_code = 1


class CrawlNotFound(BrokerError):
    """The broker holds no crawl of that name, or none at all: its first master has not
    started it yet, or the name is wrong."""

    exit_code = 1


class StorageError(CrawlerError):
    exit_code = 3


class JournalDamaged(StorageError):
    """The crawl journal (crawl.sqlite) is truncated or holds garbage: nothing resumes
    from it until it is moved away."""

    exit_code = 3


class PathConflict(CrawlerError):
    """An image's name in the image folder is taken by a file or folder the crawler did
    not store there: that image fails, and the worker goes on (its disk is fine)."""


class LeaseLost(CrawlerError):
    """A worker fell silent and the image it was downloading went to another worker:
    it does not store or report it."""


class PartialLost(CrawlerError):
    """A download's partial file was removed before it could be stored (another program
    cleaned the partials folder): that download is tried again, and the worker goes on
    (the folder is its scratch space, made again for the next download)."""


class WorkerFailed(CrawlerError):
    """A worker had to stop by itself; it handed its URLs back to the master first."""

    exit_code = 1


class ParserCrashed(CrawlerError):
    """The parser process died twice on one page (or was closed under it): that page fails."""


class ParseTooSlow(ParserCrashed):
    """A page took its parser longer than its CPU deadline: that page fails, for good."""


class PageLoopFailed(CrawlerError):
    """The master's page loop stopped on a bug (its traceback is logged): the crawl
    stops with what was done recorded, to be resumed."""

    exit_code = 1


class NothingCrawled(CrawlerError):
    """Every seed page failed: a crawl that read nothing is not a success."""

    exit_code = 5


class InvalidURL(CrawlerError, ValueError):
    """A URL that is not an absolute http(s) URL with a host."""

    exit_code = 2


class OutputLost(CrawlerError):
    """What the command prints on standard output cannot be written; 120, as Python's own."""

    exit_code = 120


class Terminated(KeyboardInterrupt):
    """SIGTERM where the command does not handle it itself (as it starts, as it ends):
    it stops the command as Ctrl-C does, where it killed it without a word."""


class HungUp(KeyboardInterrupt):
    """SIGHUP (its terminal closed) where the command does not handle it itself (as it
    starts, before a crawl's own handling): it stops the command as Ctrl-C does, where
    it killed it with the signal's status, 129."""


class StopSaid(KeyboardInterrupt):
    """A crawl quit by a second stop, its line already said with what a rerun does:
    nothing more is to be said of it."""


def raise_stop(signum: int, _frame: object) -> NoReturn:
    """The ``crawler`` command's handler of SIGTERM and SIGHUP where it has none of its
    own: a stop, as Ctrl-C's KeyboardInterrupt is. Where the command handles them (a
    crawl, a worker), its handler takes over from this one, and gives it back after."""
    raise HungUp if signum == signal.SIGHUP else Terminated


def stopped_by(stop: KeyboardInterrupt) -> str:
    """A stop outside the command's own handling, as the command says it."""
    if isinstance(stop, Terminated):
        return "stopped (SIGTERM)"
    return "stopped (SIGHUP)" if isinstance(stop, HungUp) else "interrupted"
