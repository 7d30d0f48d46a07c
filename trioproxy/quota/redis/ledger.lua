-- trioproxy's shared quota ledger: every operation on one provider's accounts, atomic in Redis.
--
-- KEYS[1] leases (sorted set: lease id -> expiry), KEYS[2] lease data (hash: id -> fields),
-- KEYS[3] leases held per replica (hash), KEYS[4..] one hash per account of the provider, in
-- key order.
-- ARGV[1] the time ("" = Redis TIME), ARGV[2] the number of windows k, then k triples: the
-- window's name, its starting limit and its configured ceiling (-1 = none). Windows: rpm, tpm,
-- rpd, tpd and utpm (utpm: prompt tokens the provider's cache did not hold; tpm and tpd: every
-- token), then any declared ones, whose name says what they are: kind, length, metering
-- (`requests_4h`, `tokens_30d_fixed`, `uncached_tokens_1h_bucket`; see config.QuotaWindow). An account's limit is the one the provider stated (`learn`), under the ceiling, else
-- the starting one. Then one or more operations, run in order, each as: its name, the account's index (1-based;
-- 0 where the operation chooses), the count of its own arguments, those arguments. Several
-- replicas' requests arriving together thus cost one call.
-- The answer: {the time, shared figures, revisions, one answer per operation}. Times go as
-- strings (Redis turns Lua numbers into integers). The shared figures (JSON: a view of each
-- account, and with `view` who holds leases) come only when an operation wants them; otherwise
-- ''. Revisions: each account's (see `share`), -1 for one the call did not read. A reservation
-- granted is the hot path: it answers a few numbers and writes only the fields that changed.

-- (`now` comes from the prelude, now.lua)
local START, CEILING = {}, {}
local WINDOW_COUNT = tonumber(ARGV[2])
for j = 0, WINDOW_COUNT - 1 do
  local w = ARGV[3 + 3 * j]
  START[w], CEILING[w] = tonumber(ARGV[4 + 3 * j]), tonumber(ARGV[5 + 3 * j])
end
local LEASES, DATA, HOLDERS = KEYS[1], KEYS[2], KEYS[3]
local SPAN, DAY = 60, 86400
local WINDOWS = {'rpm', 'rpd', 'tpm', 'utpm', 'tpd'} -- the order in which a refusal is reported
local BUCKETS = {rpm = true, tpm = true, utpm = true}
local COUNTER = {rpm = 'seq', rpd = 'seq', tpm = 'cum', utpm = 'ucum', tpd = 'cum'} -- what "booked since" counts
local KIND = {rpm = 'requests', rpd = 'requests', tpm = 'tokens', tpd = 'tokens', utpm = 'uncached_tokens'}

-- Declared windows: name -> {span (seconds), metering: rolling|bucket|fixed}. A rolling one keeps
-- bins of span / BINS seconds (`<w>_b`, JSON [[slot, amount], ...]), each counted until a whole
-- span after its slot ends (a booking leaves up to one bin late: the safe side); a fixed one
-- counts `<w>_u` in period number `<w>_p` (periods are multiples of its span since the epoch).
local DECLARED, BINS = {}, 60
local UNITS = {s = 1, m = 60, h = 3600, d = 86400}
local COUNTERS = {requests = 'seq', tokens = 'cum', uncached_tokens = 'ucum'}
for j = 0, WINDOW_COUNT - 1 do
  local w = ARGV[3 + 3 * j]
  local kind, count, unit, rest = string.match(w, '^(.-)_(%d+)([smhd])(.*)$')
  if KIND[w] == nil and kind ~= nil then
    local metering = 'rolling'
    if rest ~= '' then metering = string.sub(rest, 2) end
    DECLARED[w] = {span = tonumber(count) * UNITS[unit], metering = metering}
    KIND[w], COUNTER[w] = kind, COUNTERS[kind]
    if metering == 'bucket' then BUCKETS[w] = true end
    WINDOWS[#WINDOWS + 1] = w
  end
end

local function span_of(w)
  if DECLARED[w] then return DECLARED[w].span end
  return SPAN
end

local accounts, stored = {}, {} -- index -> the account's fields now, and as read from Redis

local function load(index)
  if accounts[index] == nil then
    local raw = redis.call('HGETALL', KEYS[3 + index])
    local a, was = {}, {}
    for i = 1, #raw, 2 do a[raw[i]], was[raw[i]] = raw[i + 1], raw[i + 1] end
    for _, name in ipairs({'seq', 'cum', 'ucum', 'rpd_u', 'tpd_u', 'half_open', 'day', 'rev', 'sh_r', 'sh_t'}) do a[name] = tonumber(a[name] or 0) end
    accounts[index], stored[index] = a, was
  end
  return accounts[index]
end

local function number(a, field) return tonumber(a[field] or '') end

-- The limit of window `w` in force on account `a` (-1 = none).
local function limit_of(a, w)
  local stated = number(a, 'st_' .. w)
  if stated == nil then return START[w] end
  if CEILING[w] >= 0 and CEILING[w] < stated then return CEILING[w] end
  return stated
end

-- A refilling bucket starts full and regains `limit` over SPAN seconds.
local function level(a, w)
  local limit = limit_of(a, w)
  local l, t = number(a, w .. '_l'), number(a, w .. '_t')
  if l == nil then l, t = limit, now end
  l = math.min(limit, l + math.max(0, now - t) * limit / span_of(w))
  a[w .. '_l'], a[w .. '_t'] = l, math.max(t, now)
  return l
end

-- Daily counters empty at the provider's day boundary (UTC midnight until its headers say).
-- `day` counts the boundaries passed: a lease names its day by it, since `day_end` moves a
-- little with every reset figure the provider sends.
local function roll_day(a)
  local ends = number(a, 'day_end') or (math.floor(now / DAY) + 1) * DAY
  if now >= ends then
    ends = ends + (math.floor((now - ends) / DAY) + 1) * DAY
    a.rpd_u, a.tpd_u, a.day = 0, 0, a.day + 1
  end
  a.day_end = ends
end

local function end_cooldown_if_due(a, slack)
  local deadline = number(a, 'cd_until')
  if deadline ~= nil and now + slack >= deadline then
    a.cd_until, a.cd_reason, a.half_open, a.probe = '', '', 1, ''
    return true
  end
  return false
end

-- A rolling window's bins still counted, oldest first, and their width.
local function bins(a, w)
  local span = DECLARED[w].span
  local width, kept = span / BINS, {}
  for _, b in ipairs(cjson.decode(a[w .. '_b'] or '[]')) do
    if (b[1] + 1) * width + span > now then kept[#kept + 1] = b end
  end
  return kept, width
end

-- A fixed window's count, once its period is the current one.
local function period_count(a, w)
  local p = math.floor(now / DECLARED[w].span)
  if number(a, w .. '_p') ~= p then a[w .. '_p'], a[w .. '_u'] = p, 0 end
  return number(a, w .. '_u')
end

-- Book `amount` on a declared rolling or fixed window as of booking time `at` (negative: give
-- back). What leaves a window or period stays gone; more taken is counted now.
local function declared_add(a, w, amount, at)
  local d = DECLARED[w]
  if d.metering == 'fixed' then
    local u = period_count(a, w)
    if amount > 0 or (at ~= nil and math.floor(at / d.span) == a[w .. '_p']) then a[w .. '_u'] = math.max(0, u + amount) end
    return
  end
  if amount < 0 and at == nil then return end
  local list, width = bins(a, w)
  local slot = math.floor(now / width)
  if amount < 0 then slot = math.floor(at / width) end
  for _, b in ipairs(list) do
    if b[1] == slot then
      b[2] = math.max(0, b[2] + amount)
      a[w .. '_b'] = cjson.encode(list)
      return
    end
  end
  if amount > 0 then
    list[#list + 1] = {slot, amount}
    a[w .. '_b'] = cjson.encode(list)
  end
end

local function used(a, w)
  local d = DECLARED[w]
  if d and d.metering == 'fixed' then return period_count(a, w) end
  if d and d.metering == 'rolling' then
    local total = 0
    for _, b in ipairs((bins(a, w))) do total = total + b[2] end
    return total
  end
  if limit_of(a, w) >= 0 and BUCKETS[w] then return math.max(0, math.ceil(limit_of(a, w) - level(a, w) - 1e-9)) end
  if BUCKETS[w] then -- no limit: what this minute booked, for operators
    if number(a, w .. '_min') ~= math.floor(now / SPAN) then return 0 end
    return number(a, w .. '_n') or 0
  end
  return a[w .. '_u']
end

-- The provider's last figure less what was booked since, or nil when it has none in force.
local function provider_remaining(a, w)
  local deadline = number(a, 'syn_' .. w .. '_until')
  if deadline == nil or now >= deadline then return nil end
  return number(a, 'syn_' .. w .. '_rem') - math.max(0, a[COUNTER[w]] - number(a, 'syn_' .. w .. '_base'))
end

-- What `requests` requests of `tokens` in all (`uncached` of them uncached) take from window `w`.
local function amount(w, tokens, requests, uncached)
  if KIND[w] == 'requests' then return requests end
  if KIND[w] == 'uncached_tokens' then return uncached end
  return tokens
end

local function probe_in_flight(a)
  return a.half_open == 1 and (a.probe or '') ~= '' and (number(a, 'probe_until') or 0) > now
end

-- {reason, retry_at} of one window that cannot take `need` now, else nil.
local function window_refusal(a, w, need)
  local limit, d = limit_of(a, w), DECLARED[w]
  if d and d.metering ~= 'bucket' then
    if limit < 0 or used(a, w) + need <= limit then return nil end
    if d.metering == 'fixed' then return {w, (a[w .. '_p'] + 1) * d.span} end
    local list, width = bins(a, w)
    local excess = used(a, w) + need - limit
    for _, b in ipairs(list) do
      excess = excess - b[2]
      if excess <= 0 then return {w, (b[1] + 1) * width + d.span} end
    end
    return {w, now + d.span} -- larger than the limit itself: a whole window is honest
  end
  if limit >= 0 and BUCKETS[w] then
    local l = level(a, w)
    if l < need then
      local wait = span_of(w)
      if need <= limit then wait = (need - l) * span_of(w) / limit end
      return {w, now + wait}
    end
  elseif limit >= 0 and a[w .. '_u'] + need > limit then
    return {w, a.day_end}
  end
  local left = provider_remaining(a, w)
  if left ~= nil and left < need then return {w, number(a, 'syn_' .. w .. '_until')} end
  return nil
end

-- {reason, retry_at} when the account cannot take `requests` requests of `tokens` in all
-- (`uncached` of them uncached) now, else nil: the first reason found, or with `latest` the
-- one that holds them longest.
local function refusal(a, tokens, requests, latest, uncached)
  roll_day(a)
  end_cooldown_if_due(a, 0)
  local deadline = number(a, 'cd_until')
  if deadline ~= nil then return {'cooldown', deadline} end
  if probe_in_flight(a) then return {'probe', now + 1} end
  local found = nil
  for _, w in ipairs(WINDOWS) do
    local r = window_refusal(a, w, amount(w, tokens, requests, uncached or 0))
    if r ~= nil and not latest then return r end
    if r ~= nil and (found == nil or r[2] > found[2]) then found = r end
  end
  return found
end

-- The smallest share left of any limited window (1 = untouched), for choosing between keys.
local function headroom(a)
  local share = 1
  for _, w in ipairs(WINDOWS) do
    local limit = limit_of(a, w)
    if limit > 0 then
      local left = limit - used(a, w)
      local theirs = provider_remaining(a, w)
      if theirs ~= nil and theirs < left then left = theirs end
      share = math.min(share, math.max(0, left) / limit)
    end
  end
  return share
end

-- Give back `amount` of the declared windows of `kind` booked at `at` (nil: unknown, so only
-- what takes more counts; negative: take more).
local function give_back_declared(a, kind, amount, at)
  for w, d in pairs(DECLARED) do
    if KIND[w] == kind and limit_of(a, w) >= 0 then
      if d.metering == 'bucket' then
        a[w .. '_l'] = math.min(limit_of(a, w), level(a, w) + amount)
      else
        declared_add(a, w, -amount, at)
      end
    end
  end
end

-- Give back `amount` of window `w` (minute, or day `w_day`) booked on day number `day`.
local function give_back_window(a, minute, daily, amount, day)
  if limit_of(a, minute) >= 0 then
    a[minute .. '_l'] = math.min(limit_of(a, minute), level(a, minute) + amount)
  elseif number(a, minute .. '_min') == math.floor(now / SPAN) then -- this minute's count, for operators
    a[minute .. '_n'] = math.max(0, number(a, minute .. '_n') - amount)
  end
  roll_day(a)
  if a.day == tonumber(day) then a[daily .. '_u'] = math.max(0, a[daily .. '_u'] - amount) end
end

-- Give back `tokens` booked by a lease of day number `day` at time `at` (negative: take more).
local function give_back(a, tokens, day, at)
  give_back_window(a, 'tpm', 'tpd', tokens, day)
  give_back_declared(a, 'tokens', tokens, at)
  a.cum = a.cum - tokens
end

-- Give back `tokens` of the uncached bucket (negative: take more). It has no daily counter.
local function give_back_uncached(a, tokens, at)
  give_back_declared(a, 'uncached_tokens', tokens, at)
  if limit_of(a, 'utpm') >= 0 then
    a.utpm_l = math.min(limit_of(a, 'utpm'), level(a, 'utpm') + tokens)
  elseif number(a, 'utpm_min') == math.floor(now / SPAN) then
    a.utpm_n = math.max(0, number(a, 'utpm_n') - tokens)
  end
  a.ucum = a.ucum - tokens
end

-- Give back requests booked but never sent (a share's unspent part). `seq` stays: it orders
-- the provider's figures, and counting a returned request as booked only makes them stricter.
local function give_back_requests(a, requests, day, at)
  give_back_window(a, 'rpm', 'rpd', requests, day)
  give_back_declared(a, 'requests', requests, at)
end

-- A share ends (returned, or its replica died): what it had not handed out comes back.
-- The ids of an account's shares out (a few at most: one per process that holds one).
local function shares_out(a)
  if (a.shares or '') == '' then return {} end
  return cjson.decode(a.shares)
end

local function set_shares_out(a, ids)
  if #ids == 0 then a.shares = '' else a.shares = cjson.encode(ids) end
end

-- Share `id` ends: `requests` and `tokens` of it come back (what it had not handed out).
local function end_share(a, id, share, requests, tokens)
  give_back_requests(a, requests, share.d, share.a)
  give_back(a, tokens, share.d, share.a)
  a.sh_r, a.sh_t = a.sh_r - share.n, a.sh_t - share.t
  local ids = {}
  for _, other in ipairs(shares_out(a)) do if other ~= id then ids[#ids + 1] = other end end
  set_shares_out(a, ids)
end

-- Leases past their expiry belong to a replica that died or lost Redis: keep their floor
-- (what the request surely cost), give back the rest.
local function expire_leases()
  local ids = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, 64)
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', DATA, id)
    if raw then
      local lease = cjson.decode(raw)
      local a = load(lease.i)
      if lease.n then -- a share: what it had not handed out
        end_share(a, id, lease, lease.n, lease.t)
      else
        give_back(a, lease.t - lease.f, lease.d, lease.a)
        redis.call('HINCRBY', HOLDERS, lease.r, -1)
      end
      if a.probe == id then a.probe = '' end
      redis.call('HDEL', DATA, id)
    end
    redis.call('ZREM', LEASES, id)
  end
end

local function view(a)
  local v = {u = {}, pr = {}, av = now, lim = {}, st = {}}
  roll_day(a)
  for _, w in ipairs(WINDOWS) do
    v.u[w] = used(a, w)
    v.pr[w] = provider_remaining(a, w)
    v.lim[w] = limit_of(a, w)
    if number(a, 'st_' .. w) ~= nil then v.st[w] = {number(a, 'st_' .. w), number(a, 'st_' .. w .. '_at')} end
  end
  local r = refusal(a, 1, 1, false, 0)
  if r ~= nil then v.av = r[2] end
  v.cd, v.why, v.ho = number(a, 'cd_until') or 0, a.cd_reason or '', a.half_open
  v.sh = {a.sh_r, a.sh_t} -- booked in shares out: not all of it handed out yet
  return v
end

local function save_changed()
  for index, a in pairs(accounts) do
    local flat, was = {}, stored[index]
    for k, value in pairs(a) do
      -- Numbers in full: tostring keeps 14 digits, which rounds a time such as 1800000550.12345
      -- to 0.1 ms, and every call that refills a bucket would add or lose that much refill.
      local text = tostring(value)
      if type(value) == 'number' then text = string.format('%.17g', value) end
      if was[k] ~= text then
        flat[#flat + 1] = k
        flat[#flat + 1] = text
      end
    end
    if #flat > 0 then redis.call('HSET', KEYS[3 + index], unpack(flat)) end
  end
end

local function book(a, tokens, requests, uncached)
  for _, w in ipairs({'rpm', 'tpm', 'utpm'}) do
    local need = amount(w, tokens, requests, uncached)
    if limit_of(a, w) >= 0 then
      a[w .. '_l'] = level(a, w) - need
    else
      local minute = math.floor(now / SPAN)
      if number(a, w .. '_min') ~= minute then a[w .. '_min'], a[w .. '_n'] = minute, 0 end
      a[w .. '_n'] = number(a, w .. '_n') + need
    end
  end
  a.rpd_u, a.tpd_u = a.rpd_u + requests, a.tpd_u + tokens
  for w, d in pairs(DECLARED) do
    local need = amount(w, tokens, requests, uncached)
    if d.metering == 'bucket' then a[w .. '_l'] = level(a, w) - need else declared_add(a, w, need, now) end
  end
  a.seq, a.cum, a.ucum = a.seq + requests, a.cum + tokens, a.ucum + uncached
end


local function text(x) return string.format('%.17g', x) end

local n = #KEYS - 3
local want_views, holders = false, nil
local leases_expired = false
local function expire_leases_once()
  if not leases_expired then
    leases_expired = true
    expire_leases()
  end
end

-- The account that can take `requests` requests of `tokens` in all now that books the fewest
-- uncached tokens (`uncached[i]` on account i; none when nil), then has most headroom (one
-- half-open only if `probing`), else nil and the soonest refusal (by the limit that holds its
-- account longest).
local function roomiest(tokens, requests, probing, uncached)
  local best, best_cost, best_room, soonest = nil, nil, -1, nil
  for i = 1, n do
    local a = load(i)
    local cost = 0
    if uncached then cost = uncached[i] end
    local r = refusal(a, tokens, requests, true, cost)
    if r == nil and (probing or a.half_open == 0) then
      local room = headroom(a)
      if best == nil or cost < best_cost or (cost == best_cost and room > best_room) then
        best, best_cost, best_room = i, cost, room
      end
    elseif r ~= nil and (soonest == nil or r[2] < soonest[2]) then
      soonest = r
    end
  end
  return best, soonest
end

-- What a share may take from window `w`: what is left above the half kept for single
-- reservations, and a sixteenth of the limit at most (several replicas hold shares). nil: no
-- bound (no limit and no provider figure).
local KEEP, SHARE = 0.5, 1 / 16
local function spare(a, w)
  local base, left = limit_of(a, w), nil
  if base >= 0 then left = base - used(a, w) end
  local theirs = provider_remaining(a, w)
  if theirs ~= nil and (left == nil or theirs < left) then left = theirs end
  if left == nil then return nil end
  if base < 0 then base = left end
  return math.floor(math.min(left - base * KEEP, base * SHARE))
end

-- What shares booked at or before booking number `seq` still hold.
local function held_before(a, seq)
  local held = {requests = 0, tokens = 0}
  for _, id in ipairs(shares_out(a)) do
    local raw = redis.call('HGET', DATA, id)
    if raw then
      local share = cjson.decode(raw)
      if share.s <= seq then held.requests, held.tokens = held.requests + share.n, held.tokens + share.t end
    end
  end
  return held
end

-- Each operation: (the account's index, its own arguments) -> its answer.
local OPS = {}

-- tokens, floor, lease id, lease seconds, replica, book by ('' = no deadline), then the
-- uncached tokens it books on each account (all of floor on each when absent) ->
-- {1, index, seq, cum, day number, probe 0|1, uncached booked} or, refused, {0, reason, retry at}
-- as `refusal` answers
function OPS.reserve(_, args)
  local tokens, floor, id, ttl, replica = tonumber(args[1]), tonumber(args[2]), args[3], tonumber(args[4]), args[5]
  -- A call that reaches Redis after its caller stopped waiting (Redis was frozen or slow) books
  -- nothing: that request went elsewhere, and its give-back could not reach a Redis thought down.
  if args[6] ~= '' and now > tonumber(args[6]) then return {0, 'late', text(now)} end
  expire_leases_once()
  local uncached = {}
  for i = 1, n do uncached[i] = tonumber(args[6 + i] or floor) end
  local best, soonest = roomiest(tokens, 1, true, uncached)
  if best == nil then
    want_views = true -- off the hot path: the router's Retry-After and status read them
    return {0, soonest[1], text(soonest[2])}
  end
  local a = load(best)
  book(a, tokens, 1, uncached[best])
  local probe = 0
  if a.half_open == 1 then probe, a.probe, a.probe_until = 1, id, now + ttl end
  redis.call('ZADD', LEASES, now + ttl, id)
  redis.call('HSET', DATA, id, cjson.encode({i = best, t = tokens, f = floor, d = a.day, r = replica, a = now}))
  redis.call('HINCRBY', HOLDERS, replica, 1)
  return {1, best, a.seq, a.cum, a.day, probe, uncached[best]}
end

-- A share: a block of requests and tokens booked at once for one replica to hand out without
-- waiting on Redis, while the account has room to spare. Each request handed out is then
-- moved into a lease of its own (`draw`, queued), so that a replica that dies leaves what its
-- requests surely cost and gives back the rest, as with reservations; the share's lease keeps
-- only what is not handed out yet, and gives it back when it ends.
-- requests wanted, tokens wanted, at least tokens, share id, lease seconds, book by ->
-- {1, index, seq, cum, day number, requests, tokens, revision} or {0} when there is no room to
-- spare. A share is spent only while its account's revision stays: a cooldown or a provider
-- figure below half a limit moves it, and every answer tells each account's revision.
function OPS.share(_, args)
  local want_r, want_t, least_t = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  local id, ttl = args[4], tonumber(args[5])
  if args[6] ~= '' and now > tonumber(args[6]) then return {0} end
  expire_leases_once()
  local best = roomiest(least_t, 2, false)
  if best == nil then return {0} end
  local a = load(best)
  local r, t = want_r, want_t
  for _, w in ipairs(WINDOWS) do
    local s = spare(a, w)
    if s ~= nil and KIND[w] == 'requests' then r = math.min(r, s) elseif s ~= nil then t = math.min(t, s) end
  end
  if r < 2 or t < least_t then return {0} end
  book(a, t, r, 0)
  a.sh_r, a.sh_t = a.sh_r + r, a.sh_t + t
  local ids = shares_out(a)
  ids[#ids + 1] = id
  set_shares_out(a, ids)
  redis.call('ZADD', LEASES, now + ttl, id)
  -- n, t: what it still holds; n0, t0: its size; s: the account's seq once it was booked
  redis.call('HSET', DATA, id, cjson.encode({i = best, n = r, t = t, n0 = r, t0 = t, s = a.seq, d = a.day, a = now}))
  return {1, best, a.seq, a.cum, a.day, r, t, a.rev}
end

-- A request handed out from a share gets its lease: share id, lease id, tokens, floor, lease
-- seconds, replica. (If the share ended already, what it gave back is booked again: the
-- request went. After the provider's day ended, the request counts in the new day.)
function OPS.draw(index, args)
  local a = load(index)
  local tokens = tonumber(args[3])
  local raw = redis.call('HGET', DATA, args[1])
  local booked_at = now
  roll_day(a)
  if raw then
    local share = cjson.decode(raw)
    local n, t = math.max(0, share.n - 1), math.max(0, share.t - tokens)
    a.sh_r, a.sh_t = a.sh_r - (share.n - n), a.sh_t - (share.t - t)
    share.n, share.t = n, t
    redis.call('HSET', DATA, args[1], cjson.encode(share))
    if share.d ~= a.day then a.rpd_u, a.tpd_u = a.rpd_u + 1, a.tpd_u + tokens end
    booked_at = share.a or now
  else
    book(a, tokens, 1, 0)
  end
  redis.call('ZADD', LEASES, now + tonumber(args[5]), args[2])
  redis.call('HSET', DATA, args[2], cjson.encode({i = index, t = tokens, f = tonumber(args[4]), d = a.day, r = args[6], a = booked_at}))
  redis.call('HINCRBY', HOLDERS, args[6], 1)
  return {}
end

-- share id, requests and tokens it handed out: the rest comes back. (What it handed out
-- stays booked even where a request's `draw` never arrived: that request went. Nothing
-- happens if the share expired: that gave back what it still held.)
function OPS.unshare(_, args)
  local raw = redis.call('HGET', DATA, args[1])
  if raw then
    local share = cjson.decode(raw)
    local requests = math.max(0, math.min(share.n, share.n0 - tonumber(args[2])))
    local tokens = math.max(0, math.min(share.t, share.t0 - tonumber(args[3])))
    end_share(load(share.i), args[1], share, requests, tokens)
    redis.call('HDEL', DATA, args[1])
  end
  redis.call('ZREM', LEASES, args[1])
  return {}
end

-- Without booking, when `requests` requests of `tokens` in all could go (tokens, requests,
-- uncached) -> {0} if now, else {1, reason, retry at} of the soonest account and the limit that
-- holds it longest
function OPS.refusal(_, args)
  local tokens, requests, uncached = tonumber(args[1]), tonumber(args[2]), tonumber(args[3] or 0)
  expire_leases_once() -- a dead replica's quota counts as back, as it does for a reservation
  local soonest = nil
  for i = 1, n do
    local r = refusal(load(i), tokens, requests, true, uncached)
    if r == nil then return {0} end
    if soonest == nil or r[2] < soonest[2] then soonest = r end
  end
  return {1, soonest[1], text(soonest[2])}
end

-- lease id, actual tokens, reserved, floor, its day number[, requests to give back (never sent)
-- [, actual uncached tokens, uncached booked]]. A lease that expires keeps what it booked as
-- uncached (that is its prompt's, which surely went): the settle corrects it whenever it comes.
function OPS.settle(index, args)
  local a = load(index)
  local id, actual, reserved, floor = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local back = floor - actual -- the lease expired already: it kept its floor
  local raw = redis.call('HGET', DATA, id)
  local at = nil -- when it was booked (unknown once the lease expired)
  if raw then
    local lease = cjson.decode(raw)
    back, at = reserved - actual, lease.a
    redis.call('HDEL', DATA, id)
    redis.call('HINCRBY', HOLDERS, lease.r, -1)
  end
  redis.call('ZREM', LEASES, id)
  give_back(a, back, args[5], at)
  if args[6] then give_back_requests(a, tonumber(args[6]), args[5], at) end -- it was never sent
  if args[8] then give_back_uncached(a, tonumber(args[8]) - tonumber(args[7]), at) end
  return {}
end

-- the reservation's seq, its cum, then (window, remaining, seconds to reset)...
function OPS.sync(index, args)
  local a = load(index)
  local base = {seq = tonumber(args[1]), cum = tonumber(args[2])}
  roll_day(a)
  for i = 3, #args, 3 do
    local w, remaining, reset = args[i], tonumber(args[i + 1]), tonumber(args[i + 2])
    if w == 'rpd' or w == 'tpd' then a.day_end = now + reset end -- one provider day for both
    if (number(a, 'fseq_' .. w) or -1) <= base.seq then -- a later request's figure wins
      a['fseq_' .. w] = base.seq
      local left = remaining - math.max(0, a[COUNTER[w]] - base[COUNTER[w]])
      local lowered = false
      if BUCKETS[w] and limit_of(a, w) >= 0 then
        -- What shares booked before that request still hold may yet be sent, and the
        -- provider has not counted it (what comes back of them goes back into the bucket).
        local held = held_before(a, base.seq)
        if w == 'rpm' then left = left - held.requests else left = left - held.tokens end
        lowered = left < level(a, w)
        a[w .. '_l'] = math.min(level(a, w), left) -- lower, never raise; it refills from there
      else
        local ours = provider_remaining(a, w)
        if ours == nil or left < ours then
          lowered = true
          a['syn_' .. w .. '_rem'], a['syn_' .. w .. '_base'], a['syn_' .. w .. '_until'] = remaining, base[COUNTER[w]], now + reset
        end
      end
      -- The provider knows of less than we do, and little is left: less than half the limit,
      -- or (no limit set) less than twice what shares still hold. Shares out stop handing out.
      local held = a.sh_t
      if w == 'rpm' or w == 'rpd' then held = a.sh_r end
      if lowered and held > 0 and ((limit_of(a, w) < 0 and left < 2 * held) or (limit_of(a, w) >= 0 and (spare(a, w) or 0) < 0)) then
        a.rev = a.rev + 1
      end
    end
  end
  return {}
end

-- (window, stated limit)... -> {}. The provider's stated limits become the account's, under
-- the ceilings; a bucket keeps its level (capped by a lower limit, refilling at the new rate).
function OPS.learn(index, args)
  local a = load(index)
  for i = 1, #args, 2 do
    local w, figure = args[i], tonumber(args[i + 1])
    if START[w] ~= nil and figure ~= nil and figure >= 1 then
      local before = limit_of(a, w)
      if BUCKETS[w] and before >= 0 then level(a, w) end -- settle the level under the old limit first
      a['st_' .. w], a['st_' .. w .. '_at'] = figure, now
      local after = limit_of(a, w)
      -- Shares out were cut from the old limit: a lower one stops them handing out.
      if (before < 0 or after < before) and (a.sh_r > 0 or a.sh_t > 0) then a.rev = a.rev + 1 end
    end
  end
  want_views = true
  return {}
end

-- seconds, reason -> {1 if started}. The later deadline wins.
function OPS.cooldown(index, args)
  local a = load(index)
  local deadline = now + tonumber(args[1])
  a.probe = ''
  want_views = true
  if (number(a, 'cd_until') or -1) >= deadline then return {0} end
  a.cd_until, a.cd_reason, a.rev = deadline, args[2], a.rev + 1 -- shares out stop handing out
  return {1}
end

-- -> {1 if ended}. A timer's end: a little early is fine, its clock and Redis's differ by a round trip.
function OPS.end_cooldown(index, _)
  want_views = true
  if end_cooldown_if_due(load(index), 0.05) then return {1} end
  return {0}
end

-- lease id, 1 if it succeeded
function OPS.probe(index, args)
  local a = load(index)
  if a.probe == args[1] then
    a.probe = ''
    if args[2] == '1' then a.half_open = 0 end
  end
  return {}
end

-- For operators: every account's figures and who holds leases.
function OPS.view(_, _)
  expire_leases_once()
  holders, want_views = {}, true
  local raw = redis.call('HGETALL', HOLDERS)
  for i = 1, #raw, 2 do
    if tonumber(raw[i + 1]) > 0 then holders[raw[i]] = tonumber(raw[i + 1]) else redis.call('HDEL', HOLDERS, raw[i]) end
  end
  return {}
end

-- Read every operation before running any: a bad one changes nothing.
local calls = {}
local i = 3 + 3 * WINDOW_COUNT
while i <= #ARGV do
  local run, index, count = OPS[ARGV[i]], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if run == nil then return redis.error_reply('unknown operation ' .. ARGV[i]) end
  local args = {}
  for j = 1, count do args[j] = ARGV[i + 2 + j] end
  calls[#calls + 1] = {run, index, args}
  i = i + 3 + count
end

local reply = {text(now), '', {}}
for _, call in ipairs(calls) do reply[#reply + 1] = call[1](call[2], call[3]) end
if want_views then
  local views = {}
  for j = 1, n do views[j] = view(load(j)) end
  reply[2] = cjson.encode({views = views, leases = holders})
end
for j = 1, n do reply[3][j] = accounts[j] and accounts[j].rev or -1 end -- -1: not read by this call
save_changed()
return reply
