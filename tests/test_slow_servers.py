"""Servers that answer one byte at a time cannot hang the master: every request has a deadline.

Each test runs the master against a real socket server on 127.0.0.1 that
trickles its answer (head or body) one byte every 0.2 s, with
``crawl.page_timeout`` at 2 s; the crawl must end well before the trickle would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crawler.cli import EXIT_NOTHING_STORED

from .conftest import free_port, manifest_lines, run_crawler, start_crawler

TRICKLE_EVERY = 0.2  # seconds between two bytes
TRICKLE_FOR = 60.0  # a trickle gives up by itself after this long, so no test can hang


@dataclass(frozen=True)
class Answer:
    head: bytes
    body: bytes = b""
    trickle_head: bool = False
    trickle_body: bool = False
    hang: bool = False  # read the request, answer nothing until the client leaves


class Trickler:
    """A socket server on 127.0.0.1 answering each path with an :class:`Answer`."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.paths: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            try:
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                path = request.split(b" ", 2)[1].decode()
                self.paths.append(path)
                answer = self.answers.get(path, Answer(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
                if answer.hang:
                    self._hang(conn)
                    return
                self._send(conn, answer.head, answer.trickle_head)
                self._send(conn, answer.body, answer.trickle_body)
            except OSError:
                return  # the client gave up: what the test wants

    def _hang(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        ends = time.monotonic() + TRICKLE_FOR
        while not self._closed.is_set() and time.monotonic() < ends:
            try:
                if not conn.recv(4096):
                    return  # the client gave up
            except TimeoutError:
                continue

    def _send(self, conn: socket.socket, data: bytes, trickle: bool) -> None:
        if not trickle:
            conn.sendall(data)
            return
        ends = time.monotonic() + TRICKLE_FOR
        for byte in data:
            if self._closed.is_set() or time.monotonic() > ends:
                return
            conn.sendall(bytes([byte]))
            time.sleep(TRICKLE_EVERY)


@pytest.fixture
def tricklers() -> Iterator[list[Trickler]]:
    made: list[Trickler] = []
    yield made
    for server in made:
        server.close()


def _html(body: str, extra: str = "") -> Answer:
    data = body.encode()
    return Answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                  + extra.encode() + b"Content-Length: %d\r\n\r\n" % len(data), data)


def _crawl(seed: str, tmp_path: Path, *flags: str) -> tuple[int, str, str]:
    (tmp_path / "settings.toml").write_text("[crawl]\npage_timeout = 2.0\n")
    master = start_crawler("master", seed, "--bind", f"127.0.0.1:{free_port()}",
                           "--out", str(tmp_path / "out"), *flags, cwd=tmp_path)
    started = time.monotonic()
    out, err = master.communicate(timeout=45)
    assert time.monotonic() - started < 30, "the crawl waited on a trickling server"
    return master.returncode, err, out


SLOW_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 4\r\n\r\n"
             + b" " * 400)


def test_a_seed_page_whose_head_trickles_is_cut_at_the_page_timeout(
        tmp_path: Path, tricklers: list[Trickler]) -> None:
    server = Trickler({"/": Answer(SLOW_HEAD, b"<p/>", trickle_head=True)})
    tricklers.append(server)
    status, err, _ = _crawl(server.url + "/", tmp_path, "--dry-run")
    assert status == 5, err
    assert f"{server.url}/: page too slow (over 2 s)" in err, err


def test_a_linked_page_whose_head_trickles_fails_and_the_crawl_ends(
        tmp_path: Path, tricklers: list[Trickler]) -> None:
    server = Trickler({"/": _html('<a href="/slow">slow</a><img src="/a.png">'),
                       "/slow": Answer(SLOW_HEAD, b"<p/>", trickle_head=True)})
    tricklers.append(server)
    status, err, out = _crawl(server.url + "/", tmp_path, "--dry-run")
    assert status == 0, err
    assert f"page {server.url}/slow: page too slow (over 2 s)" in err, err
    assert out.split() == [server.url + "/a.png"]


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n",
], ids=["connection-close", "http-1.0"])
def test_a_page_without_length_whose_body_trickles_is_cut(
        tmp_path: Path, tricklers: list[Trickler], head: bytes) -> None:
    server = Trickler({"/": _html('<a href="/slow">slow</a>'),
                       "/slow": Answer(head, b"<html>" + b" " * 400, trickle_body=True)})
    tricklers.append(server)
    status, err, _ = _crawl(server.url + "/", tmp_path, "--dry-run")
    assert status == 0, err
    assert f"page {server.url}/slow: page too slow (over 2 s)" in err, err


@pytest.mark.parametrize("part", ["head", "body"])
def test_an_image_hosts_trickling_robots_txt_refuses_its_images_and_the_crawl_ends(
        tmp_path: Path, tricklers: list[Trickler], part: str) -> None:
    robots = (Answer(SLOW_HEAD.replace(b"text/html", b"text/plain"), b"", trickle_head=True)
              if part == "head" else
              Answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 400\r\n\r\n",
                     b"#" * 400, trickle_body=True))
    images = Trickler({"/robots.txt": robots})
    site = Trickler({"/": _html(f'<img src="{images.url}/x.png"><img src="/own.png">')})
    tricklers += [images, site]
    status, err, out = _crawl(site.url + "/", tmp_path, "--dry-run")
    assert status == 0, err
    assert f"robots.txt of {images.url} too slow" in err, err
    assert out.split() == [site.url + "/own.png"]


def test_a_host_whose_images_never_answer_is_given_up_after_a_few_timeouts(
        tmp_path: Path, tricklers: list[Trickler]) -> None:
    """Twelve images on a server that reads each request and never answers: each try
    waited out its read timeout, three tries an image, two at a time (36 requests, 9 s
    here; with the defaults, 90 s an image). After three timeouts in a row the host is
    given up: its other images end at once, to be tried again by the next run."""
    names = [f"/{n}.png" for n in range(12)]
    images = Trickler({name: Answer(b"", hang=True) for name in names})
    site = Trickler({"/": _html("".join(f'<img src="{images.url}{name}">' for name in names))})
    tricklers += [images, site]
    (tmp_path / "settings.toml").write_text(
        "[download]\nread_timeout = 0.5\nhost_timeouts = 3\nbackoff_base = 0.1\n"
        "[politeness]\nhost_concurrency = 2\n")
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                         "--local-workers", "1", cwd=tmp_path, timeout=60)
    assert result.returncode == EXIT_NOTHING_STORED, result.stderr
    asked = [path for path in images.paths if path != "/robots.txt"]
    assert 3 <= len(asked) <= 6, asked  # the first three, and those in flight with them
    entries = {e["url"]: e for e in manifest_lines(out)}
    reasons = [entries[images.url + name]["reason"] for name in names]
    given_up = (f"given up: {images.url.removeprefix('http://')} timed out 3 times in a row "
                "(download.host_timeouts)")
    assert reasons.count(given_up) >= 12 - len(asked), reasons
    assert set(reasons) <= {given_up, "timed out"}, reasons
    assert "timed out 3 times in a row, with no answer between" in result.stderr
    assert "to try again    12 image(s)" in result.stderr, result.stderr


def test_a_host_whose_pages_never_answer_is_given_up_after_a_few_timeouts(
        tmp_path: Path, tricklers: list[Trickler]) -> None:
    """Ten pages of the site, linked from its first, on a server that reads each request
    and never answers: each try waited out the page timeout, three tries a page (30
    requests). After three timeouts in a row the host's other pages are set aside
    unread: the next run reads them."""
    names = [f"/p{n}.html" for n in range(10)]
    site = Trickler({"/": _html("".join(f'<a href="{name}">p</a>' for name in names)),
                     **{name: Answer(b"", hang=True) for name in names}})
    tricklers.append(site)
    (tmp_path / "settings.toml").write_text(
        "[crawl]\npage_timeout = 0.5\npage_concurrency = 2\n"
        "[download]\nhost_timeouts = 3\nbackoff_base = 0.1\n")
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                         cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    asked = [path for path in site.paths if path.startswith("/p")]
    assert 3 <= len(asked) <= 8, asked  # the first three, retries and those in flight
    host = site.url.removeprefix("http://")
    failed = {json.loads(line)["url"]: json.loads(line)
              for line in (out / "pages.jsonl").read_text().splitlines()}
    assert set(failed) == {site.url + name for name in names}, failed
    unread = f"not read: {host} timed out 3 times in a row (download.host_timeouts)"
    reasons = [entry["reason"] for entry in failed.values()]
    assert reasons.count(unread) >= 10 - len(asked), reasons
    assert set(reasons) <= {unread, "page too slow (over 0.5 s)"}, reasons
    assert not any(entry["final"] for entry in failed.values())  # the next run reads them
    assert f"{host} timed out 3 times in a row, with no answer between" in result.stderr


def test_a_page_redirected_to_a_host_that_never_answers_counts_that_host_not_its_own(
        tmp_path: Path, tricklers: list[Trickler]) -> None:
    """Pages of one site that each redirect to another host, which reads the request and
    never answers: the host that hung is given up, not the one that answered with a
    redirect (which then read none of its own pages in the run)."""
    names = [f"/h{n}.html" for n in range(6)]
    hung = Trickler({"/": _html(""), **{name: Answer(b"", hang=True) for name in names}})
    site = Trickler({"/": _html("".join(f'<a href="/r{name}">r</a>' for name in names)),
                     **{f"/r{name}": Answer(b"HTTP/1.1 302 Found\r\nLocation: "
                                            + (hung.url + name).encode()
                                            + b"\r\nContent-Length: 0\r\n\r\n")
                        for name in names}})
    tricklers += [hung, site]
    (tmp_path / "settings.toml").write_text(
        "[crawl]\npage_timeout = 0.5\npage_concurrency = 2\n"
        "[download]\nhost_timeouts = 3\nbackoff_base = 0.1\n")
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", hung.url + "/", "--bind", "127.0.0.1:0",
                         "--out", str(out), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    hung_host, site_host = (s.url.removeprefix("http://") for s in (hung, site))
    assert f"{hung_host} timed out 3 times in a row, with no answer between" in result.stderr
    assert f"{site_host} timed out" not in result.stderr, result.stderr
    reasons = [json.loads(line)["reason"]
               for line in (out / "pages.jsonl").read_text().splitlines()]
    assert not any(site_host in reason for reason in reasons), reasons
    asked = [path for path in hung.paths if path.startswith("/h")]
    assert 3 <= len(asked) <= 8, asked  # the host that hung is not asked each try
