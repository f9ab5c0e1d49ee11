-- Tests the health checks against sample statuses, as Argo CD runs them: each script is a
-- chunk with the object in the global `obj` and only a few safe globals.
-- Run: lua5.4 deploy/argocd/health_test.lua   (prints `N passed, M failed`; exit 1 on failure)
local dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "."
local passed, failed = 0, 0

local function run(file, object)
  local f = assert(io.open(dir .. "/" .. file, "r"))
  local src = f:read("a")
  f:close()
  local env = {obj = object, type = type, pairs = pairs, ipairs = ipairs, tostring = tostring,
               string = string, table = table}
  local chunk, err = load(src, file, "t", env)
  if not chunk then error(err) end
  return chunk()
end

local function check(file, name, object, want, want_msg)
  local ok, hs = pcall(run, file, object)
  if ok and type(hs) == "table" and hs.status == want
      and (want_msg == nil or (type(hs.message) == "string" and hs.message:find(want_msg, 1, true))) then
    passed = passed + 1
  else
    failed = failed + 1
    print(string.format("FAIL %s %s: want %s%s, got %s", file, name, want,
      want_msg and (" with message containing '" .. want_msg .. "'") or "",
      ok and (type(hs) == "table" and (tostring(hs.status) .. " '" .. tostring(hs.message) .. "'") or tostring(hs)) or ("error: " .. tostring(hs))))
  end
end

local function run_obj(phase, extra)
  local status = {phase = phase}
  for k, v in pairs(extra or {}) do status[k] = v end
  return {apiVersion = "crane.dev/v1alpha1", kind = "AgentRun",
          metadata = {name = "milk", generation = 1}, status = status}
end

local ar = "agentrun-health.lua"
check(ar, "no status", {metadata = {name = "x"}}, "Progressing")
check(ar, "empty status", {status = {}}, "Progressing")
check(ar, "Pending", run_obj("Pending"), "Progressing", "Pending")
check(ar, "Planning", run_obj("Planning"), "Progressing", "Planning")
check(ar, "Running", run_obj("Running", {progress = "1/2"}), "Progressing", "1/2")
check(ar, "Succeeded", run_obj("Succeeded", {progress = "2/2", result = {1, 2}}), "Healthy")
check(ar, "Failed", run_obj("Failed", {error = "step 2 failed: division by zero"}), "Degraded",
  "division by zero")
check(ar, "Failed without error", run_obj("Failed"), "Degraded", "Failed")
check(ar, "Cancelled", run_obj("Cancelled"), "Suspended")
check(ar, "stale generation",
  {metadata = {generation = 2}, status = {phase = "Succeeded", observedGeneration = 1}}, "Progressing")
-- Hostile or malformed statuses never raise; they read as Progressing or Unknown.
check(ar, "unknown phase", run_obj("Exploded"), "Unknown", "Exploded")
check(ar, "numeric phase", run_obj(42), "Progressing")
check(ar, "status is a string", {status = "Running"}, "Progressing")
check(ar, "huge phase", run_obj(string.rep("x", 100000)), "Unknown")
check(ar, "progress is a table", run_obj("Running", {progress = {}}), "Progressing", "Running")
check(ar, "error is a number", run_obj("Failed", {error = 7}), "Degraded")
check(ar, "nil object", nil, "Unknown")

local function pool(conditions, extra)
  local status = {conditions = conditions}
  for k, v in pairs(extra or {}) do status[k] = v end
  return {kind = "WorkerPool", metadata = {generation = 3}, status = status}
end
local ready = function(s, reason, msg)
  return {{type = "Ready", status = s, reason = reason, message = msg or reason}}
end
local wp = "workerpool-health.lua"
check(wp, "no status", {metadata = {}}, "Progressing")
check(wp, "no conditions", pool(nil), "Progressing")
check(wp, "Ready idle", pool(ready("True", "Idle")), "Healthy")
check(wp, "Ready active", pool(ready("True", "WorkersActive", "2 workers")), "Healthy", "2 workers")
check(wp, "breaker open", pool(ready("True", "WorkersActive"),
  {breakers = {{tool = "calculator", state = "Closed"}, {tool = "todo_store.add", state = "Open"}}}),
  "Degraded", "todo_store.add")
check(wp, "breaker half-open", pool(ready("True", "Idle"), {breakers = {{tool = "wait", state = "HalfOpen"}}}),
  "Healthy")
check(wp, "redis down", pool(ready("False", "RedisUnavailable", "connection refused")), "Degraded",
  "connection refused")
check(wp, "invalid spec", pool(ready("False", "InvalidSpec")), "Degraded")
check(wp, "max 0", pool(ready("False", "NoWorkersAllowed")), "Suspended")
check(wp, "unknown status", pool(ready("Unknown", "Starting")), "Progressing")
check(wp, "other condition only", pool({{type = "Scaled", status = "True"}}), "Progressing")
check(wp, "stale generation", pool(ready("True", "Idle"), {observedGeneration = 2}), "Progressing")
check(wp, "conditions is a string", pool("Ready"), "Progressing")
check(wp, "condition entries junk", pool({1, "x", {type = "Ready", status = "True"}}), "Healthy")
check(wp, "breakers junk", pool(ready("True", "Idle"), {breakers = {"Open", {state = "Open"}}}), "Healthy")
check(wp, "nil object", nil, "Unknown")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
