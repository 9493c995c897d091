-- reminders_recover: releases interrupted between claim and publish go back to due (Reminders.recover).
-- KEYS[1] the inflight zset
-- KEYS[2] the due zset
-- ARGV[1] older_than: those that entered inflight before this time (s)
-- ARGV[2] the key prefix of reminder hashes (keys.reminder(''))
-- keys built: ARGV[2] .. id, the hash of each stuck reminder. Which ones is known only once the script
--   has read the inflight zset, so they cannot be passed in KEYS (the one exception to that rule here).
-- returns the number of entries taken off inflight
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local h = ARGV[2] .. id
  if redis.call('HGET', h, 'state') == 'releasing' then
    redis.call('HSET', h, 'state', 'scheduled')
    redis.call('ZADD', KEYS[2], redis.call('HGET', h, 'send_at'), id)
  end
end
return #ids
