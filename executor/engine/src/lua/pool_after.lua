-- Pool-slot half of state changes: acknowledge the hints that were handled, enqueue the steps
-- that became ready, park retries (or steps waiting for their breaker) in the delayed set,
-- track active runs for the sweeper, and update the tools' circuit breakers.
-- KEYS: queue, delayed, runs, breakers.
-- ARGV: fail_threshold, cooldown_ms, success_threshold, then one section per change:
--       ack, run, delay_due, delay_step, tool, outcome ('ok'|'fail'|''), run_done ('1'|'0'),
--       n_ready, then n_ready ready entries `step|tool`.
-- Returns {tool, state, remaining_open_ms} for each section that names a tool, flattened.
-- A worker sends a whole batch of changes (across runs: they are only values here) in one call.
local QUEUE, DELAYED, RUNS, BREAKERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local thr, cool, need = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function breaker(tool, outcome)
  local b = redis.call('HMGET', BREAKERS, tool .. ':state', tool .. ':opened', tool .. ':failures')
  local state = b[1] or 'closed'
  local opened = tonumber(b[2]) or 0
  if state == 'open' and opened + cool <= now then
    state = 'half_open'
    redis.call('HSET', BREAKERS, tool .. ':state', state, tool .. ':successes', 0)
  end
  if outcome == 'fail' then
    if state == 'half_open' then
      state, opened = 'open', now
      redis.call('HSET', BREAKERS, tool .. ':state', state, tool .. ':opened', now, tool .. ':failures', 0)
    elseif state == 'closed' then
      local f = redis.call('HINCRBY', BREAKERS, tool .. ':failures', 1)
      if f >= thr then
        state, opened = 'open', now
        redis.call('HSET', BREAKERS, tool .. ':state', state, tool .. ':opened', now, tool .. ':failures', 0)
      end
    end
  elseif outcome == 'ok' then
    if state == 'half_open' then
      local s = redis.call('HINCRBY', BREAKERS, tool .. ':successes', 1)
      if s >= need then
        state = 'closed'
        redis.call('HSET', BREAKERS, tool .. ':state', state, tool .. ':successes', 0, tool .. ':failures', 0)
      end
    elseif state == 'closed' and b[3] and b[3] ~= '0' then
      redis.call('HSET', BREAKERS, tool .. ':failures', 0)
    end
  end
  local remaining = 0
  if state == 'open' then remaining = math.max(0, opened + cool - now) end
  return state, remaining
end

local states = {}
local i = 4
while i + 7 <= #ARGV do
  local ack, run, delay_due, delay_step = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local tool, outcome, run_done, n = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], tonumber(ARGV[i + 7]) or 0
  if ack ~= '' then
    redis.call('XACK', QUEUE, 'workers', ack)
    -- Handled entries are deleted so XLEN is exactly the queue depth (waiting + running).
    redis.call('XDEL', QUEUE, ack)
  end
  -- The tool travels in the hint so workers can consult its breaker before starting anything.
  for j = i + 8, math.min(i + 7 + n, #ARGV) do
    local sep = string.find(ARGV[j], '|', 1, true) or (#ARGV[j] + 1)
    redis.call('XADD', QUEUE, '*', 'r', run, 's', string.sub(ARGV[j], 1, sep - 1), 't', string.sub(ARGV[j], sep + 1))
  end
  if delay_due and delay_due > 0 then redis.call('ZADD', DELAYED, delay_due, run .. '|' .. delay_step) end
  if run_done == '1' then redis.call('SREM', RUNS, run)
  elseif n > 0 then redis.call('SADD', RUNS, run) end
  if tool ~= '' then
    local state, remaining = breaker(tool, outcome)
    states[#states + 1] = tool
    states[#states + 1] = state
    states[#states + 1] = remaining
  end
  i = i + 8 + n
end
return states
