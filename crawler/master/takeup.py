"""How a master takes up its output folder's crawl at start, before the loop runs.

Which crawl this is (its seeds and scope: what makes a crawl the same crawl), the
journal's crawl checked against it and reopened for this run's limits, the images
deleted from the folder since they were stored queued again, and a word when the
result files take seconds to write anew. Apart from the crawl loop: each runs once,
in order, before the first page; none changes the loop's state.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crawler.config import CrawlSettings
from crawler.fetch.robots import DISALLOWED as ROBOTS_DISALLOWED
from crawler.master.journal import Journal, Reopened
from crawler.master.missing import MissingImages, say_fetched_again
from crawler.master.results import last_page_entries
from crawler.model.files import MANIFEST_NAME, PAGES_NAME, RESULTS_NAME
from crawler.model.outcome import Requeued

log = logging.getLogger(__name__)

# A manifest this large (some 30,000 images) takes seconds to write anew at a restart.
LONG_REWRITE_BYTES = 16 * 1024 * 1024


def crawl_identity(seeds: Iterable[str], crawl: CrawlSettings) -> dict[str, Any]:
    """What makes a crawl the same crawl: its seeds and its scope."""
    return {"seeds": sorted(seeds),
            "scope": [crawl.scope, *(list(patterns) for patterns in (
                crawl.allow, crawl.deny, crawl.image_allow, crawl.image_deny))]}


def take_up(journal: Journal, identity: dict[str, Any], crawl: CrawlSettings, *,
            out_dir: Path, resume: bool) -> Reopened:
    """Check that the folder's crawl is this one; reopen what this run's limits extend;
    the pages visited again, by why."""
    if journal.forget_if_empty():
        drop_failed_pages(out_dir)
    reopened = journal.take_up(
        identity, depth=crawl.depth, max_images=crawl.max_images, resume=resume,
        reading={"sources": sorted(crawl.sources),
                 "lazy_attributes": sorted(crawl.lazy_attributes)})
    if reopened.limits:
        log.info("%d page(s) done before are visited again for this run's limits",
                 reopened.limits)
    if reopened.reading:
        log.info("%d page(s) done before are visited again: this run looks for images where "
                 "the last did not (crawl.sources, crawl.lazy_attributes)", reopened.reading)
    if reopened.robots:
        log.info("%d page(s) done before are read again: images on them were refused while "
                 "their host's robots.txt could not be read", reopened.robots)
    say_requeued(journal.retry_failures_worth_a_rerun())
    return reopened


def drop_failed_pages(out_dir: Path) -> None:
    """Remove the list of pages that could not be crawled, of a crawl forgotten for
    having read nothing: those pages are tried again, or are no part of this crawl (a
    folder that cannot take the change says so when the result files are opened)."""
    with contextlib.suppress(OSError):
        (out_dir / PAGES_NAME).unlink(missing_ok=True)


def say_requeued(again: Requeued) -> None:
    """Say how many images that failed in an earlier run this rerun tries again, by why."""
    if again.passing:
        log.info("%d image(s) that failed for a passing reason (a timeout, a refused "
                 "connection, a 5xx or 429, a TLS failure, a worker lost with it) are tried "
                 "again", again.passing)
    if again.name_taken:
        # Each is tried whether or not what took its name was moved away: an image whose
        # name is still taken fails again, with the same message.
        log.info("%d image(s) whose name in the image folder was taken by a file or folder "
                 "the crawler did not store are tried again", again.name_taken)


def say_robots_refusals_stay(journal: Journal, crawl: CrawlSettings, out_dir: Path) -> None:
    """Warn a run that ignores robots.txt of what an earlier run refused by its rules:
    those refusals are final, so the rerun fetches none of them, which it would
    otherwise do in silence, as if --ignore-robots had been left out."""
    if crawl.respect_robots:
        return
    images = journal.images_refused(ROBOTS_DISALLOWED)
    pages = _pages_refused(out_dir / PAGES_NAME, ROBOTS_DISALLOWED)
    if images or pages:
        log.warning("%d page(s) and %d image(s) an earlier run of this crawl refused for "
                    "robots.txt stay refused: ignoring robots.txt holds for what this run "
                    "finds; --fresh crawls the site anew without it", pages, images)


def _pages_refused(path: Path, reason: str) -> int:
    """How many pages pages.jsonl lists as not crawled for ``reason``, by their last line,
    at their own URL or at a redirect's ("redirected to URL: REASON")."""
    try:
        entries = last_page_entries(path)
    except OSError:  # said as the result files open
        return 0
    at_redirect = ": " + reason
    return sum(1 for entry in entries.values()
               if isinstance(said := entry.get("reason"), str) and (
                   said == reason or (said.startswith("redirected to ")
                   and said.endswith(at_redirect))))


def say_if_long_to_rewrite(out_dir: Path) -> None:
    """Say why a restart on a large crawl sends no request for a few seconds: its result
    files are written anew from the journal first (300,000 images: 5 to 10 s)."""
    with contextlib.suppress(OSError):  # none yet: a new crawl
        size = (out_dir / MANIFEST_NAME).stat().st_size
        if size >= LONG_REWRITE_BYTES:
            log.info("writing %s and %s anew from the journal (%.0f MB): a few seconds ...",
                     RESULTS_NAME, MANIFEST_NAME, size / 1e6)


def queue_missing_again(journal: Journal, missing: MissingImages, out_dir: Path) -> None:
    """Queue again the images deleted from the folder since they were stored. After
    the files are written without their lines: a crash in between leaves the journal
    as it was, and the next run finds them missing again."""
    if missing.urls:
        journal.queue_again(missing.urls)
        say_fetched_again(len(missing.urls), out_dir)
