-- ledger_begin: the send path's first step (Ledger.begin): the claim; when it is a first attempt (no
-- entry, no attempt on the record) and the first gateway's circuit is closed, the record's `sending`
-- update; then what the caller decides on: the record as it stands after that, and the route's circuits.
-- requires: claim, index_number, update_record
-- KEYS[1] the ledger entry
-- KEYS[2] the message's record
-- KEYS[3] the record's history
-- KEYS[4] gateway-id key of the update ('' = none)
-- KEYS[5] number index of the update ('' = none)
-- KEYS[6] inflight index
-- KEYS[7] pending index
-- KEYS[8] the metrics hash (the update's counts: lib/update_record.lua)
-- KEYS[9..] the circuit hash of each gateway of the route; KEYS[9] that of the gateway the update names
--   (the update is not written while it is open)
-- ARGV[1..7] the claim's: fingerprint, message id, owner, now (ms), lease (ms), entry ttl (s), submission
-- ARGV[8] '1' to write the update on a first attempt, else '0'
-- ARGV[9] the record's ttl (0 = keep)
-- ARGV[10] now (s)
-- ARGV[11..15] the update: message id, status, history entry, fields JSON, pending (lib/update_record.lua)
-- ARGV[16..] the record fields to read back
-- returns {answer, message_id, lease_until or first_claimed_at, fresh (2 when the update was written),
--          the record fields (false where absent), each circuit's open_until (false if closed)}
local r = claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], KEYS[2])
if ARGV[8] == '1' and r[4] == 1 then
  local attempts = redis.call('HGET', KEYS[2], 'attempts')
  if (not attempts or attempts == '0' or attempts == '')
     and (#KEYS < 9 or redis.call('HEXISTS', KEYS[9], 'open_until') == 0) then
    update_record(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], tonumber(ARGV[9]), ARGV[10],
                  unpack(ARGV, 11, 15))
    r[4] = 2
  end
end
local circuits = {}
for i = 9, #KEYS do circuits[#circuits + 1] = redis.call('HGET', KEYS[i], 'open_until') end
r[5] = redis.call('HMGET', KEYS[2], unpack(ARGV, 16))
r[6] = circuits
return r
