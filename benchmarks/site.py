"""A deterministic synthetic image site on disk, for the benchmarks.

``generate`` writes a folder that any static web server can serve::

    OUT/www/index.html          the home page: links to every other page
    OUT/www/p/NNNN.html         content pages
    OUT/www/img/GGG/*.png       real PNG files, 2-60 KB (median ~16 KB)
    OUT/www/robots.txt
    OUT/ground_truth.txt        every image path a complete crawl must find
    OUT/site.json               the parameters and a few statistics

Pages reference their images in every way ``crawler.parse.extract`` discovers:
``<img src>``, ``srcset`` with ``w`` and ``x`` descriptors, ``<picture><source
srcset>``, lazy ``data-src``/``data-srcset``/``data-original``, CSS ``url()`` in
``style`` attributes and in ``<style>`` blocks, ``og:image``, ``<link
rel=icon>``, ``<input type=image>``, SVG ``<image href>`` and ``<a href>`` to
image files. Every page is one hop from ``/`` (the index links to all of
them), and pages link on to their neighbours, so a crawl of depth 3 reaches
everything. The same arguments always give the same bytes.

Run it directly to make a site, or to serve one with Python's own server
(the fallback when nginx cannot be had)::

    python benchmarks/site.py generate OUT [--pages 200 --images 5000 --scale 1]
    python benchmarks/site.py serve OUT/www [--port 0]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from crawler.demo.site import png

GROUND_TRUTH = "ground_truth.txt"
SITE_JSON = "site.json"
WWW = "www"
IMAGES_PER_FOLDER = 250
NAME_STEMS = ("photo", "gallery-picture", "thumb", "product-shot-large", "banner", "x")

# A 1x1 transparent GIF: what lazy-loading pages put in ``src`` until the real one loads.
PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


@dataclass(frozen=True)
class SiteParams:
    """What to generate; ``scale`` multiplies pages and images."""

    pages: int = 200
    images: int = 5000
    min_kb: float = 2.0
    max_kb: float = 60.0
    median_kb: float = 16.0
    seed: int = 1
    scale: int = 1
    # When set (page-heavy shape): each page shows between these many images, drawn
    # at random, and ``images`` is ignored; the head forms (og:image, icon,
    # <style>) are left out, so every image is one a reader sees in the body.
    per_page: tuple[int, int] | None = None

    @property
    def total_pages(self) -> int:
        return max(2, self.pages * self.scale)

    @property
    def total_images(self) -> int:
        if self.per_page is not None:
            return sum(self.page_image_counts())
        return max(1, self.images * self.scale)

    def page_image_counts(self) -> list[int]:
        """Images per page, index first: even shares, or ``per_page``'s random draws."""
        if self.per_page is None:
            total, pages = self.total_images, self.total_pages
            return [total // pages + (1 if n < total % pages else 0) for n in range(pages)]
        low, high = self.per_page
        rng = random.Random(self.seed * 7919 + 1)  # its own stream: sizes stay as before
        return [rng.randint(low, high) for _ in range(self.total_pages)]


# The two shapes the benchmark runs, as keyword arguments of SiteParams.
SHAPES: dict[str, dict[str, Any]] = {
    "image-heavy": {"pages": 200, "images": 5000},  # 25 images a page, every form
    "page-heavy": {"pages": 2000, "per_page": (1, 5)},  # 1-5 images a page, about 6,000
}


@dataclass
class SiteInfo:
    """What was generated: where, how much, and which image forms were used."""

    root: Path  # the folder to serve
    ground_truth: list[str]  # image paths, sorted
    pages: list[str]  # page paths ("/" for the index)
    total_bytes: int
    size_min: int
    size_median: float
    size_max: int
    forms: dict[str, int] = field(default_factory=dict)
    generate_s: float = 0.0


def shape_params(shape: str, *, pages: int | None = None, images: int | None = None,
                 **others: Any) -> SiteParams:
    """The parameters of ``shape`` (a key of SHAPES), with figures given here overriding it."""
    chosen = dict(SHAPES[shape])
    if pages is not None:
        chosen["pages"] = pages
    if images is not None:
        chosen["images"] = images  # the page-heavy shape draws its own count
    return SiteParams(**chosen, **others)


def image_sizes(params: SiteParams, rng: random.Random) -> list[int]:
    """Log-normal sizes around the median, clamped to [min, max] (clamping keeps the median)."""
    lo, hi = int(params.min_kb * 1024), int(params.max_kb * 1024)
    mu, sigma = math.log(params.median_kb * 1024), 0.6
    return [min(hi, max(lo, int(rng.lognormvariate(mu, sigma))))
            for _ in range(params.total_images)]


def image_path(number: int) -> str:
    """The URL path of image ``number``: several folders, names of varying length."""
    stem = NAME_STEMS[number % len(NAME_STEMS)]
    return f"/img/{number // IMAGES_PER_FOLDER:03d}/{stem}-{number:06d}.png"


def page_path(number: int) -> str:
    return "/" if number == 0 else f"/p/{number:04d}.html"


# ----- the ways a page shows an image ---------------------------------------------
#
# Each form takes up to ``need`` image paths and returns the HTML for the body;
# forms that belong in <head> are handled by ``render_page`` itself.

def _img(p: Sequence[str]) -> str:
    return f'<img src="{p[0]}" alt="photo" width="320" height="240">'


def _srcset_w(p: Sequence[str]) -> str:
    widths = (320, 640, 1280)
    candidates = ", ".join(f"{path} {w}w" for path, w in zip(p, widths, strict=False))
    return (f'<img src="{p[0]}" srcset="{candidates}" '
            'sizes="(max-width: 600px) 100vw, 50vw" alt="responsive">')


def _srcset_x(p: Sequence[str]) -> str:
    candidates = ", ".join(f"{path} {n + 1}x" for n, path in enumerate(p))
    return f'<img srcset="{candidates}" alt="retina">'


def _picture(p: Sequence[str]) -> str:
    sources = ""
    if len(p) > 1:
        sources += (f'<source media="(min-width: 800px)" srcset="{p[1]} 1x'
                    + (f', {p[2]} 2x' if len(p) > 2 else "") + '" type="image/png">')
    if len(p) > 3:
        sources += f'<source srcset="{p[3]}">'
    return f'<picture>{sources}<img src="{p[0]}" alt="art"></picture>'


def _data_src(p: Sequence[str]) -> str:
    return f'<img class="lazy" src="{PLACEHOLDER}" data-src="{p[0]}" alt="lazy">'


def _data_srcset(p: Sequence[str]) -> str:
    candidates = ", ".join(f"{path} {480 * (n + 1)}w" for n, path in enumerate(p))
    return f'<img class="lazyload" data-srcset="{candidates}" alt="lazy set">'


def _data_original(p: Sequence[str]) -> str:
    return f'<div class="lazy-bg" data-original="{p[0]}"></div>'


def _css_attr(p: Sequence[str]) -> str:
    quoting = ("'{}'", "&quot;{}&quot;", "{}")[len(p[0]) % 3]  # the attribute is in "..."
    return (f'<div class="hero" style="background-image: url({quoting.format(p[0])}); '
            'background-size: cover"></div>')


def _input(p: Sequence[str]) -> str:
    return f'<form action="/search"><input type="image" src="{p[0]}" alt="search"></form>'


def _svg(p: Sequence[str]) -> str:
    attribute = "href" if len(p[0]) % 2 else "xlink:href"
    return (f'<svg width="64" height="64" viewBox="0 0 64 64"><image {attribute}="{p[0]}" '
            'width="64" height="64"/></svg>')


def _anchor(p: Sequence[str]) -> str:
    return f'<a href="{p[0]}" class="download">full size</a>'


BODY_FORMS: tuple[tuple[str, int, Callable[[Sequence[str]], str]], ...] = (
    ("img src", 1, _img),
    ("srcset w", 3, _srcset_w),
    ("data-src", 1, _data_src),
    ("srcset x", 2, _srcset_x),
    ("picture", 4, _picture),
    ("css style attr", 1, _css_attr),
    ("data-srcset", 2, _data_srcset),
    ("anchor", 1, _anchor),
    ("data-original", 1, _data_original),
    ("img src", 1, _img),
    ("input type=image", 1, _input),
    ("svg image", 1, _svg),
)


def render_page(number: int, images: Sequence[str], links: Sequence[str],
                forms: Counter[str], head_forms: bool = True) -> str:
    """The HTML of page ``number`` showing ``images`` and linking to ``links``."""
    todo = list(images)
    head: list[str] = []
    # <head>: og:image, an icon, and a <style> block with two backgrounds.
    if todo and head_forms:
        head.append(f'<meta property="og:image" content="{todo.pop(0)}">')
        forms["og:image"] += 1
    if todo and head_forms:
        head.append(f'<link rel="icon" type="image/png" href="{todo.pop(0)}">')
        forms["link rel=icon"] += 1
    rules = []
    for n in range(2):
        if todo and head_forms:
            rules.append(f'.bg-{n} {{ background: #eee url("{todo.pop(0)}") no-repeat; }}')
            forms["css <style>"] += 1
    if rules:
        head.append("<style>\n/* url(/not-an-image.png) in a comment is ignored */\n"
                    + "\n".join(rules) + "\n</style>")
    body: list[str] = []
    turn = number  # pages start at different forms, so every form gets used
    while todo:
        name, need, form = BODY_FORMS[turn % len(BODY_FORMS)]
        turn += 1
        taken, todo = todo[:need], todo[need:]
        body.append(form(taken))
        forms[name] += len(taken)
    nav = "\n".join(f'<li><a href="{link}">page {link}</a></li>' for link in links)
    title = "Index" if number == 0 else f"Page {number}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title>\n" + "\n".join(head) + "\n</head>\n<body>\n"
            f'<header><h1>{title}</h1><div class="bg-0 bg-1"></div></header>\n'
            "<main>\n" + "\n".join(body) + "\n</main>\n"
            f"<nav><ul>\n{nav}\n</ul></nav>\n</body></html>\n")


def generate(out: Path, params: SiteParams) -> SiteInfo:
    """Write the site into ``out`` (see the module docstring); returns what was written."""
    started = time.perf_counter()
    rng = random.Random(params.seed)
    root = out / WWW
    root.mkdir(parents=True, exist_ok=True)
    sizes = image_sizes(params, rng)
    paths = [image_path(n) for n in range(params.total_images)]
    for folder in sorted({path.rsplit("/", 1)[0] for path in paths}):
        (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
    total = 0
    for n, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        data = png(8 + n % 25, 8 + (n * 7) % 19, params.seed * 1_000_003 + n, pad_to=size)
        (root / path.lstrip("/")).write_bytes(data)
        total += len(data)

    page_count = params.total_pages
    pages = [page_path(n) for n in range(page_count)]
    # Images go to pages in a shuffled order, so a page's images span folders.
    order = list(range(len(paths)))
    rng.shuffle(order)
    per_page: list[list[str]] = []
    taken = 0
    for count in params.page_image_counts():
        per_page.append([paths[number] for number in order[taken:taken + count]])
        taken += count
    (root / "p").mkdir(exist_ok=True)
    forms: Counter[str] = Counter()
    for n in range(page_count):
        if n == 0:
            links = pages[1:]  # the table of contents
        else:
            links = ["/", pages[n - 1] if n > 1 else "/", pages[(n + 1) % page_count]]
        html = render_page(n, per_page[n], links, forms, head_forms=params.per_page is None)
        target = root / "index.html" if n == 0 else root / pages[n].lstrip("/")
        target.write_text(html, encoding="utf-8")
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n", encoding="utf-8")

    truth = sorted(paths)
    (out / GROUND_TRUTH).write_text("\n".join(truth) + "\n", encoding="utf-8")
    info = SiteInfo(root=root, ground_truth=truth, pages=pages, total_bytes=total,
                    size_min=min(sizes), size_median=statistics.median(sizes),
                    size_max=max(sizes), forms=dict(sorted(forms.items())),
                    generate_s=time.perf_counter() - started)
    meta = {"params": asdict(params), "pages": len(pages), "images": len(truth),
            "total_bytes": total, "size_min": info.size_min, "size_median": info.size_median,
            "size_max": info.size_max, "forms": info.forms}
    (out / SITE_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return info


def verify(info: SiteInfo, base: str = "http://127.0.0.1:8080") -> tuple[int, list[str]]:
    """Run ``crawler.parse.extract`` over every page offline.

    Returns how many ground-truth images it finds and the paths it misses:
    a check that the site exercises discovery, not a benchmark.
    """
    from crawler.parse.extract import extract

    found: set[str] = set()
    for path in info.pages:
        file = info.root / ("index.html" if path == "/" else path.lstrip("/"))
        result = extract(file.read_bytes(), base + path)
        found.update(url.removeprefix(base) for url in result.images)
    missing = [path for path in info.ground_truth if path not in found]
    return len(info.ground_truth) - len(missing), missing


# ----- the fallback server -----------------------------------------------------------

class _QuietHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx does
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass


def serve(root: Path, port: int = 0, max_seconds: float = 7200.0) -> None:
    """Serve ``root`` on 127.0.0.1: prints ``PORT n`` once listening, stops after a while."""
    handler = partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    print(f"PORT {httpd.server_address[1]}", flush=True)
    deadline = time.monotonic() + max_seconds
    httpd.timeout = 1.0
    with httpd:
        while time.monotonic() < deadline:
            httpd.handle_request()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a site into OUT")
    gen.add_argument("out", type=Path)
    gen.add_argument("--shape", choices=sorted(SHAPES), default="image-heavy",
                     help="image-heavy: 200 pages x 25 images; page-heavy: 2,000 pages x 1-5 "
                          "(--pages and --images override the shape's figures)")
    defaults = SiteParams()
    gen.add_argument("--pages", type=int, default=None)
    gen.add_argument("--images", type=int, default=None, help="total (image-heavy shape)")
    gen.add_argument("--min-kb", type=float, default=defaults.min_kb)
    gen.add_argument("--max-kb", type=float, default=defaults.max_kb)
    gen.add_argument("--median-kb", type=float, default=defaults.median_kb)
    gen.add_argument("--seed", type=int, default=defaults.seed)
    gen.add_argument("--scale", type=int, default=1, help="multiply pages and images")
    gen.add_argument("--verify", action="store_true",
                     help="check offline that crawler.parse.extract finds every image")
    srv = commands.add_parser("serve", help="serve a folder on 127.0.0.1 (fallback server)")
    srv.add_argument("root", type=Path)
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--max-seconds", type=float, default=7200.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.root, args.port, args.max_seconds)
        return 0
    params = shape_params(args.shape, pages=args.pages, images=args.images, min_kb=args.min_kb,
                          max_kb=args.max_kb, median_kb=args.median_kb, seed=args.seed,
                          scale=args.scale)
    info = generate(args.out, params)
    print(f"{len(info.pages)} pages, {len(info.ground_truth)} images, "
          f"{info.total_bytes / 1e6:.1f} MB (sizes {info.size_min}..{info.size_max} B, "
          f"median {info.size_median:.0f} B) in {info.root} ({info.generate_s:.1f} s)")
    print("image forms: " + ", ".join(f"{k} {v}" for k, v in info.forms.items()))
    if args.verify:
        found, missing = verify(info)
        print(f"verify: crawler.parse.extract finds {found}/{len(info.ground_truth)} images offline"
              + (f"; missing e.g. {missing[:5]}" if missing else ""))
        return 1 if missing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
