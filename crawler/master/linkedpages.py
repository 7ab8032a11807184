"""Links that name an image but lead to an HTML page, read as the pages they are.

A wiki links each thumbnail to ``File:Photo.png``, a page that shows the image
in full; a gallery links its thumbnails to viewer pages. Such a link is taken
as an image (its address says so), and its worker finds an HTML page there:
``not an image: an HTML page`` (:data:`FailureKind.HTML_PAGE`). The master then
reads it as a page, one link hop below the page that linked it, within the
crawl's depth and scope, for the image it shows.

This module keeps what that needs: the links whose result is awaited, with the
depth each has as a page, and the links known to be pages but not read as such
when their result came (found on a page whose links were not followed, or in an
earlier run), which a page that follows its links reads later.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crawler.board.memory import Settled
from crawler.model.outcome import HTML_PAGE_REASON, FailureKind, Outcome

ANCHOR = "anchor"  # the kind of an image found as a link (<a href>, <area href>)


def is_image_link(ref: dict[str, Any] | None) -> bool:
    """Whether the page said of an image that it links to it (``ref``'s kind)."""
    return ref is not None and ref.get("kind") == ANCHOR


class LinkedPages:
    """The image links that may be pages, and those known to be."""

    def __init__(self) -> None:
        self._awaited: dict[str, int] = {}  # link -> its depth as a page
        self._pages: set[str] = set()  # said to be pages, not read as pages then

    def is_page(self, url: str) -> bool:
        """Whether ``url`` is an image link known to lead to a page not read yet.
        (A membership test: safe from the page loop's thread.)"""
        return url in self._pages

    def recorded(self, outcome: Outcome) -> None:
        """An outcome of an earlier run (its reason is kept, not its kind)."""
        if not outcome.ok and outcome.reason == HTML_PAGE_REASON:
            self._pages.add(outcome.url)

    def await_result(self, url: str, depth: int) -> None:
        """``url`` was found as a link that a page at ``depth - 1`` follows."""
        self._awaited[url] = depth

    def settled(self, settled: Iterable[Settled]) -> list[tuple[str, int]]:
        """The pages (URL, depth) to read among the results ``settled``: links awaited
        that led to an HTML page. Others that did are kept for a page that follows its
        links to read later."""
        awaited = self._awaited
        pages: list[tuple[str, int]] = []
        for s in settled:
            url = s.attempt.url
            depth = awaited.pop(url, None) if awaited else None
            if s.attempt.kind is FailureKind.HTML_PAGE:
                if depth is not None:
                    pages.append((url, depth))
                else:
                    self._pages.add(url)
        return pages
