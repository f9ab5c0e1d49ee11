-- A person's decision (or a timeout's) on a step waiting for approval.
-- ARGV: id, decision ('approve'|'reject'), payload: the output of an `approval` step when
--       approved, the step's error when rejected.
-- An approved `approval` step succeeds with the payload; an approved gated tool step becomes
-- Ready with `approved` set, so its next attempt runs the tool without asking again; a
-- rejected step fails for good and the run follows its failure policy.
-- Returns {'stale', phase} when the step does not wait (decided before, skipped, unknown),
-- else {'decided', run_phase, ready...} with the steps to queue as `step|tool`.
local id, decision, payload = ARGV[1], ARGV[2], ARGV[3]
local p = sget(id, 'phase')
if p ~= 'WaitingForApproval' then return {'stale', p or ''} end
local now = now_ms()
local tool = sget(id, 'tool') or ''
local ready = {}
if decision == 'approve' and tool ~= 'approval' then
  sset(id, 'phase', 'Ready', 'approved', '1', 'enq', now)
  event('approve', id, 'Ready', '')
  ready[1] = id .. '|' .. tool
else
  -- The decision is the step's one attempt.
  sset(id, 'attempt', (tonumber(sget(id, 'attempt')) or 0) + 1)
  ready = finish(id, decision == 'approve', payload, false, 0, now)
end
local r = {'decided', settle(now)}
for _, c in ipairs(ready) do r[#r + 1] = c end
return r
