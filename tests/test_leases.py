"""Leases with real worker processes: a host's slots shared fairly among the workers that
ask, and a worker that falls silent losing its leases in seconds, and knowing it."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from crawler.board.manager import MasterClient

from .conftest import (
    SITE,
    FixtureHandler,
    FixtureServer,
    finish,
    manifest_lines,
    start_crawler,
    stop,
    wait_for_output,
    wait_for_queue_address,
    wait_until,
)
from .test_recovery import gate_image

PNG = (SITE / "images" / "red.png").read_bytes()


@contextlib.contextmanager
def stopped_at_the_end(*processes: object) -> Iterator[list]:
    started: list = list(processes)
    try:
        yield started
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            stop(process)


def wait_stopped(pid: int) -> None:
    """Until the kernel has stopped ``pid`` (SIGSTOP is delivered asynchronously)."""
    wait_until(lambda: Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
               == "T", 10, f"process {pid} to stop")


def test_a_hosts_slots_are_shared_among_the_workers_that_ask(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    slots, images = 4, 60
    paths = [f"/i/{n}.png" for n in range(images)]
    page = "".join(f'<img src="{path}">' for path in paths).encode()
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")

    def slow(handler: FixtureHandler) -> None:
        time.sleep(0.4)
        handler.send_body(200, PNG + handler.path.encode(), "image/png")

    for path in paths:
        site.routes[path] = slow
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--ignore-robots", "--host-concurrency", str(slots),
                           cwd=tmp_path)
    with stopped_at_the_end(master) as processes:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        board = MasterClient((host, int(port)), authkey.encode()).connect()
        first = start_crawler("worker", f"{host}:{port}", "--out", str(out), "--threads", "8",
                              cwd=tmp_path)
        processes.append(first)
        wait_until(lambda: any(w["held"] for w in board.status()["workers"]), 30,
                   "the first worker to hold images")
        second = start_crawler("worker", f"{host}:{port}", "--out", str(out), "--threads",
                               "8", cwd=tmp_path)
        processes.append(second)
        wait_until(lambda: len(board.status()["workers"]) == 2, 30, "the second worker")
        time.sleep(1.0)  # what the first one held before the second asked is done by now
        samples = []
        for _ in range(20):
            status = board.status()
            if status["closed"]:
                break
            samples.append(sorted(w["held"] for w in status["workers"] if not w["gone"]))
            time.sleep(0.1)
        err = finish(master, 60)
        assert master.returncode == 0, err
    share = math.ceil(slots / 2)
    assert len(samples) >= 5, "the crawl ended before it could be watched"
    assert all(max(sample) <= share for sample in samples), samples
    assert any(min(sample) > 0 for sample in samples), samples
    assert len(manifest_lines(out)) == images


def test_a_silent_worker_loses_its_lease_in_seconds_and_knows_it_before_storing(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Stopped mid-download, a worker loses its lease after worker_silence (not after the
    minute of lease_timeout); resumed, it learns so before it stores: the file stored is
    the new holder's, even when the old one finishes first."""
    late, current = PNG + b"late bytes", PNG + b"current bytes"
    page = b'<html><body><img src="/a.png"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    begun = [threading.Event(), threading.Event()]
    release = [threading.Event(), threading.Event()]
    requests: list[int] = []

    def held_image(handler: FixtureHandler) -> None:
        n = len(requests)
        requests.append(n)
        body = (late, current)[min(n, 1)]
        handler.send_first_half(body)
        if n < 2:
            begun[n].set()
            release[n].wait(60)
        with contextlib.suppress(OSError):
            handler.wfile.write(body[len(body) // 2 :])

    site.routes["/a.png"] = held_image
    (tmp_path / "settings.toml").write_text("[queue]\nworker_silence = 1.5\n")
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--ignore-robots", "--lease-timeout", "60", cwd=tmp_path)
    with stopped_at_the_end(master) as processes:
        address = wait_for_queue_address(master)
        silent = start_crawler("worker", address, "--out", str(out), "--threads", "1",
                               cwd=tmp_path)
        processes.append(silent)
        assert begun[0].wait(30), "the image was never asked for"
        os.kill(silent.pid, signal.SIGSTOP)
        wait_stopped(silent.pid)
        stopped = time.monotonic()
        other = start_crawler("worker", address, "--out", str(out), cwd=tmp_path)
        processes.append(other)
        assert begun[1].wait(30), "the lease never went to the other worker"
        assert time.monotonic() - stopped < 30, "it waited for lease_timeout"
        release[0].set()  # the silent worker has all its bytes at once when it resumes
        os.kill(silent.pid, signal.SIGCONT)
        wait_for_output(silent, r"lost 1 lease while silent: the crawl took it back", 30)
        release[1].set()
        err = finish(master, 60)
        assert master.returncode == 0, err
        assert silent.wait(timeout=30) == 0
        assert other.wait(timeout=30) == 0
    [entry] = manifest_lines(out)
    assert entry["status"] == "success" and entry["attempts"] == 2, entry
    assert (out / entry["path"]).read_bytes() == current


def test_a_worker_stopped_past_the_crawls_end_says_so_and_leaves(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Resumed after its master had completed the crawl (in a folder it can see), a
    worker waited connect_wait (300 s) for it, then ended with status 1, blaming the
    master's address."""
    page = b'<html><body><img src="/a.png"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    begun, release = gate_image(site, "/a.png", PNG)
    (tmp_path / "settings.toml").write_text("[queue]\nworker_silence = 1.5\n")
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--ignore-robots", cwd=tmp_path)
    with stopped_at_the_end(master) as processes:
        address = wait_for_queue_address(master)
        silent = start_crawler("worker", address, "--out", str(out), "--threads", "1",
                               cwd=tmp_path)
        processes.append(silent)
        assert begun.wait(30), "the image was never asked for"
        os.kill(silent.pid, signal.SIGSTOP)
        wait_stopped(silent.pid)
        other = start_crawler("worker", address, "--out", str(out), cwd=tmp_path)
        processes.append(other)
        err = finish(master, 60)
        assert master.returncode == 0, err
        assert other.wait(timeout=30) == 0
        os.kill(silent.pid, signal.SIGCONT)
        release.set()
        said = finish(silent, 30)
        assert silent.returncode == 0, said
        assert "the crawl ended while this worker was away: leaving" in said, said
    [entry] = manifest_lines(out)
    assert entry["status"] == "success", entry


@contextlib.contextmanager
def _silenced_past_its_lease(site: FixtureServer, tmp_path: Path, authkey: str,
                             begun: threading.Event
                             ) -> Iterator[tuple[subprocess.Popen[str], subprocess.Popen[str]]]:
    """A master with one worker (one download at a time, one attempt per image) on
    ``site``'s page of /held.png and /later.png, the worker stopped (SIGSTOP) once
    /held.png has ``begun``, until its lease expired: (master, worker), the worker still
    stopped; both stopped at the end."""
    page = b'<html><body><img src="/held.png"><img src="/later.png"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    site.routes["/later.png"] = lambda handler: handler.send_body(200, PNG, "image/png")
    (tmp_path / "settings.toml").write_text("[queue]\nworker_silence = 1.5\n")
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), "--ignore-robots", "--lease-timeout", "60",
                           "--max-attempts", "1", "--host-concurrency", "1", cwd=tmp_path)
    with stopped_at_the_end(master) as processes:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        board = MasterClient((host, int(port)), authkey.encode()).connect()
        silent = start_crawler("worker", f"{host}:{port}", "--out", str(tmp_path / "out"),
                               "--threads", "1", cwd=tmp_path)
        processes.append(silent)
        assert begun.wait(30), "the image was never asked for"
        os.kill(silent.pid, signal.SIGSTOP)
        wait_stopped(silent.pid)
        wait_until(lambda: board.status()["board"]["expired"] >= 1, 30, "the lease to expire")
        yield master, silent


def test_a_silent_worker_whose_lost_lease_was_its_last_try_is_not_told_it_is_queued(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """A lease that expires on the image's last attempt fails it ("lost: no result after
    1 attempts"): the worker that resumes was told the lease was back in the crawl's
    queue, where it was not."""
    begun, release = gate_image(site, "/held.png", PNG)
    with _silenced_past_its_lease(site, tmp_path, authkey, begun) as (master, silent):
        release.set()
        os.kill(silent.pid, signal.SIGCONT)
        said = wait_for_output(silent, r"lost 1 lease while silent: [^\n]*", 30).group(0)
        assert said == ("lost 1 lease while silent: the crawl took it back (queued again, or "
                        "failed on its last try), and this worker drops its download of it"), said
        err = finish(master, 60)
        assert master.returncode == 0, err
        assert silent.wait(timeout=30) == 0
    entries = {entry["url"].rpartition("/")[2]: entry for entry in manifest_lines(tmp_path / "out")}
    assert entries["held.png"]["reason"].startswith("lost: no result after 1 attempts")
    assert entries["held.png"]["transient"]  # a worker's doing: the next run tries it again
    assert entries["later.png"]["status"] == "success"


def test_a_worker_that_lost_its_lease_says_so_once_and_stops_downloading(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Back from a silence past worker_silence, a worker heard in every answer (every
    second) that it had lost the lease, said so each time, and went on downloading an
    image whose bytes would be dropped: said once now, and its download is cut."""
    begun, cut, release = threading.Event(), threading.Event(), threading.Event()

    def held(handler: FixtureHandler) -> None:  # half the image, then the rest once released
        handler.send_first_half(PNG)
        begun.set()
        handler.connection.settimeout(0.2)
        while not release.is_set():  # the worker closing its connection: the drop
            try:
                if handler.connection.recv(1) == b"":
                    cut.set()
                    return
            except TimeoutError:
                continue
            except OSError:
                cut.set()
                return

    site.routes["/held.png"] = held
    out = tmp_path / "out"
    try:
        with _silenced_past_its_lease(site, tmp_path, authkey, begun) as (master, silent):
            os.kill(silent.pid, signal.SIGCONT)
            assert cut.wait(20), "the worker went on downloading an image it lost"
            err = finish(master, 60)
            assert master.returncode == 0, err
            _, worker_err = silent.communicate(timeout=30)
    finally:
        release.set()
    assert worker_err.count("lost 1 lease while silent") == 1, worker_err
    entries = {entry["url"].rpartition("/")[2]: entry for entry in manifest_lines(out)}
    assert entries["held.png"]["reason"].startswith("lost: no result after 1 attempts")
    assert entries["later.png"]["status"] == "success"
    assert not list(out.glob("images/**/held*")), "a lost lease's bytes were stored"


def test_an_image_leased_again_to_the_worker_still_downloading_it_has_one_file(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Stopped mid-download past worker_silence, the only worker resumes, hears its lease
    went, and is given the image again at once, while its first try still waits for the
    rest of a PNG; the server now answers with a JPEG, whose name is another. Before, the
    new try stored the JPEG, the old one then stored its PNG beside it: two files for one
    URL, the PNG in no line of the manifest. Now the old try (of a lease the worker no
    longer holds) stores nothing, and the new one begins when it has ended."""
    jpeg = (SITE / "photos" / "cat.jpg").read_bytes()
    page = b'<html><body><img src="/picture"><img src="/last.png"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    begun, release = gate_image(site, "/picture", PNG)
    gated = site.routes["/picture"]
    asked: list[int] = []

    def png_then_jpeg(handler: FixtureHandler) -> None:
        asked.append(len(asked))
        if len(asked) == 1:
            gated(handler)
        else:
            handler.send_body(200, jpeg, "image/jpeg")

    site.routes["/picture"] = png_then_jpeg
    last = threading.Event()  # the crawl goes on until the old try has ended

    def held_last(handler: FixtureHandler) -> None:
        last.wait(60)
        handler.send_body(200, PNG, "image/png")

    site.routes["/last.png"] = held_last
    # A read timeout past the test's length: the old try ends with its whole body.
    (tmp_path / "settings.toml").write_text(
        "[queue]\nworker_silence = 1.5\n[download]\nread_timeout = 60\n")
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--ignore-robots", "--lease-timeout", "60", cwd=tmp_path)
    try:
        with stopped_at_the_end(master) as processes:
            host, port = wait_for_queue_address(master).rsplit(":", 1)
            board = MasterClient((host, int(port)), authkey.encode()).connect()
            worker = start_crawler("worker", f"{host}:{port}", "--out", str(out), cwd=tmp_path)
            processes.append(worker)
            assert begun.wait(30), "the image was never asked for"
            os.kill(worker.pid, signal.SIGSTOP)
            wait_stopped(worker.pid)
            wait_until(lambda: board.status()["board"]["expired"] >= 1, 30,
                       "the lease to expire")
            os.kill(worker.pid, signal.SIGCONT)
            wait_for_output(worker, r"lost \d leases? while silent", 30)
            # The worker of before stored the JPEG within a second or two.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: any(p.suffix == ".jpg" for p in out.glob("images/**/*")),
                           4, "a JPEG stored while the PNG's try goes on")
            release.set()
            time.sleep(0.5)  # the old try has its whole PNG by now
            last.set()
            err = finish(master, 60)
            assert master.returncode == 0, err
            assert worker.wait(timeout=30) == 0
    finally:
        release.set()
        last.set()
    entries = manifest_lines(out)
    assert {entry["status"] for entry in entries} == {"success"}, entries
    files = {p for p in out.glob("images/**/*") if p.is_file()}
    assert files == {out / entry["path"] for entry in entries}
    [picture] = [entry for entry in entries if entry["url"].endswith("/picture")]
    assert (out / picture["path"]).read_bytes() == jpeg
    assert picture["sha256"] == hashlib.sha256(jpeg).hexdigest()
