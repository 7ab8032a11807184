"""Micro-benchmarks of the crawler's inner costs: the queue, extraction, board memory, report.

    python benchmarks/micro.py [all|queue|extract|memory|report] [--urls 20000 --seconds 10
                                                                  --runs 3]

* queue: a :class:`crawler.board.manager.QueueServer` on a :class:`crawler.board.memory.TaskBoard`
  in this process (127.0.0.1, an OS-chosen port); a client in another process
  connects with :class:`crawler.board.manager.MasterClient` and leases and reports
  URLs, one per call and then 64 per call, then in ``exchange`` calls of 8 (the
  reports of the last 8 and the next 8 in one round trip, as a worker does when a
  site's 16 slots are shared by two workers). Prints URLs/s and calls/s (median
  of ``--runs``); each run is bounded by ``--urls`` and ``--seconds``.
* extract: :func:`crawler.parse.extract.extract` pages/s on a large page (2,000
  images in every form the site generator uses, 500 links) and on a typical
  page (50 images, 30 links).
* memory: in a fresh process, the RSS (VmRSS) growth from adding 100,000 image
  URLs of about 80 characters to a TaskBoard with ``board.put(url, host, page)``,
  as the master does; prints bytes per URL against a 1 KiB target.
* report: :func:`crawler.ui.report.write_report` on a manifest of 100,000 lines
  (one in ten a failure, 20 real image files), in a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: run.py beside it

from run import load_site_module  # noqa: E402 - needs the path above

BATCH = 64
MEMORY_URLS = 100_000
MEMORY_TARGET = 1024  # bytes per tracked URL
CHILD_TIMEOUT = 120.0


def median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


# ----- (a) the queue path ------------------------------------------------------------------


def sample_report(url: str) -> dict[str, Any]:
    """What a worker reports for one stored image, as it goes on the wire."""
    from crawler.model.outcome import Attempt

    return Attempt(url=url, ok=True, path="images/img.example_8080/" + url.rsplit("/", 1)[-1],
                   bytes=16384, sha256="ab" * 32, content_type="image/png", width=640,
                   height=480, elapsed_s=0.0123).to_wire()


EXCHANGE = 8  # URLs per exchange: a site's 16 slots (host_concurrency) over two workers


def queue_client(host: str, port: int, mode: str, batch: int, max_urls: int,
                 seconds: float) -> None:
    """The client side (its own process). ``lease``: lease ``batch`` URLs, report them,
    repeat. ``exchange``: one call reports the last ``batch`` and leases the next."""
    from crawler.board.manager import MasterClient

    board = MasterClient((host, port), os.environ["CRAWLER_AUTHKEY"].encode()).connect()
    worker = f"bench:{os.getpid()}"
    board.hello(worker, {"host": "bench", "pid": os.getpid(), "threads": 1})
    done = calls = 0
    held: list[tuple[str, int]] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while done < max_urls and time.perf_counter() < deadline:
        if mode == "exchange":
            reports = [sample_report(url) for url, _attempt in held]
            ask = min(batch, max_urls - done - len(held))
            answer = board.exchange(worker, calls + 1, reports, [], max(0, ask), 0.0)
            calls += 1
            done += len(held)
            held = answer["tasks"]
            if not held and ask > 0:
                break
            continue
        answer = board.lease(worker, batch, 0.0)
        calls += 1
        tasks = answer["tasks"]
        if not tasks:
            break
        board.report(worker, [sample_report(url) for url, _attempt in tasks])
        calls += 1
        done += len(tasks)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"urls": done, "calls": calls, "seconds": elapsed, "client_cpu": cpu}),
          flush=True)


def queue_run(mode: str, batch: int, max_urls: int, seconds: float) -> dict[str, float]:
    """One run: a fresh board of ``max_urls`` URLs served here, drained by a client process."""
    from crawler.board.manager import QueueServer
    from crawler.board.memory import BoardPolicy, TaskBoard

    board = TaskBoard(BoardPolicy(lease_timeout=600.0, host_concurrency=1_000_000,
                                  batch_size=BATCH))
    page = "http://img.example:8080/p/0001.html"
    for n in range(max_urls):
        board.put(f"http://img.example:8080/img/{n // 250:03d}/photo-{n:06d}.png",
                  "img.example:8080", page)
    key = secrets.token_hex(16)
    server = QueueServer(board, ("127.0.0.1", 0), key.encode(),
                         lambda full=False: {"lease_timeout": 600.0}).start()
    host, port = server.address[:2]
    env = dict(os.environ, CRAWLER_AUTHKEY=key)
    cpu_started = time.process_time()  # this process: the server's threads (idle otherwise)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_queue-client", str(host), str(port),
         mode, str(batch), str(max_urls), str(seconds)],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    # The server's figure includes its side of the client's few connection handshakes:
    # small against thousands of calls.
    result["server_cpu"] = time.process_time() - cpu_started
    settled = len(board.drain())
    if settled != result["urls"]:
        raise RuntimeError(f"the board settled {settled} URLs, the client reported "
                           f"{result['urls']}")
    return result


def bench_queue(runs: int, max_urls: int, seconds: float) -> list[str]:
    lines = [f"queue: round trips, server in this process, client in another "
             f"(median of {runs}; each run at most {max_urls} URLs or {seconds:g} s); "
             "CPU per call of each side"]
    for mode, batch in (("lease", 1), ("lease", BATCH), ("exchange", EXCHANGE)):
        results = [queue_run(mode, batch, max_urls, seconds) for _ in range(runs)]
        urls_per_s = median_of([r["urls"] / r["seconds"] for r in results])
        calls_per_s = median_of([r["calls"] / r["seconds"] for r in results])
        server_us = median_of([1e6 * r["server_cpu"] / r["calls"] for r in results])
        client_us = median_of([1e6 * r["client_cpu"] / r["calls"] for r in results])
        what = ("lease + report" if mode == "lease" else "exchange") + f", {batch} URL(s)"
        lines.append(f"  {what:<22} {urls_per_s:9.0f} URLs/s, {calls_per_s:7.0f} calls/s "
                     f"({1e6 / calls_per_s:5.0f} us per call; CPU {server_us:4.0f} us server, "
                     f"{client_us:4.0f} us client), "
                     f"{median_of([r['urls'] for r in results]):.0f} URLs per run")
    return lines


# ----- (b) extraction ---------------------------------------------------------------------


def make_page(images: int, links: int, seed: int = 3) -> bytes:
    """A page in the site generator's style: every discovery form, in rotation."""
    site = load_site_module()
    image_paths = [site.image_path(n + seed * 100_000) for n in range(images)]
    link_paths = [site.page_path(n + 1) for n in range(links)]
    return site.render_page(seed, image_paths, link_paths, Counter()).encode()


def time_extract(page: bytes, url: str, min_seconds: float, max_iterations: int,
                 ) -> tuple[float, int, int]:
    """(seconds per page, images found, links found): the best of three timed loops."""
    from crawler.parse.extract import extract

    found = extract(page, url)
    per_page = []
    for _ in range(3):
        count = 0
        started = time.perf_counter()
        while count < max_iterations:
            extract(page, url)
            count += 1
            if time.perf_counter() - started >= min_seconds:
                break
        per_page.append((time.perf_counter() - started) / count)
    return min(per_page), len(found.images), len(found.links)


def bench_extract(seconds: float) -> list[str]:
    lines = ["extract: crawler.parse.extract.extract on pages in the benchmark site's style "
             "(best of 3 loops)"]
    for label, images, links in (("large page", 2000, 500), ("typical page", 50, 30)):
        page = make_page(images, links)
        per_page, found, linked = time_extract(page, "http://127.0.0.1:8080/p/0003.html",
                                               min_seconds=min(2.0, seconds),
                                               max_iterations=5000)
        lines.append(f"  {label:<13} ({images} images, {links} links, {len(page) / 1024:.0f} KB):"
                     f" {1 / per_page:8.1f} pages/s, {1000 * per_page:7.2f} ms/page, "
                     f"{found / per_page:9.0f} images/s; found {found} images, {linked} links")
        if found != images or linked != links:
            lines.append(f"    WARNING: expected {images} images and {links} links")
    return lines


# ----- (c) master memory per tracked URL -------------------------------------------------


def vm_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def realistic_url(n: int) -> str:
    """An image URL of about 80 characters, on one of 20 CDN hosts."""
    stems = ("photo", "product-shot-large", "gallery", "thumbnail-square", "hero-banner-wide")
    stem = stems[n % len(stems)]
    return (f"https://cdn{n % 20}.images-example.com/media/{2015 + n % 10}/{n % 12 + 1:02d}/"
            f"{stem}-{n:07d}.jpg?w={320 * (1 + n % 4)}")


def memory_child(count: int) -> None:
    """Runs in a fresh process: RSS before and after tracking ``count`` URLs on a board."""
    from crawler.board.memory import BoardPolicy, TaskBoard
    from crawler.model.urls import host_key

    board = TaskBoard(BoardPolicy())
    host_key("https://warm.example/")  # imports and caches, before the first reading
    gc.collect()
    before = vm_rss_kb()
    urls = [realistic_url(n) for n in range(count)]
    pages = [f"https://www.images-example.com/gallery/page-{n:05d}.html"
             for n in range(count // 50 + 1)]  # 50 images per page, as on a real site
    gc.collect()
    with_strings = vm_rss_kb()
    for n, url in enumerate(urls):
        board.put(url, host_key(url), pages[n // 50])
    gc.collect()
    after = vm_rss_kb()
    length = sum(map(len, urls)) / count
    # The master calls counts() every loop tick (50 ms) and reap() every 0.5 s; both
    # walk every tracked URL with the board's lock held.
    timings = {}
    for name, call in (("counts", board.counts), ("reap", board.reap)):
        started = time.perf_counter()
        for _ in range(5):
            call()
        timings[name] = (time.perf_counter() - started) / 5
    print(json.dumps({"count": count, "mean_length": length, "before_kb": before,
                      "strings_kb": with_strings, "after_kb": after,
                      "tracked": board.unfinished(), "timings": timings}), flush=True)


def bench_memory(count: int = MEMORY_URLS) -> list[str]:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_memory-child",
                           str(count)], capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                          check=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    total = (r["after_kb"] - r["before_kb"]) * 1024 / count
    strings = (r["strings_kb"] - r["before_kb"]) * 1024 / count
    board = (r["after_kb"] - r["strings_kb"]) * 1024 / count
    verdict = "under" if total < MEMORY_TARGET else "OVER"
    return [f"memory: a TaskBoard tracking {r['tracked']} image URLs (mean {r['mean_length']:.0f} "
            f"chars) in a fresh process, VmRSS {r['before_kb'] / 1024:.1f} -> "
            f"{r['after_kb'] / 1024:.1f} MB",
            f"  {total:.0f} bytes per URL in all ({verdict} the {MEMORY_TARGET} B target): "
            f"{strings:.0f} for the URL string itself, {board:.0f} for the board's records",
            f"  with {r['tracked']} URLs tracked: board.counts() "
            f"{1000 * r['timings']['counts']:.1f} ms per call (the master calls it every 50 ms "
            f"tick), board.reap() {1000 * r['timings']['reap']:.1f} ms (every 0.5 s)"]


# ----- (d) the HTML report ------------------------------------------------------------------


REPORT_LINES = 100_000


def bench_report(lines: int = REPORT_LINES) -> list[str]:
    import tempfile

    from crawler.demo.site import png
    from crawler.model.outcome import Outcome
    from crawler.ui.report import write_report

    body = png(8, 8, 3)
    with tempfile.TemporaryDirectory(prefix="crawler-micro-") as folder:
        out = Path(folder)
        (out / "h").mkdir()
        for n in range(20):
            (out / "h" / f"{n}.png").write_bytes(body)
        with (out / "manifest.jsonl").open("w", encoding="utf-8") as manifest:
            for n in range(lines):
                failed = n % 10 == 9
                outcome = Outcome(
                    url=f"http://h/{n}.png", status="failure" if failed else "success",
                    reason="HTTP 404" if failed else "", page=f"http://h/p{n // 50}",
                    worker="w", path=None if failed else f"h/{n}.png",
                    bytes=None if failed else len(body), sha256=None, content_type=None,
                    attempts=1, elapsed_s=0.01)
                manifest.write(outcome.to_json() + "\n")
        started = time.perf_counter()
        index = write_report(out)
        elapsed = time.perf_counter() - started
        size = index.stat().st_size
    return [f"report: write_report on a manifest of {lines} lines: {elapsed:.2f} s "
            f"({lines / elapsed:,.0f} lines/s), index.html {size / 1e6:.1f} MB"]


# ----- the command --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_queue-client"]:
        host, port, mode, batch, max_urls, seconds = argv[1:7]
        queue_client(host, int(port), mode, int(batch), int(max_urls), float(seconds))
        return 0
    if argv[:1] == ["_memory-child"]:
        memory_child(int(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", default="all",
                        choices=("all", "queue", "extract", "memory", "report"))
    parser.add_argument("--urls", type=int, default=20_000, help="queue: URLs per run")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="queue: longest run; extract: longest timed loop (at most 2 s)")
    parser.add_argument("--runs", type=int, default=3, help="queue: runs per mode")
    parser.add_argument("--memory-urls", type=int, default=MEMORY_URLS)
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, nproc {len(os.sched_getaffinity(0))}", flush=True)
    benches: dict[str, Callable[[], list[str]]] = {
        "queue": lambda: bench_queue(args.runs, args.urls, args.seconds),
        "extract": lambda: bench_extract(args.seconds),
        "memory": lambda: bench_memory(args.memory_urls),
        "report": bench_report,
    }
    for name, bench in benches.items():
        if args.which in ("all", name):
            print("\n".join(bench()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
