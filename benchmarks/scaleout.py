"""Scale-out benchmark: worker hosts on rate-limited links, in network namespaces made here.

One command (as root; needs iproute2 with ``tc``, nginx, and for the Redis
rows redis-server)::

    python benchmarks/scaleout.py [--runs 3] [--hosts 1,2,4] [--brokers embedded,redis]

It builds a private LAN of network namespaces (``tests/netns.py``): a site
host serving a synthetic site with nginx, a master host (and a second master
host for the Redis rows), and four worker hosts whose links are each limited
with ``tc`` (``tbf``, 40 Mbit/s by default) in both directions. Then, round
after round with the order of the rows rotating, it crawls:

* **links as the limit**: 2,000 images of 20-60 KB (incompressible bytes in
  valid PNG files) on 80 pages, with 1, 2 and 4 worker hosts, one
  ``crawler worker`` process each, for each broker (``embedded``: the master
  serves the queue; ``redis``: a redis-server on the master's host). Every
  setting is the crawler's default; only the crawl's scope is given.
* **cut**: 4 worker hosts, and one host's link set down for 30 s once a
  quarter of the images is in, then up again: the crawl's time against the
  uncut one and against the ideal (that host's share lost while it is cut).
* **pages as the limit**: a page-heavy site (2,000 pages with 1-2 small
  images each), links not limited, pages/s with one master and with two
  (the second joins the first's crawl through Redis).

Completeness is checked on disk: every image of the site stored exactly once
across the worker hosts' output folders, byte for byte. Every wait is bounded;
the namespaces (and what runs in them) are always removed, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # run as a script: its modules beside it
sys.path.insert(1, str(REPO))  # and the tests' namespace LAN, as tests.netns

from cpulimit import CpuLimit, CpuLimitError  # noqa: E402
from procs import Measured, children_of, proc_cpu_seconds, stop_all, wait_all  # noqa: E402
from run import load_site_module  # noqa: E402

from tests.netns import Host, Lan, NetnsUnavailable  # noqa: E402

# The sites, each on a port of one nginx: images (links as the limit), pages (pages
# as the limit), and the image site made larger for the cut row ("long").
SITE_PORTS = {"images": 80, "pages": 8080, "long": 8081}
QUEUE_PORT = 24601
REDIS_PORT = 6379
SITE_OCTET, MASTER_OCTET, MASTER2_OCTET, FIRST_WORKER_OCTET = 1, 2, 3, 11
MAX_HOSTS = 8
DEPTH = 3
CONNECT_WAIT = "60"  # seconds a worker waits for its master (they start first)
START_TIMEOUT = 20.0  # seconds for nginx or redis-server to listen
WORKER_GRACE = 15.0  # seconds workers may outlive their master before they are stopped
POLL = 0.05
TC_TIMEOUT = 10.0
IMG_PREFIX = "/img/"

NGINX_CONF = """\
daemon off;
worker_processes 2;
pid {work}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    log_format scaleout '$msec $remote_addr $server_port $status $body_bytes_sent $request_uri';
    access_log {work}/access.log scaleout;
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
{servers}}}
"""
NGINX_SERVER = """\
    server {{
        listen {address}:{port};
        root {root};
        index index.html;
    }}
"""


class BenchError(RuntimeError):
    """The benchmark cannot run as asked; the message says why."""


# ----- the LAN: hosts, shaped links, servers ----------------------------------------


def run_quietly(argv: Sequence[str], what: str) -> str:
    """Run a short command; its output, or BenchError naming ``what`` with its stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=TC_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise BenchError(f"{what}: {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Cluster:
    """The LAN's hosts and the servers on them."""

    lan: Lan
    site: Host
    master: Host
    master2: Host
    workers: list[Host]
    work: Path
    nginx: Measured | None = None
    access_log: Path = Path()

    def shape(self, host: Host, rate: str) -> None:
        """Limit ``host``'s link to ``rate`` both ways: its eth0 out, the bridge port toward it."""
        for netns, device in ((host.netns, "eth0"), (self.lan.bridge_netns, host.port)):
            run_quietly(["ip", "netns", "exec", netns, "tc", "qdisc", "replace", "dev", device,
                         "root", "tbf", "rate", rate, "burst", "64kb", "latency", "50ms"],
                        f"limiting {host.role}'s link with tc tbf")

    def unshape(self, host: Host) -> None:
        for netns, device in ((host.netns, "eth0"), (self.lan.bridge_netns, host.port)):
            with contextlib.suppress(BenchError):  # none there: nothing to remove
                run_quietly(["ip", "netns", "exec", netns, "tc", "qdisc", "del", "dev", device,
                             "root"], "removing a tc qdisc")

    def set_link(self, host: Host, up: bool) -> None:
        """Cut (or mend) ``host``'s link at the bridge: its eth0 loses its carrier."""
        state = "up" if up else "down"
        run_quietly(["ip", "-n", self.lan.bridge_netns, "link", "set", host.port, state],
                    f"setting {host.role}'s link {state}")

    def nginx_cpu(self) -> float:
        """CPU seconds of nginx so far: its master process and its workers."""
        if self.nginx is None:
            return 0.0
        pid = self.nginx.popen.pid
        return proc_cpu_seconds([pid, *children_of(pid)])

    def qdisc(self, host: Host) -> str:
        return run_quietly(["ip", "netns", "exec", self.lan.bridge_netns, "tc", "qdisc", "show",
                            "dev", host.port], "reading a qdisc").strip()


def make_cluster(lan: Lan, hosts: int, work: Path) -> Cluster:
    return Cluster(lan, lan.add_host("site", SITE_OCTET), lan.add_host("master", MASTER_OCTET),
                   lan.add_host("master2", MASTER2_OCTET),
                   [lan.add_host(f"worker{n + 1}", FIRST_WORKER_OCTET + n) for n in range(hosts)],
                   work)


def listening(pid: int, address: str, port: int) -> bool:
    """Whether something listens on address:port in the namespace of process ``pid``."""
    octets = address.split(".")
    wanted = "".join(f"{int(o):02X}" for o in reversed(octets)) + f":{port:04X}"
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(len(p) > 3 and p[1] == wanted and p[3] == "0A" for p in map(str.split, lines))


def wait_listening(proc: Measured, address: str, port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not listening(proc.popen.pid, address, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise BenchError(f"{what} did not start listening on {address}:{port}:\n{tail}")
        time.sleep(POLL)


def start_nginx(cluster: Cluster, sites: Sequence[Site]) -> None:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    work = cluster.work / "nginx"
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    servers = "".join(NGINX_SERVER.format(address=cluster.site.address, port=site.port,
                                          root=site.root) for site in sites)
    conf.write_text(NGINX_CONF.format(work=work, servers=servers), encoding="utf-8")
    log = work / "nginx.log"
    cluster.nginx = Measured("nginx", cluster.site.command(binary, "-p", str(work), "-c",
                                                           str(conf), "-e", "stderr"),
                             cwd=work, log=log)
    cluster.access_log = work / "access.log"
    for site in sites:
        wait_listening(cluster.nginx, cluster.site.address, site.port, "nginx", log)


@dataclass
class Redis:
    """A redis-server on the master's host; each crawl uses a name of its own."""

    proc: Measured
    url: str

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds([self.proc.popen.pid])

    def wait_for_crawl(self, name: str, host: Host, master: Measured) -> None:
        """Until crawl ``name`` is registered on the broker (asked with redis-cli on
        ``host``), while ``master``, which registers it, runs; bounded."""
        from crawler.board.broker import REGISTRY

        address, port = host.address, str(REDIS_PORT)
        deadline = time.monotonic() + START_TIMEOUT
        while master.poll() is None and time.monotonic() < deadline:
            answer = run_quietly(host.command("redis-cli", "-h", address, "-p", port,
                                              "SISMEMBER", REGISTRY, name),
                                 "asking redis-server for the crawl")
            if answer.strip() == "1":
                return
            time.sleep(POLL)


def start_redis(cluster: Cluster) -> Redis:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    work = cluster.work / "redis"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "redis.log"
    # A private namespace: no password or protected mode needed, nothing written to disk.
    proc = Measured("redis", cluster.master.command(
        binary, "--port", str(REDIS_PORT), "--bind", cluster.master.address, "--save", "",
        "--appendonly", "no", "--protected-mode", "no", "--dir", str(work)), cwd=work, log=log)
    wait_listening(proc, cluster.master.address, REDIS_PORT, "redis-server", log)
    return Redis(proc, f"redis://{cluster.master.address}:{REDIS_PORT}/0")


# ----- the site's access log ----------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request nginx answered: when it ended, who asked, what."""

    at: float  # epoch seconds
    client: str
    port: int
    status: int
    path: str


def read_hits(log: Path, start: int) -> tuple[list[Hit], int]:
    """The requests logged after byte ``start``, and where the log ends now."""
    try:
        with log.open("rb") as file:
            file.seek(start)
            data = file.read()
    except OSError:
        return [], start
    end = data.rfind(b"\n") + 1  # a line being written stays for the next read
    hits = []
    for line in data[:end].decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 5)
        if len(parts) == 6 and parts[3].isdigit():
            hits.append(Hit(float(parts[0]), parts[1], int(parts[2]), int(parts[3]),
                            parts[5].split("?", 1)[0]))
    return hits, start + end


# ----- one crawl -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of a table: which broker, how many worker hosts and masters, what is done."""

    kind: str  # "links", "cut", "pages"
    broker: str  # "embedded", "redis"
    hosts: int
    masters: int = 1
    site: str = "images"  # a key of SITE_PORTS

    @property
    def label(self) -> str:
        text = f"{self.broker}, {self.hosts} host{'s' if self.hosts > 1 else ''}"
        if self.kind == "pages":
            text = f"{self.broker}, {self.masters} master{'s' if self.masters > 1 else ''}"
        if self.site == "long":
            text += ", long site"
        return text + (", cut" if self.kind == "cut" else "")


@dataclass(frozen=True)
class Site:
    root: Path
    truth: list[str]  # image paths
    pages: int
    port: int
    description: str


@dataclass
class Disk:
    """What the worker hosts stored, checked against the site's files."""

    exact: int = 0  # images stored exactly once across hosts, byte for byte
    duplicates: int = 0  # images stored on more than one host
    wrong: int = 0  # images whose bytes differ from the site's
    missing: int = 0
    per_host: list[int] = field(default_factory=list)
    # Of the first few stored twice: the path, and (host number, file time) of each copy.
    twice: list[tuple[str, list[tuple[int, float]]]] = field(default_factory=list)


@dataclass
class Result:
    row: Row
    round: int
    ok: bool
    crawl_s: float  # the first master's start to the last master's end
    images: int  # image files stored (exactly once or not)
    pages: int  # distinct pages answered 200
    window_s: float  # first to last image request answered
    fraction_at: list[float]  # seconds from the start when each tenth of the images was in
    disk: Disk
    master_cpu: list[float]  # each master's CPU seconds, its parser processes included
    broker_cpu: float
    fetches: int  # image requests answered 200 (more than the images: some fetched twice)
    note: str = ""
    cut_at: float | None = None  # seconds from the start when the link went down
    cut_s: float = 0.0  # how long it stayed down (the crawl may end first)
    page_window_s: float = 0.0  # first to last page request answered
    pages_by_master: list[int] = field(default_factory=list)
    cpu_s: float = 0.0  # masters, workers, nginx and redis-server together
    # Seconds from the first master's start: first and last page answered, each master's end.
    pages_span: tuple[float, float] = (0.0, 0.0)
    master_ends: list[float] = field(default_factory=list)

    @property
    def busy(self) -> float:
        """The share of the machine's cores that the crawl's processes kept busy."""
        return self.cpu_s / (self.crawl_s * (os.cpu_count() or 1)) if self.crawl_s > 0 else 0.0

    @property
    def window_pages_per_s(self) -> float:
        return (self.pages - 1) / self.page_window_s if self.page_window_s > 0 else 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.crawl_s if self.crawl_s > 0 else 0.0

    @property
    def window_images_per_s(self) -> float:
        return (self.images - 1) / self.window_s if self.window_s > 0 else 0.0

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.crawl_s if self.crawl_s > 0 else 0.0


@dataclass(frozen=True)
class Options:
    rate: str
    timeout: float
    cut_seconds: float
    cut_fraction: float
    page_workers: int
    # The pages rows' masters, each in a group with its own CPU quota (none: no limit).
    master_limits: tuple[CpuLimit, ...] = ()


def crawler_base() -> list[str]:
    return [sys.executable, "-m", "crawler"]


def crawler_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["CRAWLER_AUTHKEY"] = os.urandom(16).hex()
    return env


def check_disk(site: Site, outs: Sequence[Path]) -> Disk:
    """Every image of the site in the worker hosts' folders: once, and byte for byte."""
    found: dict[str, list[Path]] = {}
    host_of: dict[Path, int] = {}
    per_host = []
    truth = set(site.truth)
    for number, out in enumerate(outs, 1):
        count = 0
        for file in out.rglob("*.png") if out.exists() else ():
            parts = file.relative_to(out).parts
            if "img" not in parts or any(p.endswith(".partial") for p in parts):
                continue
            path = "/" + "/".join(parts[parts.index("img"):])
            if path in truth:
                found.setdefault(path, []).append(file)
                host_of[file] = number
                count += 1
        per_host.append(count)
    disk = Disk(per_host=per_host, missing=len(truth - found.keys()))
    for path, files in found.items():
        expected = (site.root / path.lstrip("/")).read_bytes()
        same = [f for f in files if f.read_bytes() == expected]
        disk.wrong += len(files) - len(same)
        if len(files) > 1:
            disk.duplicates += 1
            if len(disk.twice) < 3:
                disk.twice.append((path, [(host_of[f], f.stat().st_mtime) for f in files]))
        elif same:
            disk.exact += 1
    return disk


def tenths(times: Sequence[float]) -> list[float]:
    """When each tenth of the images was in (times sorted): 10%, 20%, ... 100%."""
    if not times:
        return []
    return [times[min(len(times) - 1, max(0, round(len(times) * k / 10) - 1))]
            for k in range(1, 11)]


class Crawl:
    """One crawl of ``row``: processes started, watched (and a link cut), results read."""

    def __init__(self, cluster: Cluster, row: Row, site: Site, opts: Options, run_dir: Path,
                 redis: Redis | None, name: str) -> None:
        self.cluster, self.row, self.site, self.opts = cluster, row, site, opts
        self.run_dir, self.redis, self.name = run_dir, redis, name
        self.seed = f"http://{cluster.site.address}:{site.port}/"
        self.env = crawler_env()
        self.masters: list[Measured] = []
        self.workers: list[Measured] = []
        self.worker_outs = [run_dir / f"worker{n + 1}" for n in range(row.hosts)]

    def master_argv(self, n: int) -> list[str]:
        out = ["--out", str(self.run_dir / f"master{n + 1}"), "--quiet"]
        scope = ["--depth", str(DEPTH), "--max-pages", "0"]
        if self.row.broker == "embedded":
            address = f"{self.cluster.master.address}:{QUEUE_PORT}"
            return [*crawler_base(), "master", self.seed, "--bind", address, *out, *scope]
        assert self.redis is not None
        if n == 0:
            return [*crawler_base(), "master", self.seed, "--broker", self.redis.url,
                    "--crawl", self.name, *out, *scope]
        return [*crawler_base(), "master", "--broker", self.redis.url, "--join", self.name, *out]

    def worker_argv(self, n: int) -> list[str]:
        out = ["--out", str(self.worker_outs[n]), "--quiet", "--connect-wait", CONNECT_WAIT]
        if self.row.broker == "embedded":
            return [*crawler_base(), "worker", f"{self.cluster.master.address}:{QUEUE_PORT}",
                    *out]
        assert self.redis is not None
        return [*crawler_base(), "worker", "--broker", self.redis.url, "--crawl", self.name,
                *out]

    def run(self, round_number: int) -> Result:
        """Start workers then masters, wait for the masters (cutting a link on a cut row),
        give the workers a grace to leave, stop whatever is left, read the results."""
        self.run_dir.mkdir(parents=True)
        mark = self.cluster.access_log.stat().st_size
        broker_cpu = self.redis.cpu_seconds() if self.redis else 0.0
        nginx_cpu = self.cluster.nginx_cpu()
        cut_host = self.cluster.workers[self.row.hosts - 1] if self.row.kind == "cut" else None
        problems: list[str] = []
        remarks: list[str] = []
        try:
            self.start()
            started, start_epoch = time.perf_counter(), time.time()
            self.start_masters()
            cut = self.watch(mark, started, cut_host)
            if cut is None:
                problems.append(f"timed out after {self.opts.timeout:g} s")
                cut = (None, 0.0)
            ended = max((m.ended for m in self.masters if m.usage is not None), default=0.0)
            cut_worker = self.workers[-1] if cut_host is not None else None
            others = [w for w in self.workers if w is not cut_worker]
            if not problems and not wait_all(others, WORKER_GRACE):
                problems.append(f"workers stopped {WORKER_GRACE:g} s after their masters ended")
            # Cut off when its master finished, the cut host's worker waits for it in vain.
            if cut_worker is not None and not wait_all([cut_worker], 2.0):
                remarks.append("the cut host's worker was stopped")
        finally:
            stop_all([*self.masters, *self.workers])
            if cut_host is not None:
                with contextlib.suppress(BenchError):
                    self.cluster.set_link(cut_host, up=True)
        problems += [f"{p.name} exit {p.usage.returncode}" for p in [*self.masters, *others]
                     if p.usage is not None and p.usage.returncode != 0]
        hits, _ = read_hits(self.cluster.access_log, mark)
        mine = [h for h in hits if h.port == self.site.port and h.status == 200]
        images = sorted(h.at for h in mine if h.path.startswith(IMG_PREFIX))
        page_hits = [h for h in mine if h.path.endswith((".html", "/"))]
        pages = {h.path for h in page_hits}
        masters = [self.cluster.master.address, self.cluster.master2.address]
        by_master = [sum(1 for h in page_hits if h.client == a)
                     for a in masters[:self.row.masters]]
        broker_used = (self.redis.cpu_seconds() - broker_cpu) if self.redis else 0.0
        cpu = (sum(p.usage.cpu_s for p in [*self.masters, *self.workers] if p.usage)
               + self.cluster.nginx_cpu() - nginx_cpu + broker_used)
        disk = check_disk(self.site, self.worker_outs)
        if disk.missing or disk.duplicates or disk.wrong:
            problems.append(f"{disk.missing} missing, {disk.duplicates} stored twice, "
                            f"{disk.wrong} with other bytes")
        for path, copies in disk.twice:
            remarks.append(f"{path} stored by " + " and ".join(
                f"worker{n} at {at - start_epoch:.1f} s" for n, at in copies))
        return Result(self.row, round_number, not problems,
                      (ended - started) if ended else self.opts.timeout, sum(disk.per_host),
                      len(pages), images[-1] - images[0] if len(images) > 1 else 0.0,
                      [t - start_epoch for t in tenths(images)], disk,
                      [m.usage.cpu_s if m.usage else 0.0 for m in self.masters],
                      broker_used, len(images), "; ".join(problems + remarks), cut[0], cut[1],
                      page_hits[-1].at - page_hits[0].at if len(page_hits) > 1 else 0.0,
                      by_master, cpu,
                      (page_hits[0].at - start_epoch, page_hits[-1].at - start_epoch)
                      if page_hits else (0.0, 0.0),
                      [m.ended - started for m in self.masters if m.usage is not None])

    def start(self) -> None:
        """The workers, first, as a cluster comes up: they wait for their master."""
        for n in range(self.row.hosts):
            host = self.cluster.workers[n]
            self.workers.append(Measured(host.role, host.command(*self.worker_argv(n)),
                                         cwd=self.run_dir, env=self.env,
                                         log=self.run_dir / f"{host.role}.log"))

    def start_masters(self) -> None:
        """The first master; a second one once the first has put its crawl on the broker
        (a master joining a crawl that is not there yet stops with a usage error)."""
        for n, host in enumerate((self.cluster.master, self.cluster.master2)[:self.row.masters]):
            if n and self.redis is not None:
                self.redis.wait_for_crawl(self.name, self.cluster.master, self.masters[0])
            argv = host.command(*self.master_argv(n))
            if self.row.kind == "pages" and self.opts.master_limits:
                argv = self.opts.master_limits[n].wrap(argv)
            self.masters.append(Measured(f"master{n + 1}", argv,
                                         cwd=self.run_dir, env=self.env,
                                         log=self.run_dir / f"master{n + 1}.log"))

    def watch(self, mark: int, started: float,
              cut_host: Host | None) -> tuple[float | None, float] | None:
        """Wait for the masters to end; None on time-out, else (cut at, cut for) in seconds.

        With ``cut_host``, its link goes down once the share ``cut_fraction`` of the
        images is in (counted in the site's access log), and up again after
        ``cut_seconds`` or when the crawl ends, whichever comes first.
        """
        deadline = time.monotonic() + self.opts.timeout
        offset, fetched = mark, 0
        cut_at: float | None = None
        cut_s = 0.0
        while not all(m.poll() is not None for m in self.masters):
            if time.monotonic() > deadline:
                return None
            if cut_host is not None:
                hits, offset = read_hits(self.cluster.access_log, offset)
                fetched += sum(1 for h in hits if h.path.startswith(IMG_PREFIX)
                               and h.status == 200)
                now = time.perf_counter() - started
                if cut_at is None and fetched >= self.opts.cut_fraction * len(self.site.truth):
                    self.cluster.set_link(cut_host, up=False)
                    cut_at = now
                elif cut_at is not None and not cut_s and now - cut_at >= self.opts.cut_seconds:
                    self.cluster.set_link(cut_host, up=True)
                    cut_s = now - cut_at
            time.sleep(POLL)
        if cut_host is not None and cut_at is not None and not cut_s:
            cut_s = time.perf_counter() - started - cut_at  # the crawl ended first
            self.cluster.set_link(cut_host, up=True)
        return cut_at, cut_s


# ----- sites ---------------------------------------------------------------------------


def make_sites(args: argparse.Namespace, tmp: Path) -> dict[str, Site]:
    """The image site (links as the limit), the page-heavy site (pages as the limit), and
    for the cut row the image site ``--cut-scale`` times larger (when above 1)."""
    module = load_site_module()
    wanted = {"images": module.SiteParams(pages=args.pages, images=args.images, min_kb=20.0,
                                          max_kb=60.0, median_kb=40.0),
              "pages": module.SiteParams(pages=args.page_site_pages, min_kb=2.0, max_kb=8.0,
                                         median_kb=4.0, per_page=(1, 2))}
    if args.cut_scale > 1 and args.cut_seconds > 0:
        wanted["long"] = module.SiteParams(pages=args.pages, images=args.images, min_kb=20.0,
                                           max_kb=60.0, median_kb=40.0, scale=args.cut_scale)
    made = {}
    for name, params in wanted.items():
        info = module.generate(tmp / f"site-{name}", params)
        for folder in (tmp, tmp / f"site-{name}", info.root):
            folder.chmod(0o755)  # nginx's workers run as another user
        made[name] = Site(info.root, list(info.ground_truth), len(info.pages), SITE_PORTS[name],
                          f"{len(info.pages)} pages, {len(info.ground_truth)} images, "
                          f"{info.total_bytes / 1e6:.1f} MB ({info.size_min / 1024:.0f}-"
                          f"{info.size_max / 1024:.0f} KB, median "
                          f"{info.size_median / 1024:.0f} KB)")
        print(f"{name} site: {made[name].description} (made in {info.generate_s:.0f} s)",
              flush=True)
    return made


# ----- preflight --------------------------------------------------------------------------


def crawler_has(role: str, flag: str) -> bool:
    try:
        done = subprocess.run([*crawler_base(), role, "--help"], capture_output=True, text=True,
                              timeout=60, check=False, env=crawler_env())
    except (OSError, subprocess.SubprocessError):
        return False
    return flag in done.stdout


def tbf_works(cluster: Cluster, rate: str) -> str | None:
    """None when tc can put a tbf qdisc on the first worker host's link, else why not."""
    if shutil.which("tc") is None:
        return "the `tc` tool (iproute2) is not installed"
    try:
        cluster.shape(cluster.workers[0], rate)
    except BenchError as exc:
        return f"tbf is not available here: {exc}"
    if "tbf" not in cluster.qdisc(cluster.workers[0]):
        return "tc accepted the tbf qdisc but does not show it"
    return None


# ----- tables ----------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def ratio(value: float, base: Sequence[float]) -> str:
    """``value`` over the median of ``base`` as "1.23x"; "-" without a base."""
    return f"{value / med(base):.2f}x" if base and med(base) > 0 else "-"


def good(results: Sequence[Result], row: Row) -> list[Result]:
    return [r for r in results if r.row == row and r.ok]


def links_table(results: Sequence[Result], rows: Sequence[Row], site: Site, rate: str) -> str:
    lines = [f"links as the limit: each worker host on {rate} (tbf), site of {site.description}; "
             "median of rounds (dup: images stored on two hosts, all rounds together)",
             f"  {'row':<20} {'runs':>4} {'crawl s':>8} {'img/s':>7} {'x 1 host':>8} "
             f"{'window s':>8} {'img/s':>7} {'x 1 host':>8} {'complete':>8} {'dup':>4} "
             f"{'master CPU s':>12} {'broker CPU s':>12} {'busy':>5}  per host images"]
    for row in rows:
        done = good(results, row)
        if not done:
            lines.append(f"  {row.label:<20} {0:>4}  (no clean run)")
            continue
        base = good(results, Row("links", row.broker, 1))
        speed = ratio(med([r.images_per_s for r in done]), [r.images_per_s for r in base])
        wspeed = ratio(med([r.window_images_per_s for r in done]),
                       [r.window_images_per_s for r in base])
        per_host = "/".join(f"{med([r.disk.per_host[n] for r in done]):.0f}"
                            for n in range(row.hosts))
        lines.append(
            f"  {row.label:<20} {len(done):>4} {med([r.crawl_s for r in done]):>8.2f} "
            f"{med([r.images_per_s for r in done]):>7.1f} {speed:>8} "
            f"{med([r.window_s for r in done]):>8.2f} "
            f"{med([r.window_images_per_s for r in done]):>7.1f} "
            f"{wspeed:>8} {med([r.disk.exact for r in done]) / len(site.truth):>8.1%} "
            f"{sum(r.disk.duplicates for r in done):>4d} "
            f"{med([r.master_cpu[0] for r in done]):>12.2f} "
            f"{med([r.broker_cpu for r in done]):>12.2f} {med([r.busy for r in done]):>5.0%}  "
            f"{per_host}")
    return "\n".join(lines)


def ideal_cut_time(uncut: Sequence[Result], cut: Result, seconds: float) -> float:
    """The crawl's time had the cut host's share alone been lost while it was cut.

    From the uncut runs: the median crawl time T and the median time the
    same share of images was in (t_f); R = T - t_f is what remained. With the
    host away, the others do its share: N/(N-1) as long, up to the cut's end.
    """
    hosts = cut.row.hosts
    crawl = med([r.crawl_s for r in uncut])
    fraction_index = 1  # the cut is made once a quarter is in: between the 2nd and 3rd tenth
    t_f = med([(r.fraction_at[fraction_index] + r.fraction_at[fraction_index + 1]) / 2
               for r in uncut if len(r.fraction_at) == 10])
    remaining = max(0.0, crawl - t_f)
    start = cut.cut_at if cut.cut_at is not None else t_f
    if remaining * hosts / (hosts - 1) <= seconds:
        return start + remaining * hosts / (hosts - 1)
    return start + remaining + seconds / hosts


def cut_table(results: Sequence[Result], rows: Sequence[Row], site: Site,
              seconds: float) -> str:
    lines = [f"cut: one of the worker hosts' links down for {seconds:g} s once a quarter of the "
             "images is in; median of rounds (dup: all rounds together)",
             f"  {'row':<34} {'runs':>4} {'cut at s':>8} {'down s':>6} {'crawl s':>8} "
             f"{'uncut s':>8} {'ideal s':>8} {'over ideal':>10} {'complete':>8} {'dup':>4} "
             f"{'fetches':>7}  per host images"]
    for row in rows:
        done = [r for r in results if r.row == row and r.cut_at is not None]
        uncut = good(results, Row("links", row.broker, row.hosts, site=row.site))
        if not done or not uncut or row.hosts < 2:
            lines.append(f"  {row.label:<34} {len(done):>4}  (needs clean cut and uncut runs)")
            continue
        ideal = med([ideal_cut_time(uncut, r, seconds) for r in done])
        crawl = med([r.crawl_s for r in done])
        per_host = "/".join(f"{med([r.disk.per_host[n] for r in done]):.0f}"
                            for n in range(row.hosts))
        lines.append(
            f"  {row.label:<34} {len(done):>4} {med([r.cut_at or 0.0 for r in done]):>8.2f} "
            f"{med([r.cut_s for r in done]):>6.1f} {crawl:>8.2f} "
            f"{med([r.crawl_s for r in uncut]):>8.2f} {ideal:>8.2f} {crawl - ideal:>+9.2f}s "
            f"{med([r.disk.exact for r in done]) / len(site.truth):>8.1%} "
            f"{sum(r.disk.duplicates for r in done):>4d} "
            f"{med([r.fetches for r in done]):>7.0f}  {per_host}")
    return "\n".join(lines)


def pages_table(results: Sequence[Result], rows: Sequence[Row], site: Site, workers: int,
                master_cpus: float) -> str:
    cores = (f"each master (its page parsers included) held to {master_cpus:g} cores, as on a "
             "host of its own" if master_cpus > 0 else "the masters share this machine's cores")
    lines = [f"pages as the limit: site of {site.description}; {workers} worker hosts, links "
             f"not limited; {cores}; median of rounds (window: first to last page request; "
             "busy: CPU of masters, workers, nginx and redis over the crawl's time and every "
             "core)",
             f"  {'row':<24} {'runs':>4} {'crawl s':>8} {'pages/s':>8} {'x 1 mst':>8} "
             f"{'window s':>8} {'pages/s':>8} {'x 1 mst':>8} {'pages per master':>16} "
             f"{'complete':>8} {'masters CPU s':>14} {'broker CPU s':>12} {'busy':>5}"]
    for row in rows:
        done = good(results, row)
        if not done:
            lines.append(f"  {row.label:<24} {0:>4}  (no clean run)")
            continue
        base = good(results, Row("pages", row.broker, row.hosts, 1))
        times = ratio(med([r.pages_per_s for r in done]), [r.pages_per_s for r in base])
        wtimes = ratio(med([r.window_pages_per_s for r in done]),
                       [r.window_pages_per_s for r in base])
        cpu = "+".join(f"{med([r.master_cpu[n] for r in done]):.1f}" for n in range(row.masters))
        split = "/".join(f"{med([r.pages_by_master[n] for r in done]):.0f}"
                         for n in range(row.masters))
        lines.append(
            f"  {row.label:<24} {len(done):>4} {med([r.crawl_s for r in done]):>8.2f} "
            f"{med([r.pages_per_s for r in done]):>8.1f} {times:>8} "
            f"{med([r.page_window_s for r in done]):>8.2f} "
            f"{med([r.window_pages_per_s for r in done]):>8.1f} {wtimes:>8} {split:>16} "
            f"{med([r.disk.exact for r in done]) / len(site.truth):>8.1%} "
            f"{cpu:>14} {med([r.broker_cpu for r in done]):>12.2f} "
            f"{med([r.busy for r in done]):>5.0%}")
    return "\n".join(lines)


def summary(results: Sequence[Result], links: Sequence[Row], cuts: Sequence[Row],
            pages: Sequence[Row], seconds: float) -> str:
    parts = []
    for broker in dict.fromkeys(r.broker for r in links):
        base = good(results, Row("links", broker, 1))
        ratios = []
        for row in links:
            done = good(results, row)
            if row.broker == broker and row.hosts > 1 and base and done:
                crawl = med([r.images_per_s for r in done]) / med([r.images_per_s for r in base])
                window = med([r.window_images_per_s for r in done]) / \
                    med([r.window_images_per_s for r in base])
                ratios.append(f"{crawl:.2f}x at {row.hosts} hosts ({window:.2f}x over the "
                              "download window)")
        if base:
            parts.append(f"{broker}: {med([r.images_per_s for r in base]):.0f} images/s with "
                         f"1 worker host; " + ("; ".join(ratios) or "no other row"))
    for row in cuts:
        done = [r for r in results if r.row == row and r.cut_at is not None]
        uncut = good(results, Row("links", row.broker, row.hosts, site=row.site))
        if done and uncut:
            crawl = med([r.crawl_s for r in done])
            ideal = med([ideal_cut_time(uncut, r, seconds) for r in done])
            parts.append(f"{row.label}: {crawl:.1f} s against "
                         f"{med([r.crawl_s for r in uncut]):.1f} s uncut and {ideal:.1f} s ideal")
    for row in pages:
        done = good(results, row)
        if row.masters == 2 and done:
            base = good(results, Row("pages", row.broker, row.hosts, 1))
            if base:
                two = med([r.pages_per_s for r in done])
                over_window = ratio(med([r.window_pages_per_s for r in done]),
                                    [r.window_pages_per_s for r in base])
                parts.append(f"two masters crawl {two:.0f} pages/s, "
                             f"{two / med([r.pages_per_s for r in base]):.2f}x one master's "
                             f"({over_window} over the page window), with the cores "
                             f"{med([r.busy for r in done]):.0%} busy")
    return "summary (medians): " + ". ".join(parts) + "." if parts else "summary: no clean run"


# ----- the driver --------------------------------------------------------------------------


def plan(args: argparse.Namespace, redis_ready: bool) -> tuple[list[Row], list[Row], list[Row]]:
    brokers = [b for b in args.brokers if b != "redis" or redis_ready]
    links = [Row("links", b, n) for b in brokers for n in args.hosts]
    top = max(args.hosts)
    cuts = []
    if args.cut_seconds > 0 and top > 1:
        site = "long" if args.cut_scale > 1 else "images"
        for broker in brokers:
            if site == "long":  # its uncut baseline, on the same larger site
                cuts.append(Row("links", broker, top, site=site))
            cuts.append(Row("cut", broker, top, site=site))
    pages = []
    if args.pages_rows:
        pages.append(Row("pages", "embedded", args.page_workers, 1))
        if redis_ready:
            pages += [Row("pages", "redis", args.page_workers, 1),
                      Row("pages", "redis", args.page_workers, 2)]
    return links, cuts, pages


def print_run(result: Result) -> None:
    cut = (f" cut at {result.cut_at:.1f} s for {result.cut_s:.1f} s"
           if result.cut_at is not None else "")
    if result.row.kind == "pages":
        cut = (f" pages at {result.pages_span[0]:.1f}-{result.pages_span[1]:.1f} s, masters "
               f"ended at {'/'.join(f'{t:.1f}' for t in result.master_ends)} s")
    print(f"  round {result.round + 1} {result.row.kind:<5} {result.row.label:<34} "
          f"{result.crawl_s:7.2f} s  {result.images:5d} images ({result.images_per_s:6.1f}/s, "
          f"window {result.window_s:5.2f} s)  {result.pages:5d} pages  exact "
          f"{result.disk.exact} dup {result.disk.duplicates} wrong {result.disk.wrong}  "
          f"hosts {'/'.join(map(str, result.disk.per_host))}  master CPU "
          f"{'+'.join(f'{c:.1f}' for c in result.master_cpu)} s{cut}"
          + (f"  [{result.note}]" if result.note else ""), flush=True)


def bench(args: argparse.Namespace, tmp: Path) -> int:
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}, "
          f"Python {platform.python_version()}", flush=True)
    sites = make_sites(args, tmp)
    with contextlib.ExitStack() as stack:
        try:
            lan = Lan()
        except NetnsUnavailable as exc:
            raise BenchError(f"network namespaces unavailable: {exc}") from exc
        stack.callback(lan.close)
        hosts = max(max(args.hosts), args.page_workers)
        cluster = make_cluster(lan, hosts, tmp / "lan")
        why_not = tbf_works(cluster, args.rate)
        if why_not:
            raise BenchError(f"{why_not}: the link-limited rows cannot run (stopped)")
        start_nginx(cluster, list(sites.values()))
        redis: Redis | None = None
        redis_ready = False
        if "redis" in args.brokers:
            missing = [f"crawler {role} {flag}" for role, flag in
                       (("master", "--broker"), ("master", "--join"), ("worker", "--broker"))
                       if not crawler_has(role, flag)]
            if shutil.which("redis-server") is None:
                print("redis rows skipped: redis-server is not installed", flush=True)
            elif missing:
                print(f"redis rows skipped: {', '.join(missing)} not in --help", flush=True)
            else:
                redis = start_redis(cluster)
                redis_ready = True
        links, cuts, pages = plan(args, redis_ready)
        limits: tuple[CpuLimit, ...] = ()
        if pages and args.master_cpus > 0:
            for n in (1, 2):
                try:
                    limit = CpuLimit(f"crawler-scaleout-{os.getpid()}-master{n}",
                                     args.master_cpus)
                except CpuLimitError as exc:
                    raise BenchError(f"--master-cpus: {exc}") from exc
                stack.callback(limit.close)  # each at once: the first stays if the second fails
                limits += (limit,)
        rows = [*links, *cuts, *pages]
        print(f"rows: {', '.join(f'{r.kind} {r.label}' for r in rows)}; {args.runs} rounds",
              flush=True)
        results: list[Result] = []
        for round_number in range(args.runs):
            shift = round_number % len(rows)
            for n, row in enumerate(rows[shift:] + rows[:shift]):
                for worker in cluster.workers:
                    if row.kind == "pages":
                        cluster.unshape(worker)
                    else:
                        cluster.shape(worker, args.rate)
                chosen = sites["pages" if row.kind == "pages" else row.site]
                name = f"scaleout-{round_number + 1}-{n + 1}"
                crawl = Crawl(cluster, row, chosen, Options(args.rate, args.run_timeout,
                                                            args.cut_seconds, args.cut_fraction,
                                                            args.page_workers, limits),
                              tmp / "runs" / name, redis, name)
                result = crawl.run(round_number)
                print_run(result)
                results.append(result)
                if not args.keep:
                    shutil.rmtree(tmp / "runs" / name, ignore_errors=True)
        print()
        print(links_table(results, links, sites["images"], args.rate))
        if cuts:
            print(cut_table(results, [r for r in cuts if r.kind == "cut"],
                            sites[cuts[0].site], args.cut_seconds))
        if pages:
            print(pages_table(results, pages, sites["pages"], args.page_workers,
                              args.master_cpus))
        if "redis" in args.brokers and not redis_ready:
            print("redis rows: not run (see above)")
        print()
        print(summary(results, links, [r for r in cuts if r.kind == "cut"], pages,
                      args.cut_seconds))
    return 0


def host_counts(text: str) -> list[int]:
    counts = sorted({int(n) for n in text.split(",") if n.strip()})
    if not counts or counts[0] < 1 or counts[-1] > MAX_HOSTS:
        raise argparse.ArgumentTypeError(f"worker host counts between 1 and {MAX_HOSTS}")
    return counts


def brokers(text: str) -> list[str]:
    chosen = [b.strip() for b in text.split(",") if b.strip()]
    unknown = set(chosen) - {"embedded", "redis"}
    if unknown or not chosen:
        raise argparse.ArgumentTypeError("brokers: embedded, redis")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--hosts", type=host_counts, default=[1, 2, 4],
                        help="worker host counts, comma-separated (default 1,2,4)")
    parser.add_argument("--brokers", type=brokers, default=["embedded", "redis"],
                        help="embedded,redis (redis rows are skipped with a message when "
                             "redis-server or the crawler's --broker flag is missing)")
    parser.add_argument("--rate", default="40mbit", help="each worker host's link (tc syntax)")
    parser.add_argument("--images", type=int, default=2000, help="images on the image site")
    parser.add_argument("--pages", type=int, default=80, help="pages of the image site")
    parser.add_argument("--page-site-pages", type=int, default=2000,
                        help="pages of the page-heavy site (1-2 images each)")
    parser.add_argument("--page-workers", type=int, default=2,
                        help="worker hosts on the pages rows")
    parser.add_argument("--no-pages", dest="pages_rows", action="store_false",
                        help="leave out the pages-as-the-limit rows")
    parser.add_argument("--master-cpus", type=float, default=0.0, metavar="CORES",
                        help="on the pages rows, hold each master (with its page parsers) to "
                             "this many cores through a cgroup, as if each had a host of its "
                             "own (0, the default: the masters share this machine's cores)")
    parser.add_argument("--cut-seconds", type=float, default=30.0,
                        help="how long the cut row's link stays down (0: no cut row)")
    parser.add_argument("--cut-scale", type=int, default=8,
                        help="the cut row's site is the image site this many times larger, "
                             "so that the crawl outlasts the cut (1: the image site itself)")
    parser.add_argument("--cut-fraction", type=float, default=0.25,
                        help="share of the images in when the link is cut")
    parser.add_argument("--run-timeout", type=float, default=300.0, help="seconds per crawl")
    parser.add_argument("--tmp", type=Path, default=None, help="where sites and outputs go")
    parser.add_argument("--keep", action="store_true", help="keep sites, outputs and logs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.images < 1 or args.pages < 2 or args.page_site_pages < 2:
        parser.error("--runs, --images must be at least 1, --pages at least 2")
    if args.master_cpus < 0 or args.master_cpus > (os.cpu_count() or 1):
        parser.error("--master-cpus: between 0 and this machine's cores")
    if not 0 < args.cut_fraction < 1 or not 1 <= args.page_workers <= MAX_HOSTS:
        parser.error(f"--cut-fraction in (0, 1), --page-workers in 1..{MAX_HOSTS}")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


@contextlib.contextmanager
def workspace(args: argparse.Namespace) -> Iterator[Path]:
    if args.tmp is not None:
        args.tmp.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="crawler-scaleout-", dir=args.tmp))
    try:
        yield tmp
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # Even when started in the background, where a shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with workspace(args) as tmp:
            return bench(args, tmp)
    except BenchError as exc:
        print(f"scaleout: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scaleout: interrupted; namespaces removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
