"""Odd and hostile TLS servers on 127.0.0.1: what images and pages say of each.

Every failure is one line a user can act on, of the right kind and transience,
for the workers' engine and both of the master's page clients alike; and it comes
within its deadlines.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crawler.cli import EXIT_NOTHING_STORED
from crawler.config import Limits, Settings
from crawler.demo.site import png
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.easy import EasyClient
from crawler.fetch.engine import CLIENT_CERT_REFUSED, CLIENT_CERT_REQUIRED
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.multi import MultiClient
from crawler.fetch.options import RequestOptions
from crawler.fetch.robots import read_robots
from crawler.model.outcome import FailureKind

from . import pageclients
from .accepting import accept_each
from .conftest import FixtureServer, free_port, manifest_lines, run_crawler
from .test_curl import Engine, ok_answer, raw_server, trickle_bytes
from .tls import CertAuthority, make_ca, server_context

PNG = png(24, 16, 5)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


def trusting(ca: CertAuthority, **http: object) -> RequestOptions:
    """The crawl's request options with ``ca`` trusted (and more [http] settings)."""
    values = {"http.ca_bundle": str(ca.ca_cert)} | {f"http.{k}": v for k, v in http.items()}
    return RequestOptions.from_settings(Settings().with_values(values))


@contextlib.contextmanager
def tls_server(context: ssl.SSLContext, answer: Callable[[ssl.SSLSocket, bytes], None], *,
               linger: float = 1.0) -> Iterator[str]:
    """An https server on 127.0.0.1 answering each request with ``answer(conn, head)``, a
    connection at a time on threads of their own. A handshake that fails (the server
    refused the client) is said by its alert, and the socket stays open ``linger``
    seconds: the client reads the alert, not a reset."""
    def handle(raw: socket.socket) -> None:
        raw.settimeout(5)
        with raw:
            conn = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            try:
                conn.do_handshake()  # (wrap_socket's own closes the socket as it fails)
                head = b""
                while b"\r\n\r\n" not in head:  # TLS 1.3: the client's verdict comes here
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
            except (OSError, ssl.SSLError):
                done.wait(linger)
                return
            with contextlib.suppress(OSError, ssl.SSLError):
                answer(conn, head)

    port, done = accept_each(handle)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        done.set()


def image_answer(conn: ssl.SSLSocket, head: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(PNG), PNG))


def each_client(base: str, options: RequestOptions, tmp_path: Path,
                ) -> dict[str, tuple[FailureKind | None, str, bool]]:
    """(kind, reason, transient) of a GET of ``base``'s image by the workers' engine and
    each page client."""
    engine = Engine(tmp_path / "out", options=options)
    try:
        attempt = engine.one(base + "/a.png")
    finally:
        engine.close()
    seen = {"image": (attempt.kind, attempt.reason, attempt.transient)}
    for kind in pageclients.KINDS:
        reply = pageclients.get(kind, LOOPBACK, options, base + "/a.png",
                                ca_file=default_ca_file())
        seen[kind] = (reply.kind, reply.failure, reply.transient)
    return seen


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_server_that_requires_a_client_certificate_says_so_for_good(
        ca: CertAuthority, tmp_path: Path, version: ssl.TLSVersion) -> None:
    """Over TLS 1.3 the server's refusal comes after the handshake, as the answer is
    read: it was "connection broken: OpenSSL SSL_read: ... alert certificate required",
    a passing failure, tried again and again for a setting the user must make."""
    context = server_context(ca, require_client_cert=True)
    context.maximum_version = version
    with tls_server(context, image_answer) as base:
        seen = each_client(base, trusting(ca), tmp_path)
    if version is ssl.TLSVersion.TLSv1_3:
        assert set(seen.values()) == {(FailureKind.TLS, CLIENT_CERT_REQUIRED, False)}, seen
    else:  # a handshake failure, which may have other causes: said as it is
        assert set(seen.values()) == {(FailureKind.TLS, "TLS error: TLS connect error: "
                                       "ssl/tls alert handshake failure", True)}, seen
    # With one, the same server answers.
    with tls_server(context, image_answer) as base:
        engine = Engine(tmp_path / "with", options=trusting(
            ca, client_cert=str(ca.client_cert), client_key=str(ca.client_key)))
        try:
            assert engine.one(base + "/a.png").ok
        finally:
            engine.close()


def test_a_server_that_refuses_the_client_certificate_says_so_for_good(
        ca: CertAuthority, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other")  # the server trusts another CA's clients only
    context = server_context(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(other.ca_cert)
    options = trusting(ca, client_cert=str(ca.client_cert), client_key=str(ca.client_key))
    with tls_server(context, image_answer) as base:
        seen = each_client(base, options, tmp_path)
    assert set(seen.values()) == {(FailureKind.TLS, CLIENT_CERT_REFUSED, False)}, seen


@pytest.mark.parametrize(("which", "says"), [
    ("wrong_host_cert", "no alternative certificate subject name matches target IPv4 address "
                        "'127.0.0.1'"),
    ("expired_cert", "certificate has expired")])
def test_a_certificate_for_another_host_or_expired_fails_for_good_in_one_line(
        ca: CertAuthority, tmp_path: Path, which: str, says: str) -> None:
    context = server_context(ca, cert=getattr(ca, which))
    with tls_server(context, image_answer) as base:
        seen = each_client(base, trusting(ca), tmp_path)
    [(kind, reason, transient)] = set(seen.values())
    assert (kind, transient) == (FailureKind.TLS, False), seen
    assert reason.startswith("TLS certificate not trusted: ") and says in reason, reason
    assert reason.isprintable(), reason


def test_a_rerun_tries_again_an_image_that_failed_its_tls_check(
        ca: CertAuthority, make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """An image whose certificate a worker did not trust (its CA not given, or given to
    the master alone) was a failure for good: the same command with ``--ca-bundle``
    tried nothing. It is not tried again in the run, and the next run tries it."""
    with tls_server(server_context(ca), image_answer) as base:
        site = make_server()
        site.routes["/"] = lambda h: h.send_body(
            200, f'<html><img src="{base}/a.png"></html>'.encode(), "text/html")
        out = tmp_path / "out"
        flags = ["--bind", f"127.0.0.1:{free_port()}", "--out", str(out), "--local-workers",
                 "1", "--ignore-robots"]
        first = run_crawler("master", site.url + "/", *flags, cwd=tmp_path, timeout=90)
        assert first.returncode == EXIT_NOTHING_STORED, first.stderr
        [failed] = manifest_lines(out)
        assert failed["reason"].startswith("TLS certificate not trusted: "), failed
        assert failed["attempts"] == 1 and failed["transient"], failed
        assert "1 image(s) failed for a passing reason" in first.stderr, first.stderr
        again = run_crawler("master", site.url + "/", *flags, "--ca-bundle", str(ca.ca_cert),
                            cwd=tmp_path, timeout=90)
        assert again.returncode == 0, again.stderr
    [stored] = manifest_lines(out)
    assert stored["status"] == "success", stored
    assert (out / stored["path"]).read_bytes() == PNG


def test_a_connection_closed_without_tls_close_notify_is_said_without_openssls_codes(
        ca: CertAuthority, tmp_path: Path) -> None:
    """A body without a length, then the TCP connection closed with no close_notify: cut
    short, maybe. The reason was "OpenSSL SSL_read: OpenSSL/3.0.13: error:0A000126:SSL
    routines::unexpected eof while reading, errno 0": another reason with each OpenSSL."""
    def cut(conn: ssl.SSLSocket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n" + PNG[:40])
        time.sleep(0.1)
        socket.socket.shutdown(conn, socket.SHUT_RDWR)  # no close_notify first

    with tls_server(server_context(ca), cut) as base:
        seen = each_client(base, trusting(ca), tmp_path)
    assert set(seen.values()) == {(FailureKind.CONNECTION, "connection broken: OpenSSL SSL_read: "
                                   "unexpected eof while reading", True)}, seen


@contextlib.contextmanager
def both_schemes(context: ssl.SSLContext,
                 route: Callable[[str, str, dict[str, str]], tuple[int, str, bytes, str]],
                 ) -> Iterator[tuple[int, list[tuple[str, str, dict[str, str]]]]]:
    """One port on 127.0.0.1 that speaks https and plain http alike (told apart by the
    first byte: a TLS handshake's is 0x16), as a site's ports 443 and 80 are one host to
    the crawl. ``route(scheme, path, headers)`` gives (status, type, body, Location);
    every request is recorded as (scheme, path, headers)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    seen: list[tuple[str, str, dict[str, str]]] = []
    done = threading.Event()

    def handle(raw: socket.socket) -> None:
        raw.settimeout(5)
        with contextlib.suppress(OSError, ssl.SSLError), raw:
            tls = raw.recv(1, socket.MSG_PEEK) == b"\x16"
            conn = context.wrap_socket(raw, server_side=True) if tls else raw
            scheme, buffer = ("https" if tls else "http"), b""
            while not done.is_set():
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    lines = head.decode("latin-1").split("\r\n")
                    path = lines[0].split(" ")[1]
                    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                    seen.append((scheme, path, headers))
                    status, kind, body, location = route(scheme, path, headers)
                    conn.sendall((f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\n"
                                  f"Content-Length: {len(body)}\r\n"
                                  + (f"Location: {location}\r\n" if location else "")
                                  + "\r\n").encode() + body)

    def serve() -> None:
        with listener:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    raw, _ = listener.accept()
                    threading.Thread(target=handle, args=(raw,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield port, seen
    finally:
        done.set()


def test_an_https_site_that_redirects_to_http_and_back(ca: CertAuthority, tmp_path: Path) -> None:
    """A downgrade to http on the same host is the same site (pages and images follow
    it), its hops without the login header given (another origin); a loop between the
    two schemes ends at the redirect limit, with a reason; the crawl ends."""
    def route(scheme: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes, str]:
        other = f"{'http' if scheme == 'https' else 'https'}://127.0.0.1:{port}{path}"
        if path == "/":
            return 200, "text/html", (b'<a href="/loop">l</a> <a href="/down">d</a>'
                                      b'<img src="/loop.png"> <img src="/down.png">'), ""
        if path in ("/loop", "/loop.png") or (scheme == "https" and path.startswith("/down")):
            return 302, "text/plain", b"", other  # the loop, or the downgrade
        if path == "/down":
            return 200, "text/html", b'<img src="/inner.png">', ""
        if path.endswith(".png"):
            return 200, "image/png", PNG, ""
        return 404, "text/plain", b"", ""

    with both_schemes(server_context(ca), route) as (port, seen):
        seed = f"https://127.0.0.1:{port}/"
        result = run_crawler("master", seed, "--bind", f"127.0.0.1:{free_port()}",
                             "--out", str(tmp_path / "out"), "--local-workers", "1",
                             "--ca-bundle", str(ca.ca_cert), "--header",
                             "Authorization: Bearer for-https-only", cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stderr
    outcomes = {entry["url"]: (entry["status"], entry["reason"])
                for entry in manifest_lines(tmp_path / "out")}
    assert outcomes == {
        f"{seed}down.png": ("success", ""),
        f"http://127.0.0.1:{port}/inner.png": ("success", ""),
        f"{seed}loop.png": ("failure", "more than 10 redirects"),
    }, outcomes
    pages = [json.loads(line) for line in (tmp_path / "out" / "pages.jsonl").read_text()
             .splitlines()]
    assert [(page["url"], page["reason"], page["final"]) for page in pages] == [
        (f"{seed}loop", "more than 10 redirects", True)], pages
    for scheme, path, headers in seen:  # (an image found on an http page is asked for
        # with it: the crawl's headers go with every request, README says)
        if scheme == "http" and path in ("/loop", "/loop.png", "/down", "/down.png"):
            assert "Authorization" not in headers, (path, headers)
    assert any(scheme == "http" and path == "/down" for scheme, path, _ in seen), seen


def test_images_waiting_for_a_handshake_that_never_ends_all_time_out_connecting(
        ca: CertAuthority, tmp_path: Path) -> None:
    """Over https the engine waits for the one connection (HTTP/2) a first image makes:
    its handshake never answered, the first was "timed out connecting" and the others,
    cut at the same connect timeout, "timed out": one cause, two reasons."""
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, and says nothing
    base = f"https://127.0.0.1:{listener.getsockname()[1]}"
    engine = Engine(tmp_path / "out", options=trusting(ca), slots=4,
                    limits=Limits(connect_timeout=1, read_timeout=5, deadline=20))
    try:
        urls = [f"{base}/{n}.png" for n in range(4)]
        got = engine.fetch(urls)
    finally:
        engine.close()
        listener.close()
    for attempt in got.values():
        assert attempt is not None and (attempt.kind, attempt.reason) == (
            FailureKind.TIMEOUT, "timed out connecting"), attempt
        assert attempt.elapsed_s < 3, attempt


def test_a_robots_txt_whose_handshake_never_ends_is_said_cut_at_the_deadline_that_cut_it(
        ) -> None:
    """Its deadline (page_timeout) shorter than the connect timeout, a robots.txt whose
    TLS handshake never ended was said to have had no connection "within 10 s" after 2."""
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, and says nothing
    client = EasyClient(AddressPolicy(frozenset({"loopback"})), RequestOptions(),
                        connect_timeout=10.0)
    try:
        started = time.monotonic()
        robots = read_robots(client, f"https://127.0.0.1:{listener.getsockname()[1]}", 1.0)
        took = time.monotonic() - started
    finally:
        client.close()
        listener.close()
    assert robots.unreachable == "too slow (no connection within 1 s)"
    assert took < 5, took


@pytest.mark.parametrize("status_line", ["whole", "trickled"])
def test_an_http1_head_trickling_over_tls_is_not_silent_once_its_status_line_came(
        ca: CertAuthority, tmp_path: Path, status_line: str) -> None:
    """A byte every 0.2 s of an HTTP/1.1 head over TLS, after its status line came whole:
    no silence, as over http; the deadline cuts it ("too slow"), not the read timeout.
    Before any status line, a new connection over TLS may be HTTP/2, whose bytes (a
    server's PINGs) do not show its stream alive: a status line that takes longer than
    the read timeout to come is "timed out"."""
    head = b"HTTP/1.1 200 OK\r\n"
    answer = ok_answer(extra=b"X-Padding: " + b"p" * 50 + b"\r\n")
    assert answer.startswith(head)
    context = server_context(ca)
    context.set_alpn_protocols(["http/1.1"])

    def respond(conn: socket.socket, request: bytes) -> bool:
        if status_line == "whole":
            conn.sendall(head)
        trickle_bytes(conn, answer[len(head) if status_line == "whole" else 0:], 0.2)
        return False

    base, done = raw_server(respond, wrap=lambda raw: context.wrap_socket(raw, server_side=True))
    engine = Engine(tmp_path / "out", options=trusting(ca),
                    limits=Limits(read_timeout=1, deadline=2.5))
    try:
        attempt = engine.one(base + "/head.png")
    finally:
        engine.close()
        done.set()
    if status_line == "whole":
        assert (attempt.kind, attempt.reason) == (
            FailureKind.TOO_SLOW, "too slow: not finished within 2.5 s"), attempt
    else:
        assert (attempt.kind, attempt.reason) == (FailureKind.TIMEOUT, "timed out"), attempt
        assert attempt.elapsed_s < 2, attempt


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("kind", pageclients.KINDS)
def test_a_page_client_takes_no_stray_answer_on_a_kept_connection_for_the_next_page(
        ca: CertAuthority, scheme: str, kind: str) -> None:
    """An answer the server sent after the one asked for, on an HTTP/1.1 connection kept
    alive (plain or over TLS): libcurl read it as the next request's answer, and the
    master took another page's links (or another robots.txt's rules) for this one's.
    The workers' engine looked for such bytes; the master's clients now do too."""
    def answer(body: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n"
                % len(body)) + body

    def respond(conn: socket.socket, request: bytes) -> bool:
        if b"/one" in request:
            conn.sendall(answer(b"<p>one</p>"))
            time.sleep(0.1)
            conn.sendall(answer(b'<a href="/elsewhere">never asked for</a>'))
        else:
            conn.sendall(answer(b"<p>two</p>"))
        return True

    context = server_context(ca)
    context.set_alpn_protocols(["http/1.1"])
    base, done = raw_server(respond, wrap=None if scheme == "http" else (
        lambda raw: context.wrap_socket(raw, server_side=True)))
    options = trusting(ca)
    bodies: list[bytes] = []
    try:
        if kind == "easy":
            client = EasyClient(LOOPBACK, options)
            try:
                for path in ("/one", "/two"):
                    bodies.append(client.get(base + path, accept="text/html",
                                             max_bytes=10_000, timeout=10).body)
                    time.sleep(0.3)  # the stray answer is there; libcurl's own check waits 1 s
            finally:
                client.close()
        else:
            selector = selectors.DefaultSelector()
            multi = MultiClient(LOOPBACK, options, selector=selector)
            try:
                for path in ("/one", "/two"):
                    multi.start(path, base + path, accept="text/html", max_bytes=10_000,
                                timeout=10)
                    bodies.append(pageclients.wait_for_one(multi, selector, 15).body)
                    time.sleep(0.3)
            finally:
                multi.close()
                selector.close()
    finally:
        done.set()
    assert bodies == [b"<p>one</p>", b"<p>two</p>"], bodies


@pytest.mark.parametrize("then", ["silence", "close_notify and garbage"])
def test_a_server_that_completes_the_handshake_then_does_not_answer(
        ca: CertAuthority, tmp_path: Path, then: str) -> None:
    """Silence: an image is cut at the read timeout, a page at its own timeout. A TLS
    close_notify and then bytes that are no TLS: an empty reply, said once (it was
    "connection broken: empty reply: Empty reply from server")."""
    def answer(conn: ssl.SSLSocket, head: bytes) -> None:
        if then == "silence":
            time.sleep(5)
            return
        raw = conn.unwrap()  # close_notify, and the bare socket back
        raw.sendall(b"HTTP/1.1 200 OK\r\n\r\nnot TLS")
        time.sleep(0.5)

    with tls_server(server_context(ca), answer) as base:
        engine = Engine(tmp_path / "out", options=trusting(ca),
                        limits=Limits(read_timeout=1, deadline=10))
        try:
            image = engine.one(base + "/a.png")
        finally:
            engine.close()
        replies = [pageclients.get(kind, LOOPBACK, trusting(ca), base + "/", timeout=2)
                   for kind in pageclients.KINDS]
    if then == "silence":
        assert (image.kind, image.reason) == (FailureKind.TIMEOUT, "timed out"), image
        assert image.elapsed_s < 3, image
        for reply in replies:
            assert reply.kind is FailureKind.TIMEOUT and reply.timed_out, reply
        return
    said = (FailureKind.CONNECTION, "connection broken: empty reply", True)
    assert (image.kind, image.reason, image.transient) == said, image
    for reply in replies:
        assert (reply.kind, reply.failure, reply.transient) == said, reply
