"""Progress is a view over counts: tqdm bars on a terminal, a plain line otherwise, or nothing.

The crawl loop only fills a :class:`Snapshot` and hands it to a reporter; the
reporter decides how (and whether) to draw it. Log lines go through the
reporter too, so they never tear the bars.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol, TextIO

from crawler.errors import OutputLost

if TYPE_CHECKING:
    from tqdm import tqdm


def write_out(line: str) -> None:
    """Print ``line`` on standard output at once; a failure is :class:`OutputLost`."""
    try:
        print(line, flush=True)
    except OSError as exc:
        reason = "closed" if isinstance(exc, BrokenPipeError) else exc.strerror or str(exc)
        raise OutputLost(f"standard output cannot be written ({reason})") from exc


@dataclass
class Snapshot:
    pages: int = 0
    pages_failed: int = 0
    found: int = 0
    downloaded: int = 0
    failed: int = 0
    in_flight: int = 0
    retries: int = 0
    bytes: int = 0
    workers: int = 0

    def as_dict(self) -> dict[str, int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Reporter(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...
    def close(self) -> None: ...


class NullReporter:
    def update(self, snapshot: Snapshot) -> None:
        pass

    def close(self) -> None:
        pass


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


class PlainReporter:
    """One log line every ``interval`` seconds (and at the end): for logs and pipes."""

    def __init__(self, stream: TextIO, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._last = self._started
        self._snapshot: Snapshot | None = None

    def update(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._write(snapshot, now)

    def close(self) -> None:
        if self._snapshot is not None:
            self._write(self._snapshot, self._clock())

    def _write(self, s: Snapshot, now: float) -> None:
        elapsed = max(1e-9, now - self._started)
        print(f"progress: pages {s.pages}, images found {s.found}, downloaded {s.downloaded}, "
              f"failed {s.failed}, in flight {s.in_flight}, retries {s.retries}, "
              f"{human_bytes(s.bytes)} ({human_bytes(s.bytes / elapsed)}/s), "
              f"workers {s.workers}", file=self._stream, flush=True)


class TqdmReporter:
    """Live bars on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm  # here, not at the top: workers and quiet runs never need it

        shape = _shape(stream)

        def bar(position: int, desc: str, unit: str = "it", **kw: object) -> tqdm:
            return tqdm(desc=desc, position=position, unit=unit, file=stream, leave=True,
                        **shape, **kw)

        self._pages = bar(0, "pages crawled", "page")
        self._found = bar(1, "images found", "img")
        self._done = bar(2, "downloaded", "img")
        self._failed = bar(3, "failed", "img")
        self._bytes = bar(4, "bytes", "B", unit_scale=True, unit_divisor=1000)
        self._bars = (self._pages, self._found, self._done, self._failed, self._bytes)

    def update(self, s: Snapshot) -> None:
        self._done.total = s.found or None  # an ETA once images are known
        for bar, value in ((self._pages, s.pages), (self._found, s.found),
                           (self._done, s.downloaded), (self._failed, s.failed),
                           (self._bytes, s.bytes)):
            bar.update(value - bar.n)
        self._done.set_postfix_str(f"in flight {s.in_flight}, retries {s.retries}, "
                                   f"workers {s.workers}", refresh=False)
        self._failed.set_postfix_str(f"page errors {s.pages_failed}", refresh=False)

    def close(self) -> None:
        for bar in self._bars:
            bar.refresh()
            bar.close()


class TqdmLogHandler(logging.Handler):
    """Log records written above the bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_above_bars(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the crawl
            self.handleError(record)


def write_above_bars(text: str) -> None:
    """Print ``text`` on stderr above any tqdm bars (plainly when tqdm was never loaded)."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is None:
        print(text, file=sys.stderr, flush=True)
    else:
        tqdm_module.tqdm.write(text, file=sys.stderr)


def _worker_bar(stream: TextIO) -> tqdm:
    from tqdm import tqdm

    return tqdm(desc="worker", unit="img", file=stream, **_shape(stream))


def _shape(stream: TextIO) -> dict[str, object]:
    """tqdm's size arguments: follow the terminal, or fixed when it reports no size.

    A pseudo-terminal nobody sized reports 0x0, and tqdm then hides every bar.
    """
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns and size.lines:
        return {"dynamic_ncols": True}
    return {"ncols": 100, "nrows": 40}


def make_reporter(quiet: bool, stream: TextIO | None = None) -> Reporter:
    stream = stream or sys.stderr
    if quiet:
        return NullReporter()
    if stream.isatty():
        return TqdmReporter(stream)
    return PlainReporter(stream)


class WorkerLine:
    """A worker's own one-line progress: images, failures, bytes and rate.

    A tqdm line on a terminal, a plain log line every ``interval`` seconds
    otherwise, nothing when quiet.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 interval: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._interval = interval
        self._clock = clock
        self._started = self._last = clock()
        self._bar = None if quiet or not self._stream.isatty() else _worker_bar(self._stream)
        self._counts = (0, 0, 0)

    def update(self, done: int, failed: int, size: int) -> None:
        self._counts = (done, failed, size)
        if self._quiet:
            return
        now = self._clock()
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            self._bar.set_postfix_str(self._describe(now, with_count=False), refresh=False)
        elif now - self._last >= self._interval:
            self._last = now
            print("worker: " + self._describe(now), file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self._quiet and any(self._counts):
            print("worker: " + self._describe(self._clock()), file=self._stream, flush=True)

    def _describe(self, now: float, with_count: bool = True) -> str:
        done, failed, size = self._counts
        rate = size / max(1e-9, now - self._started)
        text = f"failed {failed}, {human_bytes(size)} ({human_bytes(rate)}/s)"
        return f"{done} images, {text}" if with_count else text
