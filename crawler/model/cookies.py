"""The cookies a crawl's pages set, as they travel from the master's jar to the workers'.

Each is a line of a Netscape cookies.txt, as libcurl exports and takes them: domain,
tail match, path, secure, expiry, name and value, tab-separated (``#HttpOnly_``
before the domain of an HttpOnly one). A cookie is known by its domain, path and
name, as libcurl knows it: a later line of the same key replaces the earlier one.
"""

from __future__ import annotations

import re

FIELDS = 7
# A line's bytes, one character each: a cookie is what the site sent, UTF-8 or not.
COOKIE_ENCODING = "latin-1"
# What no cookie line has (libcurl refuses control characters in a cookie): a line
# break would end the line, and what follows would be another line; past U+00FF, a
# character is no byte.
_NOT_IN_A_LINE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
# A hostile site may set many cookies, or huge ones: what goes to the workers is
# capped (libcurl caps each cookie at 4096 bytes, and each host's at 50 or so).
MAX_COOKIES = 300
MAX_COOKIE_BYTES = 256 * 1024
HTTPONLY = "#HttpOnly_"
EXPIRED = "1"  # an expiry long past: a line that takes its cookie out of a jar


def cookie_key(line: str) -> str | None:
    """The cookie's identity (domain, path, name) in a Netscape line; None when the line
    is not one (libcurl takes a few words, "ALL", "FLUSH", as commands: never those)."""
    parts = line.split("\t")
    if len(parts) != FIELDS or _NOT_IN_A_LINE.search(line):
        return None
    domain = parts[0].removeprefix(HTTPONLY)
    if not domain or domain.startswith("#"):
        return None
    return "\t".join((domain.lower(), parts[2], parts[5]))


def expired(line: str) -> str:
    """``line`` with an expiry long past: added to a jar, it deletes the cookie."""
    parts = line.split("\t")
    parts[4] = EXPIRED
    return "\t".join(parts)

