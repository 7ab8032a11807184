"""Nothing lost: dead workers, a dead master, restarts, stops and retries, with real processes."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import pickle
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crawler.cli import EXIT_NOTHING_STORED
from crawler.demo.site import Site, build_site
from crawler.errors import BrokerUnreachable
from crawler.worker.masterlink import why_lost

from .conftest import (
    LOOPBACK_HELLO,
    SIGNAL_AT_IMPORT,
    SITE,
    FixtureHandler,
    FixtureServer,
    Route,
    at_default_actions,
    children_of,
    command_words,
    crawler_command,
    fail_first,
    finish,
    free_port,
    local_worker_of,
    manifest_lines,
    run_crawler,
    serve_routes,
    slow_start,
    start_crawler,
    stop,
    tiny_tmpfs,
    wait_for_output,
    wait_for_queue_address,
    wait_until,
    without_permission_override,
)

CLASSIC_WORKER = Path(__file__).parent / "classic_worker.py"

FAST_RETRIES = """
[download]
backoff_base = 0.2
backoff_max = 1.0
"""


@contextlib.contextmanager
def _stopped_at_the_end(
        processes: list[subprocess.Popen[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Yield ``processes`` (add to it as they start); whatever happens, none outlives the test."""
    try:
        yield processes
    finally:
        for process in processes:
            stop(process)


def setup_site(server: FixtureServer, pages: int = 4, images_per_page: int = 15,
               **behaviour: object) -> Site:
    site = build_site(pages=pages, images_per_page=images_per_page, min_kb=1, max_kb=8)
    serve_routes(server, site.files, **behaviour)  # type: ignore[arg-type]
    return site


def check_complete(out: Path, base: str, site: Site, stores: list[Path] | None = None) -> None:
    """Every image of the site succeeded once, and its file is whole on disk."""
    entries = manifest_lines(out)
    urls = [entry["url"] for entry in entries]
    assert len(urls) == len(set(urls)), "a URL has two final results"
    assert set(urls) == {base + path for path in site.images}
    for entry in entries:
        assert entry["status"] == "success", entry
        body = site.files[entry["url"][len(base):]][1]
        candidates = [folder / entry["path"] for folder in (stores or [out])]
        stored = [p for p in candidates if p.exists()]
        assert stored, f"{entry['path']} is missing"
        assert stored[0].read_bytes() == body
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()
    for folder in stores or [out]:
        assert not [p for p in folder.glob(".partial/**/*") if p.is_file()], \
            "a partial download was left behind"


def gate_image(server: FixtureServer, path: str, first: bytes,
               later: bytes | None = None) -> tuple[threading.Event, threading.Event]:
    """Serve half of ``first`` to the first request of ``path``, the rest only once released;
    every later request gets ``later`` (default: ``first``) at once.

    Returns (the first request has begun, release it): a worker that has begun is
    known to hold the URL's lease, and cannot finish it before the release.
    """
    begun, release = threading.Event(), threading.Event()
    requests = itertools.count()

    def route(handler: FixtureHandler) -> None:
        if next(requests):
            handler.send_body(200, first if later is None else later, "image/png")
            return
        handler.send_first_half(first)
        begun.set()
        release.wait(60)
        with contextlib.suppress(OSError):  # the worker may be dead by now
            handler.wfile.write(first[len(first) // 2 :])

    server.routes[path] = route
    return begun, release


def test_a_killed_worker_loses_nothing(make_server: Callable[[], FixtureServer], tmp_path: Path,
                                       authkey: str) -> None:
    server = make_server()
    site = setup_site(server, image_delay=0.05)
    held = sorted(site.images)[0]
    begun, release = gate_image(server, held, site.files[held][1])
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--lease-timeout", "2", cwd=tmp_path)
    workers: list[subprocess.Popen[str]] = []
    try:
        address = wait_for_queue_address(master)
        workers.append(start_crawler("worker", address, "--out", str(out), "--threads", "4",
                                     cwd=tmp_path))
        # The only worker so far began the gated image: it surely holds a lease when killed.
        assert begun.wait(30), "the gated image was never asked for"
        wait_until(lambda: sum(p in site.images for p in server.paths()) >= 10, 30,
                   "some images to be downloaded")
        workers.append(start_crawler("worker", address, "--out", str(out), "--threads", "4",
                                     cwd=tmp_path))
        workers[0].kill()  # kill -9, in the middle of its downloads
        workers[0].wait(timeout=10)
        release.set()
        err = finish(master, 90)
        assert master.returncode == 0, err
        assert workers[1].wait(timeout=30) == 0
    finally:
        release.set()
        for process in (master, *workers):
            stop(process)
    check_complete(out, server.url, site)
    attempts = {e["url"]: e["attempts"] for e in manifest_lines(out)}
    assert attempts[server.url + held] == 2, "the dead worker's lease"
    assert max(attempts.values()) == 2


def test_a_master_whose_every_worker_died_says_so_and_goes_on_with_a_new_one(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A master whose only worker was killed mid-crawl waited without a word: the hint
    of a master no worker came to was said only while no worker had taken an image."""
    server = make_server()
    site = setup_site(server, image_delay=0.05)
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), cwd=tmp_path)
    workers: list[subprocess.Popen[str]] = []
    try:
        address = wait_for_queue_address(master)
        workers.append(start_crawler("worker", address, "--out", str(out), "--threads", "1",
                                     cwd=tmp_path))
        wait_until(lambda: sum(p in site.images for p in server.paths()) >= 5, 30,
                   "the worker downloading")
        workers[0].kill()
        workers[0].wait(timeout=10)
        wait_for_output(master, r"\d+ image\(s\) are queued and every worker has left: none "
                                r"has been here in \d+ s: start workers as said above, or run "
                                r"the master with --local-workers N", 30)
        workers.append(start_crawler("worker", address, "--out", str(out), cwd=tmp_path))
        err = finish(master, 60)
        assert master.returncode == 0, err
        assert workers[1].wait(timeout=30) == 0
    finally:
        for process in (master, *workers):
            stop(process)
    check_complete(out, server.url, site)
    assert "no worker has taken one" not in err


def test_a_worker_that_lost_its_lease_never_replaces_what_another_stored(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Paused past its lease mid-download, a worker resumes after another stored the image:
    the stored file stays the one the manifest describes."""
    png = (SITE / "images" / "red.png").read_bytes()
    late, current = png + b"late bytes", png + b"current bytes"
    page = b'<html><body><img src="/late.png"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    begun, release = gate_image(site, "/late.png", late, current)
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--lease-timeout", "1", "--ignore-robots", cwd=tmp_path)
    with _stopped_at_the_end([master]) as processes:
        address = wait_for_queue_address(master)
        paused = start_crawler("worker", address, "--out", str(out), "--threads", "1",
                               "--connect-wait", "2", cwd=tmp_path)
        processes.append(paused)
        assert begun.wait(30), "the image was never asked for"
        os.kill(paused.pid, signal.SIGSTOP)  # no heartbeats: its lease runs out
        try:
            current_worker = start_crawler("worker", address, "--out", str(out), cwd=tmp_path)
            processes.append(current_worker)
            err = finish(master, 60)
            assert master.returncode == 0, err
            assert current_worker.wait(timeout=30) == 0
        finally:
            release.set()  # the rest of the late body waits in the paused worker's socket
            os.kill(paused.pid, signal.SIGCONT)
        paused.wait(timeout=60)  # it stores, then finds its master gone
    [entry] = manifest_lines(out)
    assert entry["status"] == "success" and entry["attempts"] == 2, entry
    assert entry["sha256"] == hashlib.sha256(current).hexdigest()
    assert (out / entry["path"]).read_bytes() == current
    assert [p for p in out.glob("images/**/*") if p.is_file()] == [out / entry["path"]]


def _master_of_one_local_worker(server: FixtureServer, tmp_path: Path
                                ) -> tuple[subprocess.Popen[str], Site, Path, dict[str, str]]:
    """A master crawling a slow site with one local worker: (master, site, out, env)."""
    site = setup_site(server, image_delay=0.05)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}  # a generated key
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "1", "--worker-threads", "2",
                           "--lease-timeout", "2", cwd=tmp_path, env=env)
    return master, site, out, env


def test_a_local_worker_killed_by_a_signal_is_started_again(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    master, site, out, _ = _master_of_one_local_worker(server, tmp_path)
    with _stopped_at_the_end([master]):
        wait_for_queue_address(master)
        wait_until(lambda: sum(p in site.images for p in server.paths()) >= 5, 30,
                   "the local worker downloading")
        killed = local_worker_of(master)
        os.kill(killed, signal.SIGKILL)
        wait_for_output(master, r"local worker 1 was killed by SIGKILL \(log: "
                                r"[^)]*worker-1\.log\); started again \(restart 1 of 3\)")
        assert local_worker_of(master, other_than=killed) != killed
        assert re.search(r"^--- started again by its master at \d\d:\d\d:\d\d: the last one "
                         r"was killed by SIGKILL \(restart 1 of 3\) ---$",
                         (out / "worker-1.log").read_text(), re.MULTILINE)
        err = finish(master, 90)
    assert master.returncode == 0, err
    assert "waits for workers from elsewhere" not in err, err
    check_complete(out, server.url, site)  # what the killed one held went to the new one


def test_a_local_worker_killed_past_its_restarts_leaves_the_crawl_to_workers_elsewhere(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    master, site, out, env = _master_of_one_local_worker(server, tmp_path)
    with _stopped_at_the_end([master]) as processes:
        address = wait_for_queue_address(master)
        wait_until(lambda: sum(p in site.images for p in server.paths()) >= 5, 30,
                   "the local worker downloading")
        killed = None
        for restart in (1, 2, 3):
            killed = local_worker_of(master, other_than=killed)
            os.kill(killed, signal.SIGKILL)
            wait_for_output(master, rf"local worker 1 was killed by SIGKILL .*started again "
                                    rf"\(restart {restart} of 3\)")
        os.kill(local_worker_of(master, other_than=killed), signal.SIGKILL)
        wait_for_output(master, r"local worker 1 was killed by SIGKILL .*; 0 local worker\(s\) "
                                r"left, the crawl waits for workers from elsewhere")
        worker = start_crawler("worker", address, "--out", str(out), "--authkey-file",
                               str(out / "authkey"), cwd=tmp_path, env=env)
        processes.append(worker)
        err = finish(master, 90)
        assert worker.wait(timeout=30) == 0
    assert master.returncode == 0, err
    check_complete(out, server.url, site)


def test_local_worker_threads_are_checked_by_the_master(tmp_path: Path) -> None:
    result = subprocess.run(crawler_command("master", "http://127.0.0.1:1/", "--local-workers",
                                            "1", "--worker-threads", "-1"),
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2, result.stderr
    assert "--threads -1: expected a number > 0" in result.stderr


def _small_files_only() -> None:
    """In the child before exec: files past 3 KB cannot be written (EFBIG, as a full disk)."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (3 * 1024, 3 * 1024))


def test_a_worker_that_cannot_store_hands_back_and_exits_3(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server)  # images of 1-8 KB: most cannot be stored by the first worker
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), cwd=tmp_path)
    with _stopped_at_the_end([master]) as processes:
        address = wait_for_queue_address(master)
        crippled = subprocess.Popen(crawler_command("worker", address, "--out", str(out),
                                                    "--threads", "4"),
                                    cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True,
                                    preexec_fn=_small_files_only)
        processes.append(crippled)
        crippled_err = finish(crippled, 60)
        assert crippled.returncode == 3, crippled_err
        assert f"crawler: error: cannot store images under {out}: " in crippled_err
        assert "File too large" in crippled_err and "went back to the master" in crippled_err
        worker = start_crawler("worker", address, "--out", str(out), cwd=tmp_path)
        processes.append(worker)
        err = finish(master, 90)
        assert worker.wait(timeout=30) == 0
    assert master.returncode == 0, err
    check_complete(out, server.url, site)  # nothing was failed for the first worker's disk
    assert max(e["attempts"] for e in manifest_lines(out)) == 1


def test_a_worker_denied_the_image_folder_says_so_not_that_the_disk_is_full(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """It said "free some space (or fix the folder)", as for a full disk."""
    out = tmp_path / "out"
    images = out / "images"
    images.mkdir(parents=True)
    images.chmod(0o555)
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--max-images", "3", cwd=tmp_path)
    try:
        with _stopped_at_the_end([master]) as processes:
            address = wait_for_queue_address(master)
            denied = subprocess.Popen(
                [*without_permission_override(), *crawler_command(
                    "worker", address, "--out", str(out), "--threads", "1")],
                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            processes.append(denied)
            err = finish(denied, 60)
    finally:
        images.chmod(0o755)
    assert denied.returncode == 3, err
    [line] = [line for line in err.splitlines() if line.startswith("crawler: error:")]
    assert f"permission denied on {images} (Permission denied); fix its permissions, or " \
           "choose another output folder; the URLs this worker held went back to the " \
           "master; start it again once that is fixed" in line, line
    assert "space" not in line, line


def test_a_worker_whose_partials_folder_is_removed_mid_download_makes_it_again(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """OUT/.partial is the worker's scratch space: removed (by hand, a cleaner) while a
    large body is being written there, that one download is tried again and the worker
    goes on, rather than stop as if its disk had failed."""
    png = (SITE / "images" / "red.png").read_bytes()
    big = png + b"\0" * (3 * 1024 * 1024)  # past the size kept in memory: spilled to disk
    page = b'<html><body><img src="/big.png"><img src="/red.png"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    site.routes["/red.png"] = lambda handler: handler.send_body(200, png, "image/png")
    begun, release = gate_image(site, "/big.png", big)
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--ignore-robots", cwd=tmp_path)
    with _stopped_at_the_end([master]) as processes:
        address = wait_for_queue_address(master)
        worker = start_crawler("worker", address, "--out", str(out), cwd=tmp_path)
        processes.append(worker)
        assert begun.wait(30), "the large image was never asked for"
        wait_until(lambda: any(p.is_file() for p in out.glob(".partial/**/*")), 30,
                   "the large image's partial file")
        shutil.rmtree(out / ".partial")
        release.set()
        worker_err = finish(worker, 90)  # (it leaves when the crawl is over)
        assert worker.returncode == 0, worker_err
        err = finish(master, 30)
    assert master.returncode == 0, err
    entries = {e["url"]: e for e in manifest_lines(out)}
    assert entries[site.url + "/big.png"]["attempts"] == 2, entries
    for entry in entries.values():
        assert entry["status"] == "success", entry
    assert (out / entries[site.url + "/big.png"]["path"]).read_bytes() == big
    assert not [p for p in out.glob(".partial/**/*") if p.is_file()]


def test_a_killed_master_resumes_without_refetching_pages(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, pages=16, images_per_page=4, page_delay=0.15, image_delay=0.02)
    out = tmp_path / "out"
    port = free_port()
    args = ("master", server.url + "/", "--bind", f"127.0.0.1:{port}", "--out", str(out),
            "--page-concurrency", "2")
    worker = start_crawler("worker", f"127.0.0.1:{port}", "--out", str(out), "--threads", "4",
                           cwd=tmp_path)
    master = start_crawler(*args, cwd=tmp_path)
    try:
        page_paths = set(site.pages)
        wait_until(lambda: sum(p in page_paths for p in server.paths()) >= 6, 30,
                   "a few pages to be crawled")
        master.kill()
        master.wait(timeout=10)
        hits_at_crash = len(server.paths())
        master = start_crawler(*args, cwd=tmp_path)
        err = finish(master, 90)
        assert master.returncode == 0, err
        assert worker.wait(timeout=30) == 0, "the worker reconnected and finished"
    finally:
        stop(master)
        stop(worker)
    check_complete(out, server.url, site)
    page_hits = collections.Counter(p for p in server.paths() if p in page_paths)
    twice = [p for p, n in page_hits.items() if n > 1]
    # Fetched again: the 2 being fetched when it was killed, and those read and not yet
    # recorded (being parsed and judged: on a site this slow, not more than those).
    assert len(twice) <= 2 * 2, f"pages fetched again beyond those in flight: {twice}"
    assert set(page_hits) == page_paths
    assert len(server.paths()) > hits_at_crash


def test_a_master_ended_by_an_error_leaves_its_workers_waiting_for_its_return(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A master that ends on an error (its disk full) does not tell the workers that
    the crawl is over: they wait for it, and finish the crawl when it runs again."""
    server = make_server()
    site = setup_site(server, pages=6, images_per_page=20, image_delay=0.05)
    port = free_port()
    stored = tmp_path / "worker"
    with tiny_tmpfs(tmp_path / "small", "4m") as small:
        out = small / "out"
        args = ("master", server.url + "/", "--bind", f"127.0.0.1:{port}", "--out", str(out))
        worker = start_crawler("worker", f"127.0.0.1:{port}", "--out", str(stored),
                               "--threads", "2", "--connect-wait", "60", cwd=tmp_path)
        master = start_crawler(*args, cwd=tmp_path)
        try:
            wait_until(lambda: len(manifest_lines(out)) >= 5, 30, "the first results")
            filler = small / "filler"
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as fill:
                for _ in range(80):  # more than the 4 MB there are
                    fill.write(bytes(65536))
            err = finish(master, 60)
            assert master.returncode == 3, err
            assert "disk is full" in err or "No space left" in err, err
            # Told the crawl was over, it would leave (status 0) without this line.
            wait_for_output(worker, "trying again for up to", 15)
            assert worker.poll() is None, "the worker left as if the crawl were over"
            filler.unlink()
            master = start_crawler(*args, cwd=tmp_path)
            err = finish(master, 90)
            assert master.returncode == 0, err
            assert worker.wait(timeout=30) == 0, "the worker came back and finished"
        finally:
            stop(master)
            stop(worker)
        check_complete(out, server.url, site, stores=[stored])


def test_an_output_folder_removed_mid_crawl_stops_the_master_with_an_error(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Its journal and result files, open still, went with the folder: a master that went
    on would write into files no longer there, and say the crawl completed."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=8)
    release = threading.Event()
    held = sorted(site.images)[4:]  # the first few succeed, the rest wait for the removal
    for path in held:
        server.routes[path] = lambda h, normal=server.routes[path]: (release.wait(60),
                                                                     normal(h))
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "1")
    master = start_crawler(*args, cwd=tmp_path)
    try:
        # All that are not held: none is being written as the folder goes.
        wait_until(lambda: len(manifest_lines(out)) >= 4, 60, "the first results")
        shutil.rmtree(out)
        release.set()
        err = finish(master, 90)
    finally:
        release.set()
        stop(master)
    assert master.returncode == 3, err
    last = err.rstrip().splitlines()[-1]
    # The folder, or (a new one given the old one's number) the first file it held.
    gone = re.escape(str(out))
    assert re.match(rf"crawler: error: (the output folder {gone}|{gone}/\S+) was removed, "
                    "moved or replaced while the crawl ran", last), err
    assert "run the same command again" in last, err
    again = start_crawler(*args, cwd=tmp_path)
    try:
        err = finish(again, 90)
    finally:
        stop(again)
    assert again.returncode == 0, err
    check_complete(out, server.url, site)


def test_a_run_killed_before_its_end_leaves_no_summary_of_the_last_run(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=5)
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "1")
    first = start_crawler(*args, "--max-images", "3", cwd=tmp_path)
    err = finish(first, 60)
    assert first.returncode == 0 and (out / "summary.json").exists(), err
    release = threading.Event()
    for path in site.images:  # the second run cannot end: its images never come
        server.routes[path] = lambda h, normal=server.routes[path]: (release.wait(30),
                                                                     normal(h))
    asked_before = len(server.paths())
    master = start_crawler(*args, "--max-images", "10", cwd=tmp_path)
    children: list[int] = []
    try:
        wait_until(lambda: any(p in site.images for p in server.paths()[asked_before:]), 30,
                   "the second run's worker to ask for an image")
        children = children_of(master.pid)
        master.kill()
        master.wait(timeout=10)
    finally:
        release.set()
        stop(master)
        for pid in children:  # its local worker would wait for it a while
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not (out / "summary.json").exists(), "the last run's summary says it completed"


def test_a_killed_masters_local_worker_holds_neither_its_port_nor_its_parsers(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A local worker is forked from its master (no second interpreter start-up):
    it must not keep what the master had open. The master's port is free for a
    restarted master, whose queue the orphaned worker joins to finish the crawl; the
    master's page parsers see their pipes close and leave."""
    server = make_server()
    site = setup_site(server, image_delay=0.05)
    out = tmp_path / "out"
    port = free_port()
    args = ("master", server.url + "/", "--bind", f"127.0.0.1:{port}", "--out", str(out))
    master = start_crawler(*args, "--local-workers", "1", cwd=tmp_path)
    local = None
    try:
        wait_until(lambda: len(manifest_lines(out)) >= 5, 30, "the local worker's first results")
        words = {pid: command_words(pid) for pid in children_of(master.pid)}
        [local] = [pid for pid, argv in words.items() if argv[:2] == [b"crawler", b"worker"]]
        parsers = [pid for pid in words if pid != local]
        assert parsers, "the master's page parser"
        master.kill()
        master.wait(timeout=10)
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in parsers), 10,
                   "the killed master's page parsers to leave")
        assert Path(f"/proc/{local}").exists(), "the worker waits for its master"
        master = start_crawler(*args, cwd=tmp_path)  # the same port: free again
        err = finish(master, 90)
        assert master.returncode == 0, err
        wait_until(lambda: not Path(f"/proc/{local}").exists(), 30,
                   "the worker to finish with the restarted master and leave")
    finally:
        stop(master)
        if local is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(local, signal.SIGKILL)
    check_complete(out, server.url, site)


def test_a_killed_masters_local_worker_serves_no_other_masters_crawl(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """Another crawl's master on the dead master's port, with the same key: the dead
    one's local worker would store that crawl's images in the dead master's folder.
    It leaves instead, saying why, and the new master's own worker does the work."""
    server, other = make_server(), make_server()
    setup_site(server, image_delay=0.05)
    site = setup_site(other)
    # The new master lives past the orphan's next try (its reconnects come up to 2 s
    # apart): a crawl over before it could end with the orphan still trying to connect.
    slow_start(other, 3.0)
    first, second = tmp_path / "first", tmp_path / "second"
    port = free_port()
    master = start_crawler("master", server.url + "/", "--bind", f"127.0.0.1:{port}",
                           "--out", str(first), "--local-workers", "1", cwd=tmp_path)
    local = None
    try:
        wait_until(lambda: len(manifest_lines(first)) >= 5, 30, "the local worker's results")
        words = {pid: command_words(pid) for pid in children_of(master.pid)}
        [local] = [pid for pid, argv in words.items() if argv[:2] == [b"crawler", b"worker"]]
        master.kill()
        master.wait(timeout=10)
        master = start_crawler("master", other.url + "/", "--bind", f"127.0.0.1:{port}",
                               "--out", str(second), "--local-workers", "1", cwd=tmp_path)
        err = finish(master, 90)
        assert master.returncode == 0, err
        assert "refused a report" not in err, "the orphan spoke of its dead master's crawl"
        wait_until(lambda: not Path(f"/proc/{local}").exists(), 30, "the orphan to leave")
    finally:
        stop(master)
        if local is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(local, signal.SIGKILL)
    check_complete(second, other.url, site)
    port_folder = f"127.0.0.1_{other.url.rsplit(':', 1)[1]}"
    assert not list(first.glob(f"images/http/{port_folder}/**/*.png")), \
        "the other crawl's images went to the dead master's folder"
    said = (first / "worker-1.log").read_text()
    assert f"crawls into {second.absolute()}, not into {first.absolute()}" in said, said


def test_workers_wait_for_a_late_master_and_ride_out_a_stall(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, image_delay=0.03)
    out = tmp_path / "out"
    port = free_port()
    workers = [start_crawler("worker", f"127.0.0.1:{port}", "--out", str(out), "--threads", "3",
                             "--connect-wait", "60", cwd=tmp_path) for _ in range(2)]
    time.sleep(1.5)  # the workers are up and waiting before the master exists
    master = start_crawler("master", server.url + "/", "--bind", f"127.0.0.1:{port}",
                           "--out", str(out), cwd=tmp_path)
    try:
        wait_until(lambda: len(manifest_lines(out)) >= 10, 30, "the first results")
        master.send_signal(signal.SIGSTOP)  # the master stops answering for a while
        time.sleep(3)
        master.send_signal(signal.SIGCONT)
        err = finish(master, 90)
        assert master.returncode == 0, err
        for worker in workers:
            assert worker.wait(timeout=30) == 0
    finally:
        for process in (master, *workers):
            stop(process)
    check_complete(out, server.url, site)


def test_a_worker_waits_for_the_key_file_its_masters_first_run_makes(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Told the key file in the master's output folder, a worker started first waits for
    the master to make it, as it waits for the master (it exited 2: no such file)."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=3)
    out, port = tmp_path / "out", free_port()
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    worker = subprocess.Popen(
        crawler_command("worker", f"127.0.0.1:{port}", "--out", str(out), "--authkey-file",
                        str(out / "authkey"), "--connect-wait", "60"),
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    master = None
    try:
        wait_for_output(worker, "waiting for the key file", 15)
        master = subprocess.Popen(crawler_command("master", server.url + "/", "--bind",
                                                  f"127.0.0.1:{port}", "--out", str(out)),
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        err = finish(master, 60)
        assert master.returncode == 0, err
        assert worker.wait(timeout=30) == 0
    finally:
        stop(worker)
        if master is not None:
            stop(master)
    check_complete(out, server.url, site)
    (tmp_path / "empty").write_text("")
    said = subprocess.run(crawler_command("worker", "127.0.0.1:1", "--authkey-file",
                                          str(tmp_path / "empty")), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert said.returncode == 2 and "put the master's key in it" in said.stderr, said.stderr


def test_each_image_fails_once_with_503_then_succeeds_on_the_second_attempt(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=6, fail_once=503, retry_after="0")
    (tmp_path / "settings.toml").write_text(FAST_RETRIES)
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "2", cwd=tmp_path)
    err = finish(master, 90)
    assert master.returncode == 0, err
    check_complete(out, server.url, site)
    assert {entry["attempts"] for entry in manifest_lines(out)} == {2}


def test_permanent_failures_are_not_retried(make_server: Callable[[], FixtureServer],
                                            tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, pages=1, images_per_page=4, fail_once=404)
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "1", cwd=tmp_path)
    err = finish(master, 60)
    assert master.returncode == EXIT_NOTHING_STORED, err  # each image a 404
    entries = manifest_lines(out)
    assert len(entries) == len(site.images)
    assert all(e["status"] == "failure" and e["reason"] == "HTTP 404" and e["attempts"] == 1
               for e in entries)
    lines = (out / "results.log").read_text().splitlines()
    assert all(line.endswith("--->failure: HTTP 404") for line in lines)


def test_sigterm_on_a_worker_hands_back_what_it_holds(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=12, image_delay=0.3)
    out = tmp_path / "out"
    # A long lease: only a hand-back, not an expiry, lets the crawl end quickly.
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--lease-timeout", "120", cwd=tmp_path)
    leaving = other = None
    try:
        address = wait_for_queue_address(master)
        leaving = start_crawler("worker", address, "--out", str(out), "--threads", "4",
                                cwd=tmp_path)
        wait_until(lambda: len(manifest_lines(out)) >= 2, 30, "the first results")
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(timeout=20) == 0
        other = start_crawler("worker", address, "--out", str(out), "--threads", "8",
                              cwd=tmp_path)
        err = finish(master, 60)
        assert master.returncode == 0, err
        assert other.wait(timeout=30) == 0
    finally:
        for process in (master, leaving, other):
            if process is not None:
                stop(process)
    check_complete(out, server.url, site)


@pytest.mark.parametrize("again", [signal.SIGINT, signal.SIGTERM])
def test_a_second_stop_quits_a_worker_whose_hand_back_hangs_and_nothing_is_lost(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str,
        again: int) -> None:
    """Ctrl-C on a worker whose master answers no more (stopped with ^Z, its host hung):
    the hand-back waited for calls that time out, about 26 s in all, and a second Ctrl-C
    changed nothing. Now the first says how to quit now, and the second quits; the
    leases it held go back on the master's side, and another worker stores them."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=12, image_delay=0.3)
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), cwd=tmp_path)
    with _stopped_at_the_end([master]) as processes:
        address = wait_for_queue_address(master)
        leaving = start_crawler("worker", address, "--out", str(out), "--threads", "4",
                                cwd=tmp_path)
        processes.append(leaving)
        wait_until(lambda: len(manifest_lines(out)) >= 2, 30, "the first results")
        master.send_signal(signal.SIGSTOP)
        try:
            leaving.send_signal(signal.SIGINT)
            wait_for_output(leaving, "Ctrl-C again to quit now", 10)
            started = time.monotonic()
            leaving.send_signal(again)
            assert leaving.wait(timeout=30) == 130
            # The hand-back waits 26 s for a master that answers no more: 10 s is a bound
            # that holds on a loaded machine and still tells the two apart.
            assert time.monotonic() - started < 10, "the second stop waited for the hand-back"
        finally:
            master.send_signal(signal.SIGCONT)
        err = finish(leaving, 10)
        assert "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == "crawler: interrupted", err
        other = start_crawler("worker", address, "--out", str(out), "--threads", "8",
                              cwd=tmp_path)
        processes.append(other)
        err = finish(master, 60)
        assert master.returncode == 0, err
        assert other.wait(timeout=30) == 0
    check_complete(out, server.url, site)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_to_the_whole_process_group_lets_local_workers_hand_back(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str,
        signum: int) -> None:
    """Ctrl-C on a terminal (or kill -- -PGID) reaches the master and its local workers
    at once; the master then stops them with SIGTERM too. That second signal is their
    master's, not a second stop of the user's: they hand back what they hold, and leave
    no 'interrupted' line in their logs."""
    server = make_server()
    site = setup_site(server, pages=3, images_per_page=20, image_delay=0.3)
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "2", "--threads", "2")
    stop_the_group_then_rerun(args, out, tmp_path, signum)
    check_complete(out, server.url, site)


def stop_the_group_then_rerun(args: tuple[str, ...], out: Path, cwd: Path, signum: int) -> None:
    """Start ``crawler *args`` (a master with local workers) in a session of its own,
    signal the whole group once results come, check that the master said 130 and that
    no local worker took the stop for a second one (no "interrupted" in its log), then
    run the same command again to its end."""
    master = subprocess.Popen(crawler_command(*args), cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    with _stopped_at_the_end([master]):
        wait_until(lambda: len(manifest_lines(out)) >= 4, 30, "the first results")
        os.killpg(master.pid, signum)
        err = finish(master, 30)
    assert master.returncode == 130, err
    wait_until(lambda: not group_members(master.pid), 10, "the local workers' exit")
    for log in out.glob("worker-*.log"):
        assert "interrupted" not in log.read_text(), log.read_text()
    rerun = run_crawler(*args, cwd=cwd)
    assert rerun.returncode == 0, rerun.stderr


def test_a_hang_up_as_the_parsers_are_forked_leaves_nothing_and_a_rerun_completes(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A hang-up before the crawl's own handling, once the master has forked its first
    page parser: it killed the master (status 129). Now it stops as a stop then does:
    status 130 and a line that says so, no process of its group left, no output folder
    or lock in the way of the same command again, which completes the crawl."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=3)
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "1")
    code = SIGNAL_AT_IMPORT.replace("ENTRY", "from crawler.__main__ import run; run()")
    master = subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "SIGNAL_AT": "multiprocessing.popen_fork",
             "SIGNAL": str(int(signal.SIGHUP))}, preexec_fn=at_default_actions)
    with _stopped_at_the_end([master]):
        err = finish(master, 30)
    assert master.returncode == 130, err
    assert err.splitlines()[-1] == "crawler: stopped (SIGHUP)", err
    assert "Traceback" not in err, err
    assert not group_members(master.pid), "a page parser outlived its master"
    assert server.paths() == [], "it crawled nothing"
    rerun = run_crawler(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    check_complete(out, server.url, site)


def group_members(group: int) -> list[int]:
    """The live processes of process group ``group`` (zombies are not)."""
    members = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.mark.parametrize(("signum", "again"), [(signal.SIGINT, "Ctrl-C"),
                                               (signal.SIGTERM, "SIGTERM (or Ctrl-C)")])
def test_sigint_on_the_master_saves_state_and_a_rerun_completes(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str,
        signum: int, again: str) -> None:
    server = make_server()
    site = setup_site(server, pages=10, images_per_page=4, page_delay=0.1, image_delay=0.05)
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "1", "--page-concurrency", "1")
    master = start_crawler(*args, cwd=tmp_path)
    try:
        wait_until(lambda: len(manifest_lines(out)) >= 4, 30, "the first results")
        master.send_signal(signum)
        err = finish(master, 30)
    finally:
        stop(master)
    assert master.returncode == 130, err
    assert "interrupted: state saved" in err
    assert f"stopping after the pages in flight; {again} again to quit now" in err, err
    done_before = {e["url"] for e in manifest_lines(out)}
    hits_before = collections.Counter(server.paths())
    master = start_crawler(*args, cwd=tmp_path)
    err = finish(master, 90)
    assert master.returncode == 0, err
    check_complete(out, server.url, site)
    hits_after = collections.Counter(server.paths()) - hits_before
    refetched = [url for url in done_before if hits_after[url[len(server.url):]]]
    assert refetched == [], "images already stored were downloaded again"


def test_a_stop_while_the_seed_waits_for_its_robots_txt_is_no_completed_crawl(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """The seed, cancelled by the stop before it was fetched, was in neither the frontier
    nor the board: "crawl completed", exit 0, pages crawled 0."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=2)

    def slow_robots(handler: FixtureHandler) -> None:
        time.sleep(3)
        handler.send_body(404, b"", "text/plain")

    server.routes["/robots.txt"] = slow_robots
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "1")
    master = start_crawler(*args, cwd=tmp_path)
    try:
        wait_until(lambda: "/robots.txt" in server.paths(), 30, "the robots.txt request")
        master.send_signal(signal.SIGTERM)
        err = finish(master, 30)
    finally:
        stop(master)
    assert master.returncode == 130, err
    assert "crawl completed" not in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["completed"], summary["interrupted"]) == (False, True), summary
    master = start_crawler(*args, cwd=tmp_path)  # and the rerun crawls it all
    err = finish(master, 90)
    assert master.returncode == 0, err
    check_complete(out, server.url, site)


def test_a_master_whose_local_workers_cannot_store_stops_instead_of_waiting_for_ever(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """Every local worker left with exit 3 (the output folder full, or unusable) and no
    other worker came: the master said it waits for workers from elsewhere, and did,
    until killed."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".partial").write_text("in the way")  # where the workers keep downloads
    args = ("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "2")
    done = run_crawler(*args, cwd=tmp_path, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"crawler: error: the local workers cannot store into {out} (cannot use output "
        f"folder {out}: {out / '.partial'} is a file where a folder is needed"), done.stderr
    (out / ".partial").unlink()
    done = run_crawler(*args, cwd=tmp_path, timeout=90)  # fixed: the same command goes on
    assert done.returncode == 0, done.stderr
    check_complete(out, server.url, site)

    # A crawl that gives the workers nothing to store needs none: it is not stopped.
    pages_only = make_server()
    serve_routes(pages_only, {"/": ("text/html", b'<a href="/p1">1</a><a href="/p2">2</a>'),
                              "/p1": ("text/html", b"<p>no images</p>"),
                              "/p2": ("text/html", b"<p>none either</p>")}, page_delay=1.0)
    other = tmp_path / "pages-only"
    other.mkdir()
    (other / ".partial").write_text("in the way")
    done = run_crawler("master", pages_only.url + "/", "--bind", "127.0.0.1:0", "--out",
                       str(other), "--local-workers", "2", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pages crawled   3" in done.stderr, done.stderr


def test_a_classic_workers_abandoned_urls_are_leased_and_come_back(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, pages=1, images_per_page=5)
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--lease-timeout", "2", cwd=tmp_path)
    worker = None
    try:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        grab_and_vanish = textwrap.dedent(f"""
            import os
            from multiprocessing.managers import BaseManager
            class QueueManager(BaseManager):
                pass
            QueueManager.register("get_task_queue")
            m = QueueManager(address=("{host}", {port}),
                             authkey=os.environ["CRAWLER_AUTHKEY"].encode())
            m.connect()
            task = m.get_task_queue()
            print(task.get(timeout=10), task.get(timeout=10))
        """)
        grabbed = subprocess.run([sys.executable, "-c", grab_and_vanish], capture_output=True,
                                 text=True, timeout=30, env=dict(os.environ), check=True)
        assert len(grabbed.stdout.split()) == 2
        worker = start_crawler("worker", f"{host}:{port}", "--out", str(out), cwd=tmp_path)
        err = finish(master, 60)
        assert master.returncode == 0, err
    finally:
        stop(master)
        if worker is not None:
            stop(worker)
    check_complete(out, server.url, site)
    attempts = {e["url"]: e["attempts"] for e in manifest_lines(out)}
    for url in grabbed.stdout.split():
        assert attempts[url] == 2, "the abandoned lease counted as the first attempt"
    said = re.findall(r"INFO: (\d+) image lease\(s\) ran out \(their worker fell silent, or "
                      r"took longer than queue.lease_timeout\)", err)
    assert sum(map(int, said)) == 2, err  # (said nowhere but in the manifest's attempts)
    # Each one a try, its URL going again: the progress line's retries stayed 0.
    assert int(re.findall(r"retries (\d+)", err)[-1]) >= 2, err


def test_ctrl_c_after_the_crawl_ended_cuts_the_wait_for_workers_and_keeps_the_summary(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A finished crawl waits a while for its workers to leave (here one is stopped): a
    Ctrl-C then is the first, not the second. The summary is written, the status is 0."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=3)
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "2", "--lease-timeout", "2",
                           cwd=tmp_path)
    stopped: list[int] = []
    try:
        wait_for_queue_address(master)
        children = Path(f"/proc/{master.pid}/task/{master.pid}/children")
        wait_until(lambda: len(local_workers(children)) == 2, 30, "the local workers")
        stopped.append(local_workers(children)[0])
        os.kill(stopped[0], signal.SIGSTOP)  # alive, silent: the master would wait for it
        wait_until(lambda: len(manifest_lines(out)) == len(site.images), 60, "every result")
        time.sleep(0.5)  # the master waits for its workers now
        started = time.monotonic()
        master.send_signal(signal.SIGINT)
        err = finish(master, 30)
    finally:
        stop(master)
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert master.returncode == 0, err
    assert "crawl completed" in err and "interrupted" not in err, err
    assert (out / "summary.json").is_file()
    # Not the rest of the wait for workers (10 s), then 5 s to stop the silent one.
    assert time.monotonic() - started < 12, err
    check_complete(out, server.url, site)


def hold_the_summary_copy(out: Path, copy: Path) -> None:
    """Make a FIFO where the master writes its summary's copy, once the master has removed
    the copy an earlier run may have left (before its result files are written, while its
    first page, served slowly, is still on its way)."""
    wait_until(lambda: (out / "results.log").exists(), 60, "the master's result files")
    os.mkfifo(copy)


def test_local_workers_that_cannot_store_do_not_stop_a_crawl_tutorial_workers_do(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A tutorial worker stores nothing in the master's folder, and says no hello: the
    master counted no worker once its local one left unable to store, and stopped the
    crawl the tutorial worker was doing (status 3)."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=3, page_delay=1.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".partial").write_text("in the way")  # where the local worker keeps downloads
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "1", cwd=tmp_path)
    try:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        classic = subprocess.run([sys.executable, str(CLASSIC_WORKER), host, port], text=True,
                                 capture_output=True, timeout=60, check=False)
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0, err
    assert classic.returncode == 0, classic.stderr
    lines = (out / "results.log").read_text().splitlines()
    assert sorted(lines) == sorted(f"{server.url}{path}--->success" for path in site.images)


def test_ctrl_c_while_the_summary_is_written_leaves_it_whole(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A Ctrl-C once the crawl has ended, as the master writes summary.json: it came after
    the crawl's own handling, and Python's KeyboardInterrupt left no summary ("crawler:
    interrupted", 130). The master is held in that write by a FIFO where the summary's
    copy goes, until the test reads it."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=3, page_delay=1.0)
    out = tmp_path / "out"
    copy = out / "summary.json.partial"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "1", cwd=tmp_path)
    reader = -1
    try:
        hold_the_summary_copy(out, copy)
        wchan = Path(f"/proc/{master.pid}/wchan")
        wait_until(lambda: wchan.read_text() == "wait_for_partner", 60,
                   "the master's open of the summary's copy")
        master.send_signal(signal.SIGINT)
        reader = os.open(copy, os.O_RDONLY | os.O_NONBLOCK)  # lets the master's open go on
        err = finish(master, 30)
        written = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 65536):  # the writer has closed: bounded
                written += chunk
    finally:
        stop(master)
        if reader >= 0:
            os.close(reader)
    assert master.returncode == 0, err
    assert "crawl completed" in err and "interrupted" not in err, err
    assert json.loads(written)["completed"] is True
    assert (out / "summary.json").exists() and not copy.exists()
    check_complete(out, server.url, site)


def test_a_second_ctrl_c_while_the_summary_write_is_held_quits(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """Once the crawl has ended, a first stop waits for the summary, but a write held for
    good (a reader that reads nothing) must not make the master deaf: a second quits."""
    server = make_server()
    setup_site(server, pages=1, images_per_page=1, page_delay=1.0)
    out = tmp_path / "out"
    copy = out / "summary.json.partial"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "1", cwd=tmp_path)
    try:
        hold_the_summary_copy(out, copy)  # nobody opens it to read: the open waits for good
        wchan = Path(f"/proc/{master.pid}/wchan")
        held = lambda: wchan.read_text() == "wait_for_partner"  # noqa: E731
        wait_until(held, 60, "the master's open of the summary's copy")
        master.send_signal(signal.SIGINT)
        time.sleep(0.3)  # as a person would: its handler has run, the open waits again
        wait_until(held, 10, "the master back in the open of the summary's copy")
        assert master.poll() is None, "a first stop as the summary is written changes nothing"
        master.send_signal(signal.SIGINT)
        err = finish(master, 15)
    finally:
        stop(master)
    assert master.returncode == 130, err
    assert "interrupted" in err and not copy.exists(), err


def local_workers(children: Path) -> list[int]:
    """The master's forked local workers, by their title, among its child processes."""
    pids = []
    with contextlib.suppress(OSError):
        for word in children.read_text().split():
            with contextlib.suppress(OSError):
                if command_words(int(word))[:2] == [b"crawler", b"worker"]:
                    pids.append(int(word))
    return pids


def test_a_second_ctrl_c_stops_the_master_without_waiting(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    setup_site(server, pages=6, images_per_page=2, page_delay=8.0)
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), cwd=tmp_path)
    try:
        wait_for_queue_address(master)
        wait_until(lambda: bool(server.paths()), 10, "the first page request")
        master.send_signal(signal.SIGINT)  # the page in flight takes 8 s more
        wait_for_output(master, "Ctrl-C again to quit now", 10)
        time.sleep(0.3)  # as a person would: not while the first signal's handler still runs
        started = time.monotonic()
        master.send_signal(signal.SIGINT)
        err = finish(master, 30)
    finally:
        stop(master)
    assert master.returncode == 130, err
    assert time.monotonic() - started < 5, err
    # With no summary to say it, the last line says the journal kept what was done.
    assert err.strip().splitlines()[-1] == ("crawler: interrupted; run the same command "
                                            "again to resume"), err


# A master that ends the moment a worker says goodbye, before answering it: what a
# master does when that goodbye was the last news of a finished crawl.
_MASTER_GONE_AT_GOODBYE = """
import os, sys, time
from crawler.board.memory import BoardPolicy, TaskBoard
from crawler.board.manager import QueueServer

board = TaskBoard(BoardPolicy(), wake=lambda: os._exit(0) if board.closed else None)
""" + LOOPBACK_HELLO + """
server = QueueServer(board, ("127.0.0.1", 0), os.environb[b"CRAWLER_AUTHKEY"],
                     lambda full=False: hello).start()
print("queue on 127.0.0.1:%d" % server.address[1], file=sys.stderr, flush=True)
while not board.workers():
    time.sleep(0.01)
board.close()
time.sleep(30)
"""


def test_a_master_gone_right_after_the_goodbye_is_no_warning(tmp_path: Path,
                                                             authkey: str) -> None:
    master = subprocess.Popen([sys.executable, "-c", _MASTER_GONE_AT_GOODBYE],
                              stderr=subprocess.PIPE)
    try:
        address = wait_for_queue_address(master)
        worker = start_crawler("worker", address, "--out", str(tmp_path / "out"), cwd=tmp_path)
        _, err = worker.communicate(timeout=60)
        assert master.wait(timeout=10) == 0, "the master did not end at the goodbye"
    finally:
        stop(master)
    assert worker.returncode == 0, err
    assert "WARNING" not in err, err


class _LosesOneAnswer:
    """A TCP relay to the master that loses the answer to one exchange.

    It forwards the first exchange that carries reports and asks for URLs, then
    drops the master's answer and closes both sides: the master has applied the
    call (recorded the reports, leased URLs), the worker has seen nothing.
    """

    def __init__(self, master: tuple[str, int]) -> None:
        self.master = master
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.dropped = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            client.settimeout(60)  # a worker quiet that long is a test gone wrong
            server = socket.create_connection(self.master, timeout=60)
            drop = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, drop),
                             daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client, drop),
                             daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket,
                  drop: threading.Event) -> None:
        with contextlib.suppress(OSError, EOFError):
            while True:
                header = _read_exactly(client, 4)
                payload = _read_exactly(client, struct.unpack("!i", header)[0])
                if b"exchange" in payload and self._take_this(payload):
                    drop.set()
                    server.sendall(header + payload)
                    time.sleep(0.3)  # the master applies it; its answer goes nowhere
                    break
                server.sendall(header + payload)
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _take_this(self, payload: bytes) -> bool:
        _, method, args, _ = pickle.loads(payload)  # noqa: S301 - our own worker's call
        _worker, _number, reports, _released, ask, *_ = args
        with self._lock:
            if method != "exchange" or self.dropped or not reports or not ask:
                return False
            self.dropped += 1
            return True

    def _answers(self, server: socket.socket, client: socket.socket,
                 drop: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if not drop.is_set():
                    client.sendall(data)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def test_an_answer_lost_on_the_way_loses_nothing_and_stalls_nothing(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, image_delay=0.02)
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), cwd=tmp_path)
    worker = None
    try:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        relay = _LosesOneAnswer((host, int(port)))
        worker = start_crawler("worker", relay.address, "--out", str(out), "--threads", "4",
                               cwd=tmp_path)
        # Leases lost with the answer would be renewed by every heartbeat (60 s
        # leases) and never end the crawl, unless the worker says what it holds.
        err = finish(master, 90)
        assert master.returncode == 0, err
        _, worker_err = worker.communicate(timeout=30)
        assert worker.returncode == 0, worker_err
    finally:
        stop(master)
        if worker is not None:
            stop(worker)
    assert relay.dropped == 1
    # Said in words, not as Python's name for the error (it was "(BlockingIOError)").
    assert re.search(r"lost the master at \S+ \((no answer in time|it closed the connection)\); "
                     "reconnecting", worker_err), worker_err
    check_complete(out, server.url, site)
    # Reports sent twice count once, and a URL leased in the lost answer was never tried.
    assert {e["attempts"] for e in manifest_lines(out)} == {1}


@pytest.mark.parametrize(("error", "words"), [
    (BlockingIOError(11, "Resource temporarily unavailable"), "no answer in time"),
    (TimeoutError(), "no answer in time"),
    (EOFError(), "it closed the connection"),
    (ConnectionResetError(104, "Connection reset by peer"), "connection reset by peer"),
])
def test_a_call_to_the_master_that_failed_is_said_in_words(error: BaseException,
                                                          words: str) -> None:
    assert why_lost(error) == words


def test_a_lost_broker_is_said_in_its_own_few_words_while_the_worker_waits() -> None:
    """Not the message that ends the wait ("check the broker address, then start the
    command again"), cut at 200 characters ("then start the com); reconnecting")."""
    said = "Error 111 connecting to 127.0.0.1:7101. Connection refused."
    unreachable = BrokerUnreachable(f"cannot reach the Redis broker at 127.0.0.1:7101: {said} "
                                    "(is redis-server running there, and reachable from this "
                                    "host? check the broker address, then start the command "
                                    "again)", said=said)
    try:
        raise ConnectionError(str(unreachable)) from unreachable
    except ConnectionError as lost:
        assert why_lost(lost) == said


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _page_counts(err: str) -> tuple[int, int]:
    """Pages crawled and pages failed, from the master's closing summary."""
    summary = err[err.index("\n  pages crawled"):]
    crawled = int(summary.split("pages crawled")[1].split()[0])
    failed = int(summary.split("(")[1].split()[0])
    return crawled, failed


def _crawl_one_page_at_a_time(server: FixtureServer, out: Path, tmp_path: Path,
                              meanwhile: Callable[[int], None]) -> str:
    """Crawl ``server`` with one worker, calling ``meanwhile(master's pid)``; the stderr."""
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--page-concurrency", "1", cwd=tmp_path)
    with _stopped_at_the_end([master]) as processes:
        address = wait_for_queue_address(master)
        worker = start_crawler("worker", address, "--out", str(out), cwd=tmp_path)
        processes.append(worker)
        meanwhile(master.pid)
        err = finish(master, 90)
        assert worker.wait(timeout=30) == 0
    assert master.returncode == 0, err
    return err


def test_a_killed_page_parser_costs_the_master_no_page(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, pages=6, images_per_page=3, page_delay=0.2)
    out = tmp_path / "out"

    def kill_the_parser(master: int) -> None:
        page_paths = set(site.pages)
        # The home page links to every page: once a second page is asked for, it was parsed.
        wait_until(lambda: sum(p in page_paths for p in server.paths()) >= 2, 30,
                   "the home page parsed")
        [parser] = children_of(master)  # the master's only child
        os.kill(parser, signal.SIGKILL)

    err = _crawl_one_page_at_a_time(server, out, tmp_path, kill_the_parser)
    # Whether it died idle or on a page, that page went to a new child.
    assert _page_counts(err) == (len(site.pages), 0), err
    assert "the page parser process ended" in err
    check_complete(out, server.url, site)


def test_a_page_that_kills_two_page_parsers_fails_alone(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=4)
    # A 9.6 MB page that takes the parser seconds: it is killed under it, twice.
    huge_path = "/page/1.html"
    huge = b"<div>" + b'<img src="/i.png" data-src="/j.png" style="x">' * 200_000 + b"</div>"
    serve_routes(server, {huge_path: ("text/html", huge)})
    home_images = {path for path in site.images if path.startswith("/images/0/")}
    out = tmp_path / "out"

    def kill_its_parsers(master: int) -> None:
        wait_until(lambda: huge_path in server.paths(), 30, "the huge page fetched")
        killed: set[int] = set()
        for _ in range(2):
            wait_until(lambda: bool(set(children_of(master)) - killed), 30,
                       "a parser for the huge page")
            [parser] = set(children_of(master)) - killed
            # Into the parse (a child killed while it waits for the page costs the page
            # nothing): a fixed sleep was sometimes too short on a loaded machine.
            wait_until(lambda parser=parser: _cpu_seconds(parser) >= 0.3, 30,
                       "the parser busy with the huge page")
            os.kill(parser, signal.SIGKILL)
            killed.add(parser)

    err = _crawl_one_page_at_a_time(server, out, tmp_path, kill_its_parsers)
    assert _page_counts(err) == (2, 1), err
    assert "died on this page 2 time(s)" in err
    stored = {e["url"] for e in manifest_lines(out) if e["status"] == "success"}
    assert stored == {server.url + path for path in home_images}


def _master_with_a_local_worker(server: FixtureServer, out: Path, tmp_path: Path,
                                status: int = 0) -> str:
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "1", cwd=tmp_path)
    err = finish(master, 90)
    assert master.returncode == status, err
    return err


def test_pages_that_fail_for_a_while_are_tried_again(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    # Few images: the 503s slow the host down to a second between requests.
    site = setup_site(server, pages=3, images_per_page=1)
    fail_first(server, set(site.pages), 503, times=2, retry_after="0")  # max_attempts is 3
    (tmp_path / "settings.toml").write_text(FAST_RETRIES)
    out = tmp_path / "out"
    err = _master_with_a_local_worker(server, out, tmp_path)
    assert _page_counts(err) == (len(site.pages), 0), err
    assert collections.Counter(p for p in server.paths() if p in site.pages) == {
        page: 3 for page in site.pages}
    # The progress counts them among the retries.
    last = [line for line in err.splitlines() if " progress: " in line][-1]
    assert f"retries {2 * len(site.pages)}," in last, last
    check_complete(out, server.url, site)


def test_a_page_still_failing_after_its_tries_is_tried_again_by_a_rerun(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=4)
    other = next(page for page in site.pages if page != "/")
    fail_first(server, {other}, 500, times=3, retry_after="0")  # every try of the first run
    (tmp_path / "settings.toml").write_text(FAST_RETRIES)
    out = tmp_path / "out"
    err = _master_with_a_local_worker(server, out, tmp_path)
    assert _page_counts(err) == (2, 1), err
    assert "  to try again    1 page(s) failed for a passing reason" in err, err
    assert server.paths().count(other) == 3
    err = _master_with_a_local_worker(server, out, tmp_path)
    assert "to visit 1;" in err, err
    assert server.paths().count(other) == 4
    assert server.paths().count("/") == 1, "the page done in the first run is not fetched again"
    check_complete(out, server.url, site)


def test_images_still_failing_for_a_passing_reason_are_tried_again_by_a_rerun(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=4)
    down = set(sorted(site.images)[:3])
    gone = sorted(site.images)[3]
    fail_first(server, down, 503, times=3, retry_after="0")  # every try of the first run
    server.routes[gone] = lambda h: h.send_body(404, b"gone", "text/plain")
    (tmp_path / "settings.toml").write_text(FAST_RETRIES)
    out = tmp_path / "out"
    err = _master_with_a_local_worker(server, out, tmp_path)
    assert ("  to try again    3 image(s) failed for a passing reason (a timeout, 5xx, 429, "
            "a refused connection, an unreadable robots.txt, a TLS failure a setting fixes, "
            "a name taken in the image folder, a worker lost with it): the same command "
            "again tries them") in err, err
    assert json.loads((out / "summary.json").read_text())["images_to_retry"] == 3
    first = {e["url"]: e for e in manifest_lines(out)}
    assert {url for url, e in first.items() if e["transient"]} == {server.url + p for p in down}
    assert not first[server.url + gone]["transient"]  # a 404 is for good
    err = _master_with_a_local_worker(server, out, tmp_path)
    assert "3 image(s) that failed for a passing reason" in err, err
    assert all(server.paths().count(path) == 4 for path in down)
    assert server.paths().count(gone) == 1, "a permanent failure is not tried again"
    entries = manifest_lines(out)
    assert len(entries) == len(site.images) == len({e["url"] for e in entries})
    failed = [e["url"] for e in entries if e["status"] != "success"]
    assert failed == [server.url + gone]
    results = (out / "results.log").read_text().splitlines()
    assert len(results) == len(site.images) and sum("failure" in r for r in results) == 1


@pytest.mark.parametrize("status", [503, 429])
def test_an_unreachable_robots_txt_says_so_and_a_rerun_crawls_the_site(
        make_server: Callable[[], FixtureServer], tmp_path: Path, status: int) -> None:
    """A 429 too: it asks for fewer requests, not for none of the rules. Read as often as
    a page is tried (download.max_attempts), after the same backoff."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=4)
    fail_first(server, {"/robots.txt"}, status, times=3, retry_after="0")
    (tmp_path / "settings.toml").write_text(FAST_RETRIES)
    out = tmp_path / "out"
    err = _master_with_a_local_worker(server, out, tmp_path, status=5)  # nothing was read
    assert (f"robots.txt of {server.url} answered HTTP {status}: refused for now, read again "
            "when one of its pages is next asked for (try 1 of 3)") in err, err
    assert (f"robots.txt of {server.url} answered HTTP {status}: not crawling that origin in "
            "this run (read 3 times)") in err, err
    assert f"page {server.url}/: robots.txt unreachable (HTTP {status})" in err, err
    assert (f"no seed page could be fetched: {server.url}/: robots.txt unreachable (HTTP "
            f"{status}); until its robots.txt can be read, the site is not crawled (RFC 9309): "
            "the same command tries again, --ignore-robots crawls without it") in err, err
    assert _page_counts(err) == (1, 1), err
    assert server.paths() == ["/robots.txt"] * 3
    _master_with_a_local_worker(server, out, tmp_path)
    assert server.paths().count("/") == 1
    check_complete(out, server.url, site)


@pytest.mark.parametrize("status", [503, 429])
def test_a_robots_txt_unreachable_for_a_while_is_read_again_in_the_run(
        make_server: Callable[[], FixtureServer], tmp_path: Path, status: int) -> None:
    """A server that answers its robots.txt 503 (or 429) at first, as one starting up or
    rate limiting does: its pages wait for the file's next read, after the backoff or
    the Retry-After it sent, and the crawl completes in one run. It used to end at once
    with exit status 5, nothing crawled."""
    server = make_server()
    site = setup_site(server, pages=3, images_per_page=2)
    fail_first(server, {"/robots.txt"}, status, times=2, retry_after="1")
    (tmp_path / "settings.toml").write_text(FAST_RETRIES)
    out = tmp_path / "out"
    started = time.monotonic()
    err = _master_with_a_local_worker(server, out, tmp_path)
    assert time.monotonic() - started >= 2.0, "each read again waits for its Retry-After"
    assert _page_counts(err) == (len(site.pages), 0), err
    assert server.paths().count("/robots.txt") == 3
    assert server.paths().count("/") == 1, "refused, the page was not fetched"
    assert re.search(rf"page {re.escape(server.url)}/: robots\.txt unreachable \(HTTP "
                     rf"{status}\); trying again in [01]\.\d s \(try 2 of 3\)", err), err
    check_complete(out, server.url, site)


def test_a_page_redirected_to_a_site_whose_robots_txt_is_unreachable_is_tried_by_a_rerun(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Not refused for good: a page of that site itself is not (RFC 9309)."""
    server, elsewhere = make_server(), make_server()
    site = setup_site(elsewhere, pages=2, images_per_page=3)
    fail_first(elsewhere, {"/robots.txt"}, 503, times=1, retry_after="0")
    server.routes["/"] = lambda h: h.send_body(200, b'<a href="/moved">on</a>', "text/html")
    server.routes["/moved"] = lambda h: h.send_body(301, b"", "text/plain",
                                                    {"Location": elsewhere.url + "/"})
    out = tmp_path / "out"
    command = ("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
               "--local-workers", "1", "--scope", "any")
    first = start_crawler(*command, cwd=tmp_path)
    err = finish(first, 90)
    assert first.returncode == 0, err
    assert "to try again    1 page(s)" in err, err
    [moved] = [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]
    assert moved["url"] == server.url + "/moved" and moved["final"] is False, moved
    assert moved["reason"] == (f"redirected to {elsewhere.url}/: robots.txt unreachable "
                               "(HTTP 503)"), moved
    assert elsewhere.paths() == ["/robots.txt"]
    assert server.paths().count("/moved") == 1, "robots.txt is read once a run: no retry"
    again = start_crawler(*command, cwd=tmp_path)
    err = finish(again, 90)
    assert again.returncode == 0, err
    check_complete(out, elsewhere.url, site)


def test_a_worker_started_with_the_printed_command_fits_a_restarted_master(
        site: FixtureServer, tmp_path: Path) -> None:
    """No key given: the master keeps OUT/authkey, and uses it again when started again."""
    png = (SITE / "images" / "red.png").read_bytes()
    page = b'<html><body><img src="/a.png"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    begun, release = gate_image(site, "/a.png", png)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    bind = f"127.0.0.1:{free_port()}"
    command = ("master", site.url + "/", "--bind", bind, "--out", str(out), "--ignore-robots")
    first = start_crawler(*command, cwd=tmp_path, env=env)
    with _stopped_at_the_end([first]) as processes:
        key_file = wait_for_output(first, r"--authkey-file (\S+)  # a new key").group(1)
        worker = start_crawler("worker", bind, "--out", str(out), "--authkey-file", key_file,
                               "--connect-wait", "30", cwd=tmp_path, env=env)
        processes.append(worker)
        assert begun.wait(30), "the worker never began the image"
        first.kill()  # a crash: the worker holds the image and waits for its master
        first.wait(timeout=10)
        release.set()
        again = start_crawler(*command, cwd=tmp_path, env=env)
        processes.append(again)
        wait_for_output(again, rf"--authkey-file {re.escape(key_file)}(?!  # a new key)")
        err = finish(again, 60)
        assert again.returncode == 0, err
        _, worker_err = worker.communicate(timeout=30)
        assert worker.returncode == 0, worker_err
    [entry] = manifest_lines(out)
    assert entry["status"] == "success"
    assert (out / entry["path"]).read_bytes() == png


def _stored_unreported_then_crawled_again(site: FixtureServer, tmp_path: Path, path: str,
                                          first: bytes, later: Route) -> Path:
    """A worker stores ``path``'s image (``first``) after its master was killed, and is
    killed before it can report it; a restarted master and a new worker crawl again, the
    server answering every later request of ``path`` with ``later``. The output folder."""
    page = f'<html><body><img src="{path}"></body></html>'.encode()
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    begun, release = gate_image(site, path, first)
    gated = site.routes[path]
    asked = itertools.count()

    def first_then_later(handler: FixtureHandler) -> None:
        (later if next(asked) else gated)(handler)

    site.routes[path] = first_then_later
    out = tmp_path / "out"
    bind = f"127.0.0.1:{free_port()}"
    command = ("master", site.url + "/", "--bind", bind, "--out", str(out), "--ignore-robots")
    first_master = start_crawler(*command, cwd=tmp_path)
    with _stopped_at_the_end([first_master]) as processes:
        worker = start_crawler("worker", bind, "--out", str(out), cwd=tmp_path)
        processes.append(worker)
        assert begun.wait(30), "the worker never began the image"
        first_master.kill()  # a crash: the worker holds the image, stores it with none to tell
        first_master.wait(timeout=10)
        release.set()
        wait_until(lambda: any(p.is_file() for p in out.glob("images/**/*")), 30,
                   "the worker to store the image")
        worker.kill()  # and it dies too: the image is on disk, and its report is lost
        worker.wait(timeout=10)
        again = start_crawler(*command, cwd=tmp_path)
        processes.append(again)
        second = start_crawler("worker", bind, "--out", str(out), cwd=tmp_path)
        processes.append(second)
        err = finish(again, 60)
        assert again.returncode == 0, err
        _, worker_err = second.communicate(timeout=30)
        assert second.returncode == 0, worker_err
    assert next(asked) == 2, "the image was asked for again"
    return out


def test_an_image_stored_and_never_reported_is_the_result_when_the_next_try_fails(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """A worker stores an image after its master was killed, and is killed before it can
    report it; the restarted master hands the URL out again and the server now answers
    404. The stored file is kept and is the URL's result, as when the second try brings
    other bytes. Before, the manifest said "HTTP 404" while the image sat in the folder,
    in no line of it."""
    png = (SITE / "images" / "red.png").read_bytes()
    out = _stored_unreported_then_crawled_again(
        site, tmp_path, "/a.png", png, lambda handler: handler.send_body(404, b"gone",
                                                                         "text/plain"))
    [entry] = manifest_lines(out)
    assert entry["status"] == "success", entry
    assert entry["sha256"] == hashlib.sha256(png).hexdigest()
    assert (entry["bytes"], entry["content_type"]) == (len(png), "image/png")
    assert [p for p in out.glob("images/**/*") if p.is_file()] == [out / entry["path"]]
    assert (out / "results.log").read_text() == f"{site.url}/a.png--->success\n"


def test_an_image_stored_and_never_reported_is_the_result_when_the_next_try_brings_another_type(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """As above, but the next try brings a JPEG where the first stored a PNG: another
    file name, as the name carries the real type. The PNG stored first is the URL's result,
    and no second file is stored. Before, the JPEG was stored and reported, and the PNG sat
    in the folder in no line of the manifest."""
    png = (SITE / "images" / "red.png").read_bytes()
    jpeg = (SITE / "photos" / "cat.jpg").read_bytes()
    out = _stored_unreported_then_crawled_again(
        site, tmp_path, "/picture", png,
        lambda handler: handler.send_body(200, jpeg, "image/jpeg"))
    [entry] = manifest_lines(out)
    assert entry["status"] == "success", entry
    assert entry["sha256"] == hashlib.sha256(png).hexdigest()
    assert (entry["bytes"], entry["content_type"]) == (len(png), "image/png")
    assert [p for p in out.glob("images/**/*") if p.is_file()] == [out / entry["path"]]
    assert (out / entry["path"]).read_bytes() == png


def test_the_queue_accepts_again_after_a_flood_it_had_no_threads_for(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Strangers flood the queue while the master cannot start more threads (its address
    space is capped); afterwards a real worker still gets in and the crawl completes."""
    png = (SITE / "images" / "red.png").read_bytes()
    page = b'<html><body><img src="/a.png"></body></html>'
    asked, answer = threading.Event(), threading.Event()

    def held_page(handler: FixtureHandler) -> None:
        asked.set()
        answer.wait(60)  # the master stays idle, with no images, during the flood
        handler.send_body(200, page, "text/html")

    site.routes["/"] = held_page
    site.routes["/a.png"] = lambda handler: handler.send_body(200, png, "image/png")
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}  # thread stacks are then what a thread costs
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), "--ignore-robots", cwd=tmp_path, env=env)
    with _stopped_at_the_end([master]) as processes:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        assert asked.wait(30), "the master never asked for its seed"
        time.sleep(1.0)  # its page and parser threads are up: only the queue's are to come
        status = Path(f"/proc/{master.pid}/status").read_text()
        found = re.search(r"VmSize:\s+(\d+) kB", status)
        assert found is not None, status
        # Room for a few 8 MiB thread stacks, not for one per connection of the flood.
        resource.prlimit(master.pid, resource.RLIMIT_AS,
                         (int(found.group(1)) * 1024 + 96 * 2**20, resource.RLIM_INFINITY))
        flood = [socket.create_connection((host, int(port)), timeout=5) for _ in range(40)]
        time.sleep(1.0)
        for sock in flood:
            sock.close()
        resource.prlimit(master.pid, resource.RLIMIT_AS,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        answer.set()
        worker = start_crawler("worker", f"{host}:{port}", "--out", str(tmp_path / "out"),
                               "--connect-wait", "15", cwd=tmp_path)
        processes.append(worker)
        _, worker_err = worker.communicate(timeout=60)
        assert worker.returncode == 0, worker_err
        err = finish(master, 60)
        assert master.returncode == 0, err
    assert "cannot start a thread" in err
    [entry] = manifest_lines(tmp_path / "out")
    assert entry["status"] == "success"


@pytest.mark.parametrize("master_end", ["killed", "stopped"])
def test_a_restarted_master_leaves_an_image_to_the_worker_of_before_that_may_store_it(
        site: FixtureServer, tmp_path: Path, authkey: str, master_end: str) -> None:
    """A worker holds an image (half its PNG come) when its master is killed, or stopped
    with Ctrl-C (its lease then outstanding), and is stopped meanwhile; the master
    started again must not hand the image to another worker while the first may still
    store it, unasked, on its dead master's word. Before, the other worker stored the
    JPEG the server now sends at once, the first one then its PNG beside it, in no line
    of the manifest: two files for one URL. Now the image waits worker_silence: one
    file, the manifest's, whichever try stored it."""
    png = (SITE / "images" / "red.png").read_bytes()
    jpeg = (SITE / "photos" / "cat.jpg").read_bytes()
    page = b'<html><body><img src="/picture"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    begun, release = gate_image(site, "/picture", png)
    gated = site.routes["/picture"]
    asked = itertools.count()
    site.routes["/picture"] = lambda handler: (
        gated(handler) if next(asked) == 0 else handler.send_body(200, jpeg, "image/jpeg"))
    (tmp_path / "settings.toml").write_text("[queue]\nworker_silence = 8\n")
    out = tmp_path / "out"
    bind = f"127.0.0.1:{free_port()}"
    command = ("master", site.url + "/", "--bind", bind, "--out", str(out), "--ignore-robots")
    first_master = start_crawler(*command, cwd=tmp_path)
    with _stopped_at_the_end([first_master]) as processes:
        before = start_crawler("worker", bind, "--out", str(out), "--connect-wait", "5",
                               cwd=tmp_path)
        processes.append(before)
        assert begun.wait(30), "the worker never began the image"
        os.kill(before.pid, signal.SIGSTOP)  # its master's death unknown to it
        try:
            if master_end == "killed":
                first_master.kill()
            else:
                first_master.send_signal(signal.SIGINT)
            first_master.wait(timeout=10)
            again = start_crawler(*command, cwd=tmp_path)
            processes.append(again)
            other = start_crawler("worker", bind, "--out", str(out), cwd=tmp_path)
            processes.append(other)
            # Within the 4 s its master's last answer vouched for (half of worker_silence):
            # before, the other worker had the image and stored its JPEG in under a second.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: any(p.suffix == ".jpg" for p in out.glob("images/**/*")),
                           2.5, "the other worker to store a JPEG")
        finally:
            release.set()
            os.kill(before.pid, signal.SIGCONT)
        err = finish(again, 60)
        assert again.returncode == 0, err
        assert other.wait(timeout=30) == 0
        before.wait(timeout=30)  # (before, it found no master to report its PNG to)
    [entry] = manifest_lines(out)
    assert entry["status"] == "success", entry
    files = [p for p in out.glob("images/**/*") if p.is_file()]
    assert files == [out / entry["path"]]
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == entry["sha256"]
    assert before.returncode == 0


def test_a_crawl_stopped_with_no_lease_outstanding_resumes_its_images_at_once(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Ctrl-C on a master whose local worker hands back the images it was downloading: no
    worker of that run may still store one, so the rerun hands them out at once. Before,
    they waited worker_silence (20 s here) from the rerun's start, as after a crash."""
    png = (SITE / "images" / "red.png").read_bytes()
    images = [f"/left/{n}.png" for n in range(3)]
    page = "".join(f'<img src="{path}">' for path in images).encode()
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    first_run_over = threading.Event()  # the first run's downloads hang until then

    def image(handler: FixtureHandler) -> None:
        first_run_over.wait(60)
        handler.send_body(200, png, "image/png")

    for path in images:
        site.routes[path] = image
    (tmp_path / "settings.toml").write_text("[queue]\nworker_silence = 20\n")
    out = tmp_path / "out"
    args = ("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "1", "--ignore-robots")
    master = start_crawler(*args, cwd=tmp_path)
    try:
        wait_until(lambda: bool(set(images) & set(site.paths())), 30, "an image download")
        master.send_signal(signal.SIGINT)
        err = finish(master, 30)
    finally:
        first_run_over.set()
        stop(master)
    assert master.returncode == 130, err
    assert manifest_lines(out) == []
    started = time.monotonic()
    again = start_crawler(*args, cwd=tmp_path)
    try:
        err = finish(again, 60)
    finally:
        stop(again)
    assert again.returncode == 0, err
    asked = {hit.path: hit.at - started for hit in site.hits
             if hit.path in images and hit.at > started}
    assert set(asked) == set(images), asked
    # Seconds of start-up on a busy machine at most, far from worker_silence.
    assert max(asked.values()) < 10, asked
    assert {entry["status"] for entry in manifest_lines(out)} == {"success"}
    assert len(manifest_lines(out)) == len(images)
