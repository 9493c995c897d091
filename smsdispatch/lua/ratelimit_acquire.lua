-- ratelimit_acquire: reserve n tokens of a gateway's bucket (RateLimiter.acquire).
-- KEYS[1] the bucket hash
-- KEYS[2] the metrics hash: a caller that must wait counts in `ratelimit_waits|<gateway>` and
--   `ratelimit_wait_seconds|<gateway>` (metrics.py)
-- ARGV[1] now (s)
-- ARGV[2] rate (tokens per second)
-- ARGV[3] burst (the bucket's size)
-- ARGV[4] n, the tokens wanted
-- ARGV[5] max_wait (s)
-- ARGV[6] the gateway's name
-- returns {granted (1/0), wait seconds as a string}: granted means the tokens are reserved and the
--          caller may call after `wait`; 0 means nothing was taken (wait > max_wait)
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'factor', 'slow_until')
local factor = tonumber(b[3]) or 1
if now >= (tonumber(b[4]) or 0) then factor = 1 end
local r = rate * factor
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * r) else now = ts end
local wait = 0
if tokens < n then wait = (n - tokens) / r end
local granted = 0
if wait <= max_wait then tokens = tokens - n; granted = 1 end
if wait > 0 then
  redis.call('HINCRBY', KEYS[2], 'ratelimit_waits|' .. ARGV[6], 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'ratelimit_wait_seconds|' .. ARGV[6], wait)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now), 'factor', tostring(factor))
redis.call('EXPIRE', KEYS[1], 3600)
return {granted, tostring(wait)}
