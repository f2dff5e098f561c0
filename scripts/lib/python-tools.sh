# Sourced by the checks that run PyPI tools (operator-checks.sh, monitoring-checks): sets PYTHON to a
# virtualenv's interpreter under the tools directory, made on first use, unless PYTHON already names
# one. A distribution's own Python refuses packages installed beside its own (PEP 668), and a fresh
# machine has nothing else. `pip_tool MODULE PACKAGE [PIP ARGS...]` installs PACKAGE unless MODULE
# imports.
if [ -z "${PYTHON:-}" ]; then
  _tools="${STATESET_TOOLS_DIR:-$HOME/.cache/stateset-sequencer/tools}"
  if [ ! -x "$_tools/checks-venv/bin/python" ]; then
    mkdir -p "$_tools"
    python3 -m venv "$_tools/checks-venv"
  fi
  PYTHON="$_tools/checks-venv/bin/python"
fi
pip_tool() {
  local module="$1" package="$2"
  shift 2
  if ! "$PYTHON" -c "import $module" 2>/dev/null; then
    printf '==> installing %s\n' "$package"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" "$package"
  fi
}
