"""How long a master on a broker sleeps between looks at the crawl, where nothing wakes it.

On the embedded board a worker's report wakes the master's loop; on a broker the
master learns of results by asking, so it ends the crawl only at its first look
after the last image is reported. Looking every 50 ms cost a real site's crawl
about 40 ms at its end; looking every few milliseconds throughout would cost a
long crawl hundreds of round trips a second for nothing.
"""

from __future__ import annotations

from crawler.board.base import unsettled

END_TICK = 0.005  # seconds: the closest a master looks, in a crawl's last moments


class EndWatch:
    """The pause before the next look, from what the looks so far saw.

    While the master has pages, ``slowest``. After, the crawl ends when its last
    image is reported: at the pace images were reported since then, the next
    look comes after a quarter of the time the rest would take, between END_TICK
    and ``slowest``. A long tail of images is looked at calmly, its last
    moments closely; the pace is that of the whole tail, as reports come in
    batches with quiet milliseconds between them.
    """

    def __init__(self, slowest: float) -> None:
        self.slowest = slowest
        self.pause = slowest
        self._since: tuple[float, int] | None = None  # (when, images done) as pages ended

    def looked(self, counts: dict[str, int], *, pages: int, now: float) -> None:
        """A look saw the board's ``counts``, and ``pages`` not done yet."""
        done, left = counts["done"], unsettled(counts)
        self.pause = self.slowest
        if pages or not left:
            self._since = None
            return
        if self._since is None or done < self._since[1]:
            self._since = (now, done)
            return
        began, done_then = self._since
        if done > done_then and now > began:
            rate = (done - done_then) / (now - began)  # images a second
            self.pause = min(self.slowest, max(END_TICK, left / rate / 4))
