"""``python -m crawler``, and the ``crawler`` command's entry point.

Imports nothing of its own before ``run`` guards it: loading the command's
modules takes the first tenths of a second, and a Ctrl-C then printed a Python
traceback where the command says it stopped.
"""

import os
import sys
from typing import NoReturn

_EXIT_INTERRUPTED = 130  # cli.EXIT_INTERRUPTED, before cli can be imported


def run() -> NoReturn:
    """``crawler.cli.run``, with a Ctrl-C before or after its own handling said in one line."""
    try:
        from crawler.cli import run as run_command

        run_command()
    except KeyboardInterrupt:
        try:
            sys.stderr.write("crawler: interrupted\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # nowhere left to say it: the status says it
        os._exit(_EXIT_INTERRUPTED)


if __name__ == "__main__":
    run()
