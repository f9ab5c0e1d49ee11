-- A draining worker gives a step back without counting the attempt.
-- ARGV: id, owner, attempt. Returns {'released'} | {'stale'} (the attempt no longer holds it).
local id, owner, attempt = ARGV[1], ARGV[2], ARGV[3]
if sget(id, 'phase') ~= 'Running' or sget(id, 'owner') ~= owner or sget(id, 'attempt') ~= attempt then
  return {'stale'}
end
local now = now_ms()
sset(id, 'phase', 'Ready', 'attempt', tonumber(attempt) - 1, 'enq', now)
redis.call('HDEL', STEPS, id .. ':owner', id .. ':entry')
event('release', id, 'Ready', attempt)
return {'released'}
