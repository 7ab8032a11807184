"""The master's journal: crawl state in SQLite, so a crawl can resume after a crash.

It records the pages seen and done, the image URLs queued, and each image's
final outcome. A page is marked done in the same transaction that records the
links and images found on it, so after a crash no finished page is fetched
again and nothing found on it is forgotten.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from crawler.errors import JournalDamaged, StorageError
from crawler.model.outcome import Outcome

JOURNAL_NAME = "crawl.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY,
    depth INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS images (
    url TEXT PRIMARY KEY,
    page TEXT,
    outcome TEXT            -- the final Outcome as JSON; NULL while queued
);
"""


@dataclass(frozen=True)
class Resumed:
    pending_pages: list[tuple[str, int]]  # seen but not done: to fetch
    done_pages: set[str]
    pending_images: list[tuple[str, str | None]]  # queued, no outcome yet
    finished_images: set[str]


class Journal:
    def __init__(self, folder: Path | None) -> None:
        """Open the journal in ``folder``; None keeps it in memory (a dry run records nothing)."""
        self.path = folder / JOURNAL_NAME if folder is not None else Path(":memory:")
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from exc

    def close(self) -> None:
        self._db.close()

    def resume(self) -> Resumed:
        with self._reading():
            return self._resume()

    def _resume(self) -> Resumed:
        pending_pages: list[tuple[str, int]] = []
        done_pages: set[str] = set()
        rows = self._db.execute("SELECT url, depth, done FROM pages ORDER BY rowid")
        for url, depth, done in rows:
            if done:
                done_pages.add(url)
            else:
                pending_pages.append((url, depth))
        pending_images: list[tuple[str, str | None]] = []
        finished: set[str] = set()
        for url, page, outcome in self._db.execute(
                "SELECT url, page, outcome FROM images ORDER BY rowid"):
            if outcome is None:
                pending_images.append((url, page))
            else:
                finished.add(url)
        return Resumed(pending_pages, done_pages, pending_images, finished)

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
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO pages (url, depth) VALUES (?, 0)",
                                 [(u,) for u in urls])

    def page_done(self, url: str, links: Iterable[tuple[str, int]],
                  images: Iterable[tuple[str, str, str | None]]) -> None:
        """Record, atomically, a finished page and what was found on it.

        ``images`` are (url, page, outcome JSON or None while queued).
        """
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO pages (url, depth) VALUES (?, ?)",
                                 list(links))
            self._db.executemany(
                "INSERT OR IGNORE INTO images (url, page, outcome) VALUES (?, ?, ?)",
                list(images))
            self._db.execute("UPDATE pages SET done = 1 WHERE url = ?", (url,))

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
        try:
            self._db.execute("ROLLBACK" if exc is not None else "COMMIT")
        except sqlite3.OperationalError as error:
            raise StorageError(f"cannot write the crawl journal {self._path}: {error}") from error
        except sqlite3.DatabaseError as error:
            raise _damaged(self._path, error) from error
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            raise _damaged(self._path, exc) from exc


def _is_damage(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite's OperationalError says the file is damaged, not merely busy or full."""
    return any(word in str(exc) for word in ("malformed", "corrupt", "not a database"))


def _damaged(path: Path, exc: BaseException) -> JournalDamaged:
    return JournalDamaged(
        f"the crawl journal {path} is damaged ({exc}): the crawl cannot resume from it; "
        f"move it away (with {path.name}-wal and {path.name}-shm) to start the crawl afresh")
