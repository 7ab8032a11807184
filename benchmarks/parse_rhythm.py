"""What a page costs a parser process at a crawl's rhythm, against the same pages in a loop.

    python benchmarks/parse_rhythm.py [FOLDER] [--rounds 3] [--limit 1000]

In a crawl a page parser gets one page at a time down its pipe and sleeps
between pages; on a virtual machine whose idle cores halt, a process pays
again for each wake-up. This runs ``crawler.parse.extract`` over the same
pages (default: the GIMP manual from Debian's ``gimp-help-en``, else the
test pages) in four rhythms, in rotating rounds, and prints the median CPU per
page of each process:

* ``loop``: one process, page after page;
* ``loop, 0.5 ms sleeps``: the same with a pause between pages;
* ``PageParser, 1 page a message``: through the crawler's own parser pool, the
  next page sent when the answer is back (CPU of the child and of the caller);
* ``PageParser, 16 pages a message``: the same, as many pages to a message as the
  page loop sends at most (``PARSE_BATCH``), when that many wait for a parser.

Offline; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from crawler.master.pageloop import PARSE_BATCH
from crawler.parse.extract import extract
from crawler.parse.pool import PageParser

GIMP_MANUAL = Path("/usr/share/gimp/2.0/help/en")
TESTS = Path(__file__).resolve().parent.parent / "tests"
BATCH = PARSE_BATCH
SLEEP = 0.0005

Pages = list[tuple[str, bytes]]


def load(folder: Path, limit: int) -> Pages:
    paths = sorted(folder.rglob("*.html"))[:limit]
    return [(f"http://bench.example/{path.relative_to(folder).as_posix()}", path.read_bytes())
            for path in paths]


def process_cpu(pid: int) -> float:
    """CPU seconds another process's threads have run so far: the scheduler's count, in
    nanoseconds (/proc's clock ticks of 10 ms are too coarse for a few hundred pages).
    Read while the process waits for its next page, so the count is up to date."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text(encoding="ascii").split()[0])
    return total / 1e9


def in_loop(pages: Pages, pause: float) -> tuple[float, float | None]:
    started = time.process_time()
    for url, body in pages:
        if pause:
            time.sleep(pause)
        extract(body, url)
    return time.process_time() - started, None  # no caller: this process parses


def through_pool(pages: Pages, batch: int) -> tuple[float, float | None]:
    """The crawler's parser pool, ``batch`` pages a message (send_many, then receive_many,
    which waits for the answers), as the page loop hands them over."""
    pool = PageParser(processes=1)
    try:
        pool.extract(pages[0][1], pages[0][0])  # the child is forked and warm
        child = pool.pids[0]
        child_before, mine_before = process_cpu(child), time.process_time()
        for start in range(0, len(pages), batch):
            slot = pool.send_many([(body, url, {}) for url, body in pages[start:start + batch]])
            assert slot is not None, "its one child is free between batches"
            answers = pool.receive_many(slot)
            assert answers is not None and not any(isinstance(a, Exception) for a in answers)
        return process_cpu(child) - child_before, time.process_time() - mine_before
    finally:
        pool.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1000, help="pages at most")
    args = parser.parse_args(argv)
    folder = args.folder or (GIMP_MANUAL if GIMP_MANUAL.is_dir() else TESTS / "pages")
    pages = load(folder, args.limit)
    if not pages:
        parser.error(f"no .html pages under {folder}")
    rhythms: dict[str, Callable[[Pages], tuple[float, float | None]]] = {
        "loop": lambda p: in_loop(p, 0.0),
        f"loop, {SLEEP * 1000:g} ms sleeps": lambda p: in_loop(p, SLEEP),
        "PageParser, 1 page a message": lambda p: through_pool(p, 1),
        f"PageParser, {BATCH} pages a message": lambda p: through_pool(p, BATCH),
    }
    results: dict[str, list[tuple[float, float | None]]] = {name: [] for name in rhythms}
    for round_number in range(args.rounds):
        names = list(rhythms)
        shift = round_number % len(names)  # rotating: no rhythm always first
        for name in names[shift:] + names[:shift]:
            results[name].append(rhythms[name](pages))
    print(f"{folder}: {len(pages)} pages, medians of {args.rounds} rounds, CPU per page")
    print(f"  {'rhythm':32} {'parser ms':>10} {'caller ms':>10}")
    for name, rows in results.items():
        parse = statistics.median(row[0] for row in rows) / len(pages) * 1000
        callers = [row[1] for row in rows if row[1] is not None]
        caller = (f"{statistics.median(callers) / len(pages) * 1000:.3f}" if callers
                  else "-")
        print(f"  {name:32} {parse:10.3f} {caller:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
