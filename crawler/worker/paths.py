"""The file name an image's URL is stored under.

A URL is text chosen by whoever runs the web site. ``relative_path`` turns it
into a path that always stays inside the output folder, is a legal name on
Linux, macOS and Windows, and is the same for the same URL on every worker: two
URLs never share a file, and a plain URL keeps a readable path. Pure string
work: ``store`` owns the files themselves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import PurePosixPath
from urllib.parse import quote, unquote

from crawler.model.imagetype import IMAGE_EXTENSIONS, ImageType, extensions
from crawler.model.outcome import IMAGES_DIR

MAX_NAME_BYTES = 255
"""The longest file or folder name (in UTF-8 bytes) common file systems accept."""

MAX_PATH_BYTES = 3072
"""The longest relative path; leaves 1 KiB of Linux's 4 KiB PATH_MAX for the output folder."""

_HASH_CHARS = 10  # of a URL's hash in a tagged name

# Path separators, NUL and control characters, Windows' reserved punctuation, lone
# surrogates (which no file system encoding can represent), and the marks that turn
# text's direction: a file browser shows "photo\u202egnp.exe" as "photoexe.png".
_UNSAFE = re.compile('[\\x00-\\x1f\\x7f<>:"|?*\\\\/\ud800-\udfff'
                     '\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]')
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Device names Windows reserves whatever the extension; superscript digits count too.
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"{device}{digit}" for device in ("COM", "LPT") for digit in "123456789\u00b9\u00b2\u00b3"}
)


def relative_path(url: str, kind: ImageType, *, fold_case: bool = False) -> PurePosixPath:
    """The relative path ``images/SCHEME/HOST/seg/.../name.ext`` an image from ``url`` is stored at.

    Deterministic, never absolute, never with a ``..`` part, every part at most
    255 bytes: safe for any string, though meant for normalised http(s) URLs.
    One-to-one: a *plain* URL (one its path spells out exactly: http(s), a
    lower-case host, no query, no fragment, segments that are already legal
    file names, a name ending in its type's extension) keeps its readable path,
    from which the URL can be read back. Any other URL's file name also carries
    ``~`` and a hash of the whole URL, and no plain name ends that way, so two
    URLs never share a file.

    ``fold_case``: for a file system that folds case (macOS's and Windows' by
    default), where ``A.png`` and ``a.png`` are one file (and macOS's also takes
    composed and decomposed accents for one), a plain path must also be ASCII in
    lower case; any other is tagged, so two URLs still never share a file.
    """
    return PurePosixPath(relative_text(url, kind, fold_case))


def relative_text(url: str, kind: ImageType, fold_case: bool = False) -> str:
    """``relative_path`` as a string: the store's hot path avoids pathlib's parsing."""
    scheme, authority, path, query, fragment = _split(url)
    folder_path, _, last = path.rpartition("/")
    if len(authority) + len(folder_path) <= _CACHED_PLACE_CHARS:
        place = _place(scheme, authority, folder_path)
    else:  # a rare long one would only crowd the cache (and weigh up to 16 KiB)
        place = _place.__wrapped__(scheme, authority, folder_path)
    scheme_folder, host, folders, plain_place = place
    stem, suffix = _file_name(_decode(last) if last else None, kind)
    name = stem + suffix
    plain = (plain_place and query is None and fragment is None and bool(last)
             and _plain_segment(last, name) and _TAGGED.search(name) is None)
    if plain and len(name.encode()) <= MAX_NAME_BYTES:
        text = _bounded(scheme_folder, host, folders, name)
        # Nothing folded to fit: still plain; and one name for its URL alone where the
        # file system takes "A" for "a" (and, beyond ASCII, final sigma for sigma, or an
        # accented letter for the letter and an accent, as macOS's does): there, plain
        # is ASCII in lower case.
        if text.count("/") == len(folders) + 3 and not (
                fold_case and not (text.isascii() and text == text.lower())):
            return text
    return _bounded(scheme_folder, host, folders, _tagged(stem, suffix, url))


_CACHED_PLACE_CHARS = 512

# What a plain segment may spell literally: what quote() never escapes, plus the
# sub-delimiters a normalised URL keeps, less the ones no file name can hold.
_LITERAL = "!$&'()+,;=@"
_PLAIN_HOST = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::[0-9]{1,5})?")
_PLAIN_SCHEMES = frozenset({"http", "https"})
# The end of a tagged file name: "~", the URL's hash, the extension.
_TAGGED = re.compile(rf"~[0-9a-f]{{{_HASH_CHARS}}}\.[^.]*$")


@lru_cache(maxsize=1024)
def _place(scheme: str | None, authority: str,
           folder_path: str) -> tuple[str, str, tuple[str, ...], bool]:
    """(scheme folder, host folder, folders below it, whether all of it is plain).

    Shared by every image of a folder.
    """
    scheme_folder = scheme.lower() if scheme and scheme.lower() in _PLAIN_SCHEMES else "other"
    host = _host_name(authority)
    plain = (scheme in _PLAIN_SCHEMES and _PLAIN_HOST.fullmatch(authority) is not None
             and host == authority.replace(":", "_"))
    raw_segments = folder_path.split("/")
    if raw_segments[0] or any(not segment for segment in raw_segments[1:]):
        plain = False  # empty segments are dropped: "a//b" and "a/b" would look alike
    folders = []
    for segment in raw_segments:
        if segment:
            folder = _folder_name(_decode(segment))
            plain = plain and _plain_segment(segment, folder)
            folders.append(folder)
    return scheme_folder, host, tuple(folders), plain


def _plain_segment(raw: str, name: str) -> bool:
    """Whether ``name`` spells out the URL path segment ``raw`` exactly, and only it."""
    return quote(name, safe=_LITERAL) == raw


def _tagged(stem: str, suffix: str, url: str) -> str:
    """``stem~HASH.ext``: the hash of the whole URL makes the name the URL's alone."""
    keep = "~" + _digest(url) + suffix
    if len(keep.encode()) > MAX_NAME_BYTES:  # only an absurd extension from a caller's own type
        keep = keep[: _HASH_CHARS + 1] + ".img"
    budget = MAX_NAME_BYTES - len(keep.encode())
    # Decoding with "ignore" drops a character the byte cut split in two.
    return stem.encode()[:max(0, budget)].decode("utf-8", errors="ignore") + keep


def _split(url: str) -> tuple[str | None, str, str, str | None, str | None]:
    """(scheme, authority, path, query, fragment) of any string; None when absent."""
    url, hash_mark, fragment = url.partition("#")
    scheme = _SCHEME.match(url)
    rest = url[scheme.end() :] if scheme else url.removeprefix("//")
    rest, question, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    return (scheme.group()[:-3] if scheme else None, authority, slash + path,
            query if question else None, fragment if hash_mark else None)


def _decode(segment: str) -> str:
    """A path segment as text: percent-decoded, then with unsafe characters as ``_``."""
    return _UNSAFE.sub("_", unquote(segment, encoding="utf-8", errors="replace"))


def _host_name(authority: str) -> str:
    """``host`` or ``host_port``; IPv6 without brackets and with ``_`` for ``:``."""
    host = authority.rpartition("@")[2].lower()  # credentials never become a folder
    host = _UNSAFE.sub("_", host.replace("[", "").replace("]", ""))
    if not host:
        return "_"
    if host.startswith("."):
        # Keeps host folders visible; covers "." and "..".
        host = "_" + host
    return _fit(_windows_safe(host))


def _folder_name(text: str) -> str:
    if text in (".", ".."):
        return "_" + text
    text = _windows_safe(text)
    if _extension(text) in IMAGE_EXTENSIONS:
        # Every file name ends in an image extension; no folder may, so a file
        # and a folder can never want the same name.
        text += "_"
    return _fit(text)


def _file_name(text: str | None, kind: ImageType) -> tuple[str, str]:
    """(stem, suffix) of the file name: the suffix names the image's real type."""
    stem = "index" if text is None else text
    if stem in (".", ".."):
        stem = "_" + stem
    suffix = "." + (_UNSAFE.sub("_", kind.extension).strip(". ") or "img")
    if (extension := _extension(stem)) and extension in extensions(kind):
        stem, suffix = stem[: stem.rindex(".")], stem[stem.rindex(".") :]
    if _is_reserved(stem + suffix):
        stem = "_" + stem
    return stem, suffix  # too long for a name: _tagged cuts it


def _extension(name: str) -> str:
    """The lower-case text after the last dot, or "" without one."""
    return name.rpartition(".")[2].lower() if "." in name else ""


def _windows_safe(name: str) -> str:
    """``name`` with trailing dots and spaces as ``_`` and a ``_`` before a device name."""
    kept = name.rstrip(". ")
    name = kept + "_" * (len(name) - len(kept))
    return "_" + name if _is_reserved(name) else name


def _is_reserved(name: str) -> bool:
    return name.partition(".")[0].rstrip(" ").upper() in _RESERVED


def _fit(prefix: str, keep: str = "") -> str:
    """``prefix + keep``, with ``prefix`` cut and tagged when it is over MAX_NAME_BYTES.

    The tag hashes the whole name, so two long names that share their first
    245 bytes still get different names.
    """
    name = prefix + keep
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    tag = "~" + _digest(name)
    budget = MAX_NAME_BYTES - len(tag) - len(keep.encode())
    if budget < 0:  # only an absurd extension from a caller's own ImageType
        prefix, keep, budget = name, "", MAX_NAME_BYTES - len(tag)
    # Decoding with "ignore" drops a character the byte cut split in two.
    return prefix.encode()[:budget].decode("utf-8", errors="ignore") + tag + keep


def _bounded(scheme_folder: str, host: str, folders: Sequence[str], name: str) -> str:
    """The path, with the folders that do not fit in MAX_PATH_BYTES folded into one."""
    joined = "/".join([IMAGES_DIR, scheme_folder, host, *folders, name])
    if len(joined.encode()) <= MAX_PATH_BYTES:
        return joined
    fold_length = 1 + _HASH_CHARS
    used = (len(IMAGES_DIR) + len(scheme_folder) + len(host.encode()) + len(name.encode())
            + fold_length + 4)
    kept: list[str] = []
    for folder in folders:
        used += len(folder.encode()) + 1
        if used > MAX_PATH_BYTES:
            break
        kept.append(folder)
    fold = "~" + _digest("/".join(folders[len(kept) :]))
    return "/".join([IMAGES_DIR, scheme_folder, host, *kept, fold, name])


def _digest(text: str) -> str:
    # surrogatepass: any Python string hashes, even one no file name could hold.
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:_HASH_CHARS]


