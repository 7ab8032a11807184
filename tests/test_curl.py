"""The libcurl engine against real servers on 127.0.0.1: every rule a download must obey."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import queue
import resource
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import brotli
import pytest

from crawler.board.manager import MasterClient
from crawler.config import Limits
from crawler.demo.site import png
from crawler.errors import WorkerFailed
from crawler.fetch import curlsetup
from crawler.fetch.curl import CurlEngine
from crawler.fetch.curlsetup import KeptConnections
from crawler.fetch.easy import EasyClient
from crawler.fetch.engine import HopRefusal
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.fetch.policy import RATE_LIMITED_PAUSE
from crawler.master.pages import fetch_page
from crawler.model.imagetype import SNIFF_BYTES, dimensions, sniff
from crawler.model.outcome import ATTEMPT_FIELDS, Attempt, FailureKind
from crawler.model.wire import attempt_from_report
from crawler.worker.sink import (
    CUT_SHORT_ON_THE_SERVER,
    SPILL_AT,
    Abandoned,
    ImageSink,
    failure,
    kept_instead,
    sinks_into,
    status_failure,
)
from crawler.worker.store import Store
from crawler.worker.worker import Worker, WorkerOptions

from .accepting import accept_each
from .conftest import (
    SITE,
    FixtureHandler,
    FixtureServer,
    Route,
    endless_nothing,
    finish,
    free_port,
    gzipped_twice,
    manifest_lines,
    run_crawler,
    serve_routes,
    start_crawler,
    wait_for_queue_address,
)
from .test_imageend import animation_played_once
from .test_imagetype import make_gif, make_ico, make_jpeg, make_webp_lossless

PNG = png(40, 30, 7)
JPEG = make_jpeg(64, 48)
GIF = make_gif(16, 12)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))
DEFAULT_LIMITS = Limits()


class Engine:
    """A CurlEngine on its own thread, as a worker runs it, with what it reports collected."""

    def __init__(self, out: Path, *, limits: Limits = DEFAULT_LIMITS,
                 policy: AddressPolicy = LOOPBACK, slots: int = 4,
                 options: RequestOptions | None = None) -> None:
        self.store = Store(out)
        self.stop = threading.Event()
        self.results: queue.SimpleQueue[tuple[str, Attempt | None]] = queue.SimpleQueue()
        self.engine = CurlEngine(slots=slots, new_sink=sinks_into(self.store, limits),
                                 limits=limits, policy=policy,
                                 options=options or RequestOptions(user_agent="crawler-test"),
                                 report=lambda results: [self.results.put(r) for r in results],
                                 stop=self.stop)
        self.thread = threading.Thread(target=self.engine.run, daemon=True)
        self.thread.start()

    def fetch(self, urls: list[str], timeout: float = 20) -> dict[str, Attempt | None]:
        self.engine.submit([(url, 1) for url in urls])
        got: dict[str, Attempt | None] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(set(urls)):
            url, result = self.results.get(timeout=max(0.01, deadline - time.monotonic()))
            assert url not in got, f"{url} reported twice"
            got[url] = result
        return got

    def one(self, url: str, timeout: float = 20) -> Attempt:
        attempt = self.fetch([url], timeout)[url]
        assert isinstance(attempt, Attempt)
        return attempt

    def close(self) -> None:
        self.engine.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(**kwargs: object) -> Engine:
        engine = Engine(tmp_path / f"out{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


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


def raw_server(answer: Callable[[socket.socket, bytes], bool | None], *,
               wrap: Callable[[socket.socket], socket.socket] | None = None,
               ) -> tuple[str, threading.Event]:
    """A server on 127.0.0.1 that calls ``answer(conn, request)`` per request (a thread per
    connection; False from it closes the connection). ``wrap`` makes each connection
    another (TLS): the address is then an https one."""
    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        if wrap is not None:
            try:
                conn = wrap(conn)
            except OSError:
                conn.close()
                return
        with conn:
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

    port, done = accept_each(handle)
    scheme = "http" if wrap is None else "https"
    return f"{scheme}://127.0.0.1:{port}", done




def failures_from(engine: Engine, answer: Callable[[socket.socket, bytes], bool | None],
                  paths: Iterable[str]) -> set[tuple[str, FailureKind, bool] | None]:
    """(reason, kind, transient) of what ``engine`` makes of each of ``paths`` served by
    ``answer`` (see ``raw_server``); None for a download that ended without an Attempt."""
    base, done = raw_server(answer)
    try:
        got = engine.fetch([f"{base}{path}" for path in paths])
    finally:
        done.set()
    return {(a.reason, a.kind, a.transient) if isinstance(a, Attempt) else None
            for a in got.values()}

def ok_answer(body: bytes = PNG, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_images_are_stored_and_reported(server: FixtureServer,
                                        engines: Callable[..., Engine]) -> None:
    paths = ["/images/banner.png", "/images/blue.png", "/icons/star.gif", "/icons/favicon.gif"]
    urls = [server.url + path for path in paths] + [server.url + "/images/blue.png?v=2"]
    engine = engines()
    got = engine.fetch(urls)
    for url in urls:
        attempt = got[url]
        assert isinstance(attempt, Attempt) and attempt.ok, attempt
        data = (SITE / url.split("/", 3)[3].split("?")[0]).read_bytes()
        kind = sniff(data)
        assert kind is not None
        assert (attempt.bytes, attempt.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert (attempt.width, attempt.height) == dimensions(data, kind)
        assert attempt.kind is None and attempt.reason == ""
        assert (engine.store.root / str(attempt.path)).read_bytes() == data
    assert not [p for p in engine.store.partial_dir.rglob("*") if p.is_file()]


def http_dates(when: float) -> dict[str, str]:
    """``when`` in the three forms of an HTTP date (RFC 9110 5.6.7), each GMT."""
    at = time.gmtime(when)
    return {"imf": time.strftime("%a, %d %b %Y %H:%M:%S GMT", at),
            "rfc850": time.strftime("%A, %d-%b-%y %H:%M:%S GMT", at),
            "asctime": time.strftime("%a %b ", at) + f"{at.tm_mday:2d}"
                       + time.strftime(" %H:%M:%S %Y", at)}


def test_a_retry_after_date_in_any_form_is_read_as_gmt(
        server: FixtureServer, engines: Callable[..., Engine],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The asctime form names no zone, and was read in the machine's own: five hours
    out on a machine in New York. A date gone by asks for no pause."""
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        ahead, gone = http_dates(time.time() + 100), http_dates(time.time() - 100)
        for name in ahead:
            for when, dates in (("ahead", ahead), ("gone", gone)):
                server.routes[f"/{when}-{name}.png"] = functools.partial(
                    lambda h, date: h.send_body(503, b"", "text/plain", {"Retry-After": date}),
                    date=dates[name])
        got = engines().fetch([f"{server.url}/{when}-{name}.png" for name in ahead
                               for when in ("ahead", "gone")])
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    for name in ahead:
        soon, past = got[f"{server.url}/ahead-{name}.png"], got[f"{server.url}/gone-{name}.png"]
        assert isinstance(soon, Attempt) and soon.retry_after is not None, (name, soon)
        assert 90 <= soon.retry_after <= 101, (name, soon.retry_after)
        assert isinstance(past, Attempt) and past.retry_after == 0.0, (name, past)


def test_connections_are_kept_alive_and_reused(server: FixtureServer,
                                               engines: Callable[..., Engine]) -> None:
    serve_routes(server, {f"/img/{n}.png": ("image/png", PNG) for n in range(40)})
    got = engines(slots=2).fetch([f"{server.url}/img/{n}.png" for n in range(40)])
    assert all(isinstance(a, Attempt) and a.ok for a in got.values()), got
    assert server.connections <= 2  # type: ignore[attr-defined]


def test_error_statuses_are_failures_with_the_usual_reasons(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    server.routes["/busy.png"] = lambda h: h.send_body(503, b"busy", "text/plain",
                                                       {"Retry-After": "7"})
    server.routes["/slow-down.png"] = lambda h: h.send_body(429, b"", "text/plain")
    server.routes["/html.png"] = lambda h: h.send_body(200, b"<html>no</html>", "image/png")
    server.routes["/empty.png"] = lambda h: h.send_body(200, b"", "image/png")

    def closed_before_a_byte(handler: FixtureHandler) -> None:
        handler.send_response(200)  # no length: the body ends where the connection does
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True

    server.routes["/no-body.png"] = closed_before_a_byte
    got = engines(limits=Limits(max_bytes=100_000)).fetch(
        [server.url + p for p in ("/missing.png", "/busy.png", "/slow-down.png", "/html.png",
                                  "/empty.png", "/no-body.png")])
    missing, busy, slow = (got[server.url + p] for p in ("/missing.png", "/busy.png",
                                                          "/slow-down.png"))
    assert isinstance(missing, Attempt)
    assert (missing.reason, missing.transient, missing.kind) == ("HTTP 404", False,
                                                                 FailureKind.STATUS)
    assert isinstance(busy, Attempt) and (busy.reason, busy.transient, busy.retry_after) == (
        "HTTP 503", True, 7.0)
    # A 429 without Retry-After still holds its host (the board's hold), for a while.
    assert isinstance(slow, Attempt) and (slow.reason, slow.transient, slow.retry_after) == (
        "HTTP 429", True, RATE_LIMITED_PAUSE)
    for path, reason, kind in (
            ("/html.png", "not an image: an HTML page", FailureKind.HTML_PAGE),
            # An empty answer said only "not an image", whether its length was said or
            # its connection's close ended it (an HTTP/2 stream's end alike: no fault).
            ("/empty.png", "not an image: the body is empty (0 bytes)", FailureKind.NOT_IMAGE),
            ("/no-body.png", "not an image: the body is empty (0 bytes)",
             FailureKind.NOT_IMAGE)):
        attempt = got[server.url + path]
        assert isinstance(attempt, Attempt) and (attempt.reason, attempt.kind) == (reason, kind)
        assert not attempt.transient
    assert server.connections <= 4, "short error bodies are read so the connection stays"  # type: ignore[attr-defined]


def test_limits_hold(server: FixtureServer, engines: Callable[..., Engine]) -> None:
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
    got = engines(limits=limits).fetch(
        [server.url + p for p in ("/big.png", "/trickle.png", "/silent.png", "/tiny.png")])
    reasons = {url.rsplit("/", 1)[1]: (a.reason, a.transient, a.kind) for url, a in got.items()
               if isinstance(a, Attempt)}
    assert reasons == {
        "big.png": (f"too large: {len(big)} bytes > 100000", False, FailureKind.TOO_LARGE),
        "trickle.png": ("too slow: not finished within 1.5 s", True, FailureKind.TOO_SLOW),
        "silent.png": ("timed out", True, FailureKind.TIMEOUT),
        "tiny.png": ("too small: 2x2", False, FailureKind.DIMENSIONS),
    }


def test_a_trickling_image_holds_back_no_other_image_of_its_host(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """Over http, the others get connections of their own at once (they once waited
    for the trickling HTTP/1.1 connection, in case it could carry several, until
    every one of them was cut at the deadline)."""
    def trickle(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PNG) + 40))
        handler.end_headers()
        handler.wfile.write(PNG)
        for _ in range(40):  # a byte every 0.1 s: past the deadline
            time.sleep(0.1)
            handler.wfile.write(b"\0")
            handler.wfile.flush()

    server.routes["/trickle.png"] = trickle
    others = [server.url + f"/other{n}.png" for n in range(3)]
    for url in others:
        server.routes[url.removeprefix(server.url)] = lambda h: h.send_body(200, PNG, "image/png")
    engine = engines(limits=Limits(deadline=2.0))
    started = time.monotonic()
    engine.engine.submit([(server.url + "/trickle.png", 1), *((url, 1) for url in others)])
    first = [engine.results.get(timeout=10) for _ in others]
    assert time.monotonic() - started < 1.5, "held back until the trickle's deadline"
    assert sorted(url for url, _ in first) == others
    assert all(isinstance(a, Attempt) and a.ok for _, a in first), first
    url, trickled = engine.results.get(timeout=10)
    assert url == server.url + "/trickle.png"
    assert isinstance(trickled, Attempt) and trickled.kind is FailureKind.TOO_SLOW


def test_redirects_chunked_and_encoded_bodies_and_odd_urls(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """What the old fast lane handed over to urllib3 is done by the one engine."""
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

    encoded = {"gzip": gzip.compress(PNG), "deflate": zlib.compress(PNG),
               "br": brotli.compress(PNG)}
    for name, body in encoded.items():
        server.routes[f"/{name}.png"] = lambda h, b=body, n=name: h.send_body(
            200, b, "image/png", {"Content-Encoding": n})
    server.routes["/moved.png"] = lambda h: h.send_body(301, b"", "text/plain",
                                                        {"Location": "/images/blue.png"})
    server.routes["/chunked.png"] = chunked
    server.routes["/until-close.png"] = until_close
    server.routes["/spa%20ce.png"] = lambda h: h.send_body(200, PNG, "image/png")
    server.routes["/caf%C3%A9.png"] = lambda h: h.send_body(200, PNG, "image/png")
    paths = ["/moved.png", "/chunked.png", "/until-close.png", "/spa ce.png", "/caf\u00e9.png",
             *(f"/{name}.png" for name in encoded)]
    got = engines().fetch([server.url + p for p in paths])
    for url, attempt in got.items():
        assert isinstance(attempt, Attempt) and attempt.ok, (url, attempt)
        assert attempt.bytes == (len(PNG) if "moved" not in url
                                 else (SITE / "images" / "blue.png").stat().st_size)
    assert "/spa%20ce.png" in server.paths() and "/caf%C3%A9.png" in server.paths()


def test_encoded_bodies_are_bounded_by_their_decoded_size(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    bomb = PNG + b"\0" * 20_000_000
    server.routes["/gzip-bomb.png"] = lambda h: h.send_body(
        200, gzip.compress(bomb, 9), "image/png", {"Content-Encoding": "gzip"})
    server.routes["/br-bomb.png"] = lambda h: h.send_body(
        200, brotli.compress(bomb), "image/png", {"Content-Encoding": "br"})
    server.routes["/deflate-bomb.png"] = lambda h: h.send_body(
        200, zlib.compress(bomb, 9), "image/png", {"Content-Encoding": "deflate"})
    names = ("gzip", "br", "deflate")
    got = engines(limits=Limits(max_bytes=1_000_000)).fetch(
        [f"{server.url}/{name}-bomb.png" for name in names])
    assert len(got) == len(names)
    for attempt in got.values():
        assert isinstance(attempt, Attempt)
        assert (attempt.reason, attempt.kind) == ("too large: over 1000000 bytes",
                                                  FailureKind.TOO_LARGE)


SVG_AFTER_A_LONG_COMMENT = (b'<?xml version="1.0"?>\n<!-- ' + b"c" * 6000 + b' -->\n'
                            b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="3"/>')


@pytest.mark.parametrize("piece", [len(SVG_AFTER_A_LONG_COMMENT), 1024, 97])
def test_the_same_bytes_are_the_same_image_however_they_arrive(tmp_path: Path,
                                                               piece: int) -> None:
    """The type was decided once 4,096 bytes had come: an SVG whose first packets ended
    inside a long comment was 'not an image', sent whole it was stored."""
    sink = sinks_into(Store(tmp_path / "out"), Limits())(("http://h/a.svg", 1), 0.0)
    for at in range(0, len(SVG_AFTER_A_LONG_COMMENT), piece):
        sink.feed(SVG_AFTER_A_LONG_COMMENT[at:at + piece])
    stored = sink.finish("image/svg+xml")
    assert stored.ok and (stored.width, stored.height) == (4, 3), stored
    html = sinks_into(Store(tmp_path / "out"), Limits())(("http://h/b.svg", 1), 0.0)
    with pytest.raises(Abandoned, match="not an image"):  # no markup: still said early
        html.feed(b"\x00\x01 binary " * 1000)
    # A page longer than the sniffer's window is told to be one as it is given up.
    page = sinks_into(Store(tmp_path / "out"), Limits())(("http://h/File:c.png", 1), 0.0)
    with pytest.raises(Abandoned, match="an HTML page") as given_up:
        chunk = b"<!DOCTYPE html><p>" + b"x" * piece
        for _ in range(SNIFF_BYTES // len(chunk) + 1):
            page.feed(chunk)
    assert given_up.value.kind is FailureKind.HTML_PAGE


def test_a_compressed_body_with_bytes_after_its_end_is_a_broken_encoding(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """Once read as a passing connection error (libcurl's write error), tried three times
    and again by every rerun: the server's doing, and the same next time."""
    server.routes["/trailing.png"] = lambda h: h.send_body(
        200, gzip.compress(PNG) + b"trailing bytes", "image/png", {"Content-Encoding": "gzip"})
    attempt = engines().one(server.url + "/trailing.png")
    assert (attempt.reason, attempt.kind, attempt.transient) == (
        "bad response: broken encoding (bytes after the end of the compressed data)",
        FailureKind.BAD_RESPONSE, False), attempt


@pytest.mark.parametrize("encoding", ["deflate", "br"])
def test_a_compressed_body_that_decodes_to_nothing_is_cut_at_twice_max_bytes(
        server: FixtureServer, engines: Callable[..., Engine], encoding: str) -> None:
    """Empty blocks one after another decode to nothing: max_bytes never came, and the
    image was read at full speed until the deadline."""
    server.routes["/empty.png"] = endless_nothing(encoding, "image/png")
    started = time.monotonic()
    attempt = engines(limits=Limits(max_bytes=100_000, deadline=4)).one(server.url + "/empty.png")
    assert (attempt.reason, attempt.kind, attempt.transient) == (
        "too large: over 200000 bytes compressed (twice the size limit)",
        FailureKind.TOO_LARGE, False)
    assert time.monotonic() - started < 2


def raw_deflate(data: bytes) -> bytes:
    """Deflate without zlib's header and checksum, as old servers sent "deflate"."""
    squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return squeeze.compress(data) + squeeze.flush()


@pytest.mark.parametrize("encoding, encoded", [
    ("gzip", gzip.compress(PNG)),
    ("deflate", zlib.compress(PNG)),
    ("deflate", raw_deflate(PNG)),
    ("br", brotli.compress(PNG)),
], ids=["gzip", "deflate", "raw-deflate", "br"])
def test_a_compressed_body_cut_short_is_not_stored(
        server: FixtureServer, engines: Callable[..., Engine], encoding: str,
        encoded: bytes) -> None:
    """Framed right (its Content-Length is what was sent), half a compressed image was
    stored as a success: libcurl's decoder hands on what it has and says nothing."""
    half = encoded[:len(encoded) // 2]
    server.routes["/half.png"] = lambda h: h.send_body(200, half, "image/png",
                                                       {"Content-Encoding": encoding})
    server.routes["/whole.png"] = lambda h: h.send_body(200, encoded, "image/png",
                                                        {"Content-Encoding": encoding})
    engine = engines()
    got = engine.fetch([server.url + "/half.png", server.url + "/whole.png"])
    cut, whole = got[server.url + "/half.png"], got[server.url + "/whole.png"]
    assert cut is not None and (cut.reason, cut.kind, cut.transient) == (
        "bad response: compressed body cut short", FailureKind.BAD_RESPONSE, True), cut
    assert whole is not None and whole.ok and whole.bytes == len(PNG), whole
    stored = list(engine.store.root.rglob("*.png"))
    assert [p.name for p in stored] == ["whole.png"] and stored[0].read_bytes() == PNG


def gzip_then_close(sent: bytes) -> Route:
    """A route that answers a gzip-encoded PNG with no length: ``sent`` as its body, then
    the connection closed (its end is the body's)."""
    def route(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(sent)
        handler.close_connection = True
    return route


def test_a_body_closed_early_on_an_http10_answer_is_cut_short(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """No length and no chunks: the connection's end is the body's, so only the gzip
    stream can tell that the server went away in the middle of it."""
    encoded = gzip.compress(PNG)
    server.routes["/closes.png"] = gzip_then_close(encoded[:len(encoded) - 9])
    attempt = engines().one(server.url + "/closes.png")
    assert (attempt.reason, attempt.transient) == ("bad response: compressed body cut short",
                                                   True), attempt


def test_a_body_closed_between_gzip_members_is_cut_short(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """Every gzip member ends a stream: with no length, a connection closed after the
    first of two looked like the end of the body, and half a picture was stored."""
    half = len(PNG) // 2
    members = gzip.compress(PNG[:half]) + gzip.compress(PNG[half:])

    server.routes["/first-member.png"] = gzip_then_close(
        members[:len(gzip.compress(PNG[:half]))])
    server.routes["/members.png"] = gzip_then_close(members)
    engine = engines()
    got = engine.fetch([server.url + "/first-member.png", server.url + "/members.png"])
    cut, whole = got[server.url + "/first-member.png"], got[server.url + "/members.png"]
    assert cut is not None and (cut.ok, cut.reason, cut.transient) == (
        False, "connection broken: body cut short (the image stops before its end)", True), cut
    assert whole is not None and whole.ok and whole.bytes == len(PNG), whole
    stored = list(engine.store.root.rglob("*.png"))
    assert [p.name for p in stored] == ["members.png"] and stored[0].read_bytes() == PNG


def test_an_image_cut_short_on_the_server_fails_and_is_not_stored(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """Every byte its Content-Length said came, and the picture stops inside one of its
    pieces: the file is cut short on the server (a broken upload, a cache's truncated
    copy), and a browser shows it broken. It was stored and reported a success. It
    fails now, to be tried again (a later try may find it whole). Large bodies, held on
    disk as they come, are judged alike. What browsers show in full stays a success: an
    end marker alone missing, a JPEG cut within its picture data (which cannot be told
    from one without its end), bytes after the end."""
    big = png(300, 300, 3, pad_to=SPILL_AT + 50_000)
    webp, svg = make_webp_lossless(5, 5), b'<svg xmlns="http://www.w3.org/2000/svg"><rect/>'
    cut = {"/half.png": (PNG[:len(PNG) // 2], "image/png"),
           "/big-half.png": (big[:SPILL_AT + 1000], "image/png"),
           "/head-of.jpg": (JPEG[:30], "image/jpeg"),
           "/half.gif": (GIF[:len(GIF) - 4], "image/gif"),
           # Its header alone: no pixels to show. A RIFF short of its stated size, an
           # SVG unclosed (browsers show neither) were stored as successes.
           "/no-pixels.png": (PNG[:PNG.index(b"IDAT") - 4], "image/png"),
           "/half.webp": (webp[:len(webp) // 2], "image/webp"),
           "/unclosed.svg": (svg + b"<circ", "image/svg+xml")}
    shown = {"/no-end.jpg": (JPEG[:-2], "image/jpeg"),
             "/cut-in-its-picture.jpg": (JPEG[:-3], "image/jpeg"),
             "/no-iend.png": (PNG[:-12], "image/png"),
             "/no-trailer.gif": (GIF[:-1], "image/gif"),
             "/trailer.png": (PNG + b"trailer", "image/png"),
             "/whole.webp": (webp, "image/webp"),
             "/whole.svg": (svg + b"</svg>", "image/svg+xml")}
    serve_routes(server, {path: (kind, body) for path, (body, kind) in {**cut, **shown}.items()})
    engine = engines()
    got = engine.fetch([server.url + path for path in [*cut, *shown]])
    for path in cut:
        attempt = got[server.url + path]
        assert attempt is not None and (attempt.ok, attempt.reason, attempt.transient) == (
            False, CUT_SHORT_ON_THE_SERVER, True), (path, attempt)
    for path, (body, _kind) in shown.items():
        attempt = got[server.url + path]
        assert attempt is not None and attempt.ok and attempt.bytes == len(body), (path, attempt)
    assert sorted(p.name for p in engine.store.root.rglob("*") if p.is_file()) == sorted(
        path.lstrip("/") for path in shown)


def test_a_206_of_the_whole_file_is_stored_and_one_of_a_part_is_not(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """No Range is asked for; a server that answers 206 all the same, its one range
    every byte, sent the image, and a browser shows it: it failed as "HTTP 206", for
    good. A 203 (a proxy's copy) is the whole file too. A part of it is not stored."""
    size = len(PNG)
    answers = {"/whole.png": (206, PNG, f"bytes 0-{size - 1}/{size}"),
               "/copy.png": (203, PNG, None),
               "/part.png": (206, PNG[:100], f"bytes 0-99/{size}"),
               "/no-range.png": (206, PNG, None)}
    for path, (status, body, content_range) in answers.items():
        headers = {"Content-Range": content_range} if content_range else {}
        server.routes[path] = functools.partial(
            lambda h, status, body, headers: h.send_body(status, body, "image/png", headers),
            status=status, body=body, headers=headers)
    engine = engines()
    got = engine.fetch([server.url + path for path in answers])
    for path in ("/whole.png", "/copy.png"):
        attempt = got[server.url + path]
        assert attempt is not None and attempt.ok and attempt.bytes == size, (path, attempt)
    for path in ("/part.png", "/no-range.png"):
        attempt = got[server.url + path]
        assert attempt is not None and (attempt.ok, attempt.reason) == (False, "HTTP 206"), (
            path, attempt)
    assert sorted(p.name for p in engine.store.root.rglob("*") if p.is_file()) == [
        "copy.png", "whole.png"]


@contextlib.contextmanager
def _files_all_open() -> Iterator[None]:
    """This process may open one file more (the lowest free descriptor), no second."""
    # Once the fixture server's threads closed their side of the requests before: a
    # descriptor freed below the limit after it is set would let a request have two.
    settled_at = time.monotonic() + 3.0
    open_now = sum(1 for _ in Path("/proc/self/fd").iterdir())
    while time.monotonic() < settled_at:
        time.sleep(0.1)
        open_then, open_now = open_now, sum(1 for _ in Path("/proc/self/fd").iterdir())
        if open_now == open_then:
            break
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    free = os.open(os.devnull, os.O_RDONLY)
    os.close(free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (free + 1, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_download_that_finds_no_file_descriptor_says_so(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """Out of descriptors (ulimit -n), pycurl's dup of the socket given to libcurl failed
    without a word, and every image failed as "connection error: Failed to connect to
    HOST: Could not connect to server", of a server that was there."""
    serve_routes(server, {"/a.png": ("image/png", PNG)})
    engine = engines()
    with _files_all_open():
        got = engine.fetch([server.url + "/a.png"])[server.url + "/a.png"]
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert got is not None and not got.ok and got.transient, got
    assert got.reason.startswith("too many open files (this process may open "), got.reason
    assert got.reason.endswith(": ulimit -n; or the system's, fs.file-max); raise that "
                               "limit, or make fewer requests at once"), got.reason
    assert str(soft) not in got.reason, "the limit it had then, not the one restored"
    again = engine.fetch([server.url + "/a.png"])[server.url + "/a.png"]
    assert again is not None and again.ok, again


def test_a_page_that_finds_no_file_descriptor_says_so(server: FixtureServer) -> None:
    """The master's page requests alike: 86 pages of a crawl at ulimit -n 32 failed as
    "Could not connect to server"."""
    serve_routes(server, {"/": ("text/html", b"<p>a page</p>")})
    client = EasyClient(LOOPBACK, RequestOptions(), keep_alive=False)
    try:  # its own descriptors made first; no connection kept for the next request
        client.get(server.url + "/", accept="*/*", max_bytes=100_000, timeout=10)
        with _files_all_open():
            page = fetch_page(client, server.url + "/", timeout=10, max_bytes=100_000,
                              hop_refusal=lambda *_: None)
    finally:
        client.close()
    assert page.skipped.startswith("too many open files (this process may open "), page
    assert page.transient, page


def test_an_svg_saved_as_utf16_is_stored(server: FixtureServer,
                                        engines: Callable[..., Engine]) -> None:
    """Browsers show it; it failed as "not an image"."""
    svg = ('\ufeff<?xml version="1.0" encoding="UTF-16"?>\n<svg xmlns="http://www.w3.org/'
           '2000/svg" width="4" height="3"><rect width="4" height="3"/></svg>')
    server.routes["/wide.svg"] = lambda h: h.send_body(200, svg.encode("utf-16-le"),
                                                       "image/svg+xml")
    attempt = engines().one(server.url + "/wide.svg")
    assert attempt.ok and (attempt.width, attempt.height) == (4, 3), attempt


def test_gzip_members_one_after_another_are_one_body(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """RFC 1952: concatenated members are one gzip file (gunzip reads them all); libcurl
    stopped after the first."""
    half = len(PNG) // 2
    members = gzip.compress(PNG[:half]) + gzip.compress(PNG[half:])
    server.routes["/members.png"] = lambda h: h.send_body(200, members, "image/png",
                                                          {"Content-Encoding": "x-gzip"})
    chain = gzip.compress(brotli.compress(PNG))  # br first, then gzip over it
    server.routes["/chain.png"] = lambda h: h.send_body(200, chain, "image/png",
                                                        {"Content-Encoding": "br, gzip"})
    got = engines().fetch([server.url + "/members.png", server.url + "/chain.png"])
    for url, attempt in got.items():
        assert attempt is not None and attempt.ok and attempt.bytes == len(PNG), (url, attempt)


def test_repeated_content_encodings_are_one_list(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """RFC 9110: header lines of one name are one list. The last line alone was taken: a
    PNG gzipped twice was decoded once, and failed as "not an image"."""
    server.routes["/twice.png"] = gzipped_twice(PNG, "image/png")
    server.routes["/none.png"] = lambda h: h.send_body(200, PNG, "image/png",
                                                       {"Content-Encoding": "none"})
    for attempt in engines().fetch([server.url + "/twice.png",
                                    server.url + "/none.png"]).values():
        assert attempt is not None and attempt.ok and attempt.bytes == len(PNG), attempt


def test_an_encoding_not_decoded_is_a_bad_response(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    server.routes["/lzw.png"] = lambda h: h.send_body(200, PNG, "image/png",
                                                      {"Content-Encoding": "compress"})
    attempt = engines().one(server.url + "/lzw.png")
    assert (attempt.reason, attempt.kind, attempt.transient) == (
        "bad response: unsupported content encoding 'compress'", FailureKind.BAD_RESPONSE,
        False), attempt


def test_a_url_stored_before_with_other_bytes_is_described_as_the_file_kept(
        tmp_path: Path) -> None:
    """A rerun over stored images (--fresh), or a download whose lease ran out: the file
    there is kept, and its size and hash were reported, but its dimensions and type were
    the dropped body's."""
    store = Store(tmp_path / "out")
    first = sinks_into(store, Limits())(("http://h/x.png", 1), 0.0)
    first.feed(png(20, 10, 1))
    assert first.finish("image/png").width == 20
    again = sinks_into(store, Limits())(("http://h/x.png", 1), 0.0)
    again.feed(png(40, 30, 2))
    kept = again.finish("image/webp")  # what the server says now
    assert kept.ok and kept.skipped
    on_disk = (tmp_path / "out" / str(kept.path)).read_bytes()
    assert (kept.bytes, kept.sha256) == (len(on_disk), hashlib.sha256(on_disk).hexdigest())
    assert (kept.width, kept.height, kept.content_type) == (20, 10, "image/png")


def test_the_content_type_reported_is_the_stored_files_whatever_the_server_says(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """A PNG served as image/jpeg or text/plain is stored as the PNG it is, and the
    manifest said it was a JPEG, or text (the gallery then named it so). The server's
    own words stay where they name the type the file is, by another of its names too
    (an icon's registered image/vnd.microsoft.icon was reported as image/x-icon)."""
    declared = {"/as-jpeg.png": "image/jpeg", "/as-text.png": "text/plain",
                "/as-nothing.png": "", "/as-itself.png": "image/png; name=x",
                "/as-itself-upper.png": "Image/PNG", "/as-jpg.png": "image/jpg",
                "/as-x-png.png": "image/x-png", "/as-jpg.jpg": "image/jpg",
                "/as-registered.ico": "image/vnd.microsoft.icon"}
    bodies = {".png": PNG, ".jpg": JPEG, ".ico": make_ico(16, 16)}
    serve_routes(server, {path: (kind, bodies[path[path.rindex("."):]])
                          for path, kind in declared.items()})
    got = engines().fetch([server.url + path for path in declared])
    described = {}
    for path in declared:
        attempt = got[server.url + path]
        assert isinstance(attempt, Attempt) and attempt.ok, attempt
        described[path] = attempt.content_type
    assert described == {"/as-jpeg.png": "image/png", "/as-text.png": "image/png",
                         "/as-nothing.png": "image/png",
                         "/as-itself.png": "image/png",  # (its parameters gone)
                         "/as-itself-upper.png": "image/png", "/as-jpg.png": "image/png",
                         "/as-x-png.png": "image/x-png", "/as-jpg.jpg": "image/jpg",
                         "/as-registered.ico": "image/vnd.microsoft.icon"}


def test_a_failure_of_the_servers_reports_the_image_stored_for_its_url(tmp_path: Path) -> None:
    """An earlier try stored the image and was never reported (its worker killed): a
    later try the server fails stands for that file; one the crawl's own rules refuse,
    or the worker's trouble, does not."""
    store = Store(tmp_path / "out")
    url = "http://h/x.png"
    missing = status_failure(url, 0.0, 404, None)
    assert kept_instead(store, missing) == missing  # nothing stored yet
    sink = sinks_into(store, Limits())((url, 1), 0.0)
    sink.feed(PNG)
    stored = sink.finish("image/png")
    kept = kept_instead(store, missing)
    assert kept.ok and kept.skipped and kept.url == url
    assert (kept.path, kept.bytes, kept.sha256) == (stored.path, stored.bytes, stored.sha256)
    assert (kept.content_type, kept.width, kept.height) == ("image/png", 40, 30)
    for kind in (FailureKind.TOO_LARGE, FailureKind.DIMENSIONS, FailureKind.BLOCKED,
                 FailureKind.REDIRECT, FailureKind.HTML_PAGE, FailureKind.STORAGE,
                 FailureKind.STOPPED, FailureKind.WORKER_ERROR):
        refused = failure(url, 0.0, "refused", kind)
        assert kept_instead(store, refused) == refused, kind


def test_a_later_try_that_brings_another_type_reports_the_image_stored_first(
        tmp_path: Path) -> None:
    """An earlier try stored a PNG and was never reported; the second try gets a JPEG,
    whose name differs. The PNG is the URL's result, described as it is, and no JPEG is
    stored beside it in no line of the manifest."""
    store = Store(tmp_path / "out")
    url = "http://h/picture"
    first = sinks_into(store, Limits())((url, 1), 0.0)
    first.feed(PNG)
    stored = first.finish("image/png")
    second = sinks_into(store, Limits())((url, 2), 0.0)
    second.feed((SITE / "photos" / "cat.jpg").read_bytes())
    kept = second.finish("image/jpeg")
    assert kept.ok and kept.skipped
    assert (kept.path, kept.bytes, kept.sha256) == (stored.path, stored.bytes, stored.sha256)
    assert (kept.content_type, kept.width, kept.height) == ("image/png", 40, 30)
    assert [p for p in (tmp_path / "out").glob("images/**/*") if p.is_file()] == [
        tmp_path / "out" / str(stored.path)]


def test_absurd_header_numbers_give_reports_the_master_takes(
        engines: Callable[..., Engine]) -> None:
    """A Content-Length of 5,000 digits (int() refuses over 4,300: a traceback, then a
    reason too long for a report) and a Retry-After of 400 (float(): inf, no number of
    seconds): each report was refused by the master, and the image went round for ever."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        if b"/huge.png" in request:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: " + b"9" * 400
                         + b"\r\nContent-Length: 0\r\n\r\n")
        return False

    base, done = raw_server(answer)
    try:
        got = engines().fetch([f"{base}/huge.png", f"{base}/busy.png"])
    finally:
        done.set()
    huge, busy = got[f"{base}/huge.png"], got[f"{base}/busy.png"]
    assert isinstance(huge, Attempt) and huge.kind is FailureKind.TOO_LARGE, huge
    assert huge.reason == f"too large: 999999999999... (5000 digits) bytes > {Limits().max_bytes}"
    assert isinstance(busy, Attempt) and (busy.reason, busy.retry_after) == ("HTTP 503", None)
    for attempt in (huge, busy):
        attempt_from_report(attempt.to_wire())  # the master takes it


def test_connection_failures_are_transient(engines: Callable[..., Engine]) -> None:
    closed = f"http://127.0.0.1:{free_port()}/nobody-listens.png"
    attempt = engines().one(closed)
    assert (attempt.ok, attempt.transient, attempt.kind) == (False, True,
                                                             FailureKind.CONNECTION)
    assert attempt.reason.startswith("connection error")


def test_a_keep_alive_connection_the_server_closed_is_retried_afresh(
        engines: Callable[..., Engine]) -> None:
    """A server that keeps each connection for one answer but does not say so."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(ok_answer())
        time.sleep(0.05)
        return False  # then close, although the answer promised keep-alive

    base, done = raw_server(answer)
    try:
        engine = engines(slots=1)
        for n in range(5):
            attempt = engine.one(f"{base}/{n}.png")
            assert attempt.ok, attempt
    finally:
        done.set()


def test_failure_reasons_name_the_cause_once(engines: Callable[..., Engine]) -> None:
    """One cause is one reason: no libcurl timing in it ("after 0 ms", "after 3 ms")
    to split failures_by_reason, and an answer without a status line is a bad
    response, not an invalid URL."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(PNG)  # HTTP/0.9: the body alone
        return False

    base, done = raw_server(answer)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    try:
        engine = engines()
        nine = engine.one(f"{base}/x.png")
        refused = [engine.one(f"http://127.0.0.1:{closed}/{n}.png") for n in range(3)]
    finally:
        done.set()
    assert (nine.reason, nine.kind, nine.transient) == (
        "bad response: no status line (HTTP/0.9)", FailureKind.BAD_RESPONSE, False)
    [reason] = {a.reason for a in refused}  # libcurl said "after 0 ms", "after 1 ms"...
    assert reason.startswith("connection error: Failed to connect to 127.0.0.1") \
        and str(closed) in reason and " ms" not in reason, reason


def test_a_status_line_of_an_http_version_libcurl_refuses_is_a_bad_response(
        engines: Callable[..., Engine]) -> None:
    """libcurl files "HTTP/1.2 200" (or "HTTP/1.1  200", two spaces) under the code of
    a URL of another scheme: the image was said to have an invalid URL, not http or
    https, when its server answered in a version libcurl does not speak."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        status = {b"/minor.png": b"HTTP/1.2 200 OK", b"/spaces.png": b"HTTP/1.1  200 OK",
                  b"/old.png": b"HTTP/0.9 200 OK"}[request.split(b" ")[1]]
        conn.sendall(ok_answer().replace(b"HTTP/1.1 200 OK", status, 1))
        return False

    assert failures_from(engines(), answer, ["/minor.png", "/spaces.png", "/old.png"]) == {
        ("bad response: HTTP version not supported", FailureKind.BAD_RESPONSE, False)}


def test_a_status_out_of_http_range_is_a_bad_response_for_images_and_pages(
        engines: Callable[..., Engine]) -> None:
    """libcurl reads "HTTP/1.1 4040 Not Found" as status 4040: an image failed "HTTP
    4040" and was tried again as if a 5xx, a page was skipped "HTTP 4040" for a retry."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        status = {b"/four-digits.png": b"HTTP/1.1 4040 Not Found",
                  b"/six-hundred.png": b"HTTP/1.1 600 Odd"}[request.split(b" ")[1]]
        conn.sendall(ok_answer().replace(b"HTTP/1.1 200 OK", status, 1))
        return False

    assert failures_from(engines(), answer, ["/four-digits.png", "/six-hundred.png"]) == {
        (f"bad response: status {status}, not an HTTP status (100-599)",
         FailureKind.BAD_RESPONSE, False) for status in (4040, 600)}

    def page_answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 5030 Busy\r\nContent-Type: text/html\r\n"
                     b"Content-Length: 4\r\n\r\n<p>x")
        return False

    base, done = raw_server(page_answer)
    client = EasyClient(LOOPBACK, RequestOptions())
    try:
        page = fetch_page(client, base + "/", timeout=10, max_bytes=100_000,
                          hop_refusal=lambda *_: None)
    finally:
        client.close()
        done.set()
    assert (page.skipped, page.transient) == (
        "bad response: status 5030, not an HTTP status (100-599)", False), page


def test_broken_chunked_framing_is_a_bad_response_said_one_way(
        engines: Callable[..., Engine]) -> None:
    """libcurl files a chunk size that is no number, or a chunk not followed by its line
    end, under a broken connection, quoting the server's byte ("not a hex digit: 0x7a"):
    tried again each time, and one reason per byte in failures_by_reason."""
    sizes = {b"/letters.png": b"zz", b"/negative.png": b"-5", b"/zeros.png": b"0" * 20,
             b"/past-64-bits.png": b"f" * 16}

    def answer(conn: socket.socket, request: bytes) -> bool:
        path = request.split(b" ")[1]
        chunks = (b"%x\r\n%sXX" % (len(PNG), PNG) if path == b"/no-line-end.png"
                  else b"%s\r\n%s\r\n" % (sizes[path], PNG))
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n"
                     % chunks)
        return False

    paths = [path.decode() for path in [*sizes, b"/no-line-end.png"]]
    assert failures_from(engines(), answer, paths) == {
        ("bad response: broken chunked encoding", FailureKind.BAD_RESPONSE, False)}


def test_bodies_cut_short_of_their_content_length_are_one_reason_whatever_is_missing(
        engines: Callable[..., Engine]) -> None:
    """libcurl counts the bytes missing in its message ("end of response with 1591 bytes
    missing"): a server closing its connections early made one reason per image in
    failures_by_reason, as HTTP/2's stream numbers once did."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        kept = {b"/half.png": len(PNG) // 2, b"/most.png": len(PNG) - 7}[request.split(b" ")[1]]
        conn.sendall(ok_answer()[:-len(PNG) + kept])
        return False

    assert failures_from(engines(), answer, ["/half.png", "/most.png"]) == {(
        "connection broken: body cut short (the connection closed before its Content-Length)",
        FailureKind.CONNECTION, True)}


def test_http2_failures_of_one_cause_are_one_reason_whatever_the_stream() -> None:
    """libcurl numbers the HTTP/2 stream (and the frame's length) in its messages: a
    server resetting every image's stream made one reason per image."""
    from crawler.fetch.engine import CURLE_HTTP2_STREAM, H2_ENDED_SHORT, curl_failure

    reset = {curl_failure(CURLE_HTTP2_STREAM, f"HTTP/2 stream {n} reset by server (error "
                                              "0x8 CANCEL)")[1] for n in (1, 3, 2001)}
    assert reset == {"connection broken: HTTP/2 stream error: HTTP/2 stream reset by "
                     "server (error 0x8 CANCEL)"}, reset
    invalid = {curl_failure(CURLE_HTTP2_STREAM, f"[HTTP2] [{n}] received invalid frame: "
                            f"FRAME[DATA, len={size}, eos=0, padlen=0], error -505: Protocol "
                            "error")[1] for n, size in ((1, 11950), (7, 80))}
    assert invalid == {"connection broken: HTTP/2 stream error: [HTTP2] received invalid "
                       "frame: FRAME[DATA, len=N, eos=0, padlen=0], error -505: Protocol "
                       "error"}, invalid
    # A stream that ended short of its Content-Length is a body cut short, as over HTTP/1.1.
    short = {curl_failure(CURLE_HTTP2_STREAM, f"[HTTP2] [{n}] received invalid frame: "
                          f"FRAME[{frame}, len=80, {flags}eos=1{padding}], error -532: "
                          "Violation in HTTP messaging rule")
             for n, frame, flags, padding in ((1, "DATA", "", ", padlen=0"),
                                              (3, "HEADERS", "hend=1, ", ""))}
    assert short == {(FailureKind.CONNECTION, H2_ENDED_SHORT, True)}, short


def test_http_1_0_answers_and_extra_bytes(engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        target = request.split(b" ")[1]
        if target == b"/old.png":
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(PNG), PNG))
            return False
        if target == b"/no-length.png":
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n%s" % PNG)
            return False
        conn.sendall(ok_answer() + b"EXTRA")
        return True

    base, done = raw_server(answer)
    try:
        engine = engines(slots=1)
        got = engine.fetch([f"{base}/old.png", f"{base}/no-length.png", f"{base}/extra.png"])
        after = engine.one(f"{base}/after.png")  # the connection with extra bytes is not reused
    finally:
        done.set()
    for attempt in [*got.values(), after]:
        assert isinstance(attempt, Attempt) and attempt.ok and attempt.bytes == len(PNG), attempt


def fetched_without_length(engine: Engine, bodies: dict[bytes, bytes], head: bytes = b""
                           ) -> tuple[str, dict[str, Attempt | None]]:
    """``bodies``, by path, each answered over HTTP/1.0 with ``head`` and no length (the
    closed connection ends it), fetched by ``engine``: the server's address and results."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.0 200 OK\r\n" + head + b"\r\n" + bodies[request.split(b" ")[1]])
        return False

    base, done = raw_server(answer)
    try:
        return base, engine.fetch([f"{base}{path.decode()}" for path in bodies])
    finally:
        done.set()


def test_a_body_without_length_cut_short_is_not_stored(engines: Callable[..., Engine],
                                                        tmp_path: Path) -> None:
    """A connection closed (or an HTTP/2 stream reset "without error") halfway through a
    body that said no length looks complete to libcurl: half a picture was stored as a
    success. Such a body must reach its format's end; one whose length was said is
    judged by libcurl, and a whole one without a length is stored."""
    jpeg = (SITE / "photos" / "cat.jpg").read_bytes()
    # Over a mebibyte: kept in a partial file as it comes, and read back to be judged.
    extra = bytes(range(256)) * 6000
    big = (PNG[:33] + struct.pack(">I", len(extra)) + b"prIv" + extra
           + struct.pack(">I", zlib.crc32(b"prIv" + extra)) + PNG[33:])
    bodies = {b"/half.png": PNG[: len(PNG) // 2], b"/half.jpg": jpeg[: len(jpeg) // 2],
              b"/half-big.png": big[:-20], b"/whole.jpg": jpeg, b"/whole.png": PNG,
              b"/whole-big.png": big}

    base, got = fetched_without_length(engines(limits=Limits(max_bytes=10_000_000)), bodies,
                                       b"Content-Type: image/png\r\n")
    for name in ("half.png", "half.jpg", "half-big.png"):
        attempt = got[f"{base}/{name}"]
        assert isinstance(attempt, Attempt) and not attempt.ok, attempt
        assert (attempt.reason, attempt.kind, attempt.transient) == (
            "connection broken: body cut short (the image stops before its end)",
            FailureKind.CONNECTION, True)
    for name, body in (("whole.jpg", jpeg), ("whole.png", PNG), ("whole-big.png", big)):
        attempt = got[f"{base}/{name}"]
        assert isinstance(attempt, Attempt) and attempt.ok and attempt.bytes == len(body)


NESTED_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
              b'<svg width="10" height="10"><rect width="10" height="10" fill="red"/></svg>'
              b'<svg x="10" width="10" height="10"><rect width="10" height="10" fill="blue"/>'
              b'</svg></svg>')


def test_a_body_without_length_cut_where_a_part_of_it_ends_is_not_stored(
        engines: Callable[..., Engine]) -> None:
    """Cut where a part of the picture ends, a body looked whole: an SVG that draws its
    icons in <svg> elements of their own, just after one's closing tag (it ended on
    "</svg>" as a whole one does); an animation that plays once, between its frames (as a
    still picture whose encoder left the trailer out). The part was stored as a success."""
    animation = animation_played_once(2, delay=50)
    bodies = {b"/cut.svg": NESTED_SVG[:NESTED_SVG.index(b"</svg>") + len(b"</svg>")],
              b"/whole.svg": NESTED_SVG,
              b"/cut.gif": animation_played_once(1, delay=50)[:-1],
              b"/whole.gif": animation}

    engine = engines()
    base, got = fetched_without_length(engine, bodies)
    for name in ("cut.svg", "cut.gif"):
        attempt = got[f"{base}/{name}"]
        assert isinstance(attempt, Attempt) and (attempt.ok, attempt.reason,
                                                 attempt.transient) == (
            False, "connection broken: body cut short (the image stops before its end)", True)
    for name in ("whole.svg", "whole.gif"):
        attempt = got[f"{base}/{name}"]
        assert isinstance(attempt, Attempt) and attempt.ok, attempt
    stored = {p.suffix: p.read_bytes() for p in (engine.store.root / "images").rglob("*")
              if p.is_file()}
    assert stored == {".svg": NESTED_SVG, ".gif": animation}


def test_a_length_libcurl_does_not_read_is_no_length_said(engines: Callable[..., Engine]) -> None:
    """A space before the colon: libcurl reads no Content-Length or Transfer-Encoding
    there (RFC 9112 allows none), and takes the closed connection for the body's end;
    the engine read the field, took the body's length as said, and stored half a
    picture as a success."""
    heads = {b"/spaced-length.png": b"Content-Length : %d\r\n" % len(PNG),
             b"/tabbed-length.png": b"Content-Length\t: %d\r\n" % len(PNG),
             b"/spaced-chunked.png": b"Transfer-Encoding : chunked\r\n"}

    def answer(conn: socket.socket, request: bytes) -> bool:
        path = request.split(b" ")[1]
        body = PNG if path == b"/whole.png" else PNG[:len(PNG) // 2]
        conn.sendall(b"HTTP/1.1 200 OK\r\n%s\r\n%s" % (heads.get(path, heads[
            b"/spaced-length.png"]), body))
        return False

    base, done = raw_server(answer)
    try:
        engine = engines()
        got = engine.fetch([f"{base}{path.decode()}" for path in [*heads, b"/whole.png"]])
    finally:
        done.set()
    for path in heads:
        attempt = got[f"{base}{path.decode()}"]
        assert isinstance(attempt, Attempt) and (attempt.reason, attempt.transient) == (
            "connection broken: body cut short (the image stops before its end)", True), attempt
    whole = got[f"{base}/whole.png"]
    assert isinstance(whole, Attempt) and whole.ok and whole.bytes == len(PNG), whole
    assert [p.name for p in engine.store.root.rglob("*.png")] == ["whole.png"]


def test_the_address_guard_applies(server: FixtureServer, engines: Callable[..., Engine]) -> None:
    url = server.url + "/images/blue.png"
    attempt = engines(policy=AddressPolicy()).one(url)
    assert not attempt.ok and attempt.kind is FailureKind.BLOCKED
    assert attempt.reason == ("refused to connect to 127.0.0.1 (127.0.0.1): loopback address "
                              "not allowed (see security.allow_networks)")
    assert server.connections == 0  # type: ignore[attr-defined]


# What a server writes as raw UTF-8 and as Latin-1 bytes, given to http.server as the
# Latin-1 text it encodes them from.
RAW_UTF8_LOCATION = "/caf\u00e9.png".encode().decode("latin-1")
RAW_LATIN1_LOCATION = "/caf\u00e9.png?latin"


def test_a_location_with_raw_bytes_past_ascii_is_followed_as_its_bytes_say(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    """Read as Latin-1 text, raw UTF-8 "\u00e9" went out as %C3%83%C2%A9: as curl does, the
    bytes are percent-encoded as they came."""
    server.routes["/caf%C3%A9.png"] = lambda h: h.send_body(200, PNG, "image/png")
    server.routes["/utf8.png"] = lambda h: h.send_body(301, b"", "text/plain",
                                                       {"Location": RAW_UTF8_LOCATION})
    server.routes["/latin1.png"] = lambda h: h.send_body(301, b"", "text/plain",
                                                         {"Location": RAW_LATIN1_LOCATION})
    got = engines().fetch([server.url + "/utf8.png", server.url + "/latin1.png"])
    moved = got[server.url + "/utf8.png"]
    assert isinstance(moved, Attempt) and moved.ok, moved
    assert "/caf%C3%A9.png" in server.paths()
    assert "/caf%E9.png?latin" in server.paths()  # the server's own bytes, not a guess


@pytest.mark.loopback_only
def test_the_address_guard_applies_to_every_redirect_hop(
        server: FixtureServer, make_server: Callable[[], FixtureServer],
        engines: Callable[..., Engine]) -> None:
    other = make_server()  # on 127.0.0.2 would need an alias; a port of its own will do
    port = other.server_address[1]
    server.routes["/to-localhost.png"] = lambda h: h.send_body(
        302, b"", "text/plain", {"Location": f"http://localhost:{port}/images/blue.png"})
    server.routes["/to-private.png"] = lambda h: h.send_body(
        302, b"", "text/plain", {"Location": "http://10.255.255.1/x.png"})
    server.routes["/loop.png"] = lambda h: h.send_body(302, b"", "text/plain",
                                                       {"Location": "/loop.png"})
    server.routes["/bad.png"] = lambda h: h.send_body(302, b"", "text/plain",
                                                      {"Location": "http://[oops/"})
    only_127_0_0_1 = AddressPolicy(frozenset({"public"}), ("127.0.0.1/32",))
    got = engines(policy=only_127_0_0_1).fetch(
        [server.url + p for p in ("/to-localhost.png", "/to-private.png", "/loop.png",
                                  "/bad.png")])
    to_localhost = got[server.url + "/to-localhost.png"]
    assert isinstance(to_localhost, Attempt)
    if to_localhost.ok:  # localhost resolved to 127.0.0.1 only: allowed
        assert other.paths() == ["/images/blue.png"]
    else:  # ::1 first: refused before any byte went there
        assert to_localhost.kind is FailureKind.BLOCKED
    private = got[server.url + "/to-private.png"]
    assert isinstance(private, Attempt) and private.kind is FailureKind.BLOCKED
    assert private.reason.startswith(  # at a redirect, said as such
        "redirected to http://10.255.255.1/x.png: refused to connect to 10.255.255.1 "
        "(10.255.255.1): private address")
    loop = got[server.url + "/loop.png"]
    assert isinstance(loop, Attempt) and (loop.reason, loop.kind) == ("more than 10 redirects",
                                                                      FailureKind.REDIRECT)
    assert server.paths().count("/loop.png") == 11
    bad = got[server.url + "/bad.png"]
    assert isinstance(bad, Attempt) and bad.reason.startswith("bad redirect to")


@pytest.mark.parametrize("location", ["", "   "])
def test_a_redirect_with_an_empty_location_is_its_own_answer(
        server: FixtureServer, engines: Callable[..., Engine], location: str) -> None:
    """As libcurl, an empty Location is none: followed, it led back to the same URL ten
    times over, to end in "more than 10 redirects". Its failure says what was wrong
    ("HTTP 302" alone did not), and one at a redirect's target says where it came."""
    server.routes["/empty.png"] = lambda h: h.send_body(302, b"", "text/plain",
                                                        {"Location": location})
    server.routes["/to-empty.png"] = lambda h: h.send_body(301, b"", "text/plain",
                                                           {"Location": "/empty.png"})
    server.routes["/to-missing.png"] = lambda h: h.send_body(302, b"", "text/plain",
                                                             {"Location": "/nothere.png"})
    attempt = engines().one(server.url + "/empty.png")
    assert (attempt.reason, attempt.kind) == (
        "HTTP 302: a redirect without a Location (nowhere to go)", FailureKind.STATUS)
    assert server.paths() == ["/empty.png"]
    attempt = engines().one(server.url + "/to-empty.png")
    assert attempt.reason == (f"redirected to {server.url}/empty.png: HTTP 302: a redirect "
                              "without a Location (nowhere to go)")
    missing = engines().one(server.url + "/to-missing.png")
    assert (missing.reason, missing.kind, missing.transient) == (
        f"redirected to {server.url}/nothere.png: HTTP 404", FailureKind.STATUS, False)


def test_a_redirect_target_the_caller_refuses_is_not_fetched(
        server: FixtureServer, tmp_path: Path) -> None:
    server.routes["/go.png"] = lambda h: h.send_body(302, b"", "text/plain",
                                                     {"Location": "/private/x.png"})
    results: queue.SimpleQueue[list[tuple[str, Attempt | None]]] = queue.SimpleQueue()
    engine = CurlEngine(slots=1, new_sink=sinks_into(Store(tmp_path / "out"), Limits()),
                        limits=Limits(), policy=LOOPBACK,
                        options=RequestOptions(), report=results.put, stop=threading.Event(),
                        check_hop=lambda url, verdict, first: verdict(
                            HopRefusal("disallowed by robots.txt") if "/private/" in url
                            else None))
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        engine.submit([(server.url + "/go.png", 1)])
        [(_, attempt)] = results.get(timeout=20)
    finally:
        engine.close()
        thread.join(timeout=10)
    assert attempt is not None and attempt.kind is FailureKind.REDIRECT
    assert attempt.reason == f"redirected to {server.url}/private/x.png: disallowed by robots.txt"
    assert not attempt.transient
    assert server.paths() == ["/go.png"]


def test_a_redirect_is_followed_whatever_its_body_does(engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        target = request.split(b" ")[1]
        if target == b"/long.png":  # a body past what is drained to keep the connection
            body = b"x" * 200_000
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /img.png\r\nContent-Length: %d"
                         b"\r\n\r\n%s" % (len(body), body))
            return True
        if target == b"/stalled.png":  # a body that never comes
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /img.png\r\nContent-Length: 10"
                         b"\r\n\r\n")
            time.sleep(3)
            return False
        conn.sendall(ok_answer())
        return True

    base, done = raw_server(answer)
    try:
        got = engines(limits=Limits(read_timeout=0.5)).fetch([f"{base}/long.png",
                                                              f"{base}/stalled.png"])
    finally:
        done.set()
    for attempt in got.values():
        assert isinstance(attempt, Attempt) and attempt.ok and attempt.bytes == len(PNG), attempt


def test_a_bug_while_storing_fails_that_image_and_the_engine_goes_on(
        server: FixtureServer, engines: Callable[..., Engine],
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = Store.store_bytes

    def broken_for_blue(store: Store, url: str, *args: object, **kwargs: object) -> object:
        if "blue" in url:
            raise RuntimeError("a bug")
        return real(store, url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "store_bytes", broken_for_blue)
    engine = engines()
    blue = engine.one(server.url + "/images/blue.png")
    assert (blue.reason, blue.transient, blue.kind) == (
        "worker error: RuntimeError: a bug", True, FailureKind.WORKER_ERROR)
    assert engine.one(server.url + "/icons/star.gif").ok
    assert engine.thread.is_alive()


def test_a_stop_hands_back_what_is_in_flight(server: FixtureServer,
                                             engines: Callable[..., Engine]) -> None:
    def slow(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PNG)))
        handler.end_headers()
        handler.wfile.write(PNG[:100])
        handler.wfile.flush()
        time.sleep(3)

    server.routes["/slow.png"] = slow
    engine = engines(slots=1)
    engine.engine.submit([(server.url + "/slow.png", 1), (server.url + "/images/blue.png", 1)])
    time.sleep(0.5)
    engine.stop.set()
    got = dict([engine.results.get(timeout=5), engine.results.get(timeout=5)])
    assert got == {server.url + "/slow.png": None, server.url + "/images/blue.png": None}
    engine.thread.join(timeout=5)
    assert not [p for p in engine.store.partial_dir.rglob("*") if p.is_file()]


def test_tasks_submitted_after_the_engine_ended_are_handed_back(
        server: FixtureServer, engines: Callable[..., Engine]) -> None:
    engine = engines()
    engine.close()
    assert engine.fetch([server.url + "/images/blue.png"]) == {
        server.url + "/images/blue.png": None}


def test_a_bad_number_in_a_header_fails_that_image_and_the_engine_goes_on(
        engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        if b"/poison.png" in request:  # "²".isdigit() is true; int("²") fails
            conn.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n")
            return False
        if b"/bad-length.png" in request:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n")
            return False
        conn.sendall(ok_answer())
        return True

    base, done = raw_server(answer)
    try:
        engine = engines()
        first = engine.fetch([f"{base}/poison.png", f"{base}/bad-length.png"])
        fine = engine.one(f"{base}/fine.png")
    finally:
        done.set()
    busy = first[f"{base}/poison.png"]
    assert isinstance(busy, Attempt) and (busy.reason, busy.retry_after) == ("HTTP 503", None)
    bad = first[f"{base}/bad-length.png"]
    assert isinstance(bad, Attempt) and not bad.ok
    assert fine.ok
    assert engine.thread.is_alive()


def test_an_idle_connection_with_unasked_bytes_is_not_reused(
        engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        if b"/one.png" in request:
            conn.sendall(ok_answer())
            time.sleep(0.1)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")  # unasked
            return True
        conn.sendall(ok_answer(png(20, 10, 3)))
        return True

    base, done = raw_server(answer)
    try:
        engine = engines(slots=1)
        engine.fetch([f"{base}/one.png"])
        time.sleep(0.3)  # the stray answer has arrived on the idle connection
        two = engine.one(f"{base}/two.png")
    finally:
        done.set()
    assert two.ok and (two.width, two.height) == (20, 10)


def test_unasked_bytes_are_still_seen_once_the_client_has_made_many_connections(
        engines: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    """The descriptors of the connections made were forgotten all at once as their
    number reached FD_CACHE (4,096 in a worker's life): a connection kept idle then was
    no longer looked at, and the stray answer on it was stored as the next image. Now
    the least recently used is forgotten."""
    # Reached by four connections, not 4,096: one slot's, and two kept idle, at least.
    monkeypatch.setattr(curlsetup, "FD_CACHE", 2)
    stray = png(33, 33, 1)

    def answer(conn: socket.socket, request: bytes) -> bool:
        if b"/one.png" in request:
            conn.sendall(ok_answer())
            time.sleep(0.1)
            conn.sendall(ok_answer(stray))  # unasked
            return True
        conn.sendall(ok_answer(png(20, 10, 3)))
        return True

    (base, done), (second, done_second), (third, done_third), (fourth, done_fourth) = (
        raw_server(answer) for _ in range(4))
    try:
        engine = engines(slots=1)
        for url in (f"{base}/first.png", f"{second}/x.png", f"{base}/one.png"):
            assert engine.one(url).ok
        time.sleep(0.3)  # the stray answer has arrived on the idle connection
        for url in (f"{third}/y.png", f"{fourth}/z.png"):  # the cache is full
            assert engine.one(url).ok
        two = engine.one(f"{base}/two.png")
    finally:
        for stop in (done, done_second, done_third, done_fourth):
            stop.set()
    assert two.ok and (two.width, two.height) == (20, 10), two


def test_a_client_with_more_connections_than_the_cache_remembers_each_of_them() -> None:
    """4,096 connections were remembered whatever the client: a worker with more slots
    (worker.threads above 1,365: each slot's connection, and two kept idle per slot)
    forgot connections libcurl still kept, and a stray answer on one was stored."""
    stray, ours = socket.socketpair()
    try:
        ours.sendall(b"HTTP/1.1 200 OK\r\n")  # bytes on an idle connection: unasked
        first = ("127.0.0.1", 40000, "127.0.0.1", 80)
        kept = KeptConnections(at_least=3 * 2000)
        kept.opened(first, stray.fileno())
        for port in range(1, 5000):
            kept.opened(("127.0.0.1", 40000 + port, "127.0.0.1", 80), -1)
        assert kept.unclean(first, "http://a.test/x.png")
    finally:
        stray.close()
        ours.close()


def test_an_error_whose_body_never_comes_keeps_its_status(
        engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\n")  # no body
        time.sleep(3)
        return False

    base, done = raw_server(answer)
    try:
        gone = engines(limits=Limits(read_timeout=0.5)).one(f"{base}/gone.png")
    finally:
        done.set()
    assert (gone.reason, gone.transient) == ("HTTP 404", False)


def test_odd_answers_are_failures_not_crashes(engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        target = request.split(b" ")[1]
        if target == b"/long-status.png":
            conn.sendall(ok_answer().replace(b"200 OK", b"2000 OK", 1))
        elif target == b"/no-content.png":
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        elif target == b"/bare-lf.png":
            conn.sendall(b"HTTP/1.1 200 OK\nContent-Length: %d\n\n%s" % (len(PNG), PNG))
        else:
            conn.sendall(b"ICY 200 OK\r\n\r\n" + PNG)
        return False

    base, done = raw_server(answer)
    try:
        got = engines(limits=Limits(read_timeout=5)).fetch(
            [f"{base}/long-status.png", f"{base}/no-content.png", f"{base}/bare-lf.png",
             f"{base}/icy.png"])
    finally:
        done.set()
    empty = got[f"{base}/no-content.png"]
    assert isinstance(empty, Attempt) and (empty.reason, empty.transient) == ("HTTP 204", False)
    bare = got[f"{base}/bare-lf.png"]
    assert isinstance(bare, Attempt) and bare.ok  # as browsers and urllib3 read it
    for name in ("long-status", "icy"):
        attempt = got[f"{base}/{name}.png"]
        assert isinstance(attempt, Attempt) and not attempt.ok, attempt


def test_a_switching_protocols_answer_not_asked_for_is_the_final_answer(
        engines: Callable[..., Engine]) -> None:
    """libcurl takes a 101 it did not ask for as the final answer, and what follows as
    its body: taken for an interim answer here, that body failed as a passing connection
    error, "Failure writing output to destination, passed 3222 returned 1844...", tried
    again each time."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + ok_answer())
        return False

    base, done = raw_server(answer)
    try:
        attempt = engines().one(f"{base}/upgraded.png")
    finally:
        done.set()
    assert (attempt.reason, attempt.kind, attempt.transient) == (
        "HTTP 101", FailureKind.STATUS, False), attempt


def test_a_head_past_libcurls_limits_is_a_bad_response_for_good(
        engines: Callable[..., Engine]) -> None:
    """A header line of 2 MB, 5,001 header lines, or 300 KB of head in all: libcurl
    refuses each, and the image failed as a passing connection error, said three ways
    ("connection error" alone, and one reason per head size: "307677 > 307200")."""
    heads = {b"/long-line.png": b"X-Big: " + b"a" * 2_000_000 + b"\r\n",
             b"/many-lines.png": b"".join(b"X-%d: v\r\n" % n for n in range(5001)),
             b"/large-head.png": b"".join(b"X-%d: %s\r\n" % (n, b"a" * 1000)
                                          for n in range(400))}

    def answer(conn: socket.socket, request: bytes) -> bool:
        with contextlib.suppress(OSError):  # libcurl may hang up before the end
            conn.sendall(ok_answer(extra=heads[request.split(b" ")[1]]))
        return False

    base, done = raw_server(answer)
    try:
        got = engines().fetch([f"{base}{path.decode()}" for path in heads])
    finally:
        done.set()
    for attempt in got.values():
        assert isinstance(attempt, Attempt)
        assert (attempt.reason, attempt.kind, attempt.transient) == (
            "bad response: head too large", FailureKind.BAD_RESPONSE, False), attempt


def test_a_body_larger_than_memory_holds_goes_through_a_partial_file(
        server: FixtureServer, engines: Callable[..., Engine],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SPILL_AT bytes a body is written as it arrives."""
    big = PNG + bytes(range(256)) * (3 * SPILL_AT // 256)  # a valid PNG head, 3x the limit
    server.routes["/big.png"] = lambda h: h.send_body(200, big, "image/png")
    spilled: list[int] = []
    real_spill = ImageSink._spill

    def counting_spill(sink: ImageSink) -> None:
        spilled.append(sink.size)
        real_spill(sink)

    monkeypatch.setattr(ImageSink, "_spill", counting_spill)
    engine = engines()
    attempt = engine.one(server.url + "/big.png")
    assert attempt.ok and attempt.bytes == len(big)
    assert (engine.store.root / str(attempt.path)).read_bytes() == big
    assert not [p for p in engine.store.partial_dir.rglob("*") if p.is_file()]
    assert len(spilled) == 1 and spilled[0] > SPILL_AT


# ----- the deadline, however the bytes trickle ----------------------------------------

DEADLINE = 1.5
TRICKLE_LIMITS = Limits(deadline=DEADLINE, read_timeout=5)


def trickle_bytes(conn: socket.socket, data: bytes, every: float) -> None:
    """Send ``data`` a byte at a time, for at most 10 s; stop when the peer goes."""
    for byte in data[: int(10 / every)]:
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(every)


def assert_cut_at_the_deadline(attempt: Attempt) -> None:
    assert (attempt.reason, attempt.transient, attempt.kind) == (
        f"too slow: not finished within {DEADLINE:g} s", True, FailureKind.TOO_SLOW)
    # Cut at the deadline, not when the server gave up: a bound on correctness, with room.
    assert attempt.elapsed_s < DEADLINE + 2.0


def test_a_response_head_trickled_a_byte_a_second_is_cut_at_the_deadline(
        engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        trickle_bytes(conn, ok_answer(extra=b"X-Padding: " + b"p" * 50 + b"\r\n"), 1.0)
        return False

    base, done = raw_server(answer)
    try:
        attempt = engines(limits=TRICKLE_LIMITS).one(f"{base}/head.png")
    finally:
        done.set()
    assert_cut_at_the_deadline(attempt)


def test_a_connection_never_accepted_is_cut_at_the_connect_timeout(
        engines: Callable[..., Engine]) -> None:
    """A listener whose queue is full drops the handshake (a host behind a firewall
    that drops packets does the same): cut at download.connect_timeout, and said so."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    filler = socket.create_connection(listener.getsockname()[:2], timeout=5)  # fills it
    try:
        attempt = engines(limits=Limits(connect_timeout=0.5, deadline=30)).one(
            f"http://127.0.0.1:{listener.getsockname()[1]}/x.png")
    finally:
        filler.close()
        listener.close()
    assert (attempt.reason, attempt.transient, attempt.kind) == (
        "timed out connecting", True, FailureKind.TIMEOUT), attempt
    assert attempt.elapsed_s < 10, "cut by the connect timeout, not the deadline"


def test_a_head_trickling_faster_than_the_read_timeout_is_not_silent(
        engines: Callable[..., Engine]) -> None:
    """A byte every 0.2 s is no silence, even while no line of the head is whole: the
    read timeout (1 s) does not cut it ("timed out"), the deadline does ("too slow")."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        trickle_bytes(conn, ok_answer(extra=b"X-Padding: " + b"p" * 50 + b"\r\n"), 0.2)
        return False

    base, done = raw_server(answer)
    try:
        attempt = engines(limits=Limits(deadline=DEADLINE, read_timeout=1)).one(
            f"{base}/head.png")
    finally:
        done.set()
    assert_cut_at_the_deadline(attempt)


def test_an_http_1_0_body_without_length_trickled_is_cut_at_the_deadline(
        engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\n\r\n" + PNG[:50])
        trickle_bytes(conn, PNG[50:], 0.2)
        return False

    base, done = raw_server(answer)
    try:
        attempt = engines(limits=TRICKLE_LIMITS).one(f"{base}/old.png")
    finally:
        done.set()
    assert_cut_at_the_deadline(attempt)


def test_a_redirect_to_a_trickling_close_answer_is_cut_at_the_deadline(
        engines: Callable[..., Engine]) -> None:
    def answer(conn: socket.socket, request: bytes) -> bool:
        if b"/start.png" in request:
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /slow.png\r\nContent-Length: 0\r\n\r\n")
            return True
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + PNG[:50])
        trickle_bytes(conn, PNG[50:], 0.2)
        return False

    base, done = raw_server(answer)
    try:
        attempt = engines(limits=TRICKLE_LIMITS).one(f"{base}/start.png")
    finally:
        done.set()
    assert_cut_at_the_deadline(attempt)


def test_a_timeout_on_a_redirects_target_of_another_host_names_that_host(
        engines: Callable[..., Engine]) -> None:
    """The host that did not answer is the one whose timeouts in a row count
    (download.host_timeouts): a redirect's target on another host, which reads the
    request and never answers, is named in the failed try; a timeout on the image's own
    host names none."""
    def hang(conn: socket.socket, request: bytes) -> bool:
        done_hung.wait(5)
        return False

    def redirect(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + hung + b"/x.png"
                     + b"\r\nContent-Length: 0\r\n\r\n")
        return True

    hung_base, done_hung = raw_server(hang)
    hung = hung_base.encode()
    base, done = raw_server(redirect)
    try:
        engine = engines(limits=Limits(read_timeout=0.3))
        redirected = engine.one(f"{base}/start.png")
        own = engine.one(f"{hung_base}/own.png")
    finally:
        done.set()
        done_hung.set()
    assert redirected.kind is FailureKind.TIMEOUT, redirected
    assert redirected.hop_host == hung_base.removeprefix("http://")
    assert attempt_from_report(redirected.to_wire()) == redirected  # a report carries it
    assert own.kind is FailureKind.TIMEOUT and own.hop_host is None, own


# ----- in a worker --------------------------------------------------------------------

def test_workers_fetch_through_the_engine_with_its_headers(site: FixtureServer, tmp_path: Path,
                                                           authkey: str) -> None:
    seen: list[dict[str, str]] = []
    inner = FixtureHandler.send_file

    def recording(handler: FixtureHandler) -> None:
        seen.append(dict(handler.headers.items()))
        inner(handler, handler.path)

    site.routes["/images/blue.png"] = recording
    result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "out"), "--local-workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(seen) == 1
    assert seen[0]["Accept"] == "image/*,*/*;q=0.5"
    assert "gzip" in seen[0]["Accept-Encoding"] and "br" in seen[0]["Accept-Encoding"]
    assert [p.read_bytes() for p in (tmp_path / "out").rglob("blue.png")] == [
        (SITE / "images" / "blue.png").read_bytes()]


def test_the_fast_lane_setting_and_flag_are_refused_saying_they_are_gone(
        tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[worker]\nfast_lane = true\n")
    result = run_crawler("worker", "127.0.0.1:1", "--connect-wait", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "worker.fast_lane is gone" in result.stderr and "libcurl" in result.stderr
    (tmp_path / "settings.toml").unlink()
    result = run_crawler("worker", "127.0.0.1:1", "--no-fast-lane", "--connect-wait", "0",
                         cwd=tmp_path)
    assert result.returncode == 2 and "--no-fast-lane is gone" in result.stderr


def test_a_worker_whose_engine_cannot_start_hands_its_urls_back(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import crawler.fetch.curl

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

        def no_engine_here(*args: object, **kwargs: object) -> None:
            raise RuntimeError("can't start new thread")

        worker = Worker(MasterClient((host, int(port)), authkey.encode()),
                        WorkerOptions(out_dir=out, threads=2, connect_wait=10))
        with monkeypatch.context() as patch, pytest.raises(
                WorkerFailed, match="cannot start the download engine"):
            patch.setattr(crawler.fetch.curl, "CurlEngine", no_engine_here)
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


def test_a_download_stuck_past_every_deadline_is_reported_and_not_renewed(
        tmp_path: Path) -> None:
    """Held URLs are what heartbeats renew: one the engine never reports must leave that set."""
    worker = Worker(MasterClient(("127.0.0.1", free_port()), b"k" * 32),
                    WorkerOptions(out_dir=tmp_path))
    worker._limits = Limits(deadline=1.0)
    worker._stuck_after = 5.0
    now = time.monotonic()
    worker._held = {"http://a.test/stuck.png": now - 6.0, "http://a.test/fine.png": now - 1.0}
    reports: list[dict[str, object]] = []
    worker._report_stuck(reports)
    assert [r["url"] for r in reports] == ["http://a.test/stuck.png"]
    stuck = Attempt.from_wire(reports[0])
    assert (stuck.reason, stuck.transient, stuck.kind) == (
        "too slow: not finished within 1 s", True, FailureKind.TOO_SLOW)
    assert set(worker._held) == {"http://a.test/fine.png"}
    # The engine's late word on it changes nothing: it was reported once.
    late = Attempt(url="http://a.test/stuck.png", ok=False, reason="timed out", transient=True,
                   kind=FailureKind.TIMEOUT)
    worker._done.put([("http://a.test/stuck.png", late)])
    released: list[str] = []
    worker._collect(reports, released, wait=0.0)
    assert len(reports) == 1 and released == []


def test_a_try_deferred_behind_its_lost_lease_is_timed_from_its_own_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL leased again while the engine still has the lost lease's try waits for that
    try; its own try's stuck clock starts when it begins, not at the lease: timed from
    the lease, the rest of the old try counted against it, and it was reported "too slow"
    (an attempt used up, its real result dropped) seconds into its own download."""
    worker = Worker(MasterClient(("127.0.0.1", free_port()), b"k" * 32),
                    WorkerOptions(out_dir=tmp_path))
    worker._limits = Limits(deadline=1.0)
    worker._stuck_after = 5.0
    begun: list[tuple[str, int]] = []
    monkeypatch.setattr(worker, "_begin", begun.extend)  # the engine's part: recorded
    url = "http://a.test/slow.png"
    worker._take([(url, 1)])
    with worker._answered:
        worker._lost.add(url)  # the lease went while the worker was silent
    worker._take([(url, 2)])
    assert begun == [(url, 1)], "the new lease's try waits for the old one"
    worker._held[url] -= 4.0  # the old try ends 4 s after the new lease
    reports: list[dict[str, object]] = []
    released: list[str] = []
    lost = Attempt(url=url, ok=False, reason="lease lost", transient=True)
    worker._done.put([(url, lost)])
    worker._collect(reports, released, wait=0.0)
    assert begun == [(url, 1), (url, 2)] and reports == [] and released == []
    worker._held[url] -= 2.0  # the new try, 2 s into its download
    worker._report_stuck(reports)
    assert reports == [] and url in worker._held


def test_failure_kinds_cross_the_wire_as_plain_text() -> None:
    attempt = Attempt(url="http://a.test/x.png", ok=False, reason="HTTP 404",
                      kind=FailureKind.STATUS)
    wire = attempt.to_wire()
    assert wire["kind"] == "status"
    assert Attempt.from_wire(wire) == attempt
    assert Attempt.from_wire({**wire, "kind": "from-a-newer-version"}).kind is None


def test_every_attempt_field_crosses_the_wire() -> None:
    # to_wire names the fields one by one: a field added to Attempt must be added there too.
    attempt = Attempt(url="http://a.test/x.png", ok=True, path="images/x.png", bytes=3,
                      sha256="ab", content_type="image/png", width=1, height=2,
                      elapsed_s=0.5, skipped=True)
    wire = attempt.to_wire()
    # Each sent only when set: a master of a version before it refuses a field it does
    # not know.
    assert set(wire) == ATTEMPT_FIELDS - {"retry_after_unread", "hop_host"}
    assert Attempt.from_wire(wire) == attempt
    unread = attempt._replace(ok=False, retry_after_unread="soon", hop_host="b.test")
    assert set(unread.to_wire()) == ATTEMPT_FIELDS
    assert Attempt.from_wire(unread.to_wire()) == unread
