"""The demo site: pictures worth a look, in several formats and shapes, always the same."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from crawler.demo.site import SHAPES, SiteServer, build_site, picture
from crawler.model.imagetype import dimensions, sniff


def test_images_are_real_pictures_of_several_formats_and_shapes() -> None:
    site = build_site(broken_links=True)
    kinds: Counter[str] = Counter()
    shapes = set()
    for path in site.images:
        content_type, body = site.files[path]
        kind = sniff(body)
        assert kind is not None and kind.mime == content_type, path
        assert path.endswith("." + kind.extension), path
        size = dimensions(body, kind)
        assert size in SHAPES, (path, size)  # a few hundred pixels, never a speck
        kinds[kind.name] += 1
        shapes.add(size)
    assert set(kinds) == {"png", "jpeg", "gif", "svg"}
    assert shapes == set(SHAPES)
    # Every picture is its own.
    bodies = [site.files[path][1] for path in site.images]
    assert len(set(bodies)) == len(bodies)


def test_the_same_number_is_the_same_picture() -> None:
    assert picture(5) == picture(5)
    assert picture(5) != picture(6)


def test_broken_links_point_at_what_is_not_there() -> None:
    site = build_site(broken_links=True)
    home = site.files["/"][1].decode()
    assert 'href="/page/gone.html"' in home and 'src="/images/gone.png"' in home
    assert "/page/gone.html" not in site.files and "/images/gone.png" not in site.files
    assert build_site().images == site.images


def test_a_client_that_resets_its_connection_prints_no_traceback(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C on ``crawler demo`` stops its workers, whose downloads in flight reset their
    connections: the demo's own server printed a traceback of ConnectionResetError per
    connection, over the summary."""
    site = build_site()
    threads = threading.active_count()
    with SiteServer(site) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a request: read on
            # Closed with a reset (no FIN), as a closed libcurl handle may leave it.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Served on: the reset connection's thread has ended by the time this is answered.
        with urllib.request.urlopen(server.base_url + "/robots.txt", timeout=5) as answer:
            assert answer.status == 200
        deadline = time.monotonic() + 5
        while threading.active_count() > threads + 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # the reset connection's thread, until it has said its piece
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err


def test_a_client_that_sends_half_a_request_and_stalls_is_hung_up_on() -> None:
    """The demo's server read a request with no deadline: a client that sent half of one
    (or a kept connection left idle) held a thread of it till the demo ended."""
    with SiteServer(build_site(), idle_deadline=1.0) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as stalled:
            stalled.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            # Others are served meanwhile, each on a thread of its own.
            with urllib.request.urlopen(server.base_url + "/robots.txt", timeout=5) as answer:
                assert answer.status == 200
            stalled.settimeout(4)
            try:
                said = stalled.recv(4096)
            except TimeoutError:
                pytest.fail("the server still waits for the rest of the request")
    assert said == b"", "hung up on, without an answer"


def _manifest(folder: Path, *urls: str) -> None:
    (folder / "manifest.jsonl").write_text("".join(json.dumps({"url": url}) + "\n"
                                                   for url in urls))


def test_a_demos_folder_is_known_by_its_journal_and_its_mark(tmp_path: Path) -> None:
    """What the demo may clear (its own crawl) and what it must not (any other)."""
    from crawler.demo.demo import _holds_another_crawl
    from crawler.master.journal import Journal
    from crawler.model.files import DEMO_MARK

    demo_seed, demo_image = "http://127.0.0.1:4321/", "http://127.0.0.1:4321/images/0/img0.png"
    assert not _holds_another_crawl(tmp_path)  # nothing of a crawl
    # No journal: results, a manifest or a broker crawl's mark are another crawl's,
    # unless the manifest is a demo's.
    (tmp_path / "results.log").write_text("http://example.com/a.png--->success\n")
    assert _holds_another_crawl(tmp_path)
    _manifest(tmp_path, demo_image)
    assert not _holds_another_crawl(tmp_path)
    (tmp_path / "broker-crawl.json").write_text("{}")
    assert _holds_another_crawl(tmp_path)
    (tmp_path / "broker-crawl.json").unlink()
    # A journal of the demo's seed, its writes still in the log: a demo killed (-9).
    killed = subprocess.run([sys.executable, "-c", (
        "import os, sys; from pathlib import Path; from crawler.master.journal import Journal;"
        f"Journal(Path(sys.argv[1])).add_seeds([{demo_seed!r}]); os._exit(0)"),
        str(tmp_path)], timeout=60, check=True)
    assert killed.returncode == 0 and (tmp_path / "crawl.sqlite-wal").stat().st_size
    (tmp_path / DEMO_MARK).write_text(demo_seed + "\n")
    assert not _holds_another_crawl(tmp_path)
    (tmp_path / DEMO_MARK).write_text("http://127.0.0.1:9999/\n")  # another demo's seed
    assert _holds_another_crawl(tmp_path)
    # A mark of an earlier version names no seed: the manifest tells.
    (tmp_path / DEMO_MARK).write_text("made by crawler demo, which clears this folder\n")
    assert not _holds_another_crawl(tmp_path)
    _manifest(tmp_path, demo_image, "http://example.com/a.png")
    assert _holds_another_crawl(tmp_path)
    # Another crawl's journal, whatever the mark says.
    other = tmp_path / "other"
    other.mkdir()
    journal = Journal(other)
    journal.add_seeds(["http://127.0.0.1:18301/"])
    journal.close()
    (other / DEMO_MARK).write_text(demo_seed + "\n")
    assert _holds_another_crawl(other)
    assert sorted(path.name for path in other.iterdir()) == [DEMO_MARK, "crawl.sqlite"]
