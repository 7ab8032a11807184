"""Start-up cost: what the crawler spends before and around a tiny crawl, against wget.

    python benchmarks/startup.py [--runs 7] [--images 5] [--python-server]

On a small site the crawler's time is mostly start-up: interpreters, imports,
processes. This serves a one-page site (one HTML page showing ``--images``
small PNGs) with nginx on 127.0.0.1 and runs, round after round in turn, each
as a fresh process into a fresh output folder:

* ``python``: ``python -c pass``, the interpreter alone (every crawler process
  pays it; ``.pth`` hooks of the site-packages count here);
* ``--help``: ``crawler --help``;
* ``dry run``: ``crawler master URL --dry-run`` (the page fetched and parsed,
  nothing downloaded);
* ``crawl``: ``crawler master URL --local-workers 1`` (the images downloaded
  by a worker the master starts);
* ``wget -p``: ``wget -p URL``, the same page and its images.

CPU is user + system of the whole process tree: ``os.wait4`` gives the
process's own and that of every child it waited for (the page parser, local
workers). It prints the median CPU and wall time of each, and the crawl's
ratios to wget. Nothing here is a test; all traffic goes to 127.0.0.1 and
every run is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: its modules beside it

from procs import byte_compile_crawler, free_port  # noqa: E402
from server import serving  # noqa: E402

RUN_TIMEOUT = 60.0  # seconds one command may take before it is killed and the run fails


def png(width: int, height: int, shade: int) -> bytes:
    """A valid grey PNG of the given size (the crawler checks image types by their bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + bytes([(shade + x) % 256 for x in range(width)])
                    for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def make_site(root: Path, images: int) -> None:
    """One page, ``index.html``, showing ``images`` PNGs."""
    root.mkdir(parents=True, exist_ok=True)
    tags = []
    for n in range(images):
        (root / f"image-{n}.png").write_bytes(png(64, 48, n * 37))
        tags.append(f'<img src="image-{n}.png" alt="image {n}">')
    (root / "index.html").write_text(
        "<!doctype html><html><head><title>One page</title></head><body>\n"
        + "\n".join(tags) + "\n</body></html>\n", encoding="utf-8")


@dataclass
class Run:
    name: str
    ok: bool
    cpu_s: float
    wall_s: float


def measure(name: str, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run ``argv`` once; its CPU (with its reaped children's) and wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, 9)
            pid, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(name, proc.returncode == 0, rusage.ru_utime + rusage.ru_stime, wall)


def commands(url: str, run_dir: Path, wget: str | None) -> dict[str, list[str]]:
    crawler = [sys.executable, "-m", "crawler"]
    found = {
        # The floor every crawler process stands on: this interpreter with its site hooks.
        "python": [sys.executable, "-c", "pass"],
        "--help": [*crawler, "--help"],
        "dry run": [*crawler, "master", url, "--dry-run", "--quiet", "--out",
                    str(run_dir / "dry")],
        "crawl": [*crawler, "master", url, "--local-workers", "1", "--quiet",
                  "--bind", f"127.0.0.1:{free_port()}", "--out", str(run_dir / "crawl")],
    }
    if wget:
        found["wget -p"] = [wget, "-p", "-nH", "-q", "-P", str(run_dir / "wget"), url]
    return found


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--images", type=int, default=5, help="images on the page (default 5)")
    parser.add_argument("--python-server", action="store_true",
                        help="serve with Python's http.server instead of nginx")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be 1 or more")
    wget = shutil.which("wget")
    if wget is None:
        print("wget not found (apt-get install wget): its row is left out", flush=True)
    print(byte_compile_crawler(), flush=True)
    env = dict(os.environ, CRAWLER_AUTHKEY=secrets.token_hex(16))
    results: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="crawler-startup-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx's workers run as another user when we are root
        make_site(tmp / "site", args.images)
        with serving(tmp / "site", tmp / "server", use_nginx=not args.python_server,
                     install=False) as server:
            url = server.urls["http"] + "/index.html"
            for round_no in range(args.runs):
                run_dir = tmp / f"round-{round_no}"
                run_dir.mkdir()
                todo = list(commands(url, run_dir, wget).items())
                # Alternating order, so no command always runs right after the same other.
                shift = round_no % len(todo)
                for name, command in todo[shift:] + todo[:shift]:
                    run = measure(name, command, run_dir, env)
                    results.setdefault(name, []).append(run)
                    if not run.ok:
                        print(f"round {round_no + 1}: {name} failed", flush=True)
                shutil.rmtree(run_dir, ignore_errors=True)
    print(f"{args.runs} rounds, one page with {args.images} images, medians "
          f"(CPU: user + system, whole process tree)")
    print(f"{'':10} {'CPU ms':>8} {'wall ms':>8} {'ok':>5}")
    for name, runs in results.items():
        good = [r for r in runs if r.ok]
        print(f"{name:10} {median([r.cpu_s for r in good]) * 1000:8.0f} "
              f"{median([r.wall_s for r in good]) * 1000:8.0f} {len(good):>2}/{len(runs)}")
    crawl = [r for r in results.get("crawl", []) if r.ok]
    wget_runs = [r for r in results.get("wget -p", []) if r.ok]
    if crawl and wget_runs:
        cpu = median([r.cpu_s for r in crawl]) / max(median([r.cpu_s for r in wget_runs]), 1e-6)
        wall = median([r.wall_s for r in crawl]) / max(median([r.wall_s for r in wget_runs]), 1e-6)
        print(f"crawl / wget -p: {cpu:.1f}x the CPU, {wall:.1f}x the wall time")
    return 0 if all(r.ok for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
