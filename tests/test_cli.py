"""The command line: help, and one clear line with a documented exit status for each mistake."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crawler.cli import EXIT_NOTHING_STORED
from crawler.demo.site import png
from crawler.master.folderlock import FolderLock

from .conftest import (
    SIGNAL_AT_IMPORT,
    FixtureServer,
    at_default_actions,
    crawler_command,
    finish,
    free_port,
    manifest_lines,
    run_crawler,
    site_images,
    start_crawler,
    stop,
    wait_for_output,
    wait_for_queue_address,
)


@pytest.mark.parametrize("command", ["master", "worker", "demo", "status", "report",
                                     "completion"])
def test_every_command_explains_itself(command: str) -> None:
    result = run_crawler(command, "--help")
    assert result.returncode == 0
    assert "usage: crawler " + command in result.stdout
    # Only the commands that read settings offer a settings file, and only those that
    # show progress a -q that turns it off.
    assert ("--settings" in result.stdout) == (command in ("master", "worker", "demo"))
    assert ("--quiet" in result.stdout) == (command in ("master", "worker", "demo"))


def test_a_wrong_argument_is_one_line_and_a_pointer_to_the_help() -> None:
    """The usage argparse printed first was 17 lines for the master, the mistake under it."""
    done = run_crawler("master", "--depth", "abc", "http://127.0.0.1:9/")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "crawler master: error: argument --depth: expected a whole number, not 'abc'",
        "Run 'crawler master --help' for what it takes."]


@pytest.mark.parametrize(("args", "said"), [
    (("master", "--host-delay", "1s"), "argument --host-delay: expected seconds as a plain "
                                       "number (such as 2 or 0.5, no unit), not '1s'"),
    (("worker", "--connect-wait", "5m"), "argument --connect-wait: expected seconds as a "
                                         "plain number (such as 2 or 0.5, no unit), not '5m'"),
    (("master", "--local-workers", "1.5"), "argument --local-workers: expected a whole "
                                           "number, not '1.5'"),
    (("demo", "--workers", "two"), "argument --workers: expected a whole number, not 'two'"),
])
def test_a_number_flag_says_what_number_it_takes(
        args: tuple[str, ...], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own "invalid float value: '1s'" named a Python type, not what to write."""
    from crawler.cli import main

    assert main((*args, "http://127.0.0.1:9/")) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"crawler {args[0]}: error: {said}"


@pytest.mark.parametrize(("args", "command", "unknown"), [
    (("master", "http://x/", "--bogus"), "master", "--bogus"),
    (("worker", "--bogus"), "worker", "--bogus"),
    (("master", "http://x/", "--connect-wait", "1"), "master", "--connect-wait 1"),  # a worker's
    (("report", "out", "--depth", "2"), "report", "--depth 2"),
])
def test_an_unknown_argument_is_said_by_its_command(
        args: tuple[str, ...], command: str, unknown: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """As every other wrong argument of a command is, not by "crawler" with its help."""
    from crawler.cli import main

    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"crawler {command}: error: unrecognized arguments: {unknown}",
        f"Run 'crawler {command} --help' for what it takes."]


@pytest.mark.parametrize(("args", "said"), [
    (("-q", "master", "http://x/"),
     "crawler master: error: -q goes after the command's name: crawler master -q http://x/"),
    (("--settings", "my settings.toml", "master", "http://x/"),
     "crawler master: error: --settings goes after the command's name: crawler master "
     "--settings 'my settings.toml' http://x/"),
    (("-v", "worker", "127.0.0.1:9"),
     "crawler worker: error: -v goes after the command's name: crawler worker -v 127.0.0.1:9"),
    (("mastr", "http://x/"), "crawler: error: unknown command 'mastr' (did you mean master?)"),
    # An option's value that is a command's name is the value; an option no command
    # takes is unknown, not misplaced.
    (("-o", "demo", "master", "http://x/"),
     "crawler master: error: -o goes after the command's name: crawler master -o demo "
     "http://x/"),
    (("--bogus", "master", "http://x/"), "crawler master: error: unrecognized arguments: "
                                         "--bogus"),
    (("master", "-V"), "crawler master: error: -V goes before the command's name: crawler -V"),
    (("--quiet=1", "master", "http://x/"),  # no flag of master's either: argparse says why
     "crawler master: error: unrecognized arguments: --quiet=1 (did you mean --quiet?)"),
])
def test_a_commands_option_before_its_name_or_a_mistyped_command_is_said_so(
        args: tuple[str, ...], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    """"unrecognized arguments: -q" (master takes -q, after its name), "invalid choice:
    'my settings.toml'" (--settings before the command took its value for the command)
    and "invalid choice: 'mastr'" (with no suggestion, where a flag gets one) misled."""
    from crawler.cli import main

    assert main(args) == 2
    assert capsys.readouterr().err.splitlines()[0] == said


@pytest.mark.parametrize(("args", "said"), [
    (("master", "http://127.0.0.1:9/", "--dept", "1"),
     "unrecognized arguments: --dept 1 (did you mean --depth?)"),
    (("master", "http://127.0.0.1:9/", "--local-worker=2"),
     "unrecognized arguments: --local-worker=2 (did you mean --local-workers?)"),
    (("worker", "127.0.0.1:9", "--thread", "4"),
     "unrecognized arguments: --thread 4 (did you mean --threads?)"),
])
def test_a_flag_is_never_taken_by_a_prefix_and_a_close_one_is_named(
        args: tuple[str, ...], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse took "--dept 1" for "--depth 1" and started a crawl: a typo that happens to
    be a prefix ran something else than was written, and a flag added later would give
    an old abbreviation another meaning."""
    from crawler.cli import main

    assert main(args) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"crawler {args[0]}: error: {said}"


def test_crawler_alone_shows_its_commands() -> None:
    done = run_crawler()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: crawler ") and "crawler demo" in done.stderr


MASTER_DEFAULTS = {"--depth": "3", "--max-pages": "1000", "--scope": "host",
                   "--page-concurrency": "8", "--host-delay": "0", "--host-concurrency": "16",
                   "--max-attempts": "3", "--lease-timeout": "60", "--threads": "16"}


@pytest.mark.parametrize(("command", "defaults"), [
    ("master", MASTER_DEFAULTS), ("worker", {"--threads": "16", "--connect-wait": "300"})])
def test_each_setting_flag_states_its_default(command: str, defaults: dict[str, str]) -> None:
    help_text = " ".join(run_crawler(command, "--help").stdout.split())
    options = help_text[help_text.index("options:"):]
    for flag, default in defaults.items():
        option = options[options.index(flag + " "):]
        option = option[:option.index("]") + 1]  # up to its [section.key]
        assert f"(default: {default}) [" in option, option
    if command == "master":
        assert ("--local-workers N also start N workers on this machine, at most 256 "
                "(default: 0,") in options


def test_top_level_help_lists_the_commands() -> None:
    result = run_crawler("--help")
    assert result.returncode == 0
    for command in ("master", "worker", "demo", "status", "report"):
        assert command in result.stdout


def test_the_installed_crawler_command_keeps_exit_status_and_output(tmp_path: Path) -> None:
    """The ``crawler`` script ends with a fast exit: what was printed must still arrive."""
    script = Path(sysconfig.get_path("scripts")) / "crawler"
    assert script.is_file(), f"{script} is missing: install the project (pip install -e .)"
    (tmp_path / "manifest.jsonl").touch()
    wrote = subprocess.run([str(script), "report", str(tmp_path)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert wrote.returncode == 0, wrote.stderr
    assert wrote.stdout == (f"wrote {tmp_path}/index.html\n"
                            f"open {(tmp_path / 'index.html').as_uri()} in a browser\n")
    refused = subprocess.run([str(script), "master", "ftp://example.test/"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert error_line(refused).startswith("crawler: error:")
    # Output that cannot be written is not a success. Unbuffered output would fail
    # inside the command already: this is about what is left to flush at the exit.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with Path("/dev/full").open("w") as full:  # every write: "No space left on device"
        lost = subprocess.run([str(script), "report", str(tmp_path)], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60, env=env,
                              check=False)
    assert lost.returncode == 120, lost.stderr
    # Help written unbuffered (or longer than the buffer) fails as it is written, where
    # argparse itself would drop the error and exit 0.
    for buffered in (env, {**env, "PYTHONUNBUFFERED": "1"}):
        for help_args in (["--help"], ["master", "--help"], ["--version"]):
            with Path("/dev/full").open("w") as full:
                lost = subprocess.run([str(script), *help_args], stdout=full,
                                      stderr=subprocess.PIPE, text=True, timeout=60,
                                      env=buffered, check=False)
            assert lost.returncode == 120, (help_args, lost.stderr)
            assert lost.stderr == ("crawler: error: standard output cannot be written "
                                   "(No space left on device)\n"), (help_args, lost.stderr)


def error_line(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    return lines[0]


def test_bad_settings_file_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    settings = tmp_path / "bad.toml"
    settings.write_text("[crawl]\ndepht = 2\n")
    result = run_crawler("master", "http://127.0.0.1:1/", "--settings", str(settings),
                         cwd=tmp_path)
    assert result.returncode == 2
    line = error_line(result)
    assert str(settings) in line and "crawl.depht" in line and "unknown key" in line


def test_malformed_settings_toml_in_the_working_folder(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[crawl\n")
    result = run_crawler("worker", "127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 2
    assert "settings.toml: not valid TOML" in error_line(result)


@pytest.mark.parametrize("command", [["worker", "127.0.0.1:1"], ["master", "http://127.0.0.1:1/"]])
def test_a_settings_file_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path,
                                                                 command: list[str]) -> None:
    (tmp_path / "settings.toml").write_bytes(b'[crawl]\nuser_agent = "caf\xe9"\n')  # Latin-1
    result = run_crawler(*command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "settings.toml: not valid TOML: not UTF-8 text (byte 25" in error_line(result)


def test_demo_into_a_file_exits_3(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = run_crawler("demo", "--out", str(blocker), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert error_line(result) == (
        f"crawler: error: cannot use {blocker}/demo for the demo's output: {blocker} is a file "
        "where a folder is needed; move it away (or choose another folder with --out)")


# "http:///nohost" is not here: browsers take it for http://nohost/, and so does the crawler.
@pytest.mark.parametrize("seed", ["ftp://example.com/", "not a url", "http://",
                                  "javascript:alert(1)"])
def test_seed_that_is_not_http_exits_2(tmp_path: Path, seed: str) -> None:
    result = run_crawler("master", seed, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert "seed" in error_line(result)


@pytest.mark.parametrize(("seed", "said"), [
    ("/tmp/site/index.html", "is a file's path, not a URL"),
    ("./index.html", "is a file's path, not a URL"),
    ("~/site/", "is a file's path, not a URL"),
    ("-v", "no host name starts with '-'"),
])
def test_a_seed_that_is_a_path_or_a_flag_is_said_to_be_one(tmp_path: Path, seed: str,
                                                           said: str) -> None:
    """Taken for https://tmp/site/index.html, it ended in a DNS failure for "tmp"."""
    result = run_crawler("master", "--out", str(tmp_path / "out"), "--", seed, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert said in error_line(result) and "Traceback" not in result.stderr


def test_a_seed_that_names_a_file_of_this_folder_says_so_when_it_is_no_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """site/index.html, read as https://site/index.html, failed its DNS lookup and said
    nothing more; refused outright, a wget mirror's folder (named as its host) would stop
    a good seed: a hint, where the name is no host."""
    from crawler.api import _seed_hint

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<html></html>")
    monkeypatch.chdir(tmp_path)
    failed = "robots.txt unreachable (connection error: name not found: DNS lookup failed)"
    hint = _seed_hint("https://site/index.html", failed, schemeless=True)
    assert hint.startswith("; there is a file of that name in this folder: the crawler "
                           "fetches pages over http(s)"), hint
    assert _seed_hint("https://site/other.html", failed, schemeless=True) == ""
    assert "file of that name" not in _seed_hint("https://site/index.html", failed,
                                                 schemeless=False)


@pytest.mark.parametrize("flag", ["--settings", "-i", "--authkey-file", "-o"])
def test_an_empty_file_name_is_said_to_be_one(tmp_path: Path, flag: str) -> None:
    """--settings '' was read as the current folder: ".: is a folder, not a settings file";
    -i '' as "seed file : cannot read it: Is a directory"."""
    result = run_crawler("master", "http://127.0.0.1:9/", flag, "", "--out",
                         str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "an empty path" in result.stderr and "Traceback" not in result.stderr


def test_flag_with_bad_value_exits_2(tmp_path: Path) -> None:
    result = run_crawler("master", "http://127.0.0.1:1/", "--depth", "-1", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == "crawler: error: --depth -1: expected a number >= 0"


def test_a_size_past_the_bound_is_said_as_it_was_written(tmp_path: Path) -> None:
    """--max-bytes 2000G was said as '--max-bytes 2147483648000 is too large', a number
    the user never wrote."""
    result = run_crawler("master", "http://127.0.0.1:1/", "--max-bytes", "2000G",
                         cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == ("crawler: error: --max-bytes 2000G is too large (at most "
                                  "1,000,000,000,000 bytes)")


def test_port_in_use_exits_4(tmp_path: Path, site: FixtureServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        no_key = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
        result = run_crawler("master", site.url + "/", "--bind", f"127.0.0.1:{port}",
                             "--out", str(tmp_path / "out"), cwd=tmp_path, env=no_key)
    assert result.returncode == 4
    assert error_line(result).endswith(
        "(choose another port with --bind, or bind= in Python)"), result.stderr
    assert f"cannot serve the queue on 127.0.0.1:{port}" in error_line(result)
    # Nothing was fetched or recorded, not even the key made for it: a later run there
    # starts clean.
    assert site.paths() == []
    assert not (tmp_path / "out").exists()


def test_a_port_in_use_that_a_settings_file_named_names_the_file(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = tmp_path / "queue.toml"
        settings.write_text(f'[queue]\nbind = "127.0.0.1:{port}"\n')
        result = run_crawler("master", "http://127.0.0.1:9/", "--settings", str(settings),
                             "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 4
    assert error_line(result).endswith(
        f"(choose another port with --bind, or bind= in Python); that address is queue.bind "
        f"in {settings}"), result.stderr


@pytest.mark.parametrize(("given", "env", "said"), [
    (["http//SITE"], {}, "did you mean http://"),
    (["SITE/", "--cookies", "cookies.txt"], {}, "cookies.txt holds no cookie"),
    (["SITE/", "--ca-bundle", "cookies.txt"], {}, "cookies.txt holds no PEM certificate"),
    (["SITE/"], {"HTTP_PROXY": "bogus::"}, "$HTTP_PROXY is 'bogus::', not a proxy URL"),
])
def test_a_master_refused_at_start_makes_no_output_folder_nor_key(
        tmp_path: Path, site: FixtureServer, given: list[str], env: dict[str, str],
        said: str) -> None:
    """A mistyped seed, a request file that holds nothing usable or a malformed proxy
    variable were refused with status 2 after the master had made OUT/authkey (and OUT,
    with its parents): the folder stayed, holding a key no crawl used."""
    (tmp_path / "cookies.txt").write_text("not a cookie line\n")
    no_key = {k: v for k, v in crawl_env(tmp_path, **env).items() if k != "CRAWLER_AUTHKEY"}
    args = [arg.replace("SITE", site.url.removeprefix("http://") if arg.startswith("http//")
                        else site.url) for arg in given]
    result = run_crawler("master", *args, "--out", "made/for/out", "--bind", "127.0.0.1:0",
                         cwd=tmp_path, env=no_key)
    assert result.returncode == 2, result.stderr
    assert said in error_line(result), result.stderr
    assert site.paths() == []
    assert not (tmp_path / "made").exists()
    # A folder that was there stays, as it was.
    (tmp_path / "kept").mkdir()
    result = run_crawler("master", *args, "--out", "kept", "--bind", "127.0.0.1:0",
                         cwd=tmp_path, env=no_key)
    assert result.returncode == 2, result.stderr
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())


def test_a_bind_address_that_is_not_this_hosts_is_not_blamed_on_the_port(
        tmp_path: Path, authkey: str) -> None:
    result = run_crawler("master", "http://127.0.0.1:1/", "--bind", "192.0.2.1:0",
                         "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert error_line(result).endswith(
        "(give --bind, or bind= in Python, an address of this host, such as "
        "127.0.0.1:PORT)"), result.stderr


def test_status_names_a_mistyped_address_before_a_missing_key(tmp_path: Path) -> None:
    no_key = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    result = run_crawler("status", "foo", cwd=tmp_path, env=no_key)
    assert result.returncode == 2
    assert error_line(result).startswith("crawler: error: bad master address: 'foo'"), \
        result.stderr


@pytest.mark.parametrize(("given", "meant"), [
    ("http://127.0.0.1:8000/", "give it as the master printed it after 'queue on', without "
                               "a scheme or path: 127.0.0.1:8000"),
    ("localhost:24601/", "give it as the master printed it after 'queue on', without a "
                         "scheme or path: localhost:24601"),
    ("127.0.0.1", "give its port too, as the master printed it after 'queue on': "
                  "127.0.0.1:24601 unless the master was given another --bind"),
])
@pytest.mark.parametrize("command", ["worker", "status"])
def test_a_master_address_as_a_url_or_without_its_port_says_what_to_give(
        tmp_path: Path, authkey: str, command: str, given: str, meant: str) -> None:
    """A URL or a bare host for the master said only "is not HOST:PORT"."""
    result = run_crawler(command, given, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        f"crawler: error: bad master address: {given!r} is not HOST:PORT; {meant}")


@pytest.mark.parametrize(("given", "said"), [
    ("[127.0.0.1]:19311", "'[127.0.0.1]:19311': an IPv4 address goes without brackets: "
                          "127.0.0.1:19311"),
    ("[]:19311", "'[]:19311' is not HOST:PORT"),
    ("[:19311", "'[:19311' is not HOST:PORT"),
])
@pytest.mark.parametrize("command", ["worker", "status"])
def test_a_master_address_in_odd_brackets_is_said_in_one_line(
        tmp_path: Path, authkey: str, command: str, given: str, said: str) -> None:
    """These ended in a traceback of urlsplit's ValueError, status 1."""
    result = run_crawler(command, given, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == f"crawler: error: bad master address: {said}", result.stderr


@pytest.mark.parametrize("command", [["master", "http://127.0.0.1:1/", "--bind", "[::1]:9000"],
                                     ["worker", "[::1]:9000"]])
def test_an_ipv6_queue_address_is_refused_in_one_line(tmp_path: Path, authkey: str,
                                                      command: list[str]) -> None:
    result = run_crawler(*command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    # The reason, as the worker says it: not only what an address must be.
    assert "'[::1]:9000' is IPv6: the queue speaks IPv4 only" in error_line(result), \
        result.stderr


def test_an_ipv6_bind_in_a_settings_file_is_said_to_be_ipv6(tmp_path: Path) -> None:
    (tmp_path / "six.toml").write_text('[queue]\nbind = "[::1]:9000"\n')
    result = run_crawler("master", "http://127.0.0.1:1/", "--settings",
                         str(tmp_path / "six.toml"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert error_line(result).startswith(
        f"crawler: error: {tmp_path / 'six.toml'}: queue.bind: '[::1]:9000' is IPv6: the queue "
        "speaks IPv4 only"), result.stderr


def test_short_authkey_refused_on_a_public_bind(tmp_path: Path) -> None:
    env = {**os.environ, "CRAWLER_AUTHKEY": "short"}
    result = run_crawler("master", "http://127.0.0.1:1/", "--bind", "0.0.0.0:0", cwd=tmp_path,
                         env=env)
    assert result.returncode == 2
    line = error_line(result)
    assert "at least 16 bytes" in line and "secrets.token_hex(16)" in line
    assert "(this one from CRAWLER_AUTHKEY has 5)" in line  # the variable, by its name


def test_unwritable_output_folder_exits_3(tmp_path: Path, site: FixtureServer) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    for out in (blocker / "out", blocker):  # under a file, and the file itself
        result = run_crawler("master", site.url + "/", "--out", str(out),
                             "--bind", "127.0.0.1:0", cwd=tmp_path)
        assert result.returncode == 3
        assert error_line(result) == (
            f"crawler: error: cannot create the output folder {out}: {blocker} is a file "
            "where a folder is needed; move it away or choose another path")


def test_worker_without_authkey_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    result = run_crawler("worker", "127.0.0.1:1", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "CRAWLER_AUTHKEY" in error_line(result)
    assert "a master started without one keeps its own in OUT/authkey" in error_line(result)


@pytest.mark.parametrize("command", ["worker", "status"])
def test_an_authkey_variable_set_but_blank_is_said_to_be(tmp_path: Path, command: str) -> None:
    """CRAWLER_AUTHKEY=$(cat FILE), FILE missing, was told "set CRAWLER_AUTHKEY"."""
    env = {**os.environ, "CRAWLER_AUTHKEY": " \n"}
    result = run_crawler(command, "127.0.0.1:1", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert error_line(result).startswith(
        "crawler: error: no authkey (CRAWLER_AUTHKEY is set, but empty): set CRAWLER_AUTHKEY "
        "or pass --authkey-file"), result.stderr


@pytest.mark.parametrize("blank", ["", " \n"])
def test_a_master_given_a_blank_authkey_variable_refuses_it(tmp_path: Path, blank: str) -> None:
    """A master started with CRAWLER_AUTHKEY=$(cat FILE), FILE missing, made a key of its
    own and crawled, while every worker started from the same environment was refused
    for the blank variable: the master refuses it too, and makes nothing."""
    env = {**os.environ, "CRAWLER_AUTHKEY": blank}
    result = run_crawler("master", "http://127.0.0.1:1/", "--out", "out", "--bind",
                         "127.0.0.1:0", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        "crawler: error: CRAWLER_AUTHKEY is set, but empty: set it to the key, or unset it "
        "for the master to keep its own in OUT/authkey, or pass --authkey-file (in Python: "
        "authkey=)")
    assert not (tmp_path / "out").exists()
    # A dry run serves no queue, and the demo's workers are its own: no key matters.
    dry = run_crawler("master", "http://127.0.0.1:1/", "--dry-run", cwd=tmp_path, env=env)
    assert "CRAWLER_AUTHKEY" not in dry.stderr and dry.returncode == 5, dry.stderr


@pytest.mark.parametrize("folder", ["out", "my out", os.fsdecode(b"out-\xff it's")])
def test_a_worker_without_a_key_names_the_one_in_its_output_folder(tmp_path: Path,
                                                                   folder: str) -> None:
    """A worker given the master's --out and no key was told only where keys are kept,
    not that its own folder holds one; named as a shell reads it (--out 'my out' was
    told "--authkey-file my out/authkey": two words to a shell; a name that is not
    UTF-8 showed \\udcff)."""
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "authkey").write_text("0123456789abcdef0123456789abcdef\n")
    result = run_crawler("worker", "127.0.0.1:1", "--out", folder, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    hint = "(this worker's --out holds one: --authkey-file "
    line = error_line(result)
    assert hint in line and line.endswith(")"), result.stderr
    word = line.split(hint, 1)[1][:-1]
    assert "udc" not in word
    pasted = subprocess.run(["bash", "-c", "printf '%s\\0' " + word], capture_output=True,
                            check=True, timeout=10).stdout.split(b"\0")
    assert pasted == [os.fsencode(folder) + b"/authkey", b""], pasted
    elsewhere = run_crawler("worker", "127.0.0.1:1", "--out", "other", cwd=tmp_path, env=env)
    assert elsewhere.returncode == 2, elsewhere.stderr
    assert "--out holds" not in error_line(elsewhere)


def test_a_worker_given_a_folder_for_its_master_says_what_to_give(tmp_path: Path) -> None:
    """crawler worker OUT (the master's output folder) said only "'OUT' is not HOST:PORT"."""
    (tmp_path / "out").mkdir()
    result = run_crawler("worker", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == (
        "crawler: error: out is a folder: a worker joins a running master by the HOST:PORT "
        "it printed as 'queue on HOST:PORT' (and stores into --out DIR)")


def test_an_authkey_file_that_is_a_folder_points_to_the_key_in_it(tmp_path: Path) -> None:
    """--authkey-file OUT (the master's output folder, not its key) said only "Is a
    directory": the key is the authkey file in it."""
    out = tmp_path / "out"
    out.mkdir()
    result = run_crawler("worker", "127.0.0.1:1", "--authkey-file", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result) == (
        f"crawler: error: cannot read the authkey file {out}: it is a folder; the master's "
        f"key is the file authkey in its output folder: --authkey-file {out / 'authkey'}")
    # OUT/authkey itself a folder: no file in it to point to.
    (out / "authkey").mkdir()
    master = run_crawler("master", "http://127.0.0.1:1/", "--out", str(out), cwd=tmp_path)
    assert master.returncode == 2
    assert error_line(master) == (
        f"crawler: error: cannot read the authkey file {out / 'authkey'}: it is a folder, "
        "where the key's file belongs")


def test_worker_gives_up_on_a_missing_master(tmp_path: Path, authkey: str) -> None:
    port = free_port()
    started = time.monotonic()
    result = run_crawler("worker", f"127.0.0.1:{port}", "--connect-wait", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert f"could not reach the master at 127.0.0.1:{port} within 1 s" in result.stderr
    assert time.monotonic() - started < 30
    # While it waits, it says why and for how long.
    assert (f"waiting for the master at 127.0.0.1:{port} (connection refused): trying again "
            "for up to 1 s ...") in result.stderr


def test_a_worker_that_never_reached_its_master_leaves_no_folder(tmp_path: Path,
                                                                 authkey: str) -> None:
    """A mistyped address left an empty downloads/ (with .partial/ in it) wherever the
    worker ran; a folder that was there before is kept, without the worker's .partial."""
    port = free_port()
    for out in ("downloads", "far/away/out"):  # the default, and folders it made for --out
        result = run_crawler("worker", f"127.0.0.1:{port}", "--out", out,
                             "--connect-wait", "1", cwd=tmp_path)
        assert result.returncode == 1, result.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))
    kept = tmp_path / "kept"
    kept.mkdir()
    result = run_crawler("worker", f"127.0.0.1:{port}", "--out", str(kept),
                         "--connect-wait", "1", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert kept.is_dir() and list(kept.iterdir()) == []


def test_a_quiet_worker_warns_of_a_master_it_still_waits_for(tmp_path: Path,
                                                             authkey: str) -> None:
    """--quiet hides the line that says a worker waits for its master: a mistyped HOST:PORT
    went unsaid until the worker gave up (300 s by default). A wait past a few seconds,
    longer than a master started with its workers takes, is warned of."""
    port = free_port()
    result = run_crawler("worker", f"127.0.0.1:{port}", "--quiet", "--connect-wait", "7",
                         cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    warning, error = result.stderr.splitlines()
    assert re.fullmatch(rf"\d\d:\d\d:\d\d WARNING: still waiting for the master at "
                        rf"127\.0\.0\.1:{port} after 5 s \(trying again for up to 7 s in "
                        r"all\): nothing listens there \(connection refused\); is it "
                        r"running, and is the address right\?", warning), warning
    assert f"could not reach the master at 127.0.0.1:{port} within 7 s" in error


def test_a_quiet_worker_warns_of_a_key_file_it_still_waits_for(tmp_path: Path) -> None:
    """The same of the master's key file (a mistyped --out folder in OUT/authkey)."""
    key_file = tmp_path / "ot" / "authkey"
    result = run_crawler("worker", f"127.0.0.1:{free_port()}", "--authkey-file", str(key_file),
                         "--quiet", "--connect-wait", "7", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    warning, error = result.stderr.splitlines()
    assert warning.endswith(f" WARNING: still no key file {key_file} after 5 s (waiting for "
                            f"up to 7 s in all): a master makes it as it starts; is "
                            f"{key_file.parent} the master's output folder (--out)?"), warning
    assert error == f"crawler: error: cannot read the authkey file {key_file}: No such file " \
                    "or directory"


def test_a_worker_says_its_folder_cannot_be_written_before_waiting_for_a_master(
        tmp_path: Path, authkey: str) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("a file where the worker's folder would be")
    # No master there: were the folder checked only once one answers, this would wait.
    result = run_crawler("worker", f"127.0.0.1:{free_port()}", "--out", str(blocker),
                         "--connect-wait", "60", cwd=tmp_path, timeout=30)
    assert result.returncode == 3, result.stderr
    assert f"{blocker} is a file where a folder is needed" in result.stderr
    assert "waiting for the master" not in result.stderr


# A signal at a chosen moment of start-up: the moment the command first imports a module.
@pytest.mark.parametrize("entry", [
    "from crawler.__main__ import run; run()",  # what the installed `crawler` script does
    "import runpy; runpy.run_module('crawler', run_name='__main__', alter_sys=True)"])
@pytest.mark.parametrize(("signum", "module", "command", "status", "said"), [
    # While the command's own modules load: a traceback, status -2.
    (signal.SIGINT, "crawler.config", "master", 130, "crawler: interrupted"),
    # As its logging is set up: status 130, and not a word.
    (signal.SIGINT, "crawler.ui.progress", "master", 130, "crawler: interrupted"),
    # SIGTERM before the crawl's or the worker's own handling: killed without a word.
    (signal.SIGTERM, "crawler.config", "master", 130, "crawler: stopped (SIGTERM)"),
    (signal.SIGTERM, "crawler.api", "master", 130, "crawler: stopped (SIGTERM)"),
    (signal.SIGTERM, "crawler.api", "worker", 0, "worker stopped (SIGTERM)"),
    # A hang-up then: killed by it (status 129) where one during the crawl stops it.
    (signal.SIGHUP, "crawler.config", "master", 130, "crawler: stopped (SIGHUP)"),
    (signal.SIGHUP, "crawler.api", "master", 130, "crawler: stopped (SIGHUP)"),
    # As its page parsers are forked (the first fork imports this).
    (signal.SIGHUP, "multiprocessing.popen_fork", "master", 130, "crawler: stopped (SIGHUP)"),
    (signal.SIGHUP, "crawler.api", "worker", 0, "worker stopped (SIGHUP)")])
def test_a_stop_as_the_command_starts_says_it_stopped(
        tmp_path: Path, entry: str, signum: int, module: str, command: str, status: int,
        said: str) -> None:
    code = SIGNAL_AT_IMPORT.replace("ENTRY", entry)
    args = (["master", "http://127.0.0.1:9/", "--bind", "127.0.0.1:0"] if command == "master"
            else ["worker", f"127.0.0.1:{free_port()}", "--connect-wait", "60"])
    done = subprocess.run([sys.executable, "-c", code, *args, "--out", str(tmp_path / "out")],
                          cwd=tmp_path,
                          env=crawl_env(tmp_path, SIGNAL_AT=module, SIGNAL=str(signum),
                                        CRAWLER_AUTHKEY="k" * 32),
                          capture_output=True, text=True, timeout=60, check=False,
                          preexec_fn=at_default_actions)
    assert done.returncode == status, done.stderr
    assert done.stderr.splitlines()[-1].endswith(said), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # stopped before it began


@pytest.mark.parametrize(("signum", "status", "reason"), [
    (signal.SIGTERM, 0, "SIGTERM"), (signal.SIGHUP, 0, "SIGHUP"),
    (signal.SIGINT, 130, "interrupted")])
def test_a_worker_waiting_for_its_key_file_stops_on_a_signal_as_one_waiting_for_its_master(
        tmp_path: Path, signum: int, status: int, reason: str) -> None:
    """SIGTERM or a hang-up there killed it by the signal's default action (status -15,
    143 in a shell), where a worker waiting for its master exits 0 (README)."""
    worker = subprocess.Popen(
        crawler_command("worker", f"127.0.0.1:{free_port()}", "--out", str(tmp_path / "out"),
                        "--authkey-file", str(tmp_path / "out" / "authkey"),
                        "--connect-wait", "60"),
        cwd=tmp_path, env=crawl_env(tmp_path), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_output(worker, "waiting for the key file", 30)
        worker.send_signal(signum)
        err = finish(worker, 30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == status, err
    assert f"worker stopped ({reason})" in err
    assert "Traceback" not in err


def test_a_worker_waiting_for_a_broker_names_the_broker(tmp_path: Path) -> None:
    port = free_port()
    result = run_crawler("worker", "--broker", f"redis://127.0.0.1:{port}/0", "--crawl", "c",
                         "--connect-wait", "1", cwd=tmp_path)
    assert result.returncode == 1
    broker = f"the crawl 'c' on the broker at redis://127.0.0.1:{port}/0"
    assert f"waiting for {broker} (connection refused): trying again for up to 1 s" \
        in result.stderr
    line = result.stderr.splitlines()[-1]
    assert f"could not reach {broker} within 1 s" in line
    assert "is redis-server running there" in line and "master" not in line
    assert line.count("reach") == 1, "the broker is named once, by the line's start"


def test_worker_with_wrong_authkey_exits_1_and_the_crawl_goes_on(
        tmp_path: Path, site: FixtureServer, authkey: str) -> None:
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0",
                           "--out", str(tmp_path / "out"), "--host-delay", "0.2",
                           cwd=tmp_path)
    try:
        address = wait_for_queue_address(master)
        wrong = {**os.environ, "CRAWLER_AUTHKEY": "0" * 32}
        refused = run_crawler("worker", address, "--out", str(tmp_path / "out"), env=wrong,
                              cwd=tmp_path)
        assert refused.returncode == 1
        assert f"the master at {address} refused our authkey" in refused.stderr
        good = run_crawler("worker", address, "--out", str(tmp_path / "out"), cwd=tmp_path)
        assert good.returncode == 0, good.stderr
        err = finish(master, 60)
    finally:
        if master.poll() is None:
            master.kill()
    assert master.returncode == 0
    assert "refused 1 queue connection(s), the last from 127.0.0.1:" in err
    assert "wrong authkey" in err
    assert authkey not in err and "0" * 32 not in err


def test_an_authkey_variable_that_names_the_key_file_is_said_to_hold_the_key_itself(
        tmp_path: Path, site: FixtureServer) -> None:
    """CRAWLER_AUTHKEY=OUT/authkey, as --authkey-file is given, was taken as the key, and
    the master's refusal said only to give the key with CRAWLER_AUTHKEY."""
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    master = start_crawler("master", site.url + "/", "--bind", "127.0.0.1:0",
                           "--out", str(tmp_path / "out"), cwd=tmp_path, env=env)
    try:
        address = wait_for_queue_address(master)
        key_file = tmp_path / "out" / "authkey"
        refused = run_crawler("worker", address, "--out", str(tmp_path / "out"), cwd=tmp_path,
                              env={**env, "CRAWLER_AUTHKEY": str(key_file)})
        assert refused.returncode == 1, refused.stderr
        assert f"the master at {address} refused our authkey" in refused.stderr
        assert (f"CRAWLER_AUTHKEY holds the key itself, and its value is the name of the file "
                f"{key_file}: it is taken as the key; for the key in that file, give "
                f"--authkey-file {key_file} instead") in refused.stderr, refused.stderr
        good = run_crawler("worker", address, "--out", str(tmp_path / "out"), cwd=tmp_path,
                           env={**env, "CRAWLER_AUTHKEY": key_file.read_text()})
        assert good.returncode == 0, good.stderr
        assert "holds the key itself" not in good.stderr
        finish(master, 60)
    finally:
        if master.poll() is None:
            master.kill()
    for command in ("master", "worker", "status"):
        assert "(default: the key itself in $CRAWLER_AUTHKEY" in " ".join(
            run_crawler(command, "--help").stdout.split()), command


def test_an_authkey_variable_that_is_not_utf8_is_its_bytes(tmp_path: Path,
                                                           site: FixtureServer) -> None:
    """CRAWLER_AUTHKEY holding bytes that are not UTF-8 (as a key file may): the master
    and a worker took it with a traceback; it is the same key as a file of those bytes."""
    key = b"\xff\xfe" + os.urandom(8).hex().encode()
    env = crawl_env(tmp_path)
    env_bytes = {**{k.encode(): v.encode() for k, v in env.items() if k != "CRAWLER_AUTHKEY"},
                 b"CRAWLER_AUTHKEY": key}
    master = subprocess.Popen(
        crawler_command("master", site.url + "/gallery.html", "--depth", "0", "--bind",
                        "127.0.0.1:0", "--out", str(tmp_path / "out")),
        cwd=tmp_path, env=env_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        address = wait_for_queue_address(master)
        (tmp_path / "key").write_bytes(key)
        (tmp_path / "key").chmod(0o600)
        worker = run_crawler("worker", address, "--authkey-file", str(tmp_path / "key"),
                             "--out", str(tmp_path / "out"), "--connect-wait", "10",
                             cwd=tmp_path, env=env, timeout=60)
        assert worker.returncode == 0, worker.stderr
        err = finish(master, 60)
    finally:
        if master.poll() is None:
            master.kill()
    assert master.returncode == 0, err
    assert "Traceback" not in err
    assert manifest_lines(tmp_path / "out")


def test_worker_pointed_at_something_else_says_so(site: FixtureServer, tmp_path: Path,
                                                  authkey: str) -> None:
    port = site.server_address[1]
    result = run_crawler("worker", f"127.0.0.1:{port}", "--connect-wait", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert f"could not reach the master at 127.0.0.1:{port} within 1 s: " in result.stderr
    assert f"127.0.0.1:{port} took the connection and made no handshake" in result.stderr
    assert " 5 s" not in result.stderr, "one wait is said: the one the user set"
    assert result.stderr.rstrip().endswith("is that a crawler master's queue port?"), \
        "and no second question (is it running?): something is running there"


def test_status_pointed_at_something_else_says_so_as_a_worker_does(
        site: FixtureServer, tmp_path: Path, authkey: str) -> None:
    """crawler status at a web server's port said "(NoHandshake: ...)", naming a class."""
    port = site.server_address[1]
    result = run_crawler("status", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        f"crawler: error: no master answers at 127.0.0.1:{port} (127.0.0.1:{port} took the "
        "connection and made no handshake: is that a crawler master's queue port?)")


def _status_at_a_port_that(tmp_path: Path, answer: Callable[[socket.socket], None]
                           ) -> tuple[int, subprocess.Popen[str], str]:
    """``crawler status`` at a port of our own whose connection ``answer`` handles; the
    port, the process (ended) and what it said on stderr."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        port = listener.getsockname()[1]
        status = start_crawler("status", f"127.0.0.1:{port}", cwd=tmp_path)
        try:
            taken, _ = listener.accept()
            with taken:
                answer(taken)
                _, err = status.communicate(timeout=30)
        finally:
            status.kill()
            status.communicate()
    return port, status, err


def test_status_at_a_port_that_hangs_up_says_so_without_a_class_name(
        tmp_path: Path, authkey: str) -> None:
    """A port that takes the connection and closes it at once was said as
    "(EOFError: ; is it running, and is the address right?)": a class name, no words,
    and a question of whether something runs where something answered."""
    port, status, err = _status_at_a_port_that(tmp_path, socket.socket.close)
    assert status.returncode == 1, err
    assert err.strip() == (
        f"crawler: error: no master answers at 127.0.0.1:{port} (127.0.0.1:{port} closed the "
        "connection before any handshake (a master does so while too many workers connect "
        "at once): is that a crawler master's queue port?)"), err


@pytest.mark.parametrize("first_words", [b"\x00\x00\x00\x05hello",
                                         b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"])
def test_status_at_a_port_that_speaks_another_protocol_says_so(
        tmp_path: Path, authkey: str, first_words: bytes) -> None:
    """A message that is no challenge made multiprocessing assert (a traceback, "message
    = b'hello'"); an SSH banner read as a length no message has was said as "bad message
    length; is it running"."""
    port, status, err = _status_at_a_port_that(tmp_path, lambda taken: taken.sendall(
        first_words))
    assert status.returncode == 1, err
    assert err.strip() == (
        f"crawler: error: no master answers at 127.0.0.1:{port} (127.0.0.1:{port} answered "
        "with something other than a crawler master's handshake: is that a crawler "
        "master's queue port?)"), err


def test_status_at_a_port_cut_during_the_handshake_says_so(
        tmp_path: Path, authkey: str) -> None:
    """Part of a message, then the end ("got end of file during message"): said as a port
    that speaks another protocol, of what may be a master killed mid-handshake."""
    def cut(taken: socket.socket) -> None:
        taken.sendall(b"\x00\x00")
        taken.close()

    port, status, err = _status_at_a_port_that(tmp_path, cut)
    assert status.returncode == 1, err
    assert f"(127.0.0.1:{port} closed the connection during the handshake (a master does " \
        "so while too many workers connect at once)" in err, err


def test_worker_waiting_at_something_else_says_what_it_met(site: FixtureServer,
                                                          tmp_path: Path, authkey: str) -> None:
    """The wait's own line names a port that is no master's; it said "resource
    temporarily unavailable", the system's word for a handshake that never came."""
    port = site.server_address[1]
    worker = start_crawler("worker", f"127.0.0.1:{port}", "--connect-wait", "60", cwd=tmp_path)
    try:
        line = wait_for_output(worker, r"waiting for the master at .*", 15).group()
    finally:
        worker.kill()  # mid-handshake, a SIGTERM would wait out its 5 s
        finish(worker, 15)
    assert (f"(127.0.0.1:{port} took the connection and made no handshake: is that a "
            "crawler master's queue port?)") in line, line


def test_a_seed_on_a_closed_port_is_not_a_success(tmp_path: Path) -> None:
    with socket.socket() as closed:  # bound, never listening: refused, and no one else's
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result, as_json = (
            run_crawler("master", f"http://127.0.0.1:{port}/", "--out", str(tmp_path / "out"),
                        "--bind", f"127.0.0.1:{free_port()}", *flags, cwd=tmp_path)
            for flags in ((), ("--quiet", "--json")))
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"crawler: error: no seed page could be fetched: http://127.0.0.1:{port}/: robots.txt"
        " unreachable (connection error: connection refused); nothing listens at "
        f"127.0.0.1:{port}: is its server running, and is the address right?")
    # The summary does not call it a completed crawl, in words or in JSON.
    assert "crawl ended: no seed page could be fetched (below)" in result.stderr
    assert "completed" not in result.stderr
    assert as_json.returncode == 5, as_json.stderr
    printed = json.loads(as_json.stdout)
    assert printed["completed"] is False and printed["interrupted"] is False
    assert printed["seed_failures"] == [[f"http://127.0.0.1:{port}/", "robots.txt unreachable "
                                         "(connection error: connection refused)"]]


def _redirecting(server: FixtureServer, path: str, target: str) -> None:
    """``path`` on ``server`` answers a redirect to ``target``."""
    server.routes[path] = lambda handler: handler.send_body(
        301, b"", "text/plain", {"Location": target})


@pytest.mark.parametrize("moved", ["/robots.txt", "/"])
def test_a_refused_redirect_of_a_seed_is_not_said_of_the_seed_server(
        site: FixtureServer, tmp_path: Path, moved: str) -> None:
    """A seed whose robots.txt or page redirected to a closed port was told that nothing
    listened at the seed's own address, whose server had just answered."""
    with socket.socket() as closed:  # bound, never listening: refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        _redirecting(site, moved, f"http://127.0.0.1:{port}{moved}")
        result = run_crawler("master", f"{site.url}/", "--scope", "any", "--out",
                             str(tmp_path / "out"), "--bind", "127.0.0.1:0", "--quiet",
                             cwd=tmp_path)
    assert result.returncode == 5, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    seed_address = site.url.removeprefix("http://")
    assert f"nothing listens at {seed_address}" not in last, last
    if moved == "/":  # its target is named, and is where nothing listens
        assert last.endswith(f"nothing listens at 127.0.0.1:{port}: is its server running, "
                             "and is the address right?"), last
    else:  # the robots.txt's redirect is said in its reason, and named in the log
        assert last.endswith("robots.txt unreachable (connection error: connection refused, "
                             "at a redirect)"), last
        assert (f"(connection error: connection refused at its redirect to "
                f"http://127.0.0.1:{port}/robots.txt)") in result.stderr, result.stderr


def test_a_refused_seed_with_a_login_is_said_by_its_host_and_port(tmp_path: Path) -> None:
    """The address where nothing listens is HOST:PORT, not the seed's user and password."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = run_crawler("master", f"http://bob:s3cret@127.0.0.1:{port}/", "--out",
                             str(tmp_path / "out"), "--bind", "127.0.0.1:0", "--quiet",
                             cwd=tmp_path)
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"; nothing listens at 127.0.0.1:{port}: is its server running, and is the address "
        "right?"), result.stderr



def crawl_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment with a home of its own, so no user settings file is read."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CRAWLER_SETTINGS", "XDG_CONFIG_HOME")}
    return {**env, "HOME": str(tmp_path / "home"), **extra}


def test_another_projects_settings_toml_does_not_stop_the_crawler(
        tmp_path: Path, site: FixtureServer) -> None:
    (tmp_path / "settings.toml").write_text('[database]\nurl = "postgres://db/app"\n')
    result = run_crawler("master", site.url + "/", "--dry-run", "--depth", "0", "-v",
                         "--bind", "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "ignoring ./settings.toml: another program's settings" in result.stderr
    assert f"{site.url}/images/red.png" in result.stdout.splitlines()
    quiet = run_crawler("master", site.url + "/", "--dry-run", "--depth", "0",
                        "--bind", "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert quiet.returncode == 0 and "settings.toml" not in quiet.stderr  # a note for -v only


@pytest.mark.parametrize(("text", "said"), [
    ("DEBUG = True\n", "settings.toml: not valid TOML: Invalid value (at line 1, column 9): "
                       "write true or false, in lower case"),
    ("threads = 4\n", "settings.toml: threads must be under [worker], not at the top"),
    # Found after the file was read (a file it names): said with why it was read too.
    ('[http]\ncookies = "nope.txt"\n', "settings.toml: http.cookies: cannot read "
                                         "{folder}/nope.txt: No such file or directory"),
])
def test_a_mistake_in_the_current_folders_settings_toml_says_why_it_was_read(
        tmp_path: Path, text: str, said: str) -> None:
    """Another program's settings.toml that only looks like ours (not TOML, or a name of
    ours at its top) stopped the crawler with a mistake in a file the user never gave it,
    and no word of why it was read nor how to leave it out."""
    (tmp_path / "settings.toml").write_text(text)
    said = said.format(folder=tmp_path)
    why = ("read as the crawler's settings because it is in the current folder: if it is "
           "another program's, give --settings FILE (in Python: settings=) or start the "
           "crawler from another folder")
    result = run_crawler("master", "http://127.0.0.1:1/", "--dry-run", cwd=tmp_path,
                         env=crawl_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert error_line(result) == f"crawler: error: {said} ({why})"
    # Named, it was chosen: its mistake is said alone.
    named = run_crawler("master", "http://127.0.0.1:1/", "--dry-run", "--settings",
                        "settings.toml", cwd=tmp_path, env=crawl_env(tmp_path))
    assert named.returncode == 2, named.stderr
    assert error_line(named) == f"crawler: error: {said}"


@pytest.mark.parametrize("command", [["report", "."], ["status", "127.0.0.1:1"]])
def test_report_and_status_read_no_settings(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "settings.toml").write_text("[crawl\n")  # would be exit 2 if read
    (tmp_path / "manifest.jsonl").touch()
    env = crawl_env(tmp_path, CRAWLER_AUTHKEY="k" * 32)
    result = run_crawler(*command, cwd=tmp_path, env=env)
    assert "settings" not in result.stderr
    # report succeeds; status gets as far as the (absent) master.
    assert result.returncode == (0 if command[0] == "report" else 1), result.stderr


def test_settings_from_the_environment_and_the_users_config(tmp_path: Path) -> None:
    named = tmp_path / "named.toml"
    named.write_text("[crawl]\ndepht = 1\n")
    result = run_crawler("master", "http://127.0.0.1:1/", cwd=tmp_path,
                         env=crawl_env(tmp_path, CRAWLER_SETTINGS=str(named)))
    assert result.returncode == 2
    assert f"{named}: crawl.depht: unknown key" in error_line(result)
    xdg = tmp_path / "xdg"
    (xdg / "crawler").mkdir(parents=True)
    (xdg / "crawler" / "settings.toml").write_text("[crawl]\nscope = \"planet\"\n")
    result = run_crawler("master", "http://127.0.0.1:1/", cwd=tmp_path,
                         env=crawl_env(tmp_path, XDG_CONFIG_HOME=str(xdg)))
    assert result.returncode == 2
    assert f"{xdg}/crawler/settings.toml: crawl.scope: expected one of" in error_line(result)


def test_master_and_worker_take_the_same_threads_flag() -> None:
    from crawler.cli import _settings, build_parser

    parser = build_parser()
    for argv in (["master", "http://a.example/", "--threads", "3"],
                 ["master", "http://a.example/", "--worker-threads", "3"],  # the old name
                 ["worker", "127.0.0.1:1", "--threads", "3"]):
        args = parser.parse_args([*argv, "--settings", os.devnull])
        assert _settings(args).worker.threads == 3, argv


def test_sizes_accept_and_reject_on_the_command_line() -> None:
    from crawler.cli import _settings, build_parser

    args = build_parser().parse_args(["master", "http://a.example/", "--settings", os.devnull,
                                      "--max-bytes", "10M", "--accept", r"\.png$",
                                      "--accept", r"\.jpe?g$", "--reject", "thumb",
                                      "--reject", "w_100,h_100", "--reject", "/full/150,150/"])
    settings = _settings(args)
    assert settings.download.max_bytes == 10 * 1024 * 1024
    assert settings.crawl.image_allow == (r"\.png$", r"\.jpe?g$")
    # (a comma between words that are no file suffixes: an image CDN's transform)
    # and numbers between commas: an IIIF image's size)
    assert settings.crawl.image_deny == ("thumb", "w_100,h_100", "/full/150,150/")


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-bytes", "10X"], "'10X' is not a size"),
    (["--reject", "thumb", "--reject", "[a-"],
     "crawler: error: --reject '[a-': not a regular expression (unterminated character set "
     "at position 0)"),
    (["--header", "X-Ok: 1", "--header", "NoColon"],
     "crawler: error: --header 'NoCo...': not a header: write it as 'Name: value'"),
    (["--scope", "planet"], "crawler: error: --scope 'planet': expected one of host, domain, any"),
    # A shell pattern, and wget's list of suffixes, which compiles and matched no image:
    # each is said with the regular expression it meant.
    (["--reject", "*.gif"],
     "crawler: error: --reject '*.gif': not a regular expression (nothing to repeat at "
     "position 0); a regular expression, not a shell pattern: for names ending in .gif, "
     "write '\\.gif$'"),
    (["--accept", "png,jpg"],
     "crawler: error: --accept 'png,jpg' is a list of file suffixes, as wget takes them; "
     "this takes a regular expression: for those, write '\\.(png|jpg)$'"),
    (["--accept", ".jpeg, .GIF"], "for those, write '\\.(jpeg|GIF)$'"),
    (["--accept", "*.jpg,*.png"], "not a shell pattern: for names ending in those, write "
                                  "'\\.(jpg|png)$'"),
])
def test_bad_size_or_pattern_exits_2(tmp_path: Path, flags: list[str], message: str) -> None:
    result = run_crawler("master", "http://127.0.0.1:1/", *flags, cwd=tmp_path,
                         env=crawl_env(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("flag", ["--max-bytes", "--limit-rate"])
def test_a_size_of_hundreds_of_digits_is_one_line_not_a_traceback(tmp_path: Path,
                                                                  flag: str) -> None:
    result = run_crawler("master", "http://127.0.0.1:1/", flag, "9" * 400, cwd=tmp_path,
                         env=crawl_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "too large a" in result.stderr or "expected a rate" in result.stderr


@pytest.mark.parametrize("given", [("--limit-rate", "9000000000G"),
                                   ("--settings", "huge-rate.toml")])
def test_a_rate_past_what_libcurl_takes_is_refused_before_anything_is_made(
        tmp_path: Path, site: FixtureServer, given: tuple[str, str]) -> None:
    """A finite rate past libcurl's 64-bit byte count (9000000000G) passed every check,
    then every request of the master raised OverflowError: a traceback per robots.txt and
    status 5 ("robots.txt unreachable (crawler error)"), its output folder made."""
    (tmp_path / "huge-rate.toml").write_text('[http]\nlimit_rate = "9000000000G"\n')
    result = run_crawler("master", site.url + "/", *given, "--out", "out", "--bind",
                         "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "'9000000000G' is too large a rate" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("line", "said"), [
    ("parsers = 1000000000000", "crawl.parsers: expected a number from 0 to "),
    ('lazy_attributes = [""]', "crawl.lazy_attributes: expected a list of attribute names"),
])
def test_a_settings_value_that_broke_the_crawl_stops_before_anything_is_made(
        tmp_path: Path, site: FixtureServer, line: str, said: str) -> None:
    """crawl.parsers = 10^12 was a MemoryError traceback (status 1) as the master started,
    its output folder and key made; an empty lazy attribute failed every page ("crawler
    error: ValueError") and the crawl with status 5."""
    (tmp_path / "bad.toml").write_text(f"[crawl]\n{line}\n")
    result = run_crawler("master", site.url + "/", "--settings", "bad.toml", "--out", "out",
                         "--bind", "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"crawler: error: bad.toml: {said}"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()
    assert site.paths() == []


def test_a_file_flag_written_with_an_equals_sign_and_a_tilde_is_under_home(
        tmp_path: Path, site: FixtureServer) -> None:
    """No shell expands "--settings=~/s.toml" (the tilde follows "=", not a space): it
    was read as a folder named "~" ("~/s.toml: settings file not found"), where
    "--out=~/images" and "--cookies=~/c.txt" were already taken as under home."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "s.toml").write_text('[crawl]\ndepth = 0\nimage_deny = ["cat"]\n')
    (home / "key").write_text("k" * 32)
    (home / "seeds.txt").write_text(site.url + "/gallery.html\n")
    result = run_crawler("master", "--dry-run", "--bind", "127.0.0.1:0", "--settings=~/s.toml",
                         "--authkey-file=~/key", "-i", "~/seeds.txt", "-o", "~/logs/crawl.log",
                         cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    images = result.stdout.split()
    assert f"{site.url}/images/red.png" in images  # on gallery.html, the seed the file gave
    assert f"{site.url}/photos/cat.jpg" not in images  # refused by the settings file
    assert (home / "logs" / "crawl.log").is_file()
    assert not (tmp_path / "~").exists()


def test_accept_and_reject_filter_the_images(tmp_path: Path, site: FixtureServer) -> None:
    result = run_crawler("master", site.url + "/", "--dry-run", "--bind", "127.0.0.1:0",
                         "--accept", r"\.png$", "--reject", "thumb", "--reject", "banner",
                         cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    images = result.stdout.split()
    assert f"{site.url}/images/red.png" in images
    assert images and all(url.endswith(".png") for url in images)
    assert not [url for url in images if "thumb" in url or "banner" in url]


def test_seeds_from_a_file_and_from_stdin(tmp_path: Path, site: FixtureServer) -> None:
    seeds = tmp_path / "seeds.txt"
    # With the byte-order mark Windows editors write before the first line.
    seeds.write_text(f"\ufeff{site.url}/gallery.html\n# pages to crawl\n\n   {site.url}/about/\n",
                     encoding="utf-8")
    base = ("--dry-run", "--depth", "0", "--bind", "127.0.0.1:0")
    from_file = run_crawler("master", "-i", str(seeds), *base, cwd=tmp_path,
                            env=crawl_env(tmp_path))
    assert from_file.returncode == 0, from_file.stderr
    assert f"{site.url}/photos/cat.jpg" in from_file.stdout.split()  # on gallery.html
    from_stdin = subprocess.run(
        [*crawler_command("master", "-i", "-", *base)], input=seeds.read_text(),
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=crawl_env(tmp_path),
        check=False)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert sorted(from_stdin.stdout.split()) == sorted(from_file.stdout.split())
    assert "/" not in site.paths()  # only the listed pages were crawled


@pytest.mark.parametrize(("stdin", "message"), [
    (None, "-i -: standard input is closed: give the seeds there, or -i FILE"),
    (b"\xff\xfehttp://127.0.0.1:1/\n", "standard input: not UTF-8 text (byte 0)"),
])
def test_standard_input_closed_or_not_utf8_is_said_as_a_seed_files_would_be(
        tmp_path: Path, stdin: bytes | None, message: str) -> None:
    """Closed, it was a traceback (None has no read()); bytes that are not UTF-8 were
    taken as a host name of surrogates, and refused as no domain name."""
    result = subprocess.run(
        crawler_command("master", "-i", "-", "--dry-run"), input=stdin,
        preexec_fn=(lambda: os.close(0)) if stdin is None else None,
        capture_output=True, timeout=60, cwd=tmp_path, env=crawl_env(tmp_path), check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().splitlines() == [f"crawler: error: {message}"]


def test_seeds_read_from_a_terminal_are_asked_for(tmp_path: Path) -> None:
    """-i - on a terminal waited for lines typed there without a word, as a hung command."""
    import pty

    typist, terminal = pty.openpty()
    try:
        master = subprocess.Popen(crawler_command("master", "-i", "-", "--dry-run"),
                                  stdin=terminal, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                  env=crawl_env(tmp_path))
        try:
            wait_for_output(master, "reading seed URLs from the terminal, one a line; end "
                                    "with Ctrl-D", timeout=10)
            os.write(typist, b"\x04")  # Ctrl-D on an empty line: the end of the input
            assert master.wait(timeout=30) == 2
        finally:
            master.kill()
            master.communicate()
    finally:
        os.close(typist)
        os.close(terminal)


@pytest.mark.parametrize(("args", "message"), [
    (["-i", "missing.txt"], "seed file missing.txt: not found"),
    ([], "no seed URL"),
])
def test_no_seeds_or_a_missing_seed_file_exits_2(tmp_path: Path, args: list[str],
                                                 message: str) -> None:
    result = run_crawler("master", *args, cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 2
    assert message in error_line(result)


def test_a_bad_line_of_a_seed_file_is_named_by_its_number(tmp_path: Path) -> None:
    (tmp_path / "seeds.txt").write_text("# seeds\nhttp://127.0.0.1:1/\n\nftp://bad.example/\n")
    result = run_crawler("master", "-i", "seeds.txt", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 2
    assert error_line(result).startswith(
        "crawler: error: seed file seeds.txt, line 4: seed 'ftp://bad.example/': ")


@pytest.mark.parametrize(("text", "message"), [
    ("http://127.0.0.1:1/a http://127.0.0.1:1/b\n",
     "seed file seeds.txt, line 1: one URL a line ('http://127.0.0.1:1/b' follows it; "
     "a comment starts with #)"),
    ("# only comments\n\n   # and blanks\n",
     "no seed URL: seeds.txt holds none (only blank lines and comments)"),
])
def test_a_seed_file_with_two_urls_on_a_line_or_none_at_all_is_refused(
        tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "seeds.txt").write_text(text)
    result = run_crawler("master", "-i", "seeds.txt", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert error_line(result) == f"crawler: error: {message}"


def test_local_workers_with_a_dry_run_are_said_to_be_unused(tmp_path: Path,
                                                            site: FixtureServer) -> None:
    result = run_crawler("master", site.url + "/gallery.html", "--dry-run", "--depth", "0",
                         "--local-workers", "2", "--bind", "127.0.0.1:0", cwd=tmp_path,
                         env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert ("--local-workers 2: a dry run downloads nothing, so it starts no workers"
            in result.stderr), result.stderr


def test_a_dry_run_cut_short_by_a_budget_says_so_beside_its_list(tmp_path: Path,
                                                                  site: FixtureServer) -> None:
    """Its standard output is the list of image URLs alone, and it said nothing else: a list
    cut at --max-pages passed for all the site has."""
    result = run_crawler("master", site.url + "/", "--dry-run", "--max-pages", "1",
                         "--bind", "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{site.url}/images/red.png" in result.stdout.splitlines()
    lines = result.stderr.splitlines()
    at = lines.index("dry run: the crawl's limits left pages or images out")
    assert re.fullmatch(r"  not visited +[1-9]\d* pages found: the page budget \(--max-pages\) "
                        r"was spent; a larger one lists more", lines[at + 1]), lines
    quiet = run_crawler("master", site.url + "/", "--dry-run", "--max-pages", "1", "-q",
                        "--bind", "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert quiet.returncode == 0 and "dry run" not in quiet.stderr, quiet.stderr


def test_a_comment_after_a_seed_url_is_left_out(tmp_path: Path, site: FixtureServer) -> None:
    (tmp_path / "seeds.txt").write_text(f"{site.url}/gallery.html   # the photos\n")
    result = run_crawler("master", "-i", "seeds.txt", "--dry-run", "--depth", "0", "--bind",
                         "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{site.url}/photos/cat.jpg" in result.stdout.split()
    assert "/gallery.html" in site.paths()


def test_status_given_an_output_folder_points_to_its_summary(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text("{}")
    (tmp_path / "out" / "manifest.jsonl").write_text("")
    result = run_crawler("status", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        f"crawler: error: out is a folder no master is crawling into now: status asks a "
        f"running master (give its HOST:PORT, or its output folder); a crawl's figures are "
        f"in {Path('out') / 'summary.json'}, and crawler report out makes its gallery")


def test_status_given_an_empty_folder_points_to_no_summary_it_lacks(tmp_path: Path) -> None:
    """It named the folder's summary.json and its gallery, neither of which is there."""
    (tmp_path / "out").mkdir()
    result = run_crawler("status", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        "crawler: error: out is a folder no master is crawling into now: status asks a "
        "running master (give its HOST:PORT, or its output folder); out holds no crawl's "
        "results")


def test_status_given_the_folder_of_a_running_crawl_of_an_older_master_asks_its_address(
        tmp_path: Path) -> None:
    """It pointed to the folder's summary.json, which a running crawl has removed. (A master
    of this version notes its queue's address in the lock: see the next test.)"""
    (tmp_path / "out").mkdir()
    result = _status_of_a_locked_folder(tmp_path / "out", lambda lock: None)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        "crawler: error: out is a folder a master is crawling into now: status asks that "
        "master, by the HOST:PORT it printed as 'queue on HOST:PORT' (crawler report out "
        "shows what it has stored so far)")


def _status_of_a_locked_folder(folder: Path, note: Callable[[FolderLock], None]
                               ) -> subprocess.CompletedProcess[str]:
    """``crawler status FOLDER`` while the folder is locked as a master holds it, with what
    ``note`` noted in the lock."""
    lock = FolderLock(folder)
    try:
        note(lock)
        return run_crawler("status", folder.name, cwd=folder.parent)
    finally:
        lock.release()


def test_status_given_a_broker_masters_folder_says_how_to_ask_the_broker(
        tmp_path: Path) -> None:
    """A broker master serves no queue; its folder held an earlier master's address, and
    status asked that (or told to use a 'queue on' line it never printed)."""
    (tmp_path / "out").mkdir()
    earlier = FolderLock(tmp_path / "out")
    earlier.note_queue("127.0.0.1:9")  # an embedded master's, which has ended
    earlier.release()

    def as_a_broker_master(lock: FolderLock) -> None:
        assert (tmp_path / "out" / "crawl.lock").read_bytes() == b""  # the last note, gone
        lock.note_broker("redis://127.0.0.1:6379/0", "docs")

    result = _status_of_a_locked_folder(tmp_path / "out", as_a_broker_master)
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        "crawler: error: out is the folder of a master of the crawl docs on the broker at "
        "redis://127.0.0.1:6379/0: status asks the broker: crawler status --broker "
        "redis://127.0.0.1:6379/0 --crawl docs")


def test_a_master_starting_while_its_folder_is_looked_at_is_not_refused(
        tmp_path: Path) -> None:
    """Looking whether a master crawls into a folder (crawler status DIR, polled) holds
    the lock shared for a moment: a master starting then was refused as if another
    crawled into it."""
    from crawler.master.folderlock import folder_in_use

    (tmp_path / "out").mkdir()
    looking = threading.Event()
    looks = 0

    def look() -> None:
        nonlocal looks
        while looking.is_set() and looks < 200_000:
            folder_in_use(tmp_path / "out")
            looks += 1

    looking.set()
    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    try:
        for _ in range(300):
            FolderLock(tmp_path / "out").release()
    finally:
        looking.clear()
        looker.join(10)
    assert looks > 0


def test_status_given_the_folder_of_a_running_crawl_asks_its_master(
        site: FixtureServer, tmp_path: Path) -> None:
    """A master started with -q and --bind 127.0.0.1:0 said its port nowhere, and status
    needs it: status DIR finds it where the master noted it, with the folder's key."""
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    # No worker comes: the crawl waits with its images queued, and status can ask.
    master = start_crawler("master", site.url + "/", "--out", "out", "-q", "--bind",
                           "127.0.0.1:0", cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            asked = run_crawler("status", "out", "--json", cwd=tmp_path, env=env)
            if asked.returncode == 0 and json.loads(asked.stdout)["progress"]["found"]:
                break
            assert time.monotonic() < deadline, asked.stderr
            time.sleep(0.2)
    finally:
        stop(master)
    status = json.loads(asked.stdout)
    assert status["folder"] == str((tmp_path / "out").resolve())
    assert status["progress"]["found"] >= len(site_images())  # (a missing one besides)
    after = run_crawler("status", "out", cwd=tmp_path, env=env)  # killed: no master now
    assert after.returncode == 2
    assert "out is a folder no master is crawling into now" in error_line(after)


def test_status_of_a_folder_whose_master_took_another_key_says_which_it_took(
        site: FixtureServer, tmp_path: Path) -> None:
    """A master given --authkey-file, its folder holding an older key: status DIR took the
    folder's, and the refusal pointed at that very file."""
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "authkey").write_text("a" * 32 + "\n")
    (tmp_path / "key").write_text("b" * 32 + "\n")
    (tmp_path / "key").chmod(0o600)
    (tmp_path / "out" / "authkey").chmod(0o600)
    master = start_crawler("master", site.url + "/", "--out", "out", "-q", "--bind",
                           "127.0.0.1:0", "--authkey-file", "key", cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            asked = run_crawler("status", "out", cwd=tmp_path, env=env)
            if asked.returncode == 1:
                break
            assert time.monotonic() < deadline, asked.stderr
            time.sleep(0.2)
        given = run_crawler("status", "out", "--authkey-file", "key", cwd=tmp_path, env=env)
        # A variable set takes the place of the folder's key: a refusal says it took it.
        variable = run_crawler("status", "out", cwd=tmp_path,
                               env={**env, "CRAWLER_AUTHKEY": "c" * 32})
    finally:
        stop(master)
    assert error_line(asked).endswith(
        f"(status took {Path('out') / 'authkey'}: for a master started with --authkey-file or "
        "CRAWLER_AUTHKEY, give the same here)"), asked.stderr
    assert given.returncode == 0, given.stderr
    assert variable.returncode == 1, variable.stderr
    assert error_line(variable).endswith(
        f"(status took $CRAWLER_AUTHKEY, not {Path('out') / 'authkey'}: unset it for the "
        "folder's key)"), variable.stderr


def test_dry_run_and_json_would_share_standard_output_and_are_refused(tmp_path: Path) -> None:
    result = run_crawler("master", "http://127.0.0.1:1/", "--dry-run", "--json", cwd=tmp_path,
                         env=crawl_env(tmp_path))
    assert result.returncode == 2
    assert "use one of them" in error_line(result)
    assert result.stdout == ""


def test_a_seed_without_a_scheme_is_https(tmp_path: Path, site: FixtureServer) -> None:
    host_port = site.url.removeprefix("http://")
    result = run_crawler("master", host_port, "--out", str(tmp_path / "out"), "--quiet",
                         "--bind", "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    # The fixture server speaks plain HTTP: asked for https, it cannot answer.
    assert result.returncode == 5, result.stderr
    assert f"no seed page could be fetched: https://{host_port}/" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"the server there does not speak TLS: for plain HTTP, give http://{host_port}/ "
        "(a seed without a scheme is https)"), result.stderr


def test_an_https_seed_given_so_is_not_said_to_lack_a_scheme(tmp_path: Path,
                                                             site: FixtureServer) -> None:
    host_port = site.url.removeprefix("http://")
    result = run_crawler("master", f"https://{host_port}/", "--out", str(tmp_path / "out"),
                         "--quiet", "--bind", "127.0.0.1:0", cwd=tmp_path,
                         env=crawl_env(tmp_path))
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"the server there does not speak TLS: for plain HTTP, give http://{host_port}/"), \
        result.stderr


@pytest.mark.parametrize(("seed", "meant"), [
    ("http//127.0.0.1:1/", "http://127.0.0.1:1/"),
    ("HTTPS//example.com/a", "https://example.com/a"),
    ("http;//127.0.0.1:1/", "http://127.0.0.1:1/"),
])
def test_a_seed_without_the_colon_of_its_scheme_is_refused_at_once(
        tmp_path: Path, seed: str, meant: str) -> None:
    """It was the seed https://http//127.0.0.1:1/, which failed a DNS lookup of "http"."""
    result = run_crawler("master", seed, "--out", str(tmp_path / "out"), cwd=tmp_path,
                         env=crawl_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert error_line(result) == f"crawler: error: seed {seed!r}: did you mean {meant}?"


@pytest.mark.parametrize("scheme", ["http:", "HTTP:"])
def test_a_seed_without_the_slashes_of_its_scheme_is_crawled_as_browsers_read_it(
        tmp_path: Path, site: FixtureServer, scheme: str) -> None:
    """http:127.0.0.1:PORT/ was taken for the host "http" with the port "127.0.0.1:PORT":
    "URL 'https://http:127.0.0.1:PORT/' has a bad port", where http:example.com was
    crawled."""
    seed = scheme + site.url.removeprefix("http://") + "/gallery.html"
    result = run_crawler("master", seed, "--dry-run", "--depth", "0", "--bind",
                         "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{site.url}/photos/cat.jpg" in result.stdout.split()


def test_an_image_as_the_seed_is_told_that_a_seed_is_a_page(tmp_path: Path,
                                                            site: FixtureServer) -> None:
    seed = site.url + "/images/red.png"
    result = run_crawler("master", seed, "--out", str(tmp_path / "out"), "--quiet",
                         "--bind", "127.0.0.1:0", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 5, result.stderr
    assert error_line(result) == (
        f"crawler: error: no seed page could be fetched: {seed}: not HTML (image/png); a seed "
        "must be an HTML page: images are found on the pages that show them, so give such "
        "a page")


@pytest.mark.parametrize(("args", "said"), [
    (("master", "http://127.0.0.1:1/", "--local-workers", "100000"),
     "--local-workers 100000: expected 0 to 256 (for more, start crawler worker on other hosts)"),
    (("demo", "--workers", "1000"), "--workers 1000: at most 256"),
])
def test_local_workers_beyond_what_one_host_serves_are_refused(
        tmp_path: Path, args: tuple[str, ...], said: str) -> None:
    result = run_crawler(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"crawler: error: {said}", result.stderr


def test_a_password_in_a_seed_url_is_warned_of(tmp_path: Path, site: FixtureServer) -> None:
    seed = site.url.replace("http://", "http://alice:s3cret-pass@") + "/"
    result = run_crawler("master", seed, "--dry-run", "--out", str(tmp_path / "out"),
                         cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "holds a password" in line]
    assert f"seed {site.url.replace('http://', 'http://alice:***@')}/ holds" in line, line
    assert "--netrc" in line and "s3cret-pass" not in line


def test_log_file_gets_the_log_lines_with_timestamps(tmp_path: Path) -> None:
    log_file = tmp_path / "crawl.log"
    port = free_port()
    result = run_crawler("master", f"http://127.0.0.1:{port}/", "-o", str(log_file),
                         "--out", str(tmp_path / "out"), "--bind", "127.0.0.1:0",
                         cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 5
    logged = log_file.read_text().splitlines()
    assert any("robots.txt of" in line and "unreachable" in line for line in logged)
    assert logged[-1].endswith(f"ERROR: no seed page could be fetched: http://127.0.0.1:{port}/"
                               ": robots.txt unreachable (connection error: connection refused)"
                               f"; nothing listens at 127.0.0.1:{port}: is its server running, "
                               "and is the address right?")
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+: ", line)
               for line in logged), logged
    # On the terminal: the announcements and the error line, and no log line.
    terminal = result.stderr.strip().splitlines()
    assert terminal[-1].startswith("crawler: error: no seed page could be fetched")
    assert not [line for line in terminal if line.startswith(("WARNING", "INFO", "ERROR"))]


def test_a_log_file_in_the_output_folder_of_a_first_run_is_written(tmp_path: Path) -> None:
    """-o OUT/crawl.log before OUT exists: its folder is made, as OUT itself would be."""
    log_file = tmp_path / "out" / "crawl.log"
    result = run_crawler("master", "http://127.0.0.1:1/", "-o", str(log_file), "--out",
                         str(tmp_path / "out"), "--bind", "127.0.0.1:0", cwd=tmp_path,
                         env=crawl_env(tmp_path))
    assert result.returncode == 5, result.stderr
    assert "no seed page could be fetched" in log_file.read_text()


def test_log_file_that_cannot_be_written_exits_3(tmp_path: Path) -> None:
    (tmp_path / "no").write_text("a file where the log's folder would be")
    result = run_crawler("master", "http://127.0.0.1:1/", "-o", str(tmp_path / "no" / "x.log"),
                         cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 3
    assert error_line(result) == (
        f"crawler: error: cannot create the log file's folder {tmp_path / 'no'}: "
        f"{tmp_path / 'no'} is a file where a folder is needed; move it away or choose "
        "another path")


def test_a_log_file_on_a_full_disk_is_said_once_and_exits_3(site: FixtureServer,
                                                            tmp_path: Path) -> None:
    """/dev/full opens, and every write to it fails as on a full disk."""
    result = run_crawler("master", site.url + "/", site.url + "/missing.html", "-o",
                         "/dev/full", "--out", str(tmp_path / "out"), "--bind", "127.0.0.1:0",
                         "--local-workers", "1", cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
    [said] = [line for line in result.stderr.splitlines() if "log file" in line]
    assert said.startswith("crawler: error: cannot write the log file /dev/full: ")
    assert (tmp_path / "out" / "summary.json").is_file()  # the crawl itself went on


@pytest.mark.parametrize(("shell", "marker"),
                         [("bash", "complete -o"), ("zsh", "#compdef crawler")])
def test_shell_completion_scripts(shell: str, marker: str) -> None:
    result = run_crawler("completion", shell)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    for word in ("master", "worker", "--max-bytes", "--input-file"):
        assert word in result.stdout


def test_completion_script_loads_in_bash(tmp_path: Path) -> None:
    script = tmp_path / "crawler.bash"
    script.write_text(run_crawler("completion", "bash").stdout)
    check = subprocess.run(["bash", "-c", f"source {script} && complete -p crawler"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    assert "crawler" in check.stdout


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    import crawler

    result = run_crawler(flag)
    assert result.returncode == 0
    assert result.stdout.strip() == f"crawler {crawler.__version__}"


def test_master_json_prints_the_summary_and_writes_summary_json(
        tmp_path: Path, site: FixtureServer, authkey: str) -> None:
    out = tmp_path / "out"
    result = run_crawler("master", site.url + "/", "--json", "--local-workers", "1",
                         "--threads", "2", "--out", str(out), "--bind", "127.0.0.1:0",
                         cwd=tmp_path, env=crawl_env(tmp_path))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert printed == json.loads((out / "summary.json").read_text())
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ok = [e for e in entries if e["status"] == "success"]
    assert printed["completed"] is True
    assert printed["succeeded"] == len(ok) and printed["failed"] == len(entries) - len(ok)
    assert printed["images_by_status"]["success"] == len(ok)
    assert printed["bytes"] == sum(e["bytes"] for e in ok)
    failures = collections.Counter(e["reason"] for e in entries if e["status"] != "success")
    assert printed["failures_by_reason"] == dict(failures) and failures
    assert printed["hosts"][site.url.removeprefix("http://")]["succeeded"] == len(ok)
    assert printed["download_s"]["max"] >= printed["download_s"]["mean"] > 0
    assert printed["pages"] >= 1 and printed["manifest"] == str(out / "manifest.jsonl")
    assert "crawl completed" not in result.stderr  # the text summary gives way to the JSON


def test_failures_that_differ_only_in_their_measure_are_one_reason(
        tmp_path: Path, make_server: Callable[[], FixtureServer], authkey: str) -> None:
    """Twelve icons of twelve sizes under min_width are "too small" twelve times, not
    twelve reasons; the manifest keeps each size. Past five reasons, the rest are summed."""
    server = make_server()
    icons = "".join(f'<img src="/i{n}.png">' for n in range(12))
    gone = "".join(f'<img src="/e{n}.png">' for n in range(5))
    server.routes["/"] = lambda h: h.send_body(200, f"<p>{icons}{gone}".encode(), "text/html")
    for n in range(12):
        server.routes[f"/i{n}.png"] = lambda h, n=n: h.send_body(200, png(8 + n, 8, n),
                                                                  "image/png")
    for n, status in enumerate((401, 403, 404, 410, 451)):
        server.routes[f"/e{n}.png"] = lambda h, status=status: h.send_body(
            status, b"no", "text/plain")
    (tmp_path / "settings.toml").write_text("[download]\nmin_width = 100\n")
    out = tmp_path / "out"
    result = run_crawler("master", server.url + "/", "--local-workers", "1", "--out", str(out),
                         "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == EXIT_NOTHING_STORED, result.stderr  # each image failed
    assert ("WARNING: no image was stored: each of the 17 images found failed (the summary's "
            "top failure reasons above say why); exit status 7") in result.stderr, result.stderr
    reasons = json.loads((out / "summary.json").read_text())["failures_by_reason"]
    assert reasons["too small"] == 12 and len(reasons) == 6, reasons
    assert "        12  too small\n" in result.stderr, result.stderr
    assert f"         1  for 1 other reason(s): failures_by_reason in {out}/summary.json" \
        in result.stderr, result.stderr
    sizes = {e["reason"] for e in manifest_lines(out) if e["reason"].startswith("too small")}
    assert sizes == {f"too small: {8 + n}x8" for n in range(12)}


def test_images_a_stray_file_keeps_from_their_folder_are_one_reason(
        tmp_path: Path, make_server: Callable[[], FixtureServer], authkey: str) -> None:
    """A file left where the images of /sub/ need their folder: each failure names its
    image's path, and the summary counted each as a reason of its own."""
    server = make_server()
    images = "".join(f'<img src="/sub/i{n}.png">' for n in range(3))
    server.routes["/"] = lambda h: h.send_body(200, f"<p>{images}".encode(), "text/html")
    for n in range(3):
        server.routes[f"/sub/i{n}.png"] = lambda h, n=n: h.send_body(200, png(8, 8, n),
                                                                      "image/png")
    out = tmp_path / "out"
    host_folder = out / "images" / "http" / server.url.removeprefix("http://").replace(":", "_")
    host_folder.mkdir(parents=True)
    (host_folder / "sub").write_text("not the crawler's")
    result = run_crawler("master", server.url + "/", "--local-workers", "1", "--out", str(out),
                         "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == EXIT_NOTHING_STORED, result.stderr
    reasons = json.loads((out / "summary.json").read_text())["failures_by_reason"]
    assert reasons == {"cannot store: a file the crawler did not store is where a folder is "
                       "needed; move it away, then run the same command again": 3}, reasons
    said = {e["reason"] for e in manifest_lines(out)}
    assert len(said) == 3 and all(f"/sub/i{n}.png" in reason
                                  for n, reason in enumerate(sorted(said))), said


def test_readme_settings_table_names_every_settings_flag() -> None:
    """Each flag that sets a setting is in README's settings table, on that setting's row."""
    from crawler.cli import SETTING_FLAGS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = [line.split("|") for line in readme.splitlines()
            if line.startswith("| `") and line.count("|") >= 5]
    flags_of: dict[str, str] = {}
    for row in rows:
        for key in re.findall(r"`([a-z_]+\.[a-z_]+)`", row[1]):
            flags_of[key] = row[3]
    for command, flags in SETTING_FLAGS.items():
        for flag, key, *_ in flags:
            assert key in flags_of, f"README's settings table has no row for {key}"
            assert re.search(rf"`{flag}\b(?!-)", flags_of[key]), \
                f"{command} {flag} is not on the {key} row"


def test_a_master_starting_beside_another_never_reads_its_key_half_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two masters started at once on a new folder: the second read the authkey file
    between the first's create and write, found it empty, and advised writing a new key
    over the one in use. A slow write here holds that moment open."""
    import threading

    from crawler.master import authkey as authkey_module

    monkeypatch.delenv("CRAWLER_AUTHKEY", raising=False)
    real_fdopen = os.fdopen
    first_writes = threading.Event()

    def slow_fdopen(fd: int, *args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "first":
            first_writes.set()
            time.sleep(0.3)  # the file is made, its key not yet in it
        return real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(authkey_module.os, "fdopen", slow_fdopen)
    keys: dict[str, object] = {}

    def start(name: str) -> None:
        try:
            keys[name] = authkey_module.master_authkey(None, tmp_path / "out", keep=True).key
        except Exception as exc:  # noqa: BLE001 - what the second master would say
            keys[name] = exc

    first = threading.Thread(target=start, args=("first",), name="first")
    first.start()
    assert first_writes.wait(5)
    start("second")  # while the first writes
    first.join(5)
    assert isinstance(keys["second"], bytes) and keys["second"] == keys["first"], keys
    assert (tmp_path / "out" / "authkey").read_bytes() == keys["first"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["authkey"]  # no draft left


def test_an_empty_key_file_of_the_masters_own_says_to_remove_it(
        tmp_path: Path, site: FixtureServer) -> None:
    """A power cut soon after a master made OUT/authkey can leave it empty. The way out
    said was to write a new key into ./authkey, a file no master reads: remove the one
    in the folder instead, and the next start makes it again."""
    no_key = {k: v for k, v in crawl_env(tmp_path).items() if k != "CRAWLER_AUTHKEY"}
    out = tmp_path / "out"
    out.mkdir()
    (out / "authkey").write_bytes(b"")
    command = ("master", site.url + "/", "--out", str(out), "--bind", "127.0.0.1:0",
               "--dry-run")
    refused = run_crawler(*command, cwd=tmp_path, env=no_key)
    assert refused.returncode == 2, refused.stderr
    assert error_line(refused) == (
        f"crawler: error: the authkey file {out / 'authkey'} is empty; the master made it, "
        "and a crash as it did can leave it so: remove it, and the master makes a new one")
    (out / "authkey").unlink()
    done = run_crawler(*command[:-1], "--local-workers", "1", cwd=tmp_path, env=no_key)
    assert done.returncode == 0, done.stderr
    assert (out / "authkey").read_bytes().strip()


def test_a_master_refused_for_a_folder_in_use_leaves_the_key_it_made(tmp_path: Path) -> None:
    """Two masters started together on a new folder: one made the key, the other read it
    and took the lock. The one refused for the folder in use must not take that key
    away: the running master and the workers it told to use the file need it."""
    from crawler.errors import OutputFolderInUse, UsageError
    from crawler.master import authkey as authkey_module

    made = authkey_module.master_authkey(None, tmp_path / "out", keep=True)
    assert made.fresh
    authkey_module.forget_if_refused(made, OutputFolderInUse("another master crawls into it"))
    assert (tmp_path / "out" / "authkey").read_bytes() == made.key
    # Any other refusal as it starts still leaves nothing behind.
    authkey_module.forget_if_refused(made, UsageError("no seed URL"))
    assert not (tmp_path / "out").exists()
