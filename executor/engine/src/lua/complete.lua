-- Records attempts' outcomes, each only if its owner and attempt still hold the step.
-- ARGV: per completion: id, owner, attempt, outcome ('ok' | 'err'), payload,
--       retryable ('1'|'0'), backoff_ms.
-- Returns one reply per completion, in order: {'accepted', run_phase, retry_due, tool, ready...},
-- or {'stale', holds} where holds is '1' when the entry still belongs to another live attempt
-- (the caller must not acknowledge it then). A worker sends every completion of a run that is
-- waiting in one call; this script is the hot path, so each redis.call counts.
local now = now_ms()
local replies, accepted = {}, {}
for i = 1, #ARGV - 6, 7 do
  local id, owner, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local p = id .. ':'
  local f = redis.call('HMGET', STEPS, p .. 'phase', p .. 'owner', p .. 'attempt', p .. 'tool',
    p .. 'children', p .. 'error')
  if f[1] ~= 'Running' or f[2] ~= owner or f[3] ~= attempt then
    local holds = '0'
    if f[1] == 'Running' then holds = '1' end
    replies[#replies + 1] = {'stale', holds}
  else
    local ready, due = finish(id, ARGV[i + 3] == 'ok', ARGV[i + 4], ARGV[i + 5] == '1',
      tonumber(ARGV[i + 6]) or 0, now, {f[5], f[3], f[6]})
    local r = {'accepted', '', tostring(due), f[4] or ''}
    for _, c in ipairs(ready) do r[#r + 1] = c end
    replies[#replies + 1] = r
    accepted[#accepted + 1] = r
  end
end
-- One settle per batch: a run ends only with its last step, so every accepted completion
-- reports the phase after the whole batch.
if #accepted > 0 then
  local phase = settle(now)
  for _, r in ipairs(accepted) do r[2] = phase end
end
return replies
