"""Which of an earlier run's stored images are gone from the output folder."""

from __future__ import annotations

from pathlib import Path

from crawler.master.journal import Journal
from crawler.master.missing import (
    MissingImages,
    WorkersElsewhere,
    stored_elsewhere,
    workers_elsewhere,
)
from crawler.master.results import ManifestTally
from crawler.model.outcome import Outcome


def _outcome(url: str, *, worker: str | None, path: str | None, ok: bool = True) -> Outcome:
    return Outcome(url=url, status="success" if ok else "failure", reason="", page=None,
                   worker=worker, path=path, bytes=1, sha256=None, content_type=None,
                   attempts=1, elapsed_s=0.0)


def test_only_this_hosts_stored_images_whose_file_is_gone_are_left_out(tmp_path: Path) -> None:
    """A worker on another host stored under its own folder: its images are not looked
    for here; a failure has no file; a file still there is kept."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "here.png").write_bytes(b"x")
    (tmp_path / "images" / "a-folder.png").mkdir()
    outcomes = [
        _outcome("http://a/here", worker="box:1:ab", path="images/here.png"),
        _outcome("http://a/gone", worker="box:1:ab", path="images/gone.png"),
        _outcome("http://a/dir", worker="box:2:cd", path="images/a-folder.png"),
        _outcome("http://a/elsewhere", worker="other:1:ab", path="images/x.png"),
        _outcome("http://a/boxer", worker="boxer:1:ab", path="images/y.png"),
        _outcome("http://a/failed", worker="box:1:ab", path=None, ok=False),
        _outcome("http://a/refused", worker=None, path=None, ok=False),
    ]
    missing = MissingImages(tmp_path, host="box")
    kept = [outcome.url for outcome in missing.kept(outcomes)]
    assert missing.urls == ["http://a/gone", "http://a/dir"]
    assert kept == ["http://a/here", "http://a/elsewhere", "http://a/boxer", "http://a/failed",
                    "http://a/refused"]


def test_workers_of_this_host_with_another_folder_are_noted_and_left_alone(
        tmp_path: Path) -> None:
    """A worker here with its own --out stored there: noted in the journal as its results
    come, its images are not looked for in the master's folder by a later run."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    said = {"box:1:ab": {"host": "box", "folder": str(tmp_path / "own")},
            "box:2:cd": {"host": "box", "folder": str(tmp_path / "link")},  # the same folder
            "box:3:ef": {"host": "box"},  # an earlier version's hello: no folder said
            "other:1:ab": {"host": "other", "folder": "/elsewhere"}}
    journal = Journal(out)
    try:
        notes = WorkersElsewhere(journal, out, said.get, host="box")
        notes.note(["box:1:ab", "box:2:cd", None, "box:3:ef", "other:1:ab", "box:9:gone"])
        notes.note(["box:1:ab"])
        assert workers_elsewhere(journal) == {"box:1:ab"}
    finally:
        journal.close()
    journal = Journal(out)  # a rerun
    try:
        missing = MissingImages(out, host="box", elsewhere=workers_elsewhere(journal))
    finally:
        journal.close()
    outcomes = [_outcome("http://a/own", worker="box:1:ab", path="images/own.png"),
                _outcome("http://a/here", worker="box:2:cd", path="images/here.png")]
    assert [outcome.url for outcome in missing.kept(outcomes)] == ["http://a/own"]
    assert missing.urls == ["http://a/here"]


def test_images_stored_outside_the_masters_folder_are_counted_by_host(tmp_path: Path) -> None:
    """What the summary says of images not in the output folder: those of workers on other
    hosts, and of one here with its own --out; not a tutorial worker's (no file named),
    a failure, or a worker here storing into the master's folder."""
    tally = ManifestTally()
    for url, worker, path, ok in [
            ("http://a/1", "box:1:ab", "images/1.png", True),  # here, the master's folder
            ("http://a/2", "box:2:cd", "images/2.png", True),  # here, its own --out
            ("http://a/3", "far:7:ef", "images/3.png", True),
            ("http://a/4", "far:8:01", "images/4.png", True),
            ("http://a/5", "far.example:8:01", "images/5.png", True),
            ("http://a/6", "far:7:ef", None, False),
            ("http://a/7", "tutorial", None, True)]:
        tally.add(_outcome(url, worker=worker, path=path, ok=ok))
    assert stored_elsewhere(tally.stored_by, {"box:2:cd"}, host="box") == {
        "far": 2, "box": 1, "far.example": 1}
    assert stored_elsewhere({"box:1:ab": 3}, (), host="box") == {}
