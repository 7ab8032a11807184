"""results.log and manifest.jsonl: one line per image URL with a final outcome.

The journal is the record; these two files are views of it that a person or
a script reads. On start they are rewritten from the journal, so a crash
between the journal and the files never leaves a line missing or doubled.

pages.jsonl lists the pages that could not be crawled, one JSON object per
line (``url``, ``reason``, ``http_status``, ``final``: false when a later run
tries the page again). The journal keeps no reasons, so this file is appended
to, and a reader takes the last line of a URL; a run starts by dropping the
lines that are not final, since it tries those pages again (a page that fails
again is listed anew, one crawled is not listed).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from crawler.errors import StorageError
from crawler.model.files import MANIFEST_NAME, PAGES_NAME, RESULTS_NAME
from crawler.model.outcome import Outcome
from crawler.model.urls import host_key_of_normalized

# Reasons that end with the image's own measure ("too small: 10x10", "too large: 2097226
# bytes > 1048576"): counted under their first words, or a summary of many small icons
# lists a reason per size. The manifest keeps each whole.
_MEASURED = ("too small:", "too big:", "too large:")


def reason_counted(reason: str) -> str:
    """The key ``reason`` is counted under in the summary's failures by reason."""
    return reason.split(":", 1)[0] if reason.startswith(_MEASURED) else reason


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
        self.transient = 0  # failures worth another try (the next run tries them)

    def add(self, outcome: Outcome) -> None:
        host = self.hosts[host_key_of_normalized(outcome.url) or "?"]
        self.by_status[outcome.status] += 1
        if outcome.ok:
            host["succeeded"] += 1
            host["bytes"] += outcome.bytes or 0
        else:
            host["failed"] += 1
            self.reasons[reason_counted(outcome.reason) or "unknown"] += 1
            self.transient += outcome.transient
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
        try:
            self._rewrite(existing)
            self._drop_pages_tried_again()
            self._results: TextIO = self.results_path.open("a", encoding="utf-8")
            self._manifest: TextIO = self.manifest_path.open("a", encoding="utf-8")
            self._pages: TextIO = self.pages_path.open("a", encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"cannot write results in {folder}: {exc.strerror or exc}") from exc

    def _rewrite(self, outcomes: Iterable[Outcome]) -> None:
        partial_results = self.results_path.with_suffix(".log.partial")
        partial_manifest = self.manifest_path.with_suffix(".jsonl.partial")
        with partial_results.open("w", encoding="utf-8") as results, \
                partial_manifest.open("w", encoding="utf-8") as manifest:
            for outcome in outcomes:
                self._put(outcome, results, manifest)
        partial_results.replace(self.results_path)
        partial_manifest.replace(self.manifest_path)

    def _drop_pages_tried_again(self) -> None:
        """Leave out of pages.jsonl the pages whose failure was not final: this run has
        them in its frontier again. Else a page crawled now would still show as failed
        (the report takes a URL's last line). A line that cannot be read stays as it
        is; the file is rewritten only when a line goes."""
        try:
            old = self.pages_path.open("rb")
        except FileNotFoundError:
            return
        partial = self.pages_path.with_suffix(".jsonl.partial")
        dropped = False
        with old, partial.open("wb") as kept:
            for line in old:
                if _tried_again(line):
                    dropped = True
                else:
                    kept.write(line)
        if dropped:
            partial.replace(self.pages_path)
        else:
            partial.unlink()

    def write(self, outcomes: Iterable[Outcome]) -> None:
        try:
            for outcome in outcomes:
                self._put(outcome, self._results, self._manifest)
            self._results.flush()
            self._manifest.flush()
        except OSError as exc:
            raise StorageError(f"cannot append to {self.results_path}: "
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
        try:
            self._pages.write(line + "\n")
            self._pages.flush()
        except OSError as exc:
            raise StorageError(f"cannot append to {self.pages_path}: "
                               f"{exc.strerror or exc}") from exc

    def close(self) -> None:
        self._results.close()
        self._manifest.close()
        self._pages.close()


def _tried_again(line: bytes) -> bool:
    """Whether a pages.jsonl line is a failure a later run tries again (final: false)."""
    try:
        data = json.loads(line)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("final") is False
