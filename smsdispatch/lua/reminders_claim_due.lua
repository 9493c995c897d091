-- reminders_claim_due: take the reminders due by a time (Reminders.claim_due): moved from due to
-- inflight and marked `releasing`, so two beats never take the same one.
-- KEYS[1] the due zset
-- KEYS[2] the inflight zset
-- ARGV[1] until: take those with send_at <= until
-- ARGV[2] now (s)
-- ARGV[3] limit
-- ARGV[4] the key prefix of reminder hashes (keys.reminder(''))
-- keys built: ARGV[4] .. id, the hash of each reminder taken. Which ones is known only once the script
--   has read the due zset, so they cannot be passed in KEYS (the one exception to that rule here).
-- returns {id, send_at, id, send_at, ...}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
for i = 1, #ids, 2 do
  redis.call('ZREM', KEYS[1], ids[i])
  redis.call('ZADD', KEYS[2], ARGV[2], ids[i])
  redis.call('HSET', ARGV[4] .. ids[i], 'state', 'releasing')
end
return ids
