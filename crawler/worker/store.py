"""Where a downloaded image goes, safely.

``Store`` writes each download to a partial file in ``ROOT/.partial/`` (on the
images' disk: ``ROOT/images/.partial/`` when one is mounted at ``images/``) and only
then renames it onto its final name, so a crash never leaves a half-written
image that looks complete; a file already stored with the same bytes is kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import itertools
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

from crawler.errors import LeaseLost, PartialLost, PathConflict, StorageError
from crawler.model.folders import file_in_the_way
from crawler.model.imageend import ends_whole
from crawler.model.imagetype import (
    SNIFF_BYTES,
    TYPES,
    ImageType,
    sniff,
)
from crawler.model.outcome import IMAGES_DIR, NAME_TAKEN_ADVICE
from crawler.model.processes import process_alive
from crawler.worker.paths import MAX_PATH_BYTES, relative_text

PARTIAL_DIR = ".partial"
"""The folder under the output folder that holds downloads still in progress."""

PARTIAL_SHARDS = 16
"""Sub-folders of PARTIAL_DIR, picked by thread, so threads rarely share one folder's lock."""
# O_BINARY matters on Windows only; O_CLOEXEC exists on POSIX only.
_CREATE_NEW = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))

STALE_AFTER = 3600.0
"""Seconds without a write after which any partial file counts as abandoned."""

# Times a partial file's shard is made again when it vanishes before the file is created
# in it (see Store.close), before that is said as the folder failing.
_SHARD_MAKES = 3

_PARTIAL_SUFFIX = ".part"
# Linux's longest path handed to a system call (PATH_MAX, its closing NUL included): an
# image's is the output folder's, a "/", and up to MAX_PATH_BYTES under it.
_PATH_MAX = 4096
LONGEST_FOLDER_BYTES = _PATH_MAX - 1 - 1 - MAX_PATH_BYTES
_PROBE_SUFFIX = ".probe"


def _folds_case(probe: Path) -> bool:
    """Whether the file system holding the file ``probe`` takes a name in another case
    for it: ``X.probe`` is ``X.PROBE`` there."""
    text = os.fspath(probe)
    try:
        return os.path.samefile(text, text.removesuffix(_PROBE_SUFFIX) + _PROBE_SUFFIX.upper())
    except OSError:  # no such file: the names differ
        return False


# --------------------------------------------------------------------------- storage


class StoredFile(NamedTuple):
    """Where one image is stored, and whether an identical file was already there.

    The paths are kept as text and made pathlib objects only when asked for:
    building both cost 4 us per stored image, and downloads never ask.
    """

    path_text: str
    relative_text: str  # with "/" between parts, on every platform
    size: int
    sha256: str
    skipped: bool

    @property
    def path(self) -> Path:
        return Path(self.path_text)

    @property
    def relative(self) -> PurePosixPath:
        return PurePosixPath(self.relative_text)


class Store:
    """The output folder: partial files in, finished images out, atomically."""

    def __init__(self, root: Path, may_store: Callable[[str], bool] | None = None) -> None:
        """Use ``root`` (created if missing); StorageError if it cannot be written.

        ``may_store(url)``, asked just before an image takes its name, says whether
        its download still counts (the worker still holds its lease); False
        drops the partial and raises LeaseLost.
        """
        self.root = Path(root)
        _check_room_for_paths(self.root)  # before anything is made
        self._may_store = may_store
        self._images = self.root / IMAGES_DIR
        self.partial_dir = _partial_dir_beside(self._images, self.root)
        # Folders already made and checked to lie inside root: one check per folder, not
        # one per file (the per-file resolve() and mkdir() showed in the profile).
        self._folders: set[str] = set()
        self._lock = threading.Lock()
        # Paths as strings on the per-image path: pathlib's parsing cost more CPU than
        # the system calls it wraps (about a quarter of the fast lane's time).
        self._root_text = os.fspath(self.root)
        self._shards: dict[int, str] = {}
        # The output folder and its parents this store makes, deepest first: a worker that
        # never reached its master removes them again (see close_unused).
        self._made = _missing_folders(self.root)
        if self.partial_dir.is_symlink():
            raise _partial_dir_linked(self.partial_dir, self._images)
        try:
            probe = self.partial_dir / _partial_name(_PROBE_SUFFIX)
            for last in (False, False, True):
                self.partial_dir.mkdir(parents=True, exist_ok=True)
                try:
                    probe.touch(exist_ok=False)
                    break
                except FileNotFoundError:
                    # Removed between the two by another worker's store closing on the
                    # same folder, which removes it empty (see close): made again.
                    if last:
                        raise
            self.folds_case = _folds_case(probe)
            probe.unlink(missing_ok=True)  # another Store's clean_partials may have won
            self._resolved_root = self.root.resolve()
        except (OSError, RuntimeError) as exc:
            raise _folder_error(
                exc, self.root, "use output folder", self.root, folder=self.partial_dir
            ) from exc

    def open_partial(self) -> tuple[Path, BinaryIO]:
        """A new, uniquely named partial file under ``ROOT/.partial/``, open for writing.

        Writing to it on a full disk removes it and raises StorageError.
        Close it before ``commit`` or ``discard``.
        """
        text, fd = self._new_partial()
        path = Path(text)
        return path, _PartialFile(io.FileIO(fd, "wb", closefd=True), path)

    def _new_partial(self) -> tuple[str, int]:
        """Create a uniquely named partial file; its path and an open descriptor."""
        # A shard picked by thread: many threads creating and renaming files in one
        # folder contend for its lock, which cost more system time than the writes.
        number = _thread_number() % PARTIAL_SHARDS
        shard = self._shards.get(number)
        if shard is None:
            shard = self._shards[number] = os.fspath(self.partial_dir / f"t{number:02d}")
        try:
            made = 0
            while True:
                path = f"{shard}/{_partial_name(_PARTIAL_SUFFIX)}"
                try:
                    # O_EXCL: fails rather than share a name; mode 0o666 minus the umask,
                    # so stored images get the user's usual permissions.
                    return path, os.open(path, _CREATE_NEW, 0o666)
                except FileExistsError:
                    continue
                except FileNotFoundError:
                    # First use, or removed meanwhile: by hand, or by another worker's
                    # store closing on the same folder, which removes the empty shards
                    # (it may take this one between our mkdir and our open, so a few
                    # times; a folder that keeps vanishing is said below).
                    made += 1
                    if made > _SHARD_MAKES:
                        raise
                    with contextlib.suppress(FileNotFoundError):  # its parent went too
                        os.makedirs(shard, exist_ok=True)
        except OSError as exc:
            raise _folder_error(
                exc, self.partial_dir, "create a partial file in", self.root, self.partial_dir
            ) from exc

    def store_bytes(self, url: str, kind: ImageType, data: bytes, sha256: str, *,
                    tried_before: bool = False) -> StoredFile:
        """Store a whole image held in memory: written to a partial file, renamed into place.

        The same as ``open_partial``, write, close and ``commit``, in fewer system calls.
        """
        partial, fd = self._new_partial()
        try:
            try:
                with memoryview(data) as rest:
                    while rest:
                        rest = rest[os.write(fd, rest):]
            finally:
                os.close(fd)  # may report a delayed write error (NFS, quotas)
        except BaseException as exc:
            _remove_quietly(partial)
            if not isinstance(exc, OSError):
                raise
            if _disk_full(exc):
                raise _folder_error(exc, Path(partial), "write", self.root) from exc
            raise StorageError(f"cannot write {partial}: {exc.strerror or exc}") from exc
        return self._commit_url(partial, url, kind, len(data), sha256, tried_before=tried_before,
                                written=len(data))

    def commit(
        self, partial: Path, url: str, kind: ImageType, size: int, sha256: str, *,
        tried_before: bool = False,
    ) -> StoredFile:
        """Move the closed ``partial`` to where ``url`` belongs, unless it is already there.

        The partial is consumed whatever happens: renamed, removed as a
        duplicate, or removed when committing fails. Raises StorageError when
        the output folder cannot take the file, ValueError when the partial does
        not hold ``size`` bytes (it was not closed, or ``size`` is wrong), PartialLost
        when the partial was removed meanwhile (by another program).

        ``tried_before``: an earlier try of ``url`` may have stored its image and not
        reported it (its worker killed, its master dead). A file it stored of another type
        (so under another name) is then kept and returned, as one of this type is: a URL
        has one file, its first, and a second beside it would be in no manifest line.
        Only then, as looking for every other type's name cost more than the store itself.
        ``store_bytes`` takes it too.
        """
        return self._commit_url(os.fspath(partial), url, kind, size, sha256,
                                tried_before=tried_before)

    def stored_for(self, url: str, *, other_than: ImageType | None = None) -> StoredFile | None:
        """The image an earlier download of ``url`` stored, of whichever type (but
        ``other_than``); None if none.

        A worker killed (or whose master died) between storing an image and reporting
        it leaves the file unreported; the URL's next try may then fail, or bring another
        type (another name). The file stored first is the URL's, as ``commit`` keeps it.
        A file there that holds no whole image (what a crash before the disk was written
        leaves) is not one.
        """
        for kind in TYPES:
            if kind == other_than:
                continue
            relative = relative_text(url, kind, self.folds_case)
            final = f"{self._root_text}/{relative}"
            try:
                fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # none (the usual answer), a link, a fifo
            try:
                held = os.fstat(fd)
                image = _whole_image(fd, held.st_size) if stat.S_ISREG(held.st_mode) else None
                if image is None:
                    continue
                sha256 = hashlib.sha256(image).hexdigest()  # of the bytes judged whole
            except OSError:
                continue
            finally:
                os.close(fd)
            return StoredFile(final, relative, held.st_size, sha256, skipped=True)
        return None

    def _check_lease(self, url: str) -> None:
        if self._may_store is not None and not self._may_store(url):
            # (Or could not be confirmed: the master did not answer in time. It was said
            # to have gone to another worker, in a crawl that had no other.)
            raise LeaseLost(f"not stored: the lease of {url[:200]} is lost, or could not be "
                            "confirmed, after this worker was out of touch with its master; "
                            "the crawl hands it out again")

    def _commit_url(self, partial: str, url: str, kind: ImageType, size: int, sha256: str, *,
                    tried_before: bool, written: int | None = None) -> StoredFile:
        """``commit`` of a written partial, for either way in; it consumes the partial."""
        try:
            self._check_lease(url)
            if tried_before and (earlier := self.stored_for(url, other_than=kind)) is not None:
                _remove_quietly(partial)
                return earlier
            return self._commit(partial, relative_text(url, kind, self.folds_case), size,
                                sha256.lower(), written)
        except BaseException:
            _remove_quietly(partial)
            raise

    def _commit(
        self, partial: str, relative: str, size: int, sha256: str, written: int | None = None,
    ) -> StoredFile:
        final = f"{self._root_text}/{relative}"
        folder = final.rpartition("/")[0]
        if folder not in self._folders:
            self._make_folder(folder, final)
        try:
            if written is None:
                written = os.stat(partial).st_size
        except FileNotFoundError as exc:
            raise _partial_gone(partial, final, self.partial_dir) from exc
        if written != size:
            raise ValueError(f"partial file {partial} holds {written} bytes, not {size}")
        for again in (False, True):
            try:
                _rename_noreplace(partial, final)
            except FileExistsError:
                return self._keep_stored(partial, final, relative, size, sha256)
            except FileNotFoundError as exc:
                if not os.path.exists(partial):
                    raise _partial_gone(partial, final, self.partial_dir) from exc
                if again:
                    raise _folder_error(exc, Path(final), "write", self.root) from exc
                with self._lock:
                    self._folders.discard(folder)  # removed behind our back: make it again
                self._make_folder(folder, final)
                continue
            except OSError as exc:
                if exc.errno == errno.EXDEV:  # a disk mounted below images/: no rename there
                    raise StorageError(
                        f"cannot store {final}: its folder is on another disk than "
                        f"{self.partial_dir}, where downloads are written first; mount that "
                        f"disk at {self._images} or at {self.root}, not below them") from exc
                raise _folder_error(exc, Path(final), "write", self.root) from exc
            break
        return StoredFile(final, relative, size, sha256, skipped=False)

    def _keep_stored(self, partial: str, final: str, relative: str, size: int,
                     sha256: str) -> StoredFile:
        """``final`` exists: keep it, drop ``partial``, and describe what is stored.

        A name belongs to one URL, so the file there came from another download
        of that URL: a worker whose lease ran out while it downloaded (it may
        resume later, or have stored first), or an earlier run. A stored file is
        never replaced; its own size and hash are what gets reported. Except a file
        that is no image (empty, zeros, garbage): no image is stored so, so it is what
        a crash before the file system wrote the image out left behind (or a hand),
        and this download takes its place.
        """
        if size > 0 and _replaced_if_no_image(partial, final, self.root, size, sha256):
            return StoredFile(final, relative, size, sha256, skipped=False)
        _remove_quietly(partial)
        try:
            existing = os.stat(final)
            if stat.S_ISDIR(existing.st_mode):
                raise PathConflict(f"cannot store {final}: a folder the crawler did not make "
                                   f"has this name; {NAME_TAKEN_ADVICE}")
            same = existing.st_size == size and _sha256(final) == sha256
            stored_sha = sha256 if same else _sha256(final)
        except OSError as exc:
            raise _folder_error(exc, Path(final), "read", self.root) from exc
        return StoredFile(final, relative, existing.st_size, stored_sha, skipped=True)

    def _make_folder(self, folder_text: str, final: str) -> None:
        folder = Path(folder_text)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            inside = folder.resolve().is_relative_to(self._resolved_root)
        except (FileExistsError, NotADirectoryError) as exc:
            blocker = file_in_the_way(folder)
            if (blocker is not None and blocker != self._images
                    and blocker.is_relative_to(self._images)):
                # Not the disk failing: one name in the image tree is taken. A file
                # that is the image folder itself takes every name: no image can be
                # stored, as when the folder cannot be written.
                raise PathConflict(f"cannot store {final}: {blocker} is a file the crawler did "
                                   f"not store, where a folder is needed; {NAME_TAKEN_ADVICE}"
                                   ) from exc
            raise _folder_error(exc, Path(final), "write", self.root) from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop
            raise _folder_error(exc, Path(final), "write", self.root) from exc
        if not inside:  # defence in depth: relative_path never climbs, but links can
            raise StorageError(
                f"refusing to write {final}: it resolves outside the output folder "
                f"{self.root} (through a symbolic link?)"
            )
        with self._lock:
            self._folders.add(folder_text)

    def flush_to_disk(self) -> None:
        """Make every file stored so far durable: one syncfs, not an fsync per file."""
        images_disk = self.partial_dir.parent  # root, or images/ when a disk is mounted there
        try:
            fd = os.open(images_disk, os.O_RDONLY)
        except OSError as exc:
            raise _folder_error(exc, images_disk, "sync", self.root) from exc
        try:
            if _SYNCFS is None or _SYNCFS(fd) != 0:
                os.sync()  # no syncfs here (or it failed): flush everything instead
        finally:
            os.close(fd)

    def discard(self, partial: Path) -> None:
        """Remove a partial file that will not be committed; a missing one is fine."""
        try:
            partial.unlink(missing_ok=True)
        except OSError as exc:
            raise _folder_error(exc, partial, "remove", self.root) from exc

    def close(self) -> None:
        """Remove the folders of partial files left empty, and PARTIAL_DIR itself when
        that leaves it empty (made again at the next start): a finished crawl leaves no
        empty folders in the output. Never a file: a worker still at work on the same
        folder keeps its own, and ``os.rmdir`` refuses a folder that holds one; one it
        is about to write into is made again (see ``_new_partial``)."""
        for number in range(PARTIAL_SHARDS):
            _remove_if_empty(self.partial_dir / f"t{number:02d}")
        _remove_if_empty(self.partial_dir)

    def close_unused(self) -> None:
        """Close a store no download went to (its worker never reached a master), and
        remove the output folder too where this store made it and it stays empty: a
        mistyped address or key left an empty ``downloads/`` wherever it was run."""
        self.close()
        for folder in self._made:
            _remove_if_empty(folder)

    def clean_partials(self) -> int:
        """Remove partial files left by a crash; the number removed.

        Several workers may share the output folder, so a partial file is only
        removed when it is abandoned: its process (named in the file name) is
        no longer running on this host, or nothing wrote to it for STALE_AFTER
        seconds (the only test possible for other hosts), or it is not ours.
        """
        try:
            entries = list(self.partial_dir.iterdir())
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise _folder_error(exc, self.partial_dir, "list", self.root) from exc
        removed = 0
        now = time.time()
        for shard in [e for e in entries if e.is_dir() and not e.is_symlink()]:
            with contextlib.suppress(OSError):  # a shard that vanished meanwhile
                entries.extend(shard.iterdir())
        for entry in entries:
            try:
                if entry.is_dir() and not entry.is_symlink():
                    continue  # a shard (walked above), or not ours
                if not _abandoned(entry, now):
                    continue
                entry.unlink()
            except FileNotFoundError:
                continue  # removed by someone else meanwhile
            except OSError as exc:
                raise _folder_error(exc, entry, "remove", self.root) from exc
            removed += 1
        return removed


class _PartialFile(io.BufferedWriter):
    """A partial download open for writing; a full disk removes it and raises StorageError."""

    def __init__(self, raw: io.FileIO, path: Path) -> None:
        super().__init__(raw)
        self._partial = path

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        with self._disk_full_is_fatal():
            return super().write(data)

    def flush(self) -> None:
        with self._disk_full_is_fatal():
            super().flush()

    def close(self) -> None:
        with self._disk_full_is_fatal():
            super().close()

    @contextlib.contextmanager
    def _disk_full_is_fatal(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if not _disk_full(exc):
                raise
            # Closing the raw file first drops the unwritable buffer, so close()
            # does not try (and fail) to flush it again.
            with contextlib.suppress(OSError):
                self.raw.close()
            with contextlib.suppress(OSError):
                self._partial.unlink(missing_ok=True)
            # PARTIAL_DIR/tNN/name: the folder that holds PARTIAL_DIR, on the images' disk.
            raise _folder_error(exc, self._partial, "write", self._partial.parents[2]) from exc


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """Linux's renameat2(2), which can refuse to replace an existing name."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    return function


_RENAMEAT2 = _load_renameat2()


def _replaced_if_no_image(partial: str, final: str, root: Path, size: int,
                          sha256: str) -> bool:
    """Put ``partial`` (of ``size`` bytes hashed ``sha256``) in the place of ``final`` if
    that is a file that holds no whole image (see ``_whole_image``) and not these very
    bytes; whether it did.

    Under a lock on that file, and only while ``final`` is still that file: two
    downloads of one URL finding it so at once (a lease that ran out) would each
    replace it, and report each its own bytes where the disk holds one of them.
    """
    try:
        fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # a link, a fifo, gone: judged as any other below
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = os.fstat(fd)
        if not stat.S_ISREG(held.st_mode) or _whole_image(fd, held.st_size) is not None or (
                held.st_size == size and _sha256(final) == sha256):
            return False
        try:
            now = os.stat(final)
        except OSError:
            return False
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return False  # another download took its place first: that one stays
        try:
            os.replace(partial, final)
        except OSError as exc:  # said, not the empty file reported as a success
            raise _folder_error(exc, Path(final), "write", root) from exc
        return True
    finally:
        os.close(fd)


def _whole_image(fd: int, size: int) -> bytes | None:
    """The bytes of the open file ``fd`` of ``size`` bytes if they are a whole image:
    bytes an image starts with, up to its format's end; else None. A power cut before
    the disk wrote a stored image out leaves it empty, zeros, or its first pages and
    zeros after them; a hand may leave anything."""
    if not size:
        return None
    kind = sniff(os.pread(fd, SNIFF_BYTES, 0))
    if kind is None:
        return None
    data = _read_at_most(fd, size)
    return data if ends_whole(data, kind) else None


def _read_at_most(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes of the open file ``fd`` from its start, its offset untouched
    (a caller reads it again). In pieces: one pread returns at most 2 GiB."""
    pieces = []
    at = 0
    while at < size:
        piece = os.pread(fd, min(size - at, 1 << 30), at)
        if not piece:
            break
        pieces.append(piece)
        at += len(piece)
    return b"".join(pieces)


def _partial_dir_beside(images: Path, root: Path) -> Path:
    """Where partial files go: ``ROOT/.partial``, or ``ROOT/images/.partial`` when a disk
    is mounted at ``images/``, since a partial file is renamed onto its image and a
    rename cannot cross from one file system to another. (No image lands there: every
    image is in a scheme's folder.)"""
    try:
        if images.stat().st_dev != root.stat().st_dev:
            return images / PARTIAL_DIR
    except OSError:  # no images/ yet (made on root's file system), or no root yet
        pass
    return root / PARTIAL_DIR


def _rename_noreplace(source: str, target: str) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (FileExistsError then).

    One atomic step where the system offers one (renameat2, or a hard link), so
    that a worker that lost its lease can never replace what another one stored.
    """
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target),
                      _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), target)
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # No hard links on this file system: check, then rename (a small race remains).
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from exc
        os.rename(source, target)
        return
    os.unlink(source)


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2): flush one file system, not every one as sync(2) does."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()


@cache
def _this_host() -> str:
    # Only characters that are safe in a file name, and never the "~" separator.
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def _partial_name(suffix: str) -> str:
    """``HOST~PID~RANDOM-N.suffix``: unique, and tells clean_partials who owns it.

    RANDOM is drawn once a process and N counts its files: the system calls of a
    fresh pid and random bytes for each file were a few percent of a worker's
    CPU. O_EXCL makes sure anyway that no two downloads share a name.
    """
    this = _this_process
    if this.prefix is None:
        this.prefix = f"{_this_host()}~{os.getpid()}~{secrets.token_hex(6)}-"
    return f"{this.prefix}{next(this.count):x}{suffix}"


class _Process:
    """What names this process's partial files; drawn anew in a forked child."""

    def __init__(self) -> None:
        self.prefix: str | None = None  # "HOST~PID~RANDOM-"
        self.count = itertools.count()

    def forget(self) -> None:
        self.prefix, self.count = None, itertools.count()


_this_process = _Process()
os.register_at_fork(after_in_child=_this_process.forget)


def _thread_number() -> int:
    """This thread's native id, asked of the system once per thread."""
    number: int | None = getattr(_thread, "number", None)
    if number is None:
        number = _thread.number = threading.get_native_id()
    return number


_thread = threading.local()


def _abandoned(entry: Path, now: float) -> bool:
    """Whether the file ``entry`` in PARTIAL_DIR belongs to no running download."""
    host, _, rest = entry.name.partition("~")
    pid_text, _, rest = rest.partition("~")
    if not pid_text.isdecimal() or not rest.endswith((_PARTIAL_SUFFIX, _PROBE_SUFFIX)):
        return True  # not a name open_partial gives: nobody will commit it
    if now - entry.lstat().st_mtime > STALE_AFTER:
        return True
    return host == _this_host() and not process_alive(int(pid_text))


def _disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _check_room_for_paths(root: Path) -> None:
    """StorageError if an image's path under ``root`` could be longer than a system call
    takes: found at the first such image, the error stopped the worker, and the next
    worker given that image stopped the same way."""
    length = len(os.fsencode(root))
    if length > LONGEST_FOLDER_BYTES:
        raise StorageError(
            f"the output folder's path is {length} bytes long ({str(root)[:60]}...): an "
            f"image's path under it takes up to {MAX_PATH_BYTES} bytes more, past the "
            f"{_PATH_MAX}-byte limit of a path on this system; choose an output folder "
            f"whose path is at most {LONGEST_FOLDER_BYTES} bytes long")


def _folder_error(
    exc: BaseException, path: Path, action: str, root: Path, folder: Path | None = None
) -> StorageError:
    """A StorageError for ``exc`` that names the path and says what the user can do.

    ``folder`` (default: the parent of ``path``) is the folder that should exist;
    a file in its place or in place of one of its ancestors is named as the cause.
    """
    if isinstance(exc, OSError) and _disk_full(exc):
        return StorageError(
            f"disk full while writing {path}: free some space on the disk that holds "
            f"{_disk_folder(path, root)}, or choose another output folder"
        )
    blocker = file_in_the_way(path.parent if folder is None else folder)
    if blocker is not None:
        return StorageError(
            f"cannot {action} {path}: {blocker} is a file where a folder is needed; "
            f"move it away or choose another output folder"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        # The folder the entry is made in, or removed from: a link's or rename's target
        # (exc.filename2; exc.filename is then the partial file), else exc.filename.
        entry = exc.filename2 or exc.filename
        denied = Path(os.fsdecode(entry)).parent if entry else path.parent
        return StorageError(
            f"cannot {action} {path}: permission denied on {denied} ({exc.strerror}); "
            "fix its permissions, or choose another output folder")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        # The disk that holds what was written (a folder made in images/ when the store
        # opens): a read-only one mounted at images/ was said as ROOT, a writable folder.
        written = Path(os.fsdecode(exc.filename)) if exc.filename else path
        return StorageError(
            f"cannot {action} {path}: {reason}; the disk that holds "
            f"{_disk_folder(written, root)} is mounted read-only: remount it read-write, or "
            "choose another output folder")
    return StorageError(
        f"cannot {action} {path}: {reason}; check that {root} is a writable folder, "
        f"or choose another output folder"
    )


def _disk_folder(path: Path, root: Path) -> Path:
    """The folder to name for the disk that holds ``path``: ``root``, or the folder below
    it where another disk is mounted (``images/``, most often)."""
    try:
        below = path.relative_to(root).parts[:-1]
    except ValueError:
        return root
    folders = [root, *(root.joinpath(*below[:depth]) for depth in range(1, len(below) + 1))]
    devices = []
    for folder in folders:
        try:
            devices.append(os.stat(folder).st_dev)
        except OSError:
            break  # not made yet: on its parent's disk
    if not devices:
        return root
    return folders[devices.index(devices[-1])]


def _sha256(path: str | Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _partial_dir_linked(partial_dir: Path, images: Path) -> StorageError:
    """A symbolic link in the place of the partials folder: followed, the files already in
    its target would be taken for abandoned downloads and removed, and no download
    written on another disk could be renamed onto its image."""
    return StorageError(f"cannot use {partial_dir}: it is a symbolic link, where the crawler "
                        "keeps its downloads in progress; remove the link (the crawler makes "
                        f"the folder itself; to store images on another disk, mount it at "
                        f"{images})")


def _partial_gone(partial: str, final: str, partial_dir: Path) -> PartialLost:
    return PartialLost(f"partial file {partial} is gone before it was stored as {final}; "
                       f"did another program clean {partial_dir}?")


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing: list[Path] = []
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    return missing


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (the guard), gone, or not a folder
        os.rmdir(folder)


def _remove_quietly(path: str | Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
