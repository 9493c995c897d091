-- ledger_claim_many: many claims in one call (Ledger.claim_many, a batch chunk), each with some fields
-- of its record read back.
-- requires: claim
-- KEYS[2m-1] message m's ledger entry (m = 1, 2, ...)
-- KEYS[2m] message m's record
-- ARGV[1] now (ms)
-- ARGV[2] lease (ms)
-- ARGV[3] the entries' ttl (s)
-- ARGV[4] submission
-- ARGV[5] n, the number of record fields to read
-- ARGV[6..5+n] the field names
-- ARGV[6+n..] per message: fingerprint, message id, owner
-- returns per message the 4 values of a claim and the n fields (false where absent), flat
local now, lease, ttl, submission, n = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local out = {}
local m = 0
for i = 6 + n, #ARGV, 3 do
  m = m + 1
  local r = claim(KEYS[2 * m - 1], ARGV[i], ARGV[i + 1], ARGV[i + 2], now, lease, ttl, submission, KEYS[2 * m])
  for j = 1, 4 do out[#out + 1] = r[j] end
  if n > 0 then
    local f = redis.call('HMGET', KEYS[2 * m], unpack(ARGV, 6, 5 + n))
    for j = 1, n do out[#out + 1] = f[j] end
  end
end
return out
