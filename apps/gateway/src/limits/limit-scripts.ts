/**
 * Atomic Redis Lua scripts for per-key limits. Both read the server clock (TIME), so gateways with skewed
 * clocks share one consistent view.
 *
 * TOKEN_BUCKET: KEYS[1] hash {tokens, ts}; ARGV[1] capacity, ARGV[2] refill tokens per ms.
 *   Returns {1, 0} when a token was taken, else {0, ms until one is available}.
 * ACQUIRE_SLOT: KEYS[1] sorted set of lease id -> expiry ms; ARGV[1] limit, ARGV[2] lease id, ARGV[3] ttl ms.
 *   Drops expired leases (a crashed gateway's slots come back after the ttl), then adds the lease if the
 *   set holds fewer than `limit`. Returns 1 when acquired, else 0.
 */

export const TOKEN_BUCKET = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {allowed, wait}
`;

export const ACQUIRE_SLOT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
`;
