"""A proxy's 407 (proxy authentication required) is the proxy's failure, not the site's
answer: it names the proxy (without its password), and is a passing failure, retried
once the user fixes the proxy's login, for pages and images, over http and https alike.

Checked with a real proxy on 127.0.0.1 that wants a login, in front of real servers,
and end to end with crawler processes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crawler.cli import EXIT_NOTHING_STORED
from crawler.demo.site import png
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.master.pages import wants_html
from crawler.model.outcome import Attempt, FailureKind

from . import pageclients
from .conftest import FixtureServer, manifest_lines, run_crawler
from .test_curl import Engine
from .tls import CertAuthority, Proxy, _relay, make_ca, read_head, server_context

PNG = png(20, 10, 5)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))
LOGIN = ("crawl", "right-pass")


class LoginProxy:
    """An HTTP proxy that answers 407 to a request without its login, and hands one with
    it to a forwarding proxy (``tls.Proxy``): absolute-form GETs and CONNECT tunnels."""

    def __init__(self) -> None:
        self._inner = Proxy("http")
        inner = self._inner.start()
        self._inner_port = int(inner.rpartition(":")[2])
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._done = threading.Event()
        self.refused = 0  # requests answered 407
        self._wanted = "Basic " + base64.b64encode(":".join(LOGIN).encode()).decode()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def url(self, password: str) -> str:
        return f"http://{LOGIN[0]}:{password}@127.0.0.1:{self.port}"

    def close(self) -> None:
        self._done.set()
        self._inner.stop()

    @property
    def targets(self) -> list[str]:
        return self._inner.targets

    def _serve(self) -> None:
        with self._listener:
            while not self._done.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = read_head(conn)
            if head is None:
                return
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
            given = {name.strip().lower(): value.strip()
                     for name, _, value in (line.partition(":") for line in lines)}
            if given.get("proxy-authorization") != self._wanted:
                self.refused += 1
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"proxy\"\r\n"
                             b"Content-Length: 0\r\n\r\n")
                return
            with socket.create_connection(("127.0.0.1", self._inner_port), timeout=5) as inner:
                inner.sendall(head)
                _relay(conn, inner)


@pytest.fixture
def proxy() -> Iterator[LoginProxy]:
    made = LoginProxy()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def site(make_server: Callable[[], FixtureServer]) -> FixtureServer:
    server = make_server()
    server.routes["/img.png"] = lambda h: h.send_body(200, PNG, "image/png")
    server.routes["/page.html"] = lambda h: h.send_body(200, b"<html></html>", "text/html")
    return server


@pytest.fixture
def tls_site(make_server: Callable[[], FixtureServer], ca: CertAuthority) -> FixtureServer:
    server = make_server()
    server.socket = server_context(ca).wrap_socket(server.socket, server_side=True)
    server.routes["/img.png"] = lambda h: h.send_body(200, PNG, "image/png")
    server.routes["/page.html"] = lambda h: h.send_body(200, b"<html></html>", "text/html")
    return server


def _download(url: str, options: RequestOptions, tmp_path: Path) -> Attempt:
    engine = Engine(tmp_path / "out", options=options, slots=2)  # as a worker runs it
    try:
        return engine.one(url, timeout=30)
    finally:
        engine.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxys_407_names_the_proxy_and_is_worth_another_try(
        scheme: str, proxy: LoginProxy, site: FixtureServer, tls_site: FixtureServer,
        ca: CertAuthority, tmp_path: Path) -> None:
    """The same for pages (both page clients) and images, over http (the proxy answers
    the request) and https (it refuses the CONNECT)."""
    server = site if scheme == "http" else tls_site
    base = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    options = RequestOptions(proxy=proxy.url("wrong-pass"), env_proxies=False,
                             ca_bundle=ca.ca_cert.read_text())
    expected = (f"proxy authentication required (HTTP 407), at the proxy "
                f"http://127.0.0.1:{proxy.port}")
    image = _download(base + "/img.png", options, tmp_path)
    assert not image.ok and image.reason == expected, image
    assert image.transient and image.kind is FailureKind.CONNECTION, image
    assert image.retry_after is None
    for kind in pageclients.KINDS:
        reply = pageclients.get(kind, LOOPBACK, options, base + "/page.html")
        assert (reply.failure, reply.transient, reply.status) == (expected, True, 0), reply
        assert reply.kind is FailureKind.CONNECTION
    assert proxy.refused == 3 and server.hits == []
    # The right login: the same requests go through.
    good = options._replace(proxy=proxy.url(LOGIN[1]))
    assert _download(base + "/img.png", good, tmp_path).ok
    assert pageclients.get("multi", LOOPBACK, good, base + "/page.html").status == 200


def test_a_site_answering_407_itself_is_its_own_answer(site: FixtureServer,
                                                       tmp_path: Path) -> None:
    """No proxy in the way: the status is the site's, as any other."""
    site.routes["/odd.png"] = lambda h: h.send_body(407, b"", "text/plain")
    attempt = _download(site.url + "/odd.png", RequestOptions(env_proxies=False), tmp_path)
    assert attempt.reason == "HTTP 407" and attempt.kind is FailureKind.STATUS, attempt


def test_images_refused_by_the_proxy_are_fetched_when_its_login_is_fixed(
        proxy: LoginProxy, make_server: Callable[[], FixtureServer], tmp_path: Path,
        authkey: str) -> None:
    """Pages go direct (NO_PROXY), images on 127.0.0.2 through the proxy of the workers'
    environment, first with a wrong password, then with the right one. (robots.txt is not
    read: one the proxy refuses holds its host's images back, to be tried again too.)"""
    pages = make_server()
    images = FixtureServer(pages.root, host="127.0.0.2")
    threading.Thread(target=images.serve_forever, daemon=True).start()
    try:
        images.routes["/img.png"] = lambda h: h.send_body(200, PNG, "image/png")
        pages.routes["/"] = lambda h: h.send_body(
            200, f"<html><img src='{images.url}/img.png'></html>".encode(), "text/html")
        env = {key: value for key, value in os.environ.items()
               if not key.lower().endswith("_proxy")}
        out = tmp_path / "out"

        def crawl(password: str, status: int) -> tuple[dict[str, object], str]:
            done = run_crawler("master", pages.url + "/", "--out", str(out), "--bind",
                               "127.0.0.1:0", "--local-workers", "1", "--max-attempts", "1",
                               "--ignore-robots", "--json", cwd=tmp_path,
                               env={**env, "HTTP_PROXY": proxy.url(password),
                                    "NO_PROXY": "127.0.0.1"})
            assert done.returncode == status, done.stderr
            assert password not in done.stdout + done.stderr
            summary: dict[str, object] = json.loads(done.stdout)
            return summary, done.stderr

        first, said = crawl("wrong-pass", EXIT_NOTHING_STORED)
        # (--json: no text summary, so the warning names the file that says why)
        assert f"failures_by_reason in {out}/summary.json say why" in said, said
        [entry] = manifest_lines(out)
        assert entry["status"] == "failure" and entry["transient"] is True, json.dumps(
            [entry, first])
        assert entry["reason"] == (f"proxy authentication required (HTTP 407), at the proxy "
                                   f"http://127.0.0.1:{proxy.port}"), entry
        assert first["images_to_retry"] == 1, first
        assert images.hits == [] and proxy.refused >= 1
        second, _ = crawl(LOGIN[1], 0)
        assert second["succeeded"] == 1, second
        assert [e["status"] for e in manifest_lines(out)][-1] == "success"
        assert [hit.path for hit in images.hits] == ["/img.png"]
    finally:
        with contextlib.suppress(OSError):
            images.shutdown()
            images.server_close()


def test_a_proxy_refusing_the_tunnel_is_not_the_sites_answer(
        tls_site: FixtureServer, ca: CertAuthority, tmp_path: Path) -> None:
    """A proxy that refuses the CONNECT (403: its rules keep that host out) answers with a
    head of its own. Pages and images kept it as the site's answer, a final 'HTTP 403'
    blaming the site; it is the proxy's failure, and worth another try, as before."""
    refusing = socket.create_server(("127.0.0.1", 0))
    refusing.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        with refusing:
            while not done.is_set():
                try:
                    conn, _ = refusing.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(5)
                    if read_head(conn) is not None:
                        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    proxy = f"http://127.0.0.1:{refusing.getsockname()[1]}"
    options = RequestOptions(proxy=proxy, env_proxies=False, ca_bundle=ca.ca_cert.read_text())
    try:
        for kind in pageclients.KINDS:
            reply = pageclients.get(kind, LOOPBACK, options,
                                    f"https://127.0.0.1:{tls_site.server_address[1]}/page.html",
                                    wants=wants_html)
            assert not reply.ok and reply.transient, (kind, reply)
            assert reply.failure.endswith(f", at the proxy {proxy}"), (kind, reply)
            assert reply.kind is FailureKind.CONNECTION, (kind, reply)
        image = _download(f"https://127.0.0.1:{tls_site.server_address[1]}/img.png", options,
                          tmp_path)
        assert not image.ok and image.transient, image
        assert image.kind is FailureKind.CONNECTION, image
        assert "CONNECT tunnel failed, response 403" in image.reason, image
    finally:
        done.set()
    assert tls_site.hits == []


def test_an_https_images_answer_through_a_proxy_is_the_sites_not_the_tunnels(
        tls_site: FixtureServer, ca: CertAuthority, tmp_path: Path) -> None:
    """Through a proxy, an https image's request goes in a tunnel the proxy opens with
    '200 Connection established'. The workers' engine took that head for the image's, and
    fed the site's next answer to an image: a redirect, a 404 or a 503 with a text body
    each failed for good as 'not an image' once its body was long enough to be judged
    (4 KB of text, or an error page of 64 KB), the redirect never followed."""
    text = b"Not here; try again later, or elsewhere. " * 200  # 8 KB, no image
    tls_site.routes["/moved.png"] = lambda h: h.send_body(301, text, "text/plain",
                                                          {"Location": "/img.png"})
    error_page = b"<!doctype html><title>Not found</title><p>" + text * 9  # 72 KB
    tls_site.routes["/gone.png"] = lambda h: h.send_body(404, error_page, "text/html")
    tls_site.routes["/busy.png"] = lambda h: h.send_body(503, text, "text/plain")
    proxy = Proxy("http")
    options = RequestOptions(proxy=proxy.start(), env_proxies=False,
                             ca_bundle=ca.ca_cert.read_text())
    base = f"https://127.0.0.1:{tls_site.server_address[1]}"
    try:
        moved = _download(base + "/moved.png", options, tmp_path)
        gone = _download(base + "/gone.png", options, tmp_path)
        busy = _download(base + "/busy.png", options, tmp_path)
    finally:
        proxy.stop()
    assert moved.ok and moved.bytes == len(PNG), moved
    assert (gone.reason, gone.kind, gone.transient) == ("HTTP 404", FailureKind.STATUS,
                                                        False), gone
    assert (busy.reason, busy.kind, busy.transient) == ("HTTP 503", FailureKind.STATUS,
                                                        True), busy
    assert set(proxy.targets) == {f"127.0.0.1:{tls_site.server_address[1]}"}  # proxied
