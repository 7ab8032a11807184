"""A worker's download engine alone: CPU per image over http and https, and where it goes.

Generates the synthetic site's images (``benchmarks/site.py``), serves them
with nginx on 127.0.0.1 over http and over https (HTTP/2, a self-signed
certificate made with ``openssl``), and downloads every image with one
``CurlEngine`` in this process, as a worker does, storing into a temporary
folder. Prints the process CPU time per image of the download phase (the
engine, the image checks and the store; not the worker's exchanges with a
master, which ``run.py`` measures end to end). ``--profile`` adds a cProfile
run per scheme and prints its top functions.

    python benchmarks/engine.py [--images 5000] [--runs 3] [--slots 16] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from crawler.config import Limits  # noqa: E402 - after the path is set
from crawler.fetch.curl import CurlEngine  # noqa: E402
from crawler.fetch.guard import AddressPolicy  # noqa: E402
from crawler.fetch.options import RequestOptions  # noqa: E402
from crawler.model.outcome import Attempt  # noqa: E402
from crawler.worker.sink import sinks_into  # noqa: E402
from crawler.worker.store import Store  # noqa: E402

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    types {{ image/png png; }}
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    server {{ listen 127.0.0.1:{http_port}; root {root}; }}
    server {{
        listen 127.0.0.1:{https_port} ssl http2;
        ssl_certificate {work}/cert.pem;
        ssl_certificate_key {work}/key.pem;
        root {root};
    }}
}}
"""
WAIT_FOR_NGINX = 10.0  # seconds
RUN_TIMEOUT = 300.0  # seconds for one pass over the images


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_nginx(root: Path, work: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem")],
                   check=True, capture_output=True)
    http_port, https_port = free_port(), free_port()
    (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, root=root, http_port=http_port,
                                                       https_port=https_port))
    proc = subprocess.Popen([binary, "-p", str(work), "-c", str(work / "nginx.conf")],
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + WAIT_FOR_NGINX
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx did not start: {proc.communicate()[1]!r}")
        try:
            socket.create_connection(("127.0.0.1", https_port), timeout=0.2).close()
            return proc, http_port, https_port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nginx did not listen in time")


def one_pass(urls: Sequence[str], out: Path, options: RequestOptions, slots: int,
             profile: cProfile.Profile | None = None) -> tuple[float, float, float]:
    """Download ``urls``; (CPU seconds of this process, of which system, wall) for the pass."""
    results: queue.SimpleQueue[list[tuple[str, Attempt | None]]] = queue.SimpleQueue()
    engine = CurlEngine(slots=slots, new_sink=sinks_into(Store(out), Limits()), limits=Limits(),
                        policy=AddressPolicy(frozenset({"public", "loopback"})),
                        options=options, report=results.put, stop=threading.Event())

    def run() -> None:
        if profile is not None:
            profile.enable()
        try:
            engine.run()
        finally:
            if profile is not None:
                profile.disable()

    before, wall = os.times(), time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # Leased in batches, as a worker's coordinator hands them over.
    for start in range(0, len(urls), 64):
        engine.submit([(url, 1) for url in urls[start:start + 64]])
    done, failed = 0, []
    deadline = time.monotonic() + RUN_TIMEOUT
    while done < len(urls) and time.monotonic() < deadline:
        for url, attempt in results.get(timeout=max(0.01, deadline - time.monotonic())):
            done += 1
            if attempt is None or not attempt.ok:
                failed.append((url, attempt))
    after, wall = os.times(), time.monotonic() - wall
    system = after.system - before.system
    cpu = after.user - before.user + system
    engine.close()
    thread.join(timeout=10)
    if failed or done < len(urls):
        raise RuntimeError(f"{len(failed)} failed, {len(urls) - done} missing: {failed[:3]}")
    return cpu, system, wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slots", type=int, default=16, help="downloads in flight")
    parser.add_argument("--profile", action="store_true", help="add a cProfile run per scheme")
    parser.add_argument("--tmp", default=None,
                        help="where the site and outputs go (made if missing)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import importlib.util

    spec = importlib.util.spec_from_file_location("crawler_bench_site", HERE / "site.py")
    assert spec is not None and spec.loader is not None
    site = importlib.util.module_from_spec(spec)
    sys.modules["crawler_bench_site"] = site
    spec.loader.exec_module(site)
    if args.tmp is not None:
        Path(args.tmp).mkdir(parents=True, exist_ok=True)  # a folder named for this run is fine
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="engine-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's workers may run as another user
        info = site.generate(work, site.SiteParams(images=args.images, pages=2))
        nginx, http_port, https_port = start_nginx(info.root, work)
        try:
            insecure = RequestOptions(user_agent="bench", insecure=True)
            for scheme, port in (("http", http_port), ("https", https_port)):
                urls = [f"{scheme}://127.0.0.1:{port}{path}" for path in info.ground_truth]
                cpus, systems, walls = [], [], []
                for run in range(args.runs):
                    out = work / f"out-{scheme}-{run}"
                    # Every pass's files stay till the end: on an ext4 without a journal,
                    # creating files within a minute of deleting thousands costs the kernel
                    # a scan of the deleted ones each (0.6 ms a file here), and each pass
                    # came out slower than the one before.
                    cpu, system, wall = one_pass(urls, out, insecure, args.slots)
                    cpus.append(cpu)
                    systems.append(system)
                    walls.append(wall)
                cpu = statistics.median(cpus)
                print(f"{scheme:5}  {len(urls)} images  CPU {cpu * 1000 / len(urls):.3f} ms/image"
                      f" (system {statistics.median(systems) * 1000 / len(urls):.3f})"
                      f"  runs {', '.join(f'{c:.2f}' for c in cpus)} s  wall "
                      f"{statistics.median(walls):.2f} s", flush=True)
                if args.profile:
                    profile = cProfile.Profile(time.thread_time)  # CPU of the engine thread
                    one_pass(urls, work / f"out-{scheme}-profile", insecure, args.slots, profile)
                    text = io.StringIO()
                    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(30)
                    print(text.getvalue())
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
