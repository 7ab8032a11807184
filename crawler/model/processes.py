"""Whether a process of this host runs: for the files and records that name their
writer's pid (a download's partial file, a broker master's last word)."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (True where it cannot be told)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False  # 0 would mean "my process group" to kill()
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except (ProcessLookupError, OverflowError):  # OverflowError: no such pid can exist
        return False
    except OSError:
        return True  # e.g. EPERM: it exists, as another user
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet: dead, though kill(pid, 0) works."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc here: trust kill()
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]
