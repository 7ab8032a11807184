"""The folders a crawl writes into: made, or refused with a reason a user can act on.

``mkdir(exist_ok=True)`` over a file says only "File exists", and a path under a
file "Not a directory": both leave the user to find which part is the file.
"""

from __future__ import annotations

from pathlib import Path

from crawler.errors import StorageError


def file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing one of ``folder`` and its ancestors if it is not a folder."""
    for ancestor in (folder, *folder.parents):
        try:
            if ancestor.exists():
                return None if ancestor.is_dir() else ancestor
        except OSError:
            return None
    return None


def make_folder(folder: Path, what: str) -> None:
    """Make ``folder`` (and its parents) if missing; :class:`StorageError` naming ``what``
    ("the output folder") and the file in the way, or the system's reason, if it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = file_in_the_way(folder)
        if blocker is not None:
            raise StorageError(f"cannot create {what} {folder}: {blocker} is a file where a "
                               "folder is needed; move it away or choose another path") from exc
        raise StorageError(f"cannot create {what} {folder}: {exc.strerror or exc}") from exc


def folder_in_place_of_file(path: Path, doing: str) -> StorageError:
    """The error for a folder with the name of one of the crawler's files, named with what
    to do (the system says only "Is a directory", of no path)."""
    return StorageError(f"cannot {doing}: {path} is a folder, where a file of the crawler's "
                        "goes; move it away, or choose another output folder")


def link_in_place_of_file(path: Path, doing: str) -> StorageError:
    """The error for a symbolic link with the name of a file the crawler adds to: written
    through, the file it names (anywhere) would take the crawl's lines."""
    return StorageError(f"cannot {doing}: {path} is a symbolic link, where a file of the "
                        "crawler's goes, and would be written through; move it away, or "
                        "choose another output folder")
