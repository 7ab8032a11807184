"""Settings: the file, the flags, and one clear line for every mistake."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from crawler.config import (
    Limits,
    Settings,
    find_settings,
    load_settings,
    parse_address,
    parse_size,
    section_checks,
    section_types,
    user_settings_path,
)
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


def test_a_settings_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Windows editors write one; TOML has none, and it was 'Invalid statement' at 1:1."""
    path = tmp_path / "settings.toml"
    path.write_bytes(b"\xef\xbb\xbf[crawl]\r\ndepth = 7\r\n")
    assert load_settings(path).crawl.depth == 7


def test_an_empty_proxy_written_is_no_proxy_unless_env_proxies_is_written_beside_it(
        tmp_path: Path) -> None:
    """proxy = "" (or --proxy '') means no proxy, as curl's; the documented file, which
    writes it with env_proxies = true, goes on using the environment's."""
    assert load_settings(write(tmp_path, '[http]\nproxy = ""\n')).http.env_proxies is False
    assert Settings().with_values({"http.proxy": ""}).http.env_proxies is False
    both = '[http]\nproxy = ""\nenv_proxies = true\n'
    assert load_settings(write(tmp_path, both)).http.env_proxies is True
    assert load_settings(ROOT / "settings.toml").http.env_proxies is True
    assert load_settings(write(tmp_path, "[http]\ninsecure = false\n")).http.env_proxies is True


def test_flags_override_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[crawl]\ndepth = 7\n"))
    assert settings.with_values({"crawl.depth": 1}).crawl.depth == 1


@pytest.mark.parametrize(("text", "message"), [
    ("[crawl]\ndeph = 3\n", "crawl.deph: unknown key (did you mean depth?)"),
    ("[crawl]\nwhatever = 3\n", "crawl.whatever: unknown key; known keys in [crawl]: depth,"),
    ("[crawl]\nproxy = \"http://p:8080\"\n", "crawl.proxy: unknown key (it is a key of [http])"),
    ("[crawling]\ndepth = 3\n", "unknown section [crawling] (did you mean [crawl]?)"),
    ("[mystery]\ndepth = 3\n", "unknown section [mystery]; known sections: crawl,"),
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
    # Which item of a list is wrong, and why: the list may be long
    ('[crawl]\ndeny = ["ok", "*.jpg", "("]\n',
     '("*.jpg" is not one: nothing to repeat at position 0; a regular expression, not a '
     "shell pattern: for names ending in .jpg, write '\\.jpg$')"),
    # wget's list of suffixes compiles, and matched no image's URL: every one left out
    ('[crawl]\nimage_allow = ["png, jpg"]\n',
     "crawl.image_allow: 'png, jpg' is a list of file suffixes, as wget takes them; this "
     "takes a regular expression: for those, write '\\.(png|jpg)$'"),
    ('[crawl]\nsources = ["img", "imgs", "video"]\n', '("imgs", "video": no such source)'),
    # Values as the file wrote them, not as Python would
    ("[crawl]\ndepth = true\n", "crawl.depth: expected a whole number, got true"),
    ("[crawl]\ndepth.x = 1\n", "crawl.depth: expected a whole number, got { x = 1 }"),
    ('[crawl]\ndepth."a.b" = 1\n', 'crawl.depth: expected a whole number, got { "a.b" = 1 }'),
    ("[crawl]\ndepth = 2026-01-01\n", "crawl.depth: expected a whole number, got 2026-01-01"),
    # A list that looks nowhere would crawl with no image found, and say nothing.
    ("[crawl]\nsources = []\n", "crawl.sources: an empty list finds no image: leave the "
     "key out to look everywhere, or name the sources to read"),
    ("[crawl]\nallow = [\"ok\", 3]\n", 'crawl.allow: expected a list of strings, got ["ok", 3]'),
    # A value quoted that, unquoted, is right says so: "got \"false\"" alone reads as a riddle
    ('[crawl]\nrespect_robots = "false"\n', 'expected true or false, got "false" '
     "(quoted, it is text: write respect_robots = false)"),
    ('[crawl]\ndepth = "2"\n', "(quoted, it is text: write depth = 2)"),
    # ... and one that, unquoted, is out of range says the range (the advice to write
    # max_bytes = 0 led to the next refusal)
    ('[download]\nmax_bytes = "0"\n', 'download.max_bytes: expected a number > 0, got "0"\n'),
    ('[crawl]\ndepth = "-1"\n', 'crawl.depth: expected a number >= 0, got "-1"\n'),
    ('[crawl]\ndepth = "01"\n', 'crawl.depth: expected a whole number, got "01"\n'),
    ('title = "x"\n[crawl]\ndepth = 2\n', "unknown key title at the top; only sections go "
     "there: [crawl], "),
    ('[politeness]\nhost_delay = "0.5"\n', "(quoted, it is text: write host_delay = 0.5)"),
    ('[crawl]\nimage_deny = "thumb"\n', '(one item is a list too: image_deny = ["thumb"])'),
    ('[crawl]\nuser_agent = "a\\nb"\n', 'crawl.user_agent: expected a non-empty string without '
     'line breaks or other control characters, got "a\\nb"'),
])
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value) + "\n"  # ("...\n": the message ends there)
    assert caught.value.exit_code == 2


def test_missing_settings_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_flag_values_are_validated_like_the_file() -> None:
    with pytest.raises(ConfigError, match=r"with_values\(\): crawl\.depth"):
        Settings().with_values({"crawl.depth": -3})


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:24601", ("127.0.0.1", 24601)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("master.example:1", ("master.example", 1)),
    ("127.0.0.1:019322", ("127.0.0.1", 19322)),  # a leading zero, as ss and curl take it
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["nohost", "host:99999", "host:0123456", "host:", ":x",
                                  "a:b:c", "[::1]:9000", "[]:9000", "[:9000"])
def test_parse_address_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_parse_address_says_an_ipv4_address_goes_without_brackets() -> None:
    with pytest.raises(ValueError, match=r"^'\[127\.0\.0\.1\]:9000': an IPv4 address goes "
                                         r"without brackets: 127\.0\.0\.1:9000$"):
        parse_address("[127.0.0.1]:9000")


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
    ("[download]\nbackoff_base = 100\nbackoff_max = 1\n",
     "download.backoff_base (100) is above download.backoff_max (1): every wait would be "
     "backoff_max"),
    ("[politeness]\nhost_delay = 1e9\n",
     "politeness.host_delay: expected seconds from 0 to 3600"),
    # Beyond what libcurl takes (milliseconds in a C long), or no number at all: refused
    # here, not by a traceback at the first request (inf marked every image failed).
    ("[crawl]\npage_timeout = inf\n", "crawl.page_timeout: inf is too large (at most 1,000,"),
    ("[crawl]\nrobots_max_age = 0\n", "crawl.robots_max_age: expected a number > 0"),
    ("[download]\ndeadline = 1e300\n", "download.deadline: 1e+300 is too large (at most"),
    # A size is said as it was likely written, not as the bytes it was read as.
    ("[download]\nmax_bytes = \"2000G\"\n",
     "download.max_bytes: 2000G is too large (at most 1,000,000,000,000 bytes)"),
    ("[crawl]\nmax_page_bytes = 1000000000001\n",
     "crawl.max_page_bytes: 1000000000001 bytes is too large (at most 1,000,000,000,000 "
     "bytes)"),
    ("[download]\nconnect_timeout = nan\n", "download.connect_timeout: expected a number > 0"),
    ("[crawl]\nuser_agent = \"a\\r\\nX-Evil: 1\"\n",
     "crawl.user_agent: expected a non-empty string without line breaks"),
])
def test_settings_that_contradict_or_are_absurd_are_refused(tmp_path: Path, text: str,
                                                            message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path)


def test_contradicting_settings_are_refused_however_they_are_given(tmp_path: Path) -> None:
    """Not only a file: values given in Python (crawl()'s overrides) or by flags are
    checked with the settings they join."""
    path = tmp_path / "s.toml"
    path.write_text("[download]\nbackoff_max = 1\n")
    with pytest.raises(ConfigError, match=r"^command line: download.backoff_base \(100\) is "
                                          r"above download.backoff_max \(1\)"):
        load_settings(path).with_values({"download.backoff_base": 100}, "command line")


# Where settings come from: the flag, $CRAWLER_SETTINGS, ./settings.toml when it is
# ours, the user's file under $XDG_CONFIG_HOME (or ~/.config).


def lookup_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), **extra}


def test_the_first_settings_file_found_wins(tmp_path: Path) -> None:
    cwd = tmp_path / "project"
    cwd.mkdir()
    user = tmp_path / "home" / ".config" / "crawler" / "settings.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[crawl]\ndepth = 1\n")
    env = lookup_env(tmp_path)
    assert find_settings(None, environ=env, cwd=cwd).path == user
    (cwd / "settings.toml").write_text("[crawl]\ndepth = 2\n")
    assert find_settings(None, environ=env, cwd=cwd).path == cwd / "settings.toml"
    named = tmp_path / "named.toml"
    env["CRAWLER_SETTINGS"] = str(named)
    with pytest.raises(ConfigError, match=r"named\.toml: settings file not found \(named by "
                                          r"\$CRAWLER_SETTINGS; unset it"):
        find_settings(None, environ=env, cwd=cwd)  # where the name came from is said
    named.write_text("[crawl]\ndepth = 3\n")
    assert find_settings(None, environ=env, cwd=cwd).path == named
    flag = tmp_path / "flag.toml"
    assert find_settings(flag, environ=env, cwd=cwd).path == flag


@pytest.mark.parametrize(("value", "said"), [
    (" ", r"\$CRAWLER_SETTINGS is ' ', blank: name a settings file there, or unset it"),
    ("FOLDER", r"FOLDER: is a folder, not a settings file \(named by \$CRAWLER_SETTINGS; "
               r"unset it to use the default settings\)"),
])
def test_a_settings_variable_that_names_no_file_says_where_the_name_came_from(
        tmp_path: Path, value: str, said: str) -> None:
    """A blank one said " : settings file not found"; a folder, "x: is a folder", with no
    word of the variable that named it (set long ago, forgotten)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    env = lookup_env(tmp_path, CRAWLER_SETTINGS=value.replace("FOLDER", str(folder)))
    with pytest.raises(ConfigError, match=said.replace("FOLDER", re.escape(str(folder)))):
        find_settings(None, environ=env, cwd=tmp_path)


def test_xdg_config_home_is_honoured(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "crawler").mkdir(parents=True)
    (xdg / "crawler" / "settings.toml").write_text("[crawl]\ndepth = 5\n")
    env = lookup_env(tmp_path, XDG_CONFIG_HOME=str(xdg))
    assert find_settings(None, environ=env, cwd=tmp_path).path == xdg / "crawler/settings.toml"
    # A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
    assert user_settings_path({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}) == Path(
        "/h/.config/crawler/settings.toml")


@pytest.mark.parametrize("text", ['[database]\nurl = "postgres://x"\n',
                                  # a name near one of ours, but none of that section's keys
                                  '[work]\nurl = "postgres://x"\n'])
def test_another_programs_settings_toml_is_skipped_with_a_note(tmp_path: Path,
                                                               text: str) -> None:
    (tmp_path / "settings.toml").write_text(text)
    source = find_settings(None, environ=lookup_env(tmp_path), cwd=tmp_path)
    assert source.path is None
    name = text.split("]")[0] + "]"
    assert source.notes == ("ignoring ./settings.toml: another program's settings (its "
                            f"{name} are not the crawler's)",)


@pytest.mark.parametrize("text", ["[crawl]\ndepth = 2\n[database]\nurl = 1\n",
                                  "[crawl\n", "depth = 3\n", "",
                                  "[crawll]\ndepth = 2\n", "[htpp]\nproxy = \"http://p:1\"\n"])
def test_a_settings_toml_that_may_be_ours_is_read_so_mistakes_are_reported(
        tmp_path: Path, text: str) -> None:
    """A misspelt section beside right ones or alone (with a key of the section it
    misspells), broken TOML, a key out of its section: all ours, so the file is read
    and its mistake named, not passed over in silence."""
    (tmp_path / "settings.toml").write_text(text)
    assert find_settings(None, environ=lookup_env(tmp_path),
                         cwd=tmp_path).path == tmp_path / "settings.toml"


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("500", 500), ("64k", 65536), ("64K", 65536), ("10M", 10 * 1024 ** 2),
    ("10MiB", 10 * 1024 ** 2), ("1.5G", 3 * 1024 ** 3 // 2), ("2kb", 2048),
])
def test_sizes_take_binary_suffixes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "10X", "-5", "1.5", "10 MB extra"])
def test_a_bad_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_a_size_or_rate_of_hundreds_of_digits_is_refused_not_a_crash(tmp_path: Path) -> None:
    """float() makes such a number inf, and int(inf) raised OverflowError: a traceback."""
    from crawler.config import parse_rate

    huge = "9" * 400
    with pytest.raises(ValueError, match="too large a size"):
        parse_size(huge)
    with pytest.raises(ValueError, match="too large a rate"):
        parse_rate(huge)
    settings_file = write(tmp_path, f'[download]\nmax_bytes = "{huge}"\n')
    with pytest.raises(ConfigError, match=r"download\.max_bytes: expected a size"):
        load_settings(settings_file)
    settings_file = write(tmp_path, f'[http]\nlimit_rate = "{huge}"\n')
    with pytest.raises(ConfigError, match=r"http\.limit_rate: '9+' is too large a rate"):
        load_settings(settings_file)


def test_a_settings_file_writes_sizes_as_their_flags_take_them(tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text('[download]\nmax_bytes = "10M"\n[crawl]\nmax_page_bytes = "512k"\n')
    settings = load_settings(settings_file)
    assert settings.download.max_bytes == 10 * 1024 ** 2
    assert settings.crawl.max_page_bytes == 512 * 1024
    settings_file.write_text('[download]\nmax_bytes = "10X"\n')
    with pytest.raises(ConfigError, match=r'download\.max_bytes: expected a size such as "10M" '
                                          r'.*, got "10X"$'):
        load_settings(settings_file)
    settings_file.write_text('[download]\nmax_bytes = "0k"\n')  # a size, but not a limit
    with pytest.raises(ConfigError, match=r'download\.max_bytes: expected a number > 0, '
                                          r'got "0k"$'):
        load_settings(settings_file)


def test_a_size_or_rate_written_as_a_whole_float_is_taken(tmp_path: Path) -> None:
    """TOML reads 2e6 as a float: a whole number of bytes all the same."""
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("[download]\nmax_bytes = 1e7\n[http]\nlimit_rate = 2e6\n")
    settings = load_settings(settings_file)
    assert settings.download.max_bytes == 10_000_000
    assert settings.http.limit_rate == "2000000"
    settings_file.write_text("[download]\nmax_bytes = 1.5\n")
    with pytest.raises(ConfigError, match=r"download\.max_bytes: expected .*, got 1\.5$"):
        load_settings(settings_file)
    # A rate in bytes is a number too (not "expected a string", which the file need not be).
    for number, shown in (("2.5", "2.5"), ("inf", "inf"), ("nan", "nan")):
        settings_file.write_text(f"[http]\nlimit_rate = {number}\n")
        with pytest.raises(ConfigError, match=r"http\.limit_rate: expected a rate in bytes per "
                                              rf"second such as .*, got {shown}$"):
            load_settings(settings_file)


def test_the_default_user_agent_names_the_project_and_is_matched_by_its_product_token(
        ) -> None:
    from protego import Protego

    import crawler

    agent = Settings().crawl.user_agent
    assert agent == f"crawler/{crawler.__version__} (+{crawler.PROJECT_URL})"
    assert crawler.PROJECT_URL.startswith("https://")
    rules = Protego.parse("User-agent: crawler\nDisallow: /private/\n\n"
                          "User-agent: *\nDisallow:\n")
    assert not rules.can_fetch("https://site.example/private/a.png", agent)
    assert rules.can_fetch("https://site.example/public/a.png", agent)


def test_a_home_folder_in_a_settings_file_is_expanded(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """'~/images' means the home folder, as on a command line, not a folder named '~'."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings(write(tmp_path, '[output]\ndir = "~/images"\n'))
    assert settings.output.dir == str(tmp_path / "home" / "images")
    assert Settings().output.dir == "downloads"  # what is not under ~ stays as written
    # --out and crawl(out=...) pass the same way: as a value over the settings.
    given = Settings().with_values({"output.dir": "~/elsewhere"})
    assert given.output.dir == str(tmp_path / "home" / "elsewhere")


def test_every_number_and_pattern_setting_has_its_check() -> None:
    """A check lives in its key's annotation: one written in a form section_checks does
    not read would leave the key unchecked, with no error anywhere."""
    for name, section in Settings()._asdict().items():
        checks = section_checks(type(section))
        for key, hint in section_types(type(section)).items():
            if hint in (int, float) or key in ("allow", "deny", "image_allow", "image_deny"):
                assert key in checks, f"{name}.{key} has no check"
    assert set(section_checks(Settings().crawl.__class__)) >= {"scope", "sources", "parser",
                                                               "user_agent"}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("http.limit_rate", "0.5", "expected a rate in bytes per second"),
    ("http.proxy", "ftp://proxy.example", "expected a proxy URL"),
    ("http.proxy", "not a proxy", "expected a proxy URL"),
])
def test_request_settings_that_would_fail_later_are_refused_now(key: str, value: str,
                                                                 message: str) -> None:
    """0.5 bytes a second was silently no cap; a proxy libcurl cannot use failed every
    request of the crawl (status 5) instead of the command line (status 2)."""
    with pytest.raises(ConfigError, match=message):
        Settings().with_values({key: value})
    for fine in ("http://127.0.0.1:3128", "socks5h://user:pw@[::1]:1080", "proxy.example:8080"):
        Settings().with_values({"http.proxy": fine})


def test_parser_processes_are_bounded_as_processes_are(tmp_path: Path) -> None:
    """crawl.parsers took any count up to 10^12: the pool made a slot per process at once,
    a MemoryError for 10^12 and 9 GB held for 10^8, before the first page."""
    from crawler.config import MAX_PARSERS

    for count in (0, 1, MAX_PARSERS):
        assert load_settings(write(tmp_path, f"[crawl]\nparsers = {count}\n")
                             ).crawl.parsers == count
    for count in (MAX_PARSERS + 1, 10**8, 10**12):
        with pytest.raises(ConfigError, match=r"crawl\.parsers: expected a number from 0 to "
                                              rf"{MAX_PARSERS} .*, got {count}$"):
            load_settings(write(tmp_path, f"[crawl]\nparsers = {count}\n"))


@pytest.mark.parametrize("name", ["", "{x}", "data src", "data-src=1", "a>b", "x\ty"])
def test_a_lazy_attribute_that_no_html_attribute_is_named_is_refused(
        tmp_path: Path, name: str) -> None:
    """lazy_attributes took any string: "" and "{x}" (lxml's namespace form) made every
    page fail to parse ("crawler error: ValueError", no seed page: status 5)."""
    settings_file = write(tmp_path, f"[crawl]\nlazy_attributes = [\"data-original\", "
                                    f"{json.dumps(name)}]\n")
    with pytest.raises(ConfigError, match=r"crawl\.lazy_attributes: expected a list of "
                                          r"attribute names such as \"data-original\""):
        load_settings(settings_file)
    given = write(tmp_path, '[crawl]\nlazy_attributes = ["data-original", "DATA-Lazy_2", '
                            '"ng:src", "\u00fcber"]\n')
    assert load_settings(given).crawl.lazy_attributes == (
        "data-original", "DATA-Lazy_2", "ng:src", "\u00fcber")


@pytest.mark.parametrize(("text", "hint"), [
    ("[crawl]\nscope = host\n", 'Invalid value (at line 2, column 9): text is written in '
     'quotes: scope = "host"'),
    ("[crawl]\ndepth = 2\nrespect_robots = False  # no robots\n",
     "Invalid value (at line 3, column 18): write true or false, in lower case"),
    ("[crawl]\nrespect_robots = yes\n",
     "Invalid value (at line 2, column 18): write true or false, in lower case"),
    ("[crawl]\ndepth = 1\nmax_pages = 9\ndepth = 2\n",
     "Cannot overwrite a value (at line 4, column 10): depth is given twice: keep one"),
    # tomllib names a table as a Python tuple: ('crawl',).
    ("[crawl]\ndepth = 1\n[http]\n[crawl]\nmax_pages = 3\n",
     "Cannot declare [crawl] twice (at line 4, column 7): each table or key is declared "
     "once"),
    ('["a.b"]\n["a.b"]\n', 'Cannot declare ["a.b"] twice (at line 2, column 7): each table '
     "or key is declared once"),
    ("x = {a=1}\nx.b = 2\n", "Cannot mutate immutable namespace x (at line 2, column 8)"),
    # A number's key: quotes would only trade this error for the next one.
    ("[crawl]\ndepth = two\n", "Invalid value (at line 2, column 9): crawl.depth is a "
     "number, written in digits without quotes (its default: depth = 3)"),
    ("[politeness]\nhost_delay = half\n", "Invalid value (at line 2, column 14): "
     "politeness.host_delay is a number, written in digits without quotes (its default: "
     "host_delay = 0.0)"),
    ("[download]\nmax_bytes = lots\n", "Invalid value (at line 2, column 13): "
     'download.max_bytes is a size: bytes in digits, or in quotes with k, M or G '
     '(max_bytes = "50M")'),
    ("crawl.depth = two\n", "Invalid value (at line 1, column 15): crawl.depth is a "
     "number, written in digits without quotes (its default: crawl.depth = 3)"),
    ("depth = two\n", 'Invalid value (at line 1, column 9): text is written in quotes: '
     'depth = "two"'),
    # A size or a rate as --max-bytes and --limit-rate take it: tomllib reads its digits,
    # then finds a word after the value.
    ("[download]\nmax_bytes = 10M\n", "Expected newline or end of document after a "
     'statement (at line 2, column 15): download.max_bytes with k, M or G is written in '
     'quotes: max_bytes = "10M"'),
    ("[http]\nlimit_rate = 2MB/s  # a cap\n", "Expected newline or end of document after a "
     'statement (at line 2, column 15): http.limit_rate with k, M or G is written in '
     'quotes: limit_rate = "2MB/s"'),
    ("[crawl]\npage_timeout = 30s\n", "Expected newline or end of document after a "
     "statement (at line 2, column 18): crawl.page_timeout is a number, written in digits "
     "alone (its default: page_timeout = 30.0)"),
])
def test_the_commonest_toml_slips_are_said_with_what_to_write(
        tmp_path: Path, text: str, hint: str) -> None:
    """tomllib says "Invalid value" for a word written without quotes (scope = host) and
    for Python's True: where to look, not what to write."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: not valid TOML: {hint}"


def test_a_toml_slip_with_no_known_remedy_is_said_as_tomllib_says_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[crawl]\ndepth = 1 2\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == (f"{path}: not valid TOML: Expected newline or end of document "
                                 "after a statement (at line 2, column 11)")


@pytest.mark.parametrize(("text", "said"), [
    ('[crawl]\naccept = ["png"]\n', "crawl.accept: unknown key (--accept sets crawl.image_allow)"),
    ("[worker]\nworker_threads = 3\n",
     "worker.worker_threads: unknown key (--worker-threads sets worker.threads)"),
    ("[crawl]\nignore-robots = true\n",
     "crawl.ignore-robots: unknown key (--ignore-robots sets crawl.respect_robots = false)"),
    ('out = "images"\n', "unknown key out at the top (--out sets output.dir)"),
    ("[crawl]\nmax_byte = 5\n",
     "crawl.max_byte: unknown key (did you mean max_bytes, a key of [download]?)"),
])
def test_a_key_written_as_its_flag_or_a_slip_of_another_sections_is_named(
        tmp_path: Path, text: str, said: str) -> None:
    """A user who knows the flags writes accept = [...] or worker_threads = 3; these, and
    a slip of another section's key, were "unknown key" with no hint at all."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert said in str(caught.value)


def test_every_flag_named_unlike_its_setting_has_its_hint() -> None:
    from crawler.cli import FLAG_ALIASES, SETTING_FLAGS
    from crawler.config import FLAG_KEYS

    for flags in SETTING_FLAGS.values():
        for flag, key, *_ in flags:
            for name in (flag, *FLAG_ALIASES.get(flag, ())):
                written = name.removeprefix("--").replace("-", "_")
                if written != key.partition(".")[2]:
                    assert FLAG_KEYS.get(written) == key, name
    assert all(setting.partition(" ")[0].partition(".")[2] in getattr(
        Settings(), setting.partition(".")[0])._fields for setting in FLAG_KEYS.values())
