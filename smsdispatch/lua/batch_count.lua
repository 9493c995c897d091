-- batch_count: count each message's outcome once per submission, and close the batch when everything
-- is counted. The seen hash lives as long as its batch (RECORD_TTL; with 0 both stay, one field per
-- message).
-- KEYS[1] the batch hash
-- KEYS[2] the submission's seen hash
-- ARGV[1] now (s)
-- ARGV[2..] message id / outcome field pairs
-- returns 1
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
  end
end
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
local c = redis.call('HMGET', KEYS[1], 'total', 'accepted', 'failed', 'unknown', 'status')
if c[5] ~= 'done' and tonumber(c[2]) + tonumber(c[3]) + tonumber(c[4]) >= tonumber(c[1]) then
  redis.call('HSET', KEYS[1], 'status', 'done', 'finished_at', ARGV[1])
end
return 1
