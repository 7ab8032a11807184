"""The fast lane against real servers on 127.0.0.1: what it does itself, and what it hands over."""

from __future__ import annotations

import dataclasses
import gzip
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crawler.board.manager import MasterClient
from crawler.config import Limits
from crawler.demo.site import png
from crawler.errors import WorkerFailed
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.session import Watchdog, make_pool
from crawler.model.outcome import Attempt
from crawler.worker.download import download
from crawler.worker.fastlane import FastLane, HandOver, parse_head
from crawler.worker.sink import ACCEPT, SPILL_AT, ImageSink
from crawler.worker.store import Store
from crawler.worker.worker import Worker, WorkerOptions

from .conftest import (
    SITE,
    FixtureHandler,
    FixtureServer,
    finish,
    free_port,
    manifest_lines,
    run_crawler,
    serve_routes,
    start_crawler,
    wait_for_queue_address,
)

PNG = png(40, 30, 7)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))
DEFAULT_LIMITS = Limits()
HANDED_OVER = "handed over"


class Lane:
    """A FastLane on its own thread, as a worker runs it, with what it reports collected."""

    def __init__(self, out: Path, *, limits: Limits = DEFAULT_LIMITS,
                 policy: AddressPolicy = LOOPBACK, slots: int = 4) -> None:
        self.store = Store(out)
        self.stop = threading.Event()
        self.results: queue.SimpleQueue[tuple[str, Attempt | str | None]] = queue.SimpleQueue()
        self.lane = FastLane(slots=slots, store=self.store, limits=limits, policy=policy,
                             user_agent="crawler-test", accept=ACCEPT,
                             report=lambda results: [self.results.put(r) for r in results],
                             hand_over=lambda task: self.results.put((task[0], HANDED_OVER)),
                             stop=self.stop)
        self.thread = threading.Thread(target=self.lane.run, daemon=True)
        self.thread.start()

    def fetch(self, urls: list[str], timeout: float = 20) -> dict[str, Attempt | str | None]:
        self.lane.submit([(url, 1) for url in urls])
        got: dict[str, Attempt | str | None] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(set(urls)):
            url, result = self.results.get(timeout=max(0.01, deadline - time.monotonic()))
            assert url not in got, f"{url} reported twice"
            got[url] = result
        return got

    def close(self) -> None:
        self.lane.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def lanes(tmp_path: Path) -> Iterator[Callable[..., Lane]]:
    made: list[Lane] = []

    def make(**kwargs: object) -> Lane:
        lane = Lane(tmp_path / f"out{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(lane)
        return lane

    yield make
    for lane in made:
        lane.close()


@pytest.fixture
def server(make_server: Callable[[], FixtureServer]) -> FixtureServer:
    """A fixture server that counts the TCP connections it accepts."""
    server = make_server()
    server.connections = 0  # type: ignore[attr-defined]
    inner = server.process_request

    def counting(request: socket.socket, address: object) -> None:
        server.connections += 1  # type: ignore[attr-defined]
        inner(request, address)

    server.process_request = counting  # type: ignore[method-assign]
    return server


def raw_server(answer: Callable[[socket.socket, bytes], None]) -> tuple[str, threading.Event]:
    """A one-thread server on 127.0.0.1 that calls ``answer(conn, request)`` per request."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        with listener:
            while not done.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            buffer = b""
            while not done.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    request, buffer = buffer.split(b"\r\n\r\n", 1)
                    if answer(conn, request) is False:
                        return

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", done


def without_timing(attempt: Attempt | str | None) -> object:
    if isinstance(attempt, Attempt):
        return dataclasses.replace(attempt, elapsed_s=0.0)
    return attempt


def test_images_are_stored_and_reported_as_the_download_threads_do(
        server: FixtureServer, lanes: Callable[..., Lane], tmp_path: Path) -> None:
    paths = ["/images/banner.png", "/images/blue.png", "/icons/star.gif", "/icons/favicon.gif"]
    urls = [server.url + path for path in paths] + [server.url + "/images/blue.png?v=2"]
    lane = lanes()
    got = lane.fetch(urls)
    pool = make_pool(LOOPBACK, "crawler-test", ACCEPT)
    store = Store(tmp_path / "threads")
    for url in urls:
        expected = download(pool, url, store, Limits(), Watchdog())
        assert expected.ok
        assert without_timing(got[url]) == without_timing(expected)
        path = url.split("/", 3)[3].split("?")[0]
        assert (lane.store.root / got[url].path).read_bytes() == (SITE / path).read_bytes()
    assert not [p for p in lane.store.partial_dir.rglob("*") if p.is_file()]


def test_connections_are_kept_alive_and_reused(server: FixtureServer,
                                               lanes: Callable[..., Lane]) -> None:
    serve_routes(server, {f"/img/{n}.png": ("image/png", PNG) for n in range(40)})
    got = lanes(slots=2).fetch([f"{server.url}/img/{n}.png" for n in range(40)])
    assert all(isinstance(a, Attempt) and a.ok for a in got.values()), got
    assert server.connections <= 2  # type: ignore[attr-defined]


def test_error_statuses_are_failures_with_the_usual_reasons(
        server: FixtureServer, lanes: Callable[..., Lane]) -> None:
    server.routes["/busy.png"] = lambda h: h.send_body(503, b"busy", "text/plain",
                                                       {"Retry-After": "7"})
    server.routes["/slow-down.png"] = lambda h: h.send_body(429, b"", "text/plain")
    server.routes["/html.png"] = lambda h: h.send_body(200, b"<html>no</html>", "image/png")
    server.routes["/empty.png"] = lambda h: h.send_body(200, b"", "image/png")
    got = lanes(limits=Limits(max_bytes=100_000)).fetch(
        [server.url + p for p in ("/missing.png", "/busy.png", "/slow-down.png", "/html.png",
                                  "/empty.png")])
    missing, busy, slow = (got[server.url + p] for p in ("/missing.png", "/busy.png",
                                                          "/slow-down.png"))
    assert isinstance(missing, Attempt) and (missing.reason, missing.transient) == ("HTTP 404",
                                                                                    False)
    assert isinstance(busy, Attempt) and (busy.reason, busy.transient, busy.retry_after) == (
        "HTTP 503", True, 7.0)
    assert isinstance(slow, Attempt) and (slow.reason, slow.transient) == ("HTTP 429", True)
    for path in ("/html.png", "/empty.png"):
        attempt = got[server.url + path]
        assert isinstance(attempt, Attempt) and attempt.reason == "not an image"
    assert server.connections <= 4, "short error bodies are read so the connection stays"  # type: ignore[attr-defined]


def test_limits_hold(server: FixtureServer, lanes: Callable[..., Lane]) -> None:
    big = PNG + b"\0" * 200_000

    def trickle(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PNG) + 50))
        handler.end_headers()
        handler.wfile.write(PNG)
        for _ in range(50):  # a byte every 0.1 s: never a read timeout, past the deadline
            time.sleep(0.1)
            handler.wfile.write(b"\0")
            handler.wfile.flush()

    def silent(handler: FixtureHandler) -> None:
        time.sleep(3)

    server.routes["/big.png"] = lambda h: h.send_body(200, big, "image/png")
    server.routes["/trickle.png"] = trickle
    server.routes["/silent.png"] = silent
    server.routes["/tiny.png"] = lambda h: h.send_body(200, png(2, 2, 1), "image/png")
    limits = Limits(max_bytes=100_000, deadline=1.5, read_timeout=0.8, min_width=4)
    got = lanes(limits=limits).fetch(
        [server.url + p for p in ("/big.png", "/trickle.png", "/silent.png", "/tiny.png")])
    reasons = {url.rsplit("/", 1)[1]: (a.reason, a.transient) for url, a in got.items()
               if isinstance(a, Attempt)}
    assert reasons == {
        "big.png": (f"too large: {len(big)} bytes > 100000", False),
        "trickle.png": ("too slow: not finished within 1.5 s", False),
        "silent.png": ("timed out", True),
        "tiny.png": ("too small: 2x2", False),
    }


def test_what_the_lane_does_not_do_is_handed_over(server: FixtureServer,
                                                  lanes: Callable[..., Lane]) -> None:
    def chunked(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(PNG), PNG))

    def until_close(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(PNG)
        handler.close_connection = True

    server.routes["/moved.png"] = lambda h: h.send_body(301, b"", "text/plain",
                                                        {"Location": "/images/blue.png"})
    server.routes["/chunked.png"] = chunked
    server.routes["/gzip.png"] = lambda h: h.send_body(200, gzip.compress(PNG), "image/png",
                                                       {"Content-Encoding": "gzip"})
    server.routes["/until-close.png"] = until_close
    closed = f"http://127.0.0.1:{free_port()}/nobody-listens.png"
    urls = [server.url + p for p in ("/moved.png", "/chunked.png", "/gzip.png",
                                     "/until-close.png", "/spa ce.png", "/caf\u00e9.png")]
    urls += ["https://127.0.0.1:1/secure.png", closed]
    got = lanes().fetch(urls)
    assert got == {url: HANDED_OVER for url in urls}


def test_a_keep_alive_connection_the_server_closed_is_retried_afresh(
        lanes: Callable[..., Lane]) -> None:
    """A server that keeps each connection for one answer but does not say so."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(PNG), PNG))
        time.sleep(0.05)
        return False  # then close, although the answer promised keep-alive

    base, done = raw_server(answer)
    try:
        lane = lanes(slots=1)
        for n in range(5):
            got = lane.fetch([f"{base}/{n}.png"])
            attempt = got[f"{base}/{n}.png"]
            assert isinstance(attempt, Attempt) and attempt.ok, attempt
    finally:
        done.set()


def test_http_1_0_answers_and_extra_bytes(lanes: Callable[..., Lane]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        target = request.split(b" ")[1]
        if target == b"/old.png":
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(PNG), PNG))
            return False
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sEXTRA" % (len(PNG), PNG))
        return True

    base, done = raw_server(answer)
    try:
        got = lanes().fetch([f"{base}/old.png", f"{base}/extra.png"])
    finally:
        done.set()
    old = got[f"{base}/old.png"]
    assert isinstance(old, Attempt) and old.ok
    assert got[f"{base}/extra.png"] == HANDED_OVER, "a body longer than announced is not trusted"


def test_the_address_guard_applies(server: FixtureServer, lanes: Callable[..., Lane]) -> None:
    url = server.url + "/images/blue.png"
    attempt = lanes(policy=AddressPolicy()).fetch([url])[url]
    assert isinstance(attempt, Attempt) and not attempt.ok
    assert attempt.reason == ("refused to connect to 127.0.0.1 (127.0.0.1): loopback address "
                              "not allowed (see security.allow_networks)")
    assert server.connections == 0  # type: ignore[attr-defined]


def test_a_stop_hands_back_what_is_in_flight(server: FixtureServer,
                                             lanes: Callable[..., Lane]) -> None:
    def slow(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PNG)))
        handler.end_headers()
        handler.wfile.write(PNG[:100])
        handler.wfile.flush()
        time.sleep(3)

    server.routes["/slow.png"] = slow
    lane = lanes(slots=1)
    lane.lane.submit([(server.url + "/slow.png", 1), (server.url + "/images/blue.png", 1)])
    time.sleep(0.5)
    lane.stop.set()
    got = dict([lane.results.get(timeout=5), lane.results.get(timeout=5)])
    assert got == {server.url + "/slow.png": None, server.url + "/images/blue.png": None}
    lane.thread.join(timeout=5)
    assert not [p for p in lane.store.partial_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize("fast_lane", [True, False])
def test_workers_use_the_lane_unless_told_not_to(site: FixtureServer, tmp_path: Path,
                                                 authkey: str, fast_lane: bool) -> None:
    header_orders: list[list[str]] = []
    inner = FixtureHandler.send_file

    def recording(handler: FixtureHandler) -> None:
        header_orders.append(list(handler.headers.keys()))
        inner(handler, handler.path)

    site.routes["/images/blue.png"] = recording
    (tmp_path / "settings.toml").write_text(f"[worker]\nfast_lane = {str(fast_lane).lower()}\n")
    result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # The lane writes its headers in its own order; urllib3 puts Accept-Encoding second.
    lane_order = ["Host", "User-Agent", "Accept", "Accept-Encoding"]
    assert len(header_orders) == 1
    assert (header_orders[0] == lane_order) is fast_lane, header_orders
    assert [p.read_bytes() for p in (tmp_path / "out").rglob("blue.png")] == [
        (SITE / "images" / "blue.png").read_bytes()]


def ok_answer(body: bytes = PNG, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_a_bad_number_in_a_header_hands_over_and_the_lane_goes_on(
        lanes: Callable[..., Lane]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        if b"/poison.png" in request:  # "²".isdigit() is true; int("²") fails
            conn.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: \xb2\r\n\r\n")
            return False
        conn.sendall(ok_answer())
        return True

    base, done = raw_server(answer)
    try:
        lane = lanes()
        first = lane.fetch([f"{base}/poison.png"])
        then = lane.fetch([f"{base}/fine.png"])
    finally:
        done.set()
    busy = first[f"{base}/poison.png"]
    assert isinstance(busy, Attempt) and (busy.reason, busy.retry_after) == ("HTTP 503", None)
    fine = then[f"{base}/fine.png"]
    assert isinstance(fine, Attempt) and fine.ok
    assert lane.thread.is_alive()


def test_an_idle_connection_with_unasked_bytes_is_not_reused(lanes: Callable[..., Lane]) -> None:
    served: list[int] = []

    def answer(conn: socket.socket, request: bytes) -> bool:
        served.append(conn.fileno())
        if b"/one.png" in request:
            conn.sendall(ok_answer())
            time.sleep(0.1)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")  # unasked
            return True
        conn.sendall(ok_answer(png(20, 10, 3)))
        return True

    base, done = raw_server(answer)
    try:
        lane = lanes(slots=1)
        lane.fetch([f"{base}/one.png"])
        time.sleep(0.3)  # the stray answer has arrived on the idle connection
        two = lane.fetch([f"{base}/two.png"])[f"{base}/two.png"]
    finally:
        done.set()
    assert isinstance(two, Attempt) and two.ok and (two.width, two.height) == (20, 10)


def test_an_error_whose_body_never_comes_keeps_its_status(lanes: Callable[..., Lane]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\n")  # no body
        time.sleep(3)
        return False

    base, done = raw_server(answer)
    try:
        got = lanes(limits=Limits(read_timeout=0.5)).fetch([f"{base}/gone.png"])
    finally:
        done.set()
    gone = got[f"{base}/gone.png"]
    assert isinstance(gone, Attempt) and (gone.reason, gone.transient) == ("HTTP 404", False)


def test_idle_connections_of_other_hosts_give_way(lanes: Callable[..., Lane]) -> None:
    connections: dict[str, set[int]] = {}

    def server(name: str) -> tuple[str, threading.Event]:
        def answer(conn: socket.socket, request: bytes) -> bool:
            connections.setdefault(name, set()).add(id(conn))
            conn.sendall(ok_answer())
            return True
        return raw_server(answer)

    (a, a_done), (b, b_done), (c, c_done) = server("a"), server("b"), server("c")
    try:
        lane = lanes(slots=1)  # keeps 2 idle connections
        lane.fetch([f"{a}/a.png"])
        lane.fetch([f"{b}/b.png"])
        for n in range(10):
            lane.fetch([f"{c}/{n}.png"])
    finally:
        for done in (a_done, b_done, c_done):
            done.set()
    assert len(connections["c"]) == 1


def test_a_slow_name_lookup_holds_up_only_its_own_host(
        server: FixtureServer, lanes: Callable[..., Lane],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No slow DNS server can run here, so the lookup of one made-up name is slowed."""
    real = socket.getaddrinfo
    release = threading.Event()

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list:
        if host == "slow.invalid":
            release.wait(10)
            host = "127.0.0.1"
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    port = server.server_address[1]
    slow = [f"http://slow.invalid:{port}/images/blue.png?n={n}" for n in range(3)]
    lane = lanes()
    lane.lane.submit([(url, 1) for url in slow])
    quick = lane.fetch([server.url + "/icons/star.gif"], timeout=5)  # while the lookup hangs
    assert isinstance(quick[server.url + "/icons/star.gif"], Attempt)
    release.set()
    results = [lane.results.get(timeout=10) for _ in slow]
    assert {url for url, _ in results} == set(slow)
    assert all(isinstance(a, Attempt) and a.ok for _, a in results)


def test_odd_answers_and_targets_are_handed_over(lanes: Callable[..., Lane]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        target = request.split(b" ")[1]
        if target == b"/long-status.png":
            conn.sendall(ok_answer().replace(b"200 OK", b"2000 OK", 1))
        elif target == b"/spaced-name.png":
            conn.sendall(ok_answer().replace(b"Content-Length:", b"Content-Length :", 1))
        elif target == b"/bare-lf.png":
            conn.sendall(b"HTTP/1.1 200 OK\nContent-Length: %d\n\n%s" % (len(PNG), PNG))
        elif target == b"/no-content.png":
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        else:
            conn.sendall(ok_answer())
        return True

    base, done = raw_server(answer)
    odd = [f"{base}/long-status.png", f"{base}/spaced-name.png", f"{base}/bare-lf.png",
           f"{base}/a/../b.png", f"{base}/x{{y}}.png", f"{base}/100%.png"]
    try:
        got = lanes(limits=Limits(read_timeout=5)).fetch([*odd, f"{base}/no-content.png"])
    finally:
        done.set()
    assert {url: got[url] for url in odd} == {url: HANDED_OVER for url in odd}
    empty = got[f"{base}/no-content.png"]
    assert isinstance(empty, Attempt) and (empty.reason, empty.transient) == ("HTTP 204", False)


def test_tasks_submitted_after_the_lane_ended_are_handed_over(
        server: FixtureServer, lanes: Callable[..., Lane]) -> None:
    lane = lanes()
    lane.close()
    assert lane.fetch([server.url + "/images/blue.png"]) == {
        server.url + "/images/blue.png": HANDED_OVER}


@pytest.mark.parametrize(("head", "status", "headers"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2",
     200, {"content-length": "5", "x-a": "1, 2"}),
    (b"HTTP/1.0 404", 404, {}),
    (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7", 503, {"retry-after": "7"}),
])
def test_parse_head(head: bytes, status: int, headers: dict[str, str]) -> None:
    parsed = parse_head(head)
    assert (parsed.status, parsed.headers) == (status, headers)


@pytest.mark.parametrize("head", [
    b"HTTP/2 200 OK", b"ICY 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 \xb2\xb2\xb2 OK",
    b"HTTP/1.1 200 OK\r\n folded: value", b"HTTP/1.1 200 OK\r\nno colon",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6",
])
def test_parse_head_hands_over_what_it_does_not_trust(head: bytes) -> None:
    with pytest.raises(HandOver):
        parse_head(head)


def test_a_body_larger_than_memory_holds_goes_through_a_partial_file(
        server: FixtureServer, lanes: Callable[..., Lane], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SPILL_AT bytes a body is written as it arrives; both clients store it whole."""
    big = PNG + bytes(range(256)) * (3 * SPILL_AT // 256)  # a valid PNG head, 3x the limit
    server.routes["/big.png"] = lambda h: h.send_body(200, big, "image/png")
    spilled: list[int] = []
    real_spill = ImageSink._spill

    def counting_spill(sink: ImageSink) -> None:
        spilled.append(sink.size)
        real_spill(sink)

    monkeypatch.setattr(ImageSink, "_spill", counting_spill)
    url = server.url + "/big.png"
    lane = lanes()
    by_lane = lane.fetch([url])[url]
    by_threads = download(make_pool(LOOPBACK, "crawler-test", ACCEPT), url,
                          Store(tmp_path / "threads"), Limits(), Watchdog())
    for attempt, root in ((by_lane, lane.store.root), (by_threads, tmp_path / "threads")):
        assert isinstance(attempt, Attempt) and attempt.ok, attempt
        assert attempt.bytes == len(big)
        assert (root / attempt.path).read_bytes() == big
        assert not [p for p in (root / ".partial").rglob("*") if p.is_file()]
    assert len(spilled) == 2 and all(size > SPILL_AT for size in spilled)


def test_a_worker_whose_download_threads_cannot_start_hands_its_urls_back(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A redirect needs the urllib3 threads; when they cannot start, nothing is lost."""
    import crawler.fetch.session

    site = make_server()
    page = b'<html><body><img src="/moved.png"><img src="/images/blue.png"></body></html>'
    site.routes["/"] = lambda h: h.send_body(200, page, "text/html")
    site.routes["/moved.png"] = lambda h: h.send_body(302, b"", "text/plain",
                                                      {"Location": "/icons/star.gif"})
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                           cwd=tmp_path)
    try:
        address = wait_for_queue_address(master)
        host, port = address.rsplit(":", 1)

        def no_threads_here(*args: object) -> None:
            raise RuntimeError("can't start new thread")

        worker = Worker(MasterClient((host, int(port)), authkey.encode()),
                        WorkerOptions(out_dir=out, threads=2, connect_wait=10))
        with monkeypatch.context() as patch, pytest.raises(
                WorkerFailed, match="cannot start the download threads"):
            patch.setattr(crawler.fetch.session, "Watchdog", no_threads_here)
            worker.run()
        healthy = run_crawler("worker", address, "--out", str(out), cwd=tmp_path, timeout=60)
        assert healthy.returncode == 0, healthy.stderr
        stderr = finish(master, timeout=60)
    finally:
        if master.poll() is None:
            master.kill()
    assert master.returncode == 0, stderr
    entries = {e["url"]: e for e in manifest_lines(out)}
    assert entries[site.url + "/moved.png"]["status"] == "success"
    assert entries[site.url + "/images/blue.png"]["status"] == "success"
