"""Cookies a site's pages set go with the images that follow, as in a browser and wget.

A real site on 127.0.0.1: ``/setcookie.html`` sets a cookie for the whole site and
another for ``/deep/``, and its images are refused without the cookie their path
should carry; an image on 127.0.0.2, another host, must get neither. Crawled for
real: by a master's local workers, by a worker process of its own, and on a real
redis-server broker. The cookie's value is a secret: no log or result file has it.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pycurl
import pytest

from crawler.demo.site import png
from crawler.errors import StorageError
from crawler.fetch.cookiefeed import CookieFeed, JarWatch, add_to_jar, jar_lines
from crawler.master.pagecookies import load_page_cookies, save_page_cookies
from crawler.model import cookies
from crawler.model.files import PAGE_COOKIES_NAME

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
    wait_until,
)
from .redis_server import RedisServer
from .test_curl import Engine

PNG = png(8, 8, 3)


class CookieSite:
    """The page that sets the cookies, the images that need them, and another host."""

    def __init__(self, home: FixtureServer, other: FixtureServer) -> None:
        self.home, self.other = home, other
        self.value = "c00kie-" + secrets.token_hex(8)
        self.cookies: dict[str, list[str]] = {}  # image path -> the Cookie headers it got
        self._lock = threading.Lock()
        home.routes["/setcookie.html"] = self._page
        home.routes["/needcookie.png"] = lambda h: self._image(h, f"sc={self.value}")
        home.routes["/deep/in.png"] = lambda h: self._image(h, "deep=d")
        other.routes["/other.png"] = lambda h: self._image(h, None)

    @property
    def seed(self) -> str:
        return self.home.url + "/setcookie.html"

    def _page(self, handler: FixtureHandler) -> None:
        body = (f"<html><body><img src='/needcookie.png'><img src='/deep/in.png'>"
                f"<img src='{self.other.url}/other.png'></body></html>").encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Set-Cookie", f"sc={self.value}; Path=/")
        handler.send_header("Set-Cookie", "deep=d; Path=/deep/")
        handler.end_headers()
        handler.wfile.write(body)

    def _image(self, handler: FixtureHandler, needs: str | None) -> None:
        cookie = handler.headers.get("Cookie", "")
        with self._lock:
            self.cookies.setdefault(handler.path, []).append(cookie)
        if needs is not None and needs not in cookie.split("; "):
            handler.send_body(403, b"no cookie, no image", "text/plain")
        else:
            handler.send_body(200, PNG, "image/png")

    def check(self, out: Path, *texts: str) -> None:
        """Every image stored, each with the cookies of its own path and host only, and
        the cookie's value in no log or result file (nor in ``texts``)."""
        entries = manifest_lines(out)
        assert sorted((e["url"], e["status"]) for e in entries) == sorted([
            (self.home.url + "/needcookie.png", "success"),
            (self.home.url + "/deep/in.png", "success"),
            (self.other.url + "/other.png", "success")]), entries
        assert self.cookies["/needcookie.png"][-1] == f"sc={self.value}"
        assert sorted(self.cookies["/deep/in.png"][-1].split("; ")) == sorted(
            ["deep=d", f"sc={self.value}"])
        assert self.cookies["/other.png"] == [""]  # another host: not its cookies
        written = "".join(path.read_text(errors="replace") for path in out.rglob("*")
                          if path.is_file() and path.suffix in (".log", ".jsonl", ".json"))
        for text in (written, *texts):
            assert self.value not in text


@pytest.fixture
def cookie_site(make_server: Callable[[], FixtureServer]) -> Iterator[CookieSite]:
    other = FixtureServer(SITE, host="127.0.0.2")
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        yield CookieSite(make_server(), other)
    finally:
        other.shutdown()
        other.server_close()


def test_local_workers_send_the_cookies_the_page_set(cookie_site: CookieSite,
                                                     tmp_path: Path) -> None:
    result = run_crawler("master", cookie_site.seed, "--bind", "127.0.0.1:0", "--out",
                         str(tmp_path / "out"), "--local-workers", "1", "--ignore-robots",
                         "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cookie_site.check(tmp_path / "out", result.stdout, result.stderr)


def test_a_master_killed_and_started_again_still_sends_the_cookies_its_pages_set(
        cookie_site: CookieSite, tmp_path: Path) -> None:
    """The page that set them is done: without them kept, the images it left queued
    went out bare, and the site refused them for good (403)."""
    out = tmp_path / "out"
    command = ("master", cookie_site.seed, "--bind", "127.0.0.1:0", "--out", str(out),
               "--ignore-robots")
    first = start_crawler(*command, cwd=tmp_path)  # no worker: its images stay queued
    try:
        wait_until(lambda: "/setcookie.html" in cookie_site.home.paths(), 30, "the page")
        time.sleep(1.0)  # the page and its images recorded (a transaction every 5 ms)
        first.kill()
        first.wait(10)
    finally:
        stop(first)
    assert cookie_site.cookies == {}, "no image was asked for yet"
    result = run_crawler(*command, "--local-workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert cookie_site.home.paths().count("/setcookie.html") == 1  # not read again
    cookie_site.check(out, result.stdout, result.stderr)
    # Kept where only their owner reads them, as the authkey is.
    assert stat.S_IMODE((out / PAGE_COOKIES_NAME).stat().st_mode) == 0o600


def test_a_worker_of_its_own_sends_the_cookies_the_page_set(cookie_site: CookieSite,
                                                            tmp_path: Path,
                                                            authkey: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    master = start_crawler("master", cookie_site.seed, "--bind", address, "--out",
                           str(tmp_path / "out"), "--local-workers", "0", "--ignore-robots",
                           "-v", cwd=tmp_path)
    worker = start_crawler("worker", address, "--out", str(tmp_path / "out"),
                           "--connect-wait", "30", "-v", cwd=tmp_path)
    try:
        err = finish(master, 60)
        assert master.returncode == 0, err
        worker_err = finish(worker, 30)
        assert worker.returncode == 0, worker_err
    finally:
        stop(master)
        stop(worker)
    cookie_site.check(tmp_path / "out", err, worker_err)


def test_a_worker_on_the_broker_sends_the_cookies_the_page_set(
        cookie_site: CookieSite, redis_server: RedisServer, tmp_path: Path) -> None:
    crawl = "ck" + secrets.token_hex(4)
    broker = ("--broker", redis_server.url, "--crawl", crawl)
    master = start_crawler("master", cookie_site.seed, *broker, "--out", str(tmp_path / "out"),
                           "--local-workers", "0", "--ignore-robots", "-v", cwd=tmp_path)
    worker = start_crawler("worker", *broker, "--out", str(tmp_path / "out"),
                           "--connect-wait", "30", "-v", cwd=tmp_path)
    try:
        err = finish(master, 60)
        assert master.returncode == 0, err
        worker_err = finish(worker, 30)
        assert worker.returncode == 0, worker_err
    finally:
        stop(master)
        stop(worker)
    cookie_site.check(tmp_path / "out", err, worker_err)
    status = run_crawler("status", *broker, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert cookie_site.value not in status.stdout + status.stderr


def test_local_workers_on_the_broker_send_the_cookies_the_page_set(
        cookie_site: CookieSite, redis_server: RedisServer, tmp_path: Path) -> None:
    broker = ("--broker", redis_server.url, "--crawl", "ck" + secrets.token_hex(4))
    result = run_crawler("master", cookie_site.seed, *broker, "--out", str(tmp_path / "out"),
                         "--local-workers", "1", "--ignore-robots", "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cookie_site.check(tmp_path / "out", result.stdout, result.stderr)


def _held_at_first(server: FixtureServer, path: str) -> tuple[threading.Event,
                                                                threading.Event]:
    """``path``'s first request waits (30 s at most) until the second event is set; the
    first is set when it arrives."""
    serve, reached, release = server.routes[path], threading.Event(), threading.Event()

    def held(handler: FixtureHandler) -> None:
        if not reached.is_set():
            reached.set()
            release.wait(30)
        serve(handler)

    server.routes[path] = held
    return reached, release


def test_a_worker_that_joins_after_redis_lost_the_cookies_still_gets_them(
        cookie_site: CookieSite, make_redis_server: Callable[[], RedisServer],
        tmp_path: Path) -> None:
    """The master sends the workers only what changed in its jar. Redis restarted from
    files older than the cookies (a crash, a snapshot) had none, the page read again set
    the same ones, and a worker that came afterwards sent its images without them (403)."""
    reached, release = _held_at_first(cookie_site.home, "/setcookie.html")
    redis_at = make_redis_server().start(appendonly=True)
    crawl, kept, out = "ck" + secrets.token_hex(4), tmp_path / "aof-before", tmp_path / "out"
    broker = ("--broker", redis_at.url, "--crawl", crawl)
    master = start_crawler("master", cookie_site.seed, *broker, "--out", str(out),
                           "--local-workers", "0", "--ignore-robots", cwd=tmp_path)
    worker = None
    try:
        assert reached.wait(30), "the page was not asked for"
        shutil.copytree(redis_at.folder / "appendonlydir", kept)  # no cookie in it yet
        release.set()
        # The page recorded as read too: the cookies go to the broker as its answer comes,
        # and a restart between the two left the read page's record to the restarted
        # Redis, which then had it read without the cookies, and nothing to read again.
        wait_until(lambda: redis_at.client().hlen(f"crawler:{{{crawl}}}:jar") == 2
                   and int(redis_at.client().hget(f"crawler:{{{crawl}}}:pages:stats", "done")
                           or 0) == 1, 30, "the page's cookies and its record on the broker")
        redis_at.restart_from(kept)
        worker = start_crawler("worker", *broker, "--out", str(out), "--connect-wait", "30",
                               cwd=tmp_path)
        err = finish(master, 120)
        assert master.returncode == 0, err
        worker_err = finish(worker, 30)
        assert worker.returncode == 0, worker_err
    finally:
        release.set()
        stop(master)
        if worker is not None:
            stop(worker)
    assert cookie_site.home.paths().count("/setcookie.html") == 2  # read again
    cookie_site.check(out, err, worker_err)


class SessionSite:
    """``/`` shows ``/s.png`` and links ``/b.html``, which shows ``/b.png``; each page sets
    a session cookie of its own, anew at each read, and its image is refused (403) without
    the last one set (a site that renews its session on every view)."""

    def __init__(self, server: FixtureServer) -> None:
        self.server = server
        self.reads: dict[str, int] = {}  # cookie name -> the pages' reads that set it
        self.served: list[tuple[str, bool]] = []  # image path, whether it had the cookie
        self._lock = threading.Lock()
        for path, name, links in (("/", "s", "<a href='/b.html'>b</a>"), ("/b.html", "b", "")):
            server.routes[path] = (lambda h, name=name, links=links: self._page(h, name, links))
            server.routes[f"/{name}.png"] = lambda h, name=name: self._image(h, name)

    def _page(self, handler: FixtureHandler, name: str, links: str) -> None:
        with self._lock:
            read = self.reads[name] = self.reads.get(name, 0) + 1
        body = f"<html><body><img src='/{name}.png'>{links}</body></html>".encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Set-Cookie", f"{name}=v{read}; Path=/")
        handler.end_headers()
        handler.wfile.write(body)

    def _image(self, handler: FixtureHandler, name: str) -> None:
        with self._lock:
            session = f"{name}=v{self.reads.get(name)}"
            had = session in handler.headers.get("Cookie", "").split("; ")
            self.served.append((handler.path, had))
        if had:
            handler.send_body(200, PNG, "image/png")
        else:
            handler.send_body(403, b"no session, no image", "text/plain")

    def served_to_the_session(self, path: str) -> bool:
        with self._lock:
            return (path, True) in self.served


def test_a_worker_takes_the_cookies_set_after_redis_lost_the_versions_it_saw(
        make_server: Callable[[], FixtureServer], make_redis_server: Callable[[], RedisServer],
        tmp_path: Path) -> None:
    """Each change of the cookies on Redis has a version, and a worker asks only for those
    past the last it took. Redis restarted from files older than that counted from there
    again, and a worker that went on (its client reconnected at once) skipped the new
    values of the pages read again: their images were refused."""
    site = SessionSite(make_server())
    seed_reached, seed_release = _held_at_first(site.server, "/")
    b_reached, b_release = _held_at_first(site.server, "/b.html")
    redis_at = make_redis_server().start(appendonly=True)
    crawl, kept, out = "ck" + secrets.token_hex(4), tmp_path / "aof-before", tmp_path / "out"
    broker = ("--broker", redis_at.url, "--crawl", crawl)
    master = start_crawler("master", site.server.url + "/", *broker, "--out", str(out),
                           "--local-workers", "0", "--ignore-robots", cwd=tmp_path)
    worker = start_crawler("worker", *broker, "--out", str(out), "--connect-wait", "30",
                           "-v", cwd=tmp_path)
    try:
        assert seed_reached.wait(30), "the seed was not asked for"
        wait_until(lambda: bool(redis_at.client().keys(f"crawler:{{{crawl}}}:w:*")), 30,
                   "the worker on the broker")
        shutil.copytree(redis_at.folder / "appendonlydir", kept)  # no cookie in it yet
        seed_release.set()
        # Two versions taken by the worker, one a page.
        wait_until(lambda: site.served_to_the_session("/s.png"), 30, "/s.png with its cookie")
        assert b_reached.wait(30), "/b.html was not asked for"
        b_release.set()
        wait_until(lambda: site.served_to_the_session("/b.png"), 30, "/b.png with its cookie")
        worker.send_signal(signal.SIGSTOP)  # while Redis restarts: no call of its fails
        try:
            redis_at.restart_from(kept)
        finally:
            worker.send_signal(signal.SIGCONT)
        err = finish(master, 120)
        assert master.returncode == 0, err
        worker_err = finish(worker, 30)
        assert worker.returncode == 0, worker_err
    finally:
        seed_release.set()
        b_release.set()
        stop(master)
        stop(worker)
    assert site.reads == {"s": 2, "b": 2}  # read again, each setting a new value
    assert [path for path, had in site.served if not had] == [], worker_err
    assert sorted((e["url"], e["status"]) for e in manifest_lines(out)) == [
        (site.server.url + "/b.png", "success"), (site.server.url + "/s.png", "success")]


# ----- the feed, on real libcurl jars ------------------------------------------------

def _jar(*lines: str) -> pycurl.CurlShare:
    share = pycurl.CurlShare()
    share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_COOKIE)
    add_to_jar(share, list(lines))
    return share


def _set(share: pycurl.CurlShare, watch: JarWatch, header: str) -> None:
    """A response's Set-Cookie, into the jar as libcurl takes one."""
    handle = pycurl.Curl()
    handle.setopt(pycurl.SHARE, share)
    handle.setopt(pycurl.COOKIEFILE, "")
    handle.setopt(pycurl.COOKIELIST, f"Set-Cookie: {header}".encode())
    handle.close()
    watch.changed = True


FILE_COOKIE = ".h.example\tTRUE\t/\tFALSE\t0\tsession\tfrom-the-file"


def test_the_feed_sends_what_changed_and_deletes_what_left() -> None:
    """A worker's jar, fed with each call's news, holds what the master's holds."""
    share, watch = _jar(FILE_COOKIE), JarWatch()
    feed = CookieFeed(share, watch)
    worker = _jar(FILE_COOKIE)
    assert feed.news() == []  # the file's cookies: the workers have them
    _set(share, watch, "a=1; domain=h.example; path=/")
    _set(share, watch, "b=1; domain=h.example; path=/b/")
    news = feed.news()
    assert sorted(line.split("\t")[5:] for line in news) == [["a", "1"], ["b", "1"]]
    add_to_jar(worker, news)
    assert feed.news() == []  # no Set-Cookie since: not even an export
    _set(share, watch, "a=2; domain=h.example; path=/")
    _set(share, watch, "b=; domain=h.example; path=/b/; max-age=0")  # the site deletes it
    _set(share, watch, "session=renewed; domain=h.example; path=/")
    news = feed.news()
    assert sorted(line.split("\t")[4:] for line in news) == [
        ["0", "a", "2"], ["0", "session", "renewed"], [cookies.EXPIRED, "b", "1"]]
    add_to_jar(worker, news)
    assert sorted(jar_lines(worker)) == sorted(jar_lines(share))
    assert len(jar_lines(worker)) == 2


def test_the_feed_sends_again_what_it_sent_when_asked() -> None:
    """A board that lost the cookies gets them all again, and the deletions too."""
    share, watch = _jar(FILE_COOKIE), JarWatch()
    feed = CookieFeed(share, watch)
    _set(share, watch, "a=1; domain=h.example; path=/")
    _set(share, watch, "b=1; domain=h.example; path=/b/")
    feed.news()
    _set(share, watch, "b=; domain=h.example; path=/b/; max-age=0")
    feed.news()
    assert feed.news() == []
    feed.resend()
    assert sorted(line.split("\t")[4:] for line in feed.news()) == [
        ["0", "a", "1"], [cookies.EXPIRED, "b", "1"]]  # not the file's: the workers have it
    assert feed.news() == []


def test_the_feed_is_capped_and_says_so_once(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("crawler.fetch.cookiefeed.MAX_COOKIES", 3)
    share, watch = _jar(), JarWatch()
    feed = CookieFeed(share, watch)
    for n in range(5):
        _set(share, watch, f"c{n}=v; domain=h.example; path=/")
    assert len(feed.news()) == 3
    _set(share, watch, "c9=v; domain=h.example; path=/")
    assert feed.news() == []
    assert caplog.text.count("more cookies than") == 1
    assert "=v" not in caplog.text


def test_a_line_that_is_no_cookie_never_reaches_a_jar() -> None:
    share = _jar(FILE_COOKIE)
    add_to_jar(share, ["ALL", "FLUSH", "x\ty", ".h.example\tTRUE\t/\tFALSE\t0\tn\tv\nALL"])
    assert jar_lines(share) == [FILE_COOKIE]


@pytest.mark.parametrize("mode", ["queue", "broker"])
def test_a_cookie_of_any_bytes_goes_to_the_workers(make_server: Callable[[], FixtureServer],
                                                   tmp_path: Path, mode: str,
                                                   request: pytest.FixtureRequest) -> None:
    """A site's cookie value is bytes, not UTF-8 text (Latin-1, or junk a hostile site
    sends): libcurl keeps and sends it as it came, so the workers' jars must too, and
    the master must not stop over it."""
    home = make_server()
    raw = "\xff\xfe\xe9" + secrets.token_hex(4)  # sent as these bytes (Latin-1)
    utf8 = "caf\u00e9\u2019".encode().decode("latin-1")  # UTF-8 text, byte for byte
    got: list[bytes] = []

    def page(handler: FixtureHandler) -> None:
        body = b"<html><body><img src='/need.png'></body></html>"
        handler.send_body(200, body, "text/html", {"Set-Cookie": f"raw={raw}; Path=/"})

    def image(handler: FixtureHandler) -> None:
        cookie = handler.headers.get("Cookie", "").encode("latin-1")
        got.append(cookie)
        if sorted(cookie.split(b"; ")) != sorted(
                [f"raw={raw}".encode("latin-1"), f"u={utf8}".encode("latin-1")]):
            handler.send_body(403, b"no cookie, no image", "text/plain")
        else:
            handler.send_body(200, PNG, "image/png")

    def first(handler: FixtureHandler) -> None:
        body = b"<html><body><a href='/page.html'>next</a></body></html>"
        handler.send_body(200, body, "text/html", {"Set-Cookie": f"u={utf8}; Path=/"})

    home.routes["/first.html"] = first
    home.routes["/page.html"] = page
    home.routes["/need.png"] = image
    if mode == "broker":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        where = ("--broker", redis_server.url, "--crawl", "ck" + secrets.token_hex(4))
    else:
        where = ("--bind", "127.0.0.1:0")
    result = run_crawler("master", home.url + "/first.html", *where,
                         "--out", str(tmp_path / "out"), "--local-workers", "1",
                         "--ignore-robots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entries = manifest_lines(tmp_path / "out")
    assert [(e["url"], e["status"]) for e in entries] == [
        (home.url + "/need.png", "success")], (entries, got)


def test_cookies_given_before_a_submit_go_with_its_urls(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """The worker adds an answer's cookies, then submits its URLs, from its own thread,
    while the engine's thread takes what came in. Here the worker runs at the worst
    moment: just after the engine found no cookies waiting, before it took the tasks.
    The tasks it then takes must still start with the cookies given before them."""
    home = make_server()
    got: list[str] = []

    def image(handler: FixtureHandler) -> None:
        got.append(handler.headers.get("Cookie", ""))
        handler.send_body(200, PNG, "image/png")

    home.routes["/a.png"] = image
    home.routes["/first.png"] = image
    runner = Engine(tmp_path / "out")
    engine = runner.engine
    # A connection kept alive: the next request goes out in the loop turn that starts it.
    assert runner.one(home.url + "/first.png").ok

    class WorkerRunsNow(queue.SimpleQueue[list[str]]):
        armed = True

        def empty(self) -> bool:
            found = super().empty()
            if found and self.armed:
                self.armed = False
                engine.add_cookies(["127.0.0.1\tFALSE\t/\tFALSE\t0\tsc\tv"])
                engine.submit([(home.url + "/a.png", 1)])
            return found

    try:
        engine._cookies = WorkerRunsNow()
        _, attempt = runner.results.get(timeout=20)
        assert attempt is not None and attempt.ok, attempt
        assert got == ["", "sc=v"]
    finally:
        runner.close()


def test_page_cookies_are_saved_past_a_link_left_at_their_drafts_name(tmp_path: Path) -> None:
    """The draft is made anew: the file a link there names keeps its bytes."""
    out, victim = tmp_path / "out", tmp_path / "elsewhere.txt"
    out.mkdir()
    victim.write_text("not the crawl's\n")
    (out / f".{PAGE_COOKIES_NAME}.{os.getpid()}").symlink_to(victim)
    line = "127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc"
    save_page_cookies(out, [line])
    assert victim.read_text() == "not the crawl's\n"
    assert load_page_cookies(out) == [line]
    assert [p.name for p in out.iterdir()] == [PAGE_COOKIES_NAME]
    assert stat.S_IMODE((out / PAGE_COOKIES_NAME).stat().st_mode) == 0o600


@pytest.mark.parametrize("draft", [True, False], ids=["draft", "file"])
def test_a_folder_at_the_page_cookies_name_or_their_drafts_is_named(tmp_path: Path,
                                                                     draft: bool) -> None:
    """A folder at the draft's name failed the cleanup too: a bare IsADirectoryError."""
    name = f".{PAGE_COOKIES_NAME}.{os.getpid()}" if draft else PAGE_COOKIES_NAME
    (tmp_path / name).mkdir()
    with pytest.raises(StorageError) as caught:
        save_page_cookies(tmp_path, ["127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc"])
    assert str(caught.value) == (
        f"cannot write the page cookies: {tmp_path / name} is a folder, where a file of the "
        "crawler's goes; move it away, or choose another output folder")
    assert (tmp_path / name).is_dir()
