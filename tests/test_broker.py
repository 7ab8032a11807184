"""The crawl on a Redis broker, with real processes and a real redis-server.

The same results as the embedded queue; several masters on one crawl; and
nothing lost when a master, a worker or Redis itself is killed mid-crawl.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from crawler import __version__
from crawler.board import broker
from crawler.board.broker import REGISTRY, BrokerAddress, Connections, connect, keys_prefix
from crawler.cli import EXIT_NOTHING_STORED
from crawler.demo.site import build_site, png
from crawler.errors import BrokerUnreachable

from .accepting import accept_each
from .conftest import (
    FixtureHandler,
    FixtureServer,
    Route,
    by_url,
    fail_first,
    finish,
    free_port,
    manifest_lines,
    raised_by_the_deadline,
    run_crawler,
    serve_routes,
    slow_start,
    start_crawler,
    stop,
    wait_for_output,
    wait_until,
)
from .redis_server import RedisServer, redis_server_path
from .test_politeness import assert_spaced
from .test_recovery import (
    FAST_RETRIES,
    check_complete,
    gate_image,
    setup_site,
    stop_the_group_then_rerun,
)
from .tls import make_ca


def _crawl_name() -> str:
    return "t" + secrets.token_hex(4)


def _comparable(out: Path) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """What a crawl's manifest says of each image, without times and worker names."""
    return sorted((e["url"], e["status"], e["path"], e["sha256"], e["page"])
                  for e in manifest_lines(out))


def test_a_crawl_on_the_broker_has_the_results_of_one_on_the_embedded_queue(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer, tmp_path: Path,
        authkey: str) -> None:
    server = make_server()
    site = build_site(pages=4, images_per_page=10, min_kb=1, max_kb=8)
    missing = sorted(site.images)[:2]  # their pages show them; the server answers 404
    gone_page = sorted(page for page in site.pages if page != "/")[-1]  # linked, 404
    serve_routes(server, {path: body for path, body in site.files.items()
                          if path not in missing and path != gone_page})
    embedded, brokered = tmp_path / "embedded", tmp_path / "brokered"
    done = run_crawler("master", server.url + "/", "--out", str(embedded), "--bind",
                       "127.0.0.1:0", "--local-workers", "2", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    name = _crawl_name()
    done = run_crawler("master", server.url + "/", "--out", str(brokered), "--broker",
                       redis_server.url, "--crawl", name, "--local-workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"crawler worker --broker {redis_server.url} --crawl {name}" in done.stderr
    failed = [e for e in manifest_lines(brokered) if e["status"] == "failure"]
    assert sorted(e["url"] for e in failed) == [server.url + path for path in missing]
    assert all("404" in e["reason"] for e in failed)
    assert _comparable(brokered) == _comparable(embedded)
    assert (sorted((brokered / "results.log").read_text().splitlines())
            == sorted((embedded / "results.log").read_text().splitlines()))
    ours, theirs = (json.loads((out / "summary.json").read_text())
                    for out in (brokered, embedded))
    for key in ("pages", "pages_failed", "found", "succeeded", "failed", "bytes", "completed"):
        assert ours[key] == theirs[key], key
    assert ours["pages_failed"] == 1
    # A master that joins the crawl, and so read none of its pages, tells the same counts:
    # they are the crawl's, not each master's.
    joined = run_crawler("master", "--broker", redis_server.url, "--join", name, "--out",
                         str(tmp_path / "joined"), "--quiet", cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr
    late = json.loads((tmp_path / "joined" / "summary.json").read_text())
    for key in ("pages", "pages_failed", "found", "succeeded", "failed"):
        assert late[key] == ours[key], key

    status = run_crawler("status", "--broker", redis_server.url, "--crawl", name, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["closed"] and shown["board"]["done"] == ours["found"]
    assert not [e for e in manifest_lines(embedded) if e["status"] == "success"
                and e["url"] in {f["url"] for f in failed}]
    assert "request" not in shown  # the crawl's secrets are for workers only
    # The images' counts are Redis's own (workers go on while no master runs), and an ended
    # crawl's time stands still.
    assert (shown["progress"]["found"], shown["progress"]["downloaded"],
            shown["progress"]["failed"], shown["progress"]["pages_failed"]) == (
        ours["found"], ours["found"] - len(missing), len(missing), 1)
    time.sleep(1.5)
    later = json.loads(run_crawler("status", "--broker", redis_server.url, "--crawl", name,
                                   "--json").stdout)
    assert later["elapsed_s"] == shown["elapsed_s"]
    text = run_crawler("status", "--broker", redis_server.url, "--crawl", name)
    assert text.returncode == 0, text.stderr
    assert "finished" in text.stdout and "0 master(s) live" in text.stdout
    assert f"downloaded {ours['found'] - len(missing)} " in text.stdout
    assert "(1 failed, 0 queued)" in text.stdout
    # Not "waiting to retry": a resumed crawl's images held back for their workers are
    # no retries.
    assert "held back 0" in text.stdout


def test_a_masters_pages_in_flight_are_counted_once_in_pages_queued(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """On a broker they are leased there, and the frontier counts them: the master added
    them again (crawler status showed 16 pages done and 50 queued of a 41-page site)."""
    server = make_server()
    site = setup_site(server, pages=6, images_per_page=1, page_delay=2.0)
    name = _crawl_name()
    master = start_crawler("master", server.url + "/", "--broker", redis_server.url,
                           "--crawl", name, "--out", str(tmp_path / "out"),
                           "--page-concurrency", "8", cwd=tmp_path)
    try:
        wait_until(lambda: sum(p in site.pages for p in server.paths()) >= 3, 30,
                   "the seed's pages to be asked for")
        time.sleep(0.5)  # the master has counted them in flight

        def shown() -> int:
            status = run_crawler("status", "--broker", redis_server.url, "--crawl", name,
                                 "--json")
            progress = json.loads(status.stdout)["progress"]
            return int(progress["pages"]) + int(progress["pages_queued"])

        seen = [shown() for _ in range(3)]
        assert max(seen) <= len(site.pages) + 1, seen  # (+1: one read, not yet recorded)
    finally:
        master.kill()
        master.wait(10)


def _hold_pages_after(server: FixtureServer, pages: set[str], served: int,
                      longest: float = 25.0) -> threading.Event:
    """Serve the first ``served`` requests of ``pages``; hold each later one until the
    event returned is set (``longest`` seconds at most: within a master's page timeout,
    30 s, so that a held page is not failed and fetched again)."""
    opened = threading.Event()
    count = itertools.count()
    for path in pages:
        inner = server.routes[path]

        def route(handler: FixtureHandler, inner: Route = inner) -> None:
            if next(count) >= served:
                opened.wait(longest)
            inner(handler)

        server.routes[path] = route
    return opened


def test_two_masters_share_the_pages_and_the_crawl_outlives_a_killed_one(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    server = make_server()
    site = setup_site(server, pages=16, images_per_page=4, page_delay=0.3, image_delay=0.02)
    # Past the first six pages, each waits until both masters are counted: on a busy
    # machine the second one started so late that the first had crawled every page.
    both_live = _hold_pages_after(server, set(site.pages), 6)
    name = _crawl_name()
    broker = ("--broker", redis_server.url)
    first = start_crawler("master", server.url + "/", *broker, "--crawl", name, "--out",
                          str(tmp_path / "first"), "--page-concurrency", "2", cwd=tmp_path)
    second = worker = None
    try:
        wait_for_output(first, "workers join with")
        second = start_crawler("master", *broker, "--join", name, "--out",
                               str(tmp_path / "second"), "--page-concurrency", "2",
                               cwd=tmp_path)
        worker = start_crawler("worker", *broker, "--crawl", name, "--out",
                               str(tmp_path / "store"), "--threads", "4", cwd=tmp_path)
        page_paths = set(site.pages)
        wait_until(lambda: sum(p in page_paths for p in server.paths()) >= 6, 30,
                   "a few pages to be crawled")

        def live_masters() -> int:
            shown = run_crawler("status", "--broker", redis_server.url, "--crawl", name,
                                "--json")
            return int(json.loads(shown.stdout)["progress"]["masters"]) if shown.stdout else -1

        wait_until(lambda: live_masters() == 2, 25, "crawler status to count both masters")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # Its pages in hand (fetched or not, not yet recorded) stay leased to it for
        # seconds: only they may be fetched again.
        holders = redis_server.client().hgetall(keys_prefix(name) + "pages:holder")
        held = {urlsplit(url.decode()).path for url in holders}
        both_live.set()
        err = finish(second, 120)
        assert second.returncode == 0, err
        assert worker.wait(timeout=30) == 0, "the worker saw the crawl end"
    finally:
        both_live.set()
        for process in (first, second, worker):
            if process is not None:
                stop(process)
    # The second master's files hold the whole crawl, the first one's results too.
    check_complete(tmp_path / "second", server.url, site, stores=[tmp_path / "store"])
    page_hits = collections.Counter(p for p in server.paths() if p in set(site.pages))
    assert set(page_hits) == set(site.pages)
    again = {p for p, n in page_hits.items() if n > 1}
    assert again <= held, f"pages fetched again that no master held: {again - held}"


def test_a_killed_worker_a_restarted_redis_and_a_restarted_master_lose_nothing(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    server = make_server()
    site = setup_site(server, pages=3, images_per_page=40, image_delay=0.25)
    redis_at = make_redis_server().start(appendonly=True)
    name = _crawl_name()
    broker = ("--broker", redis_at.url, "--crawl", name)
    out, store = tmp_path / "out", tmp_path / "store"
    master_args = ("master", server.url + "/", *broker, "--out", str(out))
    master = start_crawler(*master_args, cwd=tmp_path)
    workers = [start_crawler("worker", *broker, "--out", str(store), "--threads", "2",
                             "--connect-wait", "60", cwd=tmp_path) for _ in range(2)]
    try:
        stored = store / "images"
        wait_until(lambda: sum(1 for p in stored.rglob("*") if p.is_file()) >= 10
                   if stored.exists() else False, 30, "the first images")
        redis_at.kill()  # Redis itself dies; its append-only file keeps what it had
        time.sleep(1.0)
        redis_at.start(appendonly=True)
        # The master waited it out: it goes on recording results.
        recorded = len(manifest_lines(out))
        wait_until(lambda: len(manifest_lines(out)) > recorded + 5, 30,
                   "the master to record results after Redis came back")
        assert master.poll() is None
        master.send_signal(signal.SIGKILL)  # now the master dies...
        master.wait(timeout=10)
        assert sum(1 for p in stored.rglob("*") if p.is_file()) < len(site.images) - 10
        workers[0].send_signal(signal.SIGKILL)  # ...and a worker holding leases
        # The other worker takes the dead one's URLs back and stores every image while
        # no master runs.
        wait_until(lambda: sum(1 for p in stored.rglob("*") if p.is_file())
                   >= len(site.images), 60, "every image stored with no master")
        master = start_crawler(*master_args, cwd=tmp_path)
        err = finish(master, 120)
        assert master.returncode == 0, err
        assert workers[1].wait(timeout=30) == 0
    finally:
        for process in (master, *workers):
            stop(process)
    check_complete(out, server.url, site, stores=[store])


def test_a_redis_restarted_empty_under_a_master_keeps_nothing_of_the_crawl(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """Redis killed mid-crawl and started again without an append-only file. The master
    recorded its pages in flight into the empty Redis once it was back (their links and
    images: the crawl's keys made anew, with no record), and a crawl started again under
    that name took them up, its seed seen already; and it warned first that the broker
    was out of reach, though the broker had answered that the crawl was gone."""
    server = make_server()
    site = setup_site(server, pages=30, images_per_page=2, page_delay=0.3)
    redis_at = make_redis_server().start()
    name = _crawl_name()
    args = ("master", server.url + "/", "--broker", redis_at.url, "--crawl", name,
            "--depth", "50", "--page-concurrency", "4", "--local-workers", "1")
    master = start_crawler(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    try:
        wait_until(lambda: len(server.paths()) >= 6, 30, "pages in flight")
        redis_at.kill()
        time.sleep(0.5)
        redis_at.start()  # empty: no append-only file
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 1, err
    assert err.strip().splitlines()[-1] == (
        f"crawler: error: the crawl is gone from the broker at 127.0.0.1:{redis_at.port} (its "
        "keys were deleted, or Redis restarted without its append-only file): nothing is "
        "left there to work on; its master, started again, starts it anew"), err
    assert "out of reach" not in err, err
    assert redis_at.client().keys(f"crawler:{{{name}}}:*") == []
    again = run_crawler(*args, "--out", str(tmp_path / "again"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "carrying on with it" not in again.stderr  # a new crawl, from its seed
    check_complete(tmp_path / "again", server.url, site)


def test_a_worker_back_after_the_crawl_ended_without_it_says_so_and_leaves(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """Stopped (a laptop asleep, ^Z) while holding leases: they went to the master's own
    worker, the crawl ended, and the worker that came back left without a word."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=15, image_delay=0.1)
    broker = ("--broker", redis_server.url, "--crawl", _crawl_name())
    out, away = tmp_path / "out", tmp_path / "away"
    master = start_crawler("master", server.url + "/", *broker, "--out", str(out),
                           "--local-workers", "1", "--threads", "2", cwd=tmp_path)
    worker = start_crawler("worker", *broker, "--out", str(away), "--threads", "2",
                           cwd=tmp_path)
    try:
        wait_until(lambda: any(p.is_file() for p in (away / "images").rglob("*"))
                   if away.exists() else False, 30, "the worker's first image")
        worker.send_signal(signal.SIGSTOP)
        err = finish(master, 90)
        assert master.returncode == 0, err
        worker.send_signal(signal.SIGCONT)
        said = finish(worker, 30)
        assert worker.returncode == 0, said
        assert "the crawl ended while this worker was away: leaving" in said, said
    finally:
        for process in (master, worker):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
            stop(process)
    check_complete(out, server.url, site, stores=[out, away])

    late = run_crawler("worker", *broker, "--out", str(tmp_path / "late"), cwd=tmp_path,
                       timeout=60)
    assert late.returncode == 0, late.stderr
    assert "the crawl is over: nothing was left to download" in late.stderr, late.stderr
    assert "away" not in late.stderr


def test_a_redis_that_lost_its_last_writes_gets_them_again(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """A crash of Redis loses up to its last second of writes (appendfsync everysec): the
    pages recorded in it are fetched again, and their links and images must reach Redis
    again, though this master sent them before."""
    server = make_server()
    pages = 14
    body = png(8, 8, 3)
    for n in range(pages):  # a chain: each page shows one image and links the next
        link = f'<a href="/p{n + 1}.html">next</a>' if n + 1 < pages else ""
        html = f'<img src="/i{n}.png">{link}'.encode()
        server.routes[f"/p{n}.html"] = (
            lambda h, html=html: (time.sleep(0.25), h.send_body(200, html, "text/html")))
        server.routes[f"/i{n}.png"] = lambda h: h.send_body(200, body, "image/png")
    redis_at = make_redis_server().start(appendonly=True)
    aof, kept = redis_at.folder / "appendonlydir", tmp_path / "aof-before"
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/p0.html", "--broker", redis_at.url,
                           "--crawl", _crawl_name(), "--out", str(out), "--depth", "50",
                           "--local-workers", "1", cwd=tmp_path)
    try:
        wait_until(lambda: "/p4.html" in server.paths(), 30, "a few pages")
        shutil.copytree(aof, kept)  # what a crash a moment later would leave on disk
        wait_until(lambda: "/p7.html" in server.paths(), 30, "more pages, recorded since")
        redis_at.kill()
        shutil.rmtree(aof)
        shutil.copytree(kept, aof)
        redis_at.start(appendonly=True)
        err = finish(master, 120)
    finally:
        stop(master)
    assert master.returncode == 0, err
    assert {e["url"] for e in manifest_lines(out) if e["status"] == "success"} == {
        f"{server.url}/i{n}.png" for n in range(pages)}
    assert f"/p{pages - 1}.html" in server.paths()


def test_an_image_hosts_crawl_delay_outlives_a_redis_that_lost_it(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """The master tells the board an image host's Crawl-delay once. A Redis restarted
    from files older than that told it no more: the page read again sent its images
    again, and they went to their host unpaced."""
    pages, images = make_server(), make_server()
    paths = [f"/i{n}.png" for n in range(5)]
    serve_routes(images, {"/robots.txt": ("text/plain", b"User-agent: *\nCrawl-delay: 1\n"),
                          **{path: ("image/png", png(8, 8, n)) for n, path in enumerate(paths)}})
    tags = "".join(f'<img src="{images.url}{path}">' for path in paths).encode()
    reached, release = threading.Event(), threading.Event()

    def seed(handler: FixtureHandler) -> None:
        reached.set()
        release.wait(30)  # the first time: until the broker's files are kept
        handler.send_body(200, tags, "text/html")

    pages.routes["/"] = seed
    redis_at = make_redis_server().start(appendonly=True)
    name, kept = _crawl_name(), tmp_path / "aof-before"
    master = start_crawler("master", pages.url + "/", "--broker", redis_at.url, "--crawl",
                           name, "--out", str(tmp_path / "out"), "--local-workers", "1",
                           cwd=tmp_path)
    try:
        assert reached.wait(30), "the seed page was not asked for"
        shutil.copytree(redis_at.folder / "appendonlydir", kept)  # the crawl, its seed leased
        release.set()
        wait_until(lambda: redis_at.client().hexists(f"crawler:{{{name}}}:delay",
                                                     images.url.partition("//")[2]),
                   30, "the image host's Crawl-delay on the board")
        redis_at.restart_from(kept)
        restarted = time.monotonic()
        err = finish(master, 120)
    finally:
        release.set()
        stop(master)
    assert master.returncode == 0, err
    assert {e["url"] for e in manifest_lines(tmp_path / "out")} == {
        images.url + path for path in paths}
    after = sorted(hit.at for hit in images.hits if hit.path in paths and hit.at > restarted)
    assert len(after) >= 3, images.paths()  # the images sent again went once more
    # The first may have been leased by the Redis that was lost, whose pace of the host
    # the restarted one never knew (it went 0.6 s before the next, now and then): the
    # delay is judged from the second on, which the restarted Redis spaced.
    assert_spaced(after[1:], 1.0, "the image host's Crawl-delay was not obeyed after the "
                                  "restart")


def test_connections_made_again_are_counted_and_new_ones_for_more_threads_are_not(
        redis_server: RedisServer) -> None:
    """A connection made again may follow a Redis restart (the master then forgets what it
    sent); one the pool adds because two threads call at once is no such sign."""
    connections = Connections()
    client = connect(BrokerAddress("127.0.0.1", redis_server.port), connections)
    pool = client.connection_pool
    held = [pool.get_connection() for _ in range(3)]  # three threads' worth at once
    assert connections.again == 0
    held[0].disconnect()
    held[0].connect()  # as after a restart: the same connection, made again
    assert connections.again == 1
    for connection in held:
        pool.release(connection)
    client.close()


def test_a_master_whose_crawl_vanished_from_redis_says_so_and_stops(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """FLUSHDB (or a restart with no append-only file) mid-crawl: the master does not
    wait for ever for a crawl that is gone."""
    server = make_server()
    setup_site(server, pages=30, images_per_page=2, page_delay=0.3)
    redis_at = make_redis_server().start()
    master = start_crawler("master", server.url + "/", "--broker", redis_at.url, "--crawl",
                           _crawl_name(), "--out", str(tmp_path / "out"), "--depth", "50",
                           "--page-concurrency", "1", cwd=tmp_path)
    try:
        wait_until(lambda: len(server.paths()) >= 4, 30, "a few pages")
        redis_at.client().flushdb()
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 1, err
    assert "is gone from the broker" in err, err


def test_a_broker_that_evicts_keys_is_warned_of_and_named_when_it_lost_the_crawl(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """A Redis whose maxmemory-policy evicts any key (allkeys-*) drops the crawl's keys
    once full, without a word: the crawl stalled for ever, or was said "deleted, or
    Redis restarted". Its masters and workers (and status) now warn at start, and a crawl
    that left such a Redis is said to have been evicted."""
    server = make_server()
    setup_site(server, pages=30, images_per_page=2, page_delay=0.3)
    redis_at = make_redis_server().start(options=("--maxmemory", "100mb",
                                                  "--maxmemory-policy", "allkeys-lru"))
    name = _crawl_name()
    warning = (f"WARNING: the Redis broker at {redis_at.url} evicts keys when it is full "
               "(maxmemory-policy allkeys-lru)")
    master = start_crawler("master", server.url + "/", "--broker", redis_at.url, "--crawl",
                           name, "--out", str(tmp_path / "out"), "--depth", "50",
                           "--page-concurrency", "1", "--local-workers", "0", cwd=tmp_path)
    try:
        wait_for_output(master, "workers join with")
        shown = run_crawler("status", "--broker", redis_at.url, "--crawl", name, "--json",
                            cwd=tmp_path, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert warning in shown.stderr and "set maxmemory-policy noeviction" in shown.stderr
        # Everything evicted at once, the master held still meanwhile: it must not meet
        # the moment the full Redis refuses its writes.
        master.send_signal(signal.SIGSTOP)
        client = redis_at.client()
        try:
            client.config_set("maxmemory", 1)
            client.get("anything")  # each command evicts what it can first
            assert client.dbsize() == 0
        finally:
            client.config_set("maxmemory", "100mb")
            master.send_signal(signal.SIGCONT)
        err = finish(master, 60)
    finally:
        stop(master)
    assert err.count(warning) == 1, err
    assert master.returncode == 1, err
    said = err.strip().splitlines()[-1]
    assert "is gone from the broker" in said, err  # (found by the master's look or write)
    assert re.search(r"\(Redis has evicted \d+ key\(s\) to make room, by its maxmemory-policy "
                     r"allkeys-lru, the crawl's among them it seems: set it to noeviction\)",
                     said), err

    # A policy that evicts only keys with a TTL leaves the crawl's alone: no warning.
    client.config_set("maxmemory-policy", "volatile-lru")
    again = run_crawler("master", server.url + "/", "--broker", redis_at.url, "--crawl",
                        _crawl_name(), "--out", str(tmp_path / "out2"), "--depth", "0",
                        "--local-workers", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "evicts keys" not in again.stderr, again.stderr


def test_a_broker_set_to_evict_keys_mid_crawl_is_warned_of_once(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """The eviction policy was looked at when the crawl started only: a Redis set to evict
    any key (CONFIG SET maxmemory-policy allkeys-lru) mid-crawl could drop the crawl's
    keys, unwarned. The master looks again as it goes, and warns once."""
    server = make_server()
    site = setup_site(server, pages=50, images_per_page=1, page_delay=0.3)
    redis_at = make_redis_server().start(options=("--maxmemory", "100mb",
                                                  "--maxmemory-policy", "noeviction"))
    warning = (f"WARNING: the Redis broker at {redis_at.url} evicts keys when it is full "
               "(maxmemory-policy allkeys-lru)")
    out = tmp_path / "out"
    master = start_crawler("master", server.url + "/", "--broker", redis_at.url, "--crawl",
                           _crawl_name(), "--out", str(out), "--depth", "100",
                           "--page-concurrency", "1", "--local-workers", "1", cwd=tmp_path)
    try:
        wait_for_output(master, "workers join with")
        redis_at.client().config_set("maxmemory-policy", "allkeys-lru")
        wait_for_output(master, re.escape(warning), timeout=60)
        err = finish(master, 120)
    finally:
        stop(master)
    assert master.returncode == 0, err
    assert err.count(warning) == 1, err
    check_complete(out, server.url, site)


def test_a_broker_that_cannot_save_stops_the_crawl_with_what_to_fix_and_loses_nothing(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """A Redis whose snapshot failed (its folder gone, its disk full) refuses every write
    with MISCONF: the crawl stopped with Redis's paragraph of advice. The master now says
    in one line what to fix, and the crawl, started again once Redis saves, finishes."""
    server = make_server()
    site = setup_site(server, pages=30, images_per_page=2, page_delay=0.1)
    folder = tmp_path / "redis-files"
    folder.mkdir()
    redis_at = make_redis_server().start(options=("--save", "3600 1", "--dir", str(folder)))
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--broker", redis_at.url, "--crawl", _crawl_name(),
            "--out", str(out), "--depth", "50", "--page-concurrency", "1",
            "--local-workers", "1")
    master = start_crawler(*args, cwd=tmp_path)
    client = redis_at.client()
    try:
        wait_until(lambda: len(server.paths()) >= 6, 30, "a few pages")
        shutil.rmtree(folder)  # where Redis saves: its next snapshot fails
        client.bgsave()
        wait_until(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err",
                   30, "a failed snapshot")
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 6, err
    said = err.strip().splitlines()[-1]
    assert said == (f"crawler: error: the Redis broker at 127.0.0.1:{redis_at.port} refuses "
                    "writes: it cannot save to its disk (MISCONF); its log says why, often "
                    "a full disk or a folder it may not write to: fix that, then start this "
                    "command again: the crawl carries on from what Redis holds"), err

    # Mended as an operator may while the disk is seen to: Redis takes writes again.
    # (Its folder cannot come back: it works in the one removed.)
    client.config_set("stop-writes-on-bgsave-error", "no")
    again = run_crawler(*args, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    check_complete(out, server.url, site)


def test_a_redis_that_fills_up_mid_crawl_stops_the_master_in_a_line_and_loses_nothing(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """A Redis that reaches its maxmemory (noeviction) mid-crawl refuses the master's
    next write, or its local worker's (bigger: the master's may still fit): the master
    stops, in the line that says what to fix, with status 6 (it does not wait for room,
    nor for a worker from elsewhere), and the crawl started again once Redis has room
    finishes with every image."""
    server = make_server()
    site = setup_site(server, pages=60, images_per_page=3, page_delay=0.05)
    redis_at = make_redis_server().start(options=("--maxmemory-policy", "noeviction"))
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--broker", redis_at.url, "--crawl", _crawl_name(),
            "--out", str(out), "--depth", "100", "--page-concurrency", "1",
            "--local-workers", "1")
    master = start_crawler(*args, cwd=tmp_path)
    client = redis_at.client()
    try:
        wait_until(lambda: len(server.paths()) >= 10, 30, "a few pages and images")
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 20_000)  # room for a few more writes
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 6, err
    said_redis_is_full(err, redis_at.port)

    client.config_set("maxmemory", 0)
    again = run_crawler(*args, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    check_complete(out, server.url, site)


def _script_calls(client: redis.Redis) -> int:
    """How many script calls (the crawl's every exchange) Redis has run."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


def said_redis_is_full(output: str, port: int) -> str:
    """Check that ``output`` ends, with no traceback, on the one line that says the Redis
    at ``port`` is full and that the crawl carries on from it; return that line."""
    assert "Traceback" not in output, output
    line = output.strip().splitlines()[-1]
    assert line.startswith(
        f"crawler: error: the Redis broker at 127.0.0.1:{port} is full"), output
    assert line.endswith("the crawl carries on from what Redis holds"), output
    return line


def test_a_worker_whose_report_a_full_redis_refuses_stops_in_a_line_and_loses_nothing(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """A worker holds an image whose download waits on the server; Redis is made full
    (maxmemory 1, noeviction: every write refused), then the image is let through. The
    worker's report of it is refused: the worker stops with the line that says Redis is
    full, status 6. The image is neither dropped nor settled: Redis still holds its URL
    unfinished, and the same crawl, once Redis has room, ends with it stored once."""
    server = make_server()
    site = setup_site(server, pages=1, images_per_page=4)
    held = sorted(site.images)[0]
    begun, release = gate_image(server, held, site.files[held][1])
    redis_at = make_redis_server().start(options=("--maxmemory-policy", "noeviction"))
    name = _crawl_name()
    broker = ("--broker", redis_at.url, "--crawl", name)
    out, store = tmp_path / "out", tmp_path / "store"
    master_args = ("master", server.url + "/", *broker, "--out", str(out))
    worker_args = ("worker", *broker, "--out", str(store), "--threads", "4")
    master = start_crawler(*master_args, cwd=tmp_path)
    worker = start_crawler(*worker_args, cwd=tmp_path)
    client = redis_at.client()
    try:
        assert begun.wait(30), "the held image was never asked for"
        # The other images are recorded: the worker now holds only the held one.
        wait_until(lambda: len(manifest_lines(out)) == len(site.images) - 1, 30,
                   "the other images' results")
        master.send_signal(signal.SIGTERM)  # the crawl stays open on the broker
        finish(master, 60)
        assert master.returncode == 130
        # Right after one of the worker's exchanges (its only calls now), Redis is made
        # full, and the image let through: the worker's next call is most often its
        # report of the image, ready in milliseconds.
        calls = _script_calls(client)
        wait_until(lambda: _script_calls(client) > calls, 10, "an exchange of the worker")
        client.config_set("maxmemory", 1)  # every write refused from now on
        release.set()
        said = finish(worker, 60)
    finally:
        release.set()
        for process in (master, worker):
            stop(process)
    assert worker.returncode == 6, said
    line = said_redis_is_full(said, redis_at.port)
    assert "raise its maxmemory" in line, line
    # Whole if stored: refused is the report of the image (stored just before), or, on a
    # slow machine, the worker's ask for more (every 0.1 s while it holds one) that came
    # first, the image then handed back unstored. Either way nothing is lost (below).
    stored = list((store / "images").rglob(held.rsplit("/", 1)[-1]))
    assert len(stored) <= 1 and all(f.read_bytes() == site.files[held][1] for f in stored)
    # Nothing settled the held image, and nothing dropped it: it is still the crawl's
    # one unfinished URL (leased to the stopped worker, or queued again).
    shown = run_crawler("status", "--broker", redis_at.url, "--crawl", name, "--json",
                        cwd=tmp_path, timeout=60)
    assert shown.returncode == 0, shown.stderr
    board = json.loads(shown.stdout)["board"]
    assert board["done"] == len(site.images) - 1, board
    assert board["queued"] + board["in_flight"] + board["delayed"] == 1, board

    client.config_set("maxmemory", 0)
    master = start_crawler(*master_args, cwd=tmp_path)
    worker = start_crawler(*worker_args, cwd=tmp_path)
    try:
        err = finish(master, 120)
        assert master.returncode == 0, err
        assert worker.wait(timeout=30) == 0
    finally:
        for process in (master, worker):
            stop(process)
    check_complete(out, server.url, site, stores=[store])
    lines = (out / "results.log").read_text().splitlines()
    assert lines.count(f"{server.url}{held}--->success") == 1, lines


def _hold_the_seed(server: FixtureServer) -> tuple[threading.Event, threading.Event]:
    """Hold the seed page's answer until released; returns (asked for, release)."""
    asked, release = threading.Event(), threading.Event()
    inner = server.routes["/"]

    def route(handler: FixtureHandler) -> None:
        asked.set()
        release.wait(60)
        inner(handler)

    server.routes["/"] = route
    return asked, release


def test_a_full_redis_met_by_a_page_is_the_crawls_one_line_not_the_pages_failure(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """Telling the board a host's Crawl-delay is a write made in the page's visit. A full
    Redis refused it, and the page "failed unexpectedly", with a traceback in the log (a
    lost broker, back soon after, left the page failed for good). The refusal is the
    crawl's: it ends in the line that says what to fix, and the page goes back to it."""
    server = make_server()
    site = setup_site(server, pages=3, images_per_page=2)
    server.routes["/robots.txt"] = lambda handler: handler.send_body(
        200, b"User-agent: *\nCrawl-delay: 0.1\n", "text/plain")
    asked, release = _hold_the_seed(server)
    redis_at = make_redis_server().start(options=("--maxmemory-policy", "noeviction"))
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--broker", redis_at.url, "--crawl", _crawl_name(),
            "--out", str(out), "--local-workers", "1")
    master = start_crawler(*args, cwd=tmp_path)
    client = redis_at.client()
    try:
        assert asked.wait(30), "the seed page was never asked for"
        client.config_set("maxmemory", 1)  # every write refused from now on
        release.set()
        err = finish(master, 60)
    finally:
        release.set()
        stop(master)
    assert master.returncode == 6, err
    assert "Traceback" not in err and "failed unexpectedly" not in err, err
    said = err.strip().splitlines()[-1]
    assert said.startswith(f"crawler: error: the Redis broker at 127.0.0.1:{redis_at.port} "
                           "is full"), err

    client.config_set("maxmemory", 0)
    again = run_crawler(*args, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    check_complete(out, server.url, site)


def test_a_page_set_aside_after_passing_failures_is_tried_by_a_rerun(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """As on the embedded queue: a seed that failed for a passing reason (503, every try of
    the first run) is tried again when the crawl is started again."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=3)
    fail_first(server, {"/"}, 503, times=3, retry_after="0")  # download.max_attempts
    (tmp_path / "settings.toml").write_text(FAST_RETRIES)
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--broker", redis_server.url, "--crawl", _crawl_name(),
            "--out", str(out), "--local-workers", "1")
    first = run_crawler(*args, cwd=tmp_path)
    assert first.returncode == 5, first.stderr  # no seed page could be read
    again = run_crawler(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    check_complete(out, server.url, site)
    assert (out / "pages.jsonl").read_text() == "", "the seed is crawled now: not listed"


def test_images_still_failing_for_a_passing_reason_are_tried_again_by_a_rerun(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """As on the embedded queue: images that failed for a passing reason (503, every try
    of the first run) are queued again with fresh tries when the crawl is started
    again, and the files keep one line per image, the last result."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=4)
    down = set(sorted(site.images)[:3])
    gone = sorted(site.images)[3]
    fail_first(server, down, 503, times=3, retry_after="0")  # download.max_attempts
    server.routes[gone] = lambda h: h.send_body(404, b"gone", "text/plain")
    (tmp_path / "settings.toml").write_text(FAST_RETRIES)
    out = tmp_path / "out"
    name = _crawl_name()
    args = ("master", server.url + "/", "--broker", redis_server.url, "--crawl", name,
            "--out", str(out), "--local-workers", "1")
    first = run_crawler(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "  to try again    3 image(s) failed for a passing reason" in first.stderr
    assert json.loads((out / "summary.json").read_text())["images_to_retry"] == 3
    # The last word of a master of this host that was killed moments ago (its process
    # gone) does not stop a restart from retrying; one at work does.
    client = redis_server.client()
    dead = subprocess.Popen(["true"])
    dead.wait()
    for pid in (os.getpid(), dead.pid):
        seconds, micros = client.time()
        client.hset(f"crawler:{{{name}}}:masters", "other", json.dumps(
            {"host": socket.gethostname(), "pid": pid, "at": seconds + micros / 1e6 - 3,
             "ended": False, "progress": {}, "pages_read": 0}))
        if pid == os.getpid():
            joined = run_crawler(*args, cwd=tmp_path)
            assert joined.returncode == 0, joined.stderr
            assert "not tried again by a master that joins others at work (1)" in joined.stderr
            assert all(server.paths().count(path) == 3 for path in down)
    client.close()
    again = run_crawler(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "3 image(s) that failed for a passing reason" in again.stderr, again.stderr
    assert all(server.paths().count(path) == 4 for path in down)
    assert server.paths().count(gone) == 1, "a permanent failure is not tried again"
    entries = manifest_lines(out)
    assert len(entries) == len(site.images) == len({e["url"] for e in entries})
    assert [e["url"] for e in entries if e["status"] != "success"] == [server.url + gone]
    assert json.loads((out / "summary.json").read_text())["images_to_retry"] == 0
    results = (out / "results.log").read_text().splitlines()
    assert len(results) == len(site.images) and sum("failure" in r for r in results) == 1
    third = run_crawler(*args, cwd=tmp_path)
    assert third.returncode == 0 and "tried again" not in third.stderr, third.stderr
    assert all(server.paths().count(path) == 4 for path in down)


def test_images_whose_name_a_stray_file_took_are_stored_by_a_rerun_on_the_broker(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """As on the embedded queue: a file where the host's image folder belongs fails its
    images for good in that run, and once moved away, the same command stores them."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=2)
    out = tmp_path / "out"
    host_folder = out / "images" / "http" / server.url.removeprefix("http://").replace(":", "_")
    host_folder.parent.mkdir(parents=True)
    host_folder.write_text("not the crawler's")
    args = ("master", server.url + "/", "--broker", redis_server.url, "--crawl", _crawl_name(),
            "--out", str(out), "--local-workers", "1")
    first = run_crawler(*args, cwd=tmp_path)
    assert first.returncode == EXIT_NOTHING_STORED, first.stderr
    assert all(e["status"] == "failure" and e["attempts"] == 1 for e in manifest_lines(out))

    host_folder.unlink()
    again = run_crawler(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (f"{len(site.images)} image(s) whose name in the image folder was taken"
            in again.stderr), again.stderr
    entries = manifest_lines(out)
    assert sorted(e["url"] for e in entries if e["status"] == "success") == sorted(
        server.url + path for path in site.images)
    assert len(entries) == len(site.images), "one line per image"


def test_a_rerun_on_the_broker_fetches_again_the_images_deleted_from_its_folder(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """As on the embedded queue: an image its local worker stored into the master's folder
    and deleted since is fetched again by the same command run again (it listed the
    image as stored, the file gone, and fetched nothing); each file keeps one line per
    image, the new one, and the other images are not fetched again."""
    server = make_server()
    site = setup_site(server, pages=2, images_per_page=3)
    out, name = tmp_path / "out", _crawl_name()
    args = ("master", server.url + "/", "--broker", redis_server.url, "--crawl", name,
            "--out", str(out), "--local-workers", "1")
    first = run_crawler(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    gone = sorted(manifest_lines(out), key=lambda entry: str(entry["url"]))[0]
    (out / gone["path"]).unlink()
    lines = sorted((out / "results.log").read_text().splitlines())
    asked = len(server.paths())

    again = run_crawler(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 image(s) recorded as stored are missing from" in again.stderr, again.stderr
    check_complete(out, server.url, site)  # the file back, one line per image
    images = set(site.images)
    assert [path for path in server.paths()[asked:] if path in images] == [
        gone["url"].removeprefix(server.url)], "only the deleted one again"
    assert sorted((out / "results.log").read_text().splitlines()) == lines
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["stored_this_run"] == 1, summary
    assert summary["stored_elsewhere"] == {}, summary

    # A master that joins another at work (here: one of this host whose process runs)
    # does not look: the other's files list the image.
    (out / gone["path"]).unlink()
    seconds, micros = redis_server.client().time()
    redis_server.client().hset(f"crawler:{{{name}}}:masters", "other", json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "at": seconds + micros / 1e6 - 3,
         "ended": False, "progress": {}, "pages_read": 0}))
    joined = run_crawler(*args, cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr
    assert "missing from" not in joined.stderr, joined.stderr
    assert not (out / gone["path"]).exists()


def test_a_rerun_on_the_broker_leaves_alone_what_a_worker_stored_in_its_own_folder(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """A worker of the master's host with its own --out stores there, out of the master's
    folder: a file deleted there is not the master's to look for, and a rerun fetches
    nothing again (the worker's hello on the broker says its folder)."""
    server = make_server()
    site = setup_site(server, pages=1, images_per_page=3)
    slow_start(server)  # the worker is there before the crawl ends
    out, own = tmp_path / "out", tmp_path / "own"
    broker = ("--broker", redis_server.url, "--crawl", _crawl_name())
    master = start_crawler("master", server.url + "/", *broker, "--out", str(out),
                           cwd=tmp_path)
    try:
        worker = run_crawler("worker", *broker, "--out", str(own), cwd=tmp_path)
        assert worker.returncode == 0, worker.stderr
        err = finish(master, 90)
    finally:
        stop(master)
    assert master.returncode == 0, err
    check_complete(out, server.url, site, stores=[own])
    first = manifest_lines(out)
    # As on the embedded queue, the summary says where they are.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stored_elsewhere"] == {socket.gethostname(): len(first)}, summary
    (own / first[0]["path"]).unlink()
    asked = len(server.paths())

    again = run_crawler("master", server.url + "/", *broker, "--out", str(out),
                        "--local-workers", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "missing from" not in again.stderr, again.stderr
    assert [path for path in server.paths()[asked:] if path in site.images] == []
    # The same lines; a rerun writes them in the journal's order, not the order they came.
    assert sorted(manifest_lines(out), key=by_url) == sorted(first, key=by_url)
    assert not (out / "images").exists()


def test_images_refused_for_an_unreadable_robots_txt_are_judged_again_by_a_rerun(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """As on the embedded queue: a rerun reads their host's robots.txt again, leaves them
    refused while it still cannot be read, and downloads them once it can."""
    site, images = make_server(), make_server()
    picture = build_site(pages=1, images_per_page=1, min_kb=1, max_kb=2)
    [path] = picture.images
    serve_routes(images, picture.files)
    fail_first(images, {"/robots.txt"}, 503, times=2)
    serve_routes(site, {"/": ("text/html",
                              f'<html><body><img src="{images.url}{path}"></body></html>'
                              .encode())})
    out = tmp_path / "out"
    flags = ("--out", str(out), "--local-workers", "1", "--broker", redis_server.url,
             "--crawl", _crawl_name())
    for run in range(3):
        done = run_crawler("master", site.url + "/", *flags, cwd=tmp_path)
        assert done.returncode == (EXIT_NOTHING_STORED if run < 2 else 0), done.stderr
        [entry] = manifest_lines(out)
        if run < 2:
            assert entry["reason"] == "robots.txt unreachable (HTTP 503)", (run, entry)
            assert entry["transient"], entry  # the next run tries it again
            assert "to try again    1 image(s)" in done.stderr, done.stderr
    assert entry["status"] == "success", (entry, done.stderr)
    assert (out / entry["path"]).read_bytes() == picture.files[path][1]
    assert images.paths().count(path) == 1
    assert images.paths().count("/robots.txt") == 3


def test_a_folder_keeps_the_results_of_its_own_crawl_in_either_mode(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """A broker crawl does not take a folder of an embedded crawl (or of another broker
    crawl), nor an embedded crawl one of a broker crawl: each writes the folder's result
    files anew from its own record, and the other's would be gone."""
    server = make_server()
    site = setup_site(server, pages=1, images_per_page=3)
    seed, embedded, shared = server.url + "/", tmp_path / "embedded", tmp_path / "shared"
    on_broker = ("--broker", redis_server.url, "--local-workers", "1")
    first = run_crawler("master", seed, "--out", str(embedded), "--bind", "127.0.0.1:0",
                        "--local-workers", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    results = (embedded / "results.log").read_text()
    refused = run_crawler("master", seed, *on_broker, "--crawl", _crawl_name(), "--out",
                          str(embedded), cwd=tmp_path)
    assert refused.returncode == 2 and "holds a crawl of the embedded queue" in refused.stderr
    assert (embedded / "results.log").read_text() == results

    name = _crawl_name()
    done = run_crawler("master", seed, *on_broker, "--crawl", name, "--out", str(shared),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = run_crawler("master", seed, *on_broker, "--crawl", name, "--out", str(shared),
                        cwd=tmp_path)  # the same crawl carries on in its folder
    assert again.returncode == 0, again.stderr
    other = run_crawler("master", seed, *on_broker, "--crawl", _crawl_name(), "--out",
                        str(shared), cwd=tmp_path)
    assert other.returncode == 2 and f"holds the results of crawl '{name}'" in other.stderr
    # The same name on another database, with other seeds: another crawl all the same,
    # whose results would have replaced this one's.
    results = (shared / "results.log").read_text()
    elsewhere = run_crawler("master", server.url + "/other", "--broker",
                            redis_server.url.rsplit("/", 1)[0] + "/1", "--local-workers", "1",
                            "--crawl", name, "--out", str(shared), cwd=tmp_path)
    assert elsewhere.returncode == 2, elsewhere.stderr
    assert f"holds the results of another crawl named '{name}'" in elsewhere.stderr
    # Another folder alone was the advice, which the broker refused next on the same one.
    assert "give this one another --crawl NAME and another --out" in elsewhere.stderr
    assert (shared / "results.log").read_text() == results
    # Refused by the broker (another crawl's seeds under that name), a master leaves no mark.
    taken = run_crawler("master", server.url + "/other", *on_broker, "--crawl", name, "--out",
                        str(tmp_path / "new"), cwd=tmp_path)
    assert taken.returncode == 2 and "with other seeds or scope" in taken.stderr
    assert not (tmp_path / "new").exists(), "the folder it made (its lock file in it) stayed"
    alone = run_crawler("master", seed, "--out", str(shared), "--bind", "127.0.0.1:0",
                        "--local-workers", "1", cwd=tmp_path)
    assert alone.returncode == 2 and "--fresh to start afresh" in alone.stderr
    check_complete(shared, server.url, site)
    fresh = run_crawler("master", seed, "--out", str(shared), "--bind", "127.0.0.1:0",
                        "--local-workers", "1", "--fresh", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr


def test_a_crawls_limits_are_its_first_masters(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """Started again with a larger --depth, a crawl on the broker keeps its first master's
    (a master that joins takes all its settings), and says so."""
    server = make_server()
    site = setup_site(server, pages=3, images_per_page=2, page_delay=0.2)
    args = ("master", server.url + "/", "--broker", redis_server.url, "--crawl", _crawl_name(),
            "--out", str(tmp_path / "out"), "--local-workers", "1")
    first = start_crawler(*args, "--depth", "0", cwd=tmp_path)
    try:
        wait_until(lambda: "/" in server.paths(), 30, "the seed")
        first.send_signal(signal.SIGTERM)  # stopped early: the crawl stays open
        finish(first, 30)
    finally:
        stop(first)
    again = run_crawler(*args, "--depth", "5", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "the crawl's limits are its first master's: depth 0" in again.stderr
    assert not set(server.paths()) & (set(site.pages) - {"/"}), "read deeper than depth 0"


def test_a_broker_named_by_the_environment_is_not_blamed_on_a_flag(
        redis_server: RedisServer, site: FixtureServer, tmp_path: Path) -> None:
    """$CRAWLER_BROKER set for every command of a shell: a dry run (which records
    nothing) goes on without it, where it was refused with "drop --broker", a flag never
    given; a --resume refused names the variable."""
    env = {**os.environ, "CRAWLER_BROKER": redis_server.url}
    dry = run_crawler("master", site.url + "/", "--dry-run", cwd=tmp_path, env=env,
                      timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert f"{site.url}/" in dry.stdout and "--broker" not in dry.stderr
    resumed = run_crawler("master", site.url + "/", "--resume", cwd=tmp_path, env=env,
                          timeout=60)
    assert resumed.returncode == 2, resumed.stderr
    assert ("on a broker ($CRAWLER_BROKER names one)" in resumed.stderr
            and "or, for a crawl of the output folder, unset $CRAWLER_BROKER"
            in resumed.stderr), resumed.stderr
    unread = run_crawler("master", site.url + "/", "--dry-run", cwd=tmp_path, timeout=60,
                         env={**env, "CRAWLER_BROKER": "redis://:x@@host:notaport/0"})
    assert unread.returncode == 0, unread.stderr  # not used, so not read either
    ca = run_crawler("master", site.url + "/", "--dry-run", "--broker-ca", "ca.pem",
                     cwd=tmp_path, env=env, timeout=60)
    assert ca.returncode == 2 and ("--broker-ca is for a broker, and a dry run uses none: "
                                   "drop it") in ca.stderr, ca.stderr
    named = run_crawler("master", site.url + "/", "--dry-run", "--crawl", "x", cwd=tmp_path,
                        env=env, timeout=60)
    assert named.returncode == 2 and "drop --crawl and --join" in named.stderr, named.stderr
    # --broker '' leaves the variable unread (it was refused as a bad URL): the crawl of
    # the output folder, on the master's own queue.
    own = run_crawler("master", site.url + "/", "--broker", "", "--out", "own", "--bind",
                      "127.0.0.1:0", "--local-workers", "1", cwd=tmp_path, timeout=60,
                      env={**env, "CRAWLER_BROKER": "redis://:x@@host:notaport/0"})
    assert own.returncode == 0, own.stderr
    assert (tmp_path / "own" / "crawl.sqlite").is_file() and manifest_lines(tmp_path / "own")


def test_broker_mistakes_get_one_clear_line(
        redis_server: RedisServer, make_redis_server: Callable[[], RedisServer],
        tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/"
    cases: list[tuple[tuple[str, ...], int, str, dict[str, str]]] = [
        (("master", url, "--broker", "redis://user:secret@127.0.0.1:6379/0"), 2,
         "anyone on this machine can read it in ps", {}),
        (("master", "--join", "x"), 2, "--join needs the broker", {}),
        (("master", url, "--broker", redis_server.url, "--join", "x"), 2,
         "give no URL", {}),
        (("master", url, "--broker", "http://127.0.0.1:1/"), 2, "expected redis://", {}),
        (("master", url, "--broker", redis_server.url, "--crawl", "no spaces"), 2,
         "crawl name", {}),
        (("master", url, "--broker", redis_server.url, "--dry-run"), 2, "drop --broker", {}),
        (("worker", "--broker", redis_server.url, "--crawl", "x", "127.0.0.1:5"), 2,
         "not both", {}),
        (("worker",), 2, "no master", {}),
        (("master", url, "--crawl", "x"), 2, "--crawl is for a broker", {}),
        (("status", "--broker", "redis://127.0.0.1:1/0"), 1, "cannot reach the broker", {}),
        # TLS to a plain redis-server: it waits for a command, and the handshake times out.
        (("status", "--broker", redis_server.url.replace("redis://", "rediss://")), 1,
         "rediss:// speaks TLS: is that port a TLS one?", {}),
        (("status", "--broker", "redis://127.0.0.1:1/\u00b2"), 2, "the database is a number",
         {}),
        (("status", "--broker", "redis://user:secret@[::1/0"), 2,
         "the broker URL cannot be read", {}),  # was a traceback
        # urlsplit's own message quotes the netloc, password and all
        (("status", "--broker", "redis://user:secret\uff03pw@h:6379/0"), 2,
         "the broker URL cannot be read", {}),
    ]
    for args, code, message, env in cases:
        extra = ("--json",) if args[0] == "status" else ("--out", str(tmp_path / "out"))
        done = run_crawler(*args, *extra, cwd=tmp_path, env={**os.environ, **env}, timeout=60)
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "secret" not in done.stderr
        assert ".;" not in done.stderr and ".)" not in done.stderr, done.stderr  # redis-py's stops

    # Several crawls and no --crawl: the user's to choose, a usage error.
    several = make_redis_server()
    several.start()
    several.client().sadd(REGISTRY, "docs", "photos")
    done = run_crawler("status", "--broker", several.url, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"crawler: error: the broker at {several.url} has several "
                                   "crawls (docs, photos): name one with --crawl")

    # A password in $CRAWLER_BROKER is fine, but never shown in a message.
    done = run_crawler("worker", "--out", str(tmp_path / "w"), cwd=tmp_path,
                       env={**os.environ, "CRAWLER_BROKER": "redis://:hunter2@127.0.0.1:99999/0"})
    assert done.returncode == 2 and "bad port" in done.stderr, done.stderr
    assert "hunter2" not in done.stderr and ":***@" in done.stderr
    assert "error: $CRAWLER_BROKER: broker " in done.stderr  # where the mistake is
    done = run_crawler("status", cwd=tmp_path,
                       env={**os.environ, "CRAWLER_BROKER": "redis://:hunter2@[::1/0"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("crawler: error: $CRAWLER_BROKER: the broker URL cannot be "
                                   "read (a bracket or a character out of place): expected "
                                   "redis://HOST:PORT/DB or rediss://HOST:PORT/DB"), done.stderr

    # A Redis that refuses to write: one line saying so, no traceback.
    refusing = make_redis_server()
    refusing.start()
    refusing.client().config_set("min-replicas-to-write", 1)
    done = run_crawler("master", url, "--broker", refusing.url, "--out", str(tmp_path / "r"),
                       cwd=tmp_path)
    assert done.returncode == 6, done.stderr
    assert done.stderr.strip().endswith(
        "refuses writes: fewer of its replicas are in touch than its min-replicas-to-write "
        "asks for; bring them back (or lower min-replicas-to-write), then start this command "
        "again: the crawl carries on from what Redis holds"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr

    guarded = make_redis_server()
    guarded.start()
    guarded.client().config_set("requirepass", "right-one")
    done = run_crawler("master", url, "--broker", guarded.url, "--out", str(tmp_path / "o"),
                       cwd=tmp_path, env={**os.environ, "CRAWLER_BROKER_PASSWORD": "wrong"})
    assert done.returncode == 1 and "refused our login" in done.stderr, done.stderr
    assert "wrong" not in done.stderr and ".)" not in done.stderr, done.stderr
    no_password = {k: v for k, v in os.environ.items() if k != "CRAWLER_BROKER_PASSWORD"}
    for args in (("status", "--broker", guarded.url, "--json"),
                 ("master", url, "--broker", guarded.url, "--out", str(tmp_path / "p"))):
        done = run_crawler(*args, cwd=tmp_path, env=no_password, timeout=60)
        assert done.returncode == 1 and "wants a password" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # Set, but empty (an export of an unset variable): it asked to set what was set.
    done = run_crawler("status", "--broker", guarded.url, cwd=tmp_path,
                       env={**no_password, "CRAWLER_BROKER_PASSWORD": ""}, timeout=60)
    assert done.stderr.strip().endswith("--broker-password-file ($CRAWLER_BROKER_PASSWORD is "
                                        "set, but empty)"), done.stderr


def _own_address() -> str | None:
    """An IPv4 address of this host other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # (no packet is sent: the route is looked up)
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_broker_set_up_wrong_is_one_line_that_names_the_fix(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """A Redis that refuses the crawler for a reason of its own set-up. An ACL user kept
    from the crawl's keys was a traceback for a worker, crawler status and a joining
    master; the rest were Redis's words alone, which did not say what to change."""
    server = make_server()
    broker = make_redis_server().start()
    name, _, _ = _a_finished_crawl(server, broker, tmp_path)
    runs = iter(range(1000))

    def refused(url: str, *commands: str, login: str | None = None) -> list[str]:
        """The line of error each of ``commands`` ended with, for the crawl on ``url``."""
        env = {k: v for k, v in os.environ.items() if k != "CRAWLER_BROKER_PASSWORD"}
        if login is not None:  # the ACL user's password
            env["CRAWLER_BROKER_PASSWORD"] = login
        out = str(tmp_path / f"out{next(runs)}")
        argv = {"master": ("master", server.url + "/", "--crawl", name, "--out", out),
                "join": ("master", "--join", name, "--out", out),
                "worker": ("worker", "--crawl", name, "--out", out, "--connect-wait", "3"),
                "status": ("status", "--crawl", name, "--json")}
        said = []
        for command in commands:
            done = run_crawler(*argv[command], "--broker", url, cwd=tmp_path, env=env,
                               timeout=60)
            assert done.returncode == 6, (command, done.stderr)
            assert "Traceback" not in done.stderr, (command, done.stderr)
            *_, line = done.stderr.strip().splitlines()
            assert line.startswith("crawler: error: "), (command, done.stderr)
            said.append(line)
        return said

    client = broker.client()
    client.acl_setuser("nokeys", enabled=True, passwords=["+pw"], keys=["other:*"],
                       commands=["+@all"])
    client.acl_setuser("noscripts", enabled=True, passwords=["+pw"], keys=["*"],
                       commands=["+@all", "-@scripting"])
    for user, commands in (("nokeys", ("worker", "status", "join", "master")),
                           ("noscripts", ("worker", "status", "master"))):
        for line in refused(f"redis://{user}@127.0.0.1:{broker.port}/0", *commands,
                            login="pw"):
            assert f"refused user {user!r} a command" in line, line
            assert "its ACL must let that user run the crawler's commands" in line, line
            assert "~crawler:{NAME}:*" in line, line

    replica = make_redis_server().start(options=("--replicaof", "127.0.0.1",
                                                 str(broker.port)))
    wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up",
               30, "the replica in sync")
    for line in refused(replica.url, "worker", "master"):
        assert line.endswith(f"is a read-only replica of 127.0.0.1:{broker.port}, which "
                             "takes no writes: give --broker its primary's address"), line
    # One that takes writes loses them at its next full sync: the crawl runs, warned.
    replica.client().config_set("replica-read-only", "no")
    done = run_crawler("master", server.url + "/", "--broker", replica.url, "--crawl",
                       _crawl_name(), "--depth", "0", "--local-workers", "1", "--out",
                       str(tmp_path / "on-replica"), cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (f"WARNING: the Redis broker at {replica.url} is a replica of 127.0.0.1:"
            f"{broker.port} that takes writes (replica-read-only no): what the crawl writes "
            "there never reaches its primary") in done.stderr, done.stderr

    client.config_set("maxmemory", 1)  # every write refused
    try:
        for line in refused(broker.url, "worker", "master", "join"):
            assert f"the Redis broker at 127.0.0.1:{broker.port} is full" in line, line
            assert "raise its maxmemory" in line, line
            assert "the crawl carries on from what Redis holds" in line, line
        # Reading is no write: crawler status shows the crawl on a full Redis (it asked
        # for the counts in a transaction, which a full Redis refuses whole).
        shown = run_crawler("status", "--broker", broker.url, "--crawl", name, "--json",
                            cwd=tmp_path, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["closed"]
    finally:
        client.config_set("maxmemory", 0)

    renamed = make_redis_server().start(options=("--rename-command", "EVALSHA", ""))
    [line] = refused(renamed.url, "master")
    assert "does not know a command the crawler uses (unknown command 'EVALSHA')" in line
    assert "renamed away by rename-command" in line, line
    assert "with args" not in line, line

    own = _own_address()
    if own is not None:  # protected mode turns away clients of other hosts only
        guarded = make_redis_server().start(options=("--bind", f"127.0.0.1 {own}"))
        [line] = refused(f"redis://{own}:{guarded.port}/0", "status")
        assert "takes clients from its own host only: it runs in protected mode" in line
        assert len(line) < 400, line  # not Redis's whole page of advice


def test_a_broker_address_that_is_no_redis_is_told_in_one_line(
        site: FixtureServer, tmp_path: Path) -> None:
    """An HTTP server's port given as the broker: its answer is no Redis reply."""
    url = "redis://" + site.url.removeprefix("http://") + "/0"
    for args in (("status", "--broker", url, "--json"),
                 ("worker", "--broker", url, "--out", str(tmp_path / "w")),
                 ("master", site.url + "/", "--broker", url, "--out", str(tmp_path / "m"))):
        done = run_crawler(*args, cwd=tmp_path, timeout=60)
        assert done.returncode == 1, (args, done.stderr)
        assert "does not speak Redis's protocol" in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_another_programs_key_under_the_crawlers_names_is_told_in_one_line(
        site: FixtureServer, redis_server: RedisServer, tmp_path: Path) -> None:
    """A database where another program keeps a plain string at crawler:crawls (or at
    a crawl's record): Redis's WRONGTYPE alone said neither which key nor what to do."""
    db = 9  # the session's server; the crawls of other tests are on database 0
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    client = redis_server.client()
    client.select(db)  # (one connection: the client's pool holds it)
    name = _crawl_name()
    try:
        for key in (REGISTRY, keys_prefix(name) + "crawl"):
            client.flushdb()
            client.set(key, "another program's value")
            for args in (("status", "--broker", url, "--crawl", name),
                         ("master", site.url + "/", "--broker", url, "--crawl", name,
                          "--out", str(tmp_path / "m"), "--depth", "0")):
                done = run_crawler(*args, cwd=tmp_path, timeout=60)
                assert done.returncode == 1, (key, args, done.stderr)
                *_, line = done.stderr.strip().splitlines()
                assert f"holds, in database {db}, a key named as the crawler's own" in line, (
                    key, args, done.stderr)
                assert "give the crawler a database of its own" in line, line
            assert client.get(key) == b"another program's value"  # left alone
    finally:
        client.flushdb()
        client.close()


def test_a_port_that_answers_every_command_with_ok_is_told_in_one_line(
        tmp_path: Path) -> None:
    """The protocol's framing, but no Redis: "+OK" to HELLO, where a map belongs, was a
    traceback from inside redis-py's handshake."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        stop = threading.Event()

        def answer_ok() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(5)
                    with contextlib.suppress(OSError):
                        while conn.recv(4096):
                            conn.sendall(b"+OK\r\n")

        thread = threading.Thread(target=answer_ok, daemon=True)
        thread.start()
        url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        try:
            done = run_crawler("status", "--broker", url, "--json", cwd=tmp_path, timeout=60)
        finally:
            stop.set()
            thread.join(10)
    assert done.returncode == 1, done.stderr
    assert "does not answer as Redis does" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_port_that_takes_connections_and_never_answers_is_told_in_seconds(
        tmp_path: Path) -> None:
    """Not Redis, or a Redis that hangs: the login and the first PING each wait at most the
    connect deadline, once (with the client's own deadlines and retry it took 40 s)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nothing ever answers
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()
        done = run_crawler("status", "--broker", url, "--json", cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "cannot reach the broker" in done.stderr, done.stderr
    assert time.monotonic() - started < 15


def test_a_port_that_trickles_its_answer_is_given_up_at_the_first_checks_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read had a deadline, the check none in all: a port answering our first
    command with a long reply, a byte now and then, held a master, a worker or
    ``crawler status`` for as long as it went on."""
    monkeypatch.setattr(broker, "CHECK_DEADLINE", 1.0)
    done = threading.Event()

    def trickle(conn: socket.socket) -> None:
        answer = b"$100000\r\n" + b"x" * 100000
        with conn:
            with contextlib.suppress(OSError):
                conn.recv(4096)  # our first command
            for at in range(len(answer)):
                if done.wait(0.2):
                    return
                with contextlib.suppress(OSError):
                    conn.send(answer[at:at + 1])

    port, done = accept_each(trickle)
    failed = raised_by_the_deadline(
        lambda: connect(BrokerAddress("127.0.0.1", port)).close(), 4, done)
    assert isinstance(failed, BrokerUnreachable), failed
    assert str(failed) == (
        f"the broker at redis://127.0.0.1:{port}/0 took the connection and did not answer "
        "our first command within 1 s: is redis-server running there, and is the address "
        "right?")


def _a_finished_crawl(server: FixtureServer, redis_server: RedisServer,
                     tmp_path: Path) -> tuple[str, tuple[str, ...], str]:
    """A small crawl done on the broker: its name, the flags naming it, its record's key."""
    setup_site(server, pages=1, images_per_page=2)
    name = _crawl_name()
    args = ("--broker", redis_server.url, "--crawl", name)
    done = run_crawler("master", server.url + "/", *args, "--local-workers", "1",
                       "--out", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    return name, args, f"crawler:{{{name}}}:crawl"


def test_a_crawl_another_version_started_is_refused_by_masters_and_workers(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """Versions that keep a crawl's state otherwise never share a crawl: one could not see
    what another leased. A crawl whose record has another format (here: none, as before
    formats were recorded) is refused by a master run again, a joining master and a
    worker, in one line each, and nothing of it is touched."""
    server = make_server()
    name, args, record = _a_finished_crawl(server, redis_server, tmp_path)
    client = redis_server.client()
    assert json.loads(client.hget(record, "format")) == 2
    client.hdel(record, "format")
    before = {key: client.dump(key) for key in client.keys(f"crawler:{{{name}}}:*")}
    for command in (("master", server.url + "/", *args, "--out", str(tmp_path / "b")),
                    ("master", "--join", name, "--broker", redis_server.url,
                     "--out", str(tmp_path / "c")),
                    ("worker", *args, "--out", str(tmp_path / "w"), "--connect-wait", "5")):
        refused = run_crawler(*command, cwd=tmp_path, timeout=60)
        assert refused.returncode == 1, (command, refused.stderr)
        assert refused.stderr.strip().splitlines() == [
            f"crawler: error: the crawl {name!r} on the broker keeps its state in format 1, "
            f"and this crawler ({__version__}) in format 2: it was started by another version, and "
            "every master and worker of a crawl must run the same one; go on with the "
            "version that started it, or start a new crawl (another --crawl NAME)"], command
    assert {key: client.dump(key) for key in client.keys(f"crawler:{{{name}}}:*")} == before
    client.hset(record, "format", "2.5")  # not this crawler's either
    refused = run_crawler("status", *args, "--json", cwd=tmp_path, timeout=60)
    assert refused.returncode == 1 and "keeps its state in format 2.5," in refused.stderr


def test_a_stop_while_the_broker_is_frozen_does_not_wait_on_it_call_after_call(
        make_server: Callable[[], FixtureServer],
        make_redis_server: Callable[[], RedisServer], tmp_path: Path) -> None:
    """A broker that takes connections and answers nothing (stopped, a paused VM, a cut
    link): SIGTERM took the master a minute, each call after the stop waiting its whole
    deadline in turn. Now only the call under way when the broker froze does."""
    server = make_server()
    setup_site(server, pages=20, images_per_page=20, page_delay=0.3)
    broker = make_redis_server().start()
    master = start_crawler("master", server.url + "/", "--broker", broker.url, "--crawl",
                           _crawl_name(), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert broker.process is not None
    try:
        wait_for_output(master, "workers join with")
        time.sleep(1.0)  # pages in flight
        broker.process.send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        master.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        err = finish(master, 90)
        took = time.monotonic() - stopped
    finally:
        broker.process.send_signal(signal.SIGCONT)
    assert master.returncode == 130, err
    assert "the broker is out of reach" in err, err
    assert "waiting up to" not in err.partition("stopping after the pages in flight")[2], err
    assert took < 45, f"{took:.0f} s from SIGTERM to the end"


def test_a_worker_whose_crawl_is_deleted_from_the_broker_says_so_and_leaves(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """FLUSHDB (or a restart without the append-only file) under a running crawl: the
    master said so and left, but its worker idled on for ever, writing the crawl's
    keys anew into the empty database."""
    server = make_server()
    setup_site(server, pages=6, images_per_page=10, image_delay=0.2)
    name = _crawl_name()
    args = ("--broker", redis_server.url, "--crawl", name)
    master = start_crawler("master", server.url + "/", *args, "--out", str(tmp_path / "m"),
                           cwd=tmp_path)
    worker = start_crawler("worker", *args, "--out", str(tmp_path / "w"), "--connect-wait",
                           "60", cwd=tmp_path)
    try:
        client = redis_server.client()
        wait_until(lambda: (tmp_path / "w" / "images").exists(), 30, "a first image stored")
        # All of the crawl's keys at once, as FLUSHDB does: deleted one by one, a worker
        # could write a key between the listing and the deletes, the record still there.
        client.eval("for _, key in ipairs(redis.call('KEYS', ARGV[1])) do "
                    "redis.call('DEL', key) end", 0, f"crawler:{{{name}}}:*")
        said = finish(worker, 30)
        assert worker.returncode == 1, said
        assert "the crawl is gone from the broker" in said, said
        assert "Traceback" not in said
        finish(master, 30)
        assert master.returncode == 1
        # (The master may write a key or two before it sees the record gone: the
        # workers' own keys are the ones a worker wrote anew.)
        prefix = f"crawler:{{{name}}}:"
        made = [key for pattern in ("w:*", "contact", "gone", "asking")
                for key in client.keys(prefix + pattern)]
        assert made == [], "the crawl's keys were made anew"
    finally:
        for process in (master, worker):
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_a_damaged_crawl_record_is_one_line_for_every_command(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """Anyone with the broker's login can write the record: fields of the wrong shape
    were tracebacks (AttributeError, TypeError, KeyError 'lease_timeout', ValueError)."""
    server = make_server()
    name, args, record = _a_finished_crawl(server, redis_server, tmp_path)
    client = redis_server.client()
    kept = {field: client.hget(record, field) for field in ("info", "started", "settings")}
    commands = {
        "status": ("status", *args, "--json"),
        "worker": ("worker", *args, "--out", str(tmp_path / "w"), "--connect-wait", "3"),
        "join": ("master", "--join", name, "--broker", redis_server.url, "--out",
                 str(tmp_path / "j")),
    }
    for field, value, command in (("info", "[]", "status"), ("info", "[]", "worker"),
                                  ("info", "{}", "worker"), ("started", '"junk"', "status"),
                                  ("settings", "[]", "join"),
                                  ("settings", '{"crawl": 5}', "join")):
        client.hset(record, field, value)
        try:
            refused = run_crawler(*commands[command], cwd=tmp_path, timeout=60)
        finally:
            client.hset(record, field, kept[field])
        said = refused.stderr.strip().splitlines()
        assert refused.returncode in (1, 2), (field, value, command, refused.stderr)
        assert len(said) == 1 and "Traceback" not in refused.stderr, (field, value, said)
        assert "damaged" in said[0] or "sent no" in said[0] or "sent a" in said[0], said


def test_a_master_joins_from_another_folder_with_the_crawls_request_settings(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """The crawl's record kept its first master's paths (cookies.txt, relative, as given),
    and a master that joined from another folder or host read them there: it stopped
    with "http.cookies: cannot read cookies.txt", a file its user never named. It takes
    the contents its workers get, and its own --cookies is said unused."""
    server = make_server()
    seen: list[tuple[str, str]] = []  # (path, Cookie header)
    pages = [f"/p{n}.html" for n in range(4)]
    links = "".join(f"<a href='{page}'>{page}</a>" for page in pages)

    def answer(handler: FixtureHandler) -> None:
        path = handler.path
        seen.append((path, handler.headers.get("Cookie", "")))
        if path.endswith(".png"):
            handler.send_body(200, png(8, 8, 3), "image/png")
            return
        time.sleep(0.2)
        body = (links if path == "/" else f"<img src='{path[:-5]}.png'>")
        handler.send_body(200, f"<html><body>{body}</body></html>".encode(), "text/html")

    for path in ["/", *pages, *(page[:-5] + ".png" for page in pages)]:
        server.routes[path] = answer
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "cookies.txt").write_text(
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tthe-crawls\n")
    (tmp_path / "b" / "mine.txt").write_text("127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tmine\n")
    name = _crawl_name()
    first = start_crawler("master", server.url + "/", "--broker", redis_server.url, "--crawl",
                          name, "--cookies", "cookies.txt", "--page-concurrency", "1",
                          "--ignore-robots", "--out", "out", "--bind", "127.0.0.1:0",
                          "--authkey-file", "nowhere", cwd=tmp_path / "a")
    try:
        wait_until(lambda: len(seen) >= 2, 30, "the first pages")
        first.send_signal(signal.SIGTERM)  # the crawl stays open: the joining master ends it
        started = finish(first, 30)
    finally:
        stop(first)
    # Taken in silence, though a master on a broker serves no queue.
    assert ("--authkey-file, --bind: a master on a broker serves no queue (its workers take "
            "their images from Redis); not used") in started, started
    joined = run_crawler("master", "--join", name, "--broker", redis_server.url,
                         "--cookies", "mine.txt", "--depth", "2", "--local-workers", "1",
                         "--bind", "127.0.0.1:0", "--out", "out", cwd=tmp_path / "b",
                         timeout=90)
    assert joined.returncode == 0, joined.stderr
    # --bind was said to be the crawl's, which has none.
    assert ("--cookies, --depth: a master that joins a crawl takes these settings from "
            "the crawl; not used") in joined.stderr
    assert ("--bind: a master on a broker serves no queue (its workers take their images "
            "from Redis); not used") in joined.stderr
    assert "cannot read" not in joined.stderr, joined.stderr
    assert set(page for page, _ in seen) == {"/", *pages, *(p[:-5] + ".png" for p in pages)}
    assert {cookie for _, cookie in seen} == {"session=the-crawls"}, seen
    assert [e["status"] for e in manifest_lines(tmp_path / "b" / "out")] == ["success"] * 4
    # Its own client certificate is its own, as a worker's: one it cannot read is said so.
    missing = run_crawler("master", "--join", name, "--broker", redis_server.url,
                          "--client-cert", "none.pem", "--out", "out2", cwd=tmp_path / "b",
                          timeout=60)
    assert missing.returncode == 2, missing.stderr
    assert "--client-cert (http.client_cert): cannot read none.pem" in missing.stderr


def test_a_crawl_name_holds_one_crawl(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    server = make_server()
    setup_site(server, pages=1, images_per_page=2)
    name = _crawl_name()
    args = ("--broker", redis_server.url, "--crawl", name, "--local-workers", "1")
    done = run_crawler("master", server.url + "/", *args, "--out", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    other = run_crawler("master", server.url + "/other/", *args, "--out", str(tmp_path / "b"))
    assert other.returncode == 2, other.stderr
    assert f"--join {name}" in other.stderr
    # The same crawl again: it is complete, so it ends at once with the same results.
    again = run_crawler("master", server.url + "/", *args, "--out", str(tmp_path / "c"))
    assert again.returncode == 0, again.stderr
    assert _comparable(tmp_path / "c") == _comparable(tmp_path / "a")
    # Its counts are the crawl's; its rate is its own, and it stored nothing.
    first, rerun = (json.loads((tmp_path / out / "summary.json").read_text())
                    for out in ("a", "c"))
    assert rerun["succeeded"] == first["succeeded"] == first["stored_this_run"] > 0
    assert rerun["stored_this_run"] == 0 and rerun["images_per_second"] == 0


def test_the_broker_password_never_shows_in_ps(
        make_server: Callable[[], FixtureServer], make_redis_server: Callable[[], RedisServer],
        tmp_path: Path) -> None:
    server = make_server()
    site = setup_site(server, pages=1, images_per_page=5)
    guarded = make_redis_server()
    guarded.start()
    guarded.client().config_set("requirepass", "s3cret-pass")
    (tmp_path / "pw").write_text("s3cret-pass\n")
    master = start_crawler("master", server.url + "/", "--broker", guarded.url,
                           "--broker-password-file", str(tmp_path / "pw"), "--out",
                           str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
    try:
        wait_for_output(master, "workers join with")
        listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                                 check=True, timeout=10).stdout
        assert "s3cret-pass" not in listing
        err = finish(master, 60)
        assert master.returncode == 0, err
    finally:
        stop(master)
    check_complete(tmp_path / "out", server.url, site)


@contextlib.contextmanager
def _tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking TLS only, on a free loopback port: its port and CA."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed")
    ca = make_ca(tmp_path / "ca")
    port = free_port()
    redis_tls = subprocess.Popen(
        [str(redis_server_path()), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(ca.server_cert), "--tls-key-file", str(ca.server_key),
         "--tls-ca-cert-file", str(ca.ca_cert), "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _listening(port), 10, "redis-server to listen for TLS")
        yield port, ca.ca_cert
    finally:
        redis_tls.kill()
        redis_tls.wait(timeout=10)


def test_a_crawl_on_a_tls_broker_checks_its_certificate(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    site = setup_site(server, pages=1, images_per_page=5)
    with _tls_redis(tmp_path) as (port, ca_cert):
        broker = f"rediss://127.0.0.1:{port}/0"
        untrusted = run_crawler("master", server.url + "/", "--broker", broker, "--out",
                                str(tmp_path / "no"), cwd=tmp_path)  # the system's CAs only
        assert untrusted.returncode == 1, untrusted.stderr
        assert "certificate verify failed" in untrusted.stderr
        # It said "is that port a TLS one? ... is redis-server running there".
        assert "give the CA that signs it with --broker-ca FILE" in untrusted.stderr
        done = run_crawler("master", server.url + "/", "--broker", broker, "--broker-ca",
                           str(ca_cert), "--out", str(tmp_path / "out"),
                           "--local-workers", "1", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"--broker-ca {ca_cert}" in done.stderr
    check_complete(tmp_path / "out", server.url, site)


def test_a_plain_broker_url_for_a_tls_port_says_to_write_rediss(tmp_path: Path) -> None:
    """The TLS port resets a plain connection: the line said "connection reset by peer;
    is redis-server running there?", of a redis-server that was running."""
    with _tls_redis(tmp_path) as (port, _ca_cert):
        for command in (["status"], ["worker", "--connect-wait", "0"],
                        ["master", "http://127.0.0.1:9/", "--out", str(tmp_path / "out")]):
            said = run_crawler(*command, "--broker", f"redis://127.0.0.1:{port}/0",
                               cwd=tmp_path, timeout=60)
            assert said.returncode == 1, said.stderr
            assert "for a TLS broker, write rediss://" in said.stderr, said.stderr
            assert len(said.stderr.strip().splitlines()) == 1, said.stderr


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _ctrl_c_once_results(site: str, redis_server: RedisServer, name: str, tmp_path: Path,
                         results: int) -> tuple[str, ...]:
    """Crawl ``site`` on the broker (one page at a time, one local worker) and stop the
    master with Ctrl-C once ``results`` images have a result; the master's arguments."""
    args = ("master", site + "/", "--broker", redis_server.url, "--crawl", name,
            "--out", str(tmp_path / "out"), "--local-workers", "1", "--page-concurrency", "1")
    master = start_crawler(*args, cwd=tmp_path)
    try:
        wait_until(lambda: len(manifest_lines(tmp_path / "out")) >= results, 30,
                   "the first results")
        master.send_signal(signal.SIGINT)
        err = finish(master, 60)
        assert master.returncode == 130, err
    finally:
        stop(master)
    return args


def test_a_master_stopped_with_ctrl_c_leaves_the_crawl_open_and_a_rerun_ends_it(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    server = make_server()
    site = setup_site(server, pages=6, images_per_page=10, page_delay=0.2, image_delay=0.05)
    name = _crawl_name()
    args = _ctrl_c_once_results(server.url, redis_server, name, tmp_path, 5)
    status = run_crawler("status", "--broker", redis_server.url, "--crawl", name, "--json")
    assert json.loads(status.stdout)["closed"] is False  # the crawl waits for a master
    text = run_crawler("status", "--broker", redis_server.url, "--crawl", name).stdout
    assert "(stopped; a master with --join NAME carries it on, " in text, text
    again = run_crawler(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    check_complete(tmp_path / "out", server.url, site)


def test_a_master_stopped_early_gives_back_the_pages_it_had_in_hand_at_once(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """A stop cancels the pages a master leased and had not begun: they stayed leased to
    it until their leases lapsed (10 s), and its rerun (or another master) waited for
    them, a crawl of 2 s taking 10."""
    server = make_server()
    setup_site(server, pages=30, images_per_page=1, page_delay=0.3)
    name = _crawl_name()
    _ctrl_c_once_results(server.url, redis_server, name, tmp_path, 2)
    client = redis_server.client()
    assert client.zcard(keys_prefix(name) + "pages:leased") == 0
    status = json.loads(run_crawler("status", "--broker", redis_server.url, "--crawl", name,
                                    "--json").stdout)
    assert status["progress"]["pages_queued"] > 0, status  # (pages were left to read)


def test_a_ctrl_c_to_the_process_group_lets_the_brokers_local_workers_hand_back(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """Ctrl-C on a terminal reaches the master and its local workers at once; the master
    then stops them with SIGTERM too: no second stop of the user's, which would quit a
    worker without handing its images back (its log would say "interrupted")."""
    server = make_server()
    site = setup_site(server, pages=3, images_per_page=20, image_delay=0.3)
    out = tmp_path / "out"
    args = ("master", server.url + "/", "--broker", redis_server.url, "--crawl",
            _crawl_name(), "--out", str(out), "--local-workers", "2", "--threads", "2")
    stop_the_group_then_rerun(args, out, tmp_path, signal.SIGINT)
    check_complete(out, server.url, site)


def test_a_page_budget_on_the_broker_reads_that_many_pages(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """The master leases as many pages as it has room for in one call: never more than
    the crawl's --max-pages, though it has eight page slots."""
    server = make_server()
    site = setup_site(server, pages=12, images_per_page=1)
    out = tmp_path / "out"
    done = run_crawler("master", server.url + "/", "--broker", redis_server.url, "--crawl",
                       _crawl_name(), "--out", str(out), "--local-workers", "1",
                       "--max-pages", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    read = [path for path in server.paths() if path in site.pages]
    assert len(read) == len(set(read)) == 3, read
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pages"] == 3
    # The pages left, as the embedded queue counts them: the ones leased are not left.
    embedded = run_crawler("master", server.url + "/", "--out", str(tmp_path / "embedded"),
                           "--local-workers", "1", "--max-pages", "3", "--bind", "127.0.0.1:0",
                           cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr
    left = json.loads((tmp_path / "embedded" / "summary.json").read_text())["pages_left"]
    assert summary["pages_left"] == left > 0
    # A rerun does not extend a broker crawl's limits: the summary says what does.
    assert (f"  not visited     {left} pages found: the page budget (--max-pages) was spent; "
            "a new crawl (another --crawl NAME and --out) with a larger one starts over"
            ) in done.stderr
