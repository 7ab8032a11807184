"""The classic tutorial's two queues, as views of a board.

A worker written like the ``multiprocessing.managers`` tutorial calls
``get_task_queue().get()`` for a URL string and ``get_result_queue().put()``
with a ``URL--->success`` or ``URL--->failure: reason`` line. Its URLs are
leased to :data:`~crawler.board.base.CLASSIC` like any other, so one it
abandons comes back when the lease runs out.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from crawler.board.base import CLASSIC
from crawler.board.memory import TaskBoard
from crawler.model.outcome import SEPARATOR, Attempt
from crawler.model.wire import ReportRefused, attempt_from_report

# Seconds of one lease call at most: between two, a get() looks whether its worker is
# still there (one that died would count as a tutorial worker, in crawler status and
# the shares, until its get() ran out: for ever, without a timeout).
_LOOK_FOR_THE_WORKER_EVERY = 1.0


class TaskQueueView:
    """``get_task_queue``: the classic interface; items are plain URL strings."""

    def __init__(self, board: TaskBoard, client_gone: Callable[[], bool] = lambda: False) -> None:
        """``client_gone``: whether the worker whose get() this thread serves closed its
        connection (the server knows)."""
        self._board = board
        self._client_gone = client_gone

    def get(self, block: bool = True, timeout: float | None = None) -> str:
        """The next URL; queue.Empty when none came in time or the crawl is over."""
        if block and timeout is not None:  # without blocking it is ignored, as Queue does
            if timeout != timeout:
                # NaN: each lease returned at once and "wait <= 0" never came true, so the
                # call spun on the board's lock (a core) until a URL came or the crawl ended.
                raise ValueError("'timeout' must be a number, not NaN")
            if timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")  # as Queue's
        wait = (timeout if timeout is not None else float("inf")) if block else 0.0
        # Asked again every half lease_timeout at least: each call is the tutorial
        # workers' contact, and one waiting here is not gone (crawler status).
        longest = min(max(0.5, self._board.policy.lease_timeout / 2),
                      _LOOK_FOR_THE_WORKER_EVERY)
        while not self._client_gone():
            answer = self._board.lease(CLASSIC, 1, min(wait, longest))
            if answer["tasks"]:
                return self._handed(answer["tasks"][0][0])
            wait -= longest
            if wait <= 0 or answer["closed"]:
                raise queue.Empty
        raise queue.Empty  # to no one: the worker is gone

    def _handed(self, url: str) -> str:
        """``url``, leased, unless the worker died while it waited: then it goes back at
        once. Handed to the dead, it waited out lease_timeout, while a live worker's
        get() came back empty and that worker quit."""
        if self._client_gone():
            self._board.release(CLASSIC, [url])
            raise queue.Empty
        return url

    def get_nowait(self) -> str:
        return self.get(block=False)

    def qsize(self) -> int:
        return self._board.counts()["queued"]

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return False


class ResultQueueView:
    """``get_result_queue``: takes ``URL--->success`` / ``URL--->failure: reason`` strings.

    A line names no file, so it is taken as it is; a structured report (a dict)
    is checked as our own workers' reports are.
    """

    def __init__(self, board: TaskBoard) -> None:
        self._board = board

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Record ``item``; a malformed one is logged, counted, and raised to the worker
        as a built-in ValueError: a tutorial worker's host may not have this package,
        and an exception of ours reached it as "No module named 'crawler'"."""
        try:
            attempt = self._attempt_of(item)
        except ValueError as exc:
            self._board.refuse(CLASSIC, str(exc))
            raise ValueError(str(exc)) from exc
        if not self._board.report(CLASSIC, [attempt]) and not self._board.known(attempt.url):
            # Logged by the master only: a worker that reported the URL a redirect led
            # to never learnt, and the URL it was given waited out its lease each time.
            raise ValueError(f"no such URL was queued: {attempt.url[:200]!r} (a result "
                             "names the URL task.get() gave, as it gave it)")

    @staticmethod
    def _attempt_of(item: object) -> Attempt:
        if isinstance(item, str):
            return Attempt.from_line(item)
        if isinstance(item, dict):
            return attempt_from_report(item)
        raise ReportRefused(f"a result is a str, 'URL{SEPARATOR}success' or "
                            f"'URL{SEPARATOR}failure: reason', not {type(item).__name__}")

    def put_nowait(self, item: Any) -> None:
        self.put(item)

    def qsize(self) -> int:
        return 0  # results are consumed as they arrive

    def empty(self) -> bool:
        return True

    def full(self) -> bool:
        return False
