"""When this process, or the system, may open no more files: told apart, and said with
what to do (a socket, a pipe and a journal all need a descriptor)."""

from __future__ import annotations

import errno
import resource  # (here, not when needed: out of files, an import cannot open its file)

_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})


def out_of_files(exc: OSError) -> bool:
    return exc.errno in _OUT_OF_FILES


def out_of_files_reason() -> str:
    """Why something could not be opened: the files this process may open are all open."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (f"too many open files (this process may open {soft}: ulimit -n; or the "
            "system's, fs.file-max); raise that limit, or make fewer requests at once")
