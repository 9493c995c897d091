-- ledger_release: give a claim up after a failed call (Ledger.release); only its holder may.
-- KEYS[1] the ledger entry
-- ARGV[1] owner
-- ARGV[2] the new state ('pending' or 'ambiguous')
-- returns 1 if released, 0 if another execution holds the entry
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'lease_until', 0)
return 1
