"""Where a command's output goes in real use: pipes whose reader quits early, streams
closed before the start, terminals that take no more than ASCII."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import FixtureServer, crawler_command
from .test_operator import run_on_terminal, screen_lines
from .test_recovery import check_complete, setup_site


def _crawl_into_pipe(server: FixtureServer, out: Path, *extra: str,
                     lines_read: int) -> tuple[int, list[bytes]]:
    """Run the master with its stdout and stderr on one pipe (``2>&1 | head -N``):
    read ``lines_read`` lines, close the reading end, and wait. Returns the exit
    status and the lines read."""
    reading, writing = os.pipe()
    try:
        master = subprocess.Popen(
            crawler_command("master", server.url + "/", "--out", str(out), "--local-workers",
                            "2", "--threads", "2", "--bind", "127.0.0.1:0", *extra),
            cwd=out.parent, stdin=subprocess.DEVNULL, stdout=writing, stderr=writing)
    finally:
        os.close(writing)
    try:
        with os.fdopen(reading, "rb") as reader:
            lines = [reader.readline() for _ in range(lines_read)]
        # The reader is gone: every write from here on fails with EPIPE.
        return master.wait(timeout=120), lines
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(timeout=30)


def test_a_crawl_whose_reader_quits_after_one_line_goes_on_and_records_everything(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """``crawler master URL 2>&1 | head -1``: the log lines, progress and summary have
    nowhere to go, but the crawl is what was asked for: it completes, as it would have
    with its terminal there."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=30, image_delay=0.02)
    out = tmp_path / "out"
    status, lines = _crawl_into_pipe(server, out, lines_read=1)
    assert lines[0].startswith(b"queue on 127.0.0.1:"), lines
    assert status == 0
    check_complete(out, server.url, site)
    assert json.loads((out / "summary.json").read_text())["completed"] is True


def test_a_crawl_whose_reader_was_gone_from_the_start_completes(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """``crawler master URL 2>&1 | true``: not one line can be written, the first
    fails already, and the crawl still completes."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=10)
    out = tmp_path / "out"
    status, _ = _crawl_into_pipe(server, out, lines_read=0)
    assert status == 0
    check_complete(out, server.url, site)


def test_output_to_a_pipe_whose_reader_is_gone_is_said_once(tmp_path: Path) -> None:
    """``crawler report DIR | true`` with standard output buffered, as Python has it
    unless told otherwise: one line says the output was lost, not two."""
    (tmp_path / "manifest.jsonl").touch()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    reading, writing = os.pipe()
    os.close(reading)  # the reader is gone before the first line
    try:
        result = subprocess.run(crawler_command("report", str(tmp_path)), stdout=writing,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                env=env, timeout=60, check=False)
    finally:
        os.close(writing)
    assert result.returncode == 120, result.stderr
    assert result.stderr == "crawler: error: standard output cannot be written (closed)\n"


def _with_closed(redirection: str, *args: str, cwd: Path,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``crawler ARGS`` run by a shell with ``redirection`` (``>&-``, ``2>&-``) applied."""
    # The stream not closed stays a pipe, so what is said there is seen.
    return subprocess.run(["sh", "-c", f'exec "$@" {redirection}', "sh",
                           *crawler_command(*args)], cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_a_crawl_started_with_stderr_closed_completes(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """``crawler master URL 2>&-`` (cron lines, daemons): nowhere to say anything, and
    the crawl is done all the same, its standard output left as clean as it was."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=10)
    out = tmp_path / "out"
    result = _with_closed("2>&-", "master", server.url + "/", "--out", str(out),
                          "--local-workers", "2", "--bind", "127.0.0.1:0", "--json",
                          cwd=tmp_path)
    assert result.returncode == 0
    assert json.loads(result.stdout)["completed"] is True, result.stdout
    check_complete(out, server.url, site)


def test_a_crawl_started_with_stdout_closed_completes_and_is_a_success(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """``crawler master URL >&-``: it prints nothing on standard output, so nothing is lost."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=10)
    out = tmp_path / "out"
    result = _with_closed(">&-", "master", server.url + "/", "--out", str(out),
                          "--local-workers", "2", "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "crawl completed" in result.stderr
    check_complete(out, server.url, site)


@pytest.mark.parametrize("buffered", [True, False])
def test_output_to_a_closed_stdout_is_said_once_with_exit_120(tmp_path: Path,
                                                              buffered: bool) -> None:
    """``crawler report DIR >&-``: what it prints cannot be written; one line says so,
    as for a closed pipe, whether Python buffers standard output or not."""
    (tmp_path / "manifest.jsonl").touch()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    result = _with_closed(">&-", "report", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode == 120, result.stderr
    assert result.stderr == "crawler: error: standard output cannot be written (closed)\n"


def test_on_a_terminal_that_takes_only_ascii_the_bar_is_drawn_in_ascii(
        site: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``PYTHONIOENCODING=ascii`` (or a terminal in a legacy 8-bit locale): the bar's block
    characters came out as ``\\u2588`` escapes, six columns each, and the live lines
    wrapped and piled up. The bar is drawn with ``#`` there, within the width."""
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    frames: list[list[str]] = []
    status, screen = run_on_terminal(
        crawler_command("master", site.url + "/", "--local-workers", "1", "--out",
                        str(tmp_path / "out"), "--bind", "127.0.0.1:0", "--host-delay", "0.1"),
        tmp_path, 80, on_chunk=lambda screen: frames.append(screen_lines(screen)))
    assert status == 0
    lines = screen_lines(screen)
    text = "\n".join(lines)
    assert "\\u" not in text, text
    (bar,) = [line for line in lines if line.startswith("images ")]
    assert re.fullmatch(r"images 14/14 \(1 failed\) \|#+\| 100%  in 0:\d\d", bar), text
    assert len(bar) < 80
    assert all(sum(line.startswith("images ") for line in frame) <= 1 for frame in frames)
