-- Retry from failure: a Failed (or Cancelled, e.g. for its deadline) run goes back to Running. Its Failed and Skipped steps start
-- over (attempts from 0, error cleared); Succeeded steps and their outputs stay. Each reset
-- step's counter holds its dependencies that are not Succeeded; those at 0 are Ready.
-- Returns {'missing'} | {'not-failed', phase} | {'retried', pool, n_reset, ready ids...}.
local phase = mget('phase')
if not phase then return {'missing'} end
if phase ~= 'Failed' and phase ~= 'Cancelled' then return {'not-failed', phase} end
local now = now_ms()
local ids = split(mget('ids'))
local reset, is_reset, succeeded = {}, {}, {}
for _, id in ipairs(ids) do
  local p = sget(id, 'phase')
  if p == 'Failed' or p == 'Skipped' then
    reset[#reset + 1] = id
    is_reset[id] = true
  elseif p == 'Succeeded' then
    succeeded[id] = true
  end
end
local left = {}
for _, id in ipairs(ids) do
  if not succeeded[id] then
    for _, c in ipairs(split(sget(id, 'children'))) do
      if is_reset[c] then left[c] = (left[c] or 0) + 1 end
    end
  end
end
local ready = {'retried', mget('pool'), tostring(#reset)}
for _, id in ipairs(reset) do
  local n = left[id] or 0
  local p = 'Pending'
  if n == 0 then p = 'Ready'; ready[#ready + 1] = id .. '|' .. (sget(id, 'tool') or '') end
  redis.call('HDEL', STEPS, id .. ':error', id .. ':due', id .. ':owner', id .. ':entry',
    id .. ':finished', id .. ':started', id .. ':astart')
  redis.call('HDEL', OUT, id)
  sset(id, 'phase', p, 'attempt', 0, 'enq', now)
  redis.call('HSET', DEPS, id, n)
  event('step', id, p, '')
end
redis.call('HINCRBY', META, 'done', -#reset)
redis.call('HSET', META, 'phase', 'Running', 'failed', '0', 'cancel', '0', 'retried', now)
redis.call('HDEL', META, 'first_failure', 'finished')
for _, k in ipairs(KEYS) do redis.call('PERSIST', k) end
event('run', '', 'Running', '')
settle(now)
return ready
