"""Cases cut from the web-platform-tests pages in this folder (see README.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

HERE = Path(__file__).parent
IMAGE_PAGES = ("parse-a-srcset-attribute.html", "select-an-image-source.html",
               "update-the-source-set.html")
# The cases name images with data: URLs, which a crawler skips; each becomes an
# http URL on this host, so that finding it can be checked.
IMAGE_HOST = "http://img.test/"

# One case: a <div> line, a <picture> block or an <img> line with data-expect.
_CASE_RE = re.compile(r"^<div>.*?</div>$|<picture>.*?</picture>|<img[^>]*data-expect[^>]*>",
                      re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class ImageCase:
    """One ``data-expect`` case: its HTML (data: URLs made http) and the browser's pick."""

    page: str
    html: str
    expect: str  # "" when the browser shows nothing
    resolve: bool  # the pick is a relative URL, resolved against the page


def as_http(text: str) -> str:
    return text.replace("data:,", IMAGE_HOST).replace("data:;", IMAGE_HOST + ";")


def image_cases() -> list[ImageCase]:
    cases = []
    for name in IMAGE_PAGES:
        text = (HERE / name).read_text("utf-8")
        for match in _CASE_RE.finditer(text):
            fragment = match.group()
            root = etree.fromstring(fragment, etree.HTMLParser())
            expecting = root.xpath("//*[@data-expect]")
            assert len(expecting) == 1, fragment
            element = expecting[0]
            cases.append(ImageCase(name, as_http(fragment), as_http(element.get("data-expect")),
                                   element.get("data-resolve") is not None))
    return cases


def image_pages() -> dict[str, bytes]:
    """The three pages whole, data: URLs made http."""
    return {name: as_http((HERE / name).read_text("utf-8")).encode("utf-8")
            for name in IMAGE_PAGES}
