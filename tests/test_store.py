"""Tests for crawler.worker.store: safe relative paths for URLs, and atomic, idempotent storage."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import string
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crawler.demo.site import png
from crawler.errors import PartialLost, PathConflict, StorageError
from crawler.model.imagetype import (
    GIF,
    IMAGE_EXTENSIONS,
    JPEG,
    PNG,
    TIFF,
    TYPES,
    ImageType,
    extensions,
)
from crawler.worker import store as store_module
from crawler.worker.paths import MAX_NAME_BYTES, MAX_PATH_BYTES, relative_path
from crawler.worker.store import PARTIAL_DIR, STALE_AFTER, Store, StoredFile

from .conftest import folder_of_length, run_crawler, tiny_tmpfs, without_permission_override

REPO = Path(__file__).resolve().parent.parent


def tag(url: str) -> str:
    """What a URL its path cannot spell out exactly adds to its file name."""
    return "~" + hashlib.sha256(url.encode()).hexdigest()[:10]


def rel(url: str, kind: ImageType = PNG) -> str:
    """The path below images/http/, with this URL's own tag shown as ``~T``."""
    return relative_path(url, kind).as_posix().removeprefix("images/http/").replace(tag(url), "~T")


def put(store: Store, url: str, data: bytes, kind: ImageType = PNG) -> StoredFile:
    """Download ``data`` for ``url`` the way a worker does: partial file, then commit."""
    partial, file = store.open_partial()
    with file:
        file.write(data)
    return store.commit(partial, url, kind, len(data), hashlib.sha256(data).hexdigest())


def partials(store: Store) -> list[Path]:
    return sorted(p for p in store.partial_dir.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- relative_path


@pytest.mark.parametrize(
    ("url", "kind", "expected"),
    [
        ("http://example.com/a/b/photo.jpg", JPEG, "example.com/a/b/photo.jpg"),
        ("https://EXAMPLE.com/x.png", PNG, "images/https/example.com/x~T.png"),
        ("http://example.com:8080/x.png", PNG, "example.com_8080/x.png"),
        ("http://[2001:db8::1]/x.png", PNG, "2001_db8__1/x~T.png"),
        ("http://[::1]:8443/x.png", PNG, "__1_8443/x~T.png"),
        ("http://user:secret@example.com/x.png", PNG, "example.com/x~T.png"),
        ("http://example.com/x.png#frag", PNG, "example.com/x~T.png"),
        # index for an empty path or a path ending in "/"
        ("http://h/", PNG, "h/index~T.png"),
        ("http://h", GIF, "h/index~T.gif"),
        ("http://h/a/b/", JPEG, "h/a/b/index~T.jpg"),
        # an extension that already names the real type is kept, in any case
        ("http://h/photo.JPEG", JPEG, "h/photo.JPEG"),
        ("http://h/photo.jpe", JPEG, "h/photo.jpe"),
        ("http://h/scan.tif", TIFF, "h/scan.tif"),
        ("http://h/scan.TIFF", TIFF, "h/scan.TIFF"),
        # otherwise the real type's extension is appended
        ("http://h/photo", PNG, "h/photo~T.png"),
        ("http://h/photo.php", PNG, "h/photo.php~T.png"),
        ("http://h/photo.jpg", PNG, "h/photo.jpg~T.png"),
        ("http://h/archive.tar.gz", GIF, "h/archive.tar.gz~T.gif"),
        ("http://h/name.", PNG, "h/name.~T.png"),
        # empty segments are dropped
        ("http://h//a///b.png", PNG, "h/a/b~T.png"),
        # percent-decoding happens after splitting on "/"
        ("http://h/caf%C3%A9/%E2%9C%93.png", PNG, "h/café/✓.png"),
        ("http://h/a%2Fb/c.png", PNG, "h/a_b/c~T.png"),
        ("http://h/a%2fb%2F..%2F/c.png", PNG, "h/a_b_.._/c~T.png"),
        ("http://h/%2F", PNG, "h/_~T.png"),
        ("http://h/a%20b.png", PNG, "h/a b.png"),
        ("http://h/a+b.png", PNG, "h/a+b.png"),
        ("http://h/bad%FFutf8.png", PNG, "h/bad�utf8~T.png"),
        ("http://h/100%.png", PNG, "h/100%~T.png"),
    ],
)
def test_relative_path_examples(url: str, kind: ImageType, expected: str) -> None:
    assert rel(url, kind) == expected


def test_relative_path_is_pure_posix_path() -> None:
    path = relative_path("http://h/a/b.png", PNG)
    assert isinstance(path, PurePosixPath)
    assert path.parts == ("images", "http", "h", "a", "b.png")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/a/../b.png", "h/a/_../b~T.png"),
        ("http://h/../../etc/passwd", "h/_../_../etc/passwd~T.png"),
        ("http://h/%2e%2e/%2E%2E/x.png", "h/_../_../x~T.png"),
        ("http://h/.%2e/x.png", "h/_../x~T.png"),
        ("http://h/./x.png", "h/_./x~T.png"),
        ("http://h/%2e/x.png", "h/_./x~T.png"),
        ("http://h/a/..", "h/a/_..~T.png"),
        ("http://h/a/%2e%2e", "h/a/_..~T.png"),
        ("http://h/...", "h/...~T.png"),
        ("http://h/.../x.png", "h/___/x~T.png"),
    ],
)
def test_dot_segments_never_climb(url: str, expected: str) -> None:
    path = relative_path(url, PNG)
    assert rel(url) == expected
    assert ".." not in path.parts and "." not in path.parts


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/a\\b/c.png", "h/a_b/c~T.png"),
        ("http://h/a%5Cb/c.png", "h/a_b/c~T.png"),
        ("http://h/..%5C..%5Cx.png", "h/.._.._x~T.png"),
        ("http://h/a%00b/c%00.png", "h/a_b/c_~T.png"),
        ("http://h/a\x00b.png", "h/a_b~T.png"),
        ("http://h/%01%1F%7F.png", "h/___~T.png"),
        ("http://h/tab%09new%0Aline%0D.png", "h/tab_new_line_~T.png"),
        ("http://h/%3C%3E%3A%22%7C%3F%2A.png", "h/_______~T.png"),
        ("http://h/a:b/c*d.png", "h/a_b/c_d~T.png"),
        # Direction marks: shown, "photo\u202egnp.exe" reads "photoexe.png".
        ("http://h/uni%E2%80%AEgnp.exe.png", "h/uni_gnp.exe~T.png"),
        ("http://h/%E2%81%A6a%E2%81%A9/%E2%80%8Fb.png", "h/_a_/_b~T.png"),
    ],
)
def test_unsafe_characters_become_underscores(url: str, expected: str) -> None:
    assert rel(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/CON/x.png", "h/_CON/x~T.png"),
        ("http://h/con.png", "h/_con~T.png"),
        ("http://h/aux", "h/_aux~T.png"),
        ("http://h/Nul.txt", "h/_Nul.txt~T.png"),
        ("http://h/prn.x/y.png", "h/_prn.x/y~T.png"),
        ("http://h/com1.jpg", "h/_com1.jpg~T.png"),
        ("http://h/LPT9/COM9.png", "h/_LPT9/_COM9~T.png"),
        ("http://h/con%20.png", "h/_con ~T.png"),
        ("http://h/COM10/CONSOLE.png", "h/COM10/CONSOLE.png"),
        ("http://h/icon.png", "h/icon.png"),
        ("http://h/con?x=1", "h/_con~T.png"),
    ],
)
def test_windows_reserved_names(url: str, expected: str) -> None:
    assert rel(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/a./x.png", "h/a_/x~T.png"),
        ("http://h/a%20/x.png", "h/a_/x~T.png"),
        ("http://h/a.%20./x.png", "h/a___/x~T.png"),
        ("http://h/b%20", "h/b ~T.png"),
    ],
)
def test_trailing_dots_and_spaces(url: str, expected: str) -> None:
    assert rel(url) == expected


def test_query_goes_into_the_name_before_the_extension() -> None:
    assert rel("http://h/a.png?x=1") == "h/a~T.png"
    assert rel("http://h/a.php?id=7", JPEG) == "h/a.php~T.jpg"
    assert rel("http://h/?v=2") == "h/index~T.png"
    assert rel("http://h/a.png?") == "h/a~T.png"
    one, two = relative_path("http://h/a.png?x=1", PNG), relative_path("http://h/a.png?x=2", PNG)
    assert one != two != relative_path("http://h/a.png", PNG)


def test_query_with_slashes_stays_in_the_name() -> None:
    assert rel("http://h/a.png?next=/b/../c") == "h/a~T.png"


def test_folders_that_end_in_an_image_extension_get_an_underscore() -> None:
    assert rel("http://h/a.jpg/b.png") == "h/a.jpg_/b~T.png"
    assert rel("http://h/A.JPG/b.png") == "h/A.JPG_/b~T.png"
    assert rel("http://h/x.tiff/y.svg/") == "h/x.tiff_/y.svg_/index~T.png"
    assert rel("http://h/a.jpgx/b.png") == "h/a.jpgx/b.png"
    assert rel("http://h/jpg/b.png") == "h/jpg/b.png"
    for extension in IMAGE_EXTENSIONS:
        assert rel(f"http://h/d.{extension}/f") == f"h/d.{extension}_/f~T.png"


@pytest.mark.parametrize("kind", TYPES, ids=lambda kind: kind.name)
def test_every_file_name_ends_in_its_types_extension(kind: ImageType) -> None:
    for url in (
        "http://h/a",
        "http://h/a.bin",
        "http://h/",
        "http://h/a?q",
        "http://h/" + "x" * 400,
    ):
        name = relative_path(url, kind).name
        assert name.rpartition(".")[2].lower() in extensions(kind)


def test_long_names_are_cut_and_tagged() -> None:
    long_a = "a" * 300
    path = relative_path(f"http://h/{long_a}/{long_a}.jpg", JPEG)
    folder, name = path.parts[3:]
    assert len(folder.encode()) <= MAX_NAME_BYTES and len(name.encode()) <= MAX_NAME_BYTES
    assert folder.startswith("a" * 200) and "~" in folder
    assert name.endswith(".jpg") and "~" in name
    assert len(name.encode()) == MAX_NAME_BYTES  # cut exactly to the limit


def test_long_names_that_share_a_prefix_stay_distinct() -> None:
    stem = "b" * 300
    one = relative_path(f"http://h/{stem}1.png", PNG)
    two = relative_path(f"http://h/{stem}2.png", PNG)
    assert one != two
    assert (relative_path(f"http://h/{stem}1.png?x", PNG)
            != relative_path(f"http://h/{stem}1.png?y", PNG))


def test_long_query_tagged_name_keeps_the_url_tag() -> None:
    url = "http://h/" + "c" * 400 + "?page=2"
    name = relative_path(url, PNG).name
    assert name.endswith(tag(url) + ".png")
    assert len(name.encode()) <= MAX_NAME_BYTES


@pytest.mark.parametrize("char", ["é", "✓", "😀", "日"])
def test_long_multibyte_names_are_cut_on_character_boundaries(char: str) -> None:
    segment = char * 300
    for url in (f"http://h/{segment}/x.png", f"http://h/{segment}.png"):
        for part in relative_path(url, PNG).parts:
            encoded = part.encode("utf-8")  # would raise on a split character
            assert len(encoded) <= MAX_NAME_BYTES
            assert "\ufffd" not in part


def test_percent_encoded_multibyte_reads_as_its_characters() -> None:
    assert rel("http://h/" + "%C3%A9" * 20 + ".png") == "h/" + "é" * 20 + ".png"
    # Not percent-encoded, as no normalised URL is: the same name, told apart by the tag.
    assert rel("http://h/" + "é" * 20 + ".png") == "h/" + "é" * 20 + "~T.png"


def test_very_long_paths_are_folded_below_the_limit() -> None:
    deep = "/".join(["segment"] * 1000)
    path = relative_path(f"http://h/{deep}/x.png", PNG)
    assert len(path.as_posix().encode()) <= MAX_PATH_BYTES
    url = f"http://h/{deep}/x.png"
    assert path.parts[:3] == ("images", "http", "h") and path.name == f"x{tag(url)}.png"
    assert path.parts[-2].startswith("~")
    other = relative_path(f"http://h/{deep}/other/x.png", PNG)
    assert other != path


def test_the_longest_output_folder_taken_stores_the_deepest_image(tmp_path: Path) -> None:
    root = folder_of_length(tmp_path, store_module.LONGEST_FOLDER_BYTES)
    store = Store(root)
    url = "http://h/" + "/".join(["segment"] * 1000) + "/x.png"
    deepest = relative_path(url, PNG).as_posix()
    assert len(deepest.encode()) > MAX_PATH_BYTES - 20  # (near the limit)
    data = png(4, 4, 1)
    stored = store.store_bytes(url, PNG, data, hashlib.sha256(data).hexdigest())
    assert (root / stored.path).read_bytes() == data


def test_an_output_folder_too_long_for_its_images_paths_is_refused_at_once(
        tmp_path: Path) -> None:
    """A worker given such a folder (--out) stored images until one's path passed the
    system's limit: then it stopped for "the folder", and so did the next worker given
    that image. The folder is refused as the store opens, and nothing is made."""
    root = folder_of_length(tmp_path, store_module.LONGEST_FOLDER_BYTES + 1)
    with pytest.raises(StorageError) as caught:
        Store(root)
    assert str(caught.value) == (
        f"the output folder's path is {store_module.LONGEST_FOLDER_BYTES + 1} bytes long "
        f"({str(root)[:60]}...): an image's path under it takes up to {MAX_PATH_BYTES} bytes "
        "more, past the 4096-byte limit of a path on this system; choose an output folder "
        f"whose path is at most {store_module.LONGEST_FOLDER_BYTES} bytes long")
    assert list(tmp_path.iterdir()) == []
    # The worker says it in one line, with the folder's status, before it reaches for a
    # master (none listens here).
    result = run_crawler("worker", "127.0.0.1:9", "--out", str(root), cwd=tmp_path,
                         env={**os.environ, "CRAWLER_AUTHKEY": "k" * 32}, timeout=60)
    assert result.returncode == StorageError.exit_code == 3, result.stderr
    assert "choose an output folder whose path is at most" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "http://",
        "http:///x.png",
        "////",
        "http://./x.png",
        "http://../x.png",
        "http://.partial/x.png",
        "http://CON/x.png",
        "http://a\\b/x.png",
        "javascript:alert(1)",
        "http://[::1/x.png",
        "http://h:port/x.png",
        "\ud800\udfff",
        "http://h/\ud800.png",
    ],
)
def test_any_string_gives_a_safe_path(url: str) -> None:
    path = relative_path(url, PNG)
    assert_safe(path, PNG)


def test_host_folder_never_is_the_partial_folder() -> None:
    assert relative_path("http://.partial/x.png", PNG).parts[0] != PARTIAL_DIR


def assert_safe(path: PurePosixPath, kind: ImageType) -> None:
    assert not path.is_absolute()
    assert len(path.parts) >= 2
    assert len(path.as_posix().encode()) <= MAX_PATH_BYTES
    for part in path.parts:
        assert part not in ("", ".", "..")
        assert len(part.encode("utf-8")) <= MAX_NAME_BYTES
        assert not set(part) & set('/\\\x00<>:"|?*')
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in part)
        # Trailing dots and spaces vanish on Windows; only the dot-segment names
        # the rules spell out ("_." and "_..") keep theirs.
        assert part[-1] not in ". " or part in ("_.", "_..")
    assert path.name.rpartition(".")[2].lower() in extensions(kind)
    # A folder named as an image would be the file of another URL beside it. Not the
    # scheme's or the host's: no file is stored beside those (a string that is no URL
    # makes a host such as "a.svg").
    for folder in path.parts[3:-1]:
        assert folder.rpartition(".")[2].lower() not in IMAGE_EXTENSIONS or "." not in folder


# --------------------------------------------------------------------------- properties

NASTY_SEGMENTS = st.sampled_from(
    [
        "..",
        ".",
        "%2e%2e",
        "%2E%2e",
        ".%2e",
        "%2e",
        "\\",
        "..\\..",
        "%5C",
        "%2F",
        "%2f..%2f",
        "%00",
        "\x00",
        "\x7f",
        "%",
        "%zz",
        "CON",
        "aux.png",
        "a.jpg",
        "b.",
        " ",
        "~",
        "é" * 130,
        "😀" * 70,
        "%F0%9F%98%80" * 70,
        "x" * 256,
    ]
)
SEGMENTS = st.one_of(NASTY_SEGMENTS, st.text(max_size=40), st.text(min_size=200, max_size=400))
HOSTS = st.sampled_from(
    ["example.com", "EXAMPLE.com:8080", "[::1]", "[2001:db8::1]:443", "127.0.0.1", "..", ""]
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http://", "https://"]))
    path = "/" + "/".join(draw(st.lists(SEGMENTS, max_size=8)))
    if draw(st.booleans()):
        path += "/"
    query = draw(st.none() | st.text(max_size=60))
    return scheme + draw(HOSTS) + path + ("" if query is None else "?" + query)


@pytest.fixture(scope="module")
def fixed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("root")


@settings(max_examples=400, deadline=None)
@given(url=st.one_of(urls(), st.text()), kind=st.sampled_from(TYPES))
def test_property_relative_path_is_safe(fixed_root: Path, url: str, kind: ImageType) -> None:
    path = relative_path(url, kind)
    assert path == relative_path(url, kind)  # deterministic
    assert_safe(path, kind)
    root = fixed_root.resolve()
    assert (fixed_root / path).resolve().is_relative_to(root)


ALNUM = string.ascii_letters + string.digits
SIMPLE_SEGMENTS = st.text(alphabet=ALNUM, min_size=1, max_size=12)


@st.composite
def simple_urls(draw: st.DrawFn) -> str:
    segments = draw(st.lists(SIMPLE_SEGMENTS, max_size=4))
    trailing = draw(st.booleans())
    # "/x/index" and "/x/" both are the file "x/index.png": the one rule that
    # maps two simple URLs together, by design, so leave it out.
    assume(trailing or not segments or segments[-1] != "index")
    path = "/" + "/".join(segments) + ("/" if trailing and segments else "")
    query = draw(st.none() | st.text(alphabet=ALNUM + "=&", max_size=12))
    return "http://example.com" + path + ("" if query is None else "?" + query)


@settings(max_examples=300, deadline=None)
@given(st.lists(simple_urls(), min_size=2, max_size=12, unique=True), st.sampled_from(TYPES))
def test_property_distinct_urls_get_distinct_paths(batch: list[str], kind: ImageType) -> None:
    paths = [relative_path(url, kind) for url in batch]
    assert len(set(paths)) == len(batch)
    files = set(paths)
    folders = {parent for path in paths for parent in path.parents}
    assert not files & folders  # no file is also wanted as a folder


@settings(max_examples=300, deadline=None)
@given(st.lists(simple_urls(), min_size=2, max_size=12, unique=True), st.sampled_from(TYPES))
def test_property_on_a_file_system_that_folds_case_urls_still_get_their_own_files(
        batch: list[str], kind: ImageType) -> None:
    """macOS and Windows take "A.png" for "a.png" by default: there, the paths of
    distinct URLs differ in more than case."""
    paths = [relative_path(url, kind, fold_case=True).as_posix().lower() for url in batch]
    assert len(set(paths)) == len(batch)
    folders = {parent.as_posix() for path in paths for parent in PurePosixPath(path).parents}
    assert not set(paths) & folders


def test_where_case_folds_only_a_lower_case_path_stays_plain() -> None:
    def folded(url: str) -> str:
        path = relative_path(url, PNG, fold_case=True).as_posix()
        return path.removeprefix("images/http/").replace(tag(url), "~T")

    assert folded("http://h/a/b.png") == "h/a/b.png"
    assert folded("http://h/a/B.png") == "h/a/B~T.png"
    assert folded("http://h/A/b.png") == "h/A/b~T.png"
    # Beyond ASCII, such file systems fold more: final and medial sigma, the two forms
    # of an accented letter (composed; e and a combining accent).
    for url in ("http://h/%CF%82.png", "http://h/%CF%83.png", "http://h/caf%C3%A9.png",
                "http://h/cafe%CC%81.png"):
        assert folded(url).endswith("~T.png"), url
    # Without folding, the two are plain, and one file where case folds.
    assert rel("http://h/a/B.png").lower() == rel("http://h/a/b.png").lower()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=ALNUM, min_size=250, max_size=300), min_size=2, unique=True))
def test_property_long_names_never_collide(names: list[str]) -> None:
    paths = {relative_path(f"http://h/{name}", PNG) for name in names}
    assert len(paths) == len(names)


# --------------------------------------------------------------------------- Store: setup


def test_store_creates_its_folders(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "out"
    store = Store(root)
    assert root.is_dir()
    assert store.partial_dir == root / PARTIAL_DIR
    assert store.partial_dir.is_dir()
    assert partials(store) == []  # the writability probe is gone


def test_a_store_knows_whether_its_file_system_folds_case(tmp_path: Path) -> None:
    """Linux's file systems here keep case; one that folds it shows another name of the
    probe as the same file, as a second link to it does here."""
    assert Store(tmp_path / "out").folds_case is False
    probe = tmp_path / "x-1.probe"
    probe.touch()
    assert store_module._folds_case(probe) is False
    os.link(probe, tmp_path / "x-1.PROBE")
    assert store_module._folds_case(probe) is True


def test_a_store_where_case_folds_gives_case_variants_their_own_files(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    store.folds_case = True  # as on macOS: no such file system can be mounted here
    one = put(store, "http://h/pics/Photo.png", b"first image")
    two = put(store, "http://h/pics/photo.png", b"second image")
    assert one.relative_text.lower() != two.relative_text.lower()
    assert two.relative_text == "images/http/h/pics/photo.png"
    assert one.path.read_bytes() == b"first image" and two.path.read_bytes() == b"second image"


def test_root_below_a_regular_file_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError) as caught:
        Store(blocker / "out")
    assert str(blocker) in str(caught.value)
    assert caught.value.exit_code == 3


def test_root_that_is_a_regular_file_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match=r"file\.txt"):
        Store(blocker)


def test_a_root_on_a_read_only_disk_is_a_storage_error_that_says_so(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "ro", options="ro") as disk:
        for root in (disk, disk / "out"):
            with pytest.raises(StorageError) as caught:
                Store(root)
            assert str(caught.value) == (
                f"cannot use output folder {root}: Read-only file system; the disk that holds "
                f"{root} is mounted read-only: remount it read-write, or choose another "
                "output folder")


_STORE_AT = """
import sys
from crawler.errors import StorageError
from crawler.worker.store import Store
try:
    Store(sys.argv[1])
except StorageError as exc:
    print(exc)
"""


def test_a_root_in_a_folder_denied_is_a_storage_error_naming_that_folder(
        tmp_path: Path) -> None:
    denied = tmp_path / "denied"
    denied.mkdir()
    denied.chmod(0o500)
    try:
        said = [subprocess.run(
            [*without_permission_override(), sys.executable, "-c", _STORE_AT, str(root)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60, check=True).stdout.strip() for root in (denied, denied / "out")]
    finally:
        denied.chmod(0o700)
    assert said == [f"cannot use output folder {root}: permission denied on {denied} "
                    "(Permission denied); fix its permissions, or choose another output folder"
                    for root in (denied, denied / "out")]


# --------------------------------------------------------------------------- Store: commit


def test_commit_moves_the_partial_to_its_final_name(tmp_path: Path) -> None:
    store = Store(tmp_path)
    data = b"\x89PNG fake image bytes"
    partial, file = store.open_partial()
    assert partial.parent.parent == store.partial_dir  # in this thread's shard
    with file:
        file.write(data)
    final = tmp_path / "images" / "http" / "example.com" / "img" / "a.png"
    assert not final.exists()  # never under its final name before commit
    inode = partial.stat().st_ino
    digest = hashlib.sha256(data).hexdigest()
    stored = store.commit(partial, "http://example.com/img/a.png", PNG, len(data), digest)
    assert stored == StoredFile(
        str(final), "images/http/example.com/img/a.png", len(data), digest, skipped=False
    )
    assert (stored.path, stored.relative) == (
        final, PurePosixPath("images/http/example.com/img/a.png"))
    assert final.read_bytes() == data
    assert final.stat().st_ino == inode  # renamed, not copied
    assert not partial.exists()
    assert partials(store) == []


def test_store_bytes_stores_as_open_partial_and_commit_do(tmp_path: Path) -> None:
    data = b"\x89PNG held in memory"
    digest = hashlib.sha256(data).hexdigest()
    by_commit = put(Store(tmp_path / "a"), "http://example.com/img/a.png?x=1", data)
    store = Store(tmp_path / "b")
    stored = store.store_bytes("http://example.com/img/a.png?x=1", PNG, data, digest.upper())
    assert stored.relative == by_commit.relative and stored.sha256 == digest
    assert stored.path == tmp_path / "b" / stored.relative and not stored.skipped
    assert stored.path.read_bytes() == data
    assert stored.path.stat().st_mode & 0o777 == by_commit.path.stat().st_mode & 0o777
    again = store.store_bytes("http://example.com/img/a.png?x=1", PNG, data, digest)
    assert again.skipped and again.path == stored.path
    assert partials(store) == []


def test_store_bytes_when_close_reports_a_delayed_write_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NFS and quota-limited file systems may report a failed write only at close."""
    store = Store(tmp_path)
    real_close = os.close

    def close(fd: int) -> None:
        real_close(fd)
        raise disk_full(errno.EDQUOT)

    monkeypatch.setattr(os, "close", close)
    with pytest.raises(StorageError, match="disk full while writing"):
        store.store_bytes("http://h/a.png", PNG, b"data", hashlib.sha256(b"data").hexdigest())
    monkeypatch.undo()
    assert partials(store) == []
    assert not (tmp_path / "h").exists()


def test_store_bytes_interrupted_leaves_nothing(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)

    def interrupted(fd: int, data: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.store_bytes("http://h/a.png", PNG, b"data", hashlib.sha256(b"data").hexdigest())
    monkeypatch.undo()
    assert partials(store) == []


def test_store_bytes_says_when_its_partial_was_removed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    real_rename = store_module._rename_noreplace

    def cleaned_meanwhile(source: str, target: str) -> None:
        Path(source).unlink()  # as another program cleaning .partial would
        real_rename(source, target)

    monkeypatch.setattr(store_module, "_rename_noreplace", cleaned_meanwhile)
    with pytest.raises(PartialLost, match="is gone before it was stored"):
        store.store_bytes("http://h/a.png", PNG, b"data", hashlib.sha256(b"data").hexdigest())


def test_a_removed_shard_is_made_again(tmp_path: Path) -> None:
    store = Store(tmp_path)
    partial, file = store.open_partial()
    file.close()
    store.discard(partial)
    partial.parent.rmdir()
    again, file = store.open_partial()
    file.close()
    assert again.parent == partial.parent and again.exists()
    digest = hashlib.sha256(b"bytes").hexdigest()
    stored = store.store_bytes("http://h/b.png", PNG, b"bytes", digest)
    assert stored.path.read_bytes() == b"bytes"


def test_partial_names_are_unique(tmp_path: Path) -> None:
    store = Store(tmp_path)
    opened = [store.open_partial() for _ in range(50)]
    for _, file in opened:
        file.close()
    assert len({path for path, _ in opened}) == 50


def test_stored_files_get_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        stored = put(Store(tmp_path), "http://h/a.png", b"x")
    finally:
        os.umask(old)
    assert stored.path.stat().st_mode & 0o777 == 0o644


def test_uncommitted_download_never_appears_and_discard_removes_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    partial, file = store.open_partial()
    file.write(b"half an ima")
    file.close()
    assert not (tmp_path / "h").exists()
    store.discard(partial)
    assert not partial.exists()
    store.discard(partial)  # already gone: fine


def test_same_bytes_twice_is_skipped_and_untouched(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = put(store, "http://h/a.png", b"same bytes")
    before = first.path.stat()
    time.sleep(0.01)
    second = put(store, "http://h/a.png", b"same bytes")
    after = second.path.stat()
    assert not first.skipped and second.skipped
    assert second.path == first.path and second.sha256 == first.sha256
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert partials(store) == []


def test_different_bytes_never_replace_a_stored_file(tmp_path: Path) -> None:
    """A late download of the same URL keeps what is stored and describes it."""
    store = Store(tmp_path)
    old = png(4, 4, 1)
    first = put(store, "http://h/a.png", old)
    for later in (png(4, 4, 2), png(40, 30, 3)):
        kept = put(store, "http://h/a.png", later)
        assert kept.skipped and kept.path.read_bytes() == old
        assert (kept.size, kept.sha256) == (first.size, first.sha256)
    assert partials(store) == []


def test_the_image_stored_for_a_url_is_found_whatever_its_type(tmp_path: Path) -> None:
    """What a worker reports for a URL whose new try failed, when an earlier try of it
    stored an image and was never reported: that image, of the type it was."""
    store = Store(tmp_path)
    gif = (REPO / "tests" / "site" / "icons" / "star.gif").read_bytes()
    assert store.stored_for("http://h/a.png") is None
    stored = put(store, "http://h/a.png", gif, GIF)  # a .png URL that served a GIF
    assert store.stored_for("http://h/a.png") == stored._replace(skipped=True)
    assert store.stored_for("http://h/b.png") is None  # another URL's file is not its


def test_a_later_try_that_brings_another_type_keeps_the_file_stored_first(
        tmp_path: Path) -> None:
    """A try stored a GIF and was never reported; the next try of its URL brings a PNG,
    another name. Told the URL was tried before, the store keeps the GIF and stores no
    PNG beside it, held in memory or spilled to a partial file alike."""
    store = Store(tmp_path)
    gif = (REPO / "tests" / "site" / "icons" / "star.gif").read_bytes()
    body = png(4, 4, 1)
    sha = hashlib.sha256(body).hexdigest()
    first = put(store, "http://h/a", gif, GIF)
    kept = store.store_bytes("http://h/a", PNG, body, sha, tried_before=True)
    assert kept == first._replace(skipped=True)
    partial, file = store.open_partial()
    with file:
        file.write(body)
    assert store.commit(partial, "http://h/a", PNG, len(body), sha, tried_before=True) == kept
    assert [p for p in tmp_path.glob("images/**/*") if p.is_file()] == [first.path]
    assert partials(store) == []


# What a crash before the disk wrote an image out may leave: its first pages, zeros after.
CUT_BY_A_CRASH = png(4, 4, 1)[:40] + b"\x00" * 4096


@pytest.mark.parametrize("left", [b"", b"garbage\n", b"\x00" * 4096, CUT_BY_A_CRASH],
                         ids=["empty", "garbage", "zeros", "cut by a crash"])
def test_a_file_that_is_no_image_is_no_image_stored_for_its_url(tmp_path: Path,
                                                                 left: bytes) -> None:
    store = Store(tmp_path)
    put(store, "http://h/a.png", png(4, 4, 1)).path.write_bytes(left)
    assert store.stored_for("http://h/a.png") is None


@pytest.mark.parametrize("left", [b"garbage\n", b"\x00" * 4096, CUT_BY_A_CRASH],
                         ids=["garbage", "zeros", "cut by a crash"])
def test_a_file_that_is_no_image_in_an_images_place_is_replaced(tmp_path: Path,
                                                               left: bytes) -> None:
    """Zeros (what some file systems leave after a power cut) or garbage (a hand) were
    kept, and listed as a success of that size, with a type no file there has."""
    store = Store(tmp_path)
    image = png(4, 4, 1)
    first = put(store, "http://h/a.png", image)
    first.path.write_bytes(left)
    again = put(store, "http://h/a.png", image)
    assert not again.skipped and again.path.read_bytes() == image
    assert (again.size, again.sha256) == (first.size, first.sha256)
    assert partials(store) == []


def test_an_empty_file_in_an_images_place_is_replaced(tmp_path: Path) -> None:
    """What a power cut before the file system wrote the image out leaves: an empty file.
    It was kept, and the rerun listed the image as a success of 0 bytes."""
    store = Store(tmp_path)
    first = put(store, "http://h/a.png", b"image bytes")
    first.path.write_bytes(b"")
    again = put(store, "http://h/a.png", b"image bytes")
    assert not again.skipped and again.path.read_bytes() == b"image bytes"
    assert (again.size, again.sha256) == (first.size, first.sha256)
    assert partials(store) == []


def test_two_downloads_finding_the_same_empty_file_report_what_the_disk_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both replaced it, and each reported its own bytes where the disk held one.

    Images both (as downloads are): whichever order the two take, a loaded machine
    breaking the barrier, the second finds an image there and keeps it."""
    store = Store(tmp_path)
    first = put(store, "http://h/a.png", b"x")
    first.path.write_bytes(b"")
    looked = threading.Barrier(2, timeout=1)
    real_stat = store_module.os.stat

    def stat_together(path: object, *args: object, **kwargs: object) -> os.stat_result:
        with contextlib.suppress(threading.BrokenBarrierError):
            looked.wait()  # both have seen the empty file before either goes on
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module.os, "stat", stat_together)
    results: dict[bytes, StoredFile] = {}
    threads = [threading.Thread(target=lambda body=body: results.__setitem__(
        body, put(store, "http://h/a.png", body))) for body in (png(4, 4, 1), png(8, 8, 2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    on_disk = first.path.read_bytes()
    assert on_disk in results and len(on_disk) > 0
    for stored in results.values():  # the one kept, and the other describing it
        assert (stored.size, stored.sha256) == (len(on_disk), hashlib.sha256(on_disk).hexdigest())
    assert sorted(stored.skipped for stored in results.values()) == [False, True]


def test_commit_never_replaces_a_file_that_appears_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between any check and the rename, another worker may store: the rename itself refuses."""
    store = Store(tmp_path)
    real_rename = store_module._rename_noreplace

    theirs = png(4, 4, 9)

    def another_worker_stores_first(source: str, target: str) -> None:
        Path(target).write_bytes(theirs)
        real_rename(source, target)

    monkeypatch.setattr(store_module, "_rename_noreplace", another_worker_stores_first)
    kept = put(store, "http://h/a.png", png(4, 4, 1))
    assert kept.path.read_bytes() == theirs
    assert kept.sha256 == hashlib.sha256(theirs).hexdigest()
    assert partials(store) == []


def test_rename_without_replacing_refuses_an_existing_name(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.write_bytes(b"new")
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        store_module._rename_noreplace(str(source), str(target))
    assert (source.read_bytes(), target.read_bytes()) == (b"new", b"old")
    target.unlink()
    store_module._rename_noreplace(str(source), str(target))
    assert target.read_bytes() == b"new" and not source.exists()


@pytest.mark.parametrize(
    "group",
    [
        ("http://h/i/a", "http://h/i/a.png"),
        ("http://h/i/a_b.png", "http://h/i/a%3Fb.png", "http://h/i/a:b.png"),
        ("http://h/i/x.jpg", "http://h/i/x.jpg.png"),
        ("http://h/i//a.png", "http://h/i/a.png"),
        ("http://h/a.png", "https://h/a.png", "http://h/a.png#x", "http://h/a.png?"),
        ("http://h/%C3%A9.png", "http://h/é.png", "http://h/%c3%a9.png"),
        ("http://h/a~" + "0" * 10 + ".png", "http://h/a"),
    ],
)
def test_urls_that_looked_alike_keep_their_own_files(tmp_path: Path,
                                                     group: tuple[str, ...]) -> None:
    """Each URL gets its own file, so no download overwrites another URL's image."""
    store = Store(tmp_path)
    stored = [put(store, url, f"bytes of {url}".encode()) for url in group]
    assert len({s.relative_text for s in stored}) == len(group)
    for url, s in zip(group, stored, strict=True):
        assert not s.skipped
        assert s.path.read_bytes() == f"bytes of {url}".encode()
        assert s.relative_text == relative_path(url, PNG).as_posix()  # a rerun finds it


def test_commit_with_wrong_size_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    partial, file = store.open_partial()
    file.write(b"abc")
    file.close()
    with pytest.raises(ValueError, match="3 bytes"):
        store.commit(partial, "http://h/a.png", PNG, 4, hashlib.sha256(b"abc").hexdigest())
    assert not partial.exists() and not (tmp_path / "h" / "a.png").exists()


def test_commit_of_a_vanished_partial_loses_that_download_only(tmp_path: Path) -> None:
    """The partials folder removed under a download: that one is lost (PartialLost, not
    a StorageError, which stops the worker), and the next is stored in a folder made
    again."""
    store = Store(tmp_path)
    partial, file = store.open_partial()
    file.close()
    shutil.rmtree(store.partial_dir)
    with pytest.raises(PartialLost, match="gone"):
        store.commit(partial, "http://h/a.png", PNG, 0, hashlib.sha256(b"").hexdigest())
    assert put(store, "http://h/b.png", b"bytes").path.read_bytes() == b"bytes"


@pytest.mark.parametrize(
    "urls",
    [
        ("http://h/a", "http://h/a/b.jpg"),
        ("http://h/a/b.jpg", "http://h/a"),
        ("http://h/a.jpg", "http://h/a.jpg/b.png"),
        ("http://h/a.jpg/b.png", "http://h/a.jpg"),
        ("http://h/A.JPG/b.png", "http://h/A.JPG"),
        ("http://h/x/", "http://h/x"),
        ("http://h/x", "http://h/x/"),
    ],
)
def test_file_and_folder_of_the_same_name_both_store(tmp_path: Path, urls: tuple[str, str]) -> None:
    store = Store(tmp_path)
    kinds = {url: JPEG if url.lower().endswith(".jpg") else PNG for url in urls}
    stored = [put(store, url, url.encode(), kinds[url]) for url in urls]
    for url, result in zip(urls, stored, strict=True):
        assert result.path.is_file()
        assert result.path.read_bytes() == url.encode()


def test_same_path_different_queries_store_separately(tmp_path: Path) -> None:
    store = Store(tmp_path)
    one = put(store, "http://h/img.php?id=1", b"one")
    two = put(store, "http://h/img.php?id=2", b"two")
    bare = put(store, "http://h/img.php", b"bare")
    assert len({one.path, two.path, bare.path}) == 3
    assert [p.read_bytes() for p in (one.path, two.path, bare.path)] == [b"one", b"two", b"bare"]


def test_evil_urls_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "out"
    store = Store(root)
    for url in (
        "http://h/../../escape.png",
        "http://h/%2e%2e/%2e%2e/escape.png",
        "http://h/..%2F..%2Fescape.png",
        "http://h/..\\..\\escape.png",
        "http://../escape.png",
        "http://h/%00/escape.png",
    ):
        result = put(store, url, b"x")
        assert result.path.resolve().is_relative_to(root.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_closing_removes_the_empty_partial_folders_and_never_a_file(tmp_path: Path) -> None:
    """A store that wrote from several threads leaves .partial/tNN folders: closing
    removes those left empty, and .partial once empty, but not another worker's partial
    file or its folder; a store opened next makes them again."""
    store = Store(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: put(store, f"http://h/{n}.png", b"data %d" % n), range(8)))
    assert [p for p in store.partial_dir.iterdir() if p.is_dir()], "shards were made"
    other = Store(tmp_path)
    partial, file = other.open_partial()  # another worker's download, still being written
    store.close()
    assert [p.relative_to(tmp_path) for p in tmp_path.joinpath(".partial").rglob("*")] == [
        partial.parent.relative_to(tmp_path), partial.relative_to(tmp_path)]
    with file:
        file.write(b"data")
    other.commit(partial, "http://h/other.png", PNG, 4, hashlib.sha256(b"data").hexdigest())
    other.close()
    assert not (tmp_path / ".partial").exists()
    assert (tmp_path / "images" / "http" / "h" / "other.png").read_bytes() == b"data"
    again = Store(tmp_path)
    assert put(again, "http://h/again.png", b"more").path.read_bytes() == b"more"
    again.close()
    assert not (tmp_path / ".partial").exists()


def test_foreign_file_in_place_of_a_folder_is_a_conflict_not_a_broken_disk(
        tmp_path: Path) -> None:
    store = Store(tmp_path)
    (tmp_path / "images" / "http" / "h").mkdir(parents=True)
    foreign = tmp_path / "images" / "http" / "h" / "a"
    foreign.write_text("someone else's file")
    partial, file = store.open_partial()
    file.write(b"data")
    file.close()
    with pytest.raises(PathConflict) as caught:
        store.commit(partial, "http://h/a/b/c.png", PNG, 4, hashlib.sha256(b"data").hexdigest())
    assert str(foreign) in str(caught.value)
    assert "file" in str(caught.value)
    assert not partial.exists()
    assert foreign.read_text() == "someone else's file"


def test_a_file_in_place_of_the_image_folder_itself_is_a_folder_that_cannot_be_written(
        tmp_path: Path) -> None:
    """It was a PathConflict, one image's name taken: every image failed for good, one
    by one, and the crawl ended with status 0; moved away, a rerun tried none again."""
    store = Store(tmp_path)
    (tmp_path / "images").write_text("someone else's file")
    with pytest.raises(StorageError, match=r"images is a file where a folder is needed; "
                                           r"move it away or choose another output folder"):
        put(store, "http://h/a.png", b"data")
    assert partials(store) == []


def test_foreign_folder_at_the_final_name_is_a_conflict(tmp_path: Path) -> None:
    store = Store(tmp_path)
    (tmp_path / "images" / "http" / "h" / "a.png").mkdir(parents=True)
    with pytest.raises(PathConflict, match=r"a\.png"):
        put(store, "http://h/a.png", b"data")
    assert partials(store) == []


def test_symbolic_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    store = Store(root)
    (root / "images" / "http").mkdir(parents=True)
    (root / "images" / "http" / "h").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="outside the output folder"):
        put(store, "http://h/a.png", b"data")
    assert list(outside.iterdir()) == []
    assert partials(store) == []


def test_concurrent_commits_of_the_same_image(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def worker() -> list[StoredFile]:
        return [put(store, "http://h/a/b/c.png", b"identical") for _ in range(20)]

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(worker) for _ in range(8)]
    results = [stored for future in futures for stored in future.result()]  # re-raises
    assert sum(not stored.skipped for stored in results) >= 1
    assert (tmp_path / "images/http/h/a/b/c.png").read_bytes() == b"identical"
    assert partials(store) == []


# --------------------------------------------------------------------------- Store: full disk


def disk_full(code: int = errno.ENOSPC) -> OSError:
    return OSError(code, os.strerror(code))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_while_writing_removes_the_partial(tmp_path: Path, code: int) -> None:
    store = Store(tmp_path)
    partial, file = store.open_partial()

    def full(data: object) -> int:
        raise disk_full(code)

    file.raw.write = full  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="disk full while writing") as caught:
        file.write(b"x" * 100_000)  # larger than the buffer: goes straight to the disk
    assert str(partial) in str(caught.value)
    assert not partial.exists()
    file.close()  # closing after the failure is harmless


def test_disk_full_on_close_removes_the_partial(tmp_path: Path) -> None:
    store = Store(tmp_path)
    partial, file = store.open_partial()
    file.write(b"small")  # still in the buffer

    def full(data: object) -> int:
        raise disk_full()

    file.raw.write = full  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="disk full"), file:
        pass
    assert not partial.exists()


def test_disk_full_while_renaming_removes_the_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    partial, file = store.open_partial()
    file.write(b"data")
    file.close()

    def full(*args: object) -> None:
        raise disk_full()

    monkeypatch.setattr(store_module, "_rename_noreplace", full)
    with pytest.raises(StorageError, match="disk full while writing") as caught:
        store.commit(partial, "http://h/a.png", PNG, 4, hashlib.sha256(b"data").hexdigest())
    assert str(tmp_path / "images" / "http" / "h" / "a.png") in str(caught.value)
    assert not partial.exists()


def test_other_write_errors_are_not_disguised(tmp_path: Path) -> None:
    store = Store(tmp_path)
    partial, file = store.open_partial()

    def broken(data: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    file.raw.write = broken  # type: ignore[attr-defined]
    with pytest.raises(OSError, match="Input/output") as caught:
        file.write(b"x" * 100_000)
    assert not isinstance(caught.value, StorageError)
    file.raw.write = lambda data: len(data)  # type: ignore[attr-defined]
    file.close()
    store.discard(partial)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs is Linux")
def test_real_full_disk(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "small") as small:
        store = Store(small)
        partial, file = store.open_partial()
        with pytest.raises(StorageError, match="disk full"), file:
            for _ in range(64):
                file.write(b"\x00" * 65536)
        assert not partial.exists()
        assert partials(store) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs is Linux")
def test_real_full_disk_when_storing_bytes(tmp_path: Path) -> None:
    data = b"\x00" * 200_000
    with tiny_tmpfs(tmp_path / "small") as small:
        store = Store(small)
        with pytest.raises(StorageError, match="disk full while writing"):
            store.store_bytes("http://h/big.png", PNG, data, hashlib.sha256(data).hexdigest())
        assert partials(store) == []
        assert not (small / "h").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs is Linux")
def test_images_on_a_disk_mounted_at_the_images_folder(tmp_path: Path) -> None:
    """A partial file is renamed onto its image: it is written on the images' disk."""
    data = b"\x89PNG\r\n\x1a\n" + bytes(5000)
    (tmp_path / "out").mkdir()
    with tiny_tmpfs(tmp_path / "out" / "images", "1m") as images:
        store = Store(tmp_path / "out")
        stored = store.store_bytes("http://h/a.png", PNG, data, hashlib.sha256(data).hexdigest())
        partial, file = store.open_partial()
        with file:
            file.write(data)
        streamed = store.commit(partial, "http://h/b.png", PNG, len(data),
                                hashlib.sha256(data).hexdigest())
        store.flush_to_disk()
        assert Path(stored.path).read_bytes() == data == Path(streamed.path).read_bytes()
        assert Path(stored.path).is_relative_to(images)
        assert partials(store) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs is Linux")
def test_a_full_disk_mounted_at_the_images_folder_is_named_as_that_disk(
        tmp_path: Path) -> None:
    """The disk to free is the images' own, not the one that holds the output folder."""
    data = b"\x89PNG\r\n\x1a\n" + bytes(200_000)
    out = tmp_path / "out"
    out.mkdir()
    with tiny_tmpfs(out / "images") as images:
        store = Store(out)
        for write in (lambda: store.store_bytes("http://h/a.png", PNG, data,
                                                hashlib.sha256(data).hexdigest()),
                      lambda: store.open_partial()[1].write(data)):
            with pytest.raises(StorageError) as raised:
                write()
            assert f"free some space on the disk that holds {images}, or choose" in str(
                raised.value), raised.value
    with tiny_tmpfs(tmp_path / "small") as small:  # the whole folder on one disk: that one
        with pytest.raises(StorageError) as raised:
            Store(small).store_bytes("http://h/a.png", PNG, data,
                                     hashlib.sha256(data).hexdigest())
        assert f"free some space on the disk that holds {small}, or choose" in str(
            raised.value), raised.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs is Linux")
def test_a_read_only_disk_mounted_at_the_images_folder_is_named_as_that_disk(
        tmp_path: Path) -> None:
    """It said "check that OUT is a writable folder", and OUT was writable."""
    out = tmp_path / "out"
    out.mkdir()
    with tiny_tmpfs(out / "images", options="ro") as images, pytest.raises(
            StorageError) as raised:
        Store(out)
    assert f"the disk that holds {images} is mounted read-only: remount it read-write, or " \
        "choose another output folder" in str(raised.value), raised.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs is Linux")
def test_a_disk_mounted_below_the_images_folder_is_said_with_where_to_mount_it(
        tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(5000)
    host = tmp_path / "out" / "images" / "http"
    host.mkdir(parents=True)
    with tiny_tmpfs(host / "h", "1m"):
        store = Store(tmp_path / "out")
        with pytest.raises(StorageError) as raised:
            store.store_bytes("http://h/a.png", PNG, data, hashlib.sha256(data).hexdigest())
        assert partials(store) == []
    assert str(raised.value) == (
        f"cannot store {host / 'h' / 'a.png'}: its folder is on another disk than "
        f"{store.partial_dir}, where downloads are written first; mount that disk at "
        f"{tmp_path / 'out' / 'images'} or at {tmp_path / 'out'}, not below them")


STORE_INTO_A_DENIED_FOLDER = """\
import hashlib, sys
from pathlib import Path
from crawler.errors import StorageError
from crawler.model.imagetype import PNG
from crawler.worker import store
if sys.argv[2] == "link":  # what a system without renameat2 has (macOS; no Linux 3.15)
    store._RENAMEAT2 = None
body = Path(sys.argv[3]).read_bytes()
try:
    store.Store(Path(sys.argv[1])).store_bytes(
        "http://h/b.png", PNG, body, hashlib.sha256(body).hexdigest(), tried_before=False)
except StorageError as exc:
    print(exc)
"""


@pytest.mark.parametrize("into_place", ["renameat2", "link"])
def test_an_image_folder_denied_is_the_folder_named(tmp_path: Path, into_place: str) -> None:
    """Where an image is linked into place (no renameat2), the error names the partial
    file: the partials folder, which the worker could write, was said to be denied."""
    out = tmp_path / "out"
    images = out / "images" / "http" / "h"
    images.mkdir(parents=True)
    body = tmp_path / "b.png"
    body.write_bytes(png(4, 4, 1))
    images.chmod(0o555)
    try:
        done = subprocess.run(
            [*without_permission_override(), sys.executable, "-c",
             STORE_INTO_A_DENIED_FOLDER, str(out), into_place, str(body)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60, check=False)
    finally:
        images.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"cannot write {images / 'b.png'}: permission denied on {images} (Permission "
        "denied); fix its permissions, or choose another output folder")


def test_a_symbolic_link_at_the_partials_folder_is_refused_and_its_files_kept(
        tmp_path: Path) -> None:
    """Followed, the link's target had each of its files removed as an abandoned download,
    and a target on another disk stopped the crawl with advice to mount a disk at images/."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("kept")
    out = tmp_path / "out"
    out.mkdir()
    (out / PARTIAL_DIR).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StorageError) as raised:
        Store(out).clean_partials()
    assert str(raised.value) == (
        f"cannot use {out / PARTIAL_DIR}: it is a symbolic link, where the crawler keeps its "
        "downloads in progress; remove the link (the crawler makes the folder itself; to "
        f"store images on another disk, mount it at {out / 'images'})")
    assert (elsewhere / "notes.txt").read_text() == "kept"
    assert [path.name for path in elsewhere.iterdir()] == ["notes.txt"]
    # A worker says it in one line, before it looks for its master, and ends with status 3.
    done = run_crawler("worker", "127.0.0.1:1", "--out", str(out),
                       cwd=tmp_path, timeout=30, env={**os.environ, "CRAWLER_AUTHKEY": "k"})
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [f"crawler: error: {raised.value}"]
    assert [path.name for path in elsewhere.iterdir()] == ["notes.txt"]


# --------------------------------------------------------------------------- Store: cleaning


def crash_while_downloading(root: Path) -> Path:
    """Run a process that opens a partial, writes to it and dies before committing."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from crawler.worker.store import Store\n"
        "path, file = Store(Path(sys.argv[1])).open_partial()\n"
        "file.write(b'half'); file.flush()\n"
        "print(path, flush=True)\n"
        "os._exit(9)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 9, done.stderr
    return Path(done.stdout.strip())


def test_clean_partials_removes_what_a_crash_left(tmp_path: Path) -> None:
    store = Store(tmp_path)
    left = crash_while_downloading(tmp_path)
    assert left.exists() and left.parent.parent == store.partial_dir
    assert store.clean_partials() == 1
    assert not left.exists()
    assert store.clean_partials() == 0


def test_clean_partials_keeps_live_downloads(tmp_path: Path) -> None:
    store = Store(tmp_path)
    mine, file = store.open_partial()
    file.write(b"in progress")
    other_host = store.partial_dir / "elsewhere~4242~0123456789abcdef.part"
    other_host.write_bytes(b"in progress on another machine")
    (store.partial_dir / "some-folder").mkdir()
    assert Store(tmp_path).clean_partials() == 0  # a second worker starting up
    assert mine.exists() and other_host.exists()
    file.close()
    assert put(store, "http://h/x.png", b"later").path.exists()


def test_clean_partials_removes_stale_and_foreign_files(tmp_path: Path) -> None:
    store = Store(tmp_path)
    stale = store.partial_dir / "elsewhere~4242~0123456789abcdef.part"
    stale.write_bytes(b"abandoned long ago")
    old = time.time() - STALE_AFTER - 60
    os.utime(stale, (old, old))
    junk = store.partial_dir / "tmpXYZ"
    junk.write_bytes(b"?")
    assert store.clean_partials() == 2
    assert not stale.exists() and not junk.exists()


def test_clean_partials_without_partial_folder(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.partial_dir.rmdir()
    assert store.clean_partials() == 0
    assert put(store, "http://h/a.png", b"x").path.exists()  # open_partial recreates it


def test_a_forked_child_names_its_partial_files_as_its_own(tmp_path: Path) -> None:
    """Local workers are forked from the master: a child must not reuse the names the
    parent's process would give (its pid, its random part), or clean_partials would
    take a live child's file for a dead parent's."""
    store = Store(tmp_path)
    mine, file = store.open_partial()
    file.close()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one partial file, its name to the parent, and out
        try:
            theirs, child_file = Store(tmp_path).open_partial()
            child_file.close()
            os.write(write_end, str(theirs).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        theirs = Path(pipe.read().decode())
    os.waitpid(pid, 0)
    host, mine_pid, mine_rest = mine.name.split("~")
    their_host, their_pid, their_rest = theirs.name.split("~")
    assert (host, int(mine_pid), int(their_pid)) == (their_host, os.getpid(), pid)
    assert mine_rest.split("-")[0] != their_rest.split("-")[0]  # a random part of its own
    assert store.clean_partials() == 1  # the child is gone: its file is abandoned
    assert mine.exists() and not theirs.exists()
