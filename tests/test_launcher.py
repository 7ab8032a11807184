"""Local workers forked from the master: let go when its queue serves, gone if it never does."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from crawler.master import launcher
from crawler.master.authkey import Authkey

from .conftest import FixtureServer, command_words, run_crawler, wait_until


def _forked(tmp_path: Path) -> tuple[launcher._ForkedWorker, int, Path]:
    """A forked child that waits on a gate, then writes a file: (child, gate, file)."""
    ran = tmp_path / "ran"

    def command(args: Sequence[str]) -> int:
        ran.write_text(" ".join(args))
        return 7

    gate_r, gate_w = os.pipe()
    child = launcher._fork_worker(command, ["worker", "127.0.0.1:9"], {}, tmp_path / "w.log",
                                  gate_r)
    os.close(gate_r)
    return child, gate_w, ran


def test_a_worker_forked_early_waits_and_runs_once_let_go(tmp_path: Path) -> None:
    child, gate, ran = _forked(tmp_path)

    wait_until(lambda: command_words(child.pid)[:3] == [b"crawler", b"worker", b"127.0.0.1:9"], 10,
               "the child's title in ps")
    assert child.poll() is None and not ran.exists(), "it waits to be let go"
    os.write(gate, b"go")
    os.close(gate)
    assert child.wait(10) == 7
    assert ran.read_text() == "worker 127.0.0.1:9"


def test_a_worker_forked_early_leaves_quietly_when_its_master_never_serves(
        tmp_path: Path) -> None:
    child, gate, ran = _forked(tmp_path)
    os.close(gate)  # the master ended (or was killed) before serving its queue
    assert child.wait(10) == 0
    assert not ran.exists()
    assert (tmp_path / "w.log").read_text() == ""


def test_a_gate_on_a_standard_descriptor_survives_the_childs_redirections(
        tmp_path: Path) -> None:
    """A master started with stdin closed may get its gate pipe as descriptor 0, which
    the child then points at /dev/null: the gate is moved out of the way first."""
    ran = tmp_path / "ran"

    def command(args: Sequence[str]) -> int:
        ran.write_text("ran")
        return 0

    gate_r, gate_w = os.pipe()
    saved_stdin = os.dup(0)
    try:
        os.dup2(gate_r, 0)
        child = launcher._fork_worker(command, ["worker"], {}, tmp_path / "w.log", 0)
    finally:
        os.dup2(saved_stdin, 0)
        os.close(saved_stdin)
        os.close(gate_r)
    os.write(gate_w, b"go")
    os.close(gate_w)
    assert child.wait(10) == 0
    assert ran.read_text() == "ran", "the child read /dev/null as its gate and never ran"


def _niceness(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_forked_workers_run_nicer_than_their_master(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The master and its parsers feed every worker: on busy cores they go first.
    Every thread of the worker: on Linux each thread has its own niceness."""
    seen = tmp_path / "niceness"

    def command(args: Sequence[str]) -> int:
        found: list[int] = []
        thread = threading.Thread(target=lambda: found.append(_niceness(0)))
        thread.start()
        thread.join(10)
        seen.write_text(f"{_niceness(0)} {found[0]}")
        return 0

    workers = launcher.LocalWorkers(tmp_path, Authkey(b"k" * 32, "test"), threads=2,
                                    command=command)
    # A master forks only while it has one thread; pytest's workers run others (the
    # child here starts one thread and leaves).
    monkeypatch.setattr(workers, "_can_fork", lambda: True)
    workers.start(1, "127.0.0.1", 9)  # not forked early: it runs at once
    try:
        wait_until(lambda: seen.exists() and seen.read_text(), 10, "the worker's niceness")
        nicer = min(_niceness(0) + launcher.WORKER_NICENESS, 19)
        assert seen.read_text() == f"{nicer} {nicer}"
    finally:
        workers.stop()


def test_a_forked_worker_is_nicer_before_it_runs_a_line_of_the_worker(tmp_path: Path) -> None:
    """The child sets its niceness itself: the master's own call may come after the
    worker has started threads, which would keep the master's."""
    seen = tmp_path / "niceness"
    target = min(_niceness(0) + 3, 19)

    def command(args: Sequence[str]) -> int:
        seen.write_text(str(_niceness(0)))
        return 0

    child = launcher._fork_worker(command, ["worker"], {}, tmp_path / "w.log", None, target)
    assert child.wait(10) == 0
    assert seen.read_text() == str(target)


def test_started_workers_run_nicer_than_their_master(tmp_path: Path) -> None:
    """Without a command to fork (a master run from a program), a fresh interpreter."""
    workers = launcher.LocalWorkers(tmp_path, Authkey(b"k" * 32, "test"), threads=2)
    workers.start(1, "127.0.0.1", 9)  # nothing listens: it waits for a master there
    try:
        (child,) = workers.alive()
        assert _niceness(child.pid) == min(_niceness(0) + launcher.WORKER_NICENESS, 19)
    finally:
        workers.stop()


def test_a_worker_that_cannot_be_started_is_said_and_the_master_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A host out of processes: a warning, not a traceback from the master."""
    workers = launcher.LocalWorkers(tmp_path, Authkey(b"k" * 32, "test"), threads=2,
                                    command=lambda args: 0)
    monkeypatch.setattr(workers, "_can_fork", lambda: True)

    def fail() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", fail)
    workers.fork_early(2, "127.0.0.1", 9)
    assert workers.alive() == []
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == ("cannot start local worker 1 (Resource temporarily unavailable); "
                       "0 of 2 started: the crawl waits for workers from elsewhere")
    workers.start(2, "127.0.0.1", 9)  # the gate of none is opened: nothing to let go
    workers.stop()


@pytest.mark.parametrize(("fqdn", "resolved", "shown"), [
    ("build.example", {"build.example": ["10.0.0.5"]}, "build.example"),
    # A name that resolves to an address of its own is the name.
    ("vm", {"vm": ["127.0.1.1", "192.168.1.9"]}, "vm"),
    # Debian's installer maps the host's name to 127.0.1.1: another address is shown.
    ("vm.local", {"vm.local": ["127.0.1.1"], "vm": ["127.0.1.1", "192.168.1.9"]},
     "192.168.1.9"),
    # No name or address other hosts could use: a placeholder, never "localhost".
    ("localhost", {"localhost": ["127.0.0.1"], "vm": ["127.0.0.1"]}, "THIS-HOST"),
    # The name resolves to none of its own (a network namespace's host): an interface's.
    ("localhost", {"localhost": ["127.0.0.1"]}, "10.77.0.2"),
    # The queue on 0.0.0.0 takes IPv4 only: an IPv6 address of the host is no use.
    ("localhost", {"localhost": ["127.0.0.1"], "vm": ["2001:db8::5", "10.0.0.5"]}, "10.0.0.5"),
])
def test_a_master_on_every_interface_names_itself_as_other_hosts_reach_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fqdn: str,
        resolved: dict[str, list[str]], shown: str) -> None:
    def getaddrinfo(name: str, *_: object, family: int = 0,
                    **__: object) -> list[tuple[object, ...]]:
        if name not in resolved:
            raise OSError("no such name")
        wanted = [a for a in resolved[name]
                  if not family or (":" in a) == (family == socket.AF_INET6)]
        return [(0, 0, 0, "", (address, 0)) for address in wanted]

    monkeypatch.setattr(launcher.socket, "getfqdn", lambda: fqdn)
    monkeypatch.setattr(launcher.socket, "gethostname", lambda: "vm")
    monkeypatch.setattr(launcher.socket, "getaddrinfo", getaddrinfo)
    # This host's interfaces: loopback, and in the namespace's case its own address.
    interfaces = ["127.0.0.1", "10.77.0.2"] if "vm" not in resolved else ["127.0.0.1"]
    monkeypatch.setattr(launcher, "_interface_addresses", lambda: interfaces)
    line = launcher.invitation("0.0.0.0", 4242, Authkey(b"k" * 32, "environment"), tmp_path)
    assert line == (f"workers on other hosts: crawler worker {shown}:4242  # with the same "
                    "CRAWLER_AUTHKEY as the master"), line


def test_workers_are_awaited_until_they_leave_or_a_stop_is_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A master reaps the local workers that said goodbye last, each given time to end by
    itself; a stop asked meanwhile (Ctrl-C) cuts that wait short."""
    def command(args: Sequence[str]) -> int:
        if "--linger" in args:
            time.sleep(60)
        return 0

    quick = launcher.LocalWorkers(tmp_path, Authkey(b"k" * 32, "test"), threads=1,
                                  command=command)
    lingering = launcher.LocalWorkers(tmp_path, Authkey(b"k" * 32, "test"), threads=1,
                                      command=lambda args: command([*args, "--linger"]))
    for workers in (quick, lingering):
        monkeypatch.setattr(workers, "_can_fork", lambda: True)
        workers.start(1, "127.0.0.1", 9)
    try:
        started = time.monotonic()
        quick.wait_all(60)
        assert not quick.alive() and time.monotonic() - started < 30, "not awaited to the end"
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        lingering.wait_all(60, until=stop)
        assert time.monotonic() - started < 30, "the stop asked did not end the wait"
        assert lingering.alive(), "it was awaited, not stopped"
    finally:
        quick.stop()
        lingering.stop()
    assert not lingering.alive()


def test_a_worker_of_a_folder_whose_name_is_not_utf8_starts(tmp_path: Path) -> None:
    """Its title in ps was the arguments as UTF-8: a folder named with other bytes (lone
    surrogates to Python) failed setproctitle, and the child exited 70 before its log was
    opened, so every local worker of such a crawl was gone without a word."""
    out = os.fsdecode(bytes(tmp_path) + b"/out-\xff")
    ran = tmp_path / "ran"

    def command(args: Sequence[str]) -> int:
        ran.write_bytes(os.fsencode(" ".join(args)))
        return 7

    child = launcher._fork_worker(command, ["worker", "127.0.0.1:9", "--out", out], {},
                                  tmp_path / "w.log", None)
    assert child.wait(10) == 7
    assert ran.read_bytes() == b"worker 127.0.0.1:9 --out " + os.fsencode(out)


class _Ended:
    """A local worker's process, ended with ``code`` (None: running)."""

    def __init__(self, code: int | None) -> None:
        self.pid = 0
        self.returncode = code

    def poll(self) -> int | None:
        return self.returncode


def test_a_worker_waiting_to_start_again_is_counted_as_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """While one killed waits out its restart's delay, another that ended was reported
    with "0 local worker(s) left, the crawl waits for workers from elsewhere"."""
    now = [100.0]
    monkeypatch.setattr(launcher.time, "monotonic", lambda: now[0])
    workers = launcher.LocalWorkers(tmp_path, Authkey(b"k" * 32, "environment"), 2)
    started: list[int] = []

    def start_one(n: int, *_: object) -> _Ended:
        started.append(n)
        return _Ended(None)

    monkeypatch.setattr(workers, "_start_one", start_one)
    workers._how = (["worker"], {})
    workers._processes = [_Ended(1), _Ended(-9)]  # type: ignore[list-item]
    with caplog.at_level("WARNING", logger=launcher.__name__):
        workers.report_ended()
        assert started == [] and workers.left() == 1
        assert "local worker 1 exited with status 1 (log: " in caplog.text
        assert "1 local worker(s) left" in caplog.text and "elsewhere" not in caplog.text
        now[0] += launcher.RESTART_DELAY
        workers.report_ended()
    assert started == [2] and workers.left() == 1
    assert "local worker 2 was killed by SIGKILL" in caplog.text


def test_a_worker_that_cannot_be_started_again_is_not_counted_as_to_come(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workers = launcher.LocalWorkers(tmp_path, Authkey(b"k" * 32, "environment"), 2)

    def out_of_processes(*_: object) -> _Ended:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(workers, "_start_one", out_of_processes)
    monkeypatch.setattr(launcher, "RESTART_DELAY", 0.0)
    workers._how = (["worker"], {})
    workers._processes = [_Ended(-9)]  # type: ignore[list-item]
    workers.report_ended()
    workers.report_ended()  # its delay over: tried once, and given up
    assert workers.left() == 0
    assert (tmp_path / "worker-1.log").read_text().splitlines()[-1] == (
        "--- it could not be started again: Resource temporarily unavailable ---")


def test_a_worker_started_again_is_said_by_its_own_last_line(tmp_path: Path) -> None:
    """The line its master writes as it starts one again divides the log: what the dead one
    said last is not given as the reason the new one ended."""
    workers = launcher.LocalWorkers(tmp_path, Authkey(b"k" * 32, "environment"), 2)
    log_file = tmp_path / "worker-1.log"
    log_file.write_text("the old one's last words\n")
    assert workers._last_line(1) == "the old one's last words"
    log_file.write_text("the old one's last words\n--- started again by its master at "
                        "12:00:00: the last one was killed by SIGKILL (restart 1 of 3) ---\n")
    assert workers._last_line(1) == ""
    with log_file.open("a") as more:
        more.write("the new one's\n")
    assert workers._last_line(1) == "the new one's"


def test_the_worker_command_for_a_folder_whose_name_is_not_utf8_can_be_pasted(
        tmp_path: Path) -> None:
    """Quoted as text, the name showed \\udcff: pasted, the worker looked for another folder
    and a key file that was not there. The shell must give back the folder's own bytes."""
    out = Path(os.fsdecode(bytes(tmp_path) + b"/out-\xff it's"))
    out.mkdir()
    key_file = out / "authkey"
    key_file.write_bytes(b"k" * 32)
    line = launcher.invitation("127.0.0.1", 4242, Authkey(b"k" * 32, str(key_file)), out)
    command = line.split(": ", 1)[1]
    assert "udc" not in command, command
    echoed = subprocess.run(["bash", "-c", "printf '%s\\0' " + command], capture_output=True,
                            check=True, timeout=10).stdout.split(b"\0")
    assert echoed[:7] == [b"crawler", b"worker", b"127.0.0.1:4242", b"--out", bytes(out),
                          b"--authkey-file", bytes(key_file)]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_worker_log_that_cannot_be_written_stops_the_master_with_exit_3(
        site: FixtureServer, tmp_path: Path, authkey: str, workers: str) -> None:
    """A folder where a local worker's log goes: its worker could not start, and the
    master waited for ever for a worker to take its images."""
    out = tmp_path / "out"
    (out / f"worker-{workers}.log").mkdir(parents=True)
    done = run_crawler("master", site.url + "/", "--bind", "127.0.0.1:0", "--out", str(out),
                       "--local-workers", workers, "--quiet", cwd=tmp_path, timeout=30)
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (f"crawler: error: cannot write the local worker log {out}/worker-{workers}"
                    ".log: it is a folder; move it away, or choose another output folder")
    assert not list(out.glob("images/**/*.png")), "no worker was started"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read with Linux's ioctl")
def test_this_hosts_interface_addresses_are_read() -> None:
    assert "127.0.0.1" in launcher._interface_addresses()
