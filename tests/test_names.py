"""Real master and worker processes: every image URL keeps its own file, and the image
tree never meets the master's own files, whatever the URLs and hosts are called."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# Every name the master writes into the output folder, as host names: images from
# such hosts once went to OUT/HOST/..., into (or onto) the master's own files.
MASTER_NAMES = ["authkey", "results.log", "crawl.sqlite", "manifest.jsonl", "report.html",
                "summary.json", "index.html", "worker-1.log"]

# Run inside new mount and network namespaces: its own loopback, where port 80 is
# free, and its own /etc/hosts, where the names above are 127.0.0.1.
IN_NAMESPACES = r"""
import http.server, functools, socket, subprocess, sys, threading, time
hosts, site, out = sys.argv[1:4]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True, timeout=10)
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 80),
                                         functools.partial(Quiet, directory=site))
threading.Thread(target=server.serve_forever, daemon=True).start()
try:
    done = subprocess.run([sys.executable, "-m", "crawler", "master", "http://127.0.0.1/",
                           "--bind", "127.0.0.1:0", "--out", out, "--local-workers", "1",
                           "--quiet", "--ignore-robots"], capture_output=True, text=True,
                          timeout=60)
except subprocess.TimeoutExpired as exc:
    print("master did not finish within 60 s:", exc.stderr, file=sys.stderr)
    sys.exit(99)
print(done.stderr, file=sys.stderr)
sys.exit(done.returncode)
"""


def test_hosts_named_like_the_masters_files_are_stored_beside_them(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /etc/hosts and port 80")
    site, out, hosts = tmp_path / "site", tmp_path / "out", tmp_path / "hosts"
    site.mkdir()
    (site / "x.png").write_bytes(PNG)
    links = "".join(f'<img src="http://{name}/x.png">' for name in MASTER_NAMES)
    (site / "index.html").write_text(f"<html><body>{links}</body></html>")
    hosts.write_text("127.0.0.1 localhost " + " ".join(MASTER_NAMES) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}  # a key file, too
    done = subprocess.run(["unshare", "--mount", "--net", sys.executable, "-c", IN_NAMESPACES,
                           str(hosts), str(site), str(out)], capture_output=True, text=True,
                          timeout=90, env=env, check=False)
    assert done.returncode == 0, done.stderr
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(entry["url"] for entry in manifest) == sorted(
        f"http://{name}/x.png" for name in MASTER_NAMES)
    assert {entry["status"] for entry in manifest} == {"success"}, manifest
    for entry in manifest:
        assert (out / entry["path"]).read_bytes() == PNG
    assert (out / "authkey").is_file() and (out / "results.log").is_file()
    assert (out / "crawl.sqlite").is_file()


def test_a_file_in_place_of_the_image_folder_stops_the_crawl_and_fails_no_image(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Every image failed for good as "a name taken" and the crawl ended with status 0;
    once the file was moved away as told, the same command fetched none of them."""
    serve_images(site, ["/a/x.png", "/b/y.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "images").write_text("a file someone put where the image folder belongs")
    args = ("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
            "--local-workers", "1", "--quiet", "--ignore-robots")
    done = run_crawler(*args)
    assert done.returncode == 3, done.stderr
    assert "images is a file where a folder is needed" in done.stderr, done.stderr
    assert not (out / "manifest.jsonl").read_text()  # no image failed for the folder
    (out / "images").unlink()
    again = run_crawler(*args)
    assert again.returncode == 0, again.stderr
    statuses = {json.loads(line)["status"]
                for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert statuses == {"success"}


def test_a_name_taken_in_the_image_tree_fails_one_image_not_the_worker(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    serve_images(site, ["/taken/x.png", "/free/y.png"])
    out = tmp_path / "out"
    host_folder = out / "images" / "http" / site.url.removeprefix("http://").replace(":", "_")
    host_folder.mkdir(parents=True)
    (host_folder / "taken").write_text("a file someone put where a folder belongs")
    done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--local-workers", "1", "--quiet", "--ignore-robots")
    assert "exited with status" not in done.stderr, done.stderr
    by_path = {json.loads(line)["url"].removeprefix(site.url): json.loads(line)
               for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert by_path["/free/y.png"]["status"] == "success"
    taken = by_path["/taken/x.png"]
    assert taken["status"] == "failure" and "where a folder is needed" in taken["reason"]
    assert taken["attempts"] == 1, "a taken name is no reason to try again"
    assert (host_folder / "taken").read_text().startswith("a file someone put")


def test_an_image_whose_end_a_crash_lost_is_replaced_by_the_download(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """A power cut before the disk wrote all of a stored image out can leave its first
    pages and zeros after them. Its head is an image's, so it was kept as the URL's file,
    and the manifest called it a success: the download of the whole image was dropped."""
    bodies = serve_images(site, ["/a.png", "/b.png"])
    out = tmp_path / "out"
    host_folder = out / "images" / "http" / site.url.removeprefix("http://").replace(":", "_")
    host_folder.mkdir(parents=True)
    whole = bodies["/a.png"]
    (host_folder / "a.png").write_bytes(whole[:100] + bytes(len(whole) - 100))
    manifest = crawl(site, out, authkey)
    assert {entry["status"] for entry in manifest} == {"success"}, manifest
    for entry in manifest:
        stored = (out / entry["path"]).read_bytes()
        assert stored == bodies[entry["url"].removeprefix(site.url)], entry["url"]
        assert entry["sha256"] == hashlib.sha256(stored).hexdigest(), entry
