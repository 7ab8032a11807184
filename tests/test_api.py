"""The Python API: a whole crawl in-process, leaving the caller's process as it was."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import crawler
from crawler import cli
from crawler.demo.site import build_site, png
from crawler.errors import (
    AuthkeyError,
    BindError,
    ConfigError,
    CrawlMismatch,
    NothingCrawled,
    UsageError,
)
from crawler.worker.notifier import CALL_GAP, Notifier

from .conftest import (
    ROOT,
    FixtureServer,
    finish,
    free_port,
    manifest_lines,
    run_crawler,
    serve_routes,
    site_images,
    slow_start,
    start_crawler,
    stop,
    wait_for_output,
    wait_for_queue_address,
    wait_until,
)
from .redis_server import RedisServer


def process_state() -> tuple[object, ...]:
    root = logging.getLogger()
    return (tuple(root.handlers), root.level,
            tuple(logging.getLogger("crawler").handlers),
            signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))


def test_the_modules_the_readme_names_are_attributes_of_the_package() -> None:
    """README names crawler.errors.UsageError; in a fresh interpreter, ``import crawler``
    then ``crawler.errors`` was an AttributeError, until something imported the module."""
    code = ("import crawler, sys\n"
            "assert 'crawler.errors' not in sys.modules\n"
            "print(crawler.errors.UsageError.__name__, crawler.config.Settings.__name__,\n"
            "      'errors' in dir(crawler))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["UsageError", "Settings", "True"]


def test_pages_wait_while_the_image_backlog_is_full(
        tmp_path: Path, make_server: Callable[[], FixtureServer], authkey: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The master fetched pages as fast as it could, whatever the images waiting for its
    workers, and held every one in memory: 2 GB in 95 s on a site of 5,000 images a
    page. Past the backlog's bound, the next page waits for the workers."""
    from crawler.master import master

    monkeypatch.setattr(master, "IMAGE_BACKLOG", 20)
    server = make_server()
    for n in range(3):
        images = "".join(f'<img src="/p{n}/{i}.png">' for i in range(30))
        link = f'<a href="/p{n + 1}.html">next</a>' if n < 2 else ""
        page = f"<html><body>{images}{link}</body></html>".encode()
        server.routes[f"/p{n}.html"] = lambda h, page=page: h.send_body(200, page,
                                                                          "text/html")
        for i in range(30):
            data = png(4 + i % 5, 4, n * 100 + i)
            server.routes[f"/p{n}/{i}.png"] = lambda h, data=data: h.send_body(
                200, data, "image/png")
    with caplog.at_level(logging.INFO, logger="crawler.master.master"):
        summary = crawler.crawl([server.url + "/p0.html"], out=tmp_path / "out",
                                local_workers=1, bind="127.0.0.1:0", threads=2)
    assert summary.completed and summary.succeeded == 90
    paths = server.paths()
    for n in (1, 2):  # each next page came once the page before had 11 images settled
        before = paths[:paths.index(f"/p{n}.html")]
        assert len([p for p in before if p.startswith(f"/p{n - 1}/")]) >= 11, paths
    assert "images wait for workers: no new page is fetched until fewer than 20 do" \
        in caplog.text


def test_crawl_returns_the_summary_and_leaves_the_process_as_it_was(
        tmp_path: Path, site: FixtureServer, authkey: str) -> None:
    before = process_state()
    out = tmp_path / "out"
    summary = crawler.crawl([site.url + "/"], out=out, local_workers=1,
                            bind="127.0.0.1:0", threads=2)
    assert process_state() == before
    assert threading.current_thread() is threading.main_thread()
    assert isinstance(summary, crawler.Summary)
    assert summary.completed and not summary.interrupted
    stored = manifest_lines(out)
    ok = [e for e in stored if e["status"] == "success"]
    assert summary.succeeded == len(ok) > 0
    assert summary.failed == len(stored) - len(ok)
    assert summary.images_by_status == {"success": len(ok), "failure": summary.failed}
    assert summary.bytes == sum(e["bytes"] for e in ok)
    assert summary.failures_by_reason  # the site has a missing image
    assert sum(summary.failures_by_reason.values()) == summary.failed
    host = site.url.removeprefix("http://")
    assert summary.hosts[host]["succeeded"] == len(ok)
    assert summary.manifest == out / "manifest.jsonl" and summary.results_log.is_file()
    assert json.loads((out / "summary.json").read_text()) == summary.to_dict()
    images = site_images()
    for entry in ok:
        path = entry["url"].removeprefix(site.url)
        assert (out / entry["path"]).read_bytes() == images[path]
    assert summary.stored_this_run == summary.succeeded
    # Run again: the crawl's counts are all of it, the rate is this run's (nothing to do).
    # The earlier outcomes are read from the journal once, counted as the files are
    # rewritten from them (a second read was half the restart of a large crawl).
    from crawler.master.journal import Journal

    reads: list[int] = []
    real_outcomes = Journal.outcomes

    def outcomes(journal: Journal) -> Iterator[Any]:
        reads.append(1)
        return real_outcomes(journal)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Journal, "outcomes", outcomes)
        again = crawler.crawl([site.url + "/"], out=out, local_workers=1,
                              bind="127.0.0.1:0", threads=2)
    assert len(reads) == 1
    assert again.completed and again.succeeded == summary.succeeded
    assert again.failed == summary.failed and again.bytes == summary.bytes
    assert again.stored_this_run == 0 and again.images_per_second == 0
    assert json.loads((out / "summary.json").read_text())["images_per_second"] == 0


def test_crawl_frees_its_queue_port_and_threads_when_it_returns(
        tmp_path: Path, site: FixtureServer, authkey: str) -> None:
    port = free_port()
    threads_before = set(threading.enumerate())
    for run in ("first", "second"):  # the second on the same port: the first let it go
        summary = crawler.crawl([site.url + "/"], out=tmp_path / run, local_workers=1,
                                bind=f"127.0.0.1:{port}", threads=2, depth=0)
        assert summary.completed
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - threads_before and time.monotonic() < deadline:
        time.sleep(0.05)  # a served connection's thread ends as its worker leaves
    assert not set(threading.enumerate()) - threads_before
    with socket.create_server(("127.0.0.1", port)):  # nothing listens there any more
        pass
    with pytest.raises(NothingCrawled):  # and after a crawl that raised
        crawler.crawl(f"http://127.0.0.1:{free_port()}/", out=tmp_path / "none",
                      local_workers=0, bind=f"127.0.0.1:{port}")
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_a_crawl_refused_as_it_starts_leaves_no_folder_nor_key(
        tmp_path: Path, site: FixtureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """crawl() made OUT/authkey (and OUT, with its parents) before it read its request
    files: one it cannot use raised ConfigError and left them; so did a port in use."""
    monkeypatch.delenv("CRAWLER_AUTHKEY", raising=False)
    (tmp_path / "cookies.txt").write_text("not a cookie line\n")
    with pytest.raises(ConfigError, match="holds no cookie"):
        crawler.crawl(site.url + "/", out=tmp_path / "made" / "out", bind="127.0.0.1:0",
                      cookies=str(tmp_path / "cookies.txt"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError):
            crawler.crawl(site.url + "/", out=tmp_path / "made" / "out",
                          bind=f"127.0.0.1:{port}")
    assert not (tmp_path / "made").exists()
    assert site.paths() == []


def test_crawl_raises_instead_of_exiting(tmp_path: Path) -> None:
    port = free_port()
    before = process_state()
    with pytest.raises(NothingCrawled, match=f"http://127.0.0.1:{port}/"):
        crawler.crawl(f"http://127.0.0.1:{port}/", out=tmp_path / "out", local_workers=0,
                      bind="127.0.0.1:0", authkey="k" * 32)
    with pytest.raises(UsageError, match=r"seed 'ftp://x\.example/'"):
        crawler.crawl(["ftp://x.example/"], out=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"crawl\.depth"):
        crawler.crawl(["http://127.0.0.1:1/"], out=tmp_path / "out", depth=-1)
    for unknown in ({"dpeth": 1}, {"crawl__dpth": 1}):
        # A wrong setting as README says (ConfigError), and an unknown keyword (TypeError).
        with pytest.raises(ConfigError, match=r"crawl\(\) arguments: '(crawl__dpth|dpeth)' "
                                              "is no setting") as caught:
            crawler.crawl(["http://127.0.0.1:1/"], out=tmp_path / "out", **unknown)
        assert isinstance(caught.value, TypeError) and caught.value.exit_code == 2
    with pytest.raises(ConfigError, match=r"run_worker\(\) arguments: worker\.threads"):
        crawler.run_worker("127.0.0.1:1", out=tmp_path / "out", threads="x", authkey="k" * 32)
    assert process_state() == before


def test_settings_built_in_code_and_keyword_overrides(
        tmp_path: Path, site: FixtureServer, capfd: pytest.CaptureFixture[str]) -> None:
    settings = crawler.Settings().with_values({"crawl.depth": 0, "queue.bind": "127.0.0.1:0"})
    listed: list[str] = []
    summary = crawler.crawl([site.url + "/gallery.html"], out=tmp_path / "out",
                            settings=settings, dry_run=True, image_deny=[r"\.png$"],
                            authkey="k" * 32, on_image=listed.append)
    assert summary.dry_run and summary.out_dir is None and summary.summary_json is None
    assert summary.pages == 1
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert summary.found == 1  # cat.jpg; the PNGs are refused by image_deny
    # The URL went to the caller, not to its standard output.
    assert listed == [f"{site.url}/photos/cat.jpg"]
    assert capfd.readouterr().out == ""


def test_run_worker_returns_and_raises_typed_errors(tmp_path: Path) -> None:
    from crawler.errors import MasterUnreachable

    before = process_state()
    port = free_port()
    with pytest.raises(MasterUnreachable, match=f"127.0.0.1:{port}"):
        crawler.run_worker(f"127.0.0.1:{port}", out=tmp_path, authkey="k" * 32,
                           connect_wait=0.5)
    assert process_state() == before


def test_run_worker_takes_the_brokers_url_as_the_command_does(
        tmp_path: Path, site: FixtureServer, redis_server: RedisServer,
        crawl_name: str) -> None:
    """broker="redis://..." works for that crawl: taken as it was, the text failed deep
    in the worker with an AttributeError."""
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--broker", redis_server.url, "--crawl",
                           crawl_name, "--out", str(out), "--local-workers", "0", "--quiet",
                           cwd=tmp_path)
    try:
        wait_for_output(master, "workers join with")
        done = crawler.run_worker(None, broker=redis_server.url, crawl_name=crawl_name,
                                  out=out, threads=2)
        finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0
    stored = [e for e in manifest_lines(out) if e["status"] == "success"]
    assert done.stop_reason == "" and done.done == len(stored) > 0


def test_crawl_keeps_its_state_on_a_broker_and_a_second_master_joins_it(
        tmp_path: Path, site: FixtureServer, redis_server: RedisServer,
        crawl_name: str) -> None:
    """crawl() had no broker: a program had to run ``crawler master --broker``."""
    before = process_state()
    out = tmp_path / "out"
    summary = crawler.crawl([site.url + "/"], out=out, local_workers=1, threads=2,
                            broker=redis_server.url, crawl_name=crawl_name)
    assert process_state() == before
    assert summary.completed and not summary.interrupted
    ok = [e for e in manifest_lines(out) if e["status"] == "success"]
    assert summary.succeeded == summary.stored_this_run == len(ok) > 0
    images = site_images()
    for entry in ok:
        assert (out / entry["path"]).read_bytes() == images[entry["url"].removeprefix(site.url)]
    assert not (out / "authkey").exists()  # no queue was served, no key made for one
    client = redis_server.client()
    assert client.keys(f"*{crawl_name}*"), "the crawl's state is in Redis"
    # Another master joins the crawl by its name alone: done already, it has nothing to do.
    joined = crawler.crawl([], out=tmp_path / "second", local_workers=0,
                           broker=redis_server.url, crawl_name=crawl_name, join=True)
    assert joined.completed and joined.stored_this_run == 0
    assert joined.succeeded == summary.succeeded
    assert process_state() == before


def test_crawl_arguments_that_do_not_go_with_a_broker_are_usage_errors(tmp_path: Path) -> None:
    url, seed = "redis://127.0.0.1:9/0", "http://127.0.0.1:9/"
    for args, kwargs, said in (
            ([], {"join": True}, "join is for a crawl on a broker: give broker="),
            ([seed], {"broker": url, "join": True}, "join takes the crawl's seeds from"),
            ([seed], {"broker": url, "join": "yes"}, "join must be True or False"),
            ([seed], {"broker": url, "dry_run": True}, "dry_run records nothing"),
            ([seed], {"broker": url, "resume": True}, "resume and fresh are about"),
            ([seed], {"broker": url, "fresh": True}, "resume and fresh are about"),
            ([seed], {"broker": url, "authkey": "k" * 32}, "a crawl on a broker serves no"),
            ([seed], {"broker": 6379}, "broker must be a URL"),
            ([seed], {"crawl_name": "docs"}, "give broker=")):
        with pytest.raises(UsageError, match=said):
            crawler.crawl(args, out=tmp_path / "out", local_workers=0,
                          **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_a_broker_given_wrongly_to_run_worker_is_a_usage_error(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:9/0"
    for kwargs, said in (({"broker": 6379}, "broker must be a URL"),
                         ({"broker": "http://127.0.0.1:9/"}, "expected redis://HOST:PORT/DB"),
                         ({"broker": url, "master": "127.0.0.1:9"}, "not both"),
                         ({"master": url}, "is a broker's URL: give it as broker="),
                         ({"broker": url, "crawl_name": "a b"}, "crawl name 'a b'"),
                         ({"broker": url, "crawl_name": 7}, "crawl_name must be text"),
                         ({"master": "127.0.0.1:9", "crawl_name": "docs"}, "give broker=")):
        with pytest.raises(UsageError, match=said):
            crawler.run_worker(**{"master": None, **kwargs},  # type: ignore[arg-type]
                               out=tmp_path / "w", connect_wait=0.5)
    assert not (tmp_path / "w").exists()


def test_main_returns_its_status_and_restores_logging(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    before = process_state()
    assert cli.main(["--version"]) == 0
    assert cli.main(["--help"]) == 0
    assert cli.main(["master", "--no-such-flag"]) == 2
    assert cli.main(["report", str(tmp_path / "missing")]) != 0
    (tmp_path / "manifest.jsonl").touch()
    assert cli.main(["report", str(tmp_path), "-o", str(tmp_path / "log")]) == 0
    assert process_state() == before
    assert f"crawler {crawler.__version__}" in capsys.readouterr().out


def test_importing_crawler_and_help_load_no_crawl_code() -> None:
    """`crawler --help` starts fast: no master, requests or lxml behind it."""
    code = ("import sys; from crawler import cli; import crawler; "
            "assert cli.main(['--help']) == 0 and cli.main(['master', '--help']) == 0; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('requests', 'lxml', 'bs4', 'urllib3', 'tqdm', 'shtab', 'pycurl') "
            "or m.startswith(('crawler.master', 'crawler.worker', 'crawler.parse', "
            "'crawler.board', 'crawler.fetch.'))"
            # The settings' header and rate checks: plain Python, no client behind them.
            " and m != 'crawler.fetch.options'); print(heavy, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]"


def test_sigint_during_crawl_stops_it_cleanly_and_the_handler_goes_away(
        tmp_path: Path, site: FixtureServer) -> None:
    """While crawl() runs, Ctrl-C stops the crawl (state saved); afterwards it is the
    caller's again: here, pytest's KeyboardInterrupt."""
    slow_start(site, 1.5)

    def interrupt_once_the_seed_is_asked_for() -> None:
        deadline = time.monotonic() + 30
        while "/" not in site.paths() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    before = process_state()
    threading.Thread(target=interrupt_once_the_seed_is_asked_for, daemon=True).start()
    summary = crawler.crawl([site.url + "/"], out=tmp_path / "out", local_workers=0,
                            bind="127.0.0.1:0", authkey="k" * 32)
    assert summary.interrupted and not summary.completed
    assert process_state() == before
    assert (tmp_path / "out" / "crawl.sqlite").is_file()  # a rerun resumes from it


_CRAWL_IN_A_THREAD = """
import sys, threading, time, crawler
done = []
def run():
    done.append(crawler.crawl([sys.argv[1]], out=sys.argv[2], local_workers=1,
                              bind="127.0.0.1:0", authkey="k" * 32, threads=2))
thread = threading.Thread(target=run)
thread.start()
print("started", flush=True)
try:
    while thread.is_alive():
        time.sleep(0.05)
except KeyboardInterrupt:
    print("main thread interrupted", flush=True)
thread.join()
print("interrupted" if done and done[0].interrupted else "not interrupted", flush=True)
"""


def test_ctrl_c_at_a_crawl_run_from_another_thread_stops_it(
        tmp_path: Path, make_server: Callable[[], FixtureServer]) -> None:
    """Ctrl-C at a terminal (or a notebook's interrupt) signals the whole process group:
    the local workers stopped (status 130), and the crawl, run by crawl() from another
    thread than the main one (where Python delivers no signal), waited for workers from
    elsewhere for good, holding its folder's lock, and so did the caller's thread."""
    server = make_server()
    site = build_site(pages=4, images_per_page=10, min_kb=1, max_kb=2)
    serve_routes(server, site.files, image_delay=0.5)
    out = tmp_path / "out"
    script = subprocess.Popen([sys.executable, "-c", _CRAWL_IN_A_THREAD, server.url + "/",
                               str(out)], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                path.endswith(".png") for path in server.paths()):
            time.sleep(0.05)
        assert any(path.endswith(".png") for path in server.paths()), "no image asked for"
        os.killpg(script.pid, signal.SIGINT)  # as a terminal's Ctrl-C
        output, err = script.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
    assert output.split("\n")[:3] == ["started", "main thread interrupted", "interrupted"], \
        err
    assert "every local worker was interrupted (Ctrl-C)" in err, err
    assert script.returncode == 0, err  # (the crawl returned: its folder is free again)


def test_run_worker_downloads_for_a_master_and_returns_what_it_did(
        tmp_path: Path, site: FixtureServer, authkey: str) -> None:
    slow_start(site)  # the worker connects before the crawl is over
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                           cwd=tmp_path)
    try:
        address = wait_for_queue_address(master)
        before = process_state()
        done = crawler.run_worker(address, out=out, threads=2)
        assert process_state() == before
        port = int(address.rsplit(":", 1)[1])
        gc.collect()  # a proxy's finalizer may call the master once more, briefly
        deadline = time.monotonic() + 2
        while _connections_to(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _connections_to(port) == 0, "its connection to the master was left open"
        finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0
    assert isinstance(done, crawler.WorkerSummary) and done.stop_reason == ""
    stored = [e for e in manifest_lines(out) if e["status"] == "success"]
    assert done.done == len(stored) > 0
    assert done.bytes == sum(e["bytes"] for e in stored)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["started_at"] <= summary["finished_at"]
    assert summary["finished_at"].endswith("+00:00")


def test_a_slow_progress_callback_costs_the_worker_no_lease(
        tmp_path: Path, make_server: Callable[[], FixtureServer], authkey: str) -> None:
    """Called on the thread that keeps the leases, once per image, a callback of 0.3 s
    held the heartbeats back until the master took every lease away: the crawl's images
    all ended "lost", for good."""
    server = make_server()
    site = build_site(pages=1, images_per_page=24, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    slow_start(server)  # the worker connects before the crawl is over
    (tmp_path / "quick.toml").write_text("[queue]\nworker_silence = 1.0\n")
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--settings", str(tmp_path / "quick.toml"), cwd=tmp_path)
    calls: list[tuple[int, int, int]] = []

    def slow(done: int, failed: int, size: int) -> None:
        calls.append((done, failed, size))
        time.sleep(0.3)

    try:
        done = crawler.run_worker(wait_for_queue_address(master), out=out, threads=8,
                                  progress=slow)
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0, err
    entries = manifest_lines(out)
    assert [e["status"] for e in entries] == ["success"] * len(site.images), entries
    assert done.done == len(site.images) and calls[-1][0] == len(site.images), calls
    assert len(calls) < len(site.images)  # calls that would come while one runs are merged


def test_progress_calls_are_merged_while_images_end_one_by_one() -> None:
    """Woken for each image, the progress thread cost a worker about a tenth of its CPU on
    a real site: calls come at most every CALL_GAP seconds, the last with the final
    numbers."""
    calls: list[int] = []
    notifier = Notifier(calls.append, 0, on_error=lambda: None)
    started = time.monotonic()
    for done in range(1, 101):  # 100 images ending a millisecond or more apart
        notifier.poke(done)
        time.sleep(0.001)
    notifier.close(100)
    took = time.monotonic() - started  # (longer on a loaded machine: more calls allowed)
    assert calls[-1] == 100 and calls == sorted(calls)
    assert len(calls) <= took / CALL_GAP + 3, (calls, took)  # one a poke before


def _connections_to(port: int) -> int:
    """This process's TCP connections to ``port`` on this host."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if fd.readlink().name.startswith("socket:"):
                probe = socket.socket(fileno=int(fd.name))
                try:
                    count += probe.getpeername()[1] == port
                finally:
                    probe.detach()
    return count


def test_a_key_given_as_text_is_stripped_as_a_key_file_is(
        tmp_path: Path, site: FixtureServer) -> None:
    """The text of a key file keeps its newline: the crawl's own local workers, which get
    the key stripped, were refused, and the crawl waited for workers for ever."""
    key = secrets.token_hex(16)
    summary = crawler.crawl([site.url + "/"], out=tmp_path / "out", local_workers=1,
                            bind="127.0.0.1:0", authkey=key + "\n", threads=2)
    assert summary.completed and summary.succeeded > 0
    # Empty is no key, as blank is: it fell back on $CRAWLER_AUTHKEY or OUT/authkey.
    for empty in (" \n", "", b""):
        with pytest.raises(AuthkeyError, match="empty"):
            crawler.crawl([site.url + "/"], out=tmp_path / "again", authkey=empty)
        with pytest.raises(AuthkeyError, match="empty"):
            crawler.run_worker("127.0.0.1:9", out=tmp_path / "w", authkey=empty)


def test_messages_to_a_python_caller_name_its_arguments_too(
        tmp_path: Path, site: FixtureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """They named only the command line's flags (--resume, --authkey-file)."""
    monkeypatch.delenv("CRAWLER_AUTHKEY", raising=False)
    with pytest.raises(AuthkeyError, match=r"\(in Python: authkey=\)"):
        crawler.run_worker("127.0.0.1:9", out=tmp_path / "w")
    crawler.crawl([site.url + "/"], out=tmp_path / "out", local_workers=1, threads=2,
                  bind="127.0.0.1:0")
    with pytest.raises(CrawlMismatch, match=r"\(in Python: resume=True, fresh=True, "
                                                    r"out=\)"):
        crawler.crawl([site.url + "/robots.txt"], out=tmp_path / "out", bind="127.0.0.1:0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(BindError, match=r"\(choose another port with --bind, or bind= "
                                            r"in Python\)"):
            crawler.crawl([site.url + "/"], out=tmp_path / "taken",
                          bind=f"127.0.0.1:{taken.getsockname()[1]}")


def test_the_output_folder_is_the_settings_own_unless_out_is_given(
        tmp_path: Path, site: FixtureServer, authkey: str) -> None:
    settings = crawler.Settings().with_values({"output.dir": str(tmp_path / "chosen"),
                                               "queue.bind": "127.0.0.1:0"})
    summary = crawler.crawl([site.url + "/"], settings=settings, dry_run=True,
                            on_image=lambda url: None)
    assert summary.pages > 0
    summary = crawler.crawl([site.url + "/"], settings=settings, local_workers=1, threads=2)
    assert summary.out_dir == tmp_path / "chosen"
    assert (tmp_path / "chosen" / "summary.json").exists()



def test_wrong_arguments_are_usage_errors_that_say_what_was_given(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/"
    for kwargs, said in (({"seeds": b"http://x/"}, "seeds must be a URL or a list of URLs"),
                         ({"seeds": None}, "seeds must be a URL or a list of URLs"),
                         # (a mapping's keys were crawled: {"a": 1} looked up https://a/)
                         ({"seeds": {url: 1}}, r"a list of URLs \(got dict\)"),
                         ({"seeds": [url, 7]}, "seeds must be text: 7 is a int"),
                         ({"seeds": url, "local_workers": "2"}, "local_workers must be"),
                         ({"seeds": url, "settings": {}}, "settings must be a crawler.Settings"),
                         ({"seeds": url, "local_workers": 100_000}, "from 0 to 256"),
                         ({"seeds": url, "on_image": print}, "on_image is for a dry run"),
                         ({"seeds": url, "on_image": 7, "dry_run": True},
                          "on_image must be a function of one URL"),
                         ({"seeds": url, "resume": True, "fresh": True},
                          "resume and fresh: give one of them"),
                         # "false" is true: it forgot the folder's crawl
                         ({"seeds": url, "fresh": "false"},
                          "fresh must be True or False \\(got 'false'\\)"),
                         ({"seeds": url, "dry_run": "no"}, "dry_run must be True or False")):
        with pytest.raises(UsageError, match=said):
            crawler.crawl(out=tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists(), "refused before anything was made"
    for worker_kwargs, said in (({"master": 24601}, "master must be text, HOST:PORT"),
                                ({"master": b"127.0.0.1:1"}, "master must be text"),
                                ({"master": "127.0.0.1:1", "progress": 5},
                                 "progress must be a function")):
        with pytest.raises(UsageError, match=said):
            crawler.run_worker(out=tmp_path / "w", authkey="k" * 32,
                               **worker_kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"name a setting as SECTION\.KEY"):
        crawler.Settings().with_values({"depth": 1})
    with pytest.raises(ConfigError, match=r"depth and crawl__depth are the same setting"):
        crawler.crawl(url, out=tmp_path / "out", depth=0, crawl__depth=3)  # the last won
    # A file's setting takes a Path, as out= does ("expected a string, got PosixPath").
    with pytest.raises(ConfigError, match=r"http\.cookies: cannot read .*nosuch"):
        crawler.crawl(url, out=tmp_path / "out", cookies=tmp_path / "nosuch")
    # Settings changed with _replace (a NamedTuple's own) are checked as a file is: a
    # depth of "2" failed deep in the crawl with a TypeError, a dict section likewise.
    base = crawler.Settings()
    for settings, said in ((base._replace(crawl=base.crawl._replace(depth="2")),
                            'crawl\\(\\) settings: crawl.depth: expected a whole number, got "2"'),
                           (base._replace(crawl={"depth": 1}),
                            "crawl\\(\\) settings: a section of the wrong kind")):
        with pytest.raises((ConfigError, UsageError), match=said):
            crawler.crawl(url, out=tmp_path / "out", settings=settings)
    assert not (tmp_path / "out").exists(), "refused before anything was made"


def test_the_queue_address_is_logged_for_workers_to_join(
        tmp_path: Path, site: FixtureServer, authkey: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """bind="127.0.0.1:0" picks a port: outside workers learn it from the log."""
    with caplog.at_level(logging.INFO, logger="crawler"):
        crawler.crawl([site.url + "/"], out=tmp_path / "out", local_workers=1,
                      bind="127.0.0.1:0", threads=2)
    assert re.search(r"queue on 127\.0\.0\.1:\d+", caplog.text), caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="crawler"):
        crawler.crawl([site.url + "/"], out=tmp_path / "again", local_workers=1,
                      bind="127.0.0.1:0", threads=2, authkey="k" * 32)
    assert "# with CRAWLER_AUTHKEY set to the master's key" in caplog.text, caplog.text
    assert "--authkey-file argument" not in caplog.text


def test_after_a_hang_up_a_second_one_no_longer_kills() -> None:
    """A closed terminal: the kernel's SIGHUP, then the shell's to the job. A worker that
    handled the first and returned before the second came was killed by it (exit -1)."""
    from crawler.api import _signals_handled_by

    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        got: list[int] = []
        with _signals_handled_by(lambda signum, frame: got.append(signum)):
            pass
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # no hang-up: as it was
        with _signals_handled_by(lambda signum, frame: got.append(signum)):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert got == [signal.SIGHUP]
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.usefixtures("pythons_own_ctrl_c")
def test_a_ctrl_c_as_the_summary_is_written_leaves_no_half_copy(tmp_path: Path) -> None:
    """A KeyboardInterrupt (Python's own, from a real SIGINT) while summary.json's copy is
    written: the copy goes with it, as it does for a full disk. The copy is a FIFO here,
    so that the write waits, in its open, for the signal."""
    from crawler.api import Summary, _write_summary

    summary = Summary(completed=True, interrupted=False, dry_run=False, seeds=("http://x/",),
                      elapsed_s=1.0, pages=1, pages_failed=0, found=0, succeeded=0, failed=0,
                      bytes=0, out_dir=tmp_path, summary_json=tmp_path / "summary.json")
    os.mkfifo(tmp_path / "summary.json.partial")
    waiting = Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/wchan")
    writer = threading.get_ident()

    def interrupt_once_waiting() -> None:
        wait_until(lambda: waiting.read_text() == "wait_for_partner", 10, "the write's open")
        # To the waiting thread itself: a signal sent to the process may go to any of its
        # threads, and only the one it reaches leaves its system call.
        signal.pthread_kill(writer, signal.SIGINT)

    sender = threading.Thread(target=interrupt_once_waiting, daemon=True)
    sender.start()
    with pytest.raises(KeyboardInterrupt):
        _write_summary(summary)
    sender.join(10)
    assert list(tmp_path.iterdir()) == []


def test_a_summary_copy_a_killed_run_left_is_removed_as_the_next_run_starts(
        tmp_path: Path, site: FixtureServer, authkey: str) -> None:
    """A master killed -9 while it wrote summary.json's copy left it in the folder until a
    run wrote its own summary: for good, where each run after it was killed too."""
    out = tmp_path / "out"
    out.mkdir()
    copy = out / "summary.json.partial"
    copy.write_text('{"completed": tr')  # as the kill left it
    # No worker: the master waits for one, its summary far off.
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), cwd=tmp_path)
    try:
        wait_for_output(master, "no worker has taken one", 30)
        assert not copy.exists()
    finally:
        master.kill()
        master.communicate(timeout=30)


@pytest.mark.parametrize("name", ["summary.json", "summary.json.partial"])
def test_a_folder_in_place_of_the_summary_is_said_before_the_crawl(
        tmp_path: Path, site: FixtureServer, authkey: str, name: str) -> None:
    """It said "Is a directory" with no advice: for the copy, only at the crawl's end."""
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--local-workers", "1", "--quiet", cwd=tmp_path, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"crawler: error: cannot write the crawl's summary: {out / name} is a folder, where "
        "a file of the crawler's goes; move it away, or choose another output folder"]
    assert (out / name).is_dir() and not (out / "results.log").exists()


def test_the_summary_of_a_folder_whose_name_is_not_utf8_is_written(tmp_path: Path) -> None:
    """summary.json names the output folder: one whose name is not UTF-8 (lone surrogates
    to Python) failed the write with a UnicodeEncodeError at the very end of the crawl, a
    traceback, and summary.json.partial left there."""
    from crawler.api import Summary, _write_summary

    out = Path(os.fsdecode(bytes(tmp_path) + b"/out-\xff"))
    out.mkdir()
    summary = Summary(completed=True, interrupted=False, dry_run=False, seeds=("http://x/",),
                      elapsed_s=1.0, pages=1, pages_failed=0, found=0, succeeded=0, failed=0,
                      bytes=0, out_dir=out, manifest=out / "manifest.jsonl",
                      results_log=out / "results.log", summary_json=out / "summary.json")
    _write_summary(summary)
    assert [path.name for path in out.iterdir()] == ["summary.json"]
    written = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert written == summary.to_dict()
    assert Path(written["out_dir"]) == out
