-- ledger_finish: a send's outcome in one step (Ledger.finish): the gateway call's result counted for
-- its circuit, the record's update, the entry marked done, the dead letter, and the task's result
-- where Celery's Redis result backend keeps it, built from the updated record.
-- requires: index_number, update_record, record_result, store_result, circuit_record
-- KEYS[1] the ledger entry
-- KEYS[2] the message's record
-- KEYS[3] the record's history
-- KEYS[4] gateway-id key of the update ('' = none)
-- KEYS[5] number index of the update ('' = none)
-- KEYS[6] inflight index
-- KEYS[7] pending index
-- KEYS[8] the metrics hash (the update's counts, a dead letter's, a circuit's opening)
-- KEYS[9] dead letters list
-- KEYS[10] the task's result key ('' = store none)
-- KEYS[11] circuit hash (optional: with KEYS[12], only when a gateway call is counted)
-- KEYS[12] the circuit's calls hash (optional)
-- ARGV[1] reopenable (0/1)
-- ARGV[2] dead letter (0/1)
-- ARGV[3] result ttl (s)
-- ARGV[4] task id
-- ARGV[5] date_done
-- ARGV[6] the record's ttl (0 = keep)
-- ARGV[7] now (s)
-- ARGV[8..12] the update: message id, status, history entry, fields JSON, pending (lib/update_record.lua)
-- ARGV[13..21] with KEYS[11..12]: the call's now, failed, probe, window, min_calls, rate, cooloff, probes,
--   gateway
-- returns the record's RESULT_FIELDS, raw (false where absent), then what the call did to its circuit
--          ('opened', 'closed' or '')
local circuit = ''
if #KEYS >= 12 then
  circuit = circuit_record(KEYS[11], KEYS[12], KEYS[8], ARGV[21], tonumber(ARGV[13]), ARGV[14] == '1',
                           ARGV[15] == '1', tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18]),
                           tonumber(ARGV[19]), tonumber(ARGV[20]))[1]
end
update_record(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], tonumber(ARGV[6]), ARGV[7],
              unpack(ARGV, 8, 12))
redis.call('HSET', KEYS[1], 'state', 'done', 'reopenable', ARGV[1])
if ARGV[2] == '1' then
  redis.call('RPUSH', KEYS[9], ARGV[8])
  local gw = redis.call('HGET', KEYS[2], 'gateway')
  redis.call('HINCRBY', KEYS[8], 'dead_letters|' .. ((gw and gw ~= '') and gw or 'none'), 1)
end
local f = record_result_raw(KEYS[2])
if KEYS[10] ~= '' then store_result(KEYS[10], ARGV[3], ARGV[4], ARGV[5], record_result(f)) end
f[#f + 1] = circuit
return f
