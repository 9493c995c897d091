-- transport_beat: heartbeat and judgement in one step (transport.py Liveness): stamp this process with
-- Redis's clock, keep its set of delivery tags alive, and name the processes silent for too long.
-- KEYS[1] the workers zset
-- KEYS[2] this process's set of delivery tags
-- ARGV[1] owner (this process)
-- ARGV[2] lost_after (s)
-- ARGV[3] the tag set's ttl (s)
-- returns the owners silent for longer than lost_after
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
