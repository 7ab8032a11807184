"""An image's redirects obey the crawl's image scope and the target's robots.txt, in the worker.

The master judges the URL it queues; the worker judges every URL it is
redirected to, against real servers on 127.0.0.1 and 127.0.0.2 (a second
host), with robots.txt read by the worker off the engine's thread.
"""

from __future__ import annotations

import collections
import contextlib
import json
import linecache
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from crawler.board.manager import MasterClient, QueueServer
from crawler.board.memory import BoardPolicy, TaskBoard
from crawler.cli import EXIT_NOTHING_STORED
from crawler.config import Limits
from crawler.demo.site import png
from crawler.errors import BadCrawlInfo
from crawler.fetch.curl import CurlEngine
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.easy import EasyClient
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.master.robots import ROBOTS_AT_ONCE, Robots
from crawler.master.scope import Scope
from crawler.model.imagescope import ImageScope
from crawler.model.outcome import Attempt, FailureKind
from crawler.model.wire import image_scope_from_wire, limits_from_wire, robots_rules_from_wire
from crawler.worker.hops import READERS, RedirectCheck, RobotsReader
from crawler.worker.sink import sinks_into
from crawler.worker.store import Store
from crawler.worker.worker import Worker, WorkerOptions

from .conftest import (
    FixtureHandler,
    FixtureServer,
    manifest_lines,
    run_crawler,
    start_crawler,
    stop,
    wait_for_output,
)

PNG = png(40, 30, 7)
LOOPBACK = AddressPolicy(frozenset({"public", "loopback"}))
AGENT = "crawler/1.0"
REJECTED = "matched by --reject (crawl.image_deny)"  # said with the flag that refused it


def moved(to: str) -> Callable[..., None]:
    return lambda h: h.send_body(302, b"", "text/plain", {"Location": to})


def image(h: FixtureHandler) -> None:
    h.send_body(200, PNG, "image/png")


@pytest.fixture
def second_host() -> Iterator[FixtureServer]:
    """A fixture server on 127.0.0.2: another host, with a robots.txt of its own."""
    server = FixtureServer(Path(__file__).parent / "site", host="127.0.0.2")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class SilentServer:
    """Accepts connections on 127.0.0.2, reads the request, never answers (for 30 s at most)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.2", 0))
        self._listener.settimeout(0.2)
        self.asked = threading.Event()  # a request came in
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.2:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        held = []
        deadline = time.monotonic() + 30
        while not self._closed.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(4096)
            held.append(conn)
            self.asked.set()
        for conn in held:
            conn.close()

    def stop(self) -> None:
        """Stop accepting, without waiting: close() then waits no poll of its own."""
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


class Hops:
    """A CurlEngine as a worker builds it: the crawl's image scope and robots.txt on redirects."""

    def __init__(self, out: Path, *, deny: tuple[str, ...] = (), allow: tuple[str, ...] = (),
                 robots_timeout: float = 5.0, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        client = EasyClient(LOOPBACK, RequestOptions(user_agent=AGENT),
                            ca_file=default_ca_file())
        self.check = RedirectCheck(ImageScope.from_patterns(allow=allow, deny=deny),
                                   RobotsReader(client, AGENT, robots_timeout,
                                                gives_up=self.limits.deadline))
        self.store = Store(out)
        self.results: queue.SimpleQueue[tuple[str, Attempt | None]] = queue.SimpleQueue()
        self.engine = CurlEngine(slots=4, new_sink=sinks_into(self.store, self.limits),
                                 limits=self.limits, policy=LOOPBACK,
                                 options=RequestOptions(user_agent=AGENT),
                                 report=lambda results: [self.results.put(r) for r in results],
                                 stop=threading.Event(), check_hop=self.check)
        self.thread = threading.Thread(target=self.engine.run, daemon=True)
        self.thread.start()

    def submit(self, urls: list[str]) -> None:
        self.engine.submit([(url, 1) for url in urls])

    def next(self, timeout: float = 20) -> tuple[str, Attempt]:
        url, attempt = self.results.get(timeout=timeout)
        assert isinstance(attempt, Attempt)
        return url, attempt

    def fetch(self, urls: list[str]) -> dict[str, Attempt]:
        self.submit(urls)
        return dict(self.next() for _ in urls)

    def close(self) -> None:
        self.engine.close()
        self.thread.join(timeout=10)
        self.check.close()


@pytest.fixture
def hops(tmp_path: Path) -> Iterator[Callable[..., Hops]]:
    made: list[Hops] = []

    def make(**kwargs: Any) -> Hops:
        made.append(Hops(tmp_path / "out", **kwargs))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


def stored_files(out: Path) -> list[Path]:
    return [p for p in (out / "images").rglob("*") if p.is_file()] if out.exists() else []


def test_a_redirect_out_of_the_image_scope_is_refused_and_nothing_stored(
        site: FixtureServer, hops: Callable[..., Hops], tmp_path: Path) -> None:
    site.routes["/a.png"] = moved("/thumbs/a.png")
    site.routes["/thumbs/a.png"] = image
    got = hops(deny=(r"/thumbs/",)).fetch([site.url + "/a.png"])
    attempt = got[site.url + "/a.png"]
    assert (attempt.ok, attempt.kind, attempt.transient) == (False, FailureKind.REDIRECT, False)
    assert attempt.reason == (f"redirected to {site.url}/thumbs/a.png: {REJECTED}")
    assert "/thumbs/a.png" not in site.paths()
    assert "/robots.txt" not in site.paths()  # the scope is judged before any request
    assert stored_files(tmp_path / "out") == []


def test_a_redirect_that_no_accept_pattern_matches_says_so(
        site: FixtureServer, hops: Callable[..., Hops]) -> None:
    """A CDN that signs its images' URLs (a.png to /a?sig=...): a user filtering by
    file extension is told which flag refused the target."""
    site.routes["/a.png"] = moved("/a?sig=0f9c")
    site.routes["/a"] = image
    got = hops(allow=(r"\.png$",)).fetch([site.url + "/a.png"])
    assert got[site.url + "/a.png"].reason == (
        f"redirected to {site.url}/a?sig=0f9c: not matched by --accept (crawl.image_allow)")


def test_a_redirect_to_a_host_whose_robots_txt_disallows_it_is_refused(
        site: FixtureServer, second_host: FixtureServer, hops: Callable[..., Hops],
        tmp_path: Path) -> None:
    second_host.routes["/robots.txt"] = lambda h: h.send_body(
        200, b"User-agent: crawler\nDisallow: /secret/\n", "text/plain")
    second_host.routes["/secret/b.png"] = image
    second_host.routes["/open/c.png"] = image
    site.routes["/b.png"] = moved(second_host.url + "/secret/b.png")
    site.routes["/b2.png"] = moved(second_host.url + "/secret/b.png?2")
    site.routes["/c.png"] = moved(second_host.url + "/open/c.png")
    got = hops().fetch([site.url + p for p in ("/b.png", "/b2.png", "/c.png")])
    for name in ("/b.png", "/b2.png"):
        refused = got[site.url + name]
        assert (refused.ok, refused.kind, refused.transient) == (False, FailureKind.REDIRECT,
                                                                 False)
        assert refused.reason.startswith(f"redirected to {second_host.url}/secret/b.png")
        assert refused.reason.endswith(": disallowed by robots.txt")
    assert got[site.url + "/c.png"].ok  # an allowed redirect still stores
    assert [p.read_bytes() for p in stored_files(tmp_path / "out")] == [PNG]
    assert not any(p.startswith("/secret/") for p in second_host.paths())
    assert second_host.paths().count("/robots.txt") == 1, "robots.txt read once per host"


def test_a_robots_txt_that_never_answers_holds_only_its_own_redirect(
        site: FixtureServer, silent: SilentServer, hops: Callable[..., Hops]) -> None:
    """The engine's loop does not wait for robots.txt: another image finishes meanwhile."""
    site.routes["/to-silent.png"] = moved(silent.url + "/x.png")

    def after_robots_was_asked(h: FixtureHandler) -> None:
        assert silent.asked.wait(10), "robots.txt of the silent host was never asked for"
        image(h)

    site.routes["/plain.png"] = after_robots_was_asked
    engine = hops(robots_timeout=2.0)
    engine.submit([site.url + "/to-silent.png"])
    engine.submit([site.url + "/plain.png"])
    first_url, first = engine.next()
    assert (first_url, first.ok) == (site.url + "/plain.png", True)
    url, held = engine.next()
    assert url == site.url + "/to-silent.png"
    assert (held.kind, held.transient) == (FailureKind.REDIRECT, True)
    assert held.reason == (f"redirected to {silent.url}/x.png: robots.txt unreachable "
                           "(too slow (over 2 s))")


def test_a_redirect_waiting_for_robots_txt_still_ends_at_the_download_deadline(
        site: FixtureServer, silent: SilentServer, hops: Callable[..., Hops]) -> None:
    site.routes["/to-silent.png"] = moved(silent.url + "/x.png")
    engine = hops(robots_timeout=20.0, limits=Limits(deadline=1.5))
    attempt = engine.fetch([site.url + "/to-silent.png"])[site.url + "/to-silent.png"]
    assert (attempt.kind, attempt.transient) == (FailureKind.TOO_SLOW, True)
    assert attempt.reason == "too slow: not finished within 1.5 s"


def test_robots_txt_files_no_redirect_waits_for_any_more_are_not_read(
        site: FixtureServer, second_host: FixtureServer, hops: Callable[..., Hops]) -> None:
    """Hung ones of redirects already cut by their deadline held every reader a whole
    timeout each, and a later redirect to a host that answers at once waited behind them
    past its own deadline ("too slow"): a page of many images redirected to hosts that
    never answer made the images of every other redirect fail so."""
    silent = [SilentServer() for _ in range(3 * READERS)]
    try:
        for number, server in enumerate(silent):
            site.routes[f"/to-silent-{number}.png"] = moved(server.url + "/x.png")
        site.routes["/to-cdn.png"] = moved(second_host.url + "/open/c.png")
        second_host.routes["/open/c.png"] = image
        engine = hops(robots_timeout=2.0, limits=Limits(deadline=1.5))
        engine.submit([f"{site.url}/to-silent-{number}.png" for number in range(len(silent))])
        cut = [engine.next()[1] for _ in silent]
        assert {attempt.kind for attempt in cut} == {FailureKind.TOO_SLOW}
        time.sleep(1.0)  # the readers are done with the first hung ones
        attempt = engine.fetch([site.url + "/to-cdn.png"])[site.url + "/to-cdn.png"]
        assert attempt.ok, attempt.reason
    finally:
        for server in silent:
            server.close()


def test_the_image_scope_crosses_the_wire_as_text_and_is_checked_on_arrival() -> None:
    scope = Scope.from_seeds(["http://example.com/"], image_allow=[r"\.png$"],
                             image_deny=[r"/thumbs/"])
    wire = scope.images.to_wire()
    assert wire == {"allow": [r"\.png$"], "deny": ["/thumbs/"]}
    again = image_scope_from_wire(wire)
    for url in ("http://cdn.test/a.png", "http://cdn.test/thumbs/a.png", "http://cdn.test/a.gif"):
        assert again.allows(url) == scope.allows_image(url)
    with pytest.raises(BadCrawlInfo, match=r"image_deny: invalid regular expression '\[a-'"):
        image_scope_from_wire({"allow": [], "deny": ["[a-"]})
    with pytest.raises(BadCrawlInfo, match="image_allow that is not a list of text"):
        image_scope_from_wire({"allow": "x", "deny": []})
    with pytest.raises(BadCrawlInfo, match="no image scope"):
        image_scope_from_wire(None)
    assert robots_rules_from_wire({"respect": True, "timeout": 3, "max_age": 60}) == {
        "respect": True, "timeout": 3.0, "max_age": 60.0}
    with pytest.raises(BadCrawlInfo, match="timeout of 'nan', not a positive number of seconds"):
        robots_rules_from_wire({"respect": True, "timeout": float("nan"), "max_age": 60})
    with pytest.raises(BadCrawlInfo, match="max_age of '0', not a positive number of seconds"):
        robots_rules_from_wire({"respect": True, "timeout": 3, "max_age": 0})
    with pytest.raises(BadCrawlInfo, match="not true or false"):
        robots_rules_from_wire({"respect": "yes", "timeout": 3, "max_age": 60})
    # A broker's crawl record, written once when the crawl was made, may hold no max age.
    assert robots_rules_from_wire({"respect": True, "timeout": 3}) == {
        "respect": True, "timeout": 3.0, "max_age": 86400.0}
    with pytest.raises(BadCrawlInfo, match=r"no robots\.txt rules"):
        robots_rules_from_wire({"respect": True})
    with pytest.raises(BadCrawlInfo, match=r"no robots\.txt rules"):
        robots_rules_from_wire({"respect": True, "timeout": 3, "max_age": 60, "more": 1})


def test_download_limits_cross_the_wire_and_are_checked_on_arrival() -> None:
    limits = Limits(deadline=7.5, max_bytes=1000, min_width=10)
    assert limits_from_wire(limits._asdict()) == limits
    assert limits_from_wire({"deadline": 3}) == Limits(deadline=3.0)  # an older master's
    with pytest.raises(BadCrawlInfo, match=r"does not know \(max_pixels\): it runs a newer"):
        limits_from_wire({**limits._asdict(), "max_pixels": 10**6})
    with pytest.raises(BadCrawlInfo, match=r"a deadline that is refused: inf is too large"):
        limits_from_wire({"deadline": float("inf")})
    with pytest.raises(BadCrawlInfo, match=r"connect_timeout that is refused: 1e\+300 is too"):
        limits_from_wire({"connect_timeout": 1e300})  # libcurl takes milliseconds in a long
    with pytest.raises(BadCrawlInfo, match="a max_bytes of 0, not a number > 0"):
        limits_from_wire({"max_bytes": 0})
    with pytest.raises(BadCrawlInfo, match="a min_width of -1, not a number >= 0"):
        limits_from_wire({"min_width": -1})
    with pytest.raises(BadCrawlInfo, match="a min_width of True, not a whole number"):
        limits_from_wire({"min_width": True})
    with pytest.raises(BadCrawlInfo, match=r"a max_bytes of 1\.5, not a whole number"):
        limits_from_wire({"max_bytes": 1.5})
    with pytest.raises(BadCrawlInfo, match="no download limits"):
        limits_from_wire(None)


def _refused_worker(tmp_path: Path, limits: dict[str, object], deny: list[str],
                    caplog: pytest.LogCaptureFixture) -> str:
    """What a worker says of a master that sends these rules; it must lease nothing and
    log no traceback."""
    board = TaskBoard(BoardPolicy(lease_timeout=5.0))
    board.put("http://127.0.0.1:9/a.png", "127.0.0.1:9", None)

    def describe(full: bool = False) -> dict[str, object]:
        return {"limits": limits, "policy": LOOPBACK.to_wire(), "user_agent": AGENT,
                "image_scope": {"allow": [], "deny": deny},
                "robots": {"respect": True, "timeout": 5.0, "max_age": 86400.0},
                "lease_timeout": 5.0, "worker_silence": 3.0}

    key = b"k" * 32
    # Its thread ends with the test process: the standard library has no clean stop.
    server = QueueServer(board, ("127.0.0.1", 0), key, describe).start()
    worker = Worker(MasterClient(server.address, key),
                    WorkerOptions(out_dir=tmp_path / "out", connect_wait=10))
    with pytest.raises(BadCrawlInfo) as raised:
        worker.run()
    assert not any(record.exc_info for record in caplog.records)
    assert board.unfinished() == 1 and board.counts()["in_flight"] == 0
    return str(raised.value)


def test_a_worker_of_an_older_version_stops_with_a_clear_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A limit it cannot apply: no traceback, nothing leased, and what to do about it."""
    refusal = _refused_worker(tmp_path, {"deadline": 5.0, "max_pixels": 10**6}, [], caplog)
    assert refusal == ("the master sent download limits this crawler does not know "
                       "(max_pixels): it runs a newer crawler; install the same version on "
                       "this host")


def test_a_worker_told_a_bad_pattern_stops_with_a_clear_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No traceback, nothing leased: the worker says what the master sent and leaves."""
    refusal = _refused_worker(tmp_path, {}, ["(unclosed"], caplog)
    assert refusal == ("the master sent a bad image scope: image_deny: invalid regular"
                       " expression '(unclosed': missing ), unterminated subpattern at"
                       " position 0")


def test_redirects_obey_scope_and_robots_through_master_and_local_workers(
        site: FixtureServer, second_host: FixtureServer, tmp_path: Path) -> None:
    page = (b'<html><body><img src="/a.png"><img src="/b.png"><img src="/c.png">'
            b'<img src="/d.png"><img src="/images/blue.png"></body></html>')
    site.routes["/"] = lambda h: h.send_body(200, page, "text/html")
    site.routes["/a.png"] = moved("/thumbs/a.png")
    site.routes["/thumbs/a.png"] = image
    site.routes["/d.png"] = moved("/thumbs/d.png")
    second_host.routes["/robots.txt"] = lambda h: h.send_body(
        200, b"User-agent: *\nDisallow: /secret/\n", "text/plain")
    second_host.routes["/secret/b.png"] = image
    second_host.routes["/c.png"] = image
    site.routes["/b.png"] = moved(second_host.url + "/secret/b.png")
    site.routes["/c.png"] = moved(second_host.url + "/c.png")
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                         "--local-workers", "1", "--reject", "/thumbs/", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entries = {e["url"][len(site.url):]: e for e in manifest_lines(out)}
    assert entries["/a.png"]["status"] == "failure"
    assert entries["/a.png"]["reason"] == (f"redirected to {site.url}/thumbs/a.png: "
                                           f"{REJECTED}")
    assert entries["/b.png"]["status"] == "failure"
    assert entries["/b.png"]["reason"] == (f"redirected to {second_host.url}/secret/b.png: "
                                           "disallowed by robots.txt")
    assert entries["/c.png"]["status"] == "success"
    assert entries["/images/blue.png"]["status"] == "success"
    results_log = (out / "results.log").read_text()
    assert f"redirected to {second_host.url}/secret/b.png: disallowed by robots.txt" \
        in results_log
    assert "/thumbs/a.png" not in site.paths()
    assert "/secret/b.png" not in second_host.paths()
    stored = [p for p in (out / "images").rglob("*") if p.is_file()]
    assert len(stored) == 2
    # Counted under what the refusal says, not once per target the summary would list.
    assert json.loads((out / "summary.json").read_text())["failures_by_reason"] == {
        f"redirected: {REJECTED}": 2, "redirected: disallowed by robots.txt": 1}


def test_a_silent_robots_txt_does_not_stall_a_crawl_past_its_deadline(
        site: FixtureServer, silent: SilentServer, tmp_path: Path) -> None:
    page = b'<html><body><img src="/to-silent.png"><img src="/images/blue.png"></body></html>'
    site.routes["/"] = lambda h: h.send_body(200, page, "text/html")
    site.routes["/to-silent.png"] = moved(silent.url + "/x.png")
    (tmp_path / "settings.toml").write_text("[crawl]\npage_timeout = 2.0\n")
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                         "--local-workers", "1", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    entries = {e["url"][len(site.url):]: e for e in manifest_lines(out)}
    assert entries["/images/blue.png"]["status"] == "success"
    assert entries["/to-silent.png"]["status"] == "failure"
    assert entries["/to-silent.png"]["reason"] == (
        f"redirected to {silent.url}/x.png: robots.txt unreachable "
        "(too slow (over 2 s))")


def test_a_redirect_held_by_an_unreadable_robots_txt_is_tried_again_by_the_next_run(
        site: FixtureServer, second_host: FixtureServer, tmp_path: Path) -> None:
    """As a page or image whose own robots.txt cannot be read: nothing of it is final."""
    page = b'<html><body><img src="/to-cdn.png"></body></html>'
    site.routes["/"] = lambda h: h.send_body(200, page, "text/html")
    site.routes["/to-cdn.png"] = moved(second_host.url + "/x.png")
    second_host.routes["/robots.txt"] = lambda h: h.send_body(503, b"down", "text/plain")
    second_host.routes["/x.png"] = image
    (tmp_path / "settings.toml").write_text("[download]\nmax_attempts = 1\n")
    out = tmp_path / "out"
    command = ("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
               "--local-workers", "1")
    first = run_crawler(*command, cwd=tmp_path, timeout=60)
    assert first.returncode == EXIT_NOTHING_STORED, first.stderr
    [held] = manifest_lines(out)
    assert held["reason"] == (f"redirected to {second_host.url}/x.png: robots.txt "
                              "unreachable (HTTP 503)")
    assert held["transient"] is True
    assert json.loads((out / "summary.json").read_text())["images_to_retry"] == 1

    second_host.routes["/robots.txt"] = lambda h: h.send_body(404, b"", "text/plain")
    again = run_crawler(*command, cwd=tmp_path, timeout=60)
    assert again.returncode == 0, again.stderr
    [stored] = manifest_lines(out)
    assert stored["status"] == "success", stored
    assert "/x.png" in second_host.paths()


def _crawl_a_page_on_silent_hosts(site: FixtureServer, tmp_path: Path, count: int,
                                  settings: str, also: Sequence[str] = (),
                                  ) -> tuple[Any, list[str], dict[str, Any]]:
    """Crawl a page showing an image on each of ``count`` hosts whose robots.txt never
    answers, then the images ``also`` names, and one of its own (which must be stored):
    the run, the hosts, the manifest."""
    silent = [SilentServer() for _ in range(count)]
    hosts = [server.url for server in silent]
    try:
        tags = "".join(f'<img src="{host}/x.png">' for host in hosts)
        tags += "".join(f'<img src="{url}">' for url in also)
        page = f'<html><body>{tags}<img src="/images/blue.png"></body></html>'.encode()
        site.routes["/"] = lambda h: h.send_body(200, page, "text/html")
        (tmp_path / "settings.toml").write_text(settings)
        out = tmp_path / "out"
        result = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                             str(out), "--local-workers", "1", cwd=tmp_path, timeout=60)
    finally:
        for server in silent:
            server.stop()
        for server in silent:
            server.close()
    assert result.returncode == 0, result.stderr
    entries = {e["url"]: e for e in manifest_lines(out)}
    assert entries[site.url + "/images/blue.png"]["status"] == "success"
    return result, hosts, entries


def test_the_robots_txt_files_a_page_needs_are_read_at_once_not_in_turn(
        site: FixtureServer, tmp_path: Path) -> None:
    """A page showing images of six hosts whose robots.txt never answers waits for them
    all within about one deadline (it took six, one after the other), and its own images
    and links are not held for longer."""
    started = time.monotonic()
    _, hosts, entries = _crawl_a_page_on_silent_hosts(site, tmp_path, 6,
                                                      "[crawl]\npage_timeout = 2.0\n")
    took = time.monotonic() - started
    for host in hosts:
        assert entries[host + "/x.png"]["reason"] == (
            "robots.txt unreachable (too slow (over 2 s))")
    assert took < 2.0 * 6, f"the six robots.txt were read one after the other ({took:.1f} s)"


def test_a_page_showing_images_of_many_hosts_that_never_answer_waits_two_deadlines_at_most(
        site: FixtureServer, tmp_path: Path) -> None:
    """More such hosts than two deadlines' worth of robots.txt read at once: a batch after
    another took a deadline each (a stop waited for them too). The hosts not begun within
    the first deadline are refused for now, as unreachable: a rerun tries them again."""
    count = 2 * ROBOTS_AT_ONCE + 16
    started = time.monotonic()
    result, hosts, entries = _crawl_a_page_on_silent_hosts(
        site, tmp_path, count, "[crawl]\npage_timeout = 2.0\n")
    took = time.monotonic() - started
    reasons = collections.Counter(entries[host + "/x.png"]["reason"] for host in hosts)
    assert set(reasons) <= {"robots.txt unreachable (too slow (over 2 s))",
                            "robots.txt unreachable (not read in time)"}, reasons
    assert reasons["robots.txt unreachable (not read in time)"] >= 16, reasons
    assert f"to try again    {count} image(s)" in result.stderr, result.stderr
    assert took < 10, f"the robots.txt files were read a batch after another ({took:.1f} s)"


def test_hung_robots_txt_files_of_some_hosts_leave_the_images_of_the_others_stored(
        site: FixtureServer, make_server: Callable[[], FixtureServer],
        tmp_path: Path) -> None:
    """A page showing images of ten hosts whose robots.txt never answers, then of four
    that answer at once. The robots.txt files were read with the pages' bound (two
    here): the hung ones held every turn for a deadline, and the images of the hosts
    that answer, not begun by then, were refused "not read in time" for the run."""
    answering = [make_server() for _ in range(4)]
    _, hung, entries = _crawl_a_page_on_silent_hosts(
        site, tmp_path, 10, "[crawl]\npage_timeout = 1.0\npage_concurrency = 2\n",
        also=[server.url + "/images/blue.png" for server in answering])
    for server in answering:
        entry = entries[server.url + "/images/blue.png"]
        assert entry["status"] == "success", entry
    for host in hung:
        assert entries[host + "/x.png"]["reason"] == (
            "robots.txt unreachable (too slow (over 1 s))")


def _connections_to(pid: int, ports: set[int]) -> int:
    """TCP connections process ``pid`` holds open to 127.0.0.1 on any of ``ports``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
        if remote_port in ports and state == "01" and inode in inodes:  # 01: established
            count += 1
    return count


def test_the_master_keeps_no_connection_open_to_a_host_whose_robots_txt_it_read(
        site: FixtureServer, make_server: Callable[[], FixtureServer], tmp_path: Path,
        authkey: str) -> None:
    """A robots.txt is read once a day per origin: each connection that carried one, kept
    alive, idled for the rest of the crawl (a few per reading thread, hundreds on a crawl
    of many hosts)."""
    hosts = [make_server() for _ in range(12)]
    tags = "".join(f'<img src="{server.url}/images/blue.png">' for server in hosts)
    page = f"<html><body>{tags}</body></html>".encode()
    site.routes["/"] = lambda h: h.send_body(200, page, "text/html")
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(tmp_path / "out"), cwd=tmp_path)
    try:
        wait_for_output(master, r"no worker has taken one", 30)  # every robots.txt read
        ports = {server.server_address[1] for server in hosts}
        assert _connections_to(master.pid, ports) == 0
    finally:
        stop(master)


def test_a_robots_txt_that_waited_for_a_connection_in_vain_is_read_when_next_needed(
        make_server: Callable[[], FixtureServer]) -> None:
    """Other reads (another page's) held every connection past its deadline: its server
    was never asked, so its origin is not refused for the run as "too slow". Callers
    meanwhile are told "not read in time" at once, not each made to wait again."""
    silent = [SilentServer() for _ in range(2)]
    fast = make_server()
    fast.routes["/robots.txt"] = lambda h: h.send_body(
        200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
    client = EasyClient(LOOPBACK, RequestOptions(user_agent=AGENT), at_once=2)
    robots = Robots(client, AGENT, timeout=2.0)
    holders = [threading.Thread(target=client.get, args=(server.url + "/robots.txt",),
                                kwargs={"accept": "*/*", "max_bytes": 1024, "timeout": 20.0})
               for server in silent]
    try:
        for holder in holders:
            holder.start()
        assert all(server.asked.wait(10) for server in silent)
        not_read = "robots.txt unreachable (not read in time)"
        assert robots.refusal(fast.url + "/a.png") == not_read
        asked_again = time.monotonic()
        assert robots.refusal(fast.url + "/b.png") == not_read
        assert time.monotonic() - asked_again < 1.0, "waited for a connection again"
        # For want of its robots.txt, not final: a page of it is tried by a rerun.
        assert robots.verdict(fast.url + "/page.html") == (not_read, True)
        assert fast.paths() == []
        for server in silent:
            server.close()  # the connections come free
        for holder in holders:
            holder.join(10)
        time.sleep(max(0.0, asked_again + 2.1 - time.monotonic()))
        assert robots.refusal(fast.url + "/a.png") is None
        assert robots.refusal(fast.url + "/private/a.png") == "disallowed by robots.txt"
        assert robots.verdict(fast.url + "/private/a.png") == ("disallowed by robots.txt",
                                                               False)
        assert fast.paths() == ["/robots.txt"]
    finally:
        robots.close()
        client.close()
        for server in silent:
            server.close()


def _waiting_at(thread: threading.Thread, code: str) -> bool:
    """Whether ``thread`` is in a call made by the line that holds ``code``."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if code in linecache.getline(frame.f_code.co_filename, frame.f_lineno):
            return True
        frame = frame.f_back
    return False


def test_a_request_waiting_for_a_connection_as_the_client_closes_is_not_sent(
        make_server: Callable[[], FixtureServer]) -> None:
    """close() came after a request had passed its check and while it waited for a
    connection: the request raised a pycurl.error ("no curl handle" for a thread's
    handle closed under it, "CurlShare is closed" for a first one made then) as the
    crawl wound down, logged as a crawler error with a traceback."""
    silent = SilentServer()
    fast = make_server()
    fast.routes["/robots.txt"] = lambda h: h.send_body(200, b"User-agent: *\n", "text/plain")
    client = EasyClient(LOOPBACK, RequestOptions(user_agent=AGENT), at_once=1)
    holder = threading.Thread(target=client.get, args=(silent.url + "/robots.txt",),
                              kwargs={"accept": "*/*", "max_bytes": 1024, "timeout": 20.0})
    replies: list[Any] = []
    waiter = threading.Thread(target=lambda: replies.append(client.get(
        fast.url + "/robots.txt", accept="*/*", max_bytes=1024, timeout=20.0)))
    try:
        holder.start()
        assert silent.asked.wait(10)  # the one connection is taken
        waiter.start()
        deadline = time.monotonic() + 10
        while not _waiting_at(waiter, "turns.acquire("):  # past the check, its turn to come
            assert time.monotonic() < deadline, "the second request never waited its turn"
            time.sleep(0.01)
        client.close()
        silent.close()  # the turn comes free
        waiter.join(10)
        holder.join(10)
        [reply] = replies
        assert reply.kind is FailureKind.STOPPED and reply.no_turn
        assert reply.failure == "not sent: the crawl is stopping"
        assert fast.paths() == []
    finally:
        client.close()
        silent.close()


def test_hung_robots_txt_files_do_not_starve_those_that_answer(
        make_server: Callable[[], FixtureServer]) -> None:
    """More hosts that never answer than the client lets through at once: the hosts that
    answer are still read, not cut off waiting for a turn and refused for the run."""
    silent = [SilentServer() for _ in range(3)]
    fast = [make_server() for _ in range(3)]
    for server in fast:
        server.routes["/robots.txt"] = lambda h: h.send_body(
            200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
    client = EasyClient(LOOPBACK, RequestOptions(user_agent=AGENT), at_once=2)
    robots = Robots(client, AGENT, timeout=1.0)
    try:
        robots.read_all([s.url + "/x.png" for s in silent] + [f.url + "/x.png" for f in fast])
        for server in fast:
            assert robots.unreachable(server.url + "/x.png") is None
            assert robots.refusal(server.url + "/private/a.png") == "disallowed by robots.txt"
        for server in silent:
            assert robots.unreachable(server.url + "/x.png") == "too slow (over 1 s)"
    finally:
        robots.close()
        client.close()
        for server in silent:
            server.close()
