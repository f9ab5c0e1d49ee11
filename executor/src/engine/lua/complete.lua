-- Records attempts' outcomes, each only if its owner and attempt still hold the step.
-- ARGV: per completion: id, owner, attempt, outcome ('ok' | 'err'), payload,
--       retryable ('1'|'0'), backoff_ms.
-- Returns one reply per completion, in order: finish_reply, or {'stale', holds} where holds is
-- '1' when the entry still belongs to another live attempt (the caller must not acknowledge it
-- then). A worker sends every completion of a run that is waiting in one call.
local now = now_ms()

local function complete(id, owner, attempt, outcome, payload, retryable, backoff)
  local f = redis.call('HMGET', STEPS, id .. ':phase', id .. ':owner', id .. ':attempt')
  local phase = f[1]
  if not phase or phase ~= 'Running' or f[2] ~= owner or f[3] ~= attempt then
    local holds = '0'
    if phase == 'Running' then holds = '1' end
    return {'stale', holds}
  end
  local ready, due = finish(id, outcome == 'ok', payload, retryable == '1', tonumber(backoff) or 0, now)
  return finish_reply('accepted', id, ready, due, now)
end

local replies = {}
for i = 1, #ARGV - 6, 7 do
  replies[#replies + 1] = complete(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    ARGV[i + 5], ARGV[i + 6])
end
return replies
