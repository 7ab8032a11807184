"""Odd and hostile HTTP/2 servers (scripted with the ``h2`` package): images and pages.

A stream reset, one that stalls, a GOAWAY with images in flight, a head of endless
CONTINUATION frames, a body shorter than its Content-Length: each is one image's
(or page's) failure with a reason a user understands, within its deadlines, and
the other streams of the connection finish.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("h2")

import hpack

from crawler.config import Limits, Settings
from crawler.demo.site import png
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.engine import CURLE_HTTP2_STREAM, H2_ENDED_SHORT, curl_failure
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.master.pages import wants_html
from crawler.model.outcome import FailureKind

from . import pageclients
from .conftest import free_port, run_crawler
from .h2server import Connection, H2Server, Script, Stream, frame
from .test_curl import Engine, raw_server
from .tls import CertAuthority, make_ca, server_context

PNG = png(40, 30, 7)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


def trusting(ca: CertAuthority) -> RequestOptions:
    return RequestOptions.from_settings(Settings().with_values(
        {"http.ca_bundle": str(ca.ca_cert)}))


def image(stream: Stream, body: bytes = PNG, *, length: int | None = None) -> None:
    """A PNG answer; ``length``: the Content-Length said, if not the body's."""
    stream.head(200, (("content-type", "image/png"),
                      ("content-length", str(len(body) if length is None else length))))
    stream.body(body)


def test_a_stream_that_ends_short_of_its_content_length_is_a_body_cut_short(
        ca: CertAuthority, tmp_path: Path) -> None:
    """END_STREAM 100 bytes before the Content-Length: nghttp2's "received invalid frame:
    FRAME[DATA, len=N, eos=1, padlen=0], error -532: Violation in HTTP messaging rule"
    was the reason; it is the HTTP/1.1 answer cut short, and says so."""
    def short(stream: Stream) -> None:
        image(stream, length=len(PNG) + 100)

    with H2Server(server_context(ca), {"/short.png": short}, default=image) as server:
        engine = Engine(tmp_path / "out", options=trusting(ca))
        try:
            got = engine.fetch([server.base + "/short.png", server.base + "/fine.png"])
        finally:
            engine.close()
        replies = [pageclients.get(kind, LOOPBACK, trusting(ca), server.base + "/short.png",
                                   ca_file=default_ca_file()) for kind in pageclients.KINDS]
    cut, fine = got[server.base + "/short.png"], got[server.base + "/fine.png"]
    assert cut is not None and (cut.kind, cut.reason, cut.transient) == (
        FailureKind.CONNECTION, H2_ENDED_SHORT, True), cut
    assert fine is not None and fine.ok, fine
    for reply in replies:
        assert (reply.kind, reply.failure, reply.transient) == (
            FailureKind.CONNECTION, H2_ENDED_SHORT, True), reply


def test_a_page_answer_whose_unread_body_breaks_off_keeps_its_head(
        ca: CertAuthority) -> None:
    """A redirect (or a 404) whose stream is reset after its head: the head is the answer,
    and its body is not read. The page failed ("connection broken: HTTP/2 stream error:
    ... reset by server"), for another try that failed the same, where an image's
    redirect was followed; over HTTP/1.1, a redirect's body cut short did the same."""
    def reset_after(status: int, headers: tuple[tuple[str, str], ...]) -> Script:
        def script(stream: Stream) -> None:
            stream.head(status, headers)
            stream.body(b"<html>moved", end=False)
            stream.reset(2)  # INTERNAL_ERROR
        return script

    scripts = {"/moved": reset_after(301, (("location", "/there"),)),
               "/gone": reset_after(404, (("content-type", "text/html"),))}
    with H2Server(server_context(ca), scripts) as server:
        for kind in pageclients.KINDS:
            moved, gone = (pageclients.get(kind, LOOPBACK, trusting(ca), server.base + path,
                                           ca_file=default_ca_file(), wants=wants_html)
                           for path in ("/moved", "/gone"))
            assert moved.ok and (moved.status, moved.headers["location"]) == (
                301, "/there"), (kind, moved)
            assert gone.ok and gone.status == 404, (kind, gone)

    def cut_short(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /there\r\nContent-Length: 500\r\n\r\n"
                     b"<html>moved")
        return False  # and closed, 489 bytes short

    base, done = raw_server(cut_short)
    try:
        for kind in pageclients.KINDS:
            reply = pageclients.get(kind, LOOPBACK, RequestOptions(), base + "/moved",
                                    wants=wants_html)
            assert reply.ok and reply.status == 302, (kind, reply)
    finally:
        done.set()


def goaway_frame(last_stream_id: int, code: int = 0) -> bytes:
    return frame(7, 0, 0, last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big"))


@pytest.mark.parametrize("then", ["finishes", "closes"])
def test_images_a_goaway_left_unanswered_are_asked_again_on_a_new_connection(
        ca: CertAuthority, tmp_path: Path, then: str) -> None:
    """Five images in flight on one connection; the server answers the first stream's
    head, sends GOAWAY naming it the last it will answer, and then finishes it (a
    graceful shutdown) or closes the connection at once (a restart). The four others
    were never processed: RFC 9113 says they may be asked again. libcurl does so after
    a graceful GOAWAY, but failed them after the close ("connection broken: OpenSSL
    SSL_write: SSL_ERROR_SYSCALL"), an attempt spent on a server that never saw them."""
    count = 5
    arrived: list[int] = []
    first: list[str] = []  # the path of the stream answered
    all_in = threading.Event()
    lock = threading.Lock()
    body = PNG + bytes(20_000)

    def script(stream: Stream) -> None:
        if server.connections > 1:  # the new connection: a server at peace
            image(stream, body)
            return
        with lock:
            arrived.append(stream.id)
            if len(arrived) == count:
                all_in.set()
        all_in.wait(5)
        if stream.id != min(arrived):
            stream.stall()  # never processed
            return
        first.append(stream.path)
        stream.head(200, (("content-type", "image/png"), ("content-length", str(len(body)))))
        stream.body(body[:1000], end=False)
        stream.conn.raw(goaway_frame(stream.id))
        if then == "finishes":
            time.sleep(0.2)
            stream.body(body[1000:])
            time.sleep(0.5)
        stream.conn.close()

    urls: list[str] = []
    with H2Server(server_context(ca), {}, default=script) as server:
        urls = [f"{server.base}/{n}.png" for n in range(count)]
        engine = Engine(tmp_path / "out", options=trusting(ca), slots=count)
        try:
            got = engine.fetch(urls)
        finally:
            engine.close()
    [answered] = [url for url in urls if url.endswith(first[0])]
    cut = got[answered]
    assert cut is not None
    if then == "finishes":
        assert cut.ok, cut
    else:
        assert (cut.kind, cut.transient) == (FailureKind.CONNECTION, True), cut
        assert cut.reason.startswith("connection broken: "), cut  # a read's or a write's
    for url in urls:
        attempt = got[url]
        assert url == answered or (attempt is not None and attempt.ok), (url, attempt)


@pytest.mark.parametrize("first", ["answered", "goaway", "cut"])
def test_images_asked_again_after_their_connection_died_wait_for_the_next_one_connecting(
        ca: CertAuthority, tmp_path: Path, first: str) -> None:
    """Three images on one connection; the server answers the first, and closes the
    connection with the two others never processed. They are asked again on a new
    connection, whose handshake is never answered here: by libcurl itself (after the
    first's full answer, or a GOAWAY), or by the engine (after an answer cut short,
    libcurl fails them). They wait for it under the connect timeout, and say "timed out
    connecting". The read timeout ran on from their request on the dead connection:
    they were cut "timed out", the new handshake still under way."""
    arrived: list[int] = []
    all_in = threading.Event()
    lock = threading.Lock()
    answered: list[str] = []
    body = PNG + bytes(20_000)

    def script(stream: Stream) -> None:
        with lock:
            arrived.append(stream.id)
            if len(arrived) == 3:
                all_in.set()
        all_in.wait(5)
        if stream.id != min(arrived):
            stream.stall()  # never processed: till the close
            return
        answered.append(stream.path)
        if first == "cut":
            stream.head(200, (("content-type", "image/png"),
                              ("content-length", str(len(body)))))
            stream.body(body[:1000], end=False)
        else:
            image(stream, body)
            if first == "goaway":
                stream.conn.raw(goaway_frame(stream.id))
        time.sleep(0.3)
        stream.conn.close()

    limits = Limits(connect_timeout=2.5, read_timeout=1, deadline=20)
    with H2Server(server_context(ca), {}, default=script, handshakes=1) as server:
        urls = [f"{server.base}/{n}.png" for n in range(3)]
        engine = Engine(tmp_path / "out", options=trusting(ca), slots=3, limits=limits)
        try:
            got = engine.fetch(urls, timeout=30)
        finally:
            engine.close()
    [first_url] = [url for url in urls if url.endswith(answered[0])]
    for url in urls:
        attempt = got[url]
        assert attempt is not None, url
        if url == first_url:
            assert attempt.ok if first != "cut" else (
                attempt.kind is FailureKind.CONNECTION), attempt
            continue
        assert (attempt.kind, attempt.reason) == (FailureKind.TIMEOUT,
                                                  "timed out connecting"), attempt
        # The connect timeout from the new connection's start (0.05 s or later), not
        # the read timeout from the request on the old one (1 s).
        assert 2.0 < attempt.elapsed_s < 10, attempt


def test_a_crawl_of_a_hostile_http2_site_reports_each_image_in_one_line_within_deadlines(
        ca: CertAuthority, tmp_path: Path) -> None:
    """The master reads the page over HTTP/2, a worker downloads its images over one
    connection beside streams that are reset, stall, trickle past the deadline, or end
    short: every image has its line in results.log, the good ones stored, and the
    crawl ends within its deadlines."""
    def reset(stream: Stream) -> None:
        stream.head(200, (("content-type", "image/png"),))
        stream.body(PNG[:10], end=False)
        stream.reset(2)  # INTERNAL_ERROR

    def stall(stream: Stream) -> None:
        stream.head(200, (("content-type", "image/png"), ("content-length", str(len(PNG)))))
        stream.body(PNG[:10], end=False)
        stream.stall()

    def trickle(stream: Stream) -> None:  # never silent for long, never done
        stream.head(200, (("content-type", "image/png"), ("content-length", "100000")))
        for n in range(200):
            if stream.conn.closed.is_set():
                return
            stream.body(PNG[n % len(PNG):][:1], end=False)
            time.sleep(0.2)

    hostile = {"/reset.png": reset, "/stall.png": stall, "/trickle.png": trickle,
               "/short.png": lambda stream: image(stream, length=len(PNG) + 100)}
    good = [f"/ok{n}.png" for n in range(4)]
    page = "".join(f'<img src="{path}">' for path in [*good, *hostile]).encode()

    def html(stream: Stream) -> None:
        stream.head(200, (("content-type", "text/html"),))
        stream.body(page)

    scripts: dict[str, Script] = {"/": html, **hostile, **dict.fromkeys(good, image)}
    (tmp_path / "settings.toml").write_text(
        "[crawl]\npage_timeout = 5.0\n"
        "[download]\nread_timeout = 1.0\ndeadline = 3.0\nmax_attempts = 2\n"
        "backoff_base = 0.1\n")
    out = tmp_path / "out"
    with H2Server(server_context(ca), scripts) as server:
        started = time.monotonic()
        result = run_crawler("master", server.base + "/", "--bind", f"127.0.0.1:{free_port()}",
                             "--out", str(out), "--local-workers", "1",
                             "--ca-bundle", str(ca.ca_cert), cwd=tmp_path, timeout=90)
        took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert took < 30, f"the crawl took {took:.1f} s"
    lines = (out / "results.log").read_text().splitlines()
    results = dict(line.split("--->", 1) for line in lines)
    assert len(results) == len(lines) == len(good) + len(hostile), lines
    for path in good:
        assert results[server.base + path] == "success", lines
    reasons = {path: results[server.base + path] for path in hostile}
    assert reasons["/reset.png"] == ("failure: connection broken: HTTP/2 stream error: HTTP/2 "
                                     "stream reset by server (error 0x2 INTERNAL_ERROR)"), reasons
    assert reasons["/stall.png"] == "failure: timed out", reasons
    assert reasons["/trickle.png"] == "failure: too slow: not finished within 3 s", reasons
    assert reasons["/short.png"] == f"failure: {H2_ENDED_SHORT}", reasons
    assert sorted(p.name for p in (out / "images").rglob("*.png")) == sorted(
        path.lstrip("/") for path in good)


@pytest.mark.parametrize("head", ["endless", "huge"])
def test_a_head_in_endless_continuation_frames_fails_within_its_deadline(
        ca: CertAuthority, tmp_path: Path, head: str) -> None:
    """HEADERS without END_HEADERS, then CONTINUATION frames: empty ones trickled for
    ever (each resets no read timeout of ours: only the deadline would), or 16 kB ones
    holding a 1 MB head. A connection error (the other streams of the connection end
    with it); this one's reason says what the server did."""
    def buried(stream: Stream) -> None:
        if head == "endless":
            stream.conn.raw(frame(1, 0, stream.id, b"\x88"))  # ":status: 200", no END_HEADERS
            for _ in range(500):
                if stream.conn.closed.is_set():
                    return
                stream.conn.raw(frame(9, 0, stream.id, b""))
                time.sleep(0.02)
            return
        block = hpack.Encoder().encode([(":status", "200")] + [
            (f"x-{n}", "v" * 160) for n in range(6000)])
        pieces = [block[at:at + 16384] for at in range(0, len(block), 16384)]
        frames = frame(1, 0, stream.id, pieces[0]) + b"".join(
            frame(9, 4 if at == len(pieces) - 1 else 0, stream.id, piece)
            for at, piece in enumerate(pieces) if at)
        stream.conn.raw(frames)
        stream.stall()

    with H2Server(server_context(ca), {"/buried.png": buried}) as server:
        engine = Engine(tmp_path / "out", options=trusting(ca),
                        limits=Limits(read_timeout=5, deadline=8))
        try:
            attempt = engine.one(server.base + "/buried.png", timeout=30)
        finally:
            engine.close()
    assert (attempt.kind, attempt.transient) == (FailureKind.CONNECTION, True), attempt
    assert attempt.reason.startswith("connection broken: "), attempt
    assert "CONTINUATION" in attempt.reason, attempt
    assert attempt.elapsed_s < 5, attempt


def test_a_servers_pings_keep_no_stalled_stream_alive(ca: CertAuthority, tmp_path: Path) -> None:
    """Bytes on a connection keep a transfer whose head trickles in alive past the read
    timeout; but an HTTP/2 server's PING frames, every 0.3 s, kept a stream that said
    nothing more alive until download.deadline, and it was "too slow" instead of "timed
    out", 120 s instead of 30 with the default settings. The first stream of a new
    connection too, though no answer has shown it HTTP/2 yet."""
    def pinging(conn: Connection) -> None:
        def ping() -> None:
            while not conn.closed.wait(0.3):
                conn.act(lambda h2c: h2c.ping(b"12345678"))
        threading.Thread(target=ping, daemon=True).start()

    def head_then_stall(stream: Stream) -> None:
        stream.head(200, (("content-type", "image/png"),))
        stream.stall()

    scripts: dict[str, Script] = {"/ok.png": image, "/stall.png": lambda stream: stream.stall(),
                                  "/head.png": head_then_stall}
    with H2Server(server_context(ca), scripts, on_connection=pinging) as server:
        engine = Engine(tmp_path / "out", options=trusting(ca), slots=1,
                        limits=Limits(read_timeout=1, deadline=10))
        try:
            got = [engine.one(server.base + path, timeout=30)
                   for path in ("/stall.png", "/head.png", "/ok.png", "/stall.png")]
        finally:
            engine.close()
    first, head, ok, stall = got
    assert ok.ok, ok
    for attempt in (first, head, stall):
        assert (attempt.kind, attempt.reason) == (FailureKind.TIMEOUT, "timed out"), attempt
        assert attempt.elapsed_s < 3, attempt
    assert server.connections == 1, "each went on the first connection"


def test_a_server_that_never_opens_its_flow_control_window_is_still_answered(
        ca: CertAuthority, tmp_path: Path) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE 0 and no WINDOW_UPDATE ever: nothing may be sent to
    the server on a stream, which a GET does not need (its head is a HEADERS frame)."""
    with H2Server(server_context(ca), {}, default=image, settings={4: 0}) as server:
        engine = Engine(tmp_path / "out", options=trusting(ca),
                        limits=Limits(read_timeout=2, deadline=5))
        try:
            got = engine.fetch([f"{server.base}/{n}.png" for n in range(3)])
        finally:
            engine.close()
        page = pageclients.get("multi", LOOPBACK, trusting(ca), server.base + "/p.png",
                               ca_file=default_ca_file())
    assert all(attempt is not None and attempt.ok for attempt in got.values()), got
    assert page.ok and page.body == PNG, page


def test_a_servers_bytes_in_libcurls_message_reach_no_reason_raw() -> None:
    """libcurl quotes a header it ignored in its message, the server's bytes as they
    came: a line break split the master's log line and its one-line error, an escape
    sequence reached the terminal."""
    _, reason, _ = curl_failure(CURLE_HTTP2_STREAM, "a message quoting [a\r\nFAKE LINE"
                                                    "\x1b[31mred\x00]")
    assert reason == ("connection broken: HTTP/2 stream error: a message quoting "
                      "[a\\r\\nFAKE LINE\\x1b[31mred\\x00]"), reason


@pytest.mark.parametrize(("then", "said"), [
    ("reset", "connection broken: HTTP/2 stream error"), ("close", "connection broken")])
def test_a_header_field_libcurl_ignored_is_not_said_to_be_the_cause(
        ca: CertAuthority, tmp_path: Path, then: str, said: str) -> None:
    """libcurl drops a header field whose value holds a line break, and goes on; the
    stream reset (or the connection closed) after it was said to have failed with
    "Ignoring received invalid HTTP header field: ..., value: [...]", the server's
    bytes quoted."""
    def evil(stream: Stream) -> None:
        block = hpack.Encoder().encode([(":status", "200"), ("content-type", "image/png"),
                                        ("x-evil", "a\r\nFAKE LINE\x1b[31m")])
        stream.conn.raw(frame(1, 4, stream.id, block))  # HEADERS, END_HEADERS
        time.sleep(0.1)
        if then == "reset":
            stream.reset(2)
        else:
            stream.conn.close()

    with H2Server(server_context(ca), {}, default=evil) as server:
        engine = Engine(tmp_path / "out", options=trusting(ca))
        try:
            attempt = engine.one(server.base + "/a.png")
        finally:
            engine.close()
        replies = [pageclients.get(kind, LOOPBACK, trusting(ca), server.base + "/",
                                   ca_file=default_ca_file()) for kind in pageclients.KINDS]
    assert (attempt.kind, attempt.reason) == (FailureKind.CONNECTION, said), attempt
    for reply in replies:
        assert (reply.kind, reply.failure) == (FailureKind.CONNECTION, said), reply
