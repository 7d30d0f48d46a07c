-- The prelude every trioproxy script starts with: `now`, the time the caller passed as ARGV[1]
-- (a simulation's clock), or Redis's own TIME when ARGV[1] is ''.
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
else
  now = tonumber(ARGV[1])
end
