-- lgw settlement, version 1: the end of one admitted request.
-- Token buckets get back what was reserved but not used (or give more, when the answer
-- used more than reserved); the request's leases are released. Clock: Redis TIME.
--
-- KEYS[1..nb]      token buckets (as in admit.lua)
-- KEYS[nb+1..]     lease sets
-- ARGV             nb, ns, lease id, then (capacity, refund) per bucket
local nb, ns = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

for i = 1, nb do
  local capacity, refund = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local state = redis.call('HMGET', KEYS[i], 'l', 'ts')
  local level, ts = tonumber(state[1]) or capacity, tonumber(state[2]) or now
  level = math.min(capacity, level + math.max(0, now - ts) * capacity / 60000 + refund)
  redis.call('HSET', KEYS[i], 'l', level, 'ts', now)
  redis.call('HINCRBYFLOAT', KEYS[i], 'u', -refund)
  redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - level) * 60000 / capacity) + 1000)
end
for j = 1, ns do
  redis.call('ZREM', KEYS[nb + j], lease)
end
return 1
