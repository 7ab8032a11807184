"""results.log and manifest.jsonl: one line per image URL with a final outcome.

The journal is the record; these two files are views of it that a person or
a script reads. On start they are rewritten from the journal, so a crash
between the journal and the files never leaves a line missing or doubled.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from crawler.errors import StorageError
from crawler.model.outcome import Outcome

RESULTS_NAME = "results.log"
MANIFEST_NAME = "manifest.jsonl"


class ResultFiles:
    def __init__(self, folder: Path, existing: Iterable[Outcome]) -> None:
        """Rewrite both files from ``existing`` outcomes, then open them for appending."""
        self.results_path = folder / RESULTS_NAME
        self.manifest_path = folder / MANIFEST_NAME
        try:
            self._rewrite(existing)
            self._results: TextIO = self.results_path.open("a", encoding="utf-8")
            self._manifest: TextIO = self.manifest_path.open("a", encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"cannot write results in {folder}: {exc.strerror or exc}") from exc

    def _rewrite(self, outcomes: Iterable[Outcome]) -> None:
        partial_results = self.results_path.with_suffix(".log.partial")
        partial_manifest = self.manifest_path.with_suffix(".jsonl.partial")
        with partial_results.open("w", encoding="utf-8") as results, \
                partial_manifest.open("w", encoding="utf-8") as manifest:
            for outcome in outcomes:
                results.write(outcome.line() + "\n")
                manifest.write(outcome.to_json() + "\n")
        partial_results.replace(self.results_path)
        partial_manifest.replace(self.manifest_path)

    def write(self, outcomes: Iterable[Outcome]) -> None:
        try:
            for outcome in outcomes:
                self._results.write(outcome.line() + "\n")
                self._manifest.write(outcome.to_json() + "\n")
            self._results.flush()
            self._manifest.flush()
        except OSError as exc:
            raise StorageError(f"cannot append to {self.results_path}: "
                               f"{exc.strerror or exc}") from exc

    def close(self) -> None:
        self._results.close()
        self._manifest.close()
