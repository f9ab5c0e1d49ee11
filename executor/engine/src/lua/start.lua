-- A worker took hints from the pool stream: accepts each step only if it may start now.
-- ARGV: mode ('new' | 'reclaim'), then per hint: id, owner, entry.
-- Returns one reply per hint, in order: {'ok', attempt, spec, namespace, options, ref1, out1, ...}
--   | {'drop', why} | finish_reply (when a reclaim exhausted the attempts).
-- One call takes a worker's whole batch for this run, so the fixed cost of a script call is
-- paid once per batch rather than once per step; this is the hot path, so each redis.call
-- counts: the run's metadata is read once per batch (again only after a step finished here).
local mode = ARGV[1]
local now = now_ms()
local m
local function read_meta()
  m = redis.call('HMGET', META, 'phase', 'cancel', 'failed', 'policy', 'max_attempts', 'namespace', 'options')
end
read_meta()

local function start(id, owner, entry)
  if not m[1] then return {'drop', 'no such run'} end
  if is_terminal_run(m[1]) then return {'drop', 'run finished'} end
  local p = id .. ':'
  local s = redis.call('HMGET', STEPS, p .. 'phase', p .. 'attempt', p .. 'due', p .. 'entry',
    p .. 'started', p .. 'spec', p .. 'refs', p .. 'wait')
  local phase = s[1]
  if not phase then return {'drop', 'no such step'} end
  local attempt = tonumber(s[2]) or 0
  local due = tonumber(s[3])
  local startable = false
  if phase == 'Ready' then
    startable = due == nil or due <= now
  elseif phase == 'Pending' then
    startable = due ~= nil and due <= now
  end
  if phase == 'Running' and mode == 'reclaim' and s[4] == entry then
    -- The owner stopped heartbeating for a whole lease: that attempt is lost and counts.
    if attempt >= (tonumber(m[5]) or 1) then
      local ready, rdue = finish(id, false,
        'worker lost while running the step (lease expired) after ' .. attempt .. ' attempts',
        false, 0, now)
      local r = finish_reply('finished', id, ready, rdue, now)
      read_meta()
      return r
    end
    event('reclaim', id, 'Running', attempt)
    startable = true
  end
  if not startable then return {'drop', 'step is ' .. phase} end
  if m[2] == '1' or (m[3] == '1' and m[4] == 'FailFast') then return {'drop', 'run stopped'} end
  attempt = attempt + 1
  if s[5] then
    redis.call('HSET', STEPS, p .. 'phase', 'Running', p .. 'attempt', attempt, p .. 'owner', owner,
      p .. 'entry', entry, p .. 'astart', now)
  else
    redis.call('HSET', STEPS, p .. 'phase', 'Running', p .. 'attempt', attempt, p .. 'owner', owner,
      p .. 'entry', entry, p .. 'astart', now, p .. 'started', now)
  end
  -- 'wait' says why a step that could run waits (an open breaker): no longer so.
  if due or s[8] then redis.call('HDEL', STEPS, p .. 'due', p .. 'wait') end
  event('step', id, 'Running', attempt)
  local r = {'ok', attempt, s[6], m[6], m[7]}
  local refs = split(s[7])
  if #refs > 0 then
    local outs = redis.call('HMGET', OUT, unpack(refs))
    for i, ref in ipairs(refs) do
      if outs[i] then r[#r + 1] = ref; r[#r + 1] = outs[i] end
    end
  end
  return r
end

local replies = {}
for i = 2, #ARGV - 2, 3 do
  replies[#replies + 1] = start(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return replies
