/**
 * Atomic Redis Lua scripts for per-key limits. Both read the server clock (TIME), so gateways with skewed
 * clocks share one consistent view.
 *
 * TOKEN_BUCKET: KEYS[1] hash {tokens, ts}; ARGV[1] capacity, ARGV[2] refill tokens per ms, ARGV[3] tokens to
 *   take (a request with `n` choices takes n; default 1, at most the capacity). Takes all or none.
 *   Returns {1, 0} when they were taken, else {0, ms until that many are available}.
 * ACQUIRE_SLOT: KEYS[1] sorted set of lease id -> expiry ms; ARGV[1] limit, ARGV[2] lease id, ARGV[3] ttl ms,
 *   ARGV[4] slots to take (default 1). Drops expired leases (a crashed gateway's slots come back after the
 *   ttl), then, if the set holds at most `limit - slots`, adds the leases `<lease id>:1` .. `<lease id>:slots`.
 *   Returns 1 when acquired (all of them), else 0.
 */

export const TOKEN_BUCKET = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3] or '1')
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {allowed, wait}
`;

export const ACQUIRE_SLOT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local slots = tonumber(ARGV[4] or '1')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) + slots > tonumber(ARGV[1]) then return 0 end
for i = 1, slots do redis.call('ZADD', KEYS[1], now + ttl, ARGV[2] .. ':' .. i) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
`;
