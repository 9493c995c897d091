-- library update_record: one `Records.update`, server-side (records.py; Records.prepared gives the values).
-- update_record(key, hist, gwid, numidx, inflight, pending, ttl, at, mid, status, entry, fields, pend)
--   keys: the record hash, its history list, the gateway-id key ('' = none; set only on `accepted`),
--   the number index of the message's number ('' = none; given with an update that writes `to`:
--   lib/index_number.lua), the inflight and pending indexes.
--   values: ttl (0 = keep), now, message id, status, history entry (JSON), fields (a JSON object of
--   strings), pend ('' = leave the pending index, 'rem' = remove, else the sweep deadline).
local function update_record(key, hist, gwid, numidx, inflight, pending, ttl, at, mid, status, entry, fields, pend)
  local flat = {'message_id', mid, 'status', status, 'updated_at', at}
  for k, v in pairs(cjson.decode(fields)) do
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
  redis.call('HSET', key, unpack(flat))
  redis.call('HSETNX', key, 'created_at', at)
  redis.call('RPUSH', hist, entry)
  if status == 'accepted' then
    redis.call('HSETNX', key, 'accepted_at', at)
    redis.call('ZADD', inflight, 'NX', at, mid)
    if gwid ~= '' then
      if ttl > 0 then redis.call('SET', gwid, mid, 'EX', ttl) else redis.call('SET', gwid, mid) end
    end
  elseif status == 'delivered' or status == 'failed' or status == 'unknown' or status == 'expired' then
    redis.call('ZREM', inflight, mid)
  end
  if numidx ~= '' then index_number(numidx, ttl, at, mid) end
  if pend == 'rem' then redis.call('ZREM', pending, mid) elseif pend ~= '' then redis.call('ZADD', pending, pend, mid) end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
    redis.call('EXPIRE', hist, ttl)
  end
end
