-- lgw lease renewal, version 1: a long stream keeps its concurrency slots.
-- KEYS: lease sets; ARGV: lease id, lease ttl ms. Only existing leases are extended
-- (XX): a lease that already expired stays released.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ttl + 1000)
end
return 1
