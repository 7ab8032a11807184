"""``crawler demo``: the whole job on this machine, against a built-in site, no internet.

It ends by writing the gallery (``crawler report``) and saying where the
images are and how to open it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from crawler.config import Settings
from crawler.demo.site import SiteServer, build_site
from crawler.errors import StorageError, UsageError
from crawler.fetch.options import RequestOptions
from crawler.master.authkey import master_authkey
from crawler.master.claim import CRAWL_FILES, forget_crawl
from crawler.master.folderlock import FolderLock
from crawler.master.journal import check_room_for_journal
from crawler.model.files import BROKER_MARK, DEMO_MARK, JOURNAL_NAME, MANIFEST_NAME
from crawler.model.folders import file_in_the_way
from crawler.model.outcome import IMAGES_DIR
from crawler.model.shellword import shell_word
from crawler.ui.report import write_report

_DEMO_SEED = re.compile(r"http://127\.0\.0\.1:[0-9]+/")
_DEMO_JOURNAL_AT_MOST = 16 << 20  # bytes: a demo's journal and its log hold a few dozen KB
# The demo site's images, as a demo's manifest names them (a folder of an older demo,
# which wrote no mark, is known by them).
_DEMO_IMAGE = re.compile(
    r"http://127\.0\.0\.1:[0-9]+/images/(?:[0-9]+/img[0-9]+\.[a-z]+|gone\.png)")


def run_demo(settings: Settings, *, workers: int, quiet: bool,
             run_master: Callable[..., int]) -> int:
    out_dir = Path(settings.output.dir) / "demo"
    # The site is on this host: no proxy of the user's settings or environment
    # (HTTP_PROXY without 127.0.0.1 in NO_PROXY sent the demo to it, and it failed).
    demo_settings = settings.with_values({"output.dir": str(out_dir),
                                          "queue.bind": "127.0.0.1:0",
                                          "worker.threads": 4,
                                          "http.proxy": "", "http.env_proxies": False})
    # The files its [http] settings name are read as its master reads them, before anything
    # is made: one it cannot use refused the demo's master after its folder, lock and key
    # were made, and they were left (a master refused so leaves nothing).
    RequestOptions.from_settings(demo_settings)
    check_room_for_journal(out_dir)  # (the same: a path too long for it)
    # Each demo serves a new site on a new port: start from a clean record. Under the
    # folder's lock, so that a demo running there keeps its files (this one is refused).
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(out_dir)
        try:
            if _holds_another_crawl(out_dir):
                raise UsageError(f"{out_dir} holds a crawl that is not the demo's, which "
                                 "the demo would erase (it starts each run afresh): "
                                 "choose another folder with --out, or move it away")
            forget_crawl(out_dir)
            for old_site in (out_dir / IMAGES_DIR).glob("*/127.0.0.1_*"):
                shutil.rmtree(old_site, ignore_errors=True)
        finally:
            lock.release()  # the demo's master takes it next
    except OSError as exc:
        # "Not a directory" named no path: say which file is in the way, as a master does.
        blocker = file_in_the_way(out_dir)
        reason = (f"{blocker} is a file where a folder is needed; move it away"
                  if blocker is not None else exc.strerror)
        raise StorageError(f"cannot use {out_dir} for the demo's output: {reason}"
                           " (or choose another folder with --out)") from exc

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr)

    site = build_site(broken_links=True)  # a page and an image missing: failures to show
    with SiteServer(site) as server:
        with contextlib.suppress(OSError):  # (unwritten: the next demo goes by the manifest)
            (out_dir / DEMO_MARK).write_text(server.base_url + "/\n", encoding="utf-8")
        say(f"demo site: {server.base_url}/ ({len(site.pages)} pages, {len(site.images)} "
            "images, and links to a page and an image that are missing)")
        # Its workers are started here: nobody else needs to be told how to join.
        status = run_master(demo_settings, (server.base_url + "/",),
                            master_authkey(None, out_dir, keep=True, workers_elsewhere=False),
                            local_workers=workers,
                            dry_run=False, quiet=quiet, invite_workers=False,
                            # Not "run it again to resume": a new site, a clean record.
                            interrupted_note="the demo starts afresh when run again")
    gallery = write_report([out_dir])
    folders = sorted((out_dir / IMAGES_DIR).glob("*/127.0.0.1_*"))
    stored = sum(1 for folder in folders for path in folder.rglob("*") if path.is_file())
    where = folders[0] if len(folders) == 1 else out_dir
    say(f"demo: {stored} images stored under {where}/")
    say(f"gallery: open {gallery.resolve().as_uri()} in a browser "
        f"(or run: xdg-open {shell_word(gallery)})")
    return status


def _holds_another_crawl(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds something of a crawl that no demo made. A demo's is one
    whose journal's one seed is the one its mark names; or, its mark naming none (an
    older demo's), whose manifest names the demo site's images alone, of that seed.
    Without a journal, what a crawl leaves (results, a manifest, a broker crawl's mark,
    images) is a demo's only if such a manifest lists them. Anything that cannot be read
    is taken for another crawl: it is refused, not erased."""
    if (out_dir / BROKER_MARK).exists():
        return True  # a broker crawl's results: never a demo's
    marked = _marked_seed(out_dir)
    journal = out_dir / JOURNAL_NAME
    if journal.exists():
        seeds = _journal_seeds(journal)
        if seeds is None or len(seeds) != 1 or _DEMO_SEED.fullmatch(seeds[0]) is None:
            return True
        if marked is not None:
            return marked != seeds[0]
        return not _demo_manifest(out_dir, seeds[0])
    images = out_dir / IMAGES_DIR
    if not any((out_dir / name).exists() for name in CRAWL_FILES) and not (
            images.is_dir() and any(images.iterdir())):
        return False  # nothing of a crawl
    return not _demo_manifest(out_dir, marked or "http://127.0.0.1:")


def _marked_seed(out_dir: Path) -> str | None:
    """The demo seed the folder's mark names; None without one (or a mark of an earlier
    version, which named none)."""
    try:
        mark = (out_dir / DEMO_MARK).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return mark if _DEMO_SEED.fullmatch(mark) else None


def _journal_seeds(journal: Path) -> list[str] | None:
    """The seeds a journal records (its pages of depth 0); None if it cannot be read, or
    is larger than any demo's.

    Read from a copy, with its write-ahead log: a demo killed (kill -9, out of memory)
    left its journal's every page there, and the file beside it was empty. A copy, so
    that nothing is written beside the folder's own.
    """
    import sqlite3
    import tempfile

    wal = journal.with_name(journal.name + "-wal")
    try:
        size = journal.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        if size > _DEMO_JOURNAL_AT_MOST:
            return None
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / JOURNAL_NAME
            shutil.copyfile(journal, copy)
            if wal.exists():
                shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
            db = sqlite3.connect(copy)
            try:
                return [str(url) for (url,) in
                        db.execute("SELECT url FROM pages WHERE depth = 0")]
            finally:
                db.close()
    except (sqlite3.Error, OSError):
        return None


def _demo_manifest(out_dir: Path, seed: str) -> bool:
    """Whether the folder's manifest lists images, all of them the demo site's at ``seed``
    (or a prefix of it)."""
    try:
        with (out_dir / MANIFEST_NAME).open("rb") as lines:
            urls = [json.loads(line).get("url") for line in lines if line.strip()]
    except (OSError, ValueError, AttributeError):
        return False
    return bool(urls) and all(isinstance(url, str) and url.startswith(seed)
                              and _DEMO_IMAGE.fullmatch(url) is not None for url in urls)
