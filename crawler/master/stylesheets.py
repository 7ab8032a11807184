"""Style sheets the crawled pages link: each read once, its images (and @imports) taken.

A browser shows the images a page's linked style sheets name (backgrounds,
icons), so the crawler reads them too: each style sheet of the crawled site
(the scope's mode) once per crawl, cached by URL, following ``@import`` a few
levels deep. Fonts are left out (``crawler.parse.css``). robots.txt applies
as to pages. A sheet that cannot be read costs only its own images: it is
logged, not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from crawler.fetch.easy import EasyClient
from crawler.master.once import Once
from crawler.parse.css import stylesheet_urls

log = logging.getLogger(__name__)

MAX_IMPORT_DEPTH = 4  # @import chains followed this far from a page's <link>
ACCEPT_CSS = "text/css,*/*;q=0.1"
MAX_REMEMBERED = 4096  # sets of sheets whose images are kept, not read again


class Stylesheets:
    """The images of style sheets, each sheet fetched once however many pages link it."""

    def __init__(self, client: EasyClient, *, may_read: Callable[[str], bool],
                 timeout: float, max_bytes: int) -> None:
        self._client = client
        self._may_read = may_read  # scope and robots.txt
        self._timeout = timeout
        self._max_bytes = max_bytes
        # url: (images, imports); read once per crawl, by the first page thread to ask
        self._refs: Once[str, tuple[tuple[str, ...], tuple[str, ...]]] = Once(
            self._fetch, fallback=((), ()), wait=timeout + 1)
        # A site's pages link the same few sheets: their images, per set of sheets.
        self._images_of: dict[tuple[str, ...], list[str]] = {}

    def images(self, sheets: tuple[str, ...]) -> list[str]:
        """The images the style sheets ``sheets`` (and those they import) name, in order."""
        known = self._images_of.get(sheets)
        if known is not None:
            return known
        found, seen = self._read(sheets)
        # Kept only when every sheet was read: a sheet refused, or still being read
        # by a thread stuck past its deadline, is asked about again by the next page.
        if (len(self._images_of) < MAX_REMEMBERED and seen.issuperset(sheets)
                and all(self._refs.known(sheet) is not None for sheet in seen)):
            self._images_of[sheets] = found
        return found

    def _read(self, sheets: tuple[str, ...]) -> tuple[list[str], set[str]]:
        """The images, and the sheets read for them."""
        found: dict[str, None] = {}
        seen: set[str] = set()
        level = [sheet for sheet in sheets if self._may_read(sheet)]
        for _depth in range(MAX_IMPORT_DEPTH + 1):
            following: list[str] = []
            for sheet in level:
                if sheet in seen:
                    continue
                seen.add(sheet)
                images, imports = self._refs.get(sheet)
                found.update(dict.fromkeys(images))
                following += [url for url in imports if url not in seen and self._may_read(url)]
            level = following
            if not level:
                break
        return list(found), seen

    def _fetch(self, url: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        reply = self._client.get(url, accept=ACCEPT_CSS, max_bytes=self._max_bytes,
                                 timeout=self._timeout)
        if not reply.ok or reply.status != 200:
            log.info("style sheet %s: %s", url, reply.failure or f"HTTP {reply.status}")
            return (), ()
        refs = stylesheet_urls(reply.body.decode("utf-8", errors="replace"), url)
        return refs.images, refs.imports
