-- circuit_allow: may a call go to this gateway now (Circuits.allow)? Hands out half-open probes.
-- KEYS[1] the circuit hash
-- ARGV[1] now (s)
-- ARGV[2] probes per half-open round
-- ARGV[3] probe_ttl (s): a round whose probes never reported is handed out again after it
-- returns {verdict, until}: 'closed'; 'probe' (this caller takes one of the round's probes); 'open'
--          (skip; `until` says when to look again)
local h = redis.call('HMGET', KEYS[1], 'open_until', 'probes', 'probe_until')
local open_until = tonumber(h[1])
if not open_until then return {'closed', '0'} end
local now = tonumber(ARGV[1])
if now < open_until then return {'open', tostring(open_until)} end
local given, round_until = tonumber(h[2]) or 0, tonumber(h[3]) or 0
if given > 0 and now >= round_until then
  given = 0                                  -- the last round's probes never reported: a new round
  redis.call('HSET', KEYS[1], 'probe_ok', 0)
end
if given >= tonumber(ARGV[2]) then return {'open', tostring(round_until)} end
if given == 0 then round_until = now + tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], 'probes', given + 1, 'probe_until', round_until)
return {'probe', tostring(open_until)}
