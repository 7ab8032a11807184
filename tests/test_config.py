"""Settings: the file, the flags, and one clear line for every mistake."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from crawler.config import Limits, Settings, load_settings, parse_address
from crawler.errors import ConfigError

ROOT = Path(__file__).parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_settings_toml_lists_every_default() -> None:
    """The documented file and the built-in catalogue say the same thing."""
    with (ROOT / "settings.toml").open("rb") as fh:
        documented = tomllib.load(fh)
    assert documented == Settings().to_dict()


def test_file_values_override_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[crawl]\ndepth = 7\n[download]\ndeadline = 5\n"))
    assert settings.crawl.depth == 7
    assert settings.download.deadline == 5.0
    assert settings.crawl.max_pages == Settings().crawl.max_pages


def test_flags_override_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[crawl]\ndepth = 7\n"))
    assert settings.with_values({"crawl.depth": 1}).crawl.depth == 1


@pytest.mark.parametrize(("text", "message"), [
    ("[crawl]\ndeph = 3\n", "crawl.deph: unknown key"),
    ("[crawling]\ndepth = 3\n", "unknown section [crawling]"),
    ("[crawl]\ndepth = \"3\"\n", "crawl.depth: expected a whole number"),
    ("[crawl]\ndepth = -1\n", "crawl.depth: expected a number >= 0"),
    ("[crawl]\nscope = \"planet\"\n", "crawl.scope: expected one of host, domain, any"),
    ("[crawl]\nsources = [\"img\", \"smoke\"]\n", "crawl.sources: expected a list drawn from"),
    ("[crawl]\nrespect_robots = 1\n", "crawl.respect_robots: expected true or false"),
    ("[queue]\nbind = \"localhost\"\n", "queue.bind: expected HOST:PORT"),
    ("[security]\nallow_networks = [\"10.0.0.0/33\"]\n", "security.allow_networks"),
    ("[crawl\ndepth = 3\n", "not valid TOML"),
    ("crawl = 3\n", "[crawl] must be a table"),
    ("depth = 3\n", "depth must be under [crawl], not at the top"),
    ("[crawl]\nallow = [\"ok\", \"(\"]\n",
     "crawl.allow: expected a list of Python regular expressions"),
    ("[crawl]\nimage_deny = [\"[a-\"]\n", "crawl.image_deny: expected a list of Python regular"),
])
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_missing_settings_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_flag_values_are_validated_like_the_file() -> None:
    with pytest.raises(ConfigError, match=r"command line: crawl\.depth"):
        Settings().with_values({"crawl.depth": -3})


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:24601", ("127.0.0.1", 24601)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("master.example:1", ("master.example", 1)),
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["nohost", "host:99999", "host:", ":x", "a:b:c",
                                  "[::1]:9000"])
def test_parse_address_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_limits_are_the_download_settings_a_worker_applies(tmp_path: Path) -> None:
    assert Limits() == Limits.from_settings(Settings().download)
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("[download]\nmax_bytes = 1000\nmin_width = 8\nmax_attempts = 5\n")
    limits = Limits.from_settings(load_settings(settings_file).download)
    assert (limits.max_bytes, limits.min_width, limits.deadline) == (1000, 8, 120.0)


@pytest.mark.parametrize(("text", "message"), [
    ("[download]\nmin_width = 500\nmax_width = 100\n",
     "download.min_width (500) is above download.max_width (100)"),
    ("[download]\nmin_height = 9\nmax_height = 8\n",
     "download.min_height (9) is above download.max_height (8)"),
    ("[politeness]\nhost_delay = 1e9\n",
     "politeness.host_delay: expected seconds from 0 to 3600"),
])
def test_settings_that_contradict_or_are_absurd_are_refused(tmp_path: Path, text: str,
                                                            message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path)
