"""The page frontier on the Redis broker, shared by the masters of one crawl."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

import pytest
import redis

from crawler.board import redis_frontier
from crawler.board.broker import CrawlRecord, keys_prefix
from crawler.board.memory import BoardPolicy
from crawler.board.redis import RedisBoard
from crawler.board.redis_frontier import EMPTY_PAUSE, RedisFrontier
from crawler.errors import BrokerError
from crawler.model.pacing import SLOW_DOWN_GAP

from .redis_server import RedisServer

MakeFrontier = Callable[..., RedisFrontier]


@pytest.fixture
def crawl(redis_server: RedisServer) -> tuple[redis.Redis, str]:
    """A new crawl on the broker, and a client of it."""
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True,
                         socket_timeout=5.0)
    name = "f" + secrets.token_hex(6)
    # Written first by the crawl's first master: without it, the crawl is gone.
    CrawlRecord(client, name).create(settings={}, seeds=[], identity={}, info={}, board={})
    return client, name


@pytest.fixture
def frontiers(crawl: tuple[redis.Redis, str]) -> MakeFrontier:
    """Frontier objects of one new crawl, one per master name asked for."""
    client, name = crawl

    def make(master: str, **options: float) -> RedisFrontier:
        return RedisFrontier(client, name, master, **options)

    return make


def test_a_page_is_handed_to_one_master_and_counted_until_done(
        frontiers: MakeFrontier, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pause long enough that this test is within it whatever the machine's load.
    pause = 0.5
    monkeypatch.setattr(redis_frontier, "EMPTY_PAUSE", pause)
    a, b = frontiers("a"), frontiers("b")
    assert a.add_many([("http://h/", 0), ("http://h/", 0), ("http://g/", 0)]) == 2
    assert len(a) == len(b) == 2
    first, second = a.pop(), b.pop()
    assert first is not None and second is not None
    assert {first[0], second[0]} == {"http://h/", "http://g/"}
    found_none = time.monotonic()
    assert a.pop() is None and b.pop() is None
    assert len(a) == 2  # leased pages are not done: the crawl is not over
    pipe = a._client.pipeline(transaction=True)  # as the master's ledger does
    a.queue_done(pipe, first[0], [("http://h/next", 1), (second[0], 1)])
    pipe.execute()
    assert len(b) == 2  # the new link, and b's page
    # b found none a moment ago: it asks again only the pause later.
    assert time.monotonic() - found_none < pause, "too slow a machine for this pause"
    assert b.pop() is None
    time.sleep(pause * 1.2)
    assert b.pop() == ("http://h/next", 1)  # a link seen before is not queued again


def test_the_pages_of_a_master_that_stops_calling_go_back(frontiers: MakeFrontier) -> None:
    dead, alive = frontiers("dead", lease=0.3), frontiers("alive", lease=0.3)
    dead.add_many([("http://h/", 0)])
    assert dead.pop() == ("http://h/", 0)
    assert alive.pop() is None
    time.sleep(0.5)
    assert alive.pop() == ("http://h/", 0)  # its lease ran out: another master reads it


def test_heartbeats_keep_a_masters_pages_its_own(frontiers: MakeFrontier) -> None:
    # Six heartbeats 0.2 s apart keep the page past its 1 s lease; the sleeps of a busy
    # machine may run five times as long and still keep it.
    mine, other = frontiers("mine", lease=1.0), frontiers("other", lease=1.0)
    mine.add_many([("http://h/", 0)])
    assert mine.pop() is not None
    for _ in range(6):
        time.sleep(0.2)
        assert mine.heartbeat(["http://h/"]) == 1
        assert other.pop() is None


def test_a_page_its_master_no_longer_works_on_goes_back_at_its_heartbeat(
        frontiers: MakeFrontier) -> None:
    mine, other = frontiers("mine"), frontiers("other")
    mine.add_many([("http://h/", 0)])
    assert mine.pop() is not None  # and then dropped (its answer lost, a crash in between)
    assert mine.heartbeat([]) == 0
    assert other.pop() == ("http://h/", 0)


def test_only_its_holder_settles_a_page(frontiers: MakeFrontier) -> None:
    late, holder = frontiers("late", lease=0.3), frontiers("holder", lease=5.0)
    late.add_many([("http://h/", 0)])
    assert late.pop() is not None
    time.sleep(0.5)  # late fell silent: its lease ran out, and holder has the page now
    assert holder.pop() == ("http://h/", 0)
    pipe = late._client.pipeline(transaction=True)
    late.queue_done(pipe, "http://h/", [("http://h/found", 1)])
    pipe.execute()
    late.requeue("http://h/", 0)
    assert len(holder) == 2  # its links count; holder's lease stands, no second copy queued
    assert holder.done_pages == 0
    pipe = holder._client.pipeline(transaction=True)
    holder.queue_done(pipe, "http://h/", [])
    holder.queue_done(pipe, "http://h/", [])  # sent twice (a lost answer): counted once
    pipe.execute()
    assert len(holder) == 1 and holder.done_pages == 1


def test_a_hosts_pages_are_paced_for_every_master(frontiers: MakeFrontier) -> None:
    a, b = frontiers("a", delay=0.4), frontiers("b", delay=0.4)
    a.add_many([("http://h/1", 0), ("http://h/2", 0), ("http://g/1", 0)])
    taken = [page for page in (a.pop(), b.pop(), a.pop(), b.pop()) if page]
    assert sorted(url for url, _ in taken) == ["http://g/1", "http://h/1"]  # one per host
    time.sleep(0.5)
    assert b.pop() == ("http://h/2", 0)


def test_a_batch_of_pages_comes_in_one_call_hosts_taking_turns(
        frontiers: MakeFrontier) -> None:
    a = frontiers("a")
    a.add_many([("http://h/1", 0), ("http://h/2", 0), ("http://h/3", 0),
                ("http://g/1", 1), ("http://g/2", 1)])
    batch = a.pop_many(4)
    assert len(batch) == 4
    hosts = [url.split("/")[2] for url, _ in batch]
    assert sorted(hosts[:2]) == sorted(hosts[2:]) == ["g", "h"]  # a page of each, in turn
    assert ("http://g/1", 1) in batch  # with its depth
    assert a.pop_many(4) == [("http://h/3", 0)]
    assert len(a) == 5  # all leased to a, none done


def test_hosts_take_turns_across_batches(frontiers: MakeFrontier) -> None:
    """Pages leased in one call share its time: the hosts served must still come after
    the others in the next call, whatever their names."""
    a = frontiers("a")
    a.add_many([(f"http://{host}/{n}", 0) for n in range(20) for host in ("x", "y", "z")])
    served = [url.split("/")[2] for _ in range(15) for url, _ in a.pop_many(2)]
    assert len(served) == 30  # never more than asked
    assert {host: served.count(host) for host in "xyz"} == {"x": 10, "y": 10, "z": 10}


def test_a_batch_takes_one_page_of_a_paced_host(frontiers: MakeFrontier) -> None:
    a = frontiers("a", delay=0.4)
    a.add_many([("http://h/1", 0), ("http://h/2", 0), ("http://g/1", 0)])
    assert sorted(url for url, _ in a.pop_many(10)) == ["http://g/1", "http://h/1"]


def test_a_batch_stays_within_the_crawls_page_budget(frontiers: MakeFrontier) -> None:
    a, b = frontiers("a", max_pages=3), frontiers("b", max_pages=3)
    a.add_many([(f"http://h/{n}", 0) for n in range(6)])
    assert len(a.pop_many(2)) == 2
    assert len(b.pop_many(5)) == 1  # the budget counts every master's pages
    time.sleep(EMPTY_PAUSE * 1.5)
    assert a.pop_many(5) == b.pop_many(5) == []


def test_a_hold_and_a_crawl_delay_hold_back_a_host(frontiers: MakeFrontier) -> None:
    a = frontiers("a")
    a.add_many([("http://h/1", 0), ("http://h/2", 0)])
    a.hold("h", time.monotonic() + 0.4)
    assert a.pop() is None
    time.sleep(0.5)
    a.set_crawl_delay("h", 0.4)
    assert a.pop() == ("http://h/1", 0)
    assert a.pop() is None  # its Crawl-delay
    time.sleep(0.5)
    assert a.pop() == ("http://h/2", 0)


def test_a_host_slowed_down_spaces_its_pages_for_every_master_till_pages_wear_it_off(
        frontiers: MakeFrontier, crawl: tuple[redis.Redis, str]) -> None:
    """A host that answered a page 429 was asked for its next pages as fast as before,
    by every master: the board's slow-down (a page's or an image's) spaces them now, and
    pages read wear it off as images do."""
    client, name = crawl
    board = RedisBoard(client, name, BoardPolicy(), recorded=True)
    a, b = frontiers("a"), frontiers("b")
    a.add_many([(f"http://h/{n}", 0) for n in range(4)])
    assert board.page_host_busy("h", "HTTP 429", "http://h/x") == 0.25
    assert a.pop_many(4) == [("http://h/0", 0)]  # then one every 0.25 s
    assert b.pop_many(4) == []
    time.sleep(0.3)
    assert b.pop_many(4) == [("http://h/1", 0)]
    # 23 pages read past the gap: 0.25 s worn off to about 0.125 s.
    time.sleep(max(0.0, SLOW_DOWN_GAP - 0.2))
    pipe = client.pipeline(transaction=True)
    board.queue_pages_answered(pipe, ["h"] * 23)
    pipe.execute()
    time.sleep(0.3)
    assert a.pop_many(4) == [("http://h/2", 0)]
    time.sleep(0.16)
    assert a.pop_many(4) == [("http://h/3", 0)]



def test_a_slow_down_doubles_the_crawl_delay_a_hosts_pages_have(
        frontiers: MakeFrontier, crawl: tuple[redis.Redis, str]) -> None:
    """A host whose pages had a Crawl-delay of 0.5 s (and no image queued yet) answered a
    page 429: it was said "slowed down to one request every 0.25 s", faster than it was
    asked already, and its pages went on every 0.5 s, as if it had not said "too many".
    Embedded, the pace its pages and images share doubles the Crawl-delay."""
    client, name = crawl
    board = RedisBoard(client, name, BoardPolicy(), recorded=True)
    a = frontiers("a")
    a.set_crawl_delay("h", 0.5)
    a.add_many([(f"http://h/{n}", 0) for n in range(2)])
    assert board.page_host_busy("h", "HTTP 429", "http://h/x") == 1.0
    assert a.pop_many(2) == [("http://h/0", 0)]
    time.sleep(0.6)
    assert a.pop_many(2) == [], "one every 1 s, not 0.5 s"
    assert board.news() == [
        "h answered HTTP 429 (http://h/x): slowed down to one request every 1 s, across "
        "all workers; it speeds up again as the host answers"]

def test_a_crawl_delay_told_again_replaces_the_one_before_down_to_the_hosts_delay(
        frontiers: MakeFrontier) -> None:
    """A robots.txt read again past its age may ask for less; a Crawl-delay shorter than
    the configured delay (told first or later) never shortens that."""
    a = frontiers("a", delay=0.3)
    a.add_many([(f"http://h/{n}", 0) for n in range(3)])
    a.set_crawl_delay("h", 0.8)
    assert a.pop() == ("http://h/0", 0)
    a.set_crawl_delay("h", 0.05)
    time.sleep(0.85)
    assert a.pop() == ("http://h/1", 0)
    time.sleep(0.15)
    assert a.pop() is None  # 0.3 s, not 0.05
    time.sleep(0.25)
    assert a.pop() == ("http://h/2", 0)  # 0.3 s, not 0.8


def test_a_page_given_back_or_set_aside(frontiers: MakeFrontier) -> None:
    a, b = frontiers("a"), frontiers("b")
    a.add_many([("http://h/", 0), ("http://g/", 0)])
    one, two = a.pop(), a.pop()
    assert one is not None and two is not None
    assert a.failed(one[0]) == 1 and b.failed(one[0]) == 2  # counted for every master
    a.requeue(one[0], one[1])
    a.set_aside(*two)
    assert len(b) == 1 and b.pop() == one


def test_racing_masters_take_every_page_exactly_once(frontiers: MakeFrontier) -> None:
    pages = [(f"http://h{n % 7}/{n}", 0) for n in range(300)]
    frontiers("seed").add_many(pages)
    taken: list[str] = []
    lock = threading.Lock()

    def master(name: str) -> None:
        frontier = frontiers(name)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(frontier):
            page = frontier.pop()
            if page is None:
                continue
            pipe = frontier._client.pipeline(transaction=True)
            frontier.queue_done(pipe, page[0], [])
            pipe.execute()
            with lock:
                taken.append(page[0])

    threads = [threading.Thread(target=master, args=(f"m{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(taken) == sorted(url for url, _ in pages)


def test_a_crawl_whose_keys_are_gone_is_an_error_not_a_page_to_wait_for(
        frontiers: MakeFrontier) -> None:
    """Before its seeds are queued, a crawl counts a page to come (a joining master must not
    end it); once its record is gone too, waiting would be for ever."""
    master = frontiers("a")
    client = master._client
    client.delete(keys_prefix(master._crawl) + "pages:seen")
    assert len(master) == 1  # the seeds are not queued yet
    client.delete(*client.keys(keys_prefix(master._crawl) + "*"))
    with pytest.raises(BrokerError, match="is gone from the broker"):
        len(master)


def test_a_crawl_whose_record_is_gone_gets_no_count_of_a_pages_failures(
        frontiers: MakeFrontier) -> None:
    """Redis restarted empty under a master whose page failed for a passing reason: its
    count of tries made the crawl's keys anew without a record, and a crawl started again
    under that name gave that page fewer tries."""
    master = frontiers("a")
    client = master._client
    master.add_many([("http://h/", 0)])
    assert master.pop() == ("http://h/", 0)
    client.delete(*client.keys(keys_prefix(master._crawl) + "*"))  # as a restart, empty
    with pytest.raises(redis.ResponseError, match="CRAWLGONE"):
        master.failed("http://h/")
    assert client.keys(keys_prefix(master._crawl) + "*") == []


def test_pages_set_aside_by_an_earlier_version_outlive_a_full_redis(
        make_redis_server: Callable[[], RedisServer]) -> None:
    """An earlier version kept the pages set aside in a set, which a master's start turns
    into a hash of their depths: the set deleted, then the hash written. A full Redis
    (maxmemory, noeviction) takes the delete, which frees memory, and refuses the write:
    the pages were lost. Both are one transaction, which a full Redis refuses whole."""
    server = make_redis_server().start(options=("--maxmemory-policy", "noeviction"))
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True,
                         socket_timeout=5.0)
    crawl = "f" + secrets.token_hex(6)
    CrawlRecord(client, crawl).create(settings={}, seeds=[], identity={}, info={}, board={})
    frontier = RedisFrontier(client, crawl, "a")
    aside = keys_prefix(crawl) + "pages:aside"
    client.sadd(aside, "http://h/old")
    client.config_set("maxmemory", 1)  # every write refused
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            frontier.take_up_set_aside()
        assert client.smembers(aside) == {"http://h/old"}
    finally:
        client.config_set("maxmemory", 0)
    assert frontier.take_up_set_aside() == 1
    assert frontier.pop() == ("http://h/old", 0)


def test_pages_set_aside_are_queued_again_with_their_depth_and_fresh_tries(
        frontiers: MakeFrontier) -> None:
    first = frontiers("first")
    first.add_many([("http://h/", 0)])
    pipe = first._client.pipeline(transaction=True)
    first.queue_done(pipe, first.pop()[0], [("http://h/deep", 3)])  # type: ignore[index]
    pipe.execute()
    assert first.pop() == ("http://h/deep", 3)
    assert first.failed("http://h/deep") == 1
    first.set_aside("http://h/deep", 3)
    assert len(first) == 0 and first.take_up_set_aside() == 1
    later = frontiers("later")  # a master started on the crawl again
    assert later.take_up_set_aside() == 0  # taken up once
    assert later.pop() == ("http://h/deep", 3)
    assert later.failed("http://h/deep") == 1  # its failures are counted anew


def test_a_page_set_aside_keeps_the_shorter_depth_its_master_found_since(
        frontiers: MakeFrontier) -> None:
    """Its rerun reads it at the depth of the shortest path known, as the journal keeps it
    in the embedded mode: not at the depth of its lease, nor deeper than that."""
    first = frontiers("first")
    first.add_many([("http://h/", 0)])
    pipe = first._client.pipeline(transaction=True)
    first.queue_done(pipe, first.pop()[0], [("http://h/a", 3), ("http://h/b", 2)])  # type: ignore[index]
    pipe.execute()
    leased = dict(first.pop_many(2))
    assert leased == {"http://h/a": 3, "http://h/b": 2}
    first.set_aside("http://h/a", 1)  # found nearer the seeds while it was read
    first.set_aside("http://h/b", 4)  # never deeper than its lease
    assert first.take_up_set_aside() == 2
    later = frontiers("later")
    assert dict(later.pop_many(2)) == {"http://h/a": 1, "http://h/b": 2}


def test_the_page_budget_counts_every_masters_pages_done_and_in_flight(
        frontiers: MakeFrontier) -> None:
    """Checked where pages are leased: two masters taking pages at once stop at the
    crawl's --max-pages, not at it plus what the other has in flight."""
    a, b = frontiers("a", max_pages=2), frontiers("b", max_pages=2)
    a.add_many([(f"http://h{n}/", 0) for n in range(5)])
    first, second = a.pop(), b.pop()
    assert first is not None and second is not None
    time.sleep(EMPTY_PAUSE * 1.5)
    assert a.pop() is None and b.pop() is None  # three pages wait, the budget is spent
    pipe = a._client.pipeline(transaction=True)
    a.queue_done(pipe, first[0], [])
    pipe.execute()
    time.sleep(EMPTY_PAUSE * 1.5)
    assert a.pop() is None  # one done and one in flight are still two
    unbounded = frontiers("c")
    assert unbounded.pop() is not None  # a master with no budget: none checked


def test_which_pages_no_master_of_the_crawl_has_seen(frontiers: MakeFrontier) -> None:
    """A master's own set knows only the pages it met: one that another master queued is
    new to it, though the crawl has it (the count of pages at the depth limit that link
    further asks the crawl)."""
    a, b = frontiers("a"), frontiers("b")
    assert a.add_many([("http://h/", 0), ("http://h/seen-by-a", 0)]) == 2
    assert not b.seen("http://h/seen-by-a")
    assert b.unseen_by_the_crawl(["http://h/seen-by-a", "http://h/"]) == []
    assert b.unseen_by_the_crawl(["http://h/seen-by-a", "http://h/new"]) == ["http://h/new"]
    assert b.unseen_by_the_crawl([]) == []


def _settle(frontier: RedisFrontier, url: str, *, failed: bool,
            links: list[tuple[str, int]] | None = None) -> None:
    pipe = frontier._client.pipeline(transaction=True)  # as the master's ledger does
    frontier.queue_done(pipe, url, links or [], failed=failed)
    pipe.execute()


def test_a_crawl_that_read_no_page_and_found_no_image_is_forgotten_for_its_seeds(
        frontiers: MakeFrontier) -> None:
    """Its seeds failed for good (a 404, a robots.txt refusal): forgotten, they are new
    again to a rerun's master. One page read, one in a master's hands, or one image
    found, and nothing is forgotten."""
    a = frontiers("a")
    assert not a.forget_if_empty()  # a crawl not begun has nothing to forget
    a.add_many([("http://h/", 0), ("http://g/", 0)])
    first, second = a.pop_many(2)
    _settle(a, first[0], failed=True)
    assert not a.forget_if_empty()  # the other seed is leased
    a.set_aside(*second)  # a passing failure: forgotten too, its seed queued again
    assert a.forget_if_empty()
    assert a.add_many([("http://h/", 0), ("http://g/", 0)]) == 2
    assert len(a) == 2 and a.done_pages == a.failed_pages == 0
    assert a.take_up_set_aside() == 0  # queued once, as a seed
    pages = a.pop_many(2)
    _settle(a, pages[0][0], failed=True)
    _settle(a, pages[1][0], failed=False)  # read: the crawl is no longer empty
    assert not a.forget_if_empty()
    assert not a.add_many([("http://h/", 0)])


def test_a_crawl_that_found_an_image_is_not_forgotten(
        frontiers: MakeFrontier, crawl: tuple[redis.Redis, str]) -> None:
    """An image found (its page, say, since settled as failed by an older master): the
    crawl has work to keep."""
    client, name = crawl
    a = frontiers("a")
    a.add_many([("http://h/", 0)])
    [(url, _depth)] = a.pop_many(1)
    _settle(a, url, failed=True)
    client.hset(keys_prefix(name) + "items", "http://h/a.png", "")
    assert not a.forget_if_empty()
    assert not a.add_many([("http://h/", 0)])
