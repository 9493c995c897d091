-- ledger_finish_many: many outcomes in one call (Ledger.finish_many, a batch's settled messages): each
-- record's update and its entry done.
-- requires: index_number, update_record
-- KEYS[1] inflight index
-- KEYS[2] pending index
-- KEYS[3] the metrics hash (the updates' counts, the dead letters')
-- KEYS[4] dead letters list
-- KEYS[5..] per message, five: its ledger entry, record, history, gateway-id key ('' = none), number index
--   ('' = none)
-- ARGV[1] reopenable (0/1)
-- ARGV[2] dead letter (0/1)
-- ARGV[3] the records' ttl (0 = keep)
-- ARGV[4] now (s)
-- ARGV[5..] per message, five: message id, status, history entry, fields JSON, pending
-- returns the number of messages
local ttl, at = tonumber(ARGV[3]), ARGV[4]
local n = (#ARGV - 4) / 5
summed_counts = {}
for m = 0, n - 1 do
  local k, a = 5 + 5 * m, 5 + 5 * m
  update_record(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[1], KEYS[2], KEYS[3], ttl, at,
                unpack(ARGV, a, a + 4))
  redis.call('HSET', KEYS[k], 'state', 'done', 'reopenable', ARGV[1])
  if ARGV[2] == '1' then
    redis.call('RPUSH', KEYS[4], ARGV[a])
    local gw = redis.call('HGET', KEYS[k + 1], 'gateway')
    count(KEYS[3], 'dead_letters|' .. ((gw and gw ~= '') and gw or 'none'), 1)
  end
end
flush_counts(KEYS[3])
return n
