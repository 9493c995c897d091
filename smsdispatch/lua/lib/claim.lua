-- library claim: the idempotency ledger's claim of one key (ledger.py explains the states).
-- claim(key, fp, mid, owner, now, lease, ttl, submission, rec)
--   key: the ledger entry; rec: the message's record (read only when the entry is absent).
--   Returns {answer, message_id, lease_until or first_claimed_at, fresh}; fresh is 1 when the key had
--   no entry at all (a first attempt).
-- No entry but a settled record (`settled`): the entry expired (IDEMPOTENCY_TTL) after an outcome was
-- recorded, and the record wins: DONE, never a second send; except a provably unsent failure asked
-- again by another submission (a replayed dead letter), which may send.
local function settled(rec, submission)
  local r = redis.call('HMGET', rec, 'status', 'attempts', 'maybe_sent', 'task_id')
  local terminal = {accepted = true, delivered = true, failed = true, unknown = true, expired = true}
  -- a refusal before any attempt (validation, balance guard) never held the key: it may be claimed
  if not (terminal[r[1]] == true and (tonumber(r[2]) or 0) > 0) then return nil end
  -- failed and provably unsent, asked again by another submission (a dead letter replayed): reopened,
  -- as a reopenable entry would be; its own task coming back gets the record
  if r[1] == 'failed' and r[3] ~= '1' and r[4] ~= submission then return 'reopen' end
  return 'done'
end
local function claim(key, fp, mid, owner, now, lease, ttl, submission, rec)
  local e = redis.call('HMGET', key, 'fp', 'state', 'lease_until', 'message_id', 'first_claimed_at',
                       'reopenable', 'submission')
  local function take(answer, first, fresh)
    redis.call('HSET', key, 'fp', fp, 'state', 'claimed', 'owner', owner, 'submission', submission,
               'lease_until', now + lease, 'message_id', mid, 'first_claimed_at', first, 'reopenable', 0)
    redis.call('EXPIRE', key, ttl)
    return {answer, mid, first, fresh}
  end
  if not e[2] then
    local after = settled(rec, submission)
    if after == 'done' then return {'done', mid, 0, 0} end
    if after == 'reopen' then return take('reopened', now, 0) end
    return take('claimed', now, 1)
  end
  if e[1] ~= fp then return {'conflict', e[4], 0, 0} end
  if e[2] == 'done' then
    if e[6] == '1' and e[7] ~= submission then return take('reopened', now, 0) end
    return {'done', e[4], 0, 0}
  end
  if e[2] == 'pending' then return take('claimed', tonumber(e[5]), 0) end
  if e[2] == 'claimed' and tonumber(e[3]) > now then return {'busy', e[4], tonumber(e[3]), 0} end
  return take('reconcile', tonumber(e[5]), 0)
end
