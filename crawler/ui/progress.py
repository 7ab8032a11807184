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
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TextIO

from crawler.model.progress import Reporter, Snapshot

if TYPE_CHECKING:
    from tqdm import tqdm


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


def human_duration(seconds: float) -> str:
    """``0:42``, ``12:03`` or ``3:02:09``: an ETA or an elapsed time."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


RATE_WINDOW = 10.0  # seconds the live rates are taken over
# After the count of our workers, when tutorial workers (who say no hello, so are not
# counted) work too: "workers 0" alone, while they did the whole crawl, said none came.
TUTORIAL_TOO = " + tutorial"


class RateWindow:
    """Counts taken now and then, for their rates over the last ``window`` seconds.

    A window rather than the whole run, so a rate follows work that speeds up or
    stalls (and leaves out a wait before it began).
    """

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, tuple[int, ...]]] = deque()

    def __bool__(self) -> bool:
        return bool(self._samples)

    def add(self, now: float, *counts: int) -> None:
        samples = self._samples
        samples.append((now, counts))
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()
        if len(samples) > 64:  # more than enough points for one window
            del samples[1]

    def rates(self, *, shortest: float = 0.0) -> tuple[float, ...] | None:
        """Each count per second over the window; None over less than ``shortest`` s
        (or no time at all)."""
        if len(self._samples) < 2:
            return None
        (t0, counts0), (t1, counts1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0 or span < shortest:
            return None
        return tuple((now - then) / span for then, now in zip(counts0, counts1, strict=True))


class RateMeter:
    """Images and bytes per second of this run, over the last RATE_WINDOW seconds; the
    average over the run is for the last frame."""

    def __init__(self, clock: Callable[[], float], window: float = RATE_WINDOW) -> None:
        self._clock = clock
        self._window = RateWindow(window)
        self.started = clock()

    def add(self, snapshot: Snapshot) -> None:
        if not self._window:  # this run had counted nothing when it started
            self._window.add(self.started, 0, 0)
        self._window.add(self._clock(), snapshot.done - snapshot.resumed_images,
                         snapshot.bytes - snapshot.resumed_bytes)

    def rates(self) -> tuple[float, float] | None:
        """(images/s, bytes/s) over the window, or None before a second has passed."""
        rates = self._window.rates(shortest=1.0)
        return None if rates is None else (rates[0], rates[1])

    def averages(self, snapshot: Snapshot) -> tuple[float, float]:
        """(images/s, bytes/s) over this whole run."""
        elapsed = max(1e-9, self._clock() - self.started)
        return ((snapshot.done - snapshot.resumed_images) / elapsed,
                (snapshot.bytes - snapshot.resumed_bytes) / elapsed)


def fit(parts: list[str], width: int, sep: str = "  ") -> str:
    """Join ``parts``, dropping them from the end while the line is wider than ``width``.

    The parts come most important first; the first one is cut if even it is too wide.
    """
    kept = list(parts)
    while len(kept) > 1 and len(sep.join(kept)) > width:
        kept.pop()
    return sep.join(kept)[:width]


def image_rate(per_second: float) -> str:
    return f"{per_second:.1f} img/s" if per_second < 100 else f"{per_second:.0f} img/s"


BAR_CHARS = " \u258f\u258e\u258d\u258c\u258b\u258a\u2589\u2588"  # eighths, as tqdm draws
ASCII_BAR_CHARS = " #"  # whole cells only: for a terminal whose encoding has no blocks


def draw_bar(fraction: float, width: int, chars: str = BAR_CHARS) -> str:
    """A bar of ``width`` cells filled to ``fraction`` (0..1): ``chars`` are a cell from
    empty to full, so the eighths of a cell with ``BAR_CHARS``."""
    steps = len(chars) - 1
    filled = round(max(0.0, min(1.0, fraction)) * width * steps)
    full, part = divmod(filled, steps)
    bar = chars[-1] * full + (chars[part] if part and full < width else "")
    return bar.ljust(width)


def bar_chars_for(stream: TextIO) -> str:
    """``BAR_CHARS`` where ``stream``'s encoding has them, else ``ASCII_BAR_CHARS``: an
    ASCII or Latin-1 terminal showed each block as a six-column escape."""
    try:
        BAR_CHARS.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return ASCII_BAR_CHARS
    return BAR_CHARS


def images_line(s: Snapshot, rates: tuple[float, float] | None, width: int, *,
                final: bool = False, elapsed: float = 0.0, bar_chars: str = BAR_CHARS) -> str:
    """The main line: images done of found, failures, a bar, the rate, and an ETA.

    The ETA appears once every page is done: before that the total still grows.
    """
    count = f"images {s.done}/{s.found}" + (f" ({s.failed} failed)" if s.failed else "")
    percent = f"{100 * s.done // s.found:3d}%" if s.found else "  -%"
    tail: list[str]
    if final:  # the summary that follows gives the rate
        tail = [f"in {human_duration(elapsed)}"]
    elif rates is None:  # the first second: no rate yet, but images may be done already
        tail = [] if s.done else ["starting"]
    else:
        tail = [image_rate(rates[0])]
        remaining = s.found - s.done
        if s.pages_queued:
            tail.append("finding more")
        elif remaining and rates[0] > 0:
            tail.append(f"ETA {human_duration(remaining / rates[0])}")
    tail = [t for t in tail if t]
    text_width = len(count) + 4 + len(percent) + sum(len(t) + 2 for t in tail)
    bar_width = min(40, width - text_width)
    if bar_width < 6:  # too narrow for a bar that means anything
        return fit([count, percent.strip(), *tail], width)
    bar = draw_bar(s.done / s.found if s.found else 0.0, bar_width, bar_chars)
    return fit([f"{count} |{bar}| {percent}", *tail], width)


def status_line(s: Snapshot, byte_rate: float | None, width: int, *, final: bool = False) -> str:
    """The second line: pages done and queued, work in flight, bytes and rate, workers, retries.

    Written out in full when it fits, in fewer words when not, and only then
    are parts dropped, the least needed (retries) first.
    """
    def pages(queued: str) -> str:
        text = f"pages {s.pages}" + (queued.format(s.pages_queued) if s.pages_queued else "")
        return text + (f" ({s.pages_failed} failed)" if s.pages_failed else "")

    size = human_bytes(s.bytes)
    if byte_rate is not None:
        size += f" {human_bytes(byte_rate)}/s" + (" average" if final else "")
    if final:
        return fit([pages(" +{} not visited"), size, f"retries {s.retries}"], width)
    workers = f"{s.workers} workers" + (TUTORIAL_TOO if s.tutorial_workers else "")
    full = [pages(" +{} queued"), f"in flight {s.in_flight}", size, workers,
            f"retries {s.retries}"]
    if len("  ".join(full)) <= width:
        return "  ".join(full)
    return fit([pages("+{}"), *full[1:]], width)


class PlainReporter:
    """One timestamped line every ``interval`` seconds (and at the end): for logs and pipes."""

    def __init__(self, stream: TextIO, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._rates = RateMeter(clock)
        self._last = clock()
        self._snapshot: Snapshot | None = None
        self._most_workers = 0
        self._tutorial_seen = False

    def update(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._most_workers = max(self._most_workers, snapshot.workers)
        self._tutorial_seen = self._tutorial_seen or snapshot.tutorial_workers
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._rates.add(snapshot)
            self._write(snapshot, self._rates.rates())

    def close(self) -> None:
        if self._snapshot is not None:
            # The crawl is over and its workers have left: how many it had, as the
            # rates are the run's averages.
            self._write(self._snapshot, self._rates.averages(self._snapshot),
                        f"{self._most_workers} at most"
                        + (TUTORIAL_TOO if self._tutorial_seen else ""))

    def _write(self, s: Snapshot, rates: tuple[float, float] | None,
               workers: str | None = None) -> None:
        rate = "" if rates is None else f" ({human_bytes(rates[1])}/s, {image_rate(rates[0])})"
        if workers is None:
            workers = f"{s.workers}{TUTORIAL_TOO if s.tutorial_workers else ''}"
        print(f"{time.strftime('%H:%M:%S')} progress: pages {s.pages} ({s.pages_queued} queued, "
              f"{s.pages_failed} failed), images found {s.found}, downloaded {s.downloaded}, "
              f"failed {s.failed}, in flight {s.in_flight}, retries {s.retries}, "
              f"{human_bytes(s.bytes)}{rate}, workers {workers}",
              file=self._stream, flush=True)


class TqdmReporter:
    """Two live lines on a terminal, kept by tqdm: the images bar and a status line.

    Both lines are formatted here to the terminal's width (tqdm only draws
    them, clears them for log lines and draws them again), and redrawn from
    every snapshot at most every ``redraw`` seconds, so no count goes stale.
    Nothing is drawn before the first snapshot, so what the master says while
    starting (the queue's address, an error) is printed on a clean screen. On
    close the live lines are cleared and the last frame is printed as plain
    text, so no fragment of an earlier, wider frame survives.
    """

    def __init__(self, stream: TextIO, *, redraw: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._redraw = redraw
        self._clock = clock
        self._rates = RateMeter(clock)
        self._last_draw = float("-inf")
        self._last_sample = float("-inf")
        self._bars: list[tqdm[NoReturn]] = []  # bars without an iterable
        self._snapshot: Snapshot | None = None
        self._bar_chars = bar_chars_for(stream)

    def update(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        now = self._clock()
        if now - self._last_sample >= 0.5:
            self._last_sample = now
            self._rates.add(snapshot)
        if now - self._last_draw >= self._redraw:
            self._last_draw = now
            self._draw(self._lines(snapshot, final=False))

    def close(self) -> None:
        if self._snapshot is None:
            return  # never drawn: nothing to clear, nothing to say
        lines = self._lines(self._snapshot, final=True)
        for bar in reversed(self._bars):
            bar.leave = False
            bar.close()
        self._bars = []
        # Plainly, below where the live lines were: the last frame, then the summary.
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()

    def _lines(self, s: Snapshot, *, final: bool) -> list[str]:
        width = terminal_width(self._stream) - 1  # never the last column: no wrap
        if final:
            rates: tuple[float, float] | None = self._rates.averages(s)
        else:
            rates = self._rates.rates()
        return [images_line(s, rates, width, final=final,
                            elapsed=self._clock() - self._rates.started,
                            bar_chars=self._bar_chars),
                status_line(s, None if rates is None else rates[1], width, final=final)]

    def _draw(self, lines: list[str]) -> None:
        if not self._bars:
            from tqdm import tqdm  # here, not at the top: workers and quiet runs never need it

            self._bars = [tqdm(file=self._stream, position=n, bar_format="{desc}",
                               leave=True, ncols=len(lines[n]) + 1, mininterval=0,
                               miniters=0, nrows=terminal_rows(self._stream))
                          for n in range(len(lines))]
        for bar, line in zip(self._bars, lines, strict=True):
            bar.ncols = len(line) + 1
            bar.set_description_str(line.replace("{", "{{").replace("}", "}}"), refresh=False)
            bar.refresh()


def terminal_width(stream: TextIO, fallback: int = 80) -> int:
    """Columns of the terminal ``stream`` writes to; ``fallback`` when it reports none.

    A pseudo-terminal nobody sized reports 0 columns.
    """
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        columns = 0
    return columns if columns >= 20 else fallback


def terminal_rows(stream: TextIO, fallback: int = 24) -> int:
    """Rows of the terminal ``stream`` writes to; ``fallback`` when it reports too few.

    tqdm asks standard error's terminal itself, and takes an unsized one's -1 rows
    as a screen too small for any line: nothing showed until the crawl ended.
    """
    try:
        rows = os.get_terminal_size(stream.fileno()).lines
    except (OSError, ValueError):
        rows = 0
    return rows if rows >= 2 else fallback


class TqdmLogHandler(logging.Handler):
    """Log records written above the live lines instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_above_bars(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the crawl
            self.handleError(record)


def live_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that takes the live lines' cursor moves: not one
    that says it is dumb (TERM=dumb: an editor's shell buffer, a CI log that poses as a
    terminal), which showed them as escape codes; it gets the timestamped lines."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def make_log_handler(verbose: bool, stream: TextIO | None = None) -> logging.Handler:
    """Logs above the live lines on a terminal; timestamped lines anywhere else."""
    stream = stream or sys.stderr
    detail = "%(levelname)s %(name)s: %(message)s" if verbose else "%(levelname)s: %(message)s"
    handler: logging.Handler
    if live_terminal(stream):
        handler = TqdmLogHandler()
        handler.setFormatter(logging.Formatter(detail))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s " + detail, datefmt="%H:%M:%S"))
    return handler


def write_above_bars(text: str) -> None:
    """Print ``text`` on stderr above any tqdm lines (plainly when tqdm was never loaded)."""
    # Its class, once the module has it: another thread may be importing tqdm this very
    # moment (the live lines start as a robots.txt warning comes), and a module half
    # imported has none yet; no bar is drawn before it has.
    bars = getattr(sys.modules.get("tqdm"), "tqdm", None)
    if bars is None:
        print(text, file=sys.stderr, flush=True)
    else:
        bars.write(text, file=sys.stderr)


def make_reporter(quiet: bool, stream: TextIO | None = None) -> Reporter:
    stream = stream or sys.stderr
    if quiet:
        return NullReporter()
    if live_terminal(stream):
        return TqdmReporter(stream)
    return PlainReporter(stream)


class WorkerLine:
    """A worker's own one-line progress: images, failures, bytes and rate.

    A live line on a terminal, a plain timestamped line every ``interval``
    seconds otherwise, nothing when quiet.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 interval: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._live = not quiet and live_terminal(self._stream)
        self._interval = 0.2 if self._live else interval
        self._clock = clock
        self._last = clock()
        self._bar: tqdm[NoReturn] | None = None
        self._counts = (0, 0, 0)
        # (time, bytes) when the work began (the worker's first URLs, told with no image
        # done; else the first image), and bytes at recent lines: the rate is over the last
        # RATE_WINDOW seconds, as the master's, not the worker's whole life, which hid a
        # slowdown for hours and counted its wait for a master as work. Counted from the
        # first image done instead, four downloads that ended together read 851.5 MB/s.
        self._first: tuple[float, int] | None = None
        self._recent = RateWindow()

    def update(self, done: int, failed: int, size: int) -> None:
        self._counts = (done, failed, size)
        now = self._clock()
        if self._first is None:
            self._first = (now, size)
            self._recent.add(now, size)
            if not (done or failed):
                return  # the work begins: nothing to say yet
        if self._quiet or now - self._last < self._interval:
            return
        self._last = now
        self._recent.add(now, size)
        rates = self._recent.rates()
        rate = None if rates is None else rates[0]
        if self._live:
            self._draw(rate)
        else:
            print(f"{time.strftime('%H:%M:%S')} worker: " + self._describe(rate),
                  file=self._stream, flush=True)

    def close(self) -> None:
        rate = self._average(self._clock())  # the last line: the whole work's rate
        if self._bar is not None:
            self._draw(rate)
            self._bar.close()
        elif not self._quiet and any(self._counts):
            print("worker: " + self._describe(rate), file=self._stream, flush=True)

    def _average(self, now: float) -> float | None:
        """Bytes per second since the work began; None before any span."""
        if self._first is None or now <= self._first[0]:
            return None
        return (self._counts[2] - self._first[1]) / (now - self._first[0])

    def _draw(self, rate: float | None) -> None:
        line = fit(["worker: " + self._describe(rate)], terminal_width(self._stream) - 1)
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(file=self._stream, bar_format="{desc}", mininterval=0, miniters=0,
                             nrows=terminal_rows(self._stream))
        self._bar.ncols = len(line) + 1
        self._bar.set_description_str(line.replace("{", "{{").replace("}", "}}"), refresh=False)
        self._bar.refresh()

    def _describe(self, rate: float | None) -> str:
        done, failed, size = self._counts
        # "2 images, failed 1" read as 2 in all. Its tries, not its images: a failure
        # the crawl tries again (here or on another worker) is no failed image in the
        # master's count, which said "failed 0" beside a worker's "failed 184".
        text = f"downloaded {done}, failed tries {failed}, {human_bytes(size)}"
        return text if rate is None else f"{text} ({human_bytes(rate)}/s)"
