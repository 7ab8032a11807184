"""The static web server the benchmarks crawl: nginx on 127.0.0.1, http and https.

nginx runs in the foreground with a minimal config in the benchmark's
temporary folder: two worker processes, sendfile, keep-alive, and an access
log of ``status URI`` lines, from which each run's page requests are counted
the same way for every tool. With certificates it also listens with TLS and
HTTP/2 on a second port. When nginx is missing and we are root, Debian's
package is installed; when it cannot be had, Python's ThreadingHTTPServer
(``site.py serve``, http only, no access log) serves instead, with a WARNING.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from procs import Measured, children_of, connects, free_port, proc_cpu_seconds, stop_all
from tls import Certificates

HERE = Path(__file__).resolve().parent
SERVER_START_TIMEOUT = 15.0
INSTALL_TIMEOUT = 600.0

NGINX_CONF = """\
daemon off;
worker_processes 2;
pid {work}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    log_format bench '$status $request_uri';
    access_log {work}/access.log bench;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    include {mime_types};
    default_type application/octet-stream;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
{tls_listen}        server_name localhost;
        root {root};
        index index.html;
    }}
}}
"""

# nginx 1.25.1 moved HTTP/2 from a "listen" parameter to its own directive.
TLS_LISTEN_OLD = """\
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
"""
TLS_LISTEN_NEW = """\
        listen 127.0.0.1:{tls_port} ssl;
        http2 on;
        ssl_certificate {cert};
        ssl_certificate_key {key};
"""

# The types nginx needs here, when its own mime.types is not where Debian puts it.
MIME_TYPES = """\
types {
    text/html html htm;
    text/css css;
    image/png png;
    image/jpeg jpg jpeg;
    image/gif gif;
    image/svg+xml svg;
    image/webp webp;
    image/x-icon ico;
    text/plain txt;
}
"""


@dataclass
class Server:
    """A running static server: its URL per scheme, its CA (https), its access log."""

    kind: str
    urls: dict[str, str]  # scheme -> "scheme://127.0.0.1:PORT"
    proc: Measured
    access_log: Path | None = None
    ca: Path | None = None

    def cpu_seconds(self) -> float:
        pid = self.proc.popen.pid
        return proc_cpu_seconds([pid, *children_of(pid)])

    def log_mark(self) -> int:
        """Where the access log ends now: pass it to ``requests_since`` after a run."""
        try:
            return self.access_log.stat().st_size if self.access_log else 0
        except OSError:
            return 0

    def requests_since(self, mark: int) -> list[tuple[int, str]] | None:
        """(status, URI) of every request logged since ``mark``; None without a log."""
        if self.access_log is None:
            return None
        with contextlib.suppress(OSError), self.access_log.open("rb") as log:
            log.seek(mark)
            found = []
            for line in log.read().decode("utf-8", "replace").splitlines():
                status, _, uri = line.partition(" ")
                if status.isdigit():
                    found.append((int(status), uri))
            return found
        return None

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


def _version_tuple(version: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(n) for n in match.groups()) if match else (0, 0, 0)


def start_nginx(binary: str, root: Path, work: Path,
                certificates: Certificates | None) -> Server | None:
    """nginx in the foreground with a minimal config in ``work``; None if it will not start."""
    work.mkdir(parents=True, exist_ok=True)
    version = nginx_version(binary)
    mime = Path("/etc/nginx/mime.types")
    if not mime.exists():
        mime = work / "mime.types"
        mime.write_text(MIME_TYPES, encoding="utf-8")
    for _attempt in range(3):  # the free port may be taken between our look and nginx's bind
        port = free_port()
        tls_port = free_port() if certificates else 0
        tls_listen = ""
        if certificates:
            template = TLS_LISTEN_NEW if _version_tuple(version) >= (1, 25, 1) else TLS_LISTEN_OLD
            tls_listen = template.format(tls_port=tls_port, cert=certificates.cert,
                                         key=certificates.key)
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=work, root=root, port=port, mime_types=mime,
                                          tls_listen=tls_listen), encoding="utf-8")
        proc = Measured("nginx", [binary, "-p", str(work), "-c", str(conf), "-e", "stderr"],
                        cwd=work, log=work / "nginx.log")
        if _wait_listening(proc, port) and (not tls_port or _wait_listening(proc, tls_port)):
            urls = {"http": f"http://127.0.0.1:{port}"}
            if certificates:
                urls["https"] = f"https://127.0.0.1:{tls_port}"
            return Server(version + (", TLS + HTTP/2" if certificates else ""), urls, proc,
                          work / "access.log", certificates.ca if certificates else None)
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
            return Server("Python ThreadingHTTPServer", {"http": f"http://127.0.0.1:{port}"},
                          proc)
        stop_all([proc])
    raise RuntimeError("the fallback server would not start:\n" + _tail(work / "python-http.log"))


def _wait_listening(proc: Measured, port: int) -> bool:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if connects(port):
            return True
        time.sleep(0.05)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ServerError(RuntimeError):
    """No server could serve what was asked (https needs nginx)."""


@contextlib.contextmanager
def serving(root: Path, work: Path, *, use_nginx: bool, install: bool,
            certificates: Certificates | None = None) -> Iterator[Server]:
    """Serve ``root`` for the duration of the block; the server is always stopped after."""
    server = None
    if use_nginx:
        binary = find_nginx(install)
        if binary:
            server = start_nginx(binary, root, work, certificates)
    if server is None:
        if certificates is not None:
            raise ServerError("https runs need nginx (apt-get install nginx); the fallback "
                              "server speaks http only")
        why = "nginx cannot be had" if use_nginx else "--python-server given"
        print(f"WARNING: {why}; serving with Python's ThreadingHTTPServer, which is much "
              "slower than nginx: the figures measure the server as much as the clients",
              flush=True)
        server = start_python_server(root, work)
    try:
        yield server
    finally:
        server.stop()
