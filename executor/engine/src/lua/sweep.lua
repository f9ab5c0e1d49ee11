-- Finds steps that should be in the pool queue but may not be (a crash between the run-slot
-- write and the pool-slot write, or Redis losing the last second of writes).
-- ARGV: threshold_ms, lease_ms. Returns {'gone'} | {'done'} | {'active', id...}.
local phase = mget('phase')
if not phase then return {'gone'} end
if is_terminal_run(phase) then return {'done'} end
local now = now_ms()
local threshold, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local timeout = tonumber(mget('timeout_ms')) or 30000
local r = {'active'}
for _, id in ipairs(split(mget('ids'))) do
  local p = sget(id, 'phase')
  if p == 'Ready' then
    -- A step made Ready at creation has no `enq`: it was queued when the run was created.
    local enq = tonumber(sget(id, 'enq')) or tonumber(mget('created')) or 0
    if enq + threshold <= now then
      sset(id, 'enq', now)
      r[#r + 1] = id .. '|' .. (sget(id, 'tool') or '')
    end
  elseif p == 'Pending' then
    local due = tonumber(sget(id, 'due'))
    if due ~= nil and due + threshold <= now then r[#r + 1] = id .. '|' .. (sget(id, 'tool') or '') end
  elseif p == 'Running' then
    -- No attempt outlives its timeout; one far past it lost its worker and its queue entry.
    if (tonumber(sget(id, 'astart')) or now) + timeout + 2 * lease + threshold <= now then
      local attempt = tonumber(sget(id, 'attempt')) or 0
      if attempt >= (tonumber(mget('max_attempts')) or 1) then
        local ready = finish(id, false,
          'worker lost while running the step after ' .. attempt .. ' attempts', false, 0, now)
        for _, c in ipairs(ready) do r[#r + 1] = c end
      else
        sset(id, 'phase', 'Ready', 'enq', now)
        redis.call('HDEL', STEPS, id .. ':owner', id .. ':entry')
        event('reclaim', id, 'Ready', attempt)
        r[#r + 1] = id .. '|' .. (sget(id, 'tool') or '')
      end
    end
  end
end
settle(now)
return r
