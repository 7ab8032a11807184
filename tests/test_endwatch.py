"""How often a master on a broker looks for the crawl's end: closely only in its last moments."""

from __future__ import annotations

import pytest

from crawler.master.endwatch import END_TICK, EndWatch

SLOWEST = 0.05


def counts(*, queued: int = 0, in_flight: int = 0, delayed: int = 0, done: int = 0,
           ) -> dict[str, int]:
    return {"queued": queued, "in_flight": in_flight, "delayed": delayed, "done": done,
            "retries": 0, "workers": 2}


def test_the_first_look_and_a_master_with_pages_look_calmly() -> None:
    watch = EndWatch(slowest=SLOWEST)
    assert watch.pause == SLOWEST
    watch.looked(counts(in_flight=16, done=100), pages=0, now=1.0)
    assert watch.pause == SLOWEST  # no pace known yet
    watch.looked(counts(in_flight=16, done=200), pages=3, now=1.05)
    assert watch.pause == SLOWEST  # its own pages: a page's end wakes the loop
    watch.looked(counts(in_flight=16, done=300), pages=0, now=1.1)
    assert watch.pause == SLOWEST  # the pace counts from the end of the pages


def test_the_last_images_are_watched_closely() -> None:
    watch = EndWatch(slowest=SLOWEST)
    watch.looked(counts(queued=16, in_flight=16, done=1834), pages=0, now=1.0)
    # 100 images in 50 ms: the 32 left take about 16 ms, the next look comes at 5 ms.
    watch.looked(counts(queued=16, in_flight=16, done=1934), pages=0, now=1.05)
    assert watch.pause == END_TICK
    # Reports come in batches: a look between two of them saw none, and stays close.
    watch.looked(counts(queued=16, in_flight=16, done=1934), pages=0, now=1.055)
    assert watch.pause == END_TICK


def test_a_pause_is_a_quarter_of_the_time_left() -> None:
    watch = EndWatch(slowest=SLOWEST)
    watch.looked(counts(queued=500, in_flight=16, done=0), pages=0, now=0.0)
    watch.looked(counts(queued=180, in_flight=20, done=200), pages=0, now=0.1)  # 2,000/s
    assert watch.pause == pytest.approx(200 / 2000 / 4)


def test_a_long_tail_is_looked_at_calmly() -> None:
    watch = EndWatch(slowest=SLOWEST)
    watch.looked(counts(queued=20_000, in_flight=32, done=0), pages=0, now=0.0)
    watch.looked(counts(queued=19_900, in_flight=32, done=100), pages=0, now=0.05)
    assert watch.pause == SLOWEST


def test_a_slow_last_image_is_looked_at_less_and_less() -> None:
    watch = EndWatch(slowest=SLOWEST)
    watch.looked(counts(in_flight=3, done=1960), pages=0, now=1.0)
    watch.looked(counts(in_flight=2, done=1961), pages=0, now=1.005)  # 200 a second
    assert watch.pause == END_TICK
    watch.looked(counts(in_flight=2, done=1961), pages=0, now=1.02)  # 50 a second
    assert watch.pause == pytest.approx(2 / 50 / 4)
    watch.looked(counts(in_flight=2, done=1961), pages=0, now=1.5)  # a slow image
    assert watch.pause == SLOWEST


def test_a_crawl_given_pages_again_starts_its_pace_anew() -> None:
    watch = EndWatch(slowest=SLOWEST)
    watch.looked(counts(in_flight=4, done=10), pages=0, now=1.0)
    watch.looked(counts(in_flight=4, done=20), pages=2, now=1.5)  # another master's links
    watch.looked(counts(in_flight=4, done=30), pages=0, now=2.0)
    assert watch.pause == SLOWEST  # not the pace of 20 images in a second
    watch.looked(counts(in_flight=2, done=32), pages=0, now=2.005)
    assert watch.pause == END_TICK
