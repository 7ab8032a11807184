"""The command line: help, and one clear line with a documented exit status for each mistake."""

from __future__ import annotations

import os
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest

from .conftest import (
    FixtureServer,
    finish,
    free_port,
    run_crawler,
    start_crawler,
    wait_for_queue_address,
)


@pytest.mark.parametrize("command", ["master", "worker", "demo", "status", "report"])
def test_every_command_explains_itself(command: str) -> None:
    result = run_crawler(command, "--help")
    assert result.returncode == 0
    assert "usage: crawler " + command in result.stdout
    assert "--settings" in result.stdout


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
    assert wrote.stdout == f"wrote {tmp_path}/index.html\n"
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


@pytest.mark.parametrize("command", [["status", "127.0.0.1:1"], ["master", "http://127.0.0.1:1/"]])
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
    assert f"cannot use {blocker}/demo for the demo's output" in error_line(result)


@pytest.mark.parametrize("seed", ["ftp://example.com/", "not a url", "http:///nohost",
                                  "javascript:alert(1)"])
def test_seed_that_is_not_http_exits_2(tmp_path: Path, seed: str) -> None:
    result = run_crawler("master", seed, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert "seed" in error_line(result)


def test_flag_with_bad_value_exits_2(tmp_path: Path) -> None:
    result = run_crawler("master", "http://127.0.0.1:1/", "--depth", "-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "crawl.depth: expected a number >= 0" in error_line(result)


def test_port_in_use_exits_4(tmp_path: Path, site: FixtureServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_crawler("master", site.url + "/", "--bind", f"127.0.0.1:{port}",
                             "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 4
    assert f"cannot serve the queue on 127.0.0.1:{port}" in error_line(result)
    # Nothing was fetched or journaled: a later run there starts clean.
    assert site.paths() == []
    assert not (tmp_path / "out" / "crawl.sqlite").exists()


@pytest.mark.parametrize("command", [["master", "http://127.0.0.1:1/", "--bind", "[::1]:9000"],
                                     ["worker", "[::1]:9000"]])
def test_an_ipv6_queue_address_is_refused_in_one_line(tmp_path: Path, authkey: str,
                                                      command: list[str]) -> None:
    result = run_crawler(*command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "IPv4" in error_line(result)


def test_short_authkey_refused_on_a_public_bind(tmp_path: Path) -> None:
    env = {**os.environ, "CRAWLER_AUTHKEY": "short"}
    result = run_crawler("master", "http://127.0.0.1:1/", "--bind", "0.0.0.0:0", cwd=tmp_path,
                         env=env)
    assert result.returncode == 2
    line = error_line(result)
    assert "at least 16 bytes" in line and "secrets.token_hex(16)" in line


def test_unwritable_output_folder_exits_3(tmp_path: Path, site: FixtureServer) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = run_crawler("master", site.url + "/", "--out", str(blocker / "out"),
                         "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 3
    assert "cannot create the output folder" in error_line(result)


def test_worker_without_authkey_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRAWLER_AUTHKEY"}
    result = run_crawler("worker", "127.0.0.1:1", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "CRAWLER_AUTHKEY" in error_line(result)


def test_worker_gives_up_on_a_missing_master(tmp_path: Path, authkey: str) -> None:
    port = free_port()
    started = time.monotonic()
    result = run_crawler("worker", f"127.0.0.1:{port}", "--connect-wait", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert f"could not reach the master at 127.0.0.1:{port} within 1 s" in result.stderr
    assert time.monotonic() - started < 30


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
    assert "refused a queue connection from 127.0.0.1" in err
    assert "wrong authkey" in err
    assert authkey not in err and "0" * 32 not in err


def test_worker_pointed_at_something_else_says_so(site: FixtureServer, tmp_path: Path,
                                                  authkey: str) -> None:
    port = site.server_address[1]
    result = run_crawler("worker", f"127.0.0.1:{port}", "--connect-wait", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert f"no handshake from 127.0.0.1:{port} within 5 s" in result.stderr
    assert "is that a crawler master's queue port?" in result.stderr


def test_a_seed_on_a_closed_port_is_not_a_success(tmp_path: Path) -> None:
    port = free_port()
    result = run_crawler("master", f"http://127.0.0.1:{port}/", "--out", str(tmp_path / "out"),
                         "--bind", f"127.0.0.1:{free_port()}", "--quiet", cwd=tmp_path)
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"crawler: error: no seed page could be fetched: http://127.0.0.1:{port}/: robots.txt"
        " unreachable (connection error: connection refused)")

