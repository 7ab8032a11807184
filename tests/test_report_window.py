"""When a worker's reports go: together while downloads are in hand, never held up otherwise."""

from __future__ import annotations

import pytest

from crawler.worker.reportwindow import REPORT_WAIT, ReportWindow


def test_a_report_waits_for_company_while_downloads_are_in_hand() -> None:
    window = ReportWindow(batch=8)
    left = window.left(reports=1, downloading=5, urgent=False, now=10.0)
    assert left == pytest.approx(REPORT_WAIT)
    assert window.left(reports=3, downloading=3, urgent=False, now=10.002) == \
        pytest.approx(REPORT_WAIT - 0.002)
    # The wait counts from the first report, not the latest.
    assert window.left(reports=4, downloading=2, urgent=False, now=10.0 + REPORT_WAIT) == 0


def test_reports_go_at_once_when_no_company_is_coming() -> None:
    window = ReportWindow(batch=8)
    assert window.left(reports=2, downloading=0, urgent=False, now=1.0) == 0


def test_enough_reports_go_at_once() -> None:
    window = ReportWindow(batch=8)
    assert window.left(reports=7, downloading=9, urgent=False, now=1.0) > 0
    assert window.left(reports=8, downloading=9, urgent=False, now=1.0) == 0


def test_reports_never_hold_up_what_must_go_at_once() -> None:
    window = ReportWindow(batch=8)
    assert window.left(reports=1, downloading=9, urgent=True, now=1.0) == 0


def test_nothing_pending_means_nothing_to_wait_for() -> None:
    window = ReportWindow(batch=8)
    assert window.left(reports=0, downloading=9, urgent=False, now=1.0) == 0


def test_after_a_send_the_next_report_waits_afresh() -> None:
    window = ReportWindow(batch=8)
    window.left(reports=1, downloading=5, urgent=False, now=1.0)
    window.sent()
    left = window.left(reports=1, downloading=5, urgent=False, now=2.0)
    assert left == pytest.approx(REPORT_WAIT)


def test_a_batch_of_at_least_one() -> None:
    window = ReportWindow(batch=0)  # a worker of one thread: each report goes at once
    assert window.left(reports=1, downloading=1, urgent=False, now=1.0) == 0
