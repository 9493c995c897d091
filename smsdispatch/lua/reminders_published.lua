-- reminders_published: after the reminder's task was published (Reminders.published): releasing → queued.
-- KEYS[1] the reminder's hash
-- KEYS[2] the inflight zset
-- ARGV[1] reminder id
-- returns 1
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') == 'releasing' then redis.call('HSET', KEYS[1], 'state', 'queued') end
return 1
