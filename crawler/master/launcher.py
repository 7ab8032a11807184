"""How workers join a master: the command it prints for them, and the workers it starts itself.

The master announces its queue and, for workers started by hand, the exact
command (on this host with the master's output folder, so a worker's images
land where the master records and reports them). Local workers
(``--local-workers``) are processes of the same program; their output goes to
``OUT/worker-N.log``, and one that ends early is reported with the last line
of that log.

Started from the ``crawler`` command, a local worker is forked from the master,
which has imported most of what a worker runs: a fresh interpreter cost each
worker about 100 ms of CPU (35 ms to start, the rest imports) before its first
download, a tenth of a small crawl's CPU on two cores. The fork runs ``crawler
worker`` as a fresh process would: its own standard streams, none of the
master's descriptors (its queue's listening socket, its parsers' pipes), default
signal handlers, and the command line ``crawler worker ...`` in ``ps``. Forking
is safe only while the master has one thread, and the command's entry point
must be at hand (this layer cannot import it): a master run from a program
(``crawler.api``), or one that runs other threads already, starts fresh
interpreters instead.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from crawler.config import BROKER_PASSWORD_ENV
from crawler.errors import AuthkeyError, CrawlerError, StorageError
from crawler.master.authkey import ENV_VAR, Authkey, is_loopback
from crawler.model.shellword import shell_word
from crawler.model.wire import LOCAL_WORKER_ENV, STOPPED_BY_ITS_MASTER_ENV

if TYPE_CHECKING:
    from crawler.board.broker import BrokerAddress

log = logging.getLogger(__name__)

STOP_WAIT = 5.0  # seconds a local worker gets to leave once told, before it is killed
WAIT_STEP = 0.05  # seconds between looks at a stop asked while workers are awaited
# How much nicer than the master a local worker runs. The master and its page parsers
# are the crawl's critical path: every image a worker downloads comes from a page they
# read. On cores the workers keep busy, the pages go first and the workers take the
# rest (on two cores a real site's crawl over http ended 5-9% sooner; over https, and
# on a site where the workers are the limit, no sooner and no later).
WORKER_NICENESS = 5
# A local worker killed by a signal (the kernel's out-of-memory killer, a crash in a
# library, a kill -9) is started again, this many times at most for each: else a crawl
# started with its workers waited for ever for workers from elsewhere. One that ends by
# itself (the crawl over, its disk full, a stop) is not: it said why, and would again.
RESTARTS = 3
# Seconds before the first restart, doubled for each next one: a worker that dies as it
# starts (a crash on every start, memory still short) does not spend its restarts in a
# second.
RESTART_DELAY = 0.5
# A line the master writes into a worker's log as it starts the worker again: what the
# dead one said last is above it, not taken for the new one's reason to end.
_RESTART_LINE = "--- started again by its master"


def invitation(host: str, port: int, authkey: Authkey, out_dir: Path) -> str:
    """The line that tells an operator how a worker joins the queue at ``host:port``."""
    if is_loopback(host):
        # --out: a worker on this host stores where the master records and reports.
        out = shell_word(out_dir.resolve())
        return (f"workers on this host: crawler worker {host}:{port} --out {out} "
                + _key_hint(authkey, other_hosts=False))
    return (f"workers on other hosts: crawler worker {_public_name(host)}:{port} "
            + _key_hint(authkey, other_hosts=True))


def _key_hint(authkey: Authkey, *, other_hosts: bool) -> str:
    """How a worker gets the key; a note after it is a shell comment, so that the whole
    line can be pasted."""
    if authkey.source == "environment":
        return f" # with the same {ENV_VAR} as the master"
    notes = []
    if authkey.fresh:
        notes.append("a new key")
    if other_hosts:
        notes.append("copy that file to each worker host")
    key_file = _key_file(authkey)
    if key_file is None:  # given to crawl() as an argument: no file to name
        return f" # with {ENV_VAR} set to the master's key"
    # Absolute, as --out is: the command is pasted in other folders and on other hosts.
    return (f"--authkey-file {shell_word(key_file)}"
            + (f"  # {': '.join(notes)}" if notes else ""))


def _key_file(authkey: Authkey) -> Path | None:
    """The file the key was read from (or made in), absolute; None when there is none."""
    if authkey.source in ("", "environment", "argument", "generated"):
        return None  # no file (whatever a file of that name in this folder holds)
    path = Path(authkey.source)
    return path.resolve() if path.is_file() else None


def local_address(host: str, port: int) -> str:
    """Where a worker (or ``crawler status``) on this host reaches a queue bound to
    ``host:port``."""
    every_interface = host in ("0.0.0.0", "::", "")  # noqa: S104 - a comparison, not a bind
    return f"{'127.0.0.1' if every_interface else host}:{port}"


def _public_name(host: str) -> str:
    """A name other hosts can use for this one, when bound to every interface.

    The host's name, unless it stands for this host alone (``localhost``, or a name
    /etc/hosts maps to 127.0.1.1, as Debian's installer writes it): then an address of
    this host's that is not loopback, or a placeholder the operator fills in.
    """
    if host not in ("0.0.0.0", "::"):  # noqa: S104 - a comparison, not a bind
        return host
    family = socket.AF_INET if host == "0.0.0.0" else socket.AF_INET6  # noqa: S104
    name = socket.getfqdn()
    addresses = _addresses(name, family)
    if name != "localhost" and addresses and not all(map(is_loopback, addresses)):
        return name
    others = [a for a in _addresses(socket.gethostname(), family)
              if not is_loopback(a) and not ipaddress.ip_address(a).is_link_local]
    if not others and family == socket.AF_INET:
        # The name resolves to no address of its own (a container's, a namespace's): the
        # interfaces' own, said as THIS-HOST though 10.77.0.2 was on one.
        others = [a for a in _interface_addresses()
                  if not is_loopback(a) and not ipaddress.ip_address(a).is_link_local]
    if not others:
        return "THIS-HOST"
    return f"[{others[0]}]" if ":" in others[0] else others[0]


def _interface_addresses() -> list[str]:
    """The IPv4 address of each of this host's interfaces that has one (Linux; none
    elsewhere, or where they cannot be read)."""
    import fcntl
    import struct

    siocgifaddr = 0x8915  # Linux's ioctl for an interface's address
    found: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            for name in names:
                request = struct.pack("256s", name.encode()[:15])
                try:
                    answer = fcntl.ioctl(probe.fileno(), siocgifaddr, request)
                except OSError:  # no IPv4 address on it
                    continue
                found.append(socket.inet_ntoa(answer[20:24]))
    except (OSError, AttributeError):  # (no if_nameindex, or no fcntl: not Linux)
        return []
    return found


def _addresses(name: str, family: int) -> list[str]:
    """The addresses of ``family`` that ``name`` resolves to here (none if it does not)."""
    try:
        return [str(info[4][0]).split("%")[0] for info in socket.getaddrinfo(
            name, None, family=family, type=socket.SOCK_STREAM)]
    except (OSError, UnicodeError):
        return []


class LocalWorkers:
    """Worker processes this master started, on this host."""

    def __init__(self, out_dir: Path, authkey: Authkey, threads: int,
                 command: Callable[[Sequence[str]], int] | None = None) -> None:
        self._out_dir = out_dir
        self._command = command  # the crawler command's main, to fork workers with
        self._authkey = authkey
        self._threads = threads
        self._processes: list[_Process] = []
        self._reported: set[int] = set()
        self._gate: int | None = None  # write end of the pipe forked workers wait on
        self._restarts: dict[int, int] = {}  # worker number: times started again
        self._restart_at: dict[int, float] = {}  # worker number: when it is started again
        self._how: tuple[list[str], dict[str, str]] | None = None  # (args, env) to start one

    def fork_early(self, count: int, host: str, port: int) -> None:
        """Fork ``count`` workers of the queue at ``host:port`` now, each waiting until
        :meth:`start` lets it go (or leaving quietly if this master ends first).

        Early, before the master reads its journal: a child keeps the memory it was
        forked with, so a master that has loaded a resumed crawl of a million URLs
        would leave each of its workers holding a copy as it changes its own. Does
        nothing where workers cannot be forked; :meth:`start` spawns them then.
        """
        if not self._can_fork():
            return
        gate_r, self._gate = os.pipe()
        try:
            self._spawn(count, *self._queue_target(host, port), gate=gate_r)
        finally:
            os.close(gate_r)

    def start(self, count: int, host: str, port: int) -> None:
        if self._gate is not None:  # forked early: let them go
            self._open_gate(b"go" * count)
            return
        self._spawn(count, *self._queue_target(host, port))

    def abandon(self) -> None:
        """The master ends before serving: early-forked workers leave without a word."""
        self._open_gate(b"")
        self.stop()

    def _open_gate(self, data: bytes) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            with contextlib.suppress(OSError):  # every child gone already
                os.write(gate, data)
            os.close(gate)

    def _queue_target(self, host: str, port: int) -> tuple[list[str], dict[str, str]]:
        """A local worker's arguments and environment for the queue at ``host:port``.

        The key goes in the environment (``ps`` shows arguments to every user), unless
        it is no text an environment can hold (binary bytes from a key file): then the
        worker reads the same file.
        """
        env, target = dict(os.environ, **{LOCAL_WORKER_ENV: "1"}), [local_address(host, port)]
        try:
            text = self._authkey.key.decode()
        except UnicodeDecodeError:
            text = "\0"
        if "\0" not in text:
            env[ENV_VAR] = text
            return target, env
        key_file = _key_file(self._authkey)
        if key_file is None:
            raise AuthkeyError("this authkey is binary and comes from no file: local workers "
                               "cannot be given it; use a key of text")
        env.pop(ENV_VAR, None)
        return [*target, "--authkey-file", str(key_file)], env

    def _can_fork(self) -> bool:
        return (self._command is not None and threading.active_count() == 1
                and hasattr(os, "fork"))

    def start_for_broker(self, count: int, broker: BrokerAddress, crawl: str,
                         connect_wait: float) -> None:
        """Start ``count`` workers of the broker's crawl ``crawl`` (the password, if any,
        in their environment, never in their arguments), waiting ``connect_wait``
        seconds for a broker out of reach, as long as their master does."""
        env = dict(os.environ)
        if broker.password:
            env[BROKER_PASSWORD_ENV] = broker.password
        target = ["--broker", str(broker), "--crawl", crawl]
        if broker.ca_file is not None:
            target += ["--broker-ca", str(broker.ca_file)]
        self._spawn(count, target, env, connect_wait)

    def _spawn(self, count: int, target: list[str], env: dict[str, str],
               connect_wait: float = 30.0, gate: int | None = None) -> None:
        args = ["worker", *target, "--out", str(self._out_dir), "--threads", str(self._threads),
                "--quiet", "--connect-wait", f"{connect_wait:g}"]
        env = {**env, STOPPED_BY_ITS_MASTER_ENV: "1"}
        self._how = (args, env)
        niceness = _worker_niceness()
        first = len(self._processes)
        for n in range(first, first + count):
            _check_log(self._log_path(n + 1))
        for n in range(first, first + count):
            try:
                process = self._start_one(n + 1, args, env, gate, niceness)
            except OSError as exc:  # out of processes or memory: the others would be too
                started = n - first
                log.warning("cannot start local worker %d (%s); %d of %d started%s", n + 1,
                            exc.strerror or exc, started, count,
                            "" if started else ": the crawl waits for workers from elsewhere")
                return
            self._processes.append(process)

    def _start_one(self, n: int, args: list[str], env: dict[str, str], gate: int | None,
                   niceness: int | None) -> _Process:
        """Local worker ``n``: forked while that is safe, else a fresh interpreter."""
        log_path = self._log_path(n)
        process: _Process
        if self._command is not None and self._can_fork():
            process = _fork_worker(self._command, args, env, log_path, gate, niceness)
        else:
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [sys.executable, "-m", "crawler", *args],
                    env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        # Niceness is a thread's own on Linux: set before the worker starts threads
        # (the fork sets it in the child too, which starts them at once).
        _set_niceness(process.pid, niceness)
        return process

    def alive(self) -> list[_Process]:
        return [p for p in self._processes if p.poll() is None]

    def left(self) -> int:
        """Local workers running, or killed and to be started again in a moment: while
        one waits out its restart's delay, the crawl has not lost it."""
        return sum(1 for n, process in enumerate(self._processes, 1)
                   if process.poll() is None or self._restartable(n))

    def all_interrupted(self) -> bool:
        """Whether no local worker is left and one ended interrupted (Ctrl-C, status 130):
        the user's Ctrl-C reached the process group, and the crawl's own thread did not
        hear it (``crawl()`` run from another thread than the main one, where Python
        delivers no signal). (One that ended before for another reason leaves this so.)"""
        return (bool(self._processes) and self.left() == 0
                and any(process.poll() == _INTERRUPTED for process in self._processes))

    @property
    def started(self) -> int:
        """How many local workers were started (alive or not)."""
        return len(self._processes)

    def report_ended(self) -> None:
        """Say once, with the reason from its log, when a local worker has ended early;
        start one killed by a signal again (``RESTARTS`` times at most). Its leases go
        back to the queue once the board finds it silent, as any dead worker's."""
        for n, process in enumerate(self._processes, 1):
            if n in self._reported or process.poll() is None:
                continue  # reported already, or still running
            due = self._restart_due(n)
            if due is False:
                continue  # killed: started again in a moment
            log_path = self._log_path(n)
            said = self._last_line(n)
            how = _how_it_ended(process.returncode)
            last = f": {said}" if said else ""
            if due and self._restart(n, how):
                log.warning("local worker %d %s%s (log: %s); started again (restart %d of "
                            "%d)", n, how, last, log_path, self._restarts[n], RESTARTS)
                continue
            self._reported.add(n)
            left = self.left()
            log.warning("local worker %d %s%s (log: %s); %d local worker(s) left%s", n, how,
                        last, log_path, left,
                        "" if left else ", the crawl waits for workers from elsewhere")

    def _restartable(self, n: int) -> bool:
        """Whether local worker ``n``, ended, was killed by a signal with restarts left."""
        code = self._processes[n - 1].returncode
        return (code is not None and code < 0 and self._how is not None
                and self._restarts.get(n, 0) < RESTARTS)

    def _restart_due(self, n: int) -> bool | None:
        """For a worker to start again: whether its delay is over (False: not yet, and
        from now it runs); None for one that is not to start again."""
        if not self._restartable(n):
            return None
        at = self._restart_at.setdefault(
            n, time.monotonic() + RESTART_DELAY * 2 ** self._restarts.get(n, 0))
        return time.monotonic() >= at

    def _restart(self, n: int, how: str) -> bool:
        """Start local worker ``n`` again (its restart due), a line in its log saying so
        first; False if it could not be started."""
        assert self._how is not None
        self._restart_at.pop(n, None)
        count = self._restarts.get(n, 0) + 1
        self._log_line(n, f"{_RESTART_LINE} at {time.strftime('%H:%M:%S')}: the last one "
                          f"{how} (restart {count} of {RESTARTS}) ---")
        try:
            replacement = self._start_one(n, *self._how, None, _worker_niceness())
        except OSError as exc:  # out of processes or memory: said as it ends
            reason = exc.strerror or str(exc)
            self._log_line(n, f"--- it could not be started again: {reason} ---")
            log.warning("cannot start local worker %d again (%s)", n, reason)
            self._restarts[n] = RESTARTS  # not tried again, nor counted as to come
            return False
        self._restarts[n] = count
        self._processes[n - 1] = replacement
        return True

    def _log_line(self, n: int, line: str) -> None:
        """A line of the master's in local worker ``n``'s log (one it cannot write: the
        worker's start says so)."""
        with contextlib.suppress(OSError), self._log_path(n).open(
                "a", encoding="utf-8", errors="replace") as log_file:
            log_file.write(line + "\n")

    def all_stopped_by(self, error: type[CrawlerError]) -> str | None:
        """When every local worker started has ended with ``error``'s exit status (the
        output folder cannot be written: StorageError; the broker refuses writes:
        BrokerRefused), the last line one of them logged ("" if none); else None."""
        if not self._processes or any(process.poll() != error.exit_code
                                      for process in self._processes):
            return None
        return self._last_line(len(self._processes)).removeprefix("crawler: error: ")

    def _last_line(self, n: int) -> str:
        """The last line worker ``n`` logged: since it was last started again, if it was
        (an earlier one's line is no reason of this one's)."""
        with contextlib.suppress(OSError):
            lines = self._log_path(n).read_text(errors="replace").strip().splitlines()
            starts = [at for at, line in enumerate(lines) if line.startswith(_RESTART_LINE)]
            own = lines[starts[-1] + 1:] if starts else lines
            return own[-1] if own else ""
        return ""

    def wait_all(self, seconds: float, until: threading.Event | None = None) -> None:
        """Wait up to ``seconds`` in all for the live workers to leave by themselves, or
        until ``until`` is set (looked at every WAIT_STEP seconds)."""
        deadline = time.monotonic() + seconds
        while (alive := self.alive()) and not (until is not None and until.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                alive[0].wait(timeout=min(left, WAIT_STEP))

    def stop(self) -> None:
        """Ask the ones still running to leave; kill those that do not in time."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                process.kill()

    def _log_path(self, n: int) -> Path:
        return self._out_dir / f"worker-{n}.log"


def _how_it_ended(code: int | None) -> str:
    """'exited with status 3', or 'was killed by SIGKILL' for a status of -9."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _worker_niceness() -> int | None:
    """``WORKER_NICENESS`` more than this process's (at most 19), or None where
    priorities cannot be read or set."""
    if not hasattr(os, "setpriority"):
        return None  # not a POSIX system: its scheduler is left alone
    try:
        return min(os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS, 19)
    except OSError:
        return None


def _set_niceness(pid: int, niceness: int | None) -> None:
    """Make process ``pid`` (0: this one) nicer; any user may do so to its own."""
    if niceness is not None:
        with contextlib.suppress(OSError):  # gone already, or a system that refuses
            os.setpriority(os.PRIO_PROCESS, pid, niceness)


class _Process(Protocol):
    """What the master asks of a local worker's process: ``subprocess.Popen``'s calls."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class _ForkedWorker:
    """A forked worker, with the calls of ``subprocess.Popen`` that the master uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: its status is lost
                self.returncode = 255
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"crawler worker (pid {self.pid})",
                                                timeout or 0.0)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return code

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.poll() is None:  # never a pid reaped already (it may belong to another now)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _check_log(log_path: Path) -> None:
    """Make sure a local worker's log can be written before it starts: one that cannot
    is the output folder's fault, said here, where a worker unable to start would leave
    the crawl waiting for ever for a worker to take its images."""
    try:
        with log_path.open("ab"):
            pass
    except OSError as exc:
        why = "it is a folder" if log_path.is_dir() else exc.strerror or str(exc)
        raise StorageError(f"cannot write the local worker log {log_path}: {why}; move it "
                           "away, or choose another output folder") from exc


_INTERRUPTED = 130  # a worker's status for Ctrl-C (crawler.cli.EXIT_INTERRUPTED)


def _fork_worker(command: Callable[[Sequence[str]], int], args: Sequence[str],
                 env: dict[str, str], log_path: Path, gate: int | None,
                 niceness: int | None = None) -> _ForkedWorker:
    """Fork ``command(args)``, its output appended to ``log_path``; with ``gate``, the
    child waits until a byte can be read from it first (none: it leaves, status 0)."""
    from setproctitle import setproctitle  # here: the child's first act is its title

    for stream in (sys.stdout, sys.stderr):  # else the child could write the master's again
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    # Bytes of a folder's name that are not UTF-8 (lone surrogates here) shown as
    # escapes: setproctitle takes UTF-8 only, and failed the child before its log opened.
    title = shlex.join(["crawler", *args]).encode("utf-8", "backslashreplace").decode("utf-8")
    # Blocked across the fork: the child must not run the master's handlers.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    # Frozen for the collector in both: in the child the master's objects are never
    # collected (nothing of the master's is closed or flushed there, and their memory
    # is not copied for it), and a collection cannot start while forking.
    gc.freeze()
    try:
        pid = os.fork()
        if pid == 0:
            code = 70  # EX_SOFTWARE: the worker could not even start
            try:
                # ps: "crawler worker HOST:PORT ...", not the master. First, and before
                # the environment changes: setproctitle finds the command line's memory
                # from it.
                setproctitle(title)
                code = _be_worker(command, args, env, log_path, gate, niceness)
            finally:
                os._exit(code)
    finally:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return _ForkedWorker(pid)


def _be_worker(command: Callable[[Sequence[str]], int], args: Sequence[str],
               env: dict[str, str], log_path: Path, gate: int | None,
               niceness: int | None = None) -> int:
    """In the forked child: become ``crawler <args>``, as if started afresh; its exit status."""
    _set_niceness(0, niceness)  # before any thread of the worker's starts
    for signum in _SIGNALS:
        if signum != signal.SIGHUP or signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)  # (an ignored SIGHUP: nohup, kept)
    try:
        log_fd = _above_stdio(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666))
    except OSError as exc:
        os.write(2, f"crawler: error: local worker log {log_path}: {exc.strerror}\n".encode())
        # The folder's fault, as a worker's that cannot store: its master stops, not waits.
        return StorageError.exit_code
    null_fd = _above_stdio(os.open(os.devnull, os.O_RDONLY))
    if gate is not None:
        gate = _above_stdio(gate)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    # The master's descriptors: its listening socket would keep its port taken, and
    # its ends of the parsers' pipes would keep a parser waiting, after it is gone.
    high = os.sysconf("SC_OPEN_MAX")
    if gate is None:
        os.closerange(3, high)
    else:
        os.closerange(3, gate)
        os.closerange(gate + 1, high)
    sys.stdin = open(0, closefd=False, encoding="utf-8")  # noqa: SIM115 - the process's own
    sys.stdout = open(1, "w", closefd=False, encoding="utf-8")  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, encoding="utf-8",  # noqa: SIM115
                      errors="backslashreplace", buffering=1)
    sys.argv = ["crawler", *args]
    # The master's handlers write to its log and terminal: not the worker's to use.
    logging.getLogger().handlers.clear()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    if gate is not None:
        go = os.read(gate, 2)
        os.close(gate)
        if not go:
            return 0  # the master ended before it served its queue: nothing to do
    os.environ.update(env)
    try:
        code = command(list(args))
    except SystemExit as exc:  # as an interpreter ends on one
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - said in the log, as an interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


def _above_stdio(fd: int) -> int:
    """``fd``, moved to 3 or above if it is one of 0-2 (a master started with one
    closed): else the dup2 calls onto 0-2 would close it."""
    if fd > 2:
        return fd
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 3)
    os.close(fd)
    return moved
