"""One master per output folder: a second one would rewrite the files the first appends to.

A master holds an exclusive ``flock`` on ``DIR/crawl.lock`` while it crawls into
``DIR``. The kernel lets go of it however the master ends (a kill -9 included),
so a stale lock never blocks a rerun, and the file itself stays: removing it
would let a third master lock a file the second has just opened. The lock is a
file of its own, not the journal: SQLite locks its file with POSIX locks, which
network file systems may merge with ``flock``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no flock to take
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise OutputFolderInUse(
                f"another master is crawling into {folder} (it holds {self.path}): "
                "wait for it to end, or give this one another --out") from None
        except OSError as exc:  # a file system without locks (some network mounts)
            log.warning("cannot lock %s (%s): a second master started on this folder "
                        "would not be noticed", self.path, exc.strerror or exc)

    def note_queue(self, host: str, port: int) -> None:
        """Write the queue's address into the lock file, where ``crawler status DIR`` finds
        it: a master started with --quiet and --bind HOST:0 said its port nowhere."""
        if self._fd is None:
            return
        every_interface = host in ("0.0.0.0", "::", "")  # noqa: S104 - a comparison
        text = f"{'127.0.0.1' if every_interface else host}:{port}\n".encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text, 0)
        except OSError as exc:  # (a full disk: status then asks for the address)
            log.debug("cannot note the queue's address in %s: %s", self.path, exc)

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


def queue_of(folder: Path) -> str | None:
    """The HOST:PORT of the queue of the master crawling into ``folder`` now, as it noted
    it; None when no master is, or it noted none."""
    if not folder_in_use(folder):
        return None
    try:
        text = (folder / LOCK_NAME).read_bytes()[:300].decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


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
