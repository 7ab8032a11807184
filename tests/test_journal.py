"""The crawl journal: a damaged one ends the master with one clear line and exit 3."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from crawler.errors import StorageError, UsageError
from crawler.master.journal import Journal, PageDone
from crawler.model.files import JOURNAL_NAME
from crawler.model.outcome import Attempt, Outcome

from .conftest import FixtureServer, folder_of_length, run_crawler

SEED = "http://127.0.0.1:9/"


def write_journal(folder: Path, images: int = 3000) -> Path:
    """A journal of a crawl under way, big enough to span many database pages."""
    journal = Journal(folder)
    journal.add_seeds([SEED])
    journal.page_done(SEED, [(f"{SEED}p{i}", 1) for i in range(300)],
                      [(f"{SEED}i{i}.png", SEED, None, None) for i in range(images)])
    journal.record([Outcome.from_attempt(Attempt(url=f"{SEED}i{i}.png", ok=False, reason="x"),
                                         page=SEED, worker=None, attempts=1)
                    for i in range(0, images, 2)])
    journal.close()  # the last connection checkpoints the WAL into the file
    return folder / JOURNAL_NAME


def garbage_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = random.Random(7).randbytes(8192)
    path.write_bytes(bytes(data))


def garbage_near_the_start(path: Path) -> None:
    """Where the crawl's identity is read from: its reading raised a traceback."""
    with path.open("r+b") as file:
        file.seek(8192)
        file.write(random.Random(8).randbytes(4096))


def truncated(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(50)


def a_row_that_is_no_outcome(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE images SET outcome = '{not json' WHERE rowid = 1")
    db.close()


@pytest.mark.parametrize("damage", [garbage_in_the_middle, garbage_near_the_start, truncated,
                                    a_row_that_is_no_outcome])
def test_a_damaged_journal_is_one_line_and_exit_3(site: FixtureServer, tmp_path: Path,
                                                  authkey: str,
                                                  damage: Callable[[Path], None]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    journal = write_journal(out)
    wal = journal.with_name(JOURNAL_NAME + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "all of it is in the file we damage"
    damage(journal)
    done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--quiet", cwd=tmp_path, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"crawler: error: the crawl journal {journal} is damaged")
    assert "move it away" in line


def test_a_journal_that_cannot_be_opened_is_not_called_damaged(site: FixtureServer,
                                                                tmp_path: Path,
                                                                authkey: str) -> None:
    """A full disk, or a folder in the journal's place, says what it is: the advice for a
    damaged journal (move it away) would throw a whole crawl away."""
    out = tmp_path / "out"
    (out / JOURNAL_NAME).mkdir(parents=True)
    done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--quiet", cwd=tmp_path, timeout=60)
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"crawler: error: cannot open the crawl journal {out / JOURNAL_NAME}")
    assert "damaged" not in line and "move it away" not in line


@pytest.mark.parametrize("side", ["-wal", "-shm"])
def test_a_folder_in_place_of_a_file_beside_the_journal_is_named_with_what_to_do(
        site: FixtureServer, tmp_path: Path, authkey: str, side: str) -> None:
    """SQLite said "attempt to write a readonly database" (-shm) or "disk I/O error" (-wal),
    naming neither the folder nor what to do; the journal beside it is left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    journal = write_journal(out, images=10)
    kept = journal.read_bytes()
    folder = out / (JOURNAL_NAME + side)
    folder.mkdir()
    done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--quiet", "--resume", cwd=tmp_path, timeout=60)
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (f"crawler: error: cannot open the crawl journal {journal}: {folder} is a "
                    "folder, where a file of the journal's goes; move it away, or choose "
                    "another output folder"), line
    assert folder.is_dir() and journal.read_bytes() == kept


def test_a_journal_another_program_holds_says_so(site: FixtureServer, tmp_path: Path,
                                                authkey: str) -> None:
    """A program that writes to the journal (an sqlite3 shell left in a transaction) holds
    it: "database is locked" alone said neither who nor what to do."""
    out = tmp_path / "out"
    out.mkdir()
    journal = write_journal(out, images=10)
    holder = sqlite3.connect(journal, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out",
                           str(out), "--quiet", "--resume", cwd=tmp_path, timeout=60)
    finally:
        holder.close()
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (f"crawler: error: cannot write the crawl journal {journal}: another "
                    "program holds it (an sqlite3 shell in a transaction?); end that, then "
                    "run the same command again"), line


def test_a_mistake_of_this_program_in_a_transaction_is_not_called_damage(
        tmp_path: Path) -> None:
    """A statement given the wrong values is a bug, raised as such, and rolled back: the
    file is whole, and the advice for a damaged journal (move it away) would throw the
    crawl away."""
    journal = Journal(tmp_path)
    journal.add_seeds([SEED])
    wrong = PageDone(SEED, [(f"{SEED}a", 1, "a third value")], [])  # type: ignore[list-item]
    with pytest.raises(sqlite3.ProgrammingError):
        journal.pages_done([wrong])
    journal.page_done(SEED, [(f"{SEED}b", 1)], [])  # the journal goes on
    assert journal.resume().pending_pages == [(f"{SEED}b", 1)]
    journal.close()


def test_a_full_disk_in_a_transaction_is_said_as_it_is(tmp_path: Path) -> None:
    """SQLite rolls a transaction back itself when the disk is full; our ROLLBACK then
    failed, and "cannot rollback - no transaction is active" was said in the place of
    why. SQLite's own size cap gives the same error as a full disk."""
    journal = Journal(tmp_path)
    journal.add_seeds([SEED])
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages + 5}")
    many = [(f"{SEED}{n}.png" + "x" * 200, SEED, None, None) for n in range(40_000)]
    with pytest.raises(StorageError) as full:
        journal.pages_done([PageDone(SEED, [], many)])
    assert str(full.value) == (  # what to free, and that nothing is lost (as a worker says)
        f"cannot write the crawl journal {tmp_path / JOURNAL_NAME}: the disk is full; free "
        f"some space on the disk that holds {tmp_path}, then run the same command again: "
        "the crawl goes on where it stopped")
    journal.page_done(SEED, [(f"{SEED}b", 1)], [])  # room for a small one: it goes on
    assert journal.resume().pending_pages == [(f"{SEED}b", 1)]
    journal.close()


def test_a_run_that_ended_with_no_lease_outstanding_is_known_to_the_next_run_only(
        tmp_path: Path) -> None:
    """Forgotten as a run starts: a crash of that run is never taken for such an end."""
    journal = Journal(tmp_path)
    assert not journal.run_starts()  # no run ended yet
    journal.run_ended(leases_outstanding=0)
    journal.close()
    journal = Journal(tmp_path)
    assert journal.run_starts()
    journal.close()
    journal = Journal(tmp_path)  # that run crashed
    assert not journal.run_starts()
    journal.run_ended(leases_outstanding=2)
    assert not journal.run_starts()
    journal.close()


def test_a_link_past_the_page_budget_found_nearer_the_seeds_takes_that_depth(
        tmp_path: Path) -> None:
    """Links left to a larger budget are read by a rerun at the depth of their shortest
    path, as followed ones are: else a rerun at --depth did not follow their links."""
    journal = Journal(tmp_path)
    journal.add_seeds([SEED])
    journal.pages_done([PageDone(SEED, [], [], left=((f"{SEED}far", 3), (f"{SEED}read", 3)))])
    journal.pages_done([PageDone(f"{SEED}read", [], [])])
    assert journal.pages_done([PageDone(f"{SEED}slow", [], [], left=(
        (f"{SEED}far", 2), (f"{SEED}read", 1), (f"{SEED}new", 2)))]) == 1
    journal.pages_done([PageDone(f"{SEED}other", [], [], left=((f"{SEED}far", 4),))])
    pending = dict(journal.resume().pending_pages)
    journal.close()
    assert pending == {f"{SEED}far": 2, f"{SEED}new": 2}


def test_a_page_still_to_visit_that_a_link_finds_nearer_the_seeds_takes_that_depth(
        tmp_path: Path) -> None:
    """A resumed crawl reads it at the shorter depth; a page read already keeps its own."""
    journal = Journal(tmp_path)
    journal.add_seeds([SEED])
    journal.pages_done([PageDone(SEED, [(f"{SEED}far", 3), (f"{SEED}read", 3)], [])])
    journal.pages_done([PageDone(f"{SEED}read", [], [])])
    journal.pages_done([PageDone(f"{SEED}slow", [(f"{SEED}far", 2), (f"{SEED}read", 2)],
                                 [])])
    journal.pages_done([PageDone(f"{SEED}other", [(f"{SEED}far", 4)], [])])
    pending = dict(journal.resume().pending_pages)
    journal.close()
    assert pending == {f"{SEED}far": 2}


def test_a_page_read_and_found_nearer_the_seeds_is_to_visit_again_there(
        tmp_path: Path) -> None:
    """Queued to be read again (Frontier.read_again), it is pending in the journal, at
    its new depth: a crawl stopped before that read resumes with it."""
    journal = Journal(tmp_path)
    journal.add_seeds([SEED])
    journal.pages_done([PageDone(SEED, [(f"{SEED}far", 3)], [])])
    journal.pages_done([PageDone(f"{SEED}far", [], [])])
    assert journal.resume().pending_pages == []
    journal.pages_done([PageDone(f"{SEED}slow", [], [], again=((f"{SEED}far", 2),))])
    assert journal.resume().pending_pages == [(f"{SEED}far", 2)]
    journal.pages_done([PageDone(f"{SEED}far", [], [])])  # read again: done
    assert journal.resume().pending_pages == []
    journal.close()


def test_an_output_folder_too_long_for_the_journal_is_refused_before_anything_is_made(
        tmp_path: Path) -> None:
    """SQLite opens paths of at most 512 bytes, "-journal" included: a longer output
    folder failed with "unable to open database file (is the disk full...?)", status 3,
    and left the master's key, lock and worker logs behind."""
    longest = 512 - len("-journal") - len("/" + JOURNAL_NAME)
    fits = folder_of_length(tmp_path, longest)
    fits.mkdir(parents=True)
    Journal(fits).close()  # the longest taken opens, side files and all
    assert (fits / JOURNAL_NAME).is_file()
    too_long = folder_of_length(tmp_path / "x", longest + 1)
    with pytest.raises(UsageError, match=r"choose an output folder whose full path is at "
                                         rf"most {longest} bytes long$"):
        Journal(too_long)
    result = run_crawler("master", "http://127.0.0.1:9/", "--out", str(too_long),
                         "--local-workers", "1", "--bind", "127.0.0.1:0", cwd=tmp_path,
                         timeout=60)
    assert result.returncode == UsageError.exit_code, result.stderr
    assert result.stderr == (
        "crawler: error: the output folder's path is too long for the crawl journal: "
        f"{too_long / JOURNAL_NAME} is {longest + 1 + len('/' + JOURNAL_NAME)} bytes long, "
        "and SQLite, which keeps the journal, opens paths of at most 504 bytes; choose an "
        f"output folder whose full path is at most {longest} bytes long\n")
    assert not (tmp_path / "x").exists()
