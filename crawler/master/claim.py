"""Which crawl an output folder's result files belong to, in either mode.

The embedded mode's folder holds its journal (``crawl.sqlite``), which names its
crawl (seeds and scope, checked by the journal itself). A broker crawl's folder
holds :data:`BROKER_MARK`, naming the broker and the crawl. Each master writes
the folder's results.log and manifest.jsonl anew from its own record of the
crawl, so a master of one crawl must not take a folder of another: it refuses it,
and says what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crawler.errors import CrawlMismatch, StorageError
from crawler.model.files import (
    BROKER_MARK,
    JOURNAL_NAME,
    MANIFEST_NAME,
    PAGE_COOKIES_NAME,
    PAGES_NAME,
    REPORT_NAME,
    RESULTS_NAME,
    SUMMARY_NAME,
    SUMMARY_PARTIAL_NAME,
)
from crawler.model.folders import folder_in_place_of_file

# What a folder keeps of its crawl, besides the images: its record and its result files.
# The gallery and the summary too: left behind, they would show the forgotten crawl.
# The journal's write-ahead log and shared memory go before the journal: a kill between
# them left an old log beside the next run's new journal, for SQLite to replay into it.
CRAWL_FILES = (JOURNAL_NAME + "-wal", JOURNAL_NAME + "-shm", JOURNAL_NAME,
               RESULTS_NAME, MANIFEST_NAME, PAGES_NAME, SUMMARY_NAME, SUMMARY_PARTIAL_NAME,
               REPORT_NAME, BROKER_MARK, PAGE_COOKIES_NAME)


def forget_crawl(folder: Path) -> None:
    """Remove the folder's record of its crawl (``--fresh``, the demo), in the order of
    CRAWL_FILES; stored images stay. OSError when the folder does not let them go (its
    ``filename`` the one that stayed)."""
    for name in CRAWL_FILES:
        (folder / name).unlink(missing_ok=True)


def drop_last_summary(folder: Path) -> None:
    """Remove the summary of the folder's last run as this one starts: a run that never
    writes its own (killed, the terminal closed) must not leave the last one's
    ``completed: true`` standing beside results that have changed since. So goes the
    copy a run killed while writing its summary left, which nothing else replaces."""
    for name in (SUMMARY_NAME, SUMMARY_PARTIAL_NAME):
        path = folder / name
        if path.is_dir():  # said now, not when the crawl is over and its summary written
            raise folder_in_place_of_file(path, "write the crawl's summary")
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove the last run's {path}: "
                               f"{exc.strerror or exc}") from exc


def check_for_broker(folder: Path, crawl: str, identity: dict[str, Any]) -> None:
    """Whether ``folder`` may hold the broker crawl named ``crawl``, of ``identity`` (its
    seeds and scope): CrawlMismatch if it holds another crawl's results. (The crawl's
    name and identity are what a folder is checked by, not the broker's address: the
    same broker may be written many ways, localhost or 127.0.0.1; and a crawl of the
    same name on another broker or database, with other seeds, is another crawl.)"""
    if (folder / JOURNAL_NAME).exists():
        raise CrawlMismatch(f"{folder} holds a crawl of the embedded queue (its journal "
                            f"{JOURNAL_NAME}), whose result files this crawl would replace: "
                            "give it another --out")
    held = _read(folder / BROKER_MARK)
    if held is None:
        return
    if held.get("crawl") != crawl:
        raise CrawlMismatch(f"{folder} holds the results of crawl {held.get('crawl')!r} on "
                            f"{held.get('broker')}, which this crawl would replace: give it "
                            "another --out")
    if "identity" in held and held["identity"] != identity:
        # The broker keeps that crawl under its name: another folder alone would be
        # refused there next, another name is needed as well.
        raise CrawlMismatch(f"{folder} holds the results of another crawl named {crawl!r} "
                            f"(other seeds or scope, on {held.get('broker')}), which this "
                            "crawl would replace: give this one another --crawl NAME and "
                            "another --out")


def mark_for_broker(folder: Path, broker: str, crawl: str, identity: dict[str, Any]) -> None:
    """Mark ``folder`` as the broker crawl's (once the broker took this master on)."""
    mark = folder / BROKER_MARK
    held = _read(mark)
    if held is None or "identity" not in held:  # (one of an earlier version: completed)
        try:
            mark.write_text(json.dumps({"broker": broker, "crawl": crawl,
                                        "identity": identity}) + "\n", encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"cannot write {mark}: {exc.strerror or exc}") from exc


def claim_for_embedded(folder: Path, *, fresh: bool) -> None:
    """Take ``folder`` for an embedded crawl: not one of a broker crawl's, unless ``fresh``
    (which forgets it)."""
    held = _read(folder / BROKER_MARK)
    if held is not None and not fresh:
        raise CrawlMismatch(f"{folder} holds the results of crawl {held.get('crawl')!r} on "
                            f"{held.get('broker')}: choose another --out, or --fresh to start "
                            "afresh in that folder")


def _read(mark: Path) -> dict[str, Any] | None:
    """The mark's broker and crawl; None when there is none. A mark that cannot be read
    as one still says a broker crawl was here."""
    if mark.is_dir():  # not a mark, and no broker crawl's: said as what it is
        raise folder_in_place_of_file(mark, "tell which crawl the folder holds")
    try:
        held = json.loads(mark.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"broker": "a broker", "crawl": "?"}
    return held if isinstance(held, dict) else {"broker": "a broker", "crawl": "?"}
