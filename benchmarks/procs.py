"""Processes measured one by one: CPU time from ``os.wait4``, peak memory from /proc.

Shared by the benchmark scripts. A :class:`Measured` process runs in its own
session; when reaped, its :class:`Usage` holds its CPU time (its own and that
of the children it reaped), its peak RSS, and, when its children are watched,
their CPU time and peak RSS by role (``parser``: a forked copy of the
process, such as the master's page parser; ``worker``: a ``crawler worker``
it started), from /proc.
"""

from __future__ import annotations

import compileall
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

POLL = 0.005  # seconds between two looks at running processes
KB = 1024


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:``port`` (read from /proc, no connection made).

    Connecting to the crawler's queue without the handshake would be logged as
    a refused connection; the kernel's socket table says the same silently.
    """
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return connects(port)
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[1] in wanted and parts[3] == "0A":  # 0A: LISTEN
            return True
    return False


def connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ----- processes measured one by one ------------------------------------------------


@dataclass
class Usage:
    """What one process used.

    CPU times come from ``os.wait4``: the process's own, plus any children it
    reaped. Peak RSS is the kernel's high-water mark (``VmHWM``) read from
    /proc while the process ran: ``ru_maxrss`` is not usable for it, because
    Linux carries the RSS of the forking parent (this Python driver) into the
    child's ``ru_maxrss`` across ``exec``, so no child would ever look smaller
    than the driver. ``ru_maxrss`` is kept as ``ru_maxrss_kb`` for reference.
    """

    name: str
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kb: int
    ru_maxrss_kb: int = 0
    children_maxrss_kb: int = 0  # largest VmHWM among its children (page parser, local workers)
    # CPU seconds of its children by role ("parser", "worker"): included in user_s +
    # sys_s (the process reaped them); exact in total (what their reaping added to the
    # process's children's CPU, read from /proc before it is reaped itself), shared
    # by role in proportion to their samples when children of both roles left within
    # one sampling interval.
    children_cpu: dict[str, float] = field(default_factory=dict)
    children_rss_kb: dict[str, int] = field(default_factory=dict)  # peak RSS sum by role

    @property
    def own_cpu_s(self) -> float:
        """CPU seconds of the process itself: the total less its children's."""
        return max(0.0, self.cpu_s - sum(self.children_cpu.values()))

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def vm_hwm_kb(pid: int) -> int:
    """The peak RSS so far of a live process, in KiB (0 when gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:  # noqa: PTH123 - hot loop, stays cheap
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Measured:
    """A subprocess in its own session, reaped with ``os.wait4`` for its own rusage."""

    # Seconds between two reads of the peak RSS: FIRST_SAMPLE at first, doubling up to
    # SAMPLE_EVERY, so that a process of a few tens of milliseconds (wget on a small
    # site) is read near its end too, not only as it starts (VmHWM of a few KiB then).
    FIRST_SAMPLE = POLL
    SAMPLE_EVERY = 0.05

    def __init__(self, name: str, argv: Sequence[str], *, cwd: Path,
                 env: dict[str, str] | None = None, log: Path | None = None,
                 watch_children: bool = False) -> None:
        self.name = name
        self.usage: Usage | None = None
        self._log: IO[bytes] | None = log.open("wb") if log else None
        self._hwm = 0
        self._children_hwm: dict[int, int] = {}
        self._children_cpu: dict[int, float] = {}
        self._children_role: dict[int, str] = {}
        # CPU of the children the process has reaped (cutime + cstime), at the last sample:
        # it grows by a child's exact CPU when the process reaps it.
        self._reaped_cpu = 0.0
        self._reaped_by_role: dict[str, float] = {}  # exact CPU of reaped children, by role
        self._pending: set[int] = set()  # children seen and not yet known to be reaped
        self._gone: dict[str, float] = {}  # last samples of children gone, not yet credited
        self._unclaimed = 0.0  # reaped CPU not yet credited to a role
        self._watch_children = watch_children
        self._next_sample = 0.0
        self._sample_gap = self.FIRST_SAMPLE
        self.ended = 0.0
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL, stderr=self._log or subprocess.DEVNULL,
            start_new_session=True)

    def sample(self) -> None:
        """Read the peak RSS of the process (and of its children when watched)."""
        now = time.monotonic()
        if self.usage is not None or now < self._next_sample:
            return
        self._next_sample = now + self._sample_gap
        self._sample_gap = min(2 * self._sample_gap, self.SAMPLE_EVERY)
        self._hwm = max(self._hwm, vm_hwm_kb(self.popen.pid))
        if self._watch_children:
            times = proc_times(self.popen.pid)
            children = children_of(self.popen.pid)
            if times is not None:
                self._settle_reaped(times[1], set(children))
            self._pending.update(children)
            for child in children:
                self._children_hwm[child] = max(self._children_hwm.get(child, 0),
                                                vm_hwm_kb(child))
                if self._children_role.get(child, "parser") == "parser":
                    # Looked at again until it says worker: a forked local worker shows
                    # its master's command line until it has set its own title.
                    self._children_role[child] = child_role(child)
                cpu = proc_cpu_seconds([child])
                if cpu:
                    self._children_cpu[child] = cpu

    def _settle_reaped(self, reaped_cpu: float, alive: set[int] | None) -> None:
        """Credit the children gone since the last look with what their reaping added to
        the process's children's CPU (exact, where their last sample was up to an
        interval short), shared by role in proportion to their last samples when
        several left together. ``alive`` None: the process has ended, settle all."""
        self._unclaimed += reaped_cpu - self._reaped_cpu
        self._reaped_cpu = reaped_cpu
        for child in list(self._pending):
            if alive is None or child not in alive:
                self._pending.discard(child)
                role = self._children_role.get(child, "parser")
                self._gone[role] = self._gone.get(role, 0.0) + self._children_cpu.get(child, 0.0)
        if self._unclaimed <= 0 or not (self._gone or alive is None):
            return  # a reaping seen before its child's departure, or the reverse: wait
        seen = sum(self._gone.values())
        shares = ({role: cpu / seen for role, cpu in self._gone.items()} if seen > 0
                  else {role: 1 / len(self._gone) for role in self._gone} or {"parser": 1.0})
        for role, share in shares.items():
            self._reaped_by_role[role] = (self._reaped_by_role.get(role, 0.0)
                                          + self._unclaimed * share)
        self._unclaimed = 0.0
        self._gone.clear()

    def poll(self) -> Usage | None:
        """The process's usage once it has ended, else None (never blocks)."""
        if self.usage is not None:
            return self.usage
        self.sample()
        settled = False
        if self._watch_children:
            # Ended but not reaped yet: a zombie's /proc still holds its own CPU and that
            # of every child it reaped, to the end (the last sample can be 50 ms old).
            with contextlib.suppress(OSError):
                if os.waitid(os.P_PID, self.popen.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                    return None
                times = proc_times(self.popen.pid)
                if times is not None:
                    self._settle_reaped(times[1], None)
                    settled = True
        try:
            pid, status, rusage = os.wait4(self.popen.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status, rusage = self.popen.pid, 0, None  # reaped elsewhere: figures lost
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = code
        self.ended = time.perf_counter()
        ru_maxrss = rusage.ru_maxrss if rusage else 0
        cpu_by_role: dict[str, float] = {}
        rss_by_role: dict[str, int] = {}
        for child, role in self._children_role.items():
            if not settled:  # else: counted exactly as they were reaped
                cpu_by_role[role] = (cpu_by_role.get(role, 0.0)
                                     + self._children_cpu.get(child, 0.0))
            rss_by_role[role] = rss_by_role.get(role, 0) + self._children_hwm.get(child, 0)
        if settled:
            cpu_by_role = dict(self._reaped_by_role)
        self.usage = Usage(self.name, code, self.ended - self.started,
                           rusage.ru_utime if rusage else 0.0, rusage.ru_stime if rusage else 0.0,
                           self._hwm or ru_maxrss, ru_maxrss,
                           max(self._children_hwm.values(), default=0), cpu_by_role, rss_by_role)
        if self._log is not None:
            self._log.close()
        return self.usage

    def send(self, signum: int) -> None:
        """Signal the whole session (the process and anything it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


def wait_all(procs: Sequence[Measured], timeout: float) -> bool:
    """Wait for every process, at most ``timeout`` s; then stop the rest. True if all ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.poll() is not None for p in procs):
            return True
        time.sleep(POLL)
    stop_all(procs)
    return False


def stop_all(procs: Sequence[Measured]) -> None:
    """SIGTERM, 5 s of grace, then SIGKILL; bounded."""
    pending = [p for p in procs if p.poll() is None]
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for proc in pending:
            proc.send(sig)
        end = time.monotonic() + grace
        while pending and time.monotonic() < end:
            pending = [p for p in pending if p.poll() is None]
            time.sleep(0.02)
        if not pending:
            return


def proc_cpu_seconds(pids: Sequence[int]) -> float:
    """user+sys CPU seconds of live processes, from /proc/PID/stat (0 for gone ones)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def proc_times(pid: int) -> tuple[float, float] | None:
    """(own, reaped children's) user+sys CPU seconds of a process, live or a zombie not
    yet reaped, from /proc/PID/stat (None when it is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime, stime, cutime, cstime
    return ((int(fields[11]) + int(fields[12])) / ticks,
            (int(fields[13]) + int(fields[14])) / ticks)


def child_role(pid: int) -> str:
    """``worker`` for a ``crawler worker`` process, else ``parser`` (a forked helper)."""
    try:
        # A forked local worker's title is one string ("crawler worker HOST:PORT ..."):
        # words, not NUL-separated arguments.
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return "parser"
    return "worker" if b"worker" in words[:4] else "parser"


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc.

    Read from each thread's ``children`` file: scanning all of /proc every 50 ms
    took CPU enough from the 2 cores to slow the crawl it measured.
    """
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    if tasks and (tasks[0] / "children").exists():
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                found += [int(child) for child in (task / "children").read_text().split()]
        return found
    for entry in Path("/proc").iterdir():  # kernels without CONFIG_PROC_CHILDREN
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def byte_compile_crawler() -> str:
    """Compile the crawler's modules once, as ``pip install`` does for a regular install.

    Without it, each crawler process of an editable install under
    PYTHONDONTWRITEBYTECODE compiles every module from source (30 ms for a
    master, 20 ms for a worker), and the figures would measure that.
    """
    spec = importlib.util.find_spec("crawler")
    if spec is None or not spec.submodule_search_locations:
        return "crawler is not installed"
    folder = next(iter(spec.submodule_search_locations))
    ok = compileall.compile_dir(folder, quiet=1, force=False)
    return f"byte-compiled {folder}" if ok else f"could not byte-compile all of {folder}"
