"""End-to-end benchmark: the crawler against wget, on one synthetic site served by nginx.

One command does everything::

    python benchmarks/run.py [--pages 200 --images 5000 --runs 3 --workers 2 --threads 16]

It generates a deterministic site (``benchmarks/site.py``) into a temporary
folder, serves it with nginx on 127.0.0.1 at a free port (installing Debian's
nginx when it is missing and we are root; Python's ThreadingHTTPServer, with a
WARNING, when nginx cannot be had), then runs, round after round with the
order of the tools alternating, N crawls with each tool:

* the crawler: ``crawler master URL --local-workers 0 ...`` plus W ``crawler
  worker`` processes started here, so each process is reaped with
  ``os.wait4`` and its own CPU time and peak RSS are known;
* ``wget -r -l 3 -np -nH -q -P DIR URL``.

Each run gets a fresh output folder. Completeness is measured against the
site's ground truth. It prints the machine, a table of medians, the ratio of
the crawler's images/s to wget's, and each run's figures. ``--scales 1,2``
repeats everything on a site twice as large, to check linear scaling;
``--profile DIR`` adds one crawler run under py-spy and prints the hot spots of
the master and of the workers. All traffic goes to 127.0.0.1; every wait and
subprocess is bounded in time.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import importlib.util
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".ico"})
POLL = 0.005  # seconds between two looks at running processes
SERVER_START_TIMEOUT = 15.0
INSTALL_TIMEOUT = 600.0
KB = 1024


def load_site_module() -> ModuleType:
    """Import ``benchmarks/site.py`` (its name would clash with the standard ``site``)."""
    name = "crawler_bench_site"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "site.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / 'site.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:``port`` (read from /proc, no connection made).

    Connecting to the crawler's queue without the handshake would be logged as
    a refused connection; the kernel's socket table says the same silently.
    """
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return _connects(port)
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[1] in wanted and parts[3] == "0A":  # 0A: LISTEN
            return True
    return False


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ----- processes measured one by one ------------------------------------------------


@dataclass
class Usage:
    """What one process used.

    CPU times come from ``os.wait4``: the process's own, plus any children it
    reaped. Peak RSS is the kernel's high-water mark (``VmHWM``) read from
    /proc while the process ran: ``ru_maxrss`` is not usable for it, because
    Linux carries the RSS of the forking parent (this Python driver) into the
    child's ``ru_maxrss`` across ``exec``, so no child would ever look smaller
    than the driver. ``ru_maxrss`` is kept as ``ru_maxrss_kb`` for reference.
    """

    name: str
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kb: int
    ru_maxrss_kb: int = 0
    children_maxrss_kb: int = 0  # largest VmHWM among its children (page parser, local workers)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def vm_hwm_kb(pid: int) -> int:
    """The peak RSS so far of a live process, in KiB (0 when gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:  # noqa: PTH123 - hot loop, stays cheap
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Measured:
    """A subprocess in its own session, reaped with ``os.wait4`` for its own rusage."""

    SAMPLE_EVERY = 0.05  # seconds between two reads of the peak RSS

    def __init__(self, name: str, argv: Sequence[str], *, cwd: Path,
                 env: dict[str, str] | None = None, log: Path | None = None,
                 watch_children: bool = False) -> None:
        self.name = name
        self.usage: Usage | None = None
        self._log: IO[bytes] | None = log.open("wb") if log else None
        self._hwm = 0
        self._children_hwm: dict[int, int] = {}
        self._watch_children = watch_children
        self._next_sample = 0.0
        self.ended = 0.0
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL, stderr=self._log or subprocess.DEVNULL,
            start_new_session=True)

    def sample(self) -> None:
        """Read the peak RSS of the process (and of its children when watched)."""
        now = time.monotonic()
        if self.usage is not None or now < self._next_sample:
            return
        self._next_sample = now + self.SAMPLE_EVERY
        self._hwm = max(self._hwm, vm_hwm_kb(self.popen.pid))
        if self._watch_children:
            for child in children_of(self.popen.pid):
                self._children_hwm[child] = max(self._children_hwm.get(child, 0),
                                                vm_hwm_kb(child))

    def poll(self) -> Usage | None:
        """The process's usage once it has ended, else None (never blocks)."""
        if self.usage is not None:
            return self.usage
        self.sample()
        try:
            pid, status, rusage = os.wait4(self.popen.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status, rusage = self.popen.pid, 0, None  # reaped elsewhere: figures lost
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = code
        self.ended = time.perf_counter()
        ru_maxrss = rusage.ru_maxrss if rusage else 0
        self.usage = Usage(self.name, code, self.ended - self.started,
                           rusage.ru_utime if rusage else 0.0, rusage.ru_stime if rusage else 0.0,
                           self._hwm or ru_maxrss, ru_maxrss,
                           max(self._children_hwm.values(), default=0))
        if self._log is not None:
            self._log.close()
        return self.usage

    def send(self, signum: int) -> None:
        """Signal the whole session (the process and anything it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


def wait_all(procs: Sequence[Measured], timeout: float) -> bool:
    """Wait for every process, at most ``timeout`` s; then stop the rest. True if all ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.poll() is not None for p in procs):
            return True
        time.sleep(POLL)
    stop_all(procs)
    return False


def stop_all(procs: Sequence[Measured]) -> None:
    """SIGTERM, 5 s of grace, then SIGKILL; bounded."""
    pending = [p for p in procs if p.poll() is None]
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for proc in pending:
            proc.send(sig)
        end = time.monotonic() + grace
        while pending and time.monotonic() < end:
            pending = [p for p in pending if p.poll() is None]
            time.sleep(0.02)
        if not pending:
            return


def proc_cpu_seconds(pids: Sequence[int]) -> float:
    """user+sys CPU seconds of live processes, from /proc/PID/stat (0 for gone ones)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc.

    Read from each thread's ``children`` file: scanning all of /proc every 50 ms
    took CPU enough from the 2 cores to slow the crawl it measured.
    """
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    if tasks and (tasks[0] / "children").exists():
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                found += [int(child) for child in (task / "children").read_text().split()]
        return found
    for entry in Path("/proc").iterdir():  # kernels without CONFIG_PROC_CHILDREN
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


# ----- the web server -----------------------------------------------------------------


NGINX_CONF = """\
daemon off;
worker_processes 2;
pid {work}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    types {{
        text/html html;
        image/png png;
        text/plain txt;
    }}
    default_type application/octet-stream;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};
        index index.html;
    }}
}}
"""


@dataclass
class Server:
    """A static server for the site; ``stop`` ends it, ``cpu_seconds`` sums its processes."""

    kind: str
    base_url: str
    proc: Measured

    def cpu_seconds(self) -> float:
        pid = self.proc.popen.pid
        return proc_cpu_seconds([pid, *children_of(pid)])

    def stop(self) -> None:
        stop_all([self.proc])


def find_nginx(install: bool) -> str | None:
    """The nginx binary; installs Debian's package when missing, allowed, and we are root."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/nginx/sbin/nginx") if Path(p).exists()), None)
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("nginx is missing: apt-get install -y nginx ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "install", "-y", "-qq", "nginx"],
                    ["sh", "-c", "apt-get update -qq && apt-get install -y -qq nginx"]):
        try:
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=INSTALL_TIMEOUT, check=True)
        except (OSError, subprocess.SubprocessError):
            continue
        found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                          else None)
        if found:
            break
    return found


def nginx_version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return "nginx"
    return (done.stderr or done.stdout).strip().replace("nginx version: ", "")


def start_nginx(binary: str, root: Path, work: Path) -> Server | None:
    """nginx in the foreground with a minimal config in ``work``; None if it will not start."""
    work.mkdir(parents=True, exist_ok=True)
    version = nginx_version(binary)
    for _attempt in range(3):  # the free port may be taken between our look and nginx's bind
        port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=work, root=root, port=port), encoding="utf-8")
        proc = Measured("nginx", [binary, "-p", str(work), "-c", str(conf), "-e", "stderr"],
                        cwd=work, log=work / "nginx.log")
        if _wait_listening(proc, port):
            return Server(version, f"http://127.0.0.1:{port}", proc)
        stop_all([proc])
    print("nginx would not start:\n" + _tail(work / "nginx.log"), flush=True)
    return None


def start_python_server(root: Path, work: Path) -> Server:
    """The fallback: ``site.py serve`` (ThreadingHTTPServer, HTTP/1.1) in its own process."""
    work.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        port = free_port()
        proc = Measured("python-http", [sys.executable, str(HERE / "site.py"), "serve", str(root),
                                        "--port", str(port), "--max-seconds", "14400"],
                        cwd=work, log=work / "python-http.log")
        if _wait_listening(proc, port):
            return Server("Python ThreadingHTTPServer", f"http://127.0.0.1:{port}", proc)
        stop_all([proc])
    raise RuntimeError("the fallback server would not start:\n" + _tail(work / "python-http.log"))


def _wait_listening(proc: Measured, port: int) -> bool:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _connects(port):
            return True
        time.sleep(0.05)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def serving(root: Path, work: Path, *, use_nginx: bool, install: bool) -> Iterator[Server]:
    """Serve ``root`` for the duration of the block; the server is always stopped after."""
    server = None
    if use_nginx:
        binary = find_nginx(install)
        if binary:
            server = start_nginx(binary, root, work)
    if server is None:
        why = "nginx cannot be had" if use_nginx else "--python-server given"
        print(f"WARNING: {why}; serving with Python's ThreadingHTTPServer, which is much "
              "slower than nginx: the figures measure the server as much as the clients",
              flush=True)
        server = start_python_server(root, work)
    try:
        yield server
    finally:
        server.stop()


# ----- one run of each tool ------------------------------------------------------------


@dataclass
class RunResult:
    """One crawl by one tool."""

    tool: str
    ok: bool
    wall_s: float
    pages: int
    images: int  # stored successfully
    files: int  # image files found on disk
    complete: float  # fraction of the ground truth stored
    bytes: int
    cpu_s: float
    server_cpu_s: float
    procs: list[Usage] = field(default_factory=list)
    note: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s if self.wall_s > 0 else 0.0

    def cpu_of(self, prefix: str) -> float:
        return sum(u.cpu_s for u in self.procs if u.name.startswith(prefix))

    def rss_mb(self, prefix: str) -> float:
        """Largest peak RSS among the processes named ``prefix*`` (local workers: the
        master's children)."""
        if prefix == "worker" and not any(u.name.startswith("worker") for u in self.procs):
            return max((u.children_maxrss_kb / KB for u in self.procs), default=0.0)
        return max((u.maxrss_kb / KB for u in self.procs if u.name.startswith(prefix)),
                   default=0.0)


Figure = Callable[[RunResult], float]


@dataclass(frozen=True)
class CrawlerSetup:
    workers: int
    threads: int
    host_concurrency: int
    local_workers: bool  # the master starts them (one rusage for all) instead of us
    timeout: float
    extra: tuple[str, ...] = ()  # more master flags, e.g. --page-concurrency 8
    worker_extra: tuple[str, ...] = ()  # more worker flags, e.g. --no-proxy


def crawler_argv(base_url: str, out: Path, qport: int, setup: CrawlerSetup) -> list[str]:
    return [sys.executable, "-m", "crawler", "master", base_url + "/",
            "--local-workers", str(setup.workers if setup.local_workers else 0),
            "--worker-threads", str(setup.threads), "--bind", f"127.0.0.1:{qport}",
            "--out", str(out), "--quiet", "--host-concurrency", str(setup.host_concurrency),
            "--depth", "3", "--max-pages", "100000", *setup.extra]


def worker_argv(qport: int, out: Path, setup: CrawlerSetup) -> list[str]:
    return [sys.executable, "-m", "crawler", "worker", f"127.0.0.1:{qport}", "--out", str(out),
            "--threads", str(setup.threads), "--quiet", "--connect-wait", "30",
            *setup.worker_extra]


def run_crawler(base_url: str, run_dir: Path, truth: Sequence[str], setup: CrawlerSetup,
                server: Server, wrap: Callable[[str, list[str]], list[str]] | None = None,
                ) -> RunResult:
    """One crawl: the master and W workers started together; all reaped one by one.

    Workers started with their master is how a cluster comes up: they wait for
    its queue (retrying the connection) while it starts, instead of starting
    only once it listens.
    """
    out = run_dir / "out"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CRAWLER_AUTHKEY=secrets.token_hex(16))
    wrap = wrap or (lambda name, argv: argv)
    server_cpu = server.cpu_seconds()
    procs: list[Measured] = []
    note = ""
    try:
        for _attempt in range(3):  # the queue port may be taken between our look and the bind
            qport = free_port()
            master = Measured("master", wrap("master", crawler_argv(base_url, out, qport, setup)),
                              cwd=run_dir, env=env, log=run_dir / "master.log",
                              watch_children=True)  # its page parser (and local workers)
            procs = [master]
            if not setup.local_workers:
                for n in range(setup.workers):
                    name = f"worker-{n + 1}"
                    procs.append(Measured(name, wrap(name, worker_argv(qport, out, setup)),
                                          cwd=run_dir, env=env, log=run_dir / f"{name}.log"))
            deadline = time.monotonic() + 30
            while (time.monotonic() < deadline and master.poll() is None
                   and not is_listening(qport)):
                time.sleep(0.01)
            if master.poll() is None or master.usage is None or master.usage.returncode != 4:
                break  # exit status 4: the port could not be bound; try another
            stop_all(procs)
        finished = wait_all(procs, setup.timeout)
    finally:
        stop_all(procs)
    if not finished:
        note = f"timed out after {setup.timeout:g} s"
    usages = [p.usage for p in procs if p.usage is not None]
    # From the master's start to the last process's end.
    wall = max(p.ended for p in procs) - procs[0].started if procs else 0.0
    succeeded, total_bytes = read_manifest(out / "manifest.jsonl")
    wanted = {base_url + path for path in truth}
    complete = len(wanted & succeeded) / len(wanted) if wanted else 0.0
    bad = [u for u in usages if u.returncode != 0]
    if bad and not note:
        note = ", ".join(f"{u.name} exit {u.returncode}" for u in bad)
    return RunResult("crawler", finished and not bad, wall, count_pages(out / "crawl.sqlite"),
                     len(succeeded), count_image_files(out), complete, total_bytes,
                     sum(u.cpu_s for u in usages), server.cpu_seconds() - server_cpu, usages,
                     note)


def run_wget(base_url: str, run_dir: Path, truth: Sequence[str], server: Server,
             timeout: float) -> RunResult:
    """One ``wget -r -l 3 -np -nH -q`` mirror of the site into a fresh folder."""
    out = run_dir / "out"
    run_dir.mkdir(parents=True, exist_ok=True)
    wget = shutil.which("wget") or "/usr/bin/wget"
    server_cpu = server.cpu_seconds()
    proc = Measured("wget", [wget, "-r", "-l", "3", "-np", "-nH", "-q", "-P", str(out),
                             base_url + "/"], cwd=run_dir, log=run_dir / "wget.log")
    try:
        finished = wait_all([proc], timeout)
    finally:
        stop_all([proc])
    usage = proc.poll()
    assert usage is not None
    present = [path for path in truth if (out / path.lstrip("/")).is_file()]
    total_bytes = sum((out / path.lstrip("/")).stat().st_size for path in present)
    pages = sum(1 for p in out.rglob("*.html")) if out.exists() else 0
    # wget exits 8 when the server answered an error (a 404) somewhere: not a failed mirror.
    ok = finished and usage.returncode in (0, 8)
    note = "" if ok else (f"timed out after {timeout:g} s" if not finished
                          else f"wget exit {usage.returncode}")
    return RunResult("wget", ok, usage.wall_s, pages, count_image_files(out),
                     count_image_files(out), len(present) / len(truth) if truth else 0.0,
                     total_bytes, usage.cpu_s, server.cpu_seconds() - server_cpu, [usage], note)


def read_manifest(path: Path) -> tuple[set[str], int]:
    """The URLs stored successfully, and their bytes, from the crawler's manifest.jsonl."""
    urls: set[str] = set()
    total = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return urls, 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("status") == "success" and record["url"] not in urls:
            urls.add(record["url"])
            total += int(record.get("bytes") or 0)
    return urls, total


def count_pages(journal: Path) -> int:
    """Pages the crawler finished, from its journal (0 if the schema is not the one known)."""
    if not journal.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT COUNT(*) FROM pages WHERE done = 1").fetchone()[0])
    except sqlite3.Error:
        return 0


def count_image_files(folder: Path) -> int:
    if not folder.exists():
        return 0
    return sum(1 for p in folder.rglob("*")
               if p.suffix.lower() in IMAGE_SUFFIXES and ".partial" not in p.parts
               and p.is_file())


# ----- profiling -------------------------------------------------------------------------


def py_spy_wrapper(py_spy: str, folder: Path, rate: int, gil: bool,
                   ) -> Callable[[str, list[str]], list[str]]:
    """Run each crawler process under ``py-spy record`` writing raw (collapsed) stacks.

    With ``gil`` only the thread holding the GIL is sampled: where Python time
    goes. Without, every thread py-spy thinks is not idle: that includes
    threads blocked in C calls that release the GIL (fsync, socket reads,
    queue waits), so it shows where wall time goes rather than CPU.
    """
    folder.mkdir(parents=True, exist_ok=True)

    def wrap(name: str, argv: list[str]) -> list[str]:
        return [py_spy, "record", "--nolineno", "-r", str(rate), "-f", "raw",
                *(["--gil"] if gil else []), "-o", str(folder / f"{name}.txt"), "--", *argv]

    return wrap


def _short(frame: str) -> str:
    """``func (path)`` with the path cut to its package part."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if where.startswith("<frozen importlib"):
        return "(importing modules: importlib)"
    for marker in ("site-packages/", "/lib/python3.", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "/lib/python3.":
                where = where.split("/", 1)[-1]
            break
    return f"{func} ({where})"


def summarize_profile(files: Sequence[Path], top: int = 15, what: str = "non-idle") -> str:
    """Top functions by self and by inclusive share of non-idle samples, over ``files``."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(f) for f in stack.split(";")]
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not total:
        return "  (no samples)"
    rows = [f"  {total} samples ({what})", "  self time:"]
    rows += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    rows.append("  inclusive (self + callees), entry points left out:")
    entry = ("<module>", "_run_module", "run_module", "_run_code", "main ", "_bootstrap",
             "run (threading")
    shown = [(f, n) for f, n in inclusive.most_common(top * 3)
             if not f.startswith(entry) and "(threading.py)" not in f][:top]
    rows += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in shown]
    return "\n".join(rows)


# ----- reporting ---------------------------------------------------------------------------


def machine() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kb / KB / KB:.1f} GiB RAM"
    wget = "wget missing"
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        wget = subprocess.run([shutil.which("wget") or "wget", "--version"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.splitlines()[0]
    try:
        from crawler import __version__ as crawler_version
    except ImportError:
        crawler_version = "?"
    return [f"machine: nproc {len(os.sched_getaffinity(0))}, {model}{memory}",
            f"         Linux {platform.release()}, Python {platform.python_version()}, "
            f"crawler {crawler_version}, {wget}"]


def filesystem(path: Path) -> str:
    """The type and device of the file system holding ``path``, from /proc/mounts."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], f"{parts[2]} on {parts[0]}"
    return kind


def in_memory(path: Path) -> bool:
    """Whether ``path`` is on a tmpfs, where files cost memory until deleted."""
    return filesystem(path.resolve()).startswith("tmpfs ")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def table(crawler: Sequence[RunResult], wget: Sequence[RunResult], workers: int) -> str:
    """Medians side by side."""

    def row(label: str, a: str, b: str) -> str:
        return f"  {label:<30} {a:>14} {b:>14}"

    def med(runs: Sequence[RunResult], get: Callable[[RunResult], float], fmt: str) -> str:
        return format(median([get(r) for r in runs]), fmt) if runs else "-"

    rows = [row("median of runs", f"crawler ({len(crawler)})", f"wget ({len(wget)})"),
            row("-" * 30, "-" * 14, "-" * 14)]
    # label, format, the crawler's figure, wget's figure
    specs: list[tuple[str, str, Figure | None, Figure | None]] = []

    def both(label: str, fmt: str, get: Callable[[RunResult], float]) -> None:
        specs.append((label, fmt, get, get))

    both("wall time (s)", ".2f", lambda r: r.wall_s)
    both("pages crawled", ".0f", lambda r: r.pages)
    both("pages/s", ".1f", lambda r: r.pages_per_s)
    both("images stored", ".0f", lambda r: r.images)
    both("images/s", ".1f", lambda r: r.images_per_s)
    both("MB/s", ".1f", lambda r: r.mb_per_s)
    both("completeness (% of truth)", ".2f", lambda r: 100 * r.complete)
    both("CPU s, all client processes", ".2f", lambda r: r.cpu_s)
    both("  of which user", ".2f", lambda r: sum(u.user_s for u in r.procs))
    both("  of which sys", ".2f", lambda r: sum(u.sys_s for u in r.procs))
    both("CPU ms per image", ".3f", lambda r: 1000 * r.cpu_s / max(1, r.images))
    specs.append(("CPU s, master", ".2f", lambda r: r.cpu_of("master"), None))
    specs.append(("CPU s, workers (sum)", ".2f", lambda r: r.cpu_of("worker"), None))
    specs.append(("peak RSS master / wget (MB)", ".1f", lambda r: r.rss_mb("master"),
                  lambda r: r.rss_mb("wget")))
    specs.append((f"peak RSS worker, max of {workers} (MB)", ".1f",
                  lambda r: r.rss_mb("worker"), None))
    specs.append(("peak RSS master's children (MB)", ".1f",
                  lambda r: max((u.children_maxrss_kb / KB for u in r.procs
                                 if u.name == "master"), default=0.0), None))
    both("server CPU s", ".2f", lambda r: r.server_cpu_s)
    for label, fmt, left, right in specs:
        rows.append(row(label, med(crawler, left, fmt) if left else "-",
                        med(wget, right, fmt) if right else "-"))
    return "\n".join(rows)


def describe_run(result: RunResult) -> str:
    text = (f"    {result.tool:<8} {result.wall_s:7.2f} s  {result.pages:5d} pages  "
            f"{result.images:6d} images ({result.files} files)  {result.images_per_s:8.1f} img/s"
            f"  complete {100 * result.complete:6.2f}%  CPU {result.cpu_s:6.2f} s")
    if result.tool == "crawler":
        workers = [u for u in result.procs if u.name.startswith("worker")]
        text += (f" (master {result.cpu_of('master'):.2f} s / {result.rss_mb('master'):.0f} MB"
                 + "".join(f", {u.name} {u.cpu_s:.2f} s / {u.maxrss_kb / KB:.0f} MB"
                           for u in workers) + ")")
    if result.note:
        text += f"  [{result.note}]"
    return text


# ----- the whole benchmark ---------------------------------------------------------------


def settle() -> None:
    """Flush dirty pages left by the last run, so they are not written during the next."""
    os.sync()
    time.sleep(0.5)


def bench_scale(args: argparse.Namespace, scale: int, tmp: Path) -> dict[str, Any]:
    """Generate the site at ``scale``, serve it, run every round; print and return medians."""
    site_module = load_site_module()
    params = site_module.SiteParams(pages=args.pages, images=args.images, seed=args.seed,
                                    min_kb=args.min_kb, max_kb=args.max_kb,
                                    median_kb=args.median_kb, scale=scale)
    site_dir = tmp / f"site-x{scale}"
    info = site_module.generate(site_dir, params)
    print(f"\nsite x{scale}: {len(info.pages)} pages, {len(info.ground_truth)} images, "
          f"{info.total_bytes / 1e6:.1f} MB (sizes {info.size_min / KB:.1f}.."
          f"{info.size_max / KB:.1f} KB, median {info.size_median / KB:.1f} KB), "
          f"generated in {info.generate_s:.1f} s", flush=True)
    found, missing = site_module.verify(info)
    if missing:
        print(f"WARNING: crawler.parse.extract finds only {found}/{len(info.ground_truth)} images "
              f"offline (e.g. {missing[:3]}): 100% completeness is out of reach", flush=True)
    for folder in (tmp, site_dir, info.root):
        folder.chmod(0o755)  # nginx's workers run as another user when we are root
    print(f"file system: {probe_file_creation(tmp / f'probe-x{scale}')}", flush=True)
    setup = CrawlerSetup(args.workers, args.threads, args.host_concurrency, args.local,
                         args.run_timeout, tuple(shlex.split(args.master_args)),
                         tuple(shlex.split(args.worker_args)))
    crawler_runs: list[RunResult] = []
    wget_runs: list[RunResult] = []
    with serving(info.root, tmp / f"server-x{scale}", use_nginx=not args.python_server,
                 install=not args.no_install) as server:
        print(f"server: {server.kind} at {server.base_url}/", flush=True)
        print(f"crawler: master + {args.workers} workers x {args.threads} threads"
              f"{' (local workers: one rusage for all)' if args.local else ''}, "
              f"host concurrency {args.host_concurrency}"
              f"{' ' + args.master_args if args.master_args else ''}"
              f"{'; workers ' + args.worker_args if args.worker_args else ''}"
              "; wget -r -l 3 -np -nH",
              flush=True)
        for round_number in range(args.warmup + args.runs):
            warm = round_number < args.warmup
            tools = ["crawler", "wget"] if round_number % 2 == 0 else ["wget", "crawler"]
            for tool in tools:
                if tool == "wget" and args.no_wget:
                    continue
                run_dir = tmp / f"x{scale}-r{round_number}-{tool}"
                settle()
                if tool == "crawler":
                    result = run_crawler(server.base_url, run_dir, info.ground_truth, setup,
                                         server)
                    (crawler_runs if not warm else []).append(result)
                else:
                    result = run_wget(server.base_url, run_dir, info.ground_truth, server,
                                      args.run_timeout)
                    (wget_runs if not warm else []).append(result)
                print(("  warm-up " if warm else f"  round {round_number - args.warmup + 1}")
                      + "\n" + describe_run(result), flush=True)
                # Outputs stay until the scale is done (on a disk, until the end): on
                # ext4 (here with "discard"), deleting thousands of files made the next
                # few thousand creations cost 300 us of kernel time each instead of 20,
                # whichever tool ran next.
        if args.profile and scale == args.scales[0]:
            profile(args, server, info, tmp, setup)
    if not args.keep and in_memory(tmp):  # a tmpfs holds them: not every scale's at once
        for run_dir in tmp.glob(f"x{scale}-r*"):
            shutil.rmtree(run_dir / "out", ignore_errors=True)
    print(f"\nresults, site x{scale} ({len(info.pages)} pages, {len(info.ground_truth)} images, "
          f"{info.total_bytes / 1e6:.1f} MB), server {server.kind}:")
    print(table(crawler_runs, wget_runs, args.workers))
    crawler_rate = median([r.images_per_s for r in crawler_runs])
    wget_rate = median([r.images_per_s for r in wget_runs])
    if wget_rate:
        print(f"  ratio crawler/wget images/s: {crawler_rate / wget_rate:.2f}x   "
              f"completeness: crawler {100 * median([r.complete for r in crawler_runs]):.2f}%, "
              f"wget {100 * median([r.complete for r in wget_runs]):.2f}%")
    failed = [r for r in crawler_runs + wget_runs if not r.ok]
    if failed:
        print(f"  WARNING: {len(failed)} run(s) did not finish cleanly: "
              + "; ".join(f"{r.tool}: {r.note}" for r in failed))
    return {"scale": scale, "images": len(info.ground_truth),
            "crawler_wall": median([r.wall_s for r in crawler_runs]),
            "crawler_rate": crawler_rate,
            "wget_wall": median([r.wall_s for r in wget_runs]), "wget_rate": wget_rate}


def profile(args: argparse.Namespace, server: Server, info: Any, tmp: Path,
            setup: CrawlerSetup) -> None:
    """One more crawler run with every process under py-spy; print the hot spots."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("\nprofile: py-spy is not installed (pip install py-spy); skipped", flush=True)
        return
    folder = Path(args.profile).resolve()
    for old in folder.glob("*.txt"):
        old.unlink()
    gil = args.profile_mode == "gil"
    wrap = py_spy_wrapper(py_spy, folder, args.profile_rate, gil)
    what = "GIL holder only" if gil else "threads py-spy counts as active"
    print(f"\nprofile run (py-spy record {'--gil ' if gil else ''}at {args.profile_rate} Hz: "
          f"{what}; raw stacks in {folder}; CPU and RSS below are py-spy's own processes):",
          flush=True)
    settle()
    result = run_crawler(server.base_url, tmp / "profile-run", info.ground_truth,
                         CrawlerSetup(setup.workers, setup.threads, setup.host_concurrency,
                                      False, setup.timeout, setup.extra), server, wrap=wrap)
    print(describe_run(result), flush=True)
    if in_memory(tmp):  # on a disk, deleting now would slow the next scale's runs
        shutil.rmtree(tmp / "profile-run" / "out", ignore_errors=True)
    print("master:\n" + summarize_profile([folder / "master.txt"], what=what))
    print(f"workers ({setup.workers}, samples added up):\n"
          + summarize_profile(sorted(folder.glob("worker-*.txt")), what=what), flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=200, help="pages at scale 1")
    parser.add_argument("--images", type=int, default=5000, help="images at scale 1")
    parser.add_argument("--min-kb", type=float, default=2.0)
    parser.add_argument("--max-kb", type=float, default=60.0)
    parser.add_argument("--median-kb", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scales", default="1",
                        help="comma-separated site multipliers, e.g. 1,2 to check linear scaling")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per tool")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured rounds first")
    parser.add_argument("--workers", type=int, default=2, help="crawler worker processes")
    parser.add_argument("--threads", type=int, default=16, help="download threads per worker")
    parser.add_argument("--host-concurrency", type=int, default=64)
    parser.add_argument("--local", action="store_true",
                        help="let the master start its workers (--local-workers W): CPU and "
                             "RSS are then one figure for master and workers together")
    parser.add_argument("--master-args", default="", metavar="FLAGS",
                        help="more flags for crawler master, e.g. '--page-concurrency 8'")
    parser.add_argument("--worker-args", default="", metavar="FLAGS",
                        help="more flags for each crawler worker, e.g. "
                             "--worker-args=--no-proxy (not with --local)")
    parser.add_argument("--no-wget", action="store_true", help="run the crawler only")
    parser.add_argument("--python-server", action="store_true",
                        help="serve with Python's ThreadingHTTPServer instead of nginx")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install nginx when it is missing")
    parser.add_argument("--run-timeout", type=float, default=600.0,
                        help="seconds one run may take before it is stopped")
    parser.add_argument("--profile", metavar="DIR",
                        help="add one crawler run under py-spy; raw stacks go to DIR")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument("--profile-mode", choices=("gil", "active"), default="gil",
                        help="gil: sample the GIL holder (CPU hot spots); active: every "
                             "thread not idle (wall time, blocking I/O included)")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="where the site and the outputs go (default: the system's temp "
                             "folder; e.g. /dev/shm to take the disk out of the figures)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (site, outputs, logs) and print it")
    args = parser.parse_args(argv)
    args.scales = [int(s) for s in str(args.scales).split(",") if s.strip()]
    if args.runs < 1 or args.workers < 1 or args.threads < 1 or not args.scales:
        parser.error("--runs, --workers, --threads must be at least 1 and --scales not empty")
    if args.local and args.worker_args:
        parser.error("--worker-args needs workers the benchmark starts itself: drop --local")
    return args


PROBE_FILES = 1000


def probe_file_creation(folder: Path) -> str:
    """What creating and writing a 16 KB file costs on ``folder``'s file system.

    Every tool pays it once per image. On this VM's ext4 it is bimodal: about
    20 us, or 300-600 us for a while after many files were deleted, which moves
    the disk figures of both tools by a factor of two. The files stay until the
    end: deleting them would bring about the slow mode.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = b"\0" * 16_000
    started = time.process_time()
    for n in range(PROBE_FILES):
        fd = os.open(folder / f"{n}.png", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    per_file = (time.process_time() - started) / PROBE_FILES * 1e6
    return f"creating and writing a 16 KB file costs {per_file:.0f} us of CPU here"


def byte_compile_crawler() -> str:
    """Compile the crawler's modules once, as ``pip install`` does for a regular install.

    Without it, each crawler process of an editable install under
    PYTHONDONTWRITEBYTECODE compiles every module from source (30 ms for a
    master, 20 ms for a worker), and the figures would measure that.
    """
    spec = importlib.util.find_spec("crawler")
    if spec is None or not spec.submodule_search_locations:
        return "crawler is not installed"
    folder = next(iter(spec.submodule_search_locations))
    ok = compileall.compile_dir(folder, quiet=1, force=False)
    return f"byte-compiled {folder}" if ok else f"could not byte-compile all of {folder}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("\n".join(machine()), flush=True)
    print(f"         {byte_compile_crawler()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="crawler-bench-", dir=args.tmp))
    print(f"         site and outputs under {tmp} ({filesystem(tmp.resolve())})", flush=True)
    summaries = []
    try:
        for scale in args.scales:
            summaries.append(bench_scale(args, scale, tmp))
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if len(summaries) > 1:
        first = summaries[0]
        print("\nscaling (ideal: wall time grows like the site, images/s stays):")
        for s in summaries[1:]:
            k = s["scale"] / first["scale"]
            for tool in ("crawler", "wget"):
                if first[f"{tool}_wall"] and s[f"{tool}_wall"]:
                    wall = s[f"{tool}_wall"] / first[f"{tool}_wall"]
                    rate = s[f"{tool}_rate"] / first[f"{tool}_rate"]
                    print(f"  {tool:<8} x{k:g} site: wall x{wall:.2f}, images/s x{rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
