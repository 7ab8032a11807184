"""``crawler report``: an HTML gallery of one or more crawls, read from their manifests.

The page is one self-contained file, ``index.html`` in the first output
folder, meant to be opened from disk: inline CSS and one inline script, no
external resource, no network. Images are grouped by the page they were found
on and shown as thumbnails filling their tiles; a click opens the full image
in a lightbox (previous and next with the arrow keys too). A header gives the
counts and filters by page, host, status and size. Failed images and pages
that could not be crawled (``pages.jsonl``) follow in two tables, filtered
alike. Past the first :data:`LIVE_FIGURES`, figures wait in ``<template>``
chunks that the script moves into the page as the view nears them, so a
browser lays out and loads a few screens, not 30,000 figures; the rows of the
tables past the first :data:`LIVE_ROWS` wait alike. Without the script (or with
scripts off) those first thumbnails and rows show, and a note says how many
wait; each thumbnail is linked to its file, but an SVG's: opened as a document
(not shown by ``<img>``), a stranger's SVG runs its scripts at a ``file:`` address.

Several folders make one report: their manifests are merged (one line per
image URL, a success before a failure), and an image is looked for in every
folder, so images stored by workers on other hosts show once their folders
are copied here and named too. Those not found say on which host they are.

Everything in a manifest was written, one way or another, by strangers (URLs
and reasons come from web servers; paths and worker names from workers), so
every value is HTML-escaped, only http(s) URLs become links, only a relative
path that stays inside its folder becomes a thumbnail, and the script reads
values from the page as text, never as markup. A Content-Security-Policy
allows that one script by its hash and nothing else, so even a mistake in
escaping cannot run code in a page that can read local files.

Manifests are streamed line by line and the HTML is built as a list of
strings, so a crawl of 100,000 images is reported in a few seconds; a line
longer than :data:`MAX_LINE_BYTES` is skipped without being held in memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import socket
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from crawler.errors import StorageError, UsageError
from crawler.model.files import (
    BROKER_MARK,
    DEMO_MARK,
    JOURNAL_NAME,
    MANIFEST_NAME,
    PAGES_NAME,
    REPORT_NAME,
    SUMMARY_NAME,
    images_left_shown,
)
from crawler.model.imagetype import by_media_type
from crawler.model.outcome import IMAGES_DIR
from crawler.model.shellword import shell_word
from crawler.ui.progress import human_bytes

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20
"""The longest manifest line read; a real one is under 10 KB, longer ones count as malformed."""

LIVE_FIGURES = 100
"""Figures written as live markup at the top of the gallery: a first screen or two."""

CHUNK_FIGURES = 50
"""Figures per ``<template>`` after those: the page's script moves one chunk in at a time, as
the end of its grid nears the view. Live, 30,000 figures took a browser 10 s of layout and
style before its first screenshot (and where it ignored loading="lazy", a load of every file)."""

LIVE_ROWS = 200
"""Rows of a table (failed images, pages not crawled) written as live markup."""

CHUNK_ROWS = 500
"""Rows per ``<template>`` after those, moved in as the table's end nears the view, as
figures are: live, 100,000 failed images kept a browser 18 s from its first paint."""

SIZE_CLASSES = (("s", 10_000, "under 10 KB"), ("m", 100_000, "10 to 100 KB"),
                ("l", 1_000_000, "100 KB to 1 MB"), ("xl", None, "over 1 MB"),
                # A tutorial worker's success says no size: it was counted under 10 KB.
                ("unknown", None, "size not recorded"))

STYLE = """
:root{--tile:200px}
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f4f4f2}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ddd;
padding:.6em 1.5em}
h1{margin:0;font-size:1.3em;overflow-wrap:anywhere}
main{padding:0 1.5em 2em}
h2{font-size:1.05em;margin:1.4em 0 .5em;overflow-wrap:anywhere}
h2.part{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
.summary{font-size:1.05em;font-weight:600;margin:.2em 0}
.note{color:#8a5a00;margin:.2em 0}
.filters{display:flex;flex-wrap:wrap;gap:.4em 1em;align-items:center;margin-top:.4em}
.filters label{display:flex;gap:.3em;align-items:center;max-width:100%}
.filters select{max-width:min(40ch,70vw)}
#shown{color:#555}
.page{content-visibility:auto;contain-intrinsic-size:auto 600px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(var(--tile),100%),1fr));
gap:10px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden;
min-width:0;display:flex;flex-direction:column}
.thumb{display:block;width:100%;height:160px;background:#e6e6e3;cursor:zoom-in}
.thumb img{display:block;width:100%;height:100%;object-fit:cover}
.thumb img.tiny{image-rendering:pixelated}
.missing{display:flex;align-items:center;justify-content:center;height:160px;margin:0;
padding:.5em;background:repeating-linear-gradient(45deg,#eee,#eee 8px,#e4e4e4 8px,#e4e4e4 16px);
color:#555;font-style:italic;text-align:center;overflow-wrap:anywhere;overflow:hidden;
font-size:12px}
figcaption{padding:6px 8px;font-size:12px;color:#555;min-width:0}
figcaption .name{display:block;font-weight:600;color:#222;overflow-wrap:anywhere;
display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow:hidden}
figcaption .details{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
figcaption .caption{display:block;font-style:italic;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;background:#fff;table-layout:fixed}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f0f0f0}
td.num{text-align:right}
[hidden]{display:none!important}
#lightbox{position:fixed;inset:0;z-index:5;background:rgba(10,10,12,.96);color:#eee;
display:flex;flex-direction:column;align-items:center;justify-content:center;padding:1em 4em}
#lightbox img{max-width:100%;max-height:calc(100vh - 8em);object-fit:contain;
min-width:64px;min-height:min(60vh,480px)}
#lightbox img.tiny{image-rendering:pixelated}
#lightbox p{margin:.6em 0 0;max-width:100%;text-align:center;overflow-wrap:anywhere}
#lightbox a{color:#9cf}
#lightbox button{position:absolute;background:none;border:0;color:#fff;font-size:2.2em;
cursor:pointer;padding:.2em .4em}
#lb-prev{left:.2em;top:45%}#lb-next{right:.2em;top:45%}#lb-close{right:.2em;top:.1em}
"""

# Filters and the lightbox. It reads values from data- attributes and writes
# them with textContent: nothing from a manifest ever becomes markup.
SCRIPT = """
(() => {
  // Most figures wait in templates: parsed, but no style, layout or image load
  // until their section nears the view. Their nodes are the same objects once
  // moved in, so the filters and the lightbox hold every item from the start.
  // A table's rows past its first screens wait alike.
  const waitingIn = (box, selector) => {
    const later = Array.from(box.querySelectorAll("template.later"));
    return {box, later, items: [...box.querySelectorAll(selector), ...later.flatMap(
      (t) => Array.from(t.content.querySelectorAll(selector)))]};
  };
  const groups = Array.from(document.querySelectorAll("section.page"),
                            (section) => waitingIn(section, "figure.item"));
  const tables = Array.from(document.querySelectorAll("main table"),
                            (table) => waitingIn(table, "tr.item"));
  const items = [...groups, ...tables].flatMap((g) => g.items);
  const select = (id) => document.getElementById(id);
  const filters = ["f-page", "f-host", "f-status", "f-size"].map(select);
  const shown = select("shown");
  function apply() {
    const [page, host, status, size] = filters.map((f) => f.value);
    const keep = (d) => (!page || d.page === page) && (!host || d.host === host) &&
      (!status || d.status === status) && (!size || d.size === size);
    let count = 0;
    for (const g of groups) {
      let here = 0;
      for (const item of g.items) {
        item.hidden = !keep(item.dataset);
        if (!item.hidden) here++;
      }
      g.box.hidden = !here;
      count += here;
    }
    for (const t of tables) {
      if (!t.items.length) continue;  // (pages not crawled: no filter applies)
      let here = 0;
      for (const row of t.items) {
        row.hidden = !keep(row.dataset);
        if (!row.hidden) here++;
      }
      t.box.hidden = !here;
    }
    shown.textContent = `showing ${count} of ${select("gallery").dataset.total} images`;
    soon();  // sections shown again, or moved up, fill in
  }
  // A chunk at a time into each section or table whose end is within a screen or two
  // of the view, looked for after each burst of scrolling: an IntersectionObserver
  // reports crossings only, and a long scroll (or a section filling in above) can jump one.
  const waiting = [...groups, ...tables].filter((g) => g.later.length);
  const MARGIN = 1500;
  function fill() {
    for (let round = 0; round < 40; round++) {  // bounded: the rest a moment later
      let moved = false;
      for (const g of waiting) {
        if (!g.later.length || g.box.hidden) continue;
        const end = g.box.getBoundingClientRect().bottom;
        if (end < -MARGIN || end > window.innerHeight + MARGIN) continue;
        const next = g.later.shift();
        next.parentNode.insertBefore(next.content, next);
        next.remove();
        moved = true;
      }
      if (!moved) return;
    }
    soon();
  }
  let queued = false;
  function soon() {  // once for a burst of scroll events
    if (queued) return;
    queued = true;
    setTimeout(() => { queued = false; fill(); }, 16);
  }
  window.addEventListener("scroll", soon, {passive: true});
  window.addEventListener("resize", soon);
  for (const f of filters) f.addEventListener("change", apply);
  select("filters").hidden = false;
  const box = select("lightbox"), text = select("lb-text");
  const big = document.createElement("img");
  big.id = "lb-image";
  box.insertBefore(big, text);
  const link = select("lb-link"), where = select("lb-where");
  let list = [], at = 0;
  function show(n) {
    at = (n + list.length) % list.length;
    const d = list[at].dataset;
    big.src = d.full;
    big.alt = d.name;
    big.className = Number(d.width) && Number(d.width) < 64 ? "tiny" : "";
    // Each stranger's value in an isolate of its own (U+2068...U+2069): a right-to-left
    // override in a file name turned the rest of the line around.
    const isolated = (value) => `\u2068${value}\u2069`;
    text.textContent = `${isolated(d.name)} (${at + 1} of ${list.length}) ${isolated(d.details)}`;
    link.textContent = d.url;
    if (/^https?:/i.test(d.url)) link.href = d.url; else link.removeAttribute("href");
    where.textContent = d.where ? `found on ${d.where}` : "";
  }
  function open(figure) {
    list = items.filter((i) => !i.hidden && i.dataset.full);
    box.hidden = false;
    show(list.indexOf(figure));
    select("lb-close").focus();
  }
  function close() { box.hidden = true; big.removeAttribute("src"); }
  document.addEventListener("click", (event) => {
    const thumb = event.target.closest && event.target.closest("a.thumb");
    if (!thumb || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    open(thumb.closest("figure"));
  });
  select("lb-prev").addEventListener("click", () => show(at - 1));
  select("lb-next").addEventListener("click", () => show(at + 1));
  select("lb-close").addEventListener("click", close);
  box.addEventListener("click", (event) => { if (event.target === box) close(); });
  document.addEventListener("keydown", (event) => {
    if (box.hidden) return;
    if (event.key === "Escape") close();
    else if (event.key === "ArrowLeft") show(at - 1);
    else if (event.key === "ArrowRight" || event.key === " ") {
      event.preventDefault();
      show(at + 1);
    }
  });
  apply();
})();
"""

SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()

# Only the one script above runs; images come from the output folders (file: when
# opened from disk, 'self' when served) and styles from the one inline block.
CSP = (f"default-src 'none'; script-src 'sha256-{SCRIPT_HASH}'; img-src 'self' file:; "
       "style-src 'unsafe-inline'")


@dataclass(slots=True)
class Entry:
    """The fields of one manifest line the report shows, each already checked for its type."""

    url: str
    ok: bool
    reason: str
    page: str | None
    worker: str | None
    path: str | None
    bytes: int | None
    attempts: int | None
    width: int | None
    height: int | None
    content_type: str | None = None
    alt: str | None = None  # what the page said of it (its ref): the alt text
    caption: str | None = None  # an enclosing <figure>'s caption, else its title


@dataclass(frozen=True, slots=True)
class FailedPage:
    """A page that could not be crawled, from ``pages.jsonl``."""

    url: str
    reason: str
    http_status: int | None
    final: bool


@dataclass
class Manifest:
    """Manifests read in full: successes grouped by page (first seen first), then failures
    (by URL, in the order first seen: a success found later takes one out at once)."""

    pages: dict[str | None, list[Entry]] = field(default_factory=dict)
    failures: dict[str, Entry] = field(default_factory=dict)
    failed_pages: list[FailedPage] = field(default_factory=list)
    succeeded: int = 0
    total_bytes: int = 0
    malformed: int = 0
    seen: dict[str, Entry] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        """Take ``entry`` unless its URL is known: a success replaces an earlier failure."""
        known = self.seen.get(entry.url)
        if known is not None:
            if known.ok or not entry.ok:
                return
            # The same URL failed in one crawl only: a crawl merged with another that
            # failed as a whole (a server down) does this for every image.
            del self.failures[entry.url]
        self.seen[entry.url] = entry
        if entry.ok:
            self.pages.setdefault(entry.page, []).append(entry)
            self.succeeded += 1
            self.total_bytes += entry.bytes or 0
        else:
            self.failures[entry.url] = entry


def write_report(folders: Path | Sequence[Path]) -> Path:
    """Write ``index.html`` into the first of ``folders`` from their manifests; return its path.

    Raises :class:`UsageError` when no folder has a manifest (no crawl ran
    there) and :class:`StorageError` when a manifest cannot be read or the
    page cannot be written.
    """
    folders = [folders] if isinstance(folders, Path) else list(folders)
    files = [str(folder) for folder in folders if folder.is_file()]
    if files:
        raise UsageError(f"{', '.join(files)} is a file where a folder is needed: give the "
                         "crawl's output folder")
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:  # a mistyped folder is no folder of a worker that kept no manifest
        raise UsageError(f"no such folder: {', '.join(missing)}")
    manifest = Manifest()
    found = 0
    malformed_in: Counter[str] = Counter()  # by file name, for the terminal's line
    for folder in folders:
        before = manifest.malformed
        found += read_manifest(folder / MANIFEST_NAME, manifest, missing_ok=True)
        malformed_in[MANIFEST_NAME] += manifest.malformed - before
        before = manifest.malformed
        read_failed_pages(folder / PAGES_NAME, manifest)
        malformed_in[PAGES_NAME] += manifest.malformed - before
    if not found:
        raise UsageError(_no_manifest(folders))
    if len(folders) > 1:
        # Not crawled in one crawl, crawled in another (its images are in the merge): a
        # page each crawl's own pages.jsonl drops once crawled, as the merge does.
        shown = {entry.page for entry in manifest.seen.values()}
        manifest.failed_pages = [page for page in manifest.failed_pages
                                 if page.url not in shown]
    target = folders[0] / REPORT_NAME
    _write_atomically(target, render_parts(manifest, folders))
    if manifest.malformed:  # said in the page too; here before anyone opens it
        files = [name for name in (MANIFEST_NAME, PAGES_NAME) if malformed_in[name]]
        where = (files[0] if len(files) == 1 else
                 " and ".join(f"{name} ({malformed_in[name]})" for name in files))
        log.warning("%s skipped in %s: not results this version can read "
                    "(a damaged file, or one edited by hand)",
                    _plural(manifest.malformed, "malformed line"), where)
    return target


# --------------------------------------------------------------------------- reading


def _no_manifest(folders: Sequence[Path]) -> str:
    """Why no folder could be reported on, and what to run instead. A worker's own output
    folder (another host's, copied here) has images and no manifest: only the master
    writes one, and its folder has to be named too."""
    what = (f"{folders[0]} has no {MANIFEST_NAME}" if len(folders) == 1 else
            f"none of {', '.join(map(str, folders))} has a {MANIFEST_NAME}")
    # A master's folder holds its crawl's record, and had a manifest, since removed: it
    # was said to be a worker's, and sent its user looking for another folder.
    masters = [str(folder) for folder in folders if _holds_a_masters_crawl(folder)]
    if masters:
        return (f"{what}: {', '.join(masters)} {'holds' if len(masters) == 1 else 'hold'} a "
                f"master's crawl ({JOURNAL_NAME} or {BROKER_MARK}) but not its {MANIFEST_NAME} "
                "(removed, or the master stopped before writing it); the crawler master "
                "command that crawled into it, run again, writes its result files anew")
    workers = [str(folder) for folder in folders if (folder / IMAGES_DIR).is_dir()]
    if not workers:
        return f"{what}: run a crawl first"
    return (f"{what}: {', '.join(workers)} {'holds' if len(workers) == 1 else 'hold'} a "
            "worker's images, whose results are in the master's output folder; name that "
            "folder first: crawler report MASTER_OUTPUT_DIR "
            + " ".join(map(shell_word, workers)))


def _holds_a_masters_crawl(folder: Path) -> bool:
    """Whether ``folder`` is a master's output folder: its journal, or the mark of the
    broker crawl whose results it holds."""
    return (folder / JOURNAL_NAME).is_file() or (folder / BROKER_MARK).is_file()


def read_manifest(path: Path, manifest: Manifest | None = None, *,
                  missing_ok: bool = False) -> int:
    """Stream ``path`` into ``manifest``; malformed lines are counted, not fatal.

    Returns 1 when the file was read, 0 when it is missing and ``missing_ok``.
    """
    manifest = manifest if manifest is not None else Manifest()
    try:
        with path.open("rb") as stream:
            for raw in _lines(stream, manifest):
                entry = parse_line(raw)
                if entry is None:
                    manifest.malformed += 1
                else:
                    manifest.add(entry)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if missing_ok:
            return 0
        raise UsageError(f"{path.parent} has no {MANIFEST_NAME}: run a crawl first") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return 1


def read_failed_pages(path: Path, manifest: Manifest) -> None:
    """Add the pages of ``path`` (pages.jsonl) that did not get crawled; the last line wins."""
    latest: dict[str, FailedPage] = {page.url: page for page in manifest.failed_pages}
    try:
        with path.open("rb") as stream:
            for raw in _lines(stream, manifest):
                try:
                    data = json.loads(raw)
                except ValueError:
                    manifest.malformed += 1
                    continue
                url = _text(data.get("url")) if isinstance(data, dict) else None
                if not url or not isinstance(data, dict):
                    manifest.malformed += 1
                    continue
                latest.pop(url, None)  # to the end: the order of the last attempts
                latest[url] = FailedPage(url, _text(data.get("reason")) or "",
                                         _count(data.get("http_status")),
                                         data.get("final") is not False)
    except (FileNotFoundError, NotADirectoryError):
        return  # a crawl where every page was crawled, or one from before pages.jsonl
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    manifest.failed_pages = list(latest.values())


def _lines(stream: BinaryIO, manifest: Manifest) -> Iterator[bytes]:
    """The non-blank lines of ``stream``; an overlong line is drained and counted as malformed.

    A last line with no line break that is no JSON is one the master is writing (a
    running crawl's results go out in buffered batches, which can end mid-line) or was
    writing when it was killed (a rerun rewrites the file from its journal): it is left
    out, not counted as damage.
    """
    while raw := stream.readline(MAX_LINE_BYTES + 1):
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            manifest.malformed += 1
            # Drain the rest of the line in bounded pieces, never holding it whole.
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            continue
        if not raw.endswith(b"\n") and not _is_json(raw):
            return  # the end of the file: a line still being written
        if raw.strip():
            yield raw


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def parse_line(raw: bytes) -> Entry | None:
    """One manifest line as an :class:`Entry`, or None when it is not a usable record.

    A line needs a text ``url`` and a ``status`` of "success" or "failure";
    any other field of the wrong type is treated as unknown rather than
    failing the line, so a manifest from a slightly different version still
    reports.
    """
    try:
        data = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError: a line that is not UTF-8
        return None
    if not isinstance(data, dict):
        return None
    url, status = _text(data.get("url")), data.get("status")
    if not url or status not in ("success", "failure"):
        return None
    ref = data.get("ref")
    said = ref if isinstance(ref, dict) else {}
    return Entry(url=url, ok=status == "success", reason=_text(data.get("reason")) or "",
                 page=_text(data.get("page")), worker=_text(data.get("worker")),
                 path=_text(data.get("path")), bytes=_count(data.get("bytes")),
                 attempts=_count(data.get("attempts")), width=_count(data.get("width")),
                 height=_count(data.get("height")),
                 content_type=_text(data.get("content_type")),
                 alt=_text(said.get("alt")) or None,
                 caption=_text(said.get("caption")) or _text(said.get("title")) or None)


def _text(value: Any) -> str | None:
    """``value`` if it is a string, made encodable: JSON escapes can hold lone surrogates."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _count(value: Any) -> int | None:
    # bool is an int subclass; true is not a byte count.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


# --------------------------------------------------------------------------- rendering


@dataclass
class _Context:
    """What rendering one figure needs: where to look for files, and what was counted."""

    bases: list[str]  # the folders, as strings; the first holds index.html
    hosts: Counter[str] = field(default_factory=Counter)
    sizes: Counter[str] = field(default_factory=Counter)
    elsewhere: Counter[str] = field(default_factory=Counter)  # by host
    # Figures by data-status: "elsewhere" counts besides those above the ones with no
    # file recorded (a tutorial worker's) or a path out of the folders.
    statuses: Counter[str] = field(default_factory=Counter)
    not_shown: int = 0  # successes without a thumbnail, for any reason
    this_host: str = field(default_factory=socket.gethostname)


def render(manifest: Manifest, folders: Path | Sequence[Path]) -> str:
    """The whole page as one string; ``folders`` are where images are looked for."""
    return "".join(render_parts(manifest, folders))


def render_parts(manifest: Manifest, folders: Path | Sequence[Path]) -> list[str]:
    """The page in pieces, in order, as they are written: joined into one string (and
    encoded whole by the write) the page was in memory twice more (100,000 images: a
    report of 88 MB took 406 MB at its peak, 198 MB written in pieces)."""
    folders = [folders] if isinstance(folders, Path) else list(folders)
    context = _Context([os.fspath(folder) for folder in folders])
    out: list[str] = []
    add = out.append
    names = ", ".join(_shown(folder.resolve().name or str(folder)) for folder in folders)
    title = f"Crawl report: {names}"
    add('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style></head>\n<body>\n")

    # The gallery first: only then are hosts, sizes and files elsewhere known.
    gallery: list[str] = []
    # In the order of their addresses, numbers as numbers (p2 before p10); unknown last.
    groups = sorted(manifest.pages.items(), key=lambda item: _in_order(item[0]))
    failed_on: Counter[str | None] = Counter(entry.page for entry in manifest.failures.values())
    # Every page gets a number for the page filter: those with images, then those
    # whose images all failed.
    page_numbers = {page: number for number, (page, _) in enumerate(groups, 1)}
    for entry in manifest.failures.values():
        page_numbers.setdefault(entry.page, len(page_numbers) + 1)
    figures_before = live_figures = 0
    for number, (page, entries) in enumerate(groups, 1):
        # A page's images in the order of their addresses too: the manifest's is the order
        # workers finished them, so i10, i2, i7 one run and i7, i10, i2 the next.
        entries = sorted(entries, key=lambda entry: _in_order(entry.url))
        gallery.append(f'<section class="page" id="page-{number}"><h2>')
        gallery.append(_link(page) if page is not None else "Found on no recorded page")
        failed = f", {failed_on[page]} failed" if failed_on[page] else ""
        gallery.append(f' <small>({_plural(len(entries), "image")}{failed})</small></h2>\n'
                       '<div class="grid">\n')
        page_html = escape(page or "")
        for start in range(0, len(entries), CHUNK_FIGURES):
            chunk = entries[start:start + CHUNK_FIGURES]
            later = figures_before >= LIVE_FIGURES
            if later:
                gallery.append('<template class="later">\n')
            for entry in chunk:
                _figure(gallery, entry, number, page_html, context)
            if later:
                gallery.append("</template>\n")
            else:
                live_figures += len(chunk)
            figures_before += len(chunk)
        gallery.append("</div></section>\n")
    failures: list[str] = []
    _failures(failures, manifest.failures.values(), page_numbers, context)
    _failed_pages(failures, manifest.failed_pages)

    # An image a link led to, read as a page that was the image itself (README: its page
    # is its own URL), is no page the crawl read: not counted as one.
    pages_crawled = len([page for page, entries in manifest.pages.items()
                         if page is not None and any(entry.url != page for entry in entries)])
    add(f'<header><h1>{escape(title)}</h1>\n<p class="summary" id="summary">'
        f"{manifest.succeeded} succeeded, {len(manifest.failures)} failed, "
        f"{manifest.total_bytes:,} bytes ({human_bytes(manifest.total_bytes)})"
        f" \u2014 images from {_plural(pages_crawled, 'page')}"
        f"{f', {len(manifest.failed_pages)} not crawled' if manifest.failed_pages else ''}"
        "</p>\n")
    state = _crawl_state(folders[0] / SUMMARY_NAME)
    if state:
        add(f'<p class="note" id="state">{escape(state)}</p>\n')
    if context.not_shown:
        add(f'<p class="note" id="elsewhere">{_plural(context.not_shown, "image")} not shown')
        if context.elsewhere:
            away = sum(context.elsewhere.values())
            hosts = ", ".join(f"{escape(host)} ({count})"
                              for host, count in context.elsewhere.most_common(5))
            # A local worker stores here: its file missing was deleted or moved since.
            add(f": {away} recorded as stored, and not in "
                f"{'these folders' if len(folders) > 1 else 'this folder'} (by workers on "
                f"{hosts}): deleted or moved since, or stored in workers' own output folders "
                "on other hosts; name those too (copied here): <code>crawler report "
                f"{escape(_shown(str(folders[0])))} WORKER_FOLDER</code>")
            # Said where the command runs too: only the page said it, far down a gallery
            # that simply looked short.
            log.warning("%s recorded as stored %s not in %s (by workers on %s): deleted or "
                        "moved since, or stored in workers' own output folders; name those "
                        "too (copied here, if on other hosts): crawler report %s WORKER_FOLDER",
                        _plural(away, "image"), "is" if away == 1 else "are",
                        "these folders" if len(folders) > 1 else shell_word(str(folders[0])),
                        ", ".join(f"{host} ({count})" for host, count
                                  in context.elsewhere.most_common(5)),
                        shell_word(str(folders[0])))
        add(".</p>\n")
    if manifest.malformed:
        add(f'<p class="note" id="malformed">{_plural(manifest.malformed, "malformed line")} '
            "skipped.</p>\n")
    _filters(out, page_numbers, failed_on, manifest, context)
    add("</header>\n<main>\n")
    add(f'<h2 class="part" id="gallery" data-total="{manifest.succeeded}">Images by page</h2>\n')
    if live_figures < figures_before:  # some wait in templates
        add(f'<noscript><p class="note" id="scripts-off">Scripts are off: the first images are '
            f"shown, the other {figures_before - live_figures:,} need this page's script "
            "to come into view.</p></noscript>\n")
    if not groups:
        add("<p>No image was downloaded.</p>\n")
    out.extend(gallery)
    out.extend(failures)
    add('</main>\n<div id="lightbox" hidden role="dialog" aria-label="image">'
        '<button id="lb-close" title="close (Esc)">\u00d7</button>'
        '<button id="lb-prev" title="previous (\u2190)">\u2039</button>'
        '<button id="lb-next" title="next (\u2192)">\u203a</button>'
        '<p id="lb-text"></p>'
        '<p><a id="lb-link" rel="noopener noreferrer"></a></p><p id="lb-where"></p></div>\n')
    add(f"<script>{SCRIPT}</script>\n</body></html>\n")
    return out


def _run_again(folder: Path) -> str:
    """What running a crawl that did not end again does: a demo's (its site, on a port
    of its own, is gone) starts afresh."""
    if (folder / DEMO_MARK).exists():
        return "The demo starts afresh when run again (crawler demo)."
    return "Running it again goes on where it stopped."


def _crawl_state(summary_path: Path) -> str:
    """What the gallery should say of a crawl that did not end (empty when it did): the
    last run removes its summary as it starts and writes it when it ends."""
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not any((summary_path.parent / mark).exists() for mark in _CRAWL_MARKS):
            return ""  # not a master's folder (a worker's, copied here): no summary is kept
        return ("This crawl has no summary: it is still running, or its last run was "
                f"stopped before its end. {_run_again(summary_path.parent)}")
    except (OSError, ValueError):
        return ""
    if not isinstance(summary, dict):
        return ""
    try:
        settled = int(summary.get("succeeded") or 0) + int(summary.get("failed") or 0)
        found = int(summary.get("found") or 0)
        pages_left = int(summary.get("pages_left") or 0)
        images_left = int(summary.get("images_left") or 0)
        at_depth_limit = int(summary.get("pages_at_depth_limit") or 0)
    except (TypeError, ValueError, OverflowError):  # a damaged summary (1e400): say nothing
        return ""
    if summary.get("interrupted"):
        return (f"This crawl was interrupted: {settled:,} of the {found:,} images found so "
                f"far are settled. {_run_again(summary_path.parent)}")
    left = [f"{pages_left:,} page(s) found were not visited (--max-pages)"] if pages_left else []
    left += [f"{images_left_shown(images_left, separator=',')} image(s) found were not "
             "queued (--max-images)"] if images_left else []
    left += [f"{at_depth_limit:,} page(s) at the depth limit link to pages not visited "
             "(--depth)"] if at_depth_limit else []
    return f"This crawl reached its budget: {'; '.join(left)}." if left else ""


# What a master's folder holds besides the summary: its journal, or a broker crawl's mark.
_CRAWL_MARKS = (JOURNAL_NAME, BROKER_MARK)


def _filters(out: list[str], page_numbers: dict[str | None, int],
             failed_on: Counter[str | None], manifest: Manifest, context: _Context) -> None:
    """The filter bar: page, host, status, size, each option with its count (``failed_on``:
    the failed images of each page)."""
    add = out.append
    counts = failed_on.copy()
    for page, entries in manifest.pages.items():
        counts[page] += len(entries)
    # Hidden until the script shows it: without scripts the filters could not work.
    add('<form class="filters" id="filters" hidden><label>page <select id="f-page">'
        '<option value="">all pages</option>')
    for page, number in page_numbers.items():
        label = page if page is not None else "no recorded page"
        add(f'<option value="{number}">{escape(_short(label))} ({counts[page]})</option>')
    add('</select></label><label>host <select id="f-host"><option value="">all hosts</option>')
    for host, count in sorted(context.hosts.items()):
        add(f'<option value="{escape(host)}">{escape(host)} ({count})</option>')
    add('</select></label><label>status <select id="f-status"><option value="">any</option>'
        f'<option value="here">stored here ({context.statuses["here"]})'
        f'</option><option value="elsewhere">stored elsewhere ({context.statuses["elsewhere"]})'
        f'</option><option value="failed">failed ({len(manifest.failures)})</option></select>'
        '</label><label>size <select id="f-size"><option value="">any size</option>')
    for key, _limit, label in SIZE_CLASSES:
        if key != "unknown" or context.sizes[key]:  # (no choice that shows nothing)
            add(f'<option value="{key}">{label} ({context.sizes[key]})</option>')
    add('</select></label><span id="shown"></span></form>\n')


def _figure(out: list[str], entry: Entry, page_number: int, page_html: str,
            context: _Context) -> None:
    """Append one image's figure: a thumbnail of its file, or where that file is.

    Each value is escaped once (``page_html`` once per page): this runs per image.
    """
    inside = _inside(entry.path)
    href = _local_href(context.bases, entry.path) if inside else None
    name = escape(_file_name(entry))
    url = escape(entry.url)
    plain_host = _host(entry.url)  # counted as it is: the host filter escapes its options
    host = escape(plain_host)
    size = _size_class(entry.bytes)
    context.hosts[plain_host] += 1
    context.sizes[size] += 1
    details = escape(_details(entry))
    add = out.append
    context.statuses["here" if href is not None else "elsewhere"] += 1
    if href is not None:
        tiny = ' class="tiny"' if entry.width is not None and entry.width < 64 else ""
        # An SVG opened as a document runs the scripts a hostile site put in it, at a
        # file: address: shown by <img> only (the thumbnail, the lightbox), no link.
        link = "" if _is_svg(entry) else f' href="{href}"'
        add(f'<figure class="image item" data-page="{page_number}" data-host="{host}" '
            f'data-status="here" data-size="{size}" data-full="{href}" data-name="{name}" '
            f'data-url="{url}" data-details="{details}" data-width="{entry.width or 0}" '
            f'data-where="{page_html}"><a class="thumb"{link}>'
            f'<img loading="lazy" decoding="async" src="{href}" '
            f'alt="{escape(entry.alt) if entry.alt else name}"{tiny}></a>')
    else:
        add(f'<figure class="image item" data-page="{page_number}" data-host="{host}" '
            f'data-status="elsewhere" data-size="{size}">')
        context.not_shown += 1
        if not entry.path:
            note = "no file recorded"
        elif not inside:
            note = "not shown: its path leaves the output folder"
        else:
            worker_host = (entry.worker or "").partition(":")[0]
            context.elsewhere[worker_host or "an unknown host"] += 1
            # A worker of this host stored it here (removed since?), or in a folder of
            # its own: either way, not "on" a host the user must go and look at.
            mine = bool(worker_host) and worker_host == context.this_host
            note = (f"not in this folder; stored by a worker on "
                    f"{escape(worker_host) or 'an unknown host'}"
                    f"{f' (worker {escape(entry.worker)})' if entry.worker else ''}"
                    f"{_REMOVED_HERE if mine else ''}<br>"
                    f"<code>{escape(entry.path)}</code>")
        add(f'<p class="missing">{note}</p>')
    link = (f'<a href="{url}" rel="noopener noreferrer">{name}</a>' if _is_http(entry.url)
            else name)
    # The page's words for it, where it had some: its alt text and its caption (or
    # title), each once (a caption alone hid the alt text, which README promises).
    said = " \u2014 ".join(dict.fromkeys(text for text in (entry.alt, entry.caption) if text))
    caption = f'<span class="caption">{escape(said)}</span>' if said else ""
    kind = by_media_type((entry.content_type or "").partition(";")[0].strip().lower())
    shown_by = _NOT_EVERY_BROWSER.get(kind.name) if href is not None and kind else None
    if shown_by:  # a broken thumbnail in most browsers: the file is fine
        caption += f'<span class="caption">{shown_by}</span>'
    add(f'<figcaption><span class="name">{link}</span>{caption}'
        f'<span class="details">{details}</span></figcaption></figure>\n')


# Types stored whole that most browsers do not draw (Chromium and Firefox): said on the
# tile, whose thumbnail shows broken there.
_NOT_EVERY_BROWSER = {  # by type (ImageType.name), whatever a server called it
    "tiff": "TIFF: few browsers show it (Safari does); the file is stored whole",
    "heic": "HEIC: few browsers show it (Safari does); the file is stored whole",
    "jxl": "JPEG XL: few browsers show it (Safari does); the file is stored whole",
}

_REMOVED_HERE = (", this host: removed from this folder since, or stored in another one; "
                 "if removed, the same crawl command run here again downloads it again")


def _in_order(page: str | None) -> tuple[bool, list[tuple[str, int]]]:
    """A sort key for pages and images: by address, with runs of digits compared as
    numbers."""
    if page is None:
        return True, []
    parts = re.split(r"(\d+)", page)
    return False, [(text, 0) if n % 2 == 0 else ("", int(text)) for n, text in enumerate(parts)]


def _details(entry: Entry) -> str:
    parts = []
    if entry.width is not None and entry.height is not None:
        parts.append(f"{entry.width}\u00d7{entry.height}")
    if entry.bytes is not None:
        parts.append(human_bytes(entry.bytes))
    media_type = (entry.content_type or "").partition(";")[0].strip().lower()
    if media_type.startswith("image/"):
        # A known type by its own name, however the server spelt it (image/x-png was
        # "X-PNG"); another as its media type says.
        known = by_media_type(media_type)
        parts.append(known.name.upper() if known is not None
                     else media_type[6:].upper().removesuffix("+XML"))
    return " \u00b7 ".join(parts)


def _file_name(entry: Entry) -> str:
    """The name to show: the stored file's, else the last part of the URL's path."""
    if entry.path:
        return entry.path.rpartition("/")[2] or entry.path
    path = urlsplit(entry.url).path if "://" in entry.url else entry.url
    return path.rstrip("/").rpartition("/")[2] or entry.url


def _host(url: str) -> str:
    """The host (and port) of ``url``, in lower case; plain string work, as urlsplit costs
    more than the rest of a figure."""
    rest = url.partition("://")[2]
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    return host.lower() or "(no host)"


def _size_class(count: int | None) -> str:
    if count is None:
        return "unknown"
    for key, limit, _label in SIZE_CLASSES:
        if limit is None or count < limit:
            return key
    return "xl"


def _short(text: str, most: int = 90) -> str:
    return text if len(text) <= most else text[:most // 2 - 1] + "\u2026" + text[-most // 2:]


def _inside(path: str | None) -> bool:
    """Whether ``path`` is relative and stays inside the folder it is relative to.

    A worker's report must not make the page show files from elsewhere on
    this host. Plain string checks, not pathlib: this runs once per image.
    """
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    return ".." not in path.split("/")


def _is_svg(entry: Entry) -> bool:
    return (entry.content_type or "").startswith("image/svg") or (
        entry.path or "").lower().endswith((".svg", ".svgz"))


def _local_href(bases: list[str], path: str | None) -> str | None:
    """The URL of ``path`` relative to index.html (in ``bases[0]``), from the first folder of
    ``bases`` that holds it; None when none does."""
    if not path:
        return None
    for n, base in enumerate(bases):
        if os.path.isfile(f"{base}/{path}"):  # noqa: PTH113 - see _inside
            # From the folders as they are (their links resolved), where the report says
            # index.html is: "../m2" from a link to deep/a/m1 led to deep/a/m2.
            relative = path if n == 0 else os.path.relpath(
                f"{os.path.realpath(base)}/{path}", os.path.realpath(bases[0]))
            # Percent-encode everything but "/": a space, "#", "?", "%" or ":" in a
            # name must reach the file system, not end the path or read as a scheme.
            # As bytes: a folder's name need not be UTF-8, and a file: URL names bytes.
            return quote(os.fsencode(relative.replace(os.sep, "/")), safe="/")
    return None


def _failures(out: list[str], failures: Collection[Entry], page_numbers: dict[str | None, int],
              context: _Context) -> None:
    """Append the failed images, in manifest order, as a table: URL, reason, attempts, page."""
    out.append(f'<h2 class="part" id="failures">Failed images ({len(failures)})</h2>\n')
    if not failures:
        out.append("<p>No failures.</p>\n")
        return
    _say_rows_waiting(out, len(failures), "failed images")
    out.append('<table class="failures filtered"><colgroup><col style="width:35%">'
               '<col style="width:25%"><col style="width:8%"><col></colgroup>'
               "<thead><tr><th>URL</th><th>Reason</th><th>Attempts</th>"
               "<th>Page</th></tr></thead>\n<tbody>\n")
    _rows(out, (_failure_row(entry, page_numbers, context) for entry in failures))
    out.append("</tbody></table>\n")


def _failure_row(entry: Entry, page_numbers: dict[str | None, int], context: _Context) -> str:
    attempts = "" if entry.attempts is None else str(entry.attempts)
    page = "" if entry.page is None else _link(entry.page)
    host = _host(entry.url)
    context.hosts[host] += 0  # listed in the host filter, with no image counted
    return (f'<tr class="item" data-page="{page_numbers.get(entry.page, 0)}" '
            f'data-host="{escape(host)}" data-status="failed" data-size="">'
            f"<td>{_link(entry.url)}</td><td>{escape(entry.reason)}</td>"
            f'<td class="num">{attempts}</td><td>{page}</td></tr>\n')


def _say_rows_waiting(out: list[str], count: int, what: str) -> None:
    """Without scripts, the rows in templates never show: say so above their table."""
    if count > LIVE_ROWS:
        out.append(f'<noscript><p class="note">Scripts are off: the first {LIVE_ROWS} {what} '
                   f"are listed, the other {count - LIVE_ROWS:,} need this page's script."
                   "</p></noscript>\n")


def _rows(out: list[str], rows: Iterable[str]) -> None:
    """Append table rows: the first LIVE_ROWS live, the rest in ``<template>`` chunks of
    CHUNK_ROWS that the page's script moves into the table as its end nears the view."""
    waiting = False
    for number, row in enumerate(rows):
        if number >= LIVE_ROWS and (number - LIVE_ROWS) % CHUNK_ROWS == 0:
            out.append('</template>\n<template class="later">\n' if waiting
                       else '<template class="later">\n')
            waiting = True
        out.append(row)
    if waiting:
        out.append("</template>\n")


def _failed_pages(out: list[str], pages: list[FailedPage]) -> None:
    """Append the pages that could not be crawled: URL, reason, whether a rerun tries again."""
    out.append(f'<h2 class="part" id="failed-pages">Pages not crawled ({len(pages)})</h2>\n')
    if not pages:
        out.append("<p>No page failed.</p>\n")
        return
    _say_rows_waiting(out, len(pages), "pages")
    out.append('<table class="pages"><colgroup><col style="width:45%"><col>'
               '<col style="width:18%"></colgroup><thead><tr><th>Page</th><th>Reason</th>'
               "<th>Next run</th></tr></thead>\n<tbody>\n")
    _rows(out, (f"<tr><td>{_link(page.url)}</td><td>{escape(page.reason)}</td>"
                f"<td>{'' if page.final else 'tried again'}</td></tr>\n" for page in pages))
    out.append("</tbody></table>\n")


def _link(url: str) -> str:
    """``url`` as escaped text, made a link only when it is http(s): never javascript: or file:."""
    text = escape(url)
    if _is_http(url):
        return f'<a href="{text}" rel="noopener noreferrer">{text}</a>'
    return text


def _is_http(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


def _shown(name: str) -> str:
    """A file name as text the page can hold: bytes of a name that are not UTF-8 (which
    Python keeps as lone surrogates) are shown as U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --------------------------------------------------------------------------- writing


def _write_atomically(target: Path, text: str | Iterable[str]) -> None:
    """Write ``target`` through a temporary file beside it, so a reader never sees half a page."""
    # A fresh name opened with "x" (not mkstemp) so the file gets the umask's
    # usual mode, readable like every other file the crawl wrote.
    partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.partial")
    try:
        with partial.open("x", encoding="utf-8", newline="\n") as stream:
            if isinstance(text, str):
                stream.write(text)
            else:
                stream.writelines(text)
        partial.replace(target)
    except BaseException as exc:  # Ctrl-C too: no partial file is left behind
        with contextlib.suppress(OSError):  # the original error is the one worth reporting
            partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
