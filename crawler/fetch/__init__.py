"""Fetching over HTTP: the address guard, the status and redirect rules, and the HTTP clients."""
