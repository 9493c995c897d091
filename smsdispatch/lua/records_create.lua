-- records_create: write a new `queued` record only if it is absent (Records.create), so a duplicate
-- producer never rewinds a sent message; then, when given a queue, push the task message onto it (the
-- producer's publish in the same round trip, redis_transport.Channel._put), whether or not the record
-- already existed (a republish of a recorded message is still a publish).
-- requires: index_number
-- KEYS[1] the record hash
-- KEYS[2] its history list
-- KEYS[3] pending index
-- KEYS[4] number index of the message's number ('' = none)
-- KEYS[5] the metrics hash: `enqueued` counts a record created (metrics.py)
-- KEYS[6] the broker's queue list to push the message onto ('' = no publish here)
-- ARGV[1] ttl (0 = keep)
-- ARGV[2] history entry (JSON)
-- ARGV[3] sweep deadline ('' = none)
-- ARGV[4] message id
-- ARGV[5] the serialized kombu message (with KEYS[6]; '' otherwise)
-- ARGV[6..] field/value pairs
-- returns 1 when created, 0 when the record already existed
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 6))
  redis.call('RPUSH', KEYS[2], ARGV[2])
  if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4]) end
  local ttl = tonumber(ARGV[1])
  if KEYS[4] ~= '' then index_number(KEYS[4], ttl, redis.call('HGET', KEYS[1], 'created_at'), ARGV[4]) end
  if ttl > 0 then
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[2], ttl)
  end
  redis.call('HINCRBY', KEYS[5], 'enqueued', 1)
  created = 1
end
if KEYS[6] ~= '' then redis.call('LPUSH', KEYS[6], ARGV[5]) end
return created
