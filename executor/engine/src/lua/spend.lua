-- A run's budget, checked by every worker before it sends a call (the run's slot is the only
-- place the run's spending lives, so the check and the count are one atomic step).
-- ARGV: op, id, then for 'reserve': kind ('llm'|'tool'), max_calls, max_tokens (-1: no
--       limit), estimate (tokens the call may use), planner_tokens, planner_calls;
--       for 'settle': prompt_tokens, completion_tokens.
-- 'reserve' replies {'ok'} or {'exceeded', limit, message} (and notes the limit in the run's
-- metadata); 'settle' records what the provider counted and frees the step's reservation.
-- A step's reservation is a field of its own: an attempt that died mid-call is replaced by
-- the next attempt's, so nothing leaks.
local op, id = ARGV[1], ARGV[2]

local function free(step)
  local prev = tonumber(sget(step, 'resv') or '0')
  if prev > 0 then
    redis.call('HINCRBY', META, 'tokens_resv', -prev)
    redis.call('HDEL', STEPS, step .. ':resv')
  end
end

if op == 'settle' then
  local p, c = tonumber(ARGV[3]), tonumber(ARGV[4])
  free(id)
  redis.call('HINCRBY', META, 'prompt_tokens', p)
  redis.call('HINCRBY', META, 'completion_tokens', c)
  redis.call('HINCRBY', STEPS, id .. ':pt', p)
  redis.call('HINCRBY', STEPS, id .. ':ct', c)
  return {'ok'}
end

local kind = ARGV[3]
local max_calls, max_tokens = tonumber(ARGV[4]), tonumber(ARGV[5])
local estimate, planner_tokens, planner_calls = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local calls_field, calls_limit = 'tool_calls', 'maxToolCalls'
if kind == 'llm' then calls_field, calls_limit = 'llm_calls', 'maxLlmCalls' end

local function exceeded(limit, message)
  redis.call('HSETNX', META, 'budget_exceeded', limit)
  return {'exceeded', limit, message}
end

local calls = tonumber(redis.call('HGET', META, calls_field) or '0')
if kind == 'llm' then calls = calls + planner_calls end
if max_calls >= 0 and calls >= max_calls then
  return exceeded(calls_limit, string.format('budget exceeded: %s is %d and %d calls were made', calls_limit, max_calls, calls))
end
if kind == 'llm' then
  free(id)
  if max_tokens >= 0 then
    local m = redis.call('HMGET', META, 'prompt_tokens', 'completion_tokens', 'tokens_resv')
    local used = (tonumber(m[1]) or 0) + (tonumber(m[2]) or 0) + planner_tokens
    local held = tonumber(m[3]) or 0
    if used + held + estimate > max_tokens then
      return exceeded('maxTokens', string.format(
        'budget exceeded: maxTokens is %d; %d tokens were used, %d are held by calls in flight and this call may use up to %d',
        max_tokens, used, held, estimate))
    end
  end
  redis.call('HINCRBY', META, 'tokens_resv', estimate)
  sset(id, 'resv', estimate)
end
redis.call('HINCRBY', META, calls_field, 1)
return {'ok'}
