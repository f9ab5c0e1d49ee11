-- Queue depth of one pool: {stream length (waiting + running), pending (running), delayed}.
-- KEYS: queue, delayed. ARGV: consumer group. A missing group (Redis lost its data) counts as
-- nothing running.
local len = redis.call('XLEN', KEYS[1])
local pending = 0
if len > 0 then
  local ok, r = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
  if ok then pending = r[1] end
end
return {len, pending, redis.call('ZCARD', KEYS[2])}
