"""The images a static site shows, walked from its files: the ground truth of a real site.

Independent of the crawler on purpose (lxml, a few regular expressions and the
WHATWG URL rules browsers follow, through ada-url; not ``crawler.parse.extract``),
so that a benchmark checks the crawler against it
rather than the crawler against itself::

    python benchmarks/truth.py ROOT [--start /] [--list]

From the start page it follows links (``<a href>``, ``<area href>``,
``<frame src>``, ``<iframe src>``) to the site's HTML files, breadth first,
and collects what a browser would show of each page:

* ``<img src>`` and ``<img srcset>``, ``<picture><source srcset>``,
  ``<input type=image src>``, SVG ``<image href>``/``xlink:href``, an ``<object data>``
  or ``<embed src>`` that is an image by its ``type`` or its file's extension;
* ``url()`` in ``style`` attributes and ``<style>`` blocks;
* ``url()`` and ``@import`` in linked stylesheets (``<link rel=stylesheet>``,
  not ``alternate stylesheet``: a browser does not apply it), recursively.

Fonts are not images: ``@font-face`` blocks and font files are left out, as
are ``data:`` URLs and ``url(#id)`` references. Only URLs on the site count;
an image whose file is missing (the page would show a broken image) is
counted as dangling and left out of the truth. Lazy ``data-*`` attributes,
``og:image`` and links to image files are not shown by a browser without
scripts, so they are not in the truth (the crawler may find more).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import ada_url
from lxml import etree, html  # type: ignore[import-untyped]

SITE = "http://site.invalid"  # pages are resolved against this origin, then cut back to paths
PAGE_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
FONT_SUFFIXES = frozenset({".woff", ".woff2", ".ttf", ".otf", ".eot"})
MAX_PAGES = 200_000  # a bound on the walk, far above any documentation site
MAX_CSS_DEPTH = 10  # @import chains deeper than this are not followed

_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_FONT_FACE = re.compile(r"@font-face\s*\{[^}]*\}", re.I)
_CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)\s]*))\s*\)""", re.I)
_CSS_IMPORT = re.compile(r"""@import\s+(?:url\(\s*)?["']?([^"')\s;]+)""", re.I)
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_IMAGE_SUFFIXES = (".svg", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".bmp", ".ico")


def _image_suffix(target: str) -> bool:
    """Whether a URL's path ends as an image file's name does (query and fragment aside)."""
    path = target.strip().split("#", 1)[0].split("?", 1)[0].lower()
    return path.endswith(_IMAGE_SUFFIXES)


@dataclass
class Truth:
    """What the walk found: pages and images as URL paths (percent-decoded), sorted."""

    pages: list[str]
    images: list[str]
    depth: int  # link hops from the start page to the farthest page
    forms: Counter[str] = field(default_factory=Counter)  # how each image was first seen
    dangling: list[str] = field(default_factory=list)  # image URLs on the site with no file
    off_site: list[str] = field(default_factory=list)  # image URLs on other hosts
    stylesheets: int = 0


def join(base: str, reference: str) -> str:
    """``reference`` resolved against ``base`` as a browser resolves it ("" when it is no
    URL at all).

    Not ``urllib.parse.urljoin``: it merges a run of slashes in a path, where a
    browser keeps it. The LibreOffice help links ``en-US//text/shared/...``; on
    that page its ``<base href="../../../">`` then leads to ``/en-US/media/...``,
    which is not there: a browser shows broken images, and urljoin showed the
    images of ``/media/...``.
    """
    try:
        return str(ada_url.join_url(base, reference))
    except ValueError:
        return ""


def path_of(url: str) -> str | None:
    """The decoded path of ``url`` when it is on the site (query and fragment dropped)."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != SITE:
        return None
    return unquote(parts.path) or "/"


def file_of(root: Path, path: str) -> Path | None:
    """The file that a static server gives for ``path`` (a folder: its index.html)."""
    target = root / path.lstrip("/")
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def srcset_urls(value: str) -> Iterator[str]:
    """The URLs of a ``srcset`` (each candidate is ``URL [descriptor]``, comma-separated)."""
    for candidate in value.split(","):
        words = candidate.split()
        if words:
            yield words[0]


def css_urls(text: str) -> tuple[list[str], list[str]]:
    """``url()`` references and ``@import`` targets of a stylesheet, fonts left out."""
    text = _FONT_FACE.sub("", _CSS_COMMENT.sub("", text))
    imports = [m.group(1) for m in _CSS_IMPORT.finditer(text)]
    urls = []
    for match in _CSS_URL.finditer(text):
        url = next(g for g in match.groups() if g is not None).strip()
        if url and not url.startswith(("data:", "#")) and url not in imports:
            urls.append(url)
    return urls, imports


class Walker:
    """One walk over the files under ``root``; ``run`` returns the Truth."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: dict[str, str] = {}  # path -> the form it was first seen in
        self.dangling: set[str] = set()
        self.off_site: set[str] = set()
        self.sheets: dict[str, list[tuple[str, str]]] = {}  # path -> its (URL, form) images

    def run(self, start: str, max_depth: int | None = None) -> Truth:
        first = path_of(join(SITE, start))
        if first is None or file_of(self.root, first) is None:
            raise FileNotFoundError(f"no start page {start!r} under {self.root}")
        depth_of = {first: 0}
        todo = deque([first])
        while todo and len(depth_of) < MAX_PAGES:
            page = todo.popleft()
            links = self.visit(page)
            if max_depth is not None and depth_of[page] >= max_depth:
                continue
            for link in links:
                if link not in depth_of:
                    depth_of[link] = depth_of[page] + 1
                    todo.append(link)
        return Truth(pages=sorted(depth_of), images=sorted(self.images),
                     depth=max(depth_of.values()), forms=Counter(self.images.values()),
                     dangling=sorted(self.dangling), off_site=sorted(self.off_site),
                     stylesheets=len(self.sheets))

    def visit(self, page: str) -> list[str]:
        """Record the images of ``page``; return the site pages it links to."""
        file = file_of(self.root, page)
        if file is None:
            return []
        try:
            tree = html.fromstring(file.read_bytes())
        except (etree.ParserError, ValueError):
            return []  # an empty or unparsable file shows nothing
        base = join(SITE, page)
        for href in tree.xpath("//base/@href")[:1]:
            base = join(base, href.strip()) or base  # a browser ignores one that is no URL
        for url, form in self.page_images(tree, base):
            self.add_image(url, form)
        links: list[str] = []
        for element, attribute in (("a", "href"), ("area", "href"), ("frame", "src"),
                                   ("iframe", "src")):
            for value in tree.xpath(f"//{element}/@{attribute}"):
                path = path_of(join(base, value.strip()))
                target = file_of(self.root, path) if path is not None else None
                if path is not None and target is not None and \
                        target.suffix.lower() in PAGE_SUFFIXES:
                    links.append(path)
        return links

    def page_images(self, tree: html.HtmlElement, base: str) -> Iterator[tuple[str, str]]:
        """Every (absolute URL, form) a browser shows on this page, stylesheets' included."""
        for element in tree.iter(etree.Element):
            tag = element.tag.rsplit("}", 1)[-1].lower() if isinstance(element.tag, str) else ""
            get = element.get
            found: list[tuple[str, str]] = []
            if tag == "img":
                if get("src"):
                    found.append((get("src"), "img src"))
                found += [(u, "img srcset") for u in srcset_urls(get("srcset") or "")]
            elif tag == "source" and get("srcset"):
                # Any ancestor: libxml2's HTML parser does not know <source> is empty, so a
                # second <source> comes out nested in the first.
                if next(element.iterancestors("picture"), None) is not None:
                    found += [(u, "picture source") for u in srcset_urls(get("srcset"))]
            elif tag == "input" and (get("type") or "").lower() == "image" and get("src"):
                found.append((get("src"), "input type=image"))
            elif tag == "image":
                # SVG 2: an href, even empty, hides the xlink:href of SVG 1.1.
                href = get("href")
                href = href if href is not None else (get(_XLINK_HREF) or get("xlink:href"))
                if href:
                    found.append((href, "svg image"))
            elif tag in ("object", "embed"):
                target = get("data" if tag == "object" else "src")
                if target and ((get("type") or "").strip().lower().startswith("image/")
                               or _image_suffix(target)):
                    found.append((target, f"{tag} image"))
            elif tag == "style" and element.text:
                urls, imports = css_urls(element.text)
                found += [(u, "<style> url()") for u in urls]
                for target in imports:
                    yield from self.read_sheet(join(base, target.strip()), 1)
            elif tag == "link" and get("href"):
                rel = (get("rel") or "").lower().split()
                if "stylesheet" in rel and "alternate" not in rel:
                    yield from self.read_sheet(join(base, get("href").strip()), 0)
            if get("style"):
                found += [(u, "style attribute url()") for u in css_urls(get("style"))[0]]
            yield from ((join(base, url.strip()), form) for url, form in found)

    def read_sheet(self, url: str, depth: int) -> list[tuple[str, str]]:
        """The absolute image URLs of the stylesheet at ``url`` and of what it imports."""
        path = path_of(url)
        if path is None or depth > MAX_CSS_DEPTH:
            return []
        if path in self.sheets:
            return self.sheets[path]
        self.sheets[path] = []  # an import cycle ends here
        file = file_of(self.root, path)
        if file is None:
            return []
        urls, imports = css_urls(file.read_text(encoding="utf-8", errors="replace"))
        found = [(join(url, u), "stylesheet url()" if depth == 0 else "@import url()")
                 for u in urls]
        for target in imports:
            found += self.read_sheet(join(url, target), depth + 1)
        self.sheets[path] = found
        return found

    def add_image(self, url: str, form: str) -> None:
        """Count ``url`` as shown: in the truth, dangling, off-site, or left out (a font)."""
        if url.startswith("data:"):
            return
        path = path_of(url)
        if path is None:
            if urlsplit(url).scheme in ("http", "https"):
                self.off_site.add(url)
            return
        if Path(path).suffix.lower() in FONT_SUFFIXES:
            return
        if file_of(self.root, path) is None:
            self.dangling.add(path)
            return
        self.images.setdefault(path, form)


def walk(root: Path, start: str = "/", max_depth: int | None = None) -> Truth:
    """The pages reachable from ``start`` under ``root`` and the images they show."""
    return Walker(root).run(start, max_depth)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder a static server serves")
    parser.add_argument("--start", default="/", help="the start page's path")
    parser.add_argument("--max-depth", type=int, default=None)
    parser.add_argument("--list", action="store_true", help="print every image path")
    args = parser.parse_args(argv)
    try:
        truth = walk(args.root, args.start, args.max_depth)
    except FileNotFoundError as exc:
        print(f"truth: {exc}", file=sys.stderr)
        return 2
    print(f"{len(truth.pages)} pages (depth {truth.depth}), {len(truth.images)} images, "
          f"{truth.stylesheets} stylesheets, {len(truth.dangling)} dangling, "
          f"{len(truth.off_site)} off-site")
    print("forms: " + ", ".join(f"{k} {v}" for k, v in truth.forms.most_common()))
    if args.list:
        print("\n".join(truth.images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
