"""The Redis board with several processes: what the shared rules suite cannot show.

Each RedisBoard object stands for a master or a worker process of its own (its
own client and connection); they share one crawl in a real redis-server.
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from crawler.board.broker import (
    CALL_DEADLINE,
    CONNECT_DEADLINE,
    CrawlRecord,
    broker_time,
    connect,
    keys_prefix,
    parse_broker,
)
from crawler.board.memory import BoardPolicy
from crawler.board.redis import RedisBoard, broker_errors
from crawler.board.redis_client import BrokerClient, _BrokerView
from crawler.errors import BadCrawlInfo, BrokerError, BrokerUnreachable, UsageError
from crawler.model.outcome import Attempt, FailureKind

from .conftest import free_port
from .redis_server import RedisServer, client_of
from .tls import make_ca

POLICY = BoardPolicy(lease_timeout=60.0, backoff_base=0.0, host_delay=0.0)


def ok(url: str) -> Attempt:
    return Attempt(url=url, ok=True, bytes=10, path="images/http/h/a.png", sha256="ab" * 32)


@pytest.fixture
def boards(redis_server: RedisServer, crawl_name: str
           ) -> Iterator[Callable[..., RedisBoard]]:
    """Makes RedisBoard objects of one crawl, each with a client of its own."""
    clients: list[redis.Redis] = []

    def make(policy: BoardPolicy = POLICY) -> RedisBoard:
        clients.append(redis_server.client())
        return RedisBoard(clients[-1], crawl_name, policy)

    yield make
    for client in clients:
        client.close()


def test_two_objects_never_hand_one_url_to_two_workers(boards: Callable[..., RedisBoard]
                                                       ) -> None:
    first, second = boards(), boards()
    urls = [f"http://h{n % 3}/{n}.png" for n in range(12)]
    for url in urls:
        first.put(url, url.split("/")[2], None)
    one = [url for url, _ in first.lease("w1", 5, 0)["tasks"]]
    two = [url for url, _ in second.lease("w2", 100, 0)["tasks"]]
    three = [url for url, _ in first.lease("w1", 100, 0)["tasks"]]
    assert len(one) == 5 and not set(one) & set(two) and not set(one + two) & set(three)
    assert sorted(one + two + three) == sorted(urls)
    assert second.counts()["in_flight"] == 12


def test_the_same_url_put_through_two_objects_is_queued_once(
        boards: Callable[..., RedisBoard]) -> None:
    first, second = boards(), boards()
    assert first.put("http://h/a.png", "h", "http://h/one")
    assert not second.put("http://h/a.png", "h", "http://h/two")
    assert second.known("http://h/a.png")
    assert first.counts()["queued"] == 1 and second.unfinished() == 1
    assert second.lease("w", 10, 0)["tasks"] == [("http://h/a.png", 1)]
    assert first.lease("v", 10, 0)["tasks"] == []


def test_host_concurrency_holds_across_objects(boards: Callable[..., RedisBoard]) -> None:
    policy = BoardPolicy(lease_timeout=60.0, host_concurrency=2, host_delay=0.0)
    first, second = boards(policy), boards(policy)
    for n in range(5):
        first.put(f"http://h/{n}.png", "h", None)
    taken = first.lease("w1", 10, 0)["tasks"]
    assert len(taken) == 2
    assert second.lease("w2", 10, 0)["tasks"] == []  # the host's two slots are taken
    first.report("w1", [ok(taken[0][0])])
    assert len(second.lease("w2", 10, 0)["tasks"]) == 1


def test_a_second_object_drains_what_the_first_recorded(
        boards: Callable[..., RedisBoard], redis_server: RedisServer, crawl_name: str) -> None:
    first, second = boards(), boards()
    first.put("http://h/a.png", "h", "http://h/", '{"kind":"img"}')
    first.lease("w", 1, 0)
    first.report("w", [ok("http://h/a.png")])
    [settled] = second.drain()
    assert (settled.attempt, settled.page, settled.worker, settled.ref) == (
        ok("http://h/a.png"), "http://h/", "w", '{"kind":"img"}')
    assert second.drain() == []
    assert [s.attempt.url for s in first.drain()] == ["http://h/a.png"]  # its own cursor
    first.settle_now(Attempt(url="http://h/b.png", ok=False, reason="scope"), None)
    assert [s.attempt.url for s in second.drain()] == ["http://h/b.png"]
    # A master that starts now sees every result so far.
    assert [s.attempt.url for s in boards().drain()] == ["http://h/a.png", "http://h/b.png"]
    assert len(second.settled_all()) == 2 and second.drain() == []


def test_puts_join_the_callers_transaction_or_are_not_made(
        boards: Callable[..., RedisBoard], redis_server: RedisServer) -> None:
    board = boards()
    client, meddler = redis_server.client(), redis_server.client()
    with client.pipeline(transaction=True) as pipe:
        pipe.hset("pages:test", "http://h/", "visited")
        board.queue_puts(pipe, [("http://h/a.png", "h", "http://h/", None)])
        board.queue_settle_now(pipe, Attempt(url="http://h/b.png", ok=False, reason="scope"),
                               "http://h/")
        assert pipe.execute() == [1, 1, 1]
    assert board.known("http://h/a.png") and board.known("http://h/b.png")
    with client.pipeline(transaction=True) as pipe:
        pipe.watch("pages:test")
        meddler.hset("pages:test", "http://h/", "changed")  # another master got there first
        pipe.multi()
        board.queue_puts(pipe, [("http://h/c.png", "h", "http://h/", None)])
        with pytest.raises(redis.exceptions.WatchError):
            pipe.execute()
    assert not board.known("http://h/c.png") and board.unfinished() == 1
    client.close()
    meddler.close()


def test_a_pages_images_are_queued_in_one_call_each_once(
        boards: Callable[..., RedisBoard], redis_server: RedisServer) -> None:
    board = boards()
    assert board.put("http://h/known.png", "h", None)
    client = redis_server.client()
    images = [(f"http://h/{n}.png", "h", "http://h/", None) for n in range(2500)]
    with client.pipeline(transaction=True) as pipe:
        board.queue_puts(pipe, [*images, ("http://h/known.png", "h", "http://h/", None),
                                ("http://h/7.png", "h", "http://h/", None)])
        assert sum(pipe.execute()) == 2500  # the known one and the second 7.png were not
    client.close()
    assert board.unfinished() == 2501
    assert all(board.known(url) for url, *_ in images)


def test_passing_failures_are_queued_again_a_chunk_a_call_and_the_crawl_reopens(
        boards: Callable[..., RedisBoard], redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis serves no one while a script runs: a rerun of a crawl whose host was down
    for good takes its thousands of failures up a chunk at a time."""
    board = boards(BoardPolicy(lease_timeout=60.0, max_attempts=1, host_concurrency=10_000,
                               batch_size=10_000, host_delay=0.0))
    client = redis_server.client()
    urls = [f"http://h/{n}.png" for n in range(2500)]
    with client.pipeline(transaction=True) as pipe:
        board.queue_puts(pipe, [(url, "h", "http://h/", '{"kind":"img"}') for url in urls]
                         + [("http://h/ok.png", "h", "http://h/", None)])
        pipe.execute()
    leased = [url for url, _ in board.lease("w", 10_000, 0)["tasks"]]
    assert len(leased) == 2501
    board.report("w", [Attempt(url=url, ok=False, reason="HTTP 503", transient=True)
                       for url in urls] + [ok("http://h/ok.png")])
    assert board.unfinished() == 0 and board.close_if_idle() and board.closed
    assert board.counts()["done"] == 2501 and board.has_failures_to_retry()
    calls: list[int] = []
    real_run = RedisBoard._run
    monkeypatch.setattr(RedisBoard, "_run", lambda self, script, args, pipe=None: (
        calls.append(len(args)) if script == "retry_failed" else None,
        real_run(self, script, args, pipe))[1])
    assert board.retry_failures_worth_a_rerun() == (2500, 0)
    assert len(calls) >= 3 and max(calls) <= 1 + 1000  # which ones, and CHUNK URLs a call
    assert not board.closed and not board.has_failures_to_retry()
    counts = board.counts()
    assert (counts["queued"], counts["done"], board.unfinished()) == (2500, 1, 2500)
    # Their stream entries are gone: a master starting now writes one line per URL.
    assert [s.attempt.url for s in boards().drain()] == ["http://h/ok.png"]
    assert board.retry_failures_worth_a_rerun() == (0, 0)
    again = [url for url, attempt in board.lease("w", 10_000, 0)["tasks"]]
    assert sorted(again) == sorted(urls)
    client.close()


def test_a_name_taken_in_the_image_folder_is_final_in_its_run_and_queued_by_a_rerun(
        boards: Callable[..., RedisBoard]) -> None:
    """A stray file where an image's folder belongs fails it at once (another try in the
    run would meet the same file); a rerun, after the user moved the file away as told,
    queues it again and says it apart from the passing failures. The broker kept it
    final, and only a crawl started afresh recovered."""
    board = boards(BoardPolicy(lease_timeout=60.0, max_attempts=3, host_delay=0.0))
    for name in ("taken", "404", "tls"):
        board.put(f"http://h/{name}.png", "h", "http://h/")
    assert len(board.lease("w", 10, 0)["tasks"]) == 3
    board.report("w", [
        Attempt(url="http://h/taken.png", ok=False, kind=FailureKind.NAME_TAKEN,
                reason="cannot store X: Y is a file the crawler did not store, where a "
                       "folder is needed; move it away, then run the same command again"),
        Attempt(url="http://h/404.png", ok=False, kind=FailureKind.STATUS, reason="HTTP 404"),
        # A setting fixes it (--ca-bundle): the next run tries it, counted as passing.
        Attempt(url="http://h/tls.png", ok=False, kind=FailureKind.TLS,
                reason="TLS certificate not trusted: unable to get local issuer certificate")])
    assert board.unfinished() == 0, "not tried again within the run"
    assert board.close_if_idle()
    assert board.retry_failures_worth_a_rerun() == (1, 1)
    assert not board.closed
    again = [url for url, _ in board.lease("w", 10, 0)["tasks"]]
    assert sorted(again) == ["http://h/taken.png", "http://h/tls.png"]


def test_a_host_given_up_in_one_run_has_its_chance_again_in_the_next(
        boards: Callable[..., RedisBoard]) -> None:
    """A host given up for its timeouts in a row: the next run queues its images again and
    hands them out, as the embedded queue's new board does (the broker kept the host
    given up, and the rerun ended its images again untried)."""
    board = boards(BoardPolicy(lease_timeout=60.0, max_attempts=1, host_timeouts=2))
    urls = [f"http://h/{n}.png" for n in range(4)]
    for url in urls:
        board.put(url, "h", None)
    assert len(board.lease("w", 2, 0)["tasks"]) == 2
    board.report("w", [Attempt(url=url, ok=False, reason="timed out", transient=True,
                               kind=FailureKind.TIMEOUT) for url in urls[:2]])
    assert board.unfinished() == 0 and board.close_if_idle()
    assert board.retry_failures_worth_a_rerun() == (4, 0)
    assert board.put("http://h/new.png", "h", "http://h/")  # found by the rerun's pages
    again = [url for url, _ in board.lease("w", 10, 0)["tasks"]]
    assert sorted(again) == sorted([*urls, "http://h/new.png"])
    assert board.drain() == [] and board.unfinished() == 5


def test_a_rerun_forgets_the_note_of_a_host_given_up_and_says_it_again_if_it_is(
        boards: Callable[..., RedisBoard]) -> None:
    """Every master reads the crawl's notes: a rerun's master warned of the host given up
    "in this run" while its workers downloaded from it, and, the note kept said, never
    told of the host given up again."""
    policy = BoardPolicy(lease_timeout=60.0, max_attempts=1, host_timeouts=2)
    note = ("h timed out 2 times in a row, with no answer between: its other images are "
            "given up in this run and tried again by the next (download.host_timeouts)")

    def give_up(board: RedisBoard) -> None:
        leased = [url for url, _ in board.lease("w", 2, 0)["tasks"]]
        board.report("w", [Attempt(url=url, ok=False, reason="timed out", transient=True,
                                   kind=FailureKind.TIMEOUT) for url in leased])
        assert board.unfinished() == 0 and board.close_if_idle()

    first = boards(policy)
    for n in range(3):
        first.put(f"http://h/{n}.png", "h", None)
    give_up(first)
    assert first.news() == [note]
    rerun = boards(policy)
    assert rerun.retry_failures_worth_a_rerun() == (3, 0)
    assert rerun.news() == []
    give_up(rerun)
    assert rerun.news() == [note]


def test_images_whose_file_is_gone_are_queued_again_once_with_their_page(
        boards: Callable[..., RedisBoard], redis_server: RedisServer, crawl_name: str) -> None:
    """A rerun's master found their files deleted: each stored image loses its result
    (its stream entry too) and is queued again, with its page and what the page said of
    it; the same call made again (its answer lost) queues nothing twice."""
    board = boards()
    client = redis_server.client()
    urls = ["http://h/a.png", "http://h/b.png"]
    for url in urls:
        board.put(url, "h", "http://h/", '{"kind":"img"}')
    board.report("w", [ok(url) for url, _ in board.lease("w", 10, 0)["tasks"]])
    assert board.close_if_idle() and board.closed
    gone = [result for result in board.settled_with_ids()
            if result[1].attempt.url == urls[0]]
    assert board.fetch_again(gone) == 1
    assert board.fetch_again(gone) == 0
    assert not board.closed
    counts = board.counts()
    assert (counts["queued"], counts["done"], board.unfinished()) == (1, 1, 1)
    check_invariants(client, crawl_name)
    master = boards()  # one starting now writes one line per URL
    assert [s.attempt.url for s in master.drain()] == [urls[1]]
    [(url, _)] = board.lease("w", 10, 0)["tasks"]
    board.report("w", [ok(url)])
    [again] = master.drain()
    assert (again.attempt.url, again.page, again.ref) == (urls[0], "http://h/",
                                                          '{"kind":"img"}')
    client.close()


def test_refusals_for_an_unreadable_robots_txt_wait_for_a_reruns_judgement(
        boards: Callable[..., RedisBoard], redis_server: RedisServer) -> None:
    """A rerun's master judges them by its own robots.txt: the allowed are queued again,
    the refused keep one result, the new one; passing failures are not held back."""
    board = boards(BoardPolicy(lease_timeout=60.0, max_attempts=1, host_delay=0.0))
    unreadable = "robots.txt unreachable (HTTP 503)"
    client = redis_server.client()
    with client.pipeline(transaction=True) as pipe:  # as a master's ledger records them
        for name in ("allowed", "disallowed", "still"):
            board.queue_settle_now(
                pipe, Attempt(url=f"http://h/{name}.png", ok=False, reason=unreadable),
                "http://h/", '{"kind":"img"}', judged_again=True)
        pipe.execute()
    client.close()
    board.settle_now(Attempt(url="http://h/scope.png", ok=False, reason="scope"), "http://h/")
    board.put("http://h/503.png", "h", "http://h/")
    board.lease("w", 1, 0)
    board.report("w", [Attempt(url="http://h/503.png", ok=False, reason="HTTP 503",
                               transient=True)])
    assert board.close_if_idle()
    assert board.retry_failures_worth_a_rerun() == (1, 0)  # the 503 alone: the refusals wait
    assert sorted(board.robots_refusals()) == [
        (f"http://h/{name}.png", "http://h/", '{"kind":"img"}')
        for name in ("allowed", "disallowed", "still")]
    refused = Attempt(url="http://h/disallowed.png", ok=False, reason="disallowed by robots.txt")
    assert board.judged_again(["http://h/allowed.png"], [
        (refused, False),
        (Attempt(url="http://h/still.png", ok=False, reason=unreadable), True)]) == 1
    assert not board.closed
    assert board.robots_refusals() == [("http://h/still.png", "http://h/", '{"kind":"img"}')]
    # One entry per URL in the stream, the new result in the old one's place.
    results = {s.attempt.url: s for s in boards().drain()}
    assert sorted(results) == ["http://h/disallowed.png", "http://h/scope.png",
                               "http://h/still.png"]
    assert results["http://h/disallowed.png"].attempt.reason == "disallowed by robots.txt"
    assert results["http://h/disallowed.png"].ref == '{"kind":"img"}'
    assert sorted(url for url, _ in board.lease("w", 10, 0)["tasks"]) == [
        "http://h/503.png", "http://h/allowed.png"]
    assert board.judged_again(["http://h/allowed.png", "http://h/scope.png"], []) == 0


def test_racing_workers_on_separate_objects_settle_every_url_exactly_once(
        boards: Callable[..., RedisBoard]) -> None:
    """Threads on objects of their own lease and report at once; broker time, no clock."""
    policy = BoardPolicy(lease_timeout=60.0, host_concurrency=3, host_delay=0.0,
                         batch_size=8)
    master, other_master = boards(policy), boards(policy)
    urls = [f"http://h{n % 5}/{n}.png" for n in range(300)]
    for n, url in enumerate(urls):
        assert (master if n % 2 else other_master).put(url, url.split("/")[2], None)
        assert not (other_master if n % 2 else master).put(url, url.split("/")[2], None)
    leased: list[str] = []
    errors: list[BaseException] = []
    deadline = time.monotonic() + 60

    def work(name: str) -> None:
        board = boards(policy)
        reports: list[Attempt] = []
        try:
            for number in range(1, 5000):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} still working at the deadline")
                answer = board.exchange(name, number, reports, [], 8, 0.05)
                if answer["closed"]:
                    return
                urls = [url for url, _ in answer["tasks"]]
                leased.extend(urls)  # list.extend is atomic under the GIL
                reports = [ok(url) for url in urls]
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    while master.unfinished() and time.monotonic() < deadline and not errors:
        time.sleep(0.02)
    master.close()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    settled = collections.Counter(s.attempt.url for s in other_master.drain())
    assert settled == collections.Counter(urls), "each URL settled, and once"
    assert collections.Counter(leased) == collections.Counter(urls), "each URL leased once"
    counts = master.counts()
    assert (counts["done"], counts["duplicates"], counts["in_flight"]) == (300, 0, 0)
    assert sum(1 for w in master.workers() if w["done"]) > 1, "the workers did not race"


def test_without_a_clock_the_brokers_time_runs_the_leases(
        boards: Callable[..., RedisBoard]) -> None:
    board = boards(BoardPolicy(lease_timeout=0.3, host_delay=0.0))
    board.put("http://h/a.png", "h", None)
    assert board.lease("w", 1, 0)["tasks"] == [("http://h/a.png", 1)]
    assert board.reap() == 0
    time.sleep(0.5)
    assert board.reap() == 1
    assert board.lease("v", 1, 1.0)["tasks"] == [("http://h/a.png", 2)]


def test_a_broker_that_cannot_be_reached_is_named_in_the_error() -> None:
    port = free_port()
    board = RedisBoard(client_of("127.0.0.1", port), "nowhere", POLICY)
    for call in (lambda: board.put("http://h/a.png", "h", None),
                 lambda: board.lease("w", 1, 0.1), board.drain, lambda: board.closed):
        with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port}"):
            call()


def test_a_broker_restarted_with_its_append_only_file_keeps_the_crawl(
        make_redis_server: Callable[[], RedisServer]) -> None:
    server = make_redis_server().start(appendonly=True)
    board = RedisBoard(server.client(), "kept", POLICY)
    for name in ("a", "b"):
        board.put(f"http://h/{name}.png", "h", None)
    assert board.exchange("w", 1, [], [], 1, 0)["tasks"] == [("http://h/a.png", 1)]
    server.kill()
    with pytest.raises(BrokerUnreachable):
        board.exchange("w", 2, [ok("http://h/a.png")], [], 1, 0)
    server.start(appendonly=True)  # its scripts are gone with it: loaded again
    again = RedisBoard(server.client(), "kept", POLICY)
    assert again.counts()["in_flight"] == 1
    assert again.exchange("w", 2, [ok("http://h/a.png")], [], 1, 0)["tasks"] == [
        ("http://h/b.png", 1)]
    assert [s.attempt.url for s in again.drain()] == ["http://h/a.png"]


def test_broker_errors_turns_a_refused_command_into_a_broker_error(
        redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.set("not-a-number", "x")
    with pytest.raises(BrokerError, match="failed a command"), broker_errors(client):
        client.incr("not-a-number")
    client.close()


def test_a_waiting_lease_gets_what_another_process_puts_meanwhile(
        boards: Callable[..., RedisBoard]) -> None:
    worker, master = boards(), boards()
    later = threading.Timer(0.2, lambda: master.put("http://h/a.png", "h", None))
    later.start()
    try:
        assert worker.lease("w", 1, 10.0)["tasks"] == [("http://h/a.png", 1)]
    finally:
        later.cancel()
    assert worker.lease("w", 1, 0.1) == {"closed": False, "tasks": []}  # bounded: it ends
    master.close()
    assert worker.exchange("w", 1, [], [], 1, 10.0)["closed"]


def test_a_client_that_decodes_responses_works_the_same(redis_server: RedisServer,
                                                        crawl_name: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True,
                         socket_timeout=5.0, socket_connect_timeout=5.0)
    board = RedisBoard(client, crawl_name, POLICY)
    board.hello("w", {"host": "box", "pid": 1, "threads": 2})
    board.put("http://h/a.png", "h", "http://h/", '{"kind":"img"}')
    assert board.exchange("w", 1, [], [], 1, 0)["tasks"] == [("http://h/a.png", 1)]
    answer = board.exchange("w", 2, [ok("http://h/a.png")], [], 0, 0,
                            holding=["http://h/a.png", "http://h/gone.png"])
    assert answer == {"closed": False, "tasks": [], "lost": ["http://h/gone.png"]}
    [settled] = board.drain()
    assert (settled.attempt, settled.ref, settled.worker) == (ok("http://h/a.png"),
                                                               '{"kind":"img"}', "w")
    assert board.workers()[0]["host"] == "box" and board.workers()[0]["done"] == 1
    client.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


URLS = [f"http://h{n % 3}/{n}.png" for n in range(8)]
WORKERS = ["w0", "w1", "w2", "classic"]
STEP = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 7)),
    st.tuples(st.just("put all"),),
    st.tuples(st.just("lease"), st.integers(0, 3), st.integers(1, 4)),
    st.tuples(st.just("report"), st.integers(0, 3), st.integers(0, 7),
              st.sampled_from(["ok", "transient", "permanent", "retry-after"])),
    st.tuples(st.just("release"), st.integers(0, 3), st.integers(0, 7)),
    st.tuples(st.just("exchange"), st.integers(0, 2), st.integers(1, 5), st.booleans()),
    st.tuples(st.just("heartbeat"), st.integers(0, 3)),
    st.tuples(st.just("goodbye"), st.integers(0, 3)),
    st.tuples(st.just("reap")),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 2.0, 6.0, 11.0])),
)


def attempt_for(url: str, kind: str) -> Attempt:
    if kind == "ok":
        return ok(url)
    return Attempt(url=url, ok=False, reason=kind, transient=kind != "permanent",
                   retry_after=3.0 if kind == "retry-after" else None)


def check_invariants(client: redis.Redis, crawl: str) -> None:
    """What the keys must agree on, whatever happened: see crawler.board.redis."""
    key = f"crawler:{{{crawl}}}:".__add__
    items = {k.decode(): json.loads(v) if v else None
             for k, v in client.hgetall(key("items")).items()}
    states = collections.Counter(item["s"] if item else "f" for item in items.values())
    counts = {k.decode(): int(v) for k, v in client.hgetall(key("counts")).items()}
    assert [counts.get(name, 0) for name in ("queued", "in_flight", "delayed", "done")] == [
        states["q"], states["l"], states["d"], states["f"]]
    assert counts.get("unfinished", 0) == states["q"] + states["l"] + states["d"]
    leased = {url for url, item in items.items() if item and item["s"] == "l"}
    delayed = {url for url, item in items.items() if item and item["s"] == "d"}
    deadlined = {url for url in leased if items[url].get("k")}  # holders without a record
    assert all(not client.exists(key("w:" + items[url]["w"])) for url in deadlined)
    assert all(client.exists(key("w:" + items[url]["w"])) for url in leased - deadlined)
    assert {m.decode() for m in client.zrange(key("leases"), 0, -1)} == deadlined
    assert {m.decode() for m in client.zrange(key("delayed"), 0, -1)} == delayed
    ready = [h.decode() for h in client.lrange(key("ready"), 0, -1)]
    paced = {h.decode() for h in client.zrange(key("paced"), 0, -1)}
    full = {h.decode() for h in client.smembers(key("full"))}
    listed = {h.decode() for h in client.smembers(key("listed"))}
    assert len(ready) == len(set(ready)) and not set(ready) & paced and not paced & full
    assert not set(ready) & full and set(ready) | paced | full == listed
    for url, item in items.items():
        if item and item["s"] == "q":
            assert item["h"] in listed
            assert url.encode() in client.lrange(key("q:" + item["h"]), 0, -1)
    in_flight = collections.Counter(items[url]["h"] for url in leased)
    assert {h.decode(): int(n) for h, n in client.hgetall(key("inflight")).items()} == in_flight
    assert all(in_flight[host] >= 2 for host in full), "a host waits for a slot it has"
    for host, until in client.zrange(key("paced"), 0, -1, withscores=True):
        assert float(client.hget(key("next"), host) or 0) == until
    for worker in WORKERS:
        if not client.exists(key("w:" + worker)):
            continue
        mine = {url for url in leased if items[url].get("w") == worker}
        assert {u.decode() for u in client.smembers(key("held:" + worker))} == mine
        per_host = collections.Counter(items[url]["h"] for url in mine)
        assert {h.decode(): int(n) for h, n in
                client.hgetall(key("ph:" + worker)).items()} == per_host


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=5, max_size=50),
       host_delay=st.sampled_from([0.0, 1.0]))
def test_the_keys_agree_with_each_other_after_any_calls(
        redis_server: RedisServer, steps: list[tuple[Any, ...]], host_delay: float) -> None:
    """Random calls from several workers, with time passing: after each, the state's
    keys agree (counts with items, hosts in one place, holdings with leases)."""
    client = redis_server.client()
    crawl, clock = f"test-{secrets.token_hex(8)}", Clock()
    board = RedisBoard(client, crawl, BoardPolicy(
        lease_timeout=10.0, backoff_base=1.0, max_attempts=3, host_delay=host_delay,
        host_concurrency=2, worker_silence=5.0), clock=clock)
    numbers = collections.Counter[str]()
    try:
        for step in steps:
            match step:
                case ("put", n):
                    board.put(URLS[n], URLS[n].split("/")[2], None)
                case ("put all",):
                    for url in URLS:
                        board.put(url, url.split("/")[2], None)
                case ("lease", w, n):
                    board.lease(WORKERS[w], n, 0)
                case ("report", w, n, kind):
                    board.report(WORKERS[w], [attempt_for(URLS[n], kind)])
                case ("release", w, n):
                    board.release(WORKERS[w], [URLS[n]])
                case ("exchange", w, n, with_holding):
                    worker = WORKERS[w]
                    numbers[worker] += 1
                    held = [m.decode() for m in
                            client.smembers(f"crawler:{{{crawl}}}:held:{worker}")]
                    board.exchange(worker, numbers[worker], [ok(url) for url in held[:1]], [],
                                   n, 0, holding=held[1:] if with_holding else None)
                case ("heartbeat", w):
                    board.heartbeat(WORKERS[w])
                case ("goodbye", w):
                    board.goodbye(WORKERS[w])
                case ("reap",):
                    board.reap()
                case ("wait", seconds):
                    clock.now += seconds
            check_invariants(client, crawl)
        # Whatever happened, the crawl can finish: every lease ends, every URL comes out
        # (the silent workers' after worker_silence of reaps, a stretch with none forgiven).
        clock.now += 1000
        board.reap()
        for _ in range(50):
            tasks = board.lease("finisher", 10, 0)["tasks"]
            board.report("finisher", [ok(url) for url, _ in tasks])
            clock.now += 2.0
            board.reap()
            if not board.unfinished():
                break
        assert board.unfinished() == 0
        check_invariants(client, crawl)
        settled = [s.attempt.url for s in board.drain()]
        assert len(settled) == len(set(settled)) == board.counts()["done"]
        assert set(settled) == {url for url in URLS if board.known(url)}
    finally:
        client.close()


def test_a_broker_that_refuses_our_password_says_so(
        make_redis_server: Callable[[], RedisServer]) -> None:
    server = make_redis_server().start()
    admin = server.client()
    admin.config_set("requirepass", secrets.token_hex(8))
    wrong = redis.Redis(host="127.0.0.1", port=server.port, password=secrets.token_hex(8),
                        socket_timeout=5.0, socket_connect_timeout=5.0,
                        retry=Retry(NoBackoff(), 0))
    board = RedisBoard(wrong, "locked", POLICY)
    with pytest.raises(BrokerError, match="refused our credentials") as caught:
        board.put("http://h/a.png", "h", None)
    assert not isinstance(caught.value, BrokerUnreachable)
    wrong.close()
    admin.close()


def test_a_broker_url_makes_a_client_with_deadlines(redis_server: RedisServer) -> None:
    client = connect(parse_broker(redis_server.url))
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (
        CALL_DEADLINE, CONNECT_DEADLINE)
    assert RedisBoard(client, "by-url", POLICY).put("http://h/a.png", "h", None)
    client.close()
    with pytest.raises(UsageError, match="expected redis://"):
        parse_broker("http://h:1")
    # Port 0 was taken for no port (6379: another server than the one named), and a
    # CA file for a plain broker was taken without a word, and used for nothing.
    with pytest.raises(UsageError, match=r"bad port \(0\)"):
        parse_broker("redis://h:0/0")
    assert parse_broker("redis://h/0").port == 6379
    with pytest.raises(UsageError, match="--broker-ca is for a TLS broker"):
        parse_broker("redis://h:1/0", ca_file=Path("ca.pem"))


def test_a_broker_ca_file_that_cannot_serve_is_refused_at_once(tmp_path: Path) -> None:
    """It was said as "cannot reach the broker ... No such file or directory; is
    redis-server running there", exit status 1, and a worker tried it again for its
    whole --connect-wait."""
    ca = make_ca(tmp_path / "ca")
    assert parse_broker("rediss://h:1/0", ca_file=ca.ca_cert).ca_file == ca.ca_cert
    missing = tmp_path / "nosuch.pem"
    with pytest.raises(UsageError) as caught:
        parse_broker("rediss://h:1/0", ca_file=missing)
    assert str(caught.value) == (f"cannot read the broker's CA file {missing}: No such file "
                                 "or directory")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(UsageError, match=f"the broker's CA file {not_pem} holds no "
                                         "certificate in PEM form"):
        parse_broker("rediss://h:1/0", ca_file=not_pem)


def test_a_crawl_whose_board_rules_cannot_be_read_is_refused_with_what_to_do(
        redis_server: RedisServer, crawl_name: str) -> None:
    """A board rule this version does not know: a worker or ``crawler status`` says so."""
    client = connect(parse_broker(redis_server.url))
    rules = {**POLICY._asdict(), "max_hosts": 3}
    CrawlRecord(client, crawl_name).create(settings={}, seeds=[], identity={}, info={},
                                           board=rules)
    client.close()
    with pytest.raises(BadCrawlInfo) as raised:
        BrokerClient(parse_broker(redis_server.url), crawl_name).connect()
    assert str(raised.value) == ("the crawl's master sent board rules this crawler does not "
                                 "know (max_hosts): it runs a newer crawler; install the same "
                                 "version on this host")
    client = connect(parse_broker(redis_server.url))
    CrawlRecord(client, crawl_name + "-2").create(
        settings={}, seeds=[], identity={}, info={},
        board={**POLICY._asdict(), "host_concurrency": "16"})
    client.close()
    with pytest.raises(BadCrawlInfo, match="sent a host_concurrency of '16', not a whole number"):
        BrokerClient(parse_broker(redis_server.url), crawl_name + "-2").connect()


def test_a_crawl_is_closed_only_if_no_master_gave_it_work_again(
        boards: Callable[..., RedisBoard], redis_server: RedisServer, crawl_name: str) -> None:
    """A master that found the crawl over closes it in one step with the look: pages
    waiting or leased, or an image not settled (another master's new work), keep it open."""
    from crawler.board.redis_frontier import RedisFrontier

    board = boards()
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    # Written first by the crawl's first master: a crawl without it takes no pages.
    CrawlRecord(client, crawl_name).create(settings={}, seeds=[], identity={}, info={},
                                           board={})
    frontier = RedisFrontier(client, crawl_name, "m")
    frontier.add_many([("http://h/", 0)])
    assert not board.close_if_idle() and not board.closed  # a page waits
    page = frontier.pop()
    assert page is not None
    assert not board.close_if_idle()  # a page is leased
    pipe = board._client.pipeline(transaction=True)
    frontier.queue_done(pipe, page[0], [])
    pipe.execute()
    board.put("http://h/a.png", "h", None)
    assert not board.close_if_idle()  # an image is queued
    leased = board.lease("w", 1, 0.0)["tasks"]
    board.report("w", [Attempt(url=leased[0][0], ok=True)])
    assert board.close_if_idle() and board.closed


def test_scripts_gone_again_as_they_are_loaded_are_loaded_once_more(
        boards: Callable[..., RedisBoard], redis_server: RedisServer) -> None:
    """A Redis that lost its scripts (restarted) answers NoScript; redis-py loads the
    script and calls it once more, and a restart in between lost that load too: the
    master stopped on "failed a command: No matching script". (A put or a settle_now
    made alone went in a transaction, which redis-py does not load again at all.)
    Scripts flushed over and over by another client stand in for restarts (bounded:
    3 s, 2,000 rounds)."""
    board = boards()
    board.put("http://h/a.png", "h", None)
    flusher, stop = redis_server.client(), threading.Event()

    def flush() -> None:
        end = time.monotonic() + 3
        while not stop.is_set() and time.monotonic() < end:
            flusher.script_flush()

    flushing = threading.Thread(target=flush, daemon=True)
    flushing.start()
    try:
        for n in range(2000):
            if not flushing.is_alive():
                break
            assert board.put(f"http://h/{n}.png", "h", None)
            board.settle_now(Attempt(url=f"http://h/refused{n}.png", ok=False,
                                     reason="refused by the scope"), None)
            assert board.counts()["queued"] == n + 2  # a.png's too
    finally:
        stop.set()
        flushing.join(5)
        flusher.close()


def test_an_idle_worker_whose_crawl_has_no_master_at_work_says_it_waits_for_one(
        redis_server: RedisServer, crawl_name: str, caplog: pytest.LogCaptureFixture) -> None:
    """Its master killed after its pages, a worker that downloaded every image sat silent
    for good, though --connect-wait was 10 s. It says once that it waits for a master,
    after a while of empty answers; not while a master is at work, nor while it works."""
    client = connect(parse_broker(redis_server.url))  # (as a worker's: text, not bytes)
    view = _BrokerView(RedisBoard(client, crawl_name, POLICY), lambda *_: {}, client,
                       crawl_name)
    masters = keys_prefix(crawl_name) + "masters"
    client.hset(masters, "m1", json.dumps({"at": broker_time(client), "progress": {}}))
    empty: Any = {"tasks": [], "closed": False}
    for now in (0.0, 11.0, 22.0):  # its master at work: nothing to say
        view._note_idle(empty, now)
    assert "no master at work" not in caplog.text
    client.hset(masters, "m1", json.dumps({"at": broker_time(client) - 60, "progress": {}}))
    view._note_idle({"tasks": [("http://h/a.png", 1)], "closed": False}, 23.0)  # it works
    view._note_idle(empty, 24.0)
    view._note_idle(empty, 30.0)
    assert "no master at work" not in caplog.text
    for now in (34.5, 40.0, 50.0):
        view._note_idle(empty, now)
    said = [r.getMessage() for r in caplog.records if "no master at work" in r.getMessage()]
    assert said == [f"no image to hand out now, and no master at work on crawl {crawl_name!r}: "
                    "waiting for one to go on with it or close it (crawler master --broker "
                    f"... --join {crawl_name}), Ctrl-C to stop this worker"], said
    client.close()


def test_a_database_the_broker_does_not_have_is_a_usage_error(redis_server: RedisServer) -> None:
    """Redis's "DB index is out of range", exit status 1, became what to give instead."""
    url = redis_server.url.rsplit("/", 1)[0] + "/99"
    with pytest.raises(UsageError) as caught:
        connect(parse_broker(url))
    assert str(caught.value) == (
        f"the broker at {url} has no database 99: its databases are numbered from 0 to its "
        "'databases' setting less one (16 by default: 0-15)")
    assert caught.value.exit_code == 2
