"""Images an earlier run stored that are no longer in the output folder.

A user who deletes ``images/`` (or some files in it) and runs the same crawl
again expects the missing images back, as ``wget -nc`` or ``rsync`` would
bring them. The journal still records them as stored, so without a look at
the disk a rerun found the crawl done, and results.log and manifest.jsonl named
files that were not there. Each recorded success's file is looked at once, as
the result files are written anew from the journal (one ``stat``: 0.5 s for
100,000 images on a busy machine, beside the 2 to 3 s of that rewrite); those gone
are left out of the files and queued again. A file left empty, or of another size
than its record, is as good as gone: a worker reports an image before its periodic
flush to disk, and a power cut in between leaves the name with an empty file (or one
cut short); the store takes such a file for no image, and the download replaces it.

Only images stored by a worker on this host are looked at: a worker on another
host stores under its own ``--out`` folder, which this one cannot see. So does a
worker of this host started with another ``--out``: the master notes those as their
results come (``WorkersElsewhere``), and their images are not looked at either.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from pathlib import Path

from crawler.master.journal import Journal
from crawler.model.outcome import IMAGES_DIR, Outcome

log = logging.getLogger(__name__)

# The journal's note of the workers of the master's host that stored under another folder.
ELSEWHERE_KEY = "workers_elsewhere"


def say_fetched_again(count: int, out_dir: Path) -> None:
    """The line a rerun says of the images it fetches again, on either board."""
    log.info("%d image(s) recorded as stored are missing from %s (or cut short there): "
             "fetched again", count, out_dir / IMAGES_DIR)


def worker_prefix(host: str | None = None) -> str:
    """How the names of the workers of ``host`` (this one's by default) start: a
    worker's name is "HOST:PID:RANDOM"."""
    return f"{host if host is not None else socket.gethostname()}:"


def in_another_folder(worker: str | None, prefix: str, elsewhere: Container[str]) -> bool:
    """Whether ``worker`` stores outside this master's folder: a worker of another host
    (its name not starting with ``prefix``), or one of this host among ``elsewhere``."""
    return not (worker or "").startswith(prefix) or worker in elsewhere


class MissingImages:
    """Sorts an earlier run's outcomes: those to keep, and the URLs whose file is gone."""

    def __init__(self, out_dir: Path, host: str | None = None,
                 elsewhere: Container[str] = ()) -> None:
        """``elsewhere``: workers of this host that stored under another folder (any
        container: a broker's master asks the broker as it goes)."""
        # A string, not a Path: joining a Path cost 20 us an image, the stat itself 5 us.
        self._base = f"{out_dir}{os.sep}"
        self._prefix = worker_prefix(host)
        self._elsewhere = elsewhere
        self.urls: list[str] = []  # of the outcomes left out: to fetch again

    def kept(self, outcomes: Iterable[Outcome]) -> Iterator[Outcome]:
        """``outcomes`` but the successes stored on this host whose file is gone."""
        for outcome in outcomes:
            if self._gone(outcome):
                self.urls.append(outcome.url)
            else:
                yield outcome

    def _gone(self, outcome: Outcome) -> bool:
        return self.gone(outcome.ok, outcome.path, outcome.worker, outcome.bytes)

    def gone(self, ok: bool, path: str | None, worker: str | None,
             size: int | None = None) -> bool:
        """Whether a result (success ``ok``, stored at ``path`` by ``worker``, ``size``
        bytes where known) names a file a worker of this host stored into this folder,
        gone from it since, or no longer of that size."""
        if not ok or not path or in_another_folder(worker, self._prefix, self._elsewhere):
            return False
        # (a path outside the folder is refused as the report comes: wire.py)
        try:
            held = os.stat(self._base + path)  # noqa: PTH116 - see __init__
        except OSError:
            return True
        return (not stat.S_ISREG(held.st_mode) or held.st_size == 0
                or (size is not None and held.st_size != size))


def stored_elsewhere(stored_by: Mapping[str, int], elsewhere: Container[str],
                     host: str | None = None) -> dict[str, int]:
    """Of the images each worker stored (``stored_by``), those outside the master's
    folder, by the host of the worker: one on another host stores under its own --out,
    as does one of this host among ``elsewhere``. Most first."""
    prefix = worker_prefix(host)
    by_host: dict[str, int] = {}
    for worker, count in stored_by.items():
        if in_another_folder(worker, prefix, elsewhere):
            worker_host = worker.partition(":")[0]
            by_host[worker_host] = by_host.get(worker_host, 0) + count
    return dict(sorted(by_host.items(), key=lambda kv: (-kv[1], kv[0])))


def workers_elsewhere(journal: Journal) -> set[str]:
    """The workers of this host the journal notes as storing under another folder."""
    noted = journal.meta(ELSEWHERE_KEY)
    return {str(worker) for worker in noted} if isinstance(noted, list) else set()


class WorkersElsewhere:
    """Notes in the journal, before their results are recorded, the workers of this host
    whose ``--out`` is another folder than the master's (their hello says which)."""

    def __init__(self, journal: Journal, out_dir: Path,
                 info_of: Callable[[str], Mapping[str, object] | None],
                 host: str | None = None) -> None:
        """``info_of``: what a worker said of itself in its hello (None: not known)."""
        self._journal = journal
        self._folder = out_dir.resolve()
        self._info_of = info_of
        self._host = host if host is not None else socket.gethostname()
        self._noted = workers_elsewhere(journal)
        self._looked: set[str] = set()  # workers told apart already

    def __contains__(self, worker: object) -> bool:
        """Whether ``worker`` is noted as storing under another folder."""
        return worker in self._noted

    def note(self, workers: Iterable[str | None]) -> None:
        """Look at each of ``workers`` not looked at yet; note those that store elsewhere."""
        new = False
        for worker in workers:
            if worker is None or worker in self._looked:
                continue
            info = self._info_of(worker)
            if info is None:
                continue  # (not known: left to the host's rule, as before any note)
            self._looked.add(worker)
            folder = info.get("folder")
            if (info.get("host") == self._host and isinstance(folder, str)
                    and Path(folder).resolve() != self._folder):
                self._noted.add(worker)
                new = True
        if new:
            self._journal.set_meta(ELSEWHERE_KEY, sorted(self._noted))
