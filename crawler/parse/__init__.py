"""Parsing pages: extraction of image and page links, and the processes that run it."""
