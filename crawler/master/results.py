"""results.log and manifest.jsonl: one line per image URL with a final outcome.

The journal is the record; these two files are views of it that a person or
a script reads. On start they are rewritten from the journal, so a crash
between the journal and the files never leaves a line missing or doubled.

pages.jsonl lists the pages that could not be crawled, one JSON object per
line (``url``, ``reason``, ``http_status``, ``final``: false when a later run
tries the page again). The journal keeps no reasons, so this file is appended
to, and a reader takes the last line of a URL. A page listed so that a run
crawls after all loses its lines when the run's files close; one that fails
again is listed anew, its earlier lines dropped then (else every run added a
line per such page, for ever); one the run leaves out of its scope or never
reaches stays listed. A last line cut short (a full disk) is dropped as a run
starts: the run's own lines would go on from it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from crawler.errors import StorageError
from crawler.model.files import MANIFEST_NAME, PAGES_NAME, RESULTS_NAME
from crawler.model.folders import folder_in_place_of_file, link_in_place_of_file
from crawler.model.outcome import NAME_TAKEN_ADVICE, ROBOTS_UNREACHABLE, Outcome
from crawler.model.urls import host_key_of_normalized

log = logging.getLogger(__name__)

# Reasons that end with the image's own measure ("too small: 10x10", "too large: 2097226
# bytes > 1048576"): counted under their first words, or a summary of many small icons
# lists a reason per size. The manifest keeps each whole.
_MEASURED = ("too small:", "too big:", "too large:")

# Reasons that name the image's own redirect target or file: counted under what they
# say of it, or a site that sends every image elsewhere, or a stray file that blocks a
# folder of them, lists a reason per image. The manifest keeps each whole.
# "redirected to https://cdn.example/a.png: matched by --reject (crawl.image_deny)"
_REDIRECTED = re.compile(r"redirected to \S+: ")
# Store's PathConflict, which names the image's path (and the file in the way):
# (start, end, counted as).
_NAME_TAKEN = (
    ("cannot store ", f": a folder the crawler did not make has this name; {NAME_TAKEN_ADVICE}",
     f"cannot store: a folder the crawler did not make has the image's name; "
     f"{NAME_TAKEN_ADVICE}"),
    ("cannot store ", " is a file the crawler did not store, where a folder is needed; "
                      f"{NAME_TAKEN_ADVICE}",
     "cannot store: a file the crawler did not store is where a folder is needed; "
     f"{NAME_TAKEN_ADVICE}"),
)
# A download's partial file removed under it (PartialLost, or the worker's sink reading it
# back): the reason names that file, and the image's, so a cleaner that emptied the
# partials folder under a busy worker would list a reason per download.
_PARTIAL_LOST = re.compile(r"partial file .+ is gone before it was stored[ ;]", re.DOTALL)
# How much of pages.jsonl is read at a time, back from its end, to find its last line.
_BLOCK = 64 * 1024

_PARTIAL_LOST_COUNTED = ("partial file gone before it was stored; did another program clean "
                         "its folder?")


def reason_counted(reason: str) -> str:
    """The key ``reason`` is counted under in the summary's failures by reason."""
    if reason.startswith(_MEASURED):
        return reason.split(":", 1)[0]
    if (redirected := _REDIRECTED.match(reason)) is not None:
        return "redirected: " + reason[redirected.end():]
    for start, end, counted in _NAME_TAKEN:
        if reason.startswith(start) and reason.endswith(end):
            return counted
    if _PARTIAL_LOST.match(reason):
        return _PARTIAL_LOST_COUNTED
    return reason


class ManifestTally:
    """What manifest.jsonl holds, counted as its lines are written.

    The run's summary reads its statistics here: reading the file back cost
    15 ms for 2,000 images, between the last download and the exit.
    """

    def __init__(self) -> None:
        self.by_status: collections.Counter[str] = collections.Counter()
        self.reasons: collections.Counter[str] = collections.Counter()  # of failures
        # host: succeeded, failed, bytes
        self.hosts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        self.entries = 0
        self.seconds = 0.0  # download time, all entries
        self.slowest = 0.0
        self.attempts = 0
        self.transient = 0  # failures the next run tries again
        # Images stored, by the worker that stored them: the summary tells which of them
        # are in another folder than the master's (a worker elsewhere, or with its --out).
        self.stored_by: collections.Counter[str] = collections.Counter()

    def add(self, outcome: Outcome) -> None:
        host = self.hosts[host_key_of_normalized(outcome.url) or "?"]
        self.by_status[outcome.status] += 1
        if outcome.ok:
            host["succeeded"] += 1
            host["bytes"] += outcome.bytes or 0
            if outcome.path and outcome.worker:  # (a tutorial worker's: where, it did not say)
                self.stored_by[outcome.worker] += 1
        else:
            host["failed"] += 1
            self.reasons[reason_counted(outcome.reason) or "unknown"] += 1
            # A refusal for an unreadable robots.txt is final in this run, not in the next
            # (the journal reopens its page): the summary counts it among those to retry.
            self.transient += outcome.transient or (outcome.reason or "").startswith(
                ROBOTS_UNREACHABLE)
        self.entries += 1
        self.seconds += outcome.elapsed_s
        self.slowest = max(self.slowest, outcome.elapsed_s)
        self.attempts += outcome.attempts


class ResultFiles:
    def __init__(self, folder: Path, existing: Iterable[Outcome]) -> None:
        """Rewrite both files from ``existing`` outcomes, then open them for appending."""
        self.results_path = folder / RESULTS_NAME
        self.manifest_path = folder / MANIFEST_NAME
        self.pages_path = folder / PAGES_NAME
        self.tally = ManifestTally()
        self._listed_before = _pages_listed(self.pages_path)
        self._crawled_again: set[str] = set()  # of those, the pages this run crawled
        self._listed_again: set[str] = set()  # and those this run listed anew
        in_place = self._folder_in_place()
        if in_place is not None:  # said before a file is touched
            raise _results_in_the_way(in_place)
        if self.pages_path.is_symlink():  # appended to, unlike the two rewritten anew
            raise link_in_place_of_file(self.pages_path, "write the crawl's results")
        try:
            # Copies a run killed left (kill -9, a power cut): only the close that rewrites
            # pages.jsonl would replace its copy, and it may never come. A symbolic link in
            # the place of a copy goes too: written through, it overwrote what it names.
            for partial in (*self._partials(), self._pages_partial()):
                partial.unlink(missing_ok=True)
            _drop_a_cut_last_line(self.pages_path)
            self._rewrite(existing)
            with contextlib.ExitStack() as opened:  # one that fails closes those before it
                self._results: TextIO = opened.enter_context(
                    self.results_path.open("a", encoding="utf-8"))
                self._manifest: TextIO = opened.enter_context(
                    self.manifest_path.open("a", encoding="utf-8"))
                self._pages: TextIO = opened.enter_context(
                    self.pages_path.open("a", encoding="utf-8"))
                self._earlier_lines = self._pages.tell()  # where this run's lines begin
                opened.pop_all()  # all three open: kept until close()
        except OSError as exc:
            raise self._cannot_write(exc) from exc

    def _partials(self) -> tuple[Path, Path]:
        """Where results.log and manifest.jsonl are written anew before they replace them."""
        return (self.results_path.with_suffix(".log.partial"),
                self.manifest_path.with_suffix(".jsonl.partial"))

    def _pages_partial(self) -> Path:
        """Where pages.jsonl is written anew, without the lines it drops, at close."""
        return self.pages_path.with_suffix(".jsonl.partial")

    def _rewrite(self, outcomes: Iterable[Outcome]) -> None:
        partial_results, partial_manifest = self._partials()
        try:
            # "x": made anew, never a file (or a link's target) put there since.
            with partial_results.open("x", encoding="utf-8") as results, \
                    partial_manifest.open("x", encoding="utf-8") as manifest:
                for outcome in outcomes:
                    self._put(outcome, results, manifest)
            partial_results.replace(self.results_path)
            partial_manifest.replace(self.manifest_path)
        # A full disk, a folder in a file's place, a second Ctrl-C while a large crawl's
        # files are rewritten: leave no half copy.
        except BaseException:
            for partial in (partial_results, partial_manifest):
                with contextlib.suppress(OSError):  # (a folder of that name stays)
                    if not partial.is_dir():
                        partial.unlink(missing_ok=True)
            raise

    def _folder_in_place(self) -> Path | None:
        """A folder with the name of a file written here, if there is one."""
        for path in (self.results_path, self.manifest_path, self.pages_path,
                     *self._partials(), self._pages_partial()):
            if path.is_dir():
                return path
        return None

    def _cannot_write(self, exc: OSError) -> StorageError:
        """The error for a result file that cannot be written: the folder that has its
        name, where there is one (the system says only "Is a directory", of no path)."""
        in_place = self._folder_in_place()  # (one made since the look before)
        if in_place is not None:
            return _results_in_the_way(in_place)
        return StorageError(f"cannot write results in {self.results_path.parent}: "
                            f"{exc.strerror or exc}")

    def write(self, outcomes: Iterable[Outcome]) -> None:
        try:
            for outcome in outcomes:
                self._put(outcome, self._results, self._manifest)
            self._results.flush()
            self._manifest.flush()
        except OSError as exc:  # either file: buffered, a write fails where it flushes
            raise StorageError(f"cannot append to {self.results_path.name} and "
                               f"{self.manifest_path.name} in {self.results_path.parent}: "
                               f"{exc.strerror or exc}") from exc

    def _put(self, outcome: Outcome, results: TextIO, manifest: TextIO) -> None:
        """One outcome's line in each file, and in the tally of what the manifest holds."""
        results.write(outcome.line() + "\n")
        manifest.write(outcome.to_json() + "\n")
        self.tally.add(outcome)

    def page_failed(self, url: str, reason: str, http_status: int, *, final: bool) -> None:
        """Record a page that could not be crawled (``final``: no later run tries it again)."""
        line = json.dumps({"url": url, "reason": reason, "http_status": http_status or None,
                           "final": final}, ensure_ascii=False)
        if url in self._listed_before:  # its earlier lines go at close: this one says it all
            self._listed_again.add(url)
        try:
            self._pages.write(line + "\n")
            self._pages.flush()
        except OSError as exc:
            raise StorageError(f"cannot append to {self.pages_path}: "
                               f"{exc.strerror or exc}") from exc

    def page_crawled(self, url: str) -> None:
        """A page this run crawled: listed before as not crawled, its lines go at close."""
        if url in self._listed_before:
            self._crawled_again.add(url)

    def close(self) -> None:
        """Close the three files, each whatever the others do. What a full disk left in
        their buffers cannot go either: StorageError, as the failed write said (the
        journal holds those outcomes, and the next run writes them from there)."""
        failed: OSError | None = None
        for file in (self._results, self._manifest, self._pages):
            try:
                file.close()
            except OSError as exc:
                failed = failed or exc
        if failed is not None:
            raise StorageError(f"cannot write the result files in {self.results_path.parent}: "
                               f"{failed.strerror or failed}") from failed
        if self._crawled_again or self._listed_again:
            self._drop_crawled_pages()

    def _drop_crawled_pages(self) -> None:
        """Leave out of pages.jsonl the failures of the pages this run crawled after all
        (else the report, which takes a URL's last line, shows them as not crawled), and
        the earlier lines of those it listed anew (else the file grows by a line per such
        page with every run)."""
        partial = self._pages_partial()
        try:
            with self.pages_path.open("rb") as old, partial.open("wb") as kept:
                at = 0
                for line in old:
                    earlier, at = at < self._earlier_lines, at + len(line)
                    url = _page_url(line)
                    if not (url in self._crawled_again
                            or (earlier and url in self._listed_again)):
                        kept.write(line)
            partial.replace(self.pages_path)
        except BaseException as exc:  # a Ctrl-C too: no half copy is left behind
            with contextlib.suppress(OSError):  # (a folder made there since the start stays)
                partial.unlink(missing_ok=True)
            if not isinstance(exc, OSError):
                raise
            log.warning("%s still lists %d page(s) this run crawled after all, as not "
                        "crawled: cannot rewrite it (%s%s)", self.pages_path,
                        len(self._crawled_again),
                        f"{exc.filename}: " if exc.filename else "", exc.strerror or exc)


class NoFiles(ResultFiles):
    """What a dry run writes: nothing. Beside :class:`ResultFiles`, whose calls it
    answers, so that the crawl loop treats both alike."""

    def __init__(self) -> None:
        self.tally = ManifestTally()  # stays empty

    def write(self, outcomes: Iterable[Outcome]) -> None:
        pass

    def page_failed(self, url: str, reason: str, http_status: int, *, final: bool) -> None:
        pass

    def page_crawled(self, url: str) -> None:
        pass

    def close(self) -> None:
        pass


def _results_in_the_way(path: Path) -> StorageError:
    return folder_in_place_of_file(path, "write the crawl's results")


def _page_entry(line: bytes) -> dict[str, Any] | None:
    """A pages.jsonl line's object; None for one that names no page (or is no JSON)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return None
    return data


def _page_url(line: bytes) -> str | None:
    """A pages.jsonl line's URL; None if it names none (a line that cannot be read,
    which is kept)."""
    entry = _page_entry(line)
    return None if entry is None else str(entry["url"])


def last_page_entries(path: Path) -> dict[str, dict[str, Any]]:
    """Each page's last line in pages.jsonl (``path``), by URL: the line a reader takes.
    Lines that name no page are left out; no file (or a folder in its place, said as the
    files open) is none. OSError for a file that cannot be read."""
    last: dict[str, dict[str, Any]] = {}
    try:
        with path.open("rb") as lines:
            for line in lines:
                entry = _page_entry(line)
                if entry is not None:
                    last[entry["url"]] = entry
    except (FileNotFoundError, IsADirectoryError):
        pass
    return last


def _drop_a_cut_last_line(path: Path) -> None:
    """Cut ``path`` after its last whole line. A line a full disk (or a crash) left
    without its end would take this run's first line with it: one line that no reader
    can read, and a page's failure lost with it."""
    try:
        with path.open("r+b") as file:
            end = file.seek(0, os.SEEK_END)
            whole = _after_the_last_line_break(file, end)
            if whole == end:
                return
            file.truncate(whole)
    except FileNotFoundError:
        return
    log.warning("%s ended in a line cut short (a full disk, or a crash as it was written): "
                "its %d byte(s) dropped", path, end - whole)


def _after_the_last_line_break(file: BinaryIO, end: int) -> int:
    """Where the last whole line of ``file``, ``end`` bytes long, ends (0: none does),
    read back from its end a block at a time."""
    start = end
    while start:
        block = min(start, _BLOCK)
        start -= block
        file.seek(start)
        data = file.read(block)
        if b"\n" in data:
            return start + data.rindex(b"\n") + 1
    return 0


def _pages_listed(path: Path) -> set[str]:
    """The pages pages.jsonl lists: a later run tries those not final again, and visits
    again those it looks at for more (crawl.sources widened) or anew."""
    try:
        entries = last_page_entries(path)
    except OSError as exc:  # then no line is dropped: a page may show as not crawled
        log.warning("cannot read %s: %s", path, exc.strerror or exc)
        return set()
    return set(entries)
