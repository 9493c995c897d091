-- library store_result: a task's result where Celery's Redis result backend keeps it, in its format
-- (results.py), stored and published as the backend does.
-- store_result(key, ttl, task_id, date_done, result): `result` a Lua table (cjson-encoded).
local function store_result(key, ttl, task_id, date_done, result)
  local meta = '{"status":"SUCCESS","result":' .. cjson.encode(result) .. ',"traceback":null,"children":[],' ..
               '"date_done":' .. cjson.encode(date_done) .. ',"task_id":' .. cjson.encode(task_id) .. '}'
  redis.call('SETEX', key, ttl, meta)
  redis.call('PUBLISH', key, meta)
end
