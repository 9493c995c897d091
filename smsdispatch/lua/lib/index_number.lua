-- library index_number: file a message under the last digits of its number (Records.by_number), in the
-- script that writes the number, so the index costs no round trip of its own.
-- index_number(idx, ttl, at, mid)
--   idx: the number index (keys.number_index: a sorted set of message ids by when they were filed);
--   ttl: the records' ttl (0 = keep); at: now (s); mid: the message id.
--   An entry older than ttl names a record that has expired with it: dropped here, so the set holds no
--   more than the records do; the set itself expires ttl after its newest entry.
local function index_number(idx, ttl, at, mid)
  redis.call('ZADD', idx, at, mid)
  if ttl > 0 then
    redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. (tonumber(at) - ttl))
    redis.call('EXPIRE', idx, ttl)
  end
end
