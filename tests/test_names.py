"""Real master and worker processes: every image URL keeps its own file, and the image
tree never meets the master's own files, whatever the URLs and hosts are called."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .conftest import SITE, FixtureServer, run_crawler

PNG = (SITE / "images" / "red.png").read_bytes()

# URLs that the store once gave one name per group: the last download won.
LOOK_ALIKES = ["/i/a", "/i/a.png", "/i/a_b.png", "/i/a%3Fb.png", "/i/a:b.png", "/i/x.jpg",
               "/i/x.jpg.png", "/i//a.png"]


def serve_images(server: FixtureServer, paths: list[str], host: str = "") -> dict[str, bytes]:
    """A page linking ``paths`` on ``host`` (default: the server), each a PNG of its own."""
    bodies = {path: PNG + path.encode() for path in paths}  # trailing bytes: distinct files
    base = host or server.url
    links = "".join(f'<img src="{base}{path}">' for path in paths)
    page = f"<html><body>{links}</body></html>".encode()
    server.routes["/"] = lambda handler: handler.send_body(200, page, "text/html")
    for path, body in bodies.items():
        server.routes[path] = (lambda handler, body=body:
                               handler.send_body(200, body, "image/png"))
    return bodies


def crawl(server: FixtureServer, out: Path, authkey: str, *flags: str) -> list[dict]:
    del authkey  # the fixture put it in the environment
    done = run_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--local-workers", "1", "--quiet", "--ignore-robots", *flags)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_urls_that_looked_alike_are_each_stored_whole(site: FixtureServer, tmp_path: Path,
                                                      authkey: str) -> None:
    bodies = serve_images(site, LOOK_ALIKES)
    out = tmp_path / "out"
    manifest = crawl(site, out, authkey)
    assert {entry["status"] for entry in manifest} == {"success"}, manifest
    assert len(manifest) == len(LOOK_ALIKES)
    paths = [entry["path"] for entry in manifest]
    assert len(set(paths)) == len(paths), "one file per URL"
    for entry in manifest:
        stored = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == entry["sha256"], entry
        served = bodies[entry["url"].removeprefix(site.url)]
        assert stored == served, entry["url"]
