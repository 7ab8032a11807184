"""Which image URLs a crawl may download: its image allow/deny patterns.

The master asks it of every image a page shows; a worker asks it again of
every URL an image redirects to, so the rules travel to workers as the plain
pattern strings (:meth:`ImageScope.to_wire`) and are compiled again there.
URLs are the ones ``crawler.model.urls.normalize`` produced: matching is
plain string work. Those are ASCII (non-ASCII path and query characters and
spaces as %-escapes, hosts in punycode), so a pattern that holds a space or a
character past ASCII (``café``, ``画像``, ``bücher.example``) is also searched in
the URL as an address bar shows it: escapes of UTF-8 text decoded, the host in
Unicode. Such a pattern never matched, and ``--accept café`` dropped every image.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple, TypedDict
from urllib.parse import unquote

from crawler.errors import ConfigError

__all__ = ["ImagePatterns", "ImageScope", "compile_patterns", "readable", "search_any"]


class ImagePatterns(TypedDict):
    """The image scope as it travels to workers: the patterns' own text."""

    allow: list[str]
    deny: list[str]


def compile_patterns(patterns: Sequence[str], setting: str) -> tuple[re.Pattern[str], ...]:
    """Compile each pattern once; a bad one is a configuration error that names it."""
    if isinstance(patterns, str):
        patterns = (patterns,)  # a lone string would otherwise be split into characters
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as exc:
            raise ConfigError(f"{setting}: invalid regular expression {pattern!r}: {exc}") \
                from exc
    return tuple(compiled)


def search_any(patterns: tuple[re.Pattern[str], ...], url: str) -> bool:
    shown: str | None = None
    for pattern in patterns:
        if pattern.search(url):
            return True
        if not pattern.pattern.isascii() or " " in pattern.pattern:
            if shown is None:
                shown = readable(url)
            if pattern.search(shown):
                return True
    return False


def readable(url: str) -> str:
    """``url`` (normalised) as an address bar shows it: its escapes of UTF-8 text past
    ASCII and of spaces decoded (an escaped "/", "?" or "#" stays one: decoded, a
    pattern could match a structure the URL does not have), its host's punycode labels
    in Unicode."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "xn--" in authority:
        user, at, host = authority.rpartition("@")
        authority = user + at + ".".join(_unicode_label(label) for label in host.split("."))
    # errors="strict" would refuse a whole URL for one escape of a legacy encoding
    # (a query in windows-1252): each run of escapes that is not UTF-8 is kept as it is.
    tail = _NON_ASCII_ESCAPES.sub(_decoded, tail).replace("%20", " ")
    return f"{scheme}{sep}{authority}{slash}{tail}"


def _unicode_label(label: str) -> str:
    """A host label as Unicode: the punycode itself, not IDNA 2003's codec, which the
    label's IDNA 2008 spelling can fail (``faß`` is xn--fa-hia, not ``fass``)."""
    if not label.startswith("xn--"):
        return label
    host, colon, port = label.partition(":")  # (the last label may carry the port)
    try:
        text = host[4:].encode("ascii").decode("punycode")
    except UnicodeError:  # not valid punycode: shown as it is
        return label
    # Only printable text past ASCII that encodes back to the same label: the codec also
    # takes "xn--abc-" for "abc" and "xn--a" for a control character.
    if (text.isascii() or not text.isprintable()
            or text.encode("punycode") != host[4:].encode("ascii")):
        return label
    return text + colon + port


# Runs of escapes of bytes past ASCII: UTF-8 text, or a legacy encoding's, kept if not.
_NON_ASCII_ESCAPES = re.compile(r"(?:%[89A-Fa-f][0-9A-Fa-f])+")


def _decoded(run: re.Match[str]) -> str:
    try:
        return unquote(run.group(), errors="strict")
    except UnicodeDecodeError:
        return run.group()


class ImageScope(NamedTuple):
    """Images are open by default (sites serve them from CDNs); deny wins, allow narrows."""

    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_patterns(cls, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> ImageScope:
        """Raises ``ConfigError`` naming ``image_allow`` or ``image_deny`` for a bad pattern."""
        return cls(compile_patterns(allow, "image_allow"), compile_patterns(deny, "image_deny"))

    def allows(self, url: str) -> bool:
        """May the crawl download this image? Any http(s) URL not denied, and allowed if
        any allow pattern is given."""
        if not url.startswith(("http://", "https://")):
            return False
        if search_any(self.deny, url):
            return False
        return not self.allow or search_any(self.allow, url)

    def refusal(self, url: str) -> str:
        """Why :meth:`allows` refuses ``url``, naming the flag that did (and its setting):
        a redirect refused as "out of the crawl's image scope" left a user filtering by
        file extension to guess which pattern a signed URL on a CDN failed."""
        if not url.startswith(("http://", "https://")):
            return "not an http(s) URL"
        if search_any(self.deny, url):
            return "matched by --reject (crawl.image_deny)"
        return "not matched by --accept (crawl.image_allow)"

    @property
    def open(self) -> bool:
        """No pattern: every http(s) image is in scope."""
        return not (self.allow or self.deny)

    def to_wire(self) -> ImagePatterns:
        return ImagePatterns(allow=[p.pattern for p in self.allow],
                             deny=[p.pattern for p in self.deny])
