-- Every breaker of a pool: flat {tool, state, failures, successes, remaining_open_ms, ...}.
-- KEYS: breakers. ARGV: cooldown_ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cool = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local by = {}
local tools = {}
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local sep = string.find(f, ':[^:]*$')
  local tool, field = string.sub(f, 1, sep - 1), string.sub(f, sep + 1)
  if not by[tool] then by[tool] = {}; tools[#tools + 1] = tool end
  by[tool][field] = v
end
table.sort(tools)
local r = {}
for _, tool in ipairs(tools) do
  local b = by[tool]
  local state = b.state or 'closed'
  local remaining = 0
  if state == 'open' then
    remaining = (tonumber(b.opened) or 0) + cool - now
    if remaining <= 0 then state, remaining = 'half_open', 0 end
  end
  r[#r + 1] = tool; r[#r + 1] = state; r[#r + 1] = b.failures or '0'
  r[#r + 1] = b.successes or '0'; r[#r + 1] = remaining
end
return r
