# Shared by install_relay.sh and install_dvm.sh: a pinned tool in a virtualenv of its own, whose
# dependencies must not mix with the project's. Idempotent: silent and quick when installed.
#
#   install_tool_venv VENV DIST VERSION CHECK PIP_SPEC...
#
# CHECK is a command (run with "$VENV" set) that must succeed on a working install.
install_tool_venv() {
  local venv=$1 dist=$2 version=$3 check=$4
  shift 4
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  tool_ok() {
    [ -x "$venv/bin/python" ] \
      && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$dist') != '$version')" \
        >/dev/null 2>&1 \
      && VENV=$venv bash -c "$check" >/dev/null 2>&1
  }
  if tool_ok; then
    return 0
  fi
  echo "== installing $dist $version into $venv" >&2
  # --clear: start over if a previous install was interrupted or pinned another version.
  "${PYTHON:-python3}" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet "$@"
  tool_ok || { echo "$dist failed to install into $venv" >&2; return 1; }
}
