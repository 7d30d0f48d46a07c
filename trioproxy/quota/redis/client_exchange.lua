-- One round of the clients' exchange between the replicas of one Redis ledger, in one step.
-- KEYS[1] hash: replica -> its published figures (JSON)
-- KEYS[2] sorted set: replica -> when its figures expire (the store's time)
-- KEYS[3] hash: the shared usage counters, field -> count
-- ARGV[1] the time ("" = Redis TIME), ARGV[2] this replica, ARGV[3] its figures,
-- ARGV[4] seconds they outlive this call, then pairs (usage field, amount to add).
-- Returns {figures of every replica still publishing (flat hash), the usage counters (flat hash)}.
-- (`now` comes from the prelude, now.lua)
local expires = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], now + expires, ARGV[2])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)) do
  redis.call('HDEL', KEYS[1], gone)
  redis.call('ZREM', KEYS[2], gone)
end
-- Left alone by every replica, the figures go too (the counters stay: they are the usage).
redis.call('EXPIRE', KEYS[1], math.ceil(expires * 12))
redis.call('EXPIRE', KEYS[2], math.ceil(expires * 12))
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[3])}
