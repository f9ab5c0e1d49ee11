-- A step that waits for a person: an `approval` step, or a step of a tool that requires
-- approval before each call. The attempt is given back (waiting is not trying) and the gate —
-- what the approver is shown — is kept with the step until someone decides (`decide`).
-- ARGV: id, owner, attempt, gate (JSON). Returns {'waiting'} | {'stale'}.
local id, owner, attempt = ARGV[1], ARGV[2], ARGV[3]
if sget(id, 'phase') ~= 'Running' or sget(id, 'owner') ~= owner or sget(id, 'attempt') ~= attempt then
  return {'stale'}
end
local now = now_ms()
sset(id, 'phase', 'WaitingForApproval', 'attempt', tonumber(attempt) - 1, 'gate', ARGV[4], 'gated', now)
redis.call('HDEL', STEPS, id .. ':owner', id .. ':entry')
event('gate', id, 'WaitingForApproval', attempt)
return {'waiting'}
