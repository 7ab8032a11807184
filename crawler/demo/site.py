"""A deterministic synthetic image site, served on 127.0.0.1: for the demo and the tests.

Pages link to each other in a chain plus shortcuts, and reference their images
in all the ways a real site does (``src``, ``srcset``, lazy ``data-src``,
``<picture>``, CSS backgrounds, ``og:image``, links to image files), so a run
shows discovery as well as download. The images are pictures worth a look
(landscapes, planets, geometric prints) in PNG, JPEG, GIF and SVG, of a few
hundred pixels and several shapes, drawn when the site is built. The site
knows its own ground truth: the set of image URLs a complete crawl must find.
"""

from __future__ import annotations

import random
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from crawler.demo.encode import encode_gif, encode_jpeg, encode_png
from crawler.demo.pictures import SCENES, Canvas, geometric, palette, svg_print


def png(width: int, height: int, seed: int, pad_to: int = 0) -> bytes:
    """A real PNG of a colour gradient; ``pad_to`` adds a private chunk to reach a size."""
    rng = random.Random(seed)
    r0, g0, b0 = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    rows = [b"".join(bytes(((r0 + x * 3) % 256, (g0 + y * 3) % 256, (b0 + x + y) % 256))
                     for x in range(width)) for y in range(height)]
    return encode_png(width, height, rows, pad_to=pad_to, padding=rng.randbytes(max(0, pad_to)))


SHAPES = ((320, 200), (200, 296), (256, 256), (480, 160), (240, 240), (160, 240))
"""Picture sizes, landscape to portrait; multiples of 8, as the JPEG writer needs."""

FORMATS = ("png", "jpg", "gif", "png", "svg", "png")
TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "svg": "image/svg+xml"}
# Seconds the server waits on a connection for a request's next bytes (a kept one
# idle, a request half sent): past it, it hangs up and that connection's thread ends.
IDLE_DEADLINE = 30.0


def picture(number: int, pad_to: int = 0) -> tuple[str, bytes]:
    """Picture ``number`` of the site: its extension and its bytes (a PNG padded to ``pad_to``).

    The format and the shape go round in cycles of different lengths, so
    every format comes in every shape.
    """
    rng = random.Random(number)
    width, height = SHAPES[number % len(SHAPES)]
    extension = FORMATS[(number // len(SHAPES) + number) % len(FORMATS)]
    if extension == "svg":
        return extension, svg_print(width, height, rng)
    if extension == "gif":
        colours = palette(rng)
        canvas = Canvas(width, height, b"\x00", depth=1)
        geometric(canvas, rng, [bytes([n]) for n in range(len(colours))])
        return extension, encode_gif(width, height, canvas.rows, colours)
    canvas = Canvas(width, height, b"\x00\x00\x00")
    SCENES[number % len(SCENES)](canvas, rng)
    if extension == "jpg":
        return extension, encode_jpeg(width, height, canvas.rows)
    return extension, encode_png(width, height, canvas.rows, pad_to=pad_to,
                                 padding=rng.randbytes(max(0, pad_to)))


@dataclass(frozen=True)
class Site:
    files: dict[str, tuple[str, bytes]]  # path -> (content type, body)
    images: frozenset[str]  # paths of every image a complete crawl finds
    pages: frozenset[str]


def build_site(pages: int = 12, images_per_page: int = 6, *, min_kb: int = 2, max_kb: int = 20,
               seed: int = 7, broken_links: bool = False) -> Site:
    """Build the site in memory; the same arguments always give the same bytes.

    A PNG smaller than its size drawn from ``min_kb`` to ``max_kb`` is padded to it.
    ``broken_links`` adds, on the home page, a link to a page and an image that
    are not there (404), so a crawl shows its failures too; neither is in
    ``images`` or ``pages``.
    """
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
            extension, body = picture(number, rng.randint(min_kb, max_kb) * 1024)
            image_path = f"/images/{n}/img{number}.{extension}"
            files[image_path] = (TYPES[extension], body)
            images.add(image_path)
            style = styles[i % len(styles)]
            if style == "img":
                tags.append(f'<img src="{image_path}" alt="image {number}">')
            elif style == "srcset":
                tags.append(f'<img srcset="{image_path} 1x" alt="image {number}">')
            elif style == "lazy":
                tags.append(f'<img data-src="{image_path}" class="lazy">')
            elif style == "picture":
                tags.append(f'<picture><source srcset="{image_path}" type="{TYPES[extension]}">'
                            "<img alt=\"\"></picture>")
            elif style == "css":
                tags.append(f"<div style=\"background-image: url('{image_path}')\"></div>")
            else:
                tags.append(f'<a href="{image_path}">full size</a>')
            if n == 0 and i == 0:
                head = f'<meta property="og:image" content="{image_path}">'
        # The home page is a table of contents; every page links on to the next one.
        links = page_paths[1:] if n == 0 else [page_paths[(n + 1) % len(page_paths)], "/"]
        if n == 0 and broken_links:
            links.append("/page/gone.html")
            tags.append('<img src="/images/gone.png" alt="a picture no longer there">')
        content = "\n".join(tags + [f'<a href="{link}">next</a>' for link in links])
        html = (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>Page {n}</title>{head}"
                f"</head><body><h1>Demo page {n}</h1>\n{content}\n</body></html>")
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


class _QuietServer(ThreadingHTTPServer):
    """A server that says nothing of a client gone mid-request: a stopped crawl's workers
    reset the connections of their downloads in flight (Ctrl-C on the demo)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # reset, broken pipe, aborted
            return
        super().handle_error(request, client_address)


class SiteServer:
    """Serve a :class:`Site` on 127.0.0.1 (an OS-chosen port) from a daemon thread."""

    def __init__(self, site: Site, idle_deadline: float = IDLE_DEADLINE) -> None:
        # ``timeout``: StreamRequestHandler's deadline on each read of a connection.
        handler = type("SiteHandler", (_Handler,), {"site": site, "timeout": idle_deadline})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> SiteServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
