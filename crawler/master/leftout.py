"""What the crawl's scope left out this run, to say in its summary.

Links to pages on hosts out of the scope's mode, and images that the image
patterns (``--accept``, ``--reject``) refuse, were dropped without a word:
``--accept png,jpg`` found 16 images, kept none and ended with exit 0, and a
site whose pages sat on a sub-domain looked like a site of one page.
"""

from __future__ import annotations

import collections

from crawler.model.urls import host_key_of_normalized

# Hosts counted one by one; a page of links to thousands (a link farm) counts the
# rest together.
MAX_HOSTS = 1000
OTHERS = "(other hosts)"


class LeftOut:
    """Counts kept by the crawl loop (links) and the page loop's threads (images): one
    ``Counter`` update or ``set.add`` at a time, each atomic under the GIL."""

    def __init__(self) -> None:
        self.links_by_host: collections.Counter[str] = collections.Counter()
        self._images: set[str] = set()

    def link(self, url: str) -> None:
        """A link to a page out of the scope's mode (another host, another domain)."""
        host = host_key_of_normalized(url) or "?"
        if host not in self.links_by_host and len(self.links_by_host) >= MAX_HOSTS:
            host = OTHERS
        self.links_by_host[host] += 1

    def image(self, url: str) -> None:
        """An image URL the image patterns refuse (counted once however often shown)."""
        self._images.add(url)

    @property
    def images(self) -> int:
        return len(self._images)

    def hosts(self, most: int = 100) -> dict[str, int]:
        """The hosts with most links left out, most first (equal counts by name)."""
        ranked = sorted(self.links_by_host.items(), key=lambda kv: (-kv[1], kv[0]))
        return dict(ranked[:most])
