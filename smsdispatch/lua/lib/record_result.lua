-- library record_result: a record's public result (records.py RESULT_FIELDS), read and typed.
-- RESULT_FIELDS, RESULT_INTS, RESULT_JSON mirror records.py's RESULT_FIELDS, INT_FIELDS and JSON_FIELDS
-- (tests/unit/test_lua.py checks that they agree).
-- record_result_raw(rec): the RESULT_FIELDS of the record hash `rec`, raw (false where absent).
-- record_result(raw): those values as a table for cjson: absent (or '' but for integers) → null,
--   integers → numbers, JSON fields decoded.
local RESULT_FIELDS = {'message_id', 'status', 'gateway', 'gateway_message_id', 'attempts', 'idempotency_key',
                       'segments', 'error'}
local RESULT_INTS = {attempts = true, segments = true}
local RESULT_JSON = {error = true}
local function record_result_raw(rec)
  return redis.call('HMGET', rec, unpack(RESULT_FIELDS))
end
local function record_result(raw)
  local result = {}
  for i, name in ipairs(RESULT_FIELDS) do
    local v = raw[i]
    if v == false or (v == '' and not RESULT_INTS[name]) then result[name] = cjson.null
    elseif RESULT_INTS[name] then result[name] = tonumber(v) or 0
    elseif RESULT_JSON[name] then result[name] = cjson.decode(v)
    else result[name] = v end
  end
  return result
end
