-- lgw admission, version 1 (keep LIMITER_VERSION in ratelimit/limits.py in step).
-- One call decides one request against every limit that applies to it (team and key;
-- requests/min and tokens/min as token buckets, concurrency as leases): all are checked
-- first, then all are debited, or none is. The clock is Redis TIME, never a replica's,
-- and every key written gets a TTL, so nothing outlives its use.
--
-- KEYS[1..nb]      token buckets: hash {l = level, ts = ms of level, u = tokens used}
-- KEYS[nb+1..]     lease sets: zset member = lease id, score = expiry in ms
-- ARGV             nb, ns, lease id, lease ttl ms, then (capacity, cost) per bucket,
--                  then limit per lease set
-- returns          {admitted 1|0, index of the refusing limit, retry after ms,
--                   then (remaining, ms until full) per bucket}
local nb, ns = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, ttl = ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = {1, 0, 0}
local levels = {}

for i = 1, nb do
  local capacity, cost = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  local state = redis.call('HMGET', KEYS[i], 'l', 'ts')
  local level, ts = tonumber(state[1]) or capacity, tonumber(state[2]) or now
  level = math.min(capacity, level + math.max(0, now - ts) * capacity / 60000)
  levels[i] = level
  if result[1] == 1 and level < cost then
    result = {0, i, math.ceil((cost - level) * 60000 / capacity)}
  end
end

local limit_base = 4 + 2 * nb
for j = 1, ns do
  local key = KEYS[nb + j]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if result[1] == 1 and redis.call('ZCARD', key) >= tonumber(ARGV[limit_base + j]) then
    result = {0, nb + j, 1000}
  end
end

for i = 1, nb do
  local capacity, cost = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  if result[1] == 1 then
    levels[i] = levels[i] - cost
    redis.call('HSET', KEYS[i], 'l', levels[i], 'ts', now)
    redis.call('HINCRBYFLOAT', KEYS[i], 'u', cost)
    -- Full again after this long; a bucket left alone that long holds no information.
    redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - levels[i]) * 60000 / capacity) + 1000)
  end
  result[#result + 1] = math.floor(levels[i])
  result[#result + 1] = math.ceil((capacity - levels[i]) * 60000 / capacity)
end

if result[1] == 1 then
  for j = 1, ns do
    redis.call('ZADD', KEYS[nb + j], now + ttl, lease)
    redis.call('PEXPIRE', KEYS[nb + j], ttl + 1000)
  end
end
return result
