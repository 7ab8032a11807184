"""``crawler demo``: the whole job on this machine, against a built-in site, no internet.

It ends by writing the gallery (``crawler report``) and saying where the
images are and how to open it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from crawler.config import Settings
from crawler.demo.site import SiteServer, build_site
from crawler.errors import StorageError, UsageError
from crawler.fetch.options import RequestOptions
from crawler.master.authkey import master_authkey
from crawler.master.claim import forget_crawl
from crawler.master.folderlock import FolderLock
from crawler.model.files import JOURNAL_NAME, MANIFEST_NAME
from crawler.model.folders import file_in_the_way
from crawler.model.outcome import IMAGES_DIR
from crawler.ui.report import write_report

# Left in a demo's folder: what a demo run there again clears is a demo's. Another crawl
# kept in OUT/demo (its journal, results and images) was erased without a word.
DEMO_MARK = ".crawler-demo"
# The demo site's images, as a demo's manifest names them (before the mark was written).
_DEMO_IMAGE = re.compile(r"http://127\.0\.0\.1:[0-9]+/images/(?:[0-9]+/img[0-9]+\.[a-z]+|gone\.png)")


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
            (out_dir / DEMO_MARK).write_text("made by crawler demo, which clears this "
                                             "folder each time it runs\n")
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
        say(f"demo site: {server.base_url}/ ({len(site.pages)} pages, {len(site.images)} "
            "images, and links to a page and an image that are missing)")
        # Its workers are started here: nobody else needs to be told how to join.
        status = run_master(demo_settings, (server.base_url + "/",),
                            master_authkey(None, out_dir, keep=True), local_workers=workers,
                            dry_run=False, quiet=quiet, invite_workers=False,
                            # Not "run it again to resume": a new site, a clean record.
                            interrupted_note="the demo starts afresh when run again")
    gallery = write_report([out_dir])
    folders = sorted((out_dir / IMAGES_DIR).glob("*/127.0.0.1_*"))
    stored = sum(1 for folder in folders for path in folder.rglob("*") if path.is_file())
    where = folders[0] if len(folders) == 1 else out_dir
    say(f"demo: {stored} images stored under {where}/")
    say(f"gallery: open {gallery.resolve().as_uri()} in a browser "
        f"(or run: xdg-open {shlex.quote(str(gallery))})")
    return status


def _holds_another_crawl(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds something of a crawl that no demo made: not marked as a
    demo's, and either a journal without a manifest or a manifest that names an image
    of another site. (A folder of an older demo has no mark: its manifest tells.)"""
    if (out_dir / DEMO_MARK).is_file():
        return False
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        images = out_dir / IMAGES_DIR
        return (out_dir / JOURNAL_NAME).exists() or (images.is_dir()
                                                      and any(images.iterdir()))
    with manifest.open("rb") as lines:  # (OSError: said as the folder's, as any other)
        for line in lines:
            try:
                url = json.loads(line).get("url")
            except (ValueError, AttributeError):
                return True
            if not isinstance(url, str) or _DEMO_IMAGE.fullmatch(url) is None:
                return True
    return False
