-- library circuit_record: count one gateway call's result for its circuit (circuit.py).
-- circuit_record(ckey, skey, metrics, gateway, now, failed, probe, window, min_calls, rate, cooloff, probes)
--   ckey: the circuit hash; skey: its calls hash (ten time buckets of `c<bucket>` / `f<bucket>`);
--   metrics: the metrics hash, where each opening counts in `circuit_opens|<gateway>` (metrics.py).
--   Returns {event, failures, calls}: event 'opened' (this result opened or re-opened the circuit),
--   'closed' (the last probe closed it) or ''.
local function circuit_open(ckey, skey, metrics, gateway, now, cooloff)
  redis.call('HINCRBY', metrics, 'circuit_opens|' .. gateway, 1)
  redis.call('HSET', ckey, 'open_until', now + cooloff, 'probes', 0, 'probe_ok', 0, 'probe_until', 0)
  redis.call('EXPIRE', ckey, math.ceil(cooloff * 4 + 60))
  redis.call('DEL', skey)
end
local function circuit_record(ckey, skey, metrics, gateway, now, failed, probe, window, min_calls, rate, cooloff,
                              probes)
  local open_until = tonumber(redis.call('HGET', ckey, 'open_until'))
  if open_until then
    if not probe or now < open_until then return {'', 0, 0} end
    if failed then
      circuit_open(ckey, skey, metrics, gateway, now, cooloff)
      return {'opened', 1, 1}
    end
    if redis.call('HINCRBY', ckey, 'probe_ok', 1) >= probes then
      redis.call('DEL', ckey, skey)
      return {'closed', 0, 0}
    end
    return {'', 0, 0}
  end
  local bucket = math.floor(now / (window / 10))
  redis.call('HINCRBY', skey, 'c' .. bucket, 1)
  redis.call('EXPIRE', skey, math.ceil(window) + 1)
  if not failed then return {'', 0, 0} end
  redis.call('HINCRBY', skey, 'f' .. bucket, 1)
  local all = redis.call('HGETALL', skey)
  local calls, fails = 0, 0
  for i = 1, #all, 2 do
    local b = tonumber(string.sub(all[i], 2))
    if b == nil or b <= bucket - 10 then
      redis.call('HDEL', skey, all[i])
    elseif string.sub(all[i], 1, 1) == 'c' then
      calls = calls + tonumber(all[i + 1])
    else
      fails = fails + tonumber(all[i + 1])
    end
  end
  if calls >= min_calls and fails * 100 >= rate * calls then
    circuit_open(ckey, skey, metrics, gateway, now, cooloff)
    return {'opened', fails, calls}
  end
  return {'', fails, calls}
end
