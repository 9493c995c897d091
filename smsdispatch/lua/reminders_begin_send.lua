-- reminders_begin_send: the reminder's task starts (Reminders.begin_send): mark it sending, unless
-- cancelled; idempotent for task retries.
-- KEYS[1] the reminder's hash
-- ARGV: none
-- returns the payload, or nil when cancelled or unknown
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'cancelled' then return false end
if state ~= 'done' then redis.call('HSET', KEYS[1], 'state', 'sending') end
return redis.call('HGET', KEYS[1], 'payload')
