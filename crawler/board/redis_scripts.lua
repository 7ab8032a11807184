-- The task board's state changes, one Lua script each (see crawler/board/redis.py).
-- This part is shared: crawler/board/redis.py puts it before every script's body.
-- KEYS[1] is the crawl's prefix "crawler:{CRAWL}:"; every key is built from it, so all
-- of them share the crawl's hash tag and a cluster keeps them on one slot. KEYS[2], when
-- given, is the crawl's record, which a worker's exchange (and reap) looks for.
local P = KEYS[1]
local ITEMS, COUNTS = P .. 'items', P .. 'counts'
local LEASES, DELAYED = P .. 'leases', P .. 'delayed'
-- A host with queued URLs is in LISTED, and in one of: READY (may be asked, in turn),
-- PACED (not before its score: its delay or a Retry-After) or FULL (host_concurrency
-- URLs in flight). Only READY is walked, so a lease costs nothing per waiting host.
local READY, LISTED = P .. 'ready', P .. 'listed'
local PACED, FULL = P .. 'paced', P .. 'full'
local INFLIGHT, NEXT, DELAY = P .. 'inflight', P .. 'next', P .. 'delay'
-- A host's slow-down after a 429 or 503 (crawler.model.pacing's, whose constants
-- crawler/board/redis.py puts before this part): SLOW, host -> seconds between two
-- requests, worn off by successes; SLOWED, host -> when it last grew.
local SLOW, SLOWED = P .. 'slow', P .. 'slowed'
-- The Crawl-delay of a host's pages, kept by the page frontier (crawler/board/
-- redis_frontier.py): DELAY is set once its images are found, after its first pages.
local PAGE_DELAY = P .. 'pages:delay'
local CONTACT, ASKING, GONE = P .. 'contact', P .. 'asking', P .. 'gone'
-- When the last reap ran: every master and every worker reaps about once a second.
-- BOARD_AWAY (crawler.board.memory's) comes before this part: seconds without a reap
-- that say the broker was away (a restart, a hang), or no one ran.
local REAPED = P .. 'reaped'
local CLOSED, RESULTS = P .. 'closed', P .. 'results'
-- CRAWL_GONE and crawl_gone(record) come before this part (CRAWL_GONE_LUA in
-- crawler/board/broker.py, shared with the page frontier's scripts): whether the crawl's
-- record (KEYS[2], when given) is gone, and the error a script then answers.
-- URL -> {h, p, r, id}: a final result that was a passing failure (a timeout, a 5xx,
-- a 429), with its place in RESULTS; a rerun of the crawl queues it again. With j = 1:
-- a refusal for an unreadable robots.txt, which a rerun's master judges again first.
local RETRY = P .. 'retry'
-- The cookies the crawl's pages set: cookie key -> "VERSION LINE", and the version of the
-- last change, which every lease answer carries (a worker with an older jar asks).
local JAR, JAR_VERSION = P .. 'jar', P .. 'jar_version'
-- A host whose images timed out host_timeouts times in a row, no answer between, is given
-- up for the run (crawler.board.memory's rule): TIMEOUTS, host -> its timeouts in a row;
-- GIVEN_UP, host -> the timeouts in a row it was given up at (a rerun's master clears
-- both: crawler/board/redis.py).
-- GIVEN_UP_REASON and GIVEN_UP_NOTE (crawler.model.outcome's) come before this part.
local TIMEOUTS, GIVEN_UP = P .. 'timeouts', P .. 'given_up'
local STATE_COUNT = {q = 'queued', l = 'in_flight', d = 'delayed', f = 'done'}
local ASKING_WINDOW = 2.0
local CLASSIC = 'classic'

local function num(x) return string.format('%.17g', x) end

-- Changes to counters that no script reads back (the counts hash; a worker's done,
-- failed and bytes) are added up here and written once, when the script ends
-- (flush_bumps, called by the wrapper crawler/board/redis.py puts around each
-- script): one HINCRBY per counter per call instead of one per URL.
local PENDING = {}
local function bump(key, field, n)
  local fields = PENDING[key]
  if not fields then
    fields = {}
    PENDING[key] = fields
  end
  fields[field] = (fields[field] or 0) + n
end
-- Counters a call reads and changes again and again (a host's URLs in flight, a worker's
-- share of a host: once per URL of a batch) are read once, kept here with what the call
-- added, and written once by flush_bumps; a field that comes to 0 or less goes.
local TALLIES = {}
local function tally_of(key, field)
  local fields = TALLIES[key]
  if not fields then
    fields = {}
    TALLIES[key] = fields
  end
  local t = fields[field]
  if not t then
    t = {added = 0}
    fields[field] = t
  end
  return t
end
local function tally(key, field)
  local t = tally_of(key, field)
  if t.stored == nil then t.stored = tonumber(redis.call('HGET', key, field) or '0') end
  return t.stored + t.added
end
local function add_to_tally(key, field, n)
  local t = tally_of(key, field)
  t.added = t.added + n
end
local function flush_bumps()
  for key, fields in pairs(PENDING) do
    for field, n in pairs(fields) do
      if n ~= 0 then redis.call('HINCRBY', key, field, n) end
    end
  end
  for key, fields in pairs(TALLIES) do
    for field, t in pairs(fields) do
      if t.added ~= 0 and redis.call('HINCRBY', key, field, t.added) <= 0 then
        redis.call('HDEL', key, field)
      end
    end
  end
end

-- A host's pace (NEXT: not asked before; DELAY: between two URLs; SLOW and SLOWED: its
-- slow-down), read once a call.
local HOST_TIMES = {[P .. 'next'] = {}, [P .. 'delay'] = {}, [P .. 'slow'] = {},
                    [P .. 'slowed'] = {}}
local function host_time(key, host)
  local known = HOST_TIMES[key]
  local t = known[host]
  if t == nil then
    t = tonumber(redis.call('HGET', key, host) or '0')
    known[host] = t
  end
  return t
end

-- Hosts this call saw in LISTED (or put there), and hosts it took out of FULL (or
-- found not there): a set's membership is asked once a call, not once per URL.
local LISTED_NOW, FREED = {}, {}

local function now_from(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')  -- the broker's clock: every host reads the same one
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function worker_key(w) return P .. 'w:' .. w end
local function held_key(w) return P .. 'held:' .. w end
local function perhost_key(w) return P .. 'ph:' .. w end
local function queue_key(h) return P .. 'q:' .. h end

-- An item: {h = host, p = page, r = ref, s = state, a = attempts, w = holder, lw = the
-- holder whose lease ended last, t = 1 when an earlier run may have tried it}; a finished URL keeps only its name, with an empty value.
local function get_item(url)
  local v = redis.call('HGET', ITEMS, url)
  if not v then return nil end
  if v == '' then return {s = 'f'} end
  return cjson.decode(v)
end

local function save_item(url, it)
  if it.s == 'f' then
    redis.call('HSET', ITEMS, url, '')
  else
    redis.call('HSET', ITEMS, url, cjson.encode(it))
  end
end

local function set_state(url, it, state)
  bump(COUNTS, STATE_COUNT[it.s], -1)
  bump(COUNTS, STATE_COUNT[state], 1)
  if it.k then
    redis.call('ZREM', LEASES, url)
    it.k = nil
  end
  it.s = state
end

local function enqueue(url, host, front)
  if front then
    redis.call('LPUSH', queue_key(host), url)
  else
    redis.call('RPUSH', queue_key(host), url)
  end
  if not LISTED_NOW[host] then
    if redis.call('SADD', LISTED, host) == 1 then redis.call('RPUSH', READY, host) end
    LISTED_NOW[host] = true
  end
end

local function hold_host(host, untill)
  if untill > host_time(NEXT, host) then
    HOST_TIMES[NEXT][host] = untill
    redis.call('HSET', NEXT, host, num(untill))
    redis.call('ZADD', PACED, 'XX', num(untill), host)  -- if waiting, now for longer
  end
end

-- Hosts whose pace allows a request again go back in turn (or wait for a free slot).
local function promote_paced(now, policy)
  local due = redis.call('ZRANGEBYSCORE', PACED, '-inf', num(now))
  for _, host in ipairs(due) do
    redis.call('ZREM', PACED, host)
    if tally(INFLIGHT, host) >= policy.host_concurrency then
      redis.call('SADD', FULL, host)
      FREED[host] = nil
    else
      redis.call('RPUSH', READY, host)
    end
  end
end

local RECORDED = {}  -- worker -> whether it has a record, asked once a call
local function has_record(worker)
  local known = RECORDED[worker]
  if known == nil then
    known = redis.call('EXISTS', worker_key(worker)) == 1
    RECORDED[worker] = known
  end
  return known
end

-- Every call from a worker: it is alive, not gone, and its leases live lease_timeout more.
-- False for the classic holder that never said hello (it keeps no record). The leases'
-- deadlines are not rewritten here (that cost one ZADD per held URL per call, the
-- larger part of a busy broker's work): reap renews, from the holder's last contact,
-- a lease whose deadline passed while its holder kept calling.
local function touch(worker, now, lease_timeout)
  local wk = worker_key(worker)
  if redis.call('EXISTS', wk) == 0 then
    if worker == CLASSIC then return false end
    redis.call('HSET', wk, 'first', num(now), 'ex', 0)
    RECORDED[worker] = true
  end
  redis.call('ZADD', CONTACT, num(now), worker)
  if redis.call('SREM', GONE, worker) == 1 then
    local ask = redis.call('HGET', wk, 'ask')
    if ask then redis.call('ZADD', ASKING, ask, worker) end
  end
  return true
end

local function unlease(url, it)
  if it.s ~= 'l' then return end
  add_to_tally(INFLIGHT, it.h, -1)
  if not FREED[it.h] then  -- a slot: the host may be asked again
    if redis.call('SREM', FULL, it.h) == 1 then redis.call('RPUSH', READY, it.h) end
    FREED[it.h] = true
  end
  if it.w and has_record(it.w) then
    redis.call('SREM', held_key(it.w), url)
    add_to_tally(perhost_key(it.w), it.h, -1)
  end
  it.lw = it.w  -- whose lease ran out last: a late success of its counts (report)
  it.w = nil
end

-- passing: the next run tries it again (kept in RETRY); name_taken: for that reason, not
-- a passing one (marked n there, for the rerun to say apart); untried: settled without
-- a try of its own (its host given up), its tries those made, none perhaps.
local function finish(url, it, attempt_json, worker, passing, name_taken, untried)
  local attempts = it.a or 0
  if not untried then attempts = math.max(attempts, 1) end
  local fields = {'attempt', attempt_json, 'attempts', attempts}
  if it.p then table.insert(fields, 'page'); table.insert(fields, it.p) end
  if worker then table.insert(fields, 'worker'); table.insert(fields, worker) end
  if it.r then table.insert(fields, 'ref'); table.insert(fields, it.r) end
  set_state(url, it, 'f')
  save_item(url, it)
  bump(COUNTS, 'unfinished', -1)
  local id = redis.call('XADD', RESULTS, '*', unpack(fields))
  if passing then
    redis.call('HSET', RETRY, url, cjson.encode({h = it.h, p = it.p, r = it.r, id = id,
                                                 n = name_taken or nil}))
  end
end

-- The timeouts in a row host was given up at, or false; asked once a call.
local GIVEN_UP_NOW = {}
local function given_up_at(host)
  local known = GIVEN_UP_NOW[host]
  if known == nil then
    known = tonumber(redis.call('HGET', GIVEN_UP, host) or '') or false
    GIVEN_UP_NOW[host] = known
  end
  return known
end

-- A queued URL of a host given up ends (a passing failure: the next run tries it again).
local function end_given_up(url, it)
  local attempt = cjson.encode({url = url, ok = false, transient = true, kind = 'timeout',
                                reason = string.format(GIVEN_UP_REASON, it.h,
                                                       given_up_at(it.h))})
  finish(url, it, attempt, nil, true, false, true)
end

-- A URL queued again at the front of its host's queue (a retry, a lease given back), or
-- ended if its host is given up.
local function back_on_queue(url, it)
  set_state(url, it, 'q')
  if given_up_at(it.h) then
    end_given_up(url, it)
    return
  end
  save_item(url, it)
  enqueue(url, it.h, true)
end

-- A settled image (its result taken back by the caller) to the back of its host's queue,
-- as ``item``, with a fresh count of tries.
local function queue_again(url, item)
  bump(COUNTS, 'done', -1)
  bump(COUNTS, 'queued', 1)
  bump(COUNTS, 'unfinished', 1)
  save_item(url, item)
  enqueue(url, item.h, false)
end

local function promote_delayed(now)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', num(now))
  for _, url in ipairs(due) do
    redis.call('ZREM', DELAYED, url)
    local it = get_item(url)
    if it and it.s == 'd' then
      back_on_queue(url, it)
    end
  end
end

-- Put back URLs worker holds and will not try (their attempt was never made).
local function release(worker, urls)
  for _, url in ipairs(urls) do
    local it = get_item(url)
    if it and it.s == 'l' and it.w == worker then
      unlease(url, it)
      it.a = it.a - 1
      back_on_queue(url, it)
    end
  end
end

-- policy: {lease_timeout, max_attempts, backoff_base, backoff_max, host_delay,
--          host_concurrency, batch_size, worker_silence, host_timeouts}
local function policy_from(args, at)
  return {lease_timeout = tonumber(args[at]), max_attempts = tonumber(args[at + 1]),
          backoff_base = tonumber(args[at + 2]), backoff_max = tonumber(args[at + 3]),
          host_delay = tonumber(args[at + 4]), host_concurrency = tonumber(args[at + 5]),
          batch_size = tonumber(args[at + 6]), worker_silence = tonumber(args[at + 7]),
          host_timeouts = tonumber(args[at + 8])}
end
local POLICY_ARGS = 9

-- A report: url, ok, transient ('1'; 'n' for a name taken in the image folder, final in
-- this run and tried again by the next; 'r' for another such failure, a TLS one; '0'
-- for none of these), retry_after ('' for none),
-- bytes, jitter, busy (the
-- reason of a 429 or 503, about its host; '' for any other), attempt JSON, note for the
-- crawl's user ('' for none: else its kind, a tab and its line), host ('t': the try
-- timed out; 'a': the server answered; '' neither: see Attempt.timed_out, host_answered).
local REPORT_ARGS = 11

-- A note is kept once per host and kind, in NEWS, where every master reads it.
local SAID, NEWS = P .. 'said', P .. 'news'
local function say(host, note)
  local tab = string.find(note, '\t', 1, true)
  if redis.call('HSETNX', SAID, host .. '\t' .. string.sub(note, 1, tab - 1), 1) == 1 then
    redis.call('XADD', NEWS, 'MAXLEN', '~', 10000, '*', 'line', string.sub(note, tab + 1))
  end
end

-- The host answered a 429 or 503 (busy: its reason), to an image or a page: its delay
-- doubles (the new one is returned), unless the slow-down grew within the gap (the
-- answers to requests sent before are the same news) or backoff_max allows no slower
-- pace (nil). Pages go by it too: crawler/board/redis_frontier.py reads SLOW.
-- Whether now is within SLOW_DOWN_GAP (or the slow-down, if longer) of the host's
-- slow-down's last growth (never grown: its time reads 0, long past).
local function within_gap(host, slowed, now)
  return now - host_time(SLOWED, host) < math.max(SLOW_DOWN_GAP, slowed)
end

local function slow_down(host, busy, url, now, policy)
  local slowed = host_time(SLOW, host)
  if within_gap(host, slowed, now) then return nil end
  -- (the pages' Crawl-delay too: a host with none of its images queued yet, asked every
  -- second, was "slowed down" to every 0.25 s, and its pages went on as before)
  local delay = math.max(policy.host_delay, host_time(DELAY, host), slowed,
                         tonumber(redis.call('HGET', PAGE_DELAY, host) or '0'))
  local least = FIRST_SLOW_DOWN  -- at first (see crawler.model.pacing)
  if slowed > 0 then least = 0 end
  slowed = math.min(policy.backoff_max, math.max(least, 2 * delay))
  if slowed <= delay then return nil end  -- backoff_max allows the host no slower pace
  HOST_TIMES[SLOW][host] = slowed
  HOST_TIMES[SLOWED][host] = now
  hold_host(host, now + slowed)  -- from this answer on: the next request waits it too
  redis.call('HSET', SLOW, host, num(slowed))
  redis.call('HSET', SLOWED, host, num(now))
  say(host, 'slowed\t' .. string.format('%s answered %s (%s): slowed down to one request '
      .. 'every %.2g s, across all workers; it speeds up again as the host answers', host,
      busy, string.sub(url, 1, 200), slowed))
  return slowed
end

-- The host answered well: its slow-down, if any, wears off a little.
-- (Not within the gap after it grew: see crawler.model.pacing.)
local function answered(host, now)
  local slowed = host_time(SLOW, host)
  if slowed <= SLOW_DOWN_FLOOR or within_gap(host, slowed, now) then return end
  slowed = math.max(SLOW_DOWN_FLOOR, slowed * SLOW_DOWN_WEARS_OFF)
  redis.call('HSET', SLOW, host, num(slowed))
  HOST_TIMES[SLOW][host] = slowed
end

-- An image of host timed out: at host_timeouts in a row, the host is given up, its queued
-- images ended now and later ones as they come (put, back_on_queue); the ones in flight
-- end with their own tries, not tried again.
local function timed_out(host, policy)
  local count = redis.call('HINCRBY', TIMEOUTS, host, 1)
  local limit = policy.host_timeouts
  if limit == 0 or count < limit or given_up_at(host) then return end
  redis.call('HSET', GIVEN_UP, host, limit)
  GIVEN_UP_NOW[host] = limit
  say(host, 'given up\t' .. string.format(GIVEN_UP_NOTE, host, limit))
  local q = queue_key(host)
  for _, url in ipairs(redis.call('LRANGE', q, 0, -1)) do
    local it = get_item(url)
    if it and it.s == 'q' then end_given_up(url, it) end
  end
  redis.call('DEL', q)  -- the host leaves READY, PACED or FULL as a host run dry
end

local function record_result(url, it, r, worker, now, policy)
  unlease(url, it)
  if r.ok then
    answered(it.h, now)
  elseif r.busy ~= '' then
    slow_down(it.h, r.busy, url, now, policy)
  end
  if r.retry_after > 0 then
    hold_host(it.h, now + math.min(r.retry_after, policy.backoff_max))
  end
  -- The host that did not answer counts: a redirect's target, where the image's own host
  -- answered with the redirect.
  local hop_host = it.h
  if r.hop_host ~= '' and r.hop_host ~= it.h then
    hop_host = r.hop_host
    redis.call('HDEL', TIMEOUTS, it.h)
  end
  if r.host == 't' then
    timed_out(hop_host, policy)
  elseif r.host == 'a' then
    redis.call('HDEL', TIMEOUTS, hop_host)
  end
  local attempts = math.max(it.a or 0, 1)
  if not r.ok and r.transient and attempts < policy.max_attempts
      and not given_up_at(it.h) and not given_up_at(hop_host) then
    local delay = math.min(policy.backoff_max, policy.backoff_base * 2 ^ (attempts - 1))
    delay = delay * r.jitter
    if r.retry_after > 0 then
      delay = math.max(delay, math.min(r.retry_after, policy.backoff_max))
    end
    set_state(url, it, 'd')
    save_item(url, it)
    redis.call('ZADD', DELAYED, num(now + delay), url)
    bump(COUNTS, 'retries', 1)
    return
  end
  finish(url, it, r.json, worker, not r.ok and (r.transient or r.name_taken or r.next_run),
         not r.ok and r.name_taken)
end

-- Returns recorded, the URLs never queued, the URLs worker does not hold; and the
-- URLs the reports speak of.
local function report(worker, record, args, at, count, now, policy)
  local recorded, unknown, duplicates, spoken = 0, {}, {}, {}
  for i = 0, count - 1 do
    local base = at + i * REPORT_ARGS
    local r = {url = args[base], ok = args[base + 1] == '1', transient = args[base + 2] == '1',
               name_taken = args[base + 2] == 'n', next_run = args[base + 2] == 'r',
               retry_after = tonumber(args[base + 3]) or 0, bytes = tonumber(args[base + 4]),
               jitter = tonumber(args[base + 5]), busy = args[base + 6],
               json = args[base + 7], note = args[base + 8], host = args[base + 9],
               hop_host = args[base + 10]}
    spoken[r.url] = true
    local it = get_item(r.url)
    -- A late success (stored by a worker cut off while its lease ran out, or by one of
    -- a run before its master's restart), the URL handed to no one since, counts: as
    -- crawler.board.memory's _holds says why.
    local late = it and r.ok and (it.s == 'q' or it.s == 'd')
                 and (it.lw == worker or it.t == 1)
    if not it then
      bump(COUNTS, 'unknown', 1)
      table.insert(unknown, r.url)
    elseif (it.s ~= 'l' or it.w ~= worker) and not late then
      -- Its lease ran out: only the current holder's result counts.
      bump(COUNTS, 'duplicates', 1)
      table.insert(duplicates, r.url)
    else
      if record then
        if r.ok then
          bump(worker_key(worker), 'done', 1)
          bump(worker_key(worker), 'bytes', r.bytes)
        else
          bump(worker_key(worker), 'failed', 1)
        end
      end
      if r.note ~= '' then say(it.h, r.note) end
      record_result(r.url, it, r, worker, now, policy)
      recorded = recorded + 1
    end
  end
  return recorded, unknown, duplicates, spoken
end

-- The first URL of queue q still queued, and its item (those settled while queued are
-- dropped): taken off the queue when take, else only looked at. Nil when none is left.
local function first_queued(q, take)
  while true do
    local url
    if take then url = redis.call('LPOP', q) else url = redis.call('LINDEX', q, 0) end
    if not url then return nil, nil end
    local it = get_item(url)
    if it and it.s == 'q' then return url, it end
    if not take then redis.call('LPOP', q) end
  end
end

-- The slots of host that the other workers asking lately lack to hold floor each, as
-- far as they asked for more than they got (their 'unmet', set by lease). A worker at
-- floor (its share rounded down) takes another slot only when that leaves these free:
-- shares rounded up add up to more than a host has, and a worker that came later got
-- none while the others took back each slot their reports freed (the memory board's
-- _owed).
local function owed(askers, worker, host, floor)
  local lacking = 0
  for _, other in ipairs(askers) do
    if other ~= worker then
      local unmet = tonumber(redis.call('HGET', worker_key(other), 'unmet') or '0')
      lacking = lacking + math.min(unmet, math.max(0, floor - tally(perhost_key(other), host)))
    end
  end
  return lacking
end

-- Hand out up to limit URLs, one per host per turn, within each host's concurrency,
-- pace and (for a worker with a record) its share among the workers asking.
local function take(worker, record, limit, now, policy)
  local tasks = {}
  local share, floor, askers = math.huge, 0, {}
  local owed_on = {}  -- by host: owed(), asked once a call
  if record then
    askers = redis.call('ZRANGEBYSCORE', ASKING, num(now - ASKING_WINDOW), '+inf')
    local asking = math.max(1, #askers)
    share = math.ceil(policy.host_concurrency / asking)
    floor = math.floor(policy.host_concurrency / asking)
  end
  local hosts = redis.call('LLEN', READY)
  local blocked = 0  -- hosts in a row this worker has its share of; all of them means stop
  local only = nil  -- the one host in READY, once read: it stays first while alone
  while #tasks < 2 * limit and hosts > 0 and blocked < hosts do  -- two entries a task
    local host = only or redis.call('LINDEX', READY, 0)
    if hosts == 1 then only = host end
    local q = queue_key(host)
    local nxt = host_time(NEXT, host)
    local wait = nil  -- why this host gives nothing now, if it has URLs: PACED, FULL, share
    if nxt > now then
      wait = PACED
    elseif tally(INFLIGHT, host) >= policy.host_concurrency then
      wait = FULL
    elseif record then
      local mine = tally(perhost_key(worker), host)
      if mine >= share then
        wait = 'share'
      elseif floor > 0 and mine >= floor then  -- (floor 0: more workers than slots)
        if owed_on[host] == nil then owed_on[host] = owed(askers, worker, host, floor) end
        if owed_on[host] >= policy.host_concurrency - tally(INFLIGHT, host) then
          wait = 'share'
        end
      end
    end
    local url, it = first_queued(q, not wait)
    if not url then  -- an empty host leaves the turn, wherever it would wait
      redis.call('LPOP', READY)
      redis.call('SREM', LISTED, host)
      LISTED_NOW[host] = nil
      hosts = hosts - 1
    elseif wait == PACED then
      redis.call('LPOP', READY)
      redis.call('ZADD', PACED, num(nxt), host)
      hosts = hosts - 1
    elseif wait == FULL then
      redis.call('LPOP', READY)
      redis.call('SADD', FULL, host)
      FREED[host] = nil
      hosts = hosts - 1
    elseif wait then  -- this worker has its share of the host: the next host's turn
      if hosts > 1 then redis.call('LMOVE', READY, READY, 'LEFT', 'RIGHT') end
      blocked = blocked + 1
    else
      blocked = 0
      set_state(url, it, 'l')
      it.w = worker
      it.a = (it.a or 0) + 1
      if not record then
        -- No record, no heartbeat to go by (the classic worker): the lease has a
        -- deadline of its own. A worker with a record loses its leases when it falls
        -- silent (reap).
        it.k = 1
        redis.call('ZADD', LEASES, num(now + policy.lease_timeout), url)
      end
      save_item(url, it)
      add_to_tally(INFLIGHT, host, 1)
      local delay = math.max(policy.host_delay, host_time(DELAY, host), host_time(SLOW, host))
      if delay > 0 then hold_host(host, now + delay) end
      if record then
        redis.call('SADD', held_key(worker), url)
        add_to_tally(perhost_key(worker), host, 1)
      end
      table.insert(tasks, url)
      table.insert(tasks, it.a + (it.t or 0))  -- a try an earlier run may have made counts
      -- One URL per host per turn (a rotation of one host changes nothing).
      if hosts > 1 then redis.call('LMOVE', READY, READY, 'LEFT', 'RIGHT') end
    end
  end
  return tasks
end

-- The lease step: {closed, tasks as url, attempt, url, attempt...}.
local function lease(worker, record, limit, now, policy)
  if record then
    redis.call('HSET', worker_key(worker), 'ask', num(now))
    redis.call('ZADD', ASKING, num(now), worker)
  end
  if redis.call('EXISTS', CLOSED) == 1 then return {1, {}} end
  promote_delayed(now)
  promote_paced(now, policy)
  local tasks = take(worker, record, limit, now, policy)
  if record then  -- what the others leave it room for (owed)
    redis.call('HSET', worker_key(worker), 'unmet', limit - math.floor(#tasks / 2))
  end
  return {0, tasks}
end

local function mark_gone(worker)
  redis.call('SADD', GONE, worker)
  redis.call('ZREM', ASKING, worker)
end

-- A worker is shown gone once it said goodbye or fell silent for worker_silence (ours
-- call every second), whether or not a master's reap has marked it yet (none runs once
-- every master has left).
local function is_gone(worker, contact, now, silence)
  return redis.call('SISMEMBER', GONE, worker) == 1 or tonumber(contact) < now - silence
end

-- @script put: url, host, item JSON, for each of a page's images -> how many were queued
-- (the board had the others). One call for them all: a call per image was most of
-- a broker's CPU on a site of many images a page.
if crawl_gone(KEYS[2]) then return redis.error_reply(CRAWL_GONE) end
local queued = 0
for i = 1, #ARGV, 3 do
  local url = ARGV[i]
  if redis.call('HSETNX', ITEMS, url, ARGV[i + 2]) == 1 then
    queued = queued + 1
    if given_up_at(ARGV[i + 1]) then  -- (counted queued below, and done here)
      end_given_up(url, cjson.decode(ARGV[i + 2]))
    else
      enqueue(url, ARGV[i + 1], false)
    end
  end
end
bump(COUNTS, 'queued', queued)
bump(COUNTS, 'unfinished', queued)
return queued

-- @script settle_now: url, its RETRY entry without id ('' for none), then the result's
-- stream fields and values -> 1 when recorded
if crawl_gone(KEYS[2]) then return redis.error_reply(CRAWL_GONE) end
if redis.call('HEXISTS', ITEMS, ARGV[1]) == 1 then return 0 end
redis.call('HSET', ITEMS, ARGV[1], '')
bump(COUNTS, 'done', 1)
local id = redis.call('XADD', RESULTS, '*', unpack(ARGV, 3))
if ARGV[2] ~= '' then
  local saved = cjson.decode(ARGV[2])
  saved.id = id
  redis.call('HSET', RETRY, ARGV[1], cjson.encode(saved))
end
return 1

-- @script settle_again: url, whether it stays to judge again ('1' or '0'), then the
-- result's stream fields and values -> 1 when recorded
-- A refusal for an unreadable robots.txt, judged again by a rerun and refused again:
-- its new result takes the old one's place (the stream keeps one entry per URL).
local raw = redis.call('HGET', RETRY, ARGV[1])
local saved = raw and cjson.decode(raw)
local it = saved and saved.j and get_item(ARGV[1])
if not (it and it.s == 'f') then return 0 end
redis.call('XDEL', RESULTS, saved.id)
saved.id = redis.call('XADD', RESULTS, '*', unpack(ARGV, 3))
if ARGV[2] == '1' then
  redis.call('HSET', RETRY, ARGV[1], cjson.encode(saved))
else
  redis.call('HDEL', RETRY, ARGV[1])
end
return 1

-- @script retry_failed: which ('passing' or 'judged'), urls -> how many were queued again,
-- and how many of them had failed for a name taken in the image folder
-- A rerun tries again the images whose final result was a passing failure, with a fresh
-- count of tries, as the embedded mode's journal does: each loses its result (the
-- stream entry too, so a master's files, written anew from the stream, keep one line
-- per URL) and goes to the back of its host's queue. Called with the hash's URLs a
-- chunk at a time: Redis serves no one else while a script runs. The crawl is opened
-- again here, not by a later call whose answer a lost reply could skip. Refusals for an
-- unreadable robots.txt (j) are left to their master's judgement: queued only once it
-- found them allowed ('judged').
local judged = ARGV[1] == 'judged'
local again, name_taken = 0, 0
for i = 2, #ARGV do
  local url = ARGV[i]
  local raw = redis.call('HGET', RETRY, url)
  local saved = raw and cjson.decode(raw)
  if saved and (saved.j ~= nil) ~= judged then
    raw = nil  -- the other kind: left as it is
  end
  local it = raw and get_item(url)
  if it and it.s == 'f' then
    redis.call('XDEL', RESULTS, saved.id)
    queue_again(url, {h = saved.h, p = saved.p, r = saved.r, s = 'q', a = 0})
    again = again + 1
    if saved.n then name_taken = name_taken + 1 end
  end
  if raw then redis.call('HDEL', RETRY, url) end
end
if again > 0 then redis.call('DEL', CLOSED) end
return {again, name_taken}

-- @script give_hosts_again: -> how many hosts given up had their chance again
-- A rerun gives every host given up its chance again (retry_failed queues its images): its
-- count and mark go, and so does the note that gave it up, which every master reads from
-- NEWS (a rerun's too: it warned of a host given up "in this run" that this run was
-- downloading from) and which, kept in SAID, the host's giving up in this run would not
-- make again.
local hosts = redis.call('HGETALL', GIVEN_UP)
if #hosts == 0 then
  redis.call('DEL', TIMEOUTS)
  return 0
end
local notes = {}
for i = 1, #hosts, 2 do
  notes[string.format(GIVEN_UP_NOTE, hosts[i], tonumber(hosts[i + 1]))] = true
  redis.call('HDEL', SAID, hosts[i] .. '\tgiven up')
end
for _, entry in ipairs(redis.call('XRANGE', NEWS, '-', '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'line' and notes[fields[i + 1]] then redis.call('XDEL', NEWS, entry[1]) end
  end
end
redis.call('DEL', TIMEOUTS, GIVEN_UP)
return #hosts / 2

-- @script fetch_again: url, its result's stream id, item JSON, for each image -> how many
-- were queued again
-- A rerun's master found gone from its folder the file of an image stored there (deleted
-- by hand since): as retry_failed, the image loses its result (its stream entry too:
-- every master's files, written anew from the stream, keep one line per URL, its next)
-- and goes to the back of its host's queue with a fresh count of tries. An entry gone
-- already (this call made again after a lost answer) queues nothing twice.
if crawl_gone(KEYS[2]) then return redis.error_reply(CRAWL_GONE) end
local again = 0
for i = 1, #ARGV, 3 do
  local url = ARGV[i]
  local it = get_item(url)
  if it and it.s == 'f' and redis.call('XDEL', RESULTS, ARGV[i + 1]) == 1 then
    queue_again(url, cjson.decode(ARGV[i + 2]))
    again = again + 1
  end
end
if again > 0 then redis.call('DEL', CLOSED) end
return again

-- @script remember: urls -> how many were new
local new = 0
for _, url in ipairs(ARGV) do
  new = new + redis.call('HSETNX', ITEMS, url, '')
end
bump(COUNTS, 'done', new)
return new

-- @script set_host_delay: host, seconds, for each host (its Crawl-delay now: a robots.txt
-- read again may ask for more or less; a lease spaces by the configured host_delay at least)
if crawl_gone(KEYS[2]) then return redis.error_reply(CRAWL_GONE) end
for i = 1, #ARGV, 2 do
  redis.call('HSET', DELAY, ARGV[i], ARGV[i + 1])
end
return 0

-- @script reap: now, policy -> how many leases expired
if crawl_gone(KEYS[2]) then return 0 end  -- no writes
local now = now_from(ARGV[1])
local policy = policy_from(ARGV, 2)
-- No reap for a while: no one could reach the broker, or no one ran. Silence then is
-- no sign of a worker: its contact, and a classic lease's deadline, move on by that
-- stretch. A 6 s restart of redis-server ended every lease at once, of workers that
-- called again as soon as it was back (with max_attempts 1, images stored already
-- failed as lost); a worker that is dead all the same loses them worker_silence later.
local last = tonumber(redis.call('GET', REAPED) or '')
redis.call('SET', REAPED, num(now))
-- (Not when a worker called meanwhile: the broker was there, only its reapers were slow.)
if last and now - last > BOARD_AWAY
    and #redis.call('ZRANGEBYSCORE', CONTACT, '(' .. num(last), '+inf', 'LIMIT', 0, 1) == 0 then
  local gap = now - last
  local contacts = redis.call('ZRANGE', CONTACT, 0, -1, 'WITHSCORES')
  for i = 1, #contacts, 2 do
    redis.call('ZADD', CONTACT, num(math.min(now, tonumber(contacts[i + 1]) + gap)),
               contacts[i])
  end
  local deadlines = redis.call('ZRANGE', LEASES, 0, -1, 'WITHSCORES')
  for i = 1, #deadlines, 2 do
    redis.call('ZADD', LEASES, num(tonumber(deadlines[i + 1]) + gap), deadlines[i])
  end
end
promote_delayed(now)
promote_paced(now, policy)
-- Our workers call every second: one silent for worker_silence (or lease_timeout, if
-- shorter) is stopped, cut off or dead, and its leases end now. While it calls, they
-- live: they have no deadline of their own.
local silence = math.min(policy.worker_silence, policy.lease_timeout)
local expired = {}  -- {url, the holder whose lease ends}, in order
local silent = redis.call('ZRANGEBYSCORE', CONTACT, '-inf', '(' .. num(now - silence))
for _, worker in ipairs(silent) do
  for _, url in ipairs(redis.call('SMEMBERS', held_key(worker))) do
    table.insert(expired, {url, worker})
  end
end
-- Leases of holders without a record (the classic worker) end at their deadline.
local due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. num(now))
for _, url in ipairs(due) do
  local it = get_item(url)
  -- (k: leased so; a holder without a record: leased so by scripts before k was kept)
  if it and it.s == 'l' and (it.k or not (it.w and has_record(it.w))) then
    table.insert(expired, {url, it.w})
  end
  redis.call('ZREM', LEASES, url)
end
local ended = 0
for _, lease in ipairs(expired) do
  local url, holder = lease[1], lease[2]
  local it = get_item(url)
  if it and it.s == 'l' and it.w == holder then  -- still that holder's lease
    ended = ended + 1
    unlease(url, it)
    if it.a >= policy.max_attempts then
      -- No server said no (a worker killed, cut off or stopped): the next run tries it.
      finish(url, it, cjson.encode({url = url, ok = false, transient = true,
        reason = 'lost: no result after ' .. it.a .. ' attempts (worker gone or too slow)'}),
        nil, true)
    else
      back_on_queue(url, it)
    end
  end
end
local quiet = redis.call('ZRANGEBYSCORE', CONTACT, '-inf', '(' .. num(now - policy.lease_timeout))
for _, worker in ipairs(quiet) do
  if redis.call('SISMEMBER', GONE, worker) == 0 then mark_gone(worker) end
end
bump(COUNTS, 'expired', ended)
return ended

-- @script hello: now, worker, info JSON
local now, worker = now_from(ARGV[1]), ARGV[2]
local wk = worker_key(worker)
if redis.call('EXISTS', wk) == 0 then
  redis.call('HSET', wk, 'info', ARGV[3], 'first', num(now), 'ex', 0)
else
  if redis.call('SREM', GONE, worker) == 1 then
    local ask = redis.call('HGET', wk, 'ask')
    if ask then redis.call('ZADD', ASKING, ask, worker) end
  end
end
redis.call('ZADD', CONTACT, num(now), worker)
return 0

-- @script lease: now, worker, limit, policy -> {closed, tasks, cookies}
local now, worker = now_from(ARGV[1]), ARGV[2]
local policy = policy_from(ARGV, 4)
local record = touch(worker, now, policy.lease_timeout)
local answer = lease(worker, record, tonumber(ARGV[3]), now, policy)
return {answer[1], answer[2], tonumber(redis.call('GET', JAR_VERSION) or '0')}

-- @script publish_cookies: now, most cookies kept, then key and line pairs
-- -> the jar's version. A line that changes nothing leaves the version; a new cookie past
-- the most is left out. A version is the clock's milliseconds (or one more than the last):
-- a Redis restarted from files older than its last versions, which counted from there,
-- gave versions again that workers had seen, and they skipped those changes.
if crawl_gone(KEYS[2]) then return redis.error_reply(CRAWL_GONE) end
local most = tonumber(ARGV[2])
local version = num(math.max(tonumber(redis.call('GET', JAR_VERSION) or '0') + 1,
                             math.floor(now_from(ARGV[1]) * 1000)))
local changed = false
for i = 3, #ARGV - 1, 2 do
  local key, line = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', JAR, key)
  if not (old and string.sub(old, string.find(old, ' ', 1, true) + 1) == line)
      and (old or redis.call('HLEN', JAR) < most) then
    redis.call('HSET', JAR, key, version .. ' ' .. line)
    changed = true
  end
end
if changed then redis.call('SET', JAR_VERSION, version) end
return tonumber(redis.call('GET', JAR_VERSION) or '0')

-- @script cookies_since: version -> {the jar's version, the lines that came after it}
-- Chosen here: a worker one change behind is sent that change, not every cookie (a site
-- that changes one on every page would have each worker fetch the whole jar each time).
local since = tonumber(ARGV[1]) or 0
local entries = redis.call('HGETALL', JAR)
local lines = {}
for i = 2, #entries, 2 do
  local entry = entries[i]
  local space = string.find(entry, ' ', 1, true)
  if space and (tonumber(string.sub(entry, 1, space - 1)) or 0) > since then
    lines[#lines + 1] = string.sub(entry, space + 1)
  end
end
return {tonumber(redis.call('GET', JAR_VERSION) or '0'), lines}

-- @script report: now, worker, count, policy, reports -> {recorded, unknown, duplicates}
local now, worker = now_from(ARGV[1]), ARGV[2]
local policy = policy_from(ARGV, 4)
local record = touch(worker, now, policy.lease_timeout)
local recorded, unknown, duplicates = report(worker, record, ARGV, 4 + POLICY_ARGS,
                                             tonumber(ARGV[3]), now, policy)
return {recorded, unknown, duplicates}

-- @script heartbeat: now, worker, lease_timeout -> 1 while the crawl goes on
touch(ARGV[2], now_from(ARGV[1]), tonumber(ARGV[3]))
return 1 - redis.call('EXISTS', CLOSED)

-- @script close_if_idle: -> 1 when closed, 0 when the crawl has work again (pages waiting
-- or leased: the keys of crawler/board/redis_frontier.py; or images not settled)
if tonumber(redis.call('HGET', P .. 'pages:stats', 'waiting') or '0') > 0 then return 0 end
if redis.call('ZCARD', P .. 'pages:leased') > 0 then return 0 end
for _, n in ipairs(redis.call('HMGET', COUNTS, 'queued', 'in_flight', 'delayed')) do
  if tonumber(n or '0') > 0 then return 0 end
end
redis.call('SET', CLOSED, 1)
return 1

-- @script page_host_busy: now, host, reason, url, policy -> the host's new seconds
-- between two requests (as text), or nil: a page of the host was answered 429 or 503
if crawl_gone(KEYS[2]) then return redis.error_reply(CRAWL_GONE) end
local now = now_from(ARGV[1])
local slowed = slow_down(ARGV[2], ARGV[3], ARGV[4], now, policy_from(ARGV, 5))
if slowed == nil then return nil end
return num(slowed)

-- @script pages_answered: now, hosts -> 0: a page of each host was answered well, and
-- its slow-down (if any) wears off as an image's success wears it off
if crawl_gone(KEYS[2]) then return redis.error_reply(CRAWL_GONE) end
local now = now_from(ARGV[1])
for i = 2, #ARGV do answered(ARGV[i], now) end
return 0

-- @script release: worker, urls
local urls = {}
for i = 2, #ARGV do table.insert(urls, ARGV[i]) end
release(ARGV[1], urls)
return 0

-- @script goodbye: worker
if has_record(ARGV[1]) then mark_gone(ARGV[1]) end
return 0

-- @script exchange: now, worker, number, limit (0: a heartbeat), has holding,
-- report count, released count, holding count, policy, reports, released, holding
-- -> {stale, closed, tasks, lost, unknown, duplicates, generation, cookies}
-- A crawl whose record is gone (its keys deleted, Redis restarted without its
-- append-only file) is not written to: its worker is told, and leaves. generation: the
-- record's (nil without one), which goes up when the crawl's request settings change;
-- cookies: the jar's version (read after the lease: what its URLs need, or later).
if crawl_gone(KEYS[2]) then return redis.error_reply(CRAWL_GONE) end
local generation = KEYS[2] and redis.call('HGET', KEYS[2], 'generation') or false
local now, worker, number = now_from(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local limit, has_holding = tonumber(ARGV[4]), ARGV[5] == '1'
local n_reports, n_released, n_holding = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local policy = policy_from(ARGV, 9)
local at = 9 + POLICY_ARGS
local released, holding = {}, {}
local from = at + n_reports * REPORT_ARGS
for i = 0, n_released - 1 do table.insert(released, ARGV[from + i]) end
from = from + n_released
for i = 0, n_holding - 1 do table.insert(holding, ARGV[from + i]) end
local record = touch(worker, now, policy.lease_timeout)
local unknown, duplicates, lost = {}, {}, {}
local wk = worker_key(worker)
local applied = record and tonumber(redis.call('HGET', wk, 'ex') or '0')
if record and number < applied then
  -- A copy held up in the network, overtaken by the worker's later calls: all of it
  -- was applied already, or sent again, and its holding list is out of date.
  return {1, redis.call('EXISTS', CLOSED), {}, {}, {}, {}, generation, 0}
end
local spoken = {}
for i = 0, n_reports - 1 do spoken[ARGV[at + i * REPORT_ARGS]] = true end
if (not record) or number > applied then
  if record then redis.call('HSET', wk, 'ex', number) end
  release(worker, released)
  local _
  _, unknown, duplicates = report(worker, record, ARGV, at, n_reports, now, policy)
end
if record and has_holding then
  local kept = {}
  for _, url in ipairs(holding) do kept[url] = true end
  local never = {}
  for _, url in ipairs(redis.call('SMEMBERS', held_key(worker))) do
    if not kept[url] then table.insert(never, url) end
  end
  release(worker, never)  -- never received, so never tried
  bump(COUNTS, 'reclaimed', #never)
  for _, url in ipairs(released) do spoken[url] = true end
  for _, url in ipairs(holding) do
    if not spoken[url] and redis.call('SISMEMBER', held_key(worker), url) == 0 then
      spoken[url] = true  -- named once, however often the worker listed it
      table.insert(lost, url)
    end
  end
end
local closed, tasks = 0, {}
if limit > 0 then
  local answer = lease(worker, record, limit, now, policy)
  closed, tasks = answer[1], answer[2]
else
  closed = redis.call('EXISTS', CLOSED)
end
return {0, closed, tasks, lost, unknown, duplicates, generation,
        tonumber(redis.call('GET', JAR_VERSION) or '0')}

-- @script counts: now, worker_silence -> {the counts hash (HGETALL), how many workers are
-- not gone}. Reads alone, and no transaction: a Redis that is full (maxmemory) refuses
-- every command of a MULTI, and crawler status must still show the crawl there.
local now, silence = now_from(ARGV[1]), tonumber(ARGV[2])
local live = 0
local contacts = redis.call('ZRANGEBYSCORE', CONTACT, num(now - silence), '+inf',
                           'WITHSCORES')
for i = 1, #contacts, 2 do
  if not is_gone(contacts[i], contacts[i + 1], now, silence) then live = live + 1 end
end
return {redis.call('HGETALL', COUNTS), live}

-- @script workers: now, worker_silence -> {now, then per worker: name, info, first,
-- contact, done, failed, bytes, held, gone}
local now, silence = now_from(ARGV[1]), tonumber(ARGV[2])
local out = {num(now)}
local contacts = redis.call('ZRANGE', CONTACT, 0, -1, 'WITHSCORES')
for i = 1, #contacts, 2 do
  local worker = contacts[i]
  local w = redis.call('HMGET', worker_key(worker), 'info', 'first', 'done', 'failed', 'bytes')
  table.insert(out, worker)
  table.insert(out, w[1] or '{}')
  table.insert(out, w[2] or contacts[i + 1])
  table.insert(out, contacts[i + 1])
  table.insert(out, w[3] or '0')
  table.insert(out, w[4] or '0')
  table.insert(out, w[5] or '0')
  table.insert(out, redis.call('SCARD', held_key(worker)))
  table.insert(out, is_gone(worker, contacts[i + 1], now, silence) and 1 or 0)
end
return out
