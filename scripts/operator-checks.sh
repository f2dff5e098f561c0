#!/usr/bin/env bash
# Offline checks of the operator's deployable artefacts, run by CI after the cargo tests:
#   1. `helm lint` of the chart (through the PyPI package helm-sdkpy; no helm binary needed);
#   2. the chart's CRDs are the generated ones (crds/);
#   3. every object `sequencer-operator render` produces for the example Sequencer, and the CRDs,
#      validate against the real Kubernetes OpenAPI schemas (kubernetes-validate --strict);
#   4. the Argo CD health scripts (operator/health/*.lua) give the expected health for every state
#      in a real Lua 5.1 (Debian's lua5.1, installed with apt-get when missing).
# The RBAC contract (operator/src/rbac_contract.rs) and the kstatus contract (operator/src/kstatus.rs)
# are cargo tests: they run in `cargo test`.
# Exits non-zero on any failure. Honours CARGO_TARGET_DIR. K8S_VERSIONS overrides the versions.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHART=charts/sequencer-operator
CRDS=crds/sequencer.stateset.io.yaml
EXAMPLE=operator/examples/sequencer.yaml
# The oldest Kubernetes the chart supports (preStop sleep needs 1.30; k8s-openapi targets 1.33)
# and the newest kubernetes-validate knows.
K8S_VERSIONS=${K8S_VERSIONS:-"1.33.0 1.37.0"}

log() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/lib/python-tools.sh
. scripts/lib/python-tools.sh
pip_tool helm_sdkpy helm-sdkpy --ignore-requires-python
pip_tool kubernetes_validate kubernetes-validate
# Its command, from the interpreter it was installed for.
kubernetes-validate() { "$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")/kubernetes-validate" "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "helm lint $CHART"
"$PYTHON" - "$CHART" <<'PY' || fail "helm lint of $CHART"
import asyncio, sys
from helm_sdkpy import Configuration, Lint

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
result = asyncio.run(Lint(Configuration()).run(sys.argv[1]))
bad = False
for message in result.get("Messages") or []:
    severity = message.get("Severity", 0)
    err = message.get("Err") or ""
    print(f"  [{SEVERITY.get(severity, severity)}] {message.get('Path')}: {err or '(see helm lint)'}")
    # Like `helm lint --strict`: warnings fail too.
    bad |= severity >= 2
bad |= bool(result.get("Errors"))
print(f"  {result.get('TotalChartsLinted', 0)} chart(s) linted")
sys.exit(1 if bad else 0)
PY

log "chart CRDs are the generated CRDs"
cmp -s "$CRDS" "$CHART/crds/$(basename "$CRDS")" \
  || fail "$CHART/crds/ differs from $CRDS; run: cp $CRDS $CHART/crds/"

# cargo honours CARGO_TARGET_DIR from the environment.
# NB: the binary `cargo test --workspace` already built is used when present: a per-package
# `cargo run -p` resolves features differently and would rebuild shared dependencies.
operator() {
  local built="${CARGO_TARGET_DIR:-target}/debug/sequencer-operator"
  [ -x "$built" ] || cargo build --quiet --workspace --bins
  "$built" "$@"
}

log "CRDs are what the code generates"
operator crd > "$work/crds.yaml"
diff -u "$CRDS" "$work/crds.yaml" \
  || fail "$CRDS is out of date; run: cargo run -p sequencer-operator -- crd > $CRDS"

log "sequencer-operator render -f $EXAMPLE"
operator render -f "$EXAMPLE" > "$work/rendered.yaml"
grep -q '^kind: "Deployment"' "$work/rendered.yaml" || fail "render produced no Deployment"

for version in $K8S_VERSIONS; do
  log "kubernetes-validate --strict against Kubernetes $version"
  kubernetes-validate --strict --quiet -k "$version" "$work/rendered.yaml" \
    || fail "rendered objects of $EXAMPLE do not validate against Kubernetes $version"
  kubernetes-validate --strict --quiet -k "$version" "$CRDS" \
    || fail "$CRDS does not validate against Kubernetes $version"
done

log "Argo CD health scripts in Lua 5.1"
if ! command -v lua5.1 >/dev/null 2>&1; then
  log "installing lua5.1"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq lua5.1 >/dev/null \
    || fail "could not install lua5.1 (apt-get install lua5.1)"
fi
lua5.1 operator/health/test.lua || fail "an Argo CD health script gives the wrong health (operator/health/test.lua)"

log "operator checks passed"
