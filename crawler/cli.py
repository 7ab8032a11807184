"""The command line: arguments, wiring, and the one place errors become messages and exit codes.

Exit status: 0 the command did its job (a crawl that completed, even with
some failed images); 1 a runtime failure (master unreachable, authkey
refused); 2 bad usage or settings; 3 the output folder cannot be written;
4 the queue port cannot be bound; 120 what the command printed could not be
written (a full disk, a closed pipe); 130 interrupted (Ctrl-C or SIGTERM on
the master, after saving its state).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from crawler import __version__
from crawler.config import DEFAULT_PORT, Settings, load_settings, parse_address
from crawler.errors import CrawlerError, InvalidURL, UsageError
from crawler.master.authkey import Authkey, check_for_bind, load_authkey
from crawler.model.urls import normalize
from crawler.ui.progress import (
    TqdmLogHandler,
    WorkerLine,
    human_bytes,
    make_reporter,
    write_above_bars,
    write_out,
)

log = logging.getLogger("crawler")

EXIT_INTERRUPTED = 130
EXIT_OUTPUT_LOST = 120  # what Python exits with when it cannot flush stdout

# Flags that override one setting each: (flag, settings key, type, metavar, help).
SETTING_FLAGS: dict[str, list[tuple[str, str, Any, str, str]]] = {
    "master": [
        ("--depth", "crawl.depth", int, "N", "link hops to follow from the seeds (0: seeds only)"),
        ("--max-pages", "crawl.max_pages", int, "N", "stop after N pages (0: no limit)"),
        ("--max-images", "crawl.max_images", int, "N", "queue at most N images (0: no limit)"),
        ("--scope", "crawl.scope", str, "MODE",
         "which pages to crawl: host (seed hosts), domain (and subdomains), any"),
        ("--page-concurrency", "crawl.page_concurrency", int, "N", "pages fetched at once"),
        ("--user-agent", "crawl.user_agent", str, "TEXT", "User-Agent header"),
        ("--host-delay", "politeness.host_delay", float, "SEC",
         "seconds between two images handed out for one host, across all workers (and"
         " between two of its pages)"),
        ("--host-concurrency", "politeness.host_concurrency", int, "N",
         "images of one host in flight at once, across all workers"),
        ("--max-attempts", "download.max_attempts", int, "N",
         "tries per image and per page for transient failures"),
        ("--max-bytes", "download.max_bytes", int, "BYTES", "largest image accepted"),
        ("--lease-timeout", "queue.lease_timeout", float, "SEC",
         "seconds without news from a worker before its images go to others"),
        ("--bind", "queue.bind", str, "HOST:PORT",
         f"address of the queue (default 127.0.0.1:{DEFAULT_PORT}; 0.0.0.0:PORT for "
         "workers on other hosts)"),
        ("--out", "output.dir", str, "DIR", "output folder (default downloads/)"),
        ("--worker-threads", "worker.threads", int, "N", "download threads per local worker"),
    ],
    "worker": [
        ("--threads", "worker.threads", int, "N",
         "download threads, and downloads in flight on the fast lane"),
        ("--connect-wait", "worker.connect_wait", float, "SEC",
         "how long to wait for the master (at start and after losing it) before giving up"),
        ("--out", "output.dir", str, "DIR", "where to store images (default downloads/)"),
    ],
    "demo": [
        ("--out", "output.dir", str, "DIR", "output folder (default downloads/)"),
    ],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crawler",
        description="A distributed web-image crawler: a master finds image URLs and serves "
                    "them on a network queue; workers on any hosts download them.",
        epilog="Run 'crawler COMMAND --help' for each command. Start with: crawler demo")
    parser.add_argument("--version", action="version", version=f"crawler {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description)
        sub.add_argument("--settings", type=Path, metavar="FILE",
                         help="settings file (default: ./settings.toml when present)")
        noise = sub.add_mutually_exclusive_group()
        noise.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        noise.add_argument("-v", "--verbose", action="store_true", help="debug logs")
        for flag, key, kind, metavar, help_line in SETTING_FLAGS.get(name, []):
            sub.add_argument(flag, dest="set:" + key, type=kind, metavar=metavar,
                             help=f"{help_line} [{key}]")
        return sub

    master = command("master", "crawl a site and serve its images to workers",
                     "Crawl pages from the seed URLs, queue every image found for the workers, "
                     "and write results.log and manifest.jsonl into the output folder. Started "
                     "again on the same output folder, it resumes.")
    master.add_argument("seeds", nargs="+", metavar="URL", help="seed page URL(s), http or https")
    master.add_argument("--local-workers", type=int, default=0, metavar="N",
                        help="also start N workers on this machine")
    master.add_argument("--authkey-file", type=Path, metavar="FILE",
                        help="file holding the queue's authkey (default: $CRAWLER_AUTHKEY, "
                             "else a random key)")
    master.add_argument("--dry-run", action="store_true",
                        help="crawl pages and print the image URLs, download nothing")
    master.add_argument("--ignore-robots", action="store_true",
                        help="do not obey robots.txt [crawl.respect_robots = false]")

    worker = command("worker", "download images for a master",
                     "Connect to a master's queue, download the images it hands out into the "
                     "output folder, and report each one. Ends when the master says the crawl "
                     "is over.")
    worker.add_argument("master", metavar="HOST:PORT", help="the master's queue address")
    worker.add_argument("--authkey-file", type=Path, metavar="FILE",
                        help="file holding the master's authkey (default: $CRAWLER_AUTHKEY)")
    worker.add_argument("--no-fast-lane", action="store_true",
                        help="download everything with the download threads, none on the "
                             "fast lane [worker.fast_lane = false]")

    demo = command("demo", "crawl a built-in demo site (no internet needed)",
                   "Serve a small image site on 127.0.0.1, crawl it with a master and two "
                   "local workers, and show where the images went.")
    demo.add_argument("--workers", type=int, default=2, metavar="N", help="local workers")

    status = command("status", "show what a running master is doing",
                     "Ask a running master for its counts, in-flight work and workers.")
    status.add_argument("master", metavar="HOST:PORT", help="the master's queue address")
    status.add_argument("--authkey-file", type=Path, metavar="FILE",
                        help="file holding the master's authkey (default: $CRAWLER_AUTHKEY)")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")

    report = command("report", "write an HTML gallery of a finished crawl",
                     "Write OUTPUT_DIR/index.html: the images found, grouped by page, and the "
                     "failures with their reasons. Opens from disk, no server needed.")
    report.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR")
    return parser


def run() -> NoReturn:
    """The ``crawler`` command: ``main``, then an exit that skips the interpreter's teardown.

    By the time ``main`` returns, every file is closed and every result recorded;
    what is left is freeing the crawl's objects one by one, which took a master
    30 ms of CPU after a 5,000-image crawl, and joining idle threads.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except ValueError:
            pass  # closed by the command itself: nothing left to write
        except OSError:
            # Output lost (a full disk, a closed pipe): say so by the status, as
            # Python's own exit does, and keep a more specific one.
            code = code or EXIT_OUTPUT_LOST
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        settings = _settings(args)
        handler = {"master": _master, "worker": _worker, "demo": _demo,
                   "status": _status, "report": _report}[args.command]
        return handler(args, settings)
    except CrawlerError as exc:
        print(f"crawler: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("crawler: interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Now, not after the page threads' requests finish (the interpreter would join
        # them at exit): the journal is transactional, so nothing half-written remains.
        os._exit(EXIT_INTERRUPTED)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    handler = TqdmLogHandler() if sys.stderr.isatty() else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"
                                           if verbose else "%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("urllib3", "requests"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.settings)
    overrides = {dest[4:]: value for dest, value in vars(args).items()
                 if dest.startswith("set:") and value is not None}
    if getattr(args, "ignore_robots", False):
        overrides["crawl.respect_robots"] = False
    if getattr(args, "no_fast_lane", False):
        overrides["worker.fast_lane"] = False
    return settings.with_values(overrides) if overrides else settings


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise UsageError(f"bad master address: {exc}") from exc


def _seeds(urls: Sequence[str]) -> tuple[str, ...]:
    seeds = []
    for url in urls:
        try:
            seeds.append(normalize(url))
        except InvalidURL as exc:
            raise UsageError(f"seed {url!r}: {exc}") from exc
    return tuple(dict.fromkeys(seeds))


def run_master(settings: Settings, seeds: tuple[str, ...], authkey: Authkey, *,
               local_workers: int, dry_run: bool,
               quiet: bool) -> int:
    from crawler.master.master import Master, MasterOptions
    from crawler.parse.pool import PageParser

    bind = _address(settings.queue.bind)
    check_for_bind(authkey, bind[0])
    options = MasterOptions(seeds=seeds, out_dir=Path(settings.output.dir), bind=bind,
                            local_workers=local_workers,
                            worker_threads=settings.worker.threads,
                            worker_fast_lane=settings.worker.fast_lane, dry_run=dry_run)
    # Before the progress bars and the queue start their threads: it forks.
    parser = PageParser(parser=settings.crawl.parser,
                        processes=settings.crawl.parsers or None)
    master = Master(settings, options, authkey, make_reporter(quiet or dry_run), parser,
                    announce=(lambda text: None) if quiet or dry_run else _say)
    def on_signal(*_: object) -> None:
        if master.stopping:  # asked twice: stop waiting for a clean end
            raise KeyboardInterrupt
        master.stop()
        # os.write, not logging: a handler may run while the logging lock is held.
        os.write(2, b"crawler: stopping after the pages in flight; Ctrl-C again to quit now\n")

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        summary = master.run()
    except BaseException:
        parser.close(wait=0.0)  # a second Ctrl-C: not even the page in flight is awaited
        raise
    parser.close()
    if not dry_run and not quiet:
        print(format_summary(summary), file=sys.stderr)
    return EXIT_INTERRUPTED if summary.interrupted else 0


def _say(text: str) -> None:
    write_above_bars(text)  # above the progress bars, not through them


def format_summary(summary: Any) -> str:
    lines = [
        "crawl " + ("completed" if summary.completed else "interrupted: state saved; run the "
                    "same command again to resume"),
        f"  pages crawled   {summary.pages} ({summary.pages_failed} failed or skipped)",
        f"  images found    {summary.found}",
        f"  downloaded      {summary.succeeded} ({human_bytes(summary.bytes)})",
        f"  failed          {summary.failed}",
        f"  elapsed         {summary.elapsed_s:.1f} s, {summary.images_per_second:.1f} images/s",
    ]
    if summary.failure_reasons:
        lines.append("  top failure reasons:")
        lines += [f"    {count:6d}  {reason}" for reason, count in summary.failure_reasons]
    if summary.failing_hosts:
        lines.append("  hosts with most failures:")
        lines += [f"    {count:6d}  {host}" for host, count in summary.failing_hosts]
    out = summary.out_dir
    lines.append(f"  results in      {out}/results.log and {out}/manifest.jsonl")
    return "\n".join(lines)


def _master(args: argparse.Namespace, settings: Settings) -> int:
    if args.local_workers < 0:
        raise UsageError("--local-workers must be 0 or more")
    authkey = load_authkey(args.authkey_file, generate=True)
    return run_master(settings, _seeds(args.seeds), authkey, local_workers=args.local_workers,
                      dry_run=args.dry_run, quiet=args.quiet)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from crawler.board.manager import MasterClient
    from crawler.worker.worker import Worker, WorkerOptions

    authkey = load_authkey(args.authkey_file, generate=False)
    line = WorkerLine(quiet=args.quiet)
    worker = Worker(MasterClient(_address(args.master), authkey.key),
                    WorkerOptions(out_dir=Path(settings.output.dir),
                                  threads=settings.worker.threads,
                                  connect_wait=settings.worker.connect_wait,
                                  fast_lane=settings.worker.fast_lane),
                    on_progress=lambda stats: line.update(stats.done, stats.failed, stats.bytes))
    worker.install_signal_handlers()
    try:
        worker.run()
    finally:
        line.close()
    if worker.stop_reason:
        log.info("worker stopped (%s)", worker.stop_reason)
        return EXIT_INTERRUPTED if worker.stop_reason == "interrupted" else 0
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from crawler.demo.demo import run_demo

    if args.workers < 1:
        raise UsageError("--workers must be 1 or more: the demo downloads with local workers")
    return run_demo(settings, workers=args.workers, quiet=args.quiet, run_master=run_master)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from crawler.ui.status import fetch_status, format_status

    authkey = load_authkey(args.authkey_file, generate=False)
    status = fetch_status(_address(args.master), authkey.key)
    write_out(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from crawler.ui.report import write_report

    path = write_report(args.output_dir)
    write_out(f"wrote {path}")
    return 0
