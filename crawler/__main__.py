"""``python -m crawler``, and the ``crawler`` command's entry point.

Imports nothing at the top that ``run`` does not guard: loading the command's
modules takes the first tenths of a second, and a Ctrl-C then printed a Python
traceback where the command says it stopped (and a SIGTERM or a hang-up killed it
without a word).
"""

import os
import sys
from typing import NoReturn

_EXIT_INTERRUPTED = 130  # cli.EXIT_INTERRUPTED, before cli can be imported


def run() -> NoReturn:
    """``crawler.cli.run``, with a Ctrl-C, SIGTERM or hang-up before or after its own
    handling said in one line."""
    try:
        import signal

        from crawler.errors import raise_stop

        # Where the command handles them (a crawl, a worker), its own handler takes
        # over, and gives this one back after. A SIGHUP ignored (nohup) stays ignored.
        signal.signal(signal.SIGTERM, raise_stop)
        if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
            signal.signal(signal.SIGHUP, raise_stop)
        from crawler.cli import run as run_command

        run_command()
    except KeyboardInterrupt as stop:
        try:
            from crawler.errors import stopped_by

            sys.stderr.write(f"crawler: {stopped_by(stop)}\n")
            sys.stderr.flush()
        except (OSError, ValueError, KeyboardInterrupt):
            pass  # nowhere left to say it (or a second stop): the status says it
        os._exit(_EXIT_INTERRUPTED)


if __name__ == "__main__":
    run()
