-- ratelimit_slow_down: the gateway answered 429 (RateLimiter.slow_down): halve the bucket's rate and,
-- with a Retry-After, empty it for that long.
-- KEYS[1] the bucket hash
-- ARGV[1] now (s)
-- ARGV[2] rate (tokens per second)
-- ARGV[3] burst (the bucket's size)
-- ARGV[4] retry_after (s; 0 if none)
-- ARGV[5] slow_for (s): how long the slower rate lasts at least
-- ARGV[6] min_factor: the rate is never slowed below this share
-- returns the new rate factor, as a string
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local retry_after = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'factor', 'slow_until')
local factor = tonumber(b[3]) or 1
if now >= (tonumber(b[4]) or 0) then factor = 1 end
factor = math.max(tonumber(ARGV[6]), factor / 2)
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate * factor) else now = ts end
if retry_after > 0 then tokens = math.min(tokens, -retry_after * rate * factor) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now), 'factor', tostring(factor),
           'slow_until', tostring(now + math.max(retry_after, tonumber(ARGV[5]))))
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(factor)
