-- A Model's limits, shared by every worker of the namespace: requests in flight, requests and
-- tokens per sliding minute. State lives in the model's own slot.
-- KEYS: in-flight (zset member → lease expiry ms), requests (zset member → sent ms), tokens
--       (zset `member|tokens` → sent ms).
-- ARGV: op, member, then for 'acquire': max_concurrent, rpm, tpm (0: no limit), estimate,
--       lease_ms; for 'release': estimate, actual tokens (-1: unknown, keep the estimate).
-- 'acquire' replies {1} when the call may go out, or {0, wait_ms, limit} with how long until
-- it might; 'release' replies {1}.
local INFL, REQ, TOK = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local MINUTE = 60000
local op, member = ARGV[1], ARGV[2]

if op == 'release' then
  redis.call('ZREM', INFL, member)
  local estimate, actual = ARGV[3], tonumber(ARGV[4])
  if actual >= 0 then
    local sent = redis.call('ZSCORE', TOK, member .. '|' .. estimate)
    if sent then
      redis.call('ZREM', TOK, member .. '|' .. estimate)
      redis.call('ZADD', TOK, sent, member .. '|' .. actual)
    end
  end
  return {1}
end

local maxc, rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local estimate, lease = tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', INFL, '-inf', now)
redis.call('ZREMRANGEBYSCORE', REQ, '-inf', now - MINUTE)
redis.call('ZREMRANGEBYSCORE', TOK, '-inf', now - MINUTE)
-- A retried attempt of the same step replaces its own entries.
redis.call('ZREM', INFL, member)

if maxc > 0 and redis.call('ZCARD', INFL) >= maxc then
  -- Whoever finishes first frees a slot; poll soon rather than wait for the longest lease.
  return {0, 200, 'maxConcurrentRequests'}
end
if rpm > 0 and redis.call('ZCARD', REQ) >= rpm then
  local oldest = redis.call('ZRANGE', REQ, 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(oldest[2]) + MINUTE - now), 'requestsPerMinute'}
end
if tpm > 0 then
  local window = redis.call('ZRANGE', TOK, 0, -1, 'WITHSCORES')
  local used = 0
  for i = 1, #window, 2 do
    used = used + (tonumber(string.match(window[i], '|(%d+)$')) or 0)
  end
  -- A call larger than the whole limit goes out alone rather than never.
  if used > 0 and used + estimate > tpm then
    local freed = 0
    for i = 1, #window, 2 do
      freed = freed + (tonumber(string.match(window[i], '|(%d+)$')) or 0)
      if used - freed + estimate <= tpm then
        return {0, math.max(1, tonumber(window[i + 1]) + MINUTE - now), 'tokensPerMinute'}
      end
    end
    return {0, math.max(1, tonumber(window[#window]) + MINUTE - now), 'tokensPerMinute'}
  end
end
redis.call('ZADD', INFL, now + lease, member)
redis.call('ZADD', REQ, now, member .. '|' .. now)
redis.call('ZADD', TOK, now, member .. '|' .. estimate)
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, 2 * MINUTE + lease) end
return {1}
