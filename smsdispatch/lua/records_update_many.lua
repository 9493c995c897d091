-- records_update_many: many `Records.update`s in one call (batch chunks and single updates alike).
-- requires: index_number, update_record
-- KEYS[1] inflight index
-- KEYS[2] pending index
-- KEYS[3] the metrics hash (the updates' counts: lib/update_record.lua)
-- KEYS[4..] per message, four: its record, history, gateway-id key ('' = none), number index ('' = none)
-- ARGV[1] ttl (0 = keep)
-- ARGV[2] now (s)
-- ARGV[3..] per message, five: message id, status, history entry, fields JSON, pending
-- returns the number of messages
local ttl, at = tonumber(ARGV[1]), ARGV[2]
local n = (#ARGV - 2) / 5
summed_counts = {}
for m = 0, n - 1 do
  local k, a = 4 + 4 * m, 3 + 5 * m
  update_record(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[1], KEYS[2], KEYS[3], ttl, at,
                unpack(ARGV, a, a + 4))
end
flush_counts(KEYS[3])
return n
