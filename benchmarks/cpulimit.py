"""A CPU quota for a process tree, through a control group: one machine standing in for several.

The scale-out benchmark runs every host on this machine's cores. Links are
shaped with ``tc`` to stand for separate wires; a quota stands for a master's
own processor, so that two masters are measured against what each one alone
can do, not against how the two share the same two cores.

Works with cgroup v2 (``cpu.max``) and with v1's ``cpu`` controller
(``cpu.cfs_quota_us``); needs root.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

PERIOD_US = 100_000
_V2_ROOT = Path("/sys/fs/cgroup")
_V1_CPU_ROOT = Path("/sys/fs/cgroup/cpu")


class CpuLimitError(RuntimeError):
    """No control group with a CPU quota can be made here; the message says why."""


class CpuLimit:
    """A control group whose processes share ``cpus`` cores' worth of time."""

    def __init__(self, name: str, cpus: float) -> None:
        if cpus <= 0:
            raise CpuLimitError(f"a CPU quota must be above 0 cores, not {cpus:g}")
        self.cpus = cpus
        self.path: Path | None = None
        quota = max(1000, round(cpus * PERIOD_US))
        try:
            if "cpu" in _read(_V2_ROOT / "cgroup.controllers").split():
                if "cpu" not in _read(_V2_ROOT / "cgroup.subtree_control").split():
                    _write(_V2_ROOT / "cgroup.subtree_control", "+cpu")
                self.path = _V2_ROOT / name
                self.path.mkdir()
                _write(self.path / "cpu.max", f"{quota} {PERIOD_US}")
            elif (_V1_CPU_ROOT / "cpu.cfs_quota_us").exists():
                self.path = _V1_CPU_ROOT / name
                self.path.mkdir()
                _write(self.path / "cpu.cfs_period_us", str(PERIOD_US))
                _write(self.path / "cpu.cfs_quota_us", str(quota))
            else:
                raise CpuLimitError("no cgroup cpu controller (v2 cpu.max or v1 cpu) "
                                    "is mounted under /sys/fs/cgroup")
        except OSError as exc:
            self.close()  # made, but not limited: not left behind
            raise CpuLimitError(f"cannot make the control group {name}: {exc} (in a "
                                "container, /sys/fs/cgroup may not be this machine's)") from exc

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this group, with every process it starts."""
        assert self.path is not None, "the group was removed"
        # The shell joins the group, then becomes the command: nothing runs outside it.
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"),
                *argv]

    def close(self) -> None:
        """Remove the group (its processes must have ended); say so when it cannot be."""
        path, self.path = self.path, None
        if path is None or not path.exists():
            return
        try:
            path.rmdir()
        except OSError as exc:
            print(f"cpulimit: could not remove the control group {path}: {exc}",
                  file=sys.stderr)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
