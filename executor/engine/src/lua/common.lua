-- Shared prelude of every run-slot script. KEYS: meta, steps, deps, out, events (one hash slot).
-- The DAG rules here mirror crane_core::dag; change both together: the property test
-- tests/dag_rules_match.rs compares them action by action, and the shared scenario suite runs
-- against both engines.
local META, STEPS, DEPS, OUT, EVENTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function sget(id, f) return redis.call('HGET', STEPS, id .. ':' .. f) end
local function sset(id, ...)
  local args = {...}
  local flat = {}
  for i = 1, #args, 2 do
    flat[#flat + 1] = id .. ':' .. args[i]
    flat[#flat + 1] = args[i + 1]
  end
  redis.call('HSET', STEPS, unpack(flat))
end

local function split(s)
  local r = {}
  if s and s ~= '' then
    for x in string.gmatch(s, '[^,]+') do r[#r + 1] = x end
  end
  return r
end

local function event(kind, id, phase, attempt)
  redis.call('XADD', EVENTS, 'MAXLEN', '~', '2000', '*',
    'type', kind, 'step', id or '', 'phase', phase or '', 'attempt', attempt or '')
end

local function mget(f) return redis.call('HGET', META, f) end

-- The run's done/succeeded counters are added up here and written once, by settle(), which
-- every script that ends steps calls before it returns: one HINCRBY per script, not per step.
local counts = {}
local function count(field)
  counts[field] = (counts[field] or 0) + 1
end
local function flush_counts()
  for field, n in pairs(counts) do redis.call('HINCRBY', META, field, n) end
  counts = {}
end

local function is_terminal_step(p) return p == 'Succeeded' or p == 'Failed' or p == 'Skipped' end
local function is_terminal_run(p) return p == 'Succeeded' or p == 'Failed' or p == 'Cancelled' end

-- No new step starts once the run is cancelled, or failed under FailFast.
local function stopped()
  if mget('cancel') == '1' then return true end
  return mget('failed') == '1' and mget('policy') == 'FailFast'
end

-- A step that succeeded keeps its owner field (harmless: only a Running step's owner is ever
-- compared) and has no due time (start clears it), so that hot path skips the HDEL.
local function mark_terminal(id, phase, now, attempt)
  local p = id .. ':'
  redis.call('HSET', STEPS, p .. 'phase', phase, p .. 'finished', now)
  if phase ~= 'Succeeded' then redis.call('HDEL', STEPS, p .. 'owner', p .. 'due') end
  count('done')
  event('step', id, phase, attempt or '')
end

-- Skips every step that can no longer start (FailFast stop or cancel). Running steps finish.
local function skip_all_waiting(now)
  for _, id in ipairs(split(mget('ids'))) do
    local p = sget(id, 'phase')
    if p == 'Pending' or p == 'Ready' or p == 'WaitingForApproval' then mark_terminal(id, 'Skipped', now) end
  end
end

-- ContinueIndependent: everything downstream of a failed step is skipped; the rest goes on.
local function skip_dependents(id, now)
  local queue = split(sget(id, 'children'))
  local seen = {}
  local i = 1
  while i <= #queue do
    local c = queue[i]
    i = i + 1
    if not seen[c] then
      seen[c] = true
      local p = sget(c, 'phase')
      if p == 'Pending' or p == 'Ready' or p == 'WaitingForApproval' then mark_terminal(c, 'Skipped', now) end
      for _, g in ipairs(split(sget(c, 'children'))) do queue[#queue + 1] = g end
    end
  end
end

-- Decides the run's phase once every step is terminal, and arms the TTL.
local function settle(now)
  flush_counts()
  local m = redis.call('HMGET', META, 'phase', 'done', 'total', 'succeeded', 'cancel')
  local phase = m[1]
  if is_terminal_run(phase) then return phase end
  if tonumber(m[2]) < tonumber(m[3]) then return phase end
  if tonumber(m[4]) == tonumber(m[3]) then phase = 'Succeeded'
  elseif m[5] == '1' then phase = 'Cancelled'
  else phase = 'Failed' end
  redis.call('HSET', META, 'phase', phase, 'finished', now)
  event('run', '', phase, '')
  local ttl = tonumber(mget('ttl_ms')) or 86400000
  for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ttl) end
  return phase
end

-- Records the end of one attempt. Returns ready (ids newly runnable) and retry_due (0 or ms).
-- `f` is the step's {children, attempt, error} when the caller has read them already.
local function finish(id, ok, payload, retryable, backoff, now, f)
  local ready = {}
  local retry_due = 0
  f = f or redis.call('HMGET', STEPS, id .. ':children', id .. ':attempt', id .. ':error')
  if ok then
    -- A run's outputs are bounded in all (each one is bounded by the worker): the output that
    -- would cross the limit fails its step instead of filling Redis.
    local total = redis.call('HINCRBY', META, 'out_bytes', #payload)
    if total > MAX_RUN_OUTPUT_BYTES then
      redis.call('HINCRBY', META, 'out_bytes', -#payload)
      ok, retryable = false, false
      payload = "the run's step outputs would reach " .. total .. ' bytes with this one (' ..
        #payload .. ' bytes); a run\'s outputs may be at most ' .. MAX_RUN_OUTPUT_BYTES ..
        ' bytes (16 MiB) in all'
    end
  end
  if ok then
    redis.call('HSET', OUT, id, payload)
    if f[3] then redis.call('HDEL', STEPS, id .. ':error') end
    mark_terminal(id, 'Succeeded', now, f[2])
    count('succeeded')
    local children = split(f[1])
    local halted = #children > 0 and stopped()
    for _, c in ipairs(children) do
      local left = redis.call('HINCRBY', DEPS, c, -1)
      if left <= 0 then
        local cs = redis.call('HMGET', STEPS, c .. ':phase', c .. ':tool')
        if cs[1] == 'Pending' then
          if halted then
            mark_terminal(c, 'Skipped', now)
          else
            sset(c, 'phase', 'Ready', 'enq', now)
            ready[#ready + 1] = c .. '|' .. (cs[2] or '')
          end
        end
      end
    end
  else
    local attempt = tonumber(f[2]) or 0
    local max = tonumber(mget('max_attempts')) or 1
    sset(id, 'error', payload)
    if retryable and attempt < max and not stopped() then
      retry_due = now + backoff
      sset(id, 'phase', 'Pending', 'due', retry_due)
      redis.call('HDEL', STEPS, id .. ':owner')
      event('retry', id, 'Pending', attempt)
    else
      -- A model call's reservation ends with its step (a worker that died mid-call left it).
      local resv = sget(id, 'resv')
      if resv then
        redis.call('HINCRBY', META, 'tokens_resv', -tonumber(resv))
        redis.call('HDEL', STEPS, id .. ':resv')
      end
      mark_terminal(id, 'Failed', now, attempt)
      redis.call('HSET', META, 'failed', '1')
      redis.call('HSETNX', META, 'first_failure', id)
      if mget('policy') == 'FailFast' then skip_all_waiting(now) else skip_dependents(id, now) end
    end
  end
  return ready, retry_due
end

local function finish_reply(status, id, ready, retry_due, now)
  local phase = settle(now)
  local r = {status, phase, tostring(retry_due), sget(id, 'tool') or ''}
  for _, c in ipairs(ready) do r[#r + 1] = c end
  return r
end
