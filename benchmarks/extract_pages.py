"""Pages per second of ``crawler.parse.extract`` on folders of real and synthetic pages.

Offline and single-threaded: each page's bytes are read once, then ``extract``
runs over all of them ``--rounds`` times; the best round counts. Pages come
from the test pages, a synthetic benchmark site (``benchmarks/site.py``,
generated into a temporary folder) and any folders given on the command line::

    python benchmarks/extract_pages.py [--parser lxml|beautifulsoup] [FOLDER ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from crawler.parse.extract import extract

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: its modules beside it
from run import load_site_module  # noqa: E402

TESTS = Path(__file__).resolve().parent.parent / "tests"


def load(folder: Path, limit: int) -> list[tuple[str, bytes]]:
    paths = sorted(folder.rglob("*.html"))[:limit]
    return [(f"http://bench.example/{path.relative_to(folder).as_posix()}", path.read_bytes())
            for path in paths]


def pages_per_second(pages: list[tuple[str, bytes]], parser: str, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for url, body in pages:
            extract(body, url, parser=parser)
        best = min(best, time.perf_counter() - start)
    return len(pages) / best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--parser", default="lxml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1000, help="pages per folder at most")
    args = parser.parse_args(argv)
    site = load_site_module()

    with tempfile.TemporaryDirectory() as tmp:
        info = site.generate(Path(tmp), site.SiteParams(pages=200, images=5000))
        sets = {"tests/pages+site": [*load(TESTS / "pages", args.limit),
                                     *load(TESTS / "site", args.limit)],
                "synthetic site": load(info.root, args.limit)}
        for folder in args.folders:
            sets[str(folder)] = load(folder, args.limit)
        for name, pages in sets.items():
            size = sum(len(body) for _, body in pages) / max(1, len(pages)) / 1024
            rate = pages_per_second(pages, args.parser, args.rounds)
            print(f"{name}: {len(pages)} pages, {size:.0f} KiB average, "
                  f"{args.parser}: {rate:,.0f} pages/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
