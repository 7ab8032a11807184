"""What a master tells every worker of its crawl: the answer to a worker's ``hello``.

The download limits, the address policy, the user agent, the image scope, the
robots.txt rules and the lease timings: all from the settings and the seeds,
none from the crawl loop's state. Apart from the loop, which adds how the crawl
is going for ``crawler status`` (``Master.describe``), and the request settings,
which only a joining worker is told.
"""

from __future__ import annotations

from pathlib import Path

from crawler.config import Limits, Settings
from crawler.fetch.guard import AddressPolicy
from crawler.master.scope import Scope
from crawler.model.wire import CrawlInfo, RobotsRules


def crawl_info(settings: Settings, *, policy: AddressPolicy, scope: Scope,
               folder: Path | None, run: str = "") -> CrawlInfo:
    """The crawl as workers need it. ``folder``: the embedded master's output folder,
    which its workers share (None on a broker: each worker has its own); ``run``: when
    its run started, as the folder's summary.json will say."""
    info = CrawlInfo(limits=Limits.from_settings(settings.download)._asdict(),
                     policy=policy.to_wire(),
                     user_agent=settings.crawl.user_agent,
                     image_scope=scope.images.to_wire(),
                     robots=RobotsRules(respect=settings.crawl.respect_robots,
                                        timeout=settings.crawl.page_timeout,
                                        max_age=settings.crawl.robots_max_age),
                     lease_timeout=settings.queue.lease_timeout,
                     worker_silence=settings.queue.worker_silence)
    if folder is not None:
        info["folder"] = str(folder.absolute())
        if run:
            info["run"] = run
    return info
