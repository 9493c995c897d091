-- library update_record: one `Records.update`, server-side (records.py; Records.prepared gives the values).
-- update_record(key, hist, gwid, numidx, inflight, pending, metrics, ttl, at, mid, status, entry, fields, pend)
--   keys: the record hash, its history list, the gateway-id key ('' = none; set only on `accepted`),
--   the number index of the message's number ('' = none; given with an update that writes `to`:
--   lib/index_number.lua), the inflight and pending indexes, the metrics hash.
--   values: ttl (0 = keep), now, message id, status, history entry (JSON), fields (a JSON object of
--   strings), pend ('' = leave the pending index, 'rem' = remove, else the sweep deadline).
-- count_update(metrics, old, status, f, at): what the update counts in the metrics hash (metrics.py names
--   every field), read off the record before (`old`: status, gateway, created_at) and the update (`f`):
--   `messages|<gw>|<status>`   the message reached accepted, delivered, failed, unknown or expired (not again)
--   `latency|<gw>|<le>`, `latency_sum|<gw>`   on reaching accepted: seconds since the record was created
--                                             (the producer's `queued`), in the first bucket that holds them
--   `attempts|<gw>`            a `sending` update carrying an attempt number: a gateway call starts
--   `failovers|<from>|<to>`    ... on another gateway than the message's previous attempt
--   `retries|<gw>`             `sending` → `retrying` with an error: a failed call, to be tried again
--   <gw> is the update's gateway, else the record's, else 'none' (refused before any gateway).
-- LATENCY_BUCKETS mirrors metrics.py's (tests/unit/test_metrics.py checks that they agree).
-- summed_counts / flush_counts(metrics): a script that updates many records (records_update_many,
--   ledger_finish_many) sets `summed_counts = {}` first and calls flush_counts(metrics) last: its counts
--   are then summed per field and written once per field (one HINCRBY / HINCRBYFLOAT each) instead of
--   once per message; the same totals, in the same script, so as atomic as before. Left nil (single
--   sends) every count is written at once.
local summed_counts = nil
-- HINCRBYFLOAT for the one float field (the latency sum), HINCRBY for every other
local function increment(metrics, field, by)
  local command = string.sub(field, 1, 12) == 'latency_sum|' and 'HINCRBYFLOAT' or 'HINCRBY'
  redis.call(command, metrics, field, by)
end
local function count(metrics, field, by)
  if summed_counts then
    summed_counts[field] = (summed_counts[field] or 0) + by
  else
    increment(metrics, field, by)
  end
end
local function flush_counts(metrics)
  for field, by in pairs(summed_counts or {}) do
    increment(metrics, field, by)
  end
  summed_counts = nil
end
local LATENCY_BUCKETS = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
local SETTLED = {accepted = true, delivered = true, failed = true, unknown = true, expired = true}
local function count_update(metrics, old, status, f, at)
  local gw = f.gateway
  if gw == nil or gw == '' then gw = old[2] end
  if not gw or gw == '' then gw = 'none' end
  if SETTLED[status] and old[1] ~= status then
    count(metrics, 'messages|' .. gw .. '|' .. status, 1)
    if status == 'accepted' then
      local waited = math.max(0, at - (tonumber(old[3]) or at))
      local le = '+Inf'
      for _, bound in ipairs(LATENCY_BUCKETS) do
        if waited <= bound then le = tostring(bound); break end
      end
      count(metrics, 'latency|' .. gw .. '|' .. le, 1)
      count(metrics, 'latency_sum|' .. gw, waited)
    end
  elseif status == 'sending' and (tonumber(f.attempts or '') or 0) > 0 then
    count(metrics, 'attempts|' .. gw, 1)
    if old[2] and old[2] ~= '' and old[2] ~= gw then
      count(metrics, 'failovers|' .. old[2] .. '|' .. gw, 1)
    end
  elseif status == 'retrying' and old[1] == 'sending' and f.error and f.error ~= '' and f.error ~= 'null' then
    count(metrics, 'retries|' .. gw, 1)
  end
end
local function update_record(key, hist, gwid, numidx, inflight, pending, metrics, ttl, at, mid, status, entry, fields, pend)
  local f = cjson.decode(fields)
  local old = redis.call('HMGET', key, 'status', 'gateway', 'created_at', 'accepted_at')
  local flat = {'message_id', mid, 'status', status, 'updated_at', at}
  for k, v in pairs(f) do
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
  -- created_at and accepted_at are set once (as HSETNX would), in the same HSET: old says if they are
  if not old[3] and f.created_at == nil then
    flat[#flat + 1] = 'created_at'
    flat[#flat + 1] = at
  end
  if status == 'accepted' and not old[4] and f.accepted_at == nil then
    flat[#flat + 1] = 'accepted_at'
    flat[#flat + 1] = at
  end
  redis.call('HSET', key, unpack(flat))
  redis.call('RPUSH', hist, entry)
  if status == 'accepted' then
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
  count_update(metrics, old, status, f, tonumber(at))
end
