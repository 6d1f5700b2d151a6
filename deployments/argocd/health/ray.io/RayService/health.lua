-- Argo CD health check for KubeRay's RayService (ray.io/v1), written against KubeRay 1.7's
-- status (ray-operator/controllers/ray/rayservice_controller.go, calculateConditions):
--   Ready              True once the Serve Service has endpoints (reason NonZeroServeEndpoints);
--                      False while Initializing, after ZeroServeEndpoints (it had some), and
--                      for two terminal failures KubeRay never retries: ValidationFailed and
--                      InitializingTimeout
--   UpgradeInProgress  True while a pending cluster (NewCluster upgrade) exists beside the active
--   RollbackInProgress, Suspending, Suspended
--   active/pendingServiceStatus.applicationStatuses  Serve's own application statuses:
--                      NOT_STARTED DEPLOYING RUNNING DEPLOY_FAILED DELETING UNHEALTHY
--   observedGeneration the spec generation KubeRay last computed this status for
-- Healthy needs Ready and every Serve application of the active cluster RUNNING, with no
-- upgrade in flight. A failed application on either cluster is Degraded even while the other
-- cluster still serves: an upgrade that cannot finish needs a person.
-- Only Lua's base and table libraries are used, so the check runs in argocd-cm without
-- resource.customizations.useOpenLibs (tests/deploy/test_argocd_health.py runs it that way).
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function cluster_name(service)
  if service ~= nil and service.rayClusterName ~= nil and service.rayClusterName ~= "" then
    return service.rayClusterName
  end
  return "(none yet)"
end

-- The Serve applications of one cluster, sorted by name: failed ones (with Serve's message)
-- and ones not yet RUNNING, as text, and how many there are.
local function applications(service)
  local failed, waiting, names = {}, {}, {}
  if service == nil or service.applicationStatuses == nil then
    return failed, waiting, 0
  end
  for name, _ in pairs(service.applicationStatuses) do
    table.insert(names, name)
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local app = service.applicationStatuses[name]
    local status = app.status
    if status == nil or status == "" then
      status = "NOT_STARTED"
    end
    if status == "DEPLOY_FAILED" or status == "UNHEALTHY" then
      local text = name .. " " .. status
      if app.message ~= nil and app.message ~= "" then
        text = text .. " (" .. app.message .. ")"
      end
      table.insert(failed, text)
    elseif status ~= "RUNNING" then
      table.insert(waiting, name .. " " .. status)
    end
  end
  return failed, waiting, #names
end

local function progress(service)
  local _, waiting, count = applications(service)
  if count == 0 then
    return "cluster " .. cluster_name(service) .. " is starting"
  end
  if #waiting == 0 then
    return "cluster " .. cluster_name(service) .. ": applications RUNNING"
  end
  return "cluster " .. cluster_name(service) .. ": " .. table.concat(waiting, ", ")
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

if obj.status == nil then
  return result("Progressing", "Waiting for KubeRay to report the RayService status")
end
local status = obj.status
local conditions = status.conditions
local ready = condition(conditions, "Ready")

-- Terminal: KubeRay stops reconciling (ValidationFailed is written before observedGeneration).
if ready ~= nil and ready.status == "False" and
    (ready.reason == "ValidationFailed" or ready.reason == "InitializingTimeout") then
  return result("Degraded", ready.reason .. ": " .. (ready.message or ""))
end
if is_true(condition(conditions, "Suspended")) then
  return result("Suspended", "RayService is suspended")
end
if is_true(condition(conditions, "Suspending")) then
  return result("Progressing", "RayService is suspending")
end
-- A status computed for an older spec says nothing about the one just applied.
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  return result("Progressing", "Waiting for KubeRay to observe generation " .. generation ..
    " (status is for " .. status.observedGeneration .. ")")
end

local active_failed = applications(status.activeServiceStatus)
if #active_failed > 0 then
  return result("Degraded", "Serve applications failed on the active cluster " ..
    cluster_name(status.activeServiceStatus) .. ": " .. table.concat(active_failed, "; "))
end
local pending_failed = applications(status.pendingServiceStatus)
if #pending_failed > 0 then
  return result("Degraded", "Serve applications failed on the new cluster " ..
    cluster_name(status.pendingServiceStatus) .. ": " .. table.concat(pending_failed, "; ") ..
    "; the active cluster " .. cluster_name(status.activeServiceStatus) .. " keeps serving")
end

if ready == nil then
  -- KubeRay before 1.3 reports only the deprecated serviceStatus.
  if status.serviceStatus == "Running" then
    return result("Healthy", "RayService is Running")
  end
  return result("Progressing", "Waiting for the RayService to be Running: " ..
    progress(status.activeServiceStatus))
end
if ready.status ~= "True" then
  if ready.reason == "ZeroServeEndpoints" then
    return result("Degraded", "No Serve endpoint is ready: " .. (ready.message or ""))
  end
  -- Initializing: the first cluster comes up as the pending one.
  local starting = status.pendingServiceStatus
  if starting == nil or starting.rayClusterName == nil or starting.rayClusterName == "" then
    starting = status.activeServiceStatus
  end
  return result("Progressing", "RayService is not ready yet (" .. (ready.reason or "no reason") ..
    "): " .. progress(starting))
end

if is_true(condition(conditions, "RollbackInProgress")) then
  return result("Progressing", "Rolling back to cluster " ..
    cluster_name(status.activeServiceStatus) .. ", which keeps serving")
end
if is_true(condition(conditions, "UpgradeInProgress")) then
  return result("Progressing", "Upgrading: new " .. progress(status.pendingServiceStatus) ..
    "; the active cluster " .. cluster_name(status.activeServiceStatus) .. " keeps serving")
end
local _, active_waiting = applications(status.activeServiceStatus)
if #active_waiting > 0 then
  return result("Progressing", "Serve config being applied on " ..
    progress(status.activeServiceStatus))
end
return result("Healthy", "Serve applications RUNNING on cluster " ..
  cluster_name(status.activeServiceStatus) .. " (" .. (status.numServeEndpoints or 0) ..
  " serve endpoints)")
