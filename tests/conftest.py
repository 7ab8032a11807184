"""Shared fixtures: a real HTTP server on 127.0.0.1 serving tests/site, and crawler processes."""

from __future__ import annotations

import collections
import contextlib
import gzip
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from .loopback_only import pytest_pyfunc_call  # noqa: F401 - a hook: see that module
from .redis_server import RedisServer, redis_server_path

# Property tests draw the same examples on every run, so that a run on a fresh machine
# (CI) passes or fails as it did here; HYPOTHESIS_PROFILE=explore draws new ones each
# run, to look for inputs no fixed example has met yet.
hypothesis_settings.register_profile("default", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SITE = Path(__file__).parent / "site"
ROOT = Path(__file__).parent.parent
TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".jpg": "image/jpeg",
         ".gif": "image/gif", ".txt": "text/plain", ".svg": "image/svg+xml"}

Route = Callable[["FixtureHandler"], None]


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic() when the request arrived
    path: str
    client: str


class FixtureHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FixtureServer

    def do_GET(self) -> None:
        self.server.record(Hit(time.monotonic(), self.path, self.client_address[0]))
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is not None:
            route(self)
            return
        self.send_file(self.path)

    def send_file(self, path: str) -> None:
        relative = path.split("?", 1)[0].lstrip("/")
        target = (self.server.root / relative).resolve()
        if target.is_dir():
            target = target / "index.html"
        if self.server.root.resolve() not in target.parents or not target.is_file():
            self.send_body(404, b"not found", "text/plain")
            return
        self.send_body(200, target.read_bytes(),
                       TYPES.get(target.suffix, "application/octet-stream"))

    def send_body(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_first_half(self, body: bytes, content_type: str = "image/png") -> None:
        """The head of a 200 for all of ``body``, and its first half only (the caller
        sends the rest, or never does): a download known to be under way."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass


class FixtureServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a worker opening more connections
    # at once saw the rest retried a second later by the kernel, a delay that hid
    # a crawler bug (one slow image holding back its host) as a slow test.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a worker killed, a connection dropped at an exit) is
        # what many tests do on purpose: no traceback in the test output for it.
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), FixtureHandler)
        self.root = root
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def paths(self) -> list[str]:
        with self._lock:
            return [hit.path for hit in self.hits]


@pytest.fixture(autouse=True)
def no_user_settings(monkeypatch: pytest.MonkeyPatch,
                     tmp_path_factory: pytest.TempPathFactory) -> None:
    """The crawler under test, and every process it starts, reads no settings file of the
    person running the tests (~/.config/crawler/settings.toml, $CRAWLER_SETTINGS)."""
    monkeypatch.delenv("CRAWLER_SETTINGS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "no-config"))


_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _signal_handling() -> tuple[set[int | signal.Signals], list[object]]:
    """This thread's blocked signals, and the handlers of the stop signals."""
    return (signal.pthread_sigmask(signal.SIG_BLOCK, ()),
            [signal.getsignal(signum) for signum in _STOPS])


@pytest.fixture(autouse=True)
def signal_handling_kept() -> Iterator[None]:
    """Each test leaves signal handling as it found it (the main thread's mask, the
    stop signals' handlers): a stop signal left blocked or handled by a crawl's handler
    makes a later test's Ctrl-C do nothing, in whichever test runs next in that process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = _signal_handling()
    yield
    after = _signal_handling()
    assert after == before, f"signal handling changed by this test: {before} -> {after}"


@pytest.fixture
def pythons_own_ctrl_c() -> Iterator[None]:
    """SIGINT handled by Python's own handler (a KeyboardInterrupt in the main thread),
    set anew for the test: in a full run on two cores, a test's own SIGINT went by
    without one, in whichever of three such tests ran in that process."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def site() -> Iterator[FixtureServer]:
    """tests/site served on 127.0.0.1 at an OS-chosen port."""
    server = FixtureServer(SITE)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (no persistence); tests keep apart by crawl name."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_redis_server(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Servers of the test's own, to kill and restart (``start(appendonly=True)``)."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed")
    made: list[RedisServer] = []

    def make() -> RedisServer:
        made.append(RedisServer(tmp_path / f"redis-{len(made)}"))
        return made[-1]

    try:
        yield make
    finally:
        for server in made:
            server.kill()


@pytest.fixture
def crawl_name() -> str:
    """A crawl name no other test uses, so tests share the session's redis-server."""
    return f"test-{secrets.token_hex(8)}"


def board_flags(board: str, request: pytest.FixtureRequest) -> list[str]:
    """A master's flags for a test run on each board: the session's redis-server under a
    crawl name of its own ("redis"), or the embedded queue on a port of its own (the
    default one may be another crawl's)."""
    if board == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return ["--broker", server.url, "--crawl", "t" + secrets.token_hex(4)]
    return ["--bind", "127.0.0.1:0"]


@pytest.fixture
def authkey(monkeypatch: pytest.MonkeyPatch) -> str:
    key = secrets.token_hex(16)
    monkeypatch.setenv("CRAWLER_AUTHKEY", key)
    return key


def site_images() -> dict[str, bytes]:
    """Every image file of tests/site, by URL path."""
    return {"/" + p.relative_to(SITE).as_posix(): p.read_bytes()
            for p in SITE.rglob("*") if p.suffix in (".png", ".jpg", ".gif")}


# `python -c` code that runs ENTRY (the crawler command's) and sends the process signal
# $SIGNAL as module $SIGNAL_AT is first imported: a stop at a known point of its start.
SIGNAL_AT_IMPORT = """
import os, signal, sys

class SignalAt:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("SIGNAL_AT"):
            del os.environ["SIGNAL_AT"]
            os.kill(os.getpid(), int(os.environ["SIGNAL"]))
        return None

sys.meta_path.insert(0, SignalAt())
ENTRY
"""


# Code for a master script run with `python -c`: it makes ``hello``, what that master
# tells a worker that joins it (the rules of a crawl of 127.0.0.1).
LOOPBACK_HELLO = """
from crawler.config import Limits
from crawler.fetch.guard import AddressPolicy

hello = {"limits": Limits()._asdict(), "lease_timeout": 60.0, "user_agent": "t",
         "worker_silence": 5.0, "image_scope": {"allow": [], "deny": []},
         "robots": {"respect": True, "timeout": 30.0, "max_age": 86400.0},
         "policy": AddressPolicy.from_seeds(["http://127.0.0.1/"]).to_wire()}
"""


def at_default_actions() -> None:
    """In a child before it runs: Ctrl-C and a hang-up at their default actions, whatever
    the tests' own (a SIGINT ignored in the background, a SIGHUP under nohup)."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def crawler_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "crawler", *args]


def folder_of_length(parent: Path, length: int) -> Path:
    """A path under ``parent`` whose text is ``length`` bytes long (not made)."""
    folder, left = parent, length - len(os.fsencode(parent))
    while left > 0:
        step = min(200, left - 1) if left > 201 else left - 1  # each step adds a "/"
        folder, left = folder / ("d" * step), left - step - 1
    assert len(os.fsencode(folder)) == length
    return folder


def run_crawler(*args: str, cwd: Path | None = None, timeout: float = 120,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(crawler_command(*args), cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env or dict(os.environ), check=False)


def start_crawler(*args: str, cwd: Path | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(crawler_command(*args), cwd=cwd or ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or dict(os.environ))


def wait_for_queue_address(master: subprocess.Popen[str], timeout: float = 30) -> str:
    """Read the master's stderr until it says where its queue is; return HOST:PORT."""
    return wait_for_output(master, r"queue on (\S+:\d+)", timeout).group(1)


def wait_for_output(process: subprocess.Popen[str], pattern: str,
                    timeout: float = 30) -> re.Match[str]:
    """Read ``process``'s stderr until ``pattern`` appears in it; return the match.

    Reads the raw descriptor (no buffering), so :func:`finish` loses nothing.
    """
    assert process.stderr is not None
    fd = process.stderr.fileno()
    seen = EARLY_STDERR.get(process.pid, "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, seen)
        if match:
            return match
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
            EARLY_STDERR[process.pid] = seen
    raise AssertionError(f"{pattern!r} never appeared on stderr:\n" + seen)


EARLY_STDERR: dict[int, str] = {}


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    """Wait for ``process`` and return all it wrote on stderr."""
    _, err = process.communicate(timeout=timeout)
    return EARLY_STDERR.pop(process.pid, "") + (err or "")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_routes(server: FixtureServer, files: dict[str, tuple[str, bytes]], *,
                 image_delay: float = 0.0, page_delay: float = 0.0,
                 fail_once: int | None = None, retry_after: str | None = None) -> None:
    """Serve ``files`` from ``server``'s routes, with optional slowness and first failures.

    ``fail_once`` answers the first request of every image with that status
    (and ``Retry-After`` when given), and serves it from the second on.
    """
    def route_for(kind: str, body: bytes) -> Route:
        def route(handler: FixtureHandler) -> None:
            time.sleep(image_delay if kind.startswith("image/") else page_delay)
            handler.send_body(200, body, kind)
        return route

    for path, (kind, body) in files.items():
        server.routes[path] = route_for(kind, body)
    if fail_once is not None:
        images = {path for path, (kind, _) in files.items() if kind.startswith("image/")}
        fail_first(server, images, fail_once, times=1, retry_after=retry_after)


def gzipped_twice(body: bytes, content_type: str) -> Route:
    """A route answering ``body`` gzip over gzip, said in two Content-Encoding lines (one
    list, by RFC 9110)."""
    def route(handler: FixtureHandler) -> None:
        encoded = gzip.compress(gzip.compress(body))
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(encoded)))
        handler.end_headers()
        handler.wfile.write(encoded)
    return route


# Compressed streams that never end and decode to nothing: a start, then one empty block
# after another (stored deflate blocks of no bytes; brotli metadata blocks of none).
ENDLESS_NOTHING = {"deflate": (b"", b"\x00\x00\x00\xff\xff"), "br": (b"\x0c", b"\x06")}


def endless_nothing(encoding: str, content_type: str, within: float = 5.0) -> Route:
    """A route answering a body in ``encoding`` ("deflate" or "br") that decodes to
    nothing, as fast as it is read, until the client leaves or ``within`` seconds pass."""
    start, block = ENDLESS_NOTHING[encoding]
    chunk = block * (65536 // len(block))

    def route(handler: FixtureHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Encoding", encoding)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        until = time.monotonic() + within
        with contextlib.suppress(OSError):
            handler.wfile.write(start)
            while time.monotonic() < until:
                handler.wfile.write(chunk)
    return route


def fail_first(server: FixtureServer, paths: set[str], status: int, *, times: int,
               retry_after: str | None = None) -> None:
    """Answer ``status`` to the first ``times`` requests of each of ``paths`` (with
    ``Retry-After`` when given), and from then on as their routes did before."""
    served: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    headers = {"Retry-After": retry_after} if retry_after else {}
    for path in paths:
        def route(handler: FixtureHandler, path: str = path,
                  normal: Route = server.routes[path]) -> None:
            with lock:
                served[path] += 1
                failing = served[path] <= times
            if failing:
                handler.send_body(status, b"try again", "text/plain", headers)
            else:
                normal(handler)
        server.routes[path] = route


@pytest.fixture
def make_server() -> Iterator[Callable[[], FixtureServer]]:
    """A factory of extra fixture servers on 127.0.0.1, all shut down at the end."""
    servers: list[FixtureServer] = []

    def make() -> FixtureServer:
        server = FixtureServer(SITE)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def without_permission_override() -> list[str]:
    """What runs a command as this user without the right to write anywhere (a root
    process writes into a read-only folder; without the capability, it is refused)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root writes anywhere, and setpriv is not here to say otherwise")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def raised_by_the_deadline(call: Callable[[], object], seconds: float,
                           peer_done: threading.Event) -> BaseException:
    """What ``call`` raised, run on a thread that must end within ``seconds`` (else the
    test fails); ``peer_done`` is set after, letting a stalling peer close its end (and
    a read stuck there with it)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    try:
        thread.start()
        thread.join(timeout=seconds)
        assert not thread.is_alive(), "it went on past its deadline"
    finally:
        peer_done.set()
        thread.join(timeout=5)
    assert len(failed) == 1, f"raised nothing: {failed}"
    return failed[0]


def manifest_lines(out: Path) -> list[dict[str, Any]]:
    import json

    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_url(line: dict[str, Any]) -> str:
    """A manifest line's sort key: its URL."""
    return str(line["url"])


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def slow_start(server: FixtureServer, seconds: float = 1.0) -> None:
    """Delay the seed page, so workers started with the master connect before the crawl ends.

    A worker that first calls after its master has finished and gone waits for
    a master that never comes back (as it should); tests that check every
    worker's exit status start them in time this way.
    """
    _before_the_seed(server, lambda: time.sleep(seconds))


def _before_the_seed(server: FixtureServer, wait: Callable[[], object]) -> None:
    """Call ``wait`` before the seed page is served (as it was, or from the site folder)."""
    inner = server.routes.get("/")

    def route(handler: FixtureHandler) -> None:
        wait()
        if inner is None:
            handler.send_file("/")
        else:
            inner(handler)

    server.routes["/"] = route


def crawl_with_two_workers(server: FixtureServer, tmp_path: Path, *flags: str,
                           threads: int = 4) -> str:
    """A master with ``flags`` and two worker processes into ``tmp_path/out``, all ending 0,
    the workers without a warning.

    The seed page waits until both workers have joined: one that first calls after its
    master has finished and gone waits for a master that never comes back (as it should),
    and on a busy machine a fixed delay (``slow_start``) was not always long enough.

    Returns the master's stderr.
    """
    out = tmp_path / "out"
    both_joined = threading.Event()
    _before_the_seed(server, lambda: both_joined.wait(JOIN_DEADLINE))
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), *flags, cwd=tmp_path)
    workers = []
    try:
        address = wait_for_queue_address(master)
        workers = [start_crawler("worker", address, "--out", str(out), "--threads",
                                 str(threads), cwd=tmp_path) for _ in range(2)]
        _wait_for_workers(address, out, 2)
        both_joined.set()
        err = finish(master, 120)
        assert master.returncode == 0, err
        for worker in workers:
            _, worker_err = worker.communicate(timeout=30)
            assert worker.returncode == 0, worker_err
            assert "WARNING" not in worker_err and "ERROR" not in worker_err, worker_err
    finally:
        both_joined.set()  # (the server's thread waits no longer)
        for process in (master, *workers):
            stop(process)
    return err


# Seconds the workers a test starts get to join their master: within a master's page
# timeout (30 s), so that the seed page held for them meanwhile is not failed.
JOIN_DEADLINE = 25.0


def _wait_for_workers(address: str, out: Path, count: int) -> None:
    """Wait until ``count`` workers have said hello to the master at ``address``."""
    from crawler.master.authkey import load_authkey
    from crawler.ui.status import fetch_status

    host, _, port = address.rpartition(":")
    key_file = out / "authkey"
    key = load_authkey(key_file if key_file.exists() else None, generate=False).key
    wait_until(lambda: len(fetch_status((host, int(port)), key)["workers"]) >= count,
               JOIN_DEADLINE, f"{count} workers to join the master")


def command_lines() -> list[bytes]:
    """Every process's command line as /proc has it (arguments NUL-separated)."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                lines.append((entry / "cmdline").read_bytes())
    return lines


def command_words(pid: int) -> list[bytes]:
    """The words of ``pid``'s command line: a forked local worker's title is one string
    ("crawler worker HOST:PORT ..."), a fresh process's its arguments."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s children, of every thread of it."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def local_worker_of(master: subprocess.Popen[str], other_than: int | None = None) -> int:
    """The pid of ``master``'s one local worker (not ``other_than``: one that was killed,
    and is started again)."""
    found: list[int] = []

    def words(pid: int) -> list[bytes]:
        try:
            return command_words(pid)
        except OSError:  # gone meanwhile
            return []

    def one() -> bool:
        found[:] = [pid for pid in children_of(master.pid) if pid != other_than
                    and b"worker" in words(pid)[:4]]
        return len(found) == 1

    wait_until(one, 30, "the master's local worker")
    return found[0]


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str = "64k", *, options: str = "") -> Iterator[Path]:
    """A file system of ``size`` bytes mounted at ``where``: a disk that fills up
    (``options``, such as ``ro``, added to the mount's)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}{',' + options if options else ''}",
         "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
