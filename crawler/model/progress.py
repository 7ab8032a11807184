"""What a crawl's progress is: the counts the master keeps, and what shows them.

The master fills a :class:`Snapshot` and hands it to a :class:`Reporter`;
``crawler.ui.progress`` has the reporters that draw it (tqdm lines, a plain
line, or nothing), and ``crawler status`` reads the same counts.
"""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass, fields
from typing import Protocol

from crawler.errors import OutputLost


def write_out(line: str) -> None:
    """Print ``line`` on standard output at once; a failure is :class:`OutputLost`.

    A file name whose bytes are not UTF-8 (lone surrogates to Python) is written as
    those bytes, as ``ls`` writes it, where standard output's encoding is strict (a
    UTF-8 locale other than C.UTF-8): it raised a UnicodeEncodeError there.
    """
    try:
        try:
            print(line, flush=True)
        except UnicodeEncodeError:  # nothing of the line was written: it is encoded first
            _write_bytes(line + "\n")
    except OSError as exc:
        raise OutputLost(output_lost(exc)) from exc


def _write_bytes(text: str) -> None:
    """``text`` on standard output, file names' own bytes as they are, and any other
    character the encoding lacks as an escape."""
    stream = sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        data = text.encode(encoding, "surrogateescape")
    except UnicodeEncodeError:  # an encoding without a character of the text (ASCII)
        data = text.encode(encoding, "backslashreplace")
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a stream of text only: escapes are the most it can take
        stream.write(data.decode(encoding, "backslashreplace"))
        stream.flush()
        return
    stream.flush()
    buffer.write(data)
    buffer.flush()


def output_lost(exc: OSError) -> str:
    """What to say when standard output failed with ``exc``."""
    # EBADF: closed before the start (>&-), its place held by a descriptor not for writing.
    closed = isinstance(exc, BrokenPipeError) or exc.errno == errno.EBADF
    reason = "closed" if closed else exc.strerror or str(exc)
    return f"standard output cannot be written ({reason})"


@dataclass
class Snapshot:
    """The crawl's counts, filled by the master; every reporter and ``crawler status`` read it."""

    pages: int = 0
    pages_failed: int = 0
    pages_queued: int = 0  # waiting or being fetched; 0 once every page is done
    found: int = 0
    downloaded: int = 0
    failed: int = 0
    in_flight: int = 0
    retries: int = 0
    bytes: int = 0
    workers: int = 0
    tutorial_workers: bool = False  # some at work too (how many is unknown: they say no hello)
    resumed_images: int = 0  # finished by earlier runs: left out of this run's rates
    resumed_bytes: int = 0
    resumed_stored: int = 0  # of resumed_images, those stored

    @property
    def done(self) -> int:
        """Images with a final result, downloaded or failed."""
        return self.downloaded + self.failed

    def mark_resumed(self) -> None:
        """Count what is finished now as earlier runs' work, so rates measure this run only."""
        self.resumed_images = self.done
        self.resumed_bytes = self.bytes
        self.resumed_stored = self.downloaded

    def as_dict(self) -> dict[str, int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Reporter(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...
    def close(self) -> None: ...
