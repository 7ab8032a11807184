"""The live display's lines: what they say at every width, and rates of this run only."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import struct
import sys
import termios
import types
from collections.abc import Iterator
from dataclasses import replace

import pyte
import pytest

from crawler.ui.progress import (
    ASCII_BAR_CHARS,
    BAR_CHARS,
    PlainReporter,
    Snapshot,
    TqdmLogHandler,
    TqdmReporter,
    WorkerLine,
    bar_chars_for,
    draw_bar,
    images_line,
    make_log_handler,
    make_reporter,
    status_line,
    write_above_bars,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


BIG = Snapshot(pages=12345, pages_failed=123, pages_queued=6789, found=987654,
               downloaded=543210, failed=4321, in_flight=256, retries=789,
               bytes=12_345_678_901, workers=64)


@pytest.mark.parametrize("width", [40, 79, 159])
def test_lines_fit_the_width_with_large_counts(width: int) -> None:
    for final in (False, True):
        assert len(images_line(BIG, (1234.5, 5e6), width, final=final, elapsed=3600)) <= width
        assert len(status_line(BIG, 5e6, width, final=final)) <= width


def test_the_bar_is_drawn_in_eighths_or_in_whole_ascii_cells() -> None:
    assert draw_bar(0.5625, 4) == "\u2588\u2588\u258e "  # 2 cells and 2 eighths
    assert draw_bar(0.5625, 4, ASCII_BAR_CHARS) == "##  "
    assert draw_bar(1.0, 4, ASCII_BAR_CHARS) == "####"


@pytest.mark.parametrize(("encoding", "chars"), [("utf-8", BAR_CHARS), ("ascii", ASCII_BAR_CHARS),
                                                 ("latin-1", ASCII_BAR_CHARS)])
def test_the_bar_takes_what_the_stream_can_encode(encoding: str, chars: str) -> None:
    assert bar_chars_for(io.TextIOWrapper(io.BytesIO(), encoding=encoding)) == chars


def test_at_80_columns_the_status_line_keeps_what_matters() -> None:
    line = status_line(BIG, 5e6, 79)
    for part in ("pages 12345+6789 (123 failed)", "in flight 256", "12.3 GB 5.0 MB/s",
                 "64 workers"):
        assert part in line, line
    wide = status_line(BIG, 5e6, 159)
    assert wide.startswith("pages 12345 +6789 queued (123 failed)  in flight 256  ")
    assert wide.endswith("64 workers  retries 789")


def test_eta_only_once_every_page_is_done() -> None:
    crawling = Snapshot(pages=3, pages_queued=2, found=100, downloaded=40)
    assert "ETA" not in images_line(crawling, (10.0, 1e5), 79)
    assert "finding more" in images_line(crawling, (10.0, 1e5), 79)
    done = Snapshot(pages=5, found=100, downloaded=40)
    assert images_line(done, (10.0, 1e5), 79).endswith("10.0 img/s  ETA 0:06")


def test_no_starting_once_images_are_done() -> None:
    """Before a second has passed there is no rate; a fast crawl is at 91% by then."""
    assert images_line(Snapshot(found=100), None, 79).endswith("starting")
    early = images_line(Snapshot(found=100, downloaded=91), None, 79)
    assert "starting" not in early and early.endswith(" 91%"), early


@pytest.fixture
def terminal() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A real pseudo-terminal of 80 columns: the writing end as a text stream, and the reader."""
    controller, term = pty.openpty()
    fcntl.ioctl(term, termios.TIOCSWINSZ, struct.pack("HHHH", 10, 80, 0, 0))
    stream = os.fdopen(term, "w", encoding="utf-8")
    try:
        yield stream, controller
    finally:
        stream.close()
        os.close(controller)


@pytest.mark.parametrize(("term", "live"), [("xterm-256color", True), ("dumb", False)])
def test_a_dumb_terminal_gets_the_plain_lines(
        terminal: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch, term: str,
        live: bool) -> None:
    """An editor's shell buffer (TERM=dumb) showed the live lines' cursor moves as
    escape codes: it is a terminal to isatty(), one that says it cannot take them."""
    stream, _ = terminal
    monkeypatch.setenv("TERM", term)
    assert isinstance(make_reporter(False, stream), TqdmReporter if live else PlainReporter)
    assert isinstance(make_log_handler(False, stream), TqdmLogHandler if live
                      else logging.StreamHandler)
    assert WorkerLine(stream)._live is live


def read_screen(controller: int, columns: int = 80, rows: int = 10) -> list[str]:
    screen = pyte.Screen(columns, rows)
    feed = pyte.ByteStream(screen)
    os.set_blocking(controller, False)
    for _ in range(1000):
        try:
            chunk = os.read(controller, 65536)
        except BlockingIOError:
            break
        feed.feed(chunk)
    return [line.rstrip() for line in screen.display if line.strip()]


def test_a_resumed_crawl_rates_count_this_run_only(
        terminal: tuple[io.TextIOWrapper, int]) -> None:
    stream, controller = terminal
    clock = Clock()
    reporter = TqdmReporter(stream, clock=clock)
    snapshot = Snapshot(pages=50, found=4000, downloaded=3700, failed=13,
                        bytes=3_700_000_000, workers=2)
    snapshot.mark_resumed()  # 3713 images and 3.7 GB came from earlier runs
    reporter.update(snapshot)
    for _ in range(4):  # 10 images and 1 MB a second
        clock.now += 1.0
        snapshot.downloaded += 10
        snapshot.bytes += 1_000_000
        reporter.update(snapshot)
    live = read_screen(controller)
    assert re.fullmatch(r"images 3753/4000 \(13 failed\) \|[\u2588-\u258f ]+\|  93%  10\.0 img/s  "
                        r"ETA 0:25", live[0]), live
    assert "3.7 GB 1.0 MB/s" in live[1], live
    reporter.close()
    final = read_screen(controller)
    assert final[0].endswith("|  93%  in 0:04"), final
    assert final[1].endswith("3.7 GB 1.0 MB/s average  retries 0"), final


def test_live_lines_show_on_a_terminal_nobody_sized(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pseudo-terminal that reports 0 rows and 0 columns (script(1), some CI runners):
    80 columns and the lines drawn all the same, not hidden until the end."""
    controller, term = pty.openpty()
    fcntl.ioctl(term, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    stream = os.fdopen(term, "w", encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stream)  # tqdm sizes standard error's terminal
    for name in ("LINES", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    try:
        clock = Clock()
        reporter = TqdmReporter(stream, clock=clock)
        snapshot = Snapshot(pages=5, found=100, downloaded=40, workers=2)
        reporter.update(snapshot)
        clock.now += 1.0
        snapshot.downloaded += 10
        reporter.update(snapshot)
        live = read_screen(controller)
        assert live and live[0].startswith("images 50/100"), live
        reporter.close()
    finally:
        stream.close()
        os.close(controller)


def plain_reporter(clock: Clock) -> tuple[PlainReporter, io.StringIO]:
    """A plain reporter writing a line every 5 s (of ``clock``) into the returned buffer."""
    out = io.StringIO()
    return PlainReporter(out, interval=5.0, clock=clock), out


def test_plain_lines_count_this_run_only() -> None:
    clock = Clock()
    reporter, out = plain_reporter(clock)
    snapshot = Snapshot(found=4000, downloaded=3700, bytes=10**9)
    snapshot.mark_resumed()
    for _ in range(10):
        clock.now += 1.0
        snapshot.downloaded += 5
        reporter.update(snapshot)
    reporter.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # every 5 s, and the last
    assert all(re.match(r"\d\d:\d\d:\d\d progress: ", line) for line in lines)
    assert "downloaded 3750," in lines[-1] and "5.0 img/s" in lines[-1], lines


def test_the_first_line_rates_what_came_since_the_start() -> None:
    # A crawl's first update may come late (workers are starting, or pages are slow):
    # what was downloaded by then counts for the first line's rate.
    clock = Clock()
    reporter, out = plain_reporter(clock)
    snapshot = Snapshot(found=400, downloaded=100, bytes=10**6)
    snapshot.mark_resumed()
    clock.now += 5.0
    snapshot.downloaded += 50
    snapshot.bytes += 5 * 10**5
    reporter.update(snapshot)
    first = out.getvalue().splitlines()[0]
    assert "downloaded 150," in first and "(100.0 KB/s, 10.0 img/s)" in first, first
    reporter.close()


def test_the_last_plain_line_says_how_many_workers_there_were() -> None:
    """By then the workers have left: "workers 0" read as if none had done the work."""
    clock = Clock()
    reporter, out = plain_reporter(clock)
    snapshot = Snapshot(found=10)
    for workers in (1, 2, 2, 0):
        clock.now += 3.0
        snapshot.workers = workers
        snapshot.downloaded += 2
        reporter.update(snapshot)
    reporter.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("workers 2"), lines  # live: how many there are
    assert lines[-1].endswith("workers 2 at most"), lines


def test_tutorial_workers_at_work_are_said_beside_the_count() -> None:
    """Tutorial workers say no hello, so are not counted: "workers 0" alone, while they did
    the crawl, said that no worker came. Both lines and the live bar say they are there."""
    clock = Clock()
    reporter, out = plain_reporter(clock)
    snapshot = Snapshot(found=10, tutorial_workers=True)
    for _ in range(2):
        clock.now += 6.0
        snapshot.downloaded += 2
        reporter.update(snapshot)
        snapshot.tutorial_workers = False  # gone by the end: the last line still says so
    reporter.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("workers 0 + tutorial"), lines
    assert lines[1].endswith("workers 0"), lines
    assert lines[-1].endswith("workers 0 at most + tutorial"), lines
    assert "0 workers + tutorial  retries 789" in status_line(
        replace(BIG, workers=0, tutorial_workers=True), 5e6, 200)


def test_a_workers_line_rates_its_recent_downloads_not_its_whole_life() -> None:
    """After an hour at 10 MB/s, a minute at 100 KB/s shows as 100 KB/s: the rate of
    the whole life (9.8 MB/s there) hid a slowdown for hours, as the master's would."""
    clock = Clock()
    out = io.StringIO()
    line = WorkerLine(out, interval=5.0, clock=clock)
    done = size = 0
    for step, per_second in [(5.0, 10_000_000)] * 720 + [(5.0, 100_000)] * 12:
        clock.now += step
        done, size = done + 1, size + int(step * per_second)
        line.update(done, 0, size)
    last = out.getvalue().splitlines()[-1]
    assert last.endswith("(100.0 KB/s)"), last


def test_a_workers_last_line_counts_its_stored_and_failed_images_apart() -> None:
    """"worker: 2 images, failed 1" read as two images in all, one of them failed, of a
    worker that stored two and failed a third."""
    clock = Clock()
    out = io.StringIO()
    line = WorkerLine(out, interval=5.0, clock=clock)
    line.update(2, 1, 20_000)
    clock.now += 1.0
    line.close()
    assert out.getvalue() == "worker: downloaded 2, failed tries 1, 20.0 KB (0 B/s)\n"


def test_a_workers_average_counts_from_when_its_work_began() -> None:
    """Four downloads of 1 MB that took 20 s and ended together read 851.5 MB/s: the
    average ran from the first image done, a millisecond before the last. The worker
    tells its line when its first URLs come; that call itself prints nothing."""
    clock = Clock()
    out = io.StringIO()
    line = WorkerLine(out, interval=5.0, clock=clock)
    clock.now += 30.0  # waiting for a master
    line.update(0, 0, 0)  # its first URLs
    clock.now += 20.0
    for done in range(1, 5):
        clock.now += 0.001
        line.update(done, 0, done * 1_000_000)
    line.close()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "worker: downloaded 4, failed tries 0, 4.0 MB (200.0 KB/s)", lines
    assert not any("downloaded 0" in text for text in lines), lines


def test_a_workers_line_leaves_out_its_wait_for_the_master() -> None:
    """Five minutes waiting for a master made 10 s at 1 MB/s read 32.3 KB/s: the rate
    starts with the first image, the first word the line has of any work."""
    clock = Clock()
    out = io.StringIO()
    line = WorkerLine(out, interval=5.0, clock=clock)
    clock.now += 299.0
    size = 0
    for _ in range(10):
        clock.now += 1.0
        size += 1_000_000
        line.update(size // 10_000, 0, size)
    last = out.getvalue().splitlines()[-1]
    assert last.endswith("(1.0 MB/s)"), last


def test_a_line_written_while_tqdm_is_half_imported_is_written_plainly(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The live lines import tqdm on one thread as a warning comes on another: the module
    was in sys.modules without its class yet, and the warning was lost in a traceback
    ("partially initialized module 'tqdm' has no attribute 'tqdm')."""
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    write_above_bars("style sheet http://h/a.css: HTTP 404")
    assert capsys.readouterr().err == "style sheet http://h/a.css: HTTP 404\n"
