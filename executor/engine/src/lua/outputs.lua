-- A run's step outputs, bounded: {id, size, text, ...} for every stored output, where text is
-- the whole output when it is at most ARGV[1] bytes (ARGV[2] for the steps listed in ARGV[3],
-- comma-separated: the final steps, whose outputs make the run's result) and its first bytes
-- otherwise. KEYS: the run's outputs hash. Read-only; sent with EVAL (Redis caches it), so the
-- reader never holds more than the bounds whatever the tools produced.
local small, large = tonumber(ARGV[1]), tonumber(ARGV[2])
local sinks = {}
for id in string.gmatch(ARGV[3], '[^,]+') do sinks[id] = true end
local r = {}
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  local v = redis.call('HGET', KEYS[1], id)
  local max = small
  if sinks[id] then max = large end
  r[#r + 1] = id
  r[#r + 1] = #v
  if #v > max then v = string.sub(v, 1, max) end
  r[#r + 1] = v
end
return r
