-- Where a stream is, for a follower: {exists (1|0), last-generated-id, id of the oldest entry
-- ('' when empty)}. KEYS: the stream. Read-only; a missing stream is {0, '', ''}, not an
-- error, so this can share a pipeline with the follower's XREAD. Sent with EVAL (Redis caches
-- it after the first call).
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if not ok then return {0, '', ''} end
local r = {1, '', ''}
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then r[2] = info[i + 1]
  elseif info[i] == 'first-entry' and type(info[i + 1]) == 'table' then r[3] = info[i + 1][1] end
end
return r
