"""crawler: a distributed web-image crawler.

Kept cheap to import: ``crawler --help`` and ``import crawler`` load no HTTP,
HTML or crawl code. The API names below are loaded on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/distributed-image-crawler/crawler"
