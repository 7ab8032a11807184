"""The network queue over real TCP: the classic worker, our client, refused keys, reconnects."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from hashlib import sha256
from multiprocessing import connection
from pathlib import Path

import pytest

from crawler.board import manager
from crawler.board.manager import MasterClient, QueueServer
from crawler.board.memory import BoardPolicy, TaskBoard
from crawler.errors import AuthenticationFailed, MasterFailed
from crawler.model.outcome import Attempt

from .accepting import accept_each
from .conftest import (
    LOOPBACK_HELLO,
    SITE,
    FixtureHandler,
    FixtureServer,
    finish,
    manifest_lines,
    raised_by_the_deadline,
    run_crawler,
    start_crawler,
    stop,
    wait_for_queue_address,
)

CLASSIC = Path(__file__).parent / "classic_worker.py"


def serve(board: TaskBoard, key: bytes) -> QueueServer:
    return QueueServer(board, ("127.0.0.1", 0), key, lambda full=False: {"full": full}).start()


def stored(url: str) -> dict:
    """A well-formed success report of ``url``."""
    return Attempt(url=url, ok=True, bytes=1, path="images/http/h/x.png",
                   sha256="ab" * 32).to_wire()


def settle_all(board: TaskBoard, count: int, timeout: float = 30) -> list:
    settled: list = []
    deadline = time.monotonic() + timeout
    while len(settled) < count and time.monotonic() < deadline:
        settled += board.drain()
        time.sleep(0.02)
    return settled


def test_classic_tutorial_worker_runs_unchanged(site: FixtureServer) -> None:
    key = secrets.token_hex(16)
    board = TaskBoard(BoardPolicy())
    server = serve(board, key.encode())
    urls = [f"{site.url}/images/red.png", f"{site.url}/images/blue.png",
            f"{site.url}/images/nothing-here.png"]
    for url in urls:
        board.put(url, "h", None)
    worker = subprocess.run([sys.executable, str(CLASSIC), *map(str, server.address)],
                            env={**os.environ, "CRAWLER_AUTHKEY": key}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert worker.returncode == 0, worker.stderr
    assert "classic worker done" in worker.stdout
    settled = {s.attempt.url: s for s in settle_all(board, 3)}
    assert set(settled) == set(urls)
    assert settled[urls[0]].attempt.ok and settled[urls[0]].worker == "classic"
    assert settled[urls[1]].attempt.ok
    assert not settled[urls[2]].attempt.ok
    assert "404" in settled[urls[2]].attempt.reason


# A tutorial worker's first lines (address from argv, key from the environment): "m" is
# its connected manager.
TUTORIAL_CONNECTS = textwrap.dedent("""
    import os, sys
    from multiprocessing.managers import BaseManager
    class QueueManager(BaseManager):
        pass
    QueueManager.register("get_task_queue")
    QueueManager.register("get_result_queue")
    m = QueueManager(address=(sys.argv[1], int(sys.argv[2])),
                     authkey=os.environ["CRAWLER_AUTHKEY"].encode())
    m.connect()
""")


def test_a_tutorial_worker_without_our_package_is_told_why_its_result_is_refused() -> None:
    """A malformed result reached a tutorial worker's host, where this package is not
    installed, as "No module named 'crawler'": the exception was one of ours."""
    key = secrets.token_hex(16)
    board = TaskBoard(BoardPolicy())
    server = serve(board, key.encode())
    board.put("http://h/a.png", "h", None)
    put_malformed = TUTORIAL_CONNECTS + textwrap.dedent("""
        result = m.get_result_queue()
        for item in (b"http://h/a.png--->success", {"url": "http://h/a.png", "ok": True},
                     "http://h/a.png success"):
            try:
                result.put(item)
            except Exception as e:
                print(type(e).__name__, e)
    """)
    # -I -S: no site-packages, so no crawler package, as on a host with the script alone
    worker = subprocess.run([sys.executable, "-I", "-S", "-c", put_malformed,
                             *map(str, server.address)],
                            env={**os.environ, "CRAWLER_AUTHKEY": key}, capture_output=True,
                            text=True, timeout=30, check=False)
    assert worker.returncode == 0, worker.stderr
    told = worker.stdout.splitlines()
    assert len(told) == 3 and all(line.startswith("ValueError ") for line in told), told
    assert "a result is a str, 'URL--->success' or" in told[0] and "not bytes" in told[0]
    assert board.counts()["refused"] == 3 and board.unfinished() == 1


WAIT_IN_GET = TUTORIAL_CONNECTS + textwrap.dedent("""
    import queue
    task = m.get_task_queue()
    print("waiting", flush=True)
    try:
        print(task.get(timeout=float(sys.argv[3])), flush=True)
    except queue.Empty:
        print("nothing", flush=True)
""")


def test_a_url_is_not_handed_to_a_tutorial_worker_that_died_waiting_in_get() -> None:
    """Its get() went on waiting in the master, took the next URL for no one, and held
    it for lease_timeout, while a live tutorial worker's get() came back empty."""
    key = secrets.token_hex(16)
    board = TaskBoard(BoardPolicy(lease_timeout=60.0))
    server = serve(board, key.encode())
    env = {**os.environ, "CRAWLER_AUTHKEY": key}

    def waiting_in_get(seconds: int) -> subprocess.Popen[str]:
        worker = subprocess.Popen([sys.executable, "-c", WAIT_IN_GET,
                                   *map(str, server.address), str(seconds)],
                                  env=env, stdout=subprocess.PIPE, text=True)
        assert worker.stdout is not None and worker.stdout.readline() == "waiting\n"
        return worker

    dead = waiting_in_get(30)
    time.sleep(0.3)  # its get() is in the master
    dead.kill()
    dead.wait(timeout=5)
    live = waiting_in_get(4)
    time.sleep(0.3)
    board.put("http://h/a.png", "h", None)
    out, _ = live.communicate(timeout=10)
    assert out == "http://h/a.png\n"
    [row] = board.tutorial_workers()
    assert row["held"] == 1


def test_our_client_leases_in_batches_and_reports() -> None:
    key = secrets.token_bytes(16)
    board = TaskBoard(BoardPolicy(batch_size=50))
    server = serve(board, key)
    urls = [f"http://h/{n}.png" for n in range(120)]
    for url in urls:
        board.put(url, "h", None)
    proxy = MasterClient(server.address, key).connect()
    assert proxy.hello("w1", {"threads": 1}) == {"full": False}
    got: list[str] = []
    for _ in range(10):  # three batches, then none: more would be a board handing out again
        answer = proxy.lease("w1", 100, 0.1)
        if not answer["tasks"]:
            break
        assert len(answer["tasks"]) <= 50
        got += [url for url, _ in answer["tasks"]]
        proxy.report("w1", [stored(u)
                            for u, _ in answer["tasks"]])
    assert sorted(got) == sorted(urls)
    assert len(settle_all(board, 120)) == 120
    board.close()
    assert proxy.lease("w1", 10, 1.0) == {"closed": True, "tasks": []}


def test_one_exchange_releases_reports_and_leases() -> None:
    key = secrets.token_bytes(16)
    board = TaskBoard(BoardPolicy(batch_size=50))
    server = serve(board, key)
    for n in range(4):
        board.put(f"http://h/{n}.png", "h", None)
    proxy = MasterClient(server.address, key).connect()
    first = proxy.exchange("w1", 1, [], [], 2, 0.0)
    assert [url for url, _ in first["tasks"]] == ["http://h/0.png", "http://h/1.png"]
    # 0 finished, 1 handed back: the next ask gets 1 again, then 2.
    second = proxy.exchange("w1", 2, [stored("http://h/0.png")],
                            ["http://h/1.png"], 2, 0.0)
    assert second == {"closed": False, "tasks": [("http://h/1.png", 1), ("http://h/2.png", 1)]}
    [settled] = board.drain()
    assert settled.attempt.url == "http://h/0.png" and settled.worker == "w1"
    # Asking for nothing renews the leases and tells whether the crawl goes on.
    assert proxy.exchange("w1", 3, [], [], 0, 0.0) == {"closed": False, "tasks": []}
    board.close()
    assert proxy.exchange("w1", 4, [], [], 0, 0.0) == {"closed": True, "tasks": []}
    assert proxy.exchange("w1", 5, [], [], 5, 1.0) == {"closed": True, "tasks": []}


def test_wrong_authkey_is_refused_and_the_server_goes_on() -> None:
    key = secrets.token_bytes(16)
    board = TaskBoard(BoardPolicy())
    server = serve(board, key)
    with pytest.raises(AuthenticationFailed, match=r"127\.0\.0\.1:\d+ refused our authkey"):
        MasterClient(server.address, b"not the key").connect()
    deadline = time.monotonic() + 5  # the server counts after the client has its answer
    while server.refused < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.refused == 1
    proxy = MasterClient(server.address, key).connect()
    assert proxy.heartbeat("w") is True


_TUTORIAL_MASTER = """
import os, queue, sys
from multiprocessing.managers import BaseManager

tasks, results = queue.Queue(), queue.Queue()
BaseManager.register("get_task_queue", callable=lambda: tasks)
BaseManager.register("get_result_queue", callable=lambda: results)
manager = BaseManager(address=("127.0.0.1", 0), authkey=os.environb[b"CRAWLER_AUTHKEY"])
server = manager.get_server()
print(server.address[1], flush=True)
server.serve_forever()
"""


def test_a_tutorial_master_is_named_as_one_to_our_worker_and_status(authkey: str) -> None:
    """A tutorial's master with the same key took our handshake and then answered
    get_board with a 30-line traceback of its KeyError."""
    tutorial = subprocess.Popen([sys.executable, "-c", _TUTORIAL_MASTER],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert tutorial.stdout is not None
        address = f"127.0.0.1:{int(tutorial.stdout.readline())}"
        for command in (("worker", address, "--connect-wait", "5"), ("status", address)):
            done = run_crawler(*command, timeout=60)
            assert done.returncode == 1, done.stderr
            assert "Traceback" not in done.stderr and "-----" not in done.stderr
            assert f"{address} took our authkey but is not a crawler master" in done.stderr
            assert "tutorial's own worker script" in done.stderr
    finally:
        tutorial.kill()
        tutorial.wait(timeout=10)


class _FailingBoard(TaskBoard):
    """A board with a fault of the master's own in its exchange."""

    def exchange(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise RuntimeError("the board broke")


def test_a_master_failing_on_a_call_says_why_on_both_sides(
        caplog: pytest.LogCaptureFixture) -> None:
    """The master's own error came back to the worker as itself (a RuntimeError that no
    caller expects), and the master said nothing of it."""
    key = secrets.token_bytes(16)
    server = serve(_FailingBoard(BoardPolicy()), key)
    try:
        proxy = MasterClient(server.address, key).connect()
        assert proxy.heartbeat("w") is True  # the other calls go on
        with caplog.at_level(logging.ERROR, logger="crawler.board.manager"), \
                pytest.raises(MasterFailed, match=r"the master at 127\.0\.0\.1:\d+ failed on "
                              r"our call exchange\(\) \(RuntimeError: the board broke\)"):
            proxy.exchange("w", 1, [], [], 1, 0.0)
        assert "a worker's call exchange() failed on this master" in caplog.text
        assert "RuntimeError: the board broke" in caplog.text  # with its traceback
    finally:
        server.stop()


_MASTER_FAILING_AT_EXCHANGE = """
import os, sys, time
from crawler.board.manager import QueueServer
from crawler.board.memory import BoardPolicy, TaskBoard

class Failing(TaskBoard):
    def exchange(self, *args, **kwargs):
        raise RuntimeError("the board broke")

board = Failing(BoardPolicy())
board.put("http://127.0.0.1:9/a.png", "127.0.0.1:9", None)
""" + LOOPBACK_HELLO + """
server = QueueServer(board, ("127.0.0.1", 0), os.environb[b"CRAWLER_AUTHKEY"],
                     lambda full=False: hello).start()
print("queue on 127.0.0.1:%d" % server.address[1], file=sys.stderr, flush=True)
time.sleep(60)
"""


def test_a_worker_whose_master_fails_on_its_calls_stops_with_one_line(
        tmp_path: Path, authkey: str) -> None:
    """The master's RuntimeError reached the worker as itself: a traceback, and the
    hand-back skipped as if the error were no news of the master."""
    master = subprocess.Popen([sys.executable, "-c", _MASTER_FAILING_AT_EXCHANGE],
                              stderr=subprocess.PIPE, text=True)
    try:
        address = wait_for_queue_address(master)
        done = run_crawler("worker", address, "--out", str(tmp_path / "out"), timeout=60)
    finally:
        stop(master)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"crawler: error: the master at {address} failed on our call exchange() "
        "(RuntimeError: the board broke); its log says more")
    # Its hand-back asked once more, and had nothing to say of what it held.
    assert "could not report" not in done.stderr, done.stderr


def test_a_master_host_name_that_does_not_resolve_is_said_so() -> None:
    """It was "Name or service not known; is it running, and is the address right?":
    nothing to ask of a master whose name has no address. (The error is made here, not
    asked of a resolver: that would leave the loopback.)"""
    client = MasterClient(("master.example", 7777), b"k" * 16)
    said = client.unreachable(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert said == ("the host name master.example does not resolve: name or service not "
                    "known; check its spelling, or give the master's IP address")
    said = client.unreachable(socket.gaierror(socket.EAI_AGAIN,
                                              "Temporary failure in name resolution"))
    assert said == ("the host name master.example could not be looked up: temporary failure "
                    "in name resolution; is this host's DNS working? (or give the master's "
                    "IP address)")


def test_unreachable_master_is_an_oserror() -> None:
    from .conftest import free_port

    with pytest.raises(OSError):
        MasterClient(("127.0.0.1", free_port()), b"k" * 16).connect()


def test_a_forged_report_never_reaches_the_manifest(site: FixtureServer, tmp_path: Path,
                                                    authkey: str) -> None:
    """An authenticated client reports success, with a path out of the output folder and a
    zero hash, for a URL it never leased: a real master refuses it and says so."""
    png = (SITE / "images" / "red.png").read_bytes()
    begun = threading.Event()
    page = b'<html><body><img src="/a.png"></body></html>'
    site.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")

    def slow_image(handler: FixtureHandler) -> None:
        begun.set()
        time.sleep(1.0)  # time for the forged report to arrive first
        handler.send_body(200, png, "image/png")

    site.routes["/a.png"] = slow_image
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--local-workers", "1", "--ignore-robots",
                           cwd=tmp_path)
    try:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        assert begun.wait(30), "the image was never asked for"
        proxy = MasterClient((host, int(port)), authkey.encode()).connect()
        forged = Attempt(url=site.url + "/a.png", ok=True, path="../../etc/passwd",
                         sha256="0" * 64, bytes=1).to_wire()
        proxy.hello("intruder", {})
        proxy.exchange("intruder", 1, [forged], [], 0, 0.0)
        proxy.report("intruder", [{**forged, "path": "images/http/h/x.png"}])  # not leased
        err = finish(master, 60)
        assert master.returncode == 0, err
    finally:
        stop(master)
    [entry] = manifest_lines(out)
    assert entry["status"] == "success" and entry["worker"] != "intruder"
    assert entry["path"].startswith("images/") and entry["sha256"] == sha256(png).hexdigest()
    assert "refused a report from intruder" in err and "not inside" in err


def _flood(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` connections that never authenticate, as a flood of strangers would."""
    return [socket.create_connection(address, timeout=5) for _ in range(count)]


def _closed_by_the_server(sock: socket.socket, wait: float) -> bool:
    """Whether the server hung up on ``sock`` (rather than sending its challenge)."""
    sock.settimeout(wait)
    try:
        while chunk := sock.recv(4096):
            del chunk  # the challenge: the server took this connection in
            return False
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_strangers_are_bounded_in_number_and_a_worker_gets_in_after_them(
        caplog: pytest.LogCaptureFixture) -> None:
    key = secrets.token_bytes(16)
    board = TaskBoard(BoardPolicy())
    server = QueueServer(board, ("127.0.0.1", 0), key, lambda full=False: {},
                         max_handshaking=4).start()
    try:
        with caplog.at_level(logging.WARNING, logger="crawler.board.manager"):
            flood = _flood(server.address, 20)
            try:
                taken = [s for s in flood if not _closed_by_the_server(s, 1.0)]
                assert len(taken) == 4, "only max_handshaking strangers hold a server thread"
                with pytest.raises((OSError, EOFError)):  # a worker amid them: turned away
                    MasterClient(server.address, key).connect()
            finally:
                for sock in flood:
                    sock.close()
            # Each try the server turns away is said too: the one amid the flood, and
            # those made before it noticed the strangers gone (under load, now and then).
            worker_turned_away = 1
            wait_until_true = time.monotonic() + 10
            while True:  # the server notices the closed strangers and frees their places
                try:
                    proxy = MasterClient(server.address, key).connect()
                    break
                except (OSError, EOFError):
                    worker_turned_away += 1
                    assert time.monotonic() < wait_until_true, "the queue never accepted again"
                    time.sleep(0.05)
            assert proxy.heartbeat("w1") is True
    finally:
        server.stop()
    # The first said at once, the others held back (a line every few seconds) and said
    # as the server stops: they were never said.
    said = [re.fullmatch(r"turned away (\d+) queue connection\(s\): 4 connections are still to "
                         r"authenticate \(a flood\?\)", r.getMessage()) for r in caplog.records
            if "turned away" in r.getMessage()]
    assert all(said), caplog.text
    assert sum(int(m[1]) for m in said if m) == 16 + worker_turned_away, caplog.text


def test_strangers_from_one_address_do_not_keep_the_others_workers_out(
        caplog: pytest.LogCaptureFixture) -> None:
    """Idle connections from one address, each opened again as the server closed it (no
    key needed), held every place for strangers: no new worker, none back after a
    master's restart and no crawler status got in for as long as it went on."""
    key = secrets.token_bytes(16)
    server = QueueServer(TaskBoard(BoardPolicy()), ("127.0.0.1", 0), key,
                         lambda full=False: {}).start()
    flood = [socket.create_connection(server.address, timeout=5,
                                      source_address=("127.0.0.2", 0)) for _ in range(50)]
    try:
        with caplog.at_level(logging.WARNING, logger="crawler.board.manager"):
            taken = [s for s in flood if not _closed_by_the_server(s, 1.0)]
            assert len(taken) == manager.MAX_HANDSHAKING_PER_ADDRESS
            # A worker of another address gets in at once, the flood going on.
            assert MasterClient(server.address, key).connect().heartbeat("w1") is True
    finally:
        for sock in flood:
            sock.close()
        server.stop()
    assert ("32 connections from 127.0.0.2 are still to authenticate (its workers starting at "
            "once, who try again, or a flood)"
            in caplog.text), caplog.text


def test_a_flood_of_wrong_keys_is_said_once_not_once_each(
        caplog: pytest.LogCaptureFixture) -> None:
    """A line per refused connection grew a log file without bound under a flood."""
    key = secrets.token_bytes(16)
    server = QueueServer(TaskBoard(BoardPolicy()), ("127.0.0.1", 0), key,
                         lambda full=False: {}).start()
    try:
        with caplog.at_level(logging.WARNING, logger="crawler.board.manager"):
            for _ in range(10):
                with pytest.raises(AuthenticationFailed):
                    MasterClient(server.address, b"w" * 16).connect()
            assert MasterClient(server.address, key).connect().heartbeat("w1") is True
    finally:
        server.stop()
    said = [r.getMessage() for r in caplog.records if "queue connection" in r.getMessage()]
    # The first at once, the other nine as the server stops (they were never said).
    assert [line.partition(", the last from 127.0.0.1:")[0] for line in said] == [
        "refused 1 queue connection(s)", "refused 9 queue connection(s)"], said
    assert all(line.endswith(": wrong authkey") for line in said), said


def test_strangers_trickling_their_handshake_do_not_keep_workers_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline on each read let a stranger keep its place by sending its answer a byte
    at a time: max_handshaking of them kept every worker out for as long as they went on
    (260 bytes, each just within the deadline). The handshake as a whole has it now."""
    monkeypatch.setattr(manager, "HANDSHAKE_DEADLINE", 1.0)
    key = secrets.token_bytes(16)
    board = TaskBoard(BoardPolicy())
    server = QueueServer(board, ("127.0.0.1", 0), key, lambda full=False: {},
                         max_handshaking=4).start()
    strangers = _flood(server.address, 4)
    answer = (200).to_bytes(4, "big") + b"x" * 200  # a long answer, one byte at a time
    done = threading.Event()

    def trickle() -> None:
        for at in range(len(answer)):
            if done.wait(0.3):
                return
            for sock in strangers:
                with contextlib.suppress(OSError):
                    sock.send(answer[at:at + 1])

    trickling = threading.Thread(target=trickle, daemon=True)
    trickling.start()
    try:
        time.sleep(2.5)  # well past the handshake's deadline; each byte well within it
        proxy = MasterClient(server.address, key).connect()
        assert proxy.heartbeat("w1") is True
    finally:
        done.set()
        trickling.join(timeout=5)
        for sock in strangers:
            sock.close()
        server.stop()


def _a_master_that_trickles_its_challenge() -> tuple[tuple[str, int], threading.Event]:
    """A port whose every connection gets the start of a long challenge, a byte every
    0.2 s, till the returned event is set: a stranger, or a master on a dying link."""
    challenge = (250).to_bytes(4, "big") + b"#CHALLENGE#" + b"x" * 239

    def trickle(conn: socket.socket) -> None:
        with conn:
            for at in range(len(challenge)):
                if done.wait(0.2):
                    return
                with contextlib.suppress(OSError):
                    conn.send(challenge[at:at + 1])

    port, done = accept_each(trickle)
    return ("127.0.0.1", port), done


def test_a_master_trickling_its_handshake_is_given_up_at_the_handshake_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's side of the handshake had a deadline on each read alone: a peer
    sending a byte now and then held a worker (or ``crawler status``) for minutes, past
    any --connect-wait. The handshake as a whole has it now, as on the master's side."""
    monkeypatch.setattr(manager, "HANDSHAKE_DEADLINE", 1.0)
    address, done = _a_master_that_trickles_its_challenge()
    failed = raised_by_the_deadline(lambda: MasterClient(address, b"k" * 16).connect(), 4, done)
    assert isinstance(failed, ConnectionError), failed
    assert str(failed) == (f"127.0.0.1:{address[1]} took the connection and made no "
                              "handshake: is that a crawler master's queue port?")


def _authenticated(address: tuple[str, int], key: bytes) -> connection.Connection:
    """A raw client past the authkey handshake, as a worker's proxy would be."""
    sock = socket.create_connection(address, timeout=5)
    sock.settimeout(None)  # Connection reads the descriptor: blocking, as the stdlib's
    conn = connection.Connection(sock.detach())
    connection.answer_challenge(conn, key)
    connection.deliver_challenge(conn, key)
    return conn


def _hung_up_within(conn: connection.Connection, wait: float) -> bool:
    """Whether the server closed ``conn`` within ``wait`` seconds (and sent nothing)."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.settimeout(wait)
        try:
            return sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def test_a_client_stalled_mid_request_is_cut_at_the_deadline_and_others_are_served(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """After the handshake a request's reads had no deadline: a client that sent half a
    request, or trickled it, held a server thread and a socket for ever. Between
    requests a worker may still idle for as long as it likes."""
    monkeypatch.setattr(manager, "REQUEST_DEADLINE", 1.0)
    key = secrets.token_bytes(16)
    board = TaskBoard(BoardPolicy(worker_silence=0.25, batch_size=2000))
    server = QueueServer(board, ("127.0.0.1", 0), key, lambda full=False: {}).start()
    urls = [f"http://h{n}/{'x' * 200}.png" for n in range(2000)]
    for n, url in enumerate(urls):
        board.put(url, f"h{n}", None)
    request = pickle.dumps((None, "dummy", (), {}))
    frame = struct.pack("!i", len(request)) + request
    # One stalls in the middle of a call on a served connection; one trickles its
    # first request a byte every 0.2 s, each byte well within the deadline.
    halfway = _authenticated(server.address, key)
    halfway.send((None, "accept_connection", ("stalled",), {}))
    assert halfway.recv() == ("#RETURN", None)
    trickling = _authenticated(server.address, key)
    worker = MasterClient(server.address, key).connect()
    stop = threading.Event()

    def trickle() -> None:
        for at in range(len(frame) - 1):  # never the last byte
            with contextlib.suppress(OSError):
                os.write(trickling.fileno(), frame[at:at + 1])
            if stop.wait(0.2):
                return

    try:
        with caplog.at_level(logging.WARNING, logger="crawler.board.manager"):
            os.write(halfway.fileno(), frame[:len(frame) // 2])
            threading.Thread(target=trickle, daemon=True).start()
            began = time.monotonic()
            assert worker.heartbeat("w1") is True  # served while the others stall
            # A request too big to come in one read (half a megabyte) is waited for.
            leased = [url for url, _ in worker.lease("w1", len(urls), 0.0)["tasks"]]
            worker.report("w1", [stored(url) for url in leased])
            assert len(leased) == len(urls) == len(settle_all(board, len(urls)))
            time.sleep(1.5)  # a worker idle past the deadline between calls is no stall
            assert worker.heartbeat("w1") is True
            assert _hung_up_within(halfway, 3.0), "a half-sent request held its connection"
            assert _hung_up_within(trickling, 1.0), "a trickled request held its connection"
            assert 0.9 < time.monotonic() - began < 4.0
            assert worker.heartbeat("w1") is True
    finally:
        stop.set()
        for conn in (halfway, trickling):
            conn.close()
        server.stop()
    said = sorted(r.getMessage() for r in caplog.records if "cut the queue" in r.getMessage())
    assert len(said) == 2, said
    assert all(line.startswith("cut the queue connection from 127.0.0.1:") for line in said)
    assert all(line.endswith(": a request begun 1 s ago is still not all there")
               for line in said)


def test_a_request_in_several_reads_is_served_under_a_worker_silence_of_years() -> None:
    """The request's deadline (twice worker_silence) went to poll() in milliseconds,
    past a C int: every request that did not come in one read was answered with an
    OverflowError's traceback."""
    key = secrets.token_bytes(16)
    board = TaskBoard(BoardPolicy(worker_silence=1e9, batch_size=2000))
    server = serve(board, key)
    urls = [f"http://h{n}/{'x' * 200}.png" for n in range(2000)]
    for n, url in enumerate(urls):
        board.put(url, f"h{n}", None)
    try:
        worker = MasterClient(server.address, key).connect()
        leased = [url for url, _ in worker.lease("w1", len(urls), 0.0)["tasks"]]
        # Half a megabyte of reports: more than one read of the socket.
        worker.report("w1", [stored(url) for url in leased])
        assert len(leased) == len(urls) == len(settle_all(board, len(urls)))
    finally:
        server.stop()


def _accepted_sockets_of(peer: tuple[str, int]) -> list[socket.socket]:
    """The server's ends (in this process) of connections from ``peer``, as copies."""
    found: dict[str, socket.socket] = {}  # by the socket's inode: a copy is itself listed
    for fd in list(Path("/proc/self/fd").iterdir()):
        with contextlib.suppress(OSError):
            inode = str(fd.readlink())
            if not inode.startswith("socket:") or inode in found:
                continue
            sock = socket.socket(fileno=os.dup(int(fd.name)))
            try:
                if sock.type == socket.SOCK_STREAM and sock.getpeername() == peer:
                    found[inode] = sock
                    continue
            except OSError:
                pass
            sock.close()
    return list(found.values())


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux's keepalive options")
def test_the_server_keeps_its_connections_alive_to_notice_vanished_hosts() -> None:
    """A worker whose host vanished (power off, cable cut: no FIN, no RST) held its
    server thread and socket for ever: the server's ends had no keepalive."""
    key = secrets.token_bytes(16)
    server = serve(TaskBoard(BoardPolicy()), key)
    try:
        proxy = MasterClient(server.address, key).connect()
        assert proxy.heartbeat("w1") is True
        theirs = proxy._tls.connection
        with socket.socket(fileno=os.dup(theirs.fileno())) as worker_end:
            [accepted] = _accepted_sockets_of(worker_end.getsockname())
        with accepted:
            tcp = socket.IPPROTO_TCP
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert accepted.getsockopt(tcp, socket.TCP_KEEPIDLE) == manager.KEEPALIVE_IDLE
            assert accepted.getsockopt(tcp, socket.TCP_KEEPINTVL) == manager.KEEPALIVE_INTERVAL
            assert accepted.getsockopt(tcp, socket.TCP_KEEPCNT) == manager.KEEPALIVE_PROBES
            gone_after = (manager.KEEPALIVE_IDLE
                          + manager.KEEPALIVE_INTERVAL * manager.KEEPALIVE_PROBES)
            assert gone_after <= 120, "a vanished host is let go within two minutes"
            assert accepted.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == gone_after * 1000
    finally:
        server.stop()


_MASTER = """
import os, sys, time
from crawler.board.manager import QueueServer
from crawler.board.memory import BoardPolicy, TaskBoard

board = TaskBoard(BoardPolicy(lease_timeout=1.0))
hello = {"lease_timeout": 1.0}
server = QueueServer(board, ("127.0.0.1", 0), os.environb[b"CRAWLER_AUTHKEY"],
                     lambda full=False: hello).start()
print(server.address[1], flush=True)
time.sleep(60)
"""


def test_a_call_to_a_hung_master_gives_up_within_a_lease(authkey: str) -> None:
    """After hello, a call waits no longer than the master's lease_timeout (not the
    default's 60 s): a worker stuck longer has lost its leases anyway."""
    master = subprocess.Popen([sys.executable, "-c", _MASTER], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert master.stdout is not None
        port = int(master.stdout.readline())
        client = MasterClient(("127.0.0.1", port), authkey.encode())
        proxy = client.connect()
        crawl = proxy.hello("w", {"host": "h", "pid": 1, "threads": 1})
        client.bound_calls(proxy, crawl["lease_timeout"])
        master.send_signal(signal.SIGSTOP)  # hung: it accepts nothing, answers nothing
        deadline = time.monotonic() + 10
        while Path(f"/proc/{master.pid}/stat").read_text().rpartition(")")[2].split()[0] != "T":
            assert time.monotonic() < deadline, "the master never stopped"
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(OSError):
            proxy.heartbeat("w")
        assert time.monotonic() - started < 30, "the call waited for the default deadline"
    finally:
        master.send_signal(signal.SIGCONT)
        master.kill()
        master.wait(timeout=10)


def test_a_throttled_warning_held_back_is_said_when_its_seconds_are_over(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second wrong key within the few seconds of the first was said only at the next
    refusal, or at the run's end: a minute later, in a crawl that went on."""
    monkeypatch.setattr(manager._Throttled, "EVERY", 0.3)
    refusals = manager._Throttled("refused %d queue connection(s), last: %s")
    with caplog.at_level(logging.WARNING, logger=manager.__name__):
        refusals.note("wrong authkey")
        refusals.note("wrong authkey")
        refusals.note("wrong authkey")
        said = [r.getMessage() for r in caplog.records]
        assert said == ["refused 1 queue connection(s), last: wrong authkey"], said
        deadline = time.monotonic() + 5
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        said = [r.getMessage() for r in caplog.records]
    assert said[1:] == ["refused 2 queue connection(s), last: wrong authkey"], said
    refusals.flush()  # nothing more to say
    assert len(caplog.records) == 2


def test_a_queue_out_of_descriptors_says_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    """It said "turned away 29 queue connection(s): cannot accept: Too many open files",
    and nothing of the limit or how to raise it."""
    import resource

    server = QueueServer(TaskBoard(BoardPolicy()), ("127.0.0.1", 0), secrets.token_bytes(16),
                         lambda full=False: {}).start()
    client = socket.socket()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with caplog.at_level(logging.WARNING, logger="crawler.board.manager"):
            free = os.open(os.devnull, os.O_RDONLY)
            os.close(free)
            resource.setrlimit(resource.RLIMIT_NOFILE, (free, hard))  # no file more
            try:
                client.connect(server.address)  # (its socket made before)
                deadline = time.monotonic() + 10
                while "cannot accept" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        client.close()
        server.stop()
    assert re.search(r"turned away \d+ queue connection\(s\): cannot accept: too many open "
                     r"files \(this process may open \d+: ulimit -n", caplog.text), caplog.text
