"""Which pages and images a crawl may visit.

Pages are bounded by a mode (the seed hosts, the seeds' registrable domains,
or anything) narrowed further by allow/deny regular expressions. A seed host
and its ``www.`` twin are one host of the crawl: a site's address commonly sends
to the other (``site.example`` to ``www.site.example``), and its pages link to
both. Images are
open by default, because sites commonly serve them from other hosts (CDNs);
only the image allow/deny patterns limit them (``crawler.model.imagescope``,
which workers apply to redirects too). Every method takes URLs that
``crawler.model.urls.normalize`` produced, so matching is plain string work.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from crawler.errors import ConfigError
from crawler.model.imagescope import ImageScope, compile_patterns, search_any
from crawler.model.urls import host_key, host_key_of_normalized, normalize

__all__ = ["MODES", "Scope", "registrable_domain"]

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

MODES = ("host", "domain", "any")


@functools.cache
def _suffix_list() -> PublicSuffixList:
    # The package ships its own copy of the Public Suffix List: no network
    # fetch, and both ICANN and private suffixes ("github.io") count, so one
    # user's site never widens to every other user's. Imported here: only the
    # "domain" mode needs it.
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def registrable_domain(host: str) -> str:
    """The registrable domain of a normalised host name ("www.example.co.uk" -> "example.co.uk").

    IP addresses, single-label names such as "localhost", and hosts that are
    themselves public suffixes have no registrable domain: the host itself is
    returned, so "domain" scope degrades to that exact host.
    """
    bare = host.rstrip(".")
    if _is_ip(bare):
        return bare
    return _suffix_list().privatesuffix(bare) or bare


def _is_ip(host: str) -> bool:
    """True for an IPv4 address or a bracketed IPv6 one (IPs have no subdomains)."""
    if host.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _authority(url: str) -> str | None:
    """The ``host[:port]`` of a normalised URL (its ``host_key``), or None if not http(s)."""
    if not url.startswith(("http://", "https://")):
        return None
    return host_key_of_normalized(url) or None


def _hostname(url: str) -> str | None:
    """The host (no userinfo, no port) of a normalised URL, or None if it has none."""
    authority = _authority(url)
    if authority is None:
        return None
    if authority.startswith("["):
        return authority[: authority.find("]") + 1]
    return authority.partition(":")[0] or None


def _www_twin(key: str) -> str | None:
    """``www.HOST[:port]`` for ``HOST[:port]`` and the other way round; None for an
    address, which has no such twin."""
    host = key[: key.find("]") + 1] if key.startswith("[") else key.partition(":")[0]
    if not host or _is_ip(host):
        return None
    if host.startswith("www."):
        return key[4:] if host != "www." else None  # ("www." alone: no host left)
    return "www." + key


class Scope(NamedTuple):
    """The crawl's boundaries; build one with :meth:`Scope.from_seeds`.

    ``hosts`` holds the seeds' ``host[:port]`` keys and their ``www.`` twins (mode
    "host"); ``domains`` holds their registrable domains (mode "domain").
    """

    mode: str
    hosts: frozenset[str]
    domains: frozenset[str]
    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()
    images: ImageScope = ImageScope()

    @classmethod
    def from_seeds(
        cls,
        seeds: Sequence[str],
        mode: str = "host",
        allow: Sequence[str] = (),
        deny: Sequence[str] = (),
        image_allow: Sequence[str] = (),
        image_deny: Sequence[str] = (),
    ) -> Scope:
        """Build the scope of a crawl started from ``seeds``.

        Raises ``ConfigError`` for an unknown mode or a bad regular expression,
        and ``InvalidURL`` for a seed that is not an http(s) URL.
        """
        if mode not in MODES:
            raise ConfigError(f"scope: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        normalized = [normalize(seed) for seed in seeds]
        keys = [host_key(url) for url in normalized]
        hosts = frozenset(keys).union(filter(None, map(_www_twin, keys)))
        domains = frozenset(
            registrable_domain(host) for url in normalized if (host := _hostname(url)))
        return cls(
            mode=mode,
            hosts=hosts,
            domains=domains,
            allow=compile_patterns(allow, "allow"),
            deny=compile_patterns(deny, "deny"),
            images=ImageScope.from_patterns(image_allow, image_deny),
        )

    def _within_mode(self, url: str) -> bool:
        if self.mode == "any":
            return url.startswith(("http://", "https://"))
        if self.mode == "host":
            return _authority(url) in self.hosts
        host = _hostname(url)
        if host is None:
            return False
        host = host.rstrip(".")
        return any(host == domain or (host.endswith("." + domain) and not _is_ip(domain))
                   for domain in self.domains)

    def another_site(self, url: str) -> bool:
        """Whether ``url`` is on a host (mode "host") or domain ("domain") out of the
        crawl, rather than refused by its allow/deny patterns."""
        return not self._within_mode(url)

    def allows_stylesheet(self, url: str) -> bool:
        """May the crawl read this style sheet? Those of the crawled site (its mode), not denied."""
        return self._within_mode(url) and not search_any(self.deny, url)

    def allows_page(self, url: str) -> bool:
        """May the crawl fetch this page? Deny wins; allow, when given, narrows the mode."""
        if not self._within_mode(url):
            return False
        if search_any(self.deny, url):
            return False
        return not self.allow or search_any(self.allow, url)

    def page_refusal(self, url: str) -> str:
        """Why :meth:`allows_page` refuses ``url``, in words a user can act on."""
        if not self._within_mode(url):
            if _hostname(url) is None:
                return "not an http(s) URL"
            if self.mode == "domain":
                return ("another domain than the seeds' (give it as a seed, or crawl with "
                        "--scope any)")
            target = _hostname(url) or ""
            fix = ("crawl with --scope domain, or give it as a seed"
                   if registrable_domain(target.rstrip(".")) in {
                       registrable_domain(_hostname(f"http://{h}/") or h) for h in self.hosts}
                   else "give it as a seed, or crawl with --scope any")
            return f"another host than the seeds' ({fix})"
        if search_any(self.deny, url):
            return "matched by --deny (crawl.deny)"
        return "not matched by --allow (crawl.allow)"

    def allows_image(self, url: str) -> bool:
        """May the crawl download this image? Any host by default; image_deny wins."""
        return self.images.allows(url)
