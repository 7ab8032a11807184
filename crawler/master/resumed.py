"""What an earlier run left to do, taken up by this one: its pages, and its queued images.

Pages an earlier run queued are this run's within this run's scope and depth
(``--resume`` with a narrower one leaves the rest queued in the journal). The
images it left queued go back on the board only once this run has read the
robots.txt of their hosts, and judged them as a page's images are: a host that
disallows them now refuses them, and a Crawl-delay spaces them. (Put back
unjudged, a resumed crawl fetched what their host had disallowed since, and at
full speed where it asked for a delay.)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, NamedTuple

from crawler.master.frontier import Frontier
from crawler.master.journal import Resumed
from crawler.master.leftout import LeftOut
from crawler.master.robots import Robots
from crawler.master.scope import Scope
from crawler.model.outcome import ROBOTS_UNREACHABLE, Attempt
from crawler.model.urls import host_key

if TYPE_CHECKING:
    from crawler.board.memory import TaskBoard
    from crawler.board.redis import RedisBoard

log = logging.getLogger(__name__)

ResumedImage = tuple[str, str | None, dict[str, Any] | None]
"""An image an earlier run left queued: (url, the page that showed it, its ref)."""


class Judgement(NamedTuple):
    """This run's robots.txt on resumed images."""

    refusals: list[str | None]  # each image's (None: allowed)
    delays: dict[str, float | None]  # the Crawl-delay of each host with an allowed image


def carry_over(resumed: Resumed, *, seeds: Collection[str], scope: Scope, depth: int,
               delay: float, left_out: LeftOut | None = None
               ) -> tuple[Frontier, list[ResumedImage]]:
    """The frontier refilled from what an earlier run left, and its images still to judge.

    This run's seeds are fetched whatever the scope says, as in a first run. The images
    this run's patterns refuse are counted in ``left_out``, for its summary: a rerun
    with a narrower --accept or --reject said "found 46, downloaded 46", the images it
    dropped said only in an INFO line.
    """
    pages = [(url, at) for url, at in resumed.pending_pages
             if url in seeds or (at <= depth and scope.allows_page(url))]
    images = []
    for image in resumed.pending_images:
        if scope.allows_image(image[0]):
            images.append(image)
        elif left_out is not None:
            left_out.image(image[0])
    frontier = Frontier(pages, seen=resumed.done_pages, delay=delay)
    if resumed.done_pages or resumed.finished_images:
        log.info("resuming: pages done %d, to visit %d; images finished %d, queued %d",
                 len(resumed.done_pages), len(frontier), len(resumed.finished_images),
                 len(images))
    dropped = (len(resumed.pending_pages) - len(pages),
               len(resumed.pending_images) - len(images))
    if any(dropped):
        log.info("%d page(s) and %d image(s) an earlier run queued are outside this "
                 "run's scope or depth: left out", *dropped)
    return frontier, images


def judge(images: list[ResumedImage], robots: Robots, stop: threading.Event,
          tick: float) -> Judgement | None:
    """Each image's refusal by this run's robots.txt, and its hosts' Crawl-delays; None
    when ``stop`` was set meanwhile (or the reading failed: logged by threading), the
    images then left for the next run.

    The files are read on a thread of their own while this one waits in steps of
    ``tick``: read here, a robots.txt that never answered held a stop, and a second
    Ctrl-C too (a signal is taken between two steps of the main thread), for its
    whole deadline.
    """
    judged: list[Judgement] = []

    def read() -> None:
        urls = [url for url, _, _ in images]
        # Every one of them: cut after one deadline, as for a page, the hosts past the
        # first few batches had their images refused "not read in time", for the run.
        robots.read_all(urls, all_of_them=True)
        refusals = [robots.refusal(url) for url in urls]  # a lone origin is read here
        delays: dict[str, float | None] = {}
        for url, refused in zip(urls, refusals, strict=True):
            host = host_key(url)
            if refused is None and host not in delays:
                delays[host] = robots.crawl_delay(url)
        judged.append(Judgement(refusals, delays))

    reader = threading.Thread(target=read, name="resumed-robots", daemon=True)
    reader.start()
    while reader.is_alive():
        if stop.is_set():
            log.info("stopped while reading the robots.txt of %d image(s) an earlier run "
                     "left: they stay as they were", len(images))
            return None
        reader.join(tick)
    return judged[0] if judged else None


def queue_judged(board: TaskBoard, images: list[ResumedImage], judgement: Judgement) -> None:
    """The embedded board: refusals settled at once, the rest queued, their hosts' delays
    set first so that no image of them goes unspaced."""
    _set_delays(board, judgement)
    for (url, page, ref), refused in zip(images, judgement.refusals, strict=True):
        said = json.dumps(ref) if ref else None
        if refused is not None:
            board.settle_now(Attempt(url=url, ok=False, reason=refused), page, said)
        else:
            # A worker of the earlier run may have stored it and died before reporting:
            # told so, this run's worker keeps that file, whatever its type.
            board.put(url, host_key(url), page, said, tried_before=True)


def judge_again_on_broker(board: RedisBoard, images: list[ResumedImage],
                          judgement: Judgement) -> None:
    """On a broker, the images are refusals an earlier run made for an unreadable
    robots.txt (the embedded mode reads their pages again, which finds them): those
    allowed now are queued again, the rest refused anew."""
    _set_delays(board, judgement)
    pairs = list(zip(images, judgement.refusals, strict=True))
    again = board.judged_again(
        [url for (url, _, _), refused in pairs if refused is None],
        [(Attempt(url=url, ok=False, reason=refused), refused.startswith(ROBOTS_UNREACHABLE))
         for (url, _, _), refused in pairs if refused is not None])
    if again:
        log.info("%d image(s) refused for an unreadable robots.txt are tried again", again)


def _set_delays(board: TaskBoard | RedisBoard, judgement: Judgement) -> None:
    for host, delay in judgement.delays.items():
        if delay:
            board.set_host_delay(host, delay)
