"""crawler report: the HTML gallery of a crawl, checked on real files and in a real browser."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import url2pathname

import pytest
from bs4 import BeautifulSoup, Tag

from crawler.demo.site import png
from crawler.errors import StorageError, UsageError
from crawler.ui.report import MAX_LINE_BYTES, write_report
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
    assert f"stored on far-host (worker {ABSENT_WORKER})" in figure.get_text()
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


def test_empty_manifest_gives_an_empty_report(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text("")
    soup = BeautifulSoup(write_report(tmp_path).read_text(encoding="utf-8"), "html.parser")
    assert "0 succeeded, 0 failed, 0 bytes" in soup.select_one("#summary").get_text()
    assert soup.find("img") is None and soup.select_one("table.failures") is None
    assert soup.select_one("#malformed") is None


def test_report_is_rewritten_in_place(gallery: dict[str, Any]) -> None:
    out = gallery["out"]
    with (out / "manifest.jsonl").open("ab") as manifest:
        manifest.write(json.dumps(failure("http://example.test/new.png", "HTTP 500",
                                          PAGE_A, 2)).encode() + b"\n")
    soup = BeautifulSoup(write_report(out).read_text(encoding="utf-8"), "html.parser")
    assert "3 failed" in soup.select_one("#summary").get_text()


# --------------------------------------------------------------------------- errors


def test_missing_manifest_is_a_usage_error_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"has no manifest\.jsonl: run a crawl first") as error:
        write_report(tmp_path)
    assert str(tmp_path) in str(error.value)
    with pytest.raises(UsageError):
        write_report(tmp_path / "no-such-folder")


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
    assert result.stdout.strip() == f"wrote {out}/index.html"
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

# Added to a test copy of the page only: the product has no script. It marks
# each <img> with its naturalWidth once loaded, or data-error, and whether it
# was in the viewport when the page was laid out.
PROBE = """<script>
for (const img of document.images) {
  const mark = () => { img.dataset.loaded = String(img.naturalWidth); };
  if (img.complete && img.naturalWidth) mark();
  img.addEventListener("load", mark);
  img.addEventListener("error", () => { img.dataset.error = "1"; });
  if (img.getBoundingClientRect().top < window.innerHeight) img.dataset.inview = "1";
}
</script>"""


def render_in_chromium(index: Path, profile: Path) -> BeautifulSoup:
    """Open a probed copy of ``index`` from disk in headless Chromium; return the DOM it ends with.

    The copy sits beside index.html so relative thumbnail paths resolve the
    same way. Its Content-Security-Policy gains only ``script-src`` for the
    probe: images still load under the product's own ``img-src``.
    """
    html = index.read_text(encoding="utf-8")
    csp = "default-src 'none';"
    assert csp in html
    probed = html.replace(csp, csp + " script-src 'unsafe-inline';", 1)
    probed = probed.replace("</body>", PROBE + "</body>", 1)
    copy = index.with_name(".probe-index.html")
    copy.write_text(probed, encoding="utf-8")
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--allow-file-access-from-files",
         "--window-size=1280,4000", "--virtual-time-budget=5000", "--dump-dom",
         copy.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "</html>" in result.stdout, result.stderr[-2000:]
    return BeautifulSoup(result.stdout, "html.parser")


def loaded_widths(dom: BeautifulSoup) -> dict[str, int | None]:
    """naturalWidth of each thumbnail in view, by alt text; None for one that did not load."""
    in_view = [img for img in dom.find_all("img") if img.get("data-inview")]
    return {img["alt"]: int(img["data-loaded"]) if img.get("data-loaded") else None
            for img in in_view}


@pytest.mark.browser
@needs_chromium
def test_thumbnails_with_hostile_names_load_from_disk(gallery: dict[str, Any],
                                                      tmp_path: Path) -> None:
    dom = render_in_chromium(gallery["index"], tmp_path / "chromium-profile")
    assert loaded_widths(dom) == {name: 8 for name in
                                  ("a1.png", HOSTILE_NAME, "b1.png", "b2.png", "nopage.png")}
    assert dom.find("b") is None  # the hostile reason stayed text in the browser too


@pytest.mark.browser
@needs_chromium
def test_report_of_a_real_crawl_shows_its_images(site: FixtureServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    crawl = run_crawler("master", site.url + "/", "--local-workers", "2", "--out", str(out),
                        "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert crawl.returncode == 0, crawl.stderr
    report = run_crawler("report", str(out), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == f"wrote {out}/index.html"

    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    stored = {entry["path"].rpartition("/")[2]: entry for entry in manifest
              if entry["status"] == "success"}
    widths = loaded_widths(render_in_chromium(out / "index.html", tmp_path / "profile"))
    assert set(widths) == set(stored), "every thumbnail fits a 1280x4000 window"
    for name, width in widths.items():
        assert width is not None, f"{name} did not load"
        assert width == stored[name]["width"], name
    assert len(widths) == 13
