-- ledger_force_reopenable: an operator's forced replay (Ledger.force_reopenable): a done entry becomes
-- reopenable.
-- KEYS[1] the ledger entry
-- ARGV: none
-- returns 1, or 0 if the entry is not done
if redis.call('HGET', KEYS[1], 'state') ~= 'done' then return 0 end
redis.call('HSET', KEYS[1], 'reopenable', 1)
return 1
