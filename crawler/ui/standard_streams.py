"""The standard streams as the command found them: closed, or going away as it runs.

A crawl's log lines, progress and summary go to standard error; its results go
to files. When standard error can no longer be written (``crawler master URL
2>&1 | head -1``: the reader quit; a full disk under ``2> file``), every later
write there would raise from wherever it happens (the queue's address, a log
line, a progress line, the summary) and end the crawl half-way. Instead, the
first failed write points the descriptor at ``/dev/null``, and the command goes
on and records everything as it would have with its terminal there.

A stream closed before the start (``>&-``, ``2>&-``) leaves Python no stream at
all (``None``), and its descriptor free for the next file opened, which a stray
write would then corrupt. Each gets a descriptor that holds the place: standard
error and input ``/dev/null``; standard output ``/dev/null`` opened for reading
only, so what the command prints there fails as a closed pipe does, and is said.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

STDIN, STDOUT, STDERR = 0, 1, 2


class _StderrFile(io.RawIOBase):
    """Standard error's descriptor, whose writes never fail: a failed one sends it,
    and every later one, to /dev/null."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def fileno(self) -> int:
        return self._fd  # for the terminal's size

    def isatty(self) -> bool:
        return os.isatty(self._fd)  # live lines on a terminal, plain ones elsewhere

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int | None:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return None  # a full non-blocking pipe: the buffer above keeps it for later
        except OSError:
            _open_devnull_at(self._fd, os.O_WRONLY)
            return memoryview(data).nbytes  # dropped, as everything after


def _open_devnull_at(fd: int, flags: int) -> None:
    with contextlib.suppress(OSError):  # no /dev/null: the writes failing is all we lose
        devnull = os.open(os.devnull, flags)
        if devnull != fd:
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)


def _is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def hold_closed_descriptors() -> None:
    """Give standard input, output and error that were closed a descriptor each (see
    the module's docstring), and standard output a stream whose writes fail. Standard
    input stays ``None`` for Python: ``-i -`` says it is closed."""
    for fd, flags in ((STDIN, os.O_RDONLY), (STDOUT, os.O_RDONLY), (STDERR, os.O_WRONLY)):
        if _is_closed(fd):
            _open_devnull_at(fd, flags)
    if sys.stdout is None and not _is_closed(STDOUT):
        # Its writes fail with EBADF, as the closed descriptor's did.
        sys.stdout = open(STDOUT, "w", encoding="utf-8", closefd=False)  # noqa: SIM115


def keep_going_without_stderr() -> None:
    """Make ``sys.stderr`` a stream on descriptor 2 whose writes never fail (see the
    module's docstring). Only for a process the command owns: it replaces ``sys.stderr``
    for good. Without descriptor 2 (closed, and nothing to hold its place), it is left."""
    if _is_closed(STDERR):
        return
    old = sys.stderr
    if old is not None:
        try:
            old.flush()
        except (OSError, ValueError):
            _open_devnull_at(STDERR, os.O_WRONLY)
    # As Python opens it: line-buffered, and characters the encoding lacks escaped.
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(_StderrFile(STDERR)),
                                  encoding=getattr(old, "encoding", None) or "utf-8",
                                  errors="backslashreplace", line_buffering=True)
