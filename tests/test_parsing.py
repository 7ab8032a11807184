"""The page parser process: the same results as extract(), and a dead child costs one page."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.parse import pool
from crawler.parse.extract import SOURCES, Extraction, extract
from crawler.parse.pool import NoChildProcess, PageParser, ParserCrashed

from .conftest import wait_until

PAGES = sorted((Path(__file__).parent / "pages" / "discovery").glob("*.html"))
CORPUS = sorted((Path(__file__).parent / "corpus" / "extract").glob("*.html"))
URL = "http://example.com/dir/page.html"


@pytest.fixture
def parser() -> Iterator[PageParser]:
    parser = PageParser(in_process=False)
    yield parser
    parser.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_child_finds_what_extract_finds(parser: PageParser) -> None:
    assert parser.pid is not None and parser.pid != os.getpid() and alive(parser.pid)
    assert PAGES and CORPUS
    for path in [*PAGES, *CORPUS[:10]]:
        body = path.read_bytes()
        options = {"sources": SOURCES - {"anchor"}, "lazy_attributes": ("data-x",),
                   "encoding": "utf-8"}
        assert parser.extract(body, URL, **options) == extract(body, URL, **options), path


@pytest.mark.skipif(not Path("/proc/self/oom_score_adj").exists(), reason="Linux's /proc")
def test_a_child_is_the_first_the_kernel_ends_when_memory_runs_out(parser: PageParser) -> None:
    """A hostile page of 10 MB takes a child past a gigabyte: the kernel, out of memory,
    picked the largest process, which could be the master and the whole crawl."""
    parser.extract(b"<p>", URL)  # the child is serving pages
    assert Path(f"/proc/{parser.pid}/oom_score_adj").read_text().strip() == "1000"
    assert Path("/proc/self/oom_score_adj").read_text().strip() != "1000", "not the master"


def test_a_child_killed_while_idle_costs_no_page(parser: PageParser) -> None:
    body = PAGES[0].read_bytes()
    first = parser.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    # The page goes to a fresh child: it did not kill the first one.
    assert parser.extract(body, URL) == extract(body, URL)
    assert not alive(first), "the dead child was reaped"
    assert parser.pid not in (None, first) and alive(parser.pid)


# A page whose parse lasts a second or two: long enough to kill its child well into it,
# and to see other pages answered meanwhile (each parse of it is CI time: no longer).
HUGE = b"<div>" + b'<img src="/i.png" data-src="/j.png" style="x">' * 150_000 + b"</div>"


@functools.cache
def _huge_extracted() -> Extraction:
    """What extracting HUGE here gives, worked out once for every test that compares."""
    return extract(HUGE, URL)


def _parse_in_thread(parser: PageParser, outcome: list[object]) -> threading.Thread:
    def parse() -> None:
        try:
            outcome.append(parser.extract(HUGE, URL))
        except ParserCrashed as exc:
            outcome.append(exc)

    thread = threading.Thread(target=parse)
    thread.start()
    return thread


def _kill_when_parsing(parser: PageParser, previous: int | None) -> int:
    """Kill the child that is parsing, once it is not ``previous`` and is well into it."""
    deadline = time.monotonic() + 30
    while parser.pid in (None, previous):
        assert time.monotonic() < deadline, "no new child came"
        time.sleep(0.01)
    pid = parser.pid
    assert pid is not None
    time.sleep(0.3)  # well into a parse of a second or two
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_page_that_kills_two_children_fails_and_the_next_page_is_parsed(
        parser: PageParser) -> None:
    outcome: list[object] = []
    thread = _parse_in_thread(parser, outcome)
    first = _kill_when_parsing(parser, None)
    second = _kill_when_parsing(parser, first)
    thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], ParserCrashed), outcome
    assert "died on this page 2 time(s)" in str(outcome[0])
    assert not alive(first) and not alive(second)
    body = PAGES[0].read_bytes()
    assert parser.extract(body, URL) == extract(body, URL)


def test_a_page_whose_first_child_is_killed_is_parsed_by_the_second(
        parser: PageParser) -> None:
    outcome: list[object] = []
    thread = _parse_in_thread(parser, outcome)
    _kill_when_parsing(parser, None)
    thread.join(60)
    assert len(outcome) == 1 and not isinstance(outcome[0], ParserCrashed), outcome
    assert outcome[0] == _huge_extracted()


def _no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forks fail as on a host out of processes (root is exempt from RLIMIT_NPROC)."""

    def fail() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", fail)


def open_descriptors() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_with_no_child_to_be_had_pages_are_parsed_in_the_master(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _no_fork(monkeypatch)
    parser = PageParser(in_process=False, processes=2)
    try:
        assert parser.pids == []
        before = open_descriptors()  # multiprocessing's own leak of the failed fork counted
        for page in PAGES[:3]:
            assert parser.extract(page.read_bytes(), URL) == extract(page.read_bytes(), URL)
        assert open_descriptors() == before, "pages opened pipes that stayed open"
    finally:
        parser.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "parsed in the master" in warnings[0], warnings
    assert "no page parser process can be started" in warnings[0]
    monkeypatch.undo()  # forks work again: so do children
    parser = PageParser(in_process=False, processes=1)
    try:
        assert len(parser.pids) == 1
    finally:
        parser.close()


def test_a_fork_that_fails_leaves_no_pipe_open(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing.process

    def fail(self: object) -> None:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", fail)
    monkeypatch.setattr("crawler.parse.pool.NO_CHILD_WAIT", 0.0)  # a fork tried per page
    before = open_descriptors()
    parser = PageParser(in_process=False, processes=1)
    try:
        for page in PAGES[:3]:
            assert parser.extract(page.read_bytes(), URL) == extract(page.read_bytes(), URL)
    finally:
        parser.close()
    assert open_descriptors() == before


def test_a_page_that_killed_a_child_is_not_parsed_in_the_master(
        parser: PageParser, monkeypatch: pytest.MonkeyPatch) -> None:
    outcome: list[object] = []
    _no_fork(monkeypatch)  # the first child is there; no second one for the page
    thread = _parse_in_thread(parser, outcome)
    _kill_when_parsing(parser, None)
    thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], ParserCrashed), outcome
    assert "died on this page" in str(outcome[0])


def test_extracts_own_errors_reach_the_caller(parser: PageParser) -> None:
    with pytest.raises(ValueError, match="unknown image sources"):
        parser.extract(b"<p>", URL, sources=frozenset({"nonsense"}))
    assert parser.extract(b"<img src=a.png>", URL).images == ("http://example.com/dir/a.png",)


def test_close_ends_the_child_and_no_page_is_parsed_after() -> None:
    parser = PageParser(in_process=False)
    pid = parser.pid
    assert pid is not None
    parser.close()
    assert not alive(pid)
    with pytest.raises(ParserCrashed, match="closed"):
        parser.extract(b"<img src=a.png>", URL)


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not reaped yet counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def test_let_go_ends_the_idle_children_before_close_reaps_them() -> None:
    parser = PageParser(in_process=False, processes=2)
    parser._start(1)
    pids = parser.pids
    assert len(pids) == 2
    parser.let_go()
    wait_until(lambda: all(map(_ended, pids)), 20, "the idle children to leave before close()")
    with pytest.raises(ParserCrashed, match="closed"):
        parser.extract(b"<img src=a.png>", URL)
    parser.close(wait=30)
    assert not any(map(alive, pids)), "close() did not reap the children let go"


def test_close_without_waiting_cuts_off_a_page_in_flight() -> None:
    parser = PageParser(in_process=False)
    outcome: list[object] = []
    thread = _parse_in_thread(parser, outcome)
    threading.Event().wait(0.3)  # well into a parse of a second or two
    parser.close(wait=0.0)
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], ParserCrashed), outcome
    assert "closed" in str(outcome[0]), "not tried again on a new child"


def test_the_child_leaves_a_polite_kill_to_the_master(parser: PageParser) -> None:
    pid = parser.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    body = PAGES[0].read_bytes()
    assert parser.extract(body, URL) == extract(body, URL)
    assert parser.pid == pid and alive(pid)


def test_in_process_parsing_where_fork_is_not_the_way() -> None:
    parser = PageParser(in_process=True)
    assert parser.pid is None
    body = PAGES[0].read_bytes()
    assert parser.extract(body, URL) == extract(body, URL)
    parser.close()


# --- a pool of children -------------------------------------------------------------


def test_up_to_one_child_per_core_by_default_started_as_needed() -> None:
    parser = PageParser(in_process=False)
    try:
        assert parser.processes == len(os.sched_getaffinity(0))
        assert len(parser.pids) == 1, "one child until pages come at once"
        assert alive(parser.pids[0])
    finally:
        parser.close()


def test_one_child_per_core_the_process_may_use_not_per_core_of_the_host() -> None:
    # As under taskset, or a container given one core of a bigger host.
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from crawler.parse.pool import PageParser; "
            "p = PageParser(in_process=False); print(p.processes, os.cpu_count()); p.close()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split()[0] == "1"


def test_pages_are_parsed_at_once_in_several_children() -> None:
    parser = PageParser(in_process=False, processes=3)
    try:
        body = PAGES[0].read_bytes()
        outcome: list[object] = []
        threads = [_parse_in_thread(parser, outcome) for _ in range(2)]
        # Two huge pages hold two children; the third still answers at once.
        deadline = time.monotonic() + 30
        while len(parser._idle) > 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert parser.extract(body, URL) == extract(body, URL)
        assert len(outcome) == 0, "the small page did not wait for the huge ones"
        for thread in threads:
            thread.join(120)
        assert outcome == [_huge_extracted()] * 2
        assert len(parser.pids) == 3, "a child per page in flight"
    finally:
        parser.close()


def test_a_child_killed_under_one_page_costs_no_other_page() -> None:
    parser = PageParser(in_process=False, processes=2)
    try:
        victims: list[object] = []
        victim = _parse_in_thread(parser, victims)
        first = _kill_when_parsing(parser, None)
        bystander = parser.extract(PAGES[0].read_bytes(), URL)  # in the other child
        assert bystander == extract(PAGES[0].read_bytes(), URL)
        # The huge page is tried again on a fresh child in its slot (the first).
        deadline = time.monotonic() + 30
        while parser._pid_of(0) in (None, first):
            assert time.monotonic() < deadline, "no new child came"
            time.sleep(0.01)
        second = parser._pid_of(0)
        assert second is not None
        time.sleep(0.3)  # well into a parse of a second or two
        os.kill(second, signal.SIGKILL)
        victim.join(60)
        assert len(victims) == 1 and isinstance(victims[0], ParserCrashed), victims
        assert not alive(first) and not alive(second)
        assert parser.extract(b"<img src=a.png>", URL).images == (
            "http://example.com/dir/a.png",)
    finally:
        parser.close()


def test_close_lets_each_child_leave_by_its_pipe() -> None:
    parser = PageParser(in_process=False, processes=3)
    for slot in (1, 2):
        parser._start(slot)  # each child holds copies of its elders' pipes
    pids = parser.pids
    assert len(pids) == 3
    started = time.monotonic()
    parser.close(wait=30)
    assert time.monotonic() - started < 25, "a child was killed, not left by itself"
    assert not any(map(alive, pids))


def test_children_forked_at_once_each_leave_by_their_pipe() -> None:
    # Pages that come at once fork children from several threads; a child forked
    # while another's pipe was being made would hold that pipe open, and close
    # would have to kill both.
    parser = PageParser(in_process=False, processes=6)
    ready = threading.Barrier(5)

    def start(slot: int) -> None:
        ready.wait(30)
        parser._start(slot)

    threads = [threading.Thread(target=start, args=(slot,)) for slot in range(1, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    processes = [child.process for child in parser._children if child is not None]
    assert len(processes) == 6
    parser.close(wait=5)
    assert [process.exitcode for process in processes] == [0] * 6, "some were killed"


def test_results_cross_the_pipe_whole() -> None:
    parser = PageParser(in_process=False, processes=1)
    try:
        html = (b'<link rel=stylesheet href=s.css><figure><img src=a.png alt=A width=3>'
                b'<figcaption>Cap</figcaption></figure><a href=p.html>p</a>')
        assert parser.extract(html, URL) == extract(html, URL)
        assert parser.extract(html, URL).image_refs[0].caption == "Cap"
    finally:
        parser.close()


# ----- without waiting: the page loop's way (send, then receive when the pipe is readable)


def answers(parser: PageParser, slot: int, within: float = 60) -> list[Extraction | Exception]:
    """Wait for the answers to the batch sent to ``slot`` as the page loop does: on every
    live child's pipe, taking what each one says."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pipes = parser.pipes()
        readable, _, _ = select.select(list(pipes), [], [], 0.1)
        for fd in readable:
            ready, _pid = pipes[fd]
            got = parser.receive_many(ready)
            if ready == slot and got is not None:
                return got
    raise AssertionError(f"no answer within {within:g} s")


def answer(parser: PageParser, slot: int, within: float = 60) -> Extraction:
    """``answers`` for the one page sent to ``slot``: its extraction, or its error raised."""
    [result] = answers(parser, slot, within)
    if isinstance(result, Exception):
        raise result
    return result


def test_a_page_sent_comes_back_as_extract_finds_it() -> None:
    parser = PageParser(in_process=False, processes=1)
    try:
        body = PAGES[0].read_bytes()
        slot = parser.send(body, URL, sources=SOURCES)
        assert slot is not None
        assert parser.send(body, URL) is None, "its only child is busy"
        assert answer(parser, slot) == extract(body, URL, sources=SOURCES)
        again = parser.send(CORPUS[0].read_bytes(), URL)
        assert again == slot and answer(parser, again) == extract(CORPUS[0].read_bytes(), URL)
    finally:
        parser.close()


def test_a_page_sent_whose_child_is_killed_is_parsed_by_the_next(parser: PageParser) -> None:
    slot = parser.send(HUGE, URL)
    assert slot is not None
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(answer(parser, slot)))
    thread.start()
    first = _kill_when_parsing(parser, None)
    thread.join(90)
    assert outcome == [_huge_extracted()]
    assert not alive(first) and parser.pid != first


def test_a_page_sent_that_kills_two_children_fails_alone(parser: PageParser) -> None:
    slot = parser.send(HUGE, URL)
    assert slot is not None
    outcome: list[object] = []

    def wait() -> None:
        try:
            outcome.append(answer(parser, slot))
        except ParserCrashed as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    first = _kill_when_parsing(parser, None)
    _kill_when_parsing(parser, first)
    thread.join(90)
    assert len(outcome) == 1 and isinstance(outcome[0], ParserCrashed), outcome
    assert "died on this page 2 time(s)" in str(outcome[0])
    body = PAGES[0].read_bytes()
    slot = parser.send(body, URL)
    assert slot is not None and answer(parser, slot) == extract(body, URL)


def test_a_child_dead_while_idle_reads_as_no_answer_and_costs_no_page(
        parser: PageParser) -> None:
    [(fd, (slot, pid))] = parser.pipes().items()
    os.kill(pid, signal.SIGKILL)
    readable, _, _ = select.select([fd], [], [], 10)
    assert readable, "a dead child's pipe reads as closed"
    assert parser.receive(slot) is None
    assert parser.pipes() == {}, "it is replaced when next needed"
    body = PAGES[0].read_bytes()
    sent = parser.send(body, URL)
    assert sent is not None and answer(parser, sent) == extract(body, URL)


def test_where_pages_are_parsed_in_process_send_says_to_call_extract() -> None:
    parser = PageParser(in_process=True)
    with pytest.raises(NoChildProcess):
        parser.send(PAGES[0].read_bytes(), URL)


class NeedsTwo(Exception):
    """An error that pickles but does not unpickle (its class wants two arguments)."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(first)


def _unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages whose URL ends in /odd.html get an answer that cannot be read (set before
    the child is forked: it has it too)."""
    real = pool.extract

    def odd(html: bytes, page_url: str, **options: object) -> Extraction:
        if page_url.endswith("/odd.html"):
            raise NeedsTwo("one", "two")
        return real(html, page_url, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "extract", odd)


def test_an_answer_that_cannot_be_read_fails_its_page_and_frees_the_child(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _unreadable(monkeypatch)
    parser = PageParser(in_process=False, processes=1)
    try:
        slot = parser.send(b"<p>x</p>", "http://example.com/odd.html")
        assert slot is not None
        with pytest.raises(TypeError):
            answer(parser, slot)
        body = PAGES[0].read_bytes()
        again = parser.send(body, URL)
        assert again is not None, "the child is free for the next page"
        assert answer(parser, again) == extract(body, URL)
    finally:
        parser.close()


def test_a_page_sent_before_the_parser_closed_fails_when_asked_for() -> None:
    parser = PageParser(in_process=False, processes=1)
    slot = parser.send(HUGE, URL)
    assert slot is not None
    parser.close(wait=0)
    with pytest.raises(ParserCrashed, match="closed under this page"):
        parser.receive(slot)


def _deadly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages whose URL ends in /deadly.html kill the child that parses them (set before
    the child is forked: it has it too)."""
    real = pool.extract

    def deadly(html: bytes, page_url: str, **options: object) -> Extraction:
        if page_url.endswith("/deadly.html"):
            os._exit(70)
        return real(html, page_url, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "extract", deadly)


@contextlib.contextmanager
def _one_child() -> Iterator[PageParser]:
    """A parser of one child, forked now (after any patch of what the child runs)."""
    parser = PageParser(in_process=False, processes=1)
    try:
        yield parser
    finally:
        parser.close()


def _breaks(parser: PageParser, jobs: list[pool.Job], match: str | None = None) -> None:
    """Send ``jobs`` as one batch, whose child dies under it or whose answers cannot be
    read: no page is blamed."""
    slot = parser.send_many(jobs)
    assert slot is not None
    with pytest.raises(pool.BatchBroken, match=match):
        answers(parser, slot)


def _parses_alone(parser: PageParser, body: bytes) -> None:
    """A page sent after a batch broke is parsed: the slot is free, a child is there."""
    slot = parser.send(body, URL)
    assert slot is not None and answer(parser, slot) == extract(body, URL)


def test_a_batch_comes_back_in_its_order_with_each_pages_own_error() -> None:
    with _one_child() as parser:
        bodies = [path.read_bytes() for path in PAGES[:3]]
        slot = parser.send_many([(bodies[0], URL, {}), (bodies[1], URL, {"parser": "nope"}),
                                 (bodies[2], URL, {"sources": frozenset({"img"})})])
        assert slot is not None
        assert parser.send(bodies[0], URL) is None, "its only child has the batch"
        first, second, third = answers(parser, slot)
        assert first == extract(bodies[0], URL)
        assert isinstance(second, ValueError) and "unknown parser" in str(second)
        assert third == extract(bodies[2], URL, sources=frozenset({"img"}))
        assert parser.idle == 1


def test_a_batch_whose_child_dies_blames_no_page_and_each_goes_again_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _deadly(monkeypatch)
    with _one_child() as parser:
        body = PAGES[0].read_bytes()
        deadly = "http://example.com/deadly.html"
        _breaks(parser, [(body, URL, {}), (body, deadly, {}), (body, URL, {})],
                "died under 3 pages")
        assert parser.idle == 1, "the slot is free again, its child to be replaced"
        # Alone, the page that did it kills two children and fails; the others parse.
        alone = parser.send(body, deadly)
        assert alone is not None
        with pytest.raises(ParserCrashed, match="died on this page 2 time"):
            answer(parser, alone)
        _parses_alone(parser, body)


def test_a_batch_whose_answers_cannot_be_read_blames_no_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _unreadable(monkeypatch)
    with _one_child() as parser:
        body = PAGES[0].read_bytes()
        _breaks(parser, [(body, URL, {}), (b"<p>x</p>", "http://example.com/odd.html", {})],
                "could not be read")
        _parses_alone(parser, body)


def test_a_page_of_a_batch_whose_child_died_is_not_parsed_in_the_master(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any page of the batch may have killed the child: sent again as a suspect while no
    child can be forked, it fails instead of being parsed in the master."""
    _deadly(monkeypatch)
    with _one_child() as parser:
        body = PAGES[0].read_bytes()
        _breaks(parser, [(body, URL, {}), (body, "http://example.com/deadly.html", {})])
        _no_fork(monkeypatch)  # its child is gone, and none comes in its place
        with pytest.raises(ParserCrashed, match="died under this page and others"):
            parser.send_many([(body, "http://example.com/deadly.html", {})], suspect=True)
        with pytest.raises(NoChildProcess):  # a page not under suspicion: parsed here
            parser.send(body, URL)


def test_a_pool_closes_at_once_beside_another_pool_of_the_process() -> None:
    """Two crawls at once in one program: the second pool's children kept copies of the
    first pool's pipe ends, so the first pool's children never saw their pipes close,
    and its close() waited the whole CLOSE_WAIT, then killed them."""
    first = PageParser(in_process=False, processes=1)
    second = PageParser(in_process=False, processes=1)  # forked after the first's child
    try:
        started = time.monotonic()
        first.close()
        assert time.monotonic() - started < pool.CLOSE_WAIT / 2
        assert second.extract(b"<img src=a.png>", "http://h/").images  # it is unharmed
    finally:
        first.close()
        second.close()


# A page whose parse takes seconds of CPU (300,000 images, each its own): far past a
# deadline of a fraction of a second, whatever else the machine does.
SLOW_PAGE = ("<html><body>" + "".join(f'<img src="/{n}.png">' for n in range(300_000))
             + "</body></html>").encode()


def test_a_page_over_its_cpu_deadline_fails_and_the_child_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "PARSE_CPU_LIMIT", 0.2)  # the child is forked with it
    parser = PageParser(in_process=False, processes=1)
    try:
        child = parser.pid
        with pytest.raises(pool.ParseTooSlow, match=r"page too slow to parse \(over 0\.2 s "):
            parser.extract(SLOW_PAGE, URL)
        small = PAGES[0].read_bytes()
        assert parser.extract(small, URL) == extract(small, URL)
        assert parser.pid == child, "the child that stopped the page parses the next"
    finally:
        parser.close()


def _batch_answers(parser: PageParser, slot: int) -> list[object]:
    """The answers to the batch sent as ``slot``, waited for 30 s at most."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        select.select(list(parser.pipes()), [], [], 1.0)
        answers = parser.receive_many(slot)
        if answers is not None:
            return list(answers)
    raise AssertionError("no answer to the batch in 30 s")


def test_a_page_over_its_cpu_deadline_fails_alone_in_a_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "PARSE_CPU_LIMIT", 0.2)
    parser = PageParser(in_process=False, processes=1)
    small = PAGES[0].read_bytes()
    try:
        slot = parser.send_many([(small, URL, {}), (SLOW_PAGE, URL, {}), (small, URL, {})])
        assert slot is not None
        answers = _batch_answers(parser, slot)
        assert answers[0] == answers[2] == extract(small, URL)
        assert isinstance(answers[1], pool.ParseTooSlow)
    finally:
        parser.close()


def test_a_deadline_caught_on_its_way_still_fails_the_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline's exception may be raised where something catches it (a library's
    callback, a fallback to another parser): the page then went on, and was answered as
    if it had been parsed in time; the suite saw it now and then as a slow page's
    Extraction."""
    small = PAGES[0].read_bytes()

    def swallowing(html: bytes, page_url: str, **options: object) -> object:
        if html == small:
            return extract(html, page_url, **options)  # type: ignore[arg-type]
        for _ in range(3):  # a parse that catches whatever is raised, and goes on
            with contextlib.suppress(Exception):
                _spin_cpu(0.4)
        return extract(small, page_url)

    monkeypatch.setattr(pool, "PARSE_CPU_LIMIT", 0.2)
    monkeypatch.setattr(pool, "extract", swallowing)  # the child is forked with it
    parser = PageParser(in_process=False, processes=1)
    try:
        slot = parser.send_many([(b"<p>slow</p>", URL, {}), (small, URL, {})])
        assert slot is not None
        answers = _batch_answers(parser, slot)
        assert isinstance(answers[0], pool.ParseTooSlow), answers[0]
        assert answers[1] == extract(small, URL)
    finally:
        parser.close()


def _spin_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_child_busy_with_a_page_leaves_when_its_master_is_killed(tmp_path: Path) -> None:
    """Its pipe closing says so only when it next reads: a master killed with -9 under a
    slow page left its parser working on alone."""
    script = tmp_path / "master.py"
    script.write_text(
        "import os, sys, threading\n"
        "from crawler.parse.pool import PageParser\n"
        "parser = PageParser(in_process=False, processes=1)\n"
        # About 14 s of CPU: a million images, each its own
        "page = ''.join(f'<img src=\"/{n}.png\">' for n in range(1_000_000)).encode()\n"
        "threading.Thread(target=parser.extract, args=(page, 'http://h/'), daemon=True"
        ").start()\n"
        "print(parser.pid, flush=True)\n"
        "threading.Event().wait(60)\n")
    master = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert master.stdout is not None
        child = int(master.stdout.readline())
        time.sleep(0.5)  # the page is being parsed
        assert running(child)
    finally:
        master.kill()
        master.wait(10)
    wait_until(lambda: not running(child), 5, "the parser to leave with its master")


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may take its time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_deadline_that_strikes_as_a_page_ends_gives_that_page_one_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU timer may fire just after extract returned: the page got a second answer
    (too slow) after its first, and the batch's answers no longer matched its pages."""
    import types

    real = signal

    def setitimer(which: int, value: float, interval: float = 0.0) -> tuple[float, float]:
        if which == real.ITIMER_PROF and value == 0:
            os.kill(os.getpid(), real.SIGPROF)  # the deadline came a moment ago
        return real.setitimer(which, value, interval)

    late = types.SimpleNamespace(**{name: getattr(real, name) for name in dir(real)
                                    if not name.startswith("__")})
    late.setitimer = setitimer
    monkeypatch.setattr(pool, "signal", late)  # the child is forked with it
    parser = PageParser(in_process=False, processes=1)
    monkeypatch.setattr(pool, "signal", real)
    try:
        pages = [(f'<img src="/{n}.png">'.encode(), URL, {}) for n in range(3)]
        slot = parser.send_many(pages)
        assert slot is not None
        answers = _batch_answers(parser, slot)
        assert answers is not None and len(answers) == 3
        assert [answer.images for answer in answers] == [  # type: ignore[union-attr]
            (f"http://example.com/{n}.png",) for n in range(3)]
        assert parser.extract(b'<img src="/x.png">', URL).images == (
            "http://example.com/x.png",)
    finally:
        parser.close()
