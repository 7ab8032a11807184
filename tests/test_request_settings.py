"""Request settings reach the server: TLS, headers, cookies, netrc logins, proxies, rate caps.

Each is checked at a fixture on 127.0.0.1 that records what arrived: for the
workers' libcurl engine, for the master's page session, and end to end.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from crawler.config import Limits, Settings
from crawler.demo.site import png
from crawler.errors import ConfigError
from crawler.fetch import curlsetup
from crawler.fetch.callbacks import downloads_at_once
from crawler.fetch.curl import CurlEngine
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.easy import EasyClient, Reply
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions, parse_header, parse_rate
from crawler.fetch.robots import read_robots
from crawler.master.authkey import Authkey
from crawler.model.outcome import Attempt, FailureKind
from crawler.worker.sink import sinks_into
from crawler.worker.store import Store

from . import pageclients
from .conftest import (
    SITE,
    FixtureHandler,
    FixtureServer,
    finish,
    free_port,
    manifest_lines,
    run_crawler,
    start_crawler,
    stop,
    wait_for_output,
    wait_for_queue_address,
    wait_until,
)
from .redis_server import RedisServer
from .test_curl import Engine, raw_server
from .tls import CertAuthority, Proxy, make_ca, server_context

PNG = png(24, 16, 9)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))
NGINX = Path("/usr/sbin/nginx")


PageGet = Callable[[RequestOptions, str], Reply]


@pytest.fixture(params=pageclients.KINDS)
def page_get(request: pytest.FixtureRequest) -> PageGet:
    """A GET with each of the master's page clients, as the crawl's settings make it."""
    def get(options: RequestOptions, url: str) -> Reply:
        return pageclients.get(request.param, LOOPBACK, options, url, ca_file=default_ca_file())

    return get


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


class Recorder:
    """A fixture server whose /img.png and /page.html routes record the request heads."""

    def __init__(self, server: FixtureServer) -> None:
        self.server = server
        self.seen: list[dict[str, str]] = []
        self.cookie_headers: list[list[str]] = []  # every Cookie line of each request
        self.peer_certs: list[object] = []
        server.routes["/img.png"] = self._image
        server.routes["/page.html"] = self._page
        server.routes["/elsewhere.png"] = lambda h: h.send_body(
            302, b"", "text/plain",
            {"Location": f"http://localhost:{server.server_address[1]}/img.png"})

    def _record(self, handler: FixtureHandler) -> None:
        self.seen.append(dict(handler.headers.items()))
        self.cookie_headers.append(handler.headers.get_all("Cookie") or [])
        getpeercert = getattr(handler.connection, "getpeercert", None)
        self.peer_certs.append(getpeercert() if getpeercert else None)

    def _image(self, handler: FixtureHandler) -> None:
        self._record(handler)
        handler.send_body(200, PNG, "image/png")

    def _page(self, handler: FixtureHandler) -> None:
        self._record(handler)
        handler.send_body(200, b"<html><body><img src='/img.png'></body></html>", "text/html")

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def recorder(make_server: Callable[[], FixtureServer]) -> Recorder:
    return Recorder(make_server())


@pytest.fixture
def https_recorder(make_server: Callable[[], FixtureServer], ca: CertAuthority) -> Recorder:
    server = make_server()
    server.socket = server_context(ca, ask_client_cert=True).wrap_socket(
        server.socket, server_side=True)
    recorder = Recorder(server)
    recorder.server.url_https = f"https://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    return recorder


def https_url(recorder: Recorder) -> str:
    return str(recorder.server.url_https)  # type: ignore[attr-defined]


def fetch(url: str, options: RequestOptions, tmp_path: Path, *,
          limits: Limits | None = None, policy: AddressPolicy = LOOPBACK,
          timeout: float = 30) -> Attempt:
    """Download ``url`` with a CurlEngine of these options, as a worker would."""
    results: queue.SimpleQueue[tuple[str, Attempt | None]] = queue.SimpleQueue()
    stop = threading.Event()
    engine = CurlEngine(slots=2, new_sink=sinks_into(Store(tmp_path / "out"), limits or Limits()),
                        limits=limits or Limits(),
                        policy=policy, options=options,
                        report=lambda got: [results.put(r) for r in got], stop=stop)
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        engine.submit([(url, 1)])
        got_url, attempt = results.get(timeout=timeout)
    finally:
        engine.close()
        thread.join(timeout=10)
    assert got_url == url and attempt is not None
    return attempt


COOKIES = """# Netscape HTTP Cookie File
127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tsecret-cookie-value
#HttpOnly_127.0.0.1\tFALSE\t/\tFALSE\t0\ttoken\thttponly-value
other.example\tFALSE\t/\tFALSE\t0\tnot\tfor-us
"""
NETRC = "machine 127.0.0.1 login alice password s3cret-pass\n"


# A client certificate with its key, as far as a process's start-up check reads one.
CERT_AND_KEY_HEADS = "-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\n"


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def options_from(tmp_path: Path, **http: object) -> RequestOptions:
    """RequestOptions built the way the master builds them, from [http] settings."""
    settings = Settings().with_values({f"http.{k}": v for k, v in http.items()})
    return RequestOptions.from_settings(settings)


# ----- TLS -----------------------------------------------------------------------------

def test_https_is_verified_against_the_ca_bundle(https_recorder: Recorder, ca: CertAuthority,
                                                 tmp_path: Path) -> None:
    url = https_url(https_recorder) + "/img.png"
    trusted = fetch(url, options_from(tmp_path, ca_bundle=str(ca.ca_cert)), tmp_path)
    assert trusted.ok, trusted
    untrusted = fetch(url, RequestOptions(), tmp_path)  # the system's CAs only
    assert not untrusted.ok and untrusted.kind is FailureKind.TLS, untrusted
    assert len(https_recorder.seen) == 1, "nothing was sent over the untrusted connection"


def test_a_tls_failure_says_what_failed_not_an_earlier_refusal(
        https_recorder: Recorder, tmp_path: Path, page_get: PageGet) -> None:
    """"localhost" is ::1 first, which refuses, then 127.0.0.1, whose certificate is not
    trusted: libcurl's errno is still the refusal's, and the reason said "certificate
    not trusted: connection refused"."""
    port = https_url(https_recorder).rsplit(":", 1)[1]
    reply = page_get(RequestOptions(), f"https://localhost:{port}/page.html")
    assert reply.kind is FailureKind.TLS and "refused" not in reply.failure, reply.failure
    assert reply.failure.startswith("TLS certificate not trusted: "), reply.failure


def _encrypted_key(ca: CertAuthority, path: Path, *, traditional: bool = False) -> Path:
    """The client key of ``ca``, encrypted with a passphrase: PKCS#8's form, or
    OpenSSL's older one (a Proc-Type header inside an RSA or EC block)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(ca.client_key.read_bytes(), password=None)
    form = (serialization.PrivateFormat.TraditionalOpenSSL if traditional
            else serialization.PrivateFormat.PKCS8)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, form,
                                       serialization.BestAvailableEncryption(b"secret")))
    return path


def test_an_encrypted_client_key_is_a_tls_error_for_good_not_a_prompt(
        https_recorder: Recorder, ca: CertAuthority, tmp_path: Path) -> None:
    """No passphrase is set: OpenSSL asked for one on the terminal, mid-progress. (The
    start refuses such a key; an engine given one anyway fails it, and asks nothing.)"""
    locked = _encrypted_key(ca, tmp_path / "locked.key")
    options = options_from(tmp_path, ca_bundle=str(ca.ca_cert), client_cert=str(ca.client_cert),
                           client_key=str(ca.client_key))._replace(client_key=str(locked))
    attempt = fetch(https_url(https_recorder) + "/img.png", options, tmp_path)
    assert (attempt.kind, attempt.transient) == (FailureKind.TLS, False), attempt
    assert attempt.reason.startswith("TLS error"), attempt.reason


def test_the_master_warns_of_insecure_tls_too(https_recorder: Recorder,
                                              tmp_path: Path) -> None:
    result = run_crawler("master", https_url(https_recorder) + "/page.html", "--insecure",
                         "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "TLS certificates are NOT verified (http.insecure = true)" in result.stderr


def test_the_default_ca_bundle_is_found_without_importing_ssl(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SSL_CERT_FILE first, then the system's usual bundle; Python's ssl module (6 ms of
    every start-up) only where neither is."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert default_ca_file() == str(bundle)
    monkeypatch.delenv("SSL_CERT_FILE")
    if not any(Path(path).is_file() for path in curlsetup._CA_FILES):
        pytest.skip("none of the usual CA bundles is on this system")
    code = ("import sys; from crawler.fetch.curlsetup import default_ca_file as f; "
            "print(f(), 'ssl' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    assert shown == [next(path for path in curlsetup._CA_FILES if Path(path).is_file()),
                     "False"]


def test_insecure_skips_verification_with_a_loud_warning(
        https_recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        attempt = fetch(https_url(https_recorder) + "/img.png",
                        options_from(tmp_path, insecure=True), tmp_path)
    assert attempt.ok, attempt
    assert "TLS certificates are NOT verified" in caplog.text


def test_a_client_certificate_is_presented(https_recorder: Recorder, ca: CertAuthority,
                                          tmp_path: Path, page_get: PageGet) -> None:
    options = options_from(tmp_path, ca_bundle=str(ca.ca_cert),
                           client_cert=str(ca.client_cert), client_key=str(ca.client_key))
    assert fetch(https_url(https_recorder) + "/img.png", options, tmp_path).ok
    assert page_get(options, https_url(https_recorder) + "/page.html").status == 200
    for cert in https_recorder.peer_certs:
        assert isinstance(cert, dict)
        assert dict(x[0] for x in cert["subject"])["commonName"] == "crawler test client"


def test_the_page_session_verifies_with_the_same_bundle(https_recorder: Recorder, ca: CertAuthority,
                                                        tmp_path: Path, page_get: PageGet) -> None:
    url = https_url(https_recorder) + "/page.html"
    untrusted = page_get(RequestOptions(), url)
    assert untrusted.kind is FailureKind.TLS, untrusted
    assert "TLS certificate not trusted" in untrusted.failure
    assert page_get(options_from(tmp_path, ca_bundle=str(ca.ca_cert)), url).status == 200
    # A worker gets the bundle's contents, not its path: that session works too.
    wired = RequestOptions.from_wire(options_from(tmp_path, ca_bundle=str(ca.ca_cert)).to_wire())
    assert wired.ca_bundle_path == "" and "BEGIN CERTIFICATE" in wired.ca_bundle
    assert page_get(wired, url).status == 200


@pytest.fixture
def nginx_h2(tmp_path: Path, ca: CertAuthority) -> Iterator[tuple[str, Path]]:
    """nginx serving tests/site over https with HTTP/2, logging each request's protocol."""
    with serving_h2(tmp_path, ca) as served:
        yield served


@contextlib.contextmanager
def serving_h2(tmp_path: Path, ca: CertAuthority,
               locations: str = "") -> Iterator[tuple[str, Path]]:
    """nginx serving tests/site over https with HTTP/2 (and ``locations``, nginx
    configuration of its own): its base URL and access log."""
    if not NGINX.exists():
        pytest.skip("nginx is not installed")
    port = free_port()
    root = tmp_path / "nginx"
    (root / "logs").mkdir(parents=True)
    log = root / "logs" / "access.log"
    conf = root / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
error_log {root}/logs/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format proto '$server_protocol $uri $connection';
    access_log {log} proto;
    client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {ca.server_cert};
        ssl_certificate_key {ca.server_key};
        root {SITE};
        {locations}
    }}
}}
""")
    process = subprocess.Popen([str(NGINX), "-p", str(root), "-c", str(conf)],
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"nginx did not start: {process.communicate()[1]!r}")
            try:
                requests.get(f"https://127.0.0.1:{port}/", verify=str(ca.ca_cert), timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.05)
        yield f"https://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def trusting_engine(tmp_path: Path, ca: CertAuthority, limits: Limits) -> Iterator[
        tuple[CurlEngine, queue.SimpleQueue[tuple[str, Attempt | None]]]]:
    """A running download engine that trusts ``ca``, and the queue its results go to."""
    results: queue.SimpleQueue[tuple[str, Attempt | None]] = queue.SimpleQueue()
    engine = CurlEngine(slots=4, new_sink=sinks_into(Store(tmp_path / "out"), limits),
                        limits=limits, policy=LOOPBACK,
                        options=options_from(tmp_path, ca_bundle=str(ca.ca_cert)),
                        report=lambda got: [results.put(r) for r in got],
                        stop=threading.Event())
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        yield engine, results
    finally:
        engine.close()
        thread.join(timeout=10)


def test_https_images_go_over_one_http2_connection(nginx_h2: tuple[str, Path], ca: CertAuthority,
                                                   tmp_path: Path) -> None:
    base, log = nginx_h2
    paths = ["/images/banner.png", "/images/blue.png", "/icons/star.gif", "/photos/cat.jpg"]
    with trusting_engine(tmp_path, ca, Limits()) as (engine, results):
        engine.submit([(base + path, 1) for path in paths])
        got = dict(results.get(timeout=20) for _ in paths)
    for path in paths:
        attempt = got[base + path]
        assert isinstance(attempt, Attempt) and attempt.ok, attempt
        assert attempt.bytes == (SITE / path.lstrip("/")).stat().st_size
    lines = [line.split() for line in log.read_text().splitlines() if "/favicon" not in line]
    image_lines = [line for line in lines if line[1] in paths]
    assert {line[0] for line in image_lines} == {"HTTP/2.0"}
    assert len({line[2] for line in image_lines}) == 1, "multiplexed on one connection"


def test_an_http2_stream_that_never_answers_is_not_kept_alive_by_its_siblings(
        tmp_path: Path, ca: CertAuthority) -> None:
    """Bytes on a connection keep a transfer alive past the read timeout while its head
    trickles in, but over HTTP/2 they may be another stream's: a stalled stream beside a
    slow one is cut at the read timeout, not when the slow one ends."""
    upstream = socket.create_server(("127.0.0.1", 0), backlog=16)  # takes, never answers
    slow = tmp_path / "slow.png"
    slow.write_bytes(PNG + bytes(300_000))  # 40 kB/s: about 7.5 s
    locations = (f"location = /slow.png {{ alias {slow}; limit_rate 40k; sendfile off; "
                 "output_buffers 1 4k; postpone_output 0; }\n"  # 4 kB every 0.1 s
                 f"location = /stall.png {{ proxy_pass http://127.0.0.1:"
                 f"{upstream.getsockname()[1]}; proxy_read_timeout 60s; }}")
    try:
        with serving_h2(tmp_path, ca, locations) as (base, _), trusting_engine(
                tmp_path, ca, Limits(read_timeout=1, deadline=30)) as (engine, results):
            engine.submit([(base + "/slow.png", 1), (base + "/stall.png", 1)])
            first_url, first = results.get(timeout=40)
            _, second = results.get(timeout=40)
    finally:
        upstream.close()
    assert first_url == base + "/stall.png", (first_url, first)
    assert isinstance(first, Attempt) and (first.reason, first.kind) == (
        "timed out", FailureKind.TIMEOUT), first
    assert isinstance(second, Attempt) and second.ok, second  # slow, never silent


def test_an_idle_https_http1_connection_with_unasked_bytes_is_not_reused(
        tmp_path: Path, ca: CertAuthority) -> None:
    """As over plain http: bytes a server sends after its answer on an HTTP/1.1
    connection over TLS were taken as the next request's answer, and another image was
    stored under that URL's name."""
    first, second, stray = png(20, 10, 1), png(30, 10, 2), png(66, 66, 9)
    context = server_context(ca)
    context.set_alpn_protocols(["http/1.1"])

    def answer(body: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
                % len(body)) + body

    def respond(conn: socket.socket, request: bytes) -> bool:
        if b"/one.png" in request:
            conn.sendall(answer(first))
            time.sleep(0.1)
            conn.sendall(answer(stray))  # never asked for
        else:
            conn.sendall(answer(second))
        return True

    base, done = raw_server(respond, wrap=lambda raw: context.wrap_socket(raw, server_side=True))
    try:
        with trusting_engine(tmp_path, ca, Limits()) as (engine, results):
            engine.submit([(base + "/one.png", 1)])
            _, one = results.get(timeout=20)
            time.sleep(0.3)  # the stray answer is there; libcurl's own check waits 1 s
            engine.submit([(base + "/two.png", 1)])
            _, two = results.get(timeout=20)
    finally:
        done.set()
    assert isinstance(one, Attempt) and one.ok, one
    assert isinstance(two, Attempt) and two.ok, two
    assert (two.width, two.height, two.bytes) == (30, 10, len(second)), two


# ----- headers, cookies, logins ---------------------------------------------------------

def test_headers_cookies_and_logins_reach_the_server(recorder: Recorder, tmp_path: Path,
                                                     page_get: PageGet) -> None:
    (tmp_path / "cookies.txt").write_text(COOKIES)
    (tmp_path / "netrc").write_text(NETRC)
    options = options_from(tmp_path, headers=("Referer: https://example.com/", "X-Team: images"),
                           cookies=str(tmp_path / "cookies.txt"), netrc=str(tmp_path / "netrc"))
    assert fetch(recorder.url + "/img.png", options, tmp_path).ok
    page_get(options, recorder.url + "/page.html")
    assert len(recorder.seen) == 2
    for seen in recorder.seen:  # the image (the engine), then the page (the master's client)
        assert seen["Referer"] == "https://example.com/" and seen["X-Team"] == "images"
        cookies = sorted(c.strip() for c in seen["Cookie"].split(";"))
        assert cookies == ["session=secret-cookie-value", "token=httponly-value"]
        assert seen["Authorization"] == basic("alice", "s3cret-pass")


def test_a_header_given_no_value_is_not_sent_as_curls_h_does(recorder: Recorder,
                                                             tmp_path: Path,
                                                             page_get: PageGet) -> None:
    """``--header 'Accept:'`` sent an empty Accept header; curl's -H 'Accept:' sends none,
    and that is what its users mean."""
    options = options_from(tmp_path, headers=("Accept:", "X-Team: images", "X-Gone:"))
    assert fetch(recorder.url + "/img.png", options, tmp_path).ok
    page_get(options, recorder.url + "/page.html")
    assert len(recorder.seen) == 2
    for seen in recorder.seen:  # the image (the engine), then the page (the master's client)
        assert seen["X-Team"] == "images"
        assert "Accept" not in seen and "X-Gone" not in seen, dict(seen)


def test_text_beyond_ascii_reaches_the_server_as_utf8(recorder: Recorder, tmp_path: Path,
                                                      page_get: PageGet) -> None:
    """A user agent, header, cookie or password may hold any letter: sent as UTF-8 bytes,
    as curl sends what it is given (pycurl took them as ASCII only, and every request
    failed with a traceback)."""
    (tmp_path / "cookies.txt").write_text(
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tcaf\u00e9\n", encoding="utf-8")
    (tmp_path / "netrc").write_text("machine 127.0.0.1 login al\u00efce password p\u00e4ss\n",
                                    encoding="utf-8")
    settings = Settings().with_values({
        "crawl.user_agent": "r\u00e9colte/1.0", "http.headers": ("X-Team: \u00e9quipe",),
        "http.cookies": str(tmp_path / "cookies.txt"), "http.netrc": str(tmp_path / "netrc")})
    options = RequestOptions.from_settings(settings)
    assert fetch(recorder.url + "/img.png", options, tmp_path).ok
    assert page_get(options, recorder.url + "/page.html").ok
    assert len(recorder.seen) == 2
    for seen in recorder.seen:  # http.server reads header bytes as Latin-1
        as_sent = {name: value.encode("latin-1").decode("utf-8") for name, value in seen.items()}
        assert as_sent["User-Agent"] == "r\u00e9colte/1.0"
        assert as_sent["X-Team"] == "\u00e9quipe"
        assert as_sent["Cookie"] == "session=caf\u00e9"
        assert seen["Authorization"] == basic("al\u00efce", "p\u00e4ss")


def test_a_cookie_header_replaces_the_cookies_file(recorder: Recorder, tmp_path: Path,
                                                  page_get: PageGet) -> None:
    """A Cookie header given with --header is the request's one Cookie header, as said:
    libcurl's cookie engine sent the file's cookies in a second Cookie header beside it
    (two are not allowed, RFC 6265 5.4; servers read either)."""
    (tmp_path / "cookies.txt").write_text(COOKIES)
    options = options_from(tmp_path, headers=("Cookie: manual=1",),
                           cookies=str(tmp_path / "cookies.txt"))
    assert fetch(recorder.url + "/img.png", options, tmp_path).ok
    assert page_get(options, recorder.url + "/page.html").ok
    assert recorder.cookie_headers == [["manual=1"], ["manual=1"]]


def test_a_login_is_not_sent_to_another_host_after_a_redirect(recorder: Recorder,
                                                               tmp_path: Path) -> None:
    (tmp_path / "netrc").write_text(NETRC)
    options = options_from(tmp_path, netrc=str(tmp_path / "netrc"))
    assert fetch(recorder.url + "/elsewhere.png", options, tmp_path).ok
    assert len(recorder.seen) == 1 and "Authorization" not in recorder.seen[0]
    assert recorder.seen[0]["Host"].startswith("localhost:")


def test_of_two_netrc_entries_for_one_machine_the_first_is_used(recorder: Recorder,
                                                                tmp_path: Path) -> None:
    """As curl and ftp read a netrc: Python's netrc keeps the last, and the crawl sent
    another login than curl --netrc-file would."""
    (tmp_path / "netrc").write_text("machine 127.0.0.1 login alice password FIRST\n"
                                    "machine 127.0.0.1 login bob password SECOND\n"
                                    "default login anon password ANY\n"
                                    "default login other password LATER\n")
    options = options_from(tmp_path, netrc=str(tmp_path / "netrc"))
    assert options.credentials_for("elsewhere.test") == ("anon", "ANY")
    assert fetch(recorder.url + "/img.png", options, tmp_path).ok
    assert recorder.seen[0]["Authorization"] == basic("alice", "FIRST")


def test_bad_request_settings_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a header"):
        parse_header("no colon here")
    with pytest.raises(ValueError, match="line break"):
        parse_header("X-A: one\r\nX-B: two")
    assert parse_rate("2M") == 2 * 1024 * 1024 and parse_rate("500k") == 512_000
    assert parse_rate("0") == 0
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")
    with pytest.raises(ConfigError, match=r"http\.cookies: cannot read"):
        options_from(tmp_path, cookies=str(tmp_path / "missing.txt"))
    (tmp_path / "not-a-ca.pem").write_text("hello")
    with pytest.raises(ConfigError, match=r"http\.ca_bundle: .* holds no PEM certificate"):
        options_from(tmp_path, ca_bundle=str(tmp_path / "not-a-ca.pem"))
    (tmp_path / "bad-netrc").write_text("machine\n")
    with pytest.raises(ConfigError, match=r"http\.netrc"):
        options_from(tmp_path, netrc=str(tmp_path / "bad-netrc"))
    # A home that is not known here ("~user" of no such user) is a setting to mend, not a
    # traceback: any file setting, the worker's own client certificate among them.
    for key in ("cookies", "ca_bundle", "netrc", "client_cert"):
        with pytest.raises(ConfigError, match=rf"http\.{key}: cannot read ~nosuchuser-x/f"):
            options_from(tmp_path, **{key: "~nosuchuser-x/f"})
    result = run_crawler("master", "http://127.0.0.1:1/", "--header", "nonsense",
                         "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "--header 'nons...': not a header" in result.stderr
    # A token alone, its name left out, was echoed whole.
    result = run_crawler("master", "http://127.0.0.1:1/", "--header", "sk-live-123secret",
                         "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "--header 'sk-l...': not a header" in result.stderr
    assert "123secret" not in result.stderr
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"  # (over 40 letters)
    result = run_crawler("master", "http://127.0.0.1:1/", "--header", jwt, "--out",
                         str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "--header 'eyJh...': not a header" in result.stderr
    assert jwt[4:12] not in result.stderr
    # A header's value may be a token: a message shows its name only.
    result = run_crawler("master", "http://127.0.0.1:1/", "--header",
                         "Authorization Bearer TOPSECRET", "--out", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert result.returncode == 2 and ("--header 'Authorization...': not a header: write "
                                       "it as 'Name: value'") in result.stderr, result.stderr
    (tmp_path / "headers.toml").write_text('[http]\nheaders = ["X-Key TOPSECRET"]\n')
    result = run_crawler("master", "http://127.0.0.1:1/", "--settings",
                         str(tmp_path / "headers.toml"), cwd=tmp_path)
    assert result.returncode == 2 and "http.headers: 'X-Key...': not a header" in result.stderr
    assert "TOPSECRET" not in result.stderr
    result = run_crawler("master", "http://127.0.0.1:1/", "--header", "User-Agent: me/1",
                         "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "set it with crawl.user_agent (--user-agent)" in \
        result.stderr, result.stderr
    (tmp_path / "secret-netrc").write_text("machine h login u password p S3cretPW\n")
    with pytest.raises(ConfigError, match=r"http\.netrc: .* line \d+: bad") as raised:
        options_from(tmp_path, netrc=str(tmp_path / "secret-netrc"))
    assert "S3cretPW" not in str(raised.value)
    # A damaged certificate in a bundle is found before the crawl starts.
    (tmp_path / "damaged.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"http\.ca_bundle: .* cannot be read"):
        options_from(tmp_path, ca_bundle=str(tmp_path / "damaged.pem"))
    # So is one cut short: libcurl, given the whole file, refused it at every request.
    ca_text = make_ca(tmp_path / "ca").ca_cert.read_text()
    for name, text in [("half.pem", "-----BEGIN CERTIFICATE-----\n"),
                       ("cut.pem", ca_text + "-----BEGIN CERTIFICATE-----\nMIIB\n")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=r"http\.ca_bundle: .* holds a certificate cut "
                                              r"short"):
            options_from(tmp_path, ca_bundle=str(tmp_path / name))
    (tmp_path / "whole.pem").write_text(ca_text + "# a comment after it\n")
    assert options_from(tmp_path, ca_bundle=str(tmp_path / "whole.pem")).ca_bundle
    result = run_crawler("master", "http://127.0.0.1:1/", "--limit-rate", "fast",
                         "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "--limit-rate 'fast': expected" in result.stderr


def test_secrets_stay_out_of_reprs(tmp_path: Path) -> None:
    (tmp_path / "cookies.txt").write_text(COOKIES)
    (tmp_path / "netrc").write_text(NETRC)
    options = options_from(tmp_path, headers=("Authorization: Bearer top-secret",),
                           cookies=str(tmp_path / "cookies.txt"), netrc=str(tmp_path / "netrc"))
    for text in (repr(options), str(options), f"{options}"):
        for secret in ("top-secret", "secret-cookie-value", "s3cret-pass"):
            assert secret not in text
        assert "Authorization" in text and "127.0.0.1" in text
    key = Authkey(b"the-queue-key", "environment")
    for text in (repr(key), str(key), f"{key!r} {key}"):
        assert "the-queue-key" not in text and "environment" in text


# ----- proxies and the bandwidth cap -----------------------------------------------------

@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_requests_go_through_the_proxy(kind: str, recorder: Recorder, tmp_path: Path,
                                       page_get: PageGet) -> None:
    proxy = Proxy(kind)
    address = proxy.start()
    try:
        options = options_from(tmp_path, proxy=address)
        assert fetch(recorder.url + "/img.png", options, tmp_path).ok
        assert page_get(options, recorder.url + "/page.html").status == 200
    finally:
        proxy.stop()
    port = recorder.server.server_address[1]
    if kind == "http":
        assert proxy.targets == [recorder.url + "/img.png", recorder.url + "/page.html"]
    else:
        assert proxy.targets == [f"127.0.0.1:{port}"] * 2
    assert len(recorder.seen) == 2


def test_a_proxy_that_cannot_be_reached_is_named_in_the_pages_failure(
        recorder: Recorder, tmp_path: Path, page_get: PageGet) -> None:
    """Not "connection refused" alone, which reads as the site's doing."""
    port = free_port()  # nothing listens there
    refused = page_get(options_from(tmp_path, proxy=f"http://user:pw@127.0.0.1:{port}"),
                       recorder.url + "/page.html")
    assert refused.failure == f"connection error: connection refused, at the proxy " \
                              f"http://127.0.0.1:{port}", refused.failure
    assert refused.transient
    direct = page_get(options_from(tmp_path), f"http://127.0.0.1:{port}/page.html")
    assert direct.failure == "connection error: connection refused", direct.failure
    # A worker's image said libcurl's "Failed to connect to 127.0.0.1 port P over proxy
    # 127.0.0.1...", which named the proxy's port as if it were the site's.
    image = fetch(recorder.url + "/img.png",
                  options_from(tmp_path, proxy=f"http://127.0.0.1:{port}"), tmp_path)
    assert image.reason == (f"connection error: connection refused, at the proxy "
                            f"http://127.0.0.1:{port}"), image.reason
    assert recorder.seen == []


def test_a_proxy_that_never_answers_is_named_in_the_robots_txt_failure(
        tmp_path: Path) -> None:
    """A proxy that takes connections and never answers a tunnel's CONNECT: the seed said
    "robots.txt unreachable (too slow (over 30 s))" after 10 s, the proxy unnamed."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # (the kernel completes the connections; no one answers them)
    port = hung.getsockname()[1]
    client = EasyClient(LOOPBACK, options_from(tmp_path, proxy=f"http://127.0.0.1:{port}"),
                        connect_timeout=1.0, ca_file=default_ca_file())
    try:
        robots = read_robots(client, "https://127.0.0.1:9", 5.0)
    finally:
        client.close()
        hung.close()
    assert robots.unreachable == ("too slow (no connection within 1 s, at the proxy "
                                  f"http://127.0.0.1:{port})"), robots.unreachable


def test_without_libcurls_used_proxy_a_proxy_set_is_taken_as_used(
        recorder: Recorder, tmp_path: Path, page_get: PageGet,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pycurl built on a libcurl before 8.7 has no USED_PROXY: nothing fails for it."""
    monkeypatch.setattr(curlsetup, "_USED_PROXY", None)
    port = free_port()
    direct = page_get(options_from(tmp_path), f"http://127.0.0.1:{port}/page.html")
    assert direct.failure == "connection error: connection refused", direct.failure
    refused = page_get(options_from(tmp_path, proxy=f"http://127.0.0.1:{port}"),
                       recorder.url + "/page.html")
    assert refused.failure.endswith(f", at the proxy http://127.0.0.1:{port}"), refused.failure


def test_an_https_proxy_is_trusted_by_the_crawls_ca_bundle(
        recorder: Recorder, ca: CertAuthority, tmp_path: Path, page_get: PageGet) -> None:
    """A private CA signs the intranet's proxy as well as its sites."""
    proxy = Proxy("http", tls=server_context(ca))
    address = proxy.start()
    try:
        untrusted = options_from(tmp_path, proxy=address)
        # The proxy's certificate, not the site's (an http:// site), is named as such.
        for failure in (fetch(recorder.url + "/img.png", untrusted, tmp_path).reason,
                        page_get(untrusted, recorder.url + "/page.html").failure):
            assert "TLS certificate not trusted" in failure, failure
            assert failure.endswith(f", at the proxy {address}"), failure
        options = options_from(tmp_path, proxy=address, ca_bundle=str(ca.ca_cert))
        assert fetch(recorder.url + "/img.png", options, tmp_path).ok
        assert page_get(options, recorder.url + "/page.html").status == 200
    finally:
        proxy.stop()
    assert proxy.targets == [recorder.url + "/img.png", recorder.url + "/page.html"]


def test_a_redirects_next_hop_that_no_connection_carried_is_not_asked_again(
        ca: CertAuthority, tmp_path: Path) -> None:
    """An image asked on a connection kept alive (a proxy's tunnel, opened for the image
    before) redirects to a host the proxy cannot reach: it drops that tunnel unanswered,
    before any connection carried the hop. The hop took "went on a connection opened
    for another" from the hop before, and was asked again as if that connection had
    died under it: a second CONNECT, and the same failure."""
    unreachable = free_port()  # nothing listens there
    context = server_context(ca)
    context.set_alpn_protocols(["http/1.1"])

    def respond(conn: socket.socket, request: bytes) -> bool:
        if b"/moved.png" in request:
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1:%d/x.png\r\n"
                         b"Content-Length: 0\r\n\r\n" % unreachable)
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(PNG), PNG))
        return True

    base, done = raw_server(respond, wrap=lambda raw: context.wrap_socket(raw, server_side=True))
    proxy = Proxy("http")
    options = options_from(tmp_path, ca_bundle=str(ca.ca_cert), proxy=proxy.start())
    engine = Engine(tmp_path / "out", options=options, slots=1)
    try:
        first = engine.one(base + "/first.png")
        moved = engine.one(base + "/moved.png")
    finally:
        engine.close()
        proxy.stop()
        done.set()
    assert first.ok, first
    assert (moved.kind, moved.transient) == (FailureKind.CONNECTION, True), moved
    site = base.removeprefix("https://")
    assert proxy.targets == [site, f"127.0.0.1:{unreachable}"], proxy.targets


def test_environment_proxies_are_used_unless_turned_off(
        recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        page_get: PageGet) -> None:
    proxy = Proxy("http")
    monkeypatch.setenv("HTTP_PROXY", proxy.start())
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        assert fetch(recorder.url + "/img.png", RequestOptions(), tmp_path).ok
        assert proxy.targets == [recorder.url + "/img.png"]
        assert fetch(recorder.url + "/img.png", RequestOptions(env_proxies=False), tmp_path).ok
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert fetch(recorder.url + "/img.png", RequestOptions(), tmp_path).ok
        page_get(RequestOptions(), recorder.url + "/page.html")
    finally:
        proxy.stop()
    assert proxy.targets == [recorder.url + "/img.png"], "only the first went through it"
    assert len(recorder.seen) == 4


def test_a_proxy_authorization_header_is_refused_for_the_proxys_url(
        https_recorder: Recorder, ca: CertAuthority, tmp_path: Path) -> None:
    """A header goes to the sites: libcurl leaves the crawl's headers out of the CONNECT
    it sends an http proxy for an https site, so the proxy's password went to every
    https site, inside the tunnel, and never to the proxy (which answered 407)."""
    result = run_crawler("master", "http://127.0.0.1:1/", "--header",
                         "Proxy-Authorization: Basic UFhTRUNSRVQ=", "--out",
                         str(tmp_path / "out"), "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert ("--header 'Proxy-Authorization...': header Proxy-Authorization: give the proxy's "
            "login in its URL") in result.stderr, result.stderr
    assert "UFhTRUNSRVQ" not in result.stderr
    (tmp_path / "headers.toml").write_text(
        '[http]\nheaders = ["proxy-authorization: Basic UFhTRUNSRVQ="]\n')
    result = run_crawler("master", "http://127.0.0.1:1/", "--settings",
                         str(tmp_path / "headers.toml"), "--out", str(tmp_path / "out"),
                         "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2 and "give the proxy's login in its URL" in result.stderr
    assert "UFhTRUNSRVQ" not in result.stderr
    # The way that works: the login in the proxy's URL goes to the proxy, not the site.
    proxy = Proxy("http")
    address = proxy.start().replace("http://", "http://user:pw@")
    try:
        options = options_from(tmp_path, proxy=address, ca_bundle=str(ca.ca_cert))
        assert fetch(https_url(https_recorder) + "/img.png", options, tmp_path).ok
    finally:
        proxy.stop()
    [seen] = https_recorder.seen
    assert "Proxy-Authorization" not in seen, seen


def test_all_proxy_is_used_for_schemes_without_a_proxy_of_their_own(
        recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        page_get: PageGet) -> None:
    """As curl reads the environment: ALL_PROXY (often a SOCKS proxy, Tor's) was left
    unread, and every page and image went direct, without a word."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    socks, http = Proxy("socks5"), Proxy("http")
    monkeypatch.setenv("ALL_PROXY", socks.start())
    port = recorder.server.server_address[1]
    try:
        assert fetch(recorder.url + "/img.png", RequestOptions(), tmp_path).ok
        assert page_get(RequestOptions(), recorder.url + "/page.html").status == 200
        assert socks.targets == [f"127.0.0.1:{port}"] * 2
        assert fetch(recorder.url + "/img.png", RequestOptions(env_proxies=False), tmp_path).ok
        monkeypatch.setenv("http_proxy", http.start())  # the scheme's own comes first
        assert fetch(recorder.url + "/img.png", RequestOptions(), tmp_path).ok
        assert http.targets == [recorder.url + "/img.png"]
        monkeypatch.delenv("http_proxy")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert fetch(recorder.url + "/img.png", RequestOptions(), tmp_path).ok
    finally:
        socks.stop()
        http.stop()
    assert socks.targets == [f"127.0.0.1:{port}"] * 2, "only the first two went through it"
    assert len(recorder.seen) == 5
    monkeypatch.setenv("all_proxy", "http://user:secret@[bad")
    with pytest.raises(ConfigError, match=r"^\$all_proxy is 'http://user:\*\*\*@\[bad', "
                                          r"not a proxy URL"):
        RequestOptions().proxies()


def test_all_proxy_is_left_unread_when_each_scheme_has_a_proxy_of_its_own(
        recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A desktop's proxy settings may set all_proxy beside http_proxy and https_proxy, in
    a form curl takes and the crawler does not (socks://): it stopped every crawl at
    start, though no request would have gone through it."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    http = Proxy("http")
    address = http.start()
    monkeypatch.setenv("http_proxy", address)
    monkeypatch.setenv("https_proxy", address)
    monkeypatch.setenv("all_proxy", "socks://127.0.0.1:9/")
    try:
        assert fetch(recorder.url + "/img.png", RequestOptions(), tmp_path).ok
    finally:
        http.stop()
    assert http.targets == [recorder.url + "/img.png"]
    monkeypatch.delenv("https_proxy")  # read for https now, and said
    with pytest.raises(ConfigError, match=r"^\$all_proxy is 'socks://127\.0\.0\.1:9/', not a "
                                          r"proxy URL"):
        RequestOptions().proxies()


def test_a_malformed_proxy_variable_is_named_in_one_line(tmp_path: Path) -> None:
    """http_proxy='http://[bad' ended in a traceback ("Invalid IPv6 URL"); 'not a url'
    in "proxy name not found", naming neither the variable nor its value."""
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    for name, value, shown in (("http_proxy", "http://user:secret@[bad", "http://user:***@[bad"),
                               ("HTTPS_PROXY", "not a url", "not a url"),
                               ("http_proxy", "http://h:99999", "http://h:99999"),
                               ("http_proxy", "http://user:se/cr@t@h:1:2",
                                "http://user:***@h:1:2")):
        done = run_crawler("master", "http://127.0.0.1:9/", "--out", str(tmp_path / "o"),
                           "--bind", "127.0.0.1:0", cwd=tmp_path, env={**base, name: value})
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            f"crawler: error: ${name} is {shown!r}, not a proxy URL: expected http://, "
            "https://, socks5:// or socks5h://HOST:PORT; fix or unset it, or crawl with "
            "--no-proxy"), done.stderr
    done = run_crawler("master", "http://127.0.0.1:9/", "--out", str(tmp_path / "o"),
                       "--bind", "127.0.0.1:0", "--no-proxy", cwd=tmp_path,
                       env={**base, "http_proxy": "http://[bad"})
    assert "$http_proxy" not in done.stderr, done.stderr  # not read: the seed's own failure
    assert "connection refused" in done.stderr, done.stderr
    # What libcurl takes is taken: a path after the port (left unused), a zone in [].
    for value in ("http://127.0.0.1:9/corp/path", "http://[fe80::1%25lo]:9"):
        done = run_crawler("master", "http://127.0.0.1:9/", "--out", str(tmp_path / "o"),
                           "--bind", "127.0.0.1:0", cwd=tmp_path,
                           env={**base, "http_proxy": value, "no_proxy": ""})
        assert "not a proxy URL" not in done.stderr and done.returncode == 5, done.stderr


def test_a_proxy_password_is_left_out_of_every_message(tmp_path: Path) -> None:
    """A malformed proxy URL was quoted whole, its password with it, from the flag (and
    into the -o log file), the settings file and crawl(); the environment's was masked."""
    from crawler.api import crawl

    bad = "http://u:PXSECRET@[x"
    done = run_crawler("master", "http://127.0.0.1:9/", "--proxy", bad, "-o",
                       str(tmp_path / "log.txt"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "--proxy 'http://u:***@[x': expected a proxy URL" in done.stderr, done.stderr
    assert "PXSECRET" not in done.stderr + (tmp_path / "log.txt").read_text()
    (tmp_path / "proxy.toml").write_text(f'[http]\nproxy = "{bad}"\n')
    done = run_crawler("master", "http://127.0.0.1:9/", "--settings",
                       str(tmp_path / "proxy.toml"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2 and 'got "http://u:***@[x"' in done.stderr, done.stderr
    assert "PXSECRET" not in done.stderr
    with pytest.raises(ConfigError, match=r"http\.proxy: expected a proxy URL") as raised:
        crawl("http://127.0.0.1:9/", proxy=bad, out=str(tmp_path / "o"))
    assert "PXSECRET" not in str(raised.value) and "u:***@" in str(raised.value)
    # A login of one word is often a token.
    done = run_crawler("master", "http://127.0.0.1:9/", "--proxy", "http://PXTOKEN@[x",
                       "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2 and "--proxy 'http://***@[x'" in done.stderr, done.stderr


def test_a_proxy_password_on_the_command_line_is_said_to_show_in_ps(tmp_path: Path) -> None:
    """Never logged, but taken in silence where every user of the host reads it: a
    broker's password there is refused, a seed's said."""
    done = run_crawler("master", "http://127.0.0.1:9/", "--proxy", "http://u:PXSECRET@127.0.0.1:9",
                       "--dry-run", "--out", str(tmp_path / "o"), cwd=tmp_path)
    # The way out keeps what --proxy did: the environment's proxy is each process's own,
    # and a worker started elsewhere would fetch its images without it.
    assert ("--proxy http://u:***@127.0.0.1:9: its password shows in ps to every user of this "
            "host for the whole crawl; give the proxy's URL in http.proxy of a settings file "
            "instead (its workers are sent it, as they are --proxy's; $HTTPS_PROXY and "
            "$HTTP_PROXY serve only the processes started with them)") in done.stderr, done.stderr
    assert "PXSECRET" not in done.stderr
    plain = run_crawler("master", "http://127.0.0.1:9/", "--proxy", "http://127.0.0.1:9",
                        "--dry-run", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert "shows in ps" not in plain.stderr, plain.stderr


def test_a_worker_says_a_malformed_proxy_variable_as_it_starts_in_one_line(
        tmp_path: Path) -> None:
    """It joined its master first, then logged a traceback ("cannot start the download
    engine") and exited 1; the master says the same in one line as it starts (exit 2)."""
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env = {**base, "http_proxy": "http://user:secret@[bad", "CRAWLER_AUTHKEY": "k" * 32}
    expected = ("crawler: error: $http_proxy is 'http://user:***@[bad', not a proxy URL: "
                "expected http://, https://, socks5:// or socks5h://HOST:PORT; fix or unset "
                "it, or crawl with --no-proxy")
    started = time.monotonic()
    for where in ([f"127.0.0.1:{free_port()}"],  # no master there: it would wait 60 s
                  ["--broker", "redis://127.0.0.1:9/0", "--crawl", "c"]):
        done = run_crawler("worker", *where, "--out", str(tmp_path / "w"), "--connect-wait",
                           "60", cwd=tmp_path, env=env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == expected, done.stderr
    assert time.monotonic() - started < 30, "it waited for its master first"
    done = run_crawler("worker", f"127.0.0.1:{free_port()}", "--no-proxy", "--out",
                       str(tmp_path / "w"), "--connect-wait", "0.2", cwd=tmp_path, env=env)
    assert done.returncode == 1 and "could not reach" in done.stderr, done.stderr
    assert "$http_proxy" not in done.stderr  # not read


def test_https_sites_go_through_the_environments_https_proxy_by_connect(
        https_recorder: Recorder, ca: CertAuthority, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, page_get: PageGet) -> None:
    proxy = Proxy("http")
    monkeypatch.setenv("HTTPS_PROXY", proxy.start())
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    port = https_recorder.server.server_address[1]
    try:
        options = options_from(tmp_path, ca_bundle=str(ca.ca_cert))
        assert fetch(https_url(https_recorder) + "/img.png", options, tmp_path).ok
        assert page_get(options, https_url(https_recorder) + "/page.html").status == 200
    finally:
        proxy.stop()
    assert proxy.targets == [f"127.0.0.1:{port}"] * 2  # a tunnel each: TLS end to end
    assert len(https_recorder.seen) == 2


PUBLIC_ONLY = AddressPolicy(frozenset({"public"}))


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_request_going_direct_to_the_proxys_host_is_judged_by_the_address_guard(
        scheme: str, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy is let through at its own port only: a request NO_PROXY sends direct, or
    an https one with only HTTP_PROXY set, to another port of its host, is refused."""
    proxy = Proxy("http")
    address = proxy.start()
    if scheme == "http":
        monkeypatch.setenv("HTTP_PROXY", address)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    else:  # an http:// site, and only an https proxy: the site goes direct
        monkeypatch.setenv("HTTPS_PROXY", address)
        monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        attempt = fetch(recorder.url + "/img.png", RequestOptions(), tmp_path,
                        policy=PUBLIC_ONLY)
        replies = [pageclients.get(kind, PUBLIC_ONLY, RequestOptions(),
                                   recorder.url + "/page.html", ca_file=default_ca_file())
                   for kind in pageclients.KINDS]
    finally:
        proxy.stop()
    assert not attempt.ok and attempt.kind is FailureKind.BLOCKED, attempt
    assert all(reply.blocked is not None for reply in replies), replies
    assert recorder.seen == [] and proxy.targets == []


@pytest.mark.parametrize(("proxy", "ports"), [
    ("127.0.0.1", {80, 1080}),  # http, libcurl's default port: 80 now, 1080 before
    ("http://127.0.0.1", {80, 1080}),
    ("https://127.0.0.1", {443}),
    ("socks5h://127.0.0.1", {1080}),
    ("http://127.0.0.1:3128", {3128}),
])
def test_a_proxy_is_let_through_at_the_port_libcurl_takes_for_it(proxy: str,
                                                                  ports: set[int]) -> None:
    options = RequestOptions(proxy=proxy, env_proxies=False)
    guard = curlsetup.Guard(PUBLIC_ONLY, options.proxies())
    for port in (80, 443, 1080, 3128, 8080):
        why = guard.refusal("127.0.0.1", port)
        assert (why is None) == (port in ports), (port, why)


def test_an_answer_through_a_second_address_stands_when_the_first_was_refused(
        recorder: Recorder) -> None:
    """libcurl reads "localhost" as ::1 and 127.0.0.1 and tries both; the proxy is let
    through at the one the system resolver gives. A refused first try left the reply
    marked blocked although the second answered, and robots.txt read so was ignored."""
    proxy = Proxy("http")
    port = int(proxy.start().rpartition(":")[2])
    try:
        options = RequestOptions(proxy=f"http://localhost:{port}", env_proxies=False)
        replies = [pageclients.get(kind, PUBLIC_ONLY, options, recorder.url + "/page.html",
                                   ca_file=default_ca_file()) for kind in pageclients.KINDS]
    finally:
        proxy.stop()
    assert [(r.status, r.blocked) for r in replies] == [(200, None)] * len(replies), replies


def test_the_crawls_own_proxy_is_not_skipped_for_the_environments_no_proxy(
        recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        page_get: PageGet) -> None:
    """--proxy with --no-proxy: NO_PROXY is the environment's, left out with the rest."""
    proxy = Proxy("http")
    address = proxy.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        options = options_from(tmp_path, proxy=address, env_proxies=False)
        assert fetch(recorder.url + "/img.png", options, tmp_path).ok
        assert page_get(options, recorder.url + "/page.html").status == 200
    finally:
        proxy.stop()
    assert proxy.targets == [recorder.url + "/img.png", recorder.url + "/page.html"]


def test_the_bandwidth_cap_holds_for_a_whole_worker(make_server: Callable[[], FixtureServer],
                                                    tmp_path: Path) -> None:
    server = make_server()
    body = PNG + bytes(200_000)
    server.routes["/a.png"] = lambda h: h.send_body(200, body, "image/png")
    server.routes["/b.png"] = lambda h: h.send_body(200, body, "image/png")
    results: queue.SimpleQueue[list[tuple[str, Attempt | None]]] = queue.SimpleQueue()
    engine = CurlEngine(slots=2, new_sink=sinks_into(Store(tmp_path / "out"), Limits()),
                        limits=Limits(),
                        policy=LOOPBACK, options=RequestOptions(limit_rate=parse_rate("100k")),
                        report=results.put, stop=threading.Event())
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        engine.submit([(server.url + "/a.png", 1), (server.url + "/b.png", 1)])
        got: list[tuple[str, Attempt | None]] = []
        while len(got) < 2:
            got += results.get(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        engine.close()
        thread.join(timeout=10)
    assert all(a is not None and a.ok and a.bytes == len(body) for _, a in got), got
    # Two downloads at once share one cap: 400 kB at 100 KiB/s cannot arrive in
    # under ~3.9 s (a cap per download would take half that); slowness only adds.
    assert elapsed >= 3.2, elapsed


def test_under_a_bandwidth_cap_fewer_downloads_run_and_each_ends_in_time(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Six images of 100 kB at 128 KiB/s, within a 4 s deadline: six at once got 21 KiB/s
    each and every one failed "too slow" (and their host was given up, for the user's
    own cap); two at once get 64 KiB/s each, and every one ends in about 1.6 s."""
    server = make_server()
    body = PNG + bytes(100_000)
    names = [f"/{n}.png" for n in range(6)]
    for name in names:
        server.routes[name] = lambda h: h.send_body(200, body, "image/png")
    results: queue.SimpleQueue[list[tuple[str, Attempt | None]]] = queue.SimpleQueue()
    limits = Limits(deadline=4.0)
    engine = CurlEngine(slots=6, new_sink=sinks_into(Store(tmp_path / "out"), limits),
                        limits=limits, policy=LOOPBACK,
                        options=RequestOptions(limit_rate=parse_rate("128k")),
                        report=results.put, stop=threading.Event())
    assert engine.slots == 2
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        engine.submit([(server.url + name, 1) for name in names])
        got: list[tuple[str, Attempt | None]] = []
        while len(got) < len(names):
            got += results.get(timeout=60)
    finally:
        engine.close()
        thread.join(timeout=10)
    assert all(a is not None and a.ok for _, a in got), [
        (url, a and (a.reason, round(a.elapsed_s, 1))) for url, a in got]
    assert downloads_at_once(16, 0) == 16 and downloads_at_once(16, parse_rate("2M")) == 16
    assert downloads_at_once(16, parse_rate("10k")) == 1


# ----- end to end: the master hands its settings to its workers ---------------------------

def test_workers_carry_the_masters_request_settings(recorder: Recorder, tmp_path: Path,
                                                    authkey: str, ca: CertAuthority) -> None:
    (tmp_path / "cookies.txt").write_text(COOKIES)
    (tmp_path / "netrc").write_text(NETRC)
    recorder.server.routes["/"] = recorder.server.routes["/page.html"]
    result = run_crawler("master", recorder.url + "/", "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "out"), "--local-workers", "1",
                         "--header", "X-Team: images", "--header", "Authorization: Bearer tok-1",
                         "--cookies", str(tmp_path / "cookies.txt"), "--netrc",
                         str(tmp_path / "netrc"), "--ca-bundle", str(ca.ca_cert),
                         "--user-agent", "team-crawler/2", "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [e["status"] for e in manifest_lines(tmp_path / "out")] == ["success"]
    image = [s for s in recorder.seen if s.get("Accept", "").startswith("image/")]
    assert len(image) == 1
    assert image[0]["User-Agent"] == "team-crawler/2" and image[0]["X-Team"] == "images"
    assert image[0]["Authorization"] == "Bearer tok-1"  # a header given wins over netrc
    assert "session=secret-cookie-value" in image[0]["Cookie"]
    logs = result.stderr + "".join(p.read_text() for p in (tmp_path / "out").glob("*.log"))
    for secret in ("tok-1", "secret-cookie-value", "s3cret-pass"):
        assert secret not in logs


def test_a_worker_on_the_broker_gets_the_crawls_request_settings_there(
        recorder: Recorder, redis_server: RedisServer, tmp_path: Path) -> None:
    """A worker started on its own host, with no copy of them: the crawl on Redis
    carries them, and neither process logs a secret."""
    (tmp_path / "cookies.txt").write_text(COOKIES)
    recorder.server.routes["/"] = recorder.server.routes["/page.html"]
    broker = ("--broker", redis_server.url, "--crawl", "req" + secrets.token_hex(4))
    master = start_crawler("master", recorder.url + "/", *broker, "--out",
                           str(tmp_path / "out"), "--local-workers", "0",
                           "--header", "X-Team: images", "--cookies",
                           str(tmp_path / "cookies.txt"), "--user-agent", "team-crawler/3",
                           "-v", cwd=tmp_path)
    worker = start_crawler("worker", *broker, "--out", str(tmp_path / "out"),
                           "--connect-wait", "30", "-v", cwd=tmp_path)
    try:
        err = finish(master, 60)
        assert master.returncode == 0, err
        _, worker_err = worker.communicate(timeout=30)
        assert worker.returncode == 0, worker_err
    finally:
        stop(worker)
    assert [e["status"] for e in manifest_lines(tmp_path / "out")] == ["success"]
    [image] = [s for s in recorder.seen if s.get("Accept", "").startswith("image/")]
    assert image["User-Agent"] == "team-crawler/3" and image["X-Team"] == "images"
    assert "session=secret-cookie-value" in image["Cookie"]
    logs = err + worker_err + "".join(p.read_text() for p in (tmp_path / "out").glob("*.log"))
    assert "secret-cookie-value" not in logs


class Gallery:
    """A fixture server's page ("/") of ``count`` images, every request recorded with its
    headers. Image requests may be held (``hold``, until ``release``), and refused with a
    403 (``refuse``, a test of their headers)."""

    def __init__(self, server: FixtureServer, count: int, delay: float = 0.0) -> None:
        self.server = server
        self.images = [f"/g{n}.png" for n in range(count)]
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path, headers)
        self.refuse: Callable[[dict[str, str]], bool] = lambda _headers: False
        self.held = 0  # image requests waiting for a release now
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._delay = delay
        page = "".join(f"<img src='{path}'>" for path in self.images).encode()
        server.routes["/"] = lambda h: self._answer(h, 200, b"<html><body>" + page, "text/html")
        for path in self.images:
            server.routes[path] = self._image

    @property
    def url(self) -> str:
        return self.server.url

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def images_seen(self, header: str, value: str | None) -> int:
        """How many image requests carried ``header`` with ``value`` (None: without it)."""
        with self._lock:
            return sum(1 for path, headers in self.seen
                       if path != "/" and headers.get(header) == value)

    def _answer(self, handler: FixtureHandler, status: int, body: bytes, kind: str) -> None:
        with self._lock:
            self.seen.append((handler.path, dict(handler.headers.items())))
        handler.send_body(status, body, kind)

    def _image(self, handler: FixtureHandler) -> None:
        if not self._open.is_set():
            with self._lock:
                self.held += 1
            self._open.wait(60)
            with self._lock:
                self.held -= 1
        time.sleep(self._delay)
        with contextlib.suppress(OSError):  # a worker that gave up on it is gone
            if self.refuse(dict(handler.headers.items())):
                self._answer(handler, 403, b"forbidden", "text/plain")
            else:
                self._answer(handler, 200, PNG, "image/png")


def test_a_worker_takes_up_the_settings_of_its_master_started_again(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A master killed and started again on its folder with another --header: the worker
    that reconnects sends the new one. It kept the first master's (the engine was built
    once), and every image the second master leased went out with it."""
    gallery = Gallery(make_server(), 30, delay=0.1)
    port = free_port()
    master = ("master", gallery.url + "/", "--bind", f"127.0.0.1:{port}", "--out",
              str(tmp_path / "out"), "--ignore-robots")
    first = start_crawler(*master, "--header", "X-Run: one", cwd=tmp_path)
    worker = start_crawler("worker", f"127.0.0.1:{port}", "--out", str(tmp_path / "store"),
                           "--threads", "2", "--connect-wait", "60", cwd=tmp_path)
    second = None
    try:
        wait_until(lambda: gallery.images_seen("X-Run", "one") >= 4, 30,
                   "images downloaded with the first master's header")
        first.kill()
        first.wait(timeout=10)
        # From now on the site serves the new header only: an image leased by the second
        # master and sent with the old one fails (403, for good).
        gallery.refuse = lambda headers: headers.get("X-Run") != "two"
        second = start_crawler(*master, "--header", "X-Run: two", cwd=tmp_path)
        err = finish(second, 90)
        assert second.returncode == 0, err
        worker_err = finish(worker, 30)
        assert worker.returncode == 0, worker_err
    finally:
        for process in (first, second, worker):
            if process is not None:
                stop(process)
    entries = manifest_lines(tmp_path / "out")
    assert sorted(e["url"] for e in entries) == sorted(gallery.url + p for p in gallery.images)
    assert [e for e in entries if e["status"] != "success"] == []
    assert gallery.images_seen("X-Run", "two") >= 1
    assert "the crawl's settings changed (http.headers): the download engine starts again" \
        in worker_err, worker_err


def test_a_worker_sends_no_secret_of_a_dead_masters_crawl_to_the_next_one_on_its_port(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A worker on another host, its master killed; another crawl's master (another
    folder, no token) takes the port, with the same key: the worker sent it the first
    crawl's Authorization header. It works for the new crawl by that crawl's settings,
    and says so; nothing of the first crawl reaches the new master."""
    intranet, public = Gallery(make_server(), 30, delay=0.1), Gallery(make_server(), 6)
    port = free_port()
    address = f"127.0.0.1:{port}"
    first = start_crawler("master", intranet.url + "/", "--bind", address, "--out",
                          str(tmp_path / "intranet"), "--ignore-robots",
                          "--header", "Authorization: Bearer INTRANET-TOKEN", cwd=tmp_path)
    worker = start_crawler("worker", address, "--out", str(tmp_path / "store"), "--threads",
                           "2", "--connect-wait", "60", cwd=tmp_path)
    second = None
    try:
        wait_until(lambda: intranet.images_seen("Authorization",
                                                "Bearer INTRANET-TOKEN") >= 4, 30,
                   "images of the first crawl")
        first.kill()
        first.wait(timeout=10)
        second = start_crawler("master", public.url + "/", "--bind", address, "--out",
                               str(tmp_path / "public"), "--ignore-robots", cwd=tmp_path)
        err = finish(second, 90)
        assert second.returncode == 0, err
        worker_err = finish(worker, 30)
        assert worker.returncode == 0, worker_err
    finally:
        for process in (first, second, worker):
            if process is not None:
                stop(process)
    assert public.images_seen("Authorization", None) == len(public.images)
    assert [headers for _, headers in public.seen if "Authorization" in headers] == []
    entries = manifest_lines(tmp_path / "public")
    assert sorted(e["url"] for e in entries) == sorted(public.url + p for p in public.images)
    assert all(e["status"] == "success" for e in entries), entries
    assert "refused a report" not in err, "the worker spoke of the first crawl's images"
    assert (f"now crawls into {(tmp_path / 'public').absolute()}, not into "
            f"{(tmp_path / 'intranet').absolute()}: another crawl") in worker_err, worker_err
    assert "INTRANET-TOKEN" not in worker_err + err


def test_a_master_that_starts_a_broker_crawl_again_brings_its_request_settings(
        make_server: Callable[[], FixtureServer], redis_server: RedisServer,
        tmp_path: Path) -> None:
    """A crawl on the broker started again with a new --header (a cookies.txt exported
    anew when the old one expired): its pages went out with it, and every image with the
    first master's, from the crawl's record, even a new local worker's. The record's
    request settings are the new master's now; a worker at work takes them up at its
    next exchange, handing back the downloads it had begun with the old ones."""
    gallery = Gallery(make_server(), 24, delay=0.05)
    broker = ("--broker", redis_server.url, "--crawl", "rerun" + secrets.token_hex(4))
    master = ("master", gallery.url + "/", *broker, "--out", str(tmp_path / "out"),
              "--ignore-robots")
    first = start_crawler(*master, "--header", "X-Run: one", "--local-workers", "0",
                          cwd=tmp_path)
    worker = start_crawler("worker", *broker, "--out", str(tmp_path / "store"), "--threads",
                           "2", "--connect-wait", "60", cwd=tmp_path)
    second = None
    try:
        wait_until(lambda: gallery.images_seen("X-Run", "one") >= 4, 30,
                   "images downloaded with the first master's header")
        gallery.hold()  # the worker's downloads in flight now wait
        wait_until(lambda: gallery.held >= 1, 30, "a download in flight")
        first.send_signal(signal.SIGTERM)  # the crawl stays open on the broker
        finish(first, 30)
        gallery.refuse = lambda headers: headers.get("X-Run") != "two"
        second = start_crawler(*master, "--header", "X-Run: two", "--local-workers", "1",
                               cwd=tmp_path)
        # The worker hands back what it had begun with the old header, before any of it
        # is answered (with a 403, as the site now would).
        wait_for_output(worker, r"the crawl's settings changed \(http.headers\)", 30)
        gallery.release()
        err = finish(second, 90)
        assert second.returncode == 0, err
        worker_err = finish(worker, 30)
        assert worker.returncode == 0, worker_err
    finally:
        gallery.release()
        for process in (first, second, worker):
            if process is not None:
                stop(process)
    assert "request settings (http, crawl.user_agent) are this master's now" in err, err
    entries = manifest_lines(tmp_path / "out")
    assert sorted(e["url"] for e in entries) == sorted(gallery.url + p for p in gallery.images)
    assert [e for e in entries if e["status"] != "success"] == []
    assert gallery.images_seen("X-Run", "two") >= 1
    # Started again with the same settings, the crawl's stay as they are: no worker is
    # told to start again.
    record = redis_server.client()
    key = f"crawler:{{{broker[-1]}}}:crawl"
    assert json.loads(record.hget(key, "generation")) == 2
    again = run_crawler(*master, "--header", "X-Run: two", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "are this master's now" not in again.stderr
    assert json.loads(record.hget(key, "generation")) == 2


def test_a_workers_own_request_settings_are_said_to_be_unused(tmp_path: Path) -> None:
    (tmp_path / "worker.toml").write_text(
        '[http]\nproxy = "http://127.0.0.1:9"\nheaders = ["X-A: 1"]\nenv_proxies = false\n')
    result = run_crawler("worker", f"127.0.0.1:{free_port()}", "--settings",
                         str(tmp_path / "worker.toml"), "--connect-wait", "0.2",
                         "--out", str(tmp_path / "out"), cwd=tmp_path,
                         env={**os.environ, "CRAWLER_AUTHKEY": "k"})
    assert result.returncode == 1, result.stderr
    assert ("http.headers, http.proxy: a worker takes the crawl's request settings from "
            "its master; these of its own settings are not used") in result.stderr, result.stderr


def test_flags_set_the_http_settings(tmp_path: Path) -> None:
    from crawler.cli import _settings, build_parser

    (tmp_path / "settings.toml").write_text('[http]\nheaders = ["X-From-File: 1"]\n')
    args = build_parser().parse_args([
        "master", "http://a.test/", "--settings", str(tmp_path / "settings.toml"),
        "--header", "X-One: 1", "--header", "X-Two: 2", "--insecure",
        "--limit-rate", "2M", "--proxy", "socks5h://127.0.0.1:9", "--cookies", "c.txt",
        "--netrc", "n.rc", "--ca-bundle", "ca.pem", "--client-cert", "me.pem"])
    http = _settings(args).http
    assert http.headers == ("X-From-File: 1", "X-One: 1", "X-Two: 2")
    assert (http.insecure, http.env_proxies, parse_rate(http.limit_rate)) == (
        True, True, 2 * 1024 * 1024)
    assert (http.proxy, http.cookies, http.netrc, http.ca_bundle, http.client_cert) == (
        "socks5h://127.0.0.1:9", "c.txt", "n.rc", "ca.pem", "me.pem")
    worker = _settings(build_parser().parse_args(
        ["worker", "127.0.0.1:1", "--no-proxy", "--client-cert", "mine.pem"])).http
    assert (worker.env_proxies, worker.client_cert) == (False, "mine.pem")
    result = run_crawler("worker", "127.0.0.1:1", "--client-cert", str(tmp_path / "none.pem"),
                         "--connect-wait", "0", cwd=tmp_path)
    # The error names the flag the user typed, and the setting it sets.
    assert result.returncode == 2 and "--client-cert (http.client_cert): cannot read" in (
        result.stderr)
    result = run_crawler("master", "http://127.0.0.1:1/", "--dry-run", "--cookies",
                         str(tmp_path / "none.txt"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert f"error: --cookies (http.cookies): cannot read {tmp_path / 'none.txt'}" in result.stderr
    (tmp_path / "from-file.toml").write_text(f'[http]\ncookies = "{tmp_path / "none.txt"}"\n')
    result = run_crawler("master", "http://127.0.0.1:1/", "--dry-run", "--settings",
                         str(tmp_path / "from-file.toml"), "--out", str(tmp_path / "out"),
                         cwd=tmp_path)
    # Found after the file was read, the error names the file too, as one found in it does.
    assert result.returncode == 2 and (
        f"error: {tmp_path / 'from-file.toml'}: http.cookies: cannot read") in result.stderr
    (tmp_path / "from-file.toml").write_text('[http]\nca_bundle = "missing-ca.pem"\n')
    result = run_crawler("master", "http://127.0.0.1:1/", "--dry-run", "--settings",
                         str(tmp_path / "from-file.toml"), "--out", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert result.returncode == 2 and (
        f"error: {tmp_path / 'from-file.toml'}: http.ca_bundle: cannot read "
        f"{tmp_path / 'missing-ca.pem'}") in result.stderr


def test_a_client_key_without_its_certificate_is_one_line_naming_both(
        tmp_path: Path) -> None:
    """libcurl presents a key only with its certificate: a lone --client-key (or
    http.client_key) was left unused without a word, by masters, workers and the demo."""
    made = make_ca(tmp_path / "ca")
    (tmp_path / "client.key").write_bytes(made.client_key.read_bytes())
    (tmp_path / "client.pem").write_bytes(made.client_cert.read_bytes())
    expected = ("given without http.client_cert (--client-cert), the certificate it is the "
                "key of: give both, or neither")
    out = tmp_path / "out"
    master = run_crawler("master", "http://127.0.0.1:9/", "--client-key", "client.key",
                         "--bind", "127.0.0.1:0", "--out", str(out), cwd=tmp_path)
    assert master.returncode == 2, master.stderr
    assert f"crawler: error: --client-key (http.client_key): {expected}\n" == master.stderr
    assert not out.exists()  # refused as it started: nothing made
    worker = run_crawler("worker", f"127.0.0.1:{free_port()}", "--client-key", "client.key",
                         "--connect-wait", "0", "--out", str(out), cwd=tmp_path,
                         env={**os.environ, "CRAWLER_AUTHKEY": "k" * 32})
    assert worker.returncode == 2, worker.stderr
    assert f"crawler: error: --client-key (http.client_key): {expected}\n" == worker.stderr
    (tmp_path / "key.toml").write_text('[http]\nclient_key = "client.key"\n')
    for command in (("master", "http://127.0.0.1:9/", "--bind", "127.0.0.1:0"), ("demo",),
                    ("worker", f"127.0.0.1:{free_port()}", "--connect-wait", "0")):
        done = run_crawler(*command, "--settings", str(tmp_path / "key.toml"), "--out",
                           str(out), cwd=tmp_path, env={**os.environ, "CRAWLER_AUTHKEY": "k" * 32})
        assert done.returncode == 2, (command, done.stderr)
        assert (f"crawler: error: {tmp_path / 'key.toml'}: http.client_key: {expected}"
                in done.stderr.splitlines()), (command, done.stderr)
    # The certificate may come from the command line, its key from the settings file.
    done = run_crawler("master", "http://127.0.0.1:9/", "--settings", str(tmp_path / "key.toml"),
                       "--client-cert", "client.pem", "--dry-run", "--out", str(out),
                       cwd=tmp_path)
    assert done.returncode == 5 and "client_key" not in done.stderr, done.stderr
    from crawler.fetch.options import client_certificate  # what every process asks

    with pytest.raises(ConfigError, match=r"^http\.client_key: given without"):
        client_certificate(Settings().with_values({"http.client_key": "client.key"}).http)


def test_a_client_certificate_that_is_no_pem_is_refused_as_a_process_starts(
        tmp_path: Path, ca: CertAuthority) -> None:
    """libcurl reads PEM only: a .p12 export (or a certificate without its key) was
    refused at each request, after the crawl had started, and a worker given one failed
    every image it took for good, as a TLS error."""
    (tmp_path / "me.p12").write_bytes(b"0\x82\x04\xa0\x02\x01\x030\x82")  # PKCS#12 is DER
    env = {**os.environ, "CRAWLER_AUTHKEY": "k" * 32}
    out = tmp_path / "out"
    for command in (("master", "http://127.0.0.1:9/", "--bind", "127.0.0.1:0"),
                    ("worker", f"127.0.0.1:{free_port()}", "--connect-wait", "0")):
        done = run_crawler(*command, "--client-cert", "me.p12", "--out", str(out),
                           cwd=tmp_path, env=env)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr == ("crawler: error: --client-cert (http.client_cert): me.p12 holds "
                               "no PEM certificate (a -----BEGIN CERTIFICATE----- block): "
                               "convert a .p12, .pfx or DER file to PEM with openssl\n"), (
            command, done.stderr)
        assert not out.exists()
    with pytest.raises(ConfigError, match=r"^http\.client_cert: .* holds no private key beside "
                                          r"its certificate: give the key's file with "
                                          r"--client-key"):
        options_from(tmp_path, client_cert=str(ca.client_cert))
    with pytest.raises(ConfigError, match=r"^http\.client_key: .* holds no PEM private key"):
        options_from(tmp_path, client_cert=str(ca.client_cert), client_key=str(ca.client_cert))
    both = tmp_path / "both.pem"  # a certificate with its key in one file, as curl takes
    both.write_bytes(ca.client_cert.read_bytes() + ca.client_key.read_bytes())
    assert options_from(tmp_path, client_cert=str(both)).client_cert == str(both)


def test_a_client_key_that_is_not_the_certificates_is_refused_at_start(
        ca: CertAuthority, tmp_path: Path) -> None:
    """libcurl found out at each request: a worker failed every image it took, a master
    its seed as an unreadable robots.txt, even at a server that asks for no certificate."""
    other = make_ca(tmp_path / "other")
    out = tmp_path / "out"
    for command in (("master", "http://127.0.0.1:9/", "--bind", "127.0.0.1:0"),
                    ("worker", f"127.0.0.1:{free_port()}", "--connect-wait", "0")):
        done = run_crawler(*command, "--client-cert", str(ca.client_cert), "--client-key",
                           str(other.client_key), "--out", str(out), cwd=tmp_path,
                           env={**os.environ, "CRAWLER_AUTHKEY": "k" * 32})
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr == (
            f"crawler: error: --client-key (http.client_key): the private key in "
            f"{other.client_key} is not the key of the certificate in {ca.client_cert}: give "
            "the key made with it\n"), (command, done.stderr)
        assert not out.exists()
    assert options_from(tmp_path, client_cert=str(ca.client_cert),
                        client_key=str(ca.client_key)).client_cert == str(ca.client_cert)


@pytest.mark.parametrize("traditional", [False, True], ids=["pkcs8", "openssl"])
def test_an_encrypted_client_key_is_refused_at_start_with_the_way_out(
        ca: CertAuthority, tmp_path: Path, traditional: bool) -> None:
    """The crawler takes no passphrase: such a key failed every https request of the
    crawl, each image for good, after the crawl had started."""
    locked = _encrypted_key(ca, tmp_path / "locked.key", traditional=traditional)
    out = tmp_path / "out"
    for command in (("master", "http://127.0.0.1:9/", "--bind", "127.0.0.1:0"),
                    ("worker", f"127.0.0.1:{free_port()}", "--connect-wait", "0")):
        done = run_crawler(*command, "--client-cert", str(ca.client_cert), "--client-key",
                           "locked.key", "--out", str(out), cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr == (
            "crawler: error: --client-key (http.client_key): locked.key holds an encrypted "
            "private key, and the crawler takes no passphrase (every https request would "
            "fail): decrypt a copy with 'openssl pkey -in locked.key -out PLAIN.key' and give "
            "that, readable by you alone\n"), (command, done.stderr)
        assert not out.exists()
    both = tmp_path / "both.pem"  # the key beside the certificate: named as that file
    both.write_bytes(ca.client_cert.read_bytes() + locked.read_bytes())
    with pytest.raises(ConfigError, match=r"^http\.client_cert: .*both\.pem holds an "
                                          r"encrypted private key"):
        options_from(tmp_path, client_cert=str(both))


def test_no_proxy_turns_off_the_settings_files_proxy_too(recorder: Recorder,
                                                          tmp_path: Path) -> None:
    """As wget's --no-proxy: no proxy at all. It left a settings file's http.proxy in
    use (only --proxy '' dropped it), and turned off only the environment's."""
    from crawler.cli import _settings, build_parser

    proxy = Proxy("http")
    address = proxy.start()
    (tmp_path / "proxy.toml").write_text(f'[http]\nproxy = "{address}"\n')
    http = _settings(build_parser().parse_args([
        "master", "http://a.test/", "--settings", str(tmp_path / "proxy.toml"),
        "--no-proxy"])).http
    assert (http.proxy, http.env_proxies) == ("", False)
    try:
        done = run_crawler("master", recorder.url + "/page.html", "--settings",
                           str(tmp_path / "proxy.toml"), "--no-proxy", "--dry-run",
                           "--depth", "0", "--out", str(tmp_path / "o"), cwd=tmp_path,
                           env={**os.environ, "http_proxy": address})
    finally:
        proxy.stop()
    assert done.returncode == 0, done.stderr
    assert proxy.targets == [] and len(recorder.seen) == 1, proxy.targets
    done = run_crawler("master", "http://127.0.0.1:9/", "--proxy", address, "--no-proxy",
                       "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2 and "--proxy and --no-proxy: give one" in done.stderr, \
        done.stderr


def test_an_empty_proxy_given_means_no_proxy_for_pages_and_every_workers_images(
        recorder: Recorder, tmp_path: Path, authkey: str) -> None:
    """As curl's --proxy '': no proxy at all. --proxy '' (and proxy = "" in the settings
    file) fell back to HTTP_PROXY, for the master's pages and its workers' images, those of
    a worker on another host (which gets the crawl's request settings) as a local one's."""
    recorder.server.routes["/"] = recorder.server.routes["/page.html"]
    proxy = Proxy("http")
    address = proxy.start()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(http_proxy=address, HTTP_PROXY=address)
    (tmp_path / "empty.toml").write_text('[http]\nproxy = ""\n')
    master = start_crawler("master", recorder.url + "/", "--proxy", "", "--bind",
                           "127.0.0.1:0", "--out", str(tmp_path / "flag"), "--local-workers",
                           "0", cwd=tmp_path, env=env)
    worker = None
    try:
        queue = wait_for_queue_address(master)
        worker = start_crawler("worker", queue, "--out", str(tmp_path / "flag"),
                               "--connect-wait", "30", cwd=tmp_path, env=env)
        err = finish(master, 60)
        assert master.returncode == 0, err
        worker_err = finish(worker, 30)
        assert worker.returncode == 0, worker_err
        from_file = run_crawler("master", recorder.url + "/", "--settings",
                                str(tmp_path / "empty.toml"), "--bind", "127.0.0.1:0", "--out",
                                str(tmp_path / "file"), "--local-workers", "1", cwd=tmp_path,
                                env=env)
        assert from_file.returncode == 0, from_file.stderr
    finally:
        proxy.stop()
        for process in (master, worker):
            if process is not None:
                stop(process)
    assert proxy.targets == [], proxy.targets
    for out in ("flag", "file"):
        assert [e["status"] for e in manifest_lines(tmp_path / out)] == ["success"], out


def test_the_status_of_a_master_shows_no_request_secrets(tmp_path: Path) -> None:
    from crawler.master.authkey import Authkey
    from crawler.master.master import Master, MasterOptions
    from crawler.ui.progress import make_reporter

    (tmp_path / "cookies.txt").write_text(COOKIES)
    settings = Settings().with_values({"http.cookies": str(tmp_path / "cookies.txt"),
                                       "http.headers": ("Authorization: Bearer tok-1",)})
    master = Master(settings, MasterOptions(seeds=("http://127.0.0.1:1/",), out_dir=tmp_path,
                                            bind=("127.0.0.1", 0)),
                    Authkey(b"k" * 32, "test"), make_reporter(True), None)  # type: ignore[arg-type]
    joining = repr(master.describe())
    assert "tok-1" in joining and "secret-cookie-value" in joining  # what a worker needs
    status = repr(master.describe(full=True))
    assert "tok-1" not in status and "secret-cookie-value" not in status


def test_a_seed_whose_certificate_is_not_trusted_is_exit_5_then_works_with_its_ca(
        make_server: Callable[[], FixtureServer], ca: CertAuthority, tmp_path: Path) -> None:
    server = make_server()
    server.routes["/"] = lambda h: h.send_body(200, b'<img src="/img.png">', "text/html")
    server.routes["/img.png"] = lambda h: h.send_body(200, PNG, "image/png")
    server.socket = server_context(ca).wrap_socket(server.socket, server_side=True)
    seed = f"https://127.0.0.1:{server.server_address[1]}/"
    untrusted = run_crawler("master", seed, "--bind", f"127.0.0.1:{free_port()}", "--out",
                            str(tmp_path / "out"), cwd=tmp_path)
    assert untrusted.returncode == 5, untrusted.stderr
    # Its robots.txt could not be read: the seed is tried again by the next run (with the
    # CA, below), and the summary's reasons that may pass include that one.
    assert ("to try again    1 page(s) failed for a passing reason (a timeout, 5xx, 429, a "
            "refused connection, an unreadable robots.txt, a TLS failure a setting fixes, a "
            "name taken in the image folder, a worker lost with it)") in untrusted.stderr
    last = untrusted.stderr.strip().splitlines()[-1]
    assert last.startswith(f"crawler: error: no seed page could be fetched: {seed}: "), last
    assert "TLS certificate not trusted" in last, last
    assert last.endswith("; if its certificate is signed by a CA of your own, give it with "
                         "--ca-bundle FILE (--insecure skips the check)"), last
    # Not a robots.txt the server would not give: ignoring robots.txt would not help.
    assert "--ignore-robots" not in last, last
    # Nor one that time fixes: read once, not again and again in the run (README says
    # such a failure is not tried again in the run), the seed not tried three times.
    assert (f"robots.txt of https://127.0.0.1:{server.server_address[1]} unreachable (TLS "
            "certificate not trusted") in untrusted.stderr, untrusted.stderr
    assert "not crawling that origin in this run (a setting fixes it, not time)" in \
        untrusted.stderr, untrusted.stderr
    assert "read again" not in untrusted.stderr and "try 2 of" not in untrusted.stderr, \
        untrusted.stderr
    # Given a bundle that lacks its CA, it was told to give one with --ca-bundle.
    other = make_ca(tmp_path / "other")
    wrong = run_crawler("master", seed, "--bind", f"127.0.0.1:{free_port()}", "--out",
                        str(tmp_path / "wrong"), "--ca-bundle", str(other.ca_cert), cwd=tmp_path)
    assert wrong.returncode == 5, wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].endswith(
        f"; no CA of {other.ca_cert} (--ca-bundle) signs its certificate: give the one that "
        "does (--insecure skips the check)"), wrong.stderr
    trusted = run_crawler("master", seed, "--bind", f"127.0.0.1:{free_port()}", "--out",
                          str(tmp_path / "out"), "--quiet", "--local-workers", "1",
                          "--ca-bundle", str(ca.ca_cert), cwd=tmp_path)
    assert trusted.returncode == 0, trusted.stderr
    assert [e["status"] for e in manifest_lines(tmp_path / "out")] == ["success"]


def test_the_bandwidth_cap_travels_to_workers_with_the_crawls_request_settings(
        tmp_path: Path) -> None:
    """Each worker caps itself at the master's --limit-rate: it comes with the settings
    a worker gets when it joins (as JSON on a broker)."""
    options = options_from(tmp_path, limit_rate="2M")
    assert options.limit_rate == 2 * 1024 * 1024
    wired = RequestOptions.from_wire(json.loads(json.dumps(options.to_wire())))
    assert wired.limit_rate == options.limit_rate


def test_a_relative_client_certificate_is_sent_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started in another folder is sent the path: relative, it read nothing
    there, and presented no certificate without a word."""
    monkeypatch.chdir(tmp_path)
    Path("client.pem").write_text(CERT_AND_KEY_HEADS)
    options = options_from(tmp_path, client_cert="client.pem")
    assert options.client_cert == str(tmp_path / "client.pem")
    wire = {**options.to_wire(), "client_cert": str(tmp_path / "elsewhere.pem")}
    assert RequestOptions.from_wire(wire).client_cert == ""  # the worker says so (below)


def test_a_client_certificate_whose_key_cannot_be_read_here_is_not_presented(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A key kept 0600 beside a certificate any user reads, the worker another user: it
    presented the certificate with no key, and every image failed with libcurl's
    "unable to set private key file: CERT", which named the certificate."""
    Path(tmp_path / "client.pem").write_text(CERT_AND_KEY_HEADS)
    Path(tmp_path / "client.key").write_text(CERT_AND_KEY_HEADS)
    options = options_from(tmp_path, client_cert=str(tmp_path / "client.pem"),
                           client_key=str(tmp_path / "client.key"))
    wire = options.to_wire()
    assert RequestOptions.from_wire(wire).client_key == str(tmp_path / "client.key")
    (tmp_path / "client.key").unlink()
    with caplog.at_level(logging.WARNING):
        taken = RequestOptions.from_crawl(json.loads(json.dumps(wire)))
    assert (taken.client_cert, taken.client_key) == ("", "")
    assert (f"the master's client certificate {tmp_path / 'client.pem'} (or its key "
            f"{tmp_path / 'client.key'}) cannot be read here: none is presented; give this "
            "worker --client-cert (and --client-key)") in caplog.text


def test_a_worker_that_cannot_read_the_masters_client_certificate_says_so(
        recorder: Recorder, tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text(CERT_AND_KEY_HEADS)
    port = free_port()
    env = {**os.environ, "CRAWLER_AUTHKEY": "k" * 32}
    master = subprocess.Popen(
        [sys.executable, "-m", "crawler", "master", recorder.url + "/page.html", "--bind",
         f"127.0.0.1:{port}", "--out", str(tmp_path / "out"), "--client-cert", str(cert)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_queue_address(master)  # serving: it has read the certificate's path
        cert.unlink()  # gone before the worker joins, as on another host
        worker = subprocess.run(
            [sys.executable, "-m", "crawler", "worker", f"127.0.0.1:{port}", "--out",
             str(tmp_path / "w"), "--connect-wait", "30"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=60, check=False)
        _, err = master.communicate(timeout=60)
    finally:
        master.kill()
    assert master.returncode == 0, err
    assert f"the master's client certificate {cert} cannot be read here: none is presented" \
        in worker.stderr, worker.stderr


def test_a_workers_own_client_certificate_under_home_is_presented(
        https_recorder: Recorder, ca: CertAuthority, tmp_path: Path) -> None:
    """A worker's settings file saying client_cert = "~/client.pem" (no shell there to
    expand it) was refused, "cannot read ~/client.pem", though the master takes the same
    line; given to libcurl as written, it would have been no file either."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "client.pem").write_bytes(ca.client_cert.read_bytes())
    (home / "client.key").write_bytes(ca.client_key.read_bytes())
    (tmp_path / "worker.toml").write_text('[http]\nclient_cert = "~/client.pem"\n'
                                          'client_key = "~/client.key"\n')
    port = free_port()
    env = {**os.environ, "CRAWLER_AUTHKEY": "k" * 32, "HOME": str(home)}
    env.pop("CRAWLER_SETTINGS", None)
    master = subprocess.Popen(
        [sys.executable, "-m", "crawler", "master", https_url(https_recorder) + "/page.html",
         "--bind", f"127.0.0.1:{port}", "--out", str(tmp_path / "out"), "--depth", "0",
         "--ca-bundle", str(ca.ca_cert)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_queue_address(master)
        worker = subprocess.run(
            [sys.executable, "-m", "crawler", "worker", f"127.0.0.1:{port}", "--settings",
             "worker.toml", "--out", str(tmp_path / "w"), "--connect-wait", "30"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
        if worker.returncode != 0:  # the master would wait for a worker: stop it
            master.terminate()
        _, err = master.communicate(timeout=60)
    finally:
        master.kill()
    assert worker.returncode == 0, worker.stderr
    assert master.returncode == 0, err
    # The page (the master's request: no certificate of its own), then the image.
    assert len(https_recorder.peer_certs) == 2, https_recorder.peer_certs
    assert not https_recorder.peer_certs[0]
    presented = https_recorder.peer_certs[1]
    assert isinstance(presented, dict)
    assert dict(x[0] for x in presented["subject"])["commonName"] == "crawler test client"


def test_a_cookies_file_that_is_no_cookies_txt_is_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """libcurl skips lines it cannot read: a file of them sent no cookie, without a word."""
    spaces = tmp_path / "spaces.txt"
    spaces.write_text("# Netscape HTTP Cookie File\n127.0.0.1 FALSE / FALSE 0 session abc\n")
    with pytest.raises(ConfigError, match=r"http\.cookies: .* holds no cookie in the Netscape"):
        options_from(tmp_path, cookies=str(spaces))
    # Empty, or a header alone (curl -c's file when it kept none): no cookie either.
    for text in ("", "# Netscape HTTP Cookie File\n# https://curl.se/docs/http-cookies.html\n"):
        empty = tmp_path / "empty.txt"
        empty.write_text(text)
        with pytest.raises(ConfigError) as caught:
            options_from(tmp_path, cookies=str(empty))
        assert str(caught.value) == (
            f"http.cookies: {empty} holds no cookie (it is empty, or comments alone): export "
            "the cookies again from a browser logged in to the site, or crawl without --cookies")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc\nsession=abc\n"
                     "#HttpOnly_127.0.0.1\tFALSE\t/\tFALSE\t0\tid\t7\n")
    with caplog.at_level(logging.WARNING):
        options = options_from(tmp_path, cookies=str(mixed), headers=["Cookie: manual=1"])
    assert options.cookies == mixed.read_text()
    assert "line(s) 2 of " in caplog.text and "are no cookies" in caplog.text
    assert "a Cookie header replaces the cookies of" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # without a file too: the pages' cookies go
        options_from(tmp_path, headers=["Cookie: manual=1"])
    assert ("a Cookie header replaces the cookies the sites set as they are crawled (an "
            "image a page's cookie opens is refused): put that cookie in a cookies.txt file "
            "(--cookies) instead") in caplog.text


def test_a_cookies_file_saved_with_a_byte_order_mark_loses_no_cookie(
        recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A BOM (Windows editors write one) made the first cookie's domain "\\ufeff127.0.0.1":
    libcurl kept it, and never sent it, without a word."""
    (tmp_path / "cookies.txt").write_bytes(
        b"\xef\xbb\xbf127.0.0.1\tFALSE\t/\tFALSE\t0\tfirst\tF1\r\n"
        b"127.0.0.1\tFALSE\t/\tFALSE\t0\tsecond\tS2\r\n")
    with caplog.at_level(logging.WARNING):
        options = options_from(tmp_path, cookies=str(tmp_path / "cookies.txt"))
    assert caplog.text == ""
    assert fetch(recorder.url + "/img.png", options, tmp_path).ok
    assert sorted(c.strip() for c in recorder.seen[0]["Cookie"].split(";")) == [
        "first=F1", "second=S2"]


def test_a_set_cookie_line_without_a_domain_is_left_out_and_named(
        recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """libcurl sends a Set-Cookie: line of the file that names no domain to every host
    named by its address (every IP number, here 127.0.0.2), where each cookie of a
    cookies.txt goes to its own."""
    (tmp_path / "cookies.txt").write_text(
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tsid\tS1\n"
        "Set-Cookie: everywhere=LEAK1; Path=/\n"
        "set-cookie: scoped=OK1; Domain=127.0.0.1\n")
    with caplog.at_level(logging.WARNING):
        options = options_from(tmp_path, cookies=str(tmp_path / "cookies.txt"))
    assert "LEAK1" not in options.cookies and "scoped=OK1" in options.cookies
    assert ("line(s) 2 of " in caplog.text and "no Domain=" in caplog.text
            and "LEAK1" not in caplog.text), caplog.text
    other = Recorder(FixtureServer(SITE, host="127.0.0.2"))
    threading.Thread(target=other.server.serve_forever, daemon=True).start()
    try:
        assert fetch(f"http://127.0.0.2:{other.server.server_address[1]}/img.png", options,
                     tmp_path).ok
    finally:
        other.server.shutdown()
        other.server.server_close()
    assert "Cookie" not in other.seen[0], other.seen
    assert fetch(recorder.url + "/img.png", options, tmp_path).ok
    [here] = recorder.seen
    assert sorted(c.strip() for c in here["Cookie"].split(";")) == ["scoped=OK1", "sid=S1"]
    only = tmp_path / "only.txt"
    only.write_text("Set-Cookie: everywhere=LEAK1\n")
    with pytest.raises(ConfigError, match=r"http\.cookies: .* holds no cookie"):
        options_from(tmp_path, cookies=str(only))


def test_expired_cookies_are_named_and_a_file_of_only_them_is_refused(
        recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """libcurl drops a cookie whose expiry has passed as it loads the file: a cookies.txt
    exported long ago sent no login at all, without a word, and each page was the
    site's login form."""
    (tmp_path / "cookies.txt").write_text(
        "# Netscape HTTP Cookie File\n"
        "127.0.0.1\tFALSE\t/\tFALSE\t1000000000\told\tEXPIRED1\n"  # 2001-09-09
        "127.0.0.1\tFALSE\t/\tFALSE\t4102444800.5\tlater\tL2\n"  # 2100, as some exports
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tS3\n")
    with caplog.at_level(logging.WARNING):
        options = options_from(tmp_path, cookies=str(tmp_path / "cookies.txt"))
    assert ("line(s) 2 of " in caplog.text and "expired (the last on 2001-09-09 01:46 UTC)"
            in caplog.text and "EXPIRED1" not in caplog.text), caplog.text
    assert fetch(recorder.url + "/img.png", options, tmp_path).ok
    [seen] = recorder.seen
    assert sorted(c.strip() for c in seen["Cookie"].split(";")) == ["later=L2", "session=S3"]
    stale = tmp_path / "stale.txt"
    stale.write_text("127.0.0.1\tFALSE\t/\tFALSE\t1000000000\told\tEXPIRED1\n"
                     "#HttpOnly_127.0.0.1\tFALSE\t/\tFALSE\t1500000000\tid\tEXPIRED2\n")
    with pytest.raises(ConfigError, match=r"http\.cookies: every cookie of .*stale\.txt has "
                                          r"expired \(the last on 2017-07-14 02:40 UTC\)"):
        options_from(tmp_path, cookies=str(stale))


def test_a_rate_is_written_as_a_size_is(tmp_path: Path) -> None:
    assert parse_rate("2MiB") == parse_rate("2MB") == parse_rate("2M/s") == 2 * 1024 * 1024
    settings = tmp_path / "rate.toml"
    settings.write_text("[http]\nlimit_rate = 2000000\n")
    from crawler.config import load_settings

    assert parse_rate(load_settings(settings).http.limit_rate) == 2_000_000


def test_a_rate_in_bits_is_refused_with_what_to_write(tmp_path: Path) -> None:
    """'2Mb' was read as 2 MiB of bytes a second, eight times what a lowercase b (bits)
    asks for; k and m, in either case, are as wget and curl read them."""
    assert parse_rate("2m") == parse_rate("2M") == parse_rate("2MB/s") == 2 * 1024 * 1024
    assert parse_rate("500k") == parse_rate("500KiB") == 500 * 1024
    for given, write in (("2Mb", "2M"), ("500kb/s", "500k"), ("1.5Gib", "1.5G"),
                         ("64b", "64"), ("8Mbit", "8M"), ("3mbps", "3m")):
        with pytest.raises(ValueError, match=f"write {write} "):
            parse_rate(given)
    done = run_crawler("master", "http://127.0.0.1:9/", "--limit-rate", "2Mb",
                       "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert ("--limit-rate '2Mb' is in bits (a lowercase b): the rate is in bytes per second; "
            "write 2M (or 2MB) for 2 MiB a second") in done.stderr, done.stderr
    (tmp_path / "rate.toml").write_text('[http]\nlimit_rate = "2Mb"\n')
    done = run_crawler("master", "http://127.0.0.1:9/", "--settings",
                       str(tmp_path / "rate.toml"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2 and "http.limit_rate: '2Mb' is in bits" in done.stderr, \
        done.stderr


def test_files_a_settings_file_names_are_beside_it(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from crawler.config import load_settings

    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "settings.toml").write_text('[http]\nca_bundle = "ca.pem"\ncookies = "/abs.txt"\n'
                                          'netrc = "~/.netrc"\n')
    monkeypatch.chdir(tmp_path)  # started from elsewhere
    http = load_settings(folder / "settings.toml").http
    assert (http.ca_bundle, http.cookies, http.netrc) == (
        str(folder / "ca.pem"), "/abs.txt", "~/.netrc")


def test_netrc_machines_match_hosts_whatever_their_case() -> None:
    options = RequestOptions(credentials=(("LocalHost", "u", "p"),))
    assert options.credentials_for("localhost") == ("u", "p")


def test_a_client_certificate_under_home_is_given_to_libcurl_expanded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libcurl reads the path as it is given: '~/client.pem' is expanded first, as the
    cookies and netrc paths are."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "client.pem").write_text(CERT_AND_KEY_HEADS)
    options = options_from(tmp_path, client_cert="~/client.pem", client_key="~/client.pem")
    assert options.client_cert == options.client_key == str(tmp_path / "client.pem")


# ----- the bandwidth cap on the master's requests -----------------------------------------

def _big_page(server: FixtureServer, size: int) -> None:
    body = b"<html><body>" + b"x" * size + b"</body></html>"
    server.routes["/big.html"] = lambda h: h.send_body(200, body, "text/html")
    server.routes["/"] = server.routes["/big.html"]


def test_the_bandwidth_cap_holds_for_each_of_the_masters_requests(
        make_server: Callable[[], FixtureServer], page_get: PageGet) -> None:
    """Pages (the page loop's client), robots.txt and style sheets (the other) are held
    to --limit-rate as images are: 300 kB at 100 KiB/s takes about 3 s, not a blink."""
    server = make_server()
    _big_page(server, 300_000)
    started = time.monotonic()
    reply = page_get(RequestOptions(limit_rate=parse_rate("100k"), env_proxies=False),
                     server.url + "/big.html")
    elapsed = time.monotonic() - started
    assert reply.ok and reply.status == 200 and len(reply.body) > 300_000, reply.failure
    assert elapsed >= 2.2, elapsed  # slowness only adds
    started = time.monotonic()
    assert page_get(RequestOptions(env_proxies=False), server.url + "/big.html").ok
    assert time.monotonic() - started < 2.0  # without a cap: no waiting


def test_a_crawl_reads_its_pages_within_the_bandwidth_cap(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    _big_page(server, 300_000)
    started = time.monotonic()
    done = run_crawler("master", server.url + "/", "--dry-run", "--limit-rate", "100k",
                       "--ignore-robots", "--no-proxy", "--out", str(tmp_path / "out"),
                       "--bind", "127.0.0.1:0", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed >= 2.2, elapsed
