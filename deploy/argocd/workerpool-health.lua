-- Argo CD health of a crane.dev/v1alpha1 WorkerPool, from its Ready condition and breakers
-- (see README.md here). Ready=True -> Healthy, or Degraded while a tool's circuit breaker is
-- Open; Ready=False -> Suspended for NoWorkersAllowed (maxWorkers 0), else Degraded;
-- no Ready condition yet, or a stale observedGeneration -> Progressing.
if type(obj) ~= "table" then
  return {status = "Unknown", message = "no object"}
end
local status = obj.status
if type(status) ~= "table" then
  return {status = "Progressing", message = "Waiting for the operator to pick up the pool"}
end
local meta = type(obj.metadata) == "table" and obj.metadata or {}
if type(meta.generation) == "number" and type(status.observedGeneration) == "number"
    and status.observedGeneration < meta.generation then
  return {status = "Progressing", message = "The operator has not seen the latest spec yet"}
end
local ready = nil
if type(status.conditions) == "table" then
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == "Ready" then ready = c end
  end
end
if ready == nil then
  return {status = "Progressing", message = "Waiting for the pool's Ready condition"}
end
local message = type(ready.message) == "string" and ready.message or ""
if ready.status == "True" then
  if type(status.breakers) == "table" then
    for _, b in ipairs(status.breakers) do
      if type(b) == "table" and b.state == "Open" and type(b.tool) == "string" then
        return {status = "Degraded", message = "Circuit breaker open for tool " .. b.tool}
      end
    end
  end
  return {status = "Healthy", message = message}
elseif ready.status == "False" then
  if ready.reason == "NoWorkersAllowed" then
    return {status = "Suspended", message = message}
  end
  return {status = "Degraded", message = message}
end
return {status = "Progressing", message = message}
