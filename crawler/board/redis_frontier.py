"""The page frontier on the Redis broker, shared by every master of one crawl.

The same rules as :class:`crawler.master.frontier.Frontier`: one queue per
host, hosts take turns, each host paced (its delay between two pages, raised
by a Crawl-delay, and any hold after a 5xx or 429), a page seen once. A host
slowed down after a 429 or 503 is slowed down for pages and images alike: its
pages are spaced by the board's slow-down (``slow``, kept by the board's scripts in
``redis_scripts.lua``, which a page's 429 or 503 raises and a page read wears off),
so that every master and every worker go by one pace of what the host allows. What a
shared frontier adds: a page a master takes is *leased* to it, as images are
to workers. Its lease lives while that master's heartbeats renew it; when the
page is done, the master records it with its links in one transaction; when
the master dies (kill -9, a cut link), the lease runs out and the page goes
back on its host's queue for another master. Each step is one Lua script, so
masters on several hosts never interleave, and times are Redis's own
(``TIME``), so hosts with skewed clocks agree on pacing and deadlines.

Keys (under the crawl's prefix): ``pages:seen`` (set of URLs), ``pages:lane:HOST``
(list of ``DEPTH<TAB>URL``), ``pages:ready`` (hosts with waiting pages, scored by
when they may be asked), ``pages:next`` and ``pages:delay`` (hashes by host),
``pages:leased`` (URLs scored by lease deadline), ``pages:holder`` (URL to
``MASTER<TAB>DEPTH<TAB>HOST``), ``pages:held:MASTER`` (set), ``pages:tries``,
``pages:aside`` and ``pages:stats`` (``waiting``, ``done``, ``failed``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from crawler.board.broker import CRAWL_GONE_LUA, CrawlRecord, keys_prefix, why_gone
from crawler.errors import CrawlGone
from crawler.model.depths import ShallowestDepths
from crawler.model.urls import host_key

REAP_AT_MOST = 100  # expired page leases put back per pop, so one call stays short
EMPTY_PAUSE = 0.02  # seconds a master waits after finding no page ready before asking again

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# Put a host back on the ready set if it has waiting pages, at its next allowed time.
_LIST_HOST = """
local function list_host(p, host, now)
  if redis.call('LLEN', p .. 'pages:lane:' .. host) > 0 then
    local nxt = tonumber(redis.call('HGET', p .. 'pages:next', host) or '0')
    redis.call('ZADD', p .. 'pages:ready', nxt, host)
  end
end
-- Take url's lease away (from only_from, when given); {depth, host}, or nil when it
-- was not leased (to only_from).
local function unlease(p, url, only_from)
  local holder = redis.call('HGET', p .. 'pages:holder', url)
  if not holder then return nil end
  local master, depth, host = string.match(holder, '^(.-)\\t(%d+)\\t(.*)$')
  if only_from and master ~= only_from then return nil end
  redis.call('HDEL', p .. 'pages:holder', url)
  redis.call('ZREM', p .. 'pages:leased', url)
  redis.call('SREM', p .. 'pages:held:' .. master, url)
  return {depth, host}
end
local function push_front(p, url, depth, host, now)
  redis.call('LPUSH', p .. 'pages:lane:' .. host, depth .. '\\t' .. url)
  redis.call('HINCRBY', p .. 'pages:stats', 'waiting', 1)
  list_host(p, host, now)
end
local function push_back(p, url, depth, host, now)
  redis.call('RPUSH', p .. 'pages:lane:' .. host, depth .. '\\t' .. url)
  redis.call('HINCRBY', p .. 'pages:stats', 'waiting', 1)
  if not redis.call('ZSCORE', p .. 'pages:ready', host) then list_host(p, host, now) end
end
"""

# ARGV: prefix, master, lease seconds, default delay, page budget (0: none), how many
# pages at most -> {url, depth, url, depth...}
_POP = _NOW + _LIST_HOST + """
local p, master, lease, default_delay = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local budget, wanted = tonumber(ARGV[5]), tonumber(ARGV[6])
for _, url in ipairs(redis.call('ZRANGEBYSCORE', p .. 'pages:leased', '-inf', now,
                                'LIMIT', 0, REAP_AT_MOST)) do
  local back = unlease(p, url)
  if back then push_front(p, url, back[1], back[2], now) end
end
-- The crawl's page budget counts every master's pages, done and in flight: checked here,
-- in the one step that leases, so that masters taking pages at once cannot overshoot it.
if budget > 0 then
  local done = tonumber(redis.call('HGET', p .. 'pages:stats', 'done') or '0')
  wanted = math.min(wanted, budget - done - redis.call('ZCARD', p .. 'pages:leased'))
end
local taken, empty_hosts = {}, 0
-- In rounds of one page per ready host, in their turn: a host paced by a delay is not
-- ready again within this call, one without a delay takes its turn again. Every host
-- served in this call would get the same score (now + its delay), and Redis orders
-- equal scores by name, so that one host would come first in every call: each host
-- served gets a score a microsecond past the one served before it, to come after it
-- in this call and the next. One without a delay stays below now: ready again.
local served = 0
local function ready_at(nxt, delay)
  served = served + 1
  if delay > 0 then return nxt + served * 1e-6 end
  return nxt - (wanted + 1 - served) * 1e-6
end
while #taken < 2 * wanted and empty_hosts < 16 do
  local hosts = redis.call('ZRANGEBYSCORE', p .. 'pages:ready', '-inf', now,
                           'LIMIT', 0, wanted - #taken / 2)
  if #hosts == 0 then break end
  for _, host in ipairs(hosts) do
    local entry = redis.call('LPOP', p .. 'pages:lane:' .. host)
    if entry then
      -- (a Crawl-delay shorter than the configured delay does not shorten it; a host's
      -- slow-down after a 429 or 503, to a page or an image, lengthens it: the board's)
      local delay = math.max(tonumber(redis.call('HGET', p .. 'pages:delay', host) or '0'),
                             tonumber(default_delay),
                             tonumber(redis.call('HGET', p .. 'slow', host) or '0'))
      local nxt = now + delay
      redis.call('HSET', p .. 'pages:next', host, nxt)
      if redis.call('LLEN', p .. 'pages:lane:' .. host) > 0 then
        redis.call('ZADD', p .. 'pages:ready', ready_at(nxt, delay), host)
      else
        redis.call('ZREM', p .. 'pages:ready', host)
      end
      redis.call('HINCRBY', p .. 'pages:stats', 'waiting', -1)
      local depth, url = string.match(entry, '^(%d+)\\t(.*)$')
      redis.call('ZADD', p .. 'pages:leased', now + lease, url)
      redis.call('HSET', p .. 'pages:holder', url, master .. '\\t' .. depth .. '\\t' .. host)
      redis.call('SADD', p .. 'pages:held:' .. master, url)
      table.insert(taken, url)
      table.insert(taken, depth)
    else
      redis.call('ZREM', p .. 'pages:ready', host)
      empty_hosts = empty_hosts + 1
    end
  end
end
return taken
""".replace("REAP_AT_MOST", str(REAP_AT_MOST))

# A crawl whose record is gone takes no more pages (see CRAWL_GONE_LUA): recorded there,
# they would make its keys anew, without a record, and a later crawl of that name would
# start from them.
_RECORDED = CRAWL_GONE_LUA + """
if crawl_gone(ARGV[1] .. 'crawl') then return redis.error_reply(CRAWL_GONE) end
"""

# ARGV: prefix, then (depth, url, host) triples: queue each URL never seen
_ADD = _NOW + _LIST_HOST + _RECORDED + """
local p = ARGV[1]
local added = 0
for i = 2, #ARGV, 3 do
  local depth, url, host = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('SADD', p .. 'pages:seen', url) == 1 then
    push_back(p, url, depth, host, now)
    added = added + 1
  end
end
return added
"""

# ARGV: prefix, url, how ('done' | 'aside' | 'requeue'), depth, host, master, and
# 'failed' for a page done that could not be crawled. Only the
# page's holder settles it: a master whose lease ran out (it was silent too long, and
# another master has the page now) changes nothing, and a settle sent twice (a lost
# answer) counts once.
_SETTLE = _NOW + _LIST_HOST + """
local p, url, how = ARGV[1], ARGV[2], ARGV[3]
local held = unlease(p, url, ARGV[6])
if not held then return 0 end
if how == 'done' then
  redis.call('HINCRBY', p .. 'pages:stats', 'done', 1)
  if ARGV[7] == 'failed' then redis.call('HINCRBY', p .. 'pages:stats', 'failed', 1) end
elseif how == 'aside' then
  -- its depth, for the rerun: its lease's, or the shorter one its master found since
  redis.call('HSET', p .. 'pages:aside', url, math.min(tonumber(held[1]), tonumber(ARGV[4])))
else
  push_front(p, url, ARGV[4], ARGV[5], now)
end
return 1
"""

# ARGV: prefix, then (depth, url, host) triples of pages set aside: queue each again
# that is still aside (another master's start may have taken it up meanwhile), with
# its passing failures forgotten, as a rerun of the embedded mode starts counting anew.
_TAKE_UP = _NOW + _LIST_HOST + """
local p = ARGV[1]
local taken = 0
for i = 2, #ARGV, 3 do
  local depth, url, host = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HDEL', p .. 'pages:aside', url) == 1 then
    redis.call('HDEL', p .. 'pages:tries', url)
    push_back(p, url, depth, host, now)
    taken = taken + 1
  end
end
return taken
"""

# ARGV: prefix, master, lease seconds, then the URLs the master is working on: renew
# their leases, and put back any other page leased to it (one whose lease answer was
# lost, or that it dropped): heartbeats must not keep alive a page nobody fetches.
_HEARTBEAT = _NOW + _LIST_HOST + """
local p, master, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local working = {}
for i = 4, #ARGV do working[ARGV[i]] = true end
local renewed = 0
for _, url in ipairs(redis.call('SMEMBERS', p .. 'pages:held:' .. master)) do
  if working[url] then
    redis.call('ZADD', p .. 'pages:leased', 'XX', now + lease, url)
    renewed = renewed + 1
  else
    local back = unlease(p, url, master)
    if back then push_front(p, url, back[1], back[2], now) end
  end
end
return renewed
"""

# ARGV: prefix, host, seconds from now (hold) or the host's Crawl-delay (delay), which
_PACE = _NOW + _RECORDED + """
local p, host, seconds, which = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if which == 'delay' then
  redis.call('HSET', p .. 'pages:delay', host, seconds)
  return 1
end
local until_ = now + seconds
local nxt = tonumber(redis.call('HGET', p .. 'pages:next', host) or '0')
if until_ > nxt then
  redis.call('HSET', p .. 'pages:next', host, until_)
  redis.call('ZADD', p .. 'pages:ready', 'XX', 'GT', until_, host)
end
return 1
"""

# ARGV: prefix, url -> the page's passing failures so far, this one counted
_FAILED = _RECORDED + """
return redis.call('HINCRBY', ARGV[1] .. 'pages:tries', ARGV[2], 1)
"""

# ARGV: prefix -> 1 when the crawl's pages were forgotten: it read none (every page done
# failed, none waiting or leased) and found no image (the board's ``items``). Only its
# seeds can have been seen then (links come from pages read): the caller queues them
# again, those set aside after passing failures among them.
_FORGET_IF_EMPTY = _RECORDED + """
local p = ARGV[1]
if redis.call('EXISTS', p .. 'pages:seen') == 0 then return 0 end
local stats = redis.call('HMGET', p .. 'pages:stats', 'waiting', 'done', 'failed')
local waiting, done, failed = tonumber(stats[1] or '0'), tonumber(stats[2] or '0'),
  tonumber(stats[3] or '0')
if waiting > 0 or done > failed or redis.call('ZCARD', p .. 'pages:leased') > 0
   or redis.call('HLEN', p .. 'items') > 0 then
  return 0
end
redis.call('DEL', p .. 'pages:seen', p .. 'pages:stats', p .. 'pages:tries', p .. 'pages:aside')
return 1
"""

_CLEAR = _RECORDED + """
local p = ARGV[1]
local waiting = tonumber(redis.call('HGET', p .. 'pages:stats', 'waiting') or '0')
for _, host in ipairs(redis.call('ZRANGE', p .. 'pages:ready', 0, -1)) do
  redis.call('DEL', p .. 'pages:lane:' .. host)
end
redis.call('DEL', p .. 'pages:ready')
redis.call('HSET', p .. 'pages:stats', 'waiting', 0)
return waiting
"""


class RedisFrontier:
    """The pages of one crawl on the broker, leased to masters; see the module docstring.

    The master's :class:`~crawler.master.frontier.Frontier` calls, plus what a
    shared frontier needs: ``heartbeat`` (renew this master's page leases),
    ``set_aside`` (a page left for a later run) and ``queue_done`` (record a
    page as done inside the caller's transaction, with its links).
    """

    def __init__(self, client: redis.Redis, crawl: str, master: str, *, delay: float = 0.0,
                 lease: float = 10.0, max_pages: int = 0) -> None:
        self._client = client
        self._crawl = crawl
        self._prefix = keys_prefix(crawl)
        self._record = CrawlRecord(client, crawl).key
        self._master = master
        self._delay = delay
        self.lease = lease
        self._max_pages = max_pages  # the crawl's page budget, every master's pages (0: none)
        self._seen: set[str] = set()  # this master's: spares Redis a round trip per link
        # Of the pages this master queued: another master's shorter path is not known here.
        self._depths = ShallowestDepths()
        # The crawl's pages done and failed, as of the last len(): a page set aside (a
        # passing failure, a rerun tries it) counts in both, as in the embedded mode.
        self.done_pages = 0
        self.failed_pages = 0
        self._empty_until = 0.0  # no pop before this time.monotonic() (see pop)
        self._pop = client.register_script(_POP)
        self._add = client.register_script(_ADD)
        self._settle = client.register_script(_SETTLE)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._pace = client.register_script(_PACE)
        self._clear = client.register_script(_CLEAR)
        self._failed = client.register_script(_FAILED)
        self._take_up = client.register_script(_TAKE_UP)
        self._forget_if_empty = client.register_script(_FORGET_IF_EMPTY)

    def __len__(self) -> int:
        """Pages waiting or being fetched by any master of the crawl.

        Both counts in one transaction: read apart, another master's page could be
        recorded in between (its lease gone, its links not yet counted) and the
        crawl would look finished while it is not.
        """
        pipe = self._client.pipeline(transaction=True)
        pipe.hmget(self._prefix + "pages:stats", "waiting", "done", "failed")
        pipe.zcard(self._prefix + "pages:leased")
        pipe.exists(self._prefix + "pages:seen")
        pipe.exists(self._record)
        pipe.hlen(self._prefix + "pages:aside")
        (waiting, done, failed), leased, begun, recorded, aside = pipe.execute()
        # Read with the rest: one round trip a loop pass.
        self.done_pages = int(done or 0) + int(aside)
        self.failed_pages = int(failed or 0) + int(aside)
        if not recorded:
            # Its first master writes the record before anything else: the crawl's state
            # is gone (FLUSHDB, or a restart with no append-only file). Waiting would be
            # for ever.
            raise CrawlGone(
                f"the crawl {self._crawl!r} is gone from the broker {why_gone(self._client)}: "
                "what it had done is lost there; the result files keep what this master "
                "recorded")
        if not begun:  # its seeds are not queued yet: a joining master must not end it
            return 1
        return max(0, int(waiting or 0)) + int(leased)

    def add_many(self, pages: Iterable[tuple[str, int]]) -> int:
        """Queue pages never seen by the crawl (the seeds); how many were new."""
        args = _page_args(pages)
        self._empty_until = 0.0
        return int(self._add(args=[self._prefix, *args])) if args else 0

    def add(self, url: str, depth: int) -> bool:
        """Whether ``url`` is new to this master; the crawl learns of it in ``queue_done``."""
        if url in self._seen:
            return False
        self._seen.add(url)
        self._depths.queued(url, depth)
        return True

    def seen(self, url: str) -> bool:
        return url in self._seen

    def unseen_by_the_crawl(self, urls: list[str]) -> list[str]:
        """Those of ``urls`` that no master of the crawl has seen (this master's own set
        knows only the pages it met): one round trip."""
        if not urls:
            return []
        known = self._client.smismember(self._prefix + "pages:seen", urls)
        return [url for url, seen in zip(urls, known, strict=True) if not seen]

    def forget_seen(self) -> None:
        """Forget which pages this master saw: after a Redis restart, which may have lost
        the last second of them, Redis's own seen set is the only one to go by."""
        self._seen.clear()
        self._depths.clear()

    def mark_seen(self, url: str) -> None:
        """Never queue ``url`` from this master: it read it already (a redirect's target).
        Other masters may still find it new; they read it once more, as before."""
        self._seen.add(url)

    def pop(self, now: float | None = None) -> tuple[str, int] | None:
        """Lease the next page of a host that may be asked now (None: every host waits)."""
        popped = self.pop_many(1, now)
        return popped[0] if popped else None

    def pop_many(self, count: int, now: float | None = None) -> list[tuple[str, int]]:
        """Lease up to ``count`` pages, hosts taking turns as in ``pop``: one round trip.

        After fewer than ``count``, the broker is asked again only EMPTY_PAUSE later,
        or at once when this master has queued pages itself: the crawl loop asks
        every pass.
        """
        moment = time.monotonic()
        if count <= 0 or moment < self._empty_until:
            return []
        flat: Any = self._pop(args=[self._prefix, self._master, self.lease, self._delay,
                                    self._max_pages, count])
        if len(flat) < 2 * count:
            self._empty_until = moment + EMPTY_PAUSE
        pages = [(str(flat[at]), int(flat[at + 1])) for at in range(0, len(flat), 2)]
        self._seen.update(url for url, _ in pages)
        return pages

    def heartbeat(self, working: Iterable[str] = ()) -> int:
        """Renew the leases of the pages this master is ``working`` on, and put back any
        other page leased to it; how many it holds."""
        return int(self._heartbeat(
            args=[self._prefix, self._master, self.lease, *working]))

    def hold(self, host: str, until: float) -> None:
        """Ask nothing of ``host`` before ``until`` (this process's time.monotonic())."""
        self._pace(args=[self._prefix, host, max(0.0, until - time.monotonic()), "hold"])

    def set_crawl_delay(self, host: str, delay: float) -> None:
        """``delay`` seconds between two pages of ``host`` (its Crawl-delay, which a
        robots.txt read again may change), never less than the configured delay."""
        self._pace(args=[self._prefix, host, delay, "delay"])

    def failed(self, url: str) -> int:
        """Count a passing failure of ``url``, for every master; how often so far. (A
        script: a crawl whose record is gone gets no count, as it gets no page.)"""
        return int(self._failed(args=[self._prefix, url]))

    def found_again(self, links: Iterable[str], depth: int) -> list[tuple[str, int]]:
        """As the embedded frontier's, for the pages this master queued (the crawl's
        frontier keeps the depth they were queued at: it is this master that reads them
        at the lower one, if it reads them)."""
        return self._depths.found_again(links, depth)

    def take_depth(self, url: str, depth: int) -> int:
        return self._depths.take(url, depth)

    # A page read at a depth that another master's, or this one's, later link makes
    # shallower is not read again here: the crawl's frontier keeps no depth of a page
    # read (see README, Outgrowing one master).
    def note_read(self, url: str, depth: int) -> None:
        pass

    def read_again(self, links: Iterable[str], depth: int, limit: int
                   ) -> list[tuple[str, int]]:
        return []

    def reading_again(self, url: str) -> bool:
        return False

    def again_count(self) -> int:
        return 0

    def requeue(self, url: str, depth: int) -> None:
        """Give a leased page back, to be tried again when its host may be asked."""
        self._empty_until = 0.0
        self._depths.queued(url, depth)
        self._settle(args=[self._prefix, url, "requeue", depth, host_key(url), self._master])

    def set_aside(self, url: str, depth: int) -> None:
        """Give up a leased page for this crawl (a passing failure; a rerun may try it),
        to be read at ``depth`` (its lease's, or less: a shorter path found since)."""
        self._settle(args=[self._prefix, url, "aside", depth, "", self._master])

    def take_up_set_aside(self) -> int:
        """Queue again the pages set aside (by any master, in any earlier run): a master
        started on the crawl tries them, as a rerun of the embedded mode does; how many."""
        key = self._prefix + "pages:aside"

        def as_hash(pipe: redis.client.Pipeline) -> None:
            if pipe.type(key) != "set":  # a set: written by an earlier version, no depths
                return
            urls = [str(url) for url in pipe.smembers(key)]
            # One transaction: a full Redis takes a delete (it frees memory) and refuses
            # the write, and the pages were lost; watched, another master's start that
            # took them up meanwhile is not undone.
            pipe.multi()
            pipe.delete(key)
            if urls:
                pipe.hset(key, mapping=dict.fromkeys(urls, 0))

        self._client.transaction(as_hash, key)
        aside = self._client.hgetall(key)
        if not aside:
            return 0
        self._empty_until = 0.0
        return int(self._take_up(args=[self._prefix, *_page_args(
            (str(url), int(depth)) for url, depth in aside.items())]))

    def forget_if_empty(self) -> bool:
        """Forget the crawl's pages when it read none and found no image (its seeds
        failed for good: a 404, a robots.txt refusal); True when it did. Its seeds are
        then new again, as in the embedded mode (``Journal.forget_if_empty``): a rerun
        with --ignore-robots, or once the seed is served, crawls them; the caller queues
        them again (``add_many``)."""
        if not self._forget_if_empty(args=[self._prefix]):
            return False
        self._seen.clear()
        self._empty_until = 0.0
        return True

    def clear(self) -> int:
        """Forget the pages waiting (the page budget is spent); the seen set stays. How
        many were waiting (not those leased: one a master reads is not left)."""
        return int(self._clear(args=[self._prefix]))

    def queue_done(self, pipe: redis.client.Pipeline, url: str,
                   links: Sequence[tuple[str, int]], *, failed: bool = False) -> None:
        """Add to ``pipe`` (a transaction): ``url`` is done (``failed``: it could not be
        crawled, for good), and its links are queued."""
        self._empty_until = 0.0  # its links may be ready at once
        if links:
            self._add(args=[self._prefix, *_page_args(links)], client=pipe)
        self._settle(args=[self._prefix, url, "done", 0, "", self._master,
                           "failed" if failed else ""], client=pipe)



def _page_args(pages: Iterable[tuple[str, int]]) -> list[str | int]:
    args: list[str | int] = []
    for url, depth in pages:
        args += [depth, url, host_key(url)]
    return args
