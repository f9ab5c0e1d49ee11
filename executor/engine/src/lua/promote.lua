-- Moves due retries (and steps that waited for their breaker) from the delayed set into the
-- queue. KEYS: queue, delayed. ARGV: limit. Returns how many moved.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  -- Members are `run|step|tool`.
  local a = string.find(m, '|', 1, true)
  local b = a and string.find(m, '|', a + 1, true)
  if b then
    redis.call('XADD', KEYS[1], '*', 'r', string.sub(m, 1, a - 1), 's', string.sub(m, a + 1, b - 1), 't', string.sub(m, b + 1))
  end
  redis.call('ZREM', KEYS[2], m)
end
return #due
