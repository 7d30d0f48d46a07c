-- A read of the prompt stream, and Redis's time as it read: a message's id is Redis's time when
-- it was added, so the two give its age. One call keyed on the stream, so that a Redis Cluster
-- routes it (TIME alone names no key, and a cluster client has no node to send it to).
-- KEYS[1] the stream. ARGV[1] '' (the prelude's `now` is then Redis's own TIME, whatever clock
-- the store's other scripts are told), ARGV[2] the first id to read (XRANGE's form, "(" for
-- after), ARGV[3] how many messages at most.
-- Returns {now in seconds (text: a Lua number would lose its fraction), XRANGE's reply}.
-- (`now` comes from the prelude, now.lua)
return {string.format('%.6f', now), redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', ARGV[3])}
