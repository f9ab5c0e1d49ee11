-- Re-creates a run that Redis lost, from what the AgentRun status kept. Steps given as done
-- start Succeeded with their output, attempts and times; every other step starts Pending with
-- a counter of its not-done dependencies only, Ready when that is 0. Returns the ready step
-- ids like init.lua, or {'exists'} when the run id is taken (Redis came back with it).
-- ARGV: as init.lua (namespace, pool, plan, options, ttl_ms, max_attempts, policy,
--       timeout_ms, n), then n x (id, tool, spec, children, ndeps_left, refs, done ('1'|'0'),
--       attempts, output, started_ms, finished_ms); times may be '' (then now).
if redis.call('EXISTS', META) == 1 then return {'exists'} end
local now = now_ms()
local n = tonumber(ARGV[9])
local ids = {}
local ready = {'created'}
local done = 0
for i = 0, n - 1 do
  local b = 10 + i * 11
  local id, ndeps = ARGV[b], tonumber(ARGV[b + 4])
  ids[#ids + 1] = id
  if ARGV[b + 6] == '1' then
    local started = ARGV[b + 9]
    if started == '' then started = now end
    local finished = ARGV[b + 10]
    if finished == '' then finished = now end
    sset(id, 'tool', ARGV[b + 1], 'spec', ARGV[b + 2], 'children', ARGV[b + 3], 'refs', ARGV[b + 5],
      'phase', 'Succeeded', 'attempt', ARGV[b + 7], 'enq', now, 'started', started, 'finished', finished)
    redis.call('HSET', OUT, id, ARGV[b + 8])
    done = done + 1
  else
    local phase = 'Pending'
    if ndeps == 0 then phase = 'Ready'; ready[#ready + 1] = id .. '|' .. ARGV[b + 1] end
    sset(id, 'tool', ARGV[b + 1], 'spec', ARGV[b + 2], 'children', ARGV[b + 3], 'refs', ARGV[b + 5],
      'phase', phase, 'attempt', 0, 'enq', now)
  end
  redis.call('HSET', DEPS, id, ndeps)
end
redis.call('HSET', META, 'namespace', ARGV[1], 'pool', ARGV[2], 'plan', ARGV[3], 'options', ARGV[4],
  'ttl_ms', ARGV[5], 'max_attempts', ARGV[6], 'policy', ARGV[7], 'timeout_ms', ARGV[8],
  'phase', 'Running', 'total', n, 'done', done, 'succeeded', done, 'failed', 0, 'cancel', 0,
  'created', now, 'restored', now, 'ids', table.concat(ids, ','))
event('run', '', 'Running', '')
settle(now)
return ready
