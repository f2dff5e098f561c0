-- Argo CD health of a Sequencer (sequencer.stateset.io/v1alpha1). Install it as
-- resource.customizations.health.sequencer.stateset.io_Sequencer in argocd-cm (operator/README.md).
-- It reads the kstatus conditions the operator writes: Stalled=True is Degraded, Reconciling=True
-- Progressing, Ready=True Healthy (Suspended when scaled to zero), and a spec the operator has not
-- observed yet is Progressing.
local hs = {status = "Progressing", message = "Waiting for the operator to observe the Sequencer"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
local byType = {}
for _, condition in ipairs(obj.status.conditions) do
  byType[condition.type] = condition
end
local function is(type, status)
  return byType[type] ~= nil and byType[type].status == status
end
local function say(type)
  local c = byType[type]
  if c == nil then
    return ""
  end
  return (c.reason or "") .. ": " .. (c.message or "")
end
if is("Stalled", "True") then
  return {status = "Degraded", message = say("Stalled")}
end
if is("Reconciling", "True") then
  return {status = "Progressing", message = say("Reconciling")}
end
if is("Ready", "True") then
  if byType["Ready"].reason == "ScaledToZero" then
    return {status = "Suspended", message = say("Ready")}
  end
  if is("Degraded", "True") then
    return {status = "Degraded", message = say("Degraded")}
  end
  return {status = "Healthy", message = say("Ready")}
end
hs.message = say("Ready")
return hs
