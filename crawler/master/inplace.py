"""The output folder and the files a master records into, still where it opened them.

A master appends to its journal and result files through descriptors opened as
it starts. Removed from under it (the folder deleted, moved or replaced by a new
one), those files stay open and take every write: the crawl would go on and say
it completed into files nobody can find any more, and with its lock file gone a
second master could start into the same path. So the master looks, each time it
records results, that every path still names the file it opened, and stops with
an error when one does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from crawler.errors import StorageError

# A file's identity: which file system, which file on it. A file this master holds open
# keeps its number while it does, so a new file at its path has another. A folder is not
# held: one removed and made again (by a worker storing its next image) may get its old
# number back (ext4 gives it at once), and is told by the files it no longer holds.
_Identity = tuple[int, int]


def _identity(path: Path) -> _Identity | None:
    """The identity of the file ``path`` names now; None when it names none."""
    try:
        status = path.stat()
    except OSError:  # gone, or a folder above it gone or unreadable: not the file opened
        return None
    return status.st_dev, status.st_ino


class FilesInPlace:
    """What ``folder`` and the ``names`` in it are now, checked again by ``check``."""

    def __init__(self, folder: Path, names: Iterable[str]) -> None:
        self._folder = folder
        self._opened = {path: _identity(path) for path in [folder, *(folder / n for n in names)]}

    def check(self) -> None:
        """Raise StorageError naming the first path that no longer names what it did."""
        for path, opened in self._opened.items():
            if opened is not None and _identity(path) != opened:
                what = f"the output folder {path}" if path == self._folder else str(path)
                raise StorageError(
                    f"{what} was removed, moved or replaced while the crawl ran: this master "
                    "stops, as what it recorded there would be lost; run the same command "
                    f"again to go on from what {self._folder} holds now")
