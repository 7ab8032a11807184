"""``crawler status``: ask a running master what it is doing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crawler.board.manager import MasterClient
from crawler.errors import BrokerError, MasterUnreachable

if TYPE_CHECKING:
    from crawler.board.broker import BrokerAddress
from crawler.ui.progress import human_bytes


def fetch_status(address: tuple[str, int], authkey: bytes) -> dict[str, Any]:
    client = MasterClient(address, authkey)
    try:
        return dict(client.connect().status())
    except (OSError, EOFError) as exc:
        # As a worker says it: "NoHandshake: ..." named our own class to the user.
        raise MasterUnreachable(f"no master answers at {address[0]}:{address[1]} "
                                f"({client.unreachable(exc)})") from exc


def fetch_broker_status(broker: BrokerAddress, crawl: str | None) -> dict[str, Any]:
    """The status of a crawl on the broker: read from Redis, no master asked."""
    from crawler.board.redis_client import BrokerClient

    client = BrokerClient(broker, crawl)
    try:
        return dict(client.connect().status())
    except ConnectionError as exc:
        raise BrokerError(f"no status of the crawl: {exc}") from exc


def format_status(status: dict[str, Any]) -> str:
    progress, board = status["progress"], status["board"]
    lines = [
        f"master: {', '.join(status['seeds'])}  ({_state(status)}, {status['elapsed_s']:.0f} s"
        + (f", {progress['masters']} master(s) live" if "masters" in progress else "") + ")",
        f"pages crawled {progress['pages']} ({progress['pages_failed']} failed, "
        f"{progress.get('pages_queued', 0)} queued)   "
        f"images found {progress['found']}",
        f"downloaded {progress['downloaded']} ({human_bytes(progress['bytes'])})   "
        f"failed {progress['failed']}   queued {board['queued']}   "
        # Not due yet: a retry's backoff, and the images an earlier run left, held back
        # for their workers to come back (a resumed crawl's thousands, "to retry" with
        # no retry done, read as failures).
        f"in flight {board['in_flight']}   held back {board['delayed']}   "
        f"retries {progress.get('retries', board['retries'])}",  # pages' too
        "",
        f"{'worker':<32} {'threads':>7} {'held':>5} {'done':>7} {'failed':>6} "
        f"{'bytes':>10} {'img/s':>7} {'last seen':>9}",
    ]
    for w in status["workers"]:
        state = "gone" if w["gone"] else f"{w['last_contact_s']:.1f} s"
        lines.append(f"{w['worker'][:32]:<32} {w['threads'] or '-':>7} {w['held']:>5} "
                     f"{w['done']:>7} {w['failed']:>6} {human_bytes(w['bytes']):>10} "
                     f"{w['rate']:>7.1f} {state:>9}")
    if not status["workers"]:
        lines.append("(no worker has connected yet)")
    return "\n".join(lines)


def _state(status: dict[str, Any]) -> str:
    """Finished, crawling, or (on a broker, where the crawl outlives its masters)
    stopped with work left that no master is reading pages for."""
    if status["closed"]:
        return "finished"
    if status["progress"].get("masters") == 0:
        return "stopped; a master with --join NAME carries it on"
    return "crawling"
