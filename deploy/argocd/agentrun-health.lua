-- Argo CD health of a crane.dev/v1alpha1 AgentRun, from status.phase (see README.md here).
-- Pending/Planning/Running -> Progressing, Succeeded -> Healthy, Failed -> Degraded,
-- Cancelled -> Suspended (stopped on purpose through spec.cancel, not a fault).
local hs = {status = "Progressing", message = "Waiting for the operator to pick up the run"}
local function str(v)
  if type(v) == "string" then return v end
  return nil
end
if type(obj) ~= "table" then
  return {status = "Unknown", message = "no object"}
end
local status = obj.status
if type(status) ~= "table" then
  return hs
end
local meta = type(obj.metadata) == "table" and obj.metadata or {}
if type(meta.generation) == "number" and type(status.observedGeneration) == "number"
    and status.observedGeneration < meta.generation then
  return {status = "Progressing", message = "The operator has not seen the latest spec yet"}
end
local phase = str(status.phase)
local progress = str(status.progress)
local steps = progress and (" (steps " .. progress .. ")") or ""
if phase == nil then
  return hs
elseif phase == "Pending" then
  return {status = "Progressing", message = "Pending" .. steps}
elseif phase == "Planning" then
  return {status = "Progressing", message = "Planning the prompt"}
elseif phase == "Running" then
  return {status = "Progressing", message = "Running" .. steps}
elseif phase == "Succeeded" then
  return {status = "Healthy", message = "Succeeded" .. steps}
elseif phase == "Failed" then
  return {status = "Degraded", message = str(status.error) or ("Failed" .. steps)}
elseif phase == "Cancelled" then
  return {status = "Suspended", message = "Cancelled" .. steps}
end
return {status = "Unknown", message = "Unknown phase " .. string.sub(phase, 1, 64)}
