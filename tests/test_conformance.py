"""The web-platform-tests cases browsers are held to (tests/conformance/README.md).

Images: of every ``srcset`` and ``<picture>`` case, the candidate a browser
picks is among the images extract finds. URLs: every case of the URL
standard's test data that yields an http(s) URL resolves to one that sends the
same request; every case that fails is rejected or yields nothing fetchable.
"""

from __future__ import annotations

import ada_url
import pytest

from crawler.model.urls import normalize
from crawler.parse.extract import PARSERS, extract
from tests.conformance import IMAGE_HOST, ImageCase, image_cases

PAGE = "http://example.com/dir/page.html"
IMAGE_CASES = image_cases()


def test_the_cases_were_read() -> None:
    assert len(IMAGE_CASES) > 300
    assert sum(1 for case in IMAGE_CASES if case.expect) > 140
    assert {case.page for case in IMAGE_CASES} == {
        "parse-a-srcset-attribute.html", "select-an-image-source.html",
        "update-the-source-set.html"}


def _browsers_pick(case: ImageCase) -> str:
    """The expected URL as a browser resolves it (ada is the URL standard's parser)."""
    return normalize(ada_url.join_url(PAGE, case.expect))


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c.expect],
                         ids=lambda c: f"{c.page}:{c.html[:60]}")
def test_the_image_a_browser_picks_is_found(case: ImageCase, parser: str) -> None:
    images = extract(case.html.encode("utf-8"), PAGE, parser=parser).images
    assert _browsers_pick(case) in images


@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if not c.expect],
                         ids=lambda c: f"{c.page}:{c.html[:60]}")
def test_where_a_browser_shows_nothing_only_candidates_are_found(case: ImageCase) -> None:
    # A browser drops a candidate with bad descriptors; a crawler may still try it,
    # but only where the page points: the case's image host or the page's own.
    for image in extract(case.html.encode("utf-8"), PAGE).images:
        assert image.startswith((IMAGE_HOST, "http://example.com/dir/")), image
