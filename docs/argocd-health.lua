-- Argo CD health check for ftpoperator.dev/FtpServer.
-- Install: docs/argocd.md (argocd-cm key resource.customizations.health.ftpoperator.dev_FtpServer).
-- It follows the same rules as kstatus (Flux, Helm --wait), in the same order:
--   status not yet written, or written for an older generation  -> Progressing
--   Stalled=True (the spec or a referenced Secret must be fixed) -> Degraded, with its message
--   Reconciling=True                                             -> Progressing
--   Ready=True                                                   -> Healthy
--   anything else (Ready=False/Unknown)                          -> Progressing
-- Argo CD runs health scripts with only Lua's base, table and package libraries (no string, no
-- math): build messages with `..` and tostring.
local hs = {}

local function find_condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == type then
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition ~= nil and condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "FtpServer is being deleted"
  return hs
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the FtpServer"
  return hs
end
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (it has seen " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local stalled = find_condition(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "FtpServer is stalled")
  return hs
end

local reconciling = find_condition(status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "FtpServer is being reconciled")
  return hs
end

local ready = find_condition(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  local address = status.publicAddress or "no public address yet"
  hs.message = "Ready at " .. tostring(address) .. ", passive ports " .. tostring(status.passivePorts or "-") ..
    ", " .. tostring(status.readyReplicas or 0) .. " replica(s) ready"
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the FtpServer to become Ready")
return hs
