"""The cookies the crawl's pages set, kept in the output folder for a restart.

The workers' image requests carry the cookies pages set (see
``crawler.fetch.cookiefeed``), but those live in the master's memory. A master
killed and started again (a resumed crawl) hands out the images left queued at
once, and the pages that set their cookies are done: without the cookies, a site
that asks for its session cookie refused every such image, for good (a 403). So
the embedded master writes them to :data:`PAGE_COOKIES_NAME` as it publishes them
(a Netscape cookies.txt, as ``curl -c`` and wget's ``--save-cookies`` write one),
readable by its owner only, and a resumed crawl publishes them again before any
image goes out. ``--fresh`` forgets them with the crawl. :class:`CookiePost` puts
them on the board, and keeps them here, as the crawl loop records its pages.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from crawler.errors import StorageError
from crawler.fetch.cookiefeed import CookieFeed, add_to_jar, jar_lines
from crawler.model.cookies import COOKIE_ENCODING, cookie_key
from crawler.model.files import PAGE_COOKIES_NAME
from crawler.model.folders import folder_in_place_of_file

if TYPE_CHECKING:
    from crawler.board.base import Board
    from crawler.fetch.easy import EasyClient

_HEADER = ("# Netscape HTTP Cookie File\n"
           "# The cookies this crawl's pages set, for the next run of the crawl.\n")


def save_page_cookies(folder: Path, lines: list[str]) -> None:
    """Write ``lines`` (Netscape cookie lines) as the folder's page cookies, replacing
    the last ones whole, readable by the owner only."""
    path = folder / PAGE_COOKIES_NAME
    draft = path.with_name(f".{PAGE_COOKIES_NAME}.{os.getpid()}")
    body = (_HEADER + "".join(line + "\n" for line in lines)).encode(COOKIE_ENCODING)
    try:
        # Made anew (O_EXCL): a link left at the draft's name is removed, not written
        # through to the file it names.
        draft.unlink(missing_ok=True)
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with memoryview(body) as rest:
                while rest:
                    rest = rest[os.write(fd, rest):]
        finally:
            os.close(fd)
        draft.replace(path)
    except OSError as exc:
        for in_place in (draft, path):  # a folder at either name: named, and left
            if in_place.is_dir():
                raise folder_in_place_of_file(in_place, "write the page cookies") from exc
        with contextlib.suppress(OSError):
            draft.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def load_page_cookies(folder: Path) -> list[str]:
    """The page cookies an earlier run of the crawl saved (none if it saved none)."""
    path = folder / PAGE_COOKIES_NAME
    try:
        text = path.read_bytes().decode(COOKIE_ENCODING)
    except FileNotFoundError:
        return []
    except IsADirectoryError as exc:
        raise folder_in_place_of_file(path, "read the page cookies") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return [line for line in text.split("\n") if cookie_key(line) is not None]


class CookiePost:
    """The cookies the crawl's pages set, put on the board for the workers' jars: their
    image requests carry them, as a browser's do. In the embedded mode they are kept in
    ``folder`` too, for a restart; a broker (``folder`` None) keeps them itself."""

    def __init__(self, feed: CookieFeed, board: Board, *, folder: Path | None) -> None:
        self._feed = feed
        self._board = board
        self._folder = folder

    def restore(self, session: EasyClient) -> None:
        """Publish again the cookies an earlier run's pages set, before any image of this
        run is handed out: its queued images need them, and the pages that set them are
        done. A cookie of the user's cookies file keeps its value (a fresh export wins)."""
        assert self._folder is not None, "a broker keeps the pages' cookies itself"
        saved = load_page_cookies(self._folder)
        if not saved:
            return
        present = {cookie_key(line) for line in jar_lines(session.share)}
        add_to_jar(session.share, [line for line in saved if cookie_key(line) not in present])
        session.jar_watch.changed = True
        self.publish()

    def republish(self) -> None:
        """Put every cookie the crawl's pages set on the board again, changed or not: the
        broker may have lost them (see ``BrokerLink.forget_after_reconnecting``)."""
        self._feed.resend()
        self.publish()

    def publish(self) -> None:
        """Put the cookies the crawl's pages set since the last call on the board."""
        feed = self._feed
        lines = feed.news()
        if not lines:
            return
        try:
            self._board.publish_cookies(lines)
        except BaseException:
            feed.again(lines)  # (a broker that did not answer: the next call tries again)
            raise
        if self._folder is not None:
            save_page_cookies(self._folder, feed.page_cookies())
