-- Records an attempt's outcome, only if this owner and attempt still hold the step.
-- ARGV: id, owner, attempt, outcome ('ok' | 'err'), payload, retryable ('1'|'0'), backoff_ms.
-- Returns finish_reply, or {'stale', holds} where holds is '1' when the entry still belongs to
-- another live attempt (the caller must not acknowledge it then).
local id, owner, attempt = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', STEPS, id .. ':phase', id .. ':owner', id .. ':attempt')
local phase = f[1]
if not phase or phase ~= 'Running' or f[2] ~= owner or f[3] ~= attempt then
  local holds = '0'
  if phase == 'Running' then holds = '1' end
  return {'stale', holds}
end
local now = now_ms()
local ready, due = finish(id, ARGV[4] == 'ok', ARGV[5], ARGV[6] == '1', tonumber(ARGV[7]) or 0, now)
return finish_reply('accepted', id, ready, due, now)
