"""The web-platform-tests cases browsers are held to (tests/conformance/README.md).

Images: of every ``srcset`` and ``<picture>`` case, the candidate a browser
picks is among the images extract finds. URLs: every case of the URL
standard's test data that yields an http(s) URL resolves to one that sends the
same request; every case that fails is rejected or yields nothing fetchable.
"""

from __future__ import annotations

import json
import re

import ada_url
import pytest

from crawler.errors import InvalidURL
from crawler.model.urls import host_key_of_normalized, normalize, resolve
from crawler.parse.extract import PARSERS, extract
from crawler.parse.resolve import Resolver
from tests.conformance import HERE, IMAGE_HOST, ImageCase, image_cases

_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))

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


# --- URLs ------------------------------------------------------------------------------

_URL_CASES = [case for case in json.loads((HERE / "urltestdata.json").read_text("utf-8"))
              if isinstance(case, dict)]
_HTTP_CASES = [case for case in _URL_CASES
               if not case.get("failure") and case["href"].startswith(("http://", "https://"))]
_FAILING_CASES = [case for case in _URL_CASES if case.get("failure")]
_ESCAPE_RE = re.compile(r"%[0-9A-Fa-f]{2}")


def _request(url: str) -> str:
    """What a URL sends: fragment dropped, unreserved escapes decoded, hex upper case."""
    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group()[1:], 16))
        unreserved = char.isascii() and (char.isalnum() or char in "-._~")
        return char if unreserved else match.group().upper()

    return _ESCAPE_RE.sub(fix, url.partition("#")[0])


def _resolve(case: dict[str, str]) -> str:
    base = case.get("base")
    return resolve(case["input"], base) if base else normalize(case["input"])


def _case_id(case: dict[str, str]) -> str:
    return f"{case['input']!r} on {case.get('base')!r}"


def test_the_url_cases_were_read() -> None:
    assert len(_HTTP_CASES) > 200 and len(_FAILING_CASES) > 200


@pytest.mark.parametrize("case", _HTTP_CASES, ids=_case_id)
def test_an_http_url_case_sends_the_request_a_browser_sends(case: dict[str, str]) -> None:
    assert _request(_resolve(case)) == _request(case["href"])


@pytest.mark.parametrize("case", [c for c in _HTTP_CASES
                                  if str(c.get("base")).startswith(("http:", "https:"))],
                         ids=_case_id)
def test_a_page_reference_sends_the_request_a_browser_sends(case: dict[str, str]) -> None:
    """The same through the page's resolver, with its shortcuts and skips."""
    found = Resolver(case["base"], "utf-8")(case["input"])
    if found is None:  # only a reference to a place in the page itself is skipped
        assert case["input"].strip(_C0_AND_SPACE).replace("\t", "").startswith("#") \
            or case["input"].strip(_C0_AND_SPACE) == ""
        return
    assert _request(found) == _request(case["href"])


@pytest.mark.parametrize("case", _FAILING_CASES, ids=_case_id)
def test_a_failing_url_case_is_rejected_or_harmless(case: dict[str, str]) -> None:
    try:
        url = _resolve(case)
    except InvalidURL:
        return
    # Accepted (ada checks punycode less strictly than the test data): harmless only
    # if the request goes to exactly the host written, where DNS will fail it.
    written = case["input"].partition("://")[2].partition("/")[0].lower()
    assert host_key_of_normalized(url) == written, url
