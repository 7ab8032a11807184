"""The master's journal: crawl state in SQLite, so a crawl can resume after a crash.

It records the pages seen and done, the image URLs queued, and each image's
final outcome. A page is marked done in the same transaction that records the
links and images found on it, so after a crash no finished page is fetched
again and nothing found on it is forgotten. It also records what crawl it is
(seeds, scope, limits), so that a run with other seeds in the same folder is
noticed, and a rerun with a larger depth or image budget goes on from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from crawler.errors import CrawlMismatch, JournalDamaged, StorageError, UsageError
from crawler.model.files import JOURNAL_NAME
from crawler.model.outcome import ROBOTS_UNREACHABLE, Outcome, Requeued

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY,
    depth INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS images (
    url TEXT PRIMARY KEY,
    page TEXT,
    outcome TEXT,           -- the final Outcome as JSON; NULL while queued
    ref TEXT                -- what the page said about it (Outcome.ref) as JSON, or NULL
);
-- A page read under another URL (its redirect's target), which its images name as
-- their page: a rerun finds the page to read again from its images.
CREATE TABLE IF NOT EXISTS redirects (
    final TEXT PRIMARY KEY,
    url TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL     -- JSON
);
"""
# pages.done: 0 to visit, 1 done, 2 done but cut short by the image budget
# (crawl.max_images), so that a rerun with a larger budget visits it again, 3 done
# but not crawled (a final failure; pages.jsonl says why), so that a rerun counts it,
# 4 done at or past the depth limit of the run that read it (crawl.depth): its links
# were not followed, so that a later run with a larger depth visits it again, even where
# an earlier run of the folder had a larger depth still.
_CUT = 2
_FAILED = 3
_AT_DEPTH = 4
# An outcome whose image's name in the image folder was taken (the worker store's
# PathConflict), as this version words its advice and as earlier ones did ("; move it
# away"): the reason, up to the field after it.
_NAME_TAKEN = '%"reason":"cannot store %; move it away%","page":%'
# The meta key of a run's end with no lease outstanding: true only once that run has ended.
_ENDED_HOLDING_NONE = "ended_with_no_lease"


class PageDone(NamedTuple):
    """A finished page and what was found on it, as :meth:`Journal.pages_done` records it."""

    url: str
    links: list[tuple[str, int]]  # (url, depth)
    # (url, page, outcome JSON or None while queued, Outcome.ref as JSON or None)
    images: list[tuple[str, str, str | None, str | None]]
    complete: bool = True  # False when the image budget left some of its images out
    failed: bool = False  # it could not be crawled, and no later run tries it again
    # New links past what the page budget still allows: recorded to visit (a rerun with
    # a larger budget reads them), and held nowhere else (url, depth).
    left: tuple[tuple[str, int], ...] = ()
    # Pages read already, found nearer the seeds: to visit again at that depth (url, depth).
    again: tuple[tuple[str, int], ...] = ()


class Resumed(NamedTuple):
    pending_pages: list[tuple[str, int]]  # seen but not done: to fetch
    done_pages: set[str]
    pending_images: list[tuple[str, str | None, dict[str, Any] | None]]  # url, page, ref
    finished_images: set[str]
    failed_pages: int = 0  # of done_pages, those that could not be crawled


class Reopened(NamedTuple):
    """The done pages a run visits again, by why."""

    limits: int  # its limits are larger (depth, image budget)
    reading: int  # it reads pages for more (image sources, lazy attributes)
    robots: int  # images on them were refused for an unreadable robots.txt

    def __bool__(self) -> bool:
        return any(self)


# SQLite opens a file whose full path (symbolic links resolved) is at most 512 bytes
# long (SQLITE_MAX_PATHNAME), its side file's ("-journal", the longest suffix) included.
_LONGEST_JOURNAL_PATH = 512 - len("-journal")


def check_room_for_journal(out_dir: Path) -> None:
    """UsageError if the crawl journal's path in ``out_dir`` is longer than SQLite opens:
    it refused with "unable to open database file", which read as a disk fault, and the
    master had made its key, its lock and its workers' logs there by then."""
    path = os.path.realpath(out_dir / JOURNAL_NAME)
    length = len(os.fsencode(path))
    if length > _LONGEST_JOURNAL_PATH:
        longest = _LONGEST_JOURNAL_PATH - len(os.fsencode(JOURNAL_NAME)) - 1
        raise UsageError(
            f"the output folder's path is too long for the crawl journal: {path} is "
            f"{length} bytes long, and SQLite, which keeps the journal, opens paths of at "
            f"most {_LONGEST_JOURNAL_PATH} bytes; choose an output folder whose full path is "
            f"at most {longest} bytes long")


class Journal:
    def __init__(self, folder: Path | None) -> None:
        """Open the journal in ``folder``; None keeps it in memory (a dry run records nothing)."""
        self.path = folder / JOURNAL_NAME if folder is not None else Path(":memory:")
        self._depth: int | None = None  # this run's depth limit, once take_up has it
        if folder is not None:
            check_room_for_journal(folder)
            _say_a_folder_in_place_of_its_side_files(self.path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None)
            # NORMAL first: switching a new file to WAL is a write, and at the default
            # (FULL) it syncs the disk once more (4 syncs instead of 3 to open a journal).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(images)")}
            if "ref" not in columns:  # a journal of an earlier version
                self._db.execute("ALTER TABLE images ADD COLUMN ref TEXT")
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_damage(exc):
                # A full or failing disk, a folder in the journal's place: the file may be
                # whole, and moving it away would throw the crawl away.
                raise StorageError(f"cannot open the crawl journal {self.path}: {exc} (is "
                                   "the disk full, or the file not a file?)") from exc
            raise _damaged(self.path, exc) from exc

    def close(self) -> None:
        self._db.close()

    def resume(self) -> Resumed:
        with self._reading():
            return self._resume()

    def _resume(self) -> Resumed:
        pending_pages: list[tuple[str, int]] = []
        done_pages: set[str] = set()
        failed_pages = 0
        rows = self._db.execute("SELECT url, depth, done FROM pages ORDER BY rowid")
        for url, depth, done in rows:
            if done:
                done_pages.add(url)
                failed_pages += done == _FAILED
            else:
                pending_pages.append((url, depth))
        pending_images: list[tuple[str, str | None, dict[str, Any] | None]] = []
        finished: set[str] = set()
        for url, page, outcome, ref in self._db.execute(
                "SELECT url, page, outcome, ref FROM images ORDER BY rowid"):
            if outcome is None:
                pending_images.append((url, page, json.loads(ref) if ref else None))
            else:
                finished.add(url)
        return Resumed(pending_pages, done_pages, pending_images, finished, failed_pages)

    def outcomes(self) -> Iterator[Outcome]:
        with self._reading():
            for (text,) in self._db.execute(
                    "SELECT outcome FROM images WHERE outcome IS NOT NULL ORDER BY rowid"):
                yield Outcome.from_json(text)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Damage found while reading (garbage inside the file, a row that is not an
        outcome) becomes one JournalDamaged, not a traceback."""
        try:
            yield
        except (sqlite3.DatabaseError, json.JSONDecodeError, TypeError, ValueError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_damage(exc):
                raise StorageError(f"cannot read the crawl journal {self.path}: {exc}") from exc
            raise _damaged(self.path, exc) from exc

    def add_seeds(self, urls: Iterable[str]) -> None:
        self.add_pages((u, 0) for u in urls)

    def add_pages(self, pages: Iterable[tuple[str, int]]) -> None:
        """Record pages (URL, depth) to visit, those known already left as they are."""
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO pages (url, depth) VALUES (?, ?)",
                                 list(pages))

    def page_done(self, url: str, links: Iterable[tuple[str, int]],
                  images: Iterable[tuple[str, str, str | None, str | None]],
                  complete: bool = True) -> None:
        """Record, atomically, a finished page and what was found on it."""
        self.pages_done([PageDone(url, list(links), list(images), complete)])

    def pages_done(self, pages: list[PageDone]) -> int:
        """Record finished pages and what was found on them, all in one transaction;
        returns how many of the links they left to the page budget are new here (a link
        that several pages list is counted once).

        One transaction for all the pages a crawl loop pass finished: the
        commit, not the rows, is what costs.
        """
        with self._transaction():
            # A page still to visit that a link finds nearer the seeds takes that depth.
            self._db.executemany(
                "INSERT INTO pages (url, depth) VALUES (?, ?) ON CONFLICT (url) DO UPDATE "
                "SET depth = excluded.depth WHERE excluded.depth < depth AND done = 0",
                [link for page in pages for link in page.links])
            # (an executemany's rowcount is its rows inserted, those ignored not counted)
            left_links = [link for page in pages for link in page.left]
            left = self._db.executemany(
                "INSERT OR IGNORE INTO pages (url, depth) VALUES (?, ?)", left_links).rowcount
            if left < len(left_links):  # some known: nearer the seeds now, as links above
                self._db.executemany(
                    "UPDATE pages SET depth = ?2 WHERE url = ?1 AND depth > ?2 AND done = 0",
                    left_links)
            self._db.executemany("UPDATE pages SET depth = ?2, done = 0 WHERE url = ?1",
                                 [link for page in pages for link in page.again])
            self._db.executemany(
                "INSERT OR IGNORE INTO images (url, page, outcome, ref) VALUES (?, ?, ?, ?)",
                [image for page in pages for image in page.images])
            self._db.executemany(
                "INSERT OR REPLACE INTO redirects (final, url) VALUES (?, ?)",
                [(final, page.url) for page in pages
                 for final in {image[1] for image in page.images} - {page.url}])
            # A page read whole at or past this run's depth limit: its links were not
            # followed (a dry run, whose journal takes up no crawl, has no limit here).
            limit = -1 if self._depth is None else self._depth
            self._db.executemany(
                "UPDATE pages SET done = CASE WHEN ?1 = 1 AND ?2 >= 0 AND depth >= ?2 "
                "THEN ?3 ELSE ?1 END WHERE url = ?4",
                [(_FAILED if page.failed else 1 if page.complete else _CUT, limit, _AT_DEPTH,
                  page.url) for page in pages])
        return max(left, 0)

    # ----- what crawl this is ----------------------------------------------------

    def is_new(self) -> bool:
        """True when nothing was ever recorded here."""
        with self._reading():
            return self._db.execute("SELECT 1 FROM pages LIMIT 1").fetchone() is None

    def meta(self, key: str) -> object:
        with self._reading():
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: object) -> None:
        with self._transaction():
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                             "DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    def run_starts(self) -> bool:
        """Whether the last run ended with no lease outstanding (no worker of it may still
        store an image it left); forgotten now, so that a crash of this run is never
        taken for such an end."""
        ended_holding_none = self.meta(_ENDED_HOLDING_NONE) is True
        self.set_meta(_ENDED_HOLDING_NONE, False)
        return ended_holding_none

    def run_ended(self, *, leases_outstanding: int) -> None:
        """Note how this run ended, for the next one (``run_starts``)."""
        self.set_meta(_ENDED_HOLDING_NONE, leases_outstanding == 0)

    def take_up(self, identity: dict[str, Any], *, depth: int, max_images: int,
                resume: bool, reading: dict[str, list[str]] | None = None) -> Reopened:
        """Check that this journal's crawl is ``identity`` (seeds, scope); note this run's limits.

        A journal of another crawl raises :class:`CrawlMismatch` unless
        ``resume``. A rerun with a larger depth visits again the pages whose
        links the last run did not follow; a larger image budget, the pages it
        cut short; one whose ``reading`` (lists of what a page is read for: the
        image sources, the lazy attributes) holds something the last run's did
        not, every page done (failed ones too); and pages with images refused for an unreadable
        robots.txt are read anew. Returns how many done pages are to be visited
        again, by why.
        """
        limits = self.meta("limits")
        old = limits if isinstance(limits, dict) else {}
        before = self.meta("reading")  # what every page so far was read for
        reopened = for_reading = robots = 0
        self._depth = depth
        if not self.is_new():
            stored = self.meta("crawl")
            if isinstance(stored, dict) and stored != identity and not resume:
                what = " and ".join(part for part in ("seeds", "scope")
                                    if stored.get(part) != identity[part])
                raise CrawlMismatch(
                    f"{self.path.parent} holds a crawl of {', '.join(stored['seeds'])}"
                    f" with other {what}: add --resume to go on with it with this run's"
                    f" {what}, --fresh to start afresh in that folder, or choose another --out"
                    " (in Python: resume=True, fresh=True, out=)")
            robots = self.reopen(robots_refusals=True)
            if isinstance(before, dict) and reading is not None and any(
                    set(values) - set(before.get(key) or ()) for key, values in reading.items()):
                for_reading = self.reopen(read=True)
            # Pages read at the depth limit of a run shallower than this one (the limit
            # noted below is the deepest run's: one in between may have been shallower).
            reopened += self.reopen(shallower_than=depth)
            if isinstance(old.get("depth"), int) and depth > old["depth"]:
                # (and, in a journal of an earlier version, which marks none of them,
                # the pages the deepest run read at its limit)
                reopened += self.reopen(from_depth=old["depth"])
            if old.get("max_images") and (not max_images or max_images > old["max_images"]):
                reopened += self.reopen(cut=True)
        if isinstance(old.get("depth"), int):
            depth = max(depth, old["depth"])  # pages found deeper before stay found
        self.set_meta("crawl", identity)
        self.set_meta("limits", {"depth": depth, "max_images": max_images})
        if reading is not None:
            # What every page read so far was read for: a page this run reads for less
            # than an earlier run did is read again by a later run that reads for more.
            if isinstance(before, dict) and not for_reading:
                reading = {key: sorted(set(values) & set(before.get(key) or values))
                           for key, values in reading.items()}
            self.set_meta("reading", reading)
        return Reopened(limits=reopened, reading=for_reading, robots=robots)

    def pages_at_depth_limit(self, depth: int) -> int:
        """How many pages the runs at ``depth`` read at it, whose links lead to pages
        not read (their count, as the last run said it)."""
        return self._count_at("at_depth_limit", "depth", depth, "pages")

    def note_pages_at_depth_limit(self, depth: int, pages: int) -> None:
        self.set_meta("at_depth_limit", {"depth": depth, "pages": pages})

    def images_left(self, max_images: int) -> int:
        """How many images the last run at the image budget ``max_images`` found past it
        (as it said it), for a rerun at the same budget that reads none of their pages."""
        return self._count_at("images_left", "max_images", max_images, "images")

    def note_images_left(self, max_images: int, images: int) -> None:
        self.set_meta("images_left", {"max_images": max_images, "images": images})

    def _count_at(self, key: str, limit: str, value: int, count: str) -> int:
        """The count ``count`` the meta ``key`` noted, if noted at this ``limit``'s
        ``value`` (a rerun at another reads its own); 0 otherwise, or if malformed."""
        said = self.meta(key)
        if isinstance(said, dict) and said.get(limit) == value:
            noted = said.get(count)
            return noted if isinstance(noted, int) and noted >= 0 else 0
        return 0

    def forget_if_empty(self) -> bool:
        """Forget a crawl that never read a page nor found an image (its seeds failed: a
        mistyped host, a 404, a robots.txt refusal); True when it was forgotten. Nothing
        is lost: another crawl in the folder needs no --fresh for it, and the same one
        starts anew, its seeds tried again (their failures are final only for a crawl
        that read something: a rerun with --ignore-robots, or once the seed is served,
        ended "completed" with nothing read)."""
        if self.is_new():
            return False
        with self._reading():
            read = self._db.execute("SELECT 1 FROM pages WHERE done IN (1, ?, ?) LIMIT 1",
                                    (_CUT, _AT_DEPTH)).fetchone()
            found = self._db.execute("SELECT 1 FROM images LIMIT 1").fetchone()
        if read is not None or found is not None:
            return False
        with self._transaction():
            for table in ("pages", "images", "redirects", "meta"):
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - our own names
        return True

    def reopen(self, *, from_depth: int | None = None, shallower_than: int | None = None,
               read: bool = False,
               cut: bool = False, robots_refusals: bool = False) -> int:
        """Mark done pages to be visited again; returns how many.

        ``from_depth``: pages that deep, whose links a shallower crawl did not
        follow. ``read``: every page done, those that failed too (a link that led to an
        image, not read as a page while links were no image source). ``shallower_than``:
        pages less deep than that which a run read at its depth limit, not following
        their links. ``cut``: pages the image budget cut short. ``robots_refusals``:
        pages with images refused because their host's robots.txt could not be read;
        those images are forgotten, to be found on the page and judged anew.
        """
        reopened = 0
        with self._transaction():
            if from_depth is not None:
                reopened += self._db.execute(
                    "UPDATE pages SET done = 0 WHERE done != 0 AND depth >= ?",
                    (from_depth,)).rowcount
            if shallower_than is not None:
                reopened += self._db.execute(
                    "UPDATE pages SET done = 0 WHERE done = ? AND depth < ?",
                    (_AT_DEPTH, shallower_than)).rowcount
            if read:
                reopened += self._db.execute("UPDATE pages SET done = 0 WHERE done != 0").rowcount
            if cut:
                reopened += self._db.execute(
                    "UPDATE pages SET done = 0 WHERE done = ?", (_CUT,)).rowcount
            # The JSON is compact (no spaces): matched as text, so a damaged row is
            # left for the reading of outcomes to report, not a JSON error here.
            refused = "outcome LIKE ?"
            pattern = f'%"reason":"{ROBOTS_UNREACHABLE}%'
            # Each statement below reads every outcome (0.4 s for 300,000 images, at
            # every start): one look first, as most crawls have no such refusal.
            if robots_refusals and self._db.execute(
                    f"SELECT 1 FROM images WHERE {refused} LIMIT 1",  # noqa: S608
                    (pattern,)).fetchone() is not None:
                # An image names the page it was found on; a page read under its
                # redirect's target is recorded under the URL it was reached by.
                reopened += self._db.execute(
                    f"UPDATE pages SET done = 0 WHERE done != 0 AND url IN "  # noqa: S608
                    f"(SELECT page FROM images WHERE {refused} UNION SELECT redirects.url "
                    f"FROM redirects JOIN images ON images.page = redirects.final "
                    f"WHERE {refused})", (pattern, pattern)).rowcount
                # Only where the page will be read again: it finds them anew.
                self._db.execute(
                    f"DELETE FROM images WHERE {refused} AND page IN "  # noqa: S608
                    "(SELECT url FROM pages WHERE done = 0 UNION SELECT redirects.final "
                    "FROM redirects JOIN pages ON pages.url = redirects.url "
                    "WHERE pages.done = 0)", (pattern,))
        return reopened

    def retry_failures_worth_a_rerun(self) -> Requeued:
        """Queue again the images whose final result was a failure a rerun tries again (a
        timeout, a refused connection, a 5xx or 429 every time; a name taken in the image
        folder, whose message says to move what is in the way, then run the crawl again);
        returns how many, by why."""
        with self._transaction():
            # Matched as text, as in reopen: compact JSON, where a quote inside a string
            # is escaped, so no reason can spell the pattern. A name taken is matched by its
            # reason too, as an earlier version recorded it as final ("...; move it away").
            rows = self._db.execute(
                "SELECT url, outcome LIKE ? FROM images WHERE outcome LIKE ? OR outcome LIKE ?",
                (_NAME_TAKEN, '%"transient":true%', _NAME_TAKEN)).fetchall()
            self._db.executemany("UPDATE images SET outcome = NULL WHERE url = ?",
                                 [(url,) for url, _ in rows])
        name_taken = sum(taken for _, taken in rows)
        return Requeued(passing=len(rows) - name_taken, name_taken=name_taken)

    def images_refused(self, reason: str) -> int:
        """How many images were refused for ``reason``, as their final outcome, at their
        own URL or at a redirect's ("redirected to URL: REASON")."""
        with self._reading():
            # Matched as text, as in reopen: the whole reason, closing quote included.
            row = self._db.execute(
                "SELECT COUNT(*) FROM images WHERE outcome LIKE ? OR outcome LIKE ?",
                (f'%"reason":"{reason}"%', f'%"reason":"redirected to %: {reason}"%'),
            ).fetchone()
        return int(row[0])

    def queue_again(self, urls: Iterable[str]) -> None:
        """Queue again images recorded with a final outcome (a stored file since deleted)."""
        with self._transaction():
            self._db.executemany("UPDATE images SET outcome = NULL WHERE url = ?",
                                 [(url,) for url in urls])

    def record(self, outcomes: Iterable[Outcome]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO images (url, page, outcome) VALUES (?, ?, ?) "
                "ON CONFLICT(url) DO UPDATE SET outcome = excluded.outcome",
                [(o.url, o.page, o.to_json()) for o in outcomes])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            # SQLite may have rolled back itself (a full disk): a failing ROLLBACK then
            # said "no transaction is active" in the place of why the write failed.
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError) and _says_damaged(exc):
                raise _damaged(self._path, exc) from exc
            if isinstance(exc, sqlite3.OperationalError):  # full, read-only, locked
                raise _cannot_write(self._path, exc) from exc
            return  # anything else goes on as it was raised
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise _cannot_write(self._path, error) from error
        except sqlite3.DatabaseError as error:
            raise _damaged(self._path, error) from error


def _say_a_folder_in_place_of_its_side_files(path: Path) -> None:
    """A folder named as the journal's write-ahead log or its shared memory, said as such
    before SQLite opens anything (it said "attempt to write a readonly database", or
    "disk I/O error"). The journal itself is whole: moving the folder away loses nothing."""
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if side.is_dir():
            raise StorageError(f"cannot open the crawl journal {path}: {side} is a folder, "
                               "where a file of the journal's goes; move it away, or choose "
                               "another output folder")


def _cannot_write(path: Path, exc: sqlite3.OperationalError) -> StorageError:
    """A write the journal refused. A lock another program held past SQLite's wait is
    said as such: "database is locked" named neither who nor what to do."""
    if exc.sqlite_errorname in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return StorageError(f"cannot write the crawl journal {path}: another program holds "
                            "it (an sqlite3 shell in a transaction?); end that, then run the "
                            "same command again")
    if exc.sqlite_errorname == "SQLITE_FULL":
        # As a worker says of its images: what to free, and that nothing is lost.
        return StorageError(f"cannot write the crawl journal {path}: the disk is full; free "
                            f"some space on the disk that holds {path.parent}, then run the "
                            "same command again: the crawl goes on where it stopped")
    return StorageError(f"cannot write the crawl journal {path}: {exc}")


def _says_damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether an error SQLite raised in a transaction says the file is damaged: a plain
    DatabaseError ("database disk image is malformed"), or an OperationalError saying
    so. ProgrammingError, IntegrityError and their kin are this program's own mistakes:
    the file is whole, and moving it away, as a damaged one must be, would throw the
    crawl away."""
    if type(exc) is sqlite3.DatabaseError:
        return True
    return isinstance(exc, sqlite3.OperationalError) and _is_damage(exc)


def _is_damage(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite's OperationalError says the file is damaged, not merely busy or full."""
    return any(word in str(exc) for word in ("malformed", "corrupt", "not a database"))


def _damaged(path: Path, exc: BaseException) -> JournalDamaged:
    return JournalDamaged(
        f"the crawl journal {path} is damaged ({exc}): the crawl cannot resume from it; "
        f"move it away (with {path.name}-wal and {path.name}-shm) to start the crawl afresh")
