-- trioproxy's shared quota ledger: every operation on one provider's accounts, atomic in Redis.
--
-- KEYS[1] leases (sorted set: lease id -> expiry), KEYS[2] lease data (hash: id -> fields),
-- KEYS[3] leases held per replica (hash), KEYS[4..] one hash per account of the provider, in
-- key order.
-- ARGV[1] operation, ARGV[2] the time ("" = Redis TIME), ARGV[3..6] the limits of rpm, tpm,
-- rpd and tpd (-1 = none), ARGV[7] the account's index (1-based; 0 where the operation chooses),
-- ARGV[8..] the operation's own arguments. Every call answers a JSON object with the time
-- and a view of each account, so replicas show shared figures without asking again.

local op = ARGV[1]
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
else
  now = tonumber(ARGV[2])
end
local LIMIT = {rpm = tonumber(ARGV[3]), tpm = tonumber(ARGV[4]), rpd = tonumber(ARGV[5]), tpd = tonumber(ARGV[6])}
local INDEX = tonumber(ARGV[7])
local LEASES, DATA, HOLDERS = KEYS[1], KEYS[2], KEYS[3]
local SPAN, DAY = 60, 86400
local WINDOWS = {'rpm', 'rpd', 'tpm', 'tpd'} -- the order in which a refusal is reported
local BUCKETS = {rpm = true, tpm = true}
local COUNTER = {rpm = 'seq', rpd = 'seq', tpm = 'cum', tpd = 'cum'} -- what "booked since" counts

local accounts = {}

local function load(index)
  if accounts[index] == nil then
    local raw = redis.call('HGETALL', KEYS[3 + index])
    local a = {}
    for i = 1, #raw, 2 do a[raw[i]] = raw[i + 1] end
    for _, name in ipairs({'seq', 'cum', 'rpd_u', 'tpd_u', 'half_open'}) do a[name] = tonumber(a[name] or 0) end
    accounts[index] = a
  end
  return accounts[index]
end

local function number(a, field) return tonumber(a[field] or '') end

-- A refilling bucket starts full and regains `limit` over SPAN seconds.
local function level(a, w)
  local limit = LIMIT[w]
  local l, t = number(a, w .. '_l'), number(a, w .. '_t')
  if l == nil then l, t = limit, now end
  l = math.min(limit, l + math.max(0, now - t) * limit / SPAN)
  a[w .. '_l'], a[w .. '_t'] = l, math.max(t, now)
  return l
end

-- Daily counters empty at the provider's day boundary (UTC midnight until its headers say).
local function roll_day(a)
  local ends = number(a, 'day_end') or (math.floor(now / DAY) + 1) * DAY
  if now >= ends then
    ends = ends + (math.floor((now - ends) / DAY) + 1) * DAY
    a.rpd_u, a.tpd_u = 0, 0
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

local function used(a, w)
  if LIMIT[w] >= 0 and BUCKETS[w] then return math.max(0, math.ceil(LIMIT[w] - level(a, w) - 1e-9)) end
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

local function amount(w, tokens) if w == 'rpm' or w == 'rpd' then return 1 end return tokens end

local function probe_in_flight(a)
  return a.half_open == 1 and (a.probe or '') ~= '' and (number(a, 'probe_until') or 0) > now
end

-- {reason, retry_at} when the account cannot take `tokens` now, else nil.
local function refusal(a, tokens)
  roll_day(a)
  end_cooldown_if_due(a, 0)
  local deadline = number(a, 'cd_until')
  if deadline ~= nil then return {'cooldown', deadline} end
  if probe_in_flight(a) then return {'probe', now + 1} end
  for _, w in ipairs(WINDOWS) do
    local need, limit = amount(w, tokens), LIMIT[w]
    if limit >= 0 then
      if BUCKETS[w] then
        local l = level(a, w)
        if l < need then
          local wait = SPAN
          if need <= limit then wait = (need - l) * SPAN / limit end
          return {w, now + wait}
        end
      elseif a[w .. '_u'] + need > limit then
        return {w, a.day_end}
      end
    end
    local left = provider_remaining(a, w)
    if left ~= nil and left < need then return {w, number(a, 'syn_' .. w .. '_until')} end
  end
  return nil
end

-- The smallest share left of any limited window (1 = untouched), for choosing between keys.
local function headroom(a)
  local share = 1
  for _, w in ipairs(WINDOWS) do
    local limit = LIMIT[w]
    if limit > 0 then
      local left = limit - used(a, w)
      local theirs = provider_remaining(a, w)
      if theirs ~= nil and theirs < left then left = theirs end
      share = math.min(share, math.max(0, left) / limit)
    end
  end
  return share
end

-- Give back `tokens` booked by a lease of the day ending at `day_end` (negative: take more).
local function give_back(a, tokens, day_end)
  if LIMIT.tpm >= 0 then a.tpm_l = math.min(LIMIT.tpm, level(a, 'tpm') + tokens) end
  a.cum = a.cum - tokens
  roll_day(a)
  if math.abs(a.day_end - tonumber(day_end)) < 0.01 then a.tpd_u = math.max(0, a.tpd_u - tokens) end
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
      give_back(a, lease.t - lease.f, lease.d)
      if a.probe == id then a.probe = '' end
      redis.call('HDEL', DATA, id)
      redis.call('HINCRBY', HOLDERS, lease.r, -1)
    end
    redis.call('ZREM', LEASES, id)
  end
end

local function view(a)
  local v = {u = {}, pr = {}, av = now}
  roll_day(a)
  for _, w in ipairs(WINDOWS) do
    v.u[w] = used(a, w)
    v.pr[w] = provider_remaining(a, w)
  end
  local r = refusal(a, 1)
  if r ~= nil then v.av = r[2] end
  v.cd, v.why, v.ho = number(a, 'cd_until') or 0, a.cd_reason or '', a.half_open
  return v
end

local function save_all()
  for index, a in pairs(accounts) do
    local flat = {}
    for k, value in pairs(a) do
      flat[#flat + 1] = k
      flat[#flat + 1] = tostring(value)
    end
    redis.call('HSET', KEYS[3 + index], unpack(flat))
  end
end

local function book(a, tokens)
  for _, w in ipairs({'rpm', 'tpm'}) do
    local need = amount(w, tokens)
    if LIMIT[w] >= 0 then
      a[w .. '_l'] = level(a, w) - need
    else
      local minute = math.floor(now / SPAN)
      if number(a, w .. '_min') ~= minute then a[w .. '_min'], a[w .. '_n'] = minute, 0 end
      a[w .. '_n'] = number(a, w .. '_n') + need
    end
  end
  a.rpd_u, a.tpd_u = a.rpd_u + 1, a.tpd_u + tokens
  a.seq, a.cum = a.seq + 1, a.cum + tokens
end

local result = {}
local n = #KEYS - 3

if op == 'reserve' then
  -- ARGV[8] tokens, [9] floor, [10] lease id, [11] lease seconds, [12] replica
  local tokens, floor, id, ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
  expire_leases()
  local best, best_room, soonest = nil, -1, nil
  for i = 1, n do
    local a = load(i)
    local r = refusal(a, tokens)
    if r == nil then
      local room = headroom(a)
      if room > best_room then best, best_room = i, room end
    elseif soonest == nil or r[2] < soonest[2] then
      soonest = r
    end
  end
  if best == nil then
    result.refused = soonest
  else
    local a = load(best)
    book(a, tokens)
    local probe = a.half_open == 1
    if probe then a.probe, a.probe_until = id, now + ttl end
    redis.call('ZADD', LEASES, now + ttl, id)
    redis.call('HSET', DATA, id, cjson.encode({i = best, t = tokens, f = floor, d = a.day_end, r = ARGV[12]}))
    redis.call('HINCRBY', HOLDERS, ARGV[12], 1)
    result.granted = {best, a.seq, a.cum, a.day_end, probe}
  end
elseif op == 'settle' then
  -- ARGV[8] lease id, [9] actual tokens, [10] reserved, [11] floor, [12] its day's end
  local a = load(INDEX)
  local id, actual, reserved, floor = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  local back = floor - actual -- the lease expired already: it kept its floor
  local raw = redis.call('HGET', DATA, id)
  if raw then
    back = reserved - actual
    redis.call('HDEL', DATA, id)
    redis.call('HINCRBY', HOLDERS, cjson.decode(raw).r, -1)
  end
  redis.call('ZREM', LEASES, id)
  give_back(a, back, ARGV[12])
elseif op == 'sync' then
  -- ARGV[8] the reservation's seq, [9] its cum, then (window, remaining, seconds to reset)...
  local a = load(INDEX)
  local base = {seq = tonumber(ARGV[8]), cum = tonumber(ARGV[9])}
  roll_day(a)
  for i = 10, #ARGV, 3 do
    local w, remaining, reset = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if w == 'rpd' or w == 'tpd' then a.day_end = now + reset end -- one provider day for both
    if (number(a, 'fseq_' .. w) or -1) <= base.seq then -- a later request's figure wins
      a['fseq_' .. w] = base.seq
      local left = remaining - math.max(0, a[COUNTER[w]] - base[COUNTER[w]])
      if BUCKETS[w] and LIMIT[w] >= 0 then
        a[w .. '_l'] = math.min(level(a, w), left) -- lower, never raise; it refills from there
      else
        local ours = provider_remaining(a, w)
        if ours == nil or left < ours then
          a['syn_' .. w .. '_rem'], a['syn_' .. w .. '_base'], a['syn_' .. w .. '_until'] = remaining, base[COUNTER[w]], now + reset
        end
      end
    end
  end
elseif op == 'cooldown' then
  -- ARGV[8] seconds, [9] reason. The later deadline wins.
  local a = load(INDEX)
  local deadline = now + tonumber(ARGV[8])
  a.probe = ''
  if (number(a, 'cd_until') or -1) >= deadline then
    result.started = false
  else
    a.cd_until, a.cd_reason = deadline, ARGV[9]
    result.started = true
  end
elseif op == 'end_cooldown' then
  -- a timer's end: a little early is fine, its clock and Redis's differ by a round trip
  result.ended = end_cooldown_if_due(load(INDEX), 0.05)
elseif op == 'probe' then
  -- ARGV[8] lease id, [9] 1 if it succeeded
  local a = load(INDEX)
  if a.probe == ARGV[8] then
    a.probe = ''
    if ARGV[9] == '1' then a.half_open = 0 end
  end
elseif op == 'view' then
  expire_leases()
  local holders = {}
  local raw = redis.call('HGETALL', HOLDERS)
  for i = 1, #raw, 2 do
    if tonumber(raw[i + 1]) > 0 then holders[raw[i]] = tonumber(raw[i + 1]) else redis.call('HDEL', HOLDERS, raw[i]) end
  end
  result.leases = holders
else
  return redis.error_reply('unknown operation ' .. op)
end

result.now = now
result.views = {}
for i = 1, n do result.views[i] = view(load(i)) end
save_all()
return cjson.encode(result)
