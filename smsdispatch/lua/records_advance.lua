-- records_advance: move an accepted message to its delivery outcome (Records.advance); never
-- backwards, never twice.
-- KEYS[1] the record hash
-- KEYS[2] its history list
-- KEYS[3] inflight index
-- KEYS[4] the metrics hash: `messages|<gateway>|<status>` counts the move (metrics.py)
-- ARGV[1] message id
-- ARGV[2] new status
-- ARGV[3] now (s)
-- ARGV[4] history entry (JSON)
-- ARGV[5..] field/value pairs
-- returns 1 if advanced, 0 if the record is not (or no longer) `accepted`
if redis.call('HGET', KEYS[1], 'status') ~= 'accepted' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3], unpack(ARGV, 5))
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[1])
local gw = redis.call('HGET', KEYS[1], 'gateway')
redis.call('HINCRBY', KEYS[4], 'messages|' .. ((gw and gw ~= '') and gw or 'none') .. '|' .. ARGV[2], 1)
return 1
