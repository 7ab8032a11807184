"""crawler report: the HTML gallery of a crawl, checked on real files and in a real browser."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urljoin, urlsplit
from urllib.request import url2pathname

import pytest
from bs4 import BeautifulSoup, Tag

from crawler.demo.site import png
from crawler.errors import StorageError, UsageError
from crawler.ui.report import (
    CHUNK_FIGURES,
    CHUNK_ROWS,
    LIVE_FIGURES,
    LIVE_ROWS,
    MAX_LINE_BYTES,
    write_report,
)
from crawler.ui.report import SCRIPT as PAGE_SCRIPT

from .conftest import FixtureServer, run_crawler

PAGE_A = "http://example.test/a.html"
PAGE_B = "http://example.test/b.html?x=1&y=<2>"
HOSTILE_NAME = "sp ace #1 50% ?q=1 é ü 猫.png"  # every character a file: URL must encode
SCRIPT = "<script>alert(1)</script>"
ABSENT_WORKER = "far-host:4242"


def success(url: str, page: str | None, path: str | None, body: bytes, *,
            worker: str = "here:1", width: int | None = 8, height: int | None = 8
            ) -> dict[str, Any]:
    return {"url": url, "status": "success", "reason": "", "page": page, "worker": worker,
            "path": path, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": "image/png", "attempts": 1, "elapsed_s": 0.01,
            "width": width, "height": height}


def failure(url: str, reason: str, page: str | None, attempts: int) -> dict[str, Any]:
    return {"url": url, "status": "failure", "reason": reason, "page": page, "worker": None,
            "path": None, "bytes": None, "sha256": None, "content_type": None,
            "attempts": attempts, "elapsed_s": 0.0, "width": None, "height": None}


def store(out: Path, path: str, body: bytes) -> None:
    target = out / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)


MALFORMED = [b"not json at all\n", b"[1, 2, 3]\n", b'{"url": 5, "status": "success"}\n',
             b'{"url": "http://example.test/x.png", "status": "maybe"}\n',
             b'\xff\xfe{"url": "http://example.test/y.png", "status": "success"}\n']


@pytest.fixture
def gallery(tmp_path: Path) -> dict[str, Any]:
    """An output folder with real PNGs, a manifest of every kind of line, and its report."""
    out = tmp_path / "out"
    out.mkdir()
    images = {name: png(8, 8, seed) for seed, name in enumerate(
        ["a1.png", HOSTILE_NAME, "b1.png", "b2.png", "far.png", "nopage.png", "outside.png"])}
    host = "example.test"
    for name in ("a1.png", HOSTILE_NAME, "b1.png", "b2.png", "nopage.png"):
        store(out, f"{host}/img/{name}", images[name])
    # A file outside the output folder: a manifest path pointing at it must not be shown.
    (tmp_path / "outside.png").write_bytes(images["outside.png"])

    lines = [
        success(f"http://{host}/img/a1.png", PAGE_A, f"{host}/img/a1.png", images["a1.png"]),
        success(f"http://{host}/img/hostile.png?{SCRIPT}", PAGE_A, f"{host}/img/{HOSTILE_NAME}",
                images[HOSTILE_NAME]),
        failure(f"http://{host}/{SCRIPT}.png", SCRIPT, PAGE_A, 3),
        success(f"http://{host}/img/b1.png", PAGE_B, f"{host}/img/b1.png", images["b1.png"],
                width=None, height=None),
        success(f"http://{host}/img/b2.png", PAGE_B, f"{host}/img/b2.png", images["b2.png"]),
        success(f"http://{host}/img/far.png", PAGE_B, f"{host}/img/far.png", images["far.png"],
                worker=ABSENT_WORKER),
        success(f"http://{host}/img/outside.png", PAGE_B, "../outside.png",
                images["outside.png"]),
        failure("javascript:alert(1)", 'HTTP 404 "quoted" & <b>bold</b>', None, 1),
        success(f"http://{host}/img/nopage.png", None, f"{host}/img/nopage.png",
                images["nopage.png"]),
    ]
    raw = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)
    # Malformed lines in the middle, plus a blank line, which is not malformed.
    (out / "manifest.jsonl").write_bytes(raw + b"\n" + b"".join(MALFORMED))
    index = write_report(out)
    return {"out": out, "index": index, "lines": lines, "images": images,
            "soup": BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")}


def sections(soup: BeautifulSoup) -> list[Tag]:
    return soup.select("section.page")


def resolve(index: Path, src: str) -> Path:
    """Where a browser that opened ``index`` from disk looks for ``src``."""
    url = urljoin(index.resolve().as_uri(), src)
    parts = urlsplit(url)
    assert parts.scheme == "file" and not parts.query and not parts.fragment, url
    return Path(url2pathname(parts.path))


# --------------------------------------------------------------------------- the page


def test_writes_index_html_in_the_output_folder(gallery: dict[str, Any]) -> None:
    assert gallery["index"] == gallery["out"] / "index.html"
    assert gallery["index"].is_file()
    # Written through a temporary file that is gone once the page is in place.
    assert sorted(p.name for p in gallery["out"].iterdir()) == [
        "example.test", "index.html", "manifest.jsonl"]


def test_images_are_grouped_by_the_page_they_were_found_on(gallery: dict[str, Any]) -> None:
    groups = sections(gallery["soup"])
    assert len(groups) == 3
    a, b, unknown = groups
    for group, page in ((a, PAGE_A), (b, PAGE_B)):
        link = group.h2.a
        assert link is not None and link["href"] == page and link.get_text() == page
    assert unknown.h2.a is None and "no recorded page" in unknown.h2.get_text()
    alts = [[img["alt"] for img in group.find_all("img")] for group in groups]
    assert alts == [["a1.png", HOSTILE_NAME], ["b1.png", "b2.png"], ["nopage.png"]]
    # Every success has a figure, shown or not; failures have none.
    assert [len(group.select("figure.image")) for group in groups] == [2, 4, 1]


def test_thumbnails_are_lazy_and_resolve_to_the_stored_files(gallery: dict[str, Any]) -> None:
    images = gallery["soup"].find_all("img")
    assert len(images) == 5
    for img in images:
        assert img["loading"] == "lazy"
        src = img["src"]
        assert not any(char in src for char in " #?é"), src  # percent-encoded
        target = resolve(gallery["index"], src)
        assert target.is_file(), src
        assert target == (gallery["out"] / unquote(src)).resolve()
        assert target.read_bytes() == gallery["images"][img["alt"]]
        # The thumbnail links to the full image.
        assert img.parent.name == "a" and img.parent["href"] == src


def test_hostile_file_name_is_encoded_for_a_file_url(gallery: dict[str, Any]) -> None:
    (img,) = gallery["soup"].find_all("img", alt=HOSTILE_NAME)
    assert img["src"] == ("example.test/img/sp%20ace%20%231%2050%25%20%3Fq%3D1%20"
                          "%C3%A9%20%C3%BC%20%E7%8C%AB.png")


def test_size_and_dimensions_are_shown_when_known(gallery: dict[str, Any]) -> None:
    captions = {fig.img["alt"]: fig.figcaption.get_text()
                for fig in gallery["soup"].select("figure.image") if fig.img}
    size = len(gallery["images"]["a1.png"])
    assert f"{size} B" in captions["a1.png"] and "8\u00d78" in captions["a1.png"]
    assert f"{len(gallery['images']['b1.png'])} B" in captions["b1.png"]
    assert "\u00d7" not in captions["b1.png"]  # no dimensions in the manifest


def test_image_not_on_this_host_names_its_worker(gallery: dict[str, Any]) -> None:
    (figure,) = [fig for fig in gallery["soup"].select("figure.image")
                 if "far.png" in fig.get_text()]
    assert figure.img is None
    assert f"stored by a worker on far-host (worker {ABSENT_WORKER})" in figure.get_text()
    assert "example.test/img/far.png" in figure.get_text()


def test_path_leaving_the_output_folder_is_not_shown(gallery: dict[str, Any]) -> None:
    (figure,) = [fig for fig in gallery["soup"].select("figure.image")
                 if "outside.png" in fig.get_text()]
    assert figure.img is None and "leaves the output folder" in figure.get_text()
    assert not [a for a in gallery["soup"].find_all("a", href=True) if a["href"].startswith("..")]


def test_failures_table_lists_url_reason_attempts_page(gallery: dict[str, Any]) -> None:
    table = gallery["soup"].select_one("table.failures")
    assert table is not None
    headers = [th.get_text() for th in table.select("thead th")]
    assert headers == ["URL", "Reason", "Attempts", "Page"]
    rows = [[td.get_text() for td in tr.find_all("td")] for tr in table.select("tbody tr")]
    assert rows == [
        [f"http://example.test/{SCRIPT}.png", SCRIPT, "3", PAGE_A],
        ["javascript:alert(1)", 'HTTP 404 "quoted" & <b>bold</b>', "1", ""],
    ]


def test_everything_from_the_manifest_is_text_not_markup(gallery: dict[str, Any]) -> None:
    soup = gallery["soup"]
    (script,) = soup.find_all("script")
    assert script.string == PAGE_SCRIPT  # the page's own, nothing from the manifest
    assert soup.find("b") is None
    assert SCRIPT in soup.get_text()
    # Only http(s) URLs become links: never javascript: or a path out of the folder.
    for link in soup.find_all("a", href=True):
        href = link["href"]
        assert href.startswith(("http://", "https://", "#", "example.test/")), href
    # The page keeps scripts off even if escaping ever failed.
    csp = soup.find("meta", attrs={"http-equiv": "Content-Security-Policy"})
    assert csp is not None and "default-src 'none'" in csp["content"]
    # Only that one script may run: by its hash, never 'unsafe-inline'.
    digest = base64.b64encode(hashlib.sha256(PAGE_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in csp["content"]
    assert "unsafe" not in csp["content"].split("script-src")[1].split(";")[0]


def test_page_is_self_contained(gallery: dict[str, Any]) -> None:
    soup = gallery["soup"]
    # Without scripts the filters could not work, so they start hidden.
    assert soup.select_one("form#filters").has_attr("hidden")
    assert soup.find("link") is None and soup.find("iframe") is None
    assert soup.find("style") is not None
    for tag in soup.find_all(src=True):
        assert "://" not in tag["src"] and not tag["src"].startswith("/")


def test_summary_counts_successes_failures_and_bytes(gallery: dict[str, Any]) -> None:
    soup = gallery["soup"]
    successes = [line for line in gallery["lines"] if line["status"] == "success"]
    total = sum(line["bytes"] for line in successes)
    summary = soup.select_one("#summary")
    assert summary is not None
    # The summary comes before the gallery.
    assert summary.find_all_previous("section") == []
    text = summary.get_text()
    assert f"{len(successes)} succeeded" in text
    assert "2 failed" in text
    assert f"{total:,} bytes" in text
    assert "2 images not shown" in soup.select_one("#elsewhere").get_text()


def status_counts(soup: BeautifulSoup) -> dict[str, tuple[int, int]]:
    """Each status filter's count, and how many figures carry that status."""
    counts = {}
    for option in soup.select("#f-status option[value]"):
        value = str(option["value"])
        if value in ("here", "elsewhere"):
            said = int(option.get_text().rpartition("(")[2].rstrip(")"))
            counts[value] = (said, len(soup.select(f'figure[data-status="{value}"]')))
    return counts


def test_status_filter_counts_are_the_figures_it_shows(gallery: dict[str, Any]) -> None:
    """A success stored on another host and one whose path leaves the folder are both
    "elsewhere" figures: both counted there, not as stored here."""
    assert status_counts(gallery["soup"]) == {"here": (5, 5), "elsewhere": (2, 2)}


def test_successes_with_no_file_recorded_are_counted_elsewhere(tmp_path: Path) -> None:
    """A tutorial worker reports a success with no path: such images are not here."""
    store(tmp_path, "h/a.png", png(8, 8, 1))
    lines = [success("http://h/a.png", "http://h/", "h/a.png", png(8, 8, 1)),
             *(success(f"http://h/{n}.png", "http://h/", None, png(8, 8, n), worker="")
               for n in range(2, 5))]
    (tmp_path / "manifest.jsonl").write_text("".join(
        json.dumps({**line, "bytes": None} if line["path"] is None else line) + "\n"
        for line in lines))  # a tutorial worker's success says no size either
    soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
    assert status_counts(soup) == {"here": (1, 1), "elsewhere": (3, 3)}
    assert "3 images not shown" in soup.select_one("#elsewhere").get_text()
    # Their size is unknown, not "under 10 KB" (where they were counted).
    sizes = {option["value"]: option.get_text() for option in soup.select("#f-size option")}
    assert sizes["s"] == "under 10 KB (1)" and sizes["unknown"] == "size not recorded (3)"
    assert len(soup.select('figure[data-size="unknown"]')) == 3


def test_a_type_servers_name_another_way_is_shown_by_its_own_name(tmp_path: Path) -> None:
    """image/x-png was shown as "X-PNG", an icon's registered type as "VND.MICROSOFT.ICON",
    and an upper-case type (a manifest of an earlier version kept the server's) not at all."""
    declared = {"a": "image/x-png", "b": "Image/PNG", "c": "image/vnd.microsoft.icon",
                "d": "image/jpg", "e": "image/webp"}
    lines = []
    for name, kind in declared.items():
        store(tmp_path, f"h/{name}.png", png(8, 8, 1))
        lines.append({**success(f"http://h/{name}.png", "http://h/", f"h/{name}.png",
                                png(8, 8, 1)), "content_type": kind})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    for label in ("X-PNG", "VND", "JPG\u003c"):
        assert label not in text, label
    soup = BeautifulSoup(text, "html.parser")
    shown = soup.get_text()
    assert shown.count("\u00b7 PNG") == 2 and "\u00b7 ICO" in shown and "\u00b7 JPEG" in shown
    assert "\u00b7 WEBP" in shown


def test_an_image_a_worker_of_this_host_stored_and_that_is_gone_says_a_rerun_fetches_it(
        tmp_path: Path) -> None:
    """A file deleted by hand was "stored by a worker on vm", vm being this very host,
    as if the user had to go and look on another machine."""
    here = socket.gethostname()
    line = success("http://h/gone.png", "http://h/", "h/gone.png", png(8, 8, 1),
                   worker=f"{here}:4242:ab12")
    (tmp_path / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
    (figure,) = soup.select("figure.image")
    assert (f"stored by a worker on {here} (worker {here}:4242:ab12), this host: removed "
            "from this folder since, or stored in another one; if removed, the same crawl "
            "command run here again downloads it again") in figure.get_text()


def test_malformed_lines_are_skipped_and_counted(gallery: dict[str, Any]) -> None:
    note = gallery["soup"].select_one("#malformed")
    assert note is not None
    assert f"{len(MALFORMED)} malformed lines" in note.get_text()


def test_overlong_line_is_skipped_without_losing_the_next(tmp_path: Path) -> None:
    body = png(8, 8, 1)
    store(tmp_path, "h/a.png", body)
    huge = b'{"url": "' + b"x" * (MAX_LINE_BYTES * 2) + b'", "status": "success"}\n'
    good = json.dumps(success("http://h/a.png", "http://h/", "h/a.png", body)).encode() + b"\n"
    (tmp_path / "manifest.jsonl").write_bytes(huge + good)
    soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
    assert "1 malformed line " in soup.select_one("#malformed").get_text()
    assert [img["alt"] for img in soup.find_all("img")] == ["a.png"]
    # Said on the terminal too: the note was only in the page, for whoever opened it.
    done = run_crawler("report", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert ("1 malformed line skipped in manifest.jsonl: not results this version can "
            "read") in done.stderr, done.stderr  # not "and pages.jsonl", which had none
    (tmp_path / "pages.jsonl").write_text('{"url": "http://h/p", "reason": "HTTP 404"}\n'
                                          "not json\n{}\n")
    done = run_crawler("report", str(tmp_path))
    assert ("3 malformed lines skipped in manifest.jsonl (1) and pages.jsonl (2): not results "
            "this version can read") in done.stderr, done.stderr


def test_empty_manifest_gives_an_empty_report(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text("")
    soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
    assert "0 succeeded, 0 failed, 0 bytes" in soup.select_one("#summary").get_text()
    assert soup.find("img") is None and soup.select_one("table.failures") is None
    assert soup.select_one("#malformed") is None


def test_a_crawl_that_did_not_end_is_said_so(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text("")

    def state() -> str | None:
        soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
        note = soup.select_one("#state")
        return note.get_text() if note is not None else None

    assert state() is None, "a folder with no crawl's journal or mark keeps no summary"
    (tmp_path / "crawl.sqlite").write_bytes(b"")
    assert "still running, or its last run was stopped before its end" in (state() or "")
    (tmp_path / "summary.json").write_text('{"interrupted": true, "found": "many"}')
    assert state() is None, "a damaged summary says nothing rather than fail"
    summary = {"completed": False, "interrupted": True, "found": 1200, "succeeded": 70,
               "failed": 6}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert state() == ("This crawl was interrupted: 76 of the 1,200 images found so far are "
                       "settled. Running it again goes on where it stopped.")
    summary.update(completed=True, interrupted=False)
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert state() is None
    summary.update(pages_left=3, images_left=1500)  # the budgets were spent: not all is here
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert state() == ("This crawl reached its budget: 3 page(s) found were not visited "
                       "(--max-pages); 1,500 image(s) found were not queued (--max-images).")
    summary.update(pages_left=0, images_left=0, pages_at_depth_limit=4)  # a trap, say
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert state() == ("This crawl reached its budget: 4 page(s) at the depth limit link to "
                       "pages not visited (--depth).")
    summary.update(pages_at_depth_limit=0, images_left=100_000)  # as many as the master keeps
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert state() == ("This crawl reached its budget: at least 100,000 image(s) found were "
                       "not queued (--max-images).")
    # The command's own summary says it the same way, its numbers without commas.
    from crawler.api import Summary
    from crawler.cli import format_summary

    lines = format_summary(Summary(completed=True, interrupted=False, dry_run=False,
                                   seeds=("http://h/",), elapsed_s=1.0, pages=3,
                                   pages_failed=0, found=9, succeeded=9, failed=0, bytes=0,
                                   out_dir=tmp_path, images_left=100_000))
    assert "  not queued      at least 100000 images found: the image budget" in lines


def test_the_summary_cuts_a_long_failure_reason_to_a_line(tmp_path: Path) -> None:
    """A tutorial worker's reason may be 4,096 characters: the terminal's summary printed
    them all; summary.json keeps it whole."""
    from crawler.api import Summary
    from crawler.cli import format_summary

    reason = "failure: " + "x" * 4000
    lines = format_summary(Summary(completed=True, interrupted=False, dry_run=False,
                                   seeds=("http://h/",), elapsed_s=1.0, pages=1,
                                   pages_failed=0, found=1, succeeded=0, failed=1, bytes=0,
                                   out_dir=tmp_path, failures_by_reason={reason: 1}))
    [shown] = [line for line in lines.splitlines() if "failure: x" in line]
    assert shown == "         1  " + reason[:199] + "\u2026"


@pytest.mark.parametrize(("stored", "seconds", "shown"), [
    (8, 392.0, "392.0 s, 0.020 images/s"), (0, 5.0, "5.0 s, 0.0 images/s"),
    (1, 10_800.0, "10800.0 s, 0.000093 images/s"),  # (not 9.3e-05)
    (2000, 2.0, "2.0 s, 1000.0 images/s")])
def test_the_summary_shows_a_slow_rate_as_more_than_none(
        tmp_path: Path, stored: int, seconds: float, shown: str) -> None:
    """8 images in 392 s read "0.0 images/s", as if none had been stored."""
    from crawler.api import Summary
    from crawler.cli import format_summary

    lines = format_summary(Summary(completed=True, interrupted=False, dry_run=False,
                                   seeds=("http://h/",), elapsed_s=seconds, pages=1,
                                   pages_failed=0, found=stored, succeeded=stored, failed=0,
                                   bytes=0, out_dir=tmp_path, stored_this_run=stored))
    assert f"  elapsed         {shown}" in lines.splitlines(), lines


@pytest.mark.parametrize(("reason", "hinted"), [
    ("TLS certificate not trusted: SSL certificate problem: self-signed certificate", True),
    ("TLS certificate not trusted: SSL certificate problem: unable to get local issuer "
     "certificate", True),
    # what a CA of one's own does not mend: a name that does not match, a date past
    ("TLS certificate not trusted: SSL: no alternative certificate subject name matches "
     "target host name 'a.test'", False),
    ("TLS certificate not trusted: SSL certificate problem: certificate has expired", False),
    ("HTTP 404", False)])
def test_the_summary_names_the_flag_for_an_image_host_of_a_private_ca(
        tmp_path: Path, reason: str, hinted: bool) -> None:
    """A seed whose certificate is not trusted is told of --ca-bundle; images on such a
    host failed with no word of it."""
    from crawler.api import Summary
    from crawler.cli import format_summary

    lines = format_summary(Summary(completed=True, interrupted=False, dry_run=False,
                                   seeds=("http://h/",), elapsed_s=1.0, pages=1,
                                   pages_failed=0, found=3, succeeded=0, failed=3, bytes=0,
                                   out_dir=tmp_path, failures_by_reason={reason: 3}))
    hint = ("  (a certificate not trusted: if a CA of your own signs it, --ca-bundle FILE "
            "trusts it)")
    assert (hint in lines.splitlines()) is hinted, lines
    given = format_summary(Summary(completed=True, interrupted=False, dry_run=False,
                                   seeds=("http://h/",), elapsed_s=1.0, pages=1,
                                   pages_failed=0, found=3, succeeded=0, failed=3, bytes=0,
                                   out_dir=tmp_path, failures_by_reason={reason: 3}),
                           ca_bundle="/etc/ours.pem")
    said = ("  (a certificate not trusted: no CA of /etc/ours.pem (--ca-bundle) signs it; "
            "give the one that does)")
    assert (said in given.splitlines()) is hinted, given


def test_report_is_rewritten_in_place(gallery: dict[str, Any]) -> None:
    out = gallery["out"]
    with (out / "manifest.jsonl").open("ab") as manifest:
        manifest.write(json.dumps(failure("http://example.test/new.png", "HTTP 500",
                                          PAGE_A, 2)).encode() + b"\n")
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    assert "3 failed" in soup.select_one("#summary").get_text()


# --------------------------------------------------------------------------- several folders


def test_folders_merge_and_a_workers_copied_folder_fills_its_tiles(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    master, copied = tmp_path / "master", tmp_path / "from far-host"
    here, far = png(8, 8, 1), png(8, 8, 2)
    store(master, "h/here.png", here)
    store(copied, "h/far.png", far)
    master.mkdir(exist_ok=True)
    lines = [success("http://h/here.png", PAGE_A, "h/here.png", here),
             success("http://h/far.png", PAGE_A, "h/far.png", far, worker="far-host:77:ab12"),
             failure("http://h/both.png", "HTTP 503", PAGE_A, 3)]
    (master / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    # The other crawl succeeded where this one failed, and saw one image again.
    both = png(8, 8, 3)
    store(copied, "h/both.png", both)
    (copied / "manifest.jsonl").write_text(
        json.dumps(success("http://h/both.png", PAGE_B, "h/both.png", both)) + "\n"
        + json.dumps(lines[0]) + "\n")

    alone = BeautifulSoup(write_report(master).read_text(encoding="utf-8"), "html.parser")
    (figure,) = [fig for fig in alone.select("figure.image") if "far.png" in fig.get_text()]
    assert figure.img is None
    assert "stored by a worker on far-host (worker far-host:77:ab12)" in figure.get_text()
    assert ("1 recorded as stored, and not in this folder (by workers on far-host (1)): "
            "deleted or moved since, or stored in workers' own output folders on other hosts"
            in alone.select_one("#elsewhere").get_text())
    # Said where the command ran too: the page said it only far down a short gallery.
    assert (f"1 image recorded as stored is not in {master} (by workers on far-host (1)): "
            "deleted or moved since, or stored in workers' own output folders; name those "
            f"too (copied here, if on other hosts): crawler report {master} WORKER_FOLDER"
            in caplog.text), caplog.text
    caplog.clear()

    index = write_report([master, copied])
    assert index == master / "index.html"
    soup = BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")
    shown = {img["alt"]: resolve(index, img["src"]) for img in soup.select("figure img")}
    assert shown == {"here.png": (master / "h/here.png").resolve(),
                     "far.png": (copied / "h/far.png").resolve(),
                     "both.png": (copied / "h/both.png").resolve()}
    assert soup.select_one("#elsewhere") is None
    assert "3 succeeded, 0 failed" in soup.select_one("#summary").get_text()
    assert "recorded as stored" not in caplog.text

    # The first folder named through a link elsewhere: the other's tiles still lead to
    # their files from where index.html is (they led to a folder beside the link's target).
    deep = tmp_path / "deep" / "a"
    deep.mkdir(parents=True)
    master.rename(deep / "master")
    (tmp_path / "link").symlink_to(deep / "master")
    index = write_report([tmp_path / "link", copied])
    soup = BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")
    shown = {img["alt"]: resolve(index.resolve(), img["src"]) for img in soup.select("figure img")}
    assert shown["far.png"] == (copied / "h/far.png").resolve()


def test_several_folders_without_a_manifest_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(UsageError, match=r"none of .* has a manifest\.jsonl"):
        write_report([tmp_path / "a", tmp_path / "b"])


def test_a_folder_that_does_not_exist_is_named_not_skipped(gallery: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """A worker's folder may hold no manifest; a mistyped one is no folder at all."""
    result = run_crawler("report", str(gallery["out"]), str(tmp_path / "mistyped"))
    assert result.returncode == 2
    assert f"no such folder: {tmp_path / 'mistyped'}" in result.stderr
    (tmp_path / "a-file").write_text("not a crawl's folder")
    result = run_crawler("report", "-q", str(tmp_path / "a-file"))  # -q: taken, unsaid
    assert result.returncode == 2
    assert (f"{tmp_path / 'a-file'} is a file where a folder is needed: give the crawl's "
            "output folder") in result.stderr


def test_cli_report_of_several_folders_writes_into_the_first(gallery: dict[str, Any],
                                                             tmp_path: Path) -> None:
    other = tmp_path / "other"
    store(other, "example.test/img/far.png", gallery["images"]["far.png"])
    result = run_crawler("report", str(gallery["out"]), str(other))
    assert result.returncode == 0, result.stderr
    index = gallery["out"] / "index.html"
    assert result.stdout.splitlines() == [f"wrote {index}",
                                          f"open {index.resolve().as_uri()} in a browser"]
    soup = BeautifulSoup((gallery["out"] / "index.html").read_text(encoding="utf-8"),
                         "html.parser")
    assert soup.find("img", alt="far.png") is not None


def test_pages_not_crawled_are_listed_with_their_reasons(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text("")
    (tmp_path / "pages.jsonl").write_text("\n".join([
        json.dumps({"url": "http://h/gone", "reason": "HTTP 404", "http_status": 404,
                    "final": True}),
        json.dumps({"url": "http://h/busy", "reason": "HTTP 503", "http_status": 503,
                    "final": False}),
        "not json",
        json.dumps({"url": "http://h/busy", "reason": "HTTP 502", "http_status": 502,
                    "final": False}),
        json.dumps({"url": f"http://h/{SCRIPT}", "reason": SCRIPT, "final": True}),
    ]) + "\n")
    soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
    rows = [[td.get_text() for td in tr.find_all("td")]
            for tr in soup.select("table.pages tbody tr")]
    assert rows == [["http://h/gone", "HTTP 404", ""], ["http://h/busy", "HTTP 502", "tried again"],
                    [f"http://h/{SCRIPT}", SCRIPT, ""]]
    assert "3 not crawled" in soup.select_one("#summary").get_text()
    assert "1 malformed line" in soup.select_one("#malformed").get_text()


def test_images_that_links_led_to_are_not_counted_as_pages(tmp_path: Path) -> None:
    """A link read as a page that was an image (/photo?id=3) records the image with its
    own URL as its page: two such images and one page's two were "images from 3 pages"."""
    lines = [success(f"http://h/{name}.png", PAGE_A, f"h/{name}.png", png(8, 8, n))
             for n, name in enumerate(("a", "b"))]
    lines += [success(url, url, None, png(8, 8, 9), worker="")
              for url in ("http://h/photo?id=3", "http://h/latest")]
    for name in ("a", "b"):
        store(tmp_path, f"h/{name}.png", png(8, 8, 0))
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
    assert " images from 1 page" in soup.select_one("#summary").get_text()


def test_a_page_not_crawled_in_one_folder_and_crawled_in_another_is_not_listed(
        tmp_path: Path) -> None:
    """Merged, a page that failed in one crawl and whose images another crawl found was
    shown with its images and listed as not crawled at once."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    (first / "manifest.jsonl").write_text("")
    (first / "pages.jsonl").write_text("".join(json.dumps(
        {"url": url, "reason": "HTTP 404", "http_status": 404, "final": True}) + "\n"
        for url in (PAGE_B, "http://h/gone")))
    image = png(8, 8, 4)
    store(second, "h/b.png", image)
    (second / "manifest.jsonl").write_text(
        json.dumps(success("http://h/b.png", PAGE_B, "h/b.png", image)) + "\n")
    soup = BeautifulSoup(write_report([first, second]).read_text(encoding="utf-8"),
                         "html.parser")
    rows = [[td.get_text() for td in tr.find_all("td")]
            for tr in soup.select("table.pages tbody tr")]
    assert rows == [["http://h/gone", "HTTP 404", ""]]
    assert "1 not crawled" in soup.select_one("#summary").get_text()
    alone = BeautifulSoup(write_report(first).read_text(encoding="utf-8"), "html.parser")
    assert "2 not crawled" in alone.select_one("#summary").get_text()


# --------------------------------------------------------------------------- errors


def test_missing_manifest_is_a_usage_error_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"has no manifest\.jsonl: run a crawl first") as error:
        write_report(tmp_path)
    assert str(tmp_path) in str(error.value)
    with pytest.raises(UsageError):
        write_report(tmp_path / "no-such-folder")


def test_a_workers_folder_alone_is_told_to_come_with_its_masters(tmp_path: Path) -> None:
    """A worker's own --out (another host's, copied here) holds images and no manifest:
    "run a crawl first" sent its user to crawl again; the report names what to run."""
    worker = tmp_path / "far host"
    store(worker, "images/http/h/a.png", png(8, 8, 3))
    expected = (f"{worker} has no manifest.jsonl: {worker} holds a worker's images, whose "
                "results are in the master's output folder; name that folder first: "
                f"crawler report MASTER_OUTPUT_DIR '{worker}'")
    with pytest.raises(UsageError) as error:
        write_report(worker)
    assert str(error.value) == expected
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=rf"^none of {empty}, .*: {worker} holds a worker's"):
        write_report([empty, worker])


def test_a_masters_folder_whose_manifest_was_removed_is_not_called_a_workers(
        tmp_path: Path) -> None:
    """It holds images and the crawl's journal: it was said to hold a worker's images,
    and sent its user looking for the master's folder, which it is."""
    master = tmp_path / "out"
    store(master, "images/http/h/a.png", png(8, 8, 3))
    (master / "crawl.sqlite").write_bytes(b"")
    with pytest.raises(UsageError) as error:
        write_report(master)
    assert str(error.value) == (
        f"{master} has no manifest.jsonl: {master} holds a master's crawl (crawl.sqlite or "
        "broker-crawl.json) but not its manifest.jsonl (removed, or the master stopped "
        "before writing it); the crawler master command that crawled into it, run again, "
        "writes its result files anew")


def test_unreadable_manifest_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").mkdir()  # readable by no one, root included
    with pytest.raises(StorageError, match=r"manifest\.jsonl"):
        write_report(tmp_path)


def test_unwritable_report_is_a_storage_error_and_leaves_no_partial(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text("")
    (tmp_path / "index.html").mkdir()  # cannot be replaced by a file, root included
    with pytest.raises(StorageError, match=r"index\.html"):
        write_report(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "manifest.jsonl"]


# --------------------------------------------------------------------------- scale


def test_a_hundred_thousand_lines_make_one_report(tmp_path: Path) -> None:
    body = png(8, 8, 3)
    for n in range(20):
        store(tmp_path, f"h/{n}.png", body)
    with (tmp_path / "manifest.jsonl").open("w", encoding="utf-8") as manifest:
        for n in range(100_000):
            if n % 10 == 9:
                line = failure(f"http://h/f{n}.png", "HTTP 404", f"http://h/p{n // 50}", 1)
            else:
                line = success(f"http://h/{n}.png", f"http://h/p{n // 50}", f"h/{n}.png", body)
            manifest.write(json.dumps(line) + "\n")
    index = write_report(tmp_path)  # its speed: benchmarks/micro.py report
    # Counted in the text: parsing 40 MB of HTML would take longer than writing it.
    html = index.read_text(encoding="utf-8")
    head = BeautifulSoup(html[:html.index("<main>")], "html.parser")
    assert "90000 succeeded, 10000 failed" in head.select_one("#summary").get_text()
    assert html.count("<img ") == 18  # the files 0..19, less the failures 9 and 19
    assert html.count('<section class="page"') == 2000
    assert html.count("<tr class=\"item\"") == 10_000


# --------------------------------------------------------------------------- command line


def test_cli_report_prints_the_path(gallery: dict[str, Any]) -> None:
    out = gallery["out"]
    (out / "index.html").unlink()
    result = run_crawler("report", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"wrote {out}/index.html"
    assert (out / "index.html").is_file()


def test_cli_report_without_manifest_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_crawler("report", str(tmp_path))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "manifest.jsonl" in lines[0] and str(tmp_path) in lines[0]
    assert not (tmp_path / "index.html").exists()


# --------------------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs headless Chromium ('chromium' on PATH; apt-get install -y chromium)")

# Added to a test copy of the page only, after the page's own script. It marks
# each thumbnail with its naturalWidth once loaded (or data-error), whether it
# was in the viewport, and the size of its box; marks each caption part that
# overflows its tile; then drives the filters and the lightbox as a user
# would, and writes what it saw as JSON into <pre id="probe">.
PROBE = """
for (const img of document.querySelectorAll("figure img")) {
  const mark = () => { img.dataset.loaded = String(img.naturalWidth); };
  if (img.complete && img.naturalWidth) mark();
  img.addEventListener("load", mark);
  img.addEventListener("error", () => { img.dataset.error = "1"; });
  if (img.getBoundingClientRect().top < window.innerHeight) img.dataset.inview = "1";
}
// Measured once the images in view have loaded, so a box that follows its image counts.
window.addEventListener("load", () => setTimeout(probe, 500));
function probe() {
const seen = {figures: [], filters: {}, lightbox: {}};
for (const figure of document.querySelectorAll("figure.item")) {
  const box = figure.getBoundingClientRect();
  const img = figure.querySelector("img");
  const thumb = img ? img.getBoundingClientRect() : null;
  const overflow = [];
  for (const part of figure.querySelectorAll("figcaption > span")) {
    const r = part.getBoundingClientRect();
    if (part.scrollWidth > part.clientWidth + 1 || r.left < box.left - 0.5 ||
        r.right > box.right + 0.5 || r.bottom > box.bottom + 0.5) overflow.push(part.className);
  }
  seen.figures.push({name: figure.querySelector(".name").textContent, status: figure.dataset.status,
                     tile: [box.width, box.height],
                     thumb: thumb && [thumb.width, thumb.height], overflow});
}
const visible = (selector) => Array.from(document.querySelectorAll(selector))
  .filter((e) => !e.hidden && e.offsetParent !== null);
const choose = (id, value) => {
  const f = document.getElementById(id);
  f.value = value;
  f.dispatchEvent(new Event("change"));
};
choose("f-status", "failed");
seen.filters.failed = [visible("figure.item").length, visible("tr.item").length];
choose("f-status", "");
choose("f-page", "2");
seen.filters.page2 = visible("figure.item").map((f) => f.dataset.page);
choose("f-page", "");
seen.filters.shown = document.getElementById("shown").textContent;
seen.filters.visible = !document.getElementById("filters").hidden;
const lightbox = document.getElementById("lightbox");
const full = () => document.getElementById("lb-image").getAttribute("src");
const key = (k) => document.dispatchEvent(new KeyboardEvent("keydown", {key: k}));
const thumbs = visible("figure.item a.thumb");
if (thumbs.length > 1) {
  thumbs[0].click();
  const big = document.getElementById("lb-image").getBoundingClientRect();
  seen.lightbox = {open: !lightbox.hidden, first: full(), size: [big.width, big.height],
                   text: document.getElementById("lb-text").textContent};
  key("ArrowRight");
  seen.lightbox.next = full();
  key("ArrowLeft");
  key("ArrowLeft");
  seen.lightbox.wrapped = full();
  key("Escape");
  seen.lightbox.closed = lightbox.hidden;
  // (what each opens: its file; an SVG's thumbnail, shown but no link, says it too)
  seen.lightbox.hrefs = thumbs.map((a) => a.closest("figure").dataset.full);
}
const out = document.createElement("pre");
out.id = "probe";
out.textContent = JSON.stringify(seen);
document.body.append(out);
}
"""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--allow-file-access-from-files",
                  "--hide-scrollbars"]


def chromium(page: Path, profile: Path, size: tuple[int, int], *extra: str,
             budget_ms: int = 5000) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}", *extra,
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def render_in_chromium(index: Path, profile: Path, size: tuple[int, int] = (1280, 4000),
                       probe: str = PROBE, budget_ms: int = 5000) -> BeautifulSoup:
    """Open a probed copy of ``index`` from disk in headless Chromium; return the DOM it ends with.

    The copy sits beside index.html so relative thumbnail paths resolve the
    same way. Its Content-Security-Policy gains only the probe's hash: the
    page's own script and images still run under the product's policy.
    """
    html = index.read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(probe.encode()).digest()).decode()
    assert "script-src 'sha256-" in html
    probed = html.replace("script-src ", f"script-src 'sha256-{digest}' ", 1)
    probed = probed.replace("</body>", f"<script>{probe}</script></body>", 1)
    copy = index.with_name(".probe-index.html")
    copy.write_text(probed, encoding="utf-8")
    result = chromium(copy, profile, size, "--dump-dom", budget_ms=budget_ms)
    assert "</html>" in result.stdout, result.stderr[-2000:]
    return BeautifulSoup(result.stdout, "html.parser")


def probe_result(dom: BeautifulSoup) -> dict[str, Any]:
    probe = dom.select_one("#probe")
    assert probe is not None, "the probe did not run: " + dom.get_text()[:500]
    result: dict[str, Any] = json.loads(probe.get_text())
    return result


def loaded_widths(dom: BeautifulSoup) -> dict[str, int | None]:
    """naturalWidth of each thumbnail in view, by file name; None for one that did not load."""
    in_view = [img for img in dom.select("figure img") if img.get("data-inview")]
    return {img.find_parent("figure")["data-name"]: int(img["data-loaded"])
            if img.get("data-loaded") else None for img in in_view}


def check_layout(seen: dict[str, Any]) -> None:
    """Every thumbnail is at least 64 px on its shorter side; no caption leaves its tile."""
    assert seen["figures"]
    for figure in seen["figures"]:
        if figure["thumb"] is not None:
            assert min(figure["thumb"]) >= 64, figure
            assert figure["thumb"][0] <= figure["tile"][0] + 0.5, figure
        assert figure["overflow"] == [], figure


@pytest.mark.browser
@needs_chromium
def test_thumbnails_with_hostile_names_load_from_disk(gallery: dict[str, Any],
                                                      tmp_path: Path) -> None:
    dom = render_in_chromium(gallery["index"], tmp_path / "chromium-profile")
    assert loaded_widths(dom) == {name: 8 for name in
                                  ("a1.png", HOSTILE_NAME, "b1.png", "b2.png", "nopage.png")}
    assert dom.select("figure b") == []  # the hostile reason stayed text in the browser too
    assert dom.select_one("table.failures b") is None
    seen = probe_result(dom)
    check_layout(seen)  # 8 px images fill their tiles too
    assert seen["filters"]["failed"] == [0, 2]
    assert set(seen["filters"]["page2"]) == {"2"} and len(seen["filters"]["page2"]) == 4


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("size", [(1280, 900), (420, 900)])
def test_the_demo_gallery_in_a_browser(tmp_path: Path, size: tuple[int, int]) -> None:
    """The demo's own gallery, at a desktop and a phone width: thumbnails, captions, lightbox."""
    result = run_crawler("demo", "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    index = tmp_path / "demo" / "index.html"
    screenshot = tmp_path / f"gallery-{size[0]}.png"
    chromium(index, tmp_path / "shot-profile", size, f"--screenshot={screenshot}")
    assert screenshot.read_bytes()[16:24] == struct.pack(">II", *size)
    dom = render_in_chromium(index, tmp_path / "profile", size)
    seen = probe_result(dom)
    check_layout(seen)
    assert len(seen["figures"]) == 72
    widths = loaded_widths(dom)
    assert widths and all(width is not None and width >= 160 for width in widths.values()), widths
    kinds = {name.rpartition(".")[2] for name in widths}
    if size[0] > 1000:
        assert kinds == {"png", "jpg", "gif", "svg"}, "every format decodes in a browser"
    # The failed image and the page that is not there are listed, and filter.
    assert seen["filters"]["failed"] == [0, 1]
    assert "gone.html" in dom.select_one("table.pages").get_text()
    assert seen["filters"]["shown"] == "showing 72 of 72 images"
    assert seen["filters"]["visible"], "the script shows the filters it drives"
    # The lightbox opens on the first thumbnail, steps on, wraps round, and closes.
    box = seen["lightbox"]
    hrefs = box["hrefs"]
    assert box["open"] and box["first"] == hrefs[0] and box["next"] == hrefs[1]
    assert box["wrapped"] == hrefs[-1] and box["closed"]
    assert box["text"].startswith(f"\u2068{hrefs[0].rpartition('/')[2]}\u2069 (1 of 72) \u2068")
    assert box["text"].endswith("\u2069"), "each stranger's value is isolated"
    assert min(box["size"]) >= 64


@pytest.mark.browser
@needs_chromium
def test_report_of_a_real_crawl_shows_its_images(site: FixtureServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    crawl = run_crawler("master", site.url + "/", "--local-workers", "2", "--out", str(out),
                        "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert crawl.returncode == 0, crawl.stderr
    report = run_crawler("report", str(out), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[0] == f"wrote {out}/index.html"

    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    stored = {entry["path"].rpartition("/")[2]: entry for entry in manifest
              if entry["status"] == "success"}
    dom = render_in_chromium(out / "index.html", tmp_path / "profile")
    widths = loaded_widths(dom)
    assert set(widths) == set(stored), "every thumbnail fits a 1280x4000 window"
    for name, width in widths.items():
        assert width is not None, f"{name} did not load"
        assert width == stored[name]["width"], name
    assert len(widths) == 13
    check_layout(probe_result(dom))
    # The page robots.txt refused is listed with its reason.
    rows = [[td.get_text() for td in tr.find_all("td")] for tr in dom.select("table.pages tr")
            if tr.find("td")]
    assert rows == [[site.url + "/private/secret.html", "disallowed by robots.txt", ""]]


@pytest.mark.browser
@needs_chromium
def test_long_names_stay_inside_their_tiles(tmp_path: Path) -> None:
    """A long file name wraps (two lines at most, the rest in its title), never out of its tile."""
    out = tmp_path / "out"
    names = ["x" * 180 + ".png", "a very long name with many words in it, " * 4 + ".png",
             "wide.png"]
    lines = []
    for n, name in enumerate(names):
        body = png(300 if name == "wide.png" else 40, 10, n)  # 30:1 and 4:1
        store(out, f"h/{name}", body)
        lines.append(success(f"http://h/{name}?{'q' * 300}", "http://h/" + "p" * 400,
                             f"h/{name}", body, width=None, height=None))
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_report(out)
    for size in ((1280, 900), (360, 900)):
        seen = probe_result(render_in_chromium(out / "index.html", tmp_path / f"p{size[0]}",
                                               size))
        check_layout(seen)
        assert len(seen["figures"]) == 3


def test_figures_past_the_first_screens_wait_in_templates(tmp_path: Path) -> None:
    """The first figures are live markup (all there is without scripts, and said so); the
    rest wait in chunks, each in its page's section, every one still in the page."""
    out = tmp_path / "out"
    body = png(8, 8, 1)
    lines = []
    for n in range(LIVE_FIGURES + 3 * CHUNK_FIGURES):
        store(out, f"h/{n}.png", body)
        lines.append(success(f"http://h/{n}.png", f"http://h/p{n // 70:02}.html", f"h/{n}.png",
                             body))
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    chunks = soup.select("section.page template.later")
    waiting = [len(chunk.select("figure.item")) for chunk in chunks]
    assert chunks and max(waiting) <= CHUNK_FIGURES
    live = len(soup.select("figure.item"))  # soupsieve, like a browser, skips <template>s
    assert LIVE_FIGURES <= live < LIVE_FIGURES + CHUNK_FIGURES
    assert live + sum(waiting) == len(lines)
    note = soup.select_one("noscript")
    assert note is not None and f"the other {sum(waiting)} need" in note.get_text()
    # A small report is all live, with no note.
    small = tmp_path / "small"
    store(small, "h/0.png", body)
    (small / "manifest.jsonl").write_text(json.dumps(lines[0]) + "\n")
    html = write_report(small).read_text(encoding="utf-8")
    assert "<template" not in html and "<noscript" not in html



def many_failures(out: Path, count: int, pages_failed: int = 0) -> None:
    """A crawl whose ``count`` images failed (every fourth on host a, the rest on b), with
    ``pages_failed`` pages not crawled; no image stored."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [failure(f"http://{'a' if n % 4 == 0 else 'b'}.test/{n}.png", "HTTP 404",
                     f"http://a.test/p{n // 100}.html", 3) for n in range(count)]
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (out / "pages.jsonl").write_text("".join(
        json.dumps({"url": f"http://a.test/gone{n}", "reason": "HTTP 404", "final": True}) + "\n"
        for n in range(pages_failed)))


def test_rows_past_the_first_screens_wait_in_templates(tmp_path: Path) -> None:
    """Both tables: the first rows live, the rest in chunks inside the table, every row still
    in the page and in manifest order; without scripts a note says how many wait."""
    count = LIVE_ROWS + 2 * CHUNK_ROWS + 7
    many_failures(tmp_path, count, pages_failed=LIVE_ROWS + 3)
    soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
    for selector, total, what in (("table.failures", count, "failed images"),
                                  ("table.pages", LIVE_ROWS + 3, "pages")):
        table = soup.select_one(selector)
        assert table is not None
        chunks = table.select("tbody > template.later")
        waiting = [len(chunk.find_all("tr")) for chunk in chunks]
        assert chunks and max(waiting) <= CHUNK_ROWS
        live = table.select("tbody > tr")
        assert len(live) == LIVE_ROWS and len(live) + sum(waiting) == total
        links = [tr.find("td").get_text() for tr in table.find_all("tr") if tr.find("td")]
        assert len(links) == total and links[0].endswith(("/0.png", "/gone0"))
        note = table.find_previous_sibling("noscript")
        assert note is not None
        assert f"the first {LIVE_ROWS} {what} are listed, the other {total - LIVE_ROWS:,}" in (
            note.get_text())
    # A short table is all live, with no note.
    small = tmp_path / "small"
    many_failures(small, LIVE_ROWS)
    html = write_report(small).read_text(encoding="utf-8")
    assert "<template" not in html and "<noscript" not in html


# Scrolls a report of failures to its end, a screen at a time, then filters by host and by
# a page with no failure. Every wait is bounded (the virtual time budget too).
PROBE_ROWS = """
const seen = {};
const rows = () => document.querySelectorAll("table.failures tr.item");
const visible = () => Array.from(rows()).filter((r) => !r.hidden).length;
const later = (ms) => new Promise((done) => setTimeout(done, ms));
const choose = (id, value) => {
  const f = document.getElementById(id);
  f.value = value;
  f.dispatchEvent(new Event("change"));
};
const out = document.createElement("pre");
out.id = "probe";
const report = () => { out.textContent = JSON.stringify(seen); };
window.addEventListener("load", async () => {
  document.body.append(out);
  await later(300);
  seen.atLoad = rows().length;
  report();
  for (let step = 0; step < 500 && document.querySelector("template.later"); step++) {
    const before = rows().length;
    window.scrollBy(0, window.innerHeight);
    window.dispatchEvent(new Event("scroll"));
    for (let wait = 0; wait < 10 && rows().length === before; wait++) await later(20);
  }
  seen.atEnd = {rows: rows().length, templates: document.querySelectorAll("template").length,
                pages: document.querySelectorAll("table.pages tbody tr").length};
  choose("f-host", "a.test");
  seen.hostA = visible();
  choose("f-host", "");
  choose("f-status", "here");
  seen.storedHidesTable = document.querySelector("table.failures").hidden;
  report();
});
"""


@pytest.mark.browser
@needs_chromium
def test_a_long_table_of_failures_fills_in_as_it_is_scrolled_and_filters_whole(
        tmp_path: Path) -> None:
    """The rows waiting in templates come in as the view reaches them, each once; the host
    filter counts every row, live or waiting; the pages table fills in too."""
    count = LIVE_ROWS + 2 * CHUNK_ROWS + 7
    many_failures(tmp_path, count, pages_failed=LIVE_ROWS + 3)
    write_report(tmp_path)
    seen = probe_result(render_in_chromium(tmp_path / "index.html", tmp_path / "profile",
                                           (1280, 900), probe=PROBE_ROWS, budget_ms=60_000))
    assert seen["atLoad"] < count
    assert seen["atEnd"] == {"rows": count, "templates": 0, "pages": LIVE_ROWS + 3}
    assert seen["hostA"] == len(range(0, count, 4))
    assert seen["storedHidesTable"] is True


# What a large report costs a browser: how many figures and thumbnails are live once
# it has loaded, then whether the rest still comes (scrolled to the end), filters and
# steps through in the lightbox. Every wait is bounded (the virtual time budget too).
PROBE_LARGE = """
const seen = {};
const live = () => document.querySelectorAll("figure.item").length;
const loaded = () => Array.from(document.querySelectorAll("figure img"))
  .filter((img) => img.complete && img.naturalWidth).length;
const later = (ms) => new Promise((done) => setTimeout(done, ms));
const choose = (id, value) => {
  const f = document.getElementById(id);
  f.value = value;
  f.dispatchEvent(new Event("change"));
};
const key = (k) => document.dispatchEvent(new KeyboardEvent("keydown", {key: k}));
const full = () => document.getElementById("lb-image").getAttribute("src");
const out = document.createElement("pre");  // written at each step: a stall shows where
out.id = "probe";
const report = () => { out.textContent = JSON.stringify(seen); };
window.addEventListener("load", async () => {
  document.body.append(out);
  await later(500);
  seen.atLoad = {figures: live(), loaded: loaded(),
                 shown: document.getElementById("shown").textContent};
  report();
  // Each wait until what it waits for is there, or 100 steps.
  const until = async (done, steps = 100) => {
    for (let step = 0; step < steps && !done(); step++) await later(20);
  };
  // Down a screen at a time, as a reader would: every section on the way fills in.
  for (let step = 0; step < 1000 && document.querySelector("template.later"); step++) {
    const before = live();
    window.scrollBy(0, window.innerHeight);
    // Said at once: headless Chromium draws few frames, and scroll events wait for one.
    window.dispatchEvent(new Event("scroll"));
    await until(() => live() > before, 10);
    seen.scrolled = {step, figures: live(), y: Math.round(window.scrollY)};
    report();
  }
  choose("f-page", "30");
  await until(() => Array.from(document.querySelectorAll("figure.item")).some(
    (f) => !f.hidden && f.dataset.page === "30"));
  const page = Array.from(document.querySelectorAll("figure.item")).filter((f) => !f.hidden);
  seen.page30 = {shown: document.getElementById("shown").textContent, live: page.length,
                 pages: [...new Set(page.map((f) => f.dataset.page))]};
  report();
  choose("f-page", "");
  document.querySelector("figure.item a.thumb").click();
  seen.first = full();
  key("ArrowLeft");
  seen.wrapped = full();
  key("Escape");
  report();
  seen.atEnd = {figures: live(), templates: document.querySelectorAll("template.later").length};
  report();
});
"""


@pytest.mark.browser
@needs_chromium
def test_a_large_report_lays_out_and_loads_only_what_is_near_the_view(tmp_path: Path) -> None:
    """2,000 images over 40 pages: once loaded, a few screens of figures are live and their
    thumbnails alone loaded (it was every one of them, which took 30,000 images 48 s); the
    rest comes as the view reaches it, and the filters and lightbox span them all."""
    out = tmp_path / "out"
    bodies = [png(40 + 8 * n, 30, n) for n in range(4)]
    for n, body in enumerate(bodies):
        store(out, f"src/{n}.png", body)
    lines = []
    for n in range(2000):
        path = f"h/p{n // 50}/{n}.png"
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        os.link(out / f"src/{n % 4}.png", out / path)  # real files, without 3,000 writes
        lines.append(success(f"http://h/{n}.png", f"http://h/p{n // 50:02}.html", path,
                             bodies[n % 4], width=40 + 8 * (n % 4), height=30))
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_report(out)
    seen = probe_result(render_in_chromium(out / "index.html", tmp_path / "profile",
                                           (1280, 900), probe=PROBE_LARGE,
                                           budget_ms=60_000))
    at_load = seen["atLoad"]
    assert at_load["shown"] == "showing 2000 of 2000 images"
    assert 30 <= at_load["figures"] <= 300, at_load
    assert 15 <= at_load["loaded"] <= at_load["figures"], at_load
    # Every figure came in on the way down, none twice.
    assert seen["atEnd"] == {"figures": 2000, "templates": 0}
    # The 30th page alone: its 50 figures.
    assert seen["page30"] == {"shown": "showing 50 of 2000 images", "live": 50,
                              "pages": ["30"]}
    # Stepping back from the first image reaches the last, live or not.
    assert seen["first"] == "h/p0/0.png" and seen["wrapped"] == "h/p39/1999.png"


def test_pages_in_address_order_and_images_with_the_pages_words(tmp_path: Path) -> None:
    """Pages sorted as a person would (p2 before p10); an image's alt text and its figure's
    caption, as the page wrote them (its ref), on the thumbnail; a page's failed images
    counted in its heading as in the page filter."""
    out = tmp_path / "out"
    out.mkdir()
    host = "example.test"
    lines = []
    for n in (10, 2, 1):  # the order the crawl happened to finish them
        body = png(8, 8, n)
        store(out, f"{host}/img/i{n}.png", body)
        line = success(f"http://{host}/img/i{n}.png", f"http://{host}/p{n}.html",
                       f"{host}/img/i{n}.png", body)
        line["ref"] = {"kind": "img", "alt": f"a cat, {n}", "caption": f"Figure {n}"}
        lines.append(line)
    lines.append(failure(f"http://{host}/img/gone.png", "HTTP 404", f"http://{host}/p2.html", 1))
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    headings = [section.h2.get_text(" ", strip=True) for section in sections(soup)]
    assert headings == [f"http://{host}/p1.html (1 image)",
                        f"http://{host}/p2.html (1 image, 1 failed)",
                        f"http://{host}/p10.html (1 image)"]
    first = sections(soup)[0]
    assert first.img["alt"] == "a cat, 1"
    # Both said, each once: a caption (or a title) alone hid the alt text.
    assert first.select_one("figcaption .caption").get_text() == "a cat, 1 \u2014 Figure 1"
    options = [option.get_text() for option in soup.select("#f-page option")]
    assert f"http://{host}/p2.html (2)" in options


def test_a_pages_images_in_address_order_whatever_order_they_finished(tmp_path: Path) -> None:
    """The manifest holds images in the order workers finished them, which changes from run
    to run: the gallery showed a page's i10, i2, i1 so, and in another order after the next
    crawl. Like the pages, they are in the order of their addresses, numbers as numbers."""
    out = tmp_path / "out"
    host = "example.test"
    lines = []
    for n in (10, 2, 1):
        body = png(8, 8, n)
        store(out, f"{host}/img/i{n}.png", body)
        lines.append(success(f"http://{host}/img/i{n}.png", f"http://{host}/",
                             f"{host}/img/i{n}.png", body))
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    [page] = sections(soup)
    assert [figure.img["src"].rsplit("/", 1)[1] for figure in page.select("figure")] == [
        "i1.png", "i2.png", "i10.png"]


def test_host_filter_matches_hosts_that_hold_characters_html_escapes(tmp_path: Path) -> None:
    """A host name may hold "&", "'" or '"' (URLs keep them); each host is one option of
    the filter, and its value is the data-host of its images and failures. The figures'
    hosts were escaped twice: an option of "a&amp;b.example" matched no image, and the
    host was listed twice."""
    out = tmp_path / "out"
    hosts = ["a&b.example", "it's.example", 'q"t.example']
    lines = []
    for n, host in enumerate(hosts):
        body = png(4, 4, n)
        store(out, f"images/http/{host}/x.png", body)
        lines.append(success(f"http://{host}/x.png", f"http://{host}/", f"images/http/{host}/x.png",
                             body))
        lines.append(failure(f"http://{host}/gone.png", "HTTP 404", f"http://{host}/", 1))
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    options = {option["value"]: option.get_text() for option in soup.select("#f-host option")
               if option["value"]}
    assert options == {host: f"{host} (1)" for host in sorted(hosts)}
    for host in hosts:
        items = soup.find_all(attrs={"data-host": host})
        assert [item.name for item in items] == ["figure", "tr"], host


def test_merging_a_crawl_that_failed_with_one_that_succeeded_takes_linear_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each success that replaced an earlier failure of its URL searched the list of
    failures for it: merging a crawl whose every image failed (its server down) with
    one that stored them, in another order, took minutes for 20,000 images."""
    from crawler.ui import report

    failed, stored = tmp_path / "failed", tmp_path / "stored"
    failed.mkdir()
    stored.mkdir()
    urls = [f"http://example.test/img{n}.png" for n in range(1000)]
    (failed / "manifest.jsonl").write_text("".join(
        json.dumps(failure(url, "HTTP 503", PAGE_A, 3)) + "\n" for url in urls))
    (stored / "manifest.jsonl").write_text("".join(
        json.dumps(success(url, PAGE_A, None, b"x")) + "\n" for url in reversed(urls)))
    compared = [0]
    equal = report.Entry.__eq__

    def counted(self: report.Entry, other: object) -> bool:
        compared[0] += 1
        return equal(self, other)

    monkeypatch.setattr(report.Entry, "__eq__", counted)
    index = write_report([failed, stored])
    assert compared[0] < len(urls), "entries were searched for, one by one"
    soup = BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")
    assert f"{len(urls)} succeeded, 0 failed" in soup.select_one("#summary").get_text()
    assert soup.select_one("table.failures") is None


def test_folders_whose_names_are_not_utf8_are_reported(tmp_path: Path) -> None:
    """A folder's name is bytes, not necessarily UTF-8: its name in the page's title
    (and the path of an image in a second such folder) made writing the page fail with
    a UnicodeEncodeError, a traceback and a partial file left in the folder."""
    first = Path(os.fsdecode(bytes(tmp_path) + b"/crawl-\xff"))
    second = Path(os.fsdecode(bytes(tmp_path) + b"/worker-\xfe"))
    body = png(4, 4, 1)
    first.mkdir()
    store(second, "images/http/example.test/a.png", body)
    line = success("http://example.test/a.png", PAGE_A, "images/http/example.test/a.png", body,
                   worker="far-host:1")
    (first / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    index = write_report([first, second])
    assert sorted(path.name for path in first.iterdir()) == ["index.html", "manifest.jsonl"]
    soup = BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")
    assert soup.title.get_text() == "Crawl report: crawl-\ufffd, worker-\ufffd"
    (img,) = soup.find_all("img")
    assert img["src"] == "../worker-%FE/images/http/example.test/a.png"
    where = os.fsdecode(bytes(first) + b"/" + unquote_to_bytes(img["src"]))
    assert Path(where).read_bytes() == body


def test_the_page_is_written_in_pieces_never_whole_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page was joined into one string and encoded whole: twice its size again at
    the peak (88 MB of HTML for 100,000 images took 406 MB, 198 MB in pieces)."""
    from crawler.ui import report

    lines = [success(f"http://h/{n}.png", f"http://h/p{n % 3}", f"h/{n}.png", png(8, 8, n))
             for n in range(20)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    written: list[object] = []
    real_write = report._write_atomically

    def write(target: Path, text: object) -> None:
        written.append(text)
        real_write(target, text)  # type: ignore[arg-type]

    def joined(*_: object) -> str:
        raise AssertionError("the whole page was made as one string")

    monkeypatch.setattr(report, "_write_atomically", write)
    monkeypatch.setattr(report, "render", joined)
    index = report.write_report(tmp_path)
    [pieces] = written
    assert isinstance(pieces, list) and len(pieces) > 20
    monkeypatch.undo()
    manifest = report.Manifest()
    report.read_manifest(tmp_path / "manifest.jsonl", manifest)
    assert index.read_text(encoding="utf-8") == report.render(manifest, tmp_path)


def test_a_page_that_fails_to_be_written_leaves_no_partial_file(tmp_path: Path) -> None:
    """Only an OSError took the temporary file away: a failure of another kind (text the
    encoding cannot write, Ctrl-C) left a hidden .index.html.*.partial for good."""
    from crawler.ui.report import _write_atomically

    with pytest.raises(UnicodeEncodeError):
        _write_atomically(tmp_path / "index.html", "lone surrogate \udcff")
    assert list(tmp_path.iterdir()) == []


def test_the_command_names_a_folder_that_is_not_utf8_by_its_bytes(
        tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """Where standard output's encoding is strict (a UTF-8 locale other than C.UTF-8),
    "wrote FOLDER/index.html" raised a UnicodeEncodeError for a folder whose name is not
    UTF-8, after the page was written: a traceback, and status 1."""
    from crawler import cli

    out = Path(os.fsdecode(bytes(tmp_path) + b"/crawl-\xff"))
    out.mkdir()
    (out / "manifest.jsonl").touch()
    assert cli.main(["report", str(out)]) == 0
    said = capsysbinary.readouterr().out
    assert said.startswith(b"wrote " + bytes(out) + b"/index.html\n"), said
    assert (out / "index.html").is_file()


def test_a_last_line_still_being_written_is_no_damage(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A running crawl's master appends its results in buffered batches, so a report made
    meanwhile can read the manifest's last line cut short. It was counted as a malformed
    line, with a warning of a damaged file or one edited by hand."""
    out = tmp_path / "out"
    body = png(4, 4, 1)
    store(out, "a.png", body)
    whole = json.dumps(success("http://example.test/a.png", PAGE_A, "a.png", body))
    cut = json.dumps(success("http://example.test/b.png", PAGE_A, "b.png", body))[:40]
    (out / "manifest.jsonl").write_text(f"{whole}\n{cut}")
    (out / "crawl.sqlite").touch()  # a master's folder with no summary: still running
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    assert soup.select_one("#malformed") is None
    assert "malformed" not in caplog.text
    assert "1 succeeded" in soup.select_one("#summary").get_text()
    # A whole last line without its line break (a file edited by hand) is read.
    (out / "manifest.jsonl").write_text(whole)
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    assert "1 succeeded" in soup.select_one("#summary").get_text()


def test_an_svg_is_shown_but_not_linked_for_its_scripts_to_run(tmp_path: Path) -> None:
    """A stranger's SVG opened as a document (a click on a link to its file) runs its
    scripts at a file: address; shown by <img>, it does not."""
    out = tmp_path / "out"
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="3">'
           b"<script>document.title = location.href</script></svg>")
    store(out, "h/a.svg", svg)
    store(out, "h/b.png", png(8, 8, 1))
    svg_line = success("http://h/a.svg", PAGE_A, "h/a.svg", svg) | {
        "content_type": "image/svg+xml"}
    lines = [svg_line, success("http://h/b.png", PAGE_A, "h/b.png", png(8, 8, 1))]
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    thumbs = {figure["data-url"]: figure.select_one("a.thumb")
              for figure in soup.select("figure.item")}
    assert "href" not in thumbs["http://h/a.svg"].attrs
    assert thumbs["http://h/a.svg"].img["src"].endswith("h/a.svg")  # shown all the same
    assert thumbs["http://h/b.png"]["href"].endswith("h/b.png")


def test_a_summary_with_a_number_too_large_is_no_crash(tmp_path: Path) -> None:
    """int() of 1e400 (infinity once read) raised OverflowError, which was not caught."""
    out = tmp_path / "out"
    store(out, "h/b.png", png(8, 8, 1))
    (out / "manifest.jsonl").write_text(
        json.dumps(success("http://h/b.png", PAGE_A, "h/b.png", png(8, 8, 1))) + "\n")
    (out / "summary.json").write_text('{"succeeded": 1e400, "found": 1, "interrupted": true}')
    assert "h/b.png" in write_report(out).read_text(encoding="utf-8")


def test_a_tile_of_a_type_most_browsers_do_not_draw_says_so(tmp_path: Path) -> None:
    """A TIFF, a HEIC or a JPEG XL stored whole showed as a broken thumbnail in Chromium
    and Firefox, beside the images that drew, with nothing said."""
    out = tmp_path / "out"
    lines = []
    for name, media_type in (("a.tiff", "image/tiff"), ("b.heic", "image/heif"),
                             ("c.jxl", "image/jxl"), ("d.png", "image/png")):
        body = png(8, 8, len(lines))
        store(out, f"h/{name}", body)
        line = success(f"http://h/{name}", PAGE_A, f"h/{name}", body)
        line["content_type"] = media_type
        lines.append(line)
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    said = {fig.img["alt"]: fig.figcaption.get_text() for fig in soup.select("figure.image")}
    assert "TIFF: few browsers show it (Safari does); the file is stored whole" in said["a.tiff"]
    assert "HEIC: few browsers show it" in said["b.heic"]
    assert "JPEG XL: few browsers show it" in said["c.jxl"]
    assert "few browsers" not in said["d.png"]
