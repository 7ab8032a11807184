"""A deterministic synthetic image site, served on 127.0.0.1: for the demo and the benchmarks.

Pages link to each other in a chain plus shortcuts, and reference their images
in all the ways a real site does (``src``, ``srcset``, lazy ``data-src``,
``<picture>``, CSS backgrounds, ``og:image``, links to image files), so a run
shows discovery as well as download. The site knows its own ground truth: the
set of image URLs a complete crawl must find.
"""

from __future__ import annotations

import random
import struct
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def png(width: int, height: int, seed: int, pad_to: int = 0) -> bytes:
    """A real PNG of a colour gradient; ``pad_to`` adds a private chunk to reach a size."""
    rng = random.Random(seed)
    r0, g0, b0 = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows += bytes(((r0 + x * 3) % 256, (g0 + y * 3) % 256, (b0 + x + y) % 256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    image = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    if pad_to > len(image) + 24:
        image += chunk(b"pdDa", rng.randbytes(pad_to - len(image) - 24))
    return image + chunk(b"IEND", b"")


@dataclass(frozen=True)
class Site:
    files: dict[str, tuple[str, bytes]]  # path -> (content type, body)
    images: frozenset[str]  # paths of every image a complete crawl finds
    pages: frozenset[str]


def build_site(pages: int = 12, images_per_page: int = 6, *, min_kb: int = 2, max_kb: int = 20,
               seed: int = 7) -> Site:
    """Build the site in memory; the same arguments always give the same bytes."""
    rng = random.Random(seed)
    files: dict[str, tuple[str, bytes]] = {}
    images: set[str] = set()
    page_paths = ["/"] + [f"/page/{n}.html" for n in range(1, pages)]
    styles = ("img", "srcset", "lazy", "picture", "css", "anchor")
    for n, path in enumerate(page_paths):
        tags: list[str] = []
        head = ""
        for i in range(images_per_page):
            number = n * images_per_page + i
            image_path = f"/images/{n}/img{number}.png"
            size = rng.randint(min_kb, max_kb) * 1024
            files[image_path] = ("image/png", png(8 + number % 24, 8 + number % 16, number, size))
            images.add(image_path)
            style = styles[i % len(styles)]
            if style == "img":
                tags.append(f'<img src="{image_path}" alt="image {number}">')
            elif style == "srcset":
                tags.append(f'<img srcset="{image_path} 1x" alt="image {number}">')
            elif style == "lazy":
                tags.append(f'<img data-src="{image_path}" class="lazy">')
            elif style == "picture":
                tags.append(f'<picture><source srcset="{image_path}" type="image/png">'
                            "<img alt=\"\"></picture>")
            elif style == "css":
                tags.append(f"<div style=\"background-image: url('{image_path}')\"></div>")
            else:
                tags.append(f'<a href="{image_path}">full size</a>')
        if n == 0 and images_per_page:
            head = '<meta property="og:image" content="/images/0/img0.png">'
        # The home page is a table of contents; every page links on to the next one.
        links = page_paths[1:] if n == 0 else [page_paths[(n + 1) % len(page_paths)], "/"]
        body = "\n".join(tags + [f'<a href="{link}">next</a>' for link in links])
        html = (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>Page {n}</title>{head}"
                f"</head><body><h1>Demo page {n}</h1>\n{body}\n</body></html>")
        files[path] = ("text/html; charset=utf-8", html.encode())
    files["/robots.txt"] = ("text/plain", b"User-agent: *\nDisallow: /private/\n")
    return Site(files, frozenset(images), frozenset(page_paths))


class _Handler(BaseHTTPRequestHandler):
    site: Site
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def do_GET(self) -> None:
        entry = self.site.files.get(self.path.split("?", 1)[0])
        if entry is None:
            body = b"not found"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
        else:
            kind, body = entry
            self.send_response(200)
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass  # the demo's own progress is what the user wants to see


class SiteServer:
    """Serve a :class:`Site` on 127.0.0.1 (an OS-chosen port) from a daemon thread."""

    def __init__(self, site: Site) -> None:
        handler = type("SiteHandler", (_Handler,), {"site": site})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> SiteServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
