"""What a run of the master ends with: its counts, and why it stopped.

Apart from the crawl loop that fills it in at its close: the front door
(``api``) reads it, and turns it into the crawl's own summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from crawler.master.results import ManifestTally


@dataclass
class Summary:
    completed: bool
    interrupted: bool
    elapsed_s: float
    pages: int
    pages_failed: int
    found: int
    succeeded: int
    failed: int
    bytes: int
    out_dir: Path
    pages_read: int = 0  # pages fetched and parsed in this run
    stored_this_run: int = 0  # of succeeded, those this run stored (not an earlier one)
    pages_left: int = 0  # pages found and not visited: the page budget was spent
    pages_at_depth_limit: int = 0  # pages at the depth limit that link to pages not seen
    images_left: int = 0  # images found and not queued: the image budget was spent
    pages_to_retry: int = 0  # pages that failed for a passing reason: the next run tries them
    images_to_retry: int = 0  # the same of images
    # Links to pages on hosts out of the scope's mode (in all, to how many hosts, the most
    # linked ones), and image URLs the image patterns refused: this run's, this master's
    # (see crawler.master.leftout).
    links_out_of_scope: int = 0
    hosts_out_of_scope: int = 0
    links_to_other_hosts: dict[str, int] = field(default_factory=dict)
    images_out_of_scope: int = 0
    pages_cut: int = 0  # pages read only up to crawl.max_page_bytes
    images_unlisted: dict[str, int] = field(default_factory=dict)  # a dry run's refused, by why
    # Images stored outside the output folder, by the host of the worker that stored them:
    # one on another host, or on this one with its own --out, stores in its own folder.
    stored_elsewhere: dict[str, int] = field(default_factory=dict)
    seed_failures: list[tuple[str, str]] = field(default_factory=list)  # (seed, why)
    manifest: ManifestTally = field(default_factory=ManifestTally)  # what manifest.jsonl holds

    @property
    def nothing_crawled(self) -> bool:
        """Every seed page this run tried failed, and no other page was read."""
        return bool(self.seed_failures) and self.pages_read == 0

    @property
    def images_per_second(self) -> float:
        """This run's: images an earlier run stored took none of its time."""
        return self.stored_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0
