"""The master's rules a worker's download engine works by: the engine built from them,
and what differs between two sets of them.

The crawl info the master sends as a worker joins (and again after a reconnect,
or once the crawl's settings changed on the broker) carries the request
settings, the address policy, the download limits, the image scope and the
robots.txt rules. Here they become a configured libcurl engine, with this
host's own part (its slots, a client certificate, whether to read HTTP_PROXY
and friends) and the check its images' redirects must pass; and here two crawl
infos are compared by those rules, so that the worker starts its engine again
only when one of them changed, and says which by name. Apart from the worker's
loop: this runs once per engine start, never per image; the engine reports to
the worker's own queue and sinks into its store directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from crawler.config import Limits
from crawler.fetch.curlsetup import default_ca_file
from crawler.fetch.easy import EasyClient
from crawler.fetch.engine import Engine
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.model.outcome import Attempt
from crawler.model.wire import CrawlInfo, image_scope_from_wire, robots_rules_from_wire
from crawler.worker.hops import RedirectCheck, RobotsReader
from crawler.worker.sink import sinks_into
from crawler.worker.store import Store

log = logging.getLogger(__name__)


class ThisHost(Protocol):
    """This host's own part of an engine's settings (a worker's options have it): the
    master's paths and proxy environment mean nothing here."""

    @property
    def threads(self) -> int: ...  # downloads in flight at once
    @property
    def client_cert(self) -> str: ...
    @property
    def client_key(self) -> str: ...
    @property
    def env_proxies(self) -> bool: ...  # whether to read HTTP_PROXY and friends


class BuiltEngine(NamedTuple):
    engine: Engine
    redirects: RedirectCheck | None  # the engine's check of redirect targets: closed after it


def build_engine(crawl: CrawlInfo, limits: Limits, store: Store, local: ThisHost, *,
                 report: Callable[[list[tuple[str, Attempt | None]]], None],
                 stop: threading.Event) -> BuiltEngine:
    """A download engine that works by ``crawl``'s rules, storing into ``store`` and
    telling ``report`` what finished. Raises BadCrawlInfo if the master's rules are bad,
    ConfigError if this host's proxy variable is."""
    from crawler.fetch.curl import CurlEngine  # imports libcurl: only a worker needs it

    if "request" in crawl:
        request = RequestOptions.from_crawl(crawl["request"], client_cert=local.client_cert,
                                            client_key=local.client_key,
                                            env_proxies=local.env_proxies)
    else:  # a master that sends only its user agent
        request = RequestOptions(user_agent=crawl["user_agent"],
                                 env_proxies=local.env_proxies)
    log.debug("request options: %r", request)  # its repr holds no secret
    policy = AddressPolicy.from_wire(crawl["policy"])
    redirects = _redirect_check(crawl, policy, request, limits)
    try:
        engine = CurlEngine(slots=local.threads, new_sink=sinks_into(store, limits),
                            limits=limits, policy=policy, options=request,
                            report=report, stop=stop, check_hop=redirects)
    except BaseException:
        if redirects is not None:  # no engine will use it
            redirects.close()
        raise
    return BuiltEngine(engine, redirects)


def _redirect_check(crawl: CrawlInfo, policy: AddressPolicy, request: RequestOptions,
                    limits: Limits) -> RedirectCheck | None:
    """The crawl's image scope and robots.txt, for the redirects images take (None:
    every target may be followed). Raises BadCrawlInfo if the master's rules are bad."""
    scope = image_scope_from_wire(crawl.get("image_scope"))
    robots = robots_rules_from_wire(crawl.get("robots"))
    if scope.open and not robots["respect"]:
        return None
    reader = None
    if robots["respect"]:
        client = EasyClient(policy, request, connect_timeout=limits.connect_timeout,
                            ca_file=None if request.ca_bundle else default_ca_file())
        reader = RobotsReader(client, crawl["user_agent"], robots["timeout"],
                              max_age=robots["max_age"], gives_up=limits.deadline)
    return RedirectCheck(scope, reader)


# What a worker's engine is built from, by the name a message gives it.
_RULES = {"limits": "download limits", "policy": "address policy",
          "user_agent": "crawl.user_agent", "image_scope": "image scope",
          "robots": "robots.txt rules"}
# The request settings (RequestOptions.to_wire()), by the setting each comes from.
_REQUEST = {"user_agent": "crawl.user_agent", "credentials": "http.netrc"}


def changed_rules(old: CrawlInfo, new: CrawlInfo) -> list[str]:
    """What differs between two crawl infos of what the download engine is built from,
    by name only (a header's value, a cookie, a login are secrets)."""
    names = [name for key, name in _RULES.items() if old.get(key) != new.get(key)]
    theirs: Any = old.get("request")
    ours: Any = new.get("request")
    if theirs != ours:
        if isinstance(theirs, dict) and isinstance(ours, dict):
            names += [_REQUEST.get(key, f"http.{key}") for key in sorted({*theirs, *ours})
                      if theirs.get(key) != ours.get(key)]
        else:
            names.append("request settings")
    return list(dict.fromkeys(names))  # once each, in order
