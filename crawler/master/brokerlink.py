"""A master's link to its broker: errors that say it is gone, the wait for one that
stopped answering, and what the master forgets once its client has reconnected.

Apart from the crawl loop, which asks these questions and acts on the answers:
which errors mean a lost broker, how long one is waited for and what a
reconnection makes uncertain are the broker's matter, and the embedded mode
(no broker: nothing is ever lost) answers them all with "no".
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from crawler.errors import BrokerError, BrokerUnreachable

if TYPE_CHECKING:  # imported when used: a Redis client is broker mode's only
    from crawler.board.broker import BrokerCrawl
    from crawler.board.redis_frontier import RedisFrontier
    from crawler.master.pagecookies import CookiePost

log = logging.getLogger(__name__)

BROKER_WAIT = 120.0  # seconds a master waits for a broker that stopped answering


class BrokerLink:
    """The master's broker (None: the embedded mode), as the crawl loop meets it."""

    def __init__(self, broker: BrokerCrawl | None, stop: threading.Event) -> None:
        self._broker = broker
        self._stop = stop  # the crawl loop's: set, a lost broker is not waited for
        self._connections = 0  # the broker client's reconnections, last looked at
        # The crawl's pages on the broker, once this master took the crawl up; until
        # then (and without a broker) no reconnection makes it forget anything.
        self.frontier: RedisFrontier | None = None

    def forget_after_reconnecting(self, images_seen: set[str], page_delays: dict[str, float],
                                  cookies: CookiePost | None) -> None:
        """Once the broker client has reconnected, forget which links and images this
        master sent (``images_seen``, and its frontier's) and the Crawl-delays it told
        (``page_delays``, told again with each host's next page): Redis restarted, and a crash
        loses up to its last second of writes. A page whose record was lost is fetched
        again and sends them again (Redis keeps each once); remembered here, they would
        be left out for good. The cookies the pages set go again at once, all of them: a
        page read again sets the same ones, no news, and a worker that joined since would
        send its images without them."""
        again = self.reconnected()
        if again is None:
            return
        log.info("reconnected to the broker: what this master sent is checked there anew")
        self._connections = again
        assert self.frontier is not None
        self.frontier.forget_seen()
        images_seen.clear()
        page_delays.clear()
        if cookies is not None:
            cookies.republish()

    def reconnected(self) -> int | None:
        """The broker client's count of reconnections, if it has reconnected since this
        master last forgot what it sent; None otherwise (and without a broker)."""
        broker = self._broker
        if broker is None or self.frontier is None:
            return None
        again = broker.connections.again
        return again if again > self._connections else None

    def gone(self, exc: Exception) -> bool:
        """Whether ``exc`` says this master's broker is out of reach."""
        if self._broker is None:
            return False
        from crawler.board.broker import is_link_error

        return is_link_error(exc)

    def answered(self, exc: Exception) -> bool:
        """Whether ``exc`` is what this master's broker answered (a command refused, the
        crawl gone from it): the broker is there, whatever it was before."""
        if self._broker is None:
            return False
        import redis

        return (isinstance(exc, redis.ResponseError | BrokerError)
                and not self.gone(exc))

    def lost(self, exc: Exception, since: float | None) -> float:
        """Wait out a broker that does not answer (a restart, a cut link) for up to
        BROKER_WAIT seconds; re-raise anything else. Whatever this pass did not record
        is still leased to this master, and comes back to the crawl if it gives up."""
        if not self.gone(exc):
            raise exc
        assert self._broker is not None
        now = time.monotonic()
        if self._stop.is_set():
            return since or now  # stopping: not waited for (the loop ends)
        if since is None:
            said = exc.said if isinstance(exc, BrokerUnreachable) else exc
            log.warning("lost the broker (%s); waiting up to %.0f s for it", said, BROKER_WAIT)
            since = now
        elif now - since > BROKER_WAIT:
            raise BrokerUnreachable(f"the broker at {self._broker.address} has not "
                                    f"answered for {BROKER_WAIT:.0f} s ({exc}); the crawl's "
                                    "state is there: start this master again to carry on"
                                    ) from exc
        self._stop.wait(0.5)
        return since
