"""``python -m crawler``, and the ``crawler`` command's entry point.

Imports nothing at the top that ``run`` does not guard: loading the command's
modules takes the first tenths of a second, and a Ctrl-C then printed a Python
traceback where the command says it stopped (and a SIGTERM killed it without a
word).
"""

import os
import sys
from typing import NoReturn

_EXIT_INTERRUPTED = 130  # cli.EXIT_INTERRUPTED, before cli can be imported


def run() -> NoReturn:
    """``crawler.cli.run``, with a Ctrl-C or SIGTERM before or after its own handling
    said in one line."""
    try:
        import signal

        from crawler.errors import Terminated

        def terminated(_signum: int, _frame: object) -> None:
            raise Terminated

        # Where the command handles SIGTERM (a crawl, a worker), its own handler takes
        # over, and gives this one back after.
        signal.signal(signal.SIGTERM, terminated)
        from crawler.cli import run as run_command

        run_command()
    except KeyboardInterrupt as stop:
        try:
            from crawler.errors import Terminated

            said = "stopped (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
            sys.stderr.write(f"crawler: {said}\n")
            sys.stderr.flush()
        except (OSError, ValueError, KeyboardInterrupt):
            pass  # nowhere left to say it (or a second stop): the status says it
        os._exit(_EXIT_INTERRUPTED)


if __name__ == "__main__":
    run()
