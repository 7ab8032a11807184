"""What the operator sees: progress on a terminal and off it, the summary, status, dry runs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pyte
import pytest

from crawler.demo.site import Site
from crawler.master.launcher import RESTARTS

from .conftest import (
    FixtureServer,
    crawler_command,
    finish,
    local_worker_of,
    run_crawler,
    serve_routes,
    slow_start,
    start_crawler,
    stop,
    wait_for_output,
    wait_for_queue_address,
    wait_until,
)
from .test_end_to_end import EXPECTED_FAILED, EXPECTED_OK
from .test_recovery import check_complete, setup_site


def test_without_a_terminal_progress_is_plain_lines_and_a_summary(
        site: FixtureServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--local-workers", "2", "--out", str(out),
                         "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 0
    err = result.stderr
    assert "\r" not in err and "\x1b[" not in err, "no terminal control codes in a log"
    progress = [line for line in err.splitlines()
                if re.match(r"\d\d:\d\d:\d\d progress: ", line)]
    assert progress, err
    assert "pages 8 (0 queued, 1 failed), images found 14, downloaded 13, failed 1," \
        in progress[-1]
    logs = [line for line in err.splitlines() if " INFO: " in line]
    assert logs and all(re.match(r"\d\d:\d\d:\d\d INFO: ", line) for line in logs), logs
    summary = err[err.index("crawl completed"):]
    # 8 pages: /index.html is linked apart from /, and /private/ is refused by robots.txt.
    for expected in ("pages crawled   8 (1 failed or skipped)", "images found    14",
                     "downloaded      13", "failed          1", "images/s", "top failure reasons:",
                     "     1  HTTP 404", "hosts with most failures:",
                     f"     1  {site.url[len('http://'):]}",
                     f"results in      {out}/results.log and {out}/manifest.jsonl",
                     f"pages failed in {out}/pages.jsonl (each with its reason)"):
        assert expected in summary, expected


def test_a_master_no_worker_joins_says_how_workers_join(site: FixtureServer, tmp_path: Path,
                                                       authkey: str) -> None:
    """Started without --local-workers, a master waits for workers for ever: once images
    have waited a few seconds untaken, it says how they join, once."""
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), cwd=tmp_path)
    try:
        address = wait_for_queue_address(master)
        hint = wait_for_output(master, r"(\d+) image\(s\) are queued and no worker has taken "
                                       r"one in \d+ s: start workers as said above, or run "
                                       r"the master with --local-workers N", 30)
        assert int(hint.group(1)) > 0
        worker = run_crawler("worker", address, "--out", str(out), cwd=tmp_path)
        assert worker.returncode == 0, worker.stderr
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0, err
    assert err.count("no worker has taken one") == 1  # said once


def test_a_quiet_master_no_worker_joins_gives_the_worker_command(site: FixtureServer,
                                                                 tmp_path: Path) -> None:
    """--quiet hides the line that says how workers join: the hint cannot refer to it,
    and gives the command instead, whole, to paste."""
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--quiet", cwd=tmp_path)
    try:
        hint = wait_for_output(master, r"no worker has taken one in \d+ s: start workers, or "
                                       r"run the master with --local-workers N; workers on "
                                       r"this host: crawler worker ([^\n#]+)", 30)
        assert "as said above" not in hint.group(0)
        worker = run_crawler("worker", *shlex.split(hint.group(1)), cwd=tmp_path)
        assert worker.returncode == 0, worker.stderr
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0, err
    assert "queue on" not in err  # quiet all the same


def test_a_resumed_master_no_worker_joins_gives_the_worker_command(site: FixtureServer,
                                                                  tmp_path: Path) -> None:
    """Images an earlier run stored are no worker of this run: a rerun with a larger
    --max-images and no worker waited for ever without a word under --quiet."""
    out = tmp_path / "out"
    flags = ("--bind", "127.0.0.1:0", "--out", str(out))
    first = run_crawler("master", site.url + "/", *flags, "--local-workers", "1",
                        "--max-images", "3", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    master = start_crawler("master", site.url + "/", *flags, "--quiet", cwd=tmp_path)
    try:
        hint = wait_for_output(master, r"(\d+) image\(s\) are queued and no worker has taken "
                                       r"one in \d+ s: start workers, or run the master with "
                                       r"--local-workers N; workers on this host: crawler "
                                       r"worker ([^\n#]+)", 30)
        assert int(hint.group(1)) > 0
        worker = run_crawler("worker", *shlex.split(hint.group(2)), cwd=tmp_path)
        assert worker.returncode == 0, worker.stderr
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0, err


def test_a_master_whose_local_workers_died_does_not_advise_starting_them(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """It said "or run the master with --local-workers N" to a master run so."""
    slow_start(site, 2.0)  # the workers are there before any image is
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "1", cwd=tmp_path)
    try:
        wait_for_queue_address(master)
        log = out / "worker-1.log"
        wait_until(lambda: log.exists(), 10, "the local worker")
        killed = None
        for _ in range(RESTARTS + 1):  # each killed one started again, till no restart is left
            killed = local_worker_of(master, other_than=killed)
            os.kill(killed, signal.SIGKILL)
        wait_for_output(master, r"no worker has taken one in \d+ s: start workers as said "
                                r"above; the local workers have ended", 30)
    finally:
        stop(master)


def test_a_master_with_its_own_workers_gives_no_such_hint(site: FixtureServer,
                                                          tmp_path: Path) -> None:
    """The hint counts from when images first wait, and local workers are workers: a slow
    seed page (6 s) is no reason for it."""
    slow_start(site, 6.0)
    result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no worker has taken one" not in result.stderr


def test_quiet_silences_progress_and_summary(site: FixtureServer, tmp_path: Path) -> None:
    result = run_crawler("master", site.url + "/", "--local-workers", "1", "--out",
                         str(tmp_path / "out"), "--bind", "127.0.0.1:0", "--quiet", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout == ""


def as_a_terminal() -> dict[str, str]:
    """The environment of a program on a terminal that takes cursor moves, whatever the
    tests' own says (TERM=dumb in an editor's shell or a CI runner asks for plain lines)."""
    return {**os.environ, "TERM": "xterm-256color"}


def run_on_terminal(command: list[str], cwd: Path, columns: int, rows: int = 40,
                    on_chunk: Callable[[pyte.Screen], None] | None = None,
                    interrupt_when: Callable[[pyte.Screen], bool] | None = None
                    ) -> tuple[int, pyte.Screen]:
    """Run ``command`` on a pseudo-terminal of ``columns`` x ``rows``; return its status and
    the screen a terminal shows at the end (``on_chunk`` sees the screen after each read;
    SIGINT is sent once ``interrupt_when`` is true of it)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    try:
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=terminal,
                                   stderr=terminal, env=as_a_terminal())
        os.close(terminal)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:
                    break  # the other end closed
                if not chunk:
                    break
                stream.feed(chunk)
                if on_chunk is not None:
                    on_chunk(screen)
                if interrupt_when is not None and interrupt_when(screen):
                    process.send_signal(signal.SIGINT)
                    interrupt_when = None
            elif process.poll() is not None:
                break
        status = process.wait(timeout=30)
    finally:
        os.close(controller)
    return status, screen


def screen_lines(screen: pyte.Screen) -> list[str]:
    return [line.rstrip() for line in screen.display if line.strip()]


@pytest.mark.parametrize("columns", [80, 160])
def test_on_a_terminal_the_master_draws_one_clean_display(site: FixtureServer, tmp_path: Path,
                                                           columns: int) -> None:
    """Two live lines at any width: counts and bar, then a clean last frame and the summary."""
    frames: list[list[str]] = []

    def look(screen: pyte.Screen) -> None:
        lines = screen_lines(screen)
        frames.append(lines)
        bars = [line for line in lines if line.startswith("images ")]
        assert len(bars) <= 1, "\n".join(lines)  # never a second, stacked or stale copy

    status, screen = run_on_terminal(
        crawler_command("master", site.url + "/", "--local-workers", "1", "--out",
                        str(tmp_path / "out"), "--bind", "127.0.0.1:0", "--host-delay", "0.1"),
        tmp_path, columns, on_chunk=look)
    assert status == 0
    lines = screen_lines(screen)
    text = "\n".join(lines)
    # Said before the live lines started, and a log line printed above them, whole.
    queue = next(n for n, line in enumerate(lines) if line.startswith("queue on 127.0.0.1:"))
    (bar,) = [n for n, line in enumerate(lines) if line.startswith("images ")]
    assert queue < bar, text
    (refused,) = [line for line in lines if line.startswith("INFO: page ")]
    assert "/private/" in refused and lines.index(refused) < bar, text
    # The last frame holds the true final counts, each line within the width.
    assert re.fullmatch(r"images 14/14 \(1 failed\) \|\u2588+\| 100%  in 0:\d\d",
                        lines[bar]), text
    assert re.fullmatch(r"pages 8 \(1 failed\)  [\d.]+ KB [\d.]+ KB/s average  retries 0",
                        lines[bar + 1]), text
    assert lines[bar + 2] == "crawl completed", text
    assert all(len(line) < columns for line in lines[bar:bar + 2])
    # No fragment of an earlier frame anywhere: bar characters only on the bar line.
    assert [line for line in lines if "\u2588" in line or "|" in line] == [lines[bar]], text
    assert "/2002" not in text and "?page/s" not in text
    # The counts were live: frames before the last showed the crawl in progress.
    live = [line for frame in frames[:-1] for line in frame if line.startswith("images ")]
    assert any(not line.startswith("images 14/14") for line in live), live
    assert any("queued" in line for frame in frames for line in frame), "pages left are shown"
    assert any("workers" in line and "in flight" in line for frame in frames for line in frame)


def test_on_a_terminal_a_port_in_use_is_one_clean_line(site: FixtureServer,
                                                        tmp_path: Path) -> None:
    """Nothing is drawn before the queue is up: the error stands alone on the screen."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, screen = run_on_terminal(
            crawler_command("master", site.url + "/", "--out", str(tmp_path / "out"),
                            "--bind", f"127.0.0.1:{port}"), tmp_path, 80)
    assert status == 4
    text = " ".join(screen_lines(screen))  # the line may wrap at 80 columns
    assert text.startswith(f"crawler: error: cannot serve the queue on 127.0.0.1:{port}"), text
    assert "images" not in text and "pages" not in text


def test_on_a_terminal_ctrl_c_is_said_above_the_live_lines(site: FixtureServer,
                                                            tmp_path: Path) -> None:
    status, screen = run_on_terminal(
        crawler_command("master", site.url + "/", "--local-workers", "1", "--out",
                        str(tmp_path / "out"), "--bind", "127.0.0.1:0", "--host-delay", "0.4"),
        tmp_path, 80, interrupt_when=lambda screen: any(
            line.startswith("images ") for line in screen.display))
    assert status == 130
    lines = screen_lines(screen)
    text = "\n".join(lines)
    said = lines.index("crawler: stopping after the pages in flight; Ctrl-C again to quit now")
    (bar,) = [n for n, line in enumerate(lines) if line.startswith("images ")]
    assert said < bar and lines[bar + 2].startswith("crawl interrupted"), text
    assert re.fullmatch(r"pages \d+( \+\d+ not visited)? .*retries \d+", lines[bar + 1]), text


def test_worker_prints_its_own_line_and_logs_failures(site: FixtureServer, tmp_path: Path,
                                                      authkey: str) -> None:
    out = tmp_path / "out"
    slow_start(site)
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                           cwd=tmp_path)
    worker = None
    try:
        address = wait_for_queue_address(master)
        worker = start_crawler("worker", address, "--out", str(out), "--verbose", cwd=tmp_path)
        master.wait(timeout=60)
        err = finish(worker, 30)
    finally:
        stop(master)
        if worker is not None:
            stop(worker)
    assert worker.returncode == 0
    missing = site.url + next(iter(EXPECTED_FAILED))
    assert f"failed {missing}: HTTP 404" in err
    assert f"worker: downloaded {len(EXPECTED_OK)}, failed tries 1," in err
    assert "DEBUG" in err, "--verbose gives debug logs"


def test_status_reports_counts_and_workers(site: FixtureServer, tmp_path: Path,
                                           authkey: str) -> None:
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                           "--host-delay", "0.3", cwd=tmp_path)
    worker = None
    try:
        address = wait_for_queue_address(master)
        worker = start_crawler("worker", address, "--out", str(out), "--threads", "2",
                               cwd=tmp_path)
        time.sleep(2.0)
        result = run_crawler("status", address, "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        table = run_crawler("status", address, cwd=tmp_path)
        wrong = run_crawler("status", address, cwd=tmp_path,
                            env={**os.environ, "CRAWLER_AUTHKEY": "x" * 32})
        finish(master, 60)
    finally:
        stop(master)
        if worker is not None:
            stop(worker)
    assert status["seeds"] == [site.url + "/"]
    assert status["progress"]["pages"] >= 1 and status["progress"]["found"] >= 1
    assert set(status["board"]) >= {"queued", "in_flight", "delayed", "done", "retries"}
    # One count of downloads in flight (the progress's was the loop's last look: 2 beside 14)
    assert status["progress"]["in_flight"] == status["board"]["in_flight"]
    [row] = status["workers"]
    assert row["threads"] == 2 and row["done"] >= 1 and row["last_contact_s"] < 5
    assert row["rate"] > 0
    assert table.returncode == 0
    assert "downloaded" in table.stdout and "in flight" in table.stdout
    assert "pages_queued" in status["progress"] and " queued)" in table.stdout
    assert row["worker"][:32] in table.stdout
    assert wrong.returncode == 1 and "refused our authkey" in wrong.stderr


def test_status_of_no_master_is_a_clear_error(tmp_path: Path, authkey: str) -> None:
    from .conftest import free_port

    port = free_port()
    result = run_crawler("status", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    assert f"no master answers at 127.0.0.1:{port}" in result.stderr


def test_dry_run_lists_image_urls_and_downloads_nothing(site: FixtureServer,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--dry-run", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert sorted(listed) == sorted(site.url + p for p in EXPECTED_OK | set(EXPECTED_FAILED))
    assert not out.exists(), "a dry run writes nothing"
    images = {p for p in EXPECTED_OK | set(EXPECTED_FAILED)}
    assert not images & set(site.paths()), "no image was downloaded"


def test_a_dry_run_does_not_list_images_robots_txt_refuses(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    serve_routes(server, {
        "/": ("text/html", b'<img src="/ok.png"><img src="/private/no.png">'),
        "/robots.txt": ("text/plain", b"User-agent: *\nDisallow: /private/\n"),
    })
    result = run_crawler("master", server.url + "/", "--dry-run", "--out",
                         str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [server.url + "/ok.png"]
    # Said beside the list, which a refusal otherwise shortened without a word.
    assert ("dry run: robots.txt left images out\n"
            "  not listed      1 image URL: disallowed by robots.txt\n") in result.stderr


def test_a_dry_run_says_the_images_whose_robots_txt_it_could_not_read(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """They were left out of the list without a word, and the exit status was 0; a real
    crawl reads the file again, and may fetch them."""
    server = make_server()
    # A port bound, and kept so, where nothing listens: connections to it are refused.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{bound.getsockname()[1]}"
        serve_routes(server, {
            "/": ("text/html", f'<img src="/ok.png"><img src="{nobody}/a.png">'
                               f'<img src="{nobody}/b.png">'.encode()),
        })
        result = run_crawler("master", server.url + "/", "--dry-run", "--out",
                             str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [server.url + "/ok.png"]
    said = re.search(r"dry run: robots\.txt left images out\n  not listed      2 image URLs: "
                     r"robots\.txt unreachable \(connection error: [^\n]*\); a crawl reads it "
                     r"again, and may fetch them\n", result.stderr)
    assert said, result.stderr


def test_a_dry_run_lists_an_image_shown_on_many_pages_once(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A dry run records no image: it still lists each once, whichever pages show it."""
    server = make_server()
    pages = {f"/p{n}.html": ("text/html", f'<img src="/shared.png"><img src="/own{n}.png">'
                             .encode()) for n in range(4)}
    index = "".join(f'<a href="/p{n}.html">p</a>' for n in range(4)) + '<img src="/shared.png">'
    # One page at a time, each slower than the loop's recording: a batch of its own each.
    serve_routes(server, {"/": ("text/html", index.encode()), **pages}, page_delay=0.03)
    result = run_crawler("master", server.url + "/", "--dry-run", "--page-concurrency", "1",
                         "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(
        [server.url + "/shared.png", *(server.url + f"/own{n}.png" for n in range(4))])


def test_a_dry_run_judges_an_image_shown_on_many_pages_once(
        make_server: Callable[[], FixtureServer], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The page loop asks robots.txt about an image it met on an earlier page no more: a
    dry run puts nothing on the board, so the master's own memory of its images says so."""
    import crawler
    from crawler.master.robots import Robots

    asked: list[str] = []
    refusal = Robots.refusal

    def counted(self: Robots, url: str) -> str | None:
        asked.append(url)
        return refusal(self, url)

    monkeypatch.setattr(Robots, "refusal", counted)
    server = make_server()
    pages = {f"/p{n}.html": ("text/html", f'<img src="/shared.png"><img src="/own{n}.png">'
                             .encode()) for n in range(4)}
    index = "".join(f'<a href="/p{n}.html">p</a>' for n in range(4)) + '<img src="/shared.png">'
    serve_routes(server, {"/": ("text/html", index.encode()), **pages}, page_delay=0.03)
    summary = crawler.crawl([server.url + "/"], out=tmp_path / "out", dry_run=True,
                            settings=crawler.Settings(), page_concurrency=1)
    assert summary.pages == 5 and summary.found == 5
    # The index shows it first; the crawl loop has noted it before any page it links
    # is fetched.
    assert asked.count(server.url + "/shared.png") == 1
    assert all(asked.count(server.url + f"/own{n}.png") == 1 for n in range(4))


def test_a_dry_run_whose_reader_goes_away_stops_with_one_line(site: FixtureServer,
                                                             tmp_path: Path) -> None:
    """``crawler master URL --dry-run | head -1``: no traceback, exit status 120."""
    with subprocess.Popen(crawler_command("master", site.url + "/", "--dry-run", "--quiet"),
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as dry_run:
        assert dry_run.stdout is not None and dry_run.stderr is not None
        first = dry_run.stdout.readline()
        dry_run.stdout.close()  # as head does after one line
        err = dry_run.stderr.read()
        assert dry_run.wait(timeout=60) == 120, err
    assert first.startswith(site.url)
    assert err.strip() == "crawler: error: standard output cannot be written (closed)"


def test_report_output_that_cannot_be_written_is_exit_120(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").touch()
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # each write fails inside the command
    with Path("/dev/full").open("w") as full:
        result = subprocess.run(crawler_command("report", str(tmp_path)), stdout=full,
                                stderr=subprocess.PIPE, text=True, env=env, timeout=60,
                                check=False)
    assert result.returncode == 120, result.stderr
    assert result.stderr.strip() == ("crawler: error: standard output cannot be written"
                                     " (No space left on device)")


# Made the session's controlling terminal, then the crawler: a hang-up reaches it as
# it reaches a command run in an ssh session that drops.
_ON_ITS_OWN_TERMINAL = ("import os, sys, fcntl, termios; os.setsid(); "
                        "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                        "os.execvp(sys.argv[1], sys.argv[1:])")
# What nohup does: SIGHUP ignored (which exec keeps), the output in a file.
_NOHUP = _ON_ITS_OWN_TERMINAL.replace("os.setsid(); ", "os.setsid(); import signal; "
                                      "signal.signal(signal.SIGHUP, signal.SIG_IGN); ")


def test_a_hang_up_stops_the_master_cleanly_and_a_rerun_completes_the_crawl(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """Its terminal closed (ssh dropped), the master stops as after SIGTERM: its state and
    summary saved, its workers' images handed back, nothing written to the dead terminal
    ending it first. A rerun completes the crawl."""
    server, site, out = _slow_crawl(make_server, tmp_path)
    process = _hang_up_while_crawling(_ON_ITS_OWN_TERMINAL, _master(
        server, out, "-o", str(tmp_path / "master.log")), tmp_path)
    assert process.wait(timeout=60) == 130
    said = (tmp_path / "master.log").read_text()
    assert "hang-up: stopping after the pages in flight; the state is saved" in said, said
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and 0 < summary["succeeded"] < len(site.images)
    rerun = run_crawler("master", server.url + "/", "--out", str(out), "--local-workers", "1",
                        "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    check_complete(out, server.url, site)


def test_a_hang_up_stops_a_worker_which_hands_its_images_back(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server, site, out = _slow_crawl(make_server, tmp_path)
    master = start_crawler("master", server.url + "/", "--out", str(out), "--local-workers",
                           "0", "--bind", "127.0.0.1:0", cwd=tmp_path)
    try:
        address = wait_for_queue_address(master)
        log = tmp_path / "worker.log"
        worker = _hang_up_while_crawling(_ON_ITS_OWN_TERMINAL, crawler_command(
            "worker", address, "--out", str(tmp_path / "w1"), "--threads", "2", "-o", str(log)),
            tmp_path)
        assert worker.wait(timeout=30) == 0
        said = log.read_text()
        assert "worker stopped (SIGHUP)" in said, said
        assert re.search(r"handed \d+ unfinished URLs back to the master", said), said
        other = run_crawler("worker", address, "--out", str(tmp_path / "w2"), cwd=tmp_path)
        assert other.returncode == 0, other.stderr
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0, err
    check_complete(out, server.url, site, stores=[tmp_path / "w1", tmp_path / "w2"])


def test_under_nohup_a_hang_up_is_still_ignored(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server, site, out = _slow_crawl(make_server, tmp_path)
    process = _hang_up_while_crawling(_NOHUP, _master(server, out), tmp_path,
                                      log=tmp_path / "nohup.out")
    assert process.wait(timeout=60) == 0
    assert "crawl completed" in (tmp_path / "nohup.out").read_text()
    check_complete(out, server.url, site)


def _slow_crawl(make_server: Callable[[], FixtureServer], tmp_path: Path
                ) -> tuple[FixtureServer, Site, Path]:
    """A site whose images come slowly enough to hang up mid-crawl, and the output folder."""
    server = make_server()
    return server, setup_site(server, pages=2, images_per_page=40, image_delay=0.05), \
        tmp_path / "out"


def _master(server: FixtureServer, out: Path, *extra: str) -> list[str]:
    return crawler_command("master", server.url + "/", "--out", str(out), "--local-workers",
                           "2", "--threads", "2", "--bind", "127.0.0.1:0", *extra)


def _hang_up_while_crawling(launcher: str, args: list[str], cwd: Path,
                            log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` through ``launcher`` on a terminal of its own (its output there, or
    in ``log``), and close the terminal once CWD/out/results.log has a line, with the
    SIGHUP to the process group that a shell sends its job then; the process."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    output = log.open("wb") if log is not None else None
    process = subprocess.Popen([sys.executable, "-c", launcher, *args], cwd=cwd,
                               stdin=terminal, stdout=output or terminal,
                               stderr=output or terminal, env=as_a_terminal())
    os.close(terminal)
    try:
        screen = pyte.Screen(100, 24)
        stream = pyte.ByteStream(screen)
        deadline = time.monotonic() + 60
        results = cwd / "out" / "results.log"
        while time.monotonic() < deadline and not (results.exists() and results.stat().st_size):
            if select.select([controller], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):  # EIO: none writes there (nohup)
                    stream.feed(os.read(controller, 65536))
        assert process.poll() is None, "the crawl ended before the hang-up"
    finally:
        os.close(controller)  # the hang-up: the kernel's SIGHUP to the session leader,
        time.sleep(0.01)  # (apart: two at once would arrive as one)
        with contextlib.suppress(ProcessLookupError):  # and its shell's to the whole job
            os.killpg(process.pid, signal.SIGHUP)
        if output is not None:
            output.close()
    return process


def test_the_no_worker_hint_counts_tutorial_workers_as_workers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tutorial workers say no hello: only they at work, the master said every worker
    had left, once the hint was said after every worker's leaving too."""
    from crawler.master import workercall
    from crawler.master.authkey import Authkey
    from crawler.master.launcher import LocalWorkers

    monkeypatch.setattr(workercall, "NO_WORKER_HINT", 0.0)  # the first look is long enough
    call = workercall.WorkerCall(LocalWorkers(tmp_path, Authkey(b"k" * 32), 1), local=0,
                                 invite=True, out_dir=tmp_path, authkey=Authkey(b"k" * 32),
                                 announce=lambda line: None)
    waiting = {"queued": 50, "in_flight": 0, "delayed": 0, "workers": 0, "done": 0}
    call.hint_when_no_worker({**waiting, "tutorial": 1})  # before any was done
    call.hint_when_no_worker({**waiting, "tutorial": 1, "done": 7})
    assert "worker" not in caplog.text
    call.hint_when_no_worker({**waiting, "tutorial": 0, "done": 7})
    assert "50 image(s) are queued and every worker has left" in caplog.text, caplog.text
