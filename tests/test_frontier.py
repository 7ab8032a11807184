"""Tests for the page frontier: breadth-first per host, hosts take turns, held hosts wait."""

import pytest

from crawler.master.frontier import Frontier


def test_pages_come_breadth_first_and_hosts_take_turns():
    frontier = Frontier([("http://a.test/1", 0), ("http://a.test/2", 1), ("http://b.test/1", 0)])
    order = [frontier.pop(now=0.0) for _ in range(3)]
    assert order == [("http://a.test/1", 0), ("http://b.test/1", 0), ("http://a.test/2", 1)]
    assert frontier.pop(now=0.0) is None
    assert len(frontier) == 0


def test_a_page_seen_once_is_not_queued_again():
    frontier = Frontier(seen=["http://a.test/done"])
    assert not frontier.add("http://a.test/done", 1)
    assert frontier.add("http://a.test/new", 1)
    assert not frontier.add("http://a.test/new", 2)
    assert frontier.seen("http://a.test/new")
    assert len(frontier) == 1


def test_a_page_found_again_nearer_the_seeds_is_read_at_that_depth() -> None:
    """Pages are read several at once: a link may find a page first through a longer
    path. Queued or handed out, it is read at the shortest depth found before it is
    read; one read already is left as it is."""
    frontier = Frontier([("http://a/slow", 1), ("http://a/fast", 1)])
    assert frontier.pop_many(2) == [("http://a/slow", 1), ("http://a/fast", 1)]
    assert frontier.add("http://a/far", 3)  # through fast's pages, first
    assert frontier.add("http://a/handed", 3)
    assert frontier.pop() == ("http://a/far", 3)
    assert frontier.take_depth("http://a/fast", 1) == 1
    # slow ends: it links to both at depth 2, and to fast, read already.
    assert frontier.found_again(["http://a/far", "http://a/handed", "http://a/fast",
                                 "http://a/new"], 2) == [("http://a/far", 2),
                                                          ("http://a/handed", 2)]
    assert frontier.found_again(["http://a/far"], 3) == []  # never deeper again
    assert frontier.take_depth("http://a/far", 3) == 2  # handed out before: read at 2
    assert frontier.pop() == ("http://a/handed", 3)
    assert frontier.take_depth("http://a/handed", 3) == 2
    assert frontier.take_depth("http://a/handed", 3) == 3  # forgotten once taken


def test_a_held_host_waits_while_others_go_ahead():
    frontier = Frontier([("http://a.test/1", 0), ("http://b.test/1", 0)])
    frontier.hold("a.test", until=10.0)
    frontier.hold("a.test", until=5.0)  # a hold is never shortened
    assert frontier.pop(now=1.0) == ("http://b.test/1", 0)
    assert frontier.pop(now=9.9) is None
    assert frontier.next_ready() == 10.0
    assert frontier.pop(now=10.0) == ("http://a.test/1", 0)


def test_a_failed_page_is_counted_and_queued_again():
    frontier = Frontier([("http://a.test/1", 0)])
    url, depth = frontier.pop(now=0.0)
    assert frontier.failed(url) == 1
    frontier.requeue(url, depth)
    assert frontier.failed(url) == 2
    assert frontier.pop(now=0.0) == ("http://a.test/1", 0)


def test_clearing_drops_waiting_pages_but_remembers_them():
    frontier = Frontier([("http://a.test/1", 0), ("http://a.test/2", 0)])
    frontier.clear()
    assert len(frontier) == 0 and frontier.pop(now=0.0) is None
    assert not frontier.add("http://a.test/1", 0)


def test_once_computes_a_key_once_while_threads_wait_for_it():
    import threading
    import time

    from crawler.master.once import Once

    calls: list[str] = []

    def slow(key: str) -> str:
        calls.append(key)
        time.sleep(0.2)
        return key.upper()

    once: Once[str, str] = Once(slow, fallback="", wait=5)
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(once.get("a"))) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert answers == ["A"] * 5 and calls == ["a"]
    assert once.known("a") == "A" and once.known("b") is None


def test_once_gives_the_fallback_when_computing_fails():
    from crawler.master.once import Once

    def broken(key: str) -> str:
        raise RuntimeError(key)

    once: Once[str, str] = Once(broken, fallback="none", wait=1)
    with pytest.raises(RuntimeError):
        once.get("x")
    assert once.get("x") == "none"


def test_once_keeps_no_value_that_is_not_known_yet():
    from crawler.master.once import NotYet, Once

    answers = iter([NotYet(), "A"])

    def later(key: str) -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    once: Once[str, str] = Once(later, fallback="none", wait=1)
    assert once.get("a") == "none" and once.known("a") is None
    assert once.get("a") == "A" and once.known("a") == "A"


def test_once_holds_a_key_off_for_as_long_as_its_not_yet_asks():
    import time

    from crawler.master.once import NotYet, Once

    calls: list[str] = []

    def later(key: str) -> str:
        calls.append(key)
        if len(calls) == 1:
            raise NotYet(retry_in=0.3)
        return key.upper()

    once: Once[str, str] = Once(later, fallback="none", wait=1)
    assert once.get("a") == "none"
    assert once.get("a") == "none" and calls == ["a"], "asked again at once: not computed"
    time.sleep(0.35)
    assert once.get("a") == "A" and calls == ["a", "a"]


def test_once_get_all_within_begins_no_key_after_it_and_holds_the_rest_off():
    import time

    from crawler.master.once import Once

    calls: list[str] = []

    def slow(key: str) -> str:
        calls.append(key)
        time.sleep(0.3)
        return key.upper()

    once: Once[str, str] = Once(slow, fallback="none", wait=0.6, at_once=1)
    try:
        once.get_all(["a", "b", "c"], within=0.1)
        assert calls == ["a"] and once.known("a") == "A", "the one begun is waited for"
        started = time.monotonic()
        assert once.get("b") == "none" and time.monotonic() - started < 0.2
        assert calls == ["a"]
        time.sleep(0.7)  # the hold-off is over: asked for, b is computed
        assert once.get("b") == "B" and calls == ["a", "b"]
    finally:
        once.close()


def test_once_get_all_within_holds_off_stale_keys_it_did_not_begin_with_their_old_value():
    import time

    from crawler.master.once import Once

    calls: list[str] = []
    slow = [False]

    def compute(key: str) -> str:
        calls.append(key)
        if slow[0]:
            time.sleep(0.3)
        return key.upper() + str(len(calls))

    once: Once[str, str] = Once(compute, fallback="none", wait=0.6, at_once=1, max_age=0.2)
    try:
        for key in "abc":
            once.get(key)
        time.sleep(0.25)  # all three past their age
        slow[0] = True
        once.get_all(["a", "b", "c"], within=0.1)
        assert calls == ["a", "b", "c", "a"], "only the one begun is read again"
        started = time.monotonic()
        # Not read again one after the other by the caller: the old value stands.
        assert once.get("b") == "B2" and once.get("c") == "C3"
        assert time.monotonic() - started < 0.2 and len(calls) == 4
    finally:
        once.close()


def test_once_get_all_computes_at_once_in_batches_and_logs_errors(
        caplog: pytest.LogCaptureFixture) -> None:
    import threading
    import time

    from crawler.master.once import Once

    running, most = 0, 0
    lock = threading.Lock()

    def slow(key: str) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        if key == "bad":
            raise ValueError("boom")
        return key.upper()

    once: Once[str, str] = Once(slow, fallback="", wait=5, at_once=3)
    started = time.monotonic()
    once.get_all(["a", "b", "c", "d", "e", "bad", "a"])
    took = time.monotonic() - started
    assert [once.known(key) for key in "abcde"] == ["A", "B", "C", "D", "E"]
    assert most == 3 and took < 0.2 * 6 - 0.1, (most, took)  # two batches, not six turns
    assert "computing the value of bad failed" in caplog.text and "boom" in caplog.text
    once.close()
    once.get_all(["f", "g"])  # closed: computes nothing more
    assert once.known("f") is None


def test_a_hosts_delay_spaces_its_pages_and_a_crawl_delay_slows_it_further():
    frontier = Frontier([(f"http://a.test/{n}", 0) for n in range(3)], delay=1.0)
    assert frontier.pop(now=0.0) == ("http://a.test/0", 0)
    assert frontier.pop(now=0.5) is None
    assert frontier.pop(now=1.0) == ("http://a.test/1", 0)
    frontier.set_crawl_delay("a.test", 5.0)
    assert frontier.pop(now=2.0) == ("http://a.test/2", 0)  # the wait already set stays 1 s
    frontier.add("http://a.test/3", 1)
    assert frontier.pop(now=6.9) is None  # from here on, 5 s
    assert frontier.pop(now=7.0) == ("http://a.test/3", 1)


def test_a_crawl_delay_told_again_replaces_the_one_before_down_to_the_hosts_delay():
    """A robots.txt read again past its age may ask for less: the pages go faster, but
    never faster than the configured delay."""
    frontier = Frontier([(f"http://a.test/{n}", 0) for n in range(3)], delay=1.0)
    frontier.set_crawl_delay("a.test", 5.0)
    assert frontier.pop(now=0.0) == ("http://a.test/0", 0)
    frontier.set_crawl_delay("a.test", 2.0)
    assert frontier.pop(now=5.0) == ("http://a.test/1", 0)  # the wait already set stays
    assert frontier.pop(now=6.9) is None
    assert frontier.pop(now=7.0) == ("http://a.test/2", 0)  # from here on, 2 s
    frontier.set_crawl_delay("a.test", 0.0)  # no Crawl-delay any more
    frontier.add("http://a.test/3", 1)
    frontier.add("http://a.test/4", 1)
    assert frontier.pop(now=9.0) == ("http://a.test/3", 1)
    assert frontier.pop(now=9.9) is None  # host_delay still
    assert frontier.pop(now=10.0) == ("http://a.test/4", 1)


def test_a_pace_waits_its_delay_and_keeps_the_longest_hold():
    from crawler.model.pacing import Pace

    pace = Pace(delay=0.5)
    assert pace.ready(0.0)
    pace.took(0.0)
    assert not pace.ready(0.4) and pace.ready(0.5)
    pace.hold(10.0)
    pace.hold(3.0)
    pace.took(5.0)  # a request during a hold (a page already in flight) keeps the hold
    assert pace.next_time == 10.0


def test_a_pace_goes_by_a_slow_down_decided_elsewhere_and_wears_it_off_alike() -> None:
    """On a broker the page loop's paces are its own: the pages a master held already
    went back to back after the crawl's slow-down, which the broker's board decides."""
    from crawler.model.pacing import SLOW_DOWN_WEARS_OFF, Pace

    here, there = Pace(), Pace()
    slowed = there.slow_down(10.0, at_most=60.0)
    assert slowed == 0.25
    here.slowed_elsewhere(10.0, slowed)
    assert not here.take(10.2, page=True) and here.take(10.25, page=True)
    assert not here.take(10.45, page=True), "one every 0.25 s"
    for pace in (here, there):
        pace.answered(10.5)  # within the gap: no wearing off
        pace.answered(11.5)
    assert here.delay == there.delay == 0.25 * SLOW_DOWN_WEARS_OFF
    assert here.slow_down(12.0, at_most=60.0) == there.slow_down(12.0, at_most=60.0)


def test_pages_and_images_take_turns_of_a_pace_while_both_wait() -> None:
    from crawler.model.pacing import Pace

    pace = Pace(delay=1.0)
    assert pace.take(0.0)  # an image
    assert not pace.take(0.5, page=True)
    pace.page_waits = True  # as the page loop says
    assert not pace.take(1.0), "after an image's turn, the page waiting has the next"
    assert pace.image_due(1.0) == 2.0
    assert pace.take(1.0, page=True)
    assert pace.take(2.0), "then an image's, though another page waits"
    assert not pace.take(3.0)
    pace.page_waits = False
    assert pace.take(3.0), "no page waits: an image takes every turn"


def test_no_page_of_a_host_is_handed_out_while_one_waits_for_its_turn() -> None:
    """Handed out faster than they can go, one host's pages would fill the pages in hand."""
    from crawler.model.pacing import Paces

    requests = Paces()
    frontier = Frontier([("http://a.test/1", 0), ("http://a.test/2", 0), ("http://b.test/1", 0)])
    frontier.follow_requests(requests)
    assert frontier.pop(now=0.0) == ("http://a.test/1", 0)
    requests.of("a.test").page_waits = True
    assert frontier.pop_many(3, now=0.0) == [("http://b.test/1", 0)]
    requests.of("a.test").page_waits = False
    assert frontier.pop(now=0.0) == ("http://a.test/2", 0)


def test_a_batch_is_what_pops_one_by_one_would_give() -> None:
    pages = [("http://a.test/1", 0), ("http://a.test/2", 0), ("http://b.test/1", 1)]
    one_by_one, batched = Frontier(pages, delay=1.0), Frontier(pages, delay=1.0)
    expected = [one_by_one.pop(now=0.0) for _ in range(3)]
    assert batched.pop_many(3, now=0.0) == [page for page in expected if page is not None]
    assert len(batched.pop_many(3, now=0.0)) == 0  # a.test is paced
    assert batched.pop_many(3, now=1.0) == [("http://a.test/2", 0)]


def test_a_page_read_further_from_the_seeds_is_read_again_where_a_link_finds_it_nearer() -> None:
    frontier = Frontier([("http://h/", 0)])
    frontier.pop_many(1)
    frontier.note_read("http://h/", 0)
    frontier.note_read("http://h/near", 1)  # (nothing is nearer than 1 but a seed)
    frontier.note_read("http://h/far", 3)
    links = ["http://h/", "http://h/near", "http://h/far", "http://h/new"]
    assert frontier.read_again(links, 3, limit=3) == []  # at the limit: no link followed
    assert frontier.read_again(links, 2, limit=3) == [("http://h/far", 2)]
    assert frontier.reading_again("http://h/far") and len(frontier) == 1
    assert frontier.read_again(links, 2, limit=3) == []  # queued once
    assert frontier.pop_many(5) == [("http://h/far", 2)]
    frontier.note_read("http://h/far", 2)
    assert not frontier.reading_again("http://h/far")
    assert frontier.read_again(links, 2, limit=3) == []  # read there now
    assert frontier.read_again(links, 1, limit=3) == [("http://h/far", 1)]
