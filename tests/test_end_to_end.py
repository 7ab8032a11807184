"""Real master and worker processes over real TCP against the fixture site."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crawler.cli import EXIT_NOTHING_STORED
from crawler.demo.site import build_site, png
from crawler.model.outcome import MAX_REASON_CHARS

from .conftest import (
    SITE,
    FixtureHandler,
    FixtureServer,
    crawl_with_two_workers,
    crawler_command,
    finish,
    free_port,
    manifest_lines,
    run_crawler,
    serve_routes,
    site_images,
    start_crawler,
    stop,
    wait_for_output,
    wait_for_queue_address,
)

CLASSIC = Path(__file__).parent / "classic_worker.py"

# Every image the fixture site shows within depth 3, robots.txt obeyed (/private/ is not).
EXPECTED_OK = {
    "/images/og.png", "/icons/favicon.gif", "/images/red.png", "/images/green.png",
    "/images/blue.png", "/images/lazy.png", "/images/hero.png", "/images/banner.png",
    "/images/css-bg.png", "/photos/cat.jpg", "/images/thumb1.png", "/images/thumb2.png",
    "/icons/star.gif",
}
EXPECTED_FAILED = {"/images/missing.png": "HTTP 404"}


def read_manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


IMAGE_SUFFIXES = (".png", ".jpg", ".gif")


def image_files(folder: Path) -> set[Path]:
    """Image files under ``folder``, relative to it."""
    return {p.relative_to(folder) for p in folder.rglob("*")
            if p.is_file() and p.suffix in IMAGE_SUFFIXES}


def check_results(master_out: Path, base: str,
                  worker_outs: list[Path] | None = None) -> list[dict]:
    """results.log and manifest.jsonl agree with each other, the site and the stored files.

    ``worker_outs`` are the folders the workers stored into (the master's own
    by default); each image is stored whole in exactly one of them.
    """
    worker_outs = worker_outs or [master_out]
    manifest = read_manifest(master_out)
    by_url = {entry["url"]: entry for entry in manifest}
    assert len(by_url) == len(manifest), "one manifest line per image URL"
    assert set(by_url) == {base + p for p in EXPECTED_OK | set(EXPECTED_FAILED)}
    lines = (master_out / "results.log").read_text().splitlines()
    assert len(lines) == len(manifest)
    originals = site_images()
    stored_in = {out: image_files(out) for out in worker_outs}
    for line in lines:
        url, _, verdict = line.partition("--->")
        entry = by_url[url]
        path = url[len(base):]
        if path in EXPECTED_OK:
            assert verdict == "success"
            assert entry["status"] == "success" and entry["reason"] == ""
            relative = Path(entry["path"])
            holders = [out for out, files in stored_in.items() if relative in files]
            assert len(holders) == 1, f"{relative} is stored in {holders}, not in one folder"
            data = (holders[0] / relative).read_bytes()
            assert data == originals[path], f"{holders[0] / relative} differs from {path}"
            assert entry["bytes"] == len(data)
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert entry["attempts"] == 1
            assert entry["worker"] and entry["page"].startswith(base)
            assert entry["content_type"].startswith("image/")
            assert entry["elapsed_s"] >= 0
        else:
            assert verdict == f"failure: {EXPECTED_FAILED[path]}"
            assert entry["status"] == "failure" and entry["reason"] == EXPECTED_FAILED[path]
    # Each folder holds only images of the manifest (so none twice under two names),
    # and together they hold every success.
    expected = {Path(by_url[base + p]["path"]) for p in EXPECTED_OK}
    for out, files in stored_in.items():
        assert files <= expected, f"{out} holds files the manifest does not name"
        assert not [p for p in out.glob(".partial/**/*") if p.is_file()], \
            f"{out} has a partial file left behind"
    assert sum(len(files) for files in stored_in.values()) == len(expected)
    assert set().union(*stored_in.values()) == expected
    if master_out not in worker_outs:
        assert not image_files(master_out), "the master downloads nothing itself"
    return manifest


def test_master_and_two_worker_processes(site: FixtureServer, tmp_path: Path,
                                         authkey: str) -> None:
    out = tmp_path / "out"
    master_err = crawl_with_two_workers(site, tmp_path, threads=3)
    manifest = check_results(out, site.url)
    assert len({entry["worker"] for entry in manifest if entry["worker"]}) == 2
    assert "/private/secret.html" not in site.paths()
    assert "crawl completed" in master_err


def test_local_workers_do_the_whole_job(site: FixtureServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--local-workers", "2", "--out", str(out),
                         "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_results(out, site.url)
    assert len(site.paths()) == len(set(site.paths())), "no URL was fetched twice"


def test_a_finished_crawl_leaves_no_empty_folder_behind(site: FixtureServer,
                                                         tmp_path: Path) -> None:
    """Two workers on one folder: the one that ends first removes no folder the other
    writes into, and the last leaves neither .partial/tNN, where partial files were
    written, nor .partial itself (made again at the next start)."""
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--local-workers", "2", "--out", str(out),
                         "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_results(out, site.url)
    empty = [folder for folder, subfolders, files in os.walk(out)
             if not subfolders and not files]
    assert empty == [], "empty folders are left"
    assert not (out / ".partial").exists()


def test_a_worker_started_as_the_master_says_does_the_job(site: FixtureServer,
                                                        tmp_path: Path) -> None:
    """No key given: the master's printed command for workers must be enough."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", "out",
                           cwd=tmp_path, env=env)  # a relative folder: the command says where
    try:
        hint = wait_for_output(master, r"workers on this host: (crawler worker .*  # a new key)")
        key_file = out.resolve() / "authkey"
        assert hint.group(1).endswith(
            f"--out {out.resolve()} --authkey-file {key_file}  # a new key")
        assert key_file.stat().st_mode & 0o777 == 0o600
        # As printed, from another folder: it stores where the master records.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        # The line as printed, pasted into a shell: its note is a comment.
        worker = run_crawler(*shlex.split(hint.group(1), comments=True)[1:], cwd=elsewhere,
                             env=env)
        assert worker.returncode == 0, worker.stderr
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0, err
    check_results(out, site.url)


def test_a_binary_key_file_reaches_local_workers(site: FixtureServer, tmp_path: Path) -> None:
    """A key of random bytes (a NUL among them) is no text for the workers' environment:
    they read the master's key file instead."""
    key_file = tmp_path / "key"
    key_file.write_bytes(bytes(range(256)) * 2)
    key_file.chmod(0o600)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    result = run_crawler("master", site.url + "/", "--authkey-file", str(key_file),
                         "--local-workers", "1", "--out", str(out), "--bind", "127.0.0.1:0",
                         "--quiet", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    check_results(out, site.url)


def crawl_by_the_tutorial_worker(seed: str, tmp_path: Path) -> tuple[Path, str]:
    """A master at ``seed`` into ``tmp_path/out``, its images downloaded by the classic
    tutorial worker alone, both ending 0; returns the output folder and what the master
    said on standard error."""
    out = tmp_path / "out"
    master = start_crawler("master", seed, "--bind", "127.0.0.1:0", "--out", str(out),
                           cwd=tmp_path)
    try:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        classic = subprocess.run([sys.executable, str(CLASSIC), host, port], text=True,
                                 capture_output=True, timeout=60, check=False,
                                 env=dict(os.environ))
        assert classic.returncode == 0, classic.stderr
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == 0, err
    return out, err


def test_classic_worker_serves_a_real_crawl(site: FixtureServer, tmp_path: Path,
                                            authkey: str) -> None:
    out, err = crawl_by_the_tutorial_worker(site.url + "/", tmp_path)
    lines = (out / "results.log").read_text().splitlines()
    assert sorted(lines) == sorted(
        [f"{site.url}{p}--->success" for p in EXPECTED_OK]
        + [f"{site.url}{p}--->failure: HTTP Error 404: Not Found" for p in EXPECTED_FAILED])
    entry = read_manifest(out)[0]
    assert entry["worker"] == "classic"
    # Its workers are counted as ours, who say hello, are: "workers 0 at most" alone said
    # that no worker came, while the tutorial worker did the whole crawl.
    last = [line for line in err.splitlines() if " progress: " in line][-1]
    assert last.endswith(", workers 0 at most + tutorial"), last


def test_a_tutorial_workers_passing_failure_is_tried_again(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A tutorial worker's "failure: HTTP Error 503: Service Unavailable" was final: the
    image was tried neither again nor by the next run, where one of our workers' is."""
    server = make_server()
    site = build_site(pages=1, images_per_page=4, min_kb=1, max_kb=2)
    serve_routes(server, site.files, fail_once=503)
    (tmp_path / "settings.toml").write_text("[download]\nbackoff_base = 0.05\n")
    entries = manifest_lines(crawl_by_the_tutorial_worker(server.url + "/", tmp_path)[0])
    assert len(entries) == 4 and {(e["status"], e["attempts"]) for e in entries} == {
        ("success", 2)}, entries


def test_a_tutorial_workers_reason_reaches_no_control_character_to_a_file_or_terminal(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """A tutorial worker's reason is often an exception's text, which may quote a server's
    bytes: its escape sequences went raw into results.log and, in the summary's top
    failure reasons, to the terminal."""
    out = tmp_path / "out"
    reason = "bad header \x1b[31mred\x00\x07\u202eevil"
    err = _crawl_failed_by_a_tutorial_worker(site, tmp_path, reason)
    shown = "bad header \\x1b[31mred\\x00\\x07\\u202eevil"
    assert re.search(rf"^ +\d+  {re.escape(shown)}$", err, re.MULTILINE), err  # top reasons
    written = (out / "results.log").read_text()
    assert written.count(f"--->failure: {shown}\n") == len(written.splitlines()) > 0, written
    for text in (err, written, (out / "manifest.jsonl").read_text()):
        assert not any(char in text for char in "\x1b\x00\x07\u202e"), text


def test_a_long_reason_of_control_characters_is_cut_to_its_length_between_escapes(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """Escaped, a reason of the longest length a report may have grew up to ten times as
    long in results.log, and a cut after escaping could leave half an escape."""
    out = tmp_path / "out"
    _crawl_failed_by_a_tutorial_worker(site, tmp_path, "x" + "\x00" * (MAX_REASON_CHARS + 100))
    prefix = "--->failure: "
    for line in (out / "results.log").read_text().splitlines():
        reason = line[line.index(prefix) + len(prefix):]
        assert reason == "x" + "\\x00" * ((MAX_REASON_CHARS - 1) // 4), line[:300]
    for entry in manifest_lines(out):
        assert len(entry["reason"]) <= MAX_REASON_CHARS


def _crawl_failed_by_a_tutorial_worker(site: FixtureServer, tmp_path: Path,
                                       reason: str) -> str:
    """A crawl of the site's seed page whose images a tutorial worker fails with
    ``reason``, into ``tmp_path/out``; the master's stderr."""
    out = tmp_path / "out"
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                           "--depth", "0", cwd=tmp_path)
    try:
        host, port = wait_for_queue_address(master).rsplit(":", 1)
        failing = textwrap.dedent(f"""
            import os, queue
            from multiprocessing.managers import BaseManager
            class QueueManager(BaseManager):
                pass
            QueueManager.register("get_task_queue")
            QueueManager.register("get_result_queue")
            m = QueueManager(address=("{host}", {port}),
                             authkey=os.environ["CRAWLER_AUTHKEY"].encode())
            m.connect()
            task, result = m.get_task_queue(), m.get_result_queue()
            while True:
                try:
                    url = task.get(timeout=3)
                except queue.Empty:
                    break
                result.put("%s--->failure: %s" % (url, {reason!r}))
        """)
        tutorial = subprocess.run([sys.executable, "-c", failing], capture_output=True,
                                  text=True, timeout=60, env=dict(os.environ), check=False)
        assert tutorial.returncode == 0, tutorial.stderr
        err = finish(master, 60)
    finally:
        stop(master)
    assert master.returncode == EXIT_NOTHING_STORED, err  # every image failed
    return err


def test_a_demo_leaves_the_files_of_one_running_in_its_folder_alone(tmp_path: Path) -> None:
    """Each demo starts from a clean folder; not while another master holds it."""
    from crawler.master.folderlock import FolderLock

    demo = tmp_path / "demo"
    stored = demo / "images" / "http" / "127.0.0.1_1" / "a.png"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"the running demo's image")
    (demo / "results.log").write_text("the running demo's results\n")
    running = FolderLock(demo)
    try:
        result = subprocess.run(crawler_command("demo", "--out", str(tmp_path)), cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, check=False)
    finally:
        running.release()
    assert result.returncode == 2, result.stderr
    assert "another master is crawling into" in result.stderr
    assert stored.is_file() and (demo / "results.log").is_file()


def test_a_demo_refused_for_its_request_settings_leaves_nothing_in_its_folder(
        tmp_path: Path) -> None:
    """As a master refused as it starts: its key file (OUT/demo/authkey), the folder's
    lock and the folders were left behind by a demo whose settings name a CA bundle that
    holds no certificate."""
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    (tmp_path / "ca.toml").write_text('[http]\nca_bundle = "not-a-ca.pem"\n')
    out = tmp_path / "new" / "out"
    result = subprocess.run(crawler_command("demo", "--out", str(out), "--settings",
                                            str(tmp_path / "ca.toml")),
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"crawler: error: {tmp_path / 'ca.toml'}: http.ca_bundle: "
                             f"{tmp_path / 'not-a-ca.pem'} holds no PEM certificate\n")
    assert not (tmp_path / "new").exists(), sorted((tmp_path / "new").rglob("*"))


def test_the_demo_goes_past_the_environments_proxy_and_names_its_gallery_for_a_shell(
        tmp_path: Path) -> None:
    """Its site is on this host: HTTP_PROXY (here: nothing listens there) is not for it."""
    out = tmp_path / "my out"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update({"HTTP_PROXY": f"http://127.0.0.1:{free_port()}",
                "http_proxy": f"http://127.0.0.1:{free_port()}"})
    result = subprocess.run(crawler_command("demo", "--out", str(out)), cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    gallery = out / "demo" / "index.html"
    assert result.stderr.rstrip().endswith(f"(or run: xdg-open '{gallery}')"), result.stderr


def test_demo_runs_offline(tmp_path: Path) -> None:
    result = subprocess.run(crawler_command("demo", "--out", str(tmp_path)), cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    from crawler.demo.site import build_site

    site = build_site()
    stored = [p for p in (tmp_path / "demo" / "images").glob("*/127.0.0.1_*/**/*") if p.is_file()]
    assert len(stored) == len(site.images)
    originals = {body for path, (_, body) in site.files.items() if path in site.images}
    assert {p.read_bytes() for p in stored} == originals
    assert f"{len(site.images)} images stored" in result.stderr
    # Its workers are its own: no command for starting more. It ends with the gallery.
    assert "crawler worker" not in result.stderr
    gallery = tmp_path / "demo" / "index.html"
    assert gallery.is_file()
    assert result.stderr.rstrip().splitlines()[-1].startswith(
        f"gallery: open {gallery.resolve().as_uri()} in a browser")


def test_a_demo_leaves_another_crawl_kept_in_its_folder_alone(tmp_path: Path) -> None:
    """A crawl kept in OUT/demo (its journal, results and images) was erased by the demo,
    which starts each run afresh, without a word."""
    demo = tmp_path / "demo"
    stored = demo / "images" / "http" / "127.0.0.1_18301" / "photo.png"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"another crawl's image")
    manifest = demo / "manifest.jsonl"
    manifest.write_text(json.dumps({"url": "http://127.0.0.1:18301/photo.png"}) + "\n")
    result = subprocess.run(crawler_command("demo", "--out", str(tmp_path)), cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"crawler: error: {demo} holds a crawl that is not the demo's, "
                             "which the demo would erase (it starts each run afresh): choose "
                             "another folder with --out, or move it away\n")
    assert stored.is_file() and manifest.is_file()


def test_a_demo_leaves_a_crawl_made_since_in_its_folder_alone(site: FixtureServer,
                                                               tmp_path: Path) -> None:
    """The folder a demo marked, crawled since by a master (--fresh: the demo's crawl was
    of other seeds): the next demo refuses it, where the mark alone let it erase it."""
    demo = tmp_path / "demo"
    first = run_crawler("demo", "--out", str(tmp_path), "--quiet", cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    crawl = run_crawler("master", site.url + "/", "--out", str(demo), "--fresh",
                        "--local-workers", "1", "--quiet", cwd=tmp_path, timeout=120)
    assert crawl.returncode == 0, crawl.stderr
    kept = sorted(path for path in demo.rglob("*") if path.is_file())
    again = run_crawler("demo", "--out", str(tmp_path), "--quiet", cwd=tmp_path, timeout=120)
    assert again.returncode == 2, again.stderr
    assert "holds a crawl that is not the demo's" in again.stderr
    assert sorted(path for path in demo.rglob("*") if path.is_file()) == kept


def test_a_demo_run_again_clears_the_last_demos_folder_marked_or_not(tmp_path: Path) -> None:
    """Its own folder, marked as a demo's, or an older demo's whose manifest names the
    demo site's images alone."""
    for unmark in (False, True):
        if unmark:
            (tmp_path / "demo" / ".crawler-demo").unlink()
        result = subprocess.run(crawler_command("demo", "--out", str(tmp_path), "--quiet"),
                                cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert len(list((tmp_path / "demo" / "images").glob("*/127.0.0.1_*"))) == 1


def test_an_interrupted_demo_says_it_starts_afresh_not_that_it_resumes(tmp_path: Path) -> None:
    """Each demo serves a new site and forgets the last one's crawl: "run the same command
    again to resume" would be untrue of it."""
    settings = tmp_path / "slow.toml"  # its pages and images spaced out: time to interrupt
    settings.write_text("[politeness]\nhost_delay = 0.5\n")
    demo = start_crawler("demo", "--out", str(tmp_path), "--workers", "1", "--settings",
                         str(settings), cwd=tmp_path)
    try:
        wait_for_output(demo, r"queue on \S+")  # the crawl's signal handlers are in place
        demo.send_signal(signal.SIGINT)
        err = finish(demo, 60)
    finally:
        stop(demo)
    assert demo.returncode == 130, err
    assert "crawl interrupted: the demo starts afresh when run again" in err
    assert "resume" not in err
    # Its gallery says so too: it said "Running it again goes on where it stopped".
    gallery = (tmp_path / "demo" / "index.html").read_text(encoding="utf-8")
    assert "The demo starts afresh when run again (crawler demo)." in gallery
    assert "goes on where it stopped" not in gallery


def _linking_page(*links: str, delay: float = 0.0) -> Callable[[FixtureHandler], None]:
    """A route answering, after ``delay`` seconds, a page that links to ``links``."""
    body = "".join(f'<a href="{link}">{link}</a>' for link in links).encode()

    def route(handler: FixtureHandler) -> None:
        time.sleep(delay)
        handler.send_body(200, b"<html><body>" + body + b"</body></html>", "text/html")
    return route


def test_a_page_found_first_through_a_longer_path_is_read_at_its_shortest(
        site: FixtureServer, tmp_path: Path) -> None:
    """The seed links to a slow page and a fast one. Through the fast one's page the
    crawl finds /far first at depth 3, the limit; the slow page, read later, links to it
    at depth 2. /far is still being read then: read at depth 3, its link to /last was
    not followed, and /last's image never downloaded (3 of 7 crawls of a 100-page site
    missed pages so)."""
    png = (SITE / "images" / "red.png").read_bytes()
    page = _linking_page
    site.routes.update({
        "/": page("/slow", "/fast"), "/slow": page("/far", delay=1.5),
        "/fast": page("/mid"), "/mid": page("/far"), "/far": page("/last", delay=2.5),
        "/last": lambda h: h.send_body(200, b'<img src="/last.png">', "text/html"),
        "/last.png": lambda h: h.send_body(200, png, "image/png")})
    out = tmp_path / "out"
    done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--local-workers", "1", "--depth", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "/last" in site.paths(), (site.paths(), done.stderr)
    [entry] = manifest_lines(out)
    assert entry["url"] == site.url + "/last.png" and entry["status"] == "success", entry


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_page_read_at_the_limit_and_found_nearer_later_is_read_again(
        site: FixtureServer, tmp_path: Path, dry_run: bool) -> None:
    """As above, but /far is quick: read at depth 3, the limit, before the slow page,
    read later, links to it at depth 2. Its link to /last was never followed, and the
    crawl ended complete without /last's image (8 images of 56 missing in one crawl of
    four of a user's 40-page site). It is read again at depth 2, and only it: /mid, read
    at depth 2 already, is not."""
    png = (SITE / "images" / "red.png").read_bytes()
    page = _linking_page
    site.routes.update({
        "/": page("/slow", "/fast"), "/slow": page("/far", "/mid", delay=1.5),
        "/fast": page("/mid"), "/mid": page("/far"), "/far": page("/last"),
        "/last": lambda h: h.send_body(200, b'<img src="/last.png">', "text/html"),
        "/last.png": lambda h: h.send_body(200, png, "image/png")})
    out = tmp_path / "out"
    flags = ("--dry-run",) if dry_run else ("--local-workers", "1", "--json")
    done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--depth", "3", *flags, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert site.paths().count("/far") == 2 and site.paths().count("/mid") == 1, site.paths()
    assert "/last" in site.paths(), (site.paths(), done.stderr)
    assert (f"page {site.url}/far, read further from the seeds, is linked from depth 1: read "
            "again at depth 2, for the pages its links lead to") in done.stderr
    if dry_run:
        assert done.stdout.split() == [site.url + "/last.png"]
        return
    [entry] = manifest_lines(out)
    assert entry["url"] == site.url + "/last.png" and entry["status"] == "success", entry
    summary = json.loads(done.stdout)
    # Each page counted once, and none said to stop at the depth limit (/far did once).
    assert (summary["pages"], summary["pages_at_depth_limit"]) == (6, 0), summary


@pytest.mark.parametrize("flags", [(), ("-q",), ("--dry-run", "-q")])
def test_a_seed_not_crawled_beside_one_that_was_is_said(
        make_server: Callable[[], FixtureServer], tmp_path: Path,
        flags: tuple[str, ...]) -> None:
    """A seed list with a typo (a 404) beside good seeds: the crawl read the others and
    said the failed seed only in an INFO line; with -q (a dry run's list in a pipeline)
    nothing at all. It is a warning now, which -q still shows."""
    server = make_server()
    serve_routes(server, {"/": ("text/html", b'<img src="/a.png">'),
                          "/a.png": ("image/png", png(4, 4, 1))})
    out = tmp_path / "out"
    done = run_crawler("master", server.url + "/nothere", server.url + "/", *flags,
                       "--out", str(out), "--local-workers", "1", "--bind", "127.0.0.1:0",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"WARNING: seed {server.url}/nothere was not crawled: HTTP 404" in done.stderr, \
        done.stderr
    if "--dry-run" in flags:
        assert done.stdout.split() == [server.url + "/a.png"]


def test_a_dry_runs_verbose_log_counts_the_images_it_lists(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """-v said "0 new images" of every page of a dry run, beside the page's images listed."""
    server = make_server()
    serve_routes(server, {"/": ("text/html", b'<img src="/a.png"><img src="/b.png">')})
    done = run_crawler("master", server.url + "/", "--dry-run", "-v", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 2
    assert f"page {server.url}/ (depth 0): 0 links, 2 new images" in done.stderr, done.stderr


def test_a_demo_takes_no_notice_of_a_blank_authkey_variable(tmp_path: Path) -> None:
    """CRAWLER_AUTHKEY set but empty is refused by a master whose workers may come from
    elsewhere; the demo's workers are its own, handed its key: it runs."""
    env = {**os.environ, "CRAWLER_AUTHKEY": ""}
    done = run_crawler("demo", "--out", str(tmp_path), "--quiet", cwd=tmp_path, env=env,
                       timeout=120)
    assert done.returncode == 0, done.stderr
    assert manifest_lines(tmp_path / "demo")


def test_a_picture_offering_jpeg_xl_and_heic_has_each_stored(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A <picture> offering JPEG XL and HEIC before a PNG (Safari shows both): they
    failed as "not an image", two failures in a crawl of a page whose images are fine."""
    server = make_server()
    codestream = b"\xff\x0a" + bytes(range(64))
    jxl = (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\x00\x00\x00\x14ftypjxl \x00\x00\x00\x00jxl "
           + len(codestream + b"12345678").to_bytes(4, "big") + b"jxlc" + codestream)
    ftyp = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    heic = ftyp + b"\x00\x00\x00\x0cmeta\x00\x00\x00\x00" + b"\x00\x00\x00\x10mdat" + bytes(8)
    serve_routes(server, {
        "/": ("text/html", b'<picture><source srcset="/a.jxl" type="image/jxl">'
                           b'<source srcset="/a.heic" type="image/heic">'
                           b'<img src="/a.png"></picture>'),
        "/a.jxl": ("image/jxl", jxl), "/a.heic": ("image/heic", heic),
        "/a.png": ("image/png", png(4, 4, 1))})
    out = tmp_path / "out"
    done = run_crawler("master", server.url + "/", "--out", str(out), "--local-workers", "1",
                       "--bind", "127.0.0.1:0", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    by_url = {entry["url"][len(server.url):]: entry for entry in read_manifest(out)}
    assert {url: entry["status"] for url, entry in by_url.items()} == {
        "/a.jxl": "success", "/a.heic": "success", "/a.png": "success"}
    for url, body, mime in (("/a.jxl", jxl, "image/jxl"), ("/a.heic", heic, "image/heic")):
        assert by_url[url]["content_type"] == mime
        assert (out / by_url[url]["path"]).read_bytes() == body
        assert by_url[url]["path"].endswith(url[-5:])
