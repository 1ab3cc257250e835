#!/usr/bin/env bash
# Install the production-like Nostr relay used by the integration tests (PyPI nostr-relay, served
# with uvicorn) into its own virtualenv .venv-relay: its dependencies are heavy and must not mix
# with the project's. Idempotent: silent and quick when the pinned version is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
RELAY_VERSION="1.14"
VENV=.venv-relay

relay_ok() {
  [ -x "$VENV/bin/nostr-relay" ] \
    && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('nostr-relay') != '$RELAY_VERSION')" \
      >/dev/null 2>&1 \
    && "$VENV/bin/nostr-relay" --help >/dev/null 2>&1
}

if relay_ok; then
  exit 0
fi
echo "== installing nostr-relay $RELAY_VERSION into $VENV" >&2
# --clear: start over if a previous install was interrupted or pinned another version.
"${PYTHON:-python3}" -m venv --clear "$VENV"
# nostr-relay depends on uvicorn[standard] (uvloop, httptools, websockets) for serve --use-uvicorn.
"$VENV/bin/python" -m pip install --quiet "nostr-relay==$RELAY_VERSION" "uvicorn[standard]"
relay_ok || { echo "nostr-relay failed to install into $VENV" >&2; exit 1; }
