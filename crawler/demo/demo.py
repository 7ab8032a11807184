"""``crawler demo``: the whole job on this machine, against a built-in site, no internet."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from crawler.config import Settings
from crawler.demo.site import SiteServer, build_site
from crawler.errors import StorageError
from crawler.master.authkey import master_authkey
from crawler.master.journal import JOURNAL_NAME
from crawler.master.results import MANIFEST_NAME, RESULTS_NAME
from crawler.model.outcome import IMAGES_DIR


def run_demo(settings: Settings, *, workers: int, quiet: bool,
             run_master: Callable[..., int]) -> int:
    out_dir = Path(settings.output.dir) / "demo"
    # Each demo serves a new site on a new port: start from a clean record.
    try:
        for name in (JOURNAL_NAME, JOURNAL_NAME + "-wal", JOURNAL_NAME + "-shm",
                     RESULTS_NAME, MANIFEST_NAME):
            (out_dir / name).unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot use {out_dir} for the demo's output: {exc.strerror}"
                           " (choose another folder with --out)") from exc
    for old_site in (out_dir / IMAGES_DIR).glob("*/127.0.0.1_*"):
        shutil.rmtree(old_site, ignore_errors=True)
    site = build_site()
    with SiteServer(site) as server:
        say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr))
        say(f"demo site: {server.base_url}/ ({len(site.pages)} pages, {len(site.images)} images)")
        demo_settings = settings.with_values({"output.dir": str(out_dir),
                                              "queue.bind": "127.0.0.1:0",
                                              "worker.threads": 4})
        status = run_master(demo_settings, (server.base_url + "/",),
                            master_authkey(None, out_dir, keep=True), local_workers=workers,
                            dry_run=False, quiet=quiet)
    stored = sorted(p for p in (out_dir / IMAGES_DIR).rglob("*.png"))
    say(f"demo: {len(stored)} images stored under {out_dir / IMAGES_DIR}/ "
        f"(results in {out_dir / RESULTS_NAME}, manifest in {out_dir / MANIFEST_NAME})")
    return status
