-- Runs the Argo CD health scripts in a real Lua 5.1 (as Argo CD's gopher-lua is) against the
-- fixtures the operator's kstatus contract test generates (fixtures.lua), and fails on any state
-- whose health is not the expected one. Usage: lua5.1 operator/health/test.lua (from the repo root
-- or this directory). Called by scripts/operator-checks.sh.
local dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$")) or "."
local scripts = {
  Sequencer = assert(loadfile(dir .. "/sequencer.lua")),
  SequencerAction = assert(loadfile(dir .. "/sequenceraction.lua")),
}
local fixtures = dofile(dir .. "/fixtures.lua")
local failures, seen = 0, {}
for _, case in ipairs(fixtures) do
  -- Argo CD runs the script with the resource as the global `obj`.
  local env = setmetatable({obj = case.obj}, {__index = _G})
  local script = scripts[case.kind]
  setfenv(script, env)
  local ok, hs = pcall(script)
  local got = ok and type(hs) == "table" and hs.status or ("error: " .. tostring(hs))
  seen[case.kind .. ":" .. tostring(got)] = true
  if got ~= case.expect then
    failures = failures + 1
    print(string.format("FAIL %s %s: expected %s, got %s (%s)", case.kind, case.name, case.expect, tostring(got),
      ok and type(hs) == "table" and tostring(hs.message) or ""))
  else
    print(string.format("ok   %s %s: %s", case.kind, case.name, got))
  end
end
-- Every health state that applies is covered.
for _, wanted in ipairs({"Sequencer:Healthy", "Sequencer:Progressing", "Sequencer:Degraded", "Sequencer:Suspended",
                         "SequencerAction:Healthy", "SequencerAction:Progressing", "SequencerAction:Degraded"}) do
  if not seen[wanted] then
    failures = failures + 1
    print("FAIL no fixture yields " .. wanted)
  end
end
print(string.format("%d fixtures, %d failures (%s)", #fixtures, failures, _VERSION))
os.exit(failures == 0 and 0 or 1)
