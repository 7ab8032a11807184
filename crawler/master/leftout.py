"""What the crawl's scope, and its bound on a page's size, left out this run, to say in
its summary; and what robots.txt kept out of a dry run's list.

Links to pages on hosts out of the scope's mode, images that the image
patterns (``--accept``, ``--reject``) refuse, and the rest of a page past
``crawl.max_page_bytes`` were dropped without a word in the summary:
``--accept png,jpg`` found 16 images, kept none and ended with exit 0, and a
site whose pages sat on a sub-domain looked like a site of one page.
"""

from __future__ import annotations

import collections
from typing import NamedTuple

from crawler.model.urls import host_key_of_normalized

# Hosts counted one by one; a page of links to thousands (a link farm) counts the rest
# together, and refused image URLs are told apart up to as many as the image budget's
# count of those left out is (crawler.model.files.IMAGES_LEFT_KEPT).
MAX_HOSTS = 1000
MAX_IMAGES = 100_000
SHOWN_HOSTS = 100  # in summary.json, most linked first
MAX_REASONS = 100  # a dry run's refusals told apart; past that, counted as OTHER_REASONS
OTHER_REASONS = "other reasons"


class LinksElsewhere(NamedTuple):
    """Links to pages on other hosts: how many, to how many hosts (``more`` when past
    ``MAX_HOSTS``, which are told apart no further), and the most linked hosts."""

    links: int
    hosts: int
    more: bool
    by_host: dict[str, int]


class LeftOut:
    """Links are counted by the crawl loop alone; images by the page loop's threads, one
    ``set.add`` at a time, which the GIL makes atomic."""

    def __init__(self) -> None:
        self._links_by_host: collections.Counter[str] = collections.Counter()
        self._links_past = 0  # links to hosts past MAX_HOSTS
        self._images: set[str] = set()
        self.pages_cut = 0  # pages read only up to crawl.max_page_bytes (page loop threads)
        # A dry run's images refused (by robots.txt, or for want of it), by why: a real
        # crawl records each as a failure, a dry run only leaves it out of its list.
        self.unlisted: collections.Counter[str] = collections.Counter()

    def link(self, url: str) -> None:
        """A link to a page out of the scope's mode (another host, another domain), counted
        for each page it is on."""
        host = host_key_of_normalized(url) or "?"
        if host in self._links_by_host or len(self._links_by_host) < MAX_HOSTS:
            self._links_by_host[host] += 1
        else:
            self._links_past += 1

    def image(self, url: str) -> None:
        """An image URL the image patterns refuse (counted once however often shown)."""
        if len(self._images) < MAX_IMAGES:
            self._images.add(url)

    def unlisted_image(self, reason: str) -> None:
        """An image a dry run leaves out of its list, refused for ``reason``."""
        if reason not in self.unlisted and len(self.unlisted) >= MAX_REASONS:
            reason = OTHER_REASONS
        self.unlisted[reason] += 1

    def page_cut(self) -> None:
        """A page longer than crawl.max_page_bytes, read up to there: what follows (its
        images and links) is left out."""
        self.pages_cut += 1  # (one thread judges a page: a lost count is one page)

    @property
    def images(self) -> int:
        """Image URLs refused: ``MAX_IMAGES`` means at least that many."""
        return len(self._images)

    def links(self) -> LinksElsewhere:
        ranked = sorted(self._links_by_host.items(), key=lambda kv: (-kv[1], kv[0]))
        return LinksElsewhere(links=sum(self._links_by_host.values()) + self._links_past,
                              hosts=len(ranked), more=self._links_past > 0,
                              by_host=dict(ranked[:SHOWN_HOSTS]))
