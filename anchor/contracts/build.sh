#!/usr/bin/env bash
# Compiles StateSetAnchor.sol with the pinned solcjs (npm package `solc`) and writes the checked-in
# artifacts out/StateSetAnchor.abi.json and out/StateSetAnchor.bin, which the Rust crate embeds.
#
#   anchor/contracts/build.sh           rebuild the artifacts (commit them afterwards)
#   anchor/contracts/build.sh --check   fail if the checked-in artifacts differ from a fresh compile
#
# The compiler version is pinned in scripts/install-tools (SOLC_VERSION), which this script runs to
# install it into STATESET_TOOLS_DIR. Settings are fixed below, and the source is compiled under the
# fixed name "StateSetAnchor.sol", so the output does not depend on where the repository lives.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tools="${STATESET_TOOLS_DIR:-$HOME/.cache/stateset-sequencer/tools}"

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

solc_version="$(sed -n 's/^SOLC_VERSION=//p' "$repo/scripts/install-tools")"
if [ -z "$solc_version" ]; then
  echo "build.sh: no SOLC_VERSION line in scripts/install-tools" >&2
  exit 1
fi
STATESET_TOOLS_DIR="$tools" "$repo/scripts/install-tools"

if $check; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
else
  out="$here/out"
  mkdir -p "$out"
fi

# NB: viaIR because anchorBatch takes eight calldata arrays (sixteen stack slots), which the legacy
# code generator cannot fit ("stack too deep"). evmVersion is pinned (cancun: supported by OP-stack
# L2s such as Set Chain and Base, and by anvil) so that a compiler upgrade cannot silently start
# using opcodes a target chain lacks.
node - "$tools/node_modules/solc" "$solc_version" "$here/StateSetAnchor.sol" "$out" <<'JS'
const fs = require('fs');
const path = require('path');
const [solcDir, wantedVersion, sourcePath, outDir] = process.argv.slice(2);
const solc = require(solcDir);

const version = solc.version();
if (!version.startsWith(wantedVersion + '+')) {
  console.error(`build.sh: solc ${version} loaded from ${solcDir}, expected ${wantedVersion}`);
  process.exit(1);
}

const input = {
  language: 'Solidity',
  sources: { 'StateSetAnchor.sol': { content: fs.readFileSync(sourcePath, 'utf8') } },
  settings: {
    viaIR: true,
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'cancun',
    outputSelection: { 'StateSetAnchor.sol': { StateSetAnchor: ['abi', 'evm.bytecode.object'] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const problems = output.errors || [];
for (const problem of problems) console.error(problem.formattedMessage || problem.message);
if (problems.some((p) => p.severity === 'error')) process.exit(1);
if (problems.length > 0) {
  console.error('build.sh: the contract must compile without warnings');
  process.exit(1);
}

const contract = output.contracts['StateSetAnchor.sol'].StateSetAnchor;
fs.writeFileSync(path.join(outDir, 'StateSetAnchor.abi.json'), JSON.stringify(contract.abi, null, 2) + '\n');
fs.writeFileSync(path.join(outDir, 'StateSetAnchor.bin'), contract.evm.bytecode.object + '\n');
JS

if $check; then
  status=0
  for artifact in StateSetAnchor.abi.json StateSetAnchor.bin; do
    if ! cmp -s "$out/$artifact" "$here/out/$artifact"; then
      echo "build.sh --check: anchor/contracts/out/$artifact differs from a fresh compile of StateSetAnchor.sol" >&2
      status=1
    fi
  done
  if [ "$status" -ne 0 ]; then
    echo "run anchor/contracts/build.sh and commit anchor/contracts/out/" >&2
  fi
  exit "$status"
fi
