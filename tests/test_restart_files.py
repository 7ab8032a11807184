"""A restart's result files: manifest.jsonl and results.log written again from the journal."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crawler.master.journal import ROBOTS_UNREACHABLE, Journal, PageDone
from crawler.master.results import ResultFiles
from crawler.model import outcome as outcome_module
from crawler.model.files import JOURNAL_NAME, MANIFEST_NAME, RESULTS_NAME
from crawler.model.outcome import Attempt, Outcome

SEED = "http://127.0.0.1:9/"


def journaled(folder: Path, images: int) -> list[str]:
    """A journal holding ``images`` outcomes (every third a failure); their JSON rows."""
    journal = Journal(folder)
    outcomes = [Outcome.from_attempt(
        Attempt(url=f"{SEED}i{i}.png", ok=i % 3 != 0, reason="" if i % 3 else "HTTP 404",
                path=f"images/http/i{i}.png" if i % 3 else None, bytes=100 + i,
                elapsed_s=0.01),
        page=f"{SEED}p{i // 50}", worker="w1", attempts=1,
        ref={"kind": "img", "alt": f"picture {i} \u00e9t\u00e9"}) for i in range(images)]
    journal.record(outcomes)
    journal.close()
    return [o.to_json() for o in outcomes]


class CountingEncoder(json.JSONEncoder):
    calls = 0

    def encode(self, o: Any) -> str:
        CountingEncoder.calls += 1
        return super().encode(o)


def test_a_restart_writes_the_journaled_rows_as_they_are_without_encoding_them_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = journaled(tmp_path, 3000)
    monkeypatch.setattr(outcome_module, "_ENCODER",
                        CountingEncoder(ensure_ascii=False, separators=(",", ":")))
    journal = Journal(tmp_path)
    files = ResultFiles(tmp_path, journal.outcomes())
    files.close()
    journal.close()
    # Each line once, in the journal's order, byte for byte the row journaled.
    assert (tmp_path / MANIFEST_NAME).read_text(encoding="utf-8").splitlines() == rows
    results = (tmp_path / RESULTS_NAME).read_text(encoding="utf-8").splitlines()
    assert len(results) == 3000 and results[1] == f"{SEED}i1.png--->success"
    assert results[0] == f"{SEED}i0.png--->failure: HTTP 404"
    assert files.tally.entries == 3000 and files.tally.by_status["failure"] == 1000
    # Encoding each outcome again was over half the rewrite of a large crawl.
    assert CountingEncoder.calls == 0


def test_a_row_of_another_version_or_with_a_line_break_is_written_whole_on_one_line(
        tmp_path: Path) -> None:
    journaled(tmp_path, 3)
    db = sqlite3.connect(tmp_path / JOURNAL_NAME)
    # An earlier version's row: no ref nor transient; another, pretty-printed over lines.
    older = {"url": f"{SEED}old.png", "status": "success", "reason": "", "page": SEED,
             "worker": "w0", "path": "images/old.png", "bytes": 7, "sha256": None,
             "content_type": None, "attempts": 1, "elapsed_s": 0.5, "width": 1, "height": 1}
    spread = json.loads(db.execute("SELECT outcome FROM images LIMIT 1").fetchone()[0])
    spread["url"] = f"{SEED}spread.png"
    with db:
        db.execute("INSERT INTO images (url, page, outcome) VALUES (?, ?, ?)",
                   (older["url"], SEED, json.dumps(older)))
        db.execute("INSERT INTO images (url, page, outcome) VALUES (?, ?, ?)",
                   (spread["url"], SEED, json.dumps(spread, indent=1)))
    db.close()
    journal = Journal(tmp_path)
    ResultFiles(tmp_path, journal.outcomes()).close()
    journal.close()
    lines = (tmp_path / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    assert json.loads(lines[3]) == {**older, "transient": False, "ref": None}
    assert json.loads(lines[4]) == spread


def sqlite_steps(journal: Journal, work: Callable[[], object]) -> int:
    """How many virtual machine steps SQLite took for ``work`` (the cost of its reads,
    counted the same on any machine, as no timer is)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    journal._db.set_progress_handler(count, 1)
    try:
        work()
    finally:
        journal._db.set_progress_handler(None, 1)
    return steps


def test_a_start_reads_the_outcomes_once_to_find_no_robots_refusal(tmp_path: Path) -> None:
    journaled(tmp_path, 3000)
    journal = Journal(tmp_path)
    journal.add_pages([(f"{SEED}p{i}", 1) for i in range(60)])
    journal.pages_done([PageDone(f"{SEED}p{i}", [], []) for i in range(60)])
    one_read = sqlite_steps(journal, lambda: journal._db.execute(
        "SELECT count(*) FROM images WHERE outcome LIKE ?", ("%x%",)).fetchone())
    # Before, three statements read every outcome, on every start of the crawl.
    assert sqlite_steps(journal, lambda: journal.reopen(robots_refusals=True)) < 1.5 * one_read
    # And a refusal is still found: its page is read again, the image forgotten.
    journal.record([Outcome.from_attempt(
        Attempt(url=f"{SEED}i7.png", ok=False, reason=f"{ROBOTS_UNREACHABLE} (HTTP 503)"),
        page=f"{SEED}p0", worker=None, attempts=1)])
    assert journal.reopen(robots_refusals=True) == 1
    assert journal.resume().pending_pages == [(f"{SEED}p0", 1)]
    assert f"{SEED}i7.png" not in {o.url for o in journal.outcomes()}
    journal.close()
