-- Creates a run: metadata, per-step state, dependency counters. Returns the ready step ids,
-- or {'exists'} when the run id is taken.
-- ARGV: namespace, pool, plan, options, ttl_ms, max_attempts, policy, timeout_ms, n,
--       then n x (id, tool, spec, children, ndeps, refs).
if redis.call('EXISTS', META) == 1 then return {'exists'} end
local now = now_ms()
local n = tonumber(ARGV[9])
local ids = {}
local ready = {'created'}
for i = 0, n - 1 do
  local b = 10 + i * 6
  local id, ndeps = ARGV[b], tonumber(ARGV[b + 4])
  ids[#ids + 1] = id
  local phase = 'Pending'
  if ndeps == 0 then phase = 'Ready'; ready[#ready + 1] = id .. '|' .. ARGV[b + 1] end
  sset(id, 'tool', ARGV[b + 1], 'spec', ARGV[b + 2], 'children', ARGV[b + 3], 'refs', ARGV[b + 5],
    'phase', phase, 'attempt', 0, 'enq', now)
  redis.call('HSET', DEPS, id, ndeps)
end
redis.call('HSET', META, 'namespace', ARGV[1], 'pool', ARGV[2], 'plan', ARGV[3], 'options', ARGV[4],
  'ttl_ms', ARGV[5], 'max_attempts', ARGV[6], 'policy', ARGV[7], 'timeout_ms', ARGV[8],
  'phase', 'Running', 'total', n, 'done', 0, 'succeeded', 0, 'failed', 0, 'cancel', 0, 'created', now,
  'ids', table.concat(ids, ','))
event('run', '', 'Running', '')
settle(now)
return ready
