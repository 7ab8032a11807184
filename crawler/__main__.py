"""``python -m crawler``."""

from crawler.cli import run

run()
