-- Argo CD health of a SequencerAction (sequencer.stateset.io/v1alpha1). Install it as
-- resource.customizations.health.sequencer.stateset.io_SequencerAction in argocd-cm
-- (operator/README.md). Pending and Running are Progressing, Succeeded Healthy, Failed Degraded.
local hs = {status = "Progressing", message = "Waiting for the operator to run the action"}
if obj.status == nil then
  return hs
end
local stalled, ready
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type == "Stalled" and condition.status == "True" then
    stalled = condition
  end
  if condition.type == "Ready" then
    ready = condition
  end
end
local function say(c)
  if c == nil then
    return obj.status.message or ""
  end
  return (c.reason or "") .. ": " .. (c.message or "")
end
if obj.status.phase == "Failed" or stalled ~= nil then
  return {status = "Degraded", message = say(stalled or ready)}
end
if obj.status.phase == "Succeeded" then
  return {status = "Healthy", message = say(ready)}
end
hs.message = say(ready)
return hs
