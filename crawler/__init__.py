"""crawler: a distributed web-image crawler.

Kept cheap to import: ``crawler --help`` and ``import crawler`` load no HTTP,
HTML or crawl code. The API names below are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ below loads them
    from crawler.api import Summary, WorkerSummary, crawl, run_worker
    from crawler.config import Settings
    from crawler.errors import CrawlerError

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/distributed-image-crawler/crawler"

__all__ = ["PROJECT_URL", "CrawlerError", "Settings", "Summary", "WorkerSummary", "__version__",
           "crawl", "run_worker"]

# name: the module it lives in, imported on first use.
_LAZY = {
    "crawl": "crawler.api",
    "run_worker": "crawler.api",
    "Summary": "crawler.api",
    "WorkerSummary": "crawler.api",
    "Settings": "crawler.config",
    "CrawlerError": "crawler.errors",
}


# Modules the README names as crawler.NAME (``except crawler.errors.UsageError``): an
# attribute once imported, which an import of the package alone did not do.
_MODULES = frozenset({"api", "config", "errors"})


def __getattr__(name: str) -> object:
    if name in _LAZY or name in _MODULES:
        import importlib

        if name in _MODULES:
            return importlib.import_module(f"crawler.{name}")  # which sets the attribute
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once found, a plain attribute
        return value
    raise AttributeError(f"module 'crawler' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_MODULES})
