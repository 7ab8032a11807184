"""The task board: leases, expiry, retries, first result wins, host pacing.

The rules are one suite run against both boards (``board``: in memory, and in
Redis on a real redis-server); the adapters' tests (classic queue views,
BoardView) and the crawl loop's wake-ups are the in-memory board's alone.
"""

from __future__ import annotations

import inspect
import json
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable

import pytest
import redis

from crawler.board import memory
from crawler.board import redis as redis_board
from crawler.board.base import CLASSIC
from crawler.board.classic import ResultQueueView, TaskQueueView
from crawler.board.manager import BoardView
from crawler.board.memory import POLICY_SETTINGS, BoardPolicy, TaskBoard
from crawler.board.redis import RedisBoard
from crawler.config import Settings
from crawler.model.outcome import RATE_LIMITED_PAUSE, Attempt, FailureKind, Outcome
from crawler.model.wire import WorkerInfo

from .conftest import wait_until
from .redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy_for(**policy: float) -> BoardPolicy:
    return BoardPolicy(**{"lease_timeout": 10.0, "backoff_base": 1.0, **policy})


def memory_board(clock: Clock, **policy: float) -> TaskBoard:
    return TaskBoard(policy_for(**policy), clock=clock)


AnyBoard = TaskBoard | RedisBoard
MakeBoard = Callable[..., AnyBoard]


@pytest.fixture(params=["memory", "redis"])
def board(request: pytest.FixtureRequest) -> MakeBoard:
    """Makes a board with the test's clock and policy: each call a crawl of its own."""
    if request.param == "memory":
        return memory_board
    server = request.getfixturevalue("redis_server")
    client = server.client()
    request.addfinalizer(client.close)

    def make(clock: Clock, **policy: float) -> RedisBoard:
        return RedisBoard(client, f"test-{secrets.token_hex(8)}", policy_for(**policy),
                          clock=clock)

    return make


def ok(url: str) -> Attempt:
    return Attempt(url=url, ok=True, bytes=10, path="images/http/h/a.png", sha256="ab" * 32)


def test_a_url_is_queued_once(board: MakeBoard) -> None:
    b = board(Clock())
    assert b.put("http://h/a.png", "h", "http://h/")
    assert not b.put("http://h/a.png", "h", "http://h/other")
    assert b.lease("w", 10, 0)["tasks"] == [("http://h/a.png", 1)]
    assert b.lease("w", 10, 0)["tasks"] == []


def test_an_expired_lease_goes_back_to_the_queue(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock)
    b.put("http://h/a.png", "h", None)
    assert b.lease("dead", 1, 0)["tasks"]
    clock.now += 11
    assert b.reap() == 1
    assert b.lease("alive", 1, 0)["tasks"] == [("http://h/a.png", 2)]


def test_a_calling_worker_keeps_its_leases_and_the_classic_holder_has_a_deadline(
        board: MakeBoard) -> None:
    """A worker with a record holds its leases for as long as it calls, however long;
    the classic holder (it never says hello, nor calls again) loses its own at its
    deadline, though others call meanwhile."""
    clock = Clock()
    b = board(clock)
    b.put("http://h/a.png", "h", None)
    b.put("http://h/b.png", "h", None)
    assert b.lease(CLASSIC, 1, 0)["tasks"] == [("http://h/a.png", 1)]
    assert b.lease("w", 1, 0)["tasks"] == [("http://h/b.png", 1)]
    clock.now += 9
    b.heartbeat("w")
    assert b.reap() == 0
    clock.now += 2  # 11 s after both leases
    b.heartbeat("w")
    assert b.reap() == 1
    assert b.lease("v", 2, 0)["tasks"] == [("http://h/a.png", 2)]
    clock.now += 4  # "w" called 4 s ago, within worker_silence: its lease lives on
    assert b.reap() == 0
    b.report("w", [ok("http://h/b.png")])
    assert [s.attempt.url for s in b.drain()] == ["http://h/b.png"]


def test_a_host_whose_queue_ran_dry_leaves_its_turn(board: MakeBoard) -> None:
    """A host with nothing queued is out of the turns, even while it waits for its pace:
    new URLs put it at the end, after hosts that were put before it."""
    clock = Clock()
    b = board(clock, host_delay=1.0)
    b.put("http://h0/0.png", "h0", None)
    b.put("http://h1/4.png", "h1", None)
    assert [url for url, _ in b.lease("w", 3, 0)["tasks"]] == [
        "http://h0/0.png", "http://h1/4.png"]
    for n in (1, 2, 3):  # h1, then h2, then h0 have URLs again
        b.put(f"http://h{n % 3}/{n}.png", f"h{n % 3}", None)
    clock.now += 2
    assert [url for url, _ in b.lease("w", 3, 0)["tasks"]] == [
        "http://h1/1.png", "http://h2/2.png", "http://h0/3.png"]


def test_heartbeats_keep_a_lease_alive(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock)
    b.put("http://h/a.png", "h", None)
    b.lease("w", 1, 0)
    for _ in range(5):
        clock.now += 6
        assert b.heartbeat("w")
        assert b.reap() == 0
    b.report("w", [ok("http://h/a.png")])
    [settled] = b.drain()
    assert settled.attempt.ok and settled.worker == "w" and settled.attempts == 1


def test_only_the_holders_result_counts_and_late_ones_are_ignored(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock)
    b.put("http://h/a.png", "h", None)
    b.lease("slow", 1, 0)
    clock.now += 11
    b.reap()
    b.lease("fast", 1, 0)
    b.report("slow", [ok("http://h/a.png")])  # its lease ran out: not recorded
    assert b.drain() == [] and b.unfinished() == 1
    b.report("fast", [ok("http://h/a.png")])
    [settled] = b.drain()
    assert settled.worker == "fast"
    assert b.unfinished() == 0
    b.report("fast", [ok("http://h/a.png")])
    assert b.counts()["duplicates"] == 2


def test_a_refused_report_of_a_url_the_worker_holds_is_a_failed_try(board: MakeBoard) -> None:
    """Dropped, it left the URL leased to a worker that had let it go: handed back as never
    received (its try undone) at the worker's next word, it went round for ever. Now each
    counts as a try, and the tries run out with the reason."""
    clock = Clock()
    b = board(clock, max_attempts=2)
    view = BoardView(b, lambda full=False: {})
    b.put("http://h/a.png", "h", None)
    bad = {**Attempt(url="http://h/a.png", ok=False, reason="HTTP 503", transient=True
                     ).to_wire(), "retry_after": float("inf")}
    for number, attempt in ((1, 1), (3, 2)):
        assert view.exchange("w", number, [], [], 1, 0)["tasks"] == [("http://h/a.png", attempt)]
        view.exchange("w", number + 1, [bad], [], 0, 0, holding=[])  # type: ignore[list-item]
        clock.now += 60  # past its backoff
    [settled] = b.drain()
    assert (settled.attempt.reason, settled.attempts) == (
        "the worker's report was refused: 'retry_after' is not a number of seconds", 2)
    assert b.unfinished() == 0 and b.counts()["refused"] == 2


def test_a_report_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """A worker's name and URLs went to the log as they came: a line break in them made
    a line of the worker's choosing."""
    b = memory_board(Clock())
    view = BoardView(b, lambda full=False: {})
    forged = "\n12:00:00 ERROR: forged"
    view.report("w" + forged, [ok("http://h/unknown.png" + forged).to_wire()])
    view.report("w" + forged, [{"url": 7, "ok": True}])  # type: ignore[list-item]
    assert b.counts()["refused"] == 1 and b.unknown == 1
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2 and not [line for line in said if "\n" in line], said


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"path": "../../etc/passwd"}, "not inside"),
        ({"path": "/etc/passwd"}, "not inside"),
        ({"path": "images/../manifest.jsonl"}, "not inside"),
        ({"path": "results.log"}, "not inside"),
        ({"path": None}, "not inside"),
        ({"sha256": "0"}, "not 64 hex digits"),
        ({"sha256": None}, "not 64 hex digits"),
        ({"sha256": "G" * 64}, "not 64 hex digits"),
        ({"bytes": -1}, "not a count"),
        ({"url": 7}, "no URL"),
        ({"ok": "yes"}, "not true or false"),
        ({"evil": 1}, "unknown fields"),
    ],
)
def test_malformed_reports_are_refused_and_logged(change: dict, why: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    b = memory_board(Clock())
    view = BoardView(b, lambda full=False: {})
    b.put("http://h/a.png", "h", None)
    view.lease("w", 1, 0)
    view.report("w", [{**ok("http://h/a.png").to_wire(), **change}])  # type: ignore[list-item]
    assert b.drain() == [] and b.unfinished() == 1
    assert b.counts()["refused"] == 1
    assert why in caplog.text and "refused a report from w" in caplog.text
    bad = {**ok("http://h/a.png").to_wire(), **change}
    view.exchange("w", 1, [bad], [], 0, 0)  # type: ignore[list-item]
    assert b.drain() == [] and b.counts()["refused"] == 2


def test_a_failure_reported_over_the_wire_comes_back_with_its_kind(board: MakeBoard) -> None:
    b = board(Clock())
    view = BoardView(b, lambda full=False: {})
    b.put("http://h/a.png", "h", None)
    assert view.lease("w", 1, 0)["tasks"]
    failure = Attempt(url="http://h/a.png", ok=False, reason="HTTP 404",
                      kind=FailureKind.STATUS)
    view.exchange("w", 1, [failure.to_wire()], [], 0, 0)
    [settled] = b.drain()
    assert settled.attempt.kind is FailureKind.STATUS and settled.attempt.reason == "HTTP 404"
    assert Outcome.from_attempt(settled.attempt, page=None, worker="w", attempts=1).ok is False
    # A reason is one line in results.log, whoever sent it.
    b.put("http://h/b.png", "h", None)
    assert view.lease("w", 1, 0)["tasks"]
    lines = Attempt(url="http://h/b.png", ok=False, reason="timed out\nINJECTED--->success")
    view.exchange("w", 2, [lines.to_wire()], [], 0, 0)
    [settled] = b.drain()
    assert settled.attempt.reason == "timed out INJECTED--->success"


def test_a_report_for_a_url_never_leased_to_the_worker_is_refused(
        board: MakeBoard, caplog: pytest.LogCaptureFixture) -> None:
    b = board(Clock())
    b.put("http://h/a.png", "h", None)
    b.report("intruder", [ok("http://h/a.png")])
    b.report("intruder", [ok("http://h/never-queued.png")])
    assert b.drain() == [] and b.unfinished() == 1
    assert "no such URL" in caplog.text


def test_a_late_success_counts_while_no_one_holds_its_url_since(board: MakeBoard) -> None:
    """A worker cut off from its master stores an image as its lease runs out, and reports
    it once back. Ignored, the image went to a worker on another host, which stored it
    again into its own folder: a second file, the first in no line of the manifest. It is
    the URL's result now, if no one was handed the URL since; a late failure, or a late
    success for a URL another worker holds, still counts for nothing."""
    clock = Clock()
    b = board(clock, worker_silence=5.0)
    for name in ("a", "b", "c"):
        b.put(f"http://h/{name}.png", "h", None)
    assert len(b.exchange("cut", 1, [], [], 3, 0)["tasks"]) == 3
    clock.now += 6
    assert b.reap() == 3
    [(held, tries)] = b.lease("other", 1, 0)["tasks"]  # (whichever went back first)
    stored, failed = sorted({f"http://h/{name}.png" for name in "abc"} - {held})
    assert tries == 2
    answer = b.exchange("cut", 2, [ok(held), ok(stored),
                                   Attempt(url=failed, ok=False, reason="HTTP 503",
                                           transient=True)], [], 0, 0)
    assert "lost" not in answer
    [late] = b.drain()
    assert (late.attempt.url, late.worker, late.attempts) == (stored, "cut", 1)
    b.report("intruder", [ok(failed)])  # never held it: refused
    assert b.drain() == [] and b.unfinished() == 2
    # The one another holds, the late failure, and the intruder's
    assert b.counts()["duplicates"] == 3


def test_classic_result_lines_are_taken_as_they_are() -> None:
    b = memory_board(Clock())
    b.put("http://h/a.png", "h", None)
    assert TaskQueueView(b).get(timeout=0) == "http://h/a.png"
    ResultQueueView(b).put("http://h/a.png--->success")
    [settled] = b.drain()
    assert settled.attempt.ok and settled.attempt.path is None


def test_transient_failures_are_retried_with_backoff_then_fail(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock, max_attempts=2)
    b.put("http://h/a.png", "h", None)
    b.lease("w", 1, 0)
    b.report("w", [Attempt(url="http://h/a.png", ok=False, reason="HTTP 503",
                           transient=True)])
    assert b.drain() == []
    assert b.lease("w", 1, 0)["tasks"] == []  # still backing off
    clock.now += 1.01
    assert b.lease("w", 1, 0)["tasks"] == [("http://h/a.png", 2)]
    b.report("w", [Attempt(url="http://h/a.png", ok=False, reason="HTTP 503",
                           transient=True)])
    [settled] = b.drain()
    assert settled.attempts == 2 and settled.attempt.reason == "HTTP 503"


@pytest.mark.parametrize(("retry_after", "held"), [(30, 30.0), (999999999, 40.0)])
def test_retry_after_holds_the_whole_host_up_to_the_longest_backoff(
        board: MakeBoard, retry_after: int, held: float) -> None:
    """"Retry-After: 999999999" held the host ten minutes per answer: now backoff_max."""
    clock = Clock()
    b = board(clock, backoff_max=40.0)
    for name in ("a", "b"):
        b.put(f"http://h/{name}.png", "h", None)
    b.lease("w", 1, 0)
    b.report("w", [Attempt(url="http://h/a.png", ok=False, reason="HTTP 429", transient=True,
                           retry_after=retry_after)])
    clock.now += held - 1
    assert b.lease("w", 5, 0)["tasks"] == []
    clock.now += 2
    assert len(b.lease("w", 5, 0)["tasks"]) == 2  # the host's, the image tried again too


def busy(url: str, **said: object) -> Attempt:
    return Attempt(url=url, ok=False, reason="HTTP 503", transient=True,
                   kind=FailureKind.STATUS, **said)  # type: ignore[arg-type]


def test_a_retry_after_the_board_cannot_go_by_is_said_once_per_host(board: MakeBoard) -> None:
    """A Retry-After the worker could not read was taken as none, and one of days was cut
    to backoff_max, without a word: the user is told, once per host, what was done
    instead."""
    b = board(Clock(), backoff_max=40.0)
    urls = [f"http://{host}/{n}.png" for host in ("h", "g") for n in range(3)]
    for url in urls:
        b.put(url, url.split("/")[2], None)
    assert len(b.lease("w", 10, 0)["tasks"]) == 6
    b.report("w", [busy(urls[0], retry_after_unread="soon"),
                   busy(urls[1], retry_after_unread="-5"),
                   busy(urls[3], retry_after=3 * 86400.0)])
    b.report("w", [busy(urls[2], retry_after_unread="later"),
                   busy(urls[4], retry_after=86400.0)])
    assert [line for line in b.news() if "slowed down" not in line] == [
        "h sent a Retry-After that cannot be read ('soon', HTTP 503 on http://h/0.png): taken "
        "as none: its images wait their backoff (download.backoff_base, doubling at each "
        "try), as after HTTP 503 without one",
        "g asks to wait 259200 s (Retry-After on http://g/0.png): its images wait 40 s at "
        "most (download.backoff_max)"]
    b.report("w", [busy(urls[5], retry_after_unread="soon")])  # another kind, for g
    assert b.news() == [
        "g sent a Retry-After that cannot be read ('soon', HTTP 503 on http://g/2.png): taken "
        "as none: its images wait their backoff (download.backoff_base, doubling at each "
        "try), as after HTTP 503 without one"]
    assert b.news() == []


def test_a_429_without_retry_after_is_no_server_asking_to_wait(board: MakeBoard) -> None:
    """The worker pauses a 429 without Retry-After for RATE_LIMITED_PAUSE: a backoff_max
    below it cut that pause, and the board said the server had asked for it. An unread
    header's note says the wait the board gives."""
    b = board(Clock(), backoff_max=4.0)
    urls = [f"http://{host}/0.png" for host in ("h", "g")]
    for url in urls:
        b.put(url, url.split("/")[2], None)
    assert len(b.lease("w", 10, 0)["tasks"]) == 2
    limited = Attempt(url=urls[0], ok=False, reason="HTTP 429", transient=True,
                      kind=FailureKind.STATUS, retry_after=RATE_LIMITED_PAUSE)
    b.report("w", [limited, limited._replace(url=urls[1], retry_after_unread="soon")])
    assert [line for line in b.news() if "Retry-After" in line] == [
        "g sent a Retry-After that cannot be read ('soon', HTTP 429 on http://g/0.png): taken "
        "as none: its images wait 4 s, as after HTTP 429 without one"]


def urls_leased_within(b: AnyBoard, clock: Clock, seconds: float,
                       step: float = 0.01) -> list[str]:
    """The URLs one worker is leased, asking every ``step`` for ``seconds``."""
    leased = []
    for _ in range(round(seconds / step)):
        leased += [url for url, _ in b.lease("w", 100, 0)["tasks"]]
        clock.now += step
    return leased


def leased_within(b: AnyBoard, clock: Clock, seconds: float, step: float = 0.01) -> int:
    """How many URLs one worker is leased, asking every ``step`` for ``seconds``."""
    return len(urls_leased_within(b, clock, seconds, step))


def test_a_host_that_answers_429_or_503_is_slowed_down_till_it_answers_well(
        board: MakeBoard) -> None:
    """A rate-limited host refused the bursts it was sent (16 at once, then again after
    each pause): a crawl went at a tenth of what it allowed, and lost images that met
    its limit on every try. Now each "too many" halves the host's pace (once for the
    answers to requests already sent), and each success brings it back a little."""
    clock = Clock()
    b = board(clock, host_concurrency=100, backoff_base=0.001, backoff_max=60.0)
    urls = [f"http://h/{n}.png" for n in range(500)]
    for url in urls:
        b.put(url, "h", None)
    assert len(b.lease("w", 4, 0)["tasks"]) == 4  # no delay yet
    b.report("w", [busy(urls[0]), busy(urls[1])._replace(reason="HTTP 429")])  # one news
    assert b.news() == [
        "h answered HTTP 503 (http://h/0.png): slowed down to one request every 0.25 s, "
        "across all workers; it speeds up again as the host answers"]
    clock.now += 1.0
    assert leased_within(b, clock, 1.0) == 4  # one every 0.25 s
    b.report("w", [busy(urls[2])])  # past the gap: slowed down again
    clock.now += 1.0
    assert leased_within(b, clock, 2.0) == 4  # one every 0.5 s
    # Each success wears the slow-down off by 3%: halved after about 23.
    b.report("w", [ok(url) for url in urls[3:12]])
    for _ in range(14):
        clock.now += 0.5
        b.report("w", [ok(url) for url, _ in b.lease("w", 1, 0)["tasks"]])
    clock.now += 1.0
    assert leased_within(b, clock, 2.0) in (7, 8)  # one every 0.25 s again
    assert b.news() == []  # said once: the next ones go to the log


def test_a_host_slowed_down_once_is_slowed_down_from_its_pace_after(board: MakeBoard) -> None:
    """Behind nginx's limit_req (50 requests a second), each "too many" slowed the host to
    one request every 0.25 s again (12 times slower than it allowed), worn off to none
    and met with a burst: 159 s for 1,965 images. Worn off to 0.01 s, not below, the next
    halves the pace from where it is; and it wears off only after the gap, else every
    answer met the limit again (877 refused, 56 images out of tries): 51 s, 31 refused."""
    clock = Clock()
    b = board(clock, host_concurrency=100, backoff_base=0.001, backoff_max=60.0)
    for n in range(400):
        b.put(f"http://h/{n}.png", "h", None)
    [(first, _)] = b.lease("w", 1, 0)["tasks"]
    b.report("w", [busy(first)])  # one every 0.25 s
    for _ in range(120):  # 0.25 * 0.97 ** 106 < 0.01
        clock.now += 0.3
        b.report("w", [ok(url) for url, _ in b.lease("w", 1, 0)["tasks"]])
    clock.now += 0.3
    leased = urls_leased_within(b, clock, 0.1, step=0.001)
    assert len(leased) in (10, 11)  # one every 0.01 s: worn off to that, not to none
    b.report("w", [busy(leased[0])])  # twice the pace it refused, from this answer on
    assert leased_within(b, clock, 0.2, step=0.001) in (9, 10)  # one every 0.02 s
    b.report("w", [ok(url) for url in leased[1:]])  # within the gap: no wearing off
    assert leased_within(b, clock, 0.2, step=0.001) in (10, 11)


def test_a_pages_429_slows_its_hosts_images_down_by_the_same_rule(board: MakeBoard) -> None:
    """A host that answered a page 429 or 503 was rate limiting the whole host: its
    images went on in bursts (and its pages after their backoff), as if it had not said
    "too many". Now a page's answer is one more of the host's: the same slow-down, the
    same gap, one note."""
    clock = Clock()
    b = board(clock, host_concurrency=100, backoff_base=0.001, backoff_max=60.0)
    urls = [f"http://h/{n}.png" for n in range(40)]
    for url in urls:
        b.put(url, "h", None)
    assert b.page_host_busy("h", "HTTP 429", "http://h/page.html") == 0.25
    assert b.page_host_busy("h", "HTTP 429", "http://h/other.html") is None  # same news
    assert b.lease("w", 10, 0)["tasks"] == []  # from the page's answer on
    clock.now += 0.25
    [(first, _)] = b.lease("w", 10, 0)["tasks"]  # then one in its pace
    b.report("w", [busy(first)])  # an image's answer within the gap: the same news too
    assert b.news() == [
        "h answered HTTP 429 (http://h/page.html): slowed down to one request every 0.25 s, "
        "across all workers; it speeds up again as the host answers"]
    clock.now += 1.0
    assert leased_within(b, clock, 1.0) == 4  # one every 0.25 s
    assert b.page_host_busy("h", "HTTP 503", "http://h/page.html") == 0.5  # past the gap
    clock.now += 0.5
    assert leased_within(b, clock, 2.0) == 4  # one every 0.5 s
    assert b.news() == []  # said once


def test_a_slow_down_doubles_the_delay_a_host_has_already(board: MakeBoard) -> None:
    """A host asked once a second (its Crawl-delay) answered 503: it was said to be
    slowed down to one request every 0.25 s, and was asked as often as before."""
    clock = Clock()
    b = board(clock, backoff_base=0.001)
    b.set_host_delay("h", 1.0)
    urls = [f"http://h/{n}.png" for n in range(20)]
    for url in urls:
        b.put(url, "h", None)
    [(first, _)] = b.lease("w", 10, 0)["tasks"]
    b.report("w", [busy(first)])
    assert b.news() == [
        f"h answered HTTP 503 ({first}): slowed down to one request every 2 s, "
        "across all workers; it speeds up again as the host answers"]
    clock.now += 1.0
    assert leased_within(b, clock, 4.0) == 2  # one every 2 s


def test_a_slow_down_backoff_max_forbids_is_not_said(board: MakeBoard) -> None:
    """With download.backoff_max = 0 nothing waits: a 503 was said to slow its host
    down to one request every 0 s."""
    clock = Clock()
    b = board(clock, backoff_base=0.0, backoff_max=0.0)
    for n in range(3):
        b.put(f"http://h/{n}.png", "h", None)
    b.report("w", [busy(url) for url, _ in b.lease("w", 10, 0)["tasks"]])
    assert b.news() == []
    assert len(b.lease("w", 10, 0)["tasks"]) == 3  # tried again at once, not paced


def test_permanent_failures_are_final_at_once(board: MakeBoard) -> None:
    b = board(Clock())
    b.put("http://h/a.png", "h", None)
    b.lease("w", 1, 0)
    b.report("w", [Attempt(url="http://h/a.png", ok=False, reason="HTTP 404")])
    [settled] = b.drain()
    assert settled.attempt.reason == "HTTP 404" and settled.attempts == 1


def timed_out(url: str) -> Attempt:
    return Attempt(url=url, ok=False, reason="timed out (no byte for 30 s)", transient=True,
                   kind=FailureKind.TIMEOUT)


GIVEN_UP_H = "given up: h timed out 3 times in a row (download.host_timeouts)"


def test_a_host_that_times_out_again_and_again_is_given_up_for_the_run(
        board: MakeBoard) -> None:
    """A server that accepts and never answers held each of its images for every try's
    timeout, a slot of the crawl's at a time: after host_timeouts in a row its images
    end at once, queued, waiting a retry or found later, each a passing failure (the
    next run tries it again); those in flight end with their own tries. Another host's
    images go on."""
    clock = Clock()
    b = board(clock, host_timeouts=3, max_attempts=3, host_concurrency=3)
    urls = [f"http://h/{n}.png" for n in range(6)]
    for url in [*urls, "http://g/x.png"]:
        b.put(url, url.split("/")[2], None)
    leased = [url for url, _ in b.lease("w", 10, 0)["tasks"]]
    assert leased == ["http://h/0.png", "http://g/x.png", "http://h/1.png", "http://h/2.png"]
    b.report("w", [timed_out(urls[0]), timed_out(urls[1])])
    assert b.drain() == [] and b.news() == []  # each waits for its retry
    b.report("w", [timed_out(urls[2])])
    assert b.news() == ["h timed out 3 times in a row, with no answer between: its other "
                        "images are given up in this run and tried again by the next "
                        "(download.host_timeouts)"]
    ended = {s.attempt.url: s for s in b.drain()}
    assert ended[urls[2]].attempt.reason == "timed out (no byte for 30 s)"  # its own try
    for url in urls[3:]:  # queued: never tried
        assert ended[url].attempt == Attempt(url=url, ok=False, reason=GIVEN_UP_H,
                                             transient=True, kind=FailureKind.TIMEOUT)
        assert ended[url].attempt.rerun_tries_again and ended[url].worker is None
        assert ended[url].attempts == 0  # (the manifest's: none was made)
    assert set(ended) == {urls[2], *urls[3:]}
    clock.now += 10  # the two waiting a retry come due: they end, as a reaped lease would
    assert b.lease("w", 10, 0)["tasks"] == []
    assert [(s.attempt.reason, s.attempts) for s in b.drain()] == [(GIVEN_UP_H, 1)] * 2
    assert b.put("http://h/later.png", "h", None)  # found later: ended at once
    assert [s.attempt.reason for s in b.drain()] == [GIVEN_UP_H]
    b.report("w", [ok("http://g/x.png")])
    assert [s.attempt.url for s in b.drain()] == ["http://g/x.png"]
    assert b.unfinished() == 0 and b.counts()["done"] == 8
    assert b.news() == []  # said once


@pytest.mark.parametrize(("between", "given_up"), [
    (ok("http://h/b.png"), False),
    (Attempt(url="http://h/b.png", ok=False, reason="HTTP 404", kind=FailureKind.STATUS),
     False),
    (Attempt(url="http://h/b.png", ok=False, reason="connection refused", transient=True,
             kind=FailureKind.CONNECTION), True),
])
def test_only_timeouts_in_a_row_give_a_host_up(board: MakeBoard, between: Attempt,
                                                given_up: bool) -> None:
    """An answer of the server (a success, a 404) between two timeouts starts the count
    again; a refused connection says nothing either way."""
    b = board(Clock(), host_timeouts=3, max_attempts=1, host_concurrency=10)
    names = ["a", "b", "c", "d", "e"]
    for name in names:
        b.put(f"http://h/{name}.png", "h", None)
    assert len(b.lease("w", 4, 0)["tasks"]) == 4
    b.report("w", [timed_out("http://h/a.png"), between])
    b.report("w", [timed_out("http://h/c.png"), timed_out("http://h/d.png")])
    ended = {s.attempt.url: s.attempt.reason for s in b.drain()}
    assert (ended.get("http://h/e.png") == GIVEN_UP_H) is given_up, ended


def test_a_timeout_on_a_redirects_target_counts_that_host_not_the_images_own(
        board: MakeBoard) -> None:
    """Images of h redirected to r, a server that never answers: r is given up (its own
    images end), not h, which answered each with its redirect; h's images go on, and its
    count of timeouts in a row started again with each redirect."""
    b = board(Clock(), host_timeouts=3, max_attempts=3, host_concurrency=10)
    redirected = [f"http://h/to-r/{n}.png" for n in range(3)]
    for url in [*redirected, "http://h/a.png", "http://h/b.png", "http://h/c.png"]:
        b.put(url, "h", None)
    b.put("http://r/own.png", "r", None)
    leased = {url for url, _ in b.lease("w", 10, 0)["tasks"]}
    assert len(leased) == 7
    b.report("w", [timed_out("http://h/a.png"), timed_out("http://h/b.png")])
    b.report("w", [timed_out(url)._replace(hop_host="r") for url in redirected])
    b.report("w", [timed_out("http://h/c.png")])  # h: two before the redirects, one after
    assert b.news() == ["r timed out 3 times in a row, with no answer between: its other "
                        "images are given up in this run and tried again by the next "
                        "(download.host_timeouts)"]
    ended = {s.attempt.url: s.attempt.reason for s in b.drain()}
    assert set(ended) == {redirected[2]}  # r's given up: not tried again (the others
    # wait their retry, as h's images: h's queue may not lead to r again)
    assert b.put("http://r/later.png", "r", None)  # r's images end as they come
    assert [s.attempt.reason for s in b.drain()] == [
        "given up: r timed out 3 times in a row (download.host_timeouts)"]
    assert b.put("http://h/later.png", "h", None)  # h's do not
    assert b.drain() == []


def test_a_host_is_never_given_up_with_host_timeouts_0(board: MakeBoard) -> None:
    b = board(Clock(), host_timeouts=0, max_attempts=1, host_concurrency=10)
    for n in range(11):
        b.put(f"http://h/{n}.png", "h", None)
    assert len(b.lease("w", 10, 0)["tasks"]) == 10
    b.report("w", [timed_out(f"http://h/{n}.png") for n in range(10)])
    assert len(b.drain()) == 10 and b.news() == []
    assert b.lease("w", 10, 0)["tasks"] == [("http://h/10.png", 1)]


def test_host_concurrency_and_delay_pace_hand_outs(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock, host_concurrency=2, host_delay=0.0)
    for n in range(5):
        b.put(f"http://h/{n}.png", "h", None)
    b.put("http://other/x.png", "other", None)
    tasks = b.lease("w", 10, 0)["tasks"]
    assert sorted(url for url, _ in tasks) == ["http://h/0.png", "http://h/1.png",
                                               "http://other/x.png"]
    paced = board(clock, host_delay=2.0)
    for n in range(3):
        paced.put(f"http://h/{n}.png", "h", None)
    assert len(paced.lease("w", 10, 0)["tasks"]) == 1
    clock.now += 1
    assert paced.lease("w", 10, 0)["tasks"] == []
    clock.now += 1
    assert len(paced.lease("w", 10, 0)["tasks"]) == 1


def test_release_gives_back_without_counting_an_attempt(board: MakeBoard) -> None:
    b = board(Clock())
    b.put("http://h/a.png", "h", None)
    b.lease("w", 1, 0)
    b.release("w", ["http://h/a.png"])
    assert b.lease("v", 1, 0)["tasks"] == [("http://h/a.png", 1)]


def test_an_image_an_earlier_run_left_is_handed_out_as_tried_before(board: MakeBoard) -> None:
    """A worker of that run may have stored it and died unheard: the attempt number says
    so (the worker then keeps that file, of whatever type), while the tries this run
    counts, and the manifest's attempts, are its own."""
    clock = Clock()
    b = board(clock, worker_silence=5.0)
    b.put("http://h/left.png", "h", None, tried_before=True)
    b.put("http://h/new.png", "h", None)
    clock.now += 5.0  # (the embedded board holds it back until then: the test below)
    assert sorted(b.lease("w", 2, 0)["tasks"]) == [("http://h/left.png", 2),
                                                  ("http://h/new.png", 1)]
    b.report("w", [ok("http://h/left.png")])
    [settled] = b.drain()
    assert settled.attempt.url == "http://h/left.png" and settled.attempts == 1


def test_an_image_an_earlier_run_left_waits_out_the_leases_its_workers_may_still_hold(
) -> None:
    """Embedded, the earlier run's master is gone with its leases, and a worker of that run
    may still store the image, unasked, for as long as its master's last answer vouched
    for it: the image waits worker_silence from the board's start, as a silent worker's
    leases wait on a live master. (A broker's leases outlive a master: no wait there.)"""
    clock = Clock()
    b = memory_board(clock, worker_silence=5.0)
    clock.now += 1.0
    b.put("http://h/left.png", "h", None, tried_before=True)
    b.put("http://h/new.png", "h", None)
    assert b.counts()["delayed"] == 1 and b.unfinished() == 2
    assert b.lease("w", 2, 0)["tasks"] == [("http://h/new.png", 1)]
    clock.now += 3.9
    assert b.lease("w", 2, 0)["tasks"] == []
    clock.now += 0.1
    assert b.lease("w", 2, 0)["tasks"] == [("http://h/left.png", 2)]
    clock.now += 10.0
    b.put("http://h/later.png", "h", None, tried_before=True)  # past then: at once
    assert b.lease("w", 2, 0)["tasks"] == [("http://h/later.png", 2)]


def test_an_earlier_runs_worker_that_stored_an_image_held_back_for_it_is_heard() -> None:
    """Its report, once its master is back, is the URL's result: a worker on another host
    stored it again into its own folder once the wait was over (a second file, the first
    in no manifest line), as the report was of a URL it did not hold."""
    clock = Clock()
    b = memory_board(clock, worker_silence=5.0)
    b.put("http://l/left.png", "l", None, tried_before=True)  # (its host's only URL)
    b.put("http://h/fresh.png", "h", None)
    b.report("earlier", [ok("http://l/left.png"), ok("http://h/fresh.png")])
    [settled] = b.drain()
    assert (settled.attempt.url, settled.worker) == ("http://l/left.png", "earlier")
    clock.now += 5.0
    assert b.lease("w", 2, 0)["tasks"] == [("http://h/fresh.png", 1)]


@pytest.mark.parametrize("waited", [1.0, 6.0])
def test_an_earlier_runs_worker_back_holding_an_image_held_back_for_it_keeps_it(
        waited: float) -> None:
    """A worker connected through its master's restart says it holds the images it was
    downloading: told they were lost ("while silent", though it never was), it dropped
    the downloads, and the images were downloaded again once handed out. Held back for
    it and handed to no one since, they are leased to it again, queued or not yet; one
    another worker was handed meanwhile is lost to it, as before."""
    clock = Clock()
    b = memory_board(clock, worker_silence=5.0)
    b.put("http://h/left.png", "h", None, tried_before=True)
    b.put("http://h/taken.png", "h", None, tried_before=True)
    clock.now += waited  # (6 s: queued by then, no longer held back)
    both = ["http://h/left.png", "http://h/taken.png"]
    [(handed, _)] = b.lease("other", 1, 0)["tasks"] if waited > 5.0 else [("", 0)]
    b.hello("back", WorkerInfo(host="here", pid=1))
    answer = b.exchange("back", 1, [], [], 0, 0, holding=both)
    assert answer.get("lost", []) == ([handed] if handed else [])
    kept = [url for url in both if url != handed]
    b.report("back", [ok(url) for url in kept])
    assert sorted((s.attempt.url, s.worker) for s in b.drain()) == [
        (url, "back") for url in kept]
    assert b.counts()["in_flight"] == (1 if handed else 0)  # (the other's)


def test_an_earlier_runs_url_another_worker_had_since_is_lost_to_its_first_worker() -> None:
    """Handed to another worker after the hold, whose lease then ran out: that worker may
    still store it, and its file must be the one that counts; the worker of the earlier
    run, back, is told it lost the URL, not given it again."""
    clock = Clock()
    b = memory_board(clock, worker_silence=5.0, lease_timeout=10.0)
    b.put("http://h/left.png", "h", None, tried_before=True)
    clock.now += 6.0
    b.hello("other", WorkerInfo(host="there", pid=2))
    assert b.lease("other", 1, 0)["tasks"][0][0] == "http://h/left.png"
    clock.now += 20.0  # "other" falls silent: its lease ends, the URL is queued again
    assert b.reap() == 1 and b.counts()["queued"] == 1
    b.hello("back", WorkerInfo(host="here", pid=1))
    answer = b.exchange("back", 1, [], [], 0, 0, holding=["http://h/left.png"])
    assert answer.get("lost") == ["http://h/left.png"]


def test_an_image_a_run_that_ended_holding_nothing_left_goes_out_at_once() -> None:
    """No worker of that run holds a lease it may still store on: nothing to wait for."""
    clock = Clock()
    b = memory_board(clock, worker_silence=5.0)
    b.no_earlier_leases()
    b.put("http://h/left.png", "h", None, tried_before=True)
    assert b.lease("w", 2, 0)["tasks"] == [("http://h/left.png", 2)]


def test_a_board_that_stopped_lending_says_what_is_held_and_hands_out_nothing() -> None:
    """The master records no more results: what a worker took then, it may store unrecorded,
    and a next run, told no lease was outstanding, would hand it out again at once."""
    b = memory_board(Clock())
    for name in ("a", "b", "c"):
        b.put(f"http://h/{name}.png", "h", None)
    assert len(b.lease("w", 1, 0)["tasks"]) == 1
    assert b.stop_lending() == 1
    assert b.lease("w", 2, 0)["tasks"] == []
    assert (b.counts()["queued"], b.counts()["in_flight"]) == (2, 1)


def test_a_closed_board_tells_workers(board: MakeBoard) -> None:
    b = board(Clock())
    assert not b.closed and b.heartbeat("w")
    b.close()
    assert b.closed and not b.heartbeat("w")
    assert b.lease("w", 1, 0) == {"closed": True, "tasks": []}
    assert b.lease("w", 1, 0.05) == {"closed": True, "tasks": []}


def test_tutorial_workers_show_in_the_status_as_one_line() -> None:
    clock = Clock()
    b = memory_board(clock)
    assert b.tutorial_workers() == []
    for name in ("a", "b", "c"):
        b.put(f"http://h/{name}.png", "h", None)
    tasks, results = TaskQueueView(b), ResultQueueView(b)
    assert tasks.get(timeout=0) == "http://h/a.png" and tasks.get(timeout=0) == "http://h/b.png"
    clock.now += 2.0
    results.put("http://h/a.png--->success")
    [row] = b.tutorial_workers()
    assert b.workers() == []  # the end of a crawl waits for none of them
    assert row["worker"] == memory.CLASSIC_ROW and row["threads"] is None
    assert (row["held"], row["done"], row["failed"]) == (1, 1, 0)
    assert row["last_contact_s"] == 0 and not row["gone"]
    results.put("http://h/b.png--->failure: HTTP 404")
    assert tasks.get(timeout=0) == "http://h/c.png"
    expired = []
    for _ in range(12):  # the crawl loop reaps twice a second
        clock.now += 0.5
        expired.append(b.reap())
    # Past worker_silence: no heartbeat comes from them, and none is due.
    assert expired == [0] * 12 and not b.tutorial_workers()[0]["gone"]
    for _ in range(9):
        clock.now += 0.5
        expired.append(b.reap())
    assert expired[-1] == 1 and sum(expired) == 1  # past lease_timeout, the lease ran out
    [row] = b.tutorial_workers()
    assert (row["held"], row["done"], row["failed"]) == (0, 1, 1) and row["gone"]


def test_a_tutorial_worker_waiting_in_get_is_not_shown_gone() -> None:
    b = TaskBoard(policy_for(lease_timeout=1.0))  # the real clock: get() waits for real

    def wait_in_get() -> None:
        with pytest.raises(queue.Empty):
            TaskQueueView(b).get(timeout=2.5)

    waiting = threading.Thread(target=wait_in_get, daemon=True)
    waiting.start()
    time.sleep(1.8)  # past lease_timeout since it called
    [row] = b.tutorial_workers()
    assert not row["gone"] and row["last_contact_s"] < 1.0, row
    waiting.join(timeout=5)


def test_a_tutorial_worker_waiting_in_get_has_a_share_of_a_hosts_slots() -> None:
    """Tutorial workers were left out of the shares: ours, reporting and asking again,
    kept every slot of a host full, and a tutorial worker waiting in get() got nothing
    until it gave up (10 of them beside 2 of ours: not one URL in a whole crawl)."""
    b = TaskBoard(policy_for(host_concurrency=2))  # the real clock: get() waits for real
    for n in range(4):
        b.put(f"http://h/{n}.png", "h", None)
    assert len(b.lease("w", 2, 0)["tasks"]) == 2  # all the host's slots
    got: list[str] = []
    waiting = threading.Thread(target=lambda: got.append(TaskQueueView(b).get(timeout=4)),
                               daemon=True)
    waiting.start()
    time.sleep(memory.ASKING_WINDOW + 0.5)  # waiting still, not only when it began
    b.report("w", [ok("http://h/0.png")])
    assert b.lease("w", 2, 0)["tasks"] == [], "one of the two slots is the tutorial workers'"
    waiting.join(timeout=5)
    assert got == ["http://h/2.png"]


def test_a_tutorial_worker_is_owed_a_slot_of_a_host_full_of_even_shares() -> None:
    """Two of ours at their 2 of 4 slots, and a tutorial worker asking: the slot a report
    freed went back to ours, the tutorial workers holding none, owed none."""
    b = TaskBoard(policy_for(host_concurrency=4))  # the real clock: get() waits for real
    for n in range(8):
        b.put(f"http://h/{n}.png", "h", None)
    a = [url for url, _ in b.lease("a", 2, 0)["tasks"]]
    assert len(a) == 2 and len(b.lease("b", 2, 0)["tasks"]) == 2  # the host is full
    got: list[str] = []
    waiting = threading.Thread(target=lambda: got.append(TaskQueueView(b).get(timeout=4)),
                               daemon=True)
    waiting.start()
    wait_until(lambda: b.tutorial_workers(), 10, "the tutorial worker to ask")  # and wait
    b.report("a", [ok(a[0])])
    assert b.lease("a", 2, 0)["tasks"] == [], "the slot is the tutorial workers' share"
    waiting.join(timeout=5)
    assert len(got) == 1


def test_classic_get_times_out_on_a_closed_board() -> None:
    b = memory_board(Clock())
    b.close()
    with pytest.raises(queue.Empty):
        TaskQueueView(b).get(timeout=0.01)


def test_classic_get_with_a_negative_timeout_is_refused_as_queue_refuses_it() -> None:
    """queue.Queue.get(timeout=-1) raises ValueError; ours came back Empty at once, as if
    0, and a worker that meant "for ever" took the crawl for done."""
    b = memory_board(Clock())
    b.put("http://h/a.png", "h", None)
    with pytest.raises(ValueError) as standard:
        queue.Queue[str]().get(timeout=-1)
    with pytest.raises(ValueError, match=f"^{re.escape(str(standard.value))}$"):
        TaskQueueView(b).get(timeout=-1)
    assert TaskQueueView(b).get(block=False, timeout=-1) == "http://h/a.png"  # as Queue


def test_classic_get_without_blocking_ignores_its_timeout_nan_too() -> None:
    """queue.Queue.get(block=False) ignores its timeout, whatever it is; ours refused a
    NaN one, which it never waits by."""
    b = memory_board(Clock())
    b.put("http://h/a.png", "h", None)
    with pytest.raises(queue.Empty):
        queue.Queue[str]().get(block=False, timeout=float("nan"))
    assert TaskQueueView(b).get(block=False, timeout=float("nan")) == "http://h/a.png"


def test_classic_get_with_a_nan_timeout_is_refused_not_spun() -> None:
    """get(timeout=nan) on an open board with nothing queued looped for ever, asking the
    board again and again without a pause, until the crawl ended."""
    b = TaskBoard(policy_for())  # the real clock: a spin would spin for real
    outcome: list[BaseException] = []

    def get() -> None:
        try:
            TaskQueueView(b).get(timeout=float("nan"))
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            outcome.append(exc)

    asking = threading.Thread(target=get, daemon=True)
    asking.start()
    asking.join(timeout=2)
    b.close()  # ends a spinning get() too, so the thread does not outlive the test
    asking.join(timeout=5)
    assert outcome and isinstance(outcome[0], ValueError), outcome


def test_the_crawl_loop_is_woken_when_the_last_url_settles_and_when_a_worker_leaves() -> None:
    wakes: list[int] = []
    clock = Clock()
    b = TaskBoard(BoardPolicy(backoff_base=1.0), clock=clock,
                  wake=lambda: wakes.append(b.unfinished()))
    b.put("http://h/a.png", "h", None)
    b.put("http://h/b.png", "h", None)
    b.lease("w", 2, 0)
    b.report("w", [Attempt(url="http://h/a.png", ok=False, reason="timed out",
                           transient=True)])
    b.report("w", [ok("http://h/b.png")])
    assert wakes == [], "a retry due and a URL left: nothing to look at yet"
    clock.now += 2  # the retry's backoff is over
    assert b.lease("w", 1, 0)["tasks"] == [("http://h/a.png", 2)]
    b.report("w", [ok("http://h/a.png")])
    assert wakes == [0]
    b.goodbye("w")
    assert wakes == [0, 0]


def test_an_idle_workers_answer_gathers_what_is_put_in_the_next_moment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While pages are the limit, each page's few images made a round trip of their own.
    A long moment here, so that the test does not hang on the machine's speed: the
    answer comes as soon as it is full."""
    monkeypatch.setattr(memory, "GATHER_FOR", 30.0)
    b = memory_board(Clock())
    b.put("http://h/a.png", "h", None)
    answer: queue.SimpleQueue[list[tuple[str, int]]] = queue.SimpleQueue()
    asking = threading.Thread(target=lambda: answer.put(b.lease("w", 3, 30.0)["tasks"]))
    asking.start()
    time.sleep(0.2)  # it has taken a.png and waits for more
    b.put("http://h/b.png", "h", None)
    b.put("http://h/c.png", "h", None)
    assert answer.get(timeout=10) == [("http://h/a.png", 1), ("http://h/b.png", 1),
                                      ("http://h/c.png", 1)]
    asking.join(10)


def test_once_every_page_is_read_an_idle_workers_answer_comes_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No page is left to bring more images: waiting for them would only delay the
    last ones. A put says that pages are not over after all."""
    monkeypatch.setattr(memory, "GATHER_FOR", 30.0)
    b = memory_board(Clock())
    b.put("http://h/a.png", "h", None)
    b.pages_over()
    started = time.monotonic()
    assert b.lease("w", 3, 30.0)["tasks"] == [("http://h/a.png", 1)]
    assert time.monotonic() - started < 5, "it waited for pages that will not come"
    b.put("http://h/b.png", "h", None)  # more after all: the answer gathers again
    answer: queue.SimpleQueue[list[tuple[str, int]]] = queue.SimpleQueue()
    asking = threading.Thread(target=lambda: answer.put(b.lease("w", 2, 30.0)["tasks"]))
    asking.start()
    time.sleep(0.2)  # it has taken b.png and waits for more
    b.put("http://h/c.png", "h", None)
    assert answer.get(timeout=10) == [("http://h/b.png", 1), ("http://h/c.png", 1)]
    asking.join(10)


def test_a_gathering_worker_passes_on_a_wake_up_meant_for_another(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A put wakes one waiter, the oldest: a worker gathering more of a host than its
    share allows must hand the wake-up on to the idle worker waiting behind it."""
    monkeypatch.setattr(memory, "GATHER_FOR", 30.0)
    b = memory_board(Clock(), host_concurrency=2)
    b.lease("a", 10, 0)
    b.lease("b", 10, 0)  # both ask: each may hold one of the host's two slots
    b.put("http://h/1.png", "h", None)
    answers: queue.SimpleQueue[tuple[str, list[tuple[str, int]], float]] = queue.SimpleQueue()

    def ask(worker: str, most: int) -> None:
        tasks = b.lease(worker, most, 30.0)["tasks"]
        answers.put((worker, tasks, time.monotonic()))

    threads = [threading.Thread(target=ask, args=("a", 10))]
    threads[0].start()
    time.sleep(0.2)  # a has taken 1.png and gathers
    threads.append(threading.Thread(target=ask, args=("b", 1)))
    threads[1].start()
    time.sleep(0.2)  # b waits behind a
    put_at = time.monotonic()
    b.put("http://h/2.png", "h", None)  # wakes a, whose share is full
    got = {worker: (tasks, at) for worker, tasks, at in
           (answers.get(timeout=10) for _ in threads)}
    assert got["a"][0] == [("http://h/1.png", 1)]
    assert got["b"][0] == [("http://h/2.png", 1)]
    assert got["b"][1] - put_at < 0.7, "b slept through the put until its own wait ran out"
    for thread in threads:
        thread.join(10)


def test_a_busy_workers_answer_and_a_capped_one_come_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No gathering for a worker that holds URLs (it asks without waiting), nor when
    what is left waits for a host's slot: it would only be a delay."""
    monkeypatch.setattr(memory, "GATHER_FOR", 30.0)
    b = memory_board(Clock(), host_concurrency=1)
    for name in "ab":
        b.put(f"http://{name}/1.png", name, None)
        b.put(f"http://{name}/2.png", name, None)
    started = time.monotonic()
    assert b.lease("w", 10, 0)["tasks"] == [("http://a/1.png", 1), ("http://b/1.png", 1)]
    b.put("http://c/1.png", "c", None)
    assert b.lease("w", 10, 30.0)["tasks"] == [("http://c/1.png", 1)]
    assert time.monotonic() - started < 5


def test_an_exchange_sent_again_after_a_lost_answer_is_applied_once(board: MakeBoard) -> None:
    # backoff 0 and 2 attempts: a timeout counted twice would end the URL as failed.
    b = board(Clock(), backoff_base=0.0, max_attempts=2)
    b.put("http://h/a.png", "h", None)
    assert b.exchange("w", 1, [], [], 1, 0)["tasks"] == [("http://h/a.png", 1)]
    timeout = Attempt(url="http://h/a.png", ok=False, reason="timed out",
                      transient=True)
    lost = b.exchange("w", 2, [timeout], [], 1, 0)  # the worker never sees this answer
    assert lost["tasks"] == [("http://h/a.png", 2)]
    again = b.exchange("w", 2, [timeout], [], 1, 0, holding=[])
    # Applied once: still the second attempt, leased again, nothing settled.
    assert again["tasks"] == [("http://h/a.png", 2)]
    assert b.drain() == [] and b.retries == 1 and b.duplicates == 0
    b.exchange("w", 3, [ok("http://h/a.png")], [], 0, 0)
    [settled] = b.drain()
    assert settled.attempt.ok and settled.attempts == 2
    assert b.workers()[0]["done"] == 1


def test_a_copy_of_an_exchange_held_up_in_the_network_does_nothing(board: MakeBoard) -> None:
    b = board(Clock(), backoff_base=0.0, max_attempts=2)
    for name in ("a", "b"):
        b.put(f"http://h/{name}.png", "h", None)
    assert b.exchange("w", 1, [], [], 1, 0)["tasks"] == [("http://h/a.png", 1)]
    timeout = Attempt(url="http://h/a.png", ok=False, reason="timed out",
                      transient=True)
    b.exchange("w", 2, [timeout], [], 0, 0)  # sent, the answer lost; sent again:
    assert b.exchange("w", 2, [timeout], [], 2, 0)["tasks"] == [
        ("http://h/a.png", 2), ("http://h/b.png", 1)]
    b.exchange("w", 3, [], [], 0, 0, holding=["http://h/a.png", "http://h/b.png"])
    # The first copy of 2 arrives at last, with a holding list from before a and b.
    late = b.exchange("w", 2, [timeout], [], 5, 0, holding=[])
    assert late == {"closed": False, "tasks": []}
    assert b.retries == 1 and b.counts()["in_flight"] == 2 and b.counts()["reclaimed"] == 0


def test_a_lease_whose_answer_was_lost_goes_back_when_the_worker_says_what_it_holds(
        board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock)
    for name in ("a", "b", "c"):
        b.put(f"http://h/{name}.png", "h", None)
    b.exchange("w", 1, [], [], 1, 0)  # a: received
    b.exchange("w", 2, [], [], 2, 0)  # b and c: the answer was lost
    for _ in range(3):  # heartbeats alone would keep b and c leased forever
        clock.now += 20
        b.exchange("w", 3, [], [], 0, 0)
        assert b.reap() == 0
    assert b.counts()["in_flight"] == 3
    b.exchange("w", 4, [], [], 0, 0, holding=["http://h/a.png"])
    assert b.counts()["in_flight"] == 1 and b.counts()["reclaimed"] == 2
    # Back at the front of the queue, their attempt not counted: they were never tried.
    assert sorted(b.lease("v", 5, 0)["tasks"]) == [("http://h/b.png", 1), ("http://h/c.png", 1)]


def test_classic_results_are_parsed() -> None:
    b = memory_board(Clock())
    b.put("http://h/a.png", "h", None)
    b.put("http://h/b.png", "h", None)
    assert TaskQueueView(b).get(timeout=0) == "http://h/a.png"
    assert TaskQueueView(b).get(timeout=0) == "http://h/b.png"
    b.put("http://h/c.png", "h", None)
    assert TaskQueueView(b).get(timeout=0) == "http://h/c.png"
    ResultQueueView(b).put("http://h/a.png--->Success")  # a capital S is meant the same
    ResultQueueView(b).put("http://h/b.png--->failure: HTTP Error 404: Not Found")
    ResultQueueView(b).put("http://h/c.png--->failure: line1\nINJECTED--->success " + "x" * 9000)
    settled = {s.attempt.url: s.attempt for s in b.drain()}
    assert settled["http://h/a.png"].ok
    assert settled["http://h/b.png"].reason == "HTTP Error 404: Not Found"
    # One line, of a bounded length: it goes to results.log and the summary as is.
    said = settled["http://h/c.png"].reason
    assert said.startswith("line1 INJECTED--->success xxx") and len(said) == 4096
    for garbage in ("garbage without separator", "http://h/a.png--->maybe",
                    "http://h/a.png--->failure HTTP Error 404"):
        with pytest.raises(ValueError) as refused:  # the tutorial worker is told, and how
            ResultQueueView(b).put(garbage)
        assert str(refused.value).endswith(
            "; put 'URL--->success' or 'URL--->failure: reason'"), refused.value
    assert b.counts()["refused"] == 3, "and the master counts (and logs) it"
    # A URL never queued (the one a redirect led to, say): told too, where the master
    # alone logged it, and the URL given waited out its lease each time.
    for never in ("http://h/elsewhere.png--->success", "--->success"):
        with pytest.raises(ValueError, match="no such URL was queued"):
            ResultQueueView(b).put(never)
    assert b.counts()["unknown"] == 2
    ResultQueueView(b).put("http://h/a.png--->success")  # settled before: no error, ignored


def test_remembered_urls_are_never_queued_again(board: MakeBoard) -> None:
    b = board(Clock())
    b.remember(["http://h/done.png"])
    assert not b.put("http://h/done.png", "h", "http://h/again")
    assert b.lease("w", 10, 0)["tasks"] == []
    assert b.unfinished() == 0 and b.drain() == []


def test_a_stale_transient_failure_leaves_the_current_holder_alone(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock, max_attempts=2)
    b.put("http://h/a.png", "h", None)
    b.lease("w1", 1, 0)
    clock.now += 11
    b.reap()
    assert b.lease("w2", 1, 0)["tasks"] == [("http://h/a.png", 2)]
    b.report("w1", [Attempt(url="http://h/a.png", ok=False, reason="timed out",
                            transient=True)])
    assert b.lease("w3", 1, 0)["tasks"] == [], "the URL stays with w2"
    b.report("w2", [ok("http://h/a.png")])
    [settled] = b.drain()
    assert settled.attempt.ok and settled.worker == "w2"


def test_a_busy_answer_slows_the_whole_host_down_from_then_on(board: MakeBoard) -> None:
    """A 503 without Retry-After, as a page's does: the host's other images went at once,
    119 requests in a second to a host that said it was overloaded. They go one every
    0.25 s from the answer on (each image tried again after its own backoff); held for
    that backoff instead, a rate-limited host's images waited seconds at each answer its
    limit refused. A failure of the request alone slows nothing."""
    clock = Clock()
    b = board(clock, backoff_base=4.0)
    for name in ("a", "b", "c", "d", "e"):
        b.put(f"http://h/{name}.png", "h", None)
    [(busy, _), (slow, _)] = b.lease("w", 2, 0)["tasks"]
    b.report("w", [Attempt(url=slow, ok=False, reason="timed out", transient=True,
                           kind=FailureKind.TIMEOUT)])
    assert len(b.lease("w", 1, 0)["tasks"]) == 1  # a timeout holds no host
    b.report("w", [Attempt(url=busy, ok=False, reason="HTTP 503", transient=True,
                           kind=FailureKind.STATUS)])
    assert b.lease("w", 5, 0)["tasks"] == []
    clock.now += 0.3
    assert len(b.lease("w", 5, 0)["tasks"]) == 1
    clock.now += 0.1
    assert b.lease("w", 5, 0)["tasks"] == []
    clock.now += 0.2
    assert len(b.lease("w", 5, 0)["tasks"]) == 1
    clock.now += 0.5  # the two tried again are not due before their backoff (2 to 4 s)
    assert b.lease("w", 5, 0)["tasks"] == []


@pytest.mark.parametrize("status", [500, 502])
def test_an_error_of_one_url_holds_that_url_alone(board: MakeBoard, status: int) -> None:
    """A 500 is often one URL's alone (a broken thumbnail): holding the host for it, a
    few broken images in a thousand slowed a healthy host to a crawl."""
    clock = Clock()
    b = board(clock, backoff_base=4.0)
    for name in ("a", "b", "c"):
        b.put(f"http://h/{name}.png", "h", None)
    [(broken, _)] = b.lease("w", 1, 0)["tasks"]
    b.report("w", [Attempt(url=broken, ok=False, reason=f"HTTP {status}", transient=True,
                           kind=FailureKind.STATUS)])
    assert len(b.lease("w", 5, 0)["tasks"]) == 2  # the others at once
    clock.now += 4.1
    assert [url for url, _ in b.lease("w", 5, 0)["tasks"]] == [broken]


def test_crawl_delay_does_not_shorten_the_configured_host_delay(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock, host_delay=5.0)
    b.set_host_delay("h", 0.5)
    for n in range(2):
        b.put(f"http://h/{n}.png", "h", None)
    assert len(b.lease("w", 10, 0)["tasks"]) == 1
    clock.now += 1
    assert b.lease("w", 10, 0)["tasks"] == []


def test_a_crawl_delay_told_again_replaces_the_one_before(board: MakeBoard) -> None:
    """A robots.txt read again past its age may ask for more or for less."""
    clock = Clock()
    b = board(clock, host_delay=1.0)
    b.set_host_delay("h", 10.0)
    for n in range(5):
        b.put(f"http://h/{n}.png", "h", None)
    assert len(b.lease("w", 10, 0)["tasks"]) == 1
    b.set_host_delay("h", 3.0)
    clock.now += 10  # (the wait already set stays)
    assert len(b.lease("w", 10, 0)["tasks"]) == 1
    clock.now += 2.9
    assert b.lease("w", 10, 0)["tasks"] == []
    clock.now += 0.1
    assert len(b.lease("w", 10, 0)["tasks"]) == 1  # 3 s from now on
    b.set_host_delay("h", 0.0)  # no Crawl-delay any more: the configured delay
    clock.now += 3
    assert len(b.lease("w", 10, 0)["tasks"]) == 1
    clock.now += 0.9
    assert b.lease("w", 10, 0)["tasks"] == []
    clock.now += 0.1
    assert len(b.lease("w", 10, 0)["tasks"]) == 1


def test_the_boards_paces_may_be_shared_with_the_pages_requests() -> None:
    """Embedded, the master's page requests take turns of the same paces: a page's turn
    or hold keeps images back, and an image's Retry-After holds the pages."""
    from crawler.model.pacing import Paces

    clock, paces = Clock(), Paces(2.0)
    b = TaskBoard(policy_for(host_delay=2.0), clock=clock, paces=paces)
    for name in ("a", "b", "c"):
        b.put(f"http://h/{name}.png", "h", None)
    assert paces.of("h").take(clock.now, page=True)  # a page's request
    assert b.lease("w", 5, 0)["tasks"] == []
    clock.now += 2
    assert len(b.lease("w", 5, 0)["tasks"]) == 1
    clock.now += 2
    paces.of("h").hold(clock.now + 10)  # the page's server asked for a pause
    assert b.lease("w", 5, 0)["tasks"] == []
    clock.now += 10
    [(url, _)] = b.lease("w", 5, 0)["tasks"]
    b.report("w", [Attempt(url=url, ok=False, reason="HTTP 503", transient=True,
                           retry_after=30)])
    assert not paces.of("h").take(clock.now + 29, page=True)
    assert paces.of("h").take(clock.now + 30, page=True)


def test_the_policy_defaults_are_the_settings_own() -> None:
    assert set(POLICY_SETTINGS) == set(BoardPolicy._fields)  # each rule has its setting
    assert BoardPolicy() == BoardPolicy.from_settings(Settings())
    changed = Settings().with_values({"queue.lease_timeout": 7, "politeness.host_delay": 0.5,
                                      "download.max_attempts": 5, "queue.batch_size": 3})
    policy = BoardPolicy.from_settings(changed)
    assert (policy.lease_timeout, policy.host_delay, policy.max_attempts,
            policy.batch_size) == (7, 0.5, 5, 3)


def test_a_silent_worker_loses_its_leases_and_learns_which_when_it_returns(
        board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock, lease_timeout=60.0, worker_silence=5.0)
    b.put("http://h/a.png", "h", None)
    assert b.exchange("w", 1, [], [], 1, 0)["tasks"] == [("http://h/a.png", 1)]
    clock.now += 4
    assert b.reap() == 0  # heard from recently enough
    clock.now += 2
    assert b.reap() == 1  # silent for 6 s: long before the lease's 60 s
    assert b.lease("other", 1, 0)["tasks"] == [("http://h/a.png", 2)]
    answer = b.exchange("w", 2, [], [], 0, 0, holding=["http://h/a.png"])
    assert answer.get("lost") == ["http://h/a.png"]


def test_a_board_away_for_a_while_ends_no_lease_of_a_worker_that_calls_again(
        board: MakeBoard) -> None:
    """No reap for a while (every master and worker reaps each second or so): redis-server
    restarted or hung, or the master's process was stopped, and no one could call. A
    6 s restart ended every lease at once, of workers that called as soon as it was
    back. A worker dead all the same loses its leases worker_silence later, and the
    classic holder's deadline moves on by the stretch too."""
    clock = Clock()
    b = board(clock, lease_timeout=10.0, worker_silence=5.0)
    b.put("http://h/a.png", "h", None)
    b.put("http://h/b.png", "h", None)
    assert b.exchange("w", 1, [], [], 1, 0)["tasks"] == [("http://h/a.png", 1)]
    assert b.lease(CLASSIC, 1, 0)["tasks"] == [("http://h/b.png", 1)]
    assert b.reap() == 0
    clock.now += 12  # away: past worker_silence and the classic lease's deadline
    assert b.reap() == 0

    def reaped_each_second(seconds: int) -> list[int]:
        expired = []
        for _ in range(seconds):
            clock.now += 1
            expired.append(b.reap())
        return expired

    # Back for 6 s, and "w" never called again: it is gone.
    assert reaped_each_second(6) == [0, 0, 0, 0, 0, 1]
    assert b.lease("other", 1, 0)["tasks"] == [("http://h/a.png", 2)]
    b.heartbeat("other")
    # The classic lease's 10 s, and the 12 s away.
    assert reaped_each_second(5) == [0, 0, 0, 0, 1]


def test_a_slow_reaper_is_no_board_away_while_workers_reach_the_board(
        board: MakeBoard) -> None:
    """The embedded board's reaper is the crawl loop: a long commit or a loaded host may
    hold it for seconds while the board answers workers. A worker that died meanwhile
    kept its leases for as long as such stalls came, past lease_timeout."""
    clock = Clock()
    b = board(clock, lease_timeout=60.0, worker_silence=5.0)
    b.put("http://h/a.png", "h", None)
    assert b.exchange("dead", 1, [], [], 1, 0)["tasks"] == [("http://h/a.png", 1)]
    assert b.reap() == 0
    expired = []
    for _ in range(4):  # reaped every 2.5 s, a live worker calling in between
        clock.now += 1.5
        b.heartbeat("alive")
        clock.now += 1.0
        expired.append(b.reap())
    assert expired == [0, 0, 1, 0], expired  # silent past worker_silence: gone


def test_one_worker_gets_its_share_of_a_host_not_all_of_it(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock, host_concurrency=4)
    for n in range(10):
        b.put(f"http://h/{n}.png", "h", None)
    assert len(b.lease("first", 10, 0)["tasks"]) == 4  # alone: every slot
    b.lease("second", 10, 0)  # nothing free yet, but it asks
    first = [url for url, _ in b.lease("first", 10, 0)["tasks"]]
    assert first == []
    b.report("first", [ok(f"http://h/{n}.png") for n in range(3)])  # three slots free
    assert len(b.lease("first", 10, 0)["tasks"]) == 1  # up to its share of 2
    assert len(b.lease("second", 10, 0)["tasks"]) == 2


def test_a_worker_that_joins_a_host_full_of_even_shares_gets_slots(board: MakeBoard) -> None:
    """Shares rounded up add up to more than a host has: two workers at their 2 of 4
    slots took back, in their own exchange, each slot their reports freed, and a third
    that came later got none for as long as the host had URLs (the fifth of five
    workers, with the default 16 slots, or a worker joining eight --threads 1 ones)."""
    clock = Clock()
    b = board(clock, host_concurrency=4)
    for n in range(20):
        b.put(f"http://h/{n}.png", "h", None)
    a = [url for url, _ in b.lease("a", 2, 0)["tasks"]]
    assert len(a) == 2 and len(b.lease("b", 2, 0)["tasks"]) == 2  # the host is full
    assert b.lease("c", 2, 0)["tasks"] == []  # c asks: three share the host now
    # a reports one and asks in the same exchange: at its share rounded down (1 of 4),
    # the slot it freed is the one c lacks.
    assert b.exchange("a", 1, [ok(a[0])], [], 2, 0)["tasks"] == []
    assert len(b.lease("c", 2, 0)["tasks"]) == 1
    # Once none lacks its share rounded down, a free slot goes to whoever asks.
    assert len(b.exchange("a", 2, [ok(a[1])], [], 2, 0)["tasks"]) == 1


def test_a_worker_that_has_all_it_asked_for_is_owed_no_slots(board: MakeBoard) -> None:
    """A worker with few threads, full of another host's URLs, lacks its share of this
    host but asks for none of it: slots held back for it would stay idle."""
    b = board(Clock(), host_concurrency=4)
    for n in range(2):
        b.put(f"http://g/{n}.png", "g", None)
    assert len(b.lease("tiny", 2, 0)["tasks"]) == 2  # all it asked for, on g
    for n in range(10):
        b.put(f"http://h/{n}.png", "h", None)
    a = [url for url, _ in b.lease("a", 2, 0)["tasks"]]
    assert len(a) == 2 and len(b.lease("b", 2, 0)["tasks"]) == 2  # h is full
    # a, at its share rounded down once it reported, takes the slot back: tiny holds
    # none of h, and is owed none.
    assert len(b.exchange("a", 1, [ok(a[0])], [], 2, 0)["tasks"]) == 1


def test_the_ref_and_page_come_back_with_the_result(board: MakeBoard) -> None:
    b = board(Clock())
    ref = json.dumps({"kind": "img", "alt": "a red dot"})
    b.put("http://h/a.png", "h", "http://h/", ref)
    b.lease("w", 1, 0)
    b.report("w", [ok("http://h/a.png")])
    b.settle_now(Attempt(url="http://h/robots.png", ok=False, reason="robots.txt"),
                 "http://h/", json.dumps({"kind": "css"}))
    a, robots = b.drain()
    assert (a.ref, a.page, a.worker, a.attempts) == (ref, "http://h/", "w", 1)
    assert (robots.ref, robots.page, robots.worker, robots.attempts) == (
        '{"kind": "css"}', "http://h/", None, 0)
    assert robots.attempt == Attempt(url="http://h/robots.png", ok=False, reason="robots.txt")
    assert b.drain() == []


def test_a_url_the_master_settled_is_final_and_never_queued(board: MakeBoard) -> None:
    b = board(Clock())
    b.settle_now(Attempt(url="http://h/a.png", ok=False, reason="dry run"), None)
    b.settle_now(Attempt(url="http://h/a.png", ok=False, reason="again"), None)
    assert not b.put("http://h/a.png", "h", None)
    assert b.known("http://h/a.png") and not b.known("http://h/b.png")
    assert b.unfinished() == 0 and b.counts()["done"] == 1
    [settled] = b.drain()
    assert settled.attempt.reason == "dry run" and settled.page is None and settled.ref is None


def test_the_memory_board_keeps_no_record_of_its_own_for_a_settled_url() -> None:
    """Once a URL's result is handed over, its ref, page and lease fields are of no use:
    a large crawl kept them for every image (about 480 bytes a URL, against 160)."""
    clock = Clock()
    b = memory_board(clock, max_attempts=1)
    ref = json.dumps({"kind": "img", "alt": "a long description of the picture " * 3})
    for n in range(4):
        b.put(f"http://h/{n}.png", "h", "http://h/", ref)
    b.settle_now(Attempt(url="http://h/robots.png", ok=False, reason="robots.txt"),
                 "http://h/", ref)
    b.remember(["http://h/earlier.png"])
    tasks = [url for url, _ in b.lease("w", 4, 0)["tasks"]]
    b.report("w", [ok(tasks[0]), Attempt(url=tasks[1], ok=False, reason="HTTP 404")])
    clock.now += 11
    assert b.reap() == 2  # the other two: lost, out of attempts
    settled = b.drain()
    assert len(settled) == 5 and all(s.ref == ref for s in settled if s.attempts)
    records = {id(b._items[url]) for url in b._items}
    assert len(b._items) == 6 and len(records) == 1, "one shared record for every settled URL"
    assert not b.put("http://h/0.png", "h", None) and b.known("http://h/earlier.png")
    assert b.counts()["done"] == 6 and b.unfinished() == 0


def test_a_url_out_of_attempts_fails_as_lost_when_its_lease_runs_out(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock, max_attempts=1)
    b.put("http://h/a.png", "h", "http://h/")
    b.lease("w", 1, 0)
    clock.now += 11
    assert b.reap() == 1
    [settled] = b.drain()
    assert settled.attempt.reason.startswith("lost: no result after 1 attempts")
    assert settled.attempt.rerun_tries_again  # no server said no: the next run tries it
    assert (settled.worker, settled.attempts, settled.page) == (None, 1, "http://h/")
    assert b.unfinished() == 0 and b.counts()["expired"] == 1
    assert b.lease("w", 1, 0)["tasks"] == []


def test_a_workers_hello_is_given_back_as_it_said_it(board: MakeBoard) -> None:
    """The master tells by it where a worker of its host stores (``master.missing``)."""
    b = board(Clock())
    said = WorkerInfo(host="box", pid=7, threads=4, folder="/data/own")
    b.hello("w", said)
    assert b.worker_info("w") == said
    assert b.worker_info("never-said-hello") is None


def test_counts_and_workers_say_the_same_on_both_boards(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock)
    b.hello("w", {"host": "box", "pid": 7, "threads": 4})
    for name in ("a", "b", "c"):
        b.put(f"http://h/{name}.png", "h", None)
    b.lease("w", 2, 0)
    clock.now += 2
    b.report("w", [ok("http://h/a.png"),
                   Attempt(url="http://h/b.png", ok=False, reason="HTTP 503", transient=True)])
    assert b.counts() == {"queued": 1, "in_flight": 0, "delayed": 1, "done": 1, "retries": 1,
                          "expired": 0, "duplicates": 0, "unknown": 0, "reclaimed": 0,
                          "refused": 0, "workers": 1, "tutorial": 0}
    b.heartbeat("other")  # an unknown worker's call makes a record of its own
    clock.now += 1
    [w, other] = b.workers()
    assert w == {"worker": "w", "host": "box", "pid": 7, "threads": 4, "held": 0, "done": 1,
                 "failed": 1, "bytes": 10, "rate": 0.5, "last_contact_s": 1.0, "gone": False}
    assert (other["worker"], other["host"], other["held"]) == ("other", None, 0)
    b.goodbye("w")
    assert [x["gone"] for x in b.workers()] == [True, False]
    assert b.counts()["workers"] == 1
    b.refuse("w", "garbage")
    assert b.counts()["refused"] == 1 and b.refused == 1


def test_a_worker_silent_for_a_whole_lease_is_gone_until_it_calls_again(
        board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock)
    b.hello("w", {"host": "box", "pid": 7, "threads": 4})
    clock.now += 11
    b.reap()
    assert [x["gone"] for x in b.workers()] == [True] and b.counts()["workers"] == 0
    b.heartbeat("w")
    assert [x["gone"] for x in b.workers()] == [False]


def test_a_worker_silent_past_worker_silence_is_shown_gone_though_no_master_reaps(
        board: MakeBoard) -> None:
    # On a broker every master may have left (a worker killed -9 after the crawl's
    # end): nothing reaps, and status must not show the dead worker as live. Our
    # workers call every second: one silent for worker_silence is gone, as its leases.
    clock = Clock()
    b = board(clock, worker_silence=5.0)
    b.hello("dead", {"host": "box", "pid": 7, "threads": 4})
    b.hello("alive", {"host": "box", "pid": 8, "threads": 4})
    clock.now += 4
    b.heartbeat("alive")
    assert [x["gone"] for x in b.workers()] == [False, False]
    clock.now += 2  # "dead" is 6 s silent; "alive" 2 s
    assert [(x["worker"], x["gone"]) for x in b.workers()] == [("dead", True),
                                                                ("alive", False)]
    assert b.counts()["workers"] == 1
    b.heartbeat("dead")  # it was only stopped a while
    assert [x["gone"] for x in b.workers()] == [False, False]


def test_a_gone_worker_no_longer_shrinks_the_others_share(board: MakeBoard) -> None:
    b = board(Clock(), host_concurrency=4)
    for n in range(10):
        b.put(f"http://h/{n}.png", "h", None)
    b.lease("leaving", 1, 0)
    b.goodbye("leaving")
    assert len(b.lease("staying", 10, 0)["tasks"]) == 3  # every free slot, not half


def test_only_the_workers_asking_lately_share_a_hosts_slots(board: MakeBoard) -> None:
    clock = Clock()
    b = board(clock, host_concurrency=4)
    for n in range(20):
        b.put(f"http://h/{n}.png", "h", None)
    first = [url for url, _ in b.lease("a", 10, 0)["tasks"]]
    assert len(first) == 4 and b.lease("b", 10, 0)["tasks"] == []
    b.report("a", [ok(url) for url in first])
    held = {w: [url for url, _ in b.lease(w, 10, 0)["tasks"]] for w in ("a", "b")}
    assert [len(urls) for urls in held.values()] == [2, 2]
    clock.now += 3  # neither has asked for longer than the asking window
    for worker, urls in held.items():
        b.report(worker, [ok(url) for url in urls])
    assert len(b.lease("c", 10, 0)["tasks"]) == 4


def test_the_redis_board_offers_what_the_memory_board_offers() -> None:
    """The same public names, and the same parameters for each call."""
    memory = TaskBoard(BoardPolicy())
    in_redis = RedisBoard(redis.Redis(), "never-connected", BoardPolicy())
    public = {name for name in [*dir(TaskBoard), *vars(memory)] if not name.startswith("_")}
    offered = {*dir(RedisBoard), *vars(in_redis)}
    assert public <= offered, public - offered
    for name in public:
        ours = getattr(TaskBoard, name, None)
        if callable(ours):
            assert (inspect.signature(ours).parameters.keys()
                    == inspect.signature(getattr(RedisBoard, name)).parameters.keys()), name


def test_records_of_workers_that_left_are_kept_to_a_bound(monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    """Each worker process has a name of its own, and every lease looked at every record:
    100,000 workers come and gone made each lease cost 6.8 ms, under the board's lock."""
    from crawler.board import memory

    monkeypatch.setattr(memory, "DEPARTED_KEPT", 50)
    clock = Clock()
    b = memory_board(clock)
    b.put("http://h/a.png", "h", None)
    b.hello("stays", {})
    assert b.lease("stays", 1, 0)["tasks"] == [("http://h/a.png", 1)]
    for n in range(200):
        b.hello(f"w{n}", {})
        clock.now += 0.01
        b.goodbye(f"w{n}")
    b.reap()
    names = [w["worker"] for w in b.workers()]
    assert len(names) == 51 and "stays" in names  # it holds a URL: never dropped
    assert names[-50:] == [f"w{n}" for n in range(150, 200)]  # the most recent that left


SC = "127.0.0.1\tFALSE\t/\tFALSE\t0\tsc\tone"


def test_cookies_pages_set_are_kept_and_their_version_goes_with_the_leases(
        board: MakeBoard) -> None:
    """Published before a page's images are put, the lines are had by a worker whose
    lease of them says a version that has them; a line of the same cookie replaces it,
    and one that changes nothing leaves the version."""
    b = board(Clock())
    b.put("http://h/a.png", "h", None)
    assert "cookies" not in b.lease("w", 1, 0)  # none set: the answer as it was
    assert b.cookies_since(0) == (0, [])
    first = b.publish_cookies([SC, "ALL", "not\ta cookie"])  # commands are no cookies
    b.put("http://h/b.png", "h", None)
    answer = b.exchange("w", 1, [], [], 1, 0)
    assert answer["tasks"] == [("http://h/b.png", 1)] and answer["cookies"] == first >= 1
    assert b.cookies_since(0) == (first, [SC])
    assert b.publish_cookies([SC]) == first  # nothing new
    changed = SC.replace("one", "two")
    other = "127.0.0.1\tFALSE\t/x/\tFALSE\t0\tsc\tpath"  # another path: another cookie
    second = b.publish_cookies([changed, other])
    assert second > first
    assert b.cookies_since(first) == (second, [changed, other])
    assert sorted(b.cookies_since(0)[1]) == sorted([changed, other])


def test_the_cookies_kept_are_capped(board: MakeBoard, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "MAX_COOKIES", 2)
    monkeypatch.setattr(redis_board, "MAX_COOKIES", 2)
    b = board(Clock())
    lines = [f"h\tFALSE\t/\tFALSE\t0\tc{n}\tv" for n in range(4)]
    b.publish_cookies(lines)
    assert sorted(b.cookies_since(0)[1]) == lines[:2]
    b.publish_cookies([lines[1].replace("\tv", "\tw")])  # one kept may still change
    assert sorted(b.cookies_since(0)[1]) == [lines[0], lines[1].replace("\tv", "\tw")]


def test_a_worker_one_change_behind_is_sent_that_change_only(
        redis_server: RedisServer) -> None:
    """A site that changes a cookie on every page, with a jar near its cap: each worker
    asks after each change. What the broker sends it is the change, not the jar."""
    client = redis_server.client()
    try:
        b = RedisBoard(client, f"test-{secrets.token_hex(8)}", policy_for(), clock=Clock())
        filler = "x" * 800
        version = b.publish_cookies(
            [f"h\tFALSE\t/\tFALSE\t0\tc{n}\t{filler}" for n in range(300)])
        assert len(b.cookies_since(0)[1]) == 300
        changed = b.publish_cookies(["h\tFALSE\t/\tFALSE\t0\tc7\tnew"])
        sent = int(client.info("stats")["total_net_output_bytes"])
        assert b.cookies_since(version) == (changed, ["h\tFALSE\t/\tFALSE\t0\tc7\tnew"])
        sent = int(client.info("stats")["total_net_output_bytes"]) - sent
        assert sent < 16 * 1024, f"{sent} bytes for one changed cookie"
    finally:
        client.close()
