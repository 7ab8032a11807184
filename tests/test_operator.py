"""What the operator sees: progress on a terminal and off it, the summary, status, dry runs."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import (
    FixtureServer,
    crawler_command,
    finish,
    run_crawler,
    serve_routes,
    slow_start,
    start_crawler,
    stop,
    wait_for_queue_address,
)
from .test_end_to_end import EXPECTED_FAILED, EXPECTED_OK


def test_without_a_terminal_progress_is_plain_lines_and_a_summary(
        site: FixtureServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--local-workers", "2", "--out", str(out),
                         "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 0
    err = result.stderr
    assert "\r" not in err and "\x1b[" not in err, "no terminal control codes in a log"
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert progress, err
    assert "images found 14, downloaded 13, failed 1," in progress[-1]
    summary = err[err.index("crawl completed"):]
    # 8 pages: /index.html is linked apart from /, and /private/ is refused by robots.txt.
    for expected in ("pages crawled   8 (1 failed or skipped)", "images found    14",
                     "downloaded      13", "failed          1", "images/s", "top failure reasons:",
                     "     1  HTTP 404", "hosts with most failures:",
                     f"     1  {site.url[len('http://'):]}",
                     f"results in      {out}/results.log and {out}/manifest.jsonl"):
        assert expected in summary, expected


def test_quiet_silences_progress_and_summary(site: FixtureServer, tmp_path: Path) -> None:
    result = run_crawler("master", site.url + "/", "--local-workers", "1", "--out",
                         str(tmp_path / "out"), "--bind", "127.0.0.1:0", "--quiet", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout == ""


def test_on_a_terminal_the_master_draws_tqdm_bars(site: FixtureServer, tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        process = subprocess.Popen(
            crawler_command("master", site.url + "/", "--local-workers", "1", "--out",
                            str(tmp_path / "out"), "--bind", "127.0.0.1:0"),
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
        os.close(terminal)
        screen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:
                    break  # the other end closed
                if not chunk:
                    break
                screen += chunk
            elif process.poll() is not None:
                break
        assert process.wait(timeout=30) == 0
    finally:
        os.close(controller)
    text = screen.decode(errors="replace")
    for bar in ("pages crawled", "images found", "downloaded", "failed", "bytes"):
        assert bar in text, bar
    assert "\r" in text, "tqdm redraws its bars in place"
    assert "in flight" in text and "workers" in text


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
    assert f"worker: {len(EXPECTED_OK)} images, failed 1," in err
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
    [row] = status["workers"]
    assert row["threads"] == 2 and row["done"] >= 1 and row["last_contact_s"] < 5
    assert row["rate"] > 0
    assert table.returncode == 0
    assert "downloaded" in table.stdout and "in flight" in table.stdout
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
