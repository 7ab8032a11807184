"""The built-in demo: an offline site served on loopback, crawled by a master and local workers."""
