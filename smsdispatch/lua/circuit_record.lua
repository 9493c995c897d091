-- circuit_record: count one gateway call's result for its circuit (Circuits.record).
-- requires: circuit_record
-- KEYS[1] the circuit hash
-- KEYS[2] its calls hash
-- KEYS[3] the metrics hash (an opening is counted)
-- ARGV[1] now (s)
-- ARGV[2] failed (1/0)
-- ARGV[3] probe (1/0)
-- ARGV[4] window (s)
-- ARGV[5] min_calls
-- ARGV[6] failure rate (percent)
-- ARGV[7] cooloff (s)
-- ARGV[8] probes
-- ARGV[9] the gateway's name
-- returns {event, failures, calls}: event 'opened', 'closed' or '' (lib/circuit_record.lua)
return circuit_record(KEYS[1], KEYS[2], KEYS[3], ARGV[9], tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3] == '1',
                      tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))
