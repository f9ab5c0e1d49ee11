-- Creates a run: metadata, per-step state, dependency counters. Returns {'created', ready...},
-- or {'exists'} when the run id is taken.
-- ARGV: namespace, pool, plan, options, ttl_ms, max_attempts, policy, timeout_ms, n, ids (csv),
--       n_fields, n_counters, n_ready, then the step hash's field/value pairs (n_fields
--       entries), the counters' id/count pairs (n_counters entries) and the ready steps
--       `id|tool` (n_ready entries).
-- The caller builds every field name: string building in Lua is the slow part of a script.
if redis.call('EXISTS', META) == 1 then return {'exists'} end
local now = now_ms()
local nf, nc, nr = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])

-- HSET of ARGV[from..to] in chunks: unpack is bounded by Lua's stack.
local function hset_range(key, from, to)
  local i = from
  while i <= to do
    local j = math.min(i + 999, to)
    redis.call('HSET', key, unpack(ARGV, i, j))
    i = j + 1
  end
end

local b = 14
hset_range(STEPS, b, b + nf - 1)
b = b + nf
hset_range(DEPS, b, b + nc - 1)
b = b + nc
local ready = {'created'}
for i = b, b + nr - 1 do ready[#ready + 1] = ARGV[i] end
redis.call('HSET', META, 'namespace', ARGV[1], 'pool', ARGV[2], 'plan', ARGV[3], 'options', ARGV[4],
  'ttl_ms', ARGV[5], 'max_attempts', ARGV[6], 'policy', ARGV[7], 'timeout_ms', ARGV[8],
  'phase', 'Running', 'total', ARGV[9], 'done', 0, 'succeeded', 0, 'failed', 0, 'cancel', 0, 'created', now,
  'ids', ARGV[10])
event('run', '', 'Running', '')
settle(now)
return ready
