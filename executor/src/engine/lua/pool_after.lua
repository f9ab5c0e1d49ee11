-- Pool-slot half of every state change: acknowledge the hint that was handled, enqueue the
-- steps that became ready, park a retry (or a step waiting for its breaker) in the delayed
-- set, track active runs for the sweeper, and update the tool's circuit breaker.
-- KEYS: queue, delayed, runs, breakers.
-- ARGV: ack, run, delay_due, delay_step, tool, outcome ('ok'|'fail'|''), fail_threshold,
--       cooldown_ms, success_threshold, run_done ('1'|'0'), ready ids...
-- Returns {state, remaining_open_ms} of the tool's breaker ({} when no tool given).
local QUEUE, DELAYED, RUNS, BREAKERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ack, run, delay_due, delay_step, tool, outcome = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
if ack ~= '' then
  redis.call('XACK', QUEUE, 'workers', ack)
  -- Handled entries are deleted so XLEN is exactly the queue depth (waiting + running).
  redis.call('XDEL', QUEUE, ack)
end
-- Ready entries are `step|tool`; the tool travels in the hint so workers can consult its
-- breaker before starting anything.
for i = 11, #ARGV do
  local sep = string.find(ARGV[i], '|', 1, true) or (#ARGV[i] + 1)
  redis.call('XADD', QUEUE, '*', 'r', run, 's', string.sub(ARGV[i], 1, sep - 1), 't', string.sub(ARGV[i], sep + 1))
end
if delay_due and delay_due > 0 then redis.call('ZADD', DELAYED, delay_due, run .. '|' .. delay_step) end
if ARGV[10] == '1' then redis.call('SREM', RUNS, run)
elseif #ARGV >= 11 then redis.call('SADD', RUNS, run) end
if tool == '' then return {} end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local thr, cool, need = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
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
return {state, remaining}
