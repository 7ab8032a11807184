"""Which of an earlier run's stored images are gone from the output folder."""

from __future__ import annotations

from pathlib import Path

from crawler.master.missing import MissingImages
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
