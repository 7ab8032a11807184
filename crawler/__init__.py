"""crawler: a distributed web-image crawler."""

__version__ = "0.1.0"
