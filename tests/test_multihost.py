"""A crawl across hosts: site, master and two workers each in a network namespace of its own.

The hosts talk over a private test LAN (tests/netns.py) as separate machines
would: the master binds its queue to its own LAN address, the workers reach it
there and fetch the images from the site's address, and each worker stores
into its own output folder. Needs root and iproute2; skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SITE, crawler_command, wait_for_queue_address
from .netns import Host, Lan, NetnsUnavailable
from .test_end_to_end import EXPECTED_FAILED, EXPECTED_OK, check_results

pytestmark = pytest.mark.netns

SITE_PORT = 8000  # free for sure: the site's namespace is new
QUEUE_PORT = 24601
# A worker that first reaches the master after the crawl is over waits for it in vain
# (the master is gone) and fails. So the workers start first and wait for the master,
# and images are handed out this many seconds apart: the crawl of the site's 14 images
# lasts longer than a waiting worker's longest pause between two tries (2 s).
HOST_DELAY = "0.25"
# A line of http.server's request log on stderr: client, request line, status.
REQUEST_LOG = re.compile(r'^(\S+) - - \[[^\]]*\] "GET (\S+) HTTP/[\d.]+" (\d{3})')


@pytest.fixture
def network() -> Iterator[Lan]:
    """A fresh LAN, deleted afterwards (processes killed, namespaces, veths, bridge gone)."""
    try:
        lan = Lan()
    except NetnsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    try:
        yield lan
    finally:
        lan.close()
    assert not lan.namespaces(), f"namespaces left behind: {lan.namespaces()}"


def start_site(lan: Lan, host: Host, logs: Path) -> subprocess.Popen[str]:
    """``python -m http.server`` for tests/site on the host's address; waits until it listens."""
    out = (logs / "site.stdout").open("w")
    err = (logs / "site.stderr").open("w")
    with out, err:
        server = lan.start(host, [sys.executable, "-u", "-m", "http.server", "--bind",
                                  host.address, str(SITE_PORT), "--directory", str(SITE)],
                           cwd=logs, env=dict(os.environ), stdout=out, stderr=err)
    deadline = time.monotonic() + 20
    while "Serving HTTP on" not in (logs / "site.stdout").read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the site server did not start:\n"
                                 + (logs / "site.stderr").read_text())
        time.sleep(0.05)
    return server


def site_requests(log: Path) -> list[tuple[str, str, int]]:
    """(client address, path, status) of every request in the site server's log."""
    found = []
    for line in log.read_text().splitlines():
        match = REQUEST_LOG.match(line)
        if match:
            found.append((match.group(1), match.group(2), int(match.group(3))))
    return found


def test_master_and_workers_on_separate_hosts(network: Lan, tmp_path: Path) -> None:
    """Site 10.213.7.1, master .2, workers .3 and .4: the crawl of test_end_to_end, across hosts."""
    site = network.add_host("site", 1)
    master_host = network.add_host("master", 2)
    workers_hosts = [network.add_host("worker1", 3), network.add_host("worker2", 4)]
    base = f"http://{site.address}:{SITE_PORT}"
    env = dict(os.environ, CRAWLER_AUTHKEY=secrets.token_hex(16))
    master_out = tmp_path / "master"
    worker_outs = [tmp_path / host.role for host in workers_hosts]

    start_site(network, site, tmp_path)
    started = time.monotonic()
    address = f"{master_host.address}:{QUEUE_PORT}"
    workers = []
    for host, out in zip(workers_hosts, worker_outs, strict=True):
        with (tmp_path / f"{host.role}.log").open("w") as log:
            workers.append(network.start(host, crawler_command(
                "worker", address, "--out", str(out), "--threads", "3", "--connect-wait", "30"),
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT))
    master = network.start(master_host, crawler_command(
        "master", base + "/", "--bind", address, "--out", str(master_out),
        "--host-delay", HOST_DELAY), cwd=tmp_path, env=env)
    assert wait_for_queue_address(master) == address
    _, master_err = master.communicate(timeout=120)
    assert master.returncode == 0, master_err
    assert "crawl completed" in master_err, master_err
    for host, worker in zip(workers_hosts, workers, strict=True):
        log_text = (tmp_path / f"{host.role}.log").read_text
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{host.role} did not end after the crawl:\n{log_text()}")
        assert worker.returncode == 0, log_text()
    print(f"crawl across namespaces took {time.monotonic() - started:.1f} s")

    check_results(master_out, base, worker_outs)

    # Who connected to the site: pages (and robots.txt) from the master's address,
    # images from the workers' addresses only, each image once.
    requests = site_requests(tmp_path / "site.stderr")
    worker_addresses = {host.address for host in workers_hosts}
    image_paths = EXPECTED_OK | set(EXPECTED_FAILED)
    images = [(client, path, status) for client, path, status in requests
              if path in image_paths]
    pages = [(client, path) for client, path, _ in requests if path not in image_paths]
    assert sorted(path for _, path, _ in images) == sorted(image_paths), "each image fetched once"
    assert {client for client, _, _ in images} <= worker_addresses, images
    assert all(status == (404 if path in EXPECTED_FAILED else 200) for _, path, status in images)
    assert {client for client, _ in pages} == {master_host.address}, pages
    assert {"/", "/robots.txt"} <= {path for _, path in pages}
    assert "/private/secret.html" not in {path for _, path, _ in requests}


def test_a_worker_whose_link_was_cut_is_back_at_work_soon_after_it_returns(
        network: Lan, tmp_path: Path) -> None:
    """A link down for 32 s leaves the worker's pending call on a TCP connection whose
    retransmissions have backed off to half a minute; the worker must not wait for
    them: its calls have a deadline of twice the master's worker_silence, and a new
    connection gets through as soon as the link is back."""
    site = network.add_host("site", 1)
    master_host = network.add_host("master", 2)
    worker_host = network.add_host("worker", 3)
    base = f"http://{site.address}:{SITE_PORT}"
    env = dict(os.environ, CRAWLER_AUTHKEY=secrets.token_hex(16))
    start_site(network, site, tmp_path)
    address = f"{master_host.address}:{QUEUE_PORT}"
    with (tmp_path / "worker.log").open("w") as log:
        worker = network.start(worker_host, crawler_command(
            "worker", address, "--out", str(tmp_path / "worker"), "--threads", "2",
            "--connect-wait", "120"), cwd=tmp_path, env=env, stdout=log,
            stderr=subprocess.STDOUT)
    # One image a second: the crawl of the site's 14 images outlasts the cut.
    master = network.start(master_host, crawler_command(
        "master", base + "/", "--bind", address, "--out", str(tmp_path / "master"),
        "--host-delay", "1.0"), cwd=tmp_path, env=env)
    assert wait_for_queue_address(master) == address

    def images_fetched() -> int:
        return sum(1 for client, path, _ in site_requests(tmp_path / "site.stderr")
                   if client == worker_host.address)

    deadline = time.monotonic() + 60
    while images_fetched() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert images_fetched() >= 2, "the worker never started"
    network.set_link(worker_host, up=False)
    time.sleep(32)
    before = images_fetched()
    network.set_link(worker_host, up=True)
    back = time.monotonic()
    while images_fetched() == before and time.monotonic() - back < 60:
        time.sleep(0.1)
    waited = time.monotonic() - back
    assert images_fetched() > before, "the worker never came back"
    assert waited < 15, f"the worker took {waited:.1f} s to work again after its link returned"
    _, master_err = master.communicate(timeout=120)
    assert master.returncode == 0, master_err
    assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()


# The master's queue alone, its keepalive shortened from two minutes to three seconds.
_QUEUE_ONLY = """
import os, sys, time
from crawler.board import manager
from crawler.board.memory import BoardPolicy, TaskBoard

manager.KEEPALIVE_IDLE, manager.KEEPALIVE_INTERVAL, manager.KEEPALIVE_PROBES = 1, 1, 2
manager.QueueServer(TaskBoard(BoardPolicy()), (sys.argv[1], int(sys.argv[2])),
                    os.environb[b"CRAWLER_AUTHKEY"], lambda full=False: {}).start()
print("serving", flush=True)
time.sleep(60)
"""
# A worker that makes one call, then idles between calls as a tutorial worker may.
_IDLE_WORKER = """
import os, sys, time
from crawler.board.manager import MasterClient

board = MasterClient((sys.argv[1], int(sys.argv[2])), os.environb[b"CRAWLER_AUTHKEY"]).connect()
assert board.heartbeat("w") is True
print("connected", flush=True)
time.sleep(60)
"""


def _said_within(process: subprocess.Popen[str], seconds: float) -> str:
    """The next line ``process`` prints, or '' if none comes within ``seconds``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    return process.stdout.readline().strip() if ready else ""


def _connections_held(pid: int) -> int:
    """Sockets the process holds besides its listening one."""
    sockets = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        # A descriptor listed may be closed before it is read: the very connections this
        # counts going away (FileNotFoundError ended a run once).
        with contextlib.suppress(FileNotFoundError):
            sockets += str(fd.readlink()).startswith("socket:")
    return sockets - 1


def test_the_master_lets_go_of_a_worker_whose_host_vanished(network: Lan,
                                                            tmp_path: Path) -> None:
    """A worker host gone without a word (cable cut: no FIN, no RST) held its thread and
    socket in the master's queue server for ever, idle between calls as it was: nothing
    was ever sent on that connection again. TCP keepalive notices it is gone."""
    master_host = network.add_host("master", 2)
    worker_host = network.add_host("worker", 3)
    env = dict(os.environ, CRAWLER_AUTHKEY=secrets.token_hex(16))
    where = [master_host.address, str(QUEUE_PORT)]
    master = network.start(master_host, [sys.executable, "-c", _QUEUE_ONLY, *where],
                           cwd=tmp_path, env=env)
    assert _said_within(master, 20) == "serving"
    worker = network.start(worker_host, [sys.executable, "-c", _IDLE_WORKER, *where],
                           cwd=tmp_path, env=env)
    assert _said_within(worker, 20) == "connected"
    deadline = time.monotonic() + 5  # the one-off connections of connect() close
    while _connections_held(master.pid) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _connections_held(master.pid) == 1, "the worker's connection is served"
    network.set_link(worker_host, up=False)
    cut = time.monotonic()
    while _connections_held(master.pid) and time.monotonic() - cut < 15:
        time.sleep(0.1)
    assert _connections_held(master.pid) == 0, "the vanished worker's connection is held"
    assert time.monotonic() - cut < 10  # 1 s idle, 2 probes 1 s apart: about 3 s
