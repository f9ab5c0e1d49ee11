-- A step given back without counting the attempt: by a draining worker, or one that may not
-- call its model yet (ARGV[4], optional: why it waits, shown until it starts again).
-- ARGV: id, owner, attempt, why. Returns {'released'} | {'stale'} (the attempt no longer holds it).
local id, owner, attempt = ARGV[1], ARGV[2], ARGV[3]
if sget(id, 'phase') ~= 'Running' or sget(id, 'owner') ~= owner or sget(id, 'attempt') ~= attempt then
  return {'stale'}
end
local now = now_ms()
sset(id, 'phase', 'Ready', 'attempt', tonumber(attempt) - 1, 'enq', now)
redis.call('HDEL', STEPS, id .. ':owner', id .. ':entry')
if ARGV[4] and ARGV[4] ~= '' then sset(id, 'wait', ARGV[4]) end
event('release', id, 'Ready', attempt)
return {'released'}
