"""The master's board as a worker calls it: an error of the master's own, sent back as
the answer to a call, becomes :class:`~crawler.errors.MasterFailed`.

Over BaseManager, an exception the master's code raised comes back as itself (a
KeyError, a RuntimeError: nothing a worker's caller expects, which escaped as a
traceback), and a failure of the server around it as a ``RemoteError`` holding the
traceback's whole text. A lost link stays an ``OSError`` or ``EOFError`` (the worker
reconnects), and our own errors keep their words.
"""

from __future__ import annotations

import pickle
from multiprocessing import AuthenticationError
from multiprocessing.managers import RemoteError
from typing import Any

from crawler.errors import CrawlerError, MasterFailed
from crawler.model.outcome import one_line

# Raised on our side of a call, not sent back by the master: a lost link, our own words,
# a request we could not pickle, a handshake refused on a new connection.
_NOT_THE_MASTERS = (OSError, EOFError, CrawlerError, pickle.PicklingError,
                    AuthenticationError)


class MasterCalls:
    """A proxy of the master's board (``proxy``) whose calls raise MasterFailed for an
    error the master sent back."""

    def __init__(self, proxy: Any, where: str) -> None:
        self.proxy = proxy
        self._where = where  # "the master at HOST:PORT"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and repr ask before __init__ has run
            raise AttributeError(name)
        call = getattr(self.__dict__["proxy"], name)
        if not callable(call):
            return call

        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, **kwargs)
            except RemoteError as exc:  # the server's failure around the call: not logged
                raise MasterFailed(f"{self._where} failed on our call {name}() "
                                   f"({remote_error_line(exc)})") from exc
            except _NOT_THE_MASTERS:
                raise
            except Exception as exc:  # the master's code raised it (and logged it)
                raise MasterFailed(f"{self._where} failed on our call {name}() "
                                   f"({type(exc).__name__}: {one_line(str(exc))}); its "
                                   "log says more") from exc

        return checked


def remote_error_line(exc: RemoteError) -> str:
    """The error's own line from a RemoteError's traceback text (``KeyError: 'x'``)."""
    lines = [line.strip() for line in str(exc.args[0] if exc.args else exc).splitlines()]
    words = [line for line in lines if line and not line.startswith("---")]
    return one_line(words[-1]) if words else "no reason given"

