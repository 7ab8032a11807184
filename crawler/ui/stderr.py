"""Standard error that may go away: what the command says there is not its work.

A crawl's log lines, progress and summary go to standard error; its results go
to files. When standard error can no longer be written (``crawler master URL
2>&1 | head -1``: the reader quit; a full disk under ``2> file``), every later
write there would raise from wherever it happens (the queue's address, a log
line, a progress line, the summary) and end the crawl half-way. Instead, the
first failed write points the descriptor at ``/dev/null``, and the command goes
on and records everything as it would have with its terminal there.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


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
            _point_at_devnull(self._fd)
            return memoryview(data).nbytes  # dropped, as everything after


def _point_at_devnull(fd: int) -> None:
    with contextlib.suppress(OSError):  # no /dev/null: the writes failing is all we lose
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def keep_going_without_stderr() -> None:
    """Make ``sys.stderr`` a stream on the same descriptor whose writes never fail
    (see the module's docstring). Only for a process the command owns: it replaces
    ``sys.stderr`` for good. Standard error closed (``2>&-``), or none, is left as it is."""
    old = sys.stderr
    try:
        fd = old.fileno()
    except (AttributeError, OSError, ValueError):
        return  # no descriptor (closed, or a stream of text only): nothing to wrap
    try:
        old.flush()
    except OSError:
        _point_at_devnull(fd)
    raw = _StderrFile(fd)
    # As Python opens it: line-buffered, and characters the encoding lacks escaped.
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(raw), encoding=old.encoding,
                                  errors=old.errors or "backslashreplace",
                                  line_buffering=True)
