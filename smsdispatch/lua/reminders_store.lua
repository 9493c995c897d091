-- reminders_store: store a reminder and schedule it (Reminders.schedule), once.
-- KEYS[1] the reminder's hash
-- KEYS[2] the due zset
-- ARGV[1] reminder id
-- ARGV[2] send_at (s)
-- ARGV[3] payload (JSON)
-- ARGV[4] now (s)
-- returns 1 if stored, 0 if it already existed
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'reminder_id', ARGV[1], 'send_at', ARGV[2], 'payload', ARGV[3],
           'state', 'scheduled', 'created_at', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
