-- reminders_cancel: cancel a reminder unless it is already sending or done (Reminders.cancel).
-- KEYS[1] the reminder's hash
-- KEYS[2] the due zset
-- KEYS[3] the inflight zset
-- ARGV[1] reminder id
-- returns 1 cancelled (or already), 0 too late, -1 unknown id
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'cancelled' then return 1 end
if state == 'sending' or state == 'done' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'cancelled')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
