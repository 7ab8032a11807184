"""The two HTML engines find the same images and page links in every page we have.

lxml (the default) walks libxml2's tree; beautifulsoup builds a BeautifulSoup
tree over the same parse. A difference here is a bug in one walk or the other.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawler.config import PARSERS as SETTING_CHOICES
from crawler.parse.eventtree import EventTree
from crawler.parse.extract import PARSERS, SOURCES, extract
from crawler.parse.trees import _LxmlTree
from tests.conformance import image_cases, image_pages
from tests.test_extract import tag_soup

TESTS = Path(__file__).parent
PAGE = "http://example.com/dir/page.html"


def _pages() -> dict[str, bytes]:
    # (.xhtml: pages served as application/xhtml+xml, read with xml=True.)
    pages = {str(path.relative_to(TESTS)): path.read_bytes()
             for folder in ("pages", "site", "corpus")
             for pattern in ("*.html", "*.xhtml")
             for path in sorted((TESTS / folder).rglob(pattern))}
    pages.update({f"conformance/{name}": body for name, body in image_pages().items()})
    pages.update({f"conformance case {n}: {case.html[:50]}": case.html.encode("utf-8")
                  for n, case in enumerate(image_cases())})
    return pages


PAGES = _pages()


def test_every_page_folder_is_covered() -> None:
    names = list(PAGES)
    for prefix in ("pages/", "site/", "corpus/", "conformance/", "conformance case"):
        assert sum(name.startswith(prefix) for name in names) >= 3, prefix


def test_the_setting_offers_exactly_the_engines() -> None:
    assert SETTING_CHOICES == PARSERS == ("lxml", "beautifulsoup")


@pytest.mark.parametrize("name", PAGES)
def test_both_engines_find_the_same_urls(name: str) -> None:
    body = PAGES[name]
    options = {"lazy_attributes": ("data-x", "data-bg"), "sources": SOURCES,
               "xml": name.endswith(".xhtml")}
    lxml = extract(body, PAGE, parser="lxml", **options)  # type: ignore[arg-type]
    soup = extract(body, PAGE, parser="beautifulsoup", **options)  # type: ignore[arg-type]
    assert lxml == soup


@pytest.mark.parametrize("name", PAGES)
def test_the_tree_from_libxml2s_events_finds_what_its_tree_finds(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lxml engine's tree of a page libxml2 builds none of (crawler.parse.eventtree),
    taken for every page here."""
    options = {"lazy_attributes": ("data-x", "data-bg"), "sources": SOURCES,
               "xml": name.endswith(".xhtml")}
    own = extract(PAGES[name], PAGE, **options)  # type: ignore[arg-type]

    def from_events(text: str, utf8: bytes | None = None) -> EventTree | None:
        return EventTree.parse(utf8 if utf8 is not None else text)

    monkeypatch.setattr(_LxmlTree, "parse", from_events)
    assert extract(PAGES[name], PAGE, **options) == own  # type: ignore[arg-type]


def test_the_pages_are_not_empty_of_urls() -> None:
    """The comparison above means something: most pages yield URLs."""
    found = sum(1 for body in PAGES.values() if extract(body, PAGE).images)
    assert found > len(PAGES) // 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tag_soup(), st.booleans())
def test_both_engines_agree_on_tag_soup(soup: str, xml: bool) -> None:
    body = soup.encode("utf-8", "surrogatepass")
    assert (extract(body, PAGE, parser="lxml", xml=xml)
            == extract(body, PAGE, parser="beautifulsoup", xml=xml))
