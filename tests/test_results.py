"""results.log and manifest.jsonl, and the tally of what the manifest holds."""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.config import Limits
from crawler.demo.site import png
from crawler.errors import PartialLost, StorageError
from crawler.fetch.engine import Abandoned
from crawler.master import results as results_module
from crawler.master.inplace import FilesInPlace
from crawler.master.results import ManifestTally, ResultFiles
from crawler.model.imagetype import PNG
from crawler.model.outcome import Outcome
from crawler.worker.sink import SPILL_AT, sinks_into
from crawler.worker.store import Store

from .conftest import tiny_tmpfs


def outcome(url: str, ok: bool, *, reason: str = "", size: int = 0, seconds: float = 0.0,
            attempts: int = 1) -> Outcome:
    return Outcome(url=url, status="success" if ok else "failure", reason=reason,
                   page="http://a.example/", worker="w1", path="images/x" if ok else None,
                   bytes=size if ok else None, sha256=None, content_type=None,
                   attempts=attempts, elapsed_s=seconds)


def read_back(manifest: Path) -> dict[str, object]:
    """The statistics a reader of manifest.jsonl computes."""
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    hosts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for entry in entries:
        host = hosts[entry["url"].split("/")[2]]
        host["succeeded" if entry["status"] == "success" else "failed"] += 1
        host["bytes"] += entry["bytes"] or 0
    return {
        "by_status": collections.Counter(e["status"] for e in entries),
        "reasons": collections.Counter(e["reason"] for e in entries if e["status"] != "success"),
        "hosts": dict(hosts),
        "entries": len(entries),
        "seconds": round(sum(e["elapsed_s"] for e in entries), 6),
        "slowest": max(e["elapsed_s"] for e in entries),
        "attempts": sum(e["attempts"] for e in entries),
    }


def test_the_tally_is_what_the_manifest_holds_earlier_runs_included(tmp_path: Path) -> None:
    earlier = [outcome("http://a.example/1.png", True, size=100, seconds=0.5),
               outcome("http://b.example/2.png", False, reason="HTTP 404", seconds=0.1,
                       attempts=3)]
    files = ResultFiles(tmp_path, earlier)  # a resumed crawl: the journal's outcomes first
    files.write([outcome("http://a.example/3.png", True, size=50, seconds=1.25),
                 outcome("http://a.example/4.png", False, reason="HTTP 404"),
                 outcome("http://b.example/5.png", False, reason="not an image", attempts=2)])
    files.close()
    tally = files.tally
    assert {
        "by_status": tally.by_status, "reasons": tally.reasons, "hosts": dict(tally.hosts),
        "entries": tally.entries, "seconds": round(tally.seconds, 6), "slowest": tally.slowest,
        "attempts": tally.attempts,
    } == read_back(tmp_path / "manifest.jsonl")
    assert tally.hosts["a.example"] == {"succeeded": 2, "failed": 1, "bytes": 150}


def test_a_full_disk_is_said_for_both_files_and_leaves_no_half_copies(tmp_path: Path) -> None:
    """The append named results.log whichever file failed (manifest.jsonl had), and the
    rewrite at start left its .partial copies behind on the full disk."""
    many = [outcome(f"http://a.example/{n}.png" + "x" * 200, True, size=n)
            for n in range(2000)]
    with tiny_tmpfs(tmp_path / "small") as small:
        with pytest.raises(StorageError, match="No space left on device"):
            ResultFiles(small, many)
        assert sorted(p.name for p in small.iterdir()) == []
        files = ResultFiles(small, [])
        with pytest.raises(StorageError) as caught:
            for _ in range(50):
                files.write(many)
        assert (f"cannot append to results.log and manifest.jsonl in {small}: No space left "
                "on device") in str(caught.value)
        # What is left in the buffers cannot go either: said as a StorageError too (a
        # master closes its files as such an error unwinds, and a bare OSError in its
        # place was a traceback and exit status 1), and every file is closed.
        with pytest.raises(StorageError, match="No space left on device"):
            files.close()
        assert files._results.closed and files._manifest.closed and files._pages.closed


@pytest.mark.usefixtures("pythons_own_ctrl_c")
def test_a_second_ctrl_c_during_a_reruns_rewrite_leaves_no_half_copies(
        tmp_path: Path) -> None:
    """A rerun of a large crawl rewrites both files from the journal, for seconds; a
    second Ctrl-C then (a KeyboardInterrupt, the first having asked for a stop) left
    their half-written .partial copies beside them, up to the manifest's size."""
    earlier = [outcome(f"http://a.example/{n}.png", True, size=n) for n in range(100)]
    ResultFiles(tmp_path, earlier).close()
    before = {name: (tmp_path / name).read_bytes() for name in ("results.log",
                                                                  "manifest.jsonl")}

    def interrupted_halfway() -> Iterator[Outcome]:
        for n, one in enumerate(earlier):
            if n == 50:
                signal.raise_signal(signal.SIGINT)  # Python's own handler: KeyboardInterrupt
            yield one

    with pytest.raises(KeyboardInterrupt):
        ResultFiles(tmp_path, interrupted_halfway())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl", "pages.jsonl",
                                                          "results.log"]
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("name", ["results.log", "manifest.jsonl", "pages.jsonl",
                                  "results.log.partial", "manifest.jsonl.partial",
                                  "pages.jsonl.partial"])
def test_a_folder_in_place_of_a_result_file_is_named_and_nothing_half_written_stays(
        tmp_path: Path, name: str) -> None:
    """A folder with a result file's name: said with its path and what to do (it was "cannot
    write results in OUT: Is a directory"), and no .partial copy left beside it."""
    (tmp_path / name).mkdir()
    with pytest.raises(StorageError) as caught:
        ResultFiles(tmp_path, [outcome("http://a.example/1.png", True, size=1)])
    assert str(caught.value) == (
        f"cannot write the crawl's results: {tmp_path / name} is a folder, where a file of "
        "the crawler's goes; move it away, or choose another output folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert not any((tmp_path / name).iterdir()), "nothing written into that folder"


def test_a_folder_made_in_place_of_the_pages_copy_mid_run_leaves_pages_jsonl_whole(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pages.jsonl is written anew at close when a page listed as to retry was crawled: a
    folder made meanwhile where that copy goes is said in a warning, not a crash at the
    crawl's end, and the file keeps every line."""
    listed = json.dumps({"url": "http://a.example/p", "reason": "HTTP 503",
                         "http_status": 503, "final": False}) + "\n"
    (tmp_path / "pages.jsonl").write_text(listed)
    files = ResultFiles(tmp_path, ())
    files.page_crawled("http://a.example/p")
    (tmp_path / "pages.jsonl.partial").mkdir()
    files.close()
    assert (tmp_path / "pages.jsonl").read_text() == listed
    assert ("still lists 1 page(s) this run crawled after all, as not crawled: cannot "
            f"rewrite it ({tmp_path / 'pages.jsonl.partial'}: Is a directory)") in caplog.text


@pytest.mark.usefixtures("pythons_own_ctrl_c")
def test_a_ctrl_c_while_pages_jsonl_is_rewritten_at_close_leaves_it_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C (a real KeyboardInterrupt, from Python's own SIGINT handler) halfway
    through the close's rewrite of pages.jsonl: the file stays as it was and no
    pages.jsonl.partial is left (only an OSError removed it)."""
    listed = "".join(json.dumps({"url": f"http://a.example/{n}", "reason": "HTTP 503",
                                 "http_status": 503, "final": False}) + "\n"
                     for n in range(100))
    (tmp_path / "pages.jsonl").write_text(listed)
    files = ResultFiles(tmp_path, ())
    files.page_crawled("http://a.example/7")
    read = results_module._page_url
    lines_read = []

    def interrupted_halfway(line: bytes) -> str | None:
        lines_read.append(line)
        if len(lines_read) == 50:
            signal.raise_signal(signal.SIGINT)
        return read(line)

    monkeypatch.setattr(results_module, "_page_url", interrupted_halfway)
    with pytest.raises(KeyboardInterrupt):
        files.close()
    assert len(lines_read) < 100, "interrupted before the end of the file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl", "pages.jsonl",
                                                          "results.log"]
    assert (tmp_path / "pages.jsonl").read_text() == listed


def test_a_rerun_removes_the_pages_copy_a_killed_close_left(tmp_path: Path) -> None:
    """A master killed (kill -9) while it rewrote pages.jsonl at close left
    pages.jsonl.partial: the next run of the folder removes it as it opens the files,
    rather than leave it until a close that rewrites pages.jsonl again."""
    listed = json.dumps({"url": "http://a.example/p", "reason": "HTTP 503",
                         "http_status": 503, "final": False}) + "\n"
    (tmp_path / "pages.jsonl").write_text(listed)
    (tmp_path / "pages.jsonl.partial").write_text(listed[:20])
    ResultFiles(tmp_path, ()).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl", "pages.jsonl",
                                                          "results.log"]
    assert (tmp_path / "pages.jsonl").read_text() == listed


@pytest.mark.parametrize("name", ["results.log.partial", "manifest.jsonl.partial"])
def test_a_link_in_place_of_a_results_copy_is_removed_not_written_through(
        tmp_path: Path, name: str) -> None:
    """The copies of results.log and manifest.jsonl were opened through a symbolic link in
    their place: the file it named, outside the folder, was overwritten with the results,
    and the result file became a link to it."""
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("kept")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(elsewhere)
    ResultFiles(out, [outcome("http://a.example/x.png", ok=True)]).close()
    assert elsewhere.read_text() == "kept"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "pages.jsonl",
                                                     "results.log"]
    assert not any(p.is_symlink() for p in out.iterdir())
    assert (out / "results.log").read_text().startswith("http://a.example/x.png--->")


def test_a_link_in_place_of_pages_jsonl_is_named_not_appended_through(tmp_path: Path) -> None:
    """pages.jsonl is added to, not written anew: through a link in its place the crawl's
    failed pages went into the file it named, outside the folder."""
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("kept\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "pages.jsonl").symlink_to(elsewhere)
    with pytest.raises(StorageError) as caught:
        ResultFiles(out, [outcome("http://a.example/x.png", ok=True)])
    assert str(caught.value) == (
        f"cannot write the crawl's results: {out / 'pages.jsonl'} is a symbolic link, where "
        "a file of the crawler's goes, and would be written through; move it away, or "
        "choose another output folder")
    assert elsewhere.read_text() == "kept\n"
    assert sorted(p.name for p in out.iterdir()) == ["pages.jsonl"]


def test_a_page_that_fails_again_in_every_run_keeps_one_line_in_pages_jsonl(
        tmp_path: Path) -> None:
    """A page that fails for a passing reason is tried by every run and listed anew each
    time: its earlier lines go, or pages.jsonl grew by a line per such page with every
    run. So do those of a final failure visited again (a rerun that looks for images in
    more places visits every page again). Lines of pages this run did not list again
    stay as they were."""
    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in (tmp_path / "pages.jsonl").read_text().splitlines()]

    for run in range(4):
        files = ResultFiles(tmp_path, [])
        files.page_failed("http://a.example/flaky.html", "HTTP 503", 503, final=False)
        files.page_failed("http://a.example/gone.html", "HTTP 404", 404, final=True)
        if run == 0:
            files.page_failed("http://a.example/later.html", "HTTP 503", 503, final=False)
        if run == 2:
            files.page_failed("http://a.example/ß.html", "HTTP 503", 503, final=False)
        files.close()
    listed = collections.Counter(str(line["url"]).rsplit("/", 1)[1] for line in lines())
    assert listed == {"flaky.html": 1, "gone.html": 1, "later.html": 1, "ß.html": 1}
    assert [str(line["url"]).rsplit("/", 1)[1] for line in lines()] == [
        "later.html", "ß.html", "flaky.html", "gone.html"]


def test_files_in_place_pass_while_written_and_name_the_one_replaced(tmp_path: Path) -> None:
    """Appends keep a file what it was; the same name on a new file is not the one open."""
    files = ResultFiles(tmp_path, ())
    in_place = FilesInPlace(tmp_path, ["results.log", "manifest.jsonl"])
    try:
        files.write([outcome("http://a.example/1.png", True, size=3)])
        in_place.check()
        (tmp_path / "manifest.jsonl").unlink()  # a clean-up that ran too early
        (tmp_path / "manifest.jsonl").write_text("")
        with pytest.raises(StorageError) as raised:
            in_place.check()
    finally:
        files.close()
    assert str(raised.value).startswith(f"{tmp_path / 'manifest.jsonl'} was removed, moved "
                                        "or replaced while the crawl ran")


def test_partials_removed_under_many_downloads_are_counted_as_one_reason(
        tmp_path: Path) -> None:
    """Each such reason names its own partial file (and image): a cleaner that emptied the
    partials folder under a busy worker filled the summary's reasons with one-offs."""
    store = Store(tmp_path / "out")
    reasons = []
    for url in ("http://a.example/1.png", "http://a.example/2.png"):
        partial, file = store.open_partial()  # committed as a worker does
        file.close()
        shutil.rmtree(store.partial_dir)
        with pytest.raises(PartialLost) as lost:
            store.commit(partial, url, PNG, 0, hashlib.sha256(b"").hexdigest())
        reasons.append(str(lost.value))
    body = png(4, 4, 1) + b"\0" * SPILL_AT  # past what is held in memory: spilled to a file
    for url in ("http://a.example/3.png", "http://a.example/4.png"):
        sink = sinks_into(store, Limits())((url, 1), 0.0)
        sink.feed(body)
        shutil.rmtree(store.partial_dir)
        with pytest.raises(Abandoned) as abandoned:  # read back whole: its length unknown
            sink.finish("image/png", length_known=False)
        reasons.append(str(abandoned.value))
    assert len(set(reasons)) == 4, reasons  # each names its own file
    tally = ManifestTally()
    for number, reason in enumerate(reasons):
        tally.add(outcome(f"http://a.example/{number}.png", False, reason=reason))
    assert tally.reasons == {
        "partial file gone before it was stored; did another program clean its folder?": 4}
