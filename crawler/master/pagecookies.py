"""The cookies the crawl's pages set, kept in the output folder for a restart.

The workers' image requests carry the cookies pages set (see
``crawler.fetch.cookiefeed``), but those live in the master's memory. A master
killed and started again (a resumed crawl) hands out the images left queued at
once, and the pages that set their cookies are done: without the cookies, a site
that asks for its session cookie refused every such image, for good (a 403). So
the embedded master writes them to :data:`PAGE_COOKIES_NAME` as it publishes them
(a Netscape cookies.txt, as ``curl -c`` and wget's ``--save-cookies`` write one),
readable by its owner only, and a resumed crawl publishes them again before any
image goes out. ``--fresh`` forgets them with the crawl.
"""

from __future__ import annotations

import os
from pathlib import Path

from crawler.errors import StorageError
from crawler.model.cookies import COOKIE_ENCODING, cookie_key
from crawler.model.files import PAGE_COOKIES_NAME

_HEADER = ("# Netscape HTTP Cookie File\n"
           "# The cookies this crawl's pages set, for the next run of the crawl.\n")


def save_page_cookies(folder: Path, lines: list[str]) -> None:
    """Write ``lines`` (Netscape cookie lines) as the folder's page cookies, replacing
    the last ones whole, readable by the owner only."""
    path = folder / PAGE_COOKIES_NAME
    draft = path.with_name(f".{PAGE_COOKIES_NAME}.{os.getpid()}")
    body = (_HEADER + "".join(line + "\n" for line in lines)).encode(COOKIE_ENCODING)
    try:
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        draft.replace(path)
    except OSError as exc:
        draft.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def load_page_cookies(folder: Path) -> list[str]:
    """The page cookies an earlier run of the crawl saved (none if it saved none)."""
    path = folder / PAGE_COOKIES_NAME
    try:
        text = path.read_bytes().decode(COOKIE_ENCODING)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return [line for line in text.split("\n") if cookie_key(line) is not None]
