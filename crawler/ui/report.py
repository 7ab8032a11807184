"""``crawler report``: an HTML gallery of a finished crawl, read from its manifest.jsonl.

The page is one self-contained file, ``OUTPUT_DIR/index.html``, meant to be
opened from disk: inline CSS, no script, no external resource. Images are
grouped by the page they were found on and shown as lazy-loaded thumbnails
that link to the stored file; the failures follow in a table with their
reasons.

Everything in the manifest was written, one way or another, by strangers
(the URLs and the reasons come from web servers; paths and worker names from
workers), so every value is HTML-escaped, only http(s) URLs become links, and
only a relative path that stays inside the output folder becomes a thumbnail.
A Content-Security-Policy forbids scripts, so that even a mistake in escaping
cannot run code in a page that can read local files.

The manifest is streamed line by line and the HTML is built as a list of
strings, so a crawl of 100,000 images is reported in a few seconds; a line
longer than :data:`MAX_LINE_BYTES` is skipped without being held in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from crawler.errors import StorageError, UsageError
from crawler.master.results import MANIFEST_NAME
from crawler.ui.progress import human_bytes

REPORT_NAME = "index.html"

MAX_LINE_BYTES = 1 << 20
"""The longest manifest line read; a real one is under 10 KB, longer ones count as malformed."""

# Scripts are never needed; images come from the output folder (file: when
# opened from disk, 'self' when served) and styles from the one inline block.
CSP = "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;padding:1em 2em;max-width:1400px;
color:#222;background:#fafafa}
h1{margin:.2em 0}
h2{font-size:1.05em;margin:1.6em 0 .5em;word-break:break-all}
.summary{font-size:1.15em;font-weight:600}
.note{color:#8a5a00}
.page{content-visibility:auto;contain-intrinsic-size:auto 600px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
figure{margin:0;padding:8px;background:#fff;border:1px solid #ddd;border-radius:4px;
overflow:hidden}
.thumb{display:flex;align-items:center;justify-content:center;width:100%;height:160px;
background:#eee}
.thumb img{max-width:100%;max-height:160px}
.missing{color:#666;font-style:italic;text-align:center;padding:0 .5em;word-break:break-all}
figcaption{font-size:12px;color:#555;margin-top:4px}
figcaption .url{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top;
word-break:break-all}
th{background:#f0f0f0}
td.num{text-align:right;word-break:normal}
"""


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


@dataclass
class Manifest:
    """A manifest read in full: successes grouped by page (first seen first), then failures."""

    pages: dict[str | None, list[Entry]] = field(default_factory=dict)
    failures: list[Entry] = field(default_factory=list)
    succeeded: int = 0
    total_bytes: int = 0
    malformed: int = 0


def write_report(output_dir: Path) -> Path:
    """Write ``output_dir/index.html`` from ``output_dir/manifest.jsonl``; return its path.

    Raises :class:`UsageError` when there is no manifest (no crawl ran there)
    and :class:`StorageError` when the manifest cannot be read or the page
    cannot be written.
    """
    manifest = read_manifest(output_dir / MANIFEST_NAME)
    target = output_dir / REPORT_NAME
    _write_atomically(target, render(manifest, output_dir))
    return target


# --------------------------------------------------------------------------- reading


def read_manifest(path: Path) -> Manifest:
    """Stream ``path`` into a :class:`Manifest`; malformed lines are counted, not fatal."""
    manifest = Manifest()
    try:
        with path.open("rb") as stream:
            for raw in _lines(stream, manifest):
                entry = parse_line(raw)
                if entry is None:
                    manifest.malformed += 1
                elif entry.ok:
                    manifest.pages.setdefault(entry.page, []).append(entry)
                    manifest.succeeded += 1
                    manifest.total_bytes += entry.bytes or 0
                else:
                    manifest.failures.append(entry)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UsageError(f"{path.parent} has no {MANIFEST_NAME}: run a crawl first") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return manifest


def _lines(stream: BinaryIO, manifest: Manifest) -> Iterator[bytes]:
    """The non-blank lines of ``stream``; an overlong line is drained and counted as malformed."""
    while raw := stream.readline(MAX_LINE_BYTES + 1):
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            manifest.malformed += 1
            # Drain the rest of the line in bounded pieces, never holding it whole.
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            continue
        if raw.strip():
            yield raw


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
    return Entry(url=url, ok=status == "success", reason=_text(data.get("reason")) or "",
                 page=_text(data.get("page")), worker=_text(data.get("worker")),
                 path=_text(data.get("path")), bytes=_count(data.get("bytes")),
                 attempts=_count(data.get("attempts")), width=_count(data.get("width")),
                 height=_count(data.get("height")))


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


def render(manifest: Manifest, output_dir: Path) -> str:
    """The whole page as one string; ``output_dir`` is where thumbnails are looked for."""
    base = os.fspath(output_dir)
    out: list[str] = []
    add = out.append
    title = f"Crawl report: {output_dir.resolve().name or output_dir}"
    add('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style></head>\n<body>\n")

    # Render the gallery first: only then is it known how many files are elsewhere.
    gallery: list[str] = []
    elsewhere = 0
    groups = sorted(manifest.pages.items(), key=lambda item: item[0] is None)  # unknown last
    for number, (page, entries) in enumerate(groups, 1):
        gallery.append(f'<section class="page" id="page-{number}"><h2>')
        gallery.append(_link(page) if page is not None else "Found on no recorded page")
        gallery.append(f' <small>({_plural(len(entries), "image")})</small></h2>\n'
                       '<div class="grid">\n')
        for entry in entries:
            shown = _figure(gallery, entry, base)
            elsewhere += not shown
        gallery.append("</div></section>\n")

    add(f'<header><h1>{escape(title)}</h1>\n<p class="summary" id="summary">'
        f"{manifest.succeeded} succeeded, {len(manifest.failures)} failed, "
        f"{manifest.total_bytes:,} bytes ({human_bytes(manifest.total_bytes)})</p>\n")
    if elsewhere:
        add(f'<p class="note" id="elsewhere">{_plural(elsewhere, "image")} '
            "not shown: not stored in this folder.</p>\n")
    if manifest.malformed:
        add(f'<p class="note" id="malformed">{_plural(manifest.malformed, "malformed line")} '
            f"of {MANIFEST_NAME} skipped.</p>\n")
    add('<nav><a href="#failures">Failures</a></nav></header>\n<main>\n'
        '<h2 class="part">Images by page</h2>\n')
    if not groups:
        add("<p>No image was downloaded.</p>\n")
    out.extend(gallery)
    _failures(out, manifest.failures)
    add("</main></body></html>\n")
    return "".join(out)


def _figure(out: list[str], entry: Entry, base: str) -> bool:
    """Append one image's figure; return whether its file is here to show as a thumbnail."""
    inside = _inside(entry.path)
    href = _local_href(base, entry.path) if inside else None
    add = out.append
    add('<figure class="image">')
    if href is not None:
        name = entry.path.rpartition("/")[2] if entry.path else ""
        add(f'<a class="thumb" href="{href}"><img loading="lazy" decoding="async" '
            f'src="{href}" alt="{escape(name)}"></a>')
    elif not entry.path:
        add('<div class="thumb"><p class="missing">no file recorded</p></div>')
    elif not inside:
        add('<div class="thumb"><p class="missing">not shown: its path leaves the output '
            "folder</p></div>")
    else:
        worker = escape(entry.worker) if entry.worker else "an unknown worker"
        add(f'<div class="thumb"><p class="missing">stored on worker {worker}<br>'
            f"<code>{escape(entry.path)}</code></p></div>")
    details = []
    if entry.bytes is not None:
        details.append(human_bytes(entry.bytes))
    if entry.width is not None and entry.height is not None:
        details.append(f"{entry.width}\u00d7{entry.height}")
    add(f'<figcaption><span class="url">{_link(entry.url)}</span>'
        f'{", ".join(details)}</figcaption></figure>\n')
    return href is not None


def _inside(path: str | None) -> bool:
    """Whether ``path`` is relative and stays inside the folder it is relative to.

    A worker's report must not make the page show files from elsewhere on
    this host. Plain string checks, not pathlib: this runs once per image.
    """
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    return ".." not in path.split("/")


def _local_href(base: str, path: str | None) -> str | None:
    """The URL of ``path`` relative to index.html when that file is in ``base``, else None."""
    if not path or not os.path.isfile(f"{base}/{path}"):  # noqa: PTH113 - see _inside
        return None
    # Percent-encode everything but "/": a space, "#", "?", "%" or ":" in a
    # name must reach the file system, not end the path or read as a scheme.
    return quote(path, safe="/")


def _failures(out: list[str], failures: list[Entry]) -> None:
    """Append the failures, in manifest order, as a table: URL, reason, attempts, page."""
    out.append(f'<h2 class="part" id="failures">Failures ({len(failures)})</h2>\n')
    if not failures:
        out.append("<p>No failures.</p>\n")
        return
    out.append('<table class="failures"><thead><tr><th>URL</th><th>Reason</th><th>Attempts</th>'
               "<th>Page</th></tr></thead>\n<tbody>\n")
    for entry in failures:
        attempts = "" if entry.attempts is None else str(entry.attempts)
        page = "" if entry.page is None else _link(entry.page)
        out.append(f"<tr><td>{_link(entry.url)}</td><td>{escape(entry.reason)}</td>"
                   f'<td class="num">{attempts}</td><td>{page}</td></tr>\n')
    out.append("</tbody></table>\n")


def _link(url: str) -> str:
    """``url`` as escaped text, made a link only when it is http(s): never javascript: or file:."""
    text = escape(url)
    if url[:8].lower().startswith(("http://", "https://")):
        return f'<a href="{text}" rel="noopener noreferrer">{text}</a>'
    return text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --------------------------------------------------------------------------- writing


def _write_atomically(target: Path, text: str) -> None:
    """Write ``target`` through a temporary file beside it, so a reader never sees half a page."""
    # A fresh name opened with "x" (not mkstemp) so the file gets the umask's
    # usual mode, readable like every other file the crawl wrote.
    partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.partial")
    try:
        with partial.open("x", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        partial.replace(target)
    except OSError as exc:
        with contextlib.suppress(OSError):  # the original error is the one worth reporting
            partial.unlink(missing_ok=True)
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
