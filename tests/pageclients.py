"""The master's two page clients behind one call, for tests that hold them to the same rules.

Pages go through ``MultiClient`` (many at once, on the page loop's thread);
robots.txt and style sheets through ``EasyClient`` (one request per call, on
helper threads). ``get(kind, ...)`` makes one GET with either, waiting for it.
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable

from crawler.fetch.easy import EasyClient, Reply
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.multi import MultiClient
from crawler.fetch.options import RequestOptions

KINDS = ("easy", "multi")


def get(kind: str, policy: AddressPolicy, options: RequestOptions, url: str, *,
        accept: str = "text/html", max_bytes: int = 1_000_000, timeout: float = 10.0,
        ca_file: str | None = None,
        wants: Callable[[int, dict[str, str]], bool] = lambda status, headers: True,
        ) -> Reply:
    """One GET of ``url`` with the page client ``kind`` ("easy" or "multi"); ``wants`` as
    for ``EasyClient.get`` (the page loop's: ``crawler.master.pages.wants_html``)."""
    if kind == "easy":
        client = EasyClient(policy, options, ca_file=ca_file)
        try:
            return client.get(url, accept=accept, max_bytes=max_bytes, timeout=timeout,
                              wants=wants)
        finally:
            client.close()
    selector = selectors.DefaultSelector()
    multi = MultiClient(policy, options, selector=selector, ca_file=ca_file)
    try:
        multi.start("one", url, accept=accept, max_bytes=max_bytes, timeout=timeout,
                    wants=wants)
        return wait_for_one(multi, selector, timeout + 5)
    finally:
        multi.close()
        selector.close()


def wait_for_one(multi: MultiClient, selector: selectors.BaseSelector, within: float) -> Reply:
    """Drive ``multi`` as the page loop does until one request ends; its reply."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        due = multi.due()
        wait = 0.05 if due is None else max(0.0, min(0.05, due - time.monotonic()))
        for key, mask in selector.select(wait):
            multi.act(key.fd, mask)
        due = multi.due()
        if due is not None and time.monotonic() >= due:
            multi.tick()
        finished = multi.finished()
        if finished:
            return finished[0][1]
    raise AssertionError(f"no reply within {within:g} s")
