"""One master per output folder: a second one would rewrite the files the first appends to.

A master holds an exclusive ``flock`` on ``DIR/crawl.lock`` while it crawls into
``DIR``. The kernel lets go of it however the master ends (a kill -9 included),
so a stale lock never blocks a rerun, and the file itself stays: removing it
would let a third master lock a file the second has just opened. The lock is a
file of its own, not the journal: SQLite locks its file with POSIX locks, which
network file systems may merge with ``flock``'s.

The file holds one line of what the master holding it noted, for ``crawler status
DIR``: its queue's HOST:PORT, or the broker and crawl it works on. What the line says
counts only while a master holds the lock, and the next master empties it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from pathlib import Path

from crawler.errors import OutputFolderInUse, StorageError
from crawler.model.files import LOCK_NAME

log = logging.getLogger(__name__)

_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # (not on Windows, which has no links to follow)

# Descriptors of the locks this process holds. A forked child (a page parser, a local
# worker) closes its copies at once: the lock is the master's alone, and is let go
# when the master ends, however its children are doing.
_held: set[int] = set()


def _close_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class FolderLock:
    """The lock on one output folder, taken at once or refused with OutputFolderInUse."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        try:
            # O_NOFOLLOW: a link would have the lock made wherever it points.
            self._fd: int | None = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | _NO_FOLLOW, 0o644)
        except OSError as exc:
            raise _cannot_create(self.path, exc) from exc
        _held.add(self._fd)
        if importlib.util.find_spec("fcntl") is None:  # not a POSIX system: no flock to take
            return
        try:
            _lock_at_once(self._fd)
        except BlockingIOError:
            self.release()
            raise OutputFolderInUse(
                f"another master is crawling into {folder} (it holds {self.path}): "
                "wait for it to end, or give this one another --out") from None
        except OSError as exc:  # a file system without locks (some network mounts)
            log.warning("cannot lock %s (%s): a second master started on this folder "
                        "would not be noticed", self.path, exc.strerror or exc)
        # What the last master noted (its queue's address) is no longer so.
        self._note("")

    def note_queue(self, address: str) -> None:
        """Write the queue's HOST:PORT, as this host reaches it, into the lock file, where
        ``crawler status DIR`` finds it: a master started with --quiet and --bind HOST:0
        said its port nowhere."""
        self._note(address)

    def note_broker(self, broker: str, crawl: str) -> None:
        """Write the broker (its URL without a password) and the crawl's name, for
        ``crawler status DIR`` to say how to ask it."""
        self._note(f"{BROKER_NOTE} {broker} {crawl}")

    def _note(self, text: str) -> None:
        if self._fd is None:
            return
        data = (text + "\n").encode() if text else b""
        try:
            # Written before the old text is cut off: a reader meets the new line, or the
            # old one whole (both end in a line break, and only the first line is read).
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError as exc:  # (a full disk: status then asks for the address)
            log.warning("cannot note the queue's address in %s (%s): crawler status DIR "
                        "will not find this master", self.path, exc.strerror or exc)

    def release(self) -> None:
        if self._fd is not None:
            _held.discard(self._fd)
            os.close(self._fd)  # closing the last descriptor lets the lock go
            self._fd = None


def _cannot_create(path: Path, exc: OSError) -> StorageError:
    """The lock file cannot be made: a folder or a link in its place is named as such (the
    system said only "Is a directory", or "No such file or directory" of a dangling link)."""
    if path.is_symlink():
        what = "a symbolic link"
    elif path.is_dir():
        what = "a folder"
    else:
        return StorageError(f"cannot create {path}: {exc.strerror or exc}")
    return StorageError(f"cannot create {path}: it is {what}, where the crawler's lock file "
                        "goes; move it away, or choose another output folder")


BROKER_NOTE = "broker"  # a broker master's note: "broker URL CRAWL"


def noted_by_master(folder: Path) -> str | None:
    """What the master crawling into ``folder`` now noted in its lock file: its queue's
    HOST:PORT, or ``broker URL CRAWL``; "" when it noted nothing (a master of an older
    version, or one just started); None when no master is crawling into it."""
    if not folder_in_use(folder):
        return None
    try:
        with (folder / LOCK_NAME).open("rb") as lock_file:
            line = lock_file.readline(1000)
    except OSError:
        return ""
    return line.decode("utf-8", "replace").strip() if line.endswith(b"\n") else ""


def _lock_at_once(fd: int) -> None:
    """Take the lock, or BlockingIOError if a master holds it. ``folder_in_use`` holds a
    shared lock for a moment to look: a master started then was refused as if another
    crawled there, so a refusal is asked again for half a second."""
    import fcntl

    deadline = time.monotonic() + 0.5
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def folder_in_use(folder: Path) -> bool:
    """Whether a master is crawling into ``folder`` now (it holds the folder's lock)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: no master ever crawled here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # (and with it the shared lock, if it was taken)
    return False
