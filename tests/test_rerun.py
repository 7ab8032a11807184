"""Reruns on one output folder: the same crawl goes on, another crawl is noticed.

Each test runs real master processes (with one local worker) against fixture
servers on 127.0.0.1, twice on the same output folder.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from crawler.cli import EXIT_NOTHING_STORED
from crawler.demo.site import Site, build_site, png
from crawler.master.journal import Journal, PageDone
from crawler.master.takeup import LONG_REWRITE_BYTES
from crawler.model.files import LOCK_NAME

from .conftest import (
    SITE,
    FixtureServer,
    by_url,
    command_lines,
    fail_first,
    finish,
    manifest_lines,
    run_crawler,
    serve_routes,
    start_crawler,
    stop,
    wait_for_queue_address,
)


def _site(server: FixtureServer) -> Site:
    site = build_site(pages=4, images_per_page=4, min_kb=1, max_kb=2)
    serve_routes(server, site.files)
    return site


def _crawl(seed: str, out: Path, tmp_path: Path, *flags: str, status: int = 0) -> str:
    master = start_crawler("master", seed, "--bind", "127.0.0.1:0", "--out", str(out),
                           "--local-workers", "1", *flags, cwd=tmp_path)
    err = finish(master, 90)
    assert master.returncode == status, err
    return err


def _entries(out: Path) -> dict[str, dict[str, object]]:
    return {str(entry["url"]): entry for entry in manifest_lines(out)}


def _stored(out: Path) -> set[str]:
    return {e["url"] for e in manifest_lines(out) if e["status"] == "success"}


def test_a_master_stopped_before_it_serves_leaves_no_local_worker_behind(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Local workers are forked before the journal is read and wait to be let go: a
    master refused by the folder's crawl lets them leave with it, quietly."""
    first, second = make_server(), make_server()
    _site(first)
    _site(second)
    out = tmp_path / "out"
    _crawl(first.url + "/", out, tmp_path)
    logs = {p: p.read_text() for p in out.glob("worker-*.log")}
    _crawl(second.url + "/", out, tmp_path, status=2)

    workers_of_out = [line for line in command_lines()
                      if b"crawler worker" in line and str(out).encode() in line]
    assert workers_of_out == [], "a local worker outlived its master"
    assert {p: p.read_text() for p in out.glob("worker-*.log")} == logs, "a worker spoke"


def test_a_run_with_other_seeds_is_stopped_until_told_to_resume_or_start_afresh(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    first, second = make_server(), make_server()
    _site(first)
    _site(second)
    out = tmp_path / "out"
    _crawl(first.url + "/", out, tmp_path)
    first_images = _stored(out)
    assert first_images
    summary = (out / "summary.json").read_text()

    err = _crawl(second.url + "/", out, tmp_path, status=2)
    assert f"{out} holds a crawl of {first.url}/ with other seeds: add --resume" in err, err
    assert second.paths() == [], "nothing is fetched before the folder's crawl is checked"
    assert _stored(out) == first_images
    assert (out / "summary.json").read_text() == summary, "a refused run changes nothing"

    _crawl(second.url + "/", out, tmp_path, "--resume")
    both = _stored(out)
    assert first_images < both
    assert {u for u in both if u.startswith(second.url)}

    assert run_crawler("report", str(out)).returncode == 0
    assert first.url in (out / "index.html").read_text()
    _crawl(second.url + "/", out, tmp_path, "--fresh")
    assert _stored(out) == {u for u in both if u.startswith(second.url)}
    # The forgotten crawl's gallery went with it; the summary is this run's.
    assert not (out / "index.html").exists()
    assert json.loads((out / "summary.json").read_text())["seeds"] == [second.url + "/"]


def test_a_rerun_with_a_larger_depth_goes_on_where_the_first_stopped(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    _site(server)
    whole = tmp_path / "whole"
    _crawl(server.url + "/", whole, tmp_path, "--depth", "1")
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path, "--depth", "0")
    shallow = _stored(out)
    assert shallow and shallow < _stored(whole)
    _crawl(server.url + "/", out, tmp_path, "--depth", "1")
    assert _stored(out) == _stored(whole)


def test_a_rerun_with_a_larger_image_budget_goes_on_where_the_first_stopped(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    server = make_server()
    _site(server)
    whole = tmp_path / "whole"
    _crawl(server.url + "/", whole, tmp_path)
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path, "--max-images", "3")
    assert len(_stored(out)) == 3
    _crawl(server.url + "/", out, tmp_path, "--max-images", "0")
    assert _stored(out) == _stored(whole)
    entries = [e["url"] for e in manifest_lines(out)]
    assert len(entries) == len(set(entries)), "no image has two results"


def _image_host_whose_robots_txt_fails_once(
        make_server: Callable[[], FixtureServer]) -> tuple[FixtureServer, FixtureServer, str,
                                                           bytes]:
    """A site to serve ``page``, and the host of its one image, whose robots.txt answers
    503 once: (site, image host, the image's path, the page showing it)."""
    site, images = make_server(), make_server()
    picture = build_site(pages=1, images_per_page=1, min_kb=1, max_kb=2)
    [path] = picture.images
    serve_routes(images, picture.files)
    fail_first(images, {"/robots.txt"}, 503, times=1)
    return site, images, path, f'<html><body><img src="{images.url}{path}"></body></html>'.encode()


def test_images_refused_for_an_unreadable_robots_txt_are_tried_by_a_rerun(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    site, images, path, page = _image_host_whose_robots_txt_fails_once(make_server)
    serve_routes(site, {"/": ("text/html", page)})
    out = tmp_path / "out"
    err = _crawl(site.url + "/", out, tmp_path, status=EXIT_NOTHING_STORED)
    [entry] = manifest_lines(out)
    assert entry["reason"] == "robots.txt unreachable (HTTP 503)"
    # README's "transient": a failure the next run tries again (it said false).
    assert entry["transient"] and entry["attempts"] == 0, entry
    assert "to try again    1 image(s)" in err, err
    _crawl(site.url + "/", out, tmp_path)
    [entry] = manifest_lines(out)
    assert entry["status"] == "success", entry
    assert images.paths().count(path) == 1


def test_a_rerun_that_ignores_robots_txt_says_what_an_earlier_run_refused_stays_refused(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A rerun with --ignore-robots fetched none of the pages and images the first run
    had refused by the site's robots.txt, and said nothing of it: as if the flag had
    been left out. Those refused at a redirect's target count too (they were left out
    of the count)."""
    server = make_server()
    picture = build_site(pages=1, images_per_page=2, min_kb=1, max_kb=2)
    shown, refused = sorted(picture.images)
    serve_routes(server, {
        **picture.files,
        "/robots.txt": ("text/plain", f"User-agent: *\nDisallow: {refused}\n"
                                      "Disallow: /private/\n".encode()),
        "/private/page.html": ("text/html", b"<html><body>private</body></html>"),
        "/private/other.html": ("text/html", b"<html><body>other</body></html>"),
        "/private/moved.png": ("image/png", picture.files[shown][1]),
        "/": ("text/html", f'<html><body><img src="{shown}"><img src="{refused}">'
                           '<img src="/moved.png"><a href="/private/page.html">p</a>'
                           '<a href="/go">go</a></body></html>'.encode()),
    })
    server.routes["/moved.png"] = lambda h: h.send_body(302, b"", "text/html",
                                                        {"Location": "/private/moved.png"})
    server.routes["/go"] = lambda h: h.send_body(302, b"", "text/html",
                                                 {"Location": "/private/other.html"})
    out = tmp_path / "out"
    said = ("2 page(s) and 2 image(s) an earlier run of this crawl refused for robots.txt "
            "stay refused: ignoring robots.txt holds for what this run finds; --fresh "
            "crawls the site anew without it")
    assert said not in _crawl(server.url + "/", out, tmp_path)
    assert _entries(out)[server.url + refused]["reason"] == "disallowed by robots.txt"
    assert said in _crawl(server.url + "/", out, tmp_path, "--ignore-robots")
    assert said not in _crawl(server.url + "/", out, tmp_path)  # obeyed, it is no news
    err = _crawl(server.url + "/", out, tmp_path, "--ignore-robots", "--fresh")
    assert "stay refused" not in err, err
    assert _entries(out)[server.url + refused]["status"] == "success"
    assert _entries(out)[server.url + "/moved.png"]["status"] == "success"
    assert {"/private/page.html", "/private/other.html"} <= set(server.paths())


@pytest.mark.parametrize("refusal", ["robots", "404"])
@pytest.mark.parametrize("queue", ["embedded", "broker"])
def test_a_rerun_of_a_crawl_that_read_nothing_tries_its_seeds_again(
        make_server: Callable[[], FixtureServer], tmp_path: Path, refusal: str, queue: str,
        request: pytest.FixtureRequest) -> None:
    """A seed refused by robots.txt (or a 404) fails for good, and a rerun did not try it
    again: the rerun, with --ignore-robots as the first run's error advised, or with the
    page now served, ended "crawl completed" with exit 0 and nothing crawled. A crawl
    that read nothing starts anew: its seeds are tried again, on a broker as in its
    folder."""
    broker = (("--broker", request.getfixturevalue("redis_server").url, "--crawl",
               request.getfixturevalue("crawl_name")) if queue == "broker" else ())
    server = make_server()
    picture = build_site(pages=1, images_per_page=1, min_kb=1, max_kb=2)
    [image] = picture.images
    page = ("text/html", f'<html><body><img src="{image}"></body></html>'.encode())
    files = {path: body for path, body in picture.files.items() if path != "/"}
    if refusal == "robots":
        files.update({"/": page, "/robots.txt": ("text/plain", b"User-agent: *\nDisallow: /\n")})
    serve_routes(server, files)
    if refusal == "404":
        server.routes["/"] = lambda handler: handler.send_body(404, b"gone", "text/html")
    seed, out = server.url + "/", tmp_path / "out"
    first = _crawl(seed, out, tmp_path, *broker, status=5).strip().splitlines()[-1]
    why = "disallowed by robots.txt" if refusal == "robots" else "HTTP 404"
    hint = ("; the site's robots.txt asks crawlers to keep out of it: --ignore-robots "
            "crawls it anyway, where the site's owner lets you" if refusal == "robots" else "")
    assert first == f"crawler: error: no seed page could be fetched: {seed}: {why}{hint}"
    flags = ("--ignore-robots",) if refusal == "robots" else ()
    if refusal == "404":
        serve_routes(server, {"/": page})
    again = _crawl(seed, out, tmp_path, *broker, *flags)
    assert "stay refused" not in again, again
    assert _stored(out) == {server.url + image}
    # pages.jsonl no longer lists the seed as not crawled.
    assert not (out / "pages.jsonl").exists() or seed not in (out / "pages.jsonl").read_text()


def test_a_resumed_crawl_fetches_what_was_queued_only_within_its_own_scope_and_depth(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Pages and images an interrupted run queued are taken up within this run's scope
    and depth: a page now denied, one now too deep and an image now rejected stay out."""
    server = make_server()
    _site(server)
    seed, out = server.url + "/", tmp_path / "out"
    out.mkdir()
    journal = Journal(out)  # as a run interrupted after reading the seed leaves it
    journal.add_seeds([seed, server.url + "/page/2.html"])  # the second: a seed no more
    journal.pages_done([PageDone(seed, [(server.url + "/page/1.html", 1),
                                        (server.url + "/page/2.html", 1),
                                        (server.url + "/page/3.html", 2)],
                                 [(server.url + "/images/0/img0.png", seed, None, None),
                                  (server.url + "/images/0/img1.jpg", seed, None, None)])])
    journal.close()
    settings = tmp_path / "narrower.toml"
    settings.write_text('[crawl]\ndeny = ["/page/2"]\n')
    err = _crawl(seed, out, tmp_path, "--resume", "--depth", "1", "--reject", r"img1\.jpg",
                 "--settings", str(settings), "-v")
    assert "2 page(s) and 1 image(s) an earlier run queued are outside" in err, err
    fetched = set(server.paths())
    assert {"/page/1.html", "/images/0/img0.png", "/images/1/img4.svg"} <= fetched
    assert not fetched & {"/", "/page/2.html", "/page/3.html", "/images/0/img1.jpg"}, fetched
    assert _stored(out) == {server.url + path for path in (
        "/images/0/img0.png", "/images/1/img4.svg", "/images/1/img5.png",
        "/images/1/img6.jpg", "/images/1/img7.gif")}
    # The image the narrower --reject left out is counted in the summary, as one a page
    # of this run shows is: it said "found 5, downloaded 5" and nothing of it.
    assert json.loads((out / "summary.json").read_text())["images_out_of_scope"] == 1


@pytest.mark.parametrize(("name", "doing"), [
    ("broker-crawl.json", "tell which crawl the folder holds"),
    ("page-cookies.txt", "read the page cookies")])
def test_a_folder_in_place_of_the_broker_mark_or_the_page_cookies_is_named(
        site: FixtureServer, tmp_path: Path, authkey: str, name: str, doing: str) -> None:
    """The mark was read as a broker crawl's ("holds the results of crawl '?' on a broker",
    --fresh advised); the cookies said "Is a directory", with no advice."""
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    err = _crawl(site.url + "/", out, tmp_path, "--quiet", status=3)
    assert err.strip().splitlines() == [
        f"crawler: error: cannot {doing}: {out / name} is a folder, where a file of the "
        "crawler's goes; move it away, or choose another output folder"]
    assert (out / name).is_dir()


def test_fresh_removes_the_journals_log_before_the_journal(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """The journal went first: a kill before its write-ahead log went left an old log beside
    the next run's new journal, for SQLite to replay into it. Seen here by what stays when
    the journal cannot be removed (a folder in its place), which is named with what to do."""
    out = tmp_path / "out"
    (out / "crawl.sqlite").mkdir(parents=True)
    for side in ("crawl.sqlite-wal", "crawl.sqlite-shm"):
        (out / side).write_bytes(b"an old run's")
    err = _crawl(site.url + "/", out, tmp_path, "--fresh", "--quiet", status=3)
    assert err.strip().splitlines() == [
        f"crawler: error: cannot forget the crawl in {out}: {out / 'crawl.sqlite'} is a "
        "folder, where a file of the crawler's goes; move it away, or choose another output "
        "folder"]
    assert not (out / "crawl.sqlite-wal").exists() and not (out / "crawl.sqlite-shm").exists()
    assert (out / "crawl.sqlite").is_dir()


@pytest.mark.parametrize("kind", ["a folder", "a symbolic link"])
def test_a_folder_or_a_link_in_place_of_the_lock_file_is_named_with_what_to_do(
        site: FixtureServer, tmp_path: Path, authkey: str, kind: str) -> None:
    """A folder said "Is a directory" with no advice; a link was followed, to make the lock
    wherever it pointed (or "No such file or directory", where it could not)."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    lock = out / LOCK_NAME
    if kind == "a folder":
        lock.mkdir()
    else:
        lock.symlink_to(elsewhere)
    err = _crawl(site.url + "/", out, tmp_path, "--quiet", status=3)
    assert err.strip().splitlines() == [
        f"crawler: error: cannot create {lock}: it is {kind}, where the crawler's lock file "
        "goes; move it away, or choose another output folder"]
    assert not elsewhere.exists() and (lock.is_symlink() or lock.is_dir())


def test_a_second_master_on_a_folder_in_use_is_refused_and_the_lock_goes_with_its_master(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Two masters on one folder would garble its files (one rewrites what the other appends
    to): the second is refused, even with --fresh, and the first is not disturbed. A master
    killed with -9 leaves no lock behind."""
    server = make_server()
    site = build_site(pages=4, images_per_page=4, min_kb=1, max_kb=2)
    serve_routes(server, site.files, page_delay=1.5)  # the second starts well within it
    seed, out = server.url + "/", tmp_path / "out"
    first = start_crawler("master", seed, "--bind", "127.0.0.1:0", "--out", str(out),
                          "--local-workers", "1", cwd=tmp_path)
    try:
        wait_for_queue_address(first)
        second = run_crawler("master", seed, "--bind", "127.0.0.1:0", "--out", str(out),
                             "--local-workers", "1", "--fresh", cwd=tmp_path, timeout=60)
        err = finish(first, 90)
    finally:
        stop(first)
    assert second.returncode == 2, second.stderr
    assert f"another master is crawling into {out}" in second.stderr, second.stderr
    assert first.returncode == 0, err
    assert _stored(out) == {server.url + path for path in site.images}
    assert len((out / "results.log").read_text().splitlines()) == len(site.images)

    killed = start_crawler("master", seed, "--bind", "127.0.0.1:0", "--out", str(out),
                           "--max-images", "0", "--depth", "5", cwd=tmp_path)
    try:
        wait_for_queue_address(killed)
        killed.kill()
        killed.wait(timeout=10)
    finally:
        stop(killed)
    _crawl(seed, out, tmp_path)  # at once: the lock went with the killed master


def _site_with_a_missing_page(server: FixtureServer) -> None:
    """Two pages of two images; the seed also links to /gone.html, a 404 (a final failure)."""
    site = build_site(pages=2, images_per_page=2, min_kb=1, max_kb=2)
    files = dict(site.files)
    kind, body = files["/"]
    files["/"] = (kind, body.replace(b"</body>", b'<a href="/gone.html">gone</a></body>'))
    serve_routes(server, files)


def test_a_rerun_counts_the_pages_that_failed_before(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """The summary's counts cover the folder's whole crawl: a page that failed for good
    in the first run is still a failed page in the summary of the next."""
    import json

    server = make_server()
    _site_with_a_missing_page(server)
    out = tmp_path / "out"
    for _ in range(2):
        _crawl(server.url + "/", out, tmp_path)
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["pages"], summary["pages_failed"]) == (3, 1), summary


def test_a_page_crawled_by_a_rerun_is_no_longer_listed_as_failed(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A page that failed for a passing reason (503 at every try) stays listed while no
    run crawls it (here one whose depth leaves it out); crawled by a later run,
    pages.jsonl and the gallery no longer list it as not crawled, while a page that
    failed for good (404) stays listed, once."""
    server = make_server()
    _site_with_a_missing_page(server)
    fail_first(server, {"/page/1.html"}, 503, times=2, retry_after="0")
    out = tmp_path / "out"
    (tmp_path / "settings.toml").write_text("[download]\nmax_attempts = 2\n")

    def listed() -> list[tuple[str, bool]]:
        return [(json.loads(line)["url"].removeprefix(server.url), json.loads(line)["final"])
                for line in (out / "pages.jsonl").read_text().splitlines()]

    _crawl(server.url + "/", out, tmp_path)
    assert sorted(listed()) == [("/gone.html", True), ("/page/1.html", False)]
    _crawl(server.url + "/", out, tmp_path, "--depth", "0", "--resume")  # left out
    assert sorted(listed()) == [("/gone.html", True), ("/page/1.html", False)]
    _crawl(server.url + "/", out, tmp_path, "--resume")
    assert listed() == [("/gone.html", True)]
    assert json.loads((out / "summary.json").read_text())["pages_failed"] == 1
    report = run_crawler("report", str(out), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    gallery = (out / "index.html").read_text()
    assert "Pages not crawled (1)" in gallery and "1 not crawled" in gallery
    assert "page/1.html</a></td><td>" not in gallery


def test_a_page_line_cut_by_a_full_disk_leaves_the_next_runs_lines_readable(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """pages.jsonl is appended to from run to run, and never written anew from the
    journal: a line a full disk cut took the next run's first line with it, both one
    line no reader could read."""
    server = make_server()
    _site_with_a_missing_page(server)
    fail_first(server, {"/page/1.html"}, 503, times=4, retry_after="0")  # both runs' tries
    out = tmp_path / "out"
    (tmp_path / "settings.toml").write_text("[download]\nmax_attempts = 2\n")
    pages = out / "pages.jsonl"
    _crawl(server.url + "/", out, tmp_path)
    whole = pages.read_bytes()
    pages.write_bytes(whole[:-10])  # its last line cut, as a disk that filled leaves it
    _crawl(server.url + "/", out, tmp_path)
    lines = [json.loads(line) for line in pages.read_text().splitlines()]
    assert ("/page/1.html", False) in [(line["url"].removeprefix(server.url), line["final"])
                                       for line in lines]
    report = run_crawler("report", str(out), cwd=tmp_path)
    assert report.returncode == 0 and "malformed" not in report.stderr, report.stderr


def test_a_folder_whose_crawl_read_nothing_takes_another_crawl_without_fresh(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A mistyped seed reads nothing (status 5): the folder keeps nothing of it, and the
    next crawl there, with the right seed, needs no --fresh."""
    from .conftest import free_port

    server = make_server()
    site = _site(server)
    out = tmp_path / "out"
    nothing_here = f"http://127.0.0.1:{free_port()}/"
    _crawl(nothing_here, out, tmp_path, status=5)
    _crawl(server.url + "/", out, tmp_path)
    assert _stored(out) == {server.url + path for path in site.images}
    assert nothing_here not in (out / "pages.jsonl").read_text()
    # A crawl that read something is kept: another is refused as before.
    _crawl(nothing_here, out, tmp_path, status=2)



def test_a_shallower_run_in_between_leaves_no_page_unread_for_a_deeper_one(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A run with a smaller depth reads pages at its limit without following their
    links: a later run with a larger depth follows them, though an earlier run of the
    folder, cut short, had that depth already."""
    server = make_server()
    picture = build_site(pages=1, images_per_page=1, min_kb=1, max_kb=2)
    [path] = picture.images
    serve_routes(server, {**picture.files,
                          "/": ("text/html", b'<a href="/one.html">one</a>'),
                          "/one.html": ("text/html", b'<a href="/two.html">two</a>'),
                          "/two.html": ("text/html", f'<img src="{path}">'.encode())})
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path, "--depth", "2", "--max-pages", "1")
    _crawl(server.url + "/", out, tmp_path, "--depth", "1")
    assert "/two.html" not in server.paths()
    _crawl(server.url + "/", out, tmp_path, "--depth", "2")
    assert _stored(out) == {server.url + path}
    assert json.loads((out / "summary.json").read_text())["pages"] == 3


def test_images_refused_for_an_unreadable_robots_txt_on_a_redirected_page_are_tried_by_a_rerun(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """The page is recorded under the URL that led to it, its images under the page it
    was read as (its redirect's target): a rerun still finds the page to read again."""
    site, images, path, page = _image_host_whose_robots_txt_fails_once(make_server)
    serve_routes(site, {"/home/": ("text/html", page)})
    site.routes["/"] = lambda h: h.send_body(301, b"", "text/plain",
                                             {"Location": site.url + "/home/"})
    out = tmp_path / "out"
    err = _crawl(site.url + "/", out, tmp_path, status=EXIT_NOTHING_STORED)
    [entry] = manifest_lines(out)
    assert entry["reason"] == "robots.txt unreachable (HTTP 503)"
    assert entry["page"] == site.url + "/home/"
    assert "to try again    1 image(s)" in err, err
    err = _crawl(site.url + "/", out, tmp_path)
    [entry] = manifest_lines(out)
    assert entry["status"] == "success", (entry, err)
    assert images.paths().count(path) == 1


def test_a_master_started_again_on_a_finished_crawl_writes_its_files_line_for_line(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """The files are written again from the journal's rows as they are: each line once,
    the same bytes (in the order the images were found, where the first run wrote them
    as their results came), and the summary counts what they hold."""
    server = make_server()
    _site(server)
    out = tmp_path / "out"
    names = ("manifest.jsonl", "results.log")
    _crawl(server.url + "/", out, tmp_path)
    first = {name: sorted((out / name).read_bytes().splitlines()) for name in names}
    _crawl(server.url + "/", out, tmp_path)
    again = {name: (out / name).read_bytes() for name in names}
    assert {name: sorted(again[name].splitlines()) for name in names} == first
    _crawl(server.url + "/", out, tmp_path)
    assert {name: (out / name).read_bytes() for name in names} == again
    lines = manifest_lines(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["stored_this_run"] == 0
    assert summary["succeeded"] + summary["failed"] == len(lines) == len({e["url"] for e in lines})
    assert summary["succeeded"] == sum(e["status"] == "success" for e in lines) > 0


def test_a_restart_on_a_large_crawl_says_why_no_request_goes_yet(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Its result files are written anew from the journal before the first request: for
    300,000 images, 5 to 10 s of silence. A manifest of LONG_REWRITE_BYTES or more is
    said, and the files written are the journal's (here, not the stale lines)."""
    server = make_server()
    _site(server)
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path)
    said = "writing results.log and manifest.jsonl anew from the journal"
    lines = manifest_lines(out)
    with (out / "manifest.jsonl").open("ab") as manifest:  # as large as a big crawl's
        manifest.write(b'{"stale": true}\n' * (LONG_REWRITE_BYTES // 16 + 1))
    err = _crawl(server.url + "/", out, tmp_path)
    assert said in err, err
    def by_url(entries: list[dict[str, object]]) -> list[dict[str, object]]:
        return sorted(entries, key=lambda entry: str(entry["url"]))

    assert by_url(manifest_lines(out)) == by_url(lines)
    assert said not in _crawl(server.url + "/", out, tmp_path)  # a small one is not said


def test_a_rerun_fetches_again_the_images_deleted_from_the_folder(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Images deleted by hand (one file, then the whole images/ folder) are fetched again
    by a rerun, as wget -nc would: each URL keeps one line in each file, its new one."""
    import shutil

    server = make_server()
    _site(server)
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path)
    first = {e["url"]: e for e in manifest_lines(out) if e["status"] == "success"}
    assert len(first) > 2
    gone = sorted(first.values(), key=lambda entry: str(entry["url"]))[0]
    (out / gone["path"]).unlink()
    fetched = len(server.paths())

    err = _crawl(server.url + "/", out, tmp_path)
    assert "1 image(s) recorded as stored are missing from" in err, err
    assert (out / gone["path"]).read_bytes(), "the deleted image is back"
    images = {url.removeprefix(server.url) for url in first}
    again = [path for path in server.paths()[fetched:] if path in images]
    assert again == [gone["url"].removeprefix(server.url)], "only the missing one again"

    shutil.rmtree(out / "images")
    _crawl(server.url + "/", out, tmp_path)
    lines = manifest_lines(out)
    assert len(lines) == len({e["url"] for e in lines}), "one line per URL"
    assert {e["url"] for e in lines if e["status"] == "success"} == set(first)
    for entry in lines:
        if entry["status"] == "success":
            assert (out / entry["path"]).is_file(), entry
    results = (out / "results.log").read_text().splitlines()
    assert len(results) == len(lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["stored_this_run"] == len(first)
    assert summary["stored_elsewhere"] == {}, "its local worker stores into its folder"


def test_a_rerun_fetches_again_the_images_a_power_cut_left_empty(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """Workers report before their files reach the disk: a power cut then leaves files of
    no bytes that the manifest lists as stored. A rerun found them there, and kept them."""
    server = make_server()
    _site(server)
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path)
    first = {e["url"]: e for e in manifest_lines(out) if e["status"] == "success"}
    emptied = sorted(first.values(), key=lambda entry: str(entry["url"]))[0]
    (out / emptied["path"]).write_bytes(b"")  # as ext4 leaves a file renamed, never flushed

    err = _crawl(server.url + "/", out, tmp_path)
    assert "1 image(s) recorded as stored are missing from" in err, err
    assert (out / emptied["path"]).stat().st_size == emptied["bytes"], "the image is back"
    assert _entries(out)[emptied["url"]]["sha256"] == emptied["sha256"]
    assert len(manifest_lines(out)) == len(_entries(out)), "one line per URL"


def test_a_worker_by_hand_that_stores_beside_its_masters_folder_is_told_where_to(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A worker started by hand on the master's host with another --out stores where
    the master's results and report do not look: it is told, once, the --out to give.
    One given the master's folder is not."""
    server = make_server()
    _site(server)
    out = tmp_path / "out"
    said = {}
    for folder in (tmp_path / "elsewhere", out):
        master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                               str(out), "--local-workers", "0", cwd=tmp_path)
        worker = None
        try:
            address = wait_for_queue_address(master)
            worker = start_crawler("worker", address, "--out", str(folder), cwd=tmp_path)
            err = finish(master, 90)
            assert master.returncode == 0, err
            said[folder.name] = finish(worker, 30)
            assert worker.returncode == 0, said[folder.name]
        finally:
            stop(master)
            if worker is not None:
                stop(worker)
        (out / "summary.json").unlink()  # each run a crawl of its own
        for name in ("crawl.sqlite", "results.log", "manifest.jsonl"):
            (out / name).unlink(missing_ok=True)
    hint = f"start the worker with --out {out.absolute()}"
    assert said["elsewhere"].count(hint) == 1, said["elsewhere"]
    assert "which is on this host" not in said["out"], said["out"]


def test_a_rerun_does_not_fetch_again_what_a_worker_here_stored_in_its_own_folder(
        make_server: Callable[[], FixtureServer], tmp_path: Path, authkey: str) -> None:
    """A worker on the master's host started with its own --out stores its images there,
    not in the master's folder: they are not missing from the crawl, and a rerun leaves
    them be (it fetched each again, said they were missing, and stored copies in the
    master's folder)."""
    server = make_server()
    _site(server)
    out, own = tmp_path / "out", tmp_path / "own"
    master = start_crawler("master", server.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), cwd=tmp_path)
    try:
        address = wait_for_queue_address(master)
        worker = run_crawler("worker", address, "--out", str(own), cwd=tmp_path)
        assert worker.returncode == 0, worker.stderr
        err = finish(master, 90)
    finally:
        stop(master)
    assert master.returncode == 0, err
    first = manifest_lines(out)
    stored = [e for e in first if e["status"] == "success"]
    assert stored and all((own / e["path"]).is_file() for e in stored), first
    # The summary says where they are: not in the master's folder.
    here = socket.gethostname()
    assert json.loads((out / "summary.json").read_text())["stored_elsewhere"] == {
        here: len(stored)}
    assert (f"elsewhere       {len(stored)} of them in workers' own --out folders, "
            f"not in {out} (by host: {here} {len(stored)})") in err, err
    asked = len(server.paths())

    err = _crawl(server.url + "/", out, tmp_path)  # its local worker stores into out
    assert "missing from" not in err, err
    assert server.paths()[asked:] == [], "nothing fetched again"
    # A rerun's summary counts them still, from the journal's note of that worker.
    assert json.loads((out / "summary.json").read_text())["stored_elsewhere"] == {
        here: len(stored)}
    # The same lines; a rerun writes them in the journal's order, not the order they came.
    assert sorted(manifest_lines(out), key=by_url) == sorted(first, key=by_url)
    assert not (out / "images").exists()


def test_images_whose_name_a_stray_file_took_are_stored_by_a_rerun_once_it_is_moved_away(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A file where the host's image folder belongs fails each image of that host for good
    in the run that meets it, once each; moved away as told, the same command stores them.
    A rerun treated the failure as final too, and only --fresh recovered."""
    server = make_server()
    site = _site(server)
    out = tmp_path / "out"
    host_folder = out / "images" / "http" / server.url.removeprefix("http://").replace(":", "_")
    host_folder.parent.mkdir(parents=True)
    host_folder.write_text("not the crawler's")

    err = _crawl(server.url + "/", out, tmp_path, status=EXIT_NOTHING_STORED)
    failed = _entries(out)
    assert set(failed) == {server.url + path for path in site.images}
    for entry in failed.values():
        assert entry["status"] == "failure" and entry["attempts"] == 1, entry
        assert str(entry["reason"]).endswith("move it away, then run the same command "
                                             "again"), entry
    assert f"to try again    {len(failed)} image(s)" in err, err

    host_folder.unlink()
    err = _crawl(server.url + "/", out, tmp_path)
    assert (f"{len(failed)} image(s) whose name in the image folder was taken by a file or "
            "folder the crawler did not store are tried again") in err, err
    assert _stored(out) == set(failed)
    assert len(manifest_lines(out)) == len(failed), "one line per URL"


def test_a_fresh_crawl_says_an_image_the_server_no_longer_serves_failed(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """--fresh forgets the crawl and keeps its images. An image that the server answers
    404 for now was reported a success all the same, with the file the forgotten crawl
    stored: a first try's failure stood for it as for an earlier try's unreported file."""
    server = make_server()
    png = (SITE / "images" / "red.png").read_bytes()
    page = b'<html><body><img src="/a.png"></body></html>'
    serve_routes(server, {"/": ("text/html", page), "/a.png": ("image/png", png)})
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path, "--ignore-robots")
    [stored] = manifest_lines(out)
    assert stored["status"] == "success", stored

    server.routes["/a.png"] = lambda handler: handler.send_body(404, b"gone", "text/plain")
    _crawl(server.url + "/", out, tmp_path, "--ignore-robots", "--fresh",
           status=EXIT_NOTHING_STORED)
    [entry] = manifest_lines(out)
    assert (entry["status"], entry["reason"]) == ("failure", "HTTP 404"), entry
    assert (out / "results.log").read_text() == f"{server.url}/a.png--->failure: HTTP 404\n"
    assert (out / stored["path"]).read_bytes() == png, "a stored file stays"


def test_a_rerun_fetches_again_an_image_a_power_cut_left_empty(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A worker reports an image before its periodic flush to disk: a power cut in
    between leaves the name with an empty file, which a rerun took for the image. The
    manifest went on naming its bytes and hash, and the file held nothing."""
    server = make_server()
    _site(server)
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path)
    stored = sorted((e for e in manifest_lines(out) if e["status"] == "success"), key=by_url)
    emptied = stored[0]
    (out / emptied["path"]).write_bytes(b"")

    err = _crawl(server.url + "/", out, tmp_path)
    assert "1 image(s) recorded as stored are missing from" in err, err
    [again] = [e for e in manifest_lines(out) if e["url"] == emptied["url"]]
    assert (again["status"], again["sha256"], again["bytes"]) == (
        "success", emptied["sha256"], emptied["bytes"]), again
    assert hashlib.sha256((out / again["path"]).read_bytes()).hexdigest() == again["sha256"]


def test_a_rerun_that_looks_for_images_in_more_places_reads_its_pages_again(
        make_server: Callable[[], FixtureServer], tmp_path: Path) -> None:
    """A first run with crawl.sources = ["img"], then the same command with the default
    sources: the rerun said the crawl was done, and the page's CSS background was never
    found, by any later run. Its pages are read again, and only what is new is fetched."""
    server = make_server()
    page = (b'<html><body><img src="/a.png"><div style="background-image:url(/b.png)">'
            b'</div><a href="/next.html">next</a><a href="/photo">full size</a></body></html>')
    serve_routes(server, {"/": ("text/html", page), "/a.png": ("image/png", png(4, 4, 1)),
                          "/b.png": ("image/png", png(4, 4, 2)),
                          "/photo": ("image/png", png(8, 8, 3)),
                          "/next.html": ("text/html", b'<html><img src="/a.png"></html>')})
    (tmp_path / "img.toml").write_text('[crawl]\nsources = ["img"]\n')
    out = tmp_path / "out"
    _crawl(server.url + "/", out, tmp_path, "--settings", str(tmp_path / "img.toml"))
    assert _stored(out) == {server.url + "/a.png"}
    err = _crawl(server.url + "/", out, tmp_path)
    # The link that led to an image failed as a page ("not HTML") while links were no
    # image source: visited again too.
    assert ("3 page(s) done before are visited again: this run looks for images where the "
            "last did not (crawl.sources, crawl.lazy_attributes)") in err, err
    assert _stored(out) == {server.url + p for p in ("/a.png", "/b.png", "/photo")}
    assert [e["attempts"] for e in manifest_lines(out)] == [1, 1, 1]  # a.png not fetched again
    assert server.paths().count("/a.png") == 1
    pages = out / "pages.jsonl"
    assert "/photo" not in (pages.read_text() if pages.exists() else ""), pages.read_text()
    again = _crawl(server.url + "/", out, tmp_path)
    assert "read again" not in again and "visited again" not in again, again
